"""Ray generation for pinhole cameras with optional OpenCV distortion.

All poses are OpenCV camera-to-world (x right, y down, z forward). Pixel ``(u, v)``
(column, row) has its centre at ``(u + 0.5, v + 0.5)``.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from langfield.geometry.distortion import distort_points, undistort_points
from langfield.types import Cameras, Rays

# Mip-NeRF (Barron et al. 2021, Sec. 3.1): a pixel's footprint is approximated by a cone whose
# radius at unit distance is the pixel width scaled by 2/sqrt(12) (matching the variance of a
# uniform distribution over the pixel square).
_PIXEL_RADIUS_SCALE = 2.0 / math.sqrt(12.0)


def pixel_centers(width: int, height: int, device: Union[str, torch.device] = "cpu") -> Tensor:
    """``[H, W, 2]`` pixel-centre coordinates ``(u + 0.5, v + 0.5)``.

    Example:
        >>> from langfield.geometry.rays import pixel_centers
        >>> pixel_centers(width=3, height=2)[1, 2].tolist()  # row 1, column 2
        [2.5, 1.5]
    """
    us = torch.arange(width, device=device, dtype=torch.float32) + 0.5
    vs = torch.arange(height, device=device, dtype=torch.float32) + 0.5
    vv, uu = torch.meshgrid(vs, us, indexing="ij")
    return torch.stack([uu, vv], dim=-1)


def camera_directions(cameras: Cameras, camera_indices: Tensor, pixels: Tensor) -> Tensor:
    """Camera-frame (OpenCV) directions with ``z = 1`` for ``pixels [R, 2]`` of ``camera_indices [R]``.

    Distortion is removed before back-projection when the camera has any.

    Example:
        >>> import torch
        >>> from langfield.types import Cameras
        >>> from langfield.geometry.rays import camera_directions
        >>> K = torch.tensor([[2.0, 0.0, 1.5], [0.0, 2.0, 1.5], [0.0, 0.0, 1.0]])
        >>> cameras = Cameras.create(torch.eye(4), K, widths=3, heights=3)
        >>> pixels = torch.tensor([[1.5, 1.5], [3.5, 1.5]])  # the principal point, and 2 px (= fx) to its right
        >>> camera_directions(cameras, torch.tensor([0, 0]), pixels).tolist()
        [[0.0, 0.0, 1.0], [1.0, 0.0, 1.0]]
    """
    K = cameras.Ks[camera_indices]
    fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    skew = K[:, 0, 1]
    y = (pixels[:, 1] - cy) / fy
    x = (pixels[:, 0] - cx - skew * y) / fx
    xy = torch.stack([x, y], dim=-1)
    if cameras.has_distortion:
        xy = undistort_points(xy, cameras.dist[camera_indices])
    return torch.cat([xy, torch.ones_like(xy[:, :1])], dim=-1)


def project_points(points: Tensor, c2w: Tensor, K: Tensor, dist: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """World ``points [*B, N, 3]`` seen by OpenCV cameras: ``(pixels [*B, N, 2], z [*B, N])``, the inverse
    of :func:`camera_directions` (pixel centres at ``+0.5``; ``z`` the camera-frame depth).

    ``c2w`` is ``[*B, 3, 4]`` or ``[*B, 4, 4]`` (rotation orthonormal), ``K [*B, 3, 3]`` (with skew),
    ``dist [*B, 5]`` OpenCV distortion applied when given: one camera per leading index ``*B`` (none for
    a single camera and ``points [N, 3]``). Points with ``z <= 0`` are behind the camera: their pixels
    are computed with ``z`` clamped to 1e-9 and mean nothing (test ``z``).

    Example:
        >>> import torch
        >>> from langfield.geometry.rays import project_points
        >>> K = torch.tensor([[2.0, 0.0, 1.5], [0.0, 2.0, 1.5], [0.0, 0.0, 1.0]])
        >>> pixels, z = project_points(torch.tensor([[0.0, 0.0, 1.0], [2.0, 0.0, 2.0]]), torch.eye(4), K)
        >>> pixels.tolist(), z.tolist()
        ([[1.5, 1.5], [3.5, 1.5]], [1.0, 2.0])
    """
    cam = (points - c2w[..., None, :3, 3]) @ c2w[..., :3, :3]  # world -> camera
    z = cam[..., 2]
    xy = cam[..., :2] / z.clamp_min(1e-9)[..., None]
    if dist is not None:
        xy = distort_points(xy, dist[..., None, :])
    fx, skew, cx = K[..., 0, 0, None], K[..., 0, 1, None], K[..., 0, 2, None]
    fy, cy = K[..., 1, 1, None], K[..., 1, 2, None]
    u = fx * xy[..., 0] + skew * xy[..., 1] + cx
    v = fy * xy[..., 1] + cy
    return torch.stack([u, v], dim=-1), z


def rays_from_pixels(
    cameras: Cameras,
    camera_indices: Tensor,
    pixels: Tensor,
    near: Union[float, Tensor],
    far: Union[float, Tensor],
) -> Rays:
    """World-space rays through ``pixels [R, 2]`` (pixel coordinates) of cameras ``camera_indices [R]``.

    ``near``/``far`` are scalars or ``[R]``/``[R, 1]`` tensors of ray distances.

    Example:
        The ray through the principal point of a camera at ``(1, 2, 3)`` with identity rotation
        starts there and points along ``+z`` (OpenCV: the camera looks along its ``+z``):

        >>> import torch
        >>> from langfield.types import Cameras
        >>> from langfield.geometry.rays import rays_from_pixels
        >>> c2w = torch.eye(4)
        >>> c2w[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
        >>> K = torch.tensor([[2.0, 0.0, 1.5], [0.0, 2.0, 1.5], [0.0, 0.0, 1.0]])
        >>> cameras = Cameras.create(c2w, K, widths=3, heights=3)
        >>> rays = rays_from_pixels(cameras, torch.tensor([0]), torch.tensor([[1.5, 1.5]]), near=0.1, far=5.0)
        >>> rays.origins.tolist(), rays.directions.tolist(), rays.far.tolist()
        ([[1.0, 2.0, 3.0]], [[0.0, 0.0, 1.0]], [[5.0]])
    """
    if pixels.ndim != 2 or pixels.shape[-1] != 2:
        raise ValueError(f"pixels must be [R, 2], got {tuple(pixels.shape)}")
    camera_indices = camera_indices.reshape(-1).long()
    if camera_indices.shape[0] != pixels.shape[0]:
        raise ValueError("camera_indices and pixels must have the same length")
    dirs_cam = camera_directions(cameras, camera_indices, pixels.float())
    c2w = cameras.c2w[camera_indices]
    dirs = torch.einsum("rij,rj->ri", c2w[:, :3, :3], dirs_cam)
    length = dirs.norm(dim=-1, keepdim=True)
    dirs = dirs / length
    focal = 0.5 * (cameras.Ks[camera_indices, 0, 0] + cameras.Ks[camera_indices, 1, 1])
    radii = (_PIXEL_RADIUS_SCALE / focal)[:, None] / length
    num = pixels.shape[0]
    near_t = torch.as_tensor(near, dtype=torch.float32, device=pixels.device).reshape(-1, 1).expand(num, 1)
    far_t = torch.as_tensor(far, dtype=torch.float32, device=pixels.device).reshape(-1, 1).expand(num, 1)
    return Rays(
        origins=c2w[:, :3, 3].contiguous(),
        directions=dirs,
        radii=radii,
        near=near_t.contiguous(),
        far=far_t.contiguous(),
        camera_indices=camera_indices,
    )


def rays_from_camera(cameras: Cameras, index: int, near: Union[float, Tensor], far: Union[float, Tensor]) -> Rays:
    """All rays of camera ``index`` as an ``[H, W]`` batch (row-major, like the image).

    Example:
        A 3 x 3 camera with focal length 1 whose principal point is the centre of pixel ``(1, 1)``:

        >>> import torch
        >>> from langfield.types import Cameras
        >>> from langfield.geometry.rays import rays_from_camera
        >>> K = torch.tensor([[1.0, 0.0, 1.5], [0.0, 1.0, 1.5], [0.0, 0.0, 1.0]])
        >>> rays = rays_from_camera(Cameras.create(torch.eye(4), K, widths=3, heights=3), 0, near=0.1, far=10.0)
        >>> tuple(rays.shape)
        (3, 3)
        >>> rays.directions[1, 1].tolist()  # through the principal point: straight ahead, +z
        [0.0, 0.0, 1.0]
        >>> [round(v, 4) for v in rays.directions[0, 0].tolist()]  # top-left pixel: left (-x) and up (-y)
        [-0.5774, -0.5774, 0.5774]
    """
    if not 0 <= index < len(cameras):
        raise IndexError(f"camera index {index} out of range for {len(cameras)} cameras")
    w, h = int(cameras.widths[index]), int(cameras.heights[index])
    pix = pixel_centers(w, h, device=cameras.device).reshape(-1, 2)
    idx = torch.full((pix.shape[0],), index, dtype=torch.int64, device=cameras.device)
    if isinstance(near, Tensor) and near.numel() > 1:
        near = near.reshape(-1)
    if isinstance(far, Tensor) and far.numel() > 1:
        far = far.reshape(-1)
    return rays_from_pixels(cameras, idx, pix, near, far).reshape(h, w)
