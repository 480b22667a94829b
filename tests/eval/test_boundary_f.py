"""Boundary F-score (DAVIS contour accuracy) on hand-made label maps with hand-counted matches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from langfield.eval.semantic_metrics import (
    BoundaryScores,
    boundary_counts,
    boundary_f_score,
    boundary_tolerance_pixels,
)


def _square(rows: slice, cols: slice, size: int = 10) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.long)
    m[rows, cols] = 1
    return m


def test_identical_maps_score_one_and_disjoint_objects_zero():
    t = _square(slice(2, 6), slice(2, 6))
    assert boundary_f_score(t, t, 2).boundary_f == 1.0
    far = torch.zeros(20, 20, dtype=torch.long)
    far[2:6, 2:6] = 1
    other = torch.zeros(20, 20, dtype=torch.long)
    other[12:16, 12:16] = 1
    s = boundary_f_score(other, far, 2, tolerance=2)
    assert s.per_class_f == [0.0, 0.0] and s.boundary_f == 0.0


def test_shifted_square_has_the_hand_counted_precision_and_recall():
    # A 4x4 square moved two columns right; 1 px tolerance. Object ring: 12 px each, 8 matched
    # (the columns within 1 px of the other ring's columns and both shared rows). Background ring
    # (outside the square): 16 px each, 8 matched.
    t, p = _square(slice(2, 6), slice(2, 6)), _square(slice(2, 6), slice(4, 8))
    counts = boundary_counts(p, t, 2, tolerance=1)
    assert counts.tolist() == [[8, 16, 8, 16, 92], [8, 12, 8, 12, 24]]
    s = BoundaryScores.from_counts(counts)
    assert s.per_class_precision == [0.5, 8 / 12] and s.per_class_recall == [0.5, 8 / 12]
    assert s.boundary_f == pytest.approx((0.5 + 2 / 3) / 2, abs=1e-12)
    # A one-column shift is within 1 px everywhere; a 2 px tolerance also forgives two columns.
    assert boundary_f_score(_square(slice(2, 6), slice(3, 7)), t, 2, tolerance=1).boundary_f == 1.0
    assert boundary_f_score(p, t, 2, tolerance=2).boundary_f == 1.0
    # Predicting only part of the ring: precision stays 1, recall drops.
    half = _square(slice(2, 6), slice(2, 4))
    s = boundary_f_score(half, t, 2, tolerance=1)
    assert s.per_class_precision[1] == 1.0 and s.per_class_recall[1] < 1.0


def test_views_pool_their_counts_and_classes_absent_from_both_are_left_out():
    t, p = _square(slice(2, 6), slice(2, 6)), _square(slice(2, 6), slice(4, 8))
    stacked = boundary_counts(torch.stack([p, t]), torch.stack([t, t]), 3, tolerance=1)
    assert torch.equal(stacked, boundary_counts(p, t, 3, tolerance=1) + boundary_counts(t, t, 3, tolerance=1))
    s = BoundaryScores.from_counts(stacked)
    assert s.per_class_f[2] is None and s.boundary_f == pytest.approx(np.mean(s.per_class_f[:2]))
    # A class filling the whole image has no boundary in either map: F = 1 (DAVIS's convention).
    full = torch.zeros(6, 6, dtype=torch.long)
    assert boundary_f_score(full, full, 1).boundary_f == 1.0


def test_unknown_predictions_and_void_pixels():
    t = _square(slice(2, 6), slice(2, 6))
    # Unknown (-1) is no class: the background ring next to it vanishes from the prediction.
    p = t.clone()
    p[t == 0] = -1
    s = boundary_f_score(p, t, 2, tolerance=1)
    assert s.per_class_f[1] == 1.0 and s.per_class_f[0] == 0.0
    # Void target pixels (255) are never boundaries: an object edge that lies on void is not scored.
    tv = t.clone()
    tv[:, :3] = 255
    pv = t.clone()
    pv[:, :3] = 0  # whatever is predicted under the void does not matter
    assert boundary_f_score(pv, tv, 2, ignore_index=255, tolerance=1).boundary_f == 1.0


def test_tolerance_rule_and_bad_input():
    assert boundary_tolerance_pixels(0.008, 64, 64) == 1 and boundary_tolerance_pixels(0.008, 200, 200) == 3
    assert boundary_tolerance_pixels(3, 10, 10) == 3
    t = _square(slice(2, 6), slice(2, 6))
    for bad in (0, -1, float("nan"), 1.5, True):
        with pytest.raises(ValueError, match="tolerance"):
            boundary_f_score(t, t, 2, tolerance=bad)
    with pytest.raises(ValueError, match="same shape"):
        boundary_counts(t, t[:5], 2)
    with pytest.raises(ValueError, match="outside"):
        boundary_counts(t, t + 5, 2)
    with pytest.raises(ValueError, match="integer"):
        boundary_counts(t.float(), t, 2)
    with pytest.raises(ValueError, match=r"\[C, 5\]"):
        BoundaryScores.from_counts(torch.zeros(2, 4, dtype=torch.long))
