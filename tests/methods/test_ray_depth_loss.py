"""Depth supervision of the NeRF family (``depth_loss_weight`` of Instant-NGP, NeRF, Mip-NeRF): the pixel
sampler hands out each ray's ground-truth ray distance, the loss adds the masked expected-depth L1, the
refusals name the field, and a short Instant-NGP run lowers its depth error with it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from langfield._checks import InputError
from langfield.data.dataset import ImageSet
from langfield.data.procedural import ProceduralSceneConfig, make_procedural_dataset
from langfield.data.samplers import PixelSampler, SamplerOptions
from langfield.methods.base import SceneInfo
from langfield.methods.mipnerf import MipNeRF, MipNeRFConfig
from langfield.methods.nerf import NeRF, NeRFConfig
from langfield.methods.ngp import NGP, NGPConfig
from langfield.ops.depth_supervision import depth_l1
from langfield.runs.demo import demo_ngp_config
from langfield.runs.train import prepare_run
from langfield.training.trainer import TrainerConfig
from langfield.types import Cameras
from tests.methods.gaussians.test_depth_loss import mean_depth_error


@pytest.fixture(scope="module")
def scene():
    return make_procedural_dataset(ProceduralSceneConfig(width=16, height=16, num_train=4, num_test=2, supersample=1))


def coded_image_set() -> ImageSet:
    """2 cameras of 4x4 pixels whose red channel numbers the pixel (7 * flat index) and whose depth is
    1 + flat index, so each sampled ray's depth can be checked against its own colour."""
    flat = torch.arange(32).reshape(2, 4, 4)
    images = torch.zeros(2, 4, 4, 3, dtype=torch.uint8)
    images[..., 0] = (7 * flat).to(torch.uint8)
    K = torch.tensor([[4.0, 0.0, 2.0], [0.0, 4.0, 2.0], [0.0, 0.0, 1.0]])
    cams = Cameras.create(torch.eye(4).repeat(2, 1, 1), K, 4, 4)
    return ImageSet(cameras=cams, images=images, depths=(1.0 + flat.float())[..., None])


def test_the_pixel_sampler_hands_out_each_rays_own_depth():
    sampler = PixelSampler(coded_image_set(), num_rays=64, near=0.1, far=5.0, seed=3, use_depth=True)
    for step in (0, 7):
        batch = sampler.sample(step)
        index = torch.round(batch.rgb[:, 0] * 255 / 7)
        assert batch.depth.shape == (64, 1)
        assert torch.equal(batch.depth[:, 0], 1.0 + index)
    assert PixelSampler(coded_image_set(), num_rays=64, near=0.1, far=5.0).sample(0).depth is None  # off by default
    no_depth = dataclasses.replace(coded_image_set(), depths=None)
    with pytest.raises(ValueError, match=r"use_depth=True\): the image set has no depth maps"):
        PixelSampler(no_depth, num_rays=8, near=0.1, far=5.0, use_depth=True)
    with pytest.raises(ValueError, match=r"ImageSet\.depths must be \[2, 4, 4, 1\]"):
        PixelSampler(dataclasses.replace(coded_image_set(), depths=torch.ones(2, 4, 4)), num_rays=8, near=0.1, far=5.0,
                     use_depth=True)  # fmt: skip


def make(kind, scene, weight):
    info = SceneInfo.from_dataset(scene)
    if kind == "ngp":
        return NGP(info, dataclasses.replace(demo_ngp_config(), depth_loss_weight=weight))
    if kind == "nerf":
        nerf = NeRF(info, NeRFConfig(num_coarse=8, num_fine=8, depth_loss_weight=weight))
        with torch.no_grad():  # an initial NeRF is empty (ReLU density 0): give it some, so rays pass the 0.5 mask
            for field in (nerf.coarse_field, nerf.fine_field):
                field.density_head.bias.fill_(3.0)
        return nerf
    return MipNeRF(info, MipNeRFConfig(num_samples=8, depth_loss_weight=weight))


@pytest.mark.parametrize("kind", ["ngp", "nerf", "mipnerf"])
def test_the_loss_adds_the_weighted_depth_term(kind, scene):
    torch.manual_seed(0)
    method = make(kind, scene, 0.25)
    options = SamplerOptions(num_rays=128, seed=0, device="cpu")
    sampler = method.make_sampler(scene, options)
    batch = sampler.sample(0)
    assert batch.depth is not None and bool((batch.depth > 0).any())
    method.train()
    outputs = method.outputs(*batch.model_inputs())
    terms = method.losses(outputs, batch)
    fine = depth_l1(outputs.render.depth, outputs.render.accumulation, batch.depth)
    torch.testing.assert_close(terms["depth_l1"], fine.detach())
    assert float(fine.detach()) > 0  # some rays pass the accumulation mask: the term is not vacuous
    without = {k: v for k, v in terms.items() if k not in ("loss", "depth_l1", "depth_l1_coarse")}
    plain = make(kind, scene, 0.0)
    plain.load_state_dict(method.state_dict())
    base = plain.losses(outputs, dataclasses.replace(batch, depth=None))
    assert set(base) == {"loss", *without}  # the weight-0 method adds no depth term and needs no depth
    extra = 0.25 * fine
    if kind != "ngp":
        coarse = depth_l1(outputs.coarse.depth, outputs.coarse.accumulation, batch.depth)
        torch.testing.assert_close(terms["depth_l1_coarse"], coarse.detach())
        extra = extra + 0.25 * (coarse if kind == "nerf" else method.config.coarse_loss_mult * coarse)
    torch.testing.assert_close(terms["loss"], base["loss"] + extra)
    # The term reaches the field's parameters.
    method.zero_grad()
    (terms["loss"] - base["loss"]).backward()
    grads = [p.grad for p in method.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    with pytest.raises(InputError, match=r"\w+: depth_loss_weight=0\.25 .*needs ground-truth depth, but the training batch has no depth"):
        method.losses(outputs, dataclasses.replace(batch, depth=None))


def test_a_weight_without_depth_is_refused_naming_the_field(scene, tmp_path):
    bare = scene.with_splits({**scene.splits, "train": dataclasses.replace(scene.split("train"), depths=None)})
    trainer = TrainerConfig(max_steps=2, output_dir=None, progress=False, checkpoint_every=0, device="cpu")
    with pytest.raises(InputError, match=r"NGP: depth_loss_weight=0\.5 .*needs ground-truth depth, but dataset 'procedural' has no depth maps"):
        prepare_run(bare, "ngp", trainer, dataclasses.replace(demo_ngp_config(), depth_loss_weight=0.5))
    prepare_run(bare, "ngp", trainer, demo_ngp_config())  # weight 0: no depth needed
    for config in (NGPConfig, NeRFConfig, MipNeRFConfig):
        with pytest.raises(ValueError, match=r"depth_loss_weight: must be >= 0"):
            config(depth_loss_weight=-1.0)


@pytest.mark.slow
def test_depth_supervision_lowers_instant_ngp_depth_error():
    """150 Instant-NGP steps on the 32-px procedural scene from the same seed, with and without the depth term
    (weight 0.1): the depth error falls on the training and on the held-out views (measured, trainer seeds
    0 / 1 / 2: train 0.268 -> 0.128, 0.260 -> 0.121, 0.254 -> 0.113; held-out 0.265 -> 0.148, 0.261 -> 0.144,
    0.253 -> 0.124)."""
    data = make_procedural_dataset(ProceduralSceneConfig(width=32, height=32, num_train=20, num_test=4))
    errors = {}
    for weight in (0.0, 0.1):
        torch.manual_seed(0)
        trainer = TrainerConfig(max_steps=150, num_rays=1024, output_dir=None, progress=False, checkpoint_every=0,
                                device="cpu", seed=0)  # fmt: skip
        run = prepare_run(data, "ngp", trainer, dataclasses.replace(demo_ngp_config(), depth_loss_weight=weight))
        record = run.trainer.train()
        assert ("depth_l1" in record) == (weight > 0)
        errors[weight] = (mean_depth_error(run.method, data.split("train")), mean_depth_error(run.method, data.split("test")))
    (train_off, test_off), (train_on, test_on) = errors[0.0], errors[0.1]
    print("depth error (train, test) without / with the term:", errors)
    assert train_on < 0.8 * train_off, errors
    assert test_on < 0.8 * test_off, errors
