"""DefaultStrategy (3DGS Sec. 5.2): the clone / split / prune / reset schedule on a hand-made
``info``, screen-space statistics, resizing of its state, and bad input."""

from __future__ import annotations

import io
import math

import pytest
import torch

from langfield.methods.gaussians.strategy.default import DefaultStrategy
from langfield.methods.gaussians.strategy.ops import remove

from .strategy_helpers import (
    adam_step,
    assert_consistent,
    logit,
    make_params,
    row_ids,
    row_ids_of_moments,
    tag_moments,
)


def _default_scene(seed=0):
    """6 Gaussians: 0 small+high grad (clone), 1 large+high grad (split), 2 transparent (prune),
    3 high grad in one view only (mean below threshold), 4 high grad but never visible, 5 huge."""
    params, optimizers = make_params(6, seed=seed, extra=False)
    params["scales"].data[1] = math.log(0.05)  # > grow_scale3d, < prune_scale3d
    params["scales"].data[5] = math.log(0.5)  # > prune_scale3d
    params["opacities"].data[2] = logit(0.001)
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
