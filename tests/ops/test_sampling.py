import math

import pytest
import torch

from langfield.ops.sampling import (
    conical_frustum_to_gaussian,
    mipnerf_blur_weights,
    sample_pdf,
    sample_pdf_edges,
    stratified_bins,
)


def _near_far(num_rays=5):
    near = torch.linspace(0.5, 1.0, num_rays)[:, None]
    far = near + torch.linspace(1.0, 4.0, num_rays)[:, None]
    return near, far


# ----------------------------------------------------------------------------------------------
# stratified_bins
# ----------------------------------------------------------------------------------------------


def test_stratified_bins_deterministic_known_values(device, dtype):
    near = torch.tensor([[2.0]], device=device, dtype=dtype)
    far = torch.tensor([[6.0]], device=device, dtype=dtype)
    edges = stratified_bins(near, far, 4, randomized=False)
    assert edges.dtype == dtype and edges.device.type == device.type
    torch.testing.assert_close(edges, torch.tensor([[2.0, 3.0, 4.0, 5.0, 6.0]], device=device, dtype=dtype))
    disp = stratified_bins(near, far, 2, randomized=False, lindisp=True)
    # evenly spaced in 1/t: 1/2, 1/3, 1/6
    torch.testing.assert_close(disp, torch.tensor([[2.0, 3.0, 6.0]], device=device, dtype=dtype))
    assert torch.equal(stratified_bins(near, far, 4, randomized=False), edges)


@pytest.mark.parametrize("lindisp", [False, True])
def test_stratified_bins_randomized_sorted_in_range(lindisp):
    near, far = _near_far()
    S = 16
    g = torch.Generator().manual_seed(0)
    edges = stratified_bins(near, far, S, randomized=True, lindisp=lindisp, generator=g)
    assert edges.shape == (5, S + 1)
    assert torch.all(edges[:, 1:] >= edges[:, :-1])
    torch.testing.assert_close(edges[:, :1], near)  # ends fixed: bins tile [near, far]
    torch.testing.assert_close(edges[:, -1:], far)
    base = stratified_bins(near, far, S, randomized=False, lindisp=lindisp)
    assert not torch.allclose(edges, base)
    # each interior edge stays within its stratum (half a bin on either side)
    half = 0.5 * (base[:, 2:] - base[:, :-2])
    assert torch.all((edges[:, 1:-1] - base[:, 1:-1]).abs() <= half + 1e-6)
    # reproducible with a seeded generator
    again = stratified_bins(near, far, S, randomized=True, lindisp=lindisp, generator=torch.Generator().manual_seed(0))
    assert torch.equal(edges, again)


def test_stratified_bins_jitter_is_unbiased():
    near, far = torch.zeros(4000, 1), torch.ones(4000, 1)
    edges = stratified_bins(near, far, 4, randomized=True, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(edges.mean(0), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]), atol=0.01, rtol=0)


def test_stratified_bins_bad_input():
    near, far = _near_far()
    with pytest.raises(ValueError, match="num_samples"):
        stratified_bins(near, far, 0, randomized=False)
    with pytest.raises(ValueError, match="near"):
        stratified_bins(near[:, 0], far, 4, randomized=False)
    with pytest.raises(ValueError, match="same shape"):
        stratified_bins(near, far[:3], 4, randomized=False)
    with pytest.raises(ValueError, match="far"):
        stratified_bins(far, near, 4, randomized=False)
    with pytest.raises(ValueError, match="lindisp"):
        stratified_bins(torch.zeros(2, 1), torch.ones(2, 1), 4, randomized=False, lindisp=True)


# ----------------------------------------------------------------------------------------------
# sample_pdf / sample_pdf_edges
# ----------------------------------------------------------------------------------------------


def test_sample_pdf_delta_concentrates():
    bins = torch.linspace(0.0, 8.0, 9).expand(3, 9).contiguous()
    weights = torch.zeros(3, 8)
    weights[0, 5] = 1.0
    weights[1, 0] = 0.3
    weights[2, 7] = 2.0
    for randomized in (False, True):
        t = sample_pdf(bins, weights, 32, randomized, generator=torch.Generator().manual_seed(0))
        assert t.shape == (3, 32)
        assert torch.all((t[0] >= 5.0) & (t[0] <= 6.0))
        assert torch.all((t[1] >= 0.0) & (t[1] <= 1.0))
        assert torch.all((t[2] >= 7.0) & (t[2] <= 8.0))
        assert torch.all(t[:, 1:] >= t[:, :-1])
    # deterministic: bin-centred u, so samples spread evenly over the selected bin
    t = sample_pdf(bins, weights, 4, randomized=False)
    torch.testing.assert_close(t[0], torch.tensor([5.125, 5.375, 5.625, 5.875]))


def test_sample_pdf_matches_piecewise_constant_distribution():
    bins = torch.tensor([[0.0, 1.0, 3.0, 4.0]])
    weights = torch.tensor([[1.0, 2.0, 1.0]])  # masses 1/4, 1/2, 1/4
    t = sample_pdf(bins.expand(2000, 4), weights.expand(2000, 3), 8, randomized=True,
                   generator=torch.Generator().manual_seed(3))
    frac_mid = ((t >= 1.0) & (t < 3.0)).float().mean()
    assert abs(float(frac_mid) - 0.5) < 0.02
    # deterministic quantiles of the CDF: u = 1/8 -> t = 0.5; u = 1/2 -> t = 2.0
    q = sample_pdf(bins, weights, 4, randomized=False)
    torch.testing.assert_close(q, torch.tensor([[0.5, 1.5, 2.5, 3.5]]))


def test_sample_pdf_zero_weights_fall_back_to_uniform_and_no_grad():
    bins = torch.linspace(0.0, 1.0, 5)[None].requires_grad_(True)
    weights = torch.zeros(1, 4, requires_grad=True)
    t = sample_pdf(bins, weights, 4, randomized=False)
    torch.testing.assert_close(t, torch.tensor([[0.125, 0.375, 0.625, 0.875]]))
    assert not t.requires_grad


def test_sample_pdf_edges_equal_mass_and_support():
    bins = torch.linspace(0.0, 8.0, 9)[None]
    weights = torch.zeros(1, 8)
    weights[0, 2] = 1.0
    weights[0, 3] = 1.0
    edges = sample_pdf_edges(bins, weights, 4, randomized=False)
    # support [2, 4] split into 4 equal-mass intervals; the ends hug the support
    torch.testing.assert_close(edges, torch.tensor([[2.0, 2.5, 3.0, 3.5, 4.0]]))
    for seed in range(3):
        e = sample_pdf_edges(bins.expand(6, 9), weights.expand(6, 8), 16, randomized=True,
                             generator=torch.Generator().manual_seed(seed))
        assert e.shape == (6, 17)
        assert torch.all(e[:, 1:] >= e[:, :-1])
        torch.testing.assert_close(e[:, 0], torch.full((6,), 2.0))
        torch.testing.assert_close(e[:, -1], torch.full((6,), 4.0))
        assert torch.all((e >= 2.0) & (e <= 4.0))


def test_sample_pdf_bad_input():
    bins = torch.linspace(0.0, 1.0, 5)[None]
    weights = torch.ones(1, 4)
    with pytest.raises(ValueError, match="num_samples"):
        sample_pdf(bins, weights, 0, False)
    with pytest.raises(ValueError, match="bins"):
        sample_pdf(bins[:, :4], weights, 4, False)
    with pytest.raises(ValueError, match="bins"):
        sample_pdf_edges(torch.zeros(2, 5), weights, 4, False)
    with pytest.raises(ValueError, match="num_samples"):
        sample_pdf_edges(bins, weights, -1, False)
    with pytest.raises(ValueError, match="eps"):
        sample_pdf(bins, weights, 4, False, eps=0.0)


# ----------------------------------------------------------------------------------------------
# mipnerf_blur_weights
# ----------------------------------------------------------------------------------------------


def test_mipnerf_blur_weights_known_values():
    w = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.4]])
    # pad: [0, 0, 1, 0, 0, .4, .4]; max: [0, 1, 1, 0, .4, .4]; avg: [.5, 1, .5, .2, .4]
    torch.testing.assert_close(mipnerf_blur_weights(w, 0.0), torch.tensor([[0.5, 1.0, 0.5, 0.2, 0.4]]))
    torch.testing.assert_close(mipnerf_blur_weights(w), torch.tensor([[0.51, 1.01, 0.51, 0.21, 0.41]]))
    assert mipnerf_blur_weights(torch.rand(3, 7, 9)).shape == (3, 7, 9)
    with pytest.raises(ValueError, match="resample_padding"):
        mipnerf_blur_weights(w, -1.0)
    with pytest.raises(ValueError, match="weights"):
        mipnerf_blur_weights(torch.zeros(2, 0))


# ----------------------------------------------------------------------------------------------
# conical_frustum_to_gaussian
# ----------------------------------------------------------------------------------------------


def _frustum_moments_monte_carlo(t0, t1, radius, num=400_000, seed=0):
    """Sample points uniformly in the frustum of a cone along +z (axis) with radius r*t."""
    g = torch.Generator().manual_seed(seed)
    # volume density along the axis is proportional to t^2: inverse CDF of t^3
    u = torch.rand(num, generator=g, dtype=torch.float64)
    t = (t0**3 + u * (t1**3 - t0**3)) ** (1.0 / 3.0)
    rho = radius * t * torch.sqrt(torch.rand(num, generator=g, dtype=torch.float64))
    phi = 2 * math.pi * torch.rand(num, generator=g, dtype=torch.float64)
    pts = torch.stack([rho * torch.cos(phi), rho * torch.sin(phi), t], dim=-1)
    return pts.mean(0), pts.var(0)


def test_conical_frustum_matches_closed_form_moments():
    # Axis along z, unit direction: the covariance diagonal is (var_r, var_r, var_t). The cone
    # has radius r * t (r at unit distance); a disk of radius rho has per-axis variance rho^2 / 4.
    t0, t1, r = 1.5, 2.5, 0.3
    d = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    means, cov = conical_frustum_to_gaussian(d, torch.tensor([[t0]], dtype=torch.float64),
                                             torch.tensor([[t1]], dtype=torch.float64),
                                             torch.tensor([[r]], dtype=torch.float64))
    assert means.shape == (1, 1, 3) and cov.shape == (1, 1, 3)
    # exact moments of the uniform frustum (Mip-NeRF Eq. 5 / 6, original form)
    mu_t = 3 * (t1**4 - t0**4) / (4 * (t1**3 - t0**3))
    var_t = 3 * (t1**5 - t0**5) / (5 * (t1**3 - t0**3)) - mu_t**2
    var_r = r**2 * 3 * (t1**5 - t0**5) / (20 * (t1**3 - t0**3))
    torch.testing.assert_close(means[0, 0], torch.tensor([0.0, 0.0, mu_t], dtype=torch.float64))
    torch.testing.assert_close(cov[0, 0], torch.tensor([var_r, var_r, var_t], dtype=torch.float64))
    # and a Monte-Carlo check of the geometry (unit direction => metric t, r at unit distance)
    mc_mean, mc_var = _frustum_moments_monte_carlo(t0, t1, r)
    torch.testing.assert_close(means[0, 0], mc_mean, atol=3e-3, rtol=0)
    torch.testing.assert_close(cov[0, 0], mc_var, atol=0, rtol=2e-2)


def test_conical_frustum_rotation_and_shapes():
    g = torch.Generator().manual_seed(0)
    d = torch.nn.functional.normalize(torch.randn(4, 3, generator=g, dtype=torch.float64), dim=-1)
    edges = torch.linspace(0.5, 3.0, 6, dtype=torch.float64).expand(4, 6)
    radii = torch.full((4, 1), 0.01, dtype=torch.float64)
    means, cov = conical_frustum_to_gaussian(d, edges[:, :-1], edges[:, 1:], radii)
    assert means.shape == (4, 5, 3) and cov.shape == (4, 5, 3)
    # means lie on the ray; covariance diagonal of var_t d d^T + var_r (I - d d^T)
    along = (means * d[:, None]).sum(-1)
    torch.testing.assert_close(means, along[..., None] * d[:, None])
    assert torch.all(cov > 0)
    # scaling d by k and t by 1/k describes the same frustum (radius per unit t scales by k)
    m2, c2 = conical_frustum_to_gaussian(2 * d, edges[:, :-1] / 2, edges[:, 1:] / 2, radii * 2)
    torch.testing.assert_close(m2, means)
    torch.testing.assert_close(c2, cov)
    d_ = d.clone().requires_grad_(True)
    t0_ = edges[:1, :-1].expand(4, 5).clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: conical_frustum_to_gaussian(a, b, b + 0.3, radii), (d_, t0_))


def test_conical_frustum_bad_input():
    d = torch.zeros(4, 3)
    t = torch.zeros(4, 5)
    with pytest.raises(ValueError, match="directions"):
        conical_frustum_to_gaussian(torch.zeros(4, 2), t, t, torch.zeros(4, 1))
    with pytest.raises(ValueError, match="t_ends"):
        conical_frustum_to_gaussian(d, t, torch.zeros(4, 6), torch.zeros(4, 1))
    with pytest.raises(ValueError, match="radii"):
        conical_frustum_to_gaussian(d, t, t, torch.zeros(4))
    with pytest.raises(ValueError, match="t_starts"):
        conical_frustum_to_gaussian(d, torch.zeros(3, 5), torch.zeros(3, 5), torch.zeros(4, 1))
