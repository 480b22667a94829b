"""langfield.eval.warp: warp-PSNR between views of the procedural scene (exact renders, depths and poses)."""

from __future__ import annotations

import math

import pytest
import torch

from langfield._checks import InputError
from langfield.data.procedural import ProceduralSceneConfig, procedural_cameras, render_procedural_view
from langfield.eval.warp import warp_image, warp_psnr, warp_psnr_reference
from langfield.types import Cameras


def solid_texture(cams: Cameras, k: int, depth: torch.Tensor) -> torch.Tensor:
    """``[H, W, 3]`` colours that are a smooth function of the surface point (a "solid texture"):
    what a perfectly 3D-consistent generator would paint; black where the ray misses."""
    h, w = depth.shape
    v, u = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    dirs = torch.stack([u, v, torch.ones_like(u)], -1) @ torch.linalg.inv(cams.Ks[k]).T
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    pts = (dirs * depth[..., None]) @ cams.c2w[k, :, :3].T + cams.c2w[k, :, 3]
    rgb = 0.5 + 0.4 * torch.sin(torch.stack([2.0 * pts[..., 0] + 1, 2.5 * pts[..., 1], 3.0 * pts[..., 2] + pts[..., 0]], -1))
    return rgb * (depth > 0)[..., None]


@pytest.fixture(scope="module")
def views():
    """Two test cameras of the procedural scene at 32 px: (cameras, [(image, depth)] * 2), the
    images a solid texture on the exact procedural geometry."""
    cams = procedural_cameras(ProceduralSceneConfig(width=32, height=32, num_train=4, num_test=8), "test")
    pair = cams[[0, 2]]
    out = []
    for k in range(2):
        depth = render_procedural_view(pair, k, supersample=1)[2][..., 0]
        out.append((solid_texture(pair, k, depth), depth))
    return pair, out


def test_identical_renders_agree_and_a_noised_or_shifted_image_scores_lower(views):
    cams, ((rgb_i, d_i), (rgb_j, d_j)) = views
    res = warp_psnr(rgb_i, d_i, cams[0], rgb_j, d_j, cams[1])
    assert res.psnr > 35.0 and 0.1 < res.covisible_fraction < 1.0, (res.psnr, res.covisible_fraction)
    noisy = (rgb_j + 0.1 * torch.randn(rgb_j.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert warp_psnr(rgb_i, d_i, cams[0], noisy, d_j, cams[1]).psnr < 26.0
    shifted = torch.roll(rgb_j, shifts=2, dims=1)
    assert warp_psnr(rgb_i, d_i, cams[0], shifted, d_j, cams[1]).psnr < res.psnr - 10.0
    # the warp is symmetric in spirit: j -> i agrees too
    assert warp_psnr(rgb_j, d_j, cams[1], rgb_i, d_i, cams[0]).psnr > 35.0


def test_occluded_points_are_not_covisible(views):
    cams, ((rgb_i, d_i), (rgb_j, d_j)) = views
    full = warp_psnr(rgb_i, d_i, cams[0], rgb_j, d_j, cams[1]).mask
    # view j sees a wall at half the distance everywhere: nothing of view i agrees with it
    wall = warp_psnr(rgb_i, d_i, cams[0], rgb_j, 0.5 * d_j, cams[1])
    assert int(full.sum()) > 100 and wall.covisible_fraction == 0.0 and math.isnan(wall.psnr)


def test_cameras_that_share_nothing_give_nan_and_coverage_zero(views):
    cams, ((rgb_i, d_i), (rgb_j, d_j)) = views
    c2w = cams.c2w[1].clone()
    c2w[:, 2] = -c2w[:, 2]  # look the other way (x and y flipped too, keeping a rotation)
    c2w[:, 0] = -c2w[:, 0]
    away = Cameras.create(c2w, cams.Ks[1], 32, 32)
    res = warp_psnr(rgb_i, d_i, cams[0], rgb_j, d_j, away)
    assert math.isnan(res.psnr) and res.covisible_fraction == 0.0 and not bool(res.mask.any())


def nearby_pair(cams: Cameras, size: int, angle: float = 0.08) -> Cameras:
    """Camera 0 of ``cams`` and the same camera turned by ``angle`` about the world z axis, at ``size`` px."""
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    c2w = torch.stack([cams.c2w[0], rot @ cams.c2w[0]])
    return Cameras.create(c2w, cams.Ks[0] * torch.tensor([[size / 32], [size / 32], [1.0]]), size, size)


def test_matches_the_per_pixel_twin_on_a_tiny_pair(views):
    small = nearby_pair(views[0], 12)
    (ri, _, di, _), (rj, _, dj, _) = [render_procedural_view(small, k, supersample=1) for k in range(2)]
    fast = warp_psnr(ri, di, small[0], rj, dj, small[1], depth_tolerance=0.3)
    slow = warp_psnr_reference(ri, di, small[0], rj, dj, small[1], depth_tolerance=0.3)
    assert int(fast.mask.sum()) > 10
    assert torch.equal(fast.mask, slow.mask)
    torch.testing.assert_close(fast.warped, slow.warped, rtol=0, atol=1e-6)
    assert fast.psnr == pytest.approx(slow.psnr, abs=1e-6)


def test_gradients_flow_to_image_j_and_match_finite_differences(views):
    small = nearby_pair(views[0], 8)
    (_, _, di, _), (_, _, dj, _) = [render_procedural_view(small, k, supersample=1) for k in range(2)]
    img = torch.rand(8, 8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    assert bool(warp_image(di, small[0], img, dj, small[1], depth_tolerance=0.3)[1].any())
    assert torch.autograd.gradcheck(lambda x: warp_image(di, small[0], x, dj, small[1], depth_tolerance=0.3)[0], (img,))


def test_bad_input_is_refused_with_the_argument_named(views):
    cams, ((rgb_i, d_i), (rgb_j, d_j)) = views
    with pytest.raises(InputError, match="image_j"):
        warp_psnr(rgb_i, d_i, cams[0], rgb_j[:16], d_j, cams[1])
    with pytest.raises(InputError, match="depth_i"):
        warp_psnr(rgb_i, d_i[:, :5], cams[0], rgb_j, d_j, cams[1])
    with pytest.raises(InputError, match="cam_i"):
        warp_psnr(rgb_i, d_i, cams, rgb_j, d_j, cams[1])
    with pytest.raises(InputError, match="depth_tolerance"):
        warp_psnr(rgb_i, d_i, cams[0], rgb_j, d_j, cams[1], depth_tolerance=0.0)
