"""Mip-NeRF 360 distortion loss (Eq. 15): O(N) prefix-sum form against the paper's double sum,
values and gradients, batched and packed; the piecewise linear/disparity ray distance."""

import pytest
import torch

from langfield.ops import reference as ref
from langfield.ops.ray_regularizers import distortion_loss, piecewise_lin_disp


def _intervals(num_rays, num_samples, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    steps = torch.rand(num_rays, num_samples + 1, generator=g, dtype=dtype) * 0.1 + 0.01
    edges = torch.cumsum(steps, dim=-1)
    weights = torch.rand(num_rays, num_samples, generator=g, dtype=dtype)
    weights = weights / weights.sum(-1, keepdim=True) * torch.rand(num_rays, 1, generator=g, dtype=dtype)
    return weights, edges[:, :-1].contiguous(), edges[:, 1:].contiguous()


def _packed(num_rays=5, num_samples=7, seed=1):
    w, s0, s1 = _intervals(num_rays, num_samples, seed)
    keep = torch.rand(num_rays, num_samples, generator=torch.Generator().manual_seed(seed + 10)) < 0.7
    keep[2] = False  # a ray without samples
    keep[0] = True
    ridx = torch.arange(num_rays)[:, None].expand(num_rays, num_samples)[keep]
    return w[keep], s0[keep], s1[keep], ridx, num_rays


def test_batched_matches_the_double_sum():
    w, s0, s1 = _intervals(4, 9)
    fast = distortion_loss(w, s0, s1)
    slow = ref.distortion_loss(w, s0, s1)
    assert fast.shape == (4,)
    assert torch.allclose(fast, slow, atol=1e-12, rtol=1e-10)


def test_packed_matches_the_double_sum_values_and_gradients():
    w, s0, s1, ridx, n = _packed()
    w1, w2 = w.clone().requires_grad_(), w.clone().requires_grad_()
    fast = distortion_loss(w1, s0, s1, ridx, n)
    slow = ref.distortion_loss(w2, s0, s1, ridx, n)
    assert fast.shape == (n,) and float(fast.detach()[2]) == 0.0
    assert torch.allclose(fast, slow, atol=1e-12, rtol=1e-10)
    coef = torch.arange(1.0, n + 1, dtype=torch.float64)
    (fast * coef).sum().backward()
    (slow * coef).sum().backward()
    assert torch.allclose(w1.grad, w2.grad, atol=1e-12, rtol=1e-10)


def test_packed_equals_batched_and_leading_batch_dims():
    w, s0, s1 = _intervals(3, 6)
    ridx = torch.arange(3).repeat_interleave(6)
    packed = distortion_loss(w.reshape(-1), s0.reshape(-1), s1.reshape(-1), ridx, 3)
    assert torch.allclose(packed, distortion_loss(w, s0, s1), atol=1e-12)
    assert distortion_loss(w.reshape(3, 1, 6), s0.reshape(3, 1, 6), s1.reshape(3, 1, 6)).shape == (3, 1)


def test_gradcheck_packed_weights_and_distances():
    w, s0, s1, ridx, n = _packed(num_rays=3, num_samples=4, seed=3)
    assert torch.autograd.gradcheck(lambda x: distortion_loss(x, s0, s1, ridx, n), (w.clone().requires_grad_(),))
    # in s as well (intervals kept ordered: perturbations are tiny)
    s0r, s1r = s0.clone().requires_grad_(), s1.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: distortion_loss(w, a, b, ridx, n), (s0r, s1r))


def test_concentrated_weight_costs_less_than_spread_weight():
    s0 = torch.linspace(0, 0.9, 10)[None]
    s1 = s0 + 0.1
    spike = torch.zeros(1, 10)
    spike[0, 4] = 1.0
    spread = torch.full((1, 10), 0.1)
    two_peaks = torch.zeros(1, 10)
    two_peaks[0, [1, 8]] = 0.5
    assert distortion_loss(spike, s0, s1) < distortion_loss(spread, s0, s1) < distortion_loss(two_peaks, s0, s1)
    assert torch.allclose(distortion_loss(spike, s0, s1), torch.tensor([0.1 / 3]))
    # empty rays and zero weight cost nothing
    assert float(distortion_loss(torch.zeros(1, 10), s0, s1)) == 0.0


def test_piecewise_lin_disp_is_linear_then_disparity_and_normalised():
    t = torch.tensor([0.0, 0.5, 1.0, 2.0, 4.0, 100.0])
    s = piecewise_lin_disp(t, near=0.0, far=100.0)
    g = torch.tensor([0.0, 0.5, 1.0, 1.5, 1.75, 1.99])
    assert torch.allclose(s, g / 1.99, atol=1e-6)
    assert torch.all(s[1:] > s[:-1])
    # the unit scales distances; values outside [near, far] clamp
    assert torch.allclose(piecewise_lin_disp(t * 2.0, 0.0, 200.0, unit=2.0), s, atol=1e-6)
    assert float(piecewise_lin_disp(torch.tensor([500.0]), 0.1, 100.0)) == 1.0
    assert float(piecewise_lin_disp(torch.tensor([0.0]), 0.1, 100.0)) == 0.0
    with pytest.raises(ValueError, match="near < far"):
        piecewise_lin_disp(t, 2.0, 1.0)
    with pytest.raises(ValueError, match="unit"):
        piecewise_lin_disp(t, 0.0, 1.0, unit=0.0)


def test_bad_layouts_are_rejected():
    w, s0, s1 = _intervals(2, 3)
    with pytest.raises(ValueError):
        distortion_loss(w, s0[:, :2], s1)
