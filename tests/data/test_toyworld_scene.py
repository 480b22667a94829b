"""Toy-world scene graphs, cameras and captions: determinism, constraints that could fail, left/right truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from langfield._checks import InputError
from langfield.data.toyworld import (
    COLORS,
    SHAPES,
    ToyObject,
    ToyScene,
    ToyWorldConfig,
    attribute_labels,
    descriptive_caption,
    left_to_right,
    left_to_right_batch,
    project_centers,
    render_toyworld,
    sample_cameras,
    sample_cameras_batch,
    sample_scene,
    scene_seed,
    short_caption,
    sweep_cameras,
)
from langfield.data.toyworld.cameras import camera_intrinsics
from langfield.geometry.rotations import look_at
from langfield.types import Cameras


pytestmark = pytest.mark.usefixtures("single_thread")


CFG = ToyWorldConfig()


# --------------------------------------------------------------------------- scenes


def test_scenes_are_deterministic_by_seed_and_differ_between_seeds():
    assert sample_scene(5) == sample_scene(5)
    scenes = [sample_scene(s) for s in range(40)]
    assert len({repr(s.to_dict()) for s in scenes}) == 40
    assert scene_seed(0, 3) != scene_seed(1, 3)
    assert len({scene_seed(2, i) for i in range(1000)}) == 1000


def test_scenes_respect_counts_placement_colours_and_never_overlap():
    counts = []
    for s in range(300):
        scene = sample_scene(s)
        objs = scene.objects
        counts.append(len(objs))
        assert 1 <= len(objs) <= 3
        assert len({o.color for o in objs}) == len(objs)  # distinct_colors
        for i, a in enumerate(objs):
            assert math.hypot(*a.position) <= CFG.placement_radius + 1e-9
            assert a.center[2] == a.size[2]  # resting on the floor
            if a.shape != "box":
                assert a.yaw == 0.0 and a.size[0] == a.size[1]
            for b in objs[i + 1 :]:
                gap = math.dist(a.position, b.position) - a.footprint_radius - b.footprint_radius
                assert gap >= CFG.min_gap - 1e-9
    assert set(counts) == {1, 2, 3}
    assert min(np.bincount(counts)[1:]) > 60  # roughly uniform over 1..3


def test_config_subsets_are_honoured():
    cfg = ToyWorldConfig(min_objects=2, max_objects=2, shapes=("cone",), colors=("red", "blue"), floors=("striped",))
    for s in range(20):
        scene = sample_scene(s, cfg)
        assert len(scene.objects) == 2 and scene.floor == "striped"
        assert {o.shape for o in scene.objects} == {"cone"} and {o.color for o in scene.objects} == {"red", "blue"}


def test_scene_graph_roundtrips_through_a_dict():
    scene = sample_scene(11)
    assert ToyScene.from_dict(scene.to_dict()) == scene
    with pytest.raises(InputError, match=r"rec 4: .*ToyObject.shape"):
        bad = scene.to_dict()
        bad["objects"][0]["shape"] = "pyramid"
        ToyScene.from_dict(bad, where="rec 4")
    with pytest.raises(InputError, match="rec 5: malformed"):
        ToyScene.from_dict({"objects": []}, where="rec 5")


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"image_size": 4}, "ToyWorldConfig.image_size"),
        ({"max_objects": 4}, "ToyWorldConfig.max_objects"),
        ({"min_objects": 3, "max_objects": 2}, "ToyWorldConfig.max_objects"),
        ({"shapes": ("pyramid",)}, "ToyWorldConfig.shapes"),
        ({"colors": ("red", "red")}, "ToyWorldConfig.colors"),
        ({"colors": ("red", "blue")}, "ToyWorldConfig.colors"),  # distinct colours for 3 objects
        ({"camera_distance": (4.0, 3.0)}, "ToyWorldConfig.camera_distance"),
        ({"elevation_deg": (10.0, 95.0)}, "ToyWorldConfig.elevation_deg"),
        ({"supersample": 0}, "ToyWorldConfig.supersample"),
        ({"light_direction": (0.0, 0.0, -1.0)}, "ToyWorldConfig.light_direction"),
        ({"ambient": 1.5}, "ToyWorldConfig.ambient"),
    ],
)
def test_bad_config_fields_are_named(kwargs, field):
    with pytest.raises(InputError, match=field.replace(".", r"\.")):
        ToyWorldConfig(**kwargs)


def test_config_roundtrips_through_a_dict_and_refuses_unknown_fields():
    cfg = ToyWorldConfig(image_size=64, shapes=("box", "cone"))
    assert ToyWorldConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(InputError, match="unknown field"):
        ToyWorldConfig.from_dict({"image_sise": 32})


def test_bad_seeds_are_refused():
    with pytest.raises(InputError, match="seed"):
        sample_scene(-1)
    with pytest.raises(InputError, match="seed"):
        sample_scene("3")
    with pytest.raises(InputError, match="num_views"):
        sample_cameras(3, 0)


# --------------------------------------------------------------------------- cameras


def test_cameras_are_deterministic_opencv_and_independent_of_the_batch():
    scenes = [sample_scene(s) for s in range(8)]
    batch = sample_cameras_batch(scenes, 3)
    alone = sample_cameras(scenes[5], 3)
    assert torch.equal(batch.c2w[15:18], alone.c2w)
    assert torch.equal(sample_cameras(5, 3).c2w, sample_cameras(sample_scene(5), 3).c2w)
    assert not torch.equal(sample_cameras(6, 3).c2w, alone.c2w)
    R = batch.c2w[:, :, :3]
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3).expand(24, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(24), atol=1e-5, rtol=0)
    # OpenCV with world +z up: the camera's y axis (image down) points downward in the world,
    # its x axis (image right) is horizontal, and the camera is above the floor looking down
    assert torch.all(R[:, 2, 1] < 0) and torch.all(R[:, 2, 0].abs() < 1e-5)
    assert torch.all(R[:, 2, 2] < 0) and torch.all(batch.c2w[:, 2, 3] > 0)
    elev = torch.rad2deg(torch.asin(-R[:, 2, 2]))
    assert elev.min() >= CFG.elevation_deg[0] - 1e-3 and elev.max() <= CFG.elevation_deg[1] + 1e-3
    assert torch.equal(batch.Ks[0], camera_intrinsics())


def test_sampled_cameras_frame_every_object_keep_it_visible_and_separate_them_left_to_right():
    cfg = ToyWorldConfig(supersample=1, shadows=False)
    scenes = [sample_scene(s, cfg) for s in range(100, 140)]
    cams = sample_cameras_batch(scenes, 2, cfg)
    idx = torch.arange(len(scenes)).repeat_interleave(2)
    out = render_toyworld(scenes, cams, cfg, scene_index=idx)
    border = torch.zeros(32, 32, dtype=torch.bool)
    border[0], border[-1], border[:, 0], border[:, -1] = True, True, True, True
    fractions = []
    for i, scene in enumerate(scenes):
        alone = [render_toyworld([ToyScene((o,))], cams[2 * i : 2 * i + 2], cfg) for o in scene.objects]
        for v in range(2):
            b = 2 * i + v
            assert not out.silhouette[b][border].any()  # fully framed
            u = project_centers(scene, cams[b])[:, 0]
            if len(u) > 1:
                gaps = (u[:, None] - u[None]).abs() + torch.eye(len(u)) * 1e9
                assert gaps.min() >= CFG.min_separation * 32 - 1e-6
            for j in range(len(scene.objects)):
                fractions.append((out.instance[b] == 2 + j).sum().item() / alone[j].silhouette[v].sum().item())
    fractions = np.array(fractions)
    # the 5 x 5 ray estimate keeps objects mostly unoccluded (min_visible_fraction = 0.6)
    assert fractions.min() >= 0.4 and np.percentile(fractions, 5) >= 0.6


def test_sweep_cameras_step_evenly_round_the_target_and_pass_the_samplers_checks():
    cfg = ToyWorldConfig(supersample=1, shadows=False)
    for seed in (0, 1, 2, 3):
        scene = sample_scene(seed, cfg)
        cams = sweep_cameras(scene, 4, cfg, step_deg=10.0)
        assert torch.equal(cams.c2w, sweep_cameras(seed, 4, cfg, step_deg=10.0).c2w)  # deterministic, seed or scene
        eye = cams.c2w[:, :, 3].double()
        forward = cams.c2w[:, :, 2].double()
        target = torch.tensor([np.mean([o.position[0] for o in scene.objects]), np.mean([o.position[1] for o in scene.objects]),
                               cfg.target_height], dtype=torch.float64)  # fmt: skip
        rel = eye - target
        dist = rel.norm(dim=-1)
        torch.testing.assert_close(forward, -rel / dist[:, None], atol=1e-5, rtol=0)  # looking at the target
        assert float(dist.max() - dist.min()) < 1e-4 and cfg.camera_distance[0] - 1e-4 <= float(dist[0]) <= cfg.camera_distance[1] + 1e-4
        elev = torch.rad2deg(torch.asin(rel[:, 2] / dist))
        assert float(elev.max() - elev.min()) < 1e-3 and cfg.elevation_deg[0] - 1e-3 <= float(elev[0]) <= cfg.elevation_deg[1] + 1e-3
        az = torch.rad2deg(torch.atan2(rel[:, 1], rel[:, 0]))
        steps = torch.remainder(az[1:] - az[:-1], 360.0)
        torch.testing.assert_close(steps, torch.full_like(steps, 10.0), atol=1e-3, rtol=0)
        out = render_toyworld([scene], cams, cfg, scene_index=torch.zeros(4, dtype=torch.long))
        border = torch.zeros(32, 32, dtype=torch.bool)
        border[0], border[-1], border[:, 0], border[:, -1] = True, True, True, True
        for v in range(4):
            assert not out.silhouette[v][border].any()  # every object framed
            u = project_centers(scene, cams[v])[:, 0]
            gaps = (u[:, None] - u[None]).abs() + torch.eye(len(u)) * 1e9
            assert gaps.min() >= cfg.min_separation * 32 - 1e-6  # left / right told apart
    assert not torch.equal(sweep_cameras(0, 4).c2w, sweep_cameras(1, 4).c2w)


def test_sweep_cameras_refuse_bad_arguments_and_impossible_sweeps():
    with pytest.raises(InputError, match="elevation_deg: 70"):
        sweep_cameras(0, 4, elevation_deg=70.0)
    with pytest.raises(InputError, match="distance: 1.0"):
        sweep_cameras(0, 4, distance=1.0)
    with pytest.raises(InputError, match="step_deg"):
        sweep_cameras(0, 4, step_deg=0.0)
    with pytest.raises(InputError, match="num_views: 13 views 30 degrees apart"):
        sweep_cameras(0, 13, step_deg=30.0)
    with pytest.raises(InputError, match="scene 4 has no 4 consecutive accepted views 10 degrees apart"):
        sweep_cameras(4, 4, step_deg=10.0)


# --------------------------------------------------------------------------- captions


def _camera_along_x(sign: float = 1.0) -> Cameras:
    """A camera at x = -4 sign looking along +x sign: world +y is image-left for sign = +1."""
    c2w = look_at(torch.tensor([-4.0 * sign, 0.0, 2.0]), torch.tensor([0.0, 0.0, 0.3]), torch.tensor([0.0, 0.0, 1.0]))
    return Cameras.create(c2w, camera_intrinsics(), 32, 32)


def test_captions_of_a_hand_built_scene_and_its_mirror_view():
    scene = ToyScene(
        (
            ToyObject("cone", "green", (0.0, 0.0), (0.3, 0.3, 0.4)),
            ToyObject("sphere", "red", (0.0, 0.7), (0.25, 0.25, 0.25)),
            ToyObject("sphere", "white", (0.0, -0.7), (0.25, 0.25, 0.25)),
        ),
        floor="checkered",
    )
    front, back = _camera_along_x(1.0), _camera_along_x(-1.0)
    assert left_to_right(scene, front) == [1, 0, 2]
    assert short_caption(scene, front) == "two spheres and a cone"
    assert short_caption(scene) == "a cone and two spheres"  # scene order without a camera
    assert descriptive_caption(scene, front) == "a red sphere left of a green cone left of a white sphere on a checkered floor"
    assert descriptive_caption(scene, back) == "a white sphere left of a green cone left of a red sphere on a checkered floor"
    labels = attribute_labels(scene, back)
    assert labels == {
        "count": 3,
        "shapes": [SHAPES.index("sphere"), SHAPES.index("cone"), SHAPES.index("sphere")],
        "colors": [COLORS.index("white"), COLORS.index("green"), COLORS.index("red")],
        "order": [2, 0, 1],
    }
    single = ToyScene((ToyObject("box", "orange", (0.0, 0.0), (0.3, 0.3, 0.3)),), floor="plain")
    assert attribute_labels(single, front, num_slots=3) == {"count": 1, "shapes": [1, -1, -1], "colors": [1, -1, -1], "order": [0]}
    assert descriptive_caption(single, front) == "an orange box on a plain floor"
    three = ToyScene(tuple(ToyObject("cone", c, (0.0, y), (0.2, 0.2, 0.3)) for c, y in (("red", 0.6), ("blue", 0.0), ("cyan", -0.6))))
    assert short_caption(three, front) == "three cones"


def test_left_right_agrees_with_silhouette_centroids_of_unoccluded_objects():
    cfg = ToyWorldConfig(supersample=1, shadows=False, min_objects=2)
    checked = 0
    for s in range(200, 260):
        scene = sample_scene(s, cfg)
        cams = sample_cameras(scene, 2, cfg)
        out = render_toyworld([scene], cams, cfg)
        alone = [render_toyworld([ToyScene((o,))], cams, cfg) for o in scene.objects]
        for v in range(2):
            areas = [(out.instance[v] == 2 + j).sum().item() for j in range(len(scene.objects))]
            full = [a.silhouette[v].sum().item() for a in alone]
            if any(a < 0.9 * f for a, f in zip(areas, full)):
                continue  # a noticeably occluded object: its visible centroid may shift
            cols = torch.arange(32, dtype=torch.float64)
            u = [((out.instance[v] == 2 + j).double().sum(0) * cols).sum().item() / areas[j] for j in range(len(areas))]
            by_centroid = sorted(range(len(u)), key=lambda j: u[j])
            assert left_to_right(scene, cams[v]) == by_centroid, (s, v, u)
            labels = attribute_labels(scene, cams[v], cfg.num_slots)
            assert labels["shapes"][: len(u)] == [scene.objects[j].shape_index for j in by_centroid]
            checked += 1
    assert checked >= 30


def test_batched_left_to_right_equals_one_at_a_time():
    scenes = [sample_scene(s) for s in range(12)]
    cams = sample_cameras_batch(scenes, 1)
    assert left_to_right_batch(scenes, cams) == [left_to_right(s, cams[i]) for i, s in enumerate(scenes)]


def test_caption_inputs_are_checked():
    scene = sample_scene(2)
    cams = sample_cameras(scene, 2)
    with pytest.raises(InputError, match="camera: expected a single camera"):
        descriptive_caption(scene, cams)
    with pytest.raises(InputError, match="camera: needed"):
        descriptive_caption(scene)
    with pytest.raises(InputError, match="order"):
        short_caption(scene, order=[0, 0, 0])
    with pytest.raises(InputError, match="num_slots"):
        attribute_labels(ToyScene(tuple(sample_scene(s).objects[0] for s in range(3))), cams[0], num_slots=2)
