"""Parameter surgery for Gaussian densification: row edits of the parameters *and* their
optimiser moments, the 3DGS ops (clone, split, prune, opacity reset) and the MCMC ops
(relocation, sample addition, position noise).

Stateless functions, used by the strategies in this package (:mod:`.default`, :mod:`.mcmc`) and
usable on their own (gsplat's ``strategy/ops.py`` shape).

Parameter layout (owned by the method, never by a strategy)::

    params      nn.ParameterDict   means [N,3], scales [N,3] (log), quats [N,4] (w,x,y,z, raw),
                                   opacities [N] (logit), sh0 [N,1,3], shN [N,K,3], features [N,F], ...
    optimizers  Dict[str, Optimizer]  one optimiser per parameter name, one param group holding
                                   exactly that parameter (Adam in practice)

Every parameter whose first dimension is ``N`` is edited the same way, whatever its name.

**How edits keep the optimiser consistent.** The ops keep the *same* ``nn.Parameter`` objects and
swap their storage (``param.data = new``; ``param.grad = None``), then apply the same row
operation to every per-row optimiser buffer (``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``; the
scalar ``step`` is left alone): rows are selected on removal, new rows get zero moments, reset
rows get zero moments. Optimiser ``param_groups`` and any other reference to the parameters stay
valid, so nothing has to be rebuilt after a densification step.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterable, List, Mapping, MutableMapping, Optional, Tuple

import torch
from torch import Tensor

from langfield.geometry.rotations import quaternion_to_matrix

__all__ = [
    "Params",
    "Optimizers",
    "State",
    "num_gaussians",
    "opacity_probs",
    "edit_params",
    "duplicate",
    "split",
    "remove",
    "reset_opacity",
    "relocation_correction",
    "relocate",
    "add_samples",
    "inject_position_noise",
]

Params = MutableMapping[str, torch.nn.Parameter]
"""``{name: parameter}``; every parameter whose first dim is ``N`` is one row per Gaussian."""
Optimizers = Mapping[str, torch.optim.Optimizer]
"""``{name: optimizer}``, one param group holding exactly ``params[name]``."""
State = Dict[str, Any]
"""A strategy's state: tensors, numbers and ``None`` only (it goes into a checkpoint as is)."""


# --------------------------------------------------------------------------- generic editing


def num_gaussians(params: Params) -> int:
    """``N``, the row count of ``params["means"]``."""
    if "means" not in params:
        raise KeyError("params must contain 'means' [N, 3]")
    return int(params["means"].shape[0])


def opacity_probs(params: Params) -> Tensor:
    """``[N]`` opacities in probability space (``opacities`` may be ``[N]`` or ``[N, 1]``)."""
    o = params["opacities"].data
    return torch.sigmoid(o.reshape(o.shape[0]))


def _per_row_names(params: Params, n: int) -> List[str]:
    return [k for k, p in params.items() if p.ndim >= 1 and p.shape[0] == n]


@torch.no_grad()
def edit_params(
    params: Params,
    optimizers: Optimizers,
    param_fn: Callable[[str, Tensor], Tensor],
    state_fn: Callable[[str, Tensor], Tensor],
    names: Optional[Iterable[str]] = None,
) -> None:
    """Replace rows of parameters and of their optimiser state, in place.

    Args:
        params: parameters; each ``params[name]`` keeps its identity, only ``.data`` changes and
            ``.grad`` is dropped (its shape may no longer match).
        optimizers: ``{name: optimizer}``; parameters without an optimiser are edited alone.
        param_fn: ``(name, data) -> new_data``; ``data`` is the current tensor (may be modified
            in place or replaced; the shape may change along dim 0).
        state_fn: ``(key, value) -> new_value`` applied to every optimiser state entry whose
            first dimension is the old ``N`` (``exp_avg``, ``exp_avg_sq``, ...). ``step`` and other
            scalars are never passed.
        names: which parameters to edit; default: every parameter whose first dim is ``N``
            (the row count of ``means``).
    """
    if names is None:
        names = _per_row_names(params, num_gaussians(params))
    for name in list(names):
        p = params[name]
        n_old = p.shape[0]
        new = param_fn(name, p.data)
        p.data = new
        p.grad = None
        opt = optimizers.get(name)
        if opt is None:
            continue
        st = opt.state.get(p)
        if not st:
            continue
        for key in list(st.keys()):
            v = st[key]
            if key == "step" or not isinstance(v, Tensor) or v.ndim == 0 or v.shape[0] != n_old:
                continue
            st[key] = state_fn(key, v)


def _edit_aux_state(state: Optional[State], n_old: int, fn: Callable[[Tensor], Tensor]) -> None:
    """Apply ``fn`` to every tensor in a strategy ``state`` whose first dim is ``n_old``."""
    if state is None:
        return
    for key, v in list(state.items()):
        if isinstance(v, Tensor) and v.ndim >= 1 and v.shape[0] == n_old:
            state[key] = fn(v)


def _as_index(mask: Tensor, n: int) -> Tensor:
    if mask.dtype != torch.bool or mask.shape != (n,):
        raise ValueError(f"mask must be a bool tensor of shape [{n}], got {mask.dtype} {tuple(mask.shape)}")
    return mask.nonzero(as_tuple=True)[0]


# --------------------------------------------------------------------------- 3DGS ops


@torch.no_grad()
def duplicate(params: Params, optimizers: Optimizers, mask: Tensor, state: Optional[State] = None) -> int:
    """Clone the Gaussians in ``mask`` (3DGS Sec. 5.2, "under-reconstruction").

    The copies are appended after the existing rows (same values, zero optimiser moments). Per-row
    tensors in ``state`` are copied the same way. Returns the number of copies.
    """
    n = num_gaussians(params)
    sel = _as_index(mask, n)
    if sel.numel() == 0:
        return 0
    edit_params(
        params,
        optimizers,
        lambda name, p: torch.cat([p, p[sel]]),
        lambda key, v: torch.cat([v, v.new_zeros((sel.numel(), *v.shape[1:]))]),
    )
    _edit_aux_state(state, n, lambda v: torch.cat([v, v[sel]]))
    return int(sel.numel())


def _covariance_factor(quats: Tensor, scales: Tensor) -> Tensor:
    """``L = R(q) diag(s)`` with ``Sigma = L L^T`` (3DGS Eq. 6); ``[N,4], [N,3] -> [N,3,3]``."""
    return quaternion_to_matrix(quats) * scales[..., None, :]


@torch.no_grad()
def split(
    params: Params,
    optimizers: Optimizers,
    mask: Tensor,
    split_factor: float = 1.6,
    num_children: int = 2,
    state: Optional[State] = None,
    generator: Optional[torch.Generator] = None,
) -> int:
    """Split the Gaussians in ``mask`` into ``num_children`` smaller ones (3DGS Sec. 5.2).

    Children means are drawn from ``N(mean, Sigma)`` with the parent's covariance
    ``Sigma = R S S^T R^T`` (i.e. ``mean + R (s * eps)``, ``eps ~ N(0, I)``); their scales are the
    parent's divided by ``split_factor`` (1.6 = 0.8 * 2 in the reference code); every other
    parameter is copied. Parents are removed; the surviving rows keep their order and the children
    are appended, child ``c`` of the ``j``-th selected parent at ``n_rest + c * n_sel + j``.
    Children get zero optimiser moments and zero per-row ``state`` entries. Returns ``n_sel``.
    """
    if num_children < 1:
        raise ValueError(f"num_children must be >= 1, got {num_children}")
    if split_factor <= 0:
        raise ValueError(f"split_factor must be > 0, got {split_factor}")
    n = num_gaussians(params)
    sel = _as_index(mask, n)
    if sel.numel() == 0:
        return 0
    rest = (~mask).nonzero(as_tuple=True)[0]
    means = params["means"].data
    scales = torch.exp(params["scales"].data[sel])
    L = _covariance_factor(params["quats"].data[sel], scales)
    eps = torch.randn(
        (num_children, sel.numel(), 3), generator=generator, device=means.device, dtype=means.dtype
    )
    offsets = torch.einsum("nij,cnj->cni", L, eps)  # [S, n_sel, 3]
    n_new = num_children * sel.numel()

    def param_fn(name: str, p: Tensor) -> Tensor:
        if name == "means":
            children = (p[sel][None] + offsets).reshape(n_new, 3)
        elif name == "scales":
            children = torch.log(scales / split_factor).repeat(num_children, 1)
        else:
            children = p[sel].repeat(num_children, *([1] * (p.ndim - 1)))
        return torch.cat([p[rest], children])

    edit_params(
        params,
        optimizers,
        param_fn,
        lambda key, v: torch.cat([v[rest], v.new_zeros((n_new, *v.shape[1:]))]),
    )
    _edit_aux_state(state, n, lambda v: torch.cat([v[rest], v.new_zeros((n_new, *v.shape[1:]))]))
    return int(sel.numel())


@torch.no_grad()
def remove(params: Params, optimizers: Optimizers, mask: Tensor, state: Optional[State] = None) -> int:
    """Delete the Gaussians in ``mask`` (rows, moments and per-row ``state``). Returns the count."""
    n = num_gaussians(params)
    sel = _as_index(mask, n)
    if sel.numel() == 0:
        return 0
    keep = (~mask).nonzero(as_tuple=True)[0]
    edit_params(params, optimizers, lambda name, p: p[keep], lambda key, v: v[keep])
    _edit_aux_state(state, n, lambda v: v[keep])
    return int(sel.numel())


@torch.no_grad()
def reset_opacity(params: Params, optimizers: Optimizers, value: float) -> int:
    """Cap opacities at ``value`` (probability) and zero the moments of the capped rows.

    3DGS Sec. 5.2: "set alpha close to zero every 3000 iterations" -- the reference code stores
    ``min(opacity, 0.01)`` as a logit. Rows already below ``value`` (and their moments) are left
    untouched. (The reference code zeroes the opacity moments of *all* rows; untouched rows keep
    theirs here.) Returns the number of capped rows.
    """
    if not 0.0 < value < 1.0:
        raise ValueError(f"value must be in (0, 1), got {value}")
    p = params["opacities"]
    cap = math.log(value / (1.0 - value))
    rows = p.data > cap
    if p.ndim > 1:
        rows = rows.reshape(p.shape[0], -1).any(dim=1)
    n_rows = int(rows.sum())
    if n_rows == 0:
        return 0

    def state_fn(key: str, v: Tensor) -> Tensor:
        v = v.clone()
        v[rows] = 0
        return v

    edit_params(params, optimizers, lambda name, d: d.clamp(max=cap), state_fn, names=["opacities"])
    return n_rows

# --------------------------------------------------------------------------- MCMC ops


def _sample_proportional(weights: Tensor, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """``n`` indices drawn with replacement with probability proportional to ``weights [M]``.

    Inverse-CDF sampling (float64 cumsum), so it has no category limit (``torch.multinomial``
    stops at 2^24).
    """
    w = weights.detach().double().clamp_min(0)
    cdf = torch.cumsum(w, 0)
    total = cdf[-1]
    if not bool(total > 0):
        raise ValueError("cannot sample: all weights are zero")
    u = torch.rand(n, generator=generator, dtype=torch.float64, device=w.device) * total
    return torch.searchsorted(cdf, u, right=True).clamp_max(w.numel() - 1)


def relocation_correction(opacities: Tensor, scales: Tensor, counts: Tensor) -> Tuple[Tensor, Tensor]:
    """Opacity and scale of each of ``N`` copies that replace one Gaussian (MCMC paper Eq. 9).

    Kheradmand et al. 2024, Eq. 9: splitting one Gaussian of opacity ``o`` and covariance
    ``Sigma`` into ``N`` identical ones at the same place, with

        o_new     = 1 - (1 - o)^(1/N)
        Sigma_new = o^2 (sum_{i=1}^{N} sum_{k=0}^{i-1} C(i-1, k) (-1)^k o_new^(k+1) / sqrt(k+1))^(-2) Sigma

    keeps the rendered contribution of the group the same as the original's (under the paper's
    approximation). Since the covariance scales by a square, each axis scale scales by
    ``o / denominator``. The double sum is evaluated in closed form with the hockey-stick identity
    ``sum_{i=k+1}^{N} C(i-1, k) = C(N, k+1)``:

        denominator = sum_{k=0}^{N-1} (-1)^k C(N, k+1) o_new^(k+1) / sqrt(k+1),

    in float64 with ``o`` clamped to ``<= 1 - 1e-6``: then ``N o_new <= -ln(1e-6) < 14``, so
    terms beyond ``k = 63`` are below ``1e-17`` and are dropped (exact for any ``N``).

    Args:
        opacities: ``[M]`` opacities in ``[0, 1]``.
        scales: ``[M, 3]`` scales (linear, not log).
        counts: ``[M]`` integers ``N >= 1`` (the source plus its copies).

    Returns:
        ``(new_opacities [M], new_scales [M, 3])`` in the input dtype.
    """
    if counts.numel() and int(counts.min()) < 1:
        raise ValueError("counts must be >= 1")
    dtype = opacities.dtype
    o = opacities.double().clamp(0.0, 1.0 - 1e-6)
    n = counts.to(device=o.device, dtype=torch.float64)
    o_new = 1.0 - torch.pow(1.0 - o, 1.0 / n)
    num_terms = min(int(n.max()) if n.numel() else 1, 64)
    k = torch.arange(num_terms, device=o.device, dtype=torch.float64)  # [K]
    kk, nn_ = k[None, :], n[:, None]  # [1, K], [M, 1]
    valid = kk < nn_  # k + 1 <= N
    log_binom = torch.lgamma(nn_ + 1) - torch.lgamma(kk + 2) - torch.lgamma((nn_ - kk).clamp_min(1.0))
    log_pow = (kk + 1) * torch.log(o_new.clamp_min(1e-300))[:, None]
    sign = 1.0 - 2.0 * (k % 2)
    terms = torch.where(valid, sign * torch.exp(log_binom + log_pow) / torch.sqrt(kk + 1), torch.zeros_like(log_pow))
    denom = terms.sum(dim=1)
    coeff = torch.where(denom > 0, o / denom.clamp_min(1e-300), torch.ones_like(o))
    new_scales = (coeff[:, None] * scales.double()).to(scales.dtype)
    return o_new.to(dtype), new_scales


def _corrected_rows(
    params: Params, src: Tensor, min_opacity: float
) -> Tuple[Tensor, Tensor]:
    """Eq. 9 values for the sources ``src`` (with repeats): ``(opacity logits, log scales)``."""
    n = num_gaussians(params)
    counts = torch.bincount(src, minlength=n)[src] + 1  # the source itself plus its copies
    o = opacity_probs(params)[src]
    new_o, new_s = relocation_correction(o, torch.exp(params["scales"].data[src]), counts)
    eps = torch.finfo(torch.float32).eps
    new_o = new_o.clamp(min=min_opacity, max=1.0 - eps)
    return torch.logit(new_o), torch.log(new_s)


@torch.no_grad()
def relocate(
    params: Params,
    optimizers: Optimizers,
    dead_mask: Tensor,
    min_opacity: float = 0.005,
    generator: Optional[torch.Generator] = None,
) -> int:
    """Move dead Gaussians onto live ones (MCMC paper Sec. 3.3, "relocation").

    Each dead Gaussian picks a live source with probability proportional to opacity; a source
    picked ``N - 1`` times becomes ``N`` identical Gaussians (itself plus ``N - 1`` copies written
    into the dead rows) whose opacity and scale follow Eq. 9 (:func:`relocation_correction`; new
    opacity clamped to ``[min_opacity, 1 - eps]``). Every other parameter is copied. The optimiser
    moments of the sources *and* of the rewritten rows are zeroed (the reference code zeroes only
    the sources, leaving stale moments on the copies). Returns the number of relocated Gaussians.
    """
    n = num_gaussians(params)
    dead = _as_index(dead_mask, n)
    alive = (~dead_mask).nonzero(as_tuple=True)[0]
    if dead.numel() == 0 or alive.numel() == 0:
        return 0
    probs = opacity_probs(params)[alive]
    if not bool(probs.sum() > 0):
        return 0
    src = alive[_sample_proportional(probs, dead.numel(), generator)]
    new_logit, new_log_scale = _corrected_rows(params, src, min_opacity)
    touched = torch.cat([src, dead])

    def param_fn(name: str, p: Tensor) -> Tensor:
        p = p.clone()
        if name == "opacities":
            p[src] = new_logit.to(p.dtype).reshape(-1, *p.shape[1:])
        elif name == "scales":
            p[src] = new_log_scale.to(p.dtype)
        p[dead] = p[src]
        return p

    def state_fn(key: str, v: Tensor) -> Tensor:
        v = v.clone()
        v[touched] = 0
        return v

    edit_params(params, optimizers, param_fn, state_fn)
    return int(dead.numel())


@torch.no_grad()
def add_samples(
    params: Params,
    optimizers: Optimizers,
    n: int,
    min_opacity: float = 0.005,
    generator: Optional[torch.Generator] = None,
) -> int:
    """Append ``n`` Gaussians sampled like :func:`relocate` (MCMC paper Sec. 3.3, "adding").

    Sources are drawn over all Gaussians proportionally to opacity; sources and new rows get the
    Eq. 9 opacity/scale and zero moments. Returns ``n`` (0 when nothing could be sampled).
    """
    if n <= 0:
        return 0
    probs = opacity_probs(params)
    if probs.numel() == 0 or not bool(probs.sum() > 0):
        return 0
    src = _sample_proportional(probs, n, generator)
    new_logit, new_log_scale = _corrected_rows(params, src, min_opacity)

    def param_fn(name: str, p: Tensor) -> Tensor:
        p = p.clone()
        if name == "opacities":
            p[src] = new_logit.to(p.dtype).reshape(-1, *p.shape[1:])
        elif name == "scales":
            p[src] = new_log_scale.to(p.dtype)
        return torch.cat([p, p[src]])

    def state_fn(key: str, v: Tensor) -> Tensor:
        v = v.clone()
        v[src] = 0
        return torch.cat([v, v.new_zeros((n, *v.shape[1:]))])

    edit_params(params, optimizers, param_fn, state_fn)
    return int(n)


@torch.no_grad()
def inject_position_noise(
    params: Params,
    scale: float,
    k: float = 100.0,
    t: float = 0.005,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Add the SGLD exploration noise to ``params["means"]`` in place (MCMC paper Sec. 3.4).

    ``eps_mu = scale * sigmoid(-k (o - t)) * Sigma eta``, ``eta ~ N(0, I)``, with
    ``Sigma = L L^T``, ``L = R(q) diag(exp(scales))`` and ``scale = noise_lr * lr_means``.
    ``k = 100`` and ``t = 0.005`` are the paper's values; the reference code writes the same gate
    as ``op_sigmoid(1 - o, k=100, x0=0.995)``. The gate is ~1 for (near-)dead Gaussians and ~0 for
    opaque ones, so only Gaussians that contribute little are pushed around. Optimiser state is
    untouched. Returns the noise ``[N, 3]`` that was added.
    """
    means = params["means"]
    o = opacity_probs(params)
    L = _covariance_factor(params["quats"].data, torch.exp(params["scales"].data))
    cov = L @ L.transpose(-1, -2)
    eta = torch.randn(means.shape, generator=generator, device=means.device, dtype=means.dtype)
    gate = torch.sigmoid(-k * (o - t)).to(means.dtype)
    noise = torch.einsum("nij,nj->ni", cov, eta * (gate * scale)[:, None])
    means.data.add_(noise)
    return noise
