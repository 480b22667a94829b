"""Semantic segmentation and open-vocabulary localization metrics.

Segmentation (mIoU, mean accuracy, pixel accuracy) is computed from a confusion matrix whose
**rows are target classes and columns are predicted classes**, so views can be scored one by
one and their confusions summed before scoring (the usual way benchmarks accumulate mIoU over
a test set: the means are over classes of the *accumulated* counts, not means of per-view
means).

Predictions outside ``[0, C)`` -- typically ``-1`` for "unknown", see
:data:`langfield.language.queries.UNKNOWN` -- are always wrong: they are a true pixel of their
target class that no class column receives. :func:`confusion_matrix` can keep them in an extra
last column (``unknown_column=True``, shape ``[C, C + 1]``); :meth:`SemanticScores.from_confusion`
reads either shape. Accumulate with the extra column whenever predictions can be unknown, or
those pixels are lost from the row totals and accuracy/IoU come out too high.

Per class ``c`` with ``TP = cm[c, c]``, target total ``T_c`` (row sum, unknown column included)
and prediction total ``P_c`` (column sum over the target rows):

* ``IoU_c = TP / (T_c + P_c - TP)``; ``None`` if ``T_c + P_c == 0`` (the class is absent from
  target *and* prediction). A class predicted but absent from the target has ``IoU_c = 0``.
* ``acc_c = TP / T_c`` (recall); ``None`` if ``T_c == 0`` (recall is undefined without target
  pixels, so a class only predicted is excluded from ``macc`` but still lowers ``miou``).
* ``miou`` / ``macc`` are the means of the non-``None`` entries; ``pixel_acc = trace / sum(T)``.
  Any of them is ``nan`` when nothing is defined (e.g. every pixel ignored).

Localization accuracy follows LERF (Kerr et al., ICCV 2023, Sec. 4.2) and LangSplat (Qin et
al., CVPR 2024): a query is a hit if the most relevant pixel of its relevancy map lies inside
the annotated region.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "SemanticScores",
    "confusion_matrix",
    "semantic_scores",
    "localization_hit",
    "localization_accuracy",
]

ArrayLike = Union[Tensor, np.ndarray]


def _as_label_tensor(x: ArrayLike, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.dtype == torch.bool or x.is_floating_point() or x.is_complex():
        raise ValueError(f"{name} must hold integer class ids (e.g. int64), got dtype {x.dtype}")
    return x.long()


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    return int(num_classes)


def confusion_matrix(
    pred: ArrayLike,
    target: ArrayLike,
    num_classes: int,
    ignore_index: Optional[int] = None,
    unknown_column: bool = False,
) -> Tensor:
    """Confusion counts of integer label maps; rows = target class, columns = predicted class.

    Args:
        pred: integer predicted ids, any shape (e.g. ``[H, W]`` or ``[V, H, W]``). Values
            outside ``[0, C)`` (e.g. ``-1`` = unknown) are wrong predictions that fall in no
            class column.
        target: integer ground-truth ids, same shape as ``pred``, each in ``[0, C)`` or equal to
            ``ignore_index``.
        num_classes: ``C >= 1``.
        ignore_index: target value whose pixels are skipped entirely (e.g. ``255`` for void).
        unknown_column: if True, return ``[C, C + 1]`` whose last column counts, per target
            class, the predictions outside ``[0, C)``. If False (default) those pixels are
            dropped from the matrix, so row sums count only in-range predictions.

    Returns:
        ``[C, C]`` (or ``[C, C + 1]``) int64 counts on ``target``'s device;
        ``cm[t, p]`` = number of pixels with target ``t`` predicted as ``p``.

    Raises:
        ValueError: non-integer inputs, shape mismatch, ``num_classes < 1`` or a target value
            outside ``[0, C)`` that is not ``ignore_index``.
    """
    num_classes = _check_num_classes(num_classes)
    pred = _as_label_tensor(pred, "pred")
    target = _as_label_tensor(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    pred = pred.to(target.device).reshape(-1)
    target = target.reshape(-1)
    if ignore_index is not None:
        keep = target != int(ignore_index)
        pred, target = pred[keep], target[keep]
    if target.numel() and bool(((target < 0) | (target >= num_classes)).any()):
        bad = target[(target < 0) | (target >= num_classes)][0].item()
        hint = "" if ignore_index is not None else " (pass ignore_index for void labels)"
        raise ValueError(f"target has class id {bad} outside [0, {num_classes}){hint}")
    cols = num_classes + 1
    pred = torch.where((pred >= 0) & (pred < num_classes), pred, torch.full_like(pred, num_classes))
    cm = torch.bincount(target * cols + pred, minlength=num_classes * cols).reshape(num_classes, cols)
    return cm if unknown_column else cm[:, :num_classes].contiguous()


def _mean(values: Sequence[Optional[float]]) -> float:
    defined = [v for v in values if v is not None]
    return float(sum(defined) / len(defined)) if defined else math.nan


@dataclass(frozen=True)
class SemanticScores:
    """Segmentation scores; see the module docstring for the exact definitions.

    Attributes:
        miou: mean IoU over classes present in target or prediction.
        macc: mean per-class accuracy (recall) over classes present in the target.
        per_class_iou: ``C`` entries, ``None`` for classes absent from target and prediction.
        per_class_acc: ``C`` entries, ``None`` for classes absent from the target.
        pixel_acc: fraction of (non-ignored) pixels predicted correctly.
    """

    miou: float
    macc: float
    per_class_iou: list[Optional[float]]
    per_class_acc: list[Optional[float]]
    pixel_acc: float

    @staticmethod
    def from_confusion(cm: Tensor, ignore_index: Optional[int] = None) -> "SemanticScores":
        """Scores from a (possibly summed over views) confusion matrix.

        Args:
            cm: ``[C, C]`` or ``[C, C + 1]`` counts from :func:`confusion_matrix`
                (rows = target); the optional last column holds out-of-range predictions.
            ignore_index: if it is a class id in ``[0, C)``, that class is reported as
                ``None`` and left out of the means (its target pixels were already skipped
                when counting; predictions of it elsewhere still count as errors for the
                target class).
        """
        if isinstance(cm, np.ndarray):
            cm = torch.from_numpy(cm)
        if not isinstance(cm, Tensor) or cm.ndim != 2 or cm.shape[1] not in (cm.shape[0], cm.shape[0] + 1):
            shape = tuple(cm.shape) if isinstance(cm, (Tensor, np.ndarray)) else type(cm).__name__
            raise ValueError(f"cm must be [C, C] or [C, C + 1], got {shape}")
        if cm.shape[0] < 1:
            raise ValueError("cm must have at least one class (num_classes >= 1)")
        if cm.is_floating_point() or cm.dtype == torch.bool:
            raise ValueError(f"cm must hold integer counts, got dtype {cm.dtype}")
        cm = cm.detach().cpu().long()
        if bool((cm < 0).any()):
            raise ValueError("cm must hold non-negative counts")
        num_classes = cm.shape[0]
        tp = torch.diagonal(cm[:, :num_classes])
        target_total = cm.sum(dim=1)
        pred_total = cm[:, :num_classes].sum(dim=0)
        ious: list[Optional[float]] = []
        accs: list[Optional[float]] = []
        for c in range(num_classes):
            t, p, k = int(target_total[c]), int(pred_total[c]), int(tp[c])
            if ignore_index is not None and c == int(ignore_index):
                ious.append(None)
                accs.append(None)
                continue
            ious.append(k / (t + p - k) if t + p > 0 else None)
            accs.append(k / t if t > 0 else None)
        total = int(target_total.sum())
        pixel_acc = int(tp.sum()) / total if total > 0 else math.nan
        return SemanticScores(
            miou=_mean(ious), macc=_mean(accs), per_class_iou=ious, per_class_acc=accs, pixel_acc=pixel_acc
        )

    def as_dict(self) -> dict:
        """Plain-Python dict (JSON-ready; undefined entries are ``None``/``nan``)."""
        return {
            "miou": self.miou,
            "macc": self.macc,
            "pixel_acc": self.pixel_acc,
            "per_class_iou": list(self.per_class_iou),
            "per_class_acc": list(self.per_class_acc),
        }


def semantic_scores(
    pred: ArrayLike, target: ArrayLike, num_classes: int, ignore_index: Optional[int] = None
) -> SemanticScores:
    """mIoU, mean accuracy and pixel accuracy of one label map (or a stack of them).

    Out-of-range predictions (``-1`` unknown) count as wrong; see :func:`confusion_matrix`.
    To score many views, sum ``confusion_matrix(..., unknown_column=True)`` over them and call
    :meth:`SemanticScores.from_confusion`; that equals scoring the concatenation.
    """
    cm = confusion_matrix(pred, target, num_classes, ignore_index=ignore_index, unknown_column=True)
    return SemanticScores.from_confusion(cm, ignore_index=ignore_index)


def localization_hit(relevancy: ArrayLike, target_mask: ArrayLike) -> bool:
    """Whether the most relevant pixel lies inside ``target_mask`` (LERF localization).

    Args:
        relevancy: ``[H, W]`` (or ``[H, W, 1]``) float scores; NaN counts as least relevant.
            Ties are broken by the first pixel in row-major order.
        target_mask: ``[H, W]`` (or ``[H, W, 1]``) bool region of the queried object.

    Returns:
        True on a hit. An empty ``target_mask`` can never be hit.
    """
    rel = torch.from_numpy(np.ascontiguousarray(relevancy)) if isinstance(relevancy, np.ndarray) else relevancy
    mask = torch.from_numpy(np.ascontiguousarray(target_mask)) if isinstance(target_mask, np.ndarray) else target_mask
    for name, x in (("relevancy", rel), ("target_mask", mask)):
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if rel.ndim == 3 and rel.shape[-1] == 1:
        rel = rel[..., 0]
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if rel.ndim != 2 or rel.numel() == 0:
        raise ValueError(f"relevancy must be a non-empty [H, W] map, got {tuple(rel.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"target_mask must be a bool tensor, got dtype {mask.dtype}")
    if mask.shape != rel.shape:
        raise ValueError(f"target_mask must have shape {tuple(rel.shape)}, got {tuple(mask.shape)}")
    rel = rel.detach().float().reshape(-1)
    rel = torch.where(torch.isnan(rel), torch.full_like(rel, -math.inf), rel)
    # torch.argmax returns the first maximal index; made explicit so it does not depend on that.
    best = int(torch.nonzero(rel == rel.max())[0, 0])
    return bool(mask.reshape(-1)[best].item())


def localization_accuracy(hits: Iterable[bool]) -> float:
    """Fraction of hits among queries (``hits`` from :func:`localization_hit`)."""
    hits = [bool(h) for h in hits]
    if not hits:
        raise ValueError("hits must contain at least one query result, got none")
    return sum(hits) / len(hits)
