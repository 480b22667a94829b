"""Slow, readable twin of :mod:`langfield.ops.contraction` (Mip-NeRF 360, Barron et al. 2022, eq. 10).

One point at a time, written straight from the formula, with plain Python branching; autograd
differentiates each branch taken. Only torch is imported, so this file stays independent of the
fast path.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _point_norm(p: Tensor, norm: str) -> Tensor:
    if norm == "l2":
        return torch.sqrt(p[0] * p[0] + p[1] * p[1] + p[2] * p[2])
    if norm == "linf":
        return torch.max(torch.stack([p[0].abs(), p[1].abs(), p[2].abs()]))
    raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")


def contract(points: Tensor, *, norm: str = "l2") -> Tensor:
    """``[..., 3]`` -> ``[..., 3]``: ``x`` inside the unit ball of ``norm``, else ``(2 - 1/|x|) x/|x|``."""
    flat = points.reshape(-1, 3)
    out = []
    for p in flat:
        r = _point_norm(p, norm)
        if float(r.detach()) <= 1.0:
            out.append(p)
        else:
            out.append((2.0 - 1.0 / r) * (p / r))
    return torch.stack(out).reshape(points.shape) if out else points.clone()


def uncontract(contracted: Tensor, *, norm: str = "l2") -> Tensor:
    """Inverse of :func:`contract`: outside the unit ball, ``|x| = 1 / (2 - |y|)`` along ``y``."""
    flat = contracted.reshape(-1, 3)
    out = []
    for q in flat:
        s = _point_norm(q, norm)
        if float(s.detach()) <= 1.0:
            out.append(q)
        else:
            r = 1.0 / (2.0 - torch.clamp(s, max=2.0 - 1e-6))
            out.append(q / s * r)
    return torch.stack(out).reshape(contracted.shape) if out else contracted.clone()
