"""How wide the Gaussian codes must be: a blend test on the teacher's own features (langfield's own rule).

LangSplat (Qin et al. 2024, Sec. 3.3) alpha-composites ``d``-dimensional codes (``d = 3``) and decodes
the composite. That stands in for compositing the features themselves only when the decoder maps a
blend of two codes to the same blend of their features. With many labels a 3-d latent cannot keep
that promise: the autoencoder packs the labels' clusters so tightly that the segment between two
labels' codes crosses a third label's region, and a pixel where two objects' Gaussians mix (a border,
or an object the teacher calls two names from different views) is decoded as that third label. On
the tabletop scene (8 labels, SIMULATED persistent teacher) a 3-d field called thousands of table and
pillow pixels "background"; 8-d codes did not.

The test, on the distillation's own targets (no ground truth, no rendering):

1. every training pixel gets the teacher's top label among the dataset's label names; each label
   given to at least :data:`MIN_LABEL_SHARE` of the pixels gets a centroid (the re-normalised mean of
   its unit features);
2. for every pair of centroids ``(a, b)`` and every weight ``w`` in :data:`BLEND_WEIGHTS`, the *feature
   blend* ``w f_a + (1 - w) f_b`` and the *code blend* ``decode(w z_a + (1 - w) z_b)`` (``z = encode(f)``)
   are both labelled;
3. a blend is **unfaithful** when the code blend's label is neither ``a`` nor ``b`` while the feature
   blend's is ``a`` or ``b`` (feature blends that already read as a third label are the teacher's
   geometry, not the autoencoder's fault).

:func:`choose_width` keeps the narrowest candidate width whose unfaithful share is at most the
tolerance (the paper's 3 when it passes), else the candidate with the smallest share.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from langfield.fields.semantic import FeatureAutoencoder
from langfield.language.ovnerf_rsr import relevancy_logits

__all__ = ["BLEND_WEIGHTS", "MIN_LABEL_SHARE", "label_centroids", "unfaithful_blend_share", "choose_width"]

#: Blend weights ``w`` of the test (nine points strictly between two centroids).
BLEND_WEIGHTS: Tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: A label takes part when the teacher gives it at least this share of the training pixels.
MIN_LABEL_SHARE = 1e-3


@torch.no_grad()
def label_centroids(features: Tensor, text: Tensor, min_share: float = MIN_LABEL_SHARE, chunk: int = 65536) -> Tuple[Tensor, Tensor]:
    """``(labels [K] int64, centroids [K, E] unit)`` of the teacher's pixel labels.

    Args:
        features: ``[P, E]`` teacher features (any float dtype; normalised here).
        text: ``[C, E]`` text embeddings of the label names.
        min_share: labels given to fewer than ``min_share * P`` pixels are left out.
    """
    text = text.float()
    sums = torch.zeros(text.shape[0], text.shape[1], dtype=torch.float64)
    counts = torch.zeros(text.shape[0], dtype=torch.float64)
    for rows in features.split(chunk):
        unit = F.normalize(rows.float(), dim=-1)
        top = relevancy_logits(unit, text).argmax(-1)
        sums.index_add_(0, top, unit.double())
        counts += torch.bincount(top, minlength=text.shape[0]).double()
    keep = torch.nonzero(counts >= max(1.0, min_share * features.shape[0])).reshape(-1)
    return keep, F.normalize((sums[keep] / counts[keep, None]).float(), dim=-1)


@torch.no_grad()
def unfaithful_blend_share(
    autoencoder: FeatureAutoencoder, labels: Tensor, centroids: Tensor, text: Tensor,
    weights: Sequence[float] = BLEND_WEIGHTS,
) -> float:  # fmt: skip
    """Share of (pair, weight) blends the autoencoder decodes as a third label (see the module docstring).

    Args:
        labels, centroids: from :func:`label_centroids` (``K >= 2`` labels, else 0.0 is returned).
        text: ``[C, E]`` the label names' text embeddings (the same as for the centroids).
    """
    k = len(labels)
    if k < 2:
        return 0.0
    text = text.float()
    a, b = torch.triu_indices(k, k, offset=1)
    w = torch.as_tensor(list(weights), dtype=torch.float32)[:, None, None]  # [W, 1, 1]
    pair_labels = torch.stack([labels[a], labels[b]], -1)  # [pairs, 2]

    def third(blends: Tensor) -> Tensor:  # [W, pairs, E] -> [W, pairs] bool
        top = relevancy_logits(blends, text).argmax(-1)
        return (top[..., None] != pair_labels).all(-1)

    codes = autoencoder.encode(centroids.to(autoencoder.center.device)).float().cpu()
    feature_blend = w * centroids[a] + (1 - w) * centroids[b]
    code_blend = w * codes[a] + (1 - w) * codes[b]
    decoded = autoencoder.decode(code_blend.to(autoencoder.center.device)).float().cpu()
    unfaithful = third(decoded) & ~third(feature_blend)
    return float(unfaithful.float().mean())


def choose_width(shares: Dict[int, float], tolerance: float) -> int:
    """The narrowest width whose share is ``<= tolerance``, else the one with the smallest share
    (the narrower on a tie)."""
    if not shares:
        raise ValueError("choose_width: no candidate widths were measured")
    for width in sorted(shares):
        if shares[width] <= tolerance:
            return width
    return min(sorted(shares), key=lambda width: shares[width])
