"""Instant-NGP's field: the colour of packed samples with one view direction per ray equals the
per-sample colour (values and gradients; the split first layer is only a cheaper order of operations)."""

from __future__ import annotations

import pytest
import torch

from langfield.fields.ngp_field import NGPField, NGPFieldConfig
from langfield.ops.hash_encoding import HashGridConfig


def _tiny_field(sh_degree=2, dtype=torch.float64):
    torch.manual_seed(0)
    cfg = NGPFieldConfig(hash_grid=HashGridConfig(num_levels=2, log2_hashmap_size=8, max_resolution=32), sh_degree=sh_degree)
    return NGPField(torch.tensor([[-1.0] * 3, [1.0] * 3]), cfg).to(dtype)


@pytest.mark.parametrize("sh_degree", [0, 3])
def test_color_of_rays_equals_the_per_sample_colour(sh_degree):
    field = _tiny_field(sh_degree)
    num_rays, num_samples = 5, 23
    dirs = torch.nn.functional.normalize(torch.randn(num_rays, 3, dtype=torch.float64), dim=-1)
    ridx = torch.sort(torch.randint(0, num_rays, (num_samples,)))[0]
    geo = torch.randn(num_samples, field.config.geo_feat_dim, dtype=torch.float64, requires_grad=True)
    fast = field.color_of_rays(geo, dirs, ridx)
    ref = field.color(geo, dirs[ridx])
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    # gradients to the features and to every colour weight agree too
    weight = torch.randn_like(ref)
    params = [geo, *field.color_net.parameters()]
    g_fast = torch.autograd.grad((fast * weight).sum(), params)
    g_ref = torch.autograd.grad((ref * weight).sum(), params)
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_color_of_rays_uses_each_rays_own_direction():
    field = _tiny_field(3)
    dirs = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.3, 1.0]], dtype=torch.float64), dim=-1)
    geo = torch.randn(1, field.config.geo_feat_dim, dtype=torch.float64).expand(2, -1)
    rgb = field.color_of_rays(geo, dirs, torch.tensor([0, 1]))
    assert not torch.allclose(rgb[0], rgb[1])  # a swapped or shared direction would make them equal
    torch.testing.assert_close(rgb, field.color(geo, dirs))


def test_color_of_rays_gradcheck():
    field = _tiny_field(1)
    dirs = torch.nn.functional.normalize(torch.randn(3, 3, dtype=torch.float64), dim=-1)
    ridx = torch.tensor([0, 0, 1, 2, 2, 2])
    geo = torch.randn(6, field.config.geo_feat_dim, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda g: field.color_of_rays(g, dirs, ridx), (geo,))
