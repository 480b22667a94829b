"""Training masks with Gaussian splatting: the :class:`ImageSampler` hands each image's mask out
(shrunk conservatively through coarse-to-fine), and the loss averages its L1, D-SSIM and depth terms
over the usable pixels only, never depending on an ignored pixel; without a mask nothing changes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from langfield.data.samplers import ImageSampler, downscale_mask
from langfield.eval.metrics import ssim
from langfield.methods.base import SceneInfo
from langfield.methods.gaussians import Gaussians
from langfield.methods.gaussians.method import GaussiansOutputs
from langfield.types import ImageBatch
from tests.methods.gaussians.test_method import SMALL


def masks_for(image_set, seed: int = 0) -> torch.Tensor:
    """``[C, H, W, 1]`` bool: a random speckle plus an ignored rectangle per image."""
    c, h, w = image_set.images.shape[:3]
    masks = torch.rand(c, h, w, 1, generator=torch.Generator().manual_seed(seed)) > 0.15
    masks[:, 2:7, 3:9] = False
    return masks


# ----------------------------------------------------------------------------- the sampler


def test_the_image_sampler_hands_out_the_mask_shrunk_conservatively(tiny_scene):
    train = dataclasses.replace(tiny_scene.split("train"), masks=masks_for(tiny_scene.split("train")))
    factor = {"d": 1}
    sampler = ImageSampler(train, downscale=lambda: factor["d"])
    full = sampler.sample(5)
    assert full.mask.dtype == torch.bool and torch.equal(full.mask, train.masks[full.index])
    factor["d"] = 2
    half = sampler.sample(5)
    assert half.index == full.index and half.mask.shape == half.rgb.shape[:2] + (1,) == (8, 8, 1)
    blocks = full.mask[..., 0].reshape(8, 2, 8, 2).permute(0, 2, 1, 3).reshape(8, 8, 4)  # the 2x2 areas
    assert torch.equal(half.mask[..., 0], blocks.all(-1))  # usable only where all four pixels are
    assert bool(half.mask.any()) and bool((blocks.any(-1) & ~blocks.all(-1)).any())  # partial areas do occur
    assert torch.equal(downscale_mask(full.mask, (8, 8)), half.mask)
    assert torch.equal(half.to("cpu").mask, half.mask)  # .to() carries it
    assert ImageSampler(tiny_scene.split("train")).sample(5).mask is None  # no masks: None
    assert ImageSampler(tiny_scene.split("train")).sample(5).to("cpu").mask is None
    empty = dataclasses.replace(train, masks=torch.zeros_like(train.masks))
    with pytest.raises(ValueError, match=r"ImageSampler: ImageSet\.masks marks no pixel .* as usable"):
        ImageSampler(empty)


def test_downscale_mask_with_an_odd_factor_keeps_fully_covered_pixels_only():
    mask = torch.ones(7, 5, 1, dtype=torch.bool)
    mask[3, 2] = False  # one ignored pixel in the middle
    small = downscale_mask(mask, (3, 2))[..., 0]  # 7x5 -> 3x2: the areas overlap the middle row / column
    area = torch.nn.functional.adaptive_avg_pool2d(mask.float()[None, None, ..., 0], (3, 2))[0, 0]
    assert torch.equal(small, area >= 1 - 1e-6) and not bool(small[1].any()) and bool(small[0].all())


# ----------------------------------------------------------------------------- the loss


def setup(tiny_scene, config=SMALL, index: int = 0):
    method = Gaussians(SceneInfo.from_dataset(tiny_scene), config)
    train = tiny_scene.split("train")
    cams, bg = train.cameras[index], torch.ones(3)
    target = train.image_float(index, bg)
    mask = masks_for(train)[index]
    return method, cams, bg, target, mask


def with_leaf(outputs: GaussiansOutputs):
    """The outputs with the rendered colour replaced by a leaf tensor, to read its gradient."""
    leaf = outputs.render.rgb.detach().clone().requires_grad_(True)
    return GaussiansOutputs(render=dataclasses.replace(outputs.render, rgb=leaf), info=outputs.info), leaf


def test_masked_loss_is_the_mean_over_usable_pixels(tiny_scene):
    method, cams, bg, target, mask = setup(tiny_scene)
    outputs, pred = with_leaf(method.outputs(cams, bg))
    terms = method.losses(outputs, ImageBatch(cams, target, bg, 0, mask=mask))
    lam = method.config.ssim_lambda
    keep = mask[..., 0]
    l1 = (pred.detach() - target).abs()[keep].mean()  # over usable pixels and their 3 channels
    torch.testing.assert_close(terms["l1"], l1)
    # SSIM with ignored pixels set to 0 in both images, averaged over the windows centred on usable pixels
    zero = torch.zeros_like(target)
    _, ssim_map = ssim(torch.where(mask, pred.detach(), zero), torch.where(mask, target, zero), return_map=True)
    assert ssim_map.shape == (6, 6, 3)  # 16x16, 11x11 windows
    centres = keep[5:11, 5:11]
    assert 0 < int(centres.sum()) < 36
    torch.testing.assert_close(terms["dssim"], 1.0 - ssim_map[centres].mean())
    torch.testing.assert_close(terms["loss"], (1 - lam) * l1 + lam * (1.0 - ssim_map[centres].mean()))
    # the masked terms differ from the plain ones: the test is not vacuous
    plain = method.losses(outputs, ImageBatch(cams, target, bg, 0))
    assert abs(float(plain["l1"].detach()) - float(terms["l1"].detach())) > 1e-4
    assert abs(float(plain["dssim"].detach()) - float(terms["dssim"].detach())) > 1e-4
    terms["loss"].backward()
    assert torch.equal(pred.grad[~keep], torch.zeros_like(pred.grad[~keep]))  # no gradient into ignored pixels
    assert float(pred.grad[keep].abs().sum()) > 0


def test_ignored_target_pixels_change_neither_the_loss_nor_the_gradients(tiny_scene):
    method, cams, bg, target, mask = setup(tiny_scene)
    other = target.clone()
    noise = torch.rand(target.shape, generator=torch.Generator().manual_seed(3))
    other[~mask[..., 0]] = noise[~mask[..., 0]]  # new colours on every ignored pixel only
    assert not torch.equal(other, target)

    def loss_and_grads(tgt):
        for p in method.params.values():
            p.grad = None
        loss = method.losses(method.outputs(cams, bg), ImageBatch(cams, tgt, bg, 0, mask=mask))["loss"]
        loss.backward()
        return loss.detach(), {k: p.grad.clone() for k, p in method.params.items() if p.grad is not None}

    loss_a, grads_a = loss_and_grads(target)
    loss_b, grads_b = loss_and_grads(other)
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and "means" in grads_a
    for name in grads_a:
        assert torch.equal(grads_a[name], grads_b[name]), name
    assert float(grads_a["means"].abs().sum()) > 0
    # a usable pixel does count
    moved = target.clone()
    v, u = [int(t) for t in torch.nonzero(mask[..., 0])[len(torch.nonzero(mask[..., 0])) // 2]]
    moved[v, u] = 1.0 - moved[v, u]
    assert not torch.equal(loss_and_grads(moved)[0], loss_a)


def test_without_a_mask_the_loss_is_unchanged(tiny_scene):
    method, cams, bg, target, _ = setup(tiny_scene)
    outputs = method.outputs(cams, bg)
    terms = method.losses(outputs, ImageBatch(cams, target, bg, 0))
    pred, lam = outputs.render.rgb, method.config.ssim_lambda
    l1 = (pred - target).abs().mean()  # the loss as it was before masks existed, bit for bit
    dssim = 1.0 - ssim(pred, target)
    assert torch.equal(terms["l1"], l1) and torch.equal(terms["dssim"], dssim)
    assert torch.equal(terms["loss"], (1.0 - lam) * l1 + lam * dssim)


def test_masked_pixels_are_skipped_by_the_depth_term(tiny_scene):
    config = dataclasses.replace(SMALL, depth_loss_weight=1.0)
    method, cams, bg, target, mask = setup(tiny_scene, config)
    outputs = method.outputs(cams, bg)
    rendered = outputs.render.depth.detach()
    assert bool((outputs.render.accumulation[~mask] >= 0.5).any())  # some ignored pixels would count
    wrong_where_ignored = torch.where(mask, rendered, rendered + 3.0)
    masked = method.losses(outputs, ImageBatch(cams, target, bg, 0, depth=wrong_where_ignored, mask=mask))
    assert float(masked["depth_l1"].detach()) == 0.0
    unmasked = method.losses(outputs, ImageBatch(cams, target, bg, 0, depth=wrong_where_ignored))
    assert float(unmasked["depth_l1"].detach()) > 0.5
    off = method.losses(outputs, ImageBatch(cams, target, bg, 0, depth=rendered + 0.25, mask=mask))
    torch.testing.assert_close(off["depth_l1"], torch.tensor(0.25))


def test_an_all_ignored_image_gives_zero_terms_and_a_bad_mask_is_refused(tiny_scene):
    method, cams, bg, target, mask = setup(tiny_scene)
    outputs, pred = with_leaf(method.outputs(cams, bg))
    none = method.losses(outputs, ImageBatch(cams, target, bg, 0, mask=torch.zeros_like(mask)))
    assert float(none["l1"].detach()) == 0.0 and float(none["dssim"].detach()) == 1.0
    none["loss"].backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred.grad))
    with pytest.raises(ValueError, match=r"batch\.mask must be bool \[16, 16, 1\] like the render, got torch\.float32"):
        method.losses(outputs, ImageBatch(cams, target, bg, 0, mask=mask.float()))


def test_a_masked_scene_trains_two_steps(tiny_scene, tmp_path):
    from langfield.runs.train import prepare_run
    from tests.methods.gaussians.test_method import trainer_config

    train = dataclasses.replace(tiny_scene.split("train"), masks=masks_for(tiny_scene.split("train")))
    scene = tiny_scene.with_splits({**tiny_scene.splits, "train": train})
    run = prepare_run(scene, "gaussians", trainer_config(tmp_path, 2), SMALL)
    assert run.trainer.sampler.sample(0).mask is not None
    record = run.trainer.train()
    assert 0 < record["l1"] < 1 and record["loss"] == record["loss"]
