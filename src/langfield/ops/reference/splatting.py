"""Slow, readable twins of :mod:`langfield.ops.splatting` (Kerbl et al. 2023).

* :func:`project_gaussians_reference` projects one Gaussian at a time with explicit 3x3 matrices.
* :func:`rasterize_gaussians_reference` blends *every* Gaussian at *every* pixel (a dense
  ``[H*W, N]`` problem) with masks that reproduce the tiled rasteriser's rules, and lets autograd
  differentiate it. Only for tiny inputs (tests, gradcheck).

They import nothing from the fast paths, so a shared bug cannot hide.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from langfield.geometry.rotations import quaternion_to_matrix

__all__ = ["project_gaussians_reference", "rasterize_gaussians_reference"]

ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4


def project_gaussians_reference(
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
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per-Gaussian EWA projection (Zwicker et al. 2001; Kerbl et al. 2023 Eq. 5-6).

    Returns ``(means2d [N, 2], conics [N, 3], depths [N], radii [N] int32, distances [N])``; see
    :func:`langfield.ops.splatting.project_gaussians` for the conventions.
    """
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    R, t = w2c[:3, :3], w2c[:3, 3]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    out_m, out_c, out_d, out_r, out_dist = [], [], [], [], []
    for i in range(means.shape[0]):
        p = R @ means[i] + t
        x, y, z = p[0], p[1], p[2]
        S = torch.diag(scales[i])
        M = quaternion_to_matrix(quats[i]) @ S
        cov_world = M @ M.T
        visible = bool(near < z < far)
        zs = z if visible else z.new_tensor(1.0)
        # The reference clamps the point to 1.3x the field of view before building the Jacobian.
        tx = zs * torch.clamp(x / zs, -(cx / fx + 0.3 * tan_x), (width - cx) / fx + 0.3 * tan_x)
        ty = zs * torch.clamp(y / zs, -(cy / fy + 0.3 * tan_y), (height - cy) / fy + 0.3 * tan_y)
        J = torch.stack([
            torch.stack([fx / zs, zs * 0, -fx * tx / zs**2]),
            torch.stack([zs * 0, fy / zs, -fy * ty / zs**2]),
        ])
        cov2d = J @ R @ cov_world @ R.T @ J.T + eps2d * torch.eye(2, dtype=means.dtype)
        a, b, c = cov2d[0, 0], cov2d[0, 1], cov2d[1, 1]
        det = a * c - b * b
        if det <= 0:
            visible = False
        det_s = det if det > 0 else det.new_tensor(1.0)
        conic = torch.stack([c / det_s, -b / det_s, a / det_s])
        mid = 0.5 * (a + c)
        lam = mid + torch.sqrt(torch.clamp(mid * mid - det, min=0.1))
        radius = math.ceil(3.0 * math.sqrt(float(lam.detach())))
        u, v = fx * x / zs + cx, fy * y / zs + cy
        if u + radius <= 0 or u - radius >= width or v + radius <= 0 or v - radius >= height:
            visible = False
        out_m.append(torch.stack([u, v]))
        out_c.append(conic)
        out_d.append(z)
        out_r.append(radius if visible else 0)
        out_dist.append(torch.linalg.norm(p))
    if not out_m:
        e = means.new_zeros(0)
        return means.new_zeros(0, 2), means.new_zeros(0, 3), e, torch.zeros(0, dtype=torch.int32), e
    return (
        torch.stack(out_m),
        torch.stack(out_c),
        torch.stack(out_d),
        torch.tensor(out_r, dtype=torch.int32),
        torch.stack(out_dist),
    )


def rasterize_gaussians_reference(
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    features: Tensor,
    radii: Tensor,
    width: int,
    height: int,
    background: Optional[Tensor] = None,
    tile_size: int = 16,
    *,
    depths: Tensor,
) -> Tuple[Tensor, Tensor]:
    """Dense front-to-back alpha blending with the 3DGS reference's rules.

    For pixel centre ``p`` and Gaussians in increasing ``depths`` order (stable), Gaussian ``g``
    takes part only if its tile rectangle covers ``p``'s tile and ``radii[g] > 0``; then
    ``power = -0.5 d^T conic d`` with ``d = mean2d - p``, skipped if ``power > 0``;
    ``alpha = min(0.99, opacity * exp(power))``, skipped if ``alpha < 1/255``; blending stops
    *before* the first Gaussian that would take transmittance below ``1e-4``.

    Returns ``(image [H, W, D], alpha [H, W, 1])`` with ``image = sum_g w_g f_g + T * background``.
    """
    n, d = features.shape
    dtype = means2d.dtype
    jj, ii = torch.meshgrid(torch.arange(width, dtype=dtype), torch.arange(height, dtype=dtype), indexing="xy")
    px, py = (jj + 0.5).reshape(-1), (ii + 0.5).reshape(-1)  # [P], row-major
    if n == 0:
        image = torch.zeros(height * width, d, dtype=dtype)
        if background is not None:
            image = image + background
        return image.reshape(height, width, d), torch.zeros(height, width, 1, dtype=dtype)

    order = torch.argsort(depths.detach(), stable=True)
    m, con, op, f, r = means2d[order], conics[order], opacities[order], features[order], radii[order]

    # Tile coverage: pixel tile vs. each Gaussian's tile rectangle (same formula, written out).
    ptx = torch.div(jj.reshape(-1).long(), tile_size, rounding_mode="floor")
    pty = torch.div(ii.reshape(-1).long(), tile_size, rounding_mode="floor")
    rr = r.to(dtype)
    gx0 = torch.floor((m[:, 0].detach() - rr) / tile_size)
    gx1 = torch.floor((m[:, 0].detach() + rr) / tile_size)
    gy0 = torch.floor((m[:, 1].detach() - rr) / tile_size)
    gy1 = torch.floor((m[:, 1].detach() + rr) / tile_size)
    covered = (
        (ptx[:, None] >= gx0[None]) & (ptx[:, None] <= gx1[None])
        & (pty[:, None] >= gy0[None]) & (pty[:, None] <= gy1[None])
        & (r[None] > 0)
    )  # fmt: skip

    dx = m[None, :, 0] - px[:, None]
    dy = m[None, :, 1] - py[:, None]
    power = -0.5 * (con[None, :, 0] * dx * dx + con[None, :, 2] * dy * dy) - con[None, :, 1] * dx * dy
    alpha = torch.clamp(op[None] * torch.exp(power), max=ALPHA_MAX)
    used = covered & (power <= 0) & (alpha >= ALPHA_MIN)
    alpha = torch.where(used, alpha, torch.zeros_like(alpha))
    t_after = torch.cumprod(1.0 - alpha, dim=1)
    used = used & (t_after >= T_MIN)
    alpha = torch.where(used, alpha, torch.zeros_like(alpha))
    t_after = torch.cumprod(1.0 - alpha, dim=1)
    t_before = torch.cat([torch.ones_like(t_after[:, :1]), t_after[:, :-1]], dim=1)
    weights = alpha * t_before  # [P, N]
    final_t = t_after[:, -1:]
    image = weights @ f
    if background is not None:
        image = image + final_t * background
    return image.reshape(height, width, d), (1.0 - final_t).reshape(height, width, 1)
