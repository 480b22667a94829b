"""Score dense language features against ground-truth label maps (mIoU, mAcc, boundary F, localization).

The same function scores the 2D teacher on a view (its own dense features) and a 3D field
(its render at the view's camera), so the benchmark rows are directly comparable:

- segmentation: per pixel, the argmax over the scene's label texts (no unknown threshold);
  confusion matrices are accumulated over all views, then mIoU / mAcc (classes absent from both
  prediction and ground truth are left out of the means).
- boundary accuracy: DAVIS's boundary F-score of the same argmax map
  (:func:`~langfield.eval.semantic_metrics.boundary_f_score`; tolerance ``ceil(0.008 x
  diagonal)`` px by default, 1 px at 64x64), its per-class counts pooled over the views.
- localization (LERF / LangSplat protocol): for every non-background label present in a view
  (at least ``min_object_pixels`` pixels), the LERF relevancy map of its text against the
  canonical negatives; a hit when the most relevant pixel lies inside that label's mask.
- localization with distractors (``distractor_embeddings`` given): a present label scores when
  its most relevant pixel lies inside its mask *and* that relevancy reaches ``loc_threshold``
  (0.5: the query beats its closest canonical negative there); every label absent from the view
  and every distractor query (objects that are not in the scene) scores when its relevancy stays
  below ``loc_threshold`` everywhere. ``loc_balanced_acc`` is the mean of the two rates, so
  answering "here" (or "nowhere") to everything scores 0.5, not 1.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import torch
from torch import Tensor

from langfield.data.dataset import ImageSet
from langfield.eval.semantic_metrics import (
    DAVIS_BOUNDARY_TOLERANCE,
    BoundaryScores,
    SemanticScores,
    boundary_counts,
    boundary_tolerance_pixels,
    confusion_matrix,
    localization_accuracy,
    localization_hit,
)
from langfield.language.queries import relevancy, segment

__all__ = ["evaluate_semantics"]


def evaluate_semantics(
    features_of_view: Callable[[int], Tensor],
    split: ImageSet,
    label_embeddings: Tensor,
    negative_embeddings: Tensor,
    background_label: Optional[int] = 0,
    min_object_pixels: int = 16,
    views: Optional[Sequence[int]] = None,
    boundary_tolerance: float = DAVIS_BOUNDARY_TOLERANCE,
    distractor_embeddings: Optional[Tensor] = None,
    loc_threshold: float = 0.5,
) -> Dict[str, float]:
    """Score ``features_of_view(i) -> [H, W, E]`` on the views of ``split``.

    Args:
        features_of_view: dense features of view ``i`` (teacher output or field render).
        split: the views, with ``semantics [V, H, W]`` ground truth.
        label_embeddings: ``[L, E]`` text embeddings of the dataset's label names (id order).
        negative_embeddings: ``[Nn, E]`` canonical negatives for relevancy.
        background_label: label id never used as a localization query (``None``: all labels).
        min_object_pixels: labels with fewer pixels in a view are not queried there.
        views: which views (default: all).
        boundary_tolerance: boundary-F match radius (``>= 1``: pixels; ``< 1``: fraction of the
            diagonal, DAVIS's 0.008 by default).
        distractor_embeddings: ``[D, E]`` queries for objects that are not in the scene; when
            given, the thresholded localization with distractors is scored too.
        loc_threshold: relevancy a present object must reach (and an absent one must not).

    Returns:
        ``{"miou", "macc", "pixel_acc", "boundary_f", "boundary_tolerance_px", "loc_acc",
        "num_queries", "per_class_iou", "per_class_boundary_f"}``, plus with distractors
        ``{"loc_present_acc", "loc_reject_acc", "loc_balanced_acc", "num_rejections"}``.
    """
    if split.semantics is None:
        raise ValueError("this split has no ground-truth label maps ('semantic_path' in transforms.json)")
    num_labels = int(label_embeddings.shape[0])
    views = list(range(len(split))) if views is None else list(views)
    cm = torch.zeros(num_labels, num_labels, dtype=torch.int64)
    bcounts = torch.zeros(num_labels, 5, dtype=torch.int64)
    hits, strict_hits, rejections = [], [], []
    for v in views:
        feats = features_of_view(v).float()
        gt = split.semantics[v].long()
        if feats.shape[:2] != gt.shape:
            raise ValueError(f"view {v}: features are {tuple(feats.shape[:2])} but the label map is {tuple(gt.shape)}")
        seg = segment(feats, label_embeddings)
        cm += confusion_matrix(seg.labels, gt, num_labels)
        bcounts += boundary_counts(seg.labels, gt, num_labels, tolerance=boundary_tolerance)
        for lab in gt.unique().tolist():
            if lab == background_label or int((gt == lab).sum()) < min_object_pixels:
                continue
            rel = relevancy(feats, label_embeddings[lab], negative_embeddings)
            hits.append(localization_hit(rel, gt == lab))
            strict_hits.append(hits[-1] and float(rel.max()) >= loc_threshold)
        if distractor_embeddings is not None:
            present = set(gt.unique().tolist())
            absent = [label_embeddings[i] for i in range(num_labels) if i not in present and i != background_label]
            for query in absent + list(distractor_embeddings):
                rejections.append(float(relevancy(feats, query, negative_embeddings).max()) < loc_threshold)
    scores = SemanticScores.from_confusion(cm)
    boundary = BoundaryScores.from_counts(bcounts)
    extra = {}
    if distractor_embeddings is not None:
        present_acc = localization_accuracy(strict_hits) if strict_hits else float("nan")
        reject_acc = localization_accuracy(rejections) if rejections else float("nan")
        extra = {"loc_present_acc": present_acc, "loc_reject_acc": reject_acc,
                 "loc_balanced_acc": 0.5 * (present_acc + reject_acc), "num_rejections": len(rejections)}  # fmt: skip
    return {
        **extra,
        "miou": float(scores.miou),
        "macc": float(scores.macc),
        "pixel_acc": float(scores.pixel_acc),
        "boundary_f": float(boundary.boundary_f),
        "boundary_tolerance_px": boundary_tolerance_pixels(boundary_tolerance, split.height, split.width),
        "loc_acc": localization_accuracy(hits) if hits else float("nan"),
        "num_queries": len(hits),
        "per_class_iou": [None if x is None else float(x) for x in scores.per_class_iou],
        "per_class_boundary_f": list(boundary.per_class_f),
    }
