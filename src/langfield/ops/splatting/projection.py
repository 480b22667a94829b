"""EWA projection of 3D Gaussians to screen space (Zwicker et al. 2001; Kerbl et al. 2023, Sec. 4).

A Gaussian with mean ``mu``, rotation ``R(q)`` and scales ``s`` has world covariance
``Sigma = R S S^T R^T`` (Eq. 6). In camera space (OpenCV: x right, y down, z forward) its
mean ``t = W mu + w`` projects to ``(fx t_x / t_z + cx, fy t_y / t_z + cy)`` and its covariance
to ``Sigma' = J W Sigma W^T J^T`` (Eq. 5), with the perspective Jacobian ``J`` evaluated at
``t`` clamped to 1.3x the field of view (as the reference implementation does, so Gaussians far
off-screen do not get huge footprints). A 0.3 px isotropic low-pass is added to ``Sigma'``
(screen-space dilation of the reference). The footprint radius is ``ceil(3 sqrt(lambda_max))``.

Pixel ``(row i, col j)`` has its centre at ``(j + 0.5, i + 0.5)`` (like the rays of
:mod:`langfield.geometry.rays`), so ``cx = W / 2`` puts the principal point at the image centre.

Culling (``radii == 0``): ``t_z`` outside ``(near, far)``, a non-positive 2D determinant, or a
footprint square entirely outside the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from langfield.geometry.rotations import quaternion_to_matrix

__all__ = ["Projection", "project_gaussians", "covariances_from_scales_quats"]


@dataclass(frozen=True)
class Projection:
    """Screen-space Gaussians of one camera (``N`` rows, culled ones have ``radii == 0``).

    Attributes:
        means2d: ``[N, 2]`` pixel coordinates (differentiable).
        conics: ``[N, 3]`` ``(a, b, c)`` of the inverse 2D covariance ``[[a, b], [b, c]]``.
        depths: ``[N]`` camera-space z (sort key).
        radii: ``[N]`` int32 footprint radius in pixels.
        distances: ``[N]`` distance from the camera centre to the mean (renders "depth" as ray
            distance, the convention of :class:`~langfield.types.RenderOutput`).
    """

    means2d: Tensor
    conics: Tensor
    depths: Tensor
    radii: Tensor
    distances: Tensor


def covariances_from_scales_quats(scales: Tensor, quats: Tensor) -> Tensor:
    """World covariances ``[N, 3, 3] = R S S^T R^T`` from activated ``scales [N, 3]`` and
    quaternions ``quats [N, 4]`` (w, x, y, z; normalised inside). Kerbl et al. 2023, Eq. 6.

    Example:
        Scales ``(1, 2, 3)`` give variances ``(1, 4, 9)``; a 90 degree turn about ``z`` swaps ``x`` and ``y``:

        >>> import math, torch
        >>> from langfield.ops.splatting import covariances_from_scales_quats
        >>> scales = torch.tensor([[1.0, 2.0, 3.0]] * 2)
        >>> quats = torch.tensor([[1.0, 0.0, 0.0, 0.0], [math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)]])
        >>> cov = covariances_from_scales_quats(scales, quats)
        >>> [[round(v, 4) for v in c.diagonal().tolist()] for c in cov]
        [[1.0, 4.0, 9.0], [4.0, 1.0, 9.0]]
    """
    M = quaternion_to_matrix(quats) * scales[:, None, :]
    return M @ M.transpose(-1, -2)


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    w2c: Tensor,
    K: Tensor,
    width: int,
    height: int,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
) -> Projection:
    """Project ``N`` Gaussians into one pinhole camera.

    Args:
        means: ``[N, 3]`` world positions.
        quats: ``[N, 4]`` rotations (w, x, y, z), any norm.
        scales: ``[N, 3]`` activated (positive) standard deviations along the local axes.
        w2c: ``[4, 4]`` or ``[3, 4]`` world-to-camera, OpenCV convention.
        K: ``[3, 3]`` intrinsics in pixels.
        width, height: image size in pixels.
        near, far: camera-z culling planes.
        eps2d: isotropic low-pass added to the 2D covariance (pixels^2; 0.3 as the reference).

    Returns:
        :class:`Projection`; differentiable w.r.t. means, quats, scales (and w2c, K).

    Example:
        A Gaussian of std 0.2 two units in front of the camera lands on the principal point with a
        2D std of ``fx * 0.2 / 2 = 1`` px (variance 1 + the 0.3 low-pass); one behind the camera is culled:

        >>> import torch
        >>> from langfield.ops.splatting import project_gaussians
        >>> means = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, -1.0]])
        >>> quats, scales = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 2), torch.full((2, 3), 0.2)
        >>> K = torch.tensor([[10.0, 0.0, 8.0], [0.0, 10.0, 8.0], [0.0, 0.0, 1.0]])
        >>> proj = project_gaussians(means, quats, scales, torch.eye(4), K, width=16, height=16)
        >>> proj.means2d[0].tolist(), proj.depths.tolist(), proj.radii.tolist()
        ([8.0, 8.0], [2.0, -1.0], [4, 0])
        >>> [round(v, 4) for v in proj.conics[0, [0, 2]].tolist()]  # (a, c) of the inverse covariance: 1 / 1.3
        [0.7692, 0.7692]
    """
    n = means.shape[0]
    if means.ndim != 2 or means.shape[1] != 3:
        raise ValueError(f"means must be [N, 3], got {tuple(means.shape)}")
    if quats.shape != (n, 4) or scales.shape != (n, 3):
        raise ValueError(f"quats must be [{n}, 4] and scales [{n}, 3], got {tuple(quats.shape)}, {tuple(scales.shape)}")
    if tuple(K.shape) != (3, 3) or tuple(w2c.shape[-2:]) not in {(3, 4), (4, 4)}:
        raise ValueError(f"K must be [3, 3] and w2c [4, 4] or [3, 4], got {tuple(K.shape)}, {tuple(w2c.shape)}")
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if not bool(fx > 0) or not bool(fy > 0):
        raise ValueError(f"camera focal lengths must be > 0, got fx={float(fx)}, fy={float(fy)}")
    R, t = w2c[:3, :3], w2c[:3, 3]
    p = means @ R.T + t  # [N, 3] camera space
    x, y, z = p.unbind(-1)
    in_depth = (z > near) & (z < far)
    zs = torch.where(in_depth, z, torch.ones_like(z))  # safe denominators for culled rows

    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    lim_x_hi, lim_x_lo = (width - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
    lim_y_hi, lim_y_lo = (height - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
    tx = zs * torch.minimum(torch.maximum(x / zs, -lim_x_lo), lim_x_hi)
    ty = zs * torch.minimum(torch.maximum(y / zs, -lim_y_lo), lim_y_hi)
    zero = torch.zeros_like(zs)
    J = torch.stack(
        [fx / zs, zero, -fx * tx / (zs * zs), zero, fy / zs, -fy * ty / (zs * zs)], dim=-1
    ).reshape(n, 2, 3)
    T = J @ R  # [N, 2, 3]
    cov = covariances_from_scales_quats(scales, quats)
    cov2d = T @ cov @ T.transpose(-1, -2)
    a = cov2d[:, 0, 0] + eps2d
    b = cov2d[:, 0, 1]
    c = cov2d[:, 1, 1] + eps2d
    det = a * c - b * b
    ok_det = det > 0
    det_s = torch.where(ok_det, det, torch.ones_like(det))
    conics = torch.stack([c / det_s, -b / det_s, a / det_s], dim=-1)

    mid = 0.5 * (a + c)
    lam = mid + torch.sqrt(torch.clamp(mid * mid - det, min=0.1))
    radius = torch.ceil(3.0 * torch.sqrt(lam.detach().clamp_min(0)))
    means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], dim=-1)
    u, v = means2d.detach().unbind(-1)
    on_screen = (u + radius > 0) & (u - radius < width) & (v + radius > 0) & (v - radius < height)
    visible = in_depth & ok_det & on_screen
    radii = torch.where(visible, radius, torch.zeros_like(radius)).to(torch.int32)
    distances = torch.linalg.vector_norm(p, dim=-1)
    return Projection(means2d=means2d, conics=conics, depths=z, radii=radii, distances=distances)
