"""Tests for langfield.eval: PSNR, SSIM (vs. skimage), LPIPS architecture and loading."""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pytest
import torch

from langfield.eval.lpips import (
    LPIPS,
    LPIPS_WEIGHTS_ENV,
    convert_official_lpips,
    infer_lpips_net,
    load_lpips,
    split_to_official,
    try_load_lpips,
)
from langfield.eval.metrics import ImageMetrics, evaluate_images, gaussian_kernel1d, mse_to_psnr, psnr, ssim


@pytest.fixture(scope="module")
def astronaut_pair():
    """A real image (skimage's astronaut, 64x64) and a noisy copy, float64 in [0, 1]."""
    skimage = pytest.importorskip("skimage")
    from skimage.transform import resize

    img = resize(skimage.data.astronaut(), (64, 64), anti_aliasing=True)  # float64 in [0, 1]
    rng = np.random.default_rng(0)
    noisy = np.clip(img + rng.normal(0.0, 0.05, img.shape), 0.0, 1.0)
    return img, noisy


# ----------------------------------------------------------------------------- PSNR


def test_psnr_known_value(device, dtype):
    target = torch.zeros(8, 8, 3, device=device, dtype=dtype)
    pred = torch.full((8, 8, 3), 0.1, device=device, dtype=dtype)  # MSE = 0.01 -> 20 dB
    assert psnr(pred, target).dtype == dtype
    assert psnr(pred, target).item() == pytest.approx(20.0, abs=1e-4)
    assert psnr(pred * 2.55, target, max_val=2.55).item() == pytest.approx(20.0, abs=1e-4)
    assert mse_to_psnr(1e-3).item() == pytest.approx(30.0, abs=1e-5)
    assert math.isinf(psnr(target, target).item())


def test_psnr_batched_matches_per_image():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 3, 5, 6, 3, generator=g), torch.rand(2, 3, 5, 6, 3, generator=g)
    out = psnr(pred, target)
    assert out.shape == (2, 3)
    assert torch.allclose(out[1, 2], psnr(pred[1, 2], target[1, 2]))


def test_psnr_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.zeros(4, 4, 3), torch.zeros(4, 4, 1))
    with pytest.raises(ValueError, match="floating point"):
        psnr(torch.zeros(4, 4, 3, dtype=torch.uint8), torch.zeros(4, 4, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="pred"):
        psnr(torch.zeros(4, 4), torch.zeros(4, 4))


# ----------------------------------------------------------------------------- SSIM


def test_gaussian_kernel_matches_mipnerf_formula():
    k = gaussian_kernel1d(11, 1.5, dtype=torch.float64)
    x = np.arange(11) - 5
    ref = np.exp(-0.5 * (x / 1.5) ** 2)
    np.testing.assert_allclose(k.numpy(), ref / ref.sum(), rtol=1e-12)


def test_ssim_identity_is_one():
    x = torch.rand(20, 23, 3, generator=torch.Generator().manual_seed(1))
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)


def test_ssim_constant_images_closed_form(device, dtype):
    # Constant images: variances and covariance vanish, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b = 0.2, 0.7
    c1 = 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    val = ssim(torch.full((16, 16, 1), a, dtype=dtype, device=device),
               torch.full((16, 16, 1), b, dtype=dtype, device=device))
    assert val.dtype == dtype
    rel = 1e-10 if dtype == torch.float64 else 1e-4  # float32: round-off of E[x^2] - mu^2 against C2
    assert val.item() == pytest.approx(expected, rel=rel)


def test_ssim_matches_skimage(astronaut_pair):
    from skimage.metrics import structural_similarity

    img, noisy = astronaut_pair
    ref = structural_similarity(
        img, noisy, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1
    )
    ours64 = ssim(torch.from_numpy(noisy), torch.from_numpy(img)).item()
    ours32 = ssim(torch.from_numpy(noisy).float(), torch.from_numpy(img).float()).item()
    assert 0.3 < ref < 0.95  # the noise makes this a non-trivial comparison
    assert ours64 == pytest.approx(ref, abs=1e-9)
    assert ours32 == pytest.approx(ref, abs=1e-4)


def test_ssim_map_matches_skimage_full_map(astronaut_pair):
    from skimage.metrics import structural_similarity

    img, noisy = astronaut_pair
    _, full = structural_similarity(
        img[..., 0], noisy[..., 0], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=1.0, full=True,
    )
    _, ours = ssim(torch.from_numpy(noisy[..., :1]), torch.from_numpy(img[..., :1]), return_map=True)
    assert ours.shape == (54, 54, 1)
    np.testing.assert_allclose(ours[..., 0].numpy(), full[5:-5, 5:-5], atol=1e-9)


def test_ssim_batched_and_symmetric(astronaut_pair):
    img, noisy = (torch.from_numpy(a) for a in astronaut_pair)
    batch_p = torch.stack([noisy, img])
    batch_t = torch.stack([img, img])
    out = ssim(batch_p, batch_t)
    assert out.shape == (2,)
    assert out[0].item() == pytest.approx(ssim(noisy, img).item(), abs=1e-12)
    assert out[1].item() == pytest.approx(1.0, abs=1e-9)
    assert ssim(img, noisy).item() == pytest.approx(ssim(noisy, img).item(), abs=1e-12)


def test_ssim_gradcheck():
    g = torch.Generator().manual_seed(3)
    pred = torch.rand(6, 7, 2, dtype=torch.float64, generator=g, requires_grad=True)
    target = torch.rand(6, 7, 2, dtype=torch.float64, generator=g)
    assert torch.autograd.gradcheck(lambda p: ssim(p, target, window_size=3), (pred,))


def test_ssim_as_loss_decreases():
    g = torch.Generator().manual_seed(4)
    target = torch.rand(16, 16, 3, generator=g)
    pred = torch.rand(16, 16, 3, generator=g).requires_grad_(True)
    opt = torch.optim.Adam([pred], lr=0.05)
    start = ssim(pred, target).item()
    for _ in range(20):
        opt.zero_grad()
        (1.0 - ssim(pred, target)).backward()
        opt.step()
    assert ssim(pred, target).item() > start + 0.2


def test_ssim_bad_input():
    with pytest.raises(ValueError, match="window_size"):
        ssim(torch.zeros(8, 8, 3), torch.zeros(8, 8, 3))
    with pytest.raises(ValueError, match="window_size"):
        ssim(torch.zeros(16, 16, 3), torch.zeros(16, 16, 3), window_size=4)
    with pytest.raises(ValueError, match="same shape"):
        ssim(torch.zeros(16, 16, 3), torch.zeros(16, 17, 3))


def test_evaluate_images(astronaut_pair):
    img, noisy = (torch.from_numpy(a).float() for a in astronaut_pair)
    m = evaluate_images(noisy, img)
    assert isinstance(m, ImageMetrics)
    assert m.lpips is None
    assert m.psnr == pytest.approx(psnr(noisy, img).item(), abs=1e-4)
    assert m.ssim == pytest.approx(ssim(noisy, img).item(), abs=1e-6)
    # Overshooting renders are clamped to [0, 1] before scoring.
    m2 = evaluate_images(img + 10.0 * (img > 0.99), img)
    assert math.isinf(m2.psnr) or m2.psnr > 60
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.psnr = 0.0  # type: ignore[misc]


# ----------------------------------------------------------------------------- LPIPS


def _random_lpips(net="alex", seed=0) -> LPIPS:
    torch.manual_seed(seed)
    model = LPIPS(net)
    for lin in model.lin:  # official linear weights are non-negative
        lin.weight.data.abs_()
    return model


@pytest.mark.parametrize("net,size", [("alex", 64), ("vgg", 32)])
def test_lpips_distance_properties(net, size):
    model = _random_lpips(net)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, size, size, 3, generator=g)
    y = torch.rand(2, size, size, 3, generator=g)
    d_xy = model(x, y)
    assert d_xy.shape == (2,)
    assert torch.all(d_xy > 0)
    assert torch.allclose(model(x, x), torch.zeros(2), atol=1e-7)
    assert torch.allclose(d_xy, model(y, x), rtol=1e-5, atol=1e-7)
    assert model(x[0], y[0]).shape == ()
    assert model(x[0], y[0]).item() == pytest.approx(d_xy[0].item(), rel=1e-5)


def test_lpips_linear_in_lin_weights():
    # The distance is a linear function of the lin weights: doubling them doubles it,
    # and zeroing all but one layer leaves that layer's share.
    model = _random_lpips("alex", seed=1)
    g = torch.Generator().manual_seed(6)
    x, y = torch.rand(40, 48, 3, generator=g), torch.rand(40, 48, 3, generator=g)
    d = model(x, y).item()
    shares = []
    for k in range(5):
        m = _random_lpips("alex", seed=1)
        for j, lin in enumerate(m.lin):
            if j != k:
                lin.weight.data.zero_()
        shares.append(m(x, y).item())
    assert sum(shares) == pytest.approx(d, rel=1e-5)
    for lin in model.lin:
        lin.weight.data.mul_(2.0)
    assert model(x, y).item() == pytest.approx(2 * d, rel=1e-5)


def test_lpips_too_small_and_bad_shape():
    model = LPIPS("alex")
    assert model.min_size() == 31
    assert LPIPS("vgg").min_size() == 16
    with pytest.raises(ValueError, match="at least 31"):
        model(torch.rand(20, 20, 3), torch.rand(20, 20, 3))
    with pytest.raises(ValueError, match="pred"):
        model(torch.rand(40, 40, 1), torch.rand(40, 40, 1))
    with pytest.raises(ValueError, match="net"):
        LPIPS("squeeze")  # type: ignore[arg-type]


def _fake_official(net: str, seed: int = 0):
    """Official-layout state dicts (torchvision features + lpips lins) with random values."""
    model = _random_lpips(net, seed)
    tv_idx = model._arch.torchvision_idx
    backbone = {}
    for i, conv in enumerate(model.backbone):
        backbone[f"features.{tv_idx[i]}.weight"] = conv.weight.detach().clone()
        backbone[f"features.{tv_idx[i]}.bias"] = conv.bias.detach().clone()
    backbone["classifier.1.weight"] = torch.zeros(4, 9216)  # must be ignored
    lins = {f"lin{k}.model.1.weight": lin.weight.detach().clone() for k, lin in enumerate(model.lin)}
    return model, backbone, lins


def test_convert_official_key_mapping():
    _, backbone, lins = _fake_official("alex")
    sd = convert_official_lpips(backbone, lins)
    # torchvision AlexNet convs live at features.0/3/6/8/10.
    assert torch.equal(sd["backbone.0.weight"], backbone["features.0.weight"])
    assert torch.equal(sd["backbone.1.bias"], backbone["features.3.bias"])
    assert torch.equal(sd["backbone.4.weight"], backbone["features.10.weight"])
    assert torch.equal(sd["lin.2.weight"], lins["lin2.model.1.weight"])
    assert sd["lin.0.weight"].shape == (1, 64, 1, 1)
    assert infer_lpips_net(sd) == "alex"
    assert not any(k.startswith("classifier") for k in sd)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_convert_official_round_trip(net):
    model, backbone, lins = _fake_official(net, seed=2)
    sd = convert_official_lpips(backbone, lins, net=net)
    back_backbone, back_lins = split_to_official(sd)
    assert set(back_lins) == set(lins)
    for k, v in back_lins.items():
        assert torch.equal(v, lins[k])
    for k, v in back_backbone.items():
        assert torch.equal(v, backbone[k])
    assert len(back_backbone) == len(backbone) - 1  # all but the classifier
    # And a model loaded from the converted dict computes the same distances.
    loaded = LPIPS(net)
    loaded.load_state_dict(sd)
    x, y = torch.rand(1, 32, 32, 3), torch.rand(1, 32, 32, 3)
    assert torch.allclose(loaded(x, y), model(x, y))


def test_convert_accepts_lpips_package_keys():
    _, backbone, lins = _fake_official("alex")
    # lpips.LPIPS().state_dict() names: net.slice{k}.{torchvision idx}.*, lins.{k}.model.1.weight
    slice_of = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
    pkg = {}
    for key, v in backbone.items():
        if key.startswith("features."):
            idx = int(key.split(".")[1])
            pkg[f"net.slice{slice_of[idx]}.{idx}.{key.split('.')[2]}"] = v
    pkg.update({f"lins.{k[3]}.model.1.weight": v for k, v in lins.items()})
    assert all(torch.equal(convert_official_lpips(pkg, pkg)[k], v) for k, v in convert_official_lpips(backbone, lins).items())


def test_convert_rejects_incomplete():
    _, backbone, lins = _fake_official("alex")
    del lins["lin4.model.1.weight"]
    with pytest.raises(ValueError, match="lin.4.weight"):
        convert_official_lpips(backbone, lins)
    _, backbone, lins = _fake_official("alex")
    with pytest.raises(ValueError, match="not a conv of torchvision.s vgg"):
        convert_official_lpips(backbone, lins, net="vgg")


def test_load_lpips_absent_weights(tmp_path, monkeypatch, caplog):
    missing = tmp_path / "nope.pth"
    with caplog.at_level(logging.WARNING, logger="langfield.eval.lpips"):
        assert load_lpips(missing) is None
    assert f"LPIPS weights not found at {missing}; LPIPS not reported" in caplog.text
    monkeypatch.delenv(LPIPS_WEIGHTS_ENV, raising=False)
    model, msg = try_load_lpips()
    assert model is None
    assert "LPIPS not reported" in msg and LPIPS_WEIGHTS_ENV in msg
    model, msg = try_load_lpips(tmp_path)  # empty directory
    assert model is None and str(tmp_path / "lpips_alex.pth") in msg


def test_load_lpips_from_file_and_env(tmp_path, monkeypatch):
    ref, backbone, lins = _fake_official("alex", seed=3)
    path = tmp_path / "lpips_alex.pth"
    torch.save(convert_official_lpips(backbone, lins), path)
    x, y = torch.rand(1, 40, 40, 3), torch.rand(1, 40, 40, 3)
    model = load_lpips(path)
    assert model is not None and model.net == "alex"
    assert torch.allclose(model(x, y), ref(x, y))
    monkeypatch.setenv(LPIPS_WEIGHTS_ENV, str(tmp_path))  # a directory works too
    assert load_lpips() is not None
    with pytest.raises(ValueError, match="vgg"):
        load_lpips(path, net="vgg")
    m = evaluate_images(x[0], y[0], lpips_model=model)
    assert m.lpips == pytest.approx(ref(x, y).item(), rel=1e-5)


def test_load_lpips_corrupt_file(tmp_path):
    bad = tmp_path / "lpips_alex.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="lpips_alex.pth"):
        load_lpips(bad)
    torch.save({"backbone.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="lpips_alex.pth"):
        load_lpips(bad)


def test_separable_filter_equals_the_2d_kernel_values_and_gradients():
    """The depthwise separable filter equals one 2-D cross-correlation with the outer product of
    two different, asymmetric 1-D kernels (a transposed or flipped kernel would fail)."""
    from langfield.eval.metrics import separable_filter

    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 9, 11, generator=g, dtype=torch.float64, requires_grad=True)
    kv = torch.tensor([0.1, 0.5, 0.2], dtype=torch.float64)
    kh = torch.tensor([0.3, -0.2, 0.6, 0.05, 0.25], dtype=torch.float64)
    ref = torch.nn.functional.conv2d(x, (kv[:, None] * kh[None, :])[None, None])
    out = separable_filter(x, kv, kh)
    assert out.shape == (4, 1, 7, 7)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    w = torch.rand(out.shape, generator=g, dtype=torch.float64)
    (ga,) = torch.autograd.grad((out * w).sum(), x)
    (gb,) = torch.autograd.grad((ref * w).sum(), x)
    torch.testing.assert_close(ga, gb, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: separable_filter(t, kv, kh), (x[:2, :, :5, :6].detach().requires_grad_(),))
