"""Coarse-to-fine Gaussian training (``GaussiansConfig.num_downscales``): the schedule follows the
trainer's progress, the sampler area-averages the image and rescales its camera to match, and a run
trains at 1/4, 1/2 and full resolution in turn, then evaluates at full resolution."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from langfield.data.procedural import ProceduralSceneConfig, make_procedural_dataset
from langfield.data.samplers import ImageSampler
from langfield.methods.base import SceneInfo
from langfield.methods.gaussians import Gaussians, GaussiansConfig
from langfield.methods.gaussians.method import MIN_TRAIN_SIDE
from langfield.runs.train import prepare_run
from tests.methods.gaussians.test_method import SMALL, trainer_config


def test_schedule_doubles_the_resolution_every_interval(tiny_scene):
    method = Gaussians(SceneInfo.from_dataset(tiny_scene), dataclasses.replace(SMALL, num_downscales=2, downscale_interval=0.25))
    got = [method.training_downscale(p) for p in (0.0, 0.2499, 0.25, 0.49, 0.5, 0.75, 1.0, 1.5, -1.0)]
    assert got == [4, 4, 2, 2, 1, 1, 1, 1, 4]
    plain = Gaussians(SceneInfo.from_dataset(tiny_scene), SMALL)
    assert {plain.training_downscale(p) for p in (0.0, 0.5, 1.0)} == {1}


def test_sampler_area_averages_the_image_and_rescales_its_camera(tiny_scene):
    train = tiny_scene.split("train")
    factor = {"d": 1}
    sampler = ImageSampler(train, background="white", downscale=lambda: factor["d"])
    full = sampler.sample(5)
    factor["d"] = 4
    small = sampler.sample(5)  # same image: the permutation depends on (seed, epoch) only
    assert small.index == full.index and small.rgb.shape == (4, 4, 3)
    assert sampler.num_rays == 16  # the trainer's rays/s counts the pixels actually rendered
    blocks = full.rgb.reshape(4, 4, 4, 4, 3).mean(dim=(1, 3))  # 4x4 blocks of the 16x16 image
    torch.testing.assert_close(small.rgb, blocks)
    cam, cam_full = small.cameras, full.cameras
    assert int(cam.widths[0]) == 4 and int(cam.heights[0]) == 4
    torch.testing.assert_close(cam.Ks[0, :2], cam_full.Ks[0, :2] / 4)
    torch.testing.assert_close(cam.c2w, cam_full.c2w)
    factor["d"] = 0
    with pytest.raises(ValueError, match="downscale"):
        sampler.sample(5)
    with pytest.raises(TypeError, match="downscale"):
        ImageSampler(train, downscale=2)


def _train_recording_widths(scene, config, out_dir, steps=8):
    """Train ``steps`` steps; ``(run, train record, the width of the image each step rendered)``."""
    run = prepare_run(scene, "gaussians", trainer_config(out_dir, steps), config)
    widths = []
    original = run.method.outputs
    run.method.outputs = lambda cams, bg: widths.append(int(cams.widths[0])) or original(cams, bg)
    record = run.trainer.train()
    return run, record, widths


def test_a_run_trains_coarse_to_fine_and_evaluates_at_full_size(tmp_path):
    scene = make_procedural_dataset(ProceduralSceneConfig(width=64, height=48, num_train=4, num_test=1))
    config = dataclasses.replace(SMALL, num_downscales=3, downscale_interval=0.25)
    run, record, widths = _train_recording_widths(scene, config, tmp_path)
    # progress = step / 8: 1/8 is capped at 1/2 (48 px // 4 = 12 < MIN_TRAIN_SIDE), then 1/2, full
    assert MIN_TRAIN_SIDE == 16 and widths == [32, 32, 32, 32, 32, 32, 64, 64]
    assert torch.isfinite(torch.tensor(record["loss"]))
    test = scene.split("test").cameras
    assert run.method.render_camera(test[0], torch.ones(3)).rgb.shape == (48, 64, 3)


def test_coarse_to_fine_is_off_for_images_too_small_to_shrink(tiny_scene, tmp_path):
    run = prepare_run(tiny_scene, "gaussians", trainer_config(tmp_path, 2), dataclasses.replace(SMALL, num_downscales=2))
    assert run.trainer.sampler.sample(0).rgb.shape == (16, 16, 3)  # 16 px is the floor already


def test_coarse_min_side_keeps_smaller_images_at_full_size(tmp_path):
    scene = make_procedural_dataset(ProceduralSceneConfig(width=64, height=48, num_train=4, num_test=1))
    for min_side, expected in ((32, [64] * 8), (24, [32] * 6 + [64] * 2)):  # 48 // 2 = 24: one coarse level at most
        config = dataclasses.replace(SMALL, num_downscales=3, downscale_interval=0.25, coarse_min_side=min_side)
        widths = _train_recording_widths(scene, config, tmp_path / str(min_side))[2]
        assert widths == expected, min_side


def test_bad_schedule_settings_are_refused():
    with pytest.raises(ValueError, match="coarse_min_side"):
        GaussiansConfig(coarse_min_side=8)  # below D-SSIM's floor
    with pytest.raises(ValueError, match="num_downscales"):
        GaussiansConfig(num_downscales=-1)
    with pytest.raises(ValueError, match="downscale_interval"):
        GaussiansConfig(downscale_interval=0.0)
    with pytest.raises(ValueError, match="downscale_interval"):
        GaussiansConfig(downscale_interval=1.5)
