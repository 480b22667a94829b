"""Regularisers on the compositing weights along rays.

**Distortion loss** (Mip-NeRF 360, Barron et al., CVPR 2022, Sec. 4, Eq. 15). For one ray with
intervals ``[s_i, s_{i+1})`` in a normalised distance ``s in [0, 1]`` and weights ``w_i``::

    L_dist = sum_{i,j} w_i w_j |(s_i + s_{i+1})/2 - (s_j + s_{j+1})/2|  +  1/3 sum_i w_i^2 (s_{i+1} - s_i)

The first term pulls the weight of a ray together (it is the expected distance between two
points drawn from the ray's weight distribution); the second makes each interval's own weight
small or the interval short. Minimising it removes the floaters and the semi-transparent fog
that an unbounded scene otherwise fills with.

The double sum is computed in ``O(N)`` from per-ray prefix sums (paper, supplement; samples must
be sorted near to far, as every packed layout here is)::

    sum_{i,j} w_i w_j |m_i - m_j| = 2 sum_i w_i (m_i sum_{j<i} w_j - sum_{j<i} w_j m_j)

The slow twin (:mod:`langfield.ops.reference.ray_regularizers`) loops over all pairs.

**Normalised distance.** Eq. 15 is written in a normalised ray distance ``s``. Mip-NeRF 360
(Sec. 2, Eq. 11) maps ``t`` to ``s`` through ``g(t) = 1/t``; with a near plane much closer than
the scene that squeezes the whole foreground into a sliver of ``[0, 1]``. :func:`piecewise_lin_disp`
is nerfacto's spacing instead (its ``UniformLinDispPiecewiseSampler``): linear in ``t`` up to one
``unit`` (the scene box's half-width), linear in disparity beyond, continuous with slope 1 at the
seam -- the same split as the scene contraction (Mip-NeRF 360 Eq. 10), so an interval's length in
``s`` follows its length in contracted space.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from langfield.ops.volume_rendering import _check_samples, _exclusive_sum, accumulate_along_rays

__all__ = ["distortion_loss", "piecewise_lin_disp"]


def piecewise_lin_disp(t: Tensor, near: float, far: float, unit: float = 1.0) -> Tensor:
    """Normalised distance ``s in [0, 1]`` of ray distances ``t`` (any shape, clamped to ``[near, far]``).

    ``g(x) = x`` for ``x < 1`` and ``2 - 1/x`` beyond, with ``x = t / unit``;
    ``s = (g(t) - g(near)) / (g(far) - g(near))``.
    """
    if not (0.0 <= near < far):
        raise ValueError(f"piecewise_lin_disp: need 0 <= near < far, got near={near}, far={far}")
    if not unit > 0:
        raise ValueError(f"piecewise_lin_disp: unit must be > 0, got {unit}")

    def g(x: Tensor) -> Tensor:
        return torch.where(x < 1.0, x, 2.0 - 1.0 / x.clamp_min(1.0))

    lo, hi = (g(torch.tensor(v / unit, dtype=torch.float64)).item() for v in (near, far))
    x = t.clamp(near, far) / unit
    return (g(x) - lo) / (hi - lo)


def distortion_loss(
    weights: Tensor,
    s_starts: Tensor,
    s_ends: Tensor,
    ray_indices: Optional[Tensor] = None,
    num_rays: Optional[int] = None,
) -> Tensor:
    """Mip-NeRF 360 distortion loss (Eq. 15) of each ray.

    Args:
        weights: ``[R, S]`` (batched) or ``[N]`` (packed) compositing weights.
        s_starts, s_ends: same shape, interval bounds in a normalised distance (e.g.
            :func:`piecewise_lin_disp` of ``t_starts`` / ``t_ends``), increasing along each ray.
        ray_indices: ``[N]`` int64 sorted ray id of each packed sample, or ``None`` for batched.
        num_rays: ``R`` for the packed layout.

    Returns:
        ``[R]`` (batched ``[*B]``) loss per ray; rays without samples get 0. Differentiable in
        ``weights`` (and in ``s``).

    Example:
        All the weight in one short interval costs little; the same weight spread over the
        ray costs more:

        >>> import torch
        >>> from langfield.ops.ray_regularizers import distortion_loss
        >>> s0, s1 = torch.tensor([[0.0, 0.25, 0.5, 0.75]]), torch.tensor([[0.25, 0.5, 0.75, 1.0]])
        >>> round(distortion_loss(torch.tensor([[0.0, 1.0, 0.0, 0.0]]), s0, s1).item(), 4)
        0.0833
        >>> round(distortion_loss(torch.full((1, 4), 0.25), s0, s1).item(), 4)
        0.3333
    """
    ray_indices, num_rays = _check_samples(
        [("weights", weights), ("s_starts", s_starts), ("s_ends", s_ends)], ray_indices, num_rays
    )
    mids = 0.5 * (s_starts + s_ends)
    w_before = _exclusive_sum(weights, ray_indices, num_rays)
    wm_before = _exclusive_sum(weights * mids, ray_indices, num_rays)
    inter = 2.0 * weights * (mids * w_before - wm_before)
    intra = weights.square() * (s_ends - s_starts) / 3.0
    per_sample = inter + intra
    if ray_indices is None:
        return per_sample.sum(-1)
    return accumulate_along_rays(per_sample, None, ray_indices, num_rays)[..., 0]
