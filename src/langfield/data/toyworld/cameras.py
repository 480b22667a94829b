"""Random cameras around a toy-world scene that see every object, fully framed and told apart left to right.

Cameras are pinhole, no distortion, **OpenCV camera-to-world** (x right, y down, z forward; see
docs/conventions.md), built with :func:`langfield.geometry.rotations.look_at` with world +z as up
(so the floor's horizon is level in the image). Each camera looks at the objects' mean floor
position raised to ``config.target_height`` from azimuth ``U[0, 2 pi)``, elevation
``U[elevation_deg]`` and distance ``U[camera_distance]``; ``fx = fy = focal_scale * image_size``,
principal point at the image centre.

A candidate camera is accepted when, for every object of the scene:

1. **framed**: all 8 corners of its bounding box project inside the image, ``frame_margin * W``
   away from the border (so the whole object is in view);
2. **left/right is unambiguous**: the projected centres of any two objects differ by at least
   ``min_separation * W`` in ``u``;
3. **mostly visible**: of a 5 x 5 grid of rays from the camera through the object's projected
   extent (its centre +- 0.9 of its largest half size along the image axes), at least
   ``min_visible_fraction`` of those that hit the object hit it before any other object (an
   estimate of the unoccluded share of its silhouette).

Candidates come in blocks of 16 from a generator seeded by ``(scene.seed, 1)``, and each view takes
the next accepted candidate, so the cameras of a scene depend only on its seed and the config, not
on which other scenes share the batch. After ``max_camera_tries`` candidates a view takes the tried
candidate that met the most conditions (first among equals); with the default config this never
happens in practice (see the tests).

:func:`sweep_cameras` gives views that overlap instead: consecutive azimuth steps around the same
target at one elevation and distance inside the sampler's ranges, each accepted by the same three
checks (a path that stays inside the camera distribution the toy models were trained on).
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from langfield._checks import InputError, check_int_range
from langfield.data.toyworld.render import object_distances, scene_tensors
from langfield.data.toyworld.scene import ToyScene, ToyWorldConfig, sample_scene
from langfield.geometry.rotations import look_at
from langfield.types import Cameras

__all__ = ["camera_intrinsics", "sample_cameras", "sample_cameras_batch", "sweep_cameras"]

_BLOCK = 16  # candidates drawn per scene per round
_GRID = 5  # visibility rays per object: a _GRID x _GRID grid over its projected extent


def camera_intrinsics(config: ToyWorldConfig = ToyWorldConfig()) -> torch.Tensor:
    """``[3, 3]`` intrinsics of every toy-world camera: ``f = focal_scale * image_size``, centred principal point."""
    s = float(config.image_size)
    f = config.focal_scale * s
    return torch.tensor([[f, 0.0, s / 2.0], [0.0, f, s / 2.0], [0.0, 0.0, 1.0]])


def _targets(scenes: Sequence[ToyScene], config: ToyWorldConfig) -> np.ndarray:
    return np.array(
        [[np.mean([o.position[0] for o in s.objects]), np.mean([o.position[1] for o in s.objects]), config.target_height] for s in scenes]
    )


def _eyes(targets: np.ndarray, az: np.ndarray, el: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """``[C, 3]`` camera centres at azimuth ``az``, elevation ``el`` (radians) and distance ``dist`` (each ``[C]``)
    from ``targets [C, 3]``."""
    return targets + dist[:, None] * np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1)


def _check_candidates(scenes, scene_ids: np.ndarray, c2w: torch.Tensor, st, corners, present, config) -> np.ndarray:
    """Per candidate camera ``c2w [C, 3, 4]`` (float64) of scene ``scene_ids [C]``: conditions met ``[C, 3]`` bool."""
    size = float(config.image_size)
    f = config.focal_scale * size
    rot, eye = c2w[:, :, :3], c2w[:, :, 3]
    sid = torch.from_numpy(scene_ids)
    pres = present[sid]  # [C, K]
    num_c, num_k = pres.shape

    # 1. framed: bounding-box corners inside the image with a margin.
    pts = corners[sid] - eye[:, None, None, :]  # [C, K, 8, 3]
    cam = torch.einsum("cji,ckpj->ckpi", rot, pts)  # R^T (p - eye)
    z = cam[..., 2]
    zs = z.clamp_min(1e-6)
    u = f * cam[..., 0] / zs + size / 2
    v = f * cam[..., 1] / zs + size / 2
    m = config.frame_margin * size
    inside = (z > 1e-3) & (u >= m) & (u <= size - m) & (v >= m) & (v <= size - m)
    framed = (inside.all(-1) | ~pres).all(-1)

    # 2. projected centres apart in u.
    centres = torch.from_numpy(np.array([[o.center for o in s.objects] + [(0.0, 0.0, 0.0)] * (num_k - len(s.objects)) for s in scenes]))
    sizes = st.size.double()
    cc = torch.einsum("cji,ckj->cki", rot, centres[sid] - eye[:, None, :])
    uc = f * cc[..., 0] / cc[..., 2].clamp_min(1e-6)
    gap = (uc[:, :, None] - uc[:, None, :]).abs()
    pair = pres[:, :, None] & pres[:, None, :] & ~torch.eye(num_k, dtype=torch.bool)[None]
    separated = ((gap >= config.min_separation * size) | ~pair).all(-1).all(-1)

    # 3. mostly visible: of a 5 x 5 grid of rays over the object's projected extent, those that
    #    hit the object (its own silhouette) mostly hit it before any other object.
    right, up = rot[:, :, 0], -rot[:, :, 1]  # camera x (image right) and -y (image up) in the world
    extent = sizes[sid].max(-1).values * 0.9  # [C, K]
    g = torch.linspace(-1.0, 1.0, _GRID, dtype=torch.float64)
    ga, gb = torch.meshgrid(g, g, indexing="ij")
    offsets = ga.reshape(-1)[:, None] * right[:, None, :] + gb.reshape(-1)[:, None] * up[:, None, :]  # [C, G, 3]
    points = centres[sid][:, :, None, :] + extent[..., None, None] * offsets[:, None]  # [C, K, G, 3]
    rays = points - eye[:, None, None, :]
    rays = (rays / rays.norm(dim=-1, keepdim=True)).reshape(num_c, -1, 3)  # [C, K * G, 3]
    origins = tuple(eye[:, i : i + 1].float() for i in range(3))
    dirs = tuple(rays[..., i].float().contiguous() for i in range(3))
    t = object_distances(st.index(sid), origins, dirs).reshape(num_c, num_k, num_k, -1)  # [C, slot, target, G]
    own = torch.diagonal(t, dim1=1, dim2=2).permute(0, 2, 1)  # [C, target, G]: the target's own distances
    silhouette = torch.isfinite(own)
    seen = silhouette & (own <= t.min(dim=1).values)
    fraction = seen.sum(-1) / silhouette.sum(-1).clamp_min(1)
    visible = ((fraction >= config.min_visible_fraction) & silhouette.any(-1) | ~pres).all(-1)
    return torch.stack([framed, separated, visible], -1).numpy()


def sample_cameras_batch(scenes: Sequence[ToyScene], num_views: int, config: ToyWorldConfig = ToyWorldConfig()) -> Cameras:
    """``num_views`` cameras for each of ``scenes``: ``len(scenes) * num_views`` cameras, scene-major.

    Camera ``i * num_views + j`` is view ``j`` of ``scenes[i]``. Vectorised over all scenes; the
    result for a scene does not depend on the others (see the module docstring).
    """
    check_int_range(num_views, "num_views", lo=1)
    if len(scenes) == 0:
        raise InputError("scenes: expected at least one scene")
    for i, s in enumerate(scenes):
        if not isinstance(s, ToyScene):
            raise InputError(f"scenes[{i}]: expected a ToyScene, got {type(s).__name__}")
    n = len(scenes)
    st = scene_tensors(scenes)
    num_k = st.present.shape[1]
    corners = np.zeros((n, num_k, 8, 3))
    for i, s in enumerate(scenes):
        for j, o in enumerate(s.objects):
            corners[i, j] = o.corners()
    corners_t = torch.from_numpy(corners)
    targets = _targets(scenes, config)
    rngs = [np.random.default_rng(np.random.SeedSequence([int(s.seed), 1])) for s in scenes]
    chosen: List[List[np.ndarray]] = [[] for _ in range(n)]
    best: List[List[tuple]] = [[] for _ in range(n)]  # (score, order, eye) of the tried candidates
    tried = np.zeros(n, dtype=np.int64)
    el_lo, el_hi = (math.radians(a) for a in config.elevation_deg)
    d_lo, d_hi = config.camera_distance
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    while True:
        todo = [i for i in range(n) if len(chosen[i]) < num_views and tried[i] < config.max_camera_tries]
        if not todo:
            break
        draws = np.concatenate([rngs[i].random((_BLOCK, 3)) for i in todo])
        sid = np.repeat(np.array(todo), _BLOCK)
        az = 2.0 * math.pi * draws[:, 0]
        el = el_lo + (el_hi - el_lo) * draws[:, 1]
        dist = d_lo + (d_hi - d_lo) * draws[:, 2]
        eye = _eyes(targets[sid], az, el, dist)
        c2w = look_at(torch.from_numpy(eye), torch.from_numpy(targets[sid]), up)
        ok = _check_candidates(scenes, sid, c2w, st, corners_t, st.present, config)
        for row, i in enumerate(sid):
            if len(chosen[i]) >= num_views or tried[i] >= config.max_camera_tries:
                continue
            tried[i] += 1
            if ok[row].all():
                chosen[i].append(c2w[row].numpy())
            else:
                best[i].append((int(ok[row].sum()), -int(tried[i]), c2w[row].numpy()))
    for i in range(n):
        if len(chosen[i]) < num_views:  # fall back to the candidates that met the most conditions
            ranked = sorted(best[i], key=lambda item: (item[0], item[1]), reverse=True)
            chosen[i].extend(item[2] for item in ranked[: num_views - len(chosen[i])])
    c2w_all = torch.from_numpy(np.stack([c for views in chosen for c in views]))
    size = config.image_size
    return Cameras.create(c2w_all.float(), camera_intrinsics(config), size, size)


def sample_cameras(scene: Union[int, ToyScene], num_views: int = 1, config: ToyWorldConfig = ToyWorldConfig()) -> Cameras:
    """``num_views`` cameras (OpenCV c2w) of one scene, given as a :class:`ToyScene` or its seed.

    >>> cams = sample_cameras(3, num_views=4)
    >>> len(cams), int(cams.widths[0])
    (4, 32)
    """
    if not isinstance(scene, ToyScene):
        scene = sample_scene(check_int_range(scene, "scene", lo=0), config)
    return sample_cameras_batch([scene], num_views, config)


def sweep_cameras(
    scene: Union[int, ToyScene],
    num_views: int,
    config: ToyWorldConfig = ToyWorldConfig(),
    *,
    step_deg: float = 10.0,
    elevation_deg: Optional[float] = None,
    distance: Optional[float] = None,
) -> Cameras:
    """``num_views`` cameras ``step_deg`` apart in azimuth around ``scene``, every one a camera the sampler accepts.

    They look at the sampler's target (the objects' mean floor position raised to ``target_height``) from one
    elevation and distance inside the sampler's ranges and pass the same framing, left/right and visibility
    checks as :func:`sample_cameras`' views, so neighbouring views overlap (for warping one into the next) and
    stay in the distribution the toy world's models and instruments were trained on.

    The sweep is the first that passes, searching elevations (``elevation_deg``, or every 5 degrees of
    ``config.elevation_deg`` from its middle outwards), then distances (``distance``, or the middle, far and
    near ends of ``config.camera_distance``), then start azimuths (0, ``step_deg``, ...): it depends only on the
    scene and the arguments. Given values must lie inside the config's ranges.

    Raises:
        InputError: bad arguments, or no run of ``num_views`` accepted steps at any searched elevation / distance.
    """
    if not isinstance(scene, ToyScene):
        scene = sample_scene(check_int_range(scene, "scene", lo=0), config)
    num_views = check_int_range(num_views, "num_views", lo=1)
    step = float(step_deg)
    if not math.isfinite(step) or not 0.0 < step <= 180.0:
        raise InputError(f"step_deg: expected an azimuth step in (0, 180] degrees, got {step_deg!r}")
    slots = int(math.floor(360.0 / step + 1e-9))
    if num_views > slots:
        raise InputError(f"num_views: {num_views} views {step:g} degrees apart go round the scene more than once ({slots} fit)")
    elevations = _search_values(elevation_deg, config.elevation_deg, "elevation_deg", "config.elevation_deg", every=5.0)
    distances = _search_values(distance, config.camera_distance, "distance", "config.camera_distance")
    az = np.radians(step * np.arange(slots))
    target = _targets([scene], config)[0]
    st = scene_tensors([scene])
    corners = torch.from_numpy(np.stack([o.corners() for o in scene.objects])[None])
    cyclic = slots * step > 360.0 - 1e-6  # the last step meets the first again
    starts = range(slots) if cyclic else range(slots - num_views + 1)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    targets = np.repeat(target[None], slots, 0)
    for elev in elevations:
        el = math.radians(elev)
        for dist in distances:
            eye = _eyes(targets, az, np.full(slots, el), np.full(slots, dist))
            c2w = look_at(torch.from_numpy(eye), torch.from_numpy(targets), up)
            ok = _check_candidates([scene], np.zeros(slots, dtype=np.int64), c2w, st, corners, st.present, config).all(-1)
            for start in starts:
                idx = [(start + k) % slots for k in range(num_views)]
                if ok[idx].all():
                    return Cameras.create(c2w[idx].float(), camera_intrinsics(config), config.image_size, config.image_size)
    raise InputError(
        f"sweep_cameras: scene {scene.seed} has no {num_views} consecutive accepted views {step:g} degrees apart at elevations "
        f"{', '.join(f'{e:g}' for e in elevations)} deg and distances {', '.join(f'{d:g}' for d in distances)}; try fewer "
        f"views or a smaller step"
    )


def _search_values(value: Optional[float], bounds: Tuple[float, float], name: str, where: str, every: Optional[float] = None) -> List[float]:
    """``[value]`` (checked inside ``bounds``), or the values to search: the middle of ``bounds`` first, then outwards
    (every ``every`` units, or the two ends)."""
    lo, hi = float(bounds[0]), float(bounds[1])
    if value is not None:
        v = float(value)
        if not math.isfinite(v) or not lo <= v <= hi:
            raise InputError(f"{name}: {value!r} lies outside {where} = ({lo:g}, {hi:g}), the range the toy world samples")
        return [v]
    mid = 0.5 * (lo + hi)
    if every is None or hi - lo < every:
        return [mid] if hi == lo else [mid, hi, lo]
    grid = np.arange(lo, hi + 1e-9, every).tolist()
    return sorted({mid, *grid, hi}, key=lambda x: (abs(x - mid), -x))
