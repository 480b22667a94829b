"""The frozen geometry a language field is rendered with, computed once per view.

* :class:`~langfield.fields.language_fields.RayWeights` for methods that share their compositing
  weights (:class:`~langfield.methods.capabilities.SharesRayWeights`, e.g. Instant-NGP): the ``K``
  heaviest evaluation samples of every pixel's ray, with each sample's pixel footprint.
* :class:`~langfield.fields.language_fields.SplatView` for Gaussian clouds
  (:class:`~langfield.methods.capabilities.SplatsGaussians`): the cloud projected into the camera.
"""

from __future__ import annotations

import math
from typing import Union

import torch
from torch import Tensor

from langfield.fields.language_fields import LanguageField, RayWeights, SplatView, top_k_ray_weights
from langfield.geometry.rays import rays_from_camera
from langfield.methods.base import Method, RayMethod
from langfield.methods.capabilities import SharesRayWeights, SplatsGaussians
from langfield.types import Cameras

__all__ = ["ViewGeometry", "check_language_method", "ngp_view_weights", "render_view_features", "view_geometry"]

ViewGeometry = Union[RayWeights, SplatView]


def check_language_method(method: Method) -> str:
    """``"gaussians"`` or ``"ngp"``: the kind of language field ``method`` can carry (else a clear error)."""
    if isinstance(method, SplatsGaussians):
        return "gaussians"
    if isinstance(method, SharesRayWeights):
        return "ngp"
    raise TypeError(
        f"{type(method).__name__} cannot carry a language field: it neither shares its rendering weights "
        "nor splats Gaussians; train an 'ngp' or 'gaussians' run"
    )


@torch.no_grad()
def ngp_view_weights(method: SharesRayWeights, cameras: Cameras, index: int, k: int = 8, chunk: int = 16384) -> RayWeights:
    """Frozen-geometry :class:`RayWeights` of every pixel of camera ``index`` (row-major ``H*W``)."""
    device = method.field_bounds().device
    ndc = method.ndc if isinstance(method, RayMethod) else None
    if ndc is None:
        rays = rays_from_camera(cameras, index, method.near, method.far).flatten()
    else:  # the method's samples live in NDC: march the same NDC rays it renders with
        rays = method.camera_rays(cameras, index).flatten()
    # Pixel angle: one pixel over the focal length (radius of the pixel cone per unit distance);
    # in NDC, the NDC cone radius per unit distance (Mip-NeRF radii are pixel * 2 / sqrt(12)).
    pixel_angle = 1.0 / float(torch.sqrt(cameras.Ks[index, 0, 0] * cameras.Ks[index, 1, 1]))
    parts = []
    for start in range(0, len(rays), chunk):
        sub = rays[start : start + chunk].to(device)
        pos, w, ridx = method.sample_weights(sub)
        rw = top_k_ray_weights(pos, w, ridx, len(sub), k)
        dist = (rw.positions - sub.origins[:, None, :]).norm(dim=-1)
        angle = pixel_angle if ndc is None else sub.radii * (math.sqrt(12.0) / 2.0)
        parts.append(RayWeights(rw.positions, rw.weights, rw.accumulation, dist * angle))
    return RayWeights.cat(parts)


@torch.no_grad()
def view_geometry(method: Method, cameras: Cameras, index: int, top_k: int = 8) -> ViewGeometry:
    """Frozen geometry of camera ``index``: :class:`SplatView` (Gaussians) or :class:`RayWeights` (NGP)."""
    if check_language_method(method) == "gaussians":
        return method.project_view(cameras[index])
    return ngp_view_weights(method, cameras, index, top_k)


@torch.no_grad()
def render_view_features(field: LanguageField, geometry: ViewGeometry, height: int, width: int, chunk: int = 16384) -> Tensor:
    """``[H, W, E]`` unit features (CPU) of one frozen view; NGP rays are rendered in chunks
    (Gaussians: the decoder's output is already unit length, so it is not normalised again)."""
    if isinstance(geometry, RayWeights):
        parts = [field.render(geometry.select(slice(s, s + chunk))) for s in range(0, len(geometry), chunk)]
        feats = torch.cat(parts).reshape(height, width, -1)
        return torch.nn.functional.normalize(feats.float(), dim=-1).cpu()
    return field.render(geometry).float().cpu()
