"""What the diffusion objectives share: AdamW with a progress-driven warm-up schedule, gradient clipping.

* :func:`warmup_schedule` — the learning-rate factor as a function of training progress
  (:mod:`langfield.methods.schedules`): a linear warm-up over the first ``warmup`` of training
  (the first step already uses ``1 / warmup_steps`` of the rate, never 0), then either constant or
  a half cosine down to 0 at the end (the shape of diffusers' ``get_cosine_schedule_with_warmup``;
  Loshchilov & Hutter 2017, SGDR).
* :func:`adamw_with_schedule` — ``torch.optim.AdamW`` (Loshchilov & Hutter 2019) and its
  :class:`~langfield.methods.schedules.ProgressLR`.
* :class:`GradClip` — clips the global gradient norm before every optimiser step. The Trainer has
  no clipping of its own, so it is attached as the optimiser's step pre-hook: under a
  ``GradScaler`` (float16 mixed precision) ``scaler.step`` unscales the gradients before it calls
  ``optimizer.step()``, so the hook sees true gradients. It keeps the last pre-clip norm for logging.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, List, Optional, Tuple

import torch
from torch import Tensor

from langfield._checks import check_choice, check_finite_number, check_int_range
from langfield.methods.schedules import LR_SCHEDULES, ProgressLR

__all__ = ["LR_SCHEDULES", "GradClip", "adamw_with_schedule", "warmup_schedule"]


def warmup_schedule(schedule: str, warmup: float, max_steps: int) -> Callable[[float], float]:
    """Learning-rate factor of progress ``p`` in ``[0, 1]``: linear warm-up, then ``"cosine"`` or ``"constant"``.

    With ``W = max(1, round(warmup * max_steps))`` warm-up steps and ``s = p * max_steps``: the
    warm-up factor is ``min(1, (s + 1) / W)`` (1 throughout when ``warmup = 0``); the cosine factor
    is ``0.5 * (1 + cos(pi * q))`` with ``q = (s - W) / (max_steps - W)`` clamped to ``[0, 1]``.

    >>> fn = warmup_schedule("cosine", 0.1, 100)
    >>> [round(fn(p), 3) for p in (0.0, 0.05, 0.1, 0.55, 1.0)]
    [0.1, 0.6, 1.0, 0.5, 0.0]
    """
    check_choice(schedule, "lr_schedule", LR_SCHEDULES)
    warmup = check_finite_number(warmup, "warmup", lo=0.0, hi=1.0)
    max_steps = check_int_range(max_steps, "max_steps", lo=1)
    warmup_steps = max(1, round(warmup * max_steps)) if warmup > 0 else 0

    def factor(p: float) -> float:
        s = p * max_steps
        warm = 1.0 if warmup_steps == 0 else min(1.0, (s + 1.0) / warmup_steps)
        if schedule == "constant":
            return warm
        span = max(max_steps - warmup_steps, 1)
        q = min(max((s - warmup_steps) / span, 0.0), 1.0)
        return warm * 0.5 * (1.0 + math.cos(math.pi * q))

    return factor


def adamw_with_schedule(
    params: Iterable[Tensor],
    *,
    lr: float,
    weight_decay: float,
    betas: Tuple[float, float],
    schedule: str,
    warmup: float,
    max_steps: int,
) -> Tuple[torch.optim.AdamW, ProgressLR]:
    """``AdamW(params, lr, betas, weight_decay)`` and a :class:`ProgressLR` following :func:`warmup_schedule`."""
    opt = torch.optim.AdamW(list(params), lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    return opt, ProgressLR(opt, warmup_schedule(schedule, warmup, max_steps), max_steps)


class GradClip:
    """Clip the global L2 norm of ``params``' gradients to ``max_norm`` before each step of the optimisers it is attached to.

    Attributes:
        last_norm: ``[]`` tensor, the total norm before clipping at the last step (``None`` before the first).
    """

    def __init__(self, params: Iterable[Tensor], max_norm: float) -> None:
        self.params: List[Tensor] = [p for p in params if p.requires_grad]
        self.max_norm = check_finite_number(max_norm, "grad_clip", lo=0.0, lo_inclusive=False)
        self.last_norm: Optional[Tensor] = None

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Run before every ``optimizer.step()`` (a step pre-hook; not part of the optimiser's state)."""
        optimizer.register_step_pre_hook(self._hook)

    def _hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.last_norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm).detach()
