"""The frozen geometry a language field is rendered with, computed once per view.

* :class:`~langfield.fields.language_fields.RayWeights` for methods that share their compositing
  weights (:class:`~langfield.methods.capabilities.SharesRayWeights`, e.g. Instant-NGP): the ``K``
  heaviest evaluation samples of every pixel's ray, with each sample's pixel footprint.
* :class:`~langfield.fields.language_fields.SplatView` for Gaussian clouds
  (:class:`~langfield.methods.capabilities.SplatsGaussians`): the cloud projected into the camera.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

from langfield.fields.language_fields import LanguageField, RayWeights, SplatView, top_k_ray_weights
from langfield.geometry.rays import rays_from_camera
from langfield.methods.base import CPU_RAY_CHUNK, Method, RayMethod, check_background, default_ray_chunk, evaluation_mode
from langfield.methods.capabilities import SharesRayWeights, SplatsGaussians
from langfield.types import Cameras, Rays, RenderOutput

# Rays per marching call of an Instant-NGP view on the CPU: the methods' own evaluation chunk
# (CPU_RAY_CHUNK from langfield.methods.base, 2048). The evaluation pass's temporaries are
# ``[samples, 64]`` floats; at 2048 rays (~60k samples on the procedural scene) they stay small
# enough to be reused from the heap and to sit in cache. A 200x200 first query on 2 cores took
# ~1,060 ms at 2048 rays against ~1,550 ms at 16384 (1024: ~1,120; 512: ~1,320; medians of 3).
#: Rays per marching call of a view on a GPU, where larger launches pay (not measured here).
GPU_RAY_CHUNK = 16384

__all__ = [
    "ViewGeometry", "check_language_method", "ngp_view_render", "ngp_view_weights", "render_view", "render_view_features",
    "view_geometry",
]  # fmt: skip

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


def _view_rays(method: SharesRayWeights, cameras: Cameras, index: int) -> tuple[Rays, Rays, Optional[float]]:
    """``(world rays [H*W], rays in the method's space [H*W], pixel angle or None in NDC)`` of camera ``index``.

    Pixel angle: one pixel over the focal length (radius of the pixel cone per unit distance); in
    NDC the cone radius comes per ray from the NDC rays' radii (Mip-NeRF radii are pixel * 2 / sqrt(12))."""
    ndc = method.ndc if isinstance(method, RayMethod) else None
    world = rays_from_camera(cameras, index, method.near, method.far).flatten()
    rays = world if ndc is None else ndc.rays(world)
    pixel_angle = None if ndc is not None else 1.0 / float(torch.sqrt(cameras.Ks[index, 0, 0] * cameras.Ks[index, 1, 1]))
    return world, rays, pixel_angle


def _ray_weights(rays: Rays, pos: Tensor, w: Tensor, ridx: Tensor, k: int, pixel_angle: Optional[float]) -> RayWeights:
    """Top-``k`` :class:`RayWeights` of ``[R]`` rays from their packed samples, with pixel footprints."""
    rw = top_k_ray_weights(pos, w, ridx, len(rays), k)
    dist = (rw.positions - rays.origins[:, None, :]).norm(dim=-1)
    angle = rays.radii * (math.sqrt(12.0) / 2.0) if pixel_angle is None else pixel_angle
    return RayWeights(rw.positions, rw.weights, rw.accumulation, dist * angle)


def _ray_chunk(chunk: Optional[int], device: torch.device) -> int:
    """Rays per marching call: ``chunk``, else :data:`CPU_RAY_CHUNK` on the CPU and
    :data:`GPU_RAY_CHUNK` elsewhere."""
    if chunk is None:
        return CPU_RAY_CHUNK if device.type == "cpu" else GPU_RAY_CHUNK
    return default_ray_chunk(chunk, device)  # validates an explicit chunk


@torch.no_grad()
def ngp_view_weights(method: SharesRayWeights, cameras: Cameras, index: int, k: int = 8, chunk: Optional[int] = None) -> RayWeights:
    """Frozen-geometry :class:`RayWeights` of every pixel of camera ``index`` (row-major ``H*W``),
    marched by density alone (no colour head), ``chunk`` rays at a time (default: :func:`_ray_chunk`)."""
    device = method.field_bounds().device
    chunk = _ray_chunk(chunk, device)
    _, rays, pixel_angle = _view_rays(method, cameras, index)
    parts = []
    for start in range(0, len(rays), chunk):
        sub = rays[start : start + chunk].to(device)
        parts.append(_ray_weights(sub, *method.sample_weights(sub), k, pixel_angle))
    return RayWeights.cat(parts)


@torch.no_grad()
def ngp_view_render(
    method: SharesRayWeights, cameras: Cameras, index: int, background: Tensor, k: int = 8, chunk: Optional[int] = None
) -> tuple[RenderOutput, RayWeights]:
    """Colour/depth render ``[H, W, *]`` (CPU, depth in world units) and :class:`RayWeights` of
    camera ``index`` from ONE march: the features are composited with the colour's own weights
    and the field is evaluated once (two separate passes cost twice the marching). ``chunk`` rays
    at a time (default: :func:`_ray_chunk`)."""
    device = method.field_bounds().device
    chunk = _ray_chunk(chunk, device)
    world, rays, pixel_angle = _view_rays(method, cameras, index)
    h, w = int(cameras.heights[index]), int(cameras.widths[index])
    bg = check_background(background).to(device)
    renders, weights = [], []
    with evaluation_mode(method):
        for start in range(0, len(rays), chunk):
            sub = rays[start : start + chunk].to(device)
            out, pos, wts, ridx = method.render_rays_with_weights(sub, bg.expand(len(sub), 3))
            if isinstance(method, RayMethod):
                out = method.to_world_output(out, world[start : start + chunk].to(device))
            renders.append(out.to("cpu"))
            weights.append(_ray_weights(sub, pos, wts, ridx, k, pixel_angle))
    return RenderOutput.cat(renders).reshape(h, w), RayWeights.cat(weights)


@torch.no_grad()
def render_view(
    method: Method, cameras: Cameras, index: int, background: Tensor, top_k: int = 8
) -> tuple[RenderOutput, ViewGeometry]:
    """``(colour/depth/accumulation [H, W, *] on the CPU, frozen geometry)`` of camera ``index``:
    what a language query needs, with Instant-NGP's colour and weights from one march."""
    if check_language_method(method) == "gaussians":
        out = method.render_camera(cameras[index], background, output_device="cpu")
        return out, method.project_view(cameras[index])
    return ngp_view_render(method, cameras, index, background, top_k)


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
