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

Boundary accuracy (:func:`boundary_f_score`) is DAVIS's contour accuracy F (Perazzi et al.,
CVPR 2016): per class, the F-measure of boundary-pixel precision and recall with a match
tolerance of ``ceil(0.008 x image diagonal)`` pixels (or a given pixel radius), averaged over the
classes present; counts (:func:`boundary_counts`) are summed over views like the confusion matrix.

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
    "DAVIS_BOUNDARY_TOLERANCE",
    "BoundaryScores",
    "boundary_counts",
    "boundary_f_score",
    "boundary_tolerance_pixels",
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


# ----------------------------------------------------------------------------------------------
# Boundary F-score (contour accuracy)
# ----------------------------------------------------------------------------------------------

#: DAVIS's default boundary tolerance: a fraction of the image diagonal (``bound_th = 0.008`` in
#: the DAVIS evaluation code; 1 px at 64x64, 3 px at 200x200).
DAVIS_BOUNDARY_TOLERANCE = 0.008


def boundary_tolerance_pixels(tolerance: float, height: int, width: int) -> int:
    """Match radius in pixels: ``tolerance`` itself if ``>= 1``, else ``ceil(tolerance * diagonal)``
    (DAVIS's rule; at least 1 px).

    >>> boundary_tolerance_pixels(0.008, 200, 200), boundary_tolerance_pixels(2, 64, 64)
    (3, 2)
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance) or tolerance <= 0:
        raise ValueError(f"tolerance must be a finite number > 0 (pixels if >= 1, else a fraction of the diagonal), got {tolerance!r}")
    if tolerance >= 1:
        if float(tolerance) != int(tolerance):
            raise ValueError(f"tolerance >= 1 is a pixel radius and must be a whole number, got {tolerance!r}")
        return int(tolerance)
    return max(1, int(math.ceil(tolerance * math.hypot(height, width))))


def _boundaries(masks: Tensor, valid: Tensor) -> Tensor:
    """``[N, H, W]`` bool: pixels of ``masks`` with a valid 4-neighbour outside the mask.

    The image border is not a boundary (a neighbour outside the image does not count), nor is the
    edge to an invalid (ignored) pixel, and invalid pixels are never boundary pixels."""
    m = masks & valid
    edge = torch.zeros_like(m)
    # For each direction: a valid neighbour that is not in the mask makes the pixel a boundary.
    edge[:, 1:, :] |= valid[:, :-1, :] & ~m[:, :-1, :]
    edge[:, :-1, :] |= valid[:, 1:, :] & ~m[:, 1:, :]
    edge[:, :, 1:] |= valid[:, :, :-1] & ~m[:, :, :-1]
    edge[:, :, :-1] |= valid[:, :, 1:] & ~m[:, :, 1:]
    return m & edge


def _dilate(masks: Tensor, radius: int) -> Tensor:
    """``[N, H, W]`` bool dilated by a disk of ``radius`` pixels (``dy^2 + dx^2 <= radius^2``)."""
    r = torch.arange(-radius, radius + 1, dtype=torch.float32)
    disk = ((r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius).float()[None, None]
    out = torch.nn.functional.conv2d(masks.float()[:, None], disk, padding=radius)
    return out[:, 0] > 0.5


def boundary_counts(
    pred: ArrayLike,
    target: ArrayLike,
    num_classes: int,
    ignore_index: Optional[int] = None,
    tolerance: float = DAVIS_BOUNDARY_TOLERANCE,
) -> Tensor:
    """Per-class boundary-matching counts of integer label maps, summable over views.

    Per class ``c`` the boundary of its binary mask (:func:`boundary_f_score` says which pixels)
    is computed in the prediction and in the target. A predicted boundary pixel is *matched* when
    a target boundary pixel lies within the tolerance radius (Euclidean, a disk), and vice versa.

    Args:
        pred: ``[H, W]`` or ``[V, H, W]`` integer predicted ids; values outside ``[0, C)`` (``-1``
            unknown) belong to no class (a class region next to them has a boundary there).
        target: same shape, ids in ``[0, C)`` or ``ignore_index``.
        num_classes: ``C >= 1``.
        ignore_index: target value whose pixels are void: they are never boundary pixels and an
            edge between a class and a void pixel is not a boundary (its true position is unknown),
            in the prediction as well as in the target.
        tolerance: match radius; ``>= 1``: whole pixels, ``< 1``: fraction of the image diagonal,
            rounded up (:func:`boundary_tolerance_pixels`; default DAVIS's 0.008).

    Returns:
        ``[C, 5]`` int64 on the CPU: ``(pred_matched, pred_boundary, target_matched,
        target_boundary, present)`` per class, ``present`` counting the pixels of the class in
        the target or the prediction (non-void).
    """
    num_classes = _check_num_classes(num_classes)
    pred = _as_label_tensor(pred, "pred")
    target = _as_label_tensor(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if target.ndim == 2:
        pred, target = pred[None], target[None]
    if target.ndim != 3 or target.shape[1] < 1 or target.shape[2] < 1:
        raise ValueError(f"pred and target must be [H, W] or [V, H, W] label maps, got {tuple(target.shape)}")
    pred, target = pred.cpu(), target.cpu()
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != int(ignore_index)
    bad = valid & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        hint = "" if ignore_index is not None else " (pass ignore_index for void labels)"
        raise ValueError(f"target has class id {int(target[bad][0])} outside [0, {num_classes}){hint}")
    radius = boundary_tolerance_pixels(tolerance, target.shape[1], target.shape[2])
    counts = torch.zeros(num_classes, 5, dtype=torch.int64)
    for c in range(num_classes):
        in_pred, in_target = (pred == c) & valid, (target == c) & valid
        present = int((in_pred | in_target).sum())
        if present == 0:
            continue
        bp, bt = _boundaries(in_pred, valid), _boundaries(in_target, valid)
        pred_matched = int((bp & _dilate(bt, radius)).sum())
        target_matched = int((bt & _dilate(bp, radius)).sum())
        counts[c] = torch.tensor([pred_matched, int(bp.sum()), target_matched, int(bt.sum()), present])
    return counts


@dataclass(frozen=True)
class BoundaryScores:
    """Boundary F-score (contour accuracy ``F`` of DAVIS, Perazzi et al., CVPR 2016, Sec. 3.1).

    Attributes:
        boundary_f: mean of ``per_class_f`` over the classes present (``nan`` if none).
        per_class_f: ``C`` entries, ``None`` for classes absent from target and prediction.
        per_class_precision, per_class_recall: ``C`` entries (``None`` likewise).
    """

    boundary_f: float
    per_class_f: list[Optional[float]]
    per_class_precision: list[Optional[float]]
    per_class_recall: list[Optional[float]]

    @staticmethod
    def from_counts(counts: Tensor, ignore_index: Optional[int] = None) -> "BoundaryScores":
        """Scores from (possibly summed over views) :func:`boundary_counts` ``[C, 5]``.

        Per class present: ``precision = pred_matched / pred_boundary`` and ``recall =
        target_matched / target_boundary``, each 1 when its boundary is empty (DAVIS's
        convention), ``F = 2 P R / (P + R)`` (0 when ``P + R == 0``). So a class with no boundary in
        either map (it fills every valid pixel of both) scores 1, and one with a boundary in only
        one of them scores 0. A class id equal to ``ignore_index`` is reported as ``None``.
        """
        if isinstance(counts, np.ndarray):
            counts = torch.from_numpy(counts)
        if not isinstance(counts, Tensor) or counts.ndim != 2 or counts.shape[1] != 5 or counts.shape[0] < 1:
            shape = tuple(counts.shape) if isinstance(counts, (Tensor, np.ndarray)) else type(counts).__name__
            raise ValueError(f"counts must be [C, 5] from boundary_counts, got {shape}")
        if counts.is_floating_point() or counts.dtype == torch.bool or bool((counts < 0).any()):
            raise ValueError("counts must hold non-negative integer counts")
        fs: list[Optional[float]] = []
        ps: list[Optional[float]] = []
        rs: list[Optional[float]] = []
        for c, (pm, pb, tm, tb, present) in enumerate(counts.long().tolist()):
            if present == 0 or (ignore_index is not None and c == int(ignore_index)):
                fs.append(None), ps.append(None), rs.append(None)
                continue
            p = pm / pb if pb > 0 else 1.0
            r = tm / tb if tb > 0 else 1.0
            ps.append(p), rs.append(r)
            fs.append(2 * p * r / (p + r) if p + r > 0 else 0.0)
        return BoundaryScores(_mean(fs), fs, ps, rs)

    def as_dict(self) -> dict:
        """Plain-Python dict (JSON-ready)."""
        return {
            "boundary_f": self.boundary_f,
            "per_class_f": list(self.per_class_f),
            "per_class_precision": list(self.per_class_precision),
            "per_class_recall": list(self.per_class_recall),
        }


def boundary_f_score(
    pred: ArrayLike,
    target: ArrayLike,
    num_classes: int,
    ignore_index: Optional[int] = None,
    tolerance: float = DAVIS_BOUNDARY_TOLERANCE,
) -> BoundaryScores:
    """Boundary F-score of multi-label maps, averaged over the classes present.

    The contour accuracy ``F`` of DAVIS (Perazzi et al., "A Benchmark Dataset and Evaluation
    Methodology for Video Object Segmentation", CVPR 2016, Sec. 3.1), which follows Martin et
    al. (PAMI 2004): the F-measure of boundary precision and recall, a boundary pixel counting as
    matched when the other map has a boundary pixel within the tolerance. Here per class:

    * the boundary of class ``c`` is the set of its pixels with a 4-neighbour of another class
      (image border and void neighbours excluded; thin, inner boundary);
    * the tolerance is a disk of ``ceil(0.008 * diagonal)`` pixels by default (DAVIS's
      ``bound_th``) or a whole number of pixels (``tolerance >= 1``);
    * per-class scores as in :meth:`BoundaryScores.from_counts`; ``boundary_f`` is their mean over
      the classes present in the target or the prediction (the classes ``miou`` averages over);
      ``-1`` (unknown) predictions belong to no class; ``ignore_index`` target pixels are void.

    Views of a ``[V, H, W]`` stack (or :func:`boundary_counts` summed over calls) are pooled per
    class before the ratios, as the confusion matrix is for mIoU.

    Example (a 4x4 square and the same square two pixels to the right, 1 px tolerance; per class
    8 of 12 and 8 of 16 boundary pixels match):
        >>> t = torch.zeros(10, 10, dtype=torch.long); t[2:6, 2:6] = 1
        >>> p = torch.zeros(10, 10, dtype=torch.long); p[2:6, 4:8] = 1
        >>> s = boundary_f_score(p, t, 2, tolerance=1)
        >>> s.per_class_f, round(s.boundary_f, 4), boundary_f_score(t, t, 2).boundary_f
        ([0.5, 0.6666666666666666], 0.5833, 1.0)
    """
    counts = boundary_counts(pred, target, num_classes, ignore_index=ignore_index, tolerance=tolerance)
    return BoundaryScores.from_counts(counts, ignore_index=ignore_index)
