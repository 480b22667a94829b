"""Slow, readable twin of :mod:`langfield.ops.volume_rendering` (same names, same layouts).

A plain per-ray Python loop over samples, written straight from the quadrature of NeRF
(Mildenhall et al., ECCV 2020, Sec. 4, Eq. 3)::

    T = 1
    for each sample i along the ray, near to far:
        alpha_i = 1 - exp(-sigma_i * (t_end_i - t_start_i))
        w_i = T * alpha_i
        T = T * (1 - alpha_i)

Only for tests: it shares no code with the fast path (imports only torch).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["accumulate_along_rays", "render_weights_from_density"]


def _rays_of_samples(shape: torch.Size, ray_indices: Optional[Tensor], num_rays: Optional[int]) -> List[List[int]]:
    """Flat sample positions belonging to each ray, in order."""
    if ray_indices is None:
        num_samples = shape[-1]
        num = 1
        for s in shape[:-1]:
            num *= s
        return [list(range(r * num_samples, (r + 1) * num_samples)) for r in range(num)]
    if num_rays is None:
        num_rays = int(ray_indices.max()) + 1 if ray_indices.numel() else 0
    rays: List[List[int]] = [[] for _ in range(num_rays)]
    for i, r in enumerate(ray_indices.tolist()):
        rays[r].append(i)
    return rays


def render_weights_from_density(
    t_starts: Tensor,
    t_ends: Tensor,
    sigmas: Tensor,
    ray_indices: Optional[Tensor] = None,
    num_rays: Optional[int] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """``(weights, transmittance, alphas)``, each the shape of ``sigmas`` (``[R, S]`` or ``[N]``)."""
    flat_t0, flat_t1, flat_sigma = t_starts.reshape(-1), t_ends.reshape(-1), sigmas.reshape(-1)
    n = flat_sigma.shape[0]
    weights: List[Optional[Tensor]] = [None] * n
    trans: List[Optional[Tensor]] = [None] * n
    alphas: List[Optional[Tensor]] = [None] * n
    for samples in _rays_of_samples(sigmas.shape, ray_indices, num_rays):
        T = torch.ones((), dtype=sigmas.dtype, device=sigmas.device)
        for i in samples:
            alpha = 1.0 - torch.exp(-flat_sigma[i] * (flat_t1[i] - flat_t0[i]))
            weights[i] = T * alpha
            trans[i] = T
            alphas[i] = alpha
            T = T * (1.0 - alpha)

    def stack(items: List[Optional[Tensor]]) -> Tensor:
        if n == 0:
            return sigmas.new_zeros(sigmas.shape)
        return torch.stack(items).reshape(sigmas.shape)  # type: ignore[arg-type]

    return stack(weights), stack(trans), stack(alphas)


def accumulate_along_rays(
    weights: Tensor,
    values: Optional[Tensor] = None,
    ray_indices: Optional[Tensor] = None,
    num_rays: Optional[int] = None,
) -> Tensor:
    """``[R, D]`` weighted sums of ``values`` (``[R, S, D]`` / ``[N, D]``; ``None`` -> weights, ``D = 1``)."""
    flat_w = weights.reshape(-1)
    if values is None:
        flat_v = torch.ones_like(flat_w)[:, None]
    else:
        flat_v = values.reshape(-1, values.shape[-1])
    rows = []
    for samples in _rays_of_samples(weights.shape, ray_indices, num_rays):
        total = flat_v.new_zeros(flat_v.shape[-1])
        for i in samples:
            total = total + flat_w[i] * flat_v[i]
        rows.append(total)
    if not rows:
        return flat_v.new_zeros(0, flat_v.shape[-1])
    out = torch.stack(rows)
    if ray_indices is None:
        out = out.reshape(*weights.shape[:-1], flat_v.shape[-1])
    return out
