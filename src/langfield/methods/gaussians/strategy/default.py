"""3DGS adaptive density control: clone / split / prune / opacity reset.

Kerbl et al., "3D Gaussian Splatting for Real-Time Radiance Field Rendering", SIGGRAPH 2023,
Sec. 5.2, with the defaults of the reference implementation (``densify_grad_threshold=0.0002``,
``percent_dense=0.01``, ``densify_from_iter=500``, ``densify_until_iter=15000``,
``densification_interval=100``, ``opacity_reset_interval=3000``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Tuple

import torch
from torch import Tensor

from langfield._checks import check_fields
from langfield.configs import check_field_types
from langfield.methods.gaussians.strategy.base import Strategy
from langfield.methods.gaussians.strategy.ops import (
    Optimizers,
    Params,
    State,
    duplicate,
    num_gaussians,
    opacity_probs,
    remove,
    reset_opacity,
    split,
)

__all__ = ["DefaultStrategy"]

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class DefaultStrategy(Strategy):
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

    config_type: ClassVar[str] = "default"

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

    def __post_init__(self) -> None:
        check_field_types(self)
        check_fields(
            self, "DefaultStrategy", int_min_1=("refine_every", "reset_every"),
            int_min_0=("refine_scale2d_stop_iter", "refine_start_iter", "refine_stop_iter"),
            non_negative=("grow_grad2d", "grow_scale3d", "grow_scale2d", "prune_scale3d", "prune_scale2d"),
            positive=("split_factor",), fraction=("prune_opa",),
        )  # fmt: skip

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
                    step, n_dupli, n_split, n_prune, num_gaussians(params),
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
        n = num_gaussians(params)
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
        n = num_gaussians(params)
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
        is_prune = opacity_probs(params) < self.prune_opa
        if step > self.reset_every:
            max_scale = torch.exp(params["scales"].data).amax(dim=-1)
            is_too_big = max_scale > self.prune_scale3d * state["scene_scale"]
            if step < self.refine_scale2d_stop_iter:
                is_too_big = is_too_big | (state["max_radii"] > self.prune_scale2d)
            is_prune = is_prune | is_too_big
        return remove(params, optimizers, is_prune, state=state)
