"""Sampling along rays: stratified bins, inverse-transform (hierarchical) sampling, Mip-NeRF
weight blurring and conical-frustum Gaussians.

Conventions: ray directions are unit vectors, so ``t`` is metric distance along the ray, and
``radii`` is the cone radius at unit distance (see :class:`langfield.types.Rays`). Shapes use
``R`` rays and ``S`` samples (bins) per ray; any leading batch shape ``[*B]`` may replace ``[R]``.

Value checks that would need a host sync on an accelerator (``far >= near``, ``near > 0`` for
``lindisp``) run only for CPU tensors.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = [
    "conical_frustum_to_gaussian",
    "mipnerf_blur_weights",
    "sample_pdf",
    "sample_pdf_edges",
    "stratified_bins",
]


def _check_num_samples(num_samples: int, name: str = "num_samples") -> None:
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"{name} must be an int >= 1, got {num_samples!r}")


def _rand(shape, like: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    return torch.rand(shape, dtype=like.dtype, device=like.device, generator=generator)


def stratified_bins(
    near: Tensor,
    far: Tensor,
    num_samples: int,
    randomized: bool,
    lindisp: bool = False,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """``S + 1`` sorted bin edges per ray for stratified sampling (NeRF Sec. 4, Eq. 2).

    Edges are evenly spaced in ``t`` (or in disparity ``1/t`` when ``lindisp``, NeRF's LLFF
    option). When ``randomized``, every *interior* edge is jittered uniformly within its stratum
    (between the midpoints to its neighbours), so edges stay sorted and the first and last edges
    stay exactly at ``near`` and ``far`` — the bins always tile the whole ``[near, far]``
    interval. (Mip-NeRF also jitters the two end edges, which leaves part of the interval
    uncovered; we keep them fixed so accumulation always integrates the full ray segment.)

    Args:
        near, far: ``[R, 1]`` ray distances, ``far >= near`` (``near > 0`` if ``lindisp``).
        num_samples: ``S >= 1`` bins.
        randomized: jitter the interior edges (training) or not (evaluation, deterministic).
        lindisp: space the edges linearly in inverse depth.
        generator: optional ``torch.Generator`` for the jitter.

    Returns:
        ``[R, S + 1]`` bin edges; ``t_starts = edges[..., :-1]``, ``t_ends = edges[..., 1:]``.

    Example:
        >>> import torch
        >>> from langfield.ops import stratified_bins
        >>> near, far = torch.tensor([[2.0]]), torch.tensor([[6.0]])
        >>> stratified_bins(near, far, num_samples=4, randomized=False).tolist()
        [[2.0, 3.0, 4.0, 5.0, 6.0]]
        >>> jittered = stratified_bins(near, far, 4, randomized=True, generator=torch.Generator().manual_seed(0))
        >>> jittered[0, 0].item(), jittered[0, -1].item(), bool((jittered.diff() > 0).all())  # ends fixed, sorted
        (2.0, 6.0, True)
    """
    _check_num_samples(num_samples)
    for name, t in (("near", near), ("far", far)):
        if not isinstance(t, Tensor) or t.ndim < 1 or t.shape[-1] != 1:
            shape = None if not isinstance(t, Tensor) else tuple(t.shape)
            raise ValueError(f"{name} must be [R, 1], got {shape}")
    if near.shape != far.shape:
        raise ValueError(f"near {tuple(near.shape)} and far {tuple(far.shape)} must have the same shape")
    if near.device.type == "cpu" and near.numel() > 0:
        if bool((far < near).any()):
            raise ValueError("far must be >= near for every ray")
        if lindisp and bool((near <= 0).any()):
            raise ValueError("near must be > 0 when lindisp=True")
    dtype = near.dtype if near.dtype.is_floating_point else torch.float32
    near, far = near.to(dtype), far.to(dtype)
    u = torch.linspace(0.0, 1.0, num_samples + 1, dtype=dtype, device=near.device)
    if lindisp:
        edges = 1.0 / ((1.0 / near) * (1.0 - u) + (1.0 / far) * u)
    else:
        edges = near * (1.0 - u) + far * u
    if randomized and num_samples > 1:
        mids = 0.5 * (edges[..., 1:] + edges[..., :-1])  # [R, S]
        lower, upper = mids[..., :-1], mids[..., 1:]  # strata of the S - 1 interior edges
        jitter = _rand(lower.shape, lower, generator)
        interior = lower + (upper - lower) * jitter
        edges = torch.cat([edges[..., :1], interior, edges[..., -1:]], dim=-1)
    return edges


def _inverse_cdf(bins: Tensor, weights: Tensor, u: Tensor, eps: float) -> Tensor:
    """Invert the piecewise-linear CDF of a piecewise-constant pdf on ``bins`` at sorted ``u``.

    Uses the generalised inverse ``F^-1(u) = inf{t : F(t) >= u}`` for ``u > 0`` and
    ``sup{t : F(t) = 0}`` for ``u = 0`` so both ends land on the support of the pdf.
    """
    weights = weights.clamp_min(0.0)
    # Mip-NeRF's padding: only rays whose total weight is below eps get (uniform) extra weight.
    total = weights.sum(dim=-1, keepdim=True)
    padding = (eps - total).clamp_min(0.0)
    weights = weights + padding / weights.shape[-1]
    cum = torch.cumsum(weights, dim=-1)
    # Divide by the last cumsum entry itself so the final value and the plateau after the last
    # non-zero bin are exactly 1.
    cdf = torch.cat([torch.zeros_like(cum[..., :1]), cum / cum[..., -1:]], dim=-1).contiguous()  # [R, S+1]
    u = u.contiguous()
    idx = torch.where(
        u > 0,
        torch.searchsorted(cdf, u, side="left"),
        torch.searchsorted(cdf, u, side="right"),
    )
    num_edges = bins.shape[-1]
    below = (idx - 1).clamp(0, num_edges - 1)
    above = idx.clamp(0, num_edges - 1)
    cdf_below, cdf_above = torch.gather(cdf, -1, below), torch.gather(cdf, -1, above)
    bin_below, bin_above = torch.gather(bins, -1, below), torch.gather(bins, -1, above)
    denom = cdf_above - cdf_below
    frac = torch.where(denom > 0, (u - cdf_below) / torch.where(denom > 0, denom, torch.ones_like(denom)), 0.0)
    t = bin_below + frac.clamp(0.0, 1.0) * (bin_above - bin_below)
    # Rounding may break monotonicity by an ulp at bin boundaries.
    return torch.sort(t, dim=-1).values


def _check_pdf_inputs(bins: Tensor, weights: Tensor, num_samples: int, eps: float) -> None:
    _check_num_samples(num_samples)
    if not isinstance(bins, Tensor) or not isinstance(weights, Tensor):
        raise ValueError("bins and weights must be torch.Tensors")
    if weights.ndim < 1 or weights.shape[-1] < 1:
        raise ValueError(f"weights must be [R, S] with S >= 1, got {tuple(weights.shape)}")
    if bins.shape != weights.shape[:-1] + (weights.shape[-1] + 1,):
        raise ValueError(
            f"bins must be {tuple(weights.shape[:-1]) + (weights.shape[-1] + 1,)} (S + 1 edges for "
            f"weights {tuple(weights.shape)}), got {tuple(bins.shape)}"
        )
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")


def sample_pdf(
    bins: Tensor,
    weights: Tensor,
    num_samples: int,
    randomized: bool,
    eps: float = 1e-5,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Sorted sample positions drawn from the piecewise-constant pdf ``weights`` on ``bins`` by
    inverse-transform sampling (NeRF Sec. 5.2, hierarchical volume sampling).

    The CDF is inverted at stratified ``u_k = (k + xi_k) / K``, ``xi_k ~ U[0, 1)`` when
    ``randomized`` and ``xi_k = 0.5`` otherwise, which keeps the output sorted without a sort of
    the random numbers and gives lower variance than NeRF's i.i.d. ``u``. Rays whose total
    weight is below ``eps`` get uniform padding (Mip-NeRF); negative weights are treated as 0.
    No gradient flows into ``bins`` or ``weights``.

    Args:
        bins: ``[R, S + 1]`` sorted bin edges.
        weights: ``[R, S]`` non-negative weights of the bins (need not be normalised).
        num_samples: ``K >= 1``.
        randomized: stratified random ``u`` (training) or bin-centred ``u`` (deterministic).
        eps: minimum total weight before padding.
        generator: optional ``torch.Generator``.

    Returns:
        ``[R, K]`` sorted sample positions.

    Example:
        All the weight lies in the middle bin ``[1, 2]``, so every sample lands there:

        >>> import torch
        >>> from langfield.ops import sample_pdf
        >>> bins, weights = torch.tensor([[0.0, 1.0, 2.0, 3.0]]), torch.tensor([[0.0, 1.0, 0.0]])
        >>> sample_pdf(bins, weights, num_samples=4, randomized=False).tolist()
        [[1.125, 1.375, 1.625, 1.875]]
    """
    _check_pdf_inputs(bins, weights, num_samples, eps)
    bins, weights = bins.detach(), weights.detach().to(bins.dtype)
    shape = weights.shape[:-1] + (num_samples,)
    k = torch.arange(num_samples, dtype=bins.dtype, device=bins.device)
    offset = _rand(shape, bins, generator) if randomized else torch.full(shape, 0.5, dtype=bins.dtype, device=bins.device)
    u = ((k + offset) / num_samples).clamp(0.0, 1.0)
    return _inverse_cdf(bins, weights, u, eps)


def sample_pdf_edges(
    bins: Tensor,
    weights: Tensor,
    num_samples: int,
    randomized: bool,
    eps: float = 1e-5,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Sorted bin *edges* resampled from the pdf ``weights`` on ``bins`` (Mip-NeRF Sec. 3.2:
    the fine pass resamples intervals, not points).

    Deterministically the edges split the pdf into ``K`` intervals of equal mass, ``u_k = k / K``
    for ``k = 0..K``: the first edge is where the pdf's support starts, the last where it ends.
    When ``randomized`` the interior ``u_k`` are jittered uniformly within ``[(k - 1/2)/K,
    (k + 1/2)/K)``, which keeps them sorted. No gradient flows into ``bins`` or ``weights``.

    Args:
        bins: ``[R, S + 1]`` sorted bin edges.
        weights: ``[R, S]`` non-negative weights (e.g. from :func:`mipnerf_blur_weights`).
        num_samples: ``K >= 1`` intervals.
        randomized: jitter the interior edges.
        eps: minimum total weight before padding.
        generator: optional ``torch.Generator``.

    Returns:
        ``[R, K + 1]`` sorted edges; ``t_starts = edges[..., :-1]``, ``t_ends = edges[..., 1:]``.

    Example:
        Two intervals of equal mass spanning the support ``[1, 2]`` of the pdf:

        >>> import torch
        >>> from langfield.ops import sample_pdf_edges
        >>> bins, weights = torch.tensor([[0.0, 1.0, 2.0, 3.0]]), torch.tensor([[0.0, 1.0, 0.0]])
        >>> sample_pdf_edges(bins, weights, num_samples=2, randomized=False).tolist()
        [[1.0, 1.5, 2.0]]
    """
    _check_pdf_inputs(bins, weights, num_samples, eps)
    bins, weights = bins.detach(), weights.detach().to(bins.dtype)
    shape = weights.shape[:-1] + (num_samples + 1,)
    k = torch.arange(num_samples + 1, dtype=bins.dtype, device=bins.device).expand(shape)
    if randomized and num_samples > 1:
        jitter = _rand(shape, bins, generator) - 0.5
        interior = torch.zeros(num_samples + 1, dtype=torch.bool, device=bins.device)
        interior[1:-1] = True
        k = torch.where(interior, k + jitter, k)
    u = (k / num_samples).clamp(0.0, 1.0)
    return _inverse_cdf(bins, weights, u, eps)


def mipnerf_blur_weights(weights: Tensor, resample_padding: float = 0.01) -> Tensor:
    """Mip-NeRF's weight smoothing before resampling (Mip-NeRF Sec. 3.2): a 2-tap max filter
    followed by a 2-tap box filter ("blurpool", edge-padded), plus a constant
    ``resample_padding`` so no interval has zero probability.

    Args:
        weights: ``[R, S]`` coarse weights.
        resample_padding: constant added after blurring (Mip-NeRF uses 0.01).

    Returns:
        ``[R, S]`` blurred, padded weights (unnormalised).

    Example:
        >>> import torch
        >>> from langfield.ops import mipnerf_blur_weights
        >>> mipnerf_blur_weights(torch.tensor([[0.0, 1.0, 0.0, 0.0]]), resample_padding=0.0).tolist()
        [[0.5, 1.0, 0.5, 0.0]]
    """
    if not isinstance(weights, Tensor) or weights.ndim < 1 or weights.shape[-1] < 1:
        shape = None if not isinstance(weights, Tensor) else tuple(weights.shape)
        raise ValueError(f"weights must be [R, S] with S >= 1, got {shape}")
    if resample_padding < 0:
        raise ValueError(f"resample_padding must be >= 0, got {resample_padding}")
    padded = torch.cat([weights[..., :1], weights, weights[..., -1:]], dim=-1)  # [R, S+2]
    maxed = torch.maximum(padded[..., :-1], padded[..., 1:])  # [R, S+1]
    blurred = 0.5 * (maxed[..., :-1] + maxed[..., 1:])  # [R, S]
    return blurred + resample_padding


def conical_frustum_to_gaussian(
    directions: Tensor,
    t_starts: Tensor,
    t_ends: Tensor,
    radii: Tensor,
) -> Tuple[Tensor, Tensor]:
    """Gaussian approximation of the conical frustum between ``t_starts`` and ``t_ends``
    (Mip-NeRF Sec. 3.1, Eq. 7 (stable ``t_mu``/``t_delta`` form) and Eq. 8, diagonal covariance).

    With ``t_mu = (t0 + t1)/2``, ``t_delta = (t1 - t0)/2`` and ``q = 3 t_mu^2 + t_delta^2``::

        mu_t      = t_mu + 2 t_mu t_delta^2 / q
        sigma_t^2 = t_delta^2 / 3 - (4/15) t_delta^4 (12 t_mu^2 - t_delta^2) / q^2
        sigma_r^2 = r^2 (t_mu^2 / 4 + (5/12) t_delta^2 - (4/15) t_delta^4 / q)
        mean      = mu_t d
        cov_diag  = sigma_t^2 d*d + sigma_r^2 (1 - d*d / |d|^2)

    Units: the formulas hold for any ``|d|`` when ``t`` parameterises ``o + t d`` and ``r`` is the
    cone radius at ``t = 1``. Here ``d`` is unit, so ``t`` is metric distance and ``r`` is the
    radius at unit distance, exactly what :class:`langfield.types.Rays` stores.

    Args:
        directions: ``[R, 3]`` ray directions (unit in this library).
        t_starts, t_ends: ``[R, S]`` frustum bounds along the ray.
        radii: ``[R, 1]`` cone radius at unit distance.

    Returns:
        ``(means [R, S, 3], cov_diag [R, S, 3])``; means are relative to the ray origin.

    Example:
        A frustum ``t in [1, 3]`` of a zero-radius cone along ``+z``: the mean sits past the middle
        (``2 + 4/13``; the far end is wider) and only the ``z`` variance is non-zero:

        >>> import torch
        >>> from langfield.ops import conical_frustum_to_gaussian
        >>> means, cov = conical_frustum_to_gaussian(
        ...     torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[1.0]]), torch.tensor([[3.0]]), torch.zeros(1, 1))
        >>> [round(v, 4) for v in means[0, 0].tolist()], [round(v, 4) for v in cov[0, 0].tolist()]
        ([0.0, 0.0, 2.3077], [0.0, 0.0, 0.2592])
    """
    for name, t in (("directions", directions), ("t_starts", t_starts), ("t_ends", t_ends), ("radii", radii)):
        if not isinstance(t, Tensor) or t.ndim < 1:
            raise ValueError(f"{name} must be a tensor with a batch dimension")
    if directions.shape[-1] != 3:
        raise ValueError(f"directions must be [R, 3], got {tuple(directions.shape)}")
    if t_starts.shape != t_ends.shape:
        raise ValueError(f"t_ends must match t_starts {tuple(t_starts.shape)}, got {tuple(t_ends.shape)}")
    batch = directions.shape[:-1]
    if t_starts.shape[:-1] != batch:
        raise ValueError(f"t_starts must be {tuple(batch)} + (S,) to match directions, got {tuple(t_starts.shape)}")
    if radii.shape != batch + (1,):
        raise ValueError(f"radii must be {tuple(batch) + (1,)}, got {tuple(radii.shape)}")
    tiny = torch.finfo(t_starts.dtype).tiny if t_starts.dtype.is_floating_point else 1e-38
    t_mu = 0.5 * (t_starts + t_ends)
    t_delta = 0.5 * (t_ends - t_starts)
    t_mu2, t_delta2 = t_mu.square(), t_delta.square()
    q = (3.0 * t_mu2 + t_delta2).clamp_min(tiny)
    q2 = q.square().clamp_min(tiny)
    mu_t = t_mu + 2.0 * t_mu * t_delta2 / q
    var_t = t_delta2 / 3.0 - (4.0 / 15.0) * t_delta2.square() * (12.0 * t_mu2 - t_delta2) / q2
    var_r = radii.square() * (t_mu2 / 4.0 + (5.0 / 12.0) * t_delta2 - (4.0 / 15.0) * t_delta2.square() / q)
    d = directions[..., None, :]  # [R, 1, 3]
    d2 = d.square()
    d_norm2 = d2.sum(dim=-1, keepdim=True).clamp_min(tiny)
    means = mu_t[..., None] * d
    cov_diag = var_t[..., None] * d2 + var_r[..., None] * (1.0 - d2 / d_norm2)
    return means, cov_diag
