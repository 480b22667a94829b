"""Activations used by radiance fields."""

from __future__ import annotations

import torch
from torch import Tensor


class _TruncExp(torch.autograd.Function):
    """``exp(x)`` whose backward clamps the input at 15 (Instant-NGP / torch-ngp trick against overflow)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: Tensor) -> Tensor:
    """Density activation of Instant-NGP (Müller et al. 2022, Sec. 5.4: exponential density)."""
    return _TruncExp.apply(x)
