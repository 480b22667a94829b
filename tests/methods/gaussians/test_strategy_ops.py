"""Densification ops and strategies: row-aligned optimiser state, split statistics, the 3DGS
schedule on a hand-made ``info``, and the MCMC relocation / growth / noise."""

from __future__ import annotations

import io
import math

import pytest
import torch

from langfield.geometry.rotations import normalize_quaternion, quaternion_to_matrix
from langfield.methods.densification import (
    DefaultStrategy,
    MCMCStrategy,
    add_samples,
    check_params_and_optimizers,
    duplicate,
    edit_params,
    inject_position_noise,
    mcmc_regularization,
    relocate,
    relocation_correction,
    remove,
    reset_opacity,
    split,
)

K_SH = 3  # shN rows per Gaussian
F = 4  # feature channels


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def make_params(n: int, seed: int = 0, extra: bool = True):
    """Params with the method's layout; ``features[:, 0]`` holds the row id for tracking."""
    g = torch.Generator().manual_seed(seed)
    data = {
        "means": torch.randn(n, 3, generator=g),
        "scales": torch.full((n, 3), math.log(0.005)),
        "quats": torch.randn(n, 4, generator=g),
        "opacities": torch.full((n,), _logit(0.5)),
        "sh0": torch.randn(n, 1, 3, generator=g),
        "shN": torch.randn(n, K_SH, 3, generator=g),
        "features": torch.cat([torch.arange(n, dtype=torch.float32)[:, None], torch.randn(n, F - 1, generator=g)], 1),
    }
    if extra:
        data["background"] = torch.rand(3, generator=g)  # not per-Gaussian: never edited (unless N == 3)
    params = torch.nn.ParameterDict({k: torch.nn.Parameter(v) for k, v in data.items()})
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    return params, optimizers


def row_ids(params):
    """Original row ids carried in ``features[:, 0]`` (rounded: Adam steps nudge them by ~1e-3)."""
    return params["features"][:, 0].round().long().tolist()


def adam_step(params, optimizers, seed: int = 1):
    """One step with a random loss so every optimiser has exp_avg / exp_avg_sq."""
    g = torch.Generator().manual_seed(seed)
    loss = sum((p * torch.randn(p.shape, generator=g)).sum() for p in params.values())
    loss.backward()
    for opt in optimizers.values():
        opt.step()
        opt.zero_grad(set_to_none=True)


def tag_moments(params, optimizers):
    """exp_avg row i := i + 1000 (+ 0.5 for exp_avg_sq), so rows can be followed through edits."""
    for name, p in params.items():
        if name == "background":
            continue
        st = optimizers[name].state[p]
        rows = torch.arange(p.shape[0], dtype=p.dtype).reshape(-1, *([1] * (p.ndim - 1)))
        st["exp_avg"] = (rows + 1000.0).expand_as(p).clone()
        st["exp_avg_sq"] = (rows + 1000.5).expand_as(p).clone()


def row_ids_of_moments(optimizers, params, name, key="exp_avg"):
    v = optimizers[name].state[params[name]][key]
    first = v.reshape(v.shape[0], -1)[:, 0]
    off = 1000.0 if key == "exp_avg" else 1000.5
    return torch.where(first == 0, torch.full_like(first, -1), first - off)


def assert_consistent(params, optimizers, ref_objects):
    """Same Parameter objects, in the optimisers, moments shaped like their params, and a step works."""
    n = params["means"].shape[0]
    for name, p in params.items():
        assert p is ref_objects[name]
        assert optimizers[name].param_groups[0]["params"][0] is p
        st = optimizers[name].state[p]
        for key in ("exp_avg", "exp_avg_sq"):
            assert st[key].shape == p.shape, (name, key)
        if name != "background":
            assert p.shape[0] == n
    check_params_and_optimizers(params, optimizers)
    before = {k: p.detach().clone() for k, p in params.items()}
    adam_step(params, optimizers, seed=7)
    for k, p in params.items():
        assert p.shape == before[k].shape
        assert not torch.equal(p, before[k])  # the step really updated every parameter


def _setup(n=6):
    params, optimizers = make_params(n)
    adam_step(params, optimizers)
    tag_moments(params, optimizers)
    refs = dict(params.items())
    before = {k: p.detach().clone() for k, p in params.items()}
    steps = {k: optimizers[k].state[p]["step"].clone() for k, p in params.items()}
    return params, optimizers, refs, before, steps


# ----------------------------------------------------------------------------- (a) row alignment


def test_duplicate_keeps_rows_and_moments_aligned():
    params, optimizers, refs, before, steps = _setup(6)
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
    params, optimizers, refs, before, _ = _setup(6)
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
    params, optimizers, refs, before, _ = _setup(6)
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
    params, optimizers, refs, before, _ = _setup(4)
    params["opacities"].data = torch.tensor([_logit(0.5), _logit(0.001), _logit(0.9), _logit(0.005)])
    assert reset_opacity(params, optimizers, value=0.01) == 2
    o = torch.sigmoid(params["opacities"].data)
    torch.testing.assert_close(o, torch.tensor([0.01, 0.001, 0.01, 0.005]), rtol=1e-5, atol=0)
    assert row_ids_of_moments(optimizers, params, "opacities").tolist() == [-1, 1, -1, 3]
    assert row_ids_of_moments(optimizers, params, "means").tolist() == [0, 1, 2, 3]  # other params untouched
    torch.testing.assert_close(params["means"].data, before["means"])
    assert_consistent(params, optimizers, refs)


def test_edit_params_names_and_bad_mask():
    params, optimizers, *_ = _setup(5)
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


# ----------------------------------------------------------------------------- (c) DefaultStrategy


def _default_scene(seed=0):
    """6 Gaussians: 0 small+high grad (clone), 1 large+high grad (split), 2 transparent (prune),
    3 high grad in one view only (mean below threshold), 4 high grad but never visible, 5 huge."""
    params, optimizers = make_params(6, seed=seed, extra=False)
    params["scales"].data[1] = math.log(0.05)  # > grow_scale3d, < prune_scale3d
    params["scales"].data[5] = math.log(0.5)  # > prune_scale3d
    params["opacities"].data[2] = _logit(0.001)
    adam_step(params, optimizers)
    return params, optimizers


def _fake_info(n, grad, radii, width=100, height=50):
    base = torch.zeros(n, 2, requires_grad=True)
    means2d = base * 1.0  # non-leaf, like a rasteriser output
    info = {"means2d": means2d, "radii": radii, "width": width, "height": height}
    return info, lambda: (means2d * grad).sum().backward()


def _run_default(strategy, state, params, optimizers, step, grad, radii):
    info, backward = _fake_info(params["means"].shape[0], grad, radii)
    strategy.step_pre_backward(params, optimizers, state, step, info)
    backward()
    strategy.step_post_backward(params, optimizers, state, step, info)


def _grads_two_views():
    # Raw pixel-space grads; in NDC-like units x is scaled by W/2 = 50 and y by H/2 = 25.
    # Raw values are all below 2e-4, so the threshold only trips after the conversion.
    g1 = torch.zeros(6, 2)
    g1[0] = torch.tensor([1e-5, 0.0])  # 5e-4
    g1[1] = torch.tensor([0.0, 1e-5])  # 2.5e-4
    g1[2] = torch.tensor([1e-7, 0.0])  # low: only pruned (transparent)
    g1[3] = torch.tensor([6e-6, 0.0])  # 3e-4 this view, 0 the next: mean 1.5e-4
    g1[4] = torch.tensor([1e-4, 1e-4])
    g2 = g1.clone()
    g2[3] = 0.0
    return g1, g2


def test_default_strategy_clone_split_prune():
    torch.manual_seed(0)
    params, optimizers = _default_scene()
    refs = dict(params.items())
    before = {k: p.detach().clone() for k, p in params.items()}
    strategy = DefaultStrategy()
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=1.0)
    radii = torch.tensor([3.0, 3.0, 3.0, 3.0, 0.0, 3.0])
    g1, g2 = _grads_two_views()

    _run_default(strategy, state, params, optimizers, 599, g1, radii)  # accumulate only
    assert params["means"].shape[0] == 6
    torch.testing.assert_close(state["count"], torch.tensor([1.0, 1, 1, 1, 0, 1]))
    torch.testing.assert_close(state["grad2d"][:2], torch.tensor([5e-4, 2.5e-4]))
    torch.testing.assert_close(state["max_radii"], radii / 100.0)

    _run_default(strategy, state, params, optimizers, 600, g2, radii)  # refine step
    ids = row_ids(params)
    # originals minus the split parent (0,2,3,4,5), the clone of 0, the 2 children of 1; then 2 pruned
    assert ids == [0, 3, 4, 5, 0, 1, 1]
    assert (state["n_dupli"], state["n_split"], state["n_prune"]) == (1, 1, 1)
    clone_rows = [i for i, r in enumerate(ids) if r == 0]
    child_rows = [i for i, r in enumerate(ids) if r == 1]
    for r in clone_rows:
        torch.testing.assert_close(params["means"].data[r], before["means"][0])
        torch.testing.assert_close(params["scales"].data[r], before["scales"][0])
    for r in child_rows:
        torch.testing.assert_close(params["scales"].data[r], before["scales"][1] - math.log(1.6))
        assert not torch.equal(params["means"].data[r], before["means"][1])
    # huge Gaussian 5 survives before the first reset; accumulators reset and resized
    assert 5 in ids
    for key in ("grad2d", "count", "max_radii"):
        assert state[key].shape == (7,) and not bool(state[key].any())
    # new rows (clone, children) start with zero moments; checkpointable state
    st = optimizers["means"].state[params["means"]]
    for r in clone_rows[1:] + child_rows:
        assert not bool(st["exp_avg"][r].any())
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    assert loaded["n_split"] == 1 and loaded["grad2d"].shape == (7,)
    assert_consistent(params, optimizers, refs)


def test_default_strategy_prunes_big_after_first_reset():
    params, optimizers = _default_scene()
    strategy = DefaultStrategy()
    state = strategy.initialize_state(scene_scale=1.0)
    radii = torch.ones(6)
    zero = torch.zeros(6, 2)
    _run_default(strategy, state, params, optimizers, 3100, zero, radii)
    assert sorted(row_ids(params)) == [0, 1, 3, 4]  # 2 transparent, 5 too big
    # with a larger scene scale Gaussian 5 is no longer too big
    params, optimizers = _default_scene()
    state = strategy.initialize_state(scene_scale=10.0)
    _run_default(strategy, state, params, optimizers, 3100, zero, radii)
    assert sorted(row_ids(params)) == [0, 1, 3, 4, 5]


def test_default_strategy_screen_size_prune_when_enabled():
    radii = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    radii[3] = 20.0  # 20 / 100 = 0.2 > prune_scale2d 0.15
    for stop, expected in ((0, [0, 1, 3, 4, 5]), (5000, [0, 1, 4, 5])):
        params, optimizers = _default_scene()
        strategy = DefaultStrategy(refine_scale2d_stop_iter=stop, grow_scale2d=1.0)
        state = strategy.initialize_state(scene_scale=10.0)
        _run_default(strategy, state, params, optimizers, 3100, torch.zeros(6, 2), radii)
        assert sorted(row_ids(params)) == expected


def test_default_strategy_opacity_reset_and_resize():
    params, optimizers = _default_scene()
    tag_moments(params, optimizers)
    strategy = DefaultStrategy(refine_start_iter=5000)  # reset only, no refinement at 3000
    state = strategy.initialize_state()
    radii = torch.ones(6)
    _run_default(strategy, state, params, optimizers, 2999, torch.zeros(6, 2), radii)
    assert torch.sigmoid(params["opacities"].data).max() > 0.4
    _run_default(strategy, state, params, optimizers, 3000, torch.zeros(6, 2), radii)
    o = torch.sigmoid(params["opacities"].data)
    assert o.max() <= 0.01 + 1e-6 and state["n_reset"] == 5
    torch.testing.assert_close(o[2], torch.tensor(0.001))  # already below the cap: unchanged
    assert row_ids_of_moments(optimizers, params, "opacities").tolist() == [-1, -1, 2, -1, -1, -1]
    assert row_ids_of_moments(optimizers, params, "sh0").tolist() == list(range(6))

    # N changes behind the strategy's back (e.g. resumed from a checkpoint with fewer Gaussians)
    remove(params, optimizers, torch.tensor([True, False, True, False, False, False]))
    radii4 = torch.tensor([1.0, 0.0, 1.0, 1.0])
    _run_default(strategy, state, params, optimizers, 3001, torch.ones(4, 2) * 1e-5, radii4)
    assert state["count"].tolist() == [1.0, 0.0, 1.0, 1.0]
    assert state["grad2d"].shape == (4,)


def test_default_strategy_batched_views_and_errors():
    params, optimizers = _default_scene()
    strategy = DefaultStrategy()
    state = strategy.initialize_state()
    base = torch.zeros(2, 6, 2, requires_grad=True)
    means2d = base * 1.0
    radii = torch.ones(2, 6, 2)  # per-axis radii
    radii[1, 0] = 0.0
    radii[0, 1] = torch.tensor([4.0, 2.0])
    radii[1, 1] = torch.tensor([1.0, 6.0])
    info = {"means2d": means2d, "radii": radii, "width": 100, "height": 50}
    strategy.step_pre_backward(params, optimizers, state, 10, info)
    g = torch.zeros(2, 6, 2)
    g[:, 0, 0] = 1e-5
    (means2d * g).sum().backward()
    strategy.step_post_backward(params, optimizers, state, 10, info)
    assert state["count"].tolist() == [1.0, 2, 2, 2, 2, 2]
    # one visible view of row 0: 1e-5 * W/2 * n_cameras(2)
    torch.testing.assert_close(state["grad2d"][0], torch.tensor(1e-3))
    torch.testing.assert_close(state["max_radii"][:3], torch.tensor([0.01, 0.06, 0.01]))  # max over views/axes

    info2 = {"means2d": torch.zeros(6, 2, requires_grad=True) * 1.0, "radii": torch.ones(6), "width": 8, "height": 8}
    with pytest.raises(ValueError, match="step_pre_backward"):
        strategy.step_post_backward(params, optimizers, state, 11, info2)  # no retained grad


# ----------------------------------------------------------------------------- (d) MCMC


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
    params, optimizers, refs, before, _ = _setup(6)
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
    params, optimizers, refs, before, _ = _setup(5)
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
    params, optimizers, refs, before, _ = _setup(6)
    assert add_samples(params, optimizers, 3, generator=torch.Generator().manual_seed(0)) == 3
    assert params["means"].shape[0] == 9
    src_ids = params["features"][6:, 0].round().long()
    torch.testing.assert_close(params["means"].data[6:], before["means"][src_ids])
    ids = row_ids_of_moments(optimizers, params, "means").tolist()
    assert ids[6:] == [-1, -1, -1]
    assert all(ids[i] == -1 for i in set(src_ids.tolist()))  # sources zeroed
    assert all(ids[i] == i for i in range(6) if i not in set(src_ids.tolist()))
    assert_consistent(params, optimizers, refs)


def test_mcmc_strategy_growth_cap_and_relocation():
    torch.manual_seed(0)
    params, optimizers = make_params(100, extra=False)
    params["opacities"].data[:10] = _logit(0.001)  # dead
    adam_step(params, optimizers)
    refs = dict(params.items())
    strategy = MCMCStrategy(cap_max=110, refine_start_iter=0, refine_every=1, refine_stop_iter=100)
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state()
    sizes = []
    for step in (1, 2, 3, 4):
        strategy.step_post_backward(params, optimizers, state, step, info={})
        sizes.append(params["means"].shape[0])
        assert sizes[-1] <= 110
        if step == 1:
            assert state["n_relocated"] == 10
            assert bool((torch.sigmoid(params["opacities"].data) > 0.005).all())
    assert sizes == [105, 110, 110, 110]  # +5 % per refine, then capped
    assert state["n_added"] == 0
    # after refine_stop_iter: no more refinement
    params["opacities"].data[:3] = _logit(0.001)
    strategy.step_post_backward(params, optimizers, state, 100, info={})
    assert params["means"].shape[0] == 110 and torch.sigmoid(params["opacities"].data[:3]).max() < 0.005
    assert_consistent(params, optimizers, refs)


def test_noise_moves_transparent_gaussians_more():
    n = 400
    params, optimizers = make_params(2 * n, extra=False)
    s = 0.1
    params["scales"].data[:] = math.log(s)
    params["opacities"].data[:n] = _logit(0.001)
    params["opacities"].data[n:] = _logit(0.9)
    before = params["means"].data.clone()
    lr = 1.6e-4
    optimizers["means"].param_groups[0]["lr"] = lr
    MCMCStrategy().step_post_backward(params, optimizers, MCMCStrategy().initialize_state(), 10, info={})
    d = params["means"].data - before
    low, high = d[:n], d[n:]
    assert high.abs().max() < 1e-12
    # isotropic Sigma = s^2 I: per-axis std = s^2 * sigmoid(-100 (0.001 - 0.005)) * noise_lr * lr
    expected_std = s**2 * torch.sigmoid(torch.tensor(0.4)).item() * 5e5 * lr
    assert abs(low.std().item() / expected_std - 1) < 0.1
    # an explicit lr wins over info["lr"], which wins over the optimiser's
    before = params["means"].data.clone()
    MCMCStrategy().step_post_backward(params, optimizers, {}, 10, info={"lr": 1.0}, lr=0.0)
    assert torch.equal(params["means"].data, before)
    MCMCStrategy().step_post_backward(params, optimizers, {}, 10, info={"lr": 0.0})
    assert torch.equal(params["means"].data, before)
    noise = inject_position_noise(params, scale=1e-2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(params["means"].data, before + noise)


def test_mcmc_regularization_value_and_grad():
    params, _ = make_params(5, extra=False)
    params["opacities"].data = torch.logit(torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5]))
    params["scales"].data[:] = math.log(2.0)
    loss = mcmc_regularization(params, opacity_reg=0.01, scale_reg=0.1)
    torch.testing.assert_close(loss, torch.tensor(0.01 * 0.3 + 0.1 * 2.0))
    loss.backward()
    assert params["opacities"].grad is not None and bool((params["opacities"].grad > 0).all())
    assert params["scales"].grad is not None and bool((params["scales"].grad > 0).all())
