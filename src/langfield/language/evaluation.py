"""Score dense language features against ground-truth label maps (mIoU, mAcc, localization).

The same function scores the 2D teacher on a view (its own dense features) and a 3D field
(its render at the view's camera), so the benchmark rows are directly comparable:

- segmentation: per pixel, the argmax over the scene's label texts (no unknown threshold);
  confusion matrices are accumulated over all views, then mIoU / mAcc (classes absent from both
  prediction and ground truth are left out of the means).
- localization (LERF / LangSplat protocol): for every non-background label present in a view
  (at least ``min_object_pixels`` pixels), the LERF relevancy map of its text against the
  canonical negatives; a hit when the most relevant pixel lies inside that label's mask.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import torch
from torch import Tensor

from langfield.data.dataset import ImageSet
from langfield.eval.semantic_metrics import SemanticScores, confusion_matrix, localization_accuracy, localization_hit
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

    Returns:
        ``{"miou", "macc", "pixel_acc", "loc_acc", "num_queries", "per_class_iou"}``.
    """
    if split.semantics is None:
        raise ValueError("this split has no ground-truth label maps ('semantic_path' in transforms.json)")
    num_labels = int(label_embeddings.shape[0])
    views = list(range(len(split))) if views is None else list(views)
    cm = torch.zeros(num_labels, num_labels, dtype=torch.int64)
    hits = []
    for v in views:
        feats = features_of_view(v).float()
        gt = split.semantics[v].long()
        if feats.shape[:2] != gt.shape:
            raise ValueError(f"view {v}: features are {tuple(feats.shape[:2])} but the label map is {tuple(gt.shape)}")
        seg = segment(feats, label_embeddings)
        cm += confusion_matrix(seg.labels, gt, num_labels)
        for lab in gt.unique().tolist():
            if lab == background_label or int((gt == lab).sum()) < min_object_pixels:
                continue
            rel = relevancy(feats, label_embeddings[lab], negative_embeddings)
            hits.append(localization_hit(rel, gt == lab))
    scores = SemanticScores.from_confusion(cm)
    return {
        "miou": float(scores.miou),
        "macc": float(scores.macc),
        "pixel_acc": float(scores.pixel_acc),
        "loc_acc": localization_accuracy(hits) if hits else float("nan"),
        "num_queries": len(hits),
        "per_class_iou": [None if x is None else float(x) for x in scores.per_class_iou],
    }
