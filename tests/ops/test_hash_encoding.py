"""Multiresolution hash encoding (Müller et al. 2022, Sec. 3): every backend against the reference twin."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from langfield.kernels import hash_encoding_cpu
from langfield.ops.hash_encoding import (
    HashGridConfig,
    HashGridEncoding,
    available_backends,
    hash_encode,
)
from langfield.ops.reference.hash_encoding import hash_encode as hash_encode_reference

FAST_BACKENDS = ["torch", "cpp"]
# dense levels (res 2, 3) and hashed levels (res 6, 12) with a small table
MIXED = HashGridConfig(num_levels=4, features_per_level=2, log2_hashmap_size=6, base_resolution=2, max_resolution=16)
TINY = HashGridConfig(num_levels=2, features_per_level=2, log2_hashmap_size=4, base_resolution=2, max_resolution=4)


def _skip_unavailable(backend: str) -> None:
    if backend == "cpp" and not hash_encoding_cpu.cpp_available():
        pytest.skip("C++ hash-encoding kernel unavailable (LANGFIELD_NO_CPP or build failure)")


def _random_table(config: HashGridConfig, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(config.num_rows, config.features_per_level, generator=gen, dtype=dtype)


def _points_with_edges(n: int, dtype=torch.float64, seed: int = 1) -> torch.Tensor:
    """Random points in [-0.1, 1.1]^3 plus exact 0 / 1 coordinates and grid vertices."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=gen, dtype=dtype) * 1.2 - 0.1
    edges = torch.tensor(
        [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.5, 0.0], [0.5, 0.25, 1.0], [0.75, 1.0, 0.125]], dtype=dtype
    )
    return torch.cat([x, edges])


# ------------------------------------------------------------------ config


def test_default_config_layout():
    config = HashGridConfig()
    res = config.resolutions()
    assert len(res) == 16 and res[0] == 16 and res[-1] == 2048
    assert all(a <= b for a, b in zip(res, res[1:]))
    assert config.per_level_scale == pytest.approx(math.exp(math.log(2048 / 16) / 15))
    # (N + 1)^3 <= 2^19 exactly for N <= 79: the levels 16, 22, 30, 42, 58 are dense
    assert config.dense_levels() == [True] * 5 + [False] * 11
    assert config.level_sizes()[:5] == [17**3, 23**3, 31**3, 43**3, 59**3]
    assert config.num_rows == 17**3 + 23**3 + 31**3 + 43**3 + 59**3 + 11 * 2**19
    assert config.level_offsets()[0] == 0 and config.level_offsets()[-1] == config.num_rows
    assert config.output_dim == 32


def test_dense_vs_hashed_level_selection():
    # T = 64: resolution 3 has 4^3 = 64 vertices (fits -> dense), resolution 4 has 125 (-> hashed)
    config = HashGridConfig(num_levels=2, features_per_level=1, log2_hashmap_size=6, base_resolution=3, max_resolution=4)
    assert config.resolutions() == [3, 4]
    assert config.dense_levels() == [True, False]
    assert config.level_sizes() == [64, 64]

    # A dense level maps its 64 vertices one-to-one onto its 64 rows.
    table = torch.zeros(config.num_rows, 1, dtype=torch.float64)
    table[:64, 0] = torch.arange(64, dtype=torch.float64)
    g = torch.arange(4, dtype=torch.float64) / 3
    vertices = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    for backend in ["reference", *FAST_BACKENDS]:
        _skip_unavailable(backend)
        rows = hash_encode(vertices, table, config, backend=backend)[:, 0]
        assert sorted(rows.round().long().tolist()) == list(range(64)), backend
        # dense index i + 4 j + 16 k
        expected = (vertices * 3).round() @ torch.tensor([1.0, 4.0, 16.0], dtype=torch.float64)
        torch.testing.assert_close(rows, expected)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_levels": 0}, "num_levels"),
        ({"features_per_level": -1}, "features_per_level"),
        ({"log2_hashmap_size": 31}, "log2_hashmap_size"),
        ({"base_resolution": 64, "max_resolution": 32}, "max_resolution"),
        ({"num_levels": 2.0}, "num_levels"),
    ],
)
def test_bad_config(kwargs, name):
    with pytest.raises(ValueError, match=name):
        HashGridConfig(**kwargs)


# ------------------------------------------------------------------ known values


@pytest.mark.parametrize("backend", ["reference", *FAST_BACKENDS])
def test_dense_level_reproduces_linear_function(backend):
    """One dense level of resolution 1 with row r holding r: trilinear blend of i + 2j + 4k = x + 2y + 4z."""
    _skip_unavailable(backend)
    config = HashGridConfig(num_levels=1, features_per_level=1, log2_hashmap_size=4, base_resolution=1, max_resolution=1)
    table = torch.arange(8, dtype=torch.float64)[:, None]
    x = torch.rand(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    out = hash_encode(x, table, config, backend=backend)
    torch.testing.assert_close(out[:, 0], x @ torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))


@pytest.mark.parametrize("backend", ["reference", *FAST_BACKENDS])
def test_hashed_vertex_hits_ngp_hash_row(backend):
    """At a grid vertex the encoding is exactly the row (i xor j*2654435761 xor k*805459861) mod T (NGP eq. 4)."""
    _skip_unavailable(backend)
    config = HashGridConfig(num_levels=1, features_per_level=1, log2_hashmap_size=5, base_resolution=8, max_resolution=8)
    assert config.dense_levels() == [False]
    table = torch.arange(32, dtype=torch.float64)[:, None]
    ijk = torch.tensor([[0, 0, 0], [1, 0, 0], [3, 5, 7], [8, 8, 8], [2, 7, 1]])
    out = hash_encode(ijk.double() / 8, table, config, backend=backend)[:, 0]
    expected = [(i ^ (j * 2654435761 % 2**32) ^ (k * 805459861 % 2**32)) % 32 for i, j, k in ijk.tolist()]
    assert out.tolist() == [float(e) for e in expected]


# ------------------------------------------------------------------ parity with the reference


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("config", [MIXED, HashGridConfig(num_levels=3, features_per_level=3, log2_hashmap_size=8,
                                                          base_resolution=3, max_resolution=40)])
def test_parity_values_and_gradients(backend, dtype, config):  # dtype: the conftest fixture
    _skip_unavailable(backend)
    x = _points_with_edges(600, dtype)
    table = _random_table(config, dtype)
    grad_out = torch.randn(x.shape[0], config.output_dim, dtype=dtype, generator=torch.Generator().manual_seed(5))

    results = {}
    for name in ("reference", backend):
        xs = x.clone().requires_grad_(True)
        ts = table.clone().requires_grad_(True)
        out = hash_encode(xs, ts, config, backend=name)
        grad_x, grad_table = torch.autograd.grad(out, (xs, ts), grad_out)
        results[name] = (out, grad_table, grad_x)

    # grad_x sums R_l-scaled differences of corner features over the levels, so its float32
    # round-off grows with the resolution: looser tolerance there.
    f32 = dtype == torch.float32
    tols = [1e-5, 1e-5, 1e-4] if f32 else [1e-10, 1e-10, 1e-9]
    for got, want, tol in zip(results[backend], results["reference"], tols):
        assert got.dtype == dtype
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    # the input gradient is non-trivial inside the cube and zero outside
    grad_x = results[backend][2]
    outside = (x < 0) | (x > 1)
    assert torch.all(grad_x[outside] == 0)
    assert grad_x[~outside].abs().max() > 0.1


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_parity_table_gradient_only(backend):
    """Backward with x not requiring grad (the training case) matches too."""
    _skip_unavailable(backend)
    gen = torch.Generator().manual_seed(6)
    x = torch.rand(300, 3, generator=gen)
    table = _random_table(MIXED, torch.float32)
    grad_out = torch.randn(300, MIXED.output_dim, generator=gen)
    grads = []
    for name in ("reference", backend):
        t = table.clone().requires_grad_(True)
        (hash_encode(x, t, MIXED, backend=name) * grad_out).sum().backward()
        grads.append(t.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_hash_collisions_match_reference(backend):
    """A 16-row table at resolution 16 collides heavily; every backend must collide the same way."""
    _skip_unavailable(backend)
    config = HashGridConfig(num_levels=2, features_per_level=1, log2_hashmap_size=4, base_resolution=8, max_resolution=16)
    assert config.dense_levels() == [False, False]
    # 17^3 vertices share 16 rows: rows = arange shows which row each vertex reads
    table = torch.arange(config.num_rows, dtype=torch.float64)[:, None]
    g = torch.arange(17, dtype=torch.float64) / 16
    vertices = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    rows = hash_encode(vertices, table, config, backend="reference")[:, 1]
    assert len(set(rows.tolist())) == 16  # all rows used, i.e. many collisions

    x = _points_with_edges(500)
    t_ref = table.clone().requires_grad_(True)
    t_fast = table.clone().requires_grad_(True)
    grad_out = torch.randn(x.shape[0], config.output_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    out_ref = hash_encode(x, t_ref, config, backend="reference")
    out_fast = hash_encode(x, t_fast, config, backend=backend)
    torch.testing.assert_close(out_fast, out_ref)
    torch.testing.assert_close(hash_encode(vertices, table, config, backend=backend)[:, 1], rows)
    (g_ref,) = torch.autograd.grad(out_ref, t_ref, grad_out)
    (g_fast,) = torch.autograd.grad(out_fast, t_fast, grad_out)
    torch.testing.assert_close(g_fast, g_ref)


@pytest.mark.parametrize("backend", ["reference", *FAST_BACKENDS])
def test_table_updated_between_forward_and_backward(backend):
    """Only x and the corner rows/weights are saved when x needs no gradient, so an in-place
    optimiser step between forward and backward is allowed and does not change the gradient."""
    _skip_unavailable(backend)
    x = _points_with_edges(100, torch.float32)
    table = _random_table(MIXED, torch.float32).requires_grad_(True)
    grad_out = torch.randn(x.shape[0], MIXED.output_dim, generator=torch.Generator().manual_seed(9))
    (expected,) = torch.autograd.grad(hash_encode(x, table, MIXED, backend=backend), table, grad_out)
    out = hash_encode(x, table, MIXED, backend=backend)
    with torch.no_grad():
        table.mul_(3.0).add_(1.0)
    (got,) = torch.autograd.grad(out, table, grad_out)
    torch.testing.assert_close(got, expected)


# ------------------------------------------------------------------ gradcheck


def _interior_points(config: HashGridConfig, n: int) -> torch.Tensor:
    """Points at least 0.05 cells from every cell face in every level (finite differences stay in the cell)."""
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(20 * n, 3, generator=gen, dtype=torch.float64)
    keep = torch.ones(x.shape[0], dtype=torch.bool)
    for r in config.resolutions():
        frac = x * r - torch.floor(x * r)
        keep &= ((frac > 0.05) & (frac < 0.95)).all(-1)
    return x[keep][:n]


@pytest.mark.parametrize("backend", ["reference", *FAST_BACKENDS])
def test_gradcheck(backend):
    _skip_unavailable(backend)
    x = _interior_points(TINY, 6).requires_grad_(True)
    table = _random_table(TINY).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: hash_encode(a, b, TINY, backend=backend), (x, table))


# ------------------------------------------------------------------ boundaries and bad input


@pytest.mark.parametrize("backend", ["reference", *FAST_BACKENDS])
def test_upper_boundary_and_clamping(backend):
    _skip_unavailable(backend)
    config = MIXED
    table = _random_table(config)
    res = config.resolutions()
    offsets = config.level_offsets()
    x = torch.tensor([[1.0, 1.0, 1.0], [1.5, 2.0, 1.0 + 1e-9], [0.0, 0.0, 0.0], [-3.0, -1e-9, 0.0]], dtype=torch.float64)
    out = hash_encode(x, table, config, backend=backend).view(4, config.num_levels, config.features_per_level)
    torch.testing.assert_close(out[0], out[1])  # clamped to the corner (1, 1, 1)
    torch.testing.assert_close(out[2], out[3])  # clamped to the origin
    for level, (r, dense) in enumerate(zip(res, config.dense_levels())):
        # x = 1 reads exactly vertex (R, R, R) of the level (weight 1), the origin vertex row 0
        row = r + r * (r + 1) + r * (r + 1) ** 2 if dense else (r ^ (r * 2654435761 % 2**32) ^ (r * 805459861 % 2**32)) % 64
        torch.testing.assert_close(out[0, level], table[offsets[level] + row])
        torch.testing.assert_close(out[2, level], table[offsets[level]])


@pytest.mark.parametrize("backend", ["reference", *FAST_BACKENDS])
def test_bad_inputs_rejected(backend):
    _skip_unavailable(backend)
    table = _random_table(MIXED, torch.float32)
    with pytest.raises(ValueError, match="x"):
        hash_encode(torch.rand(10, 2), table, MIXED, backend=backend)
    with pytest.raises(ValueError, match="x"):
        hash_encode(torch.rand(10), table, MIXED, backend=backend)
    with pytest.raises(ValueError, match="x"):
        hash_encode(torch.randint(0, 2, (10, 3)), table, MIXED, backend=backend)
    with pytest.raises(ValueError, match="embeddings"):
        hash_encode(torch.rand(10, 3, dtype=torch.float64), table, MIXED, backend=backend)
    with pytest.raises(ValueError, match="embeddings"):
        hash_encode(torch.rand(10, 3), table[:-1], MIXED, backend=backend)
    with pytest.raises(ValueError, match="backend"):
        hash_encode(torch.rand(10, 3), table, MIXED, backend="cuda")
    with pytest.raises(ValueError, match="config"):
        hash_encode(torch.rand(10, 3), table, {"num_levels": 4}, backend=backend)


def test_reference_rejects_bad_inputs_directly():
    table = _random_table(MIXED, torch.float32)
    with pytest.raises(ValueError, match="x"):
        hash_encode_reference(torch.rand(10, 4), table, MIXED)
    with pytest.raises(ValueError, match="embeddings"):
        hash_encode_reference(torch.rand(10, 3), table[:-1], MIXED)


def test_empty_input():
    table = _random_table(MIXED, torch.float32).requires_grad_(True)
    out = hash_encode(torch.zeros(0, 3), table, MIXED)
    assert out.shape == (0, MIXED.output_dim)


# ------------------------------------------------------------------ module and backend selection


def test_module_init_shapes_and_state():
    config = HashGridConfig(num_levels=4, log2_hashmap_size=10, base_resolution=4, max_resolution=32)
    enc = HashGridEncoding(config)
    assert enc.backend in ("cpp", "torch")
    assert isinstance(enc.embeddings, torch.nn.Parameter)
    assert enc.embeddings.shape == (config.num_rows, 2)
    assert enc.embeddings.abs().max() <= 1e-4 and enc.embeddings.abs().max() > 0
    assert enc.resolutions.tolist() == config.resolutions()
    assert enc.level_offsets.tolist() == config.level_offsets()
    assert list(enc.state_dict()) == ["embeddings"]
    x = torch.rand(64, 3)
    out = enc(x)
    assert out.shape == (64, config.output_dim) and enc.output_dim == config.output_dim
    torch.testing.assert_close(out, hash_encode_reference(x, enc.embeddings, config), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="backend"):
        HashGridEncoding(config, backend="triton")


def test_env_var_disables_cpp(monkeypatch):
    monkeypatch.setenv("LANGFIELD_NO_CPP", "1")
    assert "cpp" not in available_backends()
    assert HashGridEncoding(TINY).backend == "torch"
    with pytest.raises(ValueError, match="backend"):
        HashGridEncoding(TINY, backend="cpp")
    with pytest.raises(ValueError, match="backend"):
        hash_encode(torch.rand(4, 3), _random_table(TINY, torch.float32), TINY, backend="cpp")


def test_build_failure_falls_back_to_torch(monkeypatch, caplog):
    def broken_build(verbose):
        raise RuntimeError("simulated compiler failure")

    monkeypatch.delenv("LANGFIELD_NO_CPP", raising=False)
    from langfield.kernels.jit import JitKernel

    kernel = JitKernel("langfield_hashgrid", hash_encoding_cpu.KERNEL.source, [], "C++ hash-encoding kernel")
    monkeypatch.setattr(kernel, "build_and_load", broken_build)
    monkeypatch.setattr(hash_encoding_cpu, "KERNEL", kernel)
    with caplog.at_level(logging.WARNING, logger="langfield.kernels.jit"):
        assert not hash_encoding_cpu.cpp_available()
        assert not hash_encoding_cpu.cpp_available()  # remembered: one warning only
    assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1
    x = torch.rand(20, 3, dtype=torch.float64)
    table = _random_table(TINY)
    torch.testing.assert_close(hash_encode(x, table, TINY), hash_encode_reference(x, table, TINY))
