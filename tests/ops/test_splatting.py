"""Gaussian splatting ops: projection, binning and blending against hand-computed values and the
dense reference twin (values and gradients)."""

from __future__ import annotations

import math

import pytest
import torch

from langfield.ops.reference.splatting import project_gaussians_reference, rasterize_gaussians_reference
from langfield.ops.splatting import (
    SplatSettings,
    bin_gaussians,
    project_gaussians,
    rasterize_gaussians,
    render_gaussians,
)

D64 = torch.float64


def random_screen_gaussians(n, width, height, channels=3, seed=0, dtype=D64, max_sigma=4.0):
    g = torch.Generator().manual_seed(seed)
    means2d = torch.rand(n, 2, generator=g, dtype=dtype) * torch.tensor([width, height], dtype=dtype)
    A = torch.randn(n, 2, 2, generator=g, dtype=dtype) * max_sigma / 2
    cov = A @ A.transpose(1, 2) + 0.5 * torch.eye(2, dtype=dtype)
    inv = torch.linalg.inv(cov)
    conics = torch.stack([inv[:, 0, 0], inv[:, 0, 1], inv[:, 1, 1]], -1)
    radii = torch.ceil(3 * torch.linalg.eigvalsh(cov)[:, -1].sqrt()).to(torch.int32)
    opacities = torch.rand(n, generator=g, dtype=dtype) * 0.9 + 0.05
    features = torch.rand(n, channels, generator=g, dtype=dtype)
    depths = torch.rand(n, generator=g, dtype=dtype) * 5 + 1
    return means2d, conics, opacities, features, depths, radii


def isotropic(sigma, n=1, dtype=D64):
    return torch.tensor([[1 / sigma**2, 0.0, 1 / sigma**2]], dtype=dtype).expand(n, 3).clone()


# ---------------------------------------------------------------------------------- hand values


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_one_gaussian_on_a_pixel_centre(backend):
    # Centred on pixel (2, 3): power 0 there, alpha = opacity; a neighbour one pixel right has
    # power -0.5 / sigma^2.
    means2d = torch.tensor([[3.5, 2.5]])
    out, alpha = rasterize_gaussians(
        means2d, isotropic(2.0, dtype=torch.float32), torch.tensor([0.6]), torch.tensor([[1.0, 0.5, 0.0]]),
        torch.tensor([1.0]), torch.tensor([6], dtype=torch.int32), 8, 6, torch.tensor([0.0, 0.0, 1.0]),
        backend=backend,
    )
    assert torch.allclose(out[2, 3], torch.tensor([0.6, 0.3, 0.4]), atol=1e-6)
    a = 0.6 * math.exp(-0.5 / 4.0)
    assert torch.allclose(out[2, 4], torch.tensor([a, 0.5 * a, 1 - a]), atol=1e-6)
    assert abs(float(alpha[2, 3, 0]) - 0.6) < 1e-6


def test_two_overlapping_gaussians_blend_front_to_back(device, dtype):
    # Both centred on pixel (0, 0); the nearer one (depth 1) is blended first regardless of order.
    def tensor(values, dtype=dtype):
        return torch.tensor(values, dtype=dtype, device=device)

    means2d = tensor([[0.5, 0.5], [0.5, 0.5]])
    conics = isotropic(1.0, 2, dtype=dtype).to(device)
    opac = tensor([0.5, 0.8])
    feats = tensor([[1.0, 0.0], [0.0, 1.0]])
    depths = tensor([2.0, 1.0])  # the second Gaussian is in front
    radii = tensor([3, 3], dtype=torch.int32)
    bg = tensor([0.25, 0.25])
    out, alpha = rasterize_gaussians(means2d, conics, opac, feats, depths, radii, 4, 4, bg, backend="torch")
    assert out.dtype == dtype and out.device.type == device.type
    # front: alpha .8, T=1 -> (0, .8); back: alpha .5, T=.2 -> (.1, 0); T_final = .1
    torch.testing.assert_close(out[0, 0], tensor([0.1 + 0.025, 0.8 + 0.025]))
    torch.testing.assert_close(alpha[0, 0], tensor([0.9]))


def test_clamp_and_transmittance_stop_follow_the_reference_rules():
    # Five Gaussians with alpha 0.95 at one pixel: T goes 1, .05, .0025, .000125; the fourth would
    # take T to 6.25e-6 < 1e-4, so blending stops after three.
    n = 5
    means2d = torch.full((n, 2), 0.5, dtype=D64)
    feats = torch.eye(n, dtype=D64)
    depths = torch.arange(n, dtype=D64)
    radii = torch.full((n,), 2, dtype=torch.int32)
    out, alpha = rasterize_gaussians(means2d, isotropic(1.0, n), torch.full((n,), 0.95, dtype=D64), feats,
                                     depths, radii, 2, 2, backend="torch")
    expect = torch.tensor([0.95, 0.05 * 0.95, 0.0025 * 0.95, 0.0, 0.0], dtype=D64)
    assert torch.allclose(out[0, 0], expect)
    assert abs(float(alpha[0, 0]) - (1 - 0.000125)) < 1e-12
    # Opacity above 0.99 is clamped to 0.99.
    out, _ = rasterize_gaussians(means2d[:1], isotropic(1.0), torch.tensor([0.999], dtype=D64), feats[:1, :1],
                                 depths[:1], radii[:1], 2, 2, backend="torch")
    assert abs(float(out[0, 0, 0]) - 0.99) < 1e-12
    # Below 1/255 a Gaussian is skipped entirely.
    out, _ = rasterize_gaussians(means2d[:1], isotropic(1.0), torch.tensor([0.003], dtype=D64), feats[:1, :1],
                                 depths[:1], radii[:1], 2, 2, backend="torch")
    assert float(out.abs().max()) == 0.0


def test_projection_of_a_point_on_the_axis():
    # A unit-scale Gaussian 2 m in front of a camera looking down +z: centre at the principal
    # point, 2D covariance (f/z)^2 + 0.3.
    means = torch.tensor([[0.0, 0.0, 2.0]])
    K = torch.tensor([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]])
    p = project_gaussians(means, torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.1), torch.eye(4), K, 64, 48)
    assert torch.allclose(p.means2d, torch.tensor([[32.0, 24.0]]))
    var = (100 * 0.1 / 2) ** 2 + 0.3
    assert torch.allclose(p.conics, torch.tensor([[1 / var, 0.0, 1 / var]]), rtol=1e-5)
    assert int(p.radii[0]) == math.ceil(3 * math.sqrt(var))
    assert torch.allclose(p.distances, torch.tensor([2.0]))


def test_projection_culls_behind_and_off_screen():
    means = torch.tensor([[0.0, 0.0, -1.0], [50.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    K = torch.tensor([[50.0, 0, 16], [0, 50.0, 16], [0, 0, 1]])
    p = project_gaussians(means, torch.tensor([[1.0, 0, 0, 0]]).repeat(3, 1), torch.full((3, 3), 0.01),
                          torch.eye(4), K, 32, 32)
    assert p.radii.tolist()[:2] == [0, 0] and int(p.radii[2]) > 0
    assert torch.isfinite(p.conics).all()


# ---------------------------------------------------------------------------------- twins


def random_gaussians_3d(n, seed=0, dtype=D64):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=dtype) * 0.6 + torch.tensor([0, 0, 4.0], dtype=dtype)
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.rand(n, 3, generator=g, dtype=dtype) * 0.2 + 0.02
    return means, quats, scales


def camera(dtype=D64):
    K = torch.tensor([[40.0, 0, 17.0], [0, 42.0, 13.0], [0, 0, 1]], dtype=dtype)
    ang = 0.1
    R = torch.tensor([[math.cos(ang), 0, math.sin(ang)], [0, 1, 0], [-math.sin(ang), 0, math.cos(ang)]], dtype=dtype)
    w2c = torch.eye(4, dtype=dtype)
    w2c[:3, :3] = R
    w2c[:3, 3] = torch.tensor([0.1, -0.2, 0.3], dtype=dtype)
    return w2c, K


def test_projection_matches_reference_values_and_gradients():
    means, quats, scales = random_gaussians_3d(25)
    means[0, 2] = -1.0  # behind the camera
    means[1] = torch.tensor([30.0, 0.0, 2.0], dtype=D64)  # far outside the field of view
    w2c, K = camera()
    inputs = [t.clone().requires_grad_(True) for t in (means, quats, scales)]
    ref_inputs = [t.clone().requires_grad_(True) for t in (means, quats, scales)]
    fast = project_gaussians(*inputs, w2c, K, 34, 26)
    ref = project_gaussians_reference(*ref_inputs, w2c, K, 34, 26)
    assert torch.equal(fast.radii, ref[3])
    vis = fast.radii > 0
    for a, b in zip((fast.means2d, fast.conics, fast.depths, fast.distances), ref[:3] + (ref[4],)):
        assert torch.allclose(a[vis], b[vis], rtol=1e-10, atol=1e-10)
    g = torch.Generator().manual_seed(3)
    ups = [torch.randn(t.shape, generator=g, dtype=D64) * vis.reshape(-1, *[1] * (t.ndim - 1))
           for t in (fast.means2d, fast.conics, fast.distances)]
    sum(((o * u).sum() for o, u in zip((fast.means2d, fast.conics, fast.distances), ups))).backward()
    sum(((o * u).sum() for o, u in zip((ref[0], ref[1], ref[4]), ups))).backward()
    for a, b in zip(inputs, ref_inputs):
        assert torch.allclose(a.grad, b.grad, rtol=1e-8, atol=1e-10)


def test_projection_gradcheck():
    means, quats, scales = random_gaussians_3d(4, seed=1)
    w2c, K = camera()

    def fn(m, q, s):
        p = project_gaussians(m, q, s, w2c, K, 34, 26)
        return p.means2d, p.conics, p.distances

    assert torch.autograd.gradcheck(fn, tuple(t.requires_grad_(True) for t in (means, quats, scales)))


def test_binning_lists_each_tile_front_to_back():
    means2d, conics, opac, feats, depths, radii = random_screen_gaussians(40, 50, 35, seed=2)
    radii[3] = 0
    bins = bin_gaussians(means2d, radii, depths, 50, 35, 16)
    assert (bins.tiles_x, bins.tiles_y) == (4, 3)
    for t in range(12):
        s, e = bins.tile_ranges[t].tolist()
        ids = bins.gaussian_ids[s:e]
        assert torch.all(depths[ids][1:] >= depths[ids][:-1])
        tx, ty = t % 4, t // 4
        expect = []
        for i in range(40):
            r = int(radii[i])
            x0, x1 = math.floor((means2d[i, 0] - r) / 16), math.floor((means2d[i, 0] + r) / 16)
            y0, y1 = math.floor((means2d[i, 1] - r) / 16), math.floor((means2d[i, 1] + r) / 16)
            if r > 0 and x0 <= tx <= x1 and y0 <= ty <= y1:
                expect.append(i)
        assert sorted(ids.tolist()) == expect


@pytest.mark.parametrize("tile_size,channels", [(16, 3), (8, 1), (4, 7)])
def test_torch_rasterizer_matches_reference_values_and_gradients(tile_size, channels):
    width, height = 37, 29
    data = random_screen_gaussians(60, width, height, channels, seed=tile_size)
    means2d, conics, opac, feats, depths, radii = data
    bg = torch.rand(channels, dtype=D64)
    a = [t.clone().requires_grad_(True) for t in (means2d, conics, opac, feats, bg)]
    b = [t.clone().requires_grad_(True) for t in (means2d, conics, opac, feats, bg)]
    img_a, al_a = rasterize_gaussians(a[0], a[1], a[2], a[3], depths, radii, width, height, a[4], tile_size,
                                      backend="torch", chunk_elements=5000)
    img_b, al_b = rasterize_gaussians_reference(b[0], b[1], b[2], b[3], radii, width, height, b[4], tile_size,
                                                depths=depths)
    assert torch.allclose(img_a, img_b, atol=1e-12) and torch.allclose(al_a, al_b, atol=1e-12)
    g = torch.Generator().manual_seed(7)
    up_img, up_al = torch.randn(img_a.shape, generator=g, dtype=D64), torch.randn(al_a.shape, generator=g, dtype=D64)
    ((img_a * up_img).sum() + (al_a * up_al).sum()).backward()
    ((img_b * up_img).sum() + (al_b * up_al).sum()).backward()
    for x, y in zip(a, b):
        assert torch.allclose(x.grad, y.grad, atol=1e-10)
    assert a[0].grad.abs().sum() > 0


def test_reference_and_torch_rasterizer_gradcheck():
    means2d, conics, opac, feats, depths, radii = random_screen_gaussians(6, 9, 7, 2, seed=4, max_sigma=2.0)
    bg = torch.rand(2, dtype=D64)
    inputs = tuple(t.clone().requires_grad_(True) for t in (means2d, conics, opac, feats, bg))

    def ref(m, c, o, f, b):
        return rasterize_gaussians_reference(m, c, o, f, radii, 9, 7, b, 4, depths=depths)

    def fast(m, c, o, f, b):
        return rasterize_gaussians(m, c, o, f, depths, radii, 9, 7, b, 4, backend="torch")

    assert torch.autograd.gradcheck(ref, inputs)
    assert torch.autograd.gradcheck(fast, inputs)


def test_render_gaussians_depth_and_features():
    # One large opaque Gaussian straight ahead at 3 m: centre pixel is its colour, depth ~3.
    means = torch.tensor([[0.0, 0.0, 3.0]])
    K = torch.tensor([[30.0, 0, 16.5], [0, 30.0, 16.5], [0, 0, 1]])  # mean on pixel (16, 16)'s centre
    out = render_gaussians(
        means, torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 1.0), torch.tensor([0.98]),
        torch.tensor([[0.2, 0.4, 0.6]]), torch.eye(4)[:3], K, 32, 32, torch.ones(3),
        features=torch.tensor([[5.0, -1.0]]), settings=SplatSettings(backend="torch"),
    )
    r = out.render
    assert r.rgb.shape == (32, 32, 3) and r.features.shape == (32, 32, 2) and r.depth.shape == (32, 32, 1)
    assert torch.allclose(r.rgb[16, 16], 0.98 * torch.tensor([0.2, 0.4, 0.6]) + 0.02, atol=1e-3)
    assert abs(float(r.depth[16, 16]) - 3.0) < 1e-4
    assert torch.allclose(r.features[16, 16], 0.98 * torch.tensor([5.0, -1.0]), atol=1e-3)


def test_bad_inputs_name_the_argument():
    means2d, conics, opac, feats, depths, radii = random_screen_gaussians(5, 8, 8)
    with pytest.raises(ValueError, match="conics"):
        rasterize_gaussians(means2d, conics[:, :2], opac, feats, depths, radii, 8, 8)
    with pytest.raises(ValueError, match="features"):
        rasterize_gaussians(means2d, conics, opac, feats[:4], depths, radii, 8, 8)
    with pytest.raises(ValueError, match="background"):
        rasterize_gaussians(means2d, conics, opac, feats, depths, radii, 8, 8, torch.zeros(2, dtype=D64))
    with pytest.raises(ValueError, match="backend"):
        rasterize_gaussians(means2d, conics, opac, feats, depths, radii, 8, 8, backend="cuda-magic")
    with pytest.raises(ValueError, match="focal"):
        project_gaussians(torch.zeros(1, 3), torch.tensor([[1.0, 0, 0, 0]]), torch.ones(1, 3), torch.eye(4),
                          torch.zeros(3, 3), 8, 8)


def test_cpp_backend_through_autograd_matches_reference():
    from langfield.kernels.gaussian_rasterize_cpu import cpp_available

    if not cpp_available():
        pytest.skip("C++ Gaussian rasteriser unavailable")
    width, height, channels = 41, 23, 4
    means2d, conics, opac, feats, depths, radii = random_screen_gaussians(80, width, height, channels, seed=11,
                                                                           dtype=torch.float32)
    bg = torch.rand(channels)
    a = [t.clone().requires_grad_(True) for t in (means2d, conics, opac, feats, bg)]
    b = [t.double().clone().requires_grad_(True) for t in (means2d, conics, opac, feats, bg)]
    img_a, al_a = rasterize_gaussians(a[0], a[1], a[2], a[3], depths, radii, width, height, a[4], backend="cpp")
    img_b, al_b = rasterize_gaussians_reference(b[0], b[1], b[2], b[3], radii, width, height, b[4], depths=depths)
    assert torch.allclose(img_a.double(), img_b, atol=2e-5) and torch.allclose(al_a.double(), al_b, atol=2e-5)
    g = torch.Generator().manual_seed(5)
    up_img = torch.randn(img_a.shape, generator=g)
    up_al = torch.randn(al_a.shape, generator=g)
    ((img_a * up_img).sum() + (al_a * up_al).sum()).backward()
    ((img_b * up_img.double()).sum() + (al_b * up_al.double()).sum()).backward()
    for x, y in zip(a, b):
        scale = float(y.grad.abs().max()) + 1e-12
        assert float((x.grad.double() - y.grad).abs().max()) / scale < 1e-4
