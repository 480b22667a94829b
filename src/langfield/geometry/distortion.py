"""OpenCV radial/tangential lens distortion (Brown-Conrady, coefficients ``k1 k2 p1 p2 k3``).

Points are normalised image coordinates ``(x, y) = ((u - cx) / fx, (v - cy) / fy)``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_inputs(xy: Tensor, dist: Tensor, name: str) -> None:
    if xy.ndim < 1 or xy.shape[-1] != 2:
        raise ValueError(f"{name} must have shape [..., 2], got {tuple(xy.shape)}")
    if dist.ndim < 1 or dist.shape[-1] != 5:
        raise ValueError(f"dist must have shape [..., 5] (k1, k2, p1, p2, k3), got {tuple(dist.shape)}")


def distort_points(xy: Tensor, dist: Tensor) -> Tensor:
    """Apply distortion: ideal normalised coords ``[*B, 2]`` -> distorted ``[*B, 2]``.

    ``dist`` is ``[*B, 5]`` (or broadcastable) in OpenCV order ``(k1, k2, p1, p2, k3)``.

    Example:
        Radial ``k1 = 0.1`` at radius 0.5 scales the point by ``1 + 0.1 * 0.25``:

        >>> import torch
        >>> from langfield.geometry.distortion import distort_points
        >>> dist = torch.tensor([0.1, 0.0, 0.0, 0.0, 0.0])
        >>> [round(v, 4) for v in distort_points(torch.tensor([0.5, 0.0]), dist).tolist()]
        [0.5125, 0.0]
    """
    _check_inputs(xy, dist, "xy")
    x, y = xy[..., 0], xy[..., 1]
    k1, k2, p1, p2, k3 = dist.unbind(-1)
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return torch.stack([xd, yd], dim=-1)


def undistort_points(xy_distorted: Tensor, dist: Tensor, num_iters: int = 10) -> Tensor:
    """Invert :func:`distort_points` with Newton iterations (2x2 Jacobian per point).

    Converges to ~1e-7 for the distortion found in real lenses (``|k| < 1`` over the image).

    Example:
        >>> import torch
        >>> from langfield.geometry.distortion import distort_points, undistort_points
        >>> dist = torch.tensor([0.1, -0.05, 0.001, 0.002, 0.01])
        >>> xy = torch.tensor([[0.3, -0.2], [-0.5, 0.4]])
        >>> torch.allclose(undistort_points(distort_points(xy, dist), dist), xy, atol=1e-6)
        True
        >>> k1_only = torch.tensor([0.1, 0.0, 0.0, 0.0, 0.0])
        >>> [round(v, 4) for v in undistort_points(torch.tensor([0.5125, 0.0]), k1_only).tolist()]
        [0.5, 0.0]
    """
    _check_inputs(xy_distorted, dist, "xy_distorted")
    xy = xy_distorted.clone()
    eps = 1e-9
    for _ in range(num_iters):
        xy_req = xy.detach().requires_grad_(False)
        x, y = xy_req[..., 0], xy_req[..., 1]
        k1, k2, p1, p2, k3 = dist.unbind(-1)
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        d_radial_dr2 = k1 + r2 * (2.0 * k2 + 3.0 * k3 * r2)
        fx = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x) - xy_distorted[..., 0]
        fy = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y - xy_distorted[..., 1]
        # Jacobian of the distortion map.
        j00 = radial + x * d_radial_dr2 * 2.0 * x + 2.0 * p1 * y + 6.0 * p2 * x
        j01 = x * d_radial_dr2 * 2.0 * y + 2.0 * p1 * x + 2.0 * p2 * y
        j10 = y * d_radial_dr2 * 2.0 * x + 2.0 * p1 * x + 2.0 * p2 * y
        j11 = radial + y * d_radial_dr2 * 2.0 * y + 6.0 * p1 * y + 2.0 * p2 * x
        det = j00 * j11 - j01 * j10
        det = torch.where(det.abs() < eps, torch.full_like(det, eps), det)
        dx = (fx * j11 - fy * j01) / det
        dy = (fy * j00 - fx * j10) / det
        xy = torch.stack([x - dx, y - dy], dim=-1)
    return xy
