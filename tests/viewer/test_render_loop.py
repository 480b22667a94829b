"""The per-client render thread (small while moving, full at rest, newer cameras supersede) and the
banded SceneView render (same pixels as one render_camera call; cancellable between bands)."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
import torch

from langfield._checks import InputError
from langfield.io.images import to_uint8
from langfield.viewer.cameras import ResolutionPolicy
from langfield.viewer.render_loop import CameraState, ClientRenderLoop
from langfield.viewer.scene_view import ModeUnavailable, SceneView, ViewSettings, parse_labels

from ..training.toy_method import build

pytestmark = pytest.mark.usefixtures("single_thread")


def camera(x: float = 0.0, width: int = 400, height: int = 300) -> CameraState:
    return CameraState((1.0, 0.0, 0.0, 0.0), (x, 0.0, -3.0), math.radians(60), width, height)


class FakeRender:
    """Renders an image whose pixels encode the camera's x; optionally blocks until released."""

    def __init__(self, block: bool = False):
        self.calls = []  # (x, width, height)
        self.block = block
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, cams, cancelled):
        self.calls.append((float(cams.c2w[0, 0, 3]), int(cams.widths[0]), int(cams.heights[0])))
        self.started.set()
        if self.block:
            while not self.release.wait(0.01):
                if cancelled():
                    return None
        x = float(cams.c2w[0, 0, 3])
        return np.full((int(cams.heights[0]), int(cams.widths[0]), 3), int(10 * x) % 256, np.uint8)


def test_small_while_moving_then_full_at_rest():
    shown = []
    render = FakeRender()
    now = [100.0]  # a fake clock: the camera rests only when the test says so, however loaded the machine
    policy = ResolutionPolicy(moving_max_side=40, max_side=200, rest_seconds=0.2)
    loop = ClientRenderLoop(render, shown.append, policy, clock=lambda: now[0]).start()
    try:
        loop.update(camera(1.0))
        assert loop.wait_for_renders(1, 5.0)
        assert render.calls == [(1.0, 40, 30)]  # moving: the small size first
        time.sleep(0.3)
        assert len(render.calls) == 1 and not loop.up_to_date  # still "moving": nothing more
        now[0] += 0.25  # the camera has rested
        assert loop.wait_for_renders(2, 5.0)
        assert render.calls[1] == (1.0, 200, 150) and loop.stats.full_renders == 1 and loop.up_to_date
        time.sleep(0.3)
        assert len(render.calls) == 2  # at rest and drawn: nothing more to do
        loop.refresh()  # settings changed: straight to full size, no small frame
        assert loop.wait_for_renders(3, 5.0)
        assert render.calls[2] == (1.0, 200, 150)
    finally:
        loop.stop()
    assert [img.shape[:2] for img in shown] == [(30, 40), (150, 200), (150, 200)]


def test_a_newer_camera_supersedes_the_render_in_flight():
    shown = []
    render = FakeRender(block=True)
    loop = ClientRenderLoop(render, shown.append, ResolutionPolicy(rest_seconds=0.0)).start()
    try:
        loop.update(camera(1.0))
        assert render.started.wait(5.0)
        render.started.clear()
        loop.update(camera(2.0))  # while the first render blocks
        assert render.started.wait(5.0)  # the loop gave up the first and started the second
        render.release.set()
        assert loop.wait_for_renders(1, 5.0)
    finally:
        loop.stop()
    assert loop.stats.cancelled == 1 and render.calls[0][0] == 1.0 and render.calls[1][0] == 2.0
    assert len(shown) == 1 and shown[0][0, 0, 0] == 20  # only the newest camera's image was shown


def test_a_soft_refresh_lets_the_render_in_flight_finish_then_redraws():
    render = FakeRender(block=True)
    loop = ClientRenderLoop(render, lambda img: None, ResolutionPolicy(rest_seconds=0.0)).start()
    try:
        loop.update(camera(1.0))
        assert render.started.wait(5.0)
        for _ in range(5):  # a training run refreshing faster than a render takes
            loop.refresh(supersede=False)
        render.release.set()
        assert loop.wait_for_renders(2, 5.0)
        time.sleep(0.1)
    finally:
        loop.stop()
    assert loop.stats.cancelled == 0 and loop.stats.renders == 2  # shown, then redrawn once


def test_a_failing_render_is_reported_and_the_loop_goes_on():
    errors = []

    def render(cams, cancelled):
        if float(cams.c2w[0, 0, 3]) < 0:
            raise ModeUnavailable("relevancy: type a query first")
        return np.zeros((int(cams.heights[0]), int(cams.widths[0]), 3), np.uint8)

    loop = ClientRenderLoop(render, lambda img: None, ResolutionPolicy(rest_seconds=0.0), on_error=errors.append).start()
    try:
        loop.update(camera(-1.0))
        deadline = time.monotonic() + 5.0
        while not errors and time.monotonic() < deadline:
            time.sleep(0.01)
        assert errors == ["relevancy: type a query first"] and loop.stats.errors == 1
        loop.update(camera(1.0, width=0))  # a canvas without a size yet (bad input, not a crash)
        deadline = time.monotonic() + 5.0
        while len(errors) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "canvas size" in errors[1]
        loop.update(camera(1.0))
        assert loop.wait_for_renders(1, 5.0)  # the thread survived both
    finally:
        loop.stop()


@pytest.fixture(scope="module")
def toy_view():
    method, dataset = build()
    method.eval()
    return SceneView(method, dataset, band_pixels=40)  # 40 px: several bands per image


def test_banded_render_equals_one_render_camera_call(toy_view):
    cams = toy_view.dataset.split("test").cameras[0]
    bg = toy_view.dataset.eval_background()
    with torch.no_grad():
        whole = toy_view.method.render_camera(cams, bg, output_device="cpu")
    image = toy_view.render(cams, ViewSettings("rgb"))
    assert image.shape == (12, 12, 3) and image.dtype == np.uint8
    assert np.array_equal(image, to_uint8(whole.rgb.clamp(0, 1)))
    acc = toy_view.render(cams, ViewSettings("accumulation"))
    assert np.array_equal(acc[..., 0], to_uint8(whole.accumulation.clamp(0, 1))[..., 0])
    depth = toy_view.render(cams, ViewSettings("depth"))
    assert depth.shape == (12, 12, 3) and depth.std() > 0


def test_cancelled_between_bands_and_unavailable_modes(toy_view):
    cams = toy_view.dataset.split("test").cameras[0]
    asked = []

    def cancelled():
        asked.append(1)
        return len(asked) > 2  # cancel before the third band

    assert toy_view.render(cams, ViewSettings("rgb"), cancelled) is None and len(asked) == 3
    with pytest.raises(ModeUnavailable, match="no language field"):
        toy_view.render(cams, ViewSettings("relevancy", query="sphere"))
    with pytest.raises(ModeUnavailable, match="does not render normals"):
        toy_view.render(cams, ViewSettings("normals"))
    assert toy_view.modes == ("rgb", "depth", "accumulation", "normals")


def test_parse_labels():
    assert parse_labels(" chair, table ,, floor ") == ("chair", "table", "floor")
    assert parse_labels(" , ") == ()
    with pytest.raises(InputError, match="[Dd]uplicate"):
        parse_labels("box, box")
