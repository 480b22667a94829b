import math

import pytest
import torch

from langfield.ops.encoding import (
    integrated_positional_encoding,
    integrated_positional_encoding_dim,
    positional_encoding,
    positional_encoding_dim,
)


def test_positional_encoding_known_values():
    x = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    out = positional_encoding(x, num_freqs=2)
    # [x, sin(1 x), sin(2 x), cos(1 x), cos(2 x)], frequency-major, no pi
    expected = torch.tensor([[
        0.5, -1.0,
        math.sin(0.5), math.sin(-1.0), math.sin(1.0), math.sin(-2.0),
        math.cos(0.5), math.cos(-1.0), math.cos(1.0), math.cos(-2.0),
    ]], dtype=torch.float64)
    torch.testing.assert_close(out, expected)
    shifted = positional_encoding(x, num_freqs=1, min_freq_exp=-1, include_input=False)
    torch.testing.assert_close(shifted, torch.tensor([[math.sin(0.25), math.sin(-0.5), math.cos(0.25), math.cos(-0.5)]], dtype=torch.float64))
    # num_freqs = 0 with the input is the identity
    torch.testing.assert_close(positional_encoding(x, 0), x)


def test_dims():
    x = torch.rand(4, 7, 3)
    for num_freqs, include in [(0, True), (4, True), (10, False)]:
        out = positional_encoding(x, num_freqs, include_input=include)
        assert out.shape == (4, 7, positional_encoding_dim(3, num_freqs, include))
    assert positional_encoding_dim(3, 10) == 63  # NeRF's position encoding width
    assert positional_encoding_dim(3, 4) == 27  # NeRF's view-direction width
    assert integrated_positional_encoding_dim(0, 16) == 96  # Mip-NeRF's width
    out = integrated_positional_encoding(torch.rand(2, 5, 3), torch.rand(2, 5, 3), 0, 16)
    assert out.shape == (2, 5, 96)
    assert integrated_positional_encoding(torch.rand(6, 2), torch.rand(6, 2), -2, 3).shape == (6, integrated_positional_encoding_dim(-2, 3, 2))


def test_ipe_known_value_and_damping():
    mu = torch.tensor([[0.3, -0.7, 1.1]], dtype=torch.float64)
    var = torch.tensor([[0.01, 0.2, 0.05]], dtype=torch.float64)
    out = integrated_positional_encoding(mu, var, 0, 2)
    # degree 1 (frequency 2) of the second coordinate: E[sin(2x)] = sin(2 mu) exp(-4 var / 2)
    assert math.isclose(float(out[0, 4]), math.sin(-1.4) * math.exp(-0.4), rel_tol=1e-12)
    assert math.isclose(float(out[0, 6 + 4]), math.cos(-1.4) * math.exp(-0.4), rel_tol=1e-12)
    # Monte-Carlo: it is the expectation of the plain encoding under N(mu, var)
    g = torch.Generator().manual_seed(0)
    samples = mu + var.sqrt() * torch.randn(200_000, 3, generator=g, dtype=torch.float64)
    mc = positional_encoding(samples, 2, include_input=False).mean(0, keepdim=True)
    torch.testing.assert_close(out, mc, atol=5e-3, rtol=0)
    # high frequencies of a wide Gaussian are suppressed
    wide = integrated_positional_encoding(mu, torch.full_like(var, 1.0), 0, 8)
    assert float(wide[0, 3 * 7 : 3 * 8].abs().max()) < 1e-10


def test_ipe_tends_to_pe_as_covariance_vanishes():
    mu = torch.randn(10, 3, generator=torch.Generator().manual_seed(1))
    pe = positional_encoding(mu, num_freqs=6, min_freq_exp=-1, include_input=False)
    torch.testing.assert_close(integrated_positional_encoding(mu, torch.zeros_like(mu), -1, 5), pe)
    prev = None
    for var in (1e-2, 1e-4, 1e-6):
        err = (integrated_positional_encoding(mu, torch.full_like(mu, var), -1, 5) - pe).abs().max()
        assert prev is None or err < prev
        assert err <= 0.5 * 4.0**4 * var + 1e-6  # 1 - exp(-f^2 var / 2) <= f^2 var / 2, f <= 2^4
        prev = err


def test_gradcheck():
    x = torch.rand(3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: positional_encoding(a, 3), (x,))
    mu = torch.rand(3, 3, dtype=torch.float64, requires_grad=True)
    var = (0.1 * torch.rand(3, 3, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m, v: integrated_positional_encoding(m, v, 0, 3), (mu, var))


def test_bad_input():
    with pytest.raises(ValueError, match="num_freqs"):
        positional_encoding(torch.rand(2, 3), -1)
    with pytest.raises(ValueError, match="num_freqs"):
        positional_encoding(torch.rand(2, 3), 0, include_input=False)
    with pytest.raises(ValueError, match="x"):
        positional_encoding(torch.arange(3), 2)
    with pytest.raises(ValueError, match="cov_diag"):
        integrated_positional_encoding(torch.rand(2, 3), torch.rand(2, 2), 0, 4)
    with pytest.raises(ValueError, match="max_deg"):
        integrated_positional_encoding(torch.rand(2, 3), torch.rand(2, 3), 4, 4)
    with pytest.raises(ValueError, match="max_deg"):
        integrated_positional_encoding_dim(5, 2)
