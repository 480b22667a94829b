"""Front-to-back evaluation of packed ray samples that stops each ray once it is opaque.

Instant-NGP (Müller et al., SIGGRAPH 2022, App. E.1) marches rays in rounds and retires a ray
when its transmittance falls below ``1e-4``; samples behind that point are never sent through
the network. A march that builds all candidate samples first and evaluates them all in one
batch pays for every sample behind every surface -- on an unbounded capture, most of them.

:func:`densities_front_to_back` evaluates the samples of a packed layout in rounds of growing
depth (the first ``first_round`` samples of every ray, then the next ``2 * first_round`` of the
rays still transparent, ...). Its result is exact for early termination: a sample it skips lies
behind optical depth ``-ln(eps)`` on its ray, so ``T_i <= eps`` and the caller's test
``T_i > eps`` drops it whatever its density; the samples it evaluates get the same values as a
single full pass. Skipped samples are returned with density 0 (and zero features).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from langfield.ops.volume_rendering import _check_samples, _ray_counts_and_starts

__all__ = ["densities_front_to_back"]

#: ``fn(sample_index [n]) -> (sigmas [n], features [n, D] or None)``.
DensityFn = Callable[[Tensor], Tuple[Tensor, Optional[Tensor]]]


def densities_front_to_back(
    t_starts: Tensor,
    t_ends: Tensor,
    ray_indices: Tensor,
    num_rays: int,
    fn: DensityFn,
    *,
    eps: float = 1e-4,
    first_round: int = 32,
) -> Tuple[Tensor, Optional[Tensor], Tensor]:
    """Densities (and optional features) of packed samples, skipping those behind opaque points.

    Args:
        t_starts, t_ends: ``[N]`` intervals, sorted by ray and near to far within a ray.
        ray_indices: ``[N]`` int64 sorted ray id of each sample; ``num_rays``: ``R``.
        fn: evaluates the samples at the given indices (see :data:`DensityFn`); called once per
            round with the indices of that round's samples, ascending.
        eps: a ray is retired once its transmittance is ``<= eps`` (Instant-NGP: ``1e-4``).
        first_round: samples per ray in the first round; each later round doubles it.

    Returns:
        ``(sigmas [N], features [N, D] or None, evaluated [N] bool)``; not evaluated samples have
        density 0 and zero features.
    """
    ray_indices, num_rays = _check_samples([("t_starts", t_starts), ("t_ends", t_ends)], ray_indices, num_rays)
    if not 0.0 < eps < 1.0:
        raise ValueError(f"densities_front_to_back: eps must be in (0, 1), got {eps}")
    if first_round < 1:
        raise ValueError(f"densities_front_to_back: first_round must be >= 1, got {first_round}")
    n = t_starts.shape[0]
    device = t_starts.device
    sigmas = t_starts.new_zeros(n)
    evaluated = torch.zeros(n, dtype=torch.bool, device=device)
    features: Optional[Tensor] = None
    if n == 0:
        sig, feats = fn(torch.zeros(0, dtype=torch.long, device=device))
        return sigmas, (None if feats is None else feats.new_zeros(0, feats.shape[-1])), evaluated
    counts, starts = _ray_counts_and_starts(ray_indices, num_rays)
    depth_in_ray = torch.arange(n, device=device) - starts[ray_indices]
    max_depth = int(counts.max())
    max_optical = -math.log(eps)
    optical = torch.zeros(num_rays, dtype=torch.float64, device=device)
    deltas = t_ends - t_starts
    lo, size = 0, first_round
    while lo < max_depth:
        alive = optical < max_optical
        chosen = (depth_in_ray >= lo) & (depth_in_ray < lo + size) & alive[ray_indices]
        index = chosen.nonzero().squeeze(1)
        if index.numel() == 0:
            break
        sig, feats = fn(index)
        sigmas[index] = sig.to(sigmas.dtype)
        evaluated[index] = True
        if feats is not None:
            if features is None:
                features = feats.new_zeros(n, feats.shape[-1])
            features[index] = feats
        optical.index_add_(0, ray_indices[index], (sig * deltas[index]).to(torch.float64))
        lo, size = lo + size, size * 2
    return sigmas, features, evaluated
