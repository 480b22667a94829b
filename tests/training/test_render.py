import pytest
import torch

from langfield.geometry.rays import rays_from_camera
from langfield.training.render import render_camera, render_image_set, unwrap_model

from .toy_method import build, torch_test_state  # noqa: F401


def test_render_camera_matches_one_big_call_and_is_chunk_independent():
    method, dataset = build(perturb=True)
    cams = dataset.split("test").cameras
    bg = torch.tensor([0.2, 0.4, 0.6])
    small = render_camera(method, cams, 1, dataset.near, dataset.far, bg, chunk=7)
    big = render_camera(method, cams, 1, dataset.near, dataset.far, bg, chunk=100_000)
    h, w = int(cams.heights[1]), int(cams.widths[1])
    assert small.rgb.shape == (h, w, 3) and small.depth.shape == (h, w, 1) and small.accumulation.shape == (h, w, 1)
    assert torch.allclose(small.rgb, big.rgb, atol=1e-6) and torch.allclose(small.depth, big.depth, atol=1e-5)
    # same as rendering every ray at once, in eval mode (no jitter), row-major like the image
    rays = rays_from_camera(cams, 1, dataset.near, dataset.far).flatten()
    method.eval()
    ref = method.render_rays(rays, bg.expand(len(rays), 3))
    method.train()
    assert torch.allclose(small.rgb.reshape(-1, 3), ref.rgb, atol=1e-6)
    assert not small.rgb.requires_grad
    # background really reaches the method: where accumulation is small the colour is the background
    other = render_camera(method, cams, 1, dataset.near, dataset.far, torch.zeros(3), chunk=50)
    expected_shift = (1 - big.accumulation) * bg
    assert torch.allclose(big.rgb - other.rgb, expected_shift, atol=1e-5)


def test_render_restores_training_mode_and_unwraps():
    method, dataset = build()
    cams = dataset.split("train").cameras
    method.train()
    render_camera(method, cams, 0, dataset.near, dataset.far, torch.ones(3), output_device="cpu")
    assert method.training
    method.eval()
    render_camera(method, cams, 0, dataset.near, dataset.far, torch.ones(3))
    assert not method.training
    assert unwrap_model(torch.nn.DataParallel(method)) is method


def test_render_image_set_yields_every_view():
    method, dataset = build()
    test = dataset.split("test")
    items = list(render_image_set(method, test, dataset.near, dataset.far, torch.ones(3), chunk=64))
    assert [i for i, _ in items] == list(range(len(test)))
    assert all(out.rgb.shape == (test.height, test.width, 3) for _, out in items)
    assert not torch.allclose(items[0][1].rgb, items[1][1].rgb)


def test_bad_input():
    method, dataset = build()
    cams = dataset.split("train").cameras
    with pytest.raises(ValueError, match="background"):
        render_camera(method, cams, 0, 1.0, 5.0, torch.ones(4))
    with pytest.raises(ValueError, match="chunk"):
        render_camera(method, cams, 0, 1.0, 5.0, torch.ones(3), chunk=0)
    with pytest.raises(IndexError):
        render_camera(method, cams, 99, 1.0, 5.0, torch.ones(3))
    with pytest.raises(TypeError, match="render_rays"):
        render_camera(torch.nn.Linear(2, 2), cams, 0, 1.0, 5.0, torch.ones(3))
