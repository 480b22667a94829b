"""Queries on rendered feature maps: relevancy, segmentation, 3D localization, colours and export."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from langfield.geometry.rotations import look_at
from langfield.io.colormaps import heatmap_overlay
from langfield.io.images import to_uint8
from langfield.language import queries as queries_module
from langfield.language.queries import (
    CANONICAL_NEGATIVES,
    UNKNOWN,
    check_label_list,
    colorize_labels,
    label_colors,
    localize_3d,
    relevancy,
    segment,
    write_relevancy_image,
    write_segmentation,
)
from langfield.types import Cameras

# ----------------------------------------------------------------------------- relevancy


def test_canonical_negatives():
    assert CANONICAL_NEGATIVES == ("object", "things", "stuff", "texture")


def test_relevancy_hand_computed_2d():
    features = torch.tensor([[3.0, 0.0]])  # unnormalised on purpose
    positive = torch.tensor([1.0, 0.0])
    negatives = torch.tensor([[0.0, 1.0], [2.0, 2.0]])  # cos 0 and 1/sqrt(2) with the feature
    r = relevancy(features, positive, negatives, temperature=10.0)
    # Pairwise softmax positive probabilities: e^10 / (e^10 + e^0) and e^10 / (e^10 + e^(10/sqrt2)).
    p1 = math.exp(10) / (math.exp(10) + 1.0)
    p2 = math.exp(10) / (math.exp(10) + math.exp(10 / math.sqrt(2)))
    assert r.shape == (1,)
    assert r.item() == pytest.approx(min(p1, p2), rel=1e-6)
    assert r.item() == pytest.approx(1.0 / (1.0 + math.exp(-10 * (1 - 1 / math.sqrt(2)))), rel=1e-6)
    # Only the orthogonal negative: feature == positive is highly relevant.
    assert relevancy(features, positive, negatives[:1]).item() == pytest.approx(p1, rel=1e-6)
    assert p1 > 0.9999
    # The opposite feature is irrelevant, a feature halfway between the texts scores 0.5.
    assert relevancy(torch.tensor([[0.0, 1.0]]), positive, negatives[:1]).item() == pytest.approx(1 - p1, abs=1e-6)
    assert relevancy(torch.tensor([[1.0, 1.0]]), positive, negatives[:1]).item() == pytest.approx(0.5)


def test_relevancy_is_min_of_pairwise_softmax():
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(5, 7, 16, generator=gen)
    positive = torch.randn(16, generator=gen)
    negatives = torch.randn(4, 16, generator=gen)
    r = relevancy(features, positive, negatives, temperature=7.0)
    assert r.shape == (5, 7)
    f = features / features.norm(dim=-1, keepdim=True)
    pos = positive / positive.norm()
    neg = negatives / negatives.norm(dim=-1, keepdim=True)
    per_negative = []
    for j in range(4):
        pair = torch.stack([f @ pos, f @ neg[j]], dim=-1)
        per_negative.append(torch.softmax(7.0 * pair, dim=-1)[..., 0])
    expected = torch.stack(per_negative).amin(dim=0)
    torch.testing.assert_close(r, expected, atol=1e-6, rtol=1e-5)
    # Adding a negative can only lower the score.
    r_more = relevancy(features, positive, torch.cat([negatives, positive[None] + 0.1]), temperature=7.0)
    assert bool((r_more <= r + 1e-7).all()) and bool((r_more < r).any())


def test_relevancy_shapes_chunking_and_grad(monkeypatch):
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(2, 3, 4, 8, generator=gen, requires_grad=True)
    positive, negatives = torch.randn(8, generator=gen), torch.randn(3, 8, generator=gen)
    full = relevancy(features, positive, negatives)
    assert full.shape == (2, 3, 4) and full.dtype == torch.float32
    assert bool(((full >= 0) & (full <= 1)).all())
    monkeypatch.setattr(queries_module, "_CHUNK_ELEMENTS", 8 * 5)  # 5 rows per chunk
    chunked = relevancy(features, positive, negatives)
    torch.testing.assert_close(chunked, full)
    chunked.sum().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0


def test_relevancy_errors():
    f = torch.randn(4, 4, 8)
    with pytest.raises(ValueError, match="positive"):
        relevancy(f, torch.randn(7), torch.randn(2, 8))
    with pytest.raises(ValueError, match="negatives"):
        relevancy(f, torch.randn(8), torch.randn(0, 8))
    with pytest.raises(ValueError, match="negatives"):
        relevancy(f, torch.randn(8), torch.randn(8))
    with pytest.raises(ValueError, match="temperature"):
        relevancy(f, torch.randn(8), torch.randn(2, 8), temperature=0.0)
    with pytest.raises(ValueError, match="features"):
        relevancy(f.long(), torch.randn(8), torch.randn(2, 8))


# ----------------------------------------------------------------------------- segmentation


def test_segment_argmax_and_scores():
    labels_emb = torch.eye(3)
    features = torch.tensor([[[2.0, 0.1, 0.0], [0.0, 1.0, 0.2]], [[0.0, 0.3, 5.0], [0.1, 0.0, 1.0]]])
    seg = segment(features, labels_emb, temperature=10.0)
    assert seg.labels.dtype == torch.int64
    assert seg.labels.tolist() == [[0, 1], [2, 2]]
    f = features / features.norm(dim=-1, keepdim=True)
    expected = torch.softmax(10.0 * f, dim=-1).amax(dim=-1)
    torch.testing.assert_close(seg.scores, expected)


def test_segment_unknown_threshold_and_background():
    labels_emb = torch.eye(3)
    features = torch.tensor([[[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])
    # Pixel 1 is tied between labels 0 and 1 (top probability < 0.5); pixel 2 has zero features
    # (uniform probabilities 1/3).
    seg = segment(features, labels_emb, unknown_threshold=0.6)
    assert seg.labels.tolist() == [[0, UNKNOWN, UNKNOWN]]
    assert seg.scores[0, 2].item() == pytest.approx(1 / 3)
    assert segment(features, labels_emb).labels.tolist() == [[0, 0, 0]]  # ties -> lowest index
    seg_bg = segment(features, labels_emb, unknown_threshold=0.6, background_index=2)
    assert seg_bg.labels.tolist() == [[0, 2, 2]]
    with pytest.raises(ValueError, match="unknown_threshold"):
        segment(features, labels_emb, unknown_threshold=1.5)
    with pytest.raises(ValueError, match="background_index"):
        segment(features, labels_emb, background_index=3)
    with pytest.raises(ValueError, match="label_embeddings"):
        segment(features, torch.eye(4))


def test_check_label_list():
    assert check_label_list([" chair", "table "]) == ["chair", "table"]
    with pytest.raises(ValueError, match="empty list"):
        check_label_list([])
    with pytest.raises(ValueError, match=r"labels\[1\] is empty"):
        check_label_list(["chair", "  "])
    with pytest.raises(ValueError, match=r"labels\[2\] 'Chair' duplicates labels\[0\] 'chair'"):
        check_label_list(["chair", "table", " Chair"])


# ----------------------------------------------------------------------------- localization

W = H = 48
FOCAL = 40.0
K = torch.tensor([[FOCAL, 0.0, W / 2], [0.0, FOCAL, H / 2], [0.0, 0.0, 1.0]])
# The queried region on the ground plane z = 0 (original world frame).
BOX_X, BOX_Y = 0.4, 0.3


def plane_cameras(eyes):
    """OpenCV cameras at ``eyes`` looking at the origin of the plane z = 0."""
    eyes = torch.tensor(eyes, dtype=torch.float32)
    c2w = look_at(eyes, torch.zeros_like(eyes), torch.tensor([0.0, 1.0, 0.0]).expand_as(eyes))
    return Cameras.create(c2w, K, W, H)


def plane_hits(cameras: Cameras):
    """Independent ray casting (not the repo's rays): ray distances to z = 0 and hit points.

    Returns ``depth [V, H, W, 1]`` and ``points [V, H, W, 3]`` in float64.
    """
    jj, ii = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    d_cam = np.stack([(jj - W / 2) / FOCAL, (ii - H / 2) / FOCAL, np.ones_like(jj)], -1)
    depths, points = [], []
    for c2w in cameras.c2w.double().numpy():
        d = d_cam @ c2w[:, :3].T
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        o = c2w[:, 3]
        t = -o[2] / d[..., 2]
        depths.append(t[..., None])
        points.append(o + t[..., None] * d)
    return torch.from_numpy(np.stack(depths)), torch.from_numpy(np.stack(points))


def box_relevancy(points: torch.Tensor) -> torch.Tensor:
    """1 on hits inside the queried rectangle, 0 elsewhere (``[V, H, W]`` float32)."""
    inside = (points[..., 0].abs() <= BOX_X) & (points[..., 1].abs() <= BOX_Y)
    return inside.float()


@pytest.fixture(scope="module")
def plane_scene():
    cameras = plane_cameras([[0.4, -0.3, 2.5], [-0.6, 0.5, 2.0]])
    depth, points = plane_hits(cameras)
    return cameras, depth, points


def test_localize_recovers_region(plane_scene):
    cameras, depth, points = plane_scene
    rel = box_relevancy(points)
    loc = localize_3d(rel, depth.float(), cameras)
    assert loc.num_points == int(rel.sum())
    assert loc.score == 1.0
    # Against the true rectangle (perspective makes the pixel density slightly uneven).
    torch.testing.assert_close(loc.point, torch.zeros(3), atol=0.03, rtol=0)
    expected_box = torch.tensor([[-BOX_X, -BOX_Y, 0.0], [BOX_X, BOX_Y, 0.0]])
    torch.testing.assert_close(loc.aabb, expected_box, atol=0.05, rtol=0)
    assert bool((loc.aabb[0] <= loc.point).all() & (loc.point <= loc.aabb[1]).all())


def test_localize_min_relevancy_drops_views_without_the_object(plane_scene):
    """LERF-style maps (0.5 = no evidence): a view that does not see the object keeps its relative
    best pixels without an absolute floor; ``min_relevancy=0.5`` drops them, and a map that never
    reaches the floor is "not found" (QueryNotFoundError), not a box."""
    from langfield.language.queries import QueryNotFoundError

    cameras, depth, points = plane_scene
    rel = 0.45 + 0.5 * box_relevancy(points)  # inside the box 0.95, elsewhere 0.45
    rel[1] = 0.3 + 0.1 * points[1, ..., 0].float().clamp(-1, 1)  # view 1 does not see it: <= 0.4 everywhere
    relative_only = localize_3d(rel, depth.float(), cameras)
    floored = localize_3d(rel, depth.float(), cameras, min_relevancy=0.5)
    assert floored.num_points == int(box_relevancy(points)[0].sum())
    assert relative_only.num_points > floored.num_points  # view 1's best pixels leaked in
    with pytest.raises(QueryNotFoundError, match=r"not found.*0\.400.*min_relevancy=0\.5"):
        localize_3d(rel[1:], depth[1:].float(), cameras[1:], min_relevancy=0.5)
    with pytest.raises(ValueError, match="min_relevancy"):
        localize_3d(rel, depth.float(), cameras, min_relevancy=1.5)


def test_localize_matches_independent_backprojection(plane_scene):
    """Weighted mean and percentile box equal the ones of independently cast hit points."""
    cameras, depth, points = plane_scene
    graded = box_relevancy(points) * (1.0 + points[..., 0].float())  # max 1.4 at x = 0.4
    graded[1] *= 0.5  # the second view's maximum is 0.7; thresholds are per view
    loc = localize_3d(graded, depth.float(), cameras, threshold=0.5)
    hi = graded.amax(dim=(1, 2), keepdim=True)
    chosen = graded >= 0.5 * hi
    weights = (graded / hi)[chosen].double()
    pts = points[chosen]
    expected_point = (pts * weights[:, None]).sum(0) / weights.sum()
    expected_box = torch.quantile(pts, torch.tensor([0.02, 0.98], dtype=torch.float64), dim=0)
    assert loc.num_points == int(chosen.sum())
    torch.testing.assert_close(loc.point, expected_point.float(), atol=1e-4, rtol=0)
    torch.testing.assert_close(loc.aabb, expected_box.float(), atol=1e-4, rtol=0)
    assert loc.score == pytest.approx(graded.max().item())
    # The threshold cut at x >= -0.3 (relative to the per-view maximum) shows in the box.
    assert loc.aabb[0, 0].item() == pytest.approx(-0.3, abs=0.05)


def test_localize_world_transform_returns_original_frame(plane_scene):
    cameras, depth, points = plane_scene
    rel = box_relevancy(points)
    reference = localize_3d(rel, depth.float(), cameras)
    # Normalised frame: x_norm = s R x_orig + t.
    s, angle = 0.5, math.radians(30.0)
    R = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0], [0, 0, 1.0]])
    t = torch.tensor([0.1, -0.2, 0.3])
    T = torch.eye(4)
    T[:3, :3], T[:3, 3] = s * R, t
    c2w = cameras.c2w.clone()
    c2w[:, :, :3] = R @ c2w[:, :, :3]
    c2w[:, :, 3] = s * c2w[:, :, 3] @ R.T + t
    cams_norm = Cameras.create(c2w, K, W, H)
    depth_norm = s * depth.float()
    back = localize_3d(rel, depth_norm, cams_norm, world_transform=T)
    torch.testing.assert_close(back.point, reference.point, atol=1e-4, rtol=0)
    torch.testing.assert_close(back.aabb, reference.aabb, atol=1e-4, rtol=0)
    # Without the transform the point stays in the normalised frame.
    norm = localize_3d(rel, depth_norm, cams_norm)
    torch.testing.assert_close(norm.point, s * R @ reference.point + t, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="world_transform"):
        localize_3d(rel, depth_norm, cams_norm, world_transform=torch.eye(3))


def test_localize_per_view_vs_global(plane_scene):
    """A view that does not see the region adds junk per view, nothing when normalised globally."""
    cameras, depth, points = plane_scene
    rel = box_relevancy(points)
    reference = localize_3d(rel, depth.float(), cameras)
    cams3 = plane_cameras([[0.4, -0.3, 2.5], [-0.6, 0.5, 2.0], [4.0, 4.0, 1.0]])
    depth3, _ = plane_hits(cams3)
    noise = 0.1 * torch.rand(H, W, generator=torch.Generator().manual_seed(0))
    rel3 = torch.cat([rel, noise[None]])
    glob = localize_3d(rel3, depth3.float(), cams3, per_view=False)
    assert glob.num_points == reference.num_points
    torch.testing.assert_close(glob.point, reference.point)
    per_view = localize_3d(rel3, depth3.float(), cams3)
    assert per_view.num_points > reference.num_points


def test_localize_masks_and_single_view(plane_scene):
    cameras, depth, points = plane_scene
    rel = box_relevancy(points)
    # One view, [H, W] relevancy and [H, W, 1] depth.
    single = localize_3d(rel[0], depth[0].float(), cameras[0])
    assert single.num_points == int(rel[0].sum())
    # Low accumulation and non-finite depth remove pixels.
    acc = torch.ones_like(depth, dtype=torch.float32)
    acc[0] = 0.2
    masked = localize_3d(rel, depth.float(), cameras, accumulation=acc)
    assert masked.num_points == int(rel[1].sum())
    bad_depth = depth.float().clone()
    bad_depth[rel.bool()] = float("inf")
    with pytest.raises(ValueError, match="query matched nothing"):
        localize_3d(rel, bad_depth, cameras)
    with pytest.raises(ValueError, match="query matched nothing"):
        localize_3d(torch.zeros(2, H, W), depth.float(), cameras)  # constant relevancy
    with pytest.raises(ValueError, match="min_pixels"):
        localize_3d(rel, depth.float(), cameras, min_pixels=10**6)
    with pytest.raises(ValueError, match="depth must be"):
        localize_3d(rel, depth[:, :-1].float(), cameras)
    with pytest.raises(ValueError, match="one camera per view"):
        localize_3d(rel, depth.float(), cameras[0])
    with pytest.raises(ValueError, match="threshold"):
        localize_3d(rel, depth.float(), cameras, threshold=1.5)


# ----------------------------------------------------------------------------- colours and files


def test_label_colors_distinct_and_deterministic():
    colors = label_colors(300)
    assert colors.shape == (300, 3) and colors.dtype == torch.uint8
    assert torch.equal(colors, label_colors(300))
    assert torch.equal(label_colors(5), colors[:5])
    assert len({tuple(c) for c in colors.tolist()}) == 300
    assert bool((colors.int().sum(dim=1) > 0).all())  # black is kept for unknown
    assert colors[:3].tolist() == [[128, 0, 0], [0, 128, 0], [128, 128, 0]]
    with pytest.raises(ValueError, match="num_labels"):
        label_colors(-1)


def test_colorize_labels():
    labels = torch.tensor([[0, 1], [UNKNOWN, 2]])
    rgb = colorize_labels(labels, 3)
    colors = label_colors(3)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == torch.uint8
    assert rgb[0, 0].tolist() == colors[0].tolist() and rgb[1, 1].tolist() == colors[2].tolist()
    assert rgb[1, 0].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="labels must be in"):
        colorize_labels(torch.tensor([[0, 3]]), 3)


def test_write_segmentation_uint8(tmp_path):
    import imageio.v3 as iio

    labels = torch.tensor([[0, 1, 2], [UNKNOWN, 2, 0]])
    paths = write_segmentation(tmp_path / "seg" / "view_0", labels, ["floor", "chair", "table"], legend=True)
    assert paths["color"].name == "view_0_color.png" and paths["ids"].name == "view_0_ids.png"
    ids = iio.imread(paths["ids"])
    assert ids.dtype == np.uint8
    assert ids.tolist() == [[0, 1, 2], [255, 2, 0]]
    color = iio.imread(paths["color"])
    assert np.array_equal(color, colorize_labels(labels, 3).numpy())
    legend = iio.imread(paths["legend"])
    assert legend.shape[1] > 3 and np.array_equal(legend[:2, :3], color)
    assert not list((tmp_path / "seg").glob("*.tmp*"))  # atomic writes leave no temporaries
    with pytest.raises(ValueError, match="duplicates"):
        write_segmentation(tmp_path / "x", labels, ["floor", "chair", "floor"])


def test_write_segmentation_uint16(tmp_path):
    import imageio.v3 as iio

    names = [f"label {i}" for i in range(300)]
    labels = torch.tensor([[0, 299], [UNKNOWN, 255]])
    paths = write_segmentation(tmp_path / "big", labels, names)
    ids = iio.imread(paths["ids"])
    assert ids.dtype == np.uint16
    assert ids.tolist() == [[0, 299], [65535, 255]]
    assert "legend" not in paths


def test_write_relevancy_image(tmp_path):
    import imageio.v3 as iio

    rgb = torch.rand(6, 5, 3, generator=torch.Generator().manual_seed(0))
    rel = torch.linspace(0, 1, 30).reshape(6, 5)
    path = write_relevancy_image(tmp_path / "rel.png", rgb, rel)
    assert np.array_equal(iio.imread(path), to_uint8(heatmap_overlay(rgb, rel)))
