import math

import pytest
import torch

from langfield.ops import reference as ref
from langfield.ops.volume_rendering import (
    RenderAux,
    accumulate_along_rays,
    composite_over_background,
    mask_after_transmittance,
    normals_from_density,
    render_expected_depth,
    render_median_depth,
    render_rays,
    render_transmittance_from_density,
    render_weights_from_alpha,
    render_weights_from_density,
)
from langfield.types import RenderOutput

# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _batched(num_rays, num_samples, seed=0, dtype=torch.float32, sigma_scale=3.0):
    g = torch.Generator().manual_seed(seed)
    steps = torch.rand(num_rays, num_samples + 1, generator=g, dtype=dtype) * 0.2 + 0.01
    edges = 0.5 + torch.cumsum(steps, dim=-1)
    sigmas = torch.rand(num_rays, num_samples, generator=g, dtype=dtype) * sigma_scale
    return edges[:, :-1].contiguous(), edges[:, 1:].contiguous(), sigmas


def _keep_mask(num_rays, num_samples, seed=1, p=0.6):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(num_rays, num_samples, generator=g) < p
    mask[0] = False  # one ray without samples
    mask[1] = True  # one full ray
    return mask


def _pack(mask, *tensors):
    num_rays, num_samples = mask.shape
    ray_indices = torch.arange(num_rays, device=mask.device)[:, None].expand(num_rays, num_samples)[mask]
    return (ray_indices,) + tuple(t[mask] for t in tensors)


# ----------------------------------------------------------------------------------------------
# known values
# ----------------------------------------------------------------------------------------------


def test_weights_hand_computed(device, dtype):
    def tensor(values):
        return torch.tensor(values, device=device, dtype=dtype)

    t_starts = tensor([[0.0, 1.0, 2.0]])
    t_ends = tensor([[1.0, 2.0, 3.0]])
    sigmas = tensor([[math.log(2.0), math.log(2.0), 0.0]])
    weights, trans, alphas = render_weights_from_density(t_starts, t_ends, sigmas)
    assert weights.dtype == dtype and weights.device.type == device.type
    torch.testing.assert_close(alphas, tensor([[0.5, 0.5, 0.0]]))
    torch.testing.assert_close(trans, tensor([[1.0, 0.5, 0.25]]))
    torch.testing.assert_close(weights, tensor([[0.5, 0.25, 0.0]]))
    trans2, alphas2 = render_transmittance_from_density(t_starts, t_ends, sigmas)
    torch.testing.assert_close(trans2, trans)
    torch.testing.assert_close(alphas2, alphas)
    w_alpha, t_alpha = render_weights_from_alpha(alphas)
    torch.testing.assert_close(w_alpha, weights)
    torch.testing.assert_close(t_alpha, trans)
    colors = tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    torch.testing.assert_close(accumulate_along_rays(weights, colors), tensor([[0.5, 0.25, 0.0]]))
    torch.testing.assert_close(accumulate_along_rays(weights), tensor([[0.75]]))
    # expected depth: (0.5 * 0.5 + 0.25 * 1.5) / 0.75
    torch.testing.assert_close(render_expected_depth(weights, t_starts, t_ends), tensor([[0.625 / 0.75]]))


def test_median_depth_hand_computed_both_layouts():
    weights = torch.tensor([[0.1, 0.3, 0.4, 0.2], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.5]])
    t_starts = torch.arange(4.0).expand(3, 4)
    t_ends = t_starts + 1.0
    med = render_median_depth(weights, t_starts, t_ends)
    torch.testing.assert_close(med, torch.tensor([[2.5], [0.0], [3.5]]))
    mask = torch.ones(3, 4, dtype=torch.bool)
    ri, w, t0, t1 = _pack(mask, weights, t_starts, t_ends)
    torch.testing.assert_close(render_median_depth(w, t0, t1, ri, 3), med)
    # half accumulation reached exactly at the end of a sample: that sample is the median
    torch.testing.assert_close(
        render_median_depth(torch.tensor([[0.25, 0.25, 0.5]]), t_starts[:1, :3], t_ends[:1, :3]),
        torch.tensor([[1.5]]),
    )


def test_composite_over_background():
    rgb = torch.tensor([[0.2, 0.3, 0.4], [0.0, 0.0, 0.0]])
    acc = torch.tensor([[0.5], [0.0]])
    out = composite_over_background(rgb, acc, torch.tensor([1.0, 1.0, 1.0]))
    torch.testing.assert_close(out, torch.tensor([[0.7, 0.8, 0.9], [1.0, 1.0, 1.0]]))
    per_ray = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.2, 0.3]])
    torch.testing.assert_close(composite_over_background(rgb, acc, per_ray), torch.tensor([[0.2, 0.3, 0.4], [0.1, 0.2, 0.3]]))
    with pytest.raises(ValueError, match="background"):
        composite_over_background(rgb, acc, torch.ones(2))
    with pytest.raises(ValueError, match="accumulation"):
        composite_over_background(rgb, torch.ones(2), torch.ones(3))


def _slab_closed_form(sigma, a, b):
    length = b - a
    acc = 1.0 - math.exp(-sigma * length)
    # w(t) = sigma exp(-sigma (t - a)) on [a, b]; E[t | hit] of the truncated exponential
    mean = a + 1.0 / sigma - length * math.exp(-sigma * length) / acc
    median = a - math.log(1.0 - 0.5 * acc) / sigma
    return acc, mean, median


@pytest.mark.parametrize("sigma", [0.7, 5.0])
def test_constant_density_slab_closed_form(sigma):
    a, b, far, num = 1.0, 2.0, 3.0, 6000
    edges = torch.linspace(0.0, far, num + 1, dtype=torch.float64)[None]  # a, b fall on edges
    t_starts, t_ends = edges[:, :-1], edges[:, 1:]
    t_mid = 0.5 * (t_starts + t_ends)
    sigmas = ((t_mid > a) & (t_mid < b)).to(torch.float64) * sigma
    weights, _, _ = render_weights_from_density(t_starts, t_ends, sigmas)
    acc, mean, median = _slab_closed_form(sigma, a, b)
    delta = far / num
    torch.testing.assert_close(accumulate_along_rays(weights), torch.tensor([[acc]], dtype=torch.float64), atol=1e-12, rtol=0)
    # midpoint vs exponential within a bin: O(sigma * delta^2) error
    depth = render_expected_depth(weights, t_starts, t_ends)
    assert abs(float(depth) - mean) < sigma * delta**2 + 1e-9
    assert abs(float(render_median_depth(weights, t_starts, t_ends)) - median) <= delta / 2 + 1e-9
    # and the same through the packed layout
    ri = torch.zeros(num, dtype=torch.long)
    w_p, _, _ = render_weights_from_density(t_starts[0], t_ends[0], sigmas[0], ri, 1)
    assert abs(float(accumulate_along_rays(w_p, None, ri, 1)) - acc) < 1e-12
    assert abs(float(render_expected_depth(w_p, t_starts[0], t_ends[0], ri, 1)) - mean) < sigma * delta**2 + 1e-9


# ----------------------------------------------------------------------------------------------
# layouts agree
# ----------------------------------------------------------------------------------------------


def test_packed_matches_batched_values_and_grads(device):
    R, S, D = 12, 9, 5
    t0, t1, sigmas = (t.to(device) for t in _batched(R, S, seed=3, dtype=torch.float64))
    values = torch.rand(R, S, D, dtype=torch.float64, generator=torch.Generator().manual_seed(4)).to(device)
    mask = _keep_mask(R, S).to(device)
    # Dropping a sample is the same as giving it zero density: it neither adds weight nor
    # attenuates. So batched-with-zeros must equal packed-without-them.
    sig_b = (sigmas * mask).requires_grad_(True)
    val_b = values.clone().requires_grad_(True)
    w_b, T_b, a_b = render_weights_from_density(t0, t1, sig_b)
    rgb_b = accumulate_along_rays(w_b, val_b)
    depth_b = render_expected_depth(w_b, t0, t1)

    ri, t0_p, t1_p, sig_p, val_p = _pack(mask, t0, t1, sigmas, values)
    sig_p.requires_grad_(True)
    val_p.requires_grad_(True)
    w_p, T_p, a_p = render_weights_from_density(t0_p, t1_p, sig_p, ri, R)
    rgb_p = accumulate_along_rays(w_p, val_p, ri, R)
    depth_p = render_expected_depth(w_p, t0_p, t1_p, ri, R)

    torch.testing.assert_close(w_p, w_b[mask])
    torch.testing.assert_close(T_p, T_b[mask])
    torch.testing.assert_close(a_p, a_b[mask])
    torch.testing.assert_close(rgb_p, rgb_b)
    torch.testing.assert_close(depth_p, depth_b)
    assert torch.all(rgb_p[0] == 0) and torch.all(depth_p[0] == 0)  # empty ray
    torch.testing.assert_close(render_median_depth(w_p, t0_p, t1_p, ri, R), render_median_depth(w_b, t0, t1))

    g = torch.Generator().manual_seed(5)
    up_rgb = torch.randn(R, D, generator=g, dtype=torch.float64).to(device)
    up_depth = torch.randn(R, 1, generator=g, dtype=torch.float64).to(device)
    ((rgb_b * up_rgb).sum() + (depth_b * up_depth).sum()).backward()
    ((rgb_p * up_rgb).sum() + (depth_p * up_depth).sum()).backward()
    torch.testing.assert_close(sig_p.grad, sig_b.grad[mask])
    torch.testing.assert_close(val_p.grad, val_b.grad[mask])
    assert torch.all(val_b.grad[~mask] == 0)


def test_weights_from_alpha_packed_matches_batched_with_opaque_samples():
    R, S = 6, 7
    g = torch.Generator().manual_seed(0)
    alphas = torch.rand(R, S, generator=g, dtype=torch.float64)
    alphas[2, 3] = 1.0  # fully opaque: everything behind gets T = 0, gradients stay exact
    alphas[4, 0] = 1.0
    mask = _keep_mask(R, S, seed=2, p=0.7)
    mask[2] = True
    a_b = (alphas * mask).requires_grad_(True)
    w_b, T_b = render_weights_from_alpha(a_b)
    ri, a_p = _pack(mask, alphas)
    a_p.requires_grad_(True)
    w_p, T_p = render_weights_from_alpha(a_p, ri, R)
    torch.testing.assert_close(w_p, w_b[mask])
    torch.testing.assert_close(T_p, T_b[mask])
    assert torch.all(T_b[2, 4:] == 0) and T_b[2, 3] > 0
    up = torch.randn(R, S, generator=g, dtype=torch.float64)
    (w_b * up).sum().backward()
    (w_p * up[mask]).sum().backward()
    torch.testing.assert_close(a_p.grad, a_b.grad[mask])
    # d w_{2,5} / d alpha_{2,3} = -prod_{j<5, j!=3}(1-a_j) * a_5: non-zero even though T_{2,5} = 0
    assert a_b.grad[2, 3].abs() > 0


def test_weights_from_alpha_matches_density():
    t0, t1, sigmas = _batched(5, 8, seed=7, dtype=torch.float64)
    w, T, alphas = render_weights_from_density(t0, t1, sigmas)
    w2, T2 = render_weights_from_alpha(alphas)
    torch.testing.assert_close(w2, w)
    torch.testing.assert_close(T2, T)


def test_packed_precision_many_opaque_rays():
    # ~1000 opaque rays: a float32 global cumsum would cancel catastrophically.
    R, S = 1000, 64
    t0, t1, sigmas = _batched(R, S, seed=11, sigma_scale=20.0)
    mask = torch.ones(R, S, dtype=torch.bool)
    ri, t0_p, t1_p, sig_p = _pack(mask, t0, t1, sigmas)
    w_b, T_b, _ = render_weights_from_density(t0, t1, sigmas)
    w_p, T_p, _ = render_weights_from_density(t0_p, t1_p, sig_p, ri, R)
    assert float(accumulate_along_rays(w_b).min()) > 0.999  # opaque
    torch.testing.assert_close(T_p, T_b.reshape(-1), atol=1e-6, rtol=0)
    torch.testing.assert_close(w_p, w_b.reshape(-1), atol=1e-6, rtol=0)
    torch.testing.assert_close(accumulate_along_rays(w_p, None, ri, R), accumulate_along_rays(w_b), atol=1e-6, rtol=0)
    # the test can fail: the naive float32 global exclusive cumsum is visibly wrong here
    sd = sig_p * (t1_p - t0_p)
    excl = torch.cumsum(sd, 0) - sd
    naive_T = torch.exp(-(excl - excl[(ri * S)]))
    assert float((naive_T - T_b.reshape(-1)).abs().max()) > 1e-4


# ----------------------------------------------------------------------------------------------
# reference twin and gradcheck
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("packed", [False, True])
def test_matches_reference_values_and_grads(packed):
    R, S, D = 7, 6, 4
    t0, t1, sigmas = _batched(R, S, seed=21, dtype=torch.float64)
    values = torch.rand(R, S, D, dtype=torch.float64, generator=torch.Generator().manual_seed(22))
    if packed:
        mask = _keep_mask(R, S, seed=23)
        ri, t0, t1, sigmas, values = _pack(mask, t0, t1, sigmas, values)
        n_rays = R
    else:
        ri, n_rays = None, None
    g = torch.Generator().manual_seed(24)
    up_w = torch.randn(sigmas.shape, generator=g, dtype=torch.float64)
    up_c = torch.randn(R, D, generator=g, dtype=torch.float64)

    def run(impl):
        s = sigmas.clone().requires_grad_(True)
        v = values.clone().requires_grad_(True)
        e = t1.clone().requires_grad_(True)
        w, T, a = impl.render_weights_from_density(t0, e, s, ri, n_rays)
        c = impl.accumulate_along_rays(w, v, ri, n_rays)
        acc = impl.accumulate_along_rays(w, None, ri, n_rays)
        ((w * up_w).sum() + (c * up_c).sum() + acc.sum()).backward()
        return [w, T, a, c, acc], [s.grad, v.grad, e.grad]

    import langfield.ops.volume_rendering as fast

    (vals_f, grads_f), (vals_r, grads_r) = run(fast), run(ref)
    for f, r in zip(vals_f + grads_f, vals_r + grads_r):
        torch.testing.assert_close(f.detach(), r.detach())


def test_gradcheck_weights_and_accumulate():
    t0, t1, sigmas = _batched(3, 4, seed=31, dtype=torch.float64, sigma_scale=2.0)
    sig = sigmas.clone().requires_grad_(True)
    ends = t1.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s, e: render_weights_from_density(t0, e, s), (sig, ends))
    mask = torch.tensor([[1, 1, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    ri, t0_p, t1_p, sig_p = _pack(mask, t0, t1, sigmas)
    sig_p.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: render_weights_from_density(t0_p, t1_p, s, ri, 3), (sig_p,))
    alphas = torch.rand(ri.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: render_weights_from_alpha(a, ri, 3), (alphas,))
    w = torch.rand(3, 4, dtype=torch.float64, requires_grad=True)
    v = torch.rand(3, 4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w_, v_: accumulate_along_rays(w_, v_), (w, v))
    w_p = torch.rand(ri.shape[0], dtype=torch.float64, requires_grad=True)
    v_p = torch.rand(ri.shape[0], 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w_, v_: accumulate_along_rays(w_, v_, ri, 3), (w_p, v_p))
    assert torch.autograd.gradcheck(lambda w_: render_expected_depth(w_, t0_p, t1_p, ri, 3), (w_p,))


# ----------------------------------------------------------------------------------------------
# early termination, normals
# ----------------------------------------------------------------------------------------------


def test_mask_after_transmittance_is_prefix_and_harmless():
    R, S = 50, 40
    t0, t1, sigmas = _batched(R, S, seed=41, sigma_scale=30.0)
    colors = torch.rand(R, S, 3, generator=torch.Generator().manual_seed(42))
    ri, t0_p, t1_p, sig_p, col_p = _pack(torch.ones(R, S, dtype=torch.bool), t0, t1, sigmas, colors)
    w, T, _ = render_weights_from_density(t0_p, t1_p, sig_p, ri, R)
    keep = mask_after_transmittance(T, threshold=1e-4)
    assert keep.dtype == torch.bool and 0 < int(keep.sum()) < keep.numel()
    per_ray = keep.reshape(R, S).long()
    assert torch.all(per_ray[:, 1:] <= per_ray[:, :-1])  # a prefix of each ray
    full = accumulate_along_rays(w, col_p, ri, R)
    w_k, _, _ = render_weights_from_density(t0_p[keep], t1_p[keep], sig_p[keep], ri[keep], R)
    cut = accumulate_along_rays(w_k, col_p[keep], ri[keep], R)
    torch.testing.assert_close(cut, full, atol=1e-4, rtol=0)  # lost energy <= threshold per ray
    assert torch.equal(mask_after_transmittance(torch.tensor([1.0, 0.5, 1e-5])), torch.tensor([True, True, False]))
    with pytest.raises(ValueError, match="threshold"):
        mask_after_transmittance(T, threshold=1.5)


def test_normals_from_density_blob():
    center = torch.tensor([0.1, -0.2, 0.3])

    def sigma_fn(x):
        return torch.exp(-((x - center) ** 2).sum(-1))

    pts = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(0))
    expected = (pts - center) / (pts - center).norm(dim=-1, keepdim=True)
    with torch.no_grad():
        normals = normals_from_density(pts, sigma_fn)
    torch.testing.assert_close(normals, expected, atol=1e-5, rtol=1e-5)
    assert not normals.requires_grad
    # create_graph: gradients flow back into the field parameters through the normals
    scale = torch.tensor(2.0, requires_grad=True)
    n = normals_from_density(pts, lambda x: sigma_fn(x * scale), create_graph=True)
    assert n.requires_grad
    (n * torch.tensor([1.0, 0.0, 0.0])).sum().backward()
    assert scale.grad is not None
    with pytest.raises(ValueError, match="positions"):
        normals_from_density(torch.zeros(4, 2), sigma_fn)
    with pytest.raises(ValueError, match="sigma_fn"):
        normals_from_density(pts, lambda x: x)


# ----------------------------------------------------------------------------------------------
# render_rays
# ----------------------------------------------------------------------------------------------


def _field(t_starts, t_ends, ray_indices, dirs):
    """A toy field: sample positions along fixed rays from the origin."""
    rows = ray_indices if ray_indices is not None else None
    t_mid = 0.5 * (t_starts + t_ends)
    d = dirs[rows] if rows is not None else dirs[:, None, :].expand(*t_mid.shape, 3)
    x = t_mid[..., None] * d
    sigma = 4.0 * torch.exp(-((x - 1.0) ** 2).sum(-1))
    rgb = torch.sigmoid(x)
    return x, rgb, sigma


def test_render_rays_packed_matches_batched_with_features_and_normals():
    R, S, D = 10, 16, 6
    g = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.rand(R, 3, generator=g) + 0.1, dim=-1)
    edges = torch.linspace(0.2, 3.0, S + 1).expand(R, S + 1)
    t0, t1 = edges[:, :-1], edges[:, 1:]
    proj = torch.randn(3, D, generator=g)
    bg = torch.tensor([1.0, 1.0, 1.0])

    def rgb_sigma_fn(ts, te, ri):
        _, rgb, sigma = _field(ts, te, ri, dirs)
        return rgb, sigma[..., None]  # [..., 1] sigmas accepted

    def normals_fn(ts, te, ri):
        x, _, _ = _field(ts, te, ri, dirs)
        return torch.nn.functional.normalize(x - 1.0, dim=-1)

    def extra_fn(ts, te, ri):
        x, _, _ = _field(ts, te, ri, dirs)
        return x @ proj

    out_b, aux_b = render_rays(t0, t1, rgb_sigma_fn, background=bg, normals_fn=normals_fn, extra_fn=extra_fn)
    mask = torch.ones(R, S, dtype=torch.bool)
    mask[3] = False  # an empty ray renders the background
    ri, t0_p, t1_p = _pack(mask, t0, t1)
    out_p, aux_p = render_rays(t0_p, t1_p, rgb_sigma_fn, ri, R, background=bg, normals_fn=normals_fn, extra_fn=extra_fn)

    assert isinstance(out_b, RenderOutput) and isinstance(aux_p, RenderAux)
    assert out_b.rgb.shape == (R, 3) and out_b.features.shape == (R, D) and out_b.normals.shape == (R, 3)
    keep = torch.ones(R, dtype=torch.bool)
    keep[3] = False
    for name in ("rgb", "depth", "accumulation", "normals", "features"):
        torch.testing.assert_close(getattr(out_p, name)[keep], getattr(out_b, name)[keep])
    torch.testing.assert_close(out_p.rgb[3], bg)
    assert float(out_p.accumulation[3]) == 0.0 and torch.all(out_p.features[3] == 0)

    # components are what the ops give with the same weights
    _, rgbs, _ = _field(t0, t1, None, dirs)
    w = aux_b.weights
    acc = accumulate_along_rays(w)
    torch.testing.assert_close(out_b.accumulation, acc)
    torch.testing.assert_close(out_b.rgb, accumulate_along_rays(w, rgbs) + (1 - acc) * bg)
    torch.testing.assert_close(out_b.features, accumulate_along_rays(w, extra_fn(t0, t1, None)))
    torch.testing.assert_close(out_b.depth, render_expected_depth(w, t0, t1))
    torch.testing.assert_close(out_b.normals.norm(dim=-1), torch.ones(R))
    assert aux_b.ray_indices is None and aux_p.num_rays == R and torch.equal(aux_p.ray_indices, ri)
    torch.testing.assert_close(aux_b.weights, aux_b.transmittance * aux_b.alphas)


def test_render_rays_empty_packed_and_gradients():
    R = 4
    bg = torch.tensor([0.2, 0.4, 0.6], requires_grad=True)
    empty = torch.zeros(0)

    def rgb_sigma_fn(ts, te, ri):
        return torch.zeros(ts.shape[0], 3), torch.zeros(ts.shape[0])

    out, aux = render_rays(empty, empty, rgb_sigma_fn, torch.zeros(0, dtype=torch.long), R, background=bg,
                           extra_fn=lambda ts, te, ri: torch.zeros(ts.shape[0], 5))
    torch.testing.assert_close(out.rgb, bg.detach().expand(R, 3))
    assert out.features.shape == (R, 5) and torch.all(out.accumulation == 0) and torch.all(out.depth == 0)
    assert aux.weights.shape == (0,)
    out.rgb.sum().backward()
    torch.testing.assert_close(bg.grad, torch.full((3,), float(R)))
    # gradients reach the field through every output
    s = torch.tensor(1.0, requires_grad=True)
    t0 = torch.linspace(0, 1, 9)[None, :-1].expand(2, 8)
    t1 = t0 + 0.125
    out, _ = render_rays(t0, t1, lambda a, b, r: (torch.sigmoid(s * a)[..., None].expand(*a.shape, 3), s * torch.ones_like(a)))
    (out.rgb.sum() + out.depth.sum()).backward()
    assert s.grad is not None and float(s.grad.abs()) > 0


def test_render_rays_bad_functions():
    t0 = torch.zeros(2, 3)
    t1 = torch.ones(2, 3)
    with pytest.raises(ValueError, match="sigmas"):
        render_rays(t0, t1, lambda a, b, r: (torch.zeros(2, 3, 3), torch.zeros(2, 4)))
    with pytest.raises(ValueError, match="rgb"):
        render_rays(t0, t1, lambda a, b, r: (torch.zeros(2, 3, 4), torch.zeros(2, 3)))
    with pytest.raises(ValueError, match="extra_fn"):
        render_rays(t0, t1, lambda a, b, r: (torch.zeros(2, 3, 3), torch.zeros(2, 3)), extra_fn=lambda a, b, r: torch.zeros(2, 5))
    with pytest.raises(ValueError, match="callable"):
        render_rays(t0, t1, None)


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------


def test_bad_inputs():
    t = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="sigmas"):
        render_weights_from_density(t, t, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="t_ends"):
        render_weights_from_density(t, torch.zeros(4, 3), t)
    flat = torch.zeros(5)
    with pytest.raises(ValueError, match="packed"):
        render_weights_from_density(t, t, t, torch.zeros(3, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="ray_indices"):
        render_weights_from_density(flat, flat, flat, torch.zeros(4, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="ray_indices"):
        render_weights_from_density(flat, flat, flat, torch.zeros(5), 1)
    with pytest.raises(ValueError, match="sorted"):
        render_weights_from_density(flat, flat, flat, torch.tensor([0, 1, 0, 1, 2]), 3)
    with pytest.raises(ValueError, match="ray_indices"):
        render_weights_from_density(flat, flat, flat, torch.tensor([0, 1, 1, 2, 3]), 3)
    with pytest.raises(ValueError, match="num_rays"):
        render_weights_from_density(torch.zeros(0), torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="num_rays"):
        accumulate_along_rays(flat, None, torch.zeros(5, dtype=torch.long), -1)
    with pytest.raises(ValueError, match="values"):
        accumulate_along_rays(t, torch.zeros(3, 5, 2))
    with pytest.raises(ValueError, match="values"):
        accumulate_along_rays(flat, torch.zeros(5), torch.zeros(5, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="alphas"):
        render_weights_from_alpha(torch.zeros(3, 4), torch.zeros(12, dtype=torch.long), 3)
    # num_rays inferred when omitted
    out = accumulate_along_rays(torch.ones(3), None, torch.tensor([0, 0, 2]))
    torch.testing.assert_close(out, torch.tensor([[2.0], [0.0], [1.0]]))
