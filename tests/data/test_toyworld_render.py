"""The toy-world ray caster: exact geometry against closed forms and an independent slow twin,
shading, labels, contours, and batch independence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from langfield._checks import InputError
from langfield.data.raycast import hit_cone, hit_cylinder, normal_cone, quadratic_roots
from langfield.data.toyworld import (
    SHAPES,
    ToyObject,
    ToyScene,
    ToyWorldConfig,
    camera_intrinsics,
    project_centers,
    render_toyworld,
    sample_cameras,
    sample_cameras_batch,
    sample_scene,
)
from langfield.data.toyworld.render import contours_from, scene_tensors, trace_objects
from langfield.geometry.rays import rays_from_camera
from langfield.geometry.rotations import look_at
from langfield.types import Cameras

FLAT = ToyWorldConfig(supersample=1, shadows=False)


pytestmark = pytest.mark.usefixtures("single_thread")


def _camera(eye, target, size=32, f=None, c=None) -> Cameras:
    c2w = look_at(torch.tensor(eye, dtype=torch.float64), torch.tensor(target, dtype=torch.float64), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    f = 1.2 * size if f is None else f
    c = size / 2 if c is None else c
    K = torch.tensor([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])
    return Cameras.create(c2w.float(), K, size, size)


def _ray_dirs(cameras: Cameras, i: int) -> torch.Tensor:
    return rays_from_camera(cameras, i, 0.0, 1.0).directions  # [H, W, 3]


# --------------------------------------------------------------------------- closed forms


def test_centre_ray_depth_of_a_sphere_is_distance_minus_radius_and_its_normal_faces_the_camera():
    r = 0.4
    scene = ToyScene((ToyObject("sphere", "red", (0.2, -0.1), (r, r, r)),))
    centre = (0.2, -0.1, r)
    eye = (3.0, 1.5, 2.0)
    # principal point on pixel (15, 15)'s centre, so that pixel's ray is the optical axis
    cam = _camera(eye, centre, size=32, c=15.5)
    out = render_toyworld([scene], cam, FLAT)
    dist = math.dist(eye, centre)
    assert out.depth[0, 15, 15].item() == pytest.approx(dist - r, abs=2e-5)
    forward = (np.array(centre) - np.array(eye)) / dist
    np.testing.assert_allclose(out.normals[0, 15, 15].numpy(), -forward, atol=1e-5)
    assert out.instance[0, 15, 15].item() == 2 and out.semantic[0, 15, 15].item() == 2 + SHAPES.index("sphere")


def test_lambert_shading_is_exact_on_objects_and_floor():
    scene = ToyScene((ToyObject("sphere", "yellow", (0.0, 0.0), (0.4, 0.4, 0.4)),), floor="plain", floor_palette="slate")
    cam = _camera((2.5, -2.0, 1.8), (0.0, 0.0, 0.3))
    out = render_toyworld([scene], cam, FLAT)
    light = torch.tensor(FLAT.light_direction)
    light = light / light.norm()
    shade = FLAT.ambient + (1 - FLAT.ambient) * (out.normals[0] @ light).clamp_min(0)
    sphere = out.instance[0] == 2
    floor = out.instance[0] == 1
    albedo = torch.tensor(scene.objects[0].rgb)
    floor_albedo = torch.tensor([0.60, 0.62, 0.66])  # slate, light colour (plain floor)
    torch.testing.assert_close(out.rgb[0][sphere], (albedo * shade[sphere, None]).clamp(0, 1), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.rgb[0][floor], (floor_albedo * shade[floor, None]), atol=1e-6, rtol=0)
    assert sphere.sum() > 30 and floor.sum() > 300


def test_shadowed_floor_gets_ambient_light_only():
    scene = ToyScene((ToyObject("box", "blue", (0.0, 0.0), (0.3, 0.3, 0.45), yaw=0.3),), floor="plain")
    cam = _camera((2.8, 2.8, 2.5), (0.0, 0.0, 0.3))
    lit = render_toyworld([scene], cam, ToyWorldConfig(supersample=1, shadows=False))
    shadowed = render_toyworld([scene], cam, ToyWorldConfig(supersample=1, shadows=True))
    floor = lit.instance[0] == 1
    darker = floor & (shadowed.rgb[0].sum(-1) < lit.rgb[0].sum(-1) - 1e-4)
    assert darker.sum() >= 10  # the box casts a visible shadow
    l = torch.tensor(FLAT.light_direction)
    ratio = FLAT.ambient / (FLAT.ambient + (1 - FLAT.ambient) * (l[2] / l.norm()))
    torch.testing.assert_close(shadowed.rgb[0][darker], lit.rgb[0][darker] * ratio, atol=1e-6, rtol=0)
    # nothing else changes
    assert torch.equal(shadowed.rgb[0][~darker], lit.rgb[0][~darker])


def test_box_normals_are_its_yawed_face_axes():
    yaw = 0.7
    scene = ToyScene((ToyObject("box", "green", (0.1, 0.2), (0.35, 0.25, 0.3), yaw=yaw),))
    cam = _camera((2.9, -0.05, 2.2), (0.1, 0.2, 0.3), size=48)  # between the faces along (c, s) and (s, -c)
    out = render_toyworld([scene], cam, FLAT)
    n = out.normals[0][out.instance[0] == 2]
    c, s = math.cos(yaw), math.sin(yaw)
    axes = torch.tensor([[c, s, 0.0], [-c, -s, 0.0], [-s, c, 0.0], [s, -c, 0.0], [0.0, 0.0, 1.0]])
    err, which = (n[:, None, :] - axes[None]).norm(dim=-1).min(dim=1)
    assert err.max() < 1e-5
    assert len(set(which.tolist())) == 3  # three faces seen from a corner view above


def test_normals_are_unit_and_face_the_camera_on_hits_and_zero_on_the_sky():
    scenes = [sample_scene(s) for s in range(6)]
    cams = sample_cameras_batch(scenes, 1)
    out = render_toyworld(scenes, cams, FLAT)
    for i in range(len(scenes)):
        hit = out.instance[i] > 0
        norms = out.normals[i].norm(dim=-1)
        torch.testing.assert_close(norms[hit], torch.ones_like(norms[hit]), atol=1e-5, rtol=0)
        assert torch.all(out.normals[i][~hit] == 0)
        facing = (out.normals[i] * _ray_dirs(cams, i)).sum(-1)
        assert facing[hit].max() < 1e-4
        assert torch.all(out.depth[i][~hit] == 0) and torch.all(out.depth[i][hit] > 0)


def _surface_residual(obj: ToyObject, p: np.ndarray) -> np.ndarray:
    """How far world points ``p [M, 3]`` are from ``obj``'s surface (0 on it), from its implicit description."""
    c = np.array(obj.center)
    q = p - c
    cs, sn = math.cos(obj.yaw), math.sin(obj.yaw)
    x, y, z = cs * q[:, 0] + sn * q[:, 1], -sn * q[:, 0] + cs * q[:, 1], q[:, 2]
    sx, sy, sz = obj.size
    rho = np.hypot(x, y)
    if obj.shape == "sphere":
        return np.abs(np.sqrt(x * x + y * y + z * z) - sx)
    if obj.shape == "box":
        a = np.stack([np.abs(x) / sx, np.abs(y) / sy, np.abs(z) / sz], -1)
        return np.abs(a.max(-1) - 1.0) * min(sx, sy, sz)
    if obj.shape == "cylinder":
        side = np.abs(rho - sx) + np.maximum(np.abs(z) - sz, 0)
        cap = np.abs(np.abs(z) - sz) + np.maximum(rho - sx, 0)
        return np.minimum(side, cap)
    k = sx / (2 * sz)  # cone
    side = np.abs(rho - k * (sz - z)) + np.maximum(np.abs(z) - sz, 0)
    base = np.abs(z + sz) + np.maximum(rho - sx, 0)
    return np.minimum(side, base)


def test_every_hit_lies_on_the_surface_of_the_object_its_instance_names():
    scenes = [sample_scene(s) for s in range(10, 22)]
    cams = sample_cameras_batch(scenes, 1)
    out = render_toyworld(scenes, cams, FLAT)
    seen = set()
    for i, scene in enumerate(scenes):
        d = _ray_dirs(cams, i).double().numpy()
        p = cams.c2w[i, :, 3].double().numpy() + out.depth[i].double().numpy()[..., None] * d
        inst = out.instance[i].numpy()
        assert np.abs(p[inst == 1][:, 2]).max() < 1e-4  # floor z = 0
        for j, obj in enumerate(scene.objects):
            pts = p[inst == 2 + j]
            assert len(pts) > 0
            assert _surface_residual(obj, pts).max() < 2e-4, (i, j, obj.shape)
            seen.add(obj.shape)
    assert seen == set(SHAPES)


# --------------------------------------------------------------------------- slow twin


def _inside(obj: ToyObject, p: np.ndarray) -> np.ndarray:
    """Point-in-solid test (readable, no intersection maths) for ``p [..., 3]``."""
    q = p - np.array(obj.center)
    cs, sn = math.cos(obj.yaw), math.sin(obj.yaw)
    x, y, z = cs * q[..., 0] + sn * q[..., 1], -sn * q[..., 0] + cs * q[..., 1], q[..., 2]
    sx, sy, sz = obj.size
    if obj.shape == "sphere":
        return x * x + y * y + z * z <= sx * sx
    if obj.shape == "box":
        return (np.abs(x) <= sx) & (np.abs(y) <= sy) & (np.abs(z) <= sz)
    rho = np.hypot(x, y)
    if obj.shape == "cylinder":
        return (rho <= sx) & (np.abs(z) <= sz)
    return (np.abs(z) <= sz) & (rho <= sx * (sz - z) / (2 * sz))


def _march(scene: ToyScene, origin: np.ndarray, dirs: np.ndarray, t_max=8.0, step=2e-3):
    """First entry into any object along rays ``dirs [R, 3]`` by marching + bisection: ``(t [R], slot [R])``."""
    ts = np.arange(0.0, t_max, step)
    t_best = np.full(len(dirs), np.inf)
    slot = np.full(len(dirs), -1)
    for j, obj in enumerate(scene.objects):
        inside = _inside(obj, origin + ts[None, :, None] * dirs[:, None, :])  # [R, T]
        hit = inside.any(1)
        first = inside.argmax(1)
        lo = np.where(first > 0, ts[np.maximum(first - 1, 0)], 0.0)
        hi = ts[first]
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            inn = _inside(obj, origin + mid[:, None] * dirs)
            hi, lo = np.where(inn, mid, hi), np.where(inn, lo, mid)
        t = np.where(hit, hi, np.inf)
        closer = t < t_best
        t_best, slot = np.where(closer, t, t_best), np.where(closer, j, slot)
    return t_best, slot


def test_trace_objects_matches_the_marching_twin():
    for seed in (3, 8, 21):
        scene = sample_scene(seed)
        cams = sample_cameras(scene, 1)
        d = _ray_dirs(cams, 0).reshape(-1, 3)
        eye = cams.c2w[0, :, 3]
        st = scene_tensors([scene])
        t, slot = trace_objects(st, tuple(eye[i].reshape(1, 1) for i in range(3)), tuple(d[:, i].reshape(1, -1).contiguous() for i in range(3)))
        t_ref, slot_ref = _march(scene, eye.double().numpy(), d.double().numpy())
        t, slot = t[0].double().numpy(), slot[0].numpy()
        agree = slot == slot_ref
        assert agree.mean() > 0.995  # a grazing ray may slip between two march steps
        both = agree & np.isfinite(t_ref)
        assert both.sum() > 50
        np.testing.assert_allclose(t[both], t_ref[both], atol=2e-4)


# --------------------------------------------------------------------------- raycast primitives


def test_quadratic_roots_handle_negative_leading_coefficients():
    # -(t - 1)(t - 3) = -t^2 + 4t - 3: a = -1, half_b = 2, c = -3
    lo, hi = quadratic_roots(torch.tensor([-1.0]), torch.tensor([2.0]), torch.tensor([-3.0]))
    assert (lo.item(), hi.item()) == pytest.approx((1.0, 3.0))
    lo, hi = quadratic_roots(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([1.0]))  # no real root
    assert math.isinf(lo.item()) and math.isinf(hi.item())


def test_cone_hits_side_base_and_misses_above_the_apex():
    size = (0.5, 0.5, 0.5)  # base radius 0.5 at z = -0.5, apex at z = 0.5
    o = lambda *v: tuple(torch.tensor([x], dtype=torch.float64) for x in v)  # noqa: E731
    # horizontal ray at z = 0 (radius 0.25 there) from x = -2
    assert hit_cone(o(-2.0, 0.0, 0.0), o(1.0, 0.0, 0.0), size).item() == pytest.approx(1.75)
    # from below through the base disc
    assert hit_cone(o(0.1, 0.1, -2.0), o(0.0, 0.0, 1.0), size).item() == pytest.approx(1.5)
    # above the apex, on the mirrored nappe's side: no hit
    assert math.isinf(hit_cone(o(-2.0, 0.0, 0.8), o(1.0, 0.0, 0.0), size).item())
    # straight down onto the apex region at radius 0.1: the surface is at z = 0.5 - 2 * 0.1 = 0.3
    assert hit_cone(o(0.1, 0.0, 2.0), o(0.0, 0.0, -1.0), size).item() == pytest.approx(1.7)
    # cylinder agrees with its closed form too
    assert hit_cylinder(o(-2.0, 0.0, 0.0), o(1.0, 0.0, 0.0), size).item() == pytest.approx(1.5)


def test_cone_side_normal_is_perpendicular_to_the_generatrix():
    r, h = 0.4, 0.6
    z = torch.tensor([0.1], dtype=torch.float64)
    rho = r * (h - z) / (2 * h)
    n = torch.cat(normal_cone((rho, torch.zeros_like(z), z), (r, r, h)))
    generatrix = torch.tensor([-r, 0.0, 2 * h], dtype=torch.float64)  # from base rim to apex in the xz plane
    assert n.norm().item() == pytest.approx(1.0)
    assert torch.dot(n, generatrix).item() == pytest.approx(0.0, abs=1e-12)
    assert n[0] > 0 and n[2] > 0  # outward and upward
    base = torch.cat(normal_cone((torch.tensor([0.1]), torch.tensor([0.0]), torch.tensor([-h])), (r, r, h)))
    assert base.tolist() == [0.0, 0.0, -1.0]


# --------------------------------------------------------------------------- labels and contours


def test_instance_semantic_and_silhouette_agree_and_every_object_is_seen():
    scenes = [sample_scene(s) for s in range(30, 50)]
    cams = sample_cameras_batch(scenes, 2)
    idx = torch.arange(len(scenes)).repeat_interleave(2)
    out = render_toyworld(scenes, cams, ToyWorldConfig(), scene_index=idx)
    for b in range(len(cams)):
        scene = scenes[int(idx[b])]
        ids = set(out.instance[b].unique().tolist())
        assert {1} | {2 + j for j in range(len(scene.objects))} <= ids <= {0, 1} | {2 + j for j in range(len(scene.objects))}
        assert torch.equal(out.silhouette[b], out.instance[b] >= 2)
        for j, obj in enumerate(scene.objects):
            assert torch.all(out.semantic[b][out.instance[b] == 2 + j] == 2 + obj.shape_index)
        assert torch.all(out.semantic[b][out.instance[b] < 2] == out.instance[b][out.instance[b] < 2])


def test_projected_object_centre_matches_the_silhouette_centroid():
    # an off-centre sphere: a half-pixel convention error would move the centroid by 0.5 px
    scene = ToyScene((ToyObject("sphere", "blue", (0.0, 0.0), (0.35, 0.35, 0.35)),))
    cam = _camera((3.0, -0.8, 1.9), (0.3, 0.5, 0.5), size=64)
    out = render_toyworld([scene], cam, FLAT)
    v, u = torch.nonzero(out.silhouette[0], as_tuple=True)
    centroid = torch.stack([u.double().mean() + 0.5, v.double().mean() + 0.5])
    uvz = project_centers(scene, cam)[0]
    assert (centroid - uvz[:2]).abs().max() < 0.15
    assert (uvz[:2] - 32).abs().max() > 5  # really off-centre


def test_contours_mark_the_nearer_side_of_every_instance_boundary():
    scenes = [sample_scene(s) for s in range(60, 66)]
    cams = sample_cameras_batch(scenes, 1)
    out = render_toyworld(scenes, cams, FLAT)
    inst, depth, cont = out.instance, out.depth, out.contours
    d = torch.where(inst > 0, depth, torch.full_like(depth, math.inf))
    boundary = inst[:, :, 1:] != inst[:, :, :-1]
    left_nearer = d[:, :, :-1] <= d[:, :, 1:]
    # every horizontal boundary has its nearer pixel marked
    assert torch.all(cont[:, :, :-1][boundary & left_nearer])
    assert torch.all(cont[:, :, 1:][boundary & ~left_nearer])
    # object pixels next to the floor or sky are contours; the sky never is
    assert not cont[inst == 0].any()
    assert cont.sum() > 0
    # a contour pixel always has a 4-neighbour of another instance (the primitives are convex)
    pad = torch.nn.functional.pad(inst, (1, 1, 1, 1), value=-1)
    differs = torch.zeros_like(cont)
    for dv, du in ((0, 1), (2, 1), (1, 0), (1, 2)):
        nb = pad[:, dv : dv + inst.shape[1], du : du + inst.shape[2]]
        differs |= (nb != inst) & (nb != -1)
    assert torch.all(differs[cont])


def test_contours_from_marks_depth_jumps_within_one_instance():
    inst = torch.ones(1, 1, 4, dtype=torch.int64)
    depth = torch.tensor([[[2.0, 2.1, 4.0, 4.1]]])
    assert contours_from(inst, depth, 0.25).long().tolist() == [[[0, 1, 0, 0]]]


# --------------------------------------------------------------------------- batching, anti-aliasing, errors


def test_an_image_does_not_depend_on_the_rest_of_its_batch():
    scenes = [sample_scene(s) for s in range(70, 76)]
    cams = sample_cameras_batch(scenes, 1)
    full = render_toyworld(scenes, cams)
    alone = render_toyworld([scenes[3]], cams[3])
    for name in ("rgb", "depth", "normals", "semantic", "instance", "contours"):
        assert torch.equal(getattr(full, name)[3], getattr(alone, name)[0]), name


def test_supersampling_blends_colour_at_edges_only():
    scene = sample_scene(5)
    cams = sample_cameras(scene, 1)
    one = render_toyworld([scene], cams, ToyWorldConfig(supersample=1, shadows=False))
    three = render_toyworld([scene], cams, ToyWorldConfig(supersample=3, shadows=False))
    assert torch.equal(one.instance, three.instance) and torch.equal(one.depth, three.depth)
    inst = one.instance[0]
    pad = torch.nn.functional.pad(inst[None, None].float(), (1, 1, 1, 1), mode="replicate")[0, 0]
    patches = pad.unfold(0, 3, 1).unfold(1, 3, 1)
    interior = (patches == inst[..., None, None].float()).all(-1).all(-1) & (inst >= 2)
    diff = (one.rgb[0] - three.rgb[0]).abs().amax(-1)
    assert diff[interior].max() < 0.03  # smooth Lambert shading inside objects
    assert diff[one.contours[0]].max() > 0.1  # silhouettes are blended


def test_render_refuses_bad_inputs_naming_them():
    scene = sample_scene(1)
    cams = sample_cameras(scene, 2)
    with pytest.raises(InputError, match="scene_index"):
        render_toyworld([scene, scene, scene], cams)
    with pytest.raises(InputError, match="scene_index"):
        render_toyworld([scene, scene], cams, scene_index=[0, 2])
    with pytest.raises(InputError, match="cameras"):
        render_toyworld([scene], "not cameras")
    with pytest.raises(InputError, match=r"scenes\[0\]"):
        render_toyworld(["scene"], cams[:1])
    mixed = Cameras.create(cams.c2w, camera_intrinsics(), torch.tensor([32, 64]), torch.tensor([32, 64]))
    with pytest.raises(InputError, match="one image size"):
        render_toyworld([scene], mixed)
