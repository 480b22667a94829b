"""One march for a language query: Instant-NGP's colour render and the weights its language head is
rendered with come from the same samples, equal to the two separate passes they replace (world and NDC)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from langfield.data.ray_space import apply_ray_space
from langfield.language.view_geometry import ngp_view_render, ngp_view_weights, render_view
from langfield.methods.base import SceneInfo
from langfield.methods.registry import make_method
from tests.data.test_ray_space import plane_scene


def _dense_ngp(dataset):
    """An untrained NGP whose density is raised so rays composite over several samples."""
    torch.manual_seed(0)
    ngp = make_method("ngp", SceneInfo.from_dataset(dataset)).eval()
    ngp.field.config = dataclasses.replace(ngp.field.config, density_bias=ngp.field.config.density_bias + 2.0)
    return ngp


@pytest.mark.parametrize("space", ["world", "ndc"])
def test_one_march_equals_the_colour_render_and_the_weight_pass(space):
    ds = plane_scene(size=12)
    if space == "ndc":
        ds = apply_ray_space(ds, "ndc")
    ngp = _dense_ngp(ds)
    cams, bg = ds.split("test").cameras, torch.tensor([0.2, 0.4, 0.6])
    render, weights = ngp_view_render(ngp, cams, 0, bg, k=4, chunk=50)  # chunks that split the image unevenly
    ref_render = ngp.render_camera(cams[0], bg, output_device="cpu")
    ref_weights = ngp_view_weights(ngp, cams, 0, k=4, chunk=64)
    for name in ("rgb", "depth", "accumulation"):
        torch.testing.assert_close(getattr(render, name), getattr(ref_render, name), rtol=1e-5, atol=1e-6)
    for name in ("positions", "weights", "accumulation", "footprints"):
        torch.testing.assert_close(getattr(weights, name), getattr(ref_weights, name), rtol=1e-5, atol=1e-6)
    # the test is not vacuous: rays hit matter and the top-k keeps several samples per ray
    assert float(weights.accumulation.min()) > 0.05 and int((weights.weights > 0).sum(1).min()) >= 2
    assert float(render.rgb.std()) > 1e-3
    if space == "ndc":  # depth comes back in world units (the plane scene's near is 2)
        assert float(render.depth.min()) > 1.0


def test_render_view_of_ngp_goes_through_one_march(monkeypatch):
    ds = plane_scene(size=8)
    ngp = _dense_ngp(ds)
    calls = {"march": 0, "weights": 0, "render_camera": 0}
    original = ngp._march
    monkeypatch.setattr(ngp, "_march", lambda *a, **k: calls.__setitem__("march", calls["march"] + 1) or original(*a, **k))
    monkeypatch.setattr(ngp, "sample_weights", lambda *a, **k: calls.__setitem__("weights", 1) or pytest.fail("second pass"))
    monkeypatch.setattr(ngp, "render_camera", lambda *a, **k: pytest.fail("second pass"))
    out, geometry = render_view(ngp, ds.split("test").cameras, 0, torch.ones(3), top_k=3)
    assert calls["march"] == 1 and out.rgb.shape == (8, 8, 3) and geometry.weights.shape == (64, 3)


def test_default_ray_chunk_on_cpu_and_a_bad_chunk_is_named(monkeypatch):
    import langfield.language.view_geometry as vg

    ds = plane_scene(size=12)
    ngp = _dense_ngp(ds)
    cams, bg = ds.split("test").cameras, torch.ones(3)
    monkeypatch.setattr(vg, "CPU_RAY_CHUNK", 40)  # 144 rays: 4 calls, the last one short
    calls = []
    original = ngp.render_rays_with_weights
    monkeypatch.setattr(ngp, "render_rays_with_weights", lambda rays, bg: calls.append(len(rays)) or original(rays, bg))
    render, weights = ngp_view_render(ngp, cams, 0, bg, k=3)
    assert calls == [40, 40, 40, 24]
    one_call, one_weights = ngp_view_render(ngp, cams, 0, bg, k=3, chunk=1000)
    torch.testing.assert_close(render.rgb, one_call.rgb, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights.weights, one_weights.weights, rtol=1e-5, atol=1e-6)
    grad_modes = []
    original_weights = ngp.sample_weights
    monkeypatch.setattr(ngp, "sample_weights", lambda rays: grad_modes.append(torch.is_grad_enabled()) or original_weights(rays))
    ngp_view_weights(ngp, cams, 0, k=3)
    assert grad_modes and not any(grad_modes)  # frozen geometry: marched without autograd
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="chunk must be an int >= 1"):
            ngp_view_weights(ngp, cams, 0, chunk=bad)


def test_render_view_refuses_a_method_without_a_language_path():
    nerf = make_method("nerf", SceneInfo.from_dataset(plane_scene(size=8)))
    with pytest.raises(TypeError, match="cannot carry a language field"):
        render_view(nerf, plane_scene(size=8).split("test").cameras, 0, torch.ones(3))


def test_ngp_render_rays_with_weights_returns_the_render_rays_output():
    ds = plane_scene(size=8)
    ngp = _dense_ngp(ds)
    rays = ngp.camera_rays(ds.split("test").cameras, 0).flatten()
    bg = torch.ones(len(rays), 3)
    out, pos, w, ridx = ngp.render_rays_with_weights(rays, bg)
    ref = ngp.render_rays(rays, bg)
    assert dataclasses.asdict(out).keys() == dataclasses.asdict(ref).keys()
    torch.testing.assert_close(out.rgb, ref.rgb)
    acc = torch.zeros(len(rays)).index_add_(0, ridx, w)
    torch.testing.assert_close(acc[:, None], out.accumulation, rtol=1e-5, atol=1e-6)
    assert pos.shape == (len(w), 3) and bool((ridx[1:] >= ridx[:-1]).all())
