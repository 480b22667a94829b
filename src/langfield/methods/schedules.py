"""Learning-rate schedules driven by training *progress* in [0, 1].

Wall-clock budgets (``--budget-s``) make the number of steps unknown in advance, so every
paper schedule is written as a function of progress ``p = max(step / max_steps,
elapsed / budget)``. The trainer calls ``scheduler.step(progress)`` once per step; without a
progress argument the scheduler counts steps against ``max_steps`` itself.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence

import torch

#: After a linear warm-up: a half cosine down to 0, or a constant rate (diffusers' scripts' names).
LR_SCHEDULES = ("cosine", "constant")


class ProgressLR:
    """Sets every param group's LR to ``base_lr * factor_fn(progress)`` (factor 1 at ``p = 0`` typically)."""

    def __init__(self, optimizer: torch.optim.Optimizer, factor_fn: Callable[[float], float], max_steps: int) -> None:
        if max_steps <= 0:
            raise ValueError(f"max_steps must be > 0, got {max_steps}")
        self.optimizer = optimizer
        self.factor_fn = factor_fn
        self.max_steps = max_steps
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.num_steps = 0
        self.progress = 0.0
        self._apply()

    def _apply(self) -> None:
        factor = float(self.factor_fn(min(max(self.progress, 0.0), 1.0)))
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def step(self, progress: Optional[float] = None) -> None:
        self.num_steps += 1
        self.progress = self.num_steps / self.max_steps if progress is None else float(progress)
        self._apply()

    def get_last_lr(self) -> Sequence[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> Dict[str, float]:
        return {"num_steps": self.num_steps, "progress": self.progress}

    def load_state_dict(self, state: Dict[str, float]) -> None:
        self.num_steps = int(state["num_steps"])
        self.progress = float(state["progress"])
        self._apply()


def warmup_multistep(warmup: float, milestones: Sequence[float], gamma: float) -> Callable[[float], float]:
    """Linear warm-up from 1% over the first ``warmup`` of progress, then ``gamma`` at each milestone.

    The schedule nerfacc uses for Instant-NGP (milestones 0.5, 0.75, 0.9; gamma 0.33).
    """

    def fn(p: float) -> float:
        w = 1.0 if warmup <= 0 else min(1.0, 0.01 + 0.99 * p / warmup)
        return w * gamma ** sum(p >= m for m in milestones)

    return fn


def log_linear(lr_init: float, lr_final: float, warmup: float = 0.0, warmup_mult: float = 1.0) -> Callable[[float], float]:
    """Mip-NeRF's schedule (Barron et al. 2021, App.): log-linear decay ``lr_init -> lr_final`` with an
    optional cosine-eased warm-up from ``warmup_mult * lr`` over the first ``warmup`` of progress.
    Returns the factor relative to ``lr_init``."""

    def fn(p: float) -> float:
        lr = math.exp((1 - p) * math.log(lr_init) + p * math.log(lr_final))
        if warmup > 0:
            w = warmup_mult + (1 - warmup_mult) * math.sin(0.5 * math.pi * min(1.0, p / warmup))
            lr *= w
        return lr / lr_init

    return fn


def exponential_decay(lr_init: float, lr_final: float) -> Callable[[float], float]:
    """NeRF's schedule (Mildenhall et al. 2020, Sec. 5.3): exponential decay from ``lr_init`` to ``lr_final``."""
    ratio = lr_final / lr_init
    return lambda p: ratio**p
