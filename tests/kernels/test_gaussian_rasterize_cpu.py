"""C++ Gaussian rasteriser (3DGS tile blending, Kerbl et al. 2023): forward and exact backward.

Checked against (a) a small differentiable torch twin written here from the kernel's pseudo-code
(also pins ``final_T`` and ``last``) and (b) the project's dense reference
(:func:`langfield.ops.reference.splatting.rasterize_gaussians_reference`) with the project's
tile binning.
"""

from __future__ import annotations

import math

import pytest
import torch

from langfield.kernels import gaussian_rasterize_cpu as gr

pytestmark = pytest.mark.skipif(
    not gr.cpp_available(), reason="C++ Gaussian rasteriser unavailable (LANGFIELD_NO_CPP or build failure)"
)


# ------------------------------------------------------------------------------ scenes


def _random_scene(n, width, height, channels, seed, *, radius=(1.0, 6.0), opacity=(0.05, 0.95), margin=4.0):
    """Random projected Gaussians: means2d, conics, opacities, features, background, radii, depths."""
    gen = torch.Generator().manual_seed(seed)
    lo = torch.tensor([-margin, -margin])
    span = torch.tensor([width + 2 * margin, height + 2 * margin])
    means = lo + torch.rand(n, 2, generator=gen) * span
    sigma_major = (radius[0] + (radius[1] - radius[0]) * torch.rand(n, generator=gen)) / 3.0
    sigma_minor = sigma_major * (0.3 + 0.7 * torch.rand(n, generator=gen))
    theta = torch.rand(n, generator=gen) * math.pi
    cos, sin = theta.cos(), theta.sin()
    cxx = cos**2 * sigma_major**2 + sin**2 * sigma_minor**2
    cyy = sin**2 * sigma_major**2 + cos**2 * sigma_minor**2
    cxy = cos * sin * (sigma_major**2 - sigma_minor**2)
    det = cxx * cyy - cxy**2
    conics = torch.stack([cyy / det, -cxy / det, cxx / det], -1).contiguous()
    opacities = opacity[0] + (opacity[1] - opacity[0]) * torch.rand(n, generator=gen)
    features = torch.randn(n, channels, generator=gen)
    background = torch.rand(channels, generator=gen)
    radii = (3.0 * sigma_major).ceil()
    depths = torch.rand(n, generator=gen) + 0.1
    return means, conics, opacities, features, background, radii, depths


def _bin_local(means, radii, depths, width, height, tile_size):
    """Tile lists: a Gaussian goes to every tile its (mean +- radius) square touches, front to back."""
    tiles_x = (width + tile_size - 1) // tile_size
    tiles_y = (height + tile_size - 1) // tile_size
    tiles, ids = [], []
    for g in range(means.shape[0]):
        r = float(radii[g])
        if r <= 0:
            continue
        x0 = max(0, math.floor((float(means[g, 0]) - r) / tile_size))
        x1 = min(tiles_x - 1, math.floor((float(means[g, 0]) + r) / tile_size))
        y0 = max(0, math.floor((float(means[g, 1]) - r) / tile_size))
        y1 = min(tiles_y - 1, math.floor((float(means[g, 1]) + r) / tile_size))
        for ty in range(y0, y1 + 1):
            for tx in range(x0, x1 + 1):
                tiles.append(ty * tiles_x + tx)
                ids.append(g)
    tiles_t = torch.tensor(tiles, dtype=torch.int64)
    ids_t = torch.tensor(ids, dtype=torch.int64)
    if ids_t.numel():
        order = sorted(range(len(ids)), key=lambda i: (tiles[i], float(depths[ids[i]]), ids[i]))
        order_t = torch.tensor(order, dtype=torch.int64)
        tiles_t, ids_t = tiles_t[order_t], ids_t[order_t]
    counts = torch.bincount(tiles_t, minlength=tiles_x * tiles_y)
    ends = counts.cumsum(0)
    return ids_t, torch.stack([ends - counts, ends], -1).contiguous()


# ------------------------------------------------------------------------------ local twin


def _twin(means, conics, opacities, features, background, gaussian_ids, tile_ranges, width, height, tile_size):
    """Differentiable torch twin of the kernel's pseudo-code → (image, alpha, final_T, last)."""
    channels = features.shape[1]
    tiles_x = (width + tile_size - 1) // tile_size
    image = features.new_zeros(height, width, channels)
    alpha_out = features.new_zeros(height, width, 1)
    final_t = features.new_zeros(height, width)
    last = torch.zeros(height, width, dtype=torch.int32)
    rows = []
    for t in range(tile_ranges.shape[0]):
        ty, tx = divmod(t, tiles_x)
        x0, y0 = tx * tile_size, ty * tile_size
        x1, y1 = min(width, x0 + tile_size), min(height, y0 + tile_size)
        ys, xs = torch.meshgrid(torch.arange(y0, y1), torch.arange(x0, x1), indexing="ij")
        ys, xs = ys.reshape(-1), xs.reshape(-1)
        start, end = (int(v) for v in tile_ranges[t])
        ids = gaussian_ids[start:end]
        if ids.numel() == 0:
            col = torch.zeros(ys.numel(), channels) + background
            rows.append((ys, xs, col, torch.zeros(ys.numel()), torch.ones(ys.numel()), torch.full_like(ys, start)))
            continue
        dx = means[ids, 0][None, :] - (xs.float() + 0.5)[:, None]
        dy = means[ids, 1][None, :] - (ys.float() + 0.5)[:, None]
        a, b, c = conics[ids, 0][None], conics[ids, 1][None], conics[ids, 2][None]
        power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
        alpha = (opacities[ids][None] * torch.exp(power)).clamp(max=0.99)
        skip = (power > 0) | (alpha < 1.0 / 255.0)
        alpha_eff = torch.where(skip, torch.zeros_like(alpha), alpha)
        t_incl = torch.cumprod(1.0 - alpha_eff.detach(), dim=1)
        blended = ~skip & (t_incl >= 1e-4)
        alpha_b = torch.where(blended, alpha, torch.zeros_like(alpha))
        trans = torch.cumprod(1.0 - alpha_b, dim=1)
        t_excl = torch.cat([torch.ones_like(trans[:, :1]), trans[:, :-1]], dim=1)
        weights = alpha_b * t_excl
        t_final = trans[:, -1]
        col = weights @ features[ids] + t_final[:, None] * background[None]
        k_idx = torch.arange(ids.numel())[None].expand_as(blended)
        last_k = torch.where(blended, k_idx + 1, torch.zeros_like(k_idx)).max(dim=1).values + start
        rows.append((ys, xs, col, 1.0 - t_final, t_final, last_k))
    for ys, xs, col, alp, tf, lk in rows:
        image = image.index_put((ys, xs), col)
        alpha_out = alpha_out.index_put((ys, xs), alp[:, None])
        final_t = final_t.index_put((ys, xs), tf)
        last[ys, xs] = lk.to(torch.int32)
    return image, alpha_out, final_t, last


def _kernel_grads(scene_args, out, grad_image, grad_alpha):
    return gr.rasterize_backward_cpp(*scene_args, out[2], out[3], grad_image, grad_alpha)


def _assert_grads_close(got, want, rel=1e-4):
    for name, g, w in zip(("means2d", "conics", "opacities", "features"), got, want):
        scale = max(float(w.abs().max()), 1e-6)
        err = float((g - w).abs().max())
        assert err <= rel * scale + 1e-6, f"grad {name}: max error {err:.3g} vs scale {scale:.3g}"


def _make_args(n, width, height, channels, tile_size, seed, **kw):
    means, conics, opac, feats, bg, radii, depths = _random_scene(n, width, height, channels, seed, **kw)
    ids, ranges = _bin_local(means, radii, depths, width, height, tile_size)
    return (means, conics, opac, feats, bg, ids, ranges, width, height, tile_size), radii, depths


def _check_against_twin(args, seed=0):
    means, conics, opac, feats, bg, ids, ranges, width, height, tile_size = args
    out = gr.rasterize_forward_cpp(*args)
    params = [p.clone().requires_grad_(True) for p in (means, conics, opac, feats)]
    ref = _twin(*params, bg, ids, ranges, width, height, tile_size)
    torch.testing.assert_close(out[0], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1], ref[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[2], ref[2], atol=1e-6, rtol=1e-5)
    assert torch.equal(out[3], ref[3])
    gen = torch.Generator().manual_seed(seed + 1000)
    gi = torch.randn(height, width, feats.shape[1], generator=gen)
    ga = torch.randn(height, width, 1, generator=gen)
    ((ref[0] * gi).sum() + (ref[1] * ga).sum()).backward()
    got = _kernel_grads(args, out, gi, ga)
    _assert_grads_close(got, [p.grad for p in params])
    return out


# ------------------------------------------------------------------------------ tests vs the local twin


@pytest.mark.parametrize(
    "n, width, height, channels, tile_size, seed",
    [
        (30, 37, 29, 3, 16, 0),
        (60, 37, 29, 1, 8, 1),
        (25, 20, 11, 19, 8, 2),
        (40, 16, 16, 3, 16, 3),
        (30, 27, 22, 16, 12, 4),  # tile rows padded to whole vectors (12 -> 16 lanes)
        (30, 45, 23, 32, 20, 5),  # 20 -> 24 lanes, D = 32 (per-pixel colour path)
        (30, 17, 19, 2, 5, 6),  # tiny tiles
    ],
)
def test_matches_local_twin(n, width, height, channels, tile_size, seed):
    args, _, _ = _make_args(n, width, height, channels, tile_size, seed)
    _check_against_twin(args, seed)


def test_transmittance_stop_and_clamp_against_twin():
    # many large, nearly opaque Gaussians: pixels stop early, and op * exp(power) > 0.99 near centres
    args, _, _ = _make_args(60, 24, 20, 3, 8, 7, radius=(6.0, 12.0), opacity=(0.95, 0.999))
    out = _check_against_twin(args, 7)
    ranges = args[6]
    tiles_x = (24 + 7) // 8
    ends = torch.tensor([[int(ranges[(i // 8) * tiles_x + j // 8, 1]) for j in range(24)] for i in range(20)])
    assert bool((out[3] < ends).any()), "the transmittance stop never triggered"
    assert bool((out[2] >= 1e-4).all())


def test_python_loop_semantics_tiny():
    """The kernel against a literal transcription of the per-pixel loop (no vectorisation at all)."""
    args, _, _ = _make_args(12, 9, 7, 2, 4, 11, opacity=(0.3, 0.999))
    means, conics, opac, feats, bg, ids, ranges, width, height, ts = args
    image, alpha, final_t, last = gr.rasterize_forward_cpp(*args)
    tiles_x = (width + ts - 1) // ts
    for i in range(height):
        for j in range(width):
            start, end = (int(v) for v in ranges[(i // ts) * tiles_x + j // ts])
            T, C, lst = torch.tensor(1.0), torch.zeros(feats.shape[1]), start
            for k in range(start, end):
                g = int(ids[k])
                dx = means[g, 0] - (j + 0.5)
                dy = means[g, 1] - (i + 0.5)
                power = -0.5 * (conics[g, 0] * dx * dx + conics[g, 2] * dy * dy) - conics[g, 1] * dx * dy
                if power > 0:
                    continue
                a = torch.clamp(opac[g] * torch.exp(power), max=0.99)
                if a < 1.0 / 255.0:
                    continue
                nt = T * (1 - a)
                if nt < 1e-4:
                    break
                C = C + feats[g] * a * T
                T, lst = nt, k + 1
            torch.testing.assert_close(image[i, j], C + T * bg, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(final_t[i, j], T, atol=1e-7, rtol=1e-5)
            assert int(last[i, j]) == lst


def test_clamped_alpha_passes_no_gradient():
    # one Gaussian, centred on a pixel, opacity 0.999: the centre pixel's alpha is clamped
    means = torch.tensor([[4.5, 4.5]])
    conics = torch.tensor([[0.5, 0.0, 0.5]])
    opac = torch.tensor([0.999])
    feats = torch.tensor([[1.0]])
    bg = torch.zeros(1)
    ids = torch.zeros(1, dtype=torch.int64)
    ranges = torch.tensor([[0, 1]])
    args = (means, conics, opac, feats, bg, ids, ranges, 9, 9, 16)
    out = gr.rasterize_forward_cpp(*args)
    assert float(out[0][4, 4, 0]) == pytest.approx(0.99)
    gi = torch.zeros(9, 9, 1)
    gi[4, 4] = 1.0  # only the clamped pixel
    g_means, g_conics, g_opac, g_feats = _kernel_grads(args, out, gi, torch.zeros(9, 9, 1))
    assert float(g_opac.abs().max()) == 0.0 and float(g_means.abs().max()) == 0.0
    assert float(g_conics.abs().max()) == 0.0
    assert float(g_feats[0, 0]) == pytest.approx(0.99)


def test_degenerate_conics_and_opacities():
    """Non positive-definite conics (whole-tile visits) and opacities at or below 1/255."""
    args, _, _ = _make_args(40, 30, 20, 3, 8, 12)
    means, conics, opac, *rest = args
    conics = conics.clone()
    opac = opac.clone()
    conics[0] = torch.tensor([0.05, 0.3, 0.05])  # indefinite: power > 0 along one direction
    conics[1] = torch.tensor([0.02, 0.0, -0.01])  # negative c
    conics[2] = torch.tensor([0.0, 0.0, 0.0])  # power = 0 everywhere: alpha = opacity
    opac[3] = 1.0 / 255.0
    opac[4] = 0.5 / 255.0
    _check_against_twin((means, conics, opac, *rest), 12)


def test_empty_scene_and_empty_tiles():
    bg = torch.tensor([0.25, 0.5, 0.75])
    empty = (
        torch.zeros(0, 2), torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, 3), bg,
        torch.zeros(0, dtype=torch.int64), torch.zeros(6, 2, dtype=torch.int64), 37, 29, 16,
    )
    image, alpha, final_t, last = gr.rasterize_forward_cpp(*empty)
    assert image.shape == (29, 37, 3) and alpha.shape == (29, 37, 1) and last.dtype == torch.int32
    assert torch.equal(image, bg.expand(29, 37, 3))
    assert float(alpha.abs().max()) == 0.0 and bool((final_t == 1).all()) and bool((last == 0).all())
    grads = gr.rasterize_backward_cpp(*empty, final_t, last, torch.ones(29, 37, 3), torch.ones(29, 37, 1))
    assert [tuple(g.shape) for g in grads] == [(0, 2), (0, 3), (0,), (0, 3)]
    # N > 0 but every tile empty
    means, conics, opac, feats, _, _, _ = _random_scene(5, 37, 29, 3, 0)
    no_ids = torch.zeros(0, dtype=torch.int64)
    args = (means, conics, opac, feats, bg, no_ids, torch.zeros(6, 2, dtype=torch.int64), 37, 29, 16)
    out = gr.rasterize_forward_cpp(*args)
    assert torch.equal(out[0], bg.expand(29, 37, 3))
    grads = _kernel_grads(args, out, torch.ones(29, 37, 3), torch.ones(29, 37, 1))
    assert all(float(g.abs().max()) == 0.0 for g in grads)
    # zero-sized image
    zero = (means, conics, opac, feats, bg, no_ids, torch.zeros(0, 2, dtype=torch.int64), 0, 5, 16)
    out = gr.rasterize_forward_cpp(*zero)
    assert out[0].shape == (5, 0, 3)


def test_deterministic_bitwise():
    args, _, _ = _make_args(200, 37, 29, 19, 8, 5, radius=(2.0, 10.0))
    gen = torch.Generator().manual_seed(3)
    gi = torch.randn(29, 37, 19, generator=gen)
    ga = torch.randn(29, 37, 1, generator=gen)
    results = []
    threads = torch.get_num_threads()
    try:
        for nt in (threads, threads, 1):
            torch.set_num_threads(nt)
            out = gr.rasterize_forward_cpp(*args)
            results.append(tuple(out) + tuple(_kernel_grads(args, out, gi, ga)))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:  # same thread count, and even a different one
        for x, y in zip(results[0], other):
            assert torch.equal(x, y)


def test_large_channel_count():
    args, _, _ = _make_args(40, 21, 18, 64, 8, 9)
    _check_against_twin(args, 9)


# ------------------------------------------------------------------------------ input validation


def _valid_args():
    args, _, _ = _make_args(10, 20, 12, 3, 8, 4)
    return list(args)


@pytest.mark.parametrize(
    "index, bad, match",
    [
        (0, lambda a: a.double(), "means2d must have dtype"),
        (0, lambda a: a[:, :1], r"means2d must have shape"),
        (1, lambda a: a[:-1], r"conics must have shape \[10, 3\]"),
        (2, lambda a: a[:, None], r"opacities must have shape \[10\]"),
        (3, lambda a: a.half(), "features must have dtype"),
        (3, lambda a: a[:, :0], "features must have at least one channel"),
        (4, lambda a: torch.zeros(4), r"background must have shape \[3\]"),
        (5, lambda a: a.int(), "gaussian_ids must have dtype torch.int64"),
        (5, lambda a: a + 100, r"gaussian_ids entries must lie in \[0, N\)"),
        (6, lambda a: a[:-1], r"tile_ranges must have shape \[6, 2\]"),
        (6, lambda a: a.flip(-1), "tile_ranges rows"),
        (7, lambda a: 20.0, "width must be an int"),
        (9, lambda a: 0, r"tile_size must be in \[1, 1024\]"),
        (0, lambda a: a.to("meta"), "means2d must be on the CPU"),
    ],
)
def test_bad_inputs_raise(index, bad, match):
    args = _valid_args()
    args[index] = bad(args[index])
    with pytest.raises(ValueError, match=match):
        gr.rasterize_forward_cpp(*args)


def test_bad_backward_inputs_raise():
    args = _valid_args()
    image, alpha, final_t, last = gr.rasterize_forward_cpp(*args)
    gi, ga = torch.zeros_like(image), torch.zeros_like(alpha)
    with pytest.raises(ValueError, match="last must have dtype torch.int32"):
        gr.rasterize_backward_cpp(*args, final_t, last.long(), gi, ga)
    with pytest.raises(ValueError, match=r"final_T must have shape \[12, 20\]"):
        gr.rasterize_backward_cpp(*args, final_t[:-1], last, gi, ga)
    with pytest.raises(ValueError, match=r"grad_image must have shape \[12, 20, 3\]"):
        gr.rasterize_backward_cpp(*args, final_t, last, gi[..., :1], ga)
    with pytest.raises(ValueError, match="grad_alpha must have dtype"):
        gr.rasterize_backward_cpp(*args, final_t, last, gi, ga.double())
    # None upstream gradients mean zeros
    grads = gr.rasterize_backward_cpp(*args, final_t, last, None, None)
    assert all(float(g.abs().max()) == 0.0 for g in grads)


# ------------------------------------------------------------------------------ tests vs the project reference


def _project_reference():
    binning = pytest.importorskip("langfield.ops.splatting.binning")
    reference = pytest.importorskip("langfield.ops.reference.splatting")
    return binning.bin_gaussians, reference.rasterize_gaussians_reference


@pytest.mark.parametrize(
    "n, width, height, channels, tile_size, seed, opacity, radius",
    [
        (20, 37, 29, 3, 16, 0, (0.05, 0.95), (1.0, 6.0)),
        (120, 37, 29, 1, 8, 1, (0.05, 0.95), (1.0, 8.0)),
        (200, 37, 29, 19, 16, 2, (0.05, 0.95), (2.0, 10.0)),
        (80, 33, 17, 3, 8, 3, (0.9, 0.999), (6.0, 14.0)),  # transmittance stop + clamp
    ],
)
def test_matches_project_reference(n, width, height, channels, tile_size, seed, opacity, radius):
    bin_gaussians, rasterize_reference = _project_reference()
    means, conics, opac, feats, bg, radii, depths = _random_scene(
        n, width, height, channels, seed, opacity=opacity, radius=radius
    )
    bins = bin_gaussians(means, radii, depths, width, height, tile_size=tile_size)
    assert (bins.tiles_x, bins.tiles_y) == ((width + tile_size - 1) // tile_size, (height + tile_size - 1) // tile_size)
    args = (means, conics, opac, feats, bg, bins.gaussian_ids, bins.tile_ranges, width, height, tile_size)
    out = gr.rasterize_forward_cpp(*args)
    params = [p.clone().requires_grad_(True) for p in (means, conics, opac, feats)]
    ref_image, ref_alpha = rasterize_reference(
        *params, radii, width, height, bg, tile_size=tile_size, depths=depths
    )
    torch.testing.assert_close(out[0], ref_image, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1], ref_alpha, atol=1e-5, rtol=1e-5)
    gen = torch.Generator().manual_seed(seed + 77)
    gi = torch.randn(height, width, channels, generator=gen)
    ga = torch.randn(height, width, 1, generator=gen)
    ((ref_image * gi).sum() + (ref_alpha * ga).sum()).backward()
    _assert_grads_close(_kernel_grads(args, out, gi, ga), [p.grad for p in params])
