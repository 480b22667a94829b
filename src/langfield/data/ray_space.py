"""In which space the NeRF-family methods receive their rays: the world, or NDC for forward-facing scenes.

Forward-facing captures (LLFF) are reconstructed in normalized device coordinates like the
original NeRF (Mildenhall et al. 2020, App. C; the maths is in :mod:`langfield.geometry.ndc`):
the frustum from a near plane to infinity becomes a bounded box and samples spread linearly in
disparity. A :class:`~langfield.data.dataset.SceneDataset` stays in **world** units throughout
(cameras, ``scene_box``, ``near``/``far``, depth maps); choosing NDC only attaches an
:class:`~langfield.geometry.ndc.NDCSpace` (``dataset.ndc``) that the pixel sampler and
``RayMethod.render_camera`` both apply to the world rays of the cameras, and that converts
rendered depth back to world ray distances.

``ray_space`` option (``DataConfig.ray_space``, ``--ray-space``):

* ``"auto"`` (default): NDC when the dataset is ``forward_facing`` and the method marches rays
  (NeRF, Mip-NeRF, Instant-NGP); world otherwise (e.g. Gaussian splatting, which rasterises
  perspective cameras and has no NDC form), and, with a warning, when the flagged dataset turns
  out to have no NDC space (a camera looking more than 80 degrees off the mean direction).
* ``"world"``: never NDC.
* ``"ndc"``: NDC whatever the flag says; refused for methods that cannot use it and for datasets
  whose cameras do not all look forward of the reference camera.

The NDC space of a dataset (:func:`ndc_space_for`):

* reference camera: the :func:`~langfield.geometry.normalize.average_pose` of every camera in
  every loaded split (for a recentred LLFF scene with all its views this is the identity, NeRF's
  choice), with the intrinsics and image size of the first training camera (NeRF uses the first
  camera's ``hwf``);
* near plane ``z = n`` (reference frame): with at least 20 sparse points in front of the reference,
  ``0.75`` times the 0.5 % quantile of their z (LLFF's ``bd_factor`` on a low depth percentile, which
  is how LLFF's own near bounds are made; NeRF's near plane 1.0 is ``0.75`` times the closest bound).
  Without points, ``min_c z_c + near * min d_z``: the smallest z any camera can see at ray distance
  ``dataset.near`` (``z_c`` camera centres, ``d_z`` unit corner-ray directions in the reference
  frame), so no content beyond ``near`` is cut off;
* box: the NDC bounds of every camera's frustum (image corners, near plane to infinity) and of
  the reference image ``[-1, 1]^2``, padded by :data:`NDC_BOX_MARGIN` of their extent in x and y;
  ``z`` spans ``[-1, 1]`` exactly.

Forward-facing detection for other captures (:func:`looks_forward_facing`): every camera's
viewing direction lies within ``max_angle_deg`` (60) of their mean, and the camera centres lie
within ``max_spread`` (0.5) scene depths of their mean (scene depth: the median z of the sparse
points in front of the mean camera; without sparse points a capture is never flagged) -- a
handheld capture of a facade or a table top, not an orbit around an object. The COLMAP reader sets
``forward_facing`` with it (:func:`capture_looks_forward_facing`); LLFF folders are always forward-facing.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from typing import Optional

import torch
from torch import Tensor

from langfield._checks import InputError
from langfield.data.dataset import SceneDataset
from langfield.geometry.ndc import NDCSpace
from langfield.geometry.normalize import average_pose
from langfield.geometry.rays import camera_directions
from langfield.types import Cameras, Rays

__all__ = [
    "FORWARD_FACING_MAX_ANGLE_DEG",
    "FORWARD_FACING_MAX_SPREAD",
    "MIN_FORWARD_COSINE",
    "NDC_BOX_MARGIN",
    "RAY_SPACES",
    "apply_ray_space",
    "capture_looks_forward_facing",
    "check_cameras_in_ndc",
    "check_ray_space",
    "looks_forward_facing",
    "ndc_space_for",
]

RAY_SPACES = ("auto", "world", "ndc")
#: Padding of the NDC box, as a fraction of its x and y extent on each side.
NDC_BOX_MARGIN = 0.05
#: Smallest cosine between a corner ray of any camera and the reference axis accepted for NDC (80 degrees).
MIN_FORWARD_COSINE = math.cos(math.radians(80.0))
#: Near plane from sparse points: ``NEAR_POINTS_FACTOR`` times the ``NEAR_POINTS_QUANTILE`` quantile of
#: their reference-frame z (LLFF's ``bd_factor`` 0.75 applied to a low percentile of the point depths),
#: used when at least ``MIN_NEAR_POINTS`` points lie in front of the reference camera.
NEAR_POINTS_FACTOR = 0.75
NEAR_POINTS_QUANTILE = 0.005
MIN_NEAR_POINTS = 20
FORWARD_FACING_MAX_ANGLE_DEG = 60.0
FORWARD_FACING_MAX_SPREAD = 0.5


def check_ray_space(ray_space: str, where: str = "ray_space") -> str:
    """``ray_space`` checked against :data:`RAY_SPACES`."""
    if ray_space not in RAY_SPACES:
        raise InputError(f"{where}: must be one of {RAY_SPACES}, got {ray_space!r}")
    return ray_space


def looks_forward_facing(
    c2w: Tensor,
    depth: float,
    *,
    max_angle_deg: float = FORWARD_FACING_MAX_ANGLE_DEG,
    max_spread: float = FORWARD_FACING_MAX_SPREAD,
) -> bool:
    """Heuristic: do cameras ``c2w [C, 3, 4]`` (OpenCV) form a forward-facing capture of content ``depth`` away?

    True when every viewing direction (``+z`` axis) is within ``max_angle_deg`` of their mean and
    every camera centre within ``max_spread * depth`` of their mean (see the module docstring).

    >>> import torch
    >>> c2w = torch.eye(4)[:3].repeat(3, 1, 1)
    >>> c2w[:, 0, 3] = torch.tensor([-0.2, 0.0, 0.2])  # a sideways sweep looking along +z
    >>> looks_forward_facing(c2w, depth=2.0)
    True
    >>> c2w[2, :3, :3] = torch.diag(torch.tensor([-1.0, 1.0, -1.0]))  # one camera turned round
    >>> looks_forward_facing(c2w, depth=2.0)
    False
    """
    if c2w.ndim != 3 or tuple(c2w.shape[1:]) != (3, 4):
        raise InputError(f"c2w: expected [C, 3, 4] camera-to-world poses, got {tuple(c2w.shape)}")
    if not (math.isfinite(depth) and depth > 0):
        raise InputError(f"depth: expected a finite scene depth > 0, got {depth!r}")
    c2w = c2w.double()
    forward = c2w[:, :, 2] / c2w[:, :, 2].norm(dim=-1, keepdim=True)
    mean = forward.sum(0)
    if float(mean.norm()) < 1e-9:
        return False
    mean = mean / mean.norm()
    if float((forward @ mean).min()) < math.cos(math.radians(max_angle_deg)):
        return False
    centres = c2w[:, :, 3]
    spread = float((centres - centres.mean(0)).norm(dim=-1).max())
    return spread <= max_spread * depth


def _all_cameras(dataset: SceneDataset) -> Cameras:
    """Every split's cameras, train first (duplicates are harmless)."""
    names = ["train"] + sorted(n for n in dataset.splits if n != "train")
    cams = [dataset.splits[n].cameras for n in names]
    return Cameras.create(
        torch.cat([c.c2w for c in cams]),
        torch.cat([c.Ks for c in cams]),
        torch.cat([c.widths for c in cams]),
        torch.cat([c.heights for c in cams]),
        torch.cat([c.dist for c in cams]),
    )


def _corner_rays(cameras: Cameras) -> Rays:
    """``[4 C]`` world rays through the four image *corners* (pixel edges, not centres) of every camera."""
    num = len(cameras)
    w, h = cameras.widths.float(), cameras.heights.float()
    zero = torch.zeros_like(w)
    pixels = torch.stack(
        [torch.stack([zero, zero], -1), torch.stack([w, zero], -1), torch.stack([zero, h], -1), torch.stack([w, h], -1)], 1
    ).reshape(-1, 2)
    idx = torch.arange(num).repeat_interleave(4)
    dirs_cam = camera_directions(cameras, idx, pixels)
    dirs = torch.einsum("rij,rj->ri", cameras.c2w[idx, :, :3].double(), dirs_cam.double())
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = cameras.c2w[idx, :, 3].double()
    ones = torch.ones(4 * num, 1, dtype=torch.float64)
    return Rays(origins, dirs, 0 * ones, 0 * ones, ones, idx)


def check_cameras_in_ndc(ndc: NDCSpace, cameras: Cameras, where: str) -> None:
    """Refuse ``cameras`` with image corners looking more than 80 degrees off ``ndc``'s reference axis
    (their rays have no usable NDC image); the check is on the corners because ``d_z`` is affine
    in the pixel position, so every pixel of an undistorted image lies between its corners."""
    corners = _corner_rays(cameras.to("cpu"))
    d_ref = corners.directions @ ndc.c2w[:, :3].double()
    min_dz = float(d_ref[:, 2].min())
    if min_dz < MIN_FORWARD_COSINE:
        worst = int(corners.camera_indices[int(d_ref[:, 2].argmin())])
        raise InputError(
            f"{where}: camera {worst} sees directions {math.degrees(math.acos(max(-1.0, min(1.0, min_dz)))):.0f} "
            "degrees off the NDC reference camera's viewing direction (limit 80); NDC covers only what lies in "
            "front of the reference camera (use ray_space='world' for this scene or camera)"
        )


def _near_plane(dataset: SceneDataset, cams: Cameras, ref: Tensor, min_dz: float) -> float:
    """The NDC near plane (reference-frame z): from the sparse points when there are enough, else the bounds."""
    R, c = ref[:, :3], ref[:, 3]
    if dataset.points3d is not None and len(dataset.points3d) > 0:
        z = (dataset.points3d.double() - c) @ R[:, 2]
        z = z[z > 0]
        if len(z) >= MIN_NEAR_POINTS:
            return NEAR_POINTS_FACTOR * float(torch.quantile(z, NEAR_POINTS_QUANTILE))
    z_centres = (cams.c2w[:, :, 3].double() - c) @ R[:, 2]
    return float(z_centres.min()) + float(dataset.near) * min_dz


def ndc_space_for(dataset: SceneDataset, *, near_plane: Optional[float] = None, where: str = "ray_space") -> NDCSpace:
    """The :class:`NDCSpace` of ``dataset`` (reference camera, near plane and box: see the module docstring).

    ``near_plane`` overrides the derived near plane (reference-frame z, world units). Raises
    :class:`InputError` (naming ``where``) when some camera sees directions more than 80 degrees off
    the reference axis or when no positive near plane exists: such scenes are not forward-facing.
    """
    cams = _all_cameras(dataset)
    try:
        ref = average_pose(cams.c2w)  # float64 [3, 4]
    except ValueError as err:
        raise InputError(f"{where}: NDC needs a forward-facing scene, but {dataset.name!r} has no mean camera ({err})") from None
    first = dataset.split("train").cameras[0]
    K = first.Ks[0].double()
    corners = _corner_rays(cams)
    R, c = ref[:, :3], ref[:, 3]
    d_ref = corners.directions @ R
    min_dz = float(d_ref[:, 2].min())
    if min_dz < MIN_FORWARD_COSINE:
        worst = int(corners.camera_indices[int(d_ref[:, 2].argmin())])
        raise InputError(
            f"{where}: NDC needs a forward-facing scene, but camera {worst} of {dataset.name!r} sees directions "
            f"{math.degrees(math.acos(max(-1.0, min(1.0, min_dz)))):.0f} degrees off the mean viewing direction "
            f"(limit 80); use ray_space='world' (--ray-space world)"
        )
    if near_plane is None:
        near_plane = _near_plane(dataset, cams, ref, min_dz)
    if not (math.isfinite(near_plane) and near_plane > 0):
        raise InputError(
            f"{where}: no NDC near plane in front of the reference camera of {dataset.name!r} (got z = {near_plane:g}): "
            "the cameras are spread too far along the viewing direction for NDC; use ray_space='world'"
        )
    space = NDCSpace(
        c2w=ref.float(),
        focal=(float(K[0, 0]), float(K[1, 1])),
        principal_point=(float(K[0, 2]), float(K[1, 2])),
        width=int(first.widths[0]),
        height=int(first.heights[0]),
        near=float(near_plane),
    )
    # Frustum corners from the near plane (s = 0) to infinity (s = 1); NDC is projective, so the
    # image of each (convex) frustum is the hull of these points.
    o_ndc, d_ndc = space.project_rays(*space.to_reference(corners.origins, corners.directions))
    pts = torch.cat([o_ndc, o_ndc + d_ndc, torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], dtype=torch.float64)])
    lo, hi = pts.min(0).values, pts.max(0).values
    pad = NDC_BOX_MARGIN * (hi - lo)
    lo[:2] -= pad[:2]
    hi[:2] += pad[:2]
    lo[2], hi[2] = -1.0, 1.0
    return replace(space, box=torch.stack([lo, hi]).float())


def apply_ray_space(
    dataset: SceneDataset, ray_space: str = "auto", *, allow_ndc: bool = True, where: str = "ray_space"
) -> SceneDataset:
    """``dataset`` with the NDC space chosen by ``ray_space`` attached (``dataset.ndc``) or removed.

    Args:
        dataset: a world-space dataset (readers set ``forward_facing``).
        ray_space: ``"auto" | "world" | "ndc"`` (see the module docstring).
        allow_ndc: whether the method that will use the dataset marches rays (only those can use NDC);
            ``"auto"`` then stays in the world, ``"ndc"`` is refused.
        where: the option's name for error messages (e.g. ``"DataConfig.ray_space (--ray-space)"``).
    """
    check_ray_space(ray_space, where)
    use_ndc = ray_space == "ndc" or (ray_space == "auto" and dataset.forward_facing and allow_ndc)
    if use_ndc and not allow_ndc:
        raise InputError(
            f"{where}: 'ndc' needs a method that marches rays (nerf, mipnerf, ngp); this method renders "
            "perspective cameras directly. Use 'world' or 'auto'"
        )
    if not use_ndc:
        return replace(dataset, ndc=None)
    try:
        space = ndc_space_for(dataset, where=where)
    except InputError as err:
        if ray_space == "ndc":
            raise
        warnings.warn(f"{err}; 'auto' falls back to world rays", stacklevel=2)
        return replace(dataset, ndc=None)
    return replace(dataset, ndc=space)


def capture_looks_forward_facing(c2w: Tensor, points: Optional[Tensor]) -> bool:
    """:func:`looks_forward_facing` for a capture with sparse ``points [P, 3]``: the scene depth is the
    median z of the points in front of the :func:`~langfield.geometry.normalize.average_pose` camera.
    Without at least :data:`MIN_NEAR_POINTS` such points nothing can be judged: False."""
    if points is None or len(points) == 0:
        return False
    try:
        ref = average_pose(c2w)
    except ValueError:  # forward axes cancel out: cameras all around the scene
        return False
    z = (points.double() - ref[:, 3]) @ ref[:, 2]
    z = z[z > 0]
    if len(z) < MIN_NEAR_POINTS:
        return False
    return looks_forward_facing(c2w, float(z.median()))
