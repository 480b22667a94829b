"""The built-in procedural demo scene: an analytic, labelled multi-object scene ray traced in torch.

The scene needs no download, renders in well under a second at demo resolution, and gives exact
ground truth for colour, alpha, depth (ray distance), normals and per-pixel semantic labels, so it
serves the demo (``langfield demo``), the end-to-end training tests and, later, the language
benchmarks (every object carries a label id and a name).

Conventions:

* **World frame: +z is up.** The ground slab's top face is the plane ``z = GROUND_TOP`` (-0.5);
  all objects stand on it, and everything lies inside the box ``[-1, 1]^3``.
* Every pose is OpenCV camera-to-world (x right, y down, z forward), like the rest of langfield;
  :func:`write_procedural_dataset` converts to OpenGL/Blender on disk only.
* Depth is the metric **ray distance** along the unit ray direction (not z-depth).
* Label id 0 is the background (no hit); object ``k`` of :func:`procedural_scene_objects` has
  label id ``k + 1`` and ``procedural_labels()[id]`` is its name.
* The ray–primitive intersections and normals live in :mod:`langfield.data.raycast`, shared with
  the toy world's batched renderer (:mod:`langfield.data.toyworld`).
* Colours are view-independent: Lambertian albedo x (ambient + diffuse from one fixed directional
  light), with hard shadows. ``rgb`` outputs are *straight* (un-premultiplied) colours, the way an
  RGBA PNG stores them; composite with ``rgb * alpha + background * (1 - alpha)``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Literal, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from langfield.data.dataset import ImageSet, SceneDataset
from langfield.data.raycast import (
    Components,
    hit_box,
    hit_cylinder,
    hit_ellipsoid,
    normal_box,
    normal_cylinder,
    normal_ellipsoid,
    subpixel_offsets,
)
from langfield.geometry.conventions import opencv_to_opengl, to_homogeneous
from langfield.io.atomic import atomic_write_json
from langfield.geometry.rays import pixel_centers, rays_from_pixels
from langfield.geometry.rotations import look_at
from langfield.types import Cameras

Color = Tuple[float, float, float]
Vec3 = Tuple[float, float, float]

GROUND_TOP = -0.5
# Light arrives *from* this direction (world, +z up): high, from the front-left, so objects cast
# visible shadows onto the ground.
LIGHT_DIRECTION: Vec3 = (-0.45, -0.35, 0.82)
AMBIENT = 0.3
_SHADOW_OFFSET = 1e-3  # shadow-ray origins are pushed this far along the normal
_SPLIT_IDS = {"train": 0, "test": 1, "val": 2}
_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))


# ----------------------------------------------------------------------------------------------
# Scene description
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProceduralObject:
    """One analytic, opaque object of the demo scene.

    Attributes:
        name: label name (e.g. ``"sphere"``).
        label: label id (>= 1; 0 is the background).
        shape: ``"box" | "ellipsoid" | "cylinder"``.
        center: world-space centre.
        size: ``"box"``: half extents; ``"ellipsoid"``: semi-axes; ``"cylinder"``:
            ``(radius, radius, half_height)`` with the axis along local z.
        yaw: rotation about world +z in radians (local frame = ``R(yaw)^T (x - center)``).
        texture: key of the texture function (``"checker2d" | "checker3d" | "sectors" |
            "stripes_ramp" | "normal_gradient"``).
        colors: palette used by the texture.
        period: spatial period (world units) or number of angular sectors of the texture.
    """

    name: str
    label: int
    shape: str
    center: Vec3
    size: Vec3
    yaw: float
    texture: str
    colors: Tuple[Color, ...]
    period: float


def procedural_scene_objects() -> List[ProceduralObject]:
    """The objects of the demo scene, in label order (object ``k`` has label id ``k + 1``).

    Five objects standing on ``z = -0.5`` (world +z up), textured at different spatial
    frequencies: a checkered ground slab (0.25 cells), a beach-ball sphere (8 sectors), a rotated
    box with a fine 3D checker (0.1 cells), a striped pillar with a colour ramp, and a smoothly
    shaded rotated ellipsoid.
    """
    return [
        ProceduralObject(
            name="ground", label=1, shape="box", center=(0.0, 0.0, GROUND_TOP - 0.05), size=(0.95, 0.95, 0.05),
            yaw=0.0, texture="checker2d", colors=((0.92, 0.88, 0.78), (0.22, 0.42, 0.52), (0.45, 0.45, 0.45)),
            period=0.25,
        ),
        ProceduralObject(
            name="sphere", label=2, shape="ellipsoid", center=(0.38, 0.30, GROUND_TOP + 0.37), size=(0.37, 0.37, 0.37),
            yaw=0.3, texture="sectors",
            colors=((0.90, 0.18, 0.15), (0.96, 0.83, 0.20), (0.15, 0.45, 0.88), (0.95, 0.95, 0.95)),
            period=8.0,
        ),
        ProceduralObject(
            name="box", label=3, shape="box", center=(-0.42, 0.28, GROUND_TOP + 0.28), size=(0.22, 0.18, 0.28),
            yaw=0.5, texture="checker3d", colors=((0.78, 0.22, 0.12), (0.97, 0.82, 0.62)), period=0.1,
        ),
        ProceduralObject(
            name="cylinder", label=4, shape="cylinder", center=(0.05, -0.45, GROUND_TOP + 0.35), size=(0.2, 0.2, 0.35),
            yaw=0.0, texture="stripes_ramp",
            colors=((0.10, 0.30, 0.20), (0.95, 0.60, 0.10), (0.55, 0.20, 0.70), (0.30, 0.70, 0.35)),
            period=12.0,
        ),
        ProceduralObject(
            name="ellipsoid", label=5, shape="ellipsoid", center=(-0.45, -0.40, GROUND_TOP + 0.18),
            size=(0.22, 0.14, 0.18), yaw=0.8, texture="normal_gradient", colors=((0.55, 0.55, 0.55),), period=1.0,
        ),
    ]


def tabletop_scene_objects() -> List[ProceduralObject]:
    """A second labelled layout, ``"tabletop"``: seven objects (eight labels with the background)
    on a wooden table top, several of them small, one stacked on another.

    Built to test what the demo layout does not: small objects that cover a few percent of the
    image (a ball, a mug, a bottle seen from afar), names that are text-related to each other
    (mug / bottle, crate / book), and an "on top of" relation (the book lies on the crate). Same
    conventions as :func:`procedural_scene_objects` (table top at ``z = -0.5``, world +z up).
    """
    top = GROUND_TOP
    return [
        ProceduralObject(
            name="table", label=1, shape="box", center=(0.0, 0.0, top - 0.05), size=(0.95, 0.95, 0.05), yaw=0.0,
            texture="checker2d", colors=((0.66, 0.47, 0.30), (0.55, 0.38, 0.24), (0.40, 0.27, 0.17)), period=0.3,
        ),
        ProceduralObject(
            name="crate", label=2, shape="box", center=(-0.40, 0.35, top + 0.22), size=(0.22, 0.22, 0.22), yaw=0.35,
            texture="checker3d", colors=((0.82, 0.70, 0.42), (0.52, 0.40, 0.20)), period=0.11,
        ),
        ProceduralObject(
            name="book", label=3, shape="box", center=(-0.40, 0.35, top + 0.48), size=(0.16, 0.11, 0.04), yaw=0.9,
            texture="checker2d", colors=((0.15, 0.25, 0.65), (0.20, 0.35, 0.80), (0.93, 0.92, 0.85)), period=0.08,
        ),
        ProceduralObject(
            name="ball", label=4, shape="ellipsoid", center=(0.18, 0.48, top + 0.13), size=(0.13, 0.13, 0.13), yaw=0.0,
            texture="sectors", colors=((0.92, 0.15, 0.15), (0.98, 0.98, 0.98), (0.95, 0.95, 0.95)), period=6.0,
        ),
        ProceduralObject(
            name="mug", label=5, shape="cylinder", center=(0.48, -0.02, top + 0.12), size=(0.10, 0.10, 0.12), yaw=0.0,
            texture="stripes_ramp",
            colors=((0.95, 0.95, 0.92), (0.85, 0.35, 0.10), (0.95, 0.75, 0.20), (0.30, 0.20, 0.15)), period=10.0,
        ),
        ProceduralObject(
            name="bottle", label=6, shape="cylinder", center=(-0.05, -0.22, top + 0.30), size=(0.08, 0.08, 0.30),
            yaw=0.0, texture="stripes_ramp",
            colors=((0.10, 0.45, 0.22), (0.20, 0.70, 0.35), (0.70, 0.90, 0.60), (0.85, 0.85, 0.85)), period=6.0,
        ),
        ProceduralObject(
            name="pillow", label=7, shape="ellipsoid", center=(0.36, -0.52, top + 0.12), size=(0.26, 0.18, 0.12),
            yaw=-0.5, texture="normal_gradient", colors=((0.72, 0.40, 0.68),), period=1.0,
        ),
    ]


#: The names of the labelled layouts (a type, so command lines list them).
Layout = Literal["demo", "tabletop"]
#: The labelled layouts of the procedural scene, by name (``ProceduralSceneConfig.layout``).
PROCEDURAL_LAYOUTS: Dict[str, Callable[[], List[ProceduralObject]]] = {
    "demo": procedural_scene_objects,
    "tabletop": tabletop_scene_objects,
}


def layout_objects(layout: str = "demo") -> List[ProceduralObject]:
    """The objects of ``layout`` (a key of :data:`PROCEDURAL_LAYOUTS`), in label order."""
    if layout not in PROCEDURAL_LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(PROCEDURAL_LAYOUTS)}, got {layout!r}")
    return PROCEDURAL_LAYOUTS[layout]()


def procedural_labels(layout: str = "demo") -> List[str]:
    """Label names indexed by label id: ``["background", "ground", "sphere", ...]`` (demo layout)."""
    objects = layout_objects(layout)
    names = ["background"] + [""] * len(objects)
    for obj in objects:
        names[obj.label] = obj.name
    return names


# ----------------------------------------------------------------------------------------------
# Ray-primitive intersection (object-local frames)
# ----------------------------------------------------------------------------------------------


def _to_local(obj: ProceduralObject, o: Components, d: Components) -> Tuple[Components, Components]:
    """World points/directions -> object-local frame ``x_l = R(yaw)^T (x - center)``.

    Works on separate ``[R]`` components: elementwise ops on contiguous vectors are several times
    faster on CPU than ``[R, 3] @ [3, 3]`` matmuls or reductions over a length-3 last dim.
    """
    cx, cy, cz = obj.center
    px, py, pz = o[0] - cx, o[1] - cy, o[2] - cz
    if obj.yaw == 0.0:
        return (px, py, pz), d
    c, s = math.cos(obj.yaw), math.sin(obj.yaw)
    return (c * px + s * py, c * py - s * px, pz), (c * d[0] + s * d[1], c * d[1] - s * d[0], d[2])


def _rotate_to_world(obj: ProceduralObject, v: Tensor) -> Tensor:
    """Local vectors ``[M, 3]`` -> world (rotation about +z only; elementwise, no BLAS call)."""
    if obj.yaw == 0.0:
        return v
    c, s = math.cos(obj.yaw), math.sin(obj.yaw)
    x, y, z = v.unbind(-1)
    return torch.stack([c * x - s * y, s * x + c * y, z], -1)


def _normal_from(fn: Callable[[Components, Vec3], Components]) -> Callable[[Tensor, Vec3], Tensor]:
    """Adapt a component-wise normal of :mod:`langfield.data.raycast` to ``p [M, 3] -> n [M, 3]``."""

    def normal(p: Tensor, size: Vec3) -> Tensor:
        return torch.stack(fn(p.unbind(-1), size), -1)

    return normal


_HIT: Dict[str, Callable[[Components, Components, Vec3], Tensor]] = {
    "box": hit_box,
    "ellipsoid": hit_ellipsoid,
    "cylinder": hit_cylinder,
}
_NORMAL: Dict[str, Callable[[Tensor, Vec3], Tensor]] = {
    "box": _normal_from(normal_box),
    "ellipsoid": _normal_from(normal_ellipsoid),
    "cylinder": _normal_from(normal_cylinder),
}


# ----------------------------------------------------------------------------------------------
# Textures (object-local point p [M, 3] and local normal n [M, 3] -> albedo [M, 3])
# ----------------------------------------------------------------------------------------------


def _palette(obj: ProceduralObject, p: Tensor) -> Tensor:
    return torch.tensor(obj.colors, device=p.device, dtype=p.dtype)


def _tex_checker2d(obj: ProceduralObject, p: Tensor, n: Tensor) -> Tensor:
    """Top face: xy checkerboard (cell ``period``) shaded by a gentle x ramp; other faces: ``colors[2]``."""
    pal = _palette(obj, p)
    parity = (torch.floor(p[:, 0] / obj.period) + torch.floor(p[:, 1] / obj.period)).remainder(2)
    top = torch.where(parity[:, None] > 0.5, pal[1], pal[0])
    ramp = 0.8 + 0.2 * (p[:, :1] / obj.size[0] + 1.0) * 0.5
    return torch.where(n[:, 2:3] > 0.5, top * ramp, pal[2].expand_as(top))


def _tex_checker3d(obj: ProceduralObject, p: Tensor, n: Tensor) -> Tensor:
    """Solid 3D checker with cell ``period`` (looks like a 2D checker on every face)."""
    pal = _palette(obj, p)
    parity = torch.floor(p / obj.period).sum(-1).remainder(2)
    return torch.where(parity[:, None] > 0.5, pal[1], pal[0])


def _tex_sectors(obj: ProceduralObject, p: Tensor, n: Tensor) -> Tensor:
    """Beach ball: ``period`` azimuthal sectors cycling through the palette, white polar caps."""
    pal = _palette(obj, p)
    phi = torch.atan2(p[:, 1], p[:, 0]) + math.pi
    sector = torch.floor(phi / (2 * math.pi / obj.period)).long().clamp(0, int(obj.period) - 1)
    sector = sector.remainder(pal.shape[0])
    col = pal[0].expand(p.shape[0], 3)
    for j in range(1, pal.shape[0]):
        col = torch.where((sector == j)[:, None], pal[j], col)
    cap = n[:, 2].abs() > 0.9
    return torch.where(cap[:, None], pal[-1].expand_as(col), col)


def _tex_stripes_ramp(obj: ProceduralObject, p: Tensor, n: Tensor) -> Tensor:
    """Pillar: ``period`` vertical stripes alternating a dark colour and a bottom-to-top ramp."""
    pal = _palette(obj, p)
    phi = torch.atan2(p[:, 1], p[:, 0]) + math.pi
    parity = torch.floor(phi / (2 * math.pi / obj.period)).remainder(2)
    u = ((p[:, 2:3] / obj.size[2]) + 1.0).clamp(0, 2) * 0.5
    ramp = pal[1] * (1 - u) + pal[2] * u
    side = torch.where(parity[:, None] > 0.5, ramp, pal[0].expand_as(ramp))
    cap = n[:, 2].abs() > 0.5
    return torch.where(cap[:, None], pal[3].expand_as(side), side)


def _tex_normal_gradient(obj: ProceduralObject, p: Tensor, n: Tensor) -> Tensor:
    """Smooth, low-frequency colour from the local normal around ``colors[0]``."""
    base = _palette(obj, p)[0]
    return (base + 0.4 * n).clamp(0.0, 1.0)


_TEXTURES: Dict[str, Callable[[ProceduralObject, Tensor, Tensor], Tensor]] = {
    "checker2d": _tex_checker2d,
    "checker3d": _tex_checker3d,
    "sectors": _tex_sectors,
    "stripes_ramp": _tex_stripes_ramp,
    "normal_gradient": _tex_normal_gradient,
}


# ----------------------------------------------------------------------------------------------
# Tracing
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProceduralHit:
    """What :func:`trace_procedural` returns for ``R`` rays.

    Attributes:
        rgb: ``[R, 3]`` shaded straight colour in [0, 1]; 0 where the ray misses.
        alpha: ``[R, 1]`` 1 where the ray hits an object, 0 where it misses.
        depth: ``[R, 1]`` ray distance to the first hit (along the unit direction); ``inf`` on a miss.
        normals: ``[R, 3]`` outward unit world-space normal at the hit; 0 on a miss.
        labels: ``[R]`` int64 label id of the hit object; 0 (background) on a miss.
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    normals: Tensor
    labels: Tensor


def object_aabb(obj: ProceduralObject) -> Tuple[Vec3, Vec3]:
    """The object's exact world-axis-aligned bounding box ``(min, max)`` (rotations are about +z
    only: the yawed box's corners, the yawed ellipsoid's support extents, the upright cylinder's
    circle)."""
    c, s = abs(math.cos(obj.yaw)), abs(math.sin(obj.yaw))
    sx, sy, sz = obj.size
    if obj.shape == "box":
        rx, ry = c * sx + s * sy, s * sx + c * sy
    elif obj.shape == "ellipsoid":
        rx, ry = math.hypot(c * sx, s * sy), math.hypot(s * sx, c * sy)
    else:  # cylinder about local z: a circle of radius sx
        rx = ry = sx
    cx, cy, cz = obj.center
    return (cx - rx, cy - ry, cz - sz), (cx + rx, cy + ry, cz + sz)


def _nearest(
    objects: Sequence[ProceduralObject], origins: Tensor, dirs: Tensor
) -> Tuple[Tensor, Tensor]:
    """``(t [R], index [R])``: distance to and index of the nearest object; ``(inf, -1)`` on a miss.

    Rays that miss the objects' joint bounding box are culled before the per-object tests.
    """
    boxes = [object_aabb(o) for o in objects]
    lo = [min(b[0][i] for b in boxes) - 1e-3 for i in range(3)]
    hi = [max(b[1][i] for b in boxes) + 1e-3 for i in range(3)]
    half = tuple(0.5 * (h - l) for l, h in zip(lo, hi))
    mid = [0.5 * (h + l) for l, h in zip(lo, hi)]
    o_w, d_w = tuple(origins.T.contiguous()), tuple(dirs.T.contiguous())
    t_all = torch.full_like(o_w[0], math.inf)
    idx_all = torch.full(t_all.shape, -1, dtype=torch.int64, device=t_all.device)
    inside = hit_box(tuple(oi - m for oi, m in zip(o_w, mid)), d_w, half) < math.inf
    inside |= (o_w[0] - mid[0]).abs().le(half[0]) & (o_w[1] - mid[1]).abs().le(half[1]) & (o_w[2] - mid[2]).abs().le(half[2])
    keep = inside.nonzero(as_tuple=True)[0]
    if keep.numel() == 0:
        return t_all, idx_all
    o_w = tuple(c[keep] for c in o_w)
    d_w = tuple(c[keep] for c in d_w)
    t = torch.full_like(o_w[0], math.inf)
    idx = torch.full(t.shape, -1, dtype=torch.int64, device=t.device)
    for k, obj in enumerate(objects):
        o, d = _to_local(obj, o_w, d_w)
        t_k = _HIT[obj.shape](o, d, obj.size)
        closer = t_k < t
        t = torch.where(closer, t_k, t)
        idx = torch.where(closer, torch.full_like(idx, k), idx)
    t_all[keep] = t
    idx_all[keep] = idx
    return t_all, idx_all


def _check_rays(origins: Tensor, directions: Tensor) -> Tuple[Tensor, Tensor]:
    if origins.ndim != 2 or origins.shape[-1] != 3 or directions.shape != origins.shape:
        raise ValueError(
            f"origins and directions must both be [R, 3], got {tuple(origins.shape)} and {tuple(directions.shape)}"
        )
    dtype = origins.dtype if origins.dtype in (torch.float32, torch.float64) else torch.float32
    origins = origins.to(dtype)
    directions = torch.nn.functional.normalize(directions.to(dtype), dim=-1)
    return origins, directions


def intersect_procedural(origins: Tensor, directions: Tensor, layout: str = "demo") -> Tuple[Tensor, Tensor]:
    """Geometry only (no shading): ``(depth [R, 1], labels [R])`` for rays ``[R, 3]``.

    ``depth`` is the ray distance (``inf`` on a miss; directions are normalised first); ``labels``
    the int64 label id (0 on a miss). Cheaper than :func:`trace_procedural`.
    """
    origins, directions = _check_rays(origins, directions)
    objects = layout_objects(layout)
    t, idx = _nearest(objects, origins, directions)
    labels = torch.zeros_like(idx)
    for k, obj in enumerate(objects):
        labels = torch.where(idx == k, torch.full_like(idx, obj.label), labels)
    return t[:, None], labels


def trace_procedural(origins: Tensor, directions: Tensor, layout: str = "demo") -> ProceduralHit:
    """Ray trace ``layout`` (default: the demo scene) for rays ``origins [R, 3]``, ``directions [R, 3]`` (world, +z up).

    Directions are normalised, so ``depth`` is a metric ray distance. Shading is view-independent:
    ``albedo * (AMBIENT + (1 - AMBIENT) * max(n . l, 0) * visible)`` with ``l = LIGHT_DIRECTION``
    and ``visible`` from a shadow ray. See :class:`ProceduralHit` for the outputs.
    """
    origins, directions = _check_rays(origins, directions)
    objects = layout_objects(layout)
    num = origins.shape[0]
    t, idx = _nearest(objects, origins, directions)
    hit = idx >= 0
    points = origins + directions * torch.where(hit, t, torch.zeros_like(t))[:, None]

    normals = torch.zeros_like(origins)
    albedo = torch.zeros_like(origins)
    labels = torch.zeros(num, dtype=torch.int64, device=origins.device)
    for k, obj in enumerate(objects):
        sel = (idx == k).nonzero(as_tuple=True)[0]
        if sel.numel() == 0:
            continue
        p_sel = points[sel]
        p_local = torch.stack(_to_local(obj, p_sel.unbind(-1), p_sel.unbind(-1))[0], -1)
        n_local = _NORMAL[obj.shape](p_local, obj.size)
        normals[sel] = _rotate_to_world(obj, n_local)
        albedo[sel] = _TEXTURES[obj.texture](obj, p_local, n_local)
        labels[sel] = obj.label

    light = torch.nn.functional.normalize(torch.tensor(LIGHT_DIRECTION, device=origins.device, dtype=origins.dtype), dim=0)
    # Two-sided shading: orient the normal against the ray (only matters for rays starting inside).
    facing = torch.where(((normals * directions).sum(-1, keepdim=True) > 0), -normals, normals)
    n_dot_l = (facing @ light).clamp_min(0.0)
    lit = (hit & (n_dot_l > 0)).nonzero(as_tuple=True)[0]
    if lit.numel() > 0:
        shadow_o = points[lit] + _SHADOW_OFFSET * facing[lit]
        t_shadow, _ = _nearest(objects, shadow_o, light.expand_as(shadow_o))
        n_dot_l[lit] = torch.where(torch.isfinite(t_shadow), torch.zeros_like(t_shadow), n_dot_l[lit])
    shade = AMBIENT + (1.0 - AMBIENT) * n_dot_l
    rgb = (albedo * shade[:, None]).clamp(0.0, 1.0)
    return ProceduralHit(
        rgb=rgb,
        alpha=hit[:, None].to(origins.dtype),
        depth=t[:, None],
        normals=normals,
        labels=labels,
    )


# ----------------------------------------------------------------------------------------------
# Cameras and views
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProceduralSceneConfig:
    """Size and camera layout of the procedural dataset.

    Attributes:
        width, height: image size in pixels.
        num_train, num_test, num_val: views per split (a split with 0 views is omitted; train needs > 0).
        focal_scale: focal length in pixels is ``focal_scale * width`` (fx = fy, principal point at centre).
        radius: distance of every camera from the world origin.
        target: world point every camera looks at (default: the middle of the objects, which stand
            on ``z = -0.5`` and reach ``z ~ 0.25``; the origin would put them in the lower half).
        elevation_min_deg, elevation_max_deg: camera elevation range above the xy plane (world +z up).
        supersample: ``ss`` -> ``ss x ss`` subpixel rays per pixel for rgb/alpha anti-aliasing.
        seed: seeds the camera jitter; the same seed gives the same dataset.
        layout: which labelled objects stand on the ground (:data:`PROCEDURAL_LAYOUTS`: ``"demo"``,
            the default five, or ``"tabletop"``, seven smaller ones).
    """

    width: int = 64
    height: int = 64
    num_train: int = 40
    num_test: int = 8
    num_val: int = 0
    focal_scale: float = 1.1
    radius: float = 3.0
    target: Vec3 = (0.0, 0.0, -0.25)
    elevation_min_deg: float = 15.0
    elevation_max_deg: float = 70.0
    supersample: int = 2
    seed: int = 0
    layout: Layout = "demo"

    def __post_init__(self) -> None:
        if self.layout not in PROCEDURAL_LAYOUTS:
            raise ValueError(f"layout must be one of {sorted(PROCEDURAL_LAYOUTS)}, got {self.layout!r}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be > 0, got {self.width}x{self.height}")
        if self.num_train <= 0 or self.num_test < 0 or self.num_val < 0:
            raise ValueError("num_train must be > 0 and num_test/num_val >= 0")
        if self.radius <= math.sqrt(3.0):
            raise ValueError(f"radius must exceed sqrt(3) so cameras sit outside the scene box, got {self.radius}")
        if max(abs(v) for v in self.target) > 1.0:
            raise ValueError(f"target must lie inside the scene box [-1, 1]^3, got {self.target}")
        if not 0.0 <= self.elevation_min_deg <= self.elevation_max_deg < 90.0:
            raise ValueError("need 0 <= elevation_min_deg <= elevation_max_deg < 90")
        if self.supersample < 1:
            raise ValueError(f"supersample must be >= 1, got {self.supersample}")

    @property
    def near(self) -> float:
        return self.radius - 1.8

    @property
    def far(self) -> float:
        return self.radius + 1.8


def _split_of_spiral_points(config: ProceduralSceneConfig) -> Dict[str, List[int]]:
    """Assign the ``N = num_train + num_test + num_val`` spiral points to splits.

    Test and val points are spread evenly along the spiral (so along elevation) and never shared
    with train; train takes the rest.
    """
    total = config.num_train + config.num_test + config.num_val
    free = list(range(total))
    out: Dict[str, List[int]] = {}
    for split, num in (("test", config.num_test), ("val", config.num_val)):
        picks = sorted({free[int((j + 0.5) * len(free) / num)] for j in range(num)}) if num else []
        out[split] = picks
        taken = set(picks)
        free = [i for i in free if i not in taken]
    out["train"] = free
    return out


def procedural_cameras(config: ProceduralSceneConfig, split: str = "train") -> Cameras:
    """The cameras of ``split`` (``"train" | "test" | "val"``), OpenCV c2w, world +z up.

    All ``num_train + num_test + num_val`` views lie on one golden (Fibonacci) spiral on the
    sphere of ``config.radius`` around the origin, uniform in area over the elevation band, with a
    small jitter (a third of the point spacing at most) from a generator seeded by ``config.seed``.
    Test and val views are spiral points spread evenly between the training points, so they are
    held out yet inside the training distribution. All cameras look at ``config.target``.
    """
    if split not in _SPLIT_IDS:
        raise ValueError(f"split must be one of {sorted(_SPLIT_IDS)}, got {split!r}")
    num = {"train": config.num_train, "test": config.num_test, "val": config.num_val}[split]
    if num <= 0:
        raise ValueError(f"config has no {split!r} views")
    total = config.num_train + config.num_test + config.num_val
    gen = torch.Generator().manual_seed(config.seed)
    jitter = torch.rand(total, 2, generator=gen, dtype=torch.float64) - 0.5
    lo = math.sin(math.radians(config.elevation_min_deg))
    hi = math.sin(math.radians(config.elevation_max_deg))
    i = torch.arange(total, dtype=torch.float64)
    # Uniform in area over the band <=> uniform in sin(elevation); jitter within each stratum.
    u = ((i + 0.5 + 0.6 * jitter[:, 0]) / total).clamp(0.0, 1.0)
    elevation = torch.asin(lo + (hi - lo) * u)
    azimuth = i * _GOLDEN_ANGLE + 0.6 * jitter[:, 1] * math.sqrt(4 * math.pi / total)
    eyes = config.radius * torch.stack(
        [torch.cos(elevation) * torch.cos(azimuth), torch.cos(elevation) * torch.sin(azimuth), torch.sin(elevation)], -1
    )
    eyes = eyes[_split_of_spiral_points(config)[split]]
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    c2w = look_at(eyes, torch.tensor(config.target, dtype=torch.float64), up).float()
    f = config.focal_scale * config.width
    K = torch.tensor([[f, 0.0, config.width / 2.0], [0.0, f, config.height / 2.0], [0.0, 0.0, 1.0]])
    return Cameras.create(c2w, K, config.width, config.height)


# Rays traced per batch (subpixel rays; a batch holds whole pixels of possibly several views).
# Large enough to amortise per-op overhead (8k: ~2.5x slower), small enough to stay cache-friendly.
_RAYS_PER_BATCH = 65536


@contextlib.contextmanager
def _single_threaded():
    """Run torch ops on one intra-op thread inside the block, restoring the setting afterwards.

    A second thread buys little on the renderer's batches (0.4 s vs 0.55 s for 48 views, idle),
    but some ops (``sqrt``, ``normalize``, indexing, ...) open an OpenMP region even for a few
    thousand elements. On a busy machine (other processes on the same cores) every such region
    waits for a descheduled worker: we measured 48 views taking 8-25 s with 2 threads against
    0.6-1.5 s with 1 thread on a loaded 2-core box.
    """
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _render_pixels(cameras: Cameras, cam_idx: Tensor, centres: Tensor, offsets: Tensor, layout: str) -> Tuple[Tensor, ...]:
    """Render ``P`` pixels (``centres [P, 2]`` of cameras ``cam_idx [P]``) with ``S`` subpixel ``offsets [S, 2]``.

    Returns ``rgb [P, 3]`` (straight), ``alpha [P, 1]``, ``depth [P, 1]`` (0 on a miss) and ``labels [P]``.
    """
    p, s = centres.shape[0], offsets.shape[0]
    pix = (centres[:, None, :] + offsets[None]).reshape(-1, 2)
    rays = rays_from_pixels(cameras, cam_idx.repeat_interleave(s), pix, 0.0, 0.0)
    hit = trace_procedural(rays.origins, rays.directions, layout)
    alpha_sub = hit.alpha.reshape(p, s, 1)
    alpha = alpha_sub.mean(1)
    premult = (hit.rgb.reshape(p, s, 3) * alpha_sub).mean(1)
    rgb = torch.where(alpha > 0, premult / alpha.clamp_min(1e-8), torch.zeros_like(premult))
    # Depth and labels from the centre ray (geometry only).
    rays_c = rays_from_pixels(cameras, cam_idx, centres, 0.0, 0.0)
    t, labels = intersect_procedural(rays_c.origins, rays_c.directions, layout)
    depth = torch.where(torch.isfinite(t), t, torch.zeros_like(t))
    return rgb, alpha, depth, labels


def _render_views(
    cameras: Cameras, indices: Sequence[int], supersample: int, layout: str = "demo"
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Render views of identical size; see :func:`render_procedural_view` (outputs gain a leading ``C``)."""
    num = len(indices)
    w, h = int(cameras.widths[indices[0]]), int(cameras.heights[indices[0]])
    device = cameras.device
    offsets = subpixel_offsets(supersample).to(device)
    centres_all = pixel_centers(w, h, device=device).reshape(-1, 2)
    idx = torch.as_tensor(list(indices), dtype=torch.int64, device=device)
    # All (view, pixel) pairs, view-major like the output, traced in batches of whole pixels.
    centres_all = centres_all.repeat(num, 1)
    cams_all = idx.repeat_interleave(h * w)
    step = max(1, _RAYS_PER_BATCH // offsets.shape[0])
    outs = []
    for start in range(0, num * h * w, step):
        sl = slice(start, start + step)
        outs.append(_render_pixels(cameras, cams_all[sl], centres_all[sl], offsets, layout))
    rgb, alpha, depth, labels = (torch.cat(parts, 0) for parts in zip(*outs))
    return rgb.reshape(num, h, w, 3), alpha.reshape(num, h, w, 1), depth.reshape(num, h, w, 1), labels.reshape(num, h, w)


def render_procedural_view(
    cameras: Cameras, index: int, supersample: int = 2, layout: str = "demo"
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Render camera ``index`` of ``cameras`` (OpenCV c2w, world +z up) of ``layout`` exactly.

    Returns:
        rgb: ``[H, W, 3]`` float straight (un-premultiplied) colour, averaged over the
            ``supersample x supersample`` grid of subpixel rays that hit; 0 where none hits.
        alpha: ``[H, W, 1]`` float coverage: fraction of subpixel rays that hit.
        depth: ``[H, W, 1]`` ray distance of the pixel-centre ray; **0 where it misses**.
        labels: ``[H, W]`` int64 label id of the pixel-centre ray (0 = background).
    """
    if not 0 <= index < len(cameras):
        raise IndexError(f"camera index {index} out of range for {len(cameras)} cameras")
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    with _single_threaded():
        rgb, alpha, depth, labels = _render_views(cameras, [index], supersample, layout)
    return rgb[0], alpha[0], depth[0], labels[0]


def _render_split(cameras: Cameras, supersample: int, layout: str) -> ImageSet:
    with _single_threaded():
        rgbs, alphas, depths, labels = _render_views(cameras, list(range(len(cameras))), supersample, layout)

    def to_u8(x: Tensor) -> Tensor:
        return (x * 255.0).round().clamp(0, 255).to(torch.uint8)

    return ImageSet(
        cameras=cameras,
        images=to_u8(rgbs),
        alphas=to_u8(alphas),
        semantics=labels,
        depths=depths.float(),
    )


def make_procedural_dataset(config: ProceduralSceneConfig = ProceduralSceneConfig()) -> SceneDataset:
    """Render the scene into an in-memory :class:`SceneDataset` named ``"procedural"`` (the demo
    layout) or ``"procedural-{layout}"``.

    Splits "train"/"test"/"val" per ``config`` (empty ones omitted). Images are uint8 straight RGB
    with uint8 alpha (composite on white), ``semantics`` are label ids into ``labels``, ``depths``
    the exact centre-ray distances (0 on background). The world frame is the scene frame (+z up),
    so ``world_transform`` is the identity; ``scene_box`` is ``[-1, 1]^3`` and
    ``near/far = radius -/+ 1.8`` (the box's half-diagonal is 1.73). ``object_boxes`` holds every
    object's exact box (:func:`procedural_object_boxes`).
    """
    splits: Dict[str, ImageSet] = {}
    for split in ("train", "test", "val"):
        n = {"train": config.num_train, "test": config.num_test, "val": config.num_val}[split]
        if n > 0:
            image_set = _render_split(procedural_cameras(config, split), config.supersample, config.layout)
            splits[split] = replace(image_set, paths=[f"procedural/{split}/r_{i:03d}" for i in range(n)])
    return SceneDataset(
        name="procedural" if config.layout == "demo" else f"procedural-{config.layout}",
        splits=splits,
        scene_box=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]),
        near=config.near,
        far=config.far,
        background="white",
        labels=procedural_labels(config.layout),
        object_boxes=procedural_object_boxes(config.layout),
    )


def procedural_content_box(layout: str = "demo", pad: float = 0.05) -> Tensor:
    """``[2, 3]`` float64: the union of the objects' boxes of ``layout`` grown by ``pad`` on every
    side, clipped to ``[-1, 1]^3``: where the content is. :func:`write_procedural_dataset` writes it
    as the folder's ``scene_box`` (the in-memory dataset keeps the loose ``[-1, 1]^3``)."""
    boxes = torch.stack(list(procedural_object_boxes(layout).values()))
    lo = (boxes[:, 0].min(0).values - pad).clamp(-1.0, 1.0)
    hi = (boxes[:, 1].max(0).values + pad).clamp(-1.0, 1.0)
    return torch.stack([lo, hi])


def procedural_object_boxes(layout: str = "demo") -> Dict[str, Tensor]:
    """``{name: [2, 3] float64 (min, max)}``: the exact world-axis-aligned box of every object of
    ``layout`` (:func:`object_aabb`), the ground truth of spatial questions."""
    return {obj.name: torch.tensor(object_aabb(obj), dtype=torch.float64) for obj in layout_objects(layout)}


def write_procedural_dataset(out_dir: Union[str, Path], config: ProceduralSceneConfig = ProceduralSceneConfig()) -> Path:
    """Write the scene (``config.layout``) as a NeRF-synthetic-style folder and return its path.

    Layout (Blender conventions: OpenGL c2w ``transform_matrix``, ``file_path`` without extension)::

        out_dir/transforms_{split}.json
        out_dir/{split}/r_{i:03d}.png            RGBA, straight alpha
        out_dir/{split}/r_{i:03d}_semantic.png   uint8 label ids (index into the "labels" list)
        out_dir/{split}/r_{i:03d}_depth.npy      float32 [H, W] centre-ray distance, 0 = background

    Each json holds ``camera_angle_x`` plus exact ``fl_x, fl_y, cx, cy, w, h`` (instant-ngp keys),
    ``labels``, ``near``, ``far``, ``scene_box`` (the content's padded bounds,
    :func:`procedural_content_box`: a Gaussian reconstruction starts from random points in that box,
    and the loose ``[-1, 1]^3`` fills 60-80 % of it with empty air), ``world_up`` (``[0, 0, 1]``) and ``objects`` (every
    object's name and exact world box ``aabb: [[min], [max]]``, read back as
    ``SceneDataset.object_boxes``); each frame holds
    ``file_path``, ``transform_matrix``, ``semantic_path`` and ``depth_path`` (paths relative to
    ``out_dir``, the last two with their extension).
    """
    import imageio.v3 as iio

    out = Path(out_dir)
    dataset = make_procedural_dataset(config)
    if len(dataset.labels) > 256:
        raise ValueError("more than 256 labels do not fit the uint8 semantic PNGs")
    for split, image_set in dataset.splits.items():
        (out / split).mkdir(parents=True, exist_ok=True)
        K = image_set.cameras.Ks[0]
        fx, fy, cx, cy = (float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))
        c2w_gl = to_homogeneous(opencv_to_opengl(image_set.cameras.c2w))
        frames = []
        for i in range(len(image_set)):
            stem = f"{split}/r_{i:03d}"
            rgba = torch.cat([image_set.images[i], image_set.alphas[i]], -1).numpy()
            iio.imwrite(out / f"{stem}.png", rgba)
            iio.imwrite(out / f"{stem}_semantic.png", image_set.semantics[i].to(torch.uint8).numpy())
            np.save(out / f"{stem}_depth.npy", image_set.depths[i, ..., 0].numpy())
            frames.append(
                {
                    "file_path": f"./{stem}",
                    "transform_matrix": c2w_gl[i].tolist(),
                    "semantic_path": f"./{stem}_semantic.png",
                    "depth_path": f"./{stem}_depth.npy",
                }
            )
        meta = {
            "camera_angle_x": 2.0 * math.atan(0.5 * image_set.width / fx),
            "fl_x": fx,
            "fl_y": fy,
            "cx": cx,
            "cy": cy,
            "w": image_set.width,
            "h": image_set.height,
            "labels": list(dataset.labels),
            "near": dataset.near,
            "far": dataset.far,
            "scene_box": procedural_content_box(config.layout).tolist(),
            "world_up": [0.0, 0.0, 1.0],
            "objects": [{"name": n, "aabb": b.tolist()} for n, b in dataset.object_boxes.items()],
            "frames": frames,
        }
        atomic_write_json(meta, out / f"transforms_{split}.json")
    return out
