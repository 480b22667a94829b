"""A batched, exact ray caster for toy-world scenes: many scenes x views per call, in torch.

Every ray is intersected analytically (:mod:`langfield.data.raycast`, the intersections the
procedural demo scene uses too) with the floor plane and with each object: sphere, box (yawed),
capped cylinder, capped cone. Work is batched over *images*: a bounding-sphere test of every ray
against every object slot (``[N, K, P]``, a few elementwise ops) keeps the (image, object, ray)
triples that can hit, and all kept triples of one shape, across all images of a chunk, go through
one vectorised exact intersection; a chunk costs a few dozen torch calls whatever its number of
images (:func:`object_distances`).

Outputs (:class:`ToyRender`), for ``B`` images of ``H x W`` pixels:

* ``rgb [B, H, W, 3]`` float32 in [0, 1]: ``albedo * (ambient + (1 - ambient) max(n.l, 0) v)``
  with ``v = 0`` in shadow (one shadow ray per hit when ``config.shadows``), a sky gradient where
  nothing is hit; averaged over ``supersample^2`` subpixel rays (stratified grid) per pixel.
  Deterministic (no random jitter).
* ``depth [B, H, W]``: the **ray distance** of the pixel-centre ray to the first hit (langfield's
  depth convention, docs/conventions.md; z-depth is ``depth * (d . camera_z)``); **0** where the ray
  hits nothing (``instance == 0``).
* ``normals [B, H, W, 3]``: outward unit world normals at the centre-ray hit (they face the camera:
  ``n . d < 0``), 0 on the sky.
* ``semantic [B, H, W]`` int64: :data:`~langfield.data.toyworld.scene.SEMANTIC_LABELS`
  (0 sky, 1 floor, ``2 + SHAPES.index(shape)`` for objects).
* ``instance [B, H, W]`` int64: 0 sky, 1 floor, ``2 + i`` for ``scene.objects[i]``.
* ``silhouette [B, H, W]`` bool: ``instance >= 2`` (objects only).
* ``contours [B, H, W]`` bool: one-pixel occluding contours: a pixel is on a contour when one of
  its 4-neighbours has another instance id, or a depth more than ``contour_depth_tol`` (relative)
  away, **and** the pixel is the nearer of the two (the sky counts as infinitely far). The
  primitives are convex, so every depth discontinuity is also an instance boundary; the depth
  test only matters for scenes where it is not.

Geometry outputs come from the pixel-centre ray only; anti-aliasing blends colour, never labels.

>>> from langfield.data.toyworld.scene import ToyObject, ToyScene
>>> from langfield.data.toyworld.cameras import sample_cameras
>>> scene = ToyScene((ToyObject("sphere", "red", (0.0, 0.0), (0.4, 0.4, 0.4)),))
>>> out = render_toyworld([scene], sample_cameras(scene, 2))
>>> tuple(out.rgb.shape), bool(out.silhouette.any(dim=(1, 2)).all())
((2, 32, 32, 3), True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from langfield._checks import InputError
from langfield.data.raycast import (
    Components,
    hit_box,
    hit_cone,
    hit_cylinder,
    hit_ellipsoid,
    normal_box,
    normal_cone,
    normal_cylinder,
    normal_ellipsoid,
    subpixel_offsets,
)
from langfield.data.toyworld.scene import (
    FLOOR_PALETTES,
    FLOORS,
    SHAPES,
    SKY_HORIZON,
    SKY_ZENITH,
    ToyScene,
    ToyWorldConfig,
)
from langfield.geometry.rays import camera_directions, pixel_centers
from langfield.types import Cameras

__all__ = ["SceneTensors", "ToyRender", "contours_from", "object_distances", "render_toyworld", "scene_tensors", "trace_objects"]

_HIT: Dict[int, Callable[..., Tensor]] = {0: hit_ellipsoid, 1: hit_box, 2: hit_cylinder, 3: hit_cone}
_NORMAL: Dict[int, Callable[..., Components]] = {0: normal_ellipsoid, 1: normal_box, 2: normal_cylinder, 3: normal_cone}
assert SHAPES == ("sphere", "box", "cylinder", "cone")  # the index order of _HIT/_NORMAL

# Subpixel rays traced per chunk of images: large enough to amortise the per-call overhead of the
# few dozen torch ops per shape, small enough to stay in cache (measured on 2 cores; see
# benchmarks/toyworld.py).
_RAYS_PER_CHUNK = 1 << 17
_SHADOW_OFFSET = 1e-3


@dataclass(frozen=True)
class ToyRender:
    """What :func:`render_toyworld` returns for ``B`` images (see the module docstring)."""

    rgb: Tensor
    depth: Tensor
    normals: Tensor
    semantic: Tensor
    instance: Tensor
    silhouette: Tensor
    contours: Tensor

    def __len__(self) -> int:
        return self.rgb.shape[0]


@dataclass(frozen=True)
class SceneTensors:
    """``N`` scenes with ``K`` object slots as tensors (absent slots have ``present == False``).

    Attributes:
        present: ``[N, K]`` bool.
        shape: ``[N, K]`` int64 index into :data:`SHAPES` (0 where absent).
        center: ``[N, K, 3]`` world centres; ``size``: ``[N, K, 3]`` half extents (1 where absent).
        cos_yaw, sin_yaw: ``[N, K]``.
        albedo: ``[N, K, 3]``.
        floor_texture: ``[N]`` int64 index into :data:`FLOORS`; ``floor_colors``: ``[N, 2, 3]``.
    """

    present: Tensor
    shape: Tensor
    center: Tensor
    size: Tensor
    cos_yaw: Tensor
    sin_yaw: Tensor
    albedo: Tensor
    floor_texture: Tensor
    floor_colors: Tensor

    def __len__(self) -> int:
        return self.present.shape[0]

    def index(self, idx: Tensor) -> "SceneTensors":
        """Rows ``idx [M]`` (e.g. one row per camera of a multi-view batch)."""
        return SceneTensors(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


def scene_tensors(scenes: Sequence[ToyScene], num_slots: Optional[int] = None, device: Union[str, torch.device] = "cpu") -> SceneTensors:
    """Pack ``scenes`` into :class:`SceneTensors` with ``num_slots`` slots (default: the most objects)."""
    k = num_slots or max(len(s.objects) for s in scenes)
    n = len(scenes)
    present = np.zeros((n, k), bool)
    shape = np.zeros((n, k), np.int64)
    center = np.zeros((n, k, 3), np.float32)
    size = np.ones((n, k, 3), np.float32)
    yaw = np.zeros((n, k), np.float64)
    albedo = np.zeros((n, k, 3), np.float32)
    floor_texture = np.zeros(n, np.int64)
    floor_colors = np.zeros((n, 2, 3), np.float32)
    for i, scene in enumerate(scenes):
        if len(scene.objects) > k:
            raise InputError(f"scenes[{i}]: {len(scene.objects)} objects exceed num_slots={k}")
        for j, obj in enumerate(scene.objects):
            present[i, j] = True
            shape[i, j] = obj.shape_index
            center[i, j] = obj.center
            size[i, j] = obj.size
            yaw[i, j] = obj.yaw
            albedo[i, j] = obj.rgb
        floor_texture[i] = FLOORS.index(scene.floor)
        floor_colors[i] = FLOOR_PALETTES[scene.floor_palette]
    t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return SceneTensors(
        present=t(present), shape=t(shape), center=t(center), size=t(size),
        cos_yaw=t(np.cos(yaw).astype(np.float32)), sin_yaw=t(np.sin(yaw).astype(np.float32)),
        albedo=t(albedo), floor_texture=t(floor_texture), floor_colors=t(floor_colors),
    )


def _slot_params(st: SceneTensors, n: Tensor, k: Tensor) -> Tuple[Tensor, ...]:
    """Per-object parameters of slots ``(n[M], k[M])``: centre x, y, z, size x, y, z, cos, sin (each ``[M]``).

    One ``index_select`` on a packed ``[N * K, 8]`` table (cheaper than eight 2-D gathers).
    """
    num_k = st.present.shape[1]
    table = torch.cat([st.center, st.size, st.cos_yaw[..., None], st.sin_yaw[..., None]], -1).reshape(-1, 8)
    return table.index_select(0, n * num_k + k).unbind(-1)


def _to_local(params: Tuple[Tensor, ...], p: Components, d: Components) -> Tuple[Components, Components]:
    """World points ``p`` / directions ``d`` ``[M]`` -> the local frames of objects with ``params`` (:func:`_slot_params`)."""
    cx, cy, cz, _, _, _, cs, sn = params
    px, py, pz = p[0] - cx, p[1] - cy, p[2] - cz
    local_p = (cs * px + sn * py, cs * py - sn * px, pz)
    local_d = (cs * d[0] + sn * d[1], cs * d[1] - sn * d[0], d[2])
    return local_p, local_d


def object_distances(st: SceneTensors, origins: Components, dirs: Components) -> Tensor:
    """Distance along every ray to every object slot: ``[N, K, P]``, ``inf`` where it misses (or the slot is empty).

    Args:
        st: ``N`` scenes with ``K`` slots.
        origins, dirs: world components, each ``[N, P]``, ``[N, 1]`` (one value per image),
            ``[1, P]`` (the same rays for every image) or ``[1, 1]`` (one value for all, e.g. the
            direction towards the light); ``dirs`` must be unit vectors, so distances are metric.

    A cheap bounding-sphere test (radius ``|size|``) of every ray against every slot, broadcast as
    ``[N, K, P]``, picks the few ``(image, slot, ray)`` triples that can hit (an object covers a
    few percent of an image); only those go through the exact intersection of their shape.
    """
    num, num_k = st.present.shape
    num_rays = max(x.shape[-1] for x in (*origins, *dirs))
    c = st.center
    oc = [origins[i][:, None, :] - c[:, :, i : i + 1] for i in range(3)]  # [N, K, P or 1]
    d = [x[:, None, :] for x in dirs]
    b = oc[0] * d[0] + oc[1] * d[1] + oc[2] * d[2]
    radius2 = st.size.square().sum(-1, keepdim=True) * 1.0001 + 1e-6
    c2 = oc[0] * oc[0] + oc[1] * oc[1] + oc[2] * oc[2] - radius2
    maybe = (b * b >= c2) & ((b < 0) | (c2 < 0)) & st.present[:, :, None]  # meets the sphere at some t > 0
    n, k, p = torch.nonzero(maybe.expand(num, num_k, num_rays), as_tuple=True)
    t_all = torch.full((num * num_k * num_rays,), math.inf, dtype=dirs[0].dtype, device=c.device)
    if n.numel() > 0:

        def rays(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
            if x.shape[0] == 1 and x.shape[1] == 1:
                return x.reshape(1).expand(rows.numel())
            if x.shape[1] == 1:
                return x[:, 0].index_select(0, rows)
            if x.shape[0] == 1:
                return x[0].index_select(0, cols)
            return x.reshape(-1).index_select(0, rows * num_rays + cols)

        shape = st.shape.reshape(-1).index_select(0, n * num_k + k)
        for s, hit in _HIT.items():
            sel = torch.nonzero(shape == s, as_tuple=True)[0]
            if sel.numel() == 0:
                continue
            ns, ks, ps = n[sel], k[sel], p[sel]
            params = _slot_params(st, ns, ks)
            lo, ld = _to_local(params, tuple(rays(x, ns, ps) for x in origins), tuple(rays(x, ns, ps) for x in dirs))
            t_all[(ns * num_k + ks) * num_rays + ps] = hit(lo, ld, params[3:6])
    return t_all.reshape(num, num_k, num_rays)


def trace_objects(st: SceneTensors, origins: Components, dirs: Components) -> Tuple[Tensor, Tensor]:
    """First object hit of every ray: ``(t [N, P], slot [N, P])``, ``(inf, -1)`` where none
    (arguments as :func:`object_distances`)."""
    t, slot = object_distances(st, origins, dirs).min(dim=1)
    slot = torch.where(torch.isfinite(t), slot, torch.full_like(slot, -1))
    return t, slot


def _object_normals(st: SceneTensors, n: Tensor, k: Tensor, p: Components) -> Components:
    """Outward world normals at world points ``p [M]`` on objects ``(n, k)`` (one per point)."""
    params = _slot_params(st, n, k)
    lp, _ = _to_local(params, p, p)
    size, cs, sn = params[3:6], params[6], params[7]
    shape = st.shape[n, k]
    nx = torch.zeros_like(lp[0])
    ny, nz = torch.zeros_like(nx), torch.zeros_like(nx)
    for s, normal in _NORMAL.items():
        sel = shape == s
        if not bool(sel.any()):
            continue
        ax, ay, az = normal(lp, size)
        nx, ny, nz = torch.where(sel, ax, nx), torch.where(sel, ay, ny), torch.where(sel, az, nz)
    return cs * nx - sn * ny, sn * nx + cs * ny, nz


@dataclass
class _Hits:
    t: Tensor  # [N, P] ray distance, inf on a miss
    instance: Tensor  # [N, P] int64: 0 sky, 1 floor, 2 + slot
    normal: Components  # each [N, P]; 0 on the sky
    rgb: Optional[Tensor]  # [N, P, 3] when shaded


def _trace(st: SceneTensors, eye: Tensor, dirs: Components, config: ToyWorldConfig, shade: bool) -> _Hits:
    """Trace rays from ``eye [N, 3]`` along unit ``dirs`` (components ``[N, P]``) through scenes ``st``."""
    num, num_rays = dirs[0].shape
    origins = (eye[:, 0:1], eye[:, 1:2], eye[:, 2:3])
    t_obj, slot = trace_objects(st, origins, dirs)
    # The floor: the square |x|, |y| <= floor_extent of the plane z = 0, seen from above.
    dz = dirs[2]
    t_floor = torch.where(dz < -1e-9, -origins[2] / torch.where(dz < -1e-9, dz, -torch.ones_like(dz)), torch.full_like(dz, math.inf))
    fx, fy = origins[0] + t_floor * dirs[0], origins[1] + t_floor * dirs[1]
    ext = config.floor_extent
    t_floor = torch.where((fx.abs() <= ext) & (fy.abs() <= ext), t_floor, torch.full_like(t_floor, math.inf))
    on_object = t_obj <= t_floor
    t = torch.minimum(t_obj, t_floor)
    hit = torch.isfinite(t)
    instance = torch.where(on_object & hit, slot + 2, hit.long())
    t0 = torch.where(hit, t, torch.zeros_like(t))
    p = tuple(o + t0 * d for o, d in zip(origins, dirs))

    zeros = torch.zeros_like(t)
    nx, ny, nz = zeros, zeros.clone(), torch.where(instance == 1, torch.ones_like(t), zeros)
    flat_n, flat_p = torch.nonzero(instance >= 2, as_tuple=True)
    if flat_n.numel() > 0:
        k = instance[flat_n, flat_p] - 2
        onx, ony, onz = _object_normals(st, flat_n, k, tuple(c[flat_n, flat_p] for c in p))
        nx = nx.index_put((flat_n, flat_p), onx)
        ny = ny.index_put((flat_n, flat_p), ony)
        nz = nz.index_put((flat_n, flat_p), onz)
    if not shade:
        return _Hits(t=t, instance=instance, normal=(nx, ny, nz), rgb=None)

    # Albedo: object colour, floor texture, or sky.
    obj_k = (instance - 2).clamp_min(0)
    albedo = torch.gather(st.albedo, 1, obj_k[..., None].expand(num, num_rays, 3))  # [N, P, 3]
    cell_x = torch.floor(p[0] / config.floor_period)
    cell_y = torch.floor(p[1] / config.floor_period)
    checker = (cell_x + cell_y).remainder(2.0) > 0.5
    stripes = cell_x.remainder(2.0) > 0.5
    tex = st.floor_texture[:, None]
    dark = torch.where(tex == FLOORS.index("checkered"), checker, torch.where(tex == FLOORS.index("striped"), stripes, torch.zeros_like(checker)))
    floor_rgb = torch.where(dark[..., None], st.floor_colors[:, None, 1], st.floor_colors[:, None, 0])
    albedo = torch.where((instance == 1)[..., None], floor_rgb, albedo)

    light = torch.tensor(config.light_direction, dtype=t.dtype, device=t.device)
    light = light / light.norm()
    n_dot_l = (nx * light[0] + ny * light[1] + nz * light[2]).clamp_min(0.0)
    if config.shadows:
        so = tuple(c + _SHADOW_OFFSET * n for c, n in zip(p, (nx, ny, nz)))
        ld = tuple(light[i].reshape(1, 1) for i in range(3))
        t_shadow, _ = trace_objects(st, so, ld)
        n_dot_l = torch.where(torch.isfinite(t_shadow), torch.zeros_like(n_dot_l), n_dot_l)
    shading = config.ambient + (1.0 - config.ambient) * n_dot_l
    lit = albedo * shading[..., None]
    horizon = torch.tensor(SKY_HORIZON, dtype=t.dtype, device=t.device)
    zenith = torch.tensor(SKY_ZENITH, dtype=t.dtype, device=t.device)
    sky = horizon + (zenith - horizon) * dirs[2].clamp(0.0, 1.0)[..., None]
    rgb = torch.where(hit[..., None], lit, sky).clamp(0.0, 1.0)
    return _Hits(t=t, instance=instance, normal=(nx, ny, nz), rgb=rgb)


def _world_dirs(cameras: Cameras, pixels: Tensor) -> Components:
    """Unit world directions ``[C, P]`` (components) through ``pixels [P, 2]`` of every camera."""
    num, p = len(cameras), pixels.shape[0]
    if not cameras.has_distortion and bool((cameras.Ks == cameras.Ks[:1]).all()):
        # One set of camera-frame directions serves every camera (the toy world's case).
        d_cam = camera_directions(cameras[:1], torch.zeros(p, dtype=torch.int64, device=pixels.device), pixels)
        d_cam = d_cam[None].expand(num, p, 3)
    else:
        idx = torch.arange(num, device=pixels.device).repeat_interleave(p)
        d_cam = camera_directions(cameras, idx, pixels.repeat(num, 1)).reshape(num, p, 3)
    rot = cameras.c2w[:, :3, :3]
    x, y, z = d_cam[..., 0], d_cam[..., 1], d_cam[..., 2]
    d = [rot[:, i, 0:1] * x + rot[:, i, 1:2] * y + rot[:, i, 2:3] * z for i in range(3)]
    inv = torch.rsqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
    return d[0] * inv, d[1] * inv, d[2] * inv


def contours_from(instance: Tensor, depth: Tensor, tol: float) -> Tensor:
    """One-pixel occluding contours ``[B, H, W]`` from ``instance`` and ``depth`` (0 = no hit) ``[B, H, W]``.

    A pixel is marked when a 4-neighbour has another instance id or a depth more than ``tol``
    (relative to the nearer) away, and the pixel is the nearer of the two (no hit = infinitely far).

    >>> inst = torch.tensor([[[1, 1, 2, 2]]])
    >>> contours_from(inst, torch.tensor([[[5.0, 5.0, 3.0, 3.0]]]), 0.25).long().tolist()
    [[[0, 0, 1, 0]]]
    """
    d = torch.where(instance > 0, depth, torch.full_like(depth, math.inf))
    out = torch.zeros_like(instance, dtype=torch.bool)

    def mark(a_inst, b_inst, a_d, b_d):
        differ = a_inst != b_inst
        near = torch.minimum(a_d, b_d)
        jump = (a_d - b_d).abs() > tol * near
        edge = differ | (jump & torch.isfinite(near))
        return edge & (a_d <= b_d), edge & (b_d <= a_d)

    a, b = mark(instance[:, :, :-1], instance[:, :, 1:], d[:, :, :-1], d[:, :, 1:])
    out[:, :, :-1] |= a
    out[:, :, 1:] |= b
    a, b = mark(instance[:, :-1], instance[:, 1:], d[:, :-1], d[:, 1:])
    out[:, :-1] |= a
    out[:, 1:] |= b
    return out


def _check_inputs(scenes: Sequence[ToyScene], cameras: Cameras, scene_index) -> Tensor:
    if not isinstance(cameras, Cameras):
        raise InputError(f"cameras: expected langfield.types.Cameras, got {type(cameras).__name__}")
    if len(scenes) == 0 or len(cameras) == 0:
        raise InputError(f"scenes and cameras must be non-empty (got {len(scenes)} scenes, {len(cameras)} cameras)")
    for i, s in enumerate(scenes):
        if not isinstance(s, ToyScene):
            raise InputError(f"scenes[{i}]: expected a ToyScene, got {type(s).__name__}")
    if bool((cameras.widths != cameras.widths[0]).any() | (cameras.heights != cameras.heights[0]).any()):
        raise InputError("cameras: all cameras of one call must share one image size")
    if scene_index is None:
        if len(scenes) == 1:
            return torch.zeros(len(cameras), dtype=torch.int64)
        if len(scenes) != len(cameras):
            raise InputError(
                f"scene_index: needed when the number of scenes ({len(scenes)}) differs from the number of cameras ({len(cameras)})"
            )
        return torch.arange(len(cameras))
    idx = torch.as_tensor(scene_index, dtype=torch.int64).reshape(-1)
    if idx.numel() != len(cameras):
        raise InputError(f"scene_index: expected one entry per camera ({len(cameras)}), got {idx.numel()}")
    if bool((idx < 0).any() | (idx >= len(scenes)).any()):
        raise InputError(f"scene_index: entries must lie in [0, {len(scenes)}), got min {int(idx.min())} max {int(idx.max())}")
    return idx


def render_toyworld(
    scenes: Sequence[ToyScene],
    cameras: Cameras,
    config: ToyWorldConfig = ToyWorldConfig(),
    *,
    scene_index: Optional[Union[Sequence[int], Tensor]] = None,
) -> ToyRender:
    """Render camera ``c`` of ``cameras`` (OpenCV c2w, world +z up) looking at ``scenes[scene_index[c]]``.

    Args:
        scenes: the scenes.
        cameras: ``B`` cameras of one image size (their ``widths``/``heights``, not
            ``config.image_size``, set the output size).
        config: rendering options (``supersample``, ``shadows``, lighting, floor, contour tolerance).
        scene_index: ``[B]`` scene of each camera; default ``arange(B)`` (needs ``len(scenes) == B``),
            or every camera on the one scene when ``len(scenes) == 1``.

    Returns:
        :class:`ToyRender` with a leading ``B`` (see the module docstring for every field).

    Runs in float32 on ``cameras.device``, in chunks of about 65k subpixel rays.
    """
    idx = _check_inputs(scenes, cameras, scene_index)
    device = cameras.device
    st_all = scene_tensors(scenes, device=device)
    w, h = int(cameras.widths[0]), int(cameras.heights[0])
    ss = int(config.supersample)
    centres = pixel_centers(w, h, device=device).reshape(-1, 2)
    offsets = subpixel_offsets(ss).to(device)
    sub = (centres[:, None, :] + offsets[None]).reshape(-1, 2)  # pixel-major: [H*W*ss*ss, 2]
    per_image = sub.shape[0] + (0 if ss == 1 else centres.shape[0])
    chunk = max(1, _RAYS_PER_CHUNK // per_image)
    parts = []
    for start in range(0, len(cameras), chunk):
        cams = cameras[start : start + chunk]
        st = st_all.index(idx[start : start + chunk].to(device))
        eye = cams.c2w[:, :3, 3]
        shaded = _trace(st, eye, _world_dirs(cams, sub), config, shade=True)
        rgb = shaded.rgb.reshape(len(cams), h * w, ss * ss, 3).mean(2)
        geo = shaded if ss == 1 else _trace(st, eye, _world_dirs(cams, centres), config, shade=False)
        depth = torch.where(geo.instance > 0, geo.t, torch.zeros_like(geo.t))
        normals = torch.stack(geo.normal, -1)
        parts.append((rgb, depth, normals, geo.instance, st.shape))
    b = len(cameras)
    rgb = torch.cat([p[0] for p in parts]).reshape(b, h, w, 3)
    depth = torch.cat([p[1] for p in parts]).reshape(b, h, w)
    normals = torch.cat([p[2] for p in parts]).reshape(b, h, w, 3)
    instance = torch.cat([p[3] for p in parts]).reshape(b, h, w)
    shapes = torch.cat([p[4] for p in parts])  # [B, K]
    obj = instance >= 2
    slot_shape = torch.gather(shapes, 1, (instance - 2).clamp_min(0).reshape(b, -1)).reshape(b, h, w)
    semantic = torch.where(obj, slot_shape + 2, instance)
    contours = contours_from(instance, depth, config.contour_depth_tol)
    return ToyRender(rgb=rgb, depth=depth, normals=normals, semantic=semantic, instance=instance, silhouette=obj, contours=contours)
