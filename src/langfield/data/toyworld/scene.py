"""Toy-world scene graphs: 1-3 coloured primitives standing on a textured floor, sampled by seed.

Conventions (shared with :mod:`langfield.data.procedural`):

* **World frame: +z is up.** The floor is the plane ``z = 0`` (a square of half side
  ``ToyWorldConfig.floor_extent``); every object rests on it, so an object's centre is at height
  ``size[2]`` (its half height).
* Object ``i`` of a scene has **instance id** ``2 + i`` in renders (0 = sky, 1 = floor).
* Sizes are **half extents** in the object's local frame (axis of symmetry = local z):
  sphere ``(r, r, r)``, box ``(hx, hy, hz)``, cylinder and cone ``(r, r, h)`` (radius and half
  height; the cone's base disc of radius ``r`` lies on the floor, its apex at height ``2h``).
* ``yaw`` rotates the object about world +z: ``x_local = R(yaw)^T (x - centre)``. Rotationally
  symmetric shapes (sphere, cylinder, cone) always have ``yaw = 0``.

A scene is a pure function of its integer seed and the config (:func:`sample_scene`); cameras
come from :func:`langfield.data.toyworld.cameras.sample_cameras`.

>>> scene = sample_scene(7)
>>> scene == sample_scene(7), len(scene.objects) in (1, 2, 3)
(True, True)
>>> scene.objects[0].center[2] == scene.objects[0].size[2]  # resting on the floor z = 0
True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from langfield._checks import InputError, check_choice, check_fields, check_finite_number, check_int_range
from langfield.data.procedural import AMBIENT, LIGHT_DIRECTION

__all__ = [
    "COLORS",
    "FLOORS",
    "FLOOR_PALETTES",
    "PALETTE",
    "SEMANTIC_LABELS",
    "SHAPES",
    "SKY_HORIZON",
    "SKY_ZENITH",
    "ToyObject",
    "ToyScene",
    "ToyWorldConfig",
    "sample_scene",
    "scene_seed",
]

Color = Tuple[float, float, float]

#: Shape names; a shape's index in this tuple is its class index (attribute labels), and its
#: semantic label is ``2 + index``.
SHAPES: Tuple[str, ...] = ("sphere", "box", "cylinder", "cone")

#: The 8 named object colours (sRGB albedo in [0, 1]); chosen by hue, so Lambert shading (which only
#: scales brightness) keeps them apart. A colour's index in :data:`COLORS` is its class index.
PALETTE: Dict[str, Color] = {
    "red": (0.86, 0.13, 0.11),
    "orange": (0.98, 0.50, 0.06),
    "yellow": (0.95, 0.87, 0.12),
    "green": (0.16, 0.66, 0.20),
    "cyan": (0.08, 0.76, 0.84),
    "blue": (0.14, 0.28, 0.92),
    "purple": (0.56, 0.20, 0.78),
    "white": (0.96, 0.96, 0.96),
}
COLORS: Tuple[str, ...] = tuple(PALETTE)

#: Floor textures (the word used in descriptive captions: "on a checkered floor").
FLOORS: Tuple[str, ...] = ("checkered", "striped", "plain")

#: Neutral, mid-tone floor colour pairs ``(light, dark)`` (the plain floor uses the light one), kept
#: desaturated so no floor is mistaken for an object colour.
FLOOR_PALETTES: Dict[str, Tuple[Color, Color]] = {
    "sand": ((0.74, 0.68, 0.56), (0.52, 0.45, 0.36)),
    "slate": ((0.60, 0.62, 0.66), (0.38, 0.40, 0.44)),
    "clay": ((0.66, 0.54, 0.46), (0.45, 0.35, 0.29)),
    "sage": ((0.56, 0.61, 0.52), (0.37, 0.41, 0.35)),
}

#: Sky colours (rays that miss everything): horizon for directions at or below it, zenith straight up.
SKY_HORIZON: Color = (0.90, 0.91, 0.93)
SKY_ZENITH: Color = (0.66, 0.76, 0.88)

#: Semantic label table: ``semantic == i`` means ``SEMANTIC_LABELS[i]``; shape ``SHAPES[j]`` is ``2 + j``.
SEMANTIC_LABELS: Tuple[str, ...] = ("sky", "floor") + SHAPES


def _pair(value: Any, where: str, *, lo: float = 0.0, hi: float = math.inf, positive: bool = False) -> Tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise InputError(f"{where}: expected a (min, max) pair, got {value!r}")
    a = check_finite_number(value[0], f"{where}[0]", lo=lo, hi=hi, lo_inclusive=not positive)
    b = check_finite_number(value[1], f"{where}[1]", lo=lo, hi=hi, lo_inclusive=not positive)
    if a > b:
        raise InputError(f"{where}: min {a:g} exceeds max {b:g}")
    return a, b


@dataclass(frozen=True)
class ToyWorldConfig:
    """Everything that decides what the toy world looks like (scenes, cameras, rendering).

    Scenes:
        min_objects, max_objects: objects per scene, ``1 <= min <= max <= 3``; ``max_objects`` is
            also the number of attribute slots.
        shapes, colors, floors: the subsets of :data:`SHAPES`, :data:`COLORS` and :data:`FLOORS`
            to draw from (uniformly).
        distinct_colors: no two objects of a scene share a colour (so a colour names an object).
        object_scale: range of an object's characteristic half size (world units; per-shape aspect
            ratios are drawn around it).
        placement_radius: object centres lie in the disc of this radius around the origin.
        min_gap: smallest floor gap between two objects' footprint circles (no overlaps).
        floor_extent: the floor is the square ``|x|, |y| <= floor_extent`` of the plane z = 0.
        floor_period: spatial period (world units) of the checkered and striped textures.

    Cameras (OpenCV, looking at the objects' mean floor position raised to ``target_height``):
        image_size: square image side in pixels (32 by default; 64 works as well; 8-512 accepted).
        focal_scale: ``fx = fy = focal_scale * image_size`` (principal point at the centre).
        camera_distance, elevation_deg: ranges of the distance to the target and of the elevation
            above the floor plane; azimuth is uniform on the full circle.
        frame_margin: every object's bounding box stays this fraction of the image side inside the frame.
        min_separation: projected object centres differ by at least this fraction of the image
            width in ``u`` (left/right is never ambiguous).
        min_visible_fraction: least estimated share of each object's silhouette that no other
            object hides (see :mod:`langfield.data.toyworld.cameras`).
        max_camera_tries: candidate cameras tried per view before the best failing one is taken.

    Rendering:
        supersample: ``ss`` -> ``ss x ss`` subpixel rays per pixel average into ``rgb``; depth,
            normals and labels come from the pixel-centre ray (exact, never blended).
        shadows: objects cast hard shadows (one shadow ray towards the light per hit).
        ambient, light_direction: Lambert shading ``albedo * (ambient + (1 - ambient) max(n.l, 0))``
            with light arriving *from* ``light_direction`` (world, normalised when used).
        contour_depth_tol: relative depth jump between 4-neighbours that counts as a contour
            (besides every instance boundary).
    """

    image_size: int = 32
    min_objects: int = 1
    max_objects: int = 3
    shapes: Tuple[str, ...] = SHAPES
    colors: Tuple[str, ...] = COLORS
    floors: Tuple[str, ...] = FLOORS
    distinct_colors: bool = True
    object_scale: Tuple[float, float] = (0.3, 0.45)
    placement_radius: float = 0.7
    min_gap: float = 0.06
    floor_extent: float = 2.5
    floor_period: float = 0.5
    focal_scale: float = 1.2
    camera_distance: Tuple[float, float] = (2.6, 3.4)
    elevation_deg: Tuple[float, float] = (20.0, 50.0)
    target_height: float = 0.3
    frame_margin: float = 0.02
    min_separation: float = 0.08
    min_visible_fraction: float = 0.6
    max_camera_tries: int = 256
    supersample: int = 2
    shadows: bool = True
    ambient: float = AMBIENT
    light_direction: Tuple[float, float, float] = LIGHT_DIRECTION
    contour_depth_tol: float = 0.25

    def __post_init__(self) -> None:
        where = "ToyWorldConfig"
        check_int_range(self.image_size, f"{where}.image_size", lo=8, hi=512)
        check_int_range(self.min_objects, f"{where}.min_objects", lo=1, hi=3)
        check_int_range(self.max_objects, f"{where}.max_objects", lo=self.min_objects, hi=3)
        for name, choices in (("shapes", SHAPES), ("colors", COLORS), ("floors", FLOORS)):
            values = getattr(self, name)
            if isinstance(values, str) or not isinstance(values, (tuple, list)) or not values:
                raise InputError(f"{where}.{name}: expected a non-empty tuple of names, got {values!r}")
            for v in values:
                check_choice(v, f"{where}.{name}", choices)
            if len(set(values)) != len(values):
                raise InputError(f"{where}.{name}: duplicate names in {values!r}")
            object.__setattr__(self, name, tuple(values))
        if self.distinct_colors and len(self.colors) < self.max_objects:
            raise InputError(
                f"{where}.colors: distinct_colors needs at least max_objects={self.max_objects} colours, got {len(self.colors)}"
            )
        check_fields(
            self,
            where,
            int_min_1=("max_camera_tries", "supersample"),
            positive=("placement_radius", "floor_extent", "floor_period", "focal_scale", "contour_depth_tol"),
            non_negative=("min_gap", "target_height", "frame_margin", "min_separation"),
            fraction=("ambient", "min_visible_fraction"),
        )
        if self.frame_margin >= 0.5 or self.min_separation >= 1.0:
            raise InputError(f"{where}: frame_margin must be < 0.5 and min_separation < 1 (fractions of the image)")
        object.__setattr__(self, "object_scale", _pair(self.object_scale, f"{where}.object_scale", positive=True))
        object.__setattr__(self, "camera_distance", _pair(self.camera_distance, f"{where}.camera_distance", positive=True))
        object.__setattr__(self, "elevation_deg", _pair(self.elevation_deg, f"{where}.elevation_deg", lo=1.0, hi=89.0))
        light = self.light_direction
        if not isinstance(light, (tuple, list)) or len(light) != 3:
            raise InputError(f"{where}.light_direction: expected 3 numbers, got {light!r}")
        light = tuple(check_finite_number(v, f"{where}.light_direction[{i}]") for i, v in enumerate(light))
        if light[2] <= 0:
            raise InputError(f"{where}.light_direction: the light must come from above (z > 0), got {light}")
        object.__setattr__(self, "light_direction", light)
        if self.placement_radius + 2 * self.object_scale[1] * 1.6 > self.floor_extent:
            raise InputError(f"{where}.floor_extent: {self.floor_extent:g} is too small for objects placed within "
                             f"placement_radius={self.placement_radius:g}")

    @property
    def num_slots(self) -> int:
        """Attribute slots per image (= ``max_objects``)."""
        return self.max_objects

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON types (tuples become lists); :meth:`from_dict` inverts it."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "ToyWorldConfig") -> "ToyWorldConfig":
        """Rebuild from :meth:`to_dict` output; unknown keys are an :class:`InputError` naming ``where``."""
        if not isinstance(data, Mapping):
            raise InputError(f"{where}: expected an object of config fields, got {type(data).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})


@dataclass(frozen=True)
class ToyObject:
    """One primitive standing on the floor (see the module docstring for frames and sizes).

    Attributes:
        shape: one of :data:`SHAPES`.
        color: one of :data:`COLORS` (its albedo is ``PALETTE[color]``).
        position: ``(x, y)`` of the object's axis on the floor plane (world units).
        size: half extents ``(sx, sy, sz)`` in the local frame.
        yaw: rotation about world +z in radians (0 for symmetric shapes).
    """

    shape: str
    color: str
    position: Tuple[float, float]
    size: Tuple[float, float, float]
    yaw: float = 0.0

    def __post_init__(self) -> None:
        check_choice(self.shape, "ToyObject.shape", SHAPES)
        check_choice(self.color, "ToyObject.color", COLORS)
        if len(self.position) != 2 or len(self.size) != 3:
            raise InputError(f"ToyObject: position needs 2 and size 3 numbers, got {self.position!r}, {self.size!r}")
        for i, s in enumerate(self.size):
            check_finite_number(s, f"ToyObject.size[{i}]", lo=0, lo_inclusive=False)
        for i, p in enumerate(self.position):
            check_finite_number(p, f"ToyObject.position[{i}]")
        check_finite_number(self.yaw, "ToyObject.yaw")

    @property
    def center(self) -> Tuple[float, float, float]:
        """World centre of the object's bounding box (its half height above the floor)."""
        return (float(self.position[0]), float(self.position[1]), float(self.size[2]))

    @property
    def rgb(self) -> Color:
        return PALETTE[self.color]

    @property
    def shape_index(self) -> int:
        return SHAPES.index(self.shape)

    @property
    def color_index(self) -> int:
        return COLORS.index(self.color)

    @property
    def footprint_radius(self) -> float:
        """Radius of the smallest floor disc around ``position`` that holds the object's footprint."""
        if self.shape == "box":
            return math.hypot(self.size[0], self.size[1])
        return float(max(self.size[0], self.size[1]))

    def corners(self) -> np.ndarray:
        """``[8, 3]`` world corners of the object's (yawed) bounding box, float64."""
        sx, sy, sz = self.size
        signs = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], dtype=np.float64)
        local = signs * np.array([sx, sy, sz])
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        x = c * local[:, 0] - s * local[:, 1]
        y = s * local[:, 0] + c * local[:, 1]
        return np.stack([x, y, local[:, 2]], -1) + np.array(self.center)


@dataclass(frozen=True)
class ToyScene:
    """A scene graph: objects (instance id ``2 + i`` for ``objects[i]``) on a textured floor.

    Attributes:
        objects: 1-3 :class:`ToyObject`.
        floor: floor texture, one of :data:`FLOORS`.
        floor_palette: key of :data:`FLOOR_PALETTES` (the floor's two colours).
        seed: the seed the scene was sampled from; camera sampling for the scene derives its own
            stream from it (a hand-built scene may keep the default 0).
    """

    objects: Tuple[ToyObject, ...]
    floor: str = "checkered"
    floor_palette: str = "sand"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))
        if not 1 <= len(self.objects) <= 3:
            raise InputError(f"ToyScene.objects: expected 1 to 3 objects, got {len(self.objects)}")
        for i, obj in enumerate(self.objects):
            if not isinstance(obj, ToyObject):
                raise InputError(f"ToyScene.objects[{i}]: expected a ToyObject, got {type(obj).__name__}")
        check_choice(self.floor, "ToyScene.floor", FLOORS)
        check_choice(self.floor_palette, "ToyScene.floor_palette", tuple(FLOOR_PALETTES))
        check_int_range(self.seed, "ToyScene.seed", lo=0)

    def to_dict(self) -> Dict[str, Any]:
        """The scene graph as plain JSON types (the JSONL record of the on-disk format)."""
        return {
            "seed": int(self.seed),
            "floor": self.floor,
            "floor_palette": self.floor_palette,
            "objects": [
                {
                    "shape": o.shape,
                    "color": o.color,
                    "position": [float(v) for v in o.position],
                    "size": [float(v) for v in o.size],
                    "yaw": float(o.yaw),
                }
                for o in self.objects
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "scene") -> "ToyScene":
        """Inverse of :meth:`to_dict`; a malformed record is an :class:`InputError` naming ``where``."""
        try:
            objects = tuple(
                ToyObject(
                    shape=o["shape"],
                    color=o["color"],
                    position=tuple(o["position"]),
                    size=tuple(o["size"]),
                    yaw=o.get("yaw", 0.0),
                )
                for o in data["objects"]
            )
            return cls(objects=objects, floor=data["floor"], floor_palette=data["floor_palette"], seed=data["seed"])
        except InputError as err:
            raise InputError(f"{where}: {err}") from None
        except (KeyError, TypeError, AttributeError) as err:
            raise InputError(f"{where}: malformed scene graph ({type(err).__name__}: {err})") from None


def scene_seed(seed: int, index: int) -> int:
    """Seed of scene ``index`` of the data set with seed ``seed``: a well-mixed 62-bit integer.

    With 62 bits, two data sets of a million scenes each share a scene with probability ~1e-7,
    so a held-out set is simply another ``seed``. The map is stable across versions.

    >>> scene_seed(0, 0) == scene_seed(0, 0) != scene_seed(0, 1)
    True
    """
    check_int_range(seed, "seed", lo=0)
    check_int_range(index, "index", lo=0)
    state = np.random.SeedSequence([int(seed), int(index), 0x70E]).generate_state(1, dtype=np.uint64)
    return int(state[0]) >> 2


def _object_size(shape: str, s: float, u: np.ndarray) -> Tuple[float, float, float]:
    """Half extents of a ``shape`` of characteristic half size ``s`` from three uniforms ``u`` in [0, 1)."""
    if shape == "sphere":
        return (s, s, s)
    if shape == "box":
        a, b, c = 0.75 + 0.4 * u
        return (s * a, s * b, s * c)
    if shape == "cylinder":
        r, h = s * (0.75 + 0.25 * u[0]), s * (0.9 + 0.4 * u[1])
        return (r, r, h)
    r, h = s * (0.9 + 0.25 * u[0]), s * (1.1 + 0.4 * u[1])  # cone
    return (r, r, h)


def _place(radii: np.ndarray, rng: np.random.Generator, config: ToyWorldConfig, blocks: int = 4):
    """Positions ``[n, 2]`` in the placement disc with footprints ``min_gap`` apart, or ``None``.

    Objects are placed in order; each draws candidates uniformly over the disc in blocks of 64 and
    takes the first one clear of the objects already placed.
    """
    placed = np.zeros((0, 2))
    for i, r in enumerate(radii):
        for _ in range(blocks):
            u = rng.random((64, 2))
            rho = config.placement_radius * np.sqrt(u[:, 0])
            cand = np.stack([rho * np.cos(2.0 * math.pi * u[:, 1]), rho * np.sin(2.0 * math.pi * u[:, 1])], -1)
            dist = np.linalg.norm(cand[:, None, :] - placed[None], axis=-1)  # [64, i]
            ok = (dist >= r + radii[:i][None] + config.min_gap).all(-1)
            if ok.any():
                placed = np.concatenate([placed, cand[int(np.argmax(ok))][None]])
                break
        else:
            return None
    return placed


def sample_scene(seed: int, config: ToyWorldConfig = ToyWorldConfig()) -> ToyScene:
    """The scene of integer ``seed`` (``>= 0``): a pure function of ``seed`` and ``config``.

    Draws the object count, then per object a shape, a colour (without repetition under
    ``distinct_colors``), a size and a yaw, then non-overlapping floor positions (rejection
    sampling; if the objects do not fit, all sizes shrink by 10 % and placement starts again),
    then the floor texture and palette.
    """
    check_int_range(seed, "seed", lo=0)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    num = int(rng.integers(config.min_objects, config.max_objects + 1))
    shapes = [config.shapes[int(i)] for i in rng.integers(0, len(config.shapes), num)]
    if config.distinct_colors:
        colors = [config.colors[int(i)] for i in rng.permutation(len(config.colors))[:num]]
    else:
        colors = [config.colors[int(i)] for i in rng.integers(0, len(config.colors), num)]
    lo, hi = config.object_scale
    scales = lo + (hi - lo) * rng.random(num)
    aspects = rng.random((num, 3))
    yaws = 2.0 * math.pi * rng.random(num)
    floor = config.floors[int(rng.integers(0, len(config.floors)))]
    floor_palette = tuple(FLOOR_PALETTES)[int(rng.integers(0, len(FLOOR_PALETTES)))]

    shrink = 1.0
    for _ in range(20):
        sizes = [_object_size(sh, shrink * s, u) for sh, s, u in zip(shapes, scales, aspects)]
        probes = [ToyObject(sh, c, (0.0, 0.0), sz, y if sh == "box" else 0.0) for sh, c, sz, y in zip(shapes, colors, sizes, yaws)]
        positions = _place(np.array([o.footprint_radius for o in probes]), rng, config)
        if positions is not None:
            break
        shrink *= 0.9
    else:  # pragma: no cover - 20 shrinks leave objects 12 % of their size; they always fit
        raise RuntimeError(f"seed {seed}: could not place {num} objects")
    objects = tuple(
        ToyObject(o.shape, o.color, (float(p[0]), float(p[1])), tuple(float(v) for v in o.size), float(o.yaw))
        for o, p in zip(probes, positions)
    )
    return ToyScene(objects=objects, floor=floor, floor_palette=floor_palette, seed=int(seed))
