"""edge_f1 (tolerant edge matching) against its slow twin and hand-computed cases; depth_abs_rel."""

from __future__ import annotations

import pytest
import torch

from langfield._checks import InputError
from langfield.eval.condition_metrics import depth_abs_rel, edge_f1, edge_f1_reference


def _line(col: int, size: int = 6) -> torch.Tensor:
    x = torch.zeros(size, size, dtype=torch.bool)
    x[:, col] = True
    return x


def test_shifted_edge_matches_within_tolerance_only():
    t, p = _line(2), _line(3)
    assert edge_f1(p, t, tolerance=1).f1 == 1.0
    assert edge_f1(p, t, tolerance=0).f1 == 0.0
    far = _line(5)
    assert edge_f1(far, t, tolerance=2).f1 == 0.0  # 3 px away
    assert edge_f1(far, t, tolerance=3).f1 == 1.0


def test_hand_computed_precision_recall():
    t = _line(1)  # 6 target pixels
    p = torch.zeros(6, 6, dtype=torch.bool)
    p[:3, 1] = True  # 3 correct
    p[0, 5] = True  # 1 wrong
    s = edge_f1(p, t, tolerance=0)
    assert (s.precision, s.recall) == (0.75, 0.5)
    assert s.f1 == pytest.approx(2 * 0.75 * 0.5 / 1.25)
    assert (s.num_pred, s.num_target) == (4, 6)


def test_empty_maps_follow_the_stated_convention():
    z = torch.zeros(4, 4, dtype=torch.bool)
    assert edge_f1(z, z).f1 == 1.0  # nothing to find, nothing found
    assert edge_f1(z, _line(1, 4)).f1 == 0.0  # recall 0
    assert edge_f1(_line(1, 4), z).f1 == 0.0  # precision 0


@pytest.mark.parametrize("tolerance", [0, 1, 2])
def test_fast_path_equals_the_slow_twin_on_random_maps(tolerance):
    gen = torch.Generator().manual_seed(tolerance)
    p = torch.rand(3, 9, 11, generator=gen) < 0.15
    t = torch.rand(3, 9, 11, generator=gen) < 0.15
    fast, slow = edge_f1(p, t, tolerance=tolerance), edge_f1_reference(p, t, tolerance=tolerance)
    assert fast == slow
    assert 0.0 < fast.f1 < 1.0


def test_batch_counts_are_summed():
    a, b = _line(2), _line(4)
    s = edge_f1(torch.stack([a, a]), torch.stack([a, b]), tolerance=0)
    assert (s.precision, s.recall) == (0.5, 0.5)


def test_bad_edge_inputs_name_the_argument():
    with pytest.raises(InputError, match="pred and target"):
        edge_f1(torch.zeros(4, 4, dtype=torch.bool), torch.zeros(4, 5, dtype=torch.bool))
    with pytest.raises(InputError, match="target.*threshold"):
        edge_f1(torch.zeros(4, 4), torch.full((4, 4), 0.5))
    with pytest.raises(InputError, match="tolerance"):
        edge_f1(torch.zeros(4, 4), torch.zeros(4, 4), tolerance=-1)


def test_depth_abs_rel_known_value_and_mask():
    pred = torch.tensor([[1.0, 3.0, 5.0], [2.0, 2.0, 2.0]])
    target = torch.tensor([[2.0, 3.0, 0.0], [1.0, 4.0, 2.0]])
    # valid: 2->1 (0.5), 3->3 (0), 1->2 (1.0), 4->2 (0.5), 2->2 (0): mean 0.4
    assert depth_abs_rel(pred, target) == pytest.approx(0.4)
    mask = torch.tensor([[True, True, True], [False, False, False]])
    assert depth_abs_rel(pred, target, mask) == pytest.approx(0.25)
    with pytest.raises(InputError, match="no pixel"):
        depth_abs_rel(pred, torch.zeros_like(target))
    with pytest.raises(InputError, match="pred and target"):
        depth_abs_rel(pred, target[:, :2])
