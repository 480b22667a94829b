"""Fidelity of an image to a spatial condition: edge F1 with a pixel tolerance, depth 1 - AbsRel.

Both are pure functions of label/depth maps; the learned instruments that turn a generated image
into such maps live in :mod:`langfield.generation.fidelity`.

* :func:`edge_f1`: precision, recall and F1 of a predicted edge map against a reference edge map,
  a predicted edge pixel counting as correct when a reference edge lies within ``tolerance``
  pixels (Chebyshev distance, i.e. a ``(2 t + 1)``-square neighbourhood), and a reference edge as
  recalled when a predicted edge lies within ``tolerance`` of it. This is the tolerant matching of
  the BSDS benchmark (Martin et al. 2004) without its one-to-one assignment (a thick predicted
  edge is not penalised for its width beyond ``tolerance``). Counts are summed over the batch
  (one dataset-level figure, like ODS at a fixed threshold).
* :func:`depth_abs_rel`: mean absolute relative error ``|d_pred - d| / d`` over valid pixels
  (Eigen et al. 2014, Sec. 4); ``1 - AbsRel`` is the "fidelity" the control benchmark reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from langfield._checks import InputError, check_int_range

__all__ = ["EdgeScores", "depth_abs_rel", "edge_f1", "edge_f1_reference"]


@dataclass(frozen=True)
class EdgeScores:
    """Tolerant edge matching: ``precision``, ``recall``, ``f1`` and the pixel counts behind them."""

    precision: float
    recall: float
    f1: float
    num_pred: int
    num_target: int

    def as_dict(self) -> Dict[str, Any]:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1, "num_pred": self.num_pred,
                "num_target": self.num_target}  # fmt: skip


def _edge_maps(x: Any, where: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise InputError(f"{where}: expected a tensor [H, W] or [B, H, W], got {type(x).__name__}")
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or min(x.shape) < 1:
        raise InputError(f"{where}: expected [H, W] or [B, H, W], got {tuple(x.shape)}")
    if x.dtype != torch.bool:
        if x.is_floating_point() and bool(((x != 0) & (x != 1)).any()):
            raise InputError(f"{where}: expected a bool edge map (or 0/1 values), got other values; threshold it first")
        x = x != 0
    return x


def _scores(hit_pred: int, num_pred: int, hit_target: int, num_target: int) -> EdgeScores:
    # No predicted edge: nothing predicted wrongly (precision 1); no reference edge: nothing missed.
    precision = hit_pred / num_pred if num_pred else 1.0
    recall = hit_target / num_target if num_target else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return EdgeScores(float(precision), float(recall), float(f1), int(num_pred), int(num_target))


def edge_f1(pred: Tensor, target: Tensor, *, tolerance: int = 1) -> EdgeScores:
    """Tolerant edge precision / recall / F1 (module docstring), counts summed over the batch.

    Args:
        pred, target: bool (or 0/1) edge maps ``[H, W]`` or ``[B, H, W]`` of the same shape.
        tolerance: pixels (Chebyshev) a match may be off by; 0 = exact pixel overlap.

    >>> t = torch.zeros(5, 5, dtype=torch.bool); t[:, 2] = True          # a vertical edge
    >>> p = torch.zeros(5, 5, dtype=torch.bool); p[:, 3] = True          # drawn one pixel right
    >>> edge_f1(p, t, tolerance=1).f1, edge_f1(p, t, tolerance=0).f1
    (1.0, 0.0)
    """
    p, t = _edge_maps(pred, "pred"), _edge_maps(target, "target")
    if p.shape != t.shape:
        raise InputError(f"pred and target: shapes differ, {tuple(p.shape)} vs {tuple(t.shape)}")
    r = check_int_range(tolerance, "tolerance", lo=0, hi=64)

    def dilate(x: Tensor) -> Tensor:
        if r == 0:
            return x
        return F.max_pool2d(x[:, None].float(), 2 * r + 1, stride=1, padding=r)[:, 0] > 0

    hit_pred = int((p & dilate(t)).sum())
    hit_target = int((t & dilate(p)).sum())
    return _scores(hit_pred, int(p.sum()), hit_target, int(t.sum()))


def edge_f1_reference(pred: Tensor, target: Tensor, *, tolerance: int = 1) -> EdgeScores:
    """The slow twin of :func:`edge_f1`: for every edge pixel, search the other map's pixels
    within ``tolerance`` one by one (loops, no pooling)."""
    p, t = _edge_maps(pred, "pred"), _edge_maps(target, "target")
    if p.shape != t.shape:
        raise InputError(f"pred and target: shapes differ, {tuple(p.shape)} vs {tuple(t.shape)}")
    r = int(tolerance)
    _, h, w = p.shape

    def near(b: int, y: int, x: int, other: Tensor) -> bool:
        for yy in range(max(0, y - r), min(h, y + r + 1)):
            for xx in range(max(0, x - r), min(w, x + r + 1)):
                if bool(other[b, yy, xx]):
                    return True
        return False

    hit_pred = sum(near(int(b), int(y), int(x), t) for b, y, x in p.nonzero().tolist())
    hit_target = sum(near(int(b), int(y), int(x), p) for b, y, x in t.nonzero().tolist())
    return _scores(hit_pred, int(p.sum()), hit_target, int(t.sum()))


def depth_abs_rel(pred: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> float:
    """Mean ``|pred - target| / target`` over pixels with ``target > 0`` (and ``mask``).

    Args:
        pred, target: depth ``[H, W]`` or ``[B, H, W]`` (any unit, the same for both; ``target``
            0 = no depth, e.g. sky).
        mask: optional bool of the same shape: pixels to score.

    >>> depth_abs_rel(torch.tensor([[1.0, 3.0, 5.0]]), torch.tensor([[2.0, 3.0, 0.0]]))
    0.25
    """
    for name, x in (("pred", pred), ("target", target)):
        if not isinstance(x, Tensor) or x.ndim not in (2, 3) or not x.is_floating_point():
            raise InputError(f"{name}: expected a float depth map [H, W] or [B, H, W], got {getattr(x, 'shape', type(x).__name__)}")
    if pred.shape != target.shape:
        raise InputError(f"pred and target: shapes differ, {tuple(pred.shape)} vs {tuple(target.shape)}")
    valid = torch.isfinite(target) & (target > 0)
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.shape != target.shape:
            raise InputError(f"mask: expected a bool tensor of shape {tuple(target.shape)}")
        valid = valid & mask.bool()
    if not bool(valid.any()):
        raise InputError("target: no pixel with a positive depth to score")
    p, t = pred.double()[valid], target.double()[valid]
    if not bool(torch.isfinite(p).all()):
        raise InputError("pred: non-finite depths on scored pixels")
    return float(((p - t).abs() / t).mean())
