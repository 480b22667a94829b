"""C++ constant-step ray marcher: the very samples of the torch path of ``march_rays``, bit for bit."""

from __future__ import annotations

import pytest
import torch

from langfield.kernels import march_cpu
from langfield.ops.occupancy import OccupancyGrid, OccupancyGridConfig, march_rays

pytestmark = pytest.mark.skipif(
    not march_cpu.cpp_available(), reason="C++ ray-marching kernel unavailable (LANGFIELD_NO_CPP or build failure)"
)

AABB = torch.tensor([[-1.0, -1.2, -0.8], [1.1, 1.0, 0.9]])


def _grid(resolution: int, fraction: float, seed: int) -> OccupancyGrid:
    grid = OccupancyGrid(AABB, OccupancyGridConfig(resolution=resolution))
    grid.binary.copy_(torch.rand(resolution**3, generator=torch.Generator().manual_seed(seed)) < fraction)
    return grid


def _rays(n: int, seed: int):
    """Rays from outside and inside the box, some missing it, some axis-aligned (zero components)."""
    gen = torch.Generator().manual_seed(seed)
    origins = torch.randn(n, 3, generator=gen) * 2.0
    directions = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
    directions[: n // 10, 1:] = 0.0  # along +-x
    directions[: n // 10, 0] = directions[: n // 10, 0].sign()
    origins[n // 10 : n // 5] *= 0.1  # start inside the box
    near = torch.rand(n, 1, generator=gen) * 0.3
    far = near + 1.0 + torch.rand(n, 1, generator=gen) * 5.0
    return origins, directions, near, far


def _same(a, b) -> None:
    assert a.num_rays == b.num_rays
    assert torch.equal(a.ray_indices, b.ray_indices)
    assert torch.equal(a.t_starts, b.t_starts) and torch.equal(a.t_ends, b.t_ends)


@pytest.mark.parametrize("jitter", [False, True])
@pytest.mark.parametrize("resolution,fraction", [(8, 0.5), (32, 0.3), (64, 0.05)])
def test_kernel_gives_the_torch_samples_bit_for_bit(jitter, resolution, fraction):
    origins, directions, near, far = _rays(3000, seed=resolution)
    grid = _grid(resolution, fraction, seed=resolution + 1)
    for step in (0.011, 0.05):
        kw = dict(jitter=jitter, max_samples_per_ray=200)
        ref = march_rays(origins, directions, near, far, grid, AABB, step, generator=torch.Generator().manual_seed(3),
                         backend="torch", **kw)  # fmt: skip
        got = march_rays(origins, directions, near, far, grid, AABB, step, generator=torch.Generator().manual_seed(3),
                         backend="cpp", **kw)  # fmt: skip
        assert len(ref) > 100
        _same(ref, got)


def test_without_a_grid_and_with_an_empty_or_full_grid():
    origins, directions, near, far = _rays(500, seed=7)
    for grid in (None, _grid(16, 0.0, 0), _grid(16, 1.0, 0)):
        ref = march_rays(origins, directions, near, far, grid, AABB, 0.02, backend="torch")
        got = march_rays(origins, directions, near, far, grid, AABB, 0.02, backend="cpp")
        _same(ref, got)
    assert len(march_rays(origins, directions, near, far, _grid(16, 0.0, 0), AABB, 0.02, backend="cpp")) == 0


def test_thread_count_does_not_change_the_samples():
    origins, directions, near, far = _rays(4000, seed=11)
    grid = _grid(32, 0.4, 12)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = march_rays(origins, directions, near, far, grid, AABB, 0.01, backend="cpp")
        torch.set_num_threads(2)
        two = march_rays(origins, directions, near, far, grid, AABB, 0.01, backend="cpp")
    finally:
        torch.set_num_threads(threads)
    _same(one, two)


def test_auto_takes_the_kernel_only_where_it_applies(monkeypatch):
    origins, directions, near, far = _rays(200, seed=5)
    calls = []
    real = march_cpu.march_constant_cpp
    monkeypatch.setattr(march_cpu, "march_constant_cpp", lambda *a, **k: calls.append(1) or real(*a, **k))
    march_rays(origins, directions, near, far, _grid(8, 0.5, 1), AABB, 0.05)
    assert calls == [1]
    march_rays(origins.double(), directions.double(), near.double(), far.double(), None, AABB.double(), 0.05)  # float64
    march_rays(origins, directions, near, far, None, AABB, 0.05, contraction="l2")  # contracted
    march_rays(origins, directions, near, far, None, AABB, 0.05, cone_angle=0.01)  # exponential steps
    assert calls == [1]


def test_bad_backend_or_a_case_the_kernel_does_not_cover_is_named():
    origins, directions, near, far = _rays(10, seed=1)
    with pytest.raises(ValueError, match="backend"):
        march_rays(origins, directions, near, far, None, AABB, 0.05, backend="cuda")
    with pytest.raises(ValueError, match="backend='cpp'.*contraction"):
        march_rays(origins, directions, near, far, None, AABB, 0.05, backend="cpp", contraction="l2")
    with pytest.raises(ValueError, match="backend='cpp'.*constant steps"):
        march_rays(origins, directions, near, far, None, AABB, 0.05, backend="cpp", cone_angle=0.01)
    ref = march_rays(origins, directions, near, far.double(), None, AABB, 0.05, backend="torch")  # a float64 far bound
    _same(ref, march_rays(origins, directions, near, far.double(), None, AABB, 0.05))  # auto: the torch path, no error
    with pytest.raises(ValueError, match="backend='cpp'.*float32"):
        march_rays(origins.double(), directions.double(), near.double(), far.double(), None, AABB.double(), 0.05,
                   backend="cpp")  # fmt: skip
