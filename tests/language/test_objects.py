"""Object maps: support plane, class-agnostic grouping and naming on synthetic point clouds whose
objects are known exactly (langfield.language.objects)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from langfield._checks import InputError
from langfield.language.objects import ObjectMapConfig, assign_names, build_object_map, fit_support_plane, group_points

UP = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)


def _box_surface(centre, half, n, gen):
    """``n`` points on the faces of an axis-aligned box above z = 0 (the bottom face is left out)."""
    u = torch.rand(n, 3, generator=gen, dtype=torch.float64) * 2 - 1
    face = torch.randint(0, 5, (n,), generator=gen)  # +-x, +-y, +z
    axis = torch.tensor([0, 0, 1, 1, 2])[face]
    sign = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0], dtype=torch.float64)[face]
    u[torch.arange(n), axis] = sign
    return torch.tensor(centre, dtype=torch.float64) + u * torch.tensor(half, dtype=torch.float64)


def _scene(gen, views=6):
    """A floor (z = 0), a big box, a small box, points below the floor and single-view flying points."""
    floor = torch.cat([torch.rand(3000, 2, generator=gen, dtype=torch.float64) * 2 - 1, torch.zeros(3000, 1, dtype=torch.float64)], 1)
    big = _box_surface((0.5, 0.5, 0.2), (0.2, 0.2, 0.2), 1500, gen)
    small = _box_surface((-0.5, -0.4, 0.1), (0.1, 0.1, 0.1), 300, gen)
    below = torch.cat([torch.rand(100, 2, generator=gen, dtype=torch.float64) - 0.5, torch.full((100, 1), -0.3, dtype=torch.float64)], 1)
    flying = torch.cat([torch.rand(20, 2, generator=gen, dtype=torch.float64) * 1.6 - 0.8, 0.6 + 0.3 * torch.rand(20, 1, generator=gen, dtype=torch.float64)], 1)
    flying = flying + torch.arange(20, dtype=torch.float64)[:, None] * torch.tensor([0.0, 0.0, 0.05], dtype=torch.float64)  # apart
    points = torch.cat([floor, big, small, below, flying])
    truth = torch.cat([torch.full((3000,), 0), torch.full((1500,), 1), torch.full((300,), 2), torch.full((100,), 3), torch.full((20,), 4)])
    view = torch.randint(0, views, (points.shape[0],), generator=gen)
    view[-20:] = torch.arange(20) % views  # each flying point is seen by one view only
    return points, view, truth


def _probs(truth, rows):
    """Label probabilities per point from one row per true group."""
    return torch.tensor(rows, dtype=torch.float64)[truth]


def test_support_plane_prefers_a_horizontal_plane_and_respects_the_tilt_limit():
    gen = torch.Generator().manual_seed(0)
    floor = torch.cat([torch.rand(500, 2, generator=gen, dtype=torch.float64) * 2 - 1, torch.full((500, 1), -0.5, dtype=torch.float64)], 1)
    wall = torch.cat([torch.full((900, 1), 1.0, dtype=torch.float64), torch.rand(900, 2, generator=gen, dtype=torch.float64) * 2 - 1], 1)
    wall[:, 2] += 0.5  # standing on the floor
    plane = fit_support_plane(torch.cat([floor, wall]), UP, tol=0.01, iters=400)
    assert plane is not None  # the wall holds more points but is vertical
    # (wall points within the tolerance of the floor are inliers too: a 1e-4 tilt)
    assert plane[:3].tolist() == pytest.approx([0.0, 0.0, 1.0], abs=1e-3) and float(plane[3]) == pytest.approx(0.5, abs=1e-3)
    tilt = math.radians(10)
    rot = torch.tensor([[1, 0, 0], [0, math.cos(tilt), -math.sin(tilt)], [0, math.sin(tilt), math.cos(tilt)]], dtype=torch.float64)
    tilted = floor @ rot.T
    found = fit_support_plane(tilted, UP, tol=0.01, max_tilt_deg=20, iters=200)
    assert found is not None and float(found[:3] @ UP) == pytest.approx(math.cos(tilt), abs=1e-6)
    assert fit_support_plane(tilted, UP, tol=0.01, max_tilt_deg=5, iters=200) is None
    assert fit_support_plane(floor, UP, tol=0.01, min_fraction=0.9, iters=50) is not None
    assert fit_support_plane(torch.cat([floor[:50], wall]), UP, tol=0.01, min_fraction=0.1, iters=200) is None  # too small a share
    # A plane with most points below it does not hold anything up.
    ceiling = floor + torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64)
    assert fit_support_plane(torch.cat([floor, ceiling[:400]]), UP, tol=0.01, iters=200)[3] == pytest.approx(0.5, abs=1e-6)
    assert fit_support_plane(ceiling, UP, tol=0.01, iters=50) is not None
    assert fit_support_plane(torch.cat([floor, ceiling[:400]]), UP, tol=0.01, max_below=1.0, iters=200)[3] == pytest.approx(0.5, abs=1e-6)


def test_grouping_drops_voxels_seen_from_one_view_and_orders_by_size():
    gen = torch.Generator().manual_seed(1)
    points, view, truth = _scene(gen)
    above = torch.isin(truth, torch.tensor([1, 2, 4]))
    comp = group_points(points[above], view[above], voxel=0.05, min_views=2, min_points=10)
    t = truth[above]
    # Largest first; a few box points fall in voxels that only one view saw.
    assert set(comp[t == 1].tolist()) <= {0, -1} and float((comp[t == 1] == 0).float().mean()) > 0.97
    assert set(comp[t == 2].tolist()) <= {1, -1} and float((comp[t == 2] == 1).float().mean()) > 0.95
    assert (comp[t == 4] == -1).all()  # flying points: one view each
    one_view = group_points(points[above], view[above], voxel=0.05, min_views=1, min_points=1)
    assert int(one_view.max()) >= 3  # without the view test the flying points become objects
    assert group_points(points[:0], view[:0], voxel=0.05).numel() == 0


def test_exclusive_naming_maximises_the_total_score():
    gen = torch.Generator().manual_seed(2)
    for _ in range(20):
        scores = torch.rand(4, 5, generator=gen, dtype=torch.float64)
        names = assign_names(scores, "exclusive")
        best = max(sum(float(scores[i, p[i]]) for i in range(4)) for p in itertools.permutations(range(5), 4))
        assert len(set(names)) == 4 and sum(float(scores[i, k]) for i, k in enumerate(names)) == pytest.approx(best)
    more_objects = assign_names(torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]]), "exclusive")
    assert more_objects == [0, None, 1]
    assert assign_names(torch.tensor([[0.9, 0.1], [0.8, 0.2]]), "argmax") == [0, 0]
    with pytest.raises(InputError, match="assignment"):
        assign_names(torch.ones(2, 2), "greedy")


def test_object_map_finds_the_floor_and_both_boxes_and_names_the_confused_one_by_elimination():
    gen = torch.Generator().manual_seed(3)
    points, view, truth = _scene(gen)
    vocab = ["floor", "big box", "small box"]
    # The small box is mostly taken for the big one (a higher mean probability than the big box's own).
    probs = _probs(truth, [[0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.1, 0.75, 0.15], [0.6, 0.3, 0.1], [0.2, 0.4, 0.4]])
    feats = torch.nn.functional.one_hot(truth, 5).float()
    omap = build_object_map(points, view, probs, feats, vocab, UP, ObjectMapConfig(plane_tol=0.001))
    assert [o.name for o in omap.objects] == ["floor", "big box", "small box"]
    floor, big, small = omap.objects
    assert floor.support and not big.support and omap.plane[:3].tolist() == pytest.approx([0, 0, 1], abs=5e-3)
    # Nothing below the floor or flying is kept; box points within the plane tolerance join the floor.
    assert 3000 <= floor.num_points <= 3030 and 1460 <= big.num_points <= 1500 and 285 <= small.num_points <= 300
    assert floor.num_points + big.num_points + small.num_points <= 4800
    assert big.point.tolist() == pytest.approx([0.5, 0.5, 0.2], abs=0.02)
    assert small.point.tolist() == pytest.approx([-0.5, -0.4, 0.1], abs=0.02)
    assert big.aabb[0].tolist() == pytest.approx([0.3, 0.3, 0.0], abs=0.03)
    assert big.aabb[1].tolist() == pytest.approx([0.7, 0.7, 0.4], abs=0.03)
    assert small.best_name == "big box" and small.name == "small box"  # named by elimination
    assert small.scores["big box"] == pytest.approx(0.75) and small.num_views == 6
    assert float(small.feature @ torch.nn.functional.one_hot(torch.tensor(2), 5).float()) == pytest.approx(1.0)
    assert omap.named("Small  Box")[0] is small and omap.named("chair") == []
    # Naming each object by its own best label calls both boxes "big box" and leaves no "small box".
    argmax = build_object_map(points, view, probs, feats, vocab, UP, ObjectMapConfig(plane_tol=0.001, assignment="argmax"))
    assert [o.name for o in argmax.objects] == ["floor", "big box", "big box"] and argmax.named("small box") == []
    # Mean probabilities alone would swap the boxes; the objective counts points (module docstring).
    mean_only = assign_names(torch.stack([torch.tensor([v for v in o.scores.values()]) for o in omap.objects]).double())
    assert mean_only[1:] == [2, 1]
    as_dict = small.as_dict()
    assert as_dict["name"] == "small box" and as_dict["best_name"] == "big box" and "feature" not in as_dict


def test_object_map_without_a_support_plane_and_bad_input():
    gen = torch.Generator().manual_seed(4)
    points, view, truth = _scene(gen)
    keep = torch.isin(truth, torch.tensor([1, 2]))
    probs = _probs(truth[keep], [[0, 0], [1.0, 0.0], [0.0, 1.0]])
    # Without a floor, no plane that holds 30 % of the points has the rest above it.
    omap = build_object_map(points[keep], view[keep], probs, probs.float(), ["a", "b"], UP, ObjectMapConfig(min_support_fraction=0.3))
    assert omap.plane is None and not any(o.support for o in omap.objects)
    assert [o.name for o in omap.objects] == ["a", "b"]  # (sparse points: some voxels seen by one view only)
    assert omap.objects[0].num_points >= 0.85 * 1500 and omap.objects[1].num_points >= 0.8 * 300
    with pytest.raises(InputError, match="probs"):
        build_object_map(points, view, torch.ones(3, 2), torch.ones(3, 4), ["a", "b"], UP)
    with pytest.raises(InputError, match="surface point"):
        build_object_map(points[:2], view[:2], torch.ones(2, 1), torch.ones(2, 4), ["a"], UP)
    for bad, match in [({"voxel": 0.0}, "voxel"), ({"min_views": 0}, "min_views"), ({"assignment": "best"}, "assignment"),
                       ({"percentiles": (60.0, 40.0)}, "percentiles"), ({"max_tilt_deg": 120.0}, "max_tilt_deg"),
                       ({"min_agreeing_views": -1}, "min_agreeing_views"), ({"depth_tolerance": 0.0}, "depth_tolerance"),
                       ({"max_see_through": 1.5}, "max_see_through")]:  # fmt: skip
        with pytest.raises(InputError, match=match):
            ObjectMapConfig(**bad)


def test_a_noisy_floor_is_absorbed_by_the_support_band():
    gen = torch.Generator().manual_seed(5)
    points, view, truth = _scene(gen)
    noisy = points.clone()
    floor = truth == 0
    noisy[floor, 2] += 0.01 * torch.randn(int(floor.sum()), generator=gen, dtype=torch.float64)
    probs = _probs(truth, [[0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.2, 0.4, 0.4]])
    vocab = ["floor", "big box", "small box"]
    cfg = ObjectMapConfig(plane_tol=0.004)  # ~1.1 noise sigmas: a fifth of the floor lies above the tolerance
    omap = build_object_map(noisy, view, probs, probs.float(), vocab, UP, cfg)
    assert [o.name for o in omap.objects] == vocab
    # median + 3 robust sigmas of the inliers (their heights are cut at the tolerance, so sigma is underestimated)
    assert 1.5 * omap.extras["plane_tol"] < omap.extras["support_band"] < 0.035
    assert omap.objects[0].num_points >= 0.85 * 3000 and omap.objects[2].point.tolist() == pytest.approx([-0.5, -0.4, 0.1], abs=0.03)
    # Without the band the floor loses the part of its noise above the tolerance (left to the grouping).
    bare = build_object_map(noisy, view, probs, probs.float(), vocab, UP, ObjectMapConfig(plane_tol=0.004, support_band_sigmas=0.0))
    assert bare.extras["support_band"] == pytest.approx(bare.extras["plane_tol"])
    assert bare.objects[0].num_points + 200 < omap.objects[0].num_points


def test_the_object_map_is_drawn_where_the_boxes_project():
    from langfield.language.objects import draw_object_map
    from langfield.language.queries import label_colors

    gen = torch.Generator().manual_seed(6)
    points, view, truth = _scene(gen)
    probs = _probs(truth, [[0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.2, 0.4, 0.4]])
    omap = build_object_map(points, view, probs, probs.float(), ["floor", "big box", "small box"], UP, ObjectMapConfig(plane_tol=0.001))
    # A camera 3 units above the origin looking straight down (OpenCV: z forward = world -z).
    c2w = torch.tensor([[1.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, -1.0, 3.0]], dtype=torch.float64)
    K = torch.tensor([[40.0, 0, 32], [0, 40.0, 32], [0, 0, 1]], dtype=torch.float64)
    img = draw_object_map(torch.zeros(64, 64, 3), omap, c2w, K)
    assert img.dtype == np.uint8 and img.shape[0] == 64 and img.shape[1] > 64  # view + legend
    colour = np.array(label_colors(3)[1].tolist())  # the big box's
    ys, xs = np.nonzero((img[:, :64] == colour).all(-1))
    # Its top face (z = 0.4, 2.6 from the camera) spans x, y in [0.3, 0.7]: u = 32 + 40 x / 2.6, v = 32 - 40 y / 2.6.
    assert xs.size > 0 and xs.min() >= 32 + 40 * 0.3 / 3.0 - 2 and xs.max() <= 32 + 40 * 0.7 / 2.6 + 2
    assert ys.min() >= 32 - 40 * 0.7 / 2.6 - 2 and ys.max() <= 32 - 40 * 0.3 / 3.0 + 2
    assert (img[:, 64:] != 32).any()  # the legend panel has entries


def _plane_views(size=32):
    """Two pinhole cameras 3 units in front of the plane z = 0 (OpenCV: looking along +z), 1 unit
    apart, with the exact ray distances to the plane as their depth maps."""
    from langfield.geometry.rays import pixel_centers, rays_from_pixels
    from langfield.types import Cameras

    c2w = torch.eye(4).repeat(2, 1, 1)
    c2w[0, :3, 3] = torch.tensor([-0.5, 0.0, -3.0])
    c2w[1, :3, 3] = torch.tensor([0.5, 0.0, -3.0])
    K = torch.tensor([[40.0, 0.0, size / 2], [0.0, 40.0, size / 2], [0.0, 0.0, 1.0]])
    cams = Cameras.create(c2w, K.expand(2, 3, 3).clone(), widths=size, heights=size)
    pix = pixel_centers(size, size).reshape(-1, 2)
    depths = []
    for j in range(2):
        rays = rays_from_pixels(cams, torch.full((pix.shape[0],), j), pix, 0.0, 10.0)
        depths.append((3.0 / rays.directions[:, 2]).reshape(size, size))
    return cams, torch.stack(depths), torch.ones(2, size, size)


def test_depth_consistency_keeps_surfaces_and_drops_what_other_views_see_through():
    from langfield.language.objects import depth_consistent

    cams, depths, accs = _plane_views()
    points = torch.tensor([
        [0.0, 0.0, 0.0],    # on the plane, seen by both: the other view agrees
        [0.1, 0.05, 0.0],   # on the plane
        [0.0, 0.0, -1.0],   # floating 1 unit in front of the plane: the other view sees the plane behind it
        [0.0, 0.0, 0.5],    # behind the plane: hidden from the other view, nobody agrees
        [5.0, 0.0, 0.0],    # on the plane but outside the other view's image: no vote
    ], dtype=torch.float64)  # fmt: skip
    views = torch.tensor([0, 1, 0, 1, 0])
    keep = depth_consistent(points, views, depths, accs, cams, tolerance=0.03)
    assert keep.tolist() == [True, True, False, False, False]
    # The other view's pixel is empty (not opaque): it looks past the point.
    empty = accs.clone()
    empty[1] = 0.0
    assert depth_consistent(points[:1], views[:1], depths, empty, cams).tolist() == [False]
    # Off by 5 % of the distance: outside a 3 % tolerance (and in front: seen through), inside 6 %.
    near = points[:1].clone()
    near[0, 2] = -0.15
    assert depth_consistent(near, views[:1], depths, accs, cams, tolerance=0.03).tolist() == [False]
    assert depth_consistent(near, views[:1], depths, accs, cams, tolerance=0.06).tolist() == [True]
    # No agreeing view needed and see-through allowed: everything stays.
    assert depth_consistent(points, views, depths, accs, cams, min_agreeing=0, max_see_through=1.0).all()
    with pytest.raises(InputError, match="depth_consistent"):
        depth_consistent(points, views, depths, accs[:1], cams)
