"""The viewer in a real browser: Playwright driving the system Chromium (Debian ``chromium``).

It loads the page, checks the canvas shows the scene (not blank), drags the camera with the
mouse and checks the server rendered the new view, then types a query and checks the relevancy
render. Skipped, with the reason, where viser, Playwright or Chromium is missing (``.ci/run``
installs Chromium; Playwright's own browser download is not used).
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import time

import numpy as np
import pytest

CHROMIUM = os.environ.get("LANGFIELD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("viser") is None, reason="viser not installed: pip install -e '.[viewer]'"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="playwright not installed: pip install -e '.[dev]'"),
    pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium (apt-get install chromium; .ci/run does it as root)"),
    pytest.mark.timeout(120),
]


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def canvas_pixels(page) -> np.ndarray:
    """The 3D canvas as the browser shows it, ``uint8 [H, W, 3]``."""
    from PIL import Image

    png = page.locator("canvas").first.screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_viewer_in_chromium(tiny_ngp_language_run):
    from playwright.sync_api import sync_playwright

    from langfield.viewer.cameras import ResolutionPolicy
    from langfield.viewer.server import Viewer, open_scene_view

    view = open_scene_view(tiny_ngp_language_run, "cpu")
    assert view.language is not None and "relevancy" in view.modes  # the shared run has a language field
    viewer = Viewer(view, policy=ResolutionPolicy(moving_max_side=24, max_side=64, rest_seconds=0.2)).start()
    assert viewer.url.startswith("http://127.0.0.1:")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=["--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader"])  # fmt: skip
            try:
                page = browser.new_page(viewport={"width": 480, "height": 360})
                page.goto(viewer.url)
                # 1. the first full-resolution render reaches the page
                wait_until(lambda: viewer.loops and next(iter(viewer.loops.values())).stats.full_renders >= 1, 40, "a render")
                loop = next(iter(viewer.loops.values()))
                client_id = next(iter(viewer.loops))
                # The browser may report a camera or two while its page settles (viser's own default
                # camera, looking at nothing, can come first and its render is plain background): wait
                # for a full render of the camera it reports now that shows the scene.
                def settled_scene() -> bool:
                    image = viewer.last_images.get(client_id)
                    return loop.up_to_date and loop.stats.full_renders >= 1 and image is not None and image.std() > 5

                wait_until(settled_scene, 30, "a full render of the settled camera showing the scene (not blank)")
                first = viewer.last_images[client_id].copy()
                assert first.shape[1] == 64 and first.std() > 5, f"blank frame (std {first.std():.2f})"  # the scene
                time.sleep(0.3)  # the browser draws the image it received
                shown = canvas_pixels(page)
                corner = shown[shown.shape[0] // 2 :, : shown.shape[1] // 3]  # below-left: no GUI panel there
                assert corner.std() > 5, "the canvas is blank"
                # 2. drag the camera: the client reports new cameras, the server renders the new view
                version, renders = loop.version, loop.stats.renders
                page.mouse.move(80, 300)
                page.mouse.down()
                for k in range(1, 9):
                    page.mouse.move(80 + 15 * k, 300 - 3 * k, steps=2)
                page.mouse.up()
                wait_until(lambda: loop.version > version, 10, "camera updates from the browser")
                time.sleep(0.5)  # the camera controls' damping settles
                wait_until(lambda: loop.up_to_date and loop.stats.full_renders >= 2, 30, "a full render of the new view")
                assert loop.stats.renders > renders
                moved = viewer.last_images[client_id].copy()
                assert moved.shape == first.shape and np.abs(moved.astype(int) - first.astype(int)).mean() > 2
                # 3. type a query: relevancy mode, rendered
                full = loop.stats.full_renders
                box = page.locator("xpath=//*[text()='Query']/following::input[1]")
                box.fill("sphere")
                box.press("Enter")
                wait_until(lambda: viewer.settings.query == "sphere" and viewer.settings.mode == "relevancy", 10, "the query")
                wait_until(lambda: loop.up_to_date and loop.stats.full_renders > full, 30, "the relevancy render")
                assert loop.stats.errors == 0, loop.stats.last_error
                relevancy = viewer.last_images[client_id]
                assert np.abs(relevancy.astype(int) - moved.astype(int)).mean() > 2
            finally:
                browser.close()
    finally:
        viewer.stop()
