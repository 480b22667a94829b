"""Declared capabilities and partial renders: ``render_camera(keep=...)`` on NGP (sample filter) and
Gaussians (mask), ``sample_weights`` matching the colour render, and the SplatsGaussians helpers."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from langfield.methods.base import SceneInfo
from langfield.methods.capabilities import SharesRayWeights, SplatsGaussians
from langfield.methods.gaussians import DefaultStrategy, Gaussians, GaussiansConfig
from langfield.methods.ngp import NGP
from langfield.runs.train import train
from langfield.training.trainer import TrainerConfig

from langfield.ops.occupancy import OccupancyGridConfig

from .test_methods import CONFIGS

SMALL_NGP = dataclasses.replace(
    CONFIGS["ngp"], grid=OccupancyGridConfig(resolution=32, warmup_steps=8), target_samples_per_step=8192, max_rays=1024
)


@pytest.fixture(scope="module")
def trained(tiny_scene, tmp_path_factory):
    """A briefly trained NGP and Gaussians run on the tiny procedural scene."""
    out = {}
    for name, cfg in (("ngp", SMALL_NGP),
                      ("gaussians", GaussiansConfig(init_num_random=800, strategy=DefaultStrategy(refine_start_iter=10**6)))):
        tc = TrainerConfig(max_steps=25, num_rays=256, output_dir=None, progress=False, device="cpu")
        out[name] = train(tiny_scene, name, tc, cfg).method.eval()
    return out


def _camera(tiny_scene):
    return tiny_scene.split("test").cameras[0]


def test_declared_capabilities():
    assert issubclass(NGP, SharesRayWeights) and not issubclass(NGP, SplatsGaussians)
    assert issubclass(Gaussians, SplatsGaussians) and not issubclass(Gaussians, SharesRayWeights)


def test_ngp_sample_filter_removes_what_it_rejects(trained, tiny_scene):
    ngp, cam, white = trained["ngp"], _camera(tiny_scene), torch.ones(3)
    full = ngp.render_camera(cam, white)
    assert float(full.accumulation.max()) > 0.5  # the scene is visible at all
    same = ngp.render_camera(cam, white, keep=lambda p: torch.ones(len(p), dtype=torch.bool))
    assert torch.equal(same.rgb, full.rgb)
    empty = ngp.render_camera(cam, white, keep=lambda p: torch.zeros(len(p), dtype=torch.bool))
    assert torch.allclose(empty.rgb, torch.ones_like(empty.rgb)) and float(empty.accumulation.max()) == 0.0
    # remove one half-space: what is behind the removed part must still be rendered, so the
    # accumulation of the filtered render is above zero where the kept half is seen
    half = ngp.render_camera(cam, white, keep=lambda p: p[:, 0] > 0)
    assert 0 < float(half.accumulation.sum()) < float(full.accumulation.sum())
    with pytest.raises(ValueError, match="bool"):
        ngp.render_camera(cam, white, keep=lambda p: p[:, 0])
    with pytest.raises(TypeError, match="sample filter"):
        ngp.render_camera(cam, white, keep=torch.ones(3, dtype=torch.bool))


def test_sample_weights_are_the_colour_render_weights(trained, tiny_scene):
    from langfield.geometry.rays import rays_from_camera

    ngp, cam = trained["ngp"], _camera(tiny_scene)
    rays = rays_from_camera(cam, 0, ngp.near, ngp.far).flatten()
    pos, w, ridx = ngp.sample_weights(rays)
    acc = torch.zeros(len(rays)).index_add_(0, ridx, w)
    render = ngp.render_camera(cam, torch.ones(3))
    assert torch.allclose(acc, render.accumulation.reshape(-1), atol=1e-5)
    assert pos.shape == (len(w), 3) and torch.equal(ngp.field_bounds(), ngp.aabb)
    every, solid = ngp.solid_points(0.0), ngp.solid_points(0.5)
    assert every.ndim == 2 and every.shape[1] == 3 and len(every) > 0 and len(solid) <= len(every)
    assert bool(((every >= ngp.aabb[0]) & (every <= ngp.aabb[1])).all())


def test_gaussian_mask_renders_a_subset(trained, tiny_scene):
    gs, cam, white = trained["gaussians"], _camera(tiny_scene), torch.ones(3)
    n = gs.gaussian_cloud().num_gaussians
    full = gs.render_camera(cam, white)
    assert torch.equal(gs.render_camera(cam, white, keep=torch.ones(n, dtype=torch.bool)).rgb, full.rgb)
    none = gs.render_camera(cam, white, keep=torch.zeros(n, dtype=torch.bool))
    assert torch.allclose(none.rgb, torch.ones_like(none.rgb))
    view = gs.project_view(cam)
    assert view.projection.means2d.shape == (n, 2) and (view.width, view.height) == (16, 16)
    assert gs.splat_settings() == gs.config.splat
    with pytest.raises(ValueError, match="bool tensor"):
        gs.render_camera(cam, white, keep=torch.ones(n - 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="one camera"):
        gs.render_camera(tiny_scene.split("test").cameras, white)
