"""langfield.generation.scene_noise: initial noise shared through a scene's geometry (exact procedural depths)."""

from __future__ import annotations

import math

import pytest
import torch

from langfield._checks import InputError
from langfield.data.procedural import ProceduralSceneConfig, procedural_cameras, render_procedural_view
from langfield.eval.warp import warp_image
from langfield.generation.scene_noise import lattice_noise, latent_points, scene_latent_noise
from langfield.types import Cameras

F = 4  # 64 px views -> 16x16 latents


def turned(cam: Cameras, angle: float) -> Cameras:
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return Cameras.create((rot @ cam.c2w[0])[None], cam.Ks[0], int(cam.widths[0]), int(cam.heights[0]))


@pytest.fixture(scope="module")
def pair():
    """Camera 0 of the procedural test split at 64 px and the same camera turned 0.12 rad about
    the world z axis, with their exact depths ``[2, 64, 64]``."""
    cam = procedural_cameras(ProceduralSceneConfig(width=64, height=64, num_train=4, num_test=4), "test")[[0]]
    c2w = torch.cat([cam.c2w, turned(cam, 0.12).c2w])
    cams = Cameras.create(c2w, cam.Ks[0], 64, 64)
    depth = torch.stack([render_procedural_view(cams, k, supersample=1)[2][..., 0] for k in range(2)])
    return cams, depth


def _latent_view(cams: Cameras, depth: torch.Tensor):
    """Cameras and block-median depths at the latent resolution (what the noise is defined on)."""
    small = Cameras.create(cams.c2w, cams.Ks * torch.tensor([[1 / F], [1 / F], [1.0]]), 64 // F, 64 // F)
    points, valid = latent_points(depth, cams, F)
    d = torch.stack([(points[k] - cams.c2w[k, :, 3].double()).norm(dim=-1) for k in range(2)]) * valid
    return small, d


def test_covisible_latent_pixels_start_from_the_same_noise_and_the_rest_differ(pair):
    cams, depth = pair
    shared = scene_latent_noise(depth, cams, channels=4, factor=F, seed=3)
    assert shared.shape == (2, 4, 16, 16)
    small, d = _latent_view(cams, depth)
    noise = shared.permute(0, 2, 3, 1).double()
    warped, mask = warp_image(d[0], small[0], noise[1], d[1], small[1], depth_tolerance=0.1)
    assert int(mask.sum()) >= 8
    a, b = noise[0][mask].flatten(), warped[mask].flatten()
    corr = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    # independent noise (another seed for view 1) warps to an unrelated field
    other = scene_latent_noise(depth, cams, channels=4, factor=F, seed=4).permute(0, 2, 3, 1).double()
    w_ind, _ = warp_image(d[0], small[0], other[1], d[1], small[1], depth_tolerance=0.1)
    corr_ind = float(torch.corrcoef(torch.stack([a, w_ind[mask].flatten()]))[0, 1])
    assert corr > 0.7 and abs(corr_ind) < 0.35, (corr, corr_ind)
    # latent pixels with no surface (sky) differ between the views
    _, valid = latent_points(depth, cams, F)
    sky = ~valid[0] & ~valid[1]
    assert int(sky.sum()) > 4 and float((shared[0, :, sky] - shared[1, :, sky]).abs().mean()) > 0.5


def test_the_same_rays_get_identical_noise(pair):
    cams, depth = pair
    # a second camera whose principal point moves by one latent pixel: its latent grid is the
    # first one shifted, so the overlapping latent pixels see exactly the same points
    K = cams.Ks[0].clone()
    K[0, 2] -= F
    both = Cameras.create(torch.stack([cams.c2w[0], cams.c2w[0]]), torch.stack([cams.Ks[0], K]), 64, 64)
    d = torch.stack([render_procedural_view(both, k, supersample=1)[2][..., 0] for k in range(2)])
    n = scene_latent_noise(d, both, channels=4, factor=F, seed=0)
    _, valid = latent_points(d, both, F)
    overlap = valid[0, :, 1:] & valid[1, :, :-1]
    assert int(overlap.sum()) > 5
    torch.testing.assert_close(n[0, :, :, 1:][:, overlap], n[1, :, :, :-1][:, overlap], rtol=0, atol=1e-6)


def test_noise_is_unit_normal_per_entry():
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(20000, 3, generator=g) * 10.0
    n = lattice_noise(pts, 2, 0.37, seed=5)
    assert abs(float(n.mean())) < 0.03 and abs(float(n.std()) - 1.0) < 0.03
    # kurtosis of a normal is 3 (a uniform would give 1.8)
    assert abs(float((n**4).mean()) - 3.0) < 0.25
    assert not torch.equal(lattice_noise(pts[:10], 2, 0.37, seed=6), n[:10])


def test_bad_input_is_refused(pair):
    cams, depth = pair
    with pytest.raises(InputError, match="depth"):
        scene_latent_noise(depth[:, :60], cams, channels=4, factor=F)
    with pytest.raises(InputError, match="multiple"):
        scene_latent_noise(depth, cams, channels=4, factor=7)
    with pytest.raises(InputError, match="cell_size"):
        scene_latent_noise(depth, cams, channels=4, factor=F, cell_size=0.0)
