"""Instant-NGP's finest hash-grid resolution sized from the training pixels (``NGPConfig.cells_per_pixel``,
``SceneInfo.pixel_footprint``): the numbers, the clamps, the runs stored before the option, and a
checkpoint that no longer fits."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from langfield._checks import InputError
from langfield.configs import ConfigError, config_from_dict, config_to_dict
from langfield.data.procedural import ProceduralSceneConfig, make_procedural_dataset
from langfield.fields.ngp_field import NGPFieldConfig
from langfield.methods.base import SceneInfo, pixel_footprint
from langfield.methods.ngp import NGP, PAPER_CELLS_PER_PIXEL, NGPConfig
from langfield.ops.hash_encoding import HashGridConfig
from langfield.training.checkpoint import load_method_state
from langfield.types import Cameras

BOX = torch.tensor([[-1.0] * 3, [1.0] * 3])
SMALL = NGPConfig(field=NGPFieldConfig(hash_grid=HashGridConfig(num_levels=4, log2_hashmap_size=12, max_resolution=2048)))


def _cameras(distances, focals) -> Cameras:
    c2w = torch.eye(4).repeat(len(distances), 1, 1)
    c2w[:, 2, 3] = -torch.tensor(distances, dtype=torch.float32)  # on the -z axis, looking at the origin
    Ks = torch.zeros(len(focals), 3, 3)
    Ks[:, 0, 0] = torch.tensor(focals, dtype=torch.float32)
    Ks[:, 1, 1] = torch.tensor(focals, dtype=torch.float32)
    Ks[:, 0, 2] = Ks[:, 1, 2] = 32.0
    Ks[:, 2, 2] = 1.0
    return Cameras.create(c2w, Ks, widths=64, heights=64)


def _scene(footprint, unbounded=False) -> SceneInfo:
    return SceneInfo(scene_box=BOX.clone(), near=0.1, far=6.0, num_train_images=1, unbounded=unbounded, pixel_footprint=footprint)


def test_pixel_footprint_is_the_median_distance_over_focal():
    cams = _cameras([3.0, 4.0, 10.0], [100.0, 100.0, 50.0])  # 0.03, 0.04, 0.2 -> median 0.04
    assert pixel_footprint(cams, BOX) == pytest.approx(0.04, rel=1e-6)
    shifted = BOX + torch.tensor([0.0, 0.0, 1.0])  # box centre at z = 1: distances 4, 5, 11
    assert pixel_footprint(cams, shifted) == pytest.approx(0.05, rel=1e-6)
    assert pixel_footprint(_cameras([0.0], [100.0]), BOX) is None  # camera at the centre: no footprint


def test_scene_info_from_a_dataset_carries_the_footprint():
    ds = make_procedural_dataset(ProceduralSceneConfig(width=16, height=16, num_train=4, num_test=1, supersample=1))
    info = SceneInfo.from_dataset(ds)
    cams = ds.split("train").cameras
    dist = (cams.c2w[:, :3, 3].double() - ds.scene_box.double().mean(dim=0)).norm(dim=-1)
    expected = float((dist / cams.Ks[:, 0, 0].double()).median())
    assert info.pixel_footprint == pytest.approx(expected, rel=1e-6)


def test_resolved_max_resolution_follows_the_pixels_and_its_clamps():
    # The paper's NeRF setting: 827 footprints across the box at 2.5 cells each ~ 2048.
    assert math.ceil(PAPER_CELLS_PER_PIXEL * 3.0 / (4.031 / 1111.1)) == pytest.approx(2068, abs=5)
    # A 64-px scene: box side 2, footprint 0.0426 -> ceil(2.5 * 2 / 0.0426) = 118.
    assert SMALL.resolved_max_resolution(_scene(0.0426), None) == 118
    # Twice the span with a contraction (the grid covers the contracted [-2, 2]).
    assert SMALL.resolved_max_resolution(_scene(0.0426, True), "linf") == 235
    # Never above the configured N_max, never below N_min.
    assert SMALL.resolved_max_resolution(_scene(1e-4), None) == 2048
    assert SMALL.resolved_max_resolution(_scene(10.0), None) == 16
    # Off, unknown footprint (NDC), or a one-level grid: the configured N_max.
    off = dataclasses.replace(SMALL, cells_per_pixel=None)
    assert off.resolved_max_resolution(_scene(0.0426), None) == 2048
    assert SMALL.resolved_max_resolution(_scene(None), None) == 2048
    one = NGPConfig(field=NGPFieldConfig(hash_grid=HashGridConfig(num_levels=1, log2_hashmap_size=10, base_resolution=16, max_resolution=16)))
    assert one.resolved_max_resolution(_scene(0.0426), None) == 16


def test_ngp_builds_its_grid_at_the_resolved_resolution():
    method = NGP(_scene(0.0426), SMALL)
    assert method.max_resolution == 118
    assert method.field.encoding.config.max_resolution == 118
    assert method.field.encoding.config.resolutions()[-1] == 118
    assert NGP(_scene(None), SMALL).field.encoding.config.max_resolution == 2048


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_cells_per_pixel_is_refused(bad):
    with pytest.raises((InputError, ConfigError), match="cells_per_pixel"):
        dataclasses.replace(SMALL, cells_per_pixel=bad)


def test_runs_stored_before_the_option_keep_the_configured_resolution():
    stored = config_to_dict(SMALL)
    stored.pop("cells_per_pixel")
    old = config_from_dict(NGPConfig, stored)
    assert old.cells_per_pixel is None
    assert NGP(_scene(0.0426), old).max_resolution == 2048
    assert config_from_dict(NGPConfig, config_to_dict(SMALL)).cells_per_pixel == PAPER_CELLS_PER_PIXEL


def test_a_checkpoint_of_another_resolution_is_refused_by_name():
    # Paper-sized tables: the dense coarse levels change size with N_max, so the weights do not fit.
    cfg = NGPConfig(field=NGPFieldConfig(hash_grid=HashGridConfig(num_levels=6, log2_hashmap_size=17, max_resolution=2048)))
    coarse, fine = NGP(_scene(0.0426), cfg), NGP(_scene(0.01), cfg)  # N_max 118 and 500
    assert coarse.field.encoding.config.num_rows != fine.field.encoding.config.num_rows
    with pytest.raises(InputError, match="ckpt-under-test"):
        load_method_state(fine, coarse.state_dict(), "ckpt-under-test")
    # Small tables hash every level (same length): the resume state says which N_max it was.
    a, b = NGP(_scene(0.0426), SMALL), NGP(_scene(0.01), SMALL)
    assert a.field.encoding.config.num_rows == b.field.encoding.config.num_rows
    assert a.extra_state()["max_resolution"] == 118
    with pytest.raises(InputError, match="finest resolution 118.*resolves to 500"):
        b.load_extra_state(a.extra_state())
    b.load_extra_state({"samples_per_ray": 4.0, "step": 3})  # checkpoints written before: nothing to check
    a.load_extra_state(a.extra_state())
