"""Adaptive density control for 3D Gaussian Splatting, as explicit strategy objects.

Two strategies share one contract (gsplat's ``strategy`` shape; STYLE.md principle 5):

* :class:`DefaultStrategy` -- clone / split / prune / opacity reset of Kerbl et al., "3D Gaussian
  Splatting for Real-Time Radiance Field Rendering", SIGGRAPH 2023, Sec. 5.2, with the defaults
  of the reference implementation (``densify_grad_threshold=0.0002``, ``percent_dense=0.01``,
  ``densify_from_iter=500``, ``densify_until_iter=15000``, ``densification_interval=100``,
  ``opacity_reset_interval=3000``).
* :class:`MCMCStrategy` -- fixed-budget relocation and SGLD noise of Kheradmand et al.,
  "3D Gaussian Splatting as Markov Chain Monte Carlo", NeurIPS 2024 (arXiv:2404.09591).

A strategy is a dataclass of configuration; everything it accumulates lives in a plain ``state``
dict returned by ``initialize_state`` (tensors, numbers and ``None`` only, so it goes into a
checkpoint as is). It never owns the parameters or the optimisers: the method passes them to
every hook.

Parameter layout (owned by the method)::

    params      nn.ParameterDict   means [N,3], scales [N,3] (log), quats [N,4] (w,x,y,z, raw),
                                   opacities [N] (logit), sh0 [N,1,3], shN [N,K,3], features [N,F], ...
    optimizers  Dict[str, Optimizer]  one optimiser per parameter name, one param group holding
                                   exactly that parameter (Adam in practice)

Every parameter whose first dimension is ``N`` is edited the same way, whatever its name.

**How edits keep the optimiser consistent.** The ops below keep the *same* ``nn.Parameter``
objects and swap their storage (``param.data = new``; ``param.grad = None``), then apply the same
row operation to every per-row optimiser buffer (``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``;
the scalar ``step`` is left alone): rows are selected on removal, new rows get zero moments, reset
rows get zero moments. Optimiser ``param_groups`` and any other reference to the parameters stay
valid, so nothing has to be rebuilt after a densification step.

Call order in a training step::

    info = render(...)                       # info["means2d"] [N,2] or [C,N,2], info["radii"], ...
    strategy.step_pre_backward(params, optimizers, state, step, info)
    loss.backward()
    for opt in optimizers.values(): opt.step(); opt.zero_grad(set_to_none=True)
    strategy.step_post_backward(params, optimizers, state, step, info)

(``step_post_backward`` runs after the optimiser step, as in gsplat's trainer and, for the MCMC
noise, the reference ``3dgs-mcmc`` code; ``info["means2d"].grad`` survives ``zero_grad`` because
``means2d`` is not a parameter.)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, MutableMapping, Optional, Tuple

import torch
from torch import Tensor

from langfield.geometry.rotations import quaternion_to_matrix

__all__ = [
    "edit_params",
    "check_params_and_optimizers",
    "duplicate",
    "split",
    "remove",
    "reset_opacity",
    "relocation_correction",
    "relocate",
    "add_samples",
    "inject_position_noise",
    "mcmc_regularization",
    "DefaultStrategy",
    "MCMCStrategy",
]

logger = logging.getLogger(__name__)

Params = MutableMapping[str, torch.nn.Parameter]
Optimizers = Mapping[str, torch.optim.Optimizer]
State = Dict[str, Any]

_REQUIRED = ("means", "scales", "quats", "opacities")


# --------------------------------------------------------------------------- generic editing


def _num_gaussians(params: Params) -> int:
    if "means" not in params:
        raise KeyError("params must contain 'means' [N, 3]")
    return int(params["means"].shape[0])


def _per_row_names(params: Params, n: int) -> List[str]:
    return [k for k, p in params.items() if p.ndim >= 1 and p.shape[0] == n]


def check_params_and_optimizers(
    params: Params, optimizers: Optimizers, required: Iterable[str] = _REQUIRED
) -> None:
    """Raise ``ValueError`` unless ``params`` / ``optimizers`` follow the layout the ops assume.

    Checks: the ``required`` keys exist with first dimension ``N``; every optimiser is keyed by a
    parameter name and has a single param group holding exactly ``params[name]``.
    """
    n = _num_gaussians(params)
    for key in required:
        if key not in params:
            raise ValueError(f"params is missing {key!r}")
        if params[key].shape[0] != n:
            raise ValueError(f"params[{key!r}] has {params[key].shape[0]} rows, means has {n}")
    for name, opt in optimizers.items():
        if name not in params:
            raise ValueError(f"optimizer {name!r} has no parameter of that name")
        groups = opt.param_groups
        if len(groups) != 1 or len(groups[0]["params"]) != 1 or groups[0]["params"][0] is not params[name]:
            raise ValueError(
                f"optimizers[{name!r}] must have one param group holding exactly params[{name!r}]"
            )


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
        names = _per_row_names(params, _num_gaussians(params))
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
    n = _num_gaussians(params)
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
    n = _num_gaussians(params)
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
    n = _num_gaussians(params)
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


def _opacity_probs(params: Params) -> Tensor:
    """``[N]`` opacities in probability space (``opacities`` may be ``[N]`` or ``[N, 1]``)."""
    o = params["opacities"].data
    return torch.sigmoid(o.reshape(o.shape[0]))


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
    n = _num_gaussians(params)
    counts = torch.bincount(src, minlength=n)[src] + 1  # the source itself plus its copies
    o = _opacity_probs(params)[src]
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
    n = _num_gaussians(params)
    dead = _as_index(dead_mask, n)
    alive = (~dead_mask).nonzero(as_tuple=True)[0]
    if dead.numel() == 0 or alive.numel() == 0:
        return 0
    probs = _opacity_probs(params)[alive]
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
    probs = _opacity_probs(params)
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
    o = _opacity_probs(params)
    L = _covariance_factor(params["quats"].data, torch.exp(params["scales"].data))
    cov = L @ L.transpose(-1, -2)
    eta = torch.randn(means.shape, generator=generator, device=means.device, dtype=means.dtype)
    gate = torch.sigmoid(-k * (o - t)).to(means.dtype)
    noise = torch.einsum("nij,nj->ni", cov, eta * (gate * scale)[:, None])
    means.data.add_(noise)
    return noise


def mcmc_regularization(params: Params, opacity_reg: float = 0.01, scale_reg: float = 0.01) -> Tensor:
    """The MCMC paper's regularisers (Sec. 3.4), to add to the photometric loss.

    ``opacity_reg * mean_i |o_i| + scale_reg * mean_ij |s_ij|`` with ``o = sigmoid(opacities)``
    and ``s = exp(scales)`` (the square roots of the eigenvalues of ``Sigma``), averaged as in the
    reference code. Differentiable; defaults are the paper's ``lambda_o = lambda_Sigma = 0.01``.
    """
    loss = params["means"].new_zeros(())
    if opacity_reg:
        loss = loss + opacity_reg * torch.sigmoid(params["opacities"]).abs().mean()
    if scale_reg:
        loss = loss + scale_reg * torch.exp(params["scales"]).abs().mean()
    return loss


# --------------------------------------------------------------------------- strategies


def _means2d_grad(info: Mapping[str, Any], absgrad: bool) -> Tensor:
    means2d = info["means2d"]
    if absgrad:
        grad = info.get("means2d_absgrad", getattr(means2d, "absgrad", None))
        what = "info['means2d_absgrad'] (or means2d.absgrad)"
    else:
        retained = means2d.is_leaf or means2d.retains_grad
        grad = means2d.grad if retained else None
        what = "info['means2d'].grad (call step_pre_backward before loss.backward())"
    if grad is None:
        raise ValueError(f"absgrad={absgrad}: {what} is missing")
    return grad


@dataclass
class DefaultStrategy:
    """3DGS adaptive density control (Kerbl et al. 2023, Sec. 5.2; reference-code defaults).

    Every step (until ``refine_stop_iter``) the view-space positional gradient norm of each
    visible Gaussian is accumulated. Every ``refine_every`` steps in
    ``(refine_start_iter, refine_stop_iter)``, Gaussians whose mean gradient exceeds
    ``grow_grad2d`` are cloned if small (``max scale <= grow_scale3d * scene_scale``) or split
    into two if large; then Gaussians with opacity ``< prune_opa`` are pruned, plus, after the
    first opacity reset, those larger than ``prune_scale3d * scene_scale`` in world space (and
    than ``prune_scale2d`` of the image in screen space while ``step < refine_scale2d_stop_iter``).
    Every ``reset_every`` steps opacities are capped at ``2 * prune_opa``.

    The grad threshold 0.0002 refers to gradients in NDC-like units: gradients w.r.t. pixel
    coordinates are multiplied by ``width / 2`` (x) and ``height / 2`` (y), as gsplat does to
    match the reference rasteriser, and by the number of cameras in the batch (a loss averaged
    over ``C`` images scales each image's gradient by ``1 / C``).

    ``info`` keys read by the hooks: ``means2d`` (``[N, 2]`` or ``[C, N, 2]``, non-leaf tensor in
    pixels), ``radii`` (``[N]`` / ``[C, N]``, or per-axis ``[..., N, 2]``; ``> 0`` means visible),
    ``width``, ``height`` (pixels), optional ``n_cameras`` (default: ``C``, 1 for ``[N, 2]``), and
    ``means2d_absgrad`` when ``absgrad`` (or a ``means2d.absgrad`` attribute set by the
    rasteriser).
    """

    grow_grad2d: float = 0.0002
    grow_scale3d: float = 0.01
    grow_scale2d: float = 0.05
    prune_opa: float = 0.005
    prune_scale3d: float = 0.1
    prune_scale2d: float = 0.15
    refine_scale2d_stop_iter: int = 0
    refine_start_iter: int = 500
    refine_stop_iter: int = 15_000
    refine_every: int = 100
    reset_every: int = 3000
    split_factor: float = 1.6
    absgrad: bool = False
    verbose: bool = False

    def initialize_state(self, scene_scale: float = 1.0) -> State:
        """Fresh state; per-Gaussian accumulators are sized lazily on first use."""
        return {
            "grad2d": None,  # [N] accumulated NDC-unit gradient norms
            "count": None,  # [N] number of accumulated views
            "max_radii": None,  # [N] max screen radius / max(width, height)
            "scene_scale": float(scene_scale),
            "n_dupli": 0,
            "n_split": 0,
            "n_prune": 0,
            "n_reset": 0,
        }

    def check_sanity(self, params: Params, optimizers: Optimizers) -> None:
        check_params_and_optimizers(params, optimizers)

    def step_pre_backward(
        self, params: Params, optimizers: Optimizers, state: State, step: int, info: Mapping[str, Any]
    ) -> None:
        """Ask autograd to keep ``info["means2d"].grad`` (it is not a leaf)."""
        means2d = info["means2d"]
        if means2d.requires_grad:
            means2d.retain_grad()

    @torch.no_grad()
    def step_post_backward(
        self, params: Params, optimizers: Optimizers, state: State, step: int, info: Mapping[str, Any]
    ) -> None:
        """Accumulate statistics; grow / prune / reset opacities on schedule (edits in place)."""
        if step >= self.refine_stop_iter:
            return
        self._update_state(params, state, info)
        if step > self.refine_start_iter and step % self.refine_every == 0:
            n_dupli, n_split = self._grow(params, optimizers, state, step)
            n_prune = self._prune(params, optimizers, state, step)
            state.update(n_dupli=n_dupli, n_split=n_split, n_prune=n_prune)
            for key in ("grad2d", "count", "max_radii"):
                state[key].zero_()
            if self.verbose:
                logger.info(
                    "step %d: %d duplicated, %d split, %d pruned; now %d Gaussians",
                    step, n_dupli, n_split, n_prune, _num_gaussians(params),
                )  # fmt: skip
        if step > 0 and step % self.reset_every == 0:
            state["n_reset"] = reset_opacity(params, optimizers, value=2.0 * self.prune_opa)
            if self.verbose:
                logger.info("step %d: opacity reset on %d Gaussians", step, state["n_reset"])

    def _ensure_state(self, state: State, n: int, device: torch.device) -> None:
        """(Re)allocate the accumulators when missing or when ``N`` changed (e.g. after a resume)."""
        for key in ("grad2d", "count", "max_radii"):
            v = state.get(key)
            if not isinstance(v, Tensor) or v.shape != (n,):
                state[key] = torch.zeros(n, device=device)
            elif v.device != device:
                state[key] = v.to(device)

    def _update_state(self, params: Params, state: State, info: Mapping[str, Any]) -> None:
        n = _num_gaussians(params)
        grads = _means2d_grad(info, self.absgrad).detach()
        if grads.ndim < 2 or grads.shape[-1] != 2 or grads.shape[-2] != n:
            raise ValueError(f"means2d grad must have shape [..., {n}, 2], got {tuple(grads.shape)}")
        radii = info["radii"].detach()
        if radii.shape == grads.shape:
            radii = radii.amax(dim=-1)  # per-axis radii [..., N, 2]
        if radii.shape != grads.shape[:-1]:
            raise ValueError(
                f"radii must have shape {tuple(grads.shape[:-1])} (or {tuple(grads.shape)}), got {tuple(radii.shape)}"
            )
        grads = grads.reshape(-1, n, 2).float()
        num_views = grads.shape[0]
        radii = radii.reshape(num_views, n).float()
        width, height = float(info["width"]), float(info["height"])
        n_cameras = float(info.get("n_cameras", num_views))
        scale = grads.new_tensor([width / 2.0, height / 2.0]) * n_cameras
        norms = (grads * scale).norm(dim=-1)  # [V, N]

        self._ensure_state(state, n, grads.device)
        # Dense masked sums rather than nonzero()/index_add_: no host-device sync per step.
        visible = radii > 0  # [V, N]
        state["grad2d"] += torch.where(visible, norms, torch.zeros_like(norms)).sum(dim=0)
        state["count"] += visible.sum(dim=0).to(state["count"].dtype)
        rel = torch.where(visible, radii, torch.zeros_like(radii)).amax(dim=0) / max(width, height)
        torch.maximum(state["max_radii"], rel.to(state["max_radii"].dtype), out=state["max_radii"])

    def _grow(self, params: Params, optimizers: Optimizers, state: State, step: int) -> Tuple[int, int]:
        n = _num_gaussians(params)
        self._ensure_state(state, n, params["means"].device)
        mean_grad = state["grad2d"] / state["count"].clamp_min(1)
        is_grad_high = mean_grad > self.grow_grad2d
        max_scale = torch.exp(params["scales"].data).amax(dim=-1)
        is_small = max_scale <= self.grow_scale3d * state["scene_scale"]
        is_dupli = is_grad_high & is_small
        is_split = is_grad_high & ~is_small
        if step < self.refine_scale2d_stop_iter:
            is_split = is_split | (state["max_radii"] > self.grow_scale2d)
        n_dupli = duplicate(params, optimizers, is_dupli, state=state)
        # The fresh clones are appended after the originals and are never split in the same round.
        is_split = torch.cat([is_split, is_split.new_zeros(n_dupli)])
        n_split = split(params, optimizers, is_split, split_factor=self.split_factor, state=state)
        return n_dupli, n_split

    def _prune(self, params: Params, optimizers: Optimizers, state: State, step: int) -> int:
        is_prune = _opacity_probs(params) < self.prune_opa
        if step > self.reset_every:
            max_scale = torch.exp(params["scales"].data).amax(dim=-1)
            is_too_big = max_scale > self.prune_scale3d * state["scene_scale"]
            if step < self.refine_scale2d_stop_iter:
                is_too_big = is_too_big | (state["max_radii"] > self.prune_scale2d)
            is_prune = is_prune | is_too_big
        return remove(params, optimizers, is_prune, state=state)


@dataclass
class MCMCStrategy:
    """Fixed-budget densification of Kheradmand et al. 2024 ("3DGS as MCMC").

    Every ``refine_every`` steps in ``(refine_start_iter, refine_stop_iter)``: Gaussians with
    opacity ``<= min_opacity`` are relocated onto live ones sampled proportionally to opacity
    (:func:`relocate`, Eq. 9 correction), then ``grow_rate`` (5%) more Gaussians are added the
    same way (:func:`add_samples`) until ``cap_max``. Gaussians are never pruned. After every step
    (all of training) the SGLD noise of :func:`inject_position_noise` is added to the means with
    ``scale = noise_lr * lr``, ``lr`` being the current learning rate of the means.

    Add :func:`mcmc_regularization` to the loss (the paper trains with both regularisers).

    ``info`` keys: optional ``lr`` (else ``optimizers["means"].param_groups[0]["lr"]``); the
    ``lr=`` argument of :meth:`step_post_backward` wins over both.
    """

    cap_max: int = 1_000_000
    noise_lr: float = 5e5
    refine_start_iter: int = 500
    refine_stop_iter: int = 25_000
    refine_every: int = 100
    min_opacity: float = 0.005
    grow_rate: float = 0.05
    noise_k: float = 100.0
    noise_t: float = 0.005
    verbose: bool = False

    def initialize_state(self, scene_scale: float = 1.0) -> State:
        """State for logging only (``scene_scale`` is accepted for a uniform signature)."""
        return {"scene_scale": float(scene_scale), "n_relocated": 0, "n_added": 0}

    def check_sanity(self, params: Params, optimizers: Optimizers) -> None:
        check_params_and_optimizers(params, optimizers)
        if "means" not in optimizers:
            raise ValueError("MCMCStrategy needs optimizers['means'] (its LR scales the noise)")

    def step_pre_backward(
        self, params: Params, optimizers: Optimizers, state: State, step: int, info: Mapping[str, Any]
    ) -> None:
        """Nothing to do (the MCMC strategy uses no screen-space gradients)."""

    @torch.no_grad()
    def step_post_backward(
        self,
        params: Params,
        optimizers: Optimizers,
        state: State,
        step: int,
        info: Optional[Mapping[str, Any]] = None,
        lr: Optional[float] = None,
    ) -> None:
        """Relocate / add on schedule, then inject position noise (edits in place)."""
        if lr is None:
            lr = (info or {}).get("lr")
        if lr is None:
            lr = optimizers["means"].param_groups[0]["lr"]
        if self.refine_start_iter < step < self.refine_stop_iter and step % self.refine_every == 0:
            dead = _opacity_probs(params) <= self.min_opacity
            n_relocated = relocate(params, optimizers, dead, min_opacity=self.min_opacity)
            n = _num_gaussians(params)
            n_target = min(self.cap_max, int((1.0 + self.grow_rate) * n))
            n_added = add_samples(params, optimizers, max(0, n_target - n), min_opacity=self.min_opacity)
            state.update(n_relocated=n_relocated, n_added=n_added)
            if self.verbose:
                logger.info(
                    "step %d: relocated %d, added %d; now %d Gaussians",
                    step, n_relocated, n_added, _num_gaussians(params),
                )  # fmt: skip
        inject_position_noise(params, scale=float(lr) * self.noise_lr, k=self.noise_k, t=self.noise_t)
