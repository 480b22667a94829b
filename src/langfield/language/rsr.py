"""Mask pooling (``rsr_mode="mask-pool"``): clean one view's dense language features with mask proposals.

langfield's own, label-free variant of OV-NeRF's Region Semantic Ranking (the paper's RSR, over a
closed label set, is :mod:`langfield.language.ovnerf_rsr`; the names ``RSRConfig`` and
``region_semantic_ranking`` here are kept for older code). OV-NeRF (Liao et al. 2024, arXiv:2402.04648, Sec. III-B) observes that CLIP's dense features are
noisy inside objects and blurred across their borders, while SAM's mask proposals follow object
boundaries. RSR uses the masks to *rectify* each training view's features before the semantic
field is fitted:

1. For every mask, the pixels' features vote for a region feature: the normalised mean, re-estimated
   after trimming the ``trim_fraction`` of pixels least similar to it (outlier pixels, e.g. the
   blurred rim that belongs to a neighbour).
2. Each mask gets a *consistency score*: the mean cosine similarity of its kept pixels to the region
   feature. Masks are **ranked** by it (ties broken by area, larger first).
3. In rank order, each mask paints its region feature onto the pixels no better-ranked mask has
   claimed (SAM masks overlap; the most coherent claim wins). Masks whose consistency is below
   ``min_consistency`` are **dropped** as outlier regions: their pixels keep the raw features.

OV-NeRF ranks regions by the relevancy of the label texts inside each mask (a closed label set).
This implementation ranks by the label-free consistency of the features themselves, so it works
with an open vocabulary and before any query is known; the effect on the training targets is the
same: region-level features with sharp, mask-aligned borders, noisy regions left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["RSRConfig", "RegionTargets", "region_semantic_ranking"]


@dataclass(frozen=True)
class RSRConfig:
    """Region Semantic Ranking settings.

    Attributes:
        trim_fraction: share of each mask's pixels (least similar to the first region estimate)
            left out of the region feature.
        min_consistency: masks whose mean cosine similarity to their region feature falls below
            this are dropped (their pixels keep the raw features).
        min_area: masks with fewer pixels are ignored.
        blend: ``1`` replaces a claimed pixel's feature by the region feature; ``b < 1`` keeps
            ``1 - b`` of the raw feature (then renormalises).
    """

    trim_fraction: float = 0.2
    min_consistency: float = 0.5
    min_area: int = 4
    blend: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.trim_fraction < 1.0:
            raise ValueError(f"RSRConfig.trim_fraction must be in [0, 1), got {self.trim_fraction}")
        if not -1.0 <= self.min_consistency <= 1.0:
            raise ValueError(f"RSRConfig.min_consistency must be in [-1, 1], got {self.min_consistency}")
        if self.min_area < 1:
            raise ValueError(f"RSRConfig.min_area must be >= 1, got {self.min_area}")
        if not 0.0 <= self.blend <= 1.0:
            raise ValueError(f"RSRConfig.blend must be in [0, 1], got {self.blend}")


@dataclass(frozen=True)
class RegionTargets:
    """The rectified features of one view.

    Attributes:
        features: ``[H, W, E]`` unit-norm training targets.
        region_ids: ``[H, W]`` int64 index of the mask whose feature a pixel took, ``-1`` for raw.
        region_features: ``[K, E]`` unit region feature of every mask (zeros for ignored masks).
        consistency: ``[K]`` consistency score of every mask (``-inf`` for ignored masks).
        kept: ``[K]`` bool, masks that were ranked and painted (not dropped or too small).
    """

    features: Tensor
    region_ids: Tensor
    region_features: Tensor
    consistency: Tensor
    kept: Tensor


def _check(features: Tensor, masks: Tensor) -> None:
    if not isinstance(features, Tensor) or features.ndim != 3:
        raise ValueError(f"features must be a [H, W, E] tensor, got {getattr(features, 'shape', type(features))}")
    if not isinstance(masks, Tensor) or masks.ndim != 3 or masks.dtype != torch.bool:
        raise ValueError(f"masks must be a [K, H, W] bool tensor, got {getattr(masks, 'shape', type(masks))}")
    if masks.shape[1:] != features.shape[:2]:
        raise ValueError(f"masks are {tuple(masks.shape[1:])} but features are {tuple(features.shape[:2])} (H, W)")


def region_features_and_consistency(
    features: Tensor, masks: Tensor, trim_fraction: float = 0.2, min_area: int = 1
) -> tuple[Tensor, Tensor]:
    """Trimmed region feature and consistency of every mask.

    Args:
        features: ``[H, W, E]`` (normalised inside).
        masks: ``[K, H, W]`` bool.

    Returns:
        ``(region_features [K, E] unit, consistency [K])``; masks below ``min_area`` get zero
        features and ``-inf`` consistency.
    """
    _check(features, masks)
    h, w, e = features.shape
    x = F.normalize(features.reshape(h * w, e).float(), dim=-1)
    m = masks.reshape(-1, h * w)
    k = m.shape[0]
    areas = m.sum(1)
    mf = m.to(x.dtype)
    region = F.normalize(mf @ x, dim=-1)  # [K, E] first estimate: plain mean
    out_feat = torch.zeros(k, e, dtype=x.dtype, device=x.device)
    out_cons = torch.full((k,), float("-inf"), dtype=x.dtype, device=x.device)
    for i in range(k):
        if int(areas[i]) < min_area:
            continue
        idx = m[i].nonzero(as_tuple=True)[0]
        px = x[idx]
        cos = px @ region[i]
        drop = int(trim_fraction * len(idx))
        if drop > 0 and len(idx) - drop >= 1:
            keep = torch.topk(cos, len(idx) - drop).indices
            px = px[keep]
        r = F.normalize(px.mean(0), dim=-1)
        out_feat[i] = r
        out_cons[i] = (px @ r).mean()
    return out_feat, out_cons


def region_semantic_ranking(features: Tensor, masks: Tensor, config: RSRConfig = RSRConfig()) -> RegionTargets:
    """Rectify one view's dense features with its mask proposals (see module docstring).

    Args:
        features: ``[H, W, E]`` dense teacher features of the view.
        masks: ``[K, H, W]`` bool mask proposals (may overlap; ``K = 0`` returns the raw features).
        config: :class:`RSRConfig`.

    Returns:
        :class:`RegionTargets`.
    """
    _check(features, masks)
    h, w, e = features.shape
    raw = F.normalize(features.float(), dim=-1)
    region, consistency = region_features_and_consistency(raw, masks, config.trim_fraction, config.min_area)
    kept = consistency >= config.min_consistency
    areas = masks.reshape(masks.shape[0], -1).sum(1)
    # Rank: consistency descending, area descending as the tie-break (stable sorts, last key first).
    order = torch.argsort(areas, descending=True, stable=True)
    order = order[torch.argsort(consistency[order], descending=True, stable=True)]
    region_ids = torch.full((h, w), -1, dtype=torch.int64, device=features.device)
    for i in order.tolist():
        if not bool(kept[i]):
            continue
        free = masks[i] & (region_ids < 0)
        region_ids[free] = i
    claimed = region_ids >= 0
    out = raw.clone()
    if bool(claimed.any()):
        painted = region[region_ids[claimed]]
        if config.blend < 1.0:
            painted = F.normalize(config.blend * painted + (1.0 - config.blend) * raw[claimed], dim=-1)
        out[claimed] = painted
    return RegionTargets(out, region_ids, region, consistency, kept)


def masks_from_label_map(label_map: Tensor, num_labels: Optional[int] = None) -> Tensor:
    """``[H, W]`` int64 region ids (``-1`` = none) -> ``[K, H, W]`` bool masks."""
    k = int(label_map.max()) + 1 if num_labels is None else num_labels
    ids = torch.arange(max(k, 0), device=label_map.device)
    return label_map[None] == ids[:, None, None]
