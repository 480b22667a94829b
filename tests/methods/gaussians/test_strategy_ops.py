"""Densification ops: row-aligned optimiser state (clone, remove, split, opacity reset, row
edits), split statistics, and the MCMC relocation / sample addition with their Eq. 9 correction."""

from __future__ import annotations

import math

import pytest
import torch

from langfield.geometry.rotations import normalize_quaternion, quaternion_to_matrix
from langfield.methods.gaussians.strategy.ops import (
    add_samples,
    duplicate,
    edit_params,
    relocate,
    relocation_correction,
    remove,
    reset_opacity,
    split,
)

from .strategy_helpers import (
    assert_consistent,
    logit,
    make_params,
    row_ids,
    row_ids_of_moments,
    setup_tagged,
)


# ----------------------------------------------------------------------------- (a) row alignment


def test_duplicate_keeps_rows_and_moments_aligned():
    params, optimizers, refs, before, steps = setup_tagged(6)
    mask = torch.tensor([False, True, False, False, True, False])
    aux = {"acc": torch.arange(6.0), "scene_scale": 2.0}
    sum(p.sum() for p in params.values()).backward()  # stale grads of the old shape ...
    assert duplicate(params, optimizers, mask, state=aux) == 2
    assert all(p.grad is None for k, p in params.items() if k != "background")  # ... are dropped
    sel = [1, 4]
    assert params["means"].shape[0] == 8
    for name, p in params.items():
        if name == "background":
            torch.testing.assert_close(p.data, before[name])  # not per-row: untouched
            continue
        torch.testing.assert_close(p.data[:6], before[name])
        torch.testing.assert_close(p.data[6:], before[name][sel])
        for key in ("exp_avg", "exp_avg_sq"):
            ids = row_ids_of_moments(optimizers, params, name, key)
            assert ids.tolist() == [0, 1, 2, 3, 4, 5, -1, -1]  # new rows start with zero moments
        assert torch.equal(optimizers[name].state[p]["step"], steps[name])  # scalar step untouched
        assert p.grad is None
    assert aux["acc"].tolist() == [0, 1, 2, 3, 4, 5, 1, 4] and aux["scene_scale"] == 2.0
    assert_consistent(params, optimizers, refs)


def test_remove_keeps_rows_and_moments_aligned():
    params, optimizers, refs, before, _ = setup_tagged(6)
    mask = torch.tensor([True, False, False, True, False, True])
    aux = {"acc": torch.arange(6.0)}
    assert remove(params, optimizers, mask, state=aux) == 3
    keep = [1, 2, 4]
    for name, p in params.items():
        if name == "background":
            continue
        torch.testing.assert_close(p.data, before[name][keep])
        for key in ("exp_avg", "exp_avg_sq"):
            assert row_ids_of_moments(optimizers, params, name, key).tolist() == keep
    assert aux["acc"].tolist() == keep
    assert_consistent(params, optimizers, refs)


def test_split_keeps_rows_and_moments_aligned():
    params, optimizers, refs, before, _ = setup_tagged(6)
    mask = torch.tensor([False, False, True, False, False, True])
    assert split(params, optimizers, mask) == 2
    rest, sel = [0, 1, 3, 4], [2, 5]
    assert params["means"].shape[0] == 4 + 2 * 2
    assert row_ids(params) == [0, 1, 3, 4, 2, 5, 2, 5]  # parents gone, children appended
    for name, p in params.items():
        if name == "background":
            continue
        torch.testing.assert_close(p.data[:4], before[name][rest])
        if name not in ("means", "scales"):
            torch.testing.assert_close(p.data[4:], before[name][sel].repeat(2, *([1] * (p.ndim - 1))))
        for key in ("exp_avg", "exp_avg_sq"):
            assert row_ids_of_moments(optimizers, params, name, key).tolist() == rest + [-1] * 4
    assert_consistent(params, optimizers, refs)


def test_reset_opacity_caps_and_zeroes_only_reset_rows():
    params, optimizers, refs, before, _ = setup_tagged(4)
    params["opacities"].data = torch.tensor([logit(0.5), logit(0.001), logit(0.9), logit(0.005)])
    assert reset_opacity(params, optimizers, value=0.01) == 2
    o = torch.sigmoid(params["opacities"].data)
    torch.testing.assert_close(o, torch.tensor([0.01, 0.001, 0.01, 0.005]), rtol=1e-5, atol=0)
    assert row_ids_of_moments(optimizers, params, "opacities").tolist() == [-1, 1, -1, 3]
    assert row_ids_of_moments(optimizers, params, "means").tolist() == [0, 1, 2, 3]  # other params untouched
    torch.testing.assert_close(params["means"].data, before["means"])
    assert_consistent(params, optimizers, refs)


def test_edit_params_names_and_bad_mask():
    params, optimizers, *_ = setup_tagged(5)
    edit_params(params, optimizers, lambda n, p: p * 2, lambda k, v: v * 0, names=["sh0"])
    assert row_ids_of_moments(optimizers, params, "sh0").tolist() == [-1] * 5
    assert row_ids_of_moments(optimizers, params, "shN").tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="mask"):
        remove(params, optimizers, torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        duplicate(params, optimizers, torch.zeros(5, dtype=torch.long))


# ----------------------------------------------------------------------------- (b) split children


def test_split_children_distribution():
    torch.manual_seed(0)
    m = 3000
    params, optimizers = make_params(m + 1, extra=False)
    mean = torch.tensor([1.0, -2.0, 0.5])
    s = torch.tensor([0.3, 0.1, 0.05])
    q = normalize_quaternion(torch.tensor([0.9, 0.3, -0.2, 0.25]))
    params["means"].data[:] = mean
    params["scales"].data[:] = s.log()
    params["quats"].data[:] = q * 3.0  # raw, not unit: must be normalised on use
    mask = torch.ones(m + 1, dtype=torch.bool)
    mask[0] = False  # one bystander
    split(params, optimizers, mask, generator=torch.Generator().manual_seed(3))

    assert params["means"].shape[0] == 1 + 2 * m
    ids = params["features"][:, 0].round()
    assert ids[0] == 0 and not bool((ids[1:] == 0).any())  # bystander first, parents removed
    assert torch.bincount(ids[1:].long(), minlength=m + 1)[1:].eq(2).all()  # 2 children each
    torch.testing.assert_close(params["scales"].data[1:], (s.log() - math.log(1.6)).expand(2 * m, 3))
    d = params["means"].data[1:] - mean
    R = quaternion_to_matrix(q)
    cov = R @ torch.diag(s**2) @ R.T  # parent's covariance (before shrinking)
    assert d.mean(0).abs().max() < 4 * 0.3 / math.sqrt(2 * m)
    sample_cov = d.T @ d / (2 * m)
    torch.testing.assert_close(sample_cov, cov, atol=0.06 * cov.abs().max(), rtol=0)


# ----------------------------------------------------------------------------- (c) MCMC ops


def _double_sum_denominator(o_new: float, n: int) -> float:
    return sum(
        math.comb(i - 1, k) * (-1) ** k * o_new ** (k + 1) / math.sqrt(k + 1)
        for i in range(1, n + 1)
        for k in range(i)
    )


def test_relocation_correction_matches_eq9():
    o = torch.tensor([0.3, 0.6, 0.95, 0.05, 0.7, 0.5, 0.999], dtype=torch.float64)
    counts = torch.tensor([1, 2, 2, 3, 5, 8, 30])
    scales = torch.rand(7, 3, dtype=torch.float64) + 0.1
    new_o, new_s = relocation_correction(o, scales, counts)
    torch.testing.assert_close(new_o[0], o[0])  # N = 1: nothing changes
    torch.testing.assert_close(new_s[0], scales[0])
    torch.testing.assert_close(new_o[1:3], 1 - torch.sqrt(1 - o[1:3]))  # N = 2
    for i in range(7):
        n = int(counts[i])
        on = 1 - (1 - float(o[i])) ** (1 / n)
        assert abs(float(new_o[i]) - on) < 1e-12
        coeff = float(o[i]) / _double_sum_denominator(on, n)
        torch.testing.assert_close(new_s[i], scales[i] * coeff, rtol=1e-9, atol=0)
    # large N stays finite, positive and below the original (many copies shrink)
    big_o, big_s = relocation_correction(torch.tensor([0.9]), torch.ones(1, 3), torch.tensor([5000]))
    assert 0 < float(big_o) < 1e-3 and bool(torch.isfinite(big_s).all()) and 0 < float(big_s[0, 0]) < 1


def test_relocate_moves_dead_onto_live_with_eq9():
    params, optimizers, refs, before, _ = setup_tagged(6)
    o = torch.tensor([0.001, 0.6, 0.002, 0.003, 0.004, 0.001])  # only row 1 is alive
    params["opacities"].data = torch.logit(o)
    assert relocate(params, optimizers, o <= 0.005, generator=torch.Generator().manual_seed(0)) == 5
    # one live source -> 6 identical Gaussians (the source and 5 copies, N = 6 in Eq. 9)
    assert row_ids(params) == [1] * 6
    for name in ("means", "quats", "sh0", "shN", "features"):
        torch.testing.assert_close(params[name].data, before[name][1].expand_as(params[name]))
    exp_o, exp_s = relocation_correction(torch.tensor([0.6]), before["scales"][1].exp()[None], torch.tensor([6]))
    torch.testing.assert_close(torch.sigmoid(params["opacities"].data), exp_o.expand(6))
    torch.testing.assert_close(params["scales"].data.exp(), exp_s.expand(6, 3))
    for name in params:
        if name != "background":
            assert row_ids_of_moments(optimizers, params, name).tolist() == [-1] * 6
    assert_consistent(params, optimizers, refs)


def test_relocate_single_copy_is_eq9_with_n2_and_leaves_others():
    params, optimizers, refs, before, _ = setup_tagged(5)
    # Row 0 is dead; rows 2-4 are alive but carry ~zero sampling weight, so the source is row 1.
    o = torch.tensor([0.001, 0.7, 1e-12, 1e-12, 1e-12], dtype=torch.float64)
    params["opacities"].data = torch.logit(o).float()
    dead = torch.tensor([True, False, False, False, False])
    assert relocate(params, optimizers, dead, generator=torch.Generator().manual_seed(0)) == 1
    new_o = torch.sigmoid(params["opacities"].data)
    expected = 1 - math.sqrt(1 - 0.7)  # Eq. 9 with N = 2
    torch.testing.assert_close(new_o[:2], torch.tensor([expected, expected]))
    assert row_ids(params) == [1, 1, 2, 3, 4]
    ids = row_ids_of_moments(optimizers, params, "means").tolist()
    assert ids == [-1, -1, 2, 3, 4]  # copy and source zeroed; others untouched
    torch.testing.assert_close(params["means"].data[2:], before["means"][2:])
    assert_consistent(params, optimizers, refs)


def test_relocation_samples_proportionally_to_opacity():
    n_dead = 4000
    params, optimizers = make_params(n_dead + 2, extra=False)
    o = torch.full((n_dead + 2,), 0.001)
    o[0], o[1] = 0.2, 0.6
    params["opacities"].data = torch.logit(o)
    relocate(params, optimizers, o <= 0.005, generator=torch.Generator().manual_seed(1))
    ids = params["features"][:, 0].round()
    frac1 = float((ids == 1).float().mean())
    assert abs(frac1 - 0.75) < 0.03  # 0.6 / (0.2 + 0.6)


def test_add_samples_appends_with_zero_moments():
    params, optimizers, refs, before, _ = setup_tagged(6)
    assert add_samples(params, optimizers, 3, generator=torch.Generator().manual_seed(0)) == 3
    assert params["means"].shape[0] == 9
    src_ids = params["features"][6:, 0].round().long()
    torch.testing.assert_close(params["means"].data[6:], before["means"][src_ids])
    ids = row_ids_of_moments(optimizers, params, "means").tolist()
    assert ids[6:] == [-1, -1, -1]
    assert all(ids[i] == -1 for i in set(src_ids.tolist()))  # sources zeroed
    assert all(ids[i] == i for i in range(6) if i not in set(src_ids.tolist()))
    assert_consistent(params, optimizers, refs)
