"""Slow, readable twin of :mod:`langfield.ops.ray_regularizers`: the distortion loss of
Mip-NeRF 360 (Barron et al., CVPR 2022, Eq. 15) as the paper writes it, a double loop over every
pair of intervals of a ray. Only for tests; shares no code with the fast path.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from langfield.ops.reference.volume_rendering import _rays_of_samples

__all__ = ["distortion_loss"]


def distortion_loss(
    weights: Tensor,
    s_starts: Tensor,
    s_ends: Tensor,
    ray_indices: Optional[Tensor] = None,
    num_rays: Optional[int] = None,
) -> Tensor:
    """``[R]`` loss per ray (batched ``[*B]``) of ``[R, S]`` / packed ``[N]`` weights and intervals."""
    w, s0, s1 = weights.reshape(-1), s_starts.reshape(-1), s_ends.reshape(-1)
    losses = []
    for samples in _rays_of_samples(weights.shape, ray_indices, num_rays):
        total = w.new_zeros(())
        for i in samples:
            mid_i = 0.5 * (s0[i] + s1[i])
            for j in samples:
                mid_j = 0.5 * (s0[j] + s1[j])
                total = total + w[i] * w[j] * torch.abs(mid_i - mid_j)
            total = total + w[i] * w[i] * (s1[i] - s0[i]) / 3.0
        losses.append(total)
    if not losses:
        return w.new_zeros(0)
    out = torch.stack(losses)
    return out if ray_indices is not None else out.reshape(weights.shape[:-1])
