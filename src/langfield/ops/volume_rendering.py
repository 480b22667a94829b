"""Differentiable volume rendering (emission-absorption quadrature) for any number of channels.

The renderer takes tensors or functions, never a model (nerfacc's ``rendering(rgb_sigma_fn=...)``
design), so NeRF, Mip-NeRF, Instant-NGP and semantic / language fields share one code path.

Quadrature (NeRF, Mildenhall et al., ECCV 2020, Sec. 4, Eq. 3; after Max 1995)::

    delta_i = t_end_i - t_start_i
    alpha_i = 1 - exp(-sigma_i * delta_i)
    T_i     = exp(-sum_{j<i} sigma_j * delta_j) = prod_{j<i} (1 - alpha_j)
    w_i     = T_i * alpha_i
    C       = sum_i w_i * c_i

Two sample layouts, accepted by every compositing op and giving identical results:

* **batched**: ``[R, S]`` tensors (values ``[R, S, D]``); pass ``ray_indices=None``. Any leading
  batch shape ``[*B, S]`` works the same way; outputs are then ``[*B, D]``.
* **packed** (ragged): flat ``[N]`` samples (values ``[N, D]``) with ``ray_indices [N]`` (int64,
  sorted ascending, so each ray's samples are contiguous and ordered near to far) and
  ``num_rays`` (``R``). Outputs are ``[R, D]``; rays without samples get zeros.

Numerics. A packed exclusive cumulative sum is computed as one global ``cumsum`` in float64 from
which each ray's starting offset is subtracted. Doing this in float32 would lose the small per-ray
sums against a global running total of thousands of rays (catastrophic cancellation).

Performance notes (see also ``docs/``):

* ``num_rays=None`` in the packed layout infers ``R = ray_indices.max() + 1``: one host sync.
* :func:`render_weights_from_alpha` in the packed layout pads to ``[R, max samples per ray]``
  so it can use an exact ``cumprod`` (correct even when some ``alpha == 1``); finding the
  padding width is one host sync.
* Value checks on ``ray_indices`` (sorted, within ``[0, num_rays)``) run only for CPU tensors;
  on accelerators they would force a host sync on every call, so callers must guarantee them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from langfield.types import RenderOutput

__all__ = [
    "RenderAux",
    "accumulate_along_rays",
    "composite_over_background",
    "mask_after_transmittance",
    "normals_from_density",
    "render_expected_depth",
    "render_median_depth",
    "render_rays",
    "render_transmittance_from_density",
    "render_weights_from_alpha",
    "render_weights_from_density",
]


# --------------------------------------------------------------------------------------------
# Layout validation and segment helpers
# --------------------------------------------------------------------------------------------


def _check_samples(
    named: Sequence[Tuple[str, Tensor]],
    ray_indices: Optional[Tensor],
    num_rays: Optional[int],
) -> Tuple[Optional[Tensor], Optional[int]]:
    """Validate per-sample tensors of equal shape in either layout.

    Returns ``(ray_indices as int64 or None, num_rays or None)``.
    """
    first_name, first = named[0]
    for name, t in named:
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.shape != first.shape:
            raise ValueError(
                f"{name} must have the same shape as {first_name} {tuple(first.shape)}, got {tuple(t.shape)}"
            )
    if ray_indices is None:
        if first.ndim < 1:
            raise ValueError(f"{first_name} must be [*B, S] in the batched layout, got a scalar")
        return None, None
    if not isinstance(ray_indices, Tensor):
        raise ValueError(f"ray_indices must be a torch.Tensor or None, got {type(ray_indices).__name__}")
    if first.ndim != 1:
        raise ValueError(
            f"{first_name} must be a flat [N] tensor in the packed layout (ray_indices given), "
            f"got {tuple(first.shape)}"
        )
    if ray_indices.ndim != 1 or ray_indices.shape[0] != first.shape[0]:
        raise ValueError(f"ray_indices must be [{first.shape[0]}], got {tuple(ray_indices.shape)}")
    if ray_indices.dtype.is_floating_point or ray_indices.dtype == torch.bool or ray_indices.is_complex():
        raise ValueError(f"ray_indices must be an integer tensor, got {ray_indices.dtype}")
    ray_indices = ray_indices.long()
    n = ray_indices.shape[0]
    if num_rays is None:
        if n == 0:
            raise ValueError("num_rays must be given when the packed input is empty (N = 0)")
        num_rays = int(ray_indices.max()) + 1  # host sync, documented in the module docstring
    if isinstance(num_rays, Tensor):
        num_rays = int(num_rays)
    if not isinstance(num_rays, int) or isinstance(num_rays, bool) or num_rays < 0:
        raise ValueError(f"num_rays must be a non-negative int, got {num_rays!r}")
    if n > 0 and ray_indices.device.type == "cpu":
        if bool(ray_indices[0] < 0) or bool(ray_indices[-1] >= num_rays):
            raise ValueError(f"ray_indices must lie in [0, num_rays={num_rays})")
        if n > 1 and bool((ray_indices[1:] < ray_indices[:-1]).any()):
            raise ValueError("ray_indices must be sorted ascending (each ray's samples contiguous)")
    return ray_indices, num_rays


def _ray_counts_and_starts(ray_indices: Tensor, num_rays: int) -> Tuple[Tensor, Tensor]:
    """``[R]`` samples per ray and ``[R]`` index of each ray's first sample (no host sync)."""
    counts = torch.zeros(num_rays, dtype=torch.long, device=ray_indices.device)
    counts.index_add_(0, ray_indices, torch.ones_like(ray_indices))
    starts = torch.cumsum(counts, 0) - counts
    return counts, starts


def _exclusive_sum(x: Tensor, ray_indices: Optional[Tensor], num_rays: Optional[int]) -> Tensor:
    """Per-ray exclusive cumulative sum ``sum_{j<i} x_j`` of ``[*B, S]`` or packed ``[N]`` ``x``."""
    if ray_indices is None:
        if x.shape[-1] == 0:
            return torch.zeros_like(x)
        return torch.cat([torch.zeros_like(x[..., :1]), torch.cumsum(x[..., :-1], dim=-1)], dim=-1)
    if x.shape[0] == 0:
        return torch.zeros_like(x)
    # Global float64 cumsum minus each ray's offset; float32 would cancel catastrophically.
    x64 = x.to(torch.float64)
    exclusive = torch.cumsum(x64, 0) - x64
    _, starts = _ray_counts_and_starts(ray_indices, num_rays)
    offsets = exclusive[starts[ray_indices]]
    return (exclusive - offsets).to(x.dtype)


def _exclusive_prod(x: Tensor, ray_indices: Optional[Tensor], num_rays: Optional[int]) -> Tensor:
    """Per-ray exclusive cumulative product ``prod_{j<i} x_j`` (exact even where ``x == 0``)."""
    if ray_indices is None:
        if x.shape[-1] == 0:
            return torch.ones_like(x)
        return torch.cat([torch.ones_like(x[..., :1]), torch.cumprod(x[..., :-1], dim=-1)], dim=-1)
    n = x.shape[0]
    if n == 0:
        return torch.ones_like(x)
    counts, starts = _ray_counts_and_starts(ray_indices, num_rays)
    width = int(counts.max())  # host sync, documented in the module docstring
    pos = torch.arange(n, device=x.device) - starts[ray_indices]
    padded = x.new_ones(num_rays, width).index_put((ray_indices, pos), x)
    excl = torch.cat([padded.new_ones(num_rays, 1), torch.cumprod(padded[:, :-1], dim=1)], dim=1)
    return excl[ray_indices, pos]


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def render_transmittance_from_density(
    t_starts: Tensor,
    t_ends: Tensor,
    sigmas: Tensor,
    ray_indices: Optional[Tensor] = None,
    num_rays: Optional[int] = None,
) -> Tuple[Tensor, Tensor]:
    """Transmittance and opacity of each sample from densities (NeRF Sec. 4, Eq. 3).

    ``T_i = exp(-sum_{j<i} sigma_j delta_j)`` and ``alpha_i = 1 - exp(-sigma_i delta_i)`` with
    ``delta_i = t_end_i - t_start_i``.

    Args:
        t_starts, t_ends: ``[R, S]`` (batched) or ``[N]`` (packed) interval bounds along the ray.
        sigmas: same shape, non-negative volume densities.
        ray_indices: ``[N]`` int64 sorted ray id of each packed sample, or ``None`` for batched.
        num_rays: ``R`` for the packed layout (inferred with a host sync when ``None``).

    Returns:
        ``(transmittance, alphas)``, each the shape of ``sigmas``.

    Example:
        Three unit intervals of density ``ln 2`` each let half the light through:

        >>> import math, torch
        >>> from langfield.ops import render_transmittance_from_density
        >>> t_starts, t_ends = torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[1.0, 2.0, 3.0]])
        >>> T, alphas = render_transmittance_from_density(t_starts, t_ends, torch.full((1, 3), math.log(2)))
        >>> [round(v, 4) for v in T[0].tolist()], [round(v, 4) for v in alphas[0].tolist()]
        ([1.0, 0.5, 0.25], [0.5, 0.5, 0.5])
    """
    ray_indices, num_rays = _check_samples(
        [("t_starts", t_starts), ("t_ends", t_ends), ("sigmas", sigmas)], ray_indices, num_rays
    )
    sigma_delta = sigmas * (t_ends - t_starts)
    alphas = -torch.expm1(-sigma_delta)
    transmittance = torch.exp(-_exclusive_sum(sigma_delta, ray_indices, num_rays))
    return transmittance, alphas


def render_weights_from_density(
    t_starts: Tensor,
    t_ends: Tensor,
    sigmas: Tensor,
    ray_indices: Optional[Tensor] = None,
    num_rays: Optional[int] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Compositing weights ``w_i = T_i * alpha_i`` from densities (NeRF Sec. 4, Eq. 3).

    Args:
        t_starts, t_ends: ``[R, S]`` (batched) or ``[N]`` (packed) interval bounds along the ray.
        sigmas: same shape, non-negative volume densities.
        ray_indices: ``[N]`` int64 sorted ray id of each packed sample, or ``None`` for batched.
        num_rays: ``R`` for the packed layout.

    Returns:
        ``(weights, transmittance, alphas)``, each the shape of ``sigmas``.

    Example:
        Each of three unit intervals of density ``ln 2`` absorbs half of what reaches it; the
        packed layout (flat samples + ``ray_indices``) gives the same weights:

        >>> import math, torch
        >>> from langfield.ops import render_weights_from_density
        >>> t_starts, t_ends = torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[1.0, 2.0, 3.0]])
        >>> sigmas = torch.full((1, 3), math.log(2))
        >>> weights, T, alphas = render_weights_from_density(t_starts, t_ends, sigmas)
        >>> [round(w, 4) for w in weights[0].tolist()]
        [0.5, 0.25, 0.125]
        >>> packed, _, _ = render_weights_from_density(
        ...     t_starts[0], t_ends[0], sigmas[0], ray_indices=torch.zeros(3, dtype=torch.long), num_rays=1)
        >>> torch.allclose(packed, weights[0])
        True
    """
    transmittance, alphas = render_transmittance_from_density(t_starts, t_ends, sigmas, ray_indices, num_rays)
    return transmittance * alphas, transmittance, alphas


def render_weights_from_alpha(
    alphas: Tensor,
    ray_indices: Optional[Tensor] = None,
    num_rays: Optional[int] = None,
) -> Tuple[Tensor, Tensor]:
    """Compositing weights from per-sample opacities (NeRF Sec. 4, Eq. 3 with ``alpha`` given).

    ``T_i = prod_{j<i} (1 - alpha_j)`` and ``w_i = T_i * alpha_i``. Computed with an exact
    ``cumprod`` (the packed layout pads to ``[R, max samples per ray]``; one host sync), so
    ``alpha == 1`` is handled exactly, gradients included.

    Args:
        alphas: ``[R, S]`` (batched) or ``[N]`` (packed) opacities in ``[0, 1]``.
        ray_indices: ``[N]`` int64 sorted ray id of each packed sample, or ``None`` for batched.
        num_rays: ``R`` for the packed layout.

    Returns:
        ``(weights, transmittance)``, each the shape of ``alphas``.

    Example:
        >>> import torch
        >>> from langfield.ops import render_weights_from_alpha
        >>> weights, T = render_weights_from_alpha(torch.tensor([[0.5, 0.5, 1.0, 0.3]]))
        >>> weights.tolist(), T.tolist()
        ([[0.5, 0.25, 0.25, 0.0]], [[1.0, 0.5, 0.25, 0.0]])
    """
    ray_indices, num_rays = _check_samples([("alphas", alphas)], ray_indices, num_rays)
    transmittance = _exclusive_prod(1.0 - alphas, ray_indices, num_rays)
    return transmittance * alphas, transmittance


def mask_after_transmittance(transmittance: Tensor, threshold: float = 1e-4) -> Tensor:
    """Boolean mask of samples still visible: ``transmittance > threshold``.

    Early ray termination as in Instant-NGP (Müller et al., SIGGRAPH 2022, App. E.1: marching
    stops once transmittance falls below ``1e-4``). Transmittance never increases along a ray, so
    the kept samples are a prefix of each ray and a packed layout stays sorted after masking
    (``t_starts[mask]``, ``ray_indices[mask]``, ...). Typical use: compute transmittance without
    gradient on all samples, mask, then evaluate the expensive colour branch on the survivors.

    Args:
        transmittance: ``[R, S]`` or ``[N]``.
        threshold: in ``[0, 1)``.

    Returns:
        bool tensor, the shape of ``transmittance``.

    Example:
        >>> import torch
        >>> from langfield.ops import mask_after_transmittance
        >>> mask_after_transmittance(torch.tensor([1.0, 0.5, 1e-3, 1e-5])).tolist()
        [True, True, True, False]
    """
    if not isinstance(transmittance, Tensor):
        raise ValueError(f"transmittance must be a torch.Tensor, got {type(transmittance).__name__}")
    if not 0.0 <= float(threshold) < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    return transmittance > threshold


# --------------------------------------------------------------------------------------------
# Accumulation
# --------------------------------------------------------------------------------------------


def accumulate_along_rays(
    weights: Tensor,
    values: Optional[Tensor] = None,
    ray_indices: Optional[Tensor] = None,
    num_rays: Optional[int] = None,
) -> Tensor:
    """Weighted sum of per-sample values along each ray (NeRF Sec. 4, Eq. 3: ``sum_i w_i c_i``).

    Any number of channels ``D``: colour, depth, normals or language features alike.

    Args:
        weights: ``[R, S]`` (batched) or ``[N]`` (packed).
        values: ``[R, S, D]`` or ``[N, D]``; ``None`` sums the weights themselves (``D = 1``).
        ray_indices: ``[N]`` int64 sorted ray id of each packed sample, or ``None`` for batched.
        num_rays: ``R`` for the packed layout.

    Returns:
        ``[R, D]`` (batched with leading ``[*B]``: ``[*B, D]``). Packed rays without samples get 0.

    Example:
        Two packed rays (samples 0-1 on ray 0, sample 2 on ray 1) and a third ray without samples:

        >>> import torch
        >>> from langfield.ops import accumulate_along_rays
        >>> weights = torch.tensor([0.5, 0.25, 1.0])
        >>> colours = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        >>> accumulate_along_rays(weights, colours, ray_indices=torch.tensor([0, 0, 1]), num_rays=3).tolist()
        [[0.5, 0.25, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
        >>> accumulate_along_rays(weights[None, :2]).tolist()  # no values: the accumulation
        [[0.75]]
    """
    ray_indices, num_rays = _check_samples([("weights", weights)], ray_indices, num_rays)
    if values is None:
        values = torch.ones_like(weights)[..., None]
    elif not isinstance(values, Tensor):
        raise ValueError(f"values must be a torch.Tensor or None, got {type(values).__name__}")
    elif values.ndim != weights.ndim + 1 or values.shape[:-1] != weights.shape:
        raise ValueError(
            f"values must be {tuple(weights.shape)} + (D,) to match weights, got {tuple(values.shape)}"
        )
    weighted = weights[..., None] * values
    if ray_indices is None:
        return weighted.sum(dim=-2)
    out = weighted.new_zeros(num_rays, weighted.shape[-1])
    return out.index_add(0, ray_indices, weighted)


def render_expected_depth(
    weights: Tensor,
    t_starts: Tensor,
    t_ends: Tensor,
    ray_indices: Optional[Tensor] = None,
    num_rays: Optional[int] = None,
    eps: float = 1e-10,
) -> Tensor:
    """Expected ray distance ``sum_i w_i t_mid_i / max(sum_i w_i, eps)`` (NeRF Sec. 4, Eq. 3 on depth).

    Normalised by the accumulation, so it is the mean termination distance of the visible part
    of the ray; rays with no weight get 0.

    Args:
        weights, t_starts, t_ends: ``[R, S]`` (batched) or ``[N]`` (packed).
        ray_indices, num_rays: packed layout, see the module docstring.
        eps: floor of the accumulation in the denominator.

    Returns:
        ``[R, 1]``.

    Example:
        Equal weight on intervals centred at 0.5 and 1.5, the rest of the ray transparent:

        >>> import torch
        >>> from langfield.ops import render_expected_depth
        >>> weights = torch.tensor([[0.25, 0.25, 0.0]])
        >>> t_starts, t_ends = torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[1.0, 2.0, 3.0]])
        >>> render_expected_depth(weights, t_starts, t_ends).tolist()
        [[1.0]]
    """
    ray_indices, num_rays = _check_samples(
        [("weights", weights), ("t_starts", t_starts), ("t_ends", t_ends)], ray_indices, num_rays
    )
    t_mid = 0.5 * (t_starts + t_ends)
    acc = accumulate_along_rays(weights, None, ray_indices, num_rays)
    depth = accumulate_along_rays(weights, t_mid[..., None], ray_indices, num_rays)
    return depth / acc.clamp_min(eps)


@torch.no_grad()
def render_median_depth(
    weights: Tensor,
    t_starts: Tensor,
    t_ends: Tensor,
    ray_indices: Optional[Tensor] = None,
    num_rays: Optional[int] = None,
) -> Tensor:
    """Median ray distance: ``t_mid`` of the first sample whose cumulative weight reaches half
    the ray's accumulation (the depth used by e.g. Mip-NeRF 360 / nerfstudio visualisations).

    Not differentiable (computed under ``no_grad``). Rays with zero accumulation (or no samples)
    get 0, like :func:`render_expected_depth`.

    Args:
        weights, t_starts, t_ends: ``[R, S]`` (batched) or ``[N]`` (packed), weights ``>= 0``.
        ray_indices, num_rays: packed layout, see the module docstring.

    Returns:
        ``[R, 1]``.

    Example:
        Half of the accumulation (0.5 of 1.0) is reached in the second interval, centred at 1.5:

        >>> import torch
        >>> from langfield.ops import render_median_depth
        >>> weights = torch.tensor([[0.1, 0.6, 0.3]])
        >>> t_starts, t_ends = torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[1.0, 2.0, 3.0]])
        >>> render_median_depth(weights, t_starts, t_ends).tolist()
        [[1.5]]
    """
    ray_indices, num_rays = _check_samples(
        [("weights", weights), ("t_starts", t_starts), ("t_ends", t_ends)], ray_indices, num_rays
    )
    t_mid = 0.5 * (t_starts + t_ends)
    w64 = weights.to(torch.float64)
    if ray_indices is None:
        if weights.shape[-1] == 0:
            return t_mid.new_zeros(*weights.shape[:-1], 1)
        cum = torch.cumsum(w64, dim=-1)
        total = cum[..., -1:]
        idx = torch.searchsorted(cum.contiguous(), (0.5 * total).contiguous(), side="left")
        idx = idx.clamp_max(weights.shape[-1] - 1)
        depth = torch.gather(t_mid, -1, idx)
        return torch.where(total > 0, depth, torch.zeros_like(depth))
    n = weights.shape[0]
    depth = t_mid.new_zeros(num_rays, 1)
    if n == 0:
        return depth
    cum = _exclusive_sum(w64, ray_indices, num_rays) + w64  # inclusive, float64 per ray
    counts, starts = _ray_counts_and_starts(ray_indices, num_rays)
    last = (starts + counts - 1).clamp_min(0)
    total = torch.where(counts > 0, cum[last], torch.zeros_like(cum[last]))
    reached = cum >= 0.5 * total[ray_indices]
    sample_ids = torch.arange(n, device=weights.device)
    first = torch.full((num_rays,), n, dtype=torch.long, device=weights.device)
    first = first.scatter_reduce(0, ray_indices, torch.where(reached, sample_ids, n), reduce="amin")
    valid = (total > 0) & (first < n)
    depth[:, 0] = torch.where(valid, t_mid[first.clamp_max(n - 1)], depth[:, 0])
    return depth


def composite_over_background(rgb: Tensor, accumulation: Tensor, background: Union[Tensor, Sequence[float]]) -> Tensor:
    """Composite a premultiplied render over a background: ``rgb + (1 - accumulation) * background``.

    (NeRF-synthetic / Mip-NeRF white-background convention; the background is what the
    remaining transmittance ``1 - sum_i w_i`` sees.)

    Args:
        rgb: ``[R, D]`` (usually ``D = 3``) accumulated colour, premultiplied by opacity.
        accumulation: ``[R, 1]`` opacity.
        background: ``[R, D]`` per-ray or ``[D]`` shared colour.

    Returns:
        ``[R, D]``.

    Example:
        A half-opaque black render over white is mid grey:

        >>> import torch
        >>> from langfield.ops import composite_over_background
        >>> composite_over_background(torch.zeros(1, 3), torch.tensor([[0.5]]), [1.0, 1.0, 1.0]).tolist()
        [[0.5, 0.5, 0.5]]
    """
    if not isinstance(rgb, Tensor) or rgb.ndim < 1:
        raise ValueError("rgb must be a tensor [R, D]")
    if not isinstance(accumulation, Tensor) or accumulation.shape != rgb.shape[:-1] + (1,):
        shape = None if not isinstance(accumulation, Tensor) else tuple(accumulation.shape)
        raise ValueError(f"accumulation must be {tuple(rgb.shape[:-1]) + (1,)} to match rgb, got {shape}")
    background = torch.as_tensor(background, dtype=rgb.dtype, device=rgb.device)
    if background.shape != rgb.shape and background.shape != rgb.shape[-1:]:
        raise ValueError(
            f"background must be {tuple(rgb.shape)} or {tuple(rgb.shape[-1:])}, got {tuple(background.shape)}"
        )
    return rgb + (1.0 - accumulation) * background


# --------------------------------------------------------------------------------------------
# Normals
# --------------------------------------------------------------------------------------------


def normals_from_density(
    positions: Tensor,
    sigma_fn: Callable[[Tensor], Tensor],
    create_graph: bool = False,
) -> Tensor:
    """Unit normals ``n = -grad sigma / |grad sigma|`` of a density field (Ref-NeRF, Verbin et al.,
    CVPR 2022, Sec. 3 "normals"; NeRF densities increase into the surface so the normal points out).

    ``sigma_fn`` must be pointwise (``sigma[b]`` depends only on ``positions[b]``), since the
    gradient is taken of ``sigma.sum()``. Works under ``torch.no_grad()`` (grad mode is enabled
    locally) but not under ``torch.inference_mode()``. Where the gradient vanishes the normal is 0.

    Args:
        positions: ``[*B, 3]`` points.
        sigma_fn: maps ``[*B, 3]`` positions to ``[*B]`` or ``[*B, 1]`` densities.
        create_graph: keep the graph so the normals can be trained through (e.g. an
            orientation loss); otherwise the result is detached.

    Returns:
        ``[*B, 3]`` unit normals.

    Example:
        A ball whose density grows towards its centre has outward normals:

        >>> import torch
        >>> from langfield.ops import normals_from_density
        >>> ball = lambda x: 1.0 - x.norm(dim=-1)
        >>> normals = normals_from_density(torch.tensor([[0.0, 0.0, 0.5], [0.3, 0.0, 0.0]]), ball)
        >>> normals.tolist()
        [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    """
    if not isinstance(positions, Tensor) or positions.ndim < 1 or positions.shape[-1] != 3:
        shape = None if not isinstance(positions, Tensor) else tuple(positions.shape)
        raise ValueError(f"positions must be [*B, 3], got {shape}")
    if not callable(sigma_fn):
        raise ValueError("sigma_fn must be callable")
    with torch.enable_grad():
        x = positions if positions.requires_grad else positions.detach().requires_grad_(True)
        sigma = sigma_fn(x)
        if not isinstance(sigma, Tensor) or sigma.numel() != positions[..., 0].numel():
            shape = None if not isinstance(sigma, Tensor) else tuple(sigma.shape)
            raise ValueError(f"sigma_fn must return one density per position {tuple(positions.shape[:-1])}, got {shape}")
        if positions.numel() == 0:
            return torch.zeros_like(positions)
        (grad,) = torch.autograd.grad(sigma.sum(), x, create_graph=create_graph)
    norm = grad.norm(dim=-1, keepdim=True)
    normals = -grad / norm.clamp_min(torch.finfo(grad.dtype).tiny)
    return normals if create_graph else normals.detach()


# --------------------------------------------------------------------------------------------
# The renderer
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderAux:
    """Per-sample quantities from :func:`render_rays`, for losses (e.g. Mip-NeRF 360 distortion)
    and hierarchical sampling.

    Attributes:
        weights, transmittance, alphas: ``[R, S]`` (batched) or ``[N]`` (packed).
        t_starts, t_ends: the sample intervals, same shape.
        ray_indices: ``[N]`` int64 for packed samples, ``None`` for batched.
        num_rays: ``R`` for packed samples, ``None`` for batched.
    """

    weights: Tensor
    transmittance: Tensor
    alphas: Tensor
    t_starts: Tensor
    t_ends: Tensor
    ray_indices: Optional[Tensor] = None
    num_rays: Optional[int] = None


SampleFn = Callable[[Tensor, Tensor, Optional[Tensor]], Tensor]


def _check_per_sample(name: str, value: Tensor, sample_shape: torch.Size, channels: Optional[int]) -> None:
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must return a torch.Tensor, got {type(value).__name__}")
    if value.ndim != len(sample_shape) + 1 or value.shape[:-1] != sample_shape:
        raise ValueError(f"{name} must return {tuple(sample_shape)} + (D,), got {tuple(value.shape)}")
    if channels is not None and value.shape[-1] != channels:
        raise ValueError(f"{name} must return {channels} channels, got {value.shape[-1]}")


def render_rays(
    t_starts: Tensor,
    t_ends: Tensor,
    rgb_sigma_fn: Callable[[Tensor, Tensor, Optional[Tensor]], Tuple[Tensor, Tensor]],
    ray_indices: Optional[Tensor] = None,
    num_rays: Optional[int] = None,
    background: Optional[Union[Tensor, Sequence[float]]] = None,
    normals_fn: Optional[SampleFn] = None,
    extra_fn: Optional[SampleFn] = None,
) -> Tuple[RenderOutput, RenderAux]:
    """Volume-render rays from per-sample functions (NeRF Sec. 4, Eq. 3; nerfacc-style ``rendering``).

    Calls ``rgb_sigma_fn(t_starts, t_ends, ray_indices) -> (rgb [..., 3], sigmas [...])`` once
    and composites, with the same weights ``w``:

    * ``rgb = sum w c`` then over ``background`` (``rgb + (1 - acc) * background``; black if ``None``);
    * ``depth`` = expected ray distance normalised by accumulation;
    * ``accumulation = sum w``;
    * ``normals`` (if ``normals_fn``): per-sample ``[..., 3]`` normals composited and re-normalised
      to unit length (0 where nothing was hit);
    * ``features`` (if ``extra_fn``): per-sample ``[..., D]`` channels composited with no
      background (language / semantic features render exactly like colour).

    The functions are called even when the packed input is empty (``N = 0``, with ``[0]``
    tensors) so the output widths are known; they must accept empty input. With ``N = 0`` every
    ray returns the background.

    Args:
        t_starts, t_ends: ``[R, S]`` (batched) or ``[N]`` (packed) sample intervals.
        rgb_sigma_fn: see above; ``sigmas`` may also be ``[..., 1]``.
        ray_indices: ``[N]`` int64 sorted ray id of each packed sample, or ``None`` for batched.
        num_rays: ``R`` for the packed layout.
        background: ``[R, 3]`` or ``[3]``, or ``None``.
        normals_fn, extra_fn: optional ``fn(t_starts, t_ends, ray_indices)`` per-sample functions.

    Returns:
        ``(RenderOutput, RenderAux)``; outputs are ``[R, *]`` (batched ``[*B, S]`` -> ``[*B, *]``).

    Example:
        A red medium of density ``ln 2`` over three unit intervals, composited over white:

        >>> import math, torch
        >>> from langfield.ops import render_rays
        >>> def red_fog(t_starts, t_ends, ray_indices):
        ...     rgb = torch.tensor([1.0, 0.0, 0.0]).expand(*t_starts.shape, 3)
        ...     return rgb, torch.full_like(t_starts, math.log(2))
        >>> t_starts, t_ends = torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[1.0, 2.0, 3.0]])
        >>> out, aux = render_rays(t_starts, t_ends, red_fog, background=[1.0, 1.0, 1.0])
        >>> [round(v, 4) for v in out.rgb[0].tolist()], round(out.accumulation.item(), 4)
        ([1.0, 0.125, 0.125], 0.875)
        >>> round(out.depth.item(), 4)  # (0.5 * 0.5 + 0.25 * 1.5 + 0.125 * 2.5) / 0.875
        1.0714
    """
    ray_indices, num_rays = _check_samples([("t_starts", t_starts), ("t_ends", t_ends)], ray_indices, num_rays)
    if not callable(rgb_sigma_fn):
        raise ValueError("rgb_sigma_fn must be callable")
    sample_shape = t_starts.shape
    out = rgb_sigma_fn(t_starts, t_ends, ray_indices)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise ValueError("rgb_sigma_fn must return a tuple (rgb, sigmas)")
    rgbs, sigmas = out
    if isinstance(sigmas, Tensor) and sigmas.shape == sample_shape + (1,):
        sigmas = sigmas[..., 0]
    if not isinstance(sigmas, Tensor) or sigmas.shape != sample_shape:
        shape = None if not isinstance(sigmas, Tensor) else tuple(sigmas.shape)
        raise ValueError(f"rgb_sigma_fn must return sigmas of shape {tuple(sample_shape)}, got {shape}")
    _check_per_sample("rgb_sigma_fn (rgb)", rgbs, sample_shape, 3)

    weights, transmittance, alphas = render_weights_from_density(t_starts, t_ends, sigmas, ray_indices, num_rays)
    accumulation = accumulate_along_rays(weights, None, ray_indices, num_rays)
    rgb = accumulate_along_rays(weights, rgbs, ray_indices, num_rays)
    t_mid = 0.5 * (t_starts + t_ends)
    depth = accumulate_along_rays(weights, t_mid[..., None], ray_indices, num_rays) / accumulation.clamp_min(1e-10)

    normals = None
    if normals_fn is not None:
        per_sample = normals_fn(t_starts, t_ends, ray_indices)
        _check_per_sample("normals_fn", per_sample, sample_shape, 3)
        normals = accumulate_along_rays(weights, per_sample, ray_indices, num_rays)
        normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-10)

    features = None
    if extra_fn is not None:
        per_sample = extra_fn(t_starts, t_ends, ray_indices)
        _check_per_sample("extra_fn", per_sample, sample_shape, None)
        features = accumulate_along_rays(weights, per_sample, ray_indices, num_rays)

    if background is not None:
        rgb = composite_over_background(rgb, accumulation, background)

    output = RenderOutput(rgb=rgb, depth=depth, accumulation=accumulation, normals=normals, features=features)
    aux = RenderAux(
        weights=weights,
        transmittance=transmittance,
        alphas=alphas,
        t_starts=t_starts,
        t_ends=t_ends,
        ray_indices=ray_indices,
        num_rays=num_rays,
    )
    return output, aux
