"""Occupancy grid and ray marching (Instant-NGP Sec. 5.1)."""

from __future__ import annotations

import math

import pytest
import torch

from langfield.ops.occupancy import OccupancyGrid, OccupancyGridConfig, march_rays, ray_aabb_intersect

AABB = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def test_ray_aabb_intersect_known_values():
    o = torch.tensor([[-3.0, 0.0, 0.0], [0.0, -3.0, 0.5], [0.0, 5.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    t0, t1 = ray_aabb_intersect(o, d, AABB)
    assert torch.allclose(t0[:2], torch.tensor([2.0, 2.0])) and torch.allclose(t1[:2], torch.tensor([4.0, 4.0]))
    assert t0[2] > t1[2] or t1[2] < 0  # the third ray points away from the box


def test_march_without_grid_covers_the_box_uniformly():
    o = torch.tensor([[-3.0, 0.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0]])
    s = march_rays(o, d, torch.zeros(1, 1), torch.full((1, 1), 10.0), None, AABB, step_size=0.1)
    # Intervals tile [2, 4] exactly, in order, without gaps.
    assert torch.allclose(s.t_starts[0], torch.tensor(2.0)) and torch.allclose(s.t_ends[-1], torch.tensor(4.0))
    assert torch.allclose(s.t_starts[1:], s.t_ends[:-1])
    assert abs(float((s.t_ends - s.t_starts).sum()) - 2.0) < 1e-5
    assert len(s) in (20, 21)
    assert torch.all(s.ray_indices == 0)


def test_march_respects_near_far_and_misses():
    o = torch.tensor([[-3.0, 0.0, 0.0], [-3.0, 5.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    s = march_rays(o, d, torch.full((2, 1), 2.5), torch.full((2, 1), 3.0), None, AABB, step_size=0.05)
    assert torch.all(s.ray_indices == 0)  # second ray misses the box
    assert float(s.t_starts.min()) >= 2.5 - 1e-6 and float(s.t_ends.max()) <= 3.0 + 1e-6


def test_grid_update_marks_dense_region_and_marching_skips_empty_space():
    grid = OccupancyGrid(AABB, OccupancyGridConfig(resolution=16, warmup_steps=10))

    def density(p):  # a dense ball of radius 0.3 around (0.5, 0, 0)
        return ((p - torch.tensor([0.5, 0.0, 0.0])).norm(dim=-1) < 0.3).float() * 100.0

    assert grid.update(0, density, step_size=0.01)
    assert not grid.update(1, density, step_size=0.01)  # only every update_every steps
    assert grid.occupied(torch.tensor([[0.5, 0.0, 0.0]])).item()
    assert not grid.occupied(torch.tensor([[-0.5, 0.5, 0.5]])).item()
    assert 0 < grid.occupancy_fraction() < 0.05
    o = torch.tensor([[-3.0, 0.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0]])
    s = march_rays(o, d, torch.zeros(1, 1), torch.full((1, 1), 10.0), grid, AABB, step_size=0.01)
    mids = 0.5 * (s.t_starts + s.t_ends) - 3.0
    assert len(s) > 0 and float(mids.min()) > 0.0 and float(mids.max()) < 1.0  # only samples near the ball


def test_grid_ema_decays_after_density_vanishes():
    cfg = OccupancyGridConfig(resolution=8, warmup_steps=1000, ema_decay=0.5, threshold=0.01)
    grid = OccupancyGrid(AABB, cfg)
    grid.update(0, lambda p: torch.full(p.shape[:1], 10.0), step_size=0.1)
    high = grid.density.clone()
    grid.update(16, lambda p: torch.zeros(p.shape[:1]), step_size=0.1)
    assert torch.allclose(grid.density, high * 0.5)


def test_bad_inputs():
    with pytest.raises(ValueError, match="aabb"):
        OccupancyGrid(torch.tensor([[1.0, 1, 1], [0, 0, 0]]))
    with pytest.raises(ValueError, match="step_size"):
        march_rays(torch.zeros(1, 3), torch.ones(1, 3), torch.zeros(1, 1), torch.ones(1, 1), None, AABB, step_size=0.0)
    with pytest.raises(ValueError, match="origins"):
        march_rays(torch.zeros(3), torch.ones(3), torch.zeros(1, 1), torch.ones(1, 1), None, AABB, step_size=0.1)


# ---------------------------------------------------------------- exponential steps, contraction


def test_cone_steps_grow_with_distance_and_tile_the_ray():
    o, d = torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 0.0]])
    step, cone, max_step = 0.01, 1.0 / 64, 0.5
    s = march_rays(o, d, torch.full((1, 1), 0.05), torch.full((1, 1), 100.0), None, AABB, step_size=step,
                   cone_angle=cone, max_step_size=max_step, max_samples_per_ray=10_000, contraction="linf")
    assert float(s.t_starts[0]) == pytest.approx(0.05) and float(s.t_ends[-1]) == pytest.approx(100.0)
    assert torch.allclose(s.t_starts[1:], s.t_ends[:-1])  # no gaps, no overlaps
    dt = (s.t_ends - s.t_starts)[1:-1]  # the first (jittered) and the last (clipped) are partial
    expected = (cone * s.t_starts[1:-1]).clamp(step, max_step)
    # Every step is NGP's clamp(cone * t, min, max) except at the two kinks, where u(t) blends.
    close = (dt - expected).abs() <= 1e-3 * expected
    assert int((~close).sum()) <= 2
    # (at the first kink u(t) has a slope jump of c / 2: one step there is up to 1% short)
    assert float(dt.min()) == pytest.approx(step, rel=1e-2) and float(dt.max()) == pytest.approx(max_step, rel=1e-3)
    # Count: 0.05 -> 0.64 at 0.01, x(1 + 1/64) from 0.64 to 32, then 0.5 steps to 100.
    count = (0.64 - 0.05) / step + math.log(32 / 0.64) / math.log1p(cone) + (100 - 32) / max_step
    assert abs(len(s) - count) <= 2


def test_contracted_marching_is_not_clipped_to_the_box_and_uses_the_contracted_grid():
    o, d = torch.zeros(1, 3), torch.tensor([[0.0, 1.0, 0.0]])
    near, far = torch.full((1, 1), 0.05), torch.full((1, 1), 1000.0)
    bounded = march_rays(o, d, near, far, None, AABB, step_size=0.01, cone_angle=1 / 256)
    assert float(bounded.t_ends.max()) == pytest.approx(1.0)  # stops at the box
    unbounded = march_rays(o, d, near, far, None, AABB, step_size=0.01, cone_angle=1 / 256, max_samples_per_ray=4096,
                           contraction="l2")
    assert float(unbounded.t_ends.max()) == pytest.approx(1000.0)
    # A grid over contracted space [-2, 2]^3 with only the shell 1.75 <= y < 2 marked (world radius >= 4) along +y.
    grid = OccupancyGrid(torch.tensor([[-2.0] * 3, [2.0] * 3]), OccupancyGridConfig(resolution=16))
    grid.binary.view(16, 16, 16)[:] = False
    grid.binary.view(16, 16, 16)[7:9, 15, 7:9] = True  # y index 15: contracted y in [1.75, 2)
    s = march_rays(o, d, near, far, grid, AABB, step_size=0.01, cone_angle=1 / 256, max_samples_per_ray=4096,
                   contraction="l2")
    mids = 0.5 * (s.t_starts + s.t_ends)
    assert len(s) > 100 and float(mids.min()) > 3.9 and float(mids.max()) <= 1000.0


def test_cone_marching_with_a_box_matches_the_constant_path_when_the_cone_is_tiny():
    o = torch.tensor([[-3.0, 0.1, 0.2], [-3.0, 0.3, -0.2]])
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    near, far = torch.zeros(2, 1), torch.full((2, 1), 10.0)
    a = march_rays(o, d, near, far, None, AABB, step_size=0.05)
    b = march_rays(o, d, near, far, None, AABB, step_size=0.05, cone_angle=1e-4)  # c * t < step everywhere
    assert torch.equal(a.ray_indices, b.ray_indices)
    assert torch.allclose(a.t_starts, b.t_starts, atol=1e-5) and torch.allclose(a.t_ends, b.t_ends, atol=1e-5)


def test_cpu_cone_marching_in_ray_groups_matches_one_pass(monkeypatch):
    import langfield.ops.occupancy as occupancy

    g = torch.Generator().manual_seed(0)
    o = torch.randn(37, 3, generator=g) * 0.3
    d = torch.nn.functional.normalize(torch.randn(37, 3, generator=g), dim=-1)
    near, far = torch.full((37, 1), 0.05), torch.full((37, 1), 50.0)
    near[5] = 60.0  # a ray with nothing to march
    grid = OccupancyGrid(torch.tensor([[-2.0] * 3, [2.0] * 3]), OccupancyGridConfig(resolution=16))
    grid.binary.copy_(torch.rand(grid.binary.shape, generator=g) < 0.3)
    args = (o, d, near, far, grid, AABB, 0.02)
    kw = dict(cone_angle=1 / 64, contraction="linf", max_samples_per_ray=512)
    one = march_rays(*args, **kw)
    monkeypatch.setattr(occupancy, "_CPU_CANDIDATES_PER_GROUP", 512 * 4)  # groups of 4 rays
    grouped = march_rays(*args, **kw)
    assert len(one) > 100
    for a, b in ((one.t_starts, grouped.t_starts), (one.t_ends, grouped.t_ends), (one.ray_indices, grouped.ray_indices)):
        assert torch.equal(a, b)
    assert 5 not in one.ray_indices.tolist()
