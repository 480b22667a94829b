"""Fixed-budget densification of Kheradmand et al., "3D Gaussian Splatting as Markov Chain Monte
Carlo", NeurIPS 2024 (arXiv:2404.09591): relocation of dead Gaussians, growth to a cap, SGLD
position noise and the opacity / scale regularisers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Optional

import torch
from torch import Tensor

from langfield._checks import check_fields
from langfield.configs import check_field_types
from langfield.methods.gaussians.strategy.base import Strategy, check_params_and_optimizers
from langfield.methods.gaussians.strategy.ops import (
    Optimizers,
    Params,
    State,
    add_samples,
    inject_position_noise,
    num_gaussians,
    opacity_probs,
    relocate,
)

__all__ = ["MCMCStrategy", "mcmc_regularization"]

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class MCMCStrategy(Strategy):
    """Fixed-budget densification of Kheradmand et al. 2024 ("3DGS as MCMC").

    Every ``refine_every`` steps in ``(refine_start_iter, refine_stop_iter)``: Gaussians with
    opacity ``<= min_opacity`` are relocated onto live ones sampled proportionally to opacity
    (:func:`relocate`, Eq. 9 correction), then ``grow_rate`` (5%) more Gaussians are added the
    same way (:func:`add_samples`) until ``cap_max``. Gaussians are never pruned. After every step
    (all of training) the SGLD noise of :func:`inject_position_noise` is added to the means with
    ``scale = noise_lr * lr``, ``lr`` being the current learning rate of the means.

    The paper trains with both regularisers of Sec. 3.4: :meth:`regularization` returns
    :func:`mcmc_regularization` with weights ``opacity_reg`` / ``scale_reg`` (the paper's 0.01),
    and the method adds it to its loss.

    ``info`` keys: optional ``lr`` (else ``optimizers["means"].param_groups[0]["lr"]``); the
    ``lr=`` argument of :meth:`step_post_backward` wins over both.
    """

    config_type: ClassVar[str] = "mcmc"

    cap_max: int = 1_000_000
    noise_lr: float = 5e5
    refine_start_iter: int = 500
    refine_stop_iter: int = 25_000
    refine_every: int = 100
    min_opacity: float = 0.005
    grow_rate: float = 0.05
    noise_k: float = 100.0
    noise_t: float = 0.005
    opacity_reg: float = 0.01
    scale_reg: float = 0.01
    verbose: bool = False

    def __post_init__(self) -> None:
        check_field_types(self)
        check_fields(
            self, "MCMCStrategy", int_min_1=("cap_max", "refine_every"), int_min_0=("refine_start_iter", "refine_stop_iter"),
            non_negative=("noise_lr", "grow_rate", "noise_k", "noise_t", "opacity_reg", "scale_reg"),
            fraction=("min_opacity",),
        )  # fmt: skip

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

    def regularization(self, params: Params) -> Tensor:
        """``opacity_reg * mean |o| + scale_reg * mean |s|`` (:func:`mcmc_regularization`)."""
        return mcmc_regularization(params, opacity_reg=self.opacity_reg, scale_reg=self.scale_reg)

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
            dead = opacity_probs(params) <= self.min_opacity
            n_relocated = relocate(params, optimizers, dead, min_opacity=self.min_opacity)
            n = num_gaussians(params)
            n_target = min(self.cap_max, int((1.0 + self.grow_rate) * n))
            n_added = add_samples(params, optimizers, max(0, n_target - n), min_opacity=self.min_opacity)
            state.update(n_relocated=n_relocated, n_added=n_added)
            if self.verbose:
                logger.info(
                    "step %d: relocated %d, added %d; now %d Gaussians",
                    step, n_relocated, n_added, num_gaussians(params),
                )  # fmt: skip
        inject_position_noise(params, scale=float(lr) * self.noise_lr, k=self.noise_k, t=self.noise_t)
