"""Distribution metrics: Fréchet distance, KID, split-half floor, Laplacian pyramid, SWD."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import torch

from langfield._checks import InputError
from langfield.eval.distribution import (
    MeanStd,
    frechet_distance,
    frechet_distance_from_statistics,
    gaussian_statistics,
    kernel_inception_distance,
    laplacian_pyramid,
    mmd2_unbiased,
    reconstruct_from_laplacian_pyramid,
    sliced_wasserstein_distance,
    split_half_floor,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_spd(d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


# ----------------------------------------------------------------------------- FD


def test_fd_statistics_closed_form_2d_non_commuting():
    # For 2x2 PSD products, tr sqrt(Ca Cb) = sqrt(tr(Ca Cb) + 2 sqrt(det Ca det Cb)) (the two
    # eigenvalues l1, l2 of Ca Cb satisfy (sqrt l1 + sqrt l2)^2 = l1 + l2 + 2 sqrt(l1 l2)).
    ca = np.array([[2.0, 0.5], [0.5, 1.0]])
    cb = np.array([[1.0, -0.3], [-0.3, 3.0]])
    assert not np.allclose(ca @ cb, cb @ ca)  # the covariances do not commute
    mu_a, mu_b = np.array([1.0, -2.0]), np.array([0.5, 0.5])
    tr_sqrt = np.sqrt(np.trace(ca @ cb) + 2 * np.sqrt(np.linalg.det(ca) * np.linalg.det(cb)))
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(ca) + np.trace(cb) - 2 * tr_sqrt
    got = frechet_distance_from_statistics(mu_a, ca, mu_b, cb)
    assert got == pytest.approx(expected, rel=1e-12)


def test_fd_statistics_matches_scipy_sqrtm_in_higher_dimension():
    d = 12
    ca, cb = _random_spd(d, 0), _random_spd(d, 1)
    mu_a, mu_b = np.arange(d, dtype=float) / d, np.zeros(d)
    covmean = scipy.linalg.sqrtm(ca @ cb).real
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(ca + cb - 2 * covmean)
    assert frechet_distance_from_statistics(mu_a, ca, mu_b, cb) == pytest.approx(expected, rel=1e-9)


def test_fd_of_samples_converges_to_the_gaussians_closed_form():
    # Diagonal covariances: FD = |mu_a - mu_b|^2 + sum (sigma_a - sigma_b)^2 exactly.
    g = _gen(0)
    n, d = 40_000, 3
    sig_a, sig_b = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([1.5, 1.0, 0.5])
    mu_a, mu_b = torch.tensor([0.0, 1.0, -1.0]), torch.tensor([1.0, 1.0, 0.0])
    a = mu_a + sig_a * torch.randn(n, d, generator=g, dtype=torch.float64)
    b = mu_b + sig_b * torch.randn(n, d, generator=g, dtype=torch.float64)
    expected = float((mu_a - mu_b).square().sum() + (sig_a - sig_b).square().sum())  # 2 + 0.25 + 1 = 3.25
    assert frechet_distance(a, b) == pytest.approx(expected, abs=0.1)


def test_fd_same_gaussian_is_near_zero_and_identical_sets_exactly_zero():
    g = _gen(1)
    a, b = torch.randn(20_000, 4, generator=g), torch.randn(20_000, 4, generator=g)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a, b) < 5e-3  # sampling noise only
    assert frechet_distance(a, b + 0.2) > 0.1  # 4 * 0.2^2 = 0.16


def test_fd_statistics_match_numpy_and_accept_numpy():
    x = np.random.default_rng(0).normal(size=(50, 5))
    mu, cov = gaussian_statistics(x)
    np.testing.assert_allclose(mu.numpy(), x.mean(0), atol=1e-12)
    np.testing.assert_allclose(cov.numpy(), np.cov(x, rowvar=False), atol=1e-12)


def test_fd_input_errors_name_the_argument():
    a = torch.randn(10, 4)
    with pytest.raises(InputError, match="feats_a and feats_b"):
        frechet_distance(a, torch.randn(10, 5))
    with pytest.raises(InputError, match="feats_b: needs at least 2 samples"):
        frechet_distance(a, torch.randn(1, 4))
    with pytest.raises(InputError, match=r"feats_a: expected features of shape \[N, D\]"):
        frechet_distance(torch.randn(10), a)
    with pytest.raises(InputError, match="feats_b: contains NaN"):
        frechet_distance(a, torch.full((10, 4), float("nan")))
    with pytest.raises(InputError, match="cov_b"):
        frechet_distance_from_statistics(torch.zeros(2), torch.eye(2), torch.zeros(2), torch.eye(3))


# ----------------------------------------------------------------------------- KID


def test_mmd2_unbiased_matches_a_loop():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(7, 3)), rng.normal(size=(5, 3)) + 0.5

    def k(x, y):
        return (x @ y / 3 + 1) ** 3

    xx = sum(k(a[i], a[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(k(b[i], b[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    xy = sum(k(a[i], b[j]) for i in range(7) for j in range(5)) / 35
    assert mmd2_unbiased(a, b) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_kid_is_unbiased_for_equal_distributions_and_positive_for_shifted():
    g = _gen(4)
    # Average of many independent small-sample estimates: ~0 for the same law (a biased V-statistic
    # would sit clearly above 0 at 20 samples), > 0 for a shifted one.
    same = [mmd2_unbiased(torch.randn(20, 8, generator=g), torch.randn(20, 8, generator=g)) for _ in range(300)]
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same))
    a, b = torch.randn(500, 8, generator=g), torch.randn(500, 8, generator=g)
    kid_same = kernel_inception_distance(a, b, subsets=20, subset_size=250, seed=0)
    kid_shift = kernel_inception_distance(a, b + 0.5, subsets=20, subset_size=250, seed=0)
    kid_more = kernel_inception_distance(a, b + 1.0, subsets=20, subset_size=250, seed=0)
    assert abs(kid_same.mean) < 0.05  # ~0.005-0.02 by the draw; the shifted one is ~1.2
    assert kid_shift.mean > 20 * abs(kid_same.mean) and kid_shift.mean > 5 * kid_shift.std
    assert kid_more.mean > kid_shift.mean
    assert len(kid_same.values) == 20 and kid_same.std > 0


def test_kid_is_deterministic_by_seed_and_checks_subset_size():
    g = _gen(5)
    a, b = torch.randn(60, 4, generator=g), torch.randn(80, 4, generator=g)
    assert kernel_inception_distance(a, b, 5, 30, seed=1) == kernel_inception_distance(a, b, 5, 30, seed=1)
    assert kernel_inception_distance(a, b, 5, 30, seed=1) != kernel_inception_distance(a, b, 5, 30, seed=2)
    assert len(kernel_inception_distance(a, b, subsets=3).values) == 3  # default size min(1000, 60, 80)
    with pytest.raises(InputError, match="subset_size"):
        kernel_inception_distance(a, b, subsets=2, subset_size=61)
    with pytest.raises(InputError, match="subsets"):
        kernel_inception_distance(a, b, subsets=0)
    with pytest.raises(InputError, match="feats_a and feats_b"):
        kernel_inception_distance(a, torch.randn(80, 3))


# ----------------------------------------------------------------------------- floor


def test_split_half_floor_uses_disjoint_equal_halves_and_reports_mean_std():
    feats = torch.arange(11, dtype=torch.float64)[:, None].repeat(1, 2)
    seen = []

    def metric(a, b):
        seen.append((a[:, 0].tolist(), b[:, 0].tolist()))
        return float(a.sum() - b.sum())

    floor = split_half_floor(metric, feats, seeds=[0, 1, 2, 3])
    assert len(seen) == 4
    for a, b in seen:
        assert len(a) == len(b) == 5 and not set(a) & set(b)
    values = [2 * (sum(a) - sum(b)) for a, b in seen]
    assert floor.values == tuple(values)
    assert floor.mean == pytest.approx(np.mean(values)) and floor.std == pytest.approx(np.std(values, ddof=1))
    assert len({tuple(a) for a, _ in seen}) > 1  # the seeds draw different splits


def test_split_half_floor_takes_the_mean_of_a_mean_std_metric_and_checks_inputs():
    x = torch.randn(40, 3, generator=_gen(6))
    floor = split_half_floor(lambda a, b: kernel_inception_distance(a, b, subsets=2, subset_size=10), x, seeds=[0])
    assert isinstance(floor, MeanStd) and floor.std == 0.0 and len(floor.values) == 1
    with pytest.raises(InputError, match="feats: needs at least 4 rows"):
        split_half_floor(frechet_distance, torch.randn(3, 2))
    with pytest.raises(InputError, match="seeds"):
        split_half_floor(frechet_distance, x, seeds=[])


# ----------------------------------------------------------------------------- pyramid


@pytest.mark.parametrize("size", [(32, 32), (17, 23)])
def test_laplacian_pyramid_reconstructs_exactly(size):
    x = torch.rand(2, 3, *size, generator=_gen(7), dtype=torch.float64)
    pyr = laplacian_pyramid(x, 4)
    assert [tuple(p.shape) for p in pyr][1] == (2, 3, (size[0] + 1) // 2, (size[1] + 1) // 2)
    torch.testing.assert_close(reconstruct_from_laplacian_pyramid(pyr), x, atol=1e-12, rtol=0)
    assert pyr[0].abs().mean() > 0.05  # a real band-pass level, not all zeros


def test_laplacian_pyramid_matches_progan_scipy_definition():
    # ProGAN (metrics/sliced_wasserstein.py): pyr_down = convolve(binomial 5x5, mode="mirror")[::2, ::2];
    # pyr_up = zero insertion, convolve(4 * binomial, mode="mirror").
    x = np.random.default_rng(8).random((1, 2, 16, 16))
    k1 = np.array([1.0, 4.0, 6.0, 4.0, 1.0])
    k2 = np.outer(k1, k1)[None, None] / 256.0
    down = scipy.ndimage.convolve(x, k2, mode="mirror")[:, :, ::2, ::2]
    up = np.zeros_like(x)
    up[:, :, ::2, ::2] = down
    up = scipy.ndimage.convolve(up, 4 * k2, mode="mirror")
    pyr = laplacian_pyramid(torch.from_numpy(x), 2)
    np.testing.assert_allclose(pyr[1].numpy(), down, atol=1e-12)
    np.testing.assert_allclose(pyr[0].numpy(), x - up, atol=1e-12)


def test_laplacian_pyramid_of_a_constant_is_band_free_and_checks_levels():
    pyr = laplacian_pyramid(torch.full((1, 1, 16, 16), 0.3, dtype=torch.float64), 3)
    assert all(p.abs().max() < 1e-12 for p in pyr[:-1])
    torch.testing.assert_close(pyr[-1], torch.full((1, 1, 4, 4), 0.3, dtype=torch.float64))
    with pytest.raises(InputError, match="levels"):
        laplacian_pyramid(torch.rand(1, 3, 8, 8), 4)  # level 2 would be 2x2
    with pytest.raises(InputError, match=r"images: expected images of shape \[N, C, H, W\]"):
        laplacian_pyramid(torch.rand(3, 8, 8), 2)


# ----------------------------------------------------------------------------- SWD


def _smooth_images(n: int, seed: int, size: int = 32) -> torch.Tensor:
    """Random smooth colour images (blurred noise) in [0, 1]."""
    x = torch.rand(n, 3, size // 4, size // 4, generator=_gen(seed))
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return 0.25 + 0.5 * x


def test_swd_identical_sets_are_exactly_zero_and_levels_default():
    x = _smooth_images(6, 0)
    result = sliced_wasserstein_distance(x, x.clone(), patches_per_image=8, num_projections=16)
    assert result.per_level == (0.0, 0.0)  # 32 px: 32 and 16 (coarsest >= 16, ProGAN)
    assert result.mean == 0.0
    # real-vs-real floor of SWD: two halves of one set are different images, so it is above 0
    floor = split_half_floor(
        lambda a, b: sliced_wasserstein_distance(a, b, patches_per_image=8, num_projections=16), x, seeds=[0, 1]
    )
    assert len(floor.values) == 2 and min(floor.values) > 0.0


def test_swd_exact_value_on_constant_images():
    # 1x1 patches of constant one-channel images: each image contributes exactly its value
    # patches_per_image times; with joint normalisation the SWD is W1 of the normalised values.
    va, vb = torch.tensor([0.0, 0.2, 0.4, 0.6]), torch.tensor([0.1, 0.3, 0.5, 0.9])
    a = va[:, None, None, None].expand(4, 1, 8, 8).contiguous()
    b = vb[:, None, None, None].expand(4, 1, 8, 8).contiguous()
    result = sliced_wasserstein_distance(
        a, b, levels=1, patch_size=1, patches_per_image=3, num_projections=5, normalize="joint"
    )
    pooled = torch.cat([va, vb]).double()
    std = pooled.std(unbiased=False)
    expected = float(((va.double().sort().values - vb.double().sort().values).abs()).mean() / std)
    assert result.per_level[0] == pytest.approx(expected, rel=1e-5)


def test_swd_grows_monotonically_with_a_shift_and_degradation():
    a, b = _smooth_images(24, 1), _smooth_images(24, 2)
    kw = dict(patches_per_image=32, num_projections=64, seed=0)
    floor = sliced_wasserstein_distance(a, b, **kw).mean
    # A brightness shift: visible with the default joint normalisation, monotone in its size.
    shifted = [sliced_wasserstein_distance(a, b + s, **kw).mean for s in (0.0, 0.05, 0.1, 0.2)]
    assert shifted[0] == floor and all(x < y for x, y in zip(shifted, shifted[1:])), shifted
    assert shifted[-1] > 3 * floor
    # Added pixel noise: monotone in its strength, far above the real-vs-real level.
    noise = torch.randn(b.shape, generator=_gen(9))
    noisy = [sliced_wasserstein_distance(a, b + s * noise, **kw) for s in (0.0, 0.02, 0.05, 0.1)]
    assert all(x.mean < y.mean for x, y in zip(noisy, noisy[1:])), noisy
    assert noisy[-1].per_level[0] > 5 * noisy[0].per_level[0]  # the finest band holds the noise


def test_swd_separate_normalisation_is_progan_and_blind_to_a_global_offset():
    a, b = _smooth_images(24, 1), _smooth_images(24, 2)
    kw = dict(patches_per_image=32, num_projections=64, seed=0, normalize="separate")
    floor = sliced_wasserstein_distance(a, b, **kw)
    offset = sliced_wasserstein_distance(a, b + 0.2, **kw)
    torch.testing.assert_close(torch.tensor(offset.per_level), torch.tensor(floor.per_level), rtol=1e-3, atol=1e-6)
    assert sliced_wasserstein_distance(a, b + 0.2, patches_per_image=32, num_projections=64).mean > 3 * floor.mean


def test_swd_input_errors():
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(InputError, match="images_a and images_b: image shapes differ"):
        sliced_wasserstein_distance(x, torch.rand(2, 3, 16, 16))
    with pytest.raises(InputError, match="levels"):
        sliced_wasserstein_distance(x, x, levels=4, patch_size=7, patches_per_image=2, num_projections=2)  # 4 px level
    with pytest.raises(InputError, match="normalize"):
        sliced_wasserstein_distance(x, x, normalize="own")
    with pytest.raises(InputError, match="images_b: expected floating-point"):
        sliced_wasserstein_distance(x, (x * 255).to(torch.uint8))
    with pytest.raises(InputError, match="patches_per_image"):
        sliced_wasserstein_distance(x, x, patches_per_image=0)
