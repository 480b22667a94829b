"""Toy-world data: a deterministic stream of rendered batches, and a sharded on-disk format.

Scenes
------
Scene ``i`` of the data set with seed ``s`` is ``sample_scene(scene_seed(s, i), config)``; its
``V`` views are ``sample_cameras(scene, V, config)``. Everything is a pure function of
``(config, s, i, V)``, so a stream, a resumed write and a write with another shard size or worker
count give the same images.

Streaming
---------
:func:`iter_toyworld` yields :class:`ToyBatch` es of whole scenes (all views of a scene stay in one
batch, scene-major: image ``j * V + v`` is view ``v`` of the batch's scene ``j``).

On-disk format (version 1)
--------------------------
::

    DIR/meta.json                   format, version, config, seed, counts, label tables, array table
    DIR/shard-00000.npz             arrays of the images of scenes [0, S) (S = scenes_per_shard)
    DIR/shard-00000.jsonl           one JSON record per image of that shard, in the same order
    DIR/shard-00001.npz ...

Shard ``k`` holds scenes ``[k S, min((k + 1) S, num_scenes))``, all their views, scene-major.
Every file is written atomically (:mod:`langfield.io.atomic`); a shard is complete when both of
its files exist (the ``.jsonl`` is written last), so an interrupted :func:`write_toyworld` resumes
by keeping complete shards and rendering the rest. ``meta.json`` is written first and names the
configuration; writing into a folder that holds another configuration is refused.

Arrays of ``shard-*.npz`` (``numpy.savez_compressed``, or ``numpy.savez`` with ``compress=False``;
no pickles; ``M`` images of ``H x W``):

==================  ========  ================  ===============================================
name                dtype     shape             meaning
==================  ========  ================  ===============================================
``rgb``             uint8     ``[M, H, W, 3]``  sRGB colour, ``round(255 * rgb)``
``depth``           float16   ``[M, H, W]``     ray distance of the pixel-centre ray; 0 = sky
``normals``         float16   ``[M, H, W, 3]``  unit world normals (world +z up); 0 = sky
``semantic``        uint8     ``[M, H, W]``     0 sky, 1 floor, 2 + shape index (``SEMANTIC_LABELS``)
``instance``        uint8     ``[M, H, W]``     0 sky, 1 floor, 2 + object index in the scene graph
``silhouette``      uint8     ``[M, H, W/8]``   ``numpy.packbits(mask, axis=-1)`` (big bit order)
``contours``        uint8     ``[M, H, W/8]``   the same packing (``W/8`` rounds up)
``c2w``             float32   ``[M, 3, 4]``     OpenCV camera-to-world
``K``               float32   ``[M, 3, 3]``     intrinsics in pixels
``scene_index``     int64     ``[M]``           scene index ``i`` in the data set
``scene_seed``      int64     ``[M]``           ``scene_seed(seed, i)``
``view``            int64     ``[M]``           view index within the scene
``count``           int64     ``[M]``           number of objects
``slot_shapes``     int64     ``[M, S]``        shape index per left-to-right slot, -1 = empty
``slot_colors``     int64     ``[M, S]``        colour index per left-to-right slot, -1 = empty
==================  ========  ================  ===============================================

Each ``.jsonl`` line: ``{"image", "scene_index", "scene_seed", "view", "scene" (the scene graph,
:meth:`ToyScene.to_dict`), "short_caption", "descriptive_caption", "attributes" ({"count",
"shapes", "colors", "order"})}``. See docs/toyworld.md.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from itertools import count as count_from
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from langfield._checks import InputError, check_int_range, check_memory, check_output_dir
from langfield.data.toyworld.cameras import sample_cameras_batch
from langfield.data.toyworld.captions import attribute_labels, descriptive_caption, left_to_right_batch, short_caption
from langfield.data.toyworld.render import ToyRender, render_toyworld
from langfield.data.toyworld.scene import (
    COLORS,
    FLOORS,
    PALETTE,
    SEMANTIC_LABELS,
    SHAPES,
    ToyScene,
    ToyWorldConfig,
    sample_scene,
    scene_seed,
)
from langfield.io.atomic import atomic_write, atomic_write_json
from langfield.types import Cameras

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ToyBatch",
    "ToyWorldData",
    "iter_toyworld",
    "read_toyworld",
    "render_scenes",
    "write_toyworld",
]

FORMAT = "langfield-toyworld"
FORMAT_VERSION = 1
PathLike = Union[str, "os.PathLike[str]"]

# name -> (dtype, per-image shape as a function of (H, W, S))
_ARRAYS: Dict[str, Tuple[str, Any]] = {
    "rgb": ("uint8", lambda h, w, s: (h, w, 3)),
    "depth": ("float16", lambda h, w, s: (h, w)),
    "normals": ("float16", lambda h, w, s: (h, w, 3)),
    "semantic": ("uint8", lambda h, w, s: (h, w)),
    "instance": ("uint8", lambda h, w, s: (h, w)),
    "silhouette": ("uint8", lambda h, w, s: (h, (w + 7) // 8)),
    "contours": ("uint8", lambda h, w, s: (h, (w + 7) // 8)),
    "c2w": ("float32", lambda h, w, s: (3, 4)),
    "K": ("float32", lambda h, w, s: (3, 3)),
    "scene_index": ("int64", lambda h, w, s: ()),
    "scene_seed": ("int64", lambda h, w, s: ()),
    "view": ("int64", lambda h, w, s: ()),
    "count": ("int64", lambda h, w, s: ()),
    "slot_shapes": ("int64", lambda h, w, s: (s,)),
    "slot_colors": ("int64", lambda h, w, s: (s,)),
}


@dataclass(frozen=True)
class ToyBatch:
    """Rendered images of whole scenes with everything known about them (``B`` images).

    Attributes:
        render: the :class:`ToyRender` (rgb, depth, normals, semantic, instance, silhouette, contours).
        cameras: ``B`` OpenCV cameras.
        scenes: the scene graph of each image (``B`` entries; views of a scene share the object).
        scene_index: ``[B]`` int64 scene index in the stream (``start + j``, or the position in
            ``seeds``); ``scene_seed``: ``[B]`` the scene's seed; ``view``: ``[B]`` view index.
        short_captions, descriptive_captions: ``B`` strings each.
        count: ``[B]`` int64; ``slot_shapes``, ``slot_colors``: ``[B, S]`` int64 (-1 = empty slot);
            ``slot_objects``: ``[B, S]`` the object index (in ``scenes[b].objects``) in each slot.
    """

    render: ToyRender
    cameras: Cameras
    scenes: Tuple[ToyScene, ...]
    scene_index: Tensor
    scene_seed: Tensor
    view: Tensor
    short_captions: Tuple[str, ...]
    descriptive_captions: Tuple[str, ...]
    count: Tensor
    slot_shapes: Tensor
    slot_colors: Tensor
    slot_objects: Tensor

    def __len__(self) -> int:
        return len(self.scenes)

    def to(self, device: Union[str, torch.device]) -> "ToyBatch":
        """The batch with its tensors (render, cameras, labels) on ``device``."""
        r = self.render
        render = ToyRender(*(getattr(r, f).to(device) for f in r.__dataclass_fields__))
        return replace(
            self, render=render, cameras=self.cameras.to(device),
            **{f: getattr(self, f).to(device) for f in ("scene_index", "scene_seed", "view", "count", "slot_shapes", "slot_colors", "slot_objects")},
        )

    def model_inputs(self) -> Tuple[Any, ...]:
        """What the trainer hands to ``Method.forward``: the batch itself."""
        return (self,)

    def records(self) -> List[Dict[str, Any]]:
        """One JSON-ready record per image (the ``.jsonl`` lines of the on-disk format, minus ``image``)."""
        out = []
        for b, scene in enumerate(self.scenes):
            order = [int(v) for v in self.slot_objects[b] if v >= 0]
            out.append(
                {
                    "scene_index": int(self.scene_index[b]),
                    "scene_seed": int(self.scene_seed[b]),
                    "view": int(self.view[b]),
                    "scene": scene.to_dict(),
                    "short_caption": self.short_captions[b],
                    "descriptive_caption": self.descriptive_captions[b],
                    "attributes": {
                        "count": int(self.count[b]),
                        "shapes": self.slot_shapes[b].tolist(),
                        "colors": self.slot_colors[b].tolist(),
                        "order": order,
                    },
                }
            )
        return out


def render_scenes(
    scenes: Sequence[ToyScene],
    views_per_scene: int,
    config: ToyWorldConfig = ToyWorldConfig(),
    *,
    scene_index: Optional[Sequence[int]] = None,
) -> ToyBatch:
    """Sample ``views_per_scene`` cameras per scene, render them and label them: one :class:`ToyBatch`.

    ``scene_index`` (default ``0..len(scenes)-1``) is recorded in the batch.
    """
    views = check_int_range(views_per_scene, "views_per_scene", lo=1)
    cameras = sample_cameras_batch(scenes, views, config)
    idx = torch.arange(len(scenes)).repeat_interleave(views)
    render = render_toyworld(scenes, cameras, config, scene_index=idx)
    per_image = [scenes[int(i)] for i in idx]
    shorts, longs, counts, shapes, colors, slots = [], [], [], [], [], []
    for scene, order in zip(per_image, left_to_right_batch(per_image, cameras)):
        labels = attribute_labels(scene, num_slots=config.num_slots, order=order)
        shorts.append(short_caption(scene, order=order))
        longs.append(descriptive_caption(scene, order=order))
        counts.append(labels["count"])
        shapes.append(labels["shapes"])
        colors.append(labels["colors"])
        slots.append(labels["order"] + [-1] * (config.num_slots - len(labels["order"])))
    global_idx = torch.as_tensor(list(scene_index) if scene_index is not None else range(len(scenes)), dtype=torch.int64)
    return ToyBatch(
        render=render,
        cameras=cameras,
        scenes=tuple(per_image),
        scene_index=global_idx[idx],
        scene_seed=torch.tensor([s.seed for s in scenes], dtype=torch.int64)[idx],
        view=torch.arange(views).repeat(len(scenes)),
        short_captions=tuple(shorts),
        descriptive_captions=tuple(longs),
        count=torch.tensor(counts, dtype=torch.int64),
        slot_shapes=torch.tensor(shapes, dtype=torch.int64).reshape(-1, config.num_slots),
        slot_colors=torch.tensor(colors, dtype=torch.int64).reshape(-1, config.num_slots),
        slot_objects=torch.tensor(slots, dtype=torch.int64).reshape(-1, config.num_slots),
    )


def iter_toyworld(
    config: ToyWorldConfig = ToyWorldConfig(),
    *,
    seeds: Optional[Sequence[int]] = None,
    start: int = 0,
    count: Optional[int] = None,
    seed: int = 0,
    views_per_scene: int = 1,
    batch_size: int = 64,
) -> Iterator[ToyBatch]:
    """Stream rendered toy-world batches, deterministically.

    Args:
        config: the toy world.
        seeds: explicit scene seeds (each ``>= 0``); or, when ``None``, scenes ``start, start + 1,
            ...`` of the data set with seed ``seed`` (scene ``i`` has seed ``scene_seed(seed, i)``),
            ``count`` of them (``None``: an endless stream).
        views_per_scene: views (cameras) per scene, ``V >= 1``.
        batch_size: images per batch; a batch holds ``max(1, batch_size // V)`` whole scenes (the
            last batch may hold fewer).

    >>> batch = next(iter_toyworld(count=2, views_per_scene=2))
    >>> len(batch), batch.scene_index.tolist(), batch.view.tolist()
    (4, [0, 0, 1, 1], [0, 1, 0, 1])
    """
    views = check_int_range(views_per_scene, "views_per_scene", lo=1)
    per_batch = max(1, check_int_range(batch_size, "batch_size", lo=1) // views)
    if seeds is not None:
        seed_list = [check_int_range(s, f"seeds[{i}]", lo=0) for i, s in enumerate(seeds)]
        indices: Any = range(len(seed_list))

        def seed_of(i: int) -> int:
            return seed_list[i]

    else:
        check_int_range(start, "start", lo=0)
        check_int_range(seed, "seed", lo=0)
        if count is not None:
            check_int_range(count, "count", lo=0)
        indices = count_from(start) if count is None else range(start, start + count)

        def seed_of(i: int) -> int:
            return scene_seed(seed, i)

    chunk: List[int] = []
    for i in indices:
        chunk.append(i)
        if len(chunk) == per_batch:
            yield render_scenes([sample_scene(seed_of(j), config) for j in chunk], views, config, scene_index=chunk)
            chunk = []
    if chunk:
        yield render_scenes([sample_scene(seed_of(j), config) for j in chunk], views, config, scene_index=chunk)


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def _shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def _batch_arrays(batch: ToyBatch) -> Dict[str, np.ndarray]:
    r = batch.render
    return {
        "rgb": (r.rgb * 255.0).round().clamp(0, 255).to(torch.uint8).numpy(),
        "depth": r.depth.numpy().astype(np.float16),
        "normals": r.normals.numpy().astype(np.float16),
        "semantic": r.semantic.to(torch.uint8).numpy(),
        "instance": r.instance.to(torch.uint8).numpy(),
        "silhouette": np.packbits(r.silhouette.numpy(), axis=-1),
        "contours": np.packbits(r.contours.numpy(), axis=-1),
        "c2w": batch.cameras.c2w.numpy().astype(np.float32),
        "K": batch.cameras.Ks.numpy().astype(np.float32),
        "scene_index": batch.scene_index.numpy(),
        "scene_seed": batch.scene_seed.numpy(),
        "view": batch.view.numpy(),
        "count": batch.count.numpy(),
        "slot_shapes": batch.slot_shapes.numpy(),
        "slot_colors": batch.slot_colors.numpy(),
    }


def _meta(config: ToyWorldConfig, num_scenes: int, views: int, seed: int, scenes_per_shard: int) -> Dict[str, Any]:
    size = config.image_size
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": config.to_dict(),
        "seed": seed,
        "num_scenes": num_scenes,
        "views_per_scene": views,
        "scenes_per_shard": scenes_per_shard,
        "num_shards": math.ceil(num_scenes / scenes_per_shard),
        "num_images": num_scenes * views,
        "image_size": [size, size],
        "semantic_labels": list(SEMANTIC_LABELS),
        "shapes": list(SHAPES),
        "colors": {name: list(PALETTE[name]) for name in COLORS},
        "floors": list(FLOORS),
        "arrays": {
            name: {"dtype": dtype, "shape": ["M", *shape(size, size, config.num_slots)]} for name, (dtype, shape) in _ARRAYS.items()
        },
    }


def _shard_complete(directory: Path, k: int) -> bool:
    return (directory / f"{_shard_name(k)}.npz").is_file() and (directory / f"{_shard_name(k)}.jsonl").is_file()


def _write_shard(directory: Path, meta: Dict[str, Any], k: int, batch_size: int, on_batch=None, compress: bool = True) -> int:
    """Render and write shard ``k`` (atomically, ``.npz`` then ``.jsonl``); returns its image count."""
    config = ToyWorldConfig.from_dict(meta["config"])
    per = meta["scenes_per_shard"]
    lo, hi = k * per, min((k + 1) * per, meta["num_scenes"])
    views = meta["views_per_scene"]
    parts: Dict[str, List[np.ndarray]] = {name: [] for name in _ARRAYS}
    records: List[Dict[str, Any]] = []
    for batch in iter_toyworld(config, start=lo, count=hi - lo, seed=meta["seed"], views_per_scene=views, batch_size=batch_size):
        for name, value in _batch_arrays(batch).items():
            parts[name].append(value)
        records.extend(batch.records())
        if on_batch is not None:
            on_batch(len(batch))
    arrays = {name: np.concatenate(values) for name, values in parts.items()}
    first_image = lo * views
    with atomic_write(directory / f"{_shard_name(k)}.npz", "wb") as fh:
        (np.savez_compressed if compress else np.savez)(fh, **arrays)
    lines = [json.dumps({"image": first_image + i, **rec}, separators=(",", ":")) for i, rec in enumerate(records)]
    with atomic_write(directory / f"{_shard_name(k)}.jsonl", "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return len(records)


def _worker(args: Tuple[str, Dict[str, Any], int, int, bool]) -> Tuple[int, int]:
    directory, meta, k, batch_size, compress = args
    torch.set_num_threads(1)
    return k, _write_shard(Path(directory), meta, k, batch_size, compress=compress)


def _progress_bar():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("-- img/s" if speed is None else f"{speed:,.0f} img/s")

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(), TimeElapsedColumn(), TextColumn("ETA"),
        TimeRemainingColumn(),
    )


def write_toyworld(
    directory: PathLike,
    config: ToyWorldConfig = ToyWorldConfig(),
    num_scenes: int = 1000,
    views_per_scene: int = 1,
    seed: int = 0,
    *,
    scenes_per_shard: int = 1024,
    batch_size: int = 256,
    num_workers: int = 1,
    compress: bool = True,
    progress: Optional[bool] = None,
) -> Path:
    """Render ``num_scenes`` scenes x ``views_per_scene`` views into ``directory`` (format: module docstring).

    Resumes: complete shards already in ``directory`` are kept (not re-rendered), provided its
    ``meta.json`` describes the same data set; a different one is refused with an
    :class:`InputError` naming the differing fields.

    Args:
        directory: output folder (created).
        config, num_scenes, views_per_scene, seed: what to render (scene ``i`` has seed
            ``scene_seed(seed, i)``).
        scenes_per_shard: scenes per shard file (a shard holds ``scenes_per_shard * views_per_scene`` images).
        batch_size: images rendered per call.
        num_workers: processes rendering shards in parallel (``spawn``; one torch thread each).
            A script that uses it needs an ``if __name__ == "__main__":`` guard, as any ``spawn`` pool.
        compress: deflate the ``.npz`` arrays (``numpy.savez_compressed``): ~2.4 KB instead of
            ~14 KB per 32-px image for ~7 % more time; :func:`read_toyworld` reads both.
        progress: show a progress bar with rate and ETA (default: when more than one batch).

    Returns:
        ``Path(directory)``.
    """
    out = check_output_dir(directory, "directory")
    num_scenes = check_int_range(num_scenes, "num_scenes", lo=1)
    views = check_int_range(views_per_scene, "views_per_scene", lo=1)
    seed = check_int_range(seed, "seed", lo=0)
    scenes_per_shard = check_int_range(scenes_per_shard, "scenes_per_shard", lo=1)
    batch_size = check_int_range(batch_size, "batch_size", lo=1)
    num_workers = check_int_range(num_workers, "num_workers", lo=1, hi=256)
    if not isinstance(config, ToyWorldConfig):
        raise InputError(f"config: expected a ToyWorldConfig, got {type(config).__name__}")
    meta = _meta(config, num_scenes, views, seed, scenes_per_shard)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    if meta_path.exists():
        old = _read_json(meta_path)
        keys = ("format", "version", "config", "seed", "num_scenes", "views_per_scene", "scenes_per_shard")
        differ = [key for key in keys if old.get(key) != json.loads(json.dumps(meta[key]))]
        if differ:
            raise InputError(
                f"directory {out}: its meta.json describes another toy world (differs in {', '.join(differ)}); "
                "use an empty folder, or the same settings to resume"
            )
    else:
        atomic_write_json(meta, meta_path)

    todo = [k for k in range(meta["num_shards"]) if not _shard_complete(out, k)]
    total = meta["num_images"]
    done_images = total - sum(min(scenes_per_shard, num_scenes - k * scenes_per_shard) * views for k in todo)
    show = progress if progress is not None else total > batch_size
    bar = _progress_bar() if show else None
    task = None
    if bar is not None:
        bar.start()
        task = bar.add_task(f"toy world -> {out.name}", total=total, completed=done_images)
    advance = (lambda n: bar.advance(task, n)) if bar is not None else None
    try:
        if num_workers == 1 or len(todo) <= 1:
            for k in todo:
                _write_shard(out, meta, k, batch_size, on_batch=advance, compress=compress)
        else:
            with ProcessPoolExecutor(max_workers=min(num_workers, len(todo)), mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(_worker, (str(out), meta, k, batch_size, compress)) for k in todo]
                for future in as_completed(futures):
                    _, n = future.result()
                    if advance is not None:
                        advance(n)
    finally:
        if bar is not None:
            bar.stop()
    return out


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToyWorldData:
    """A toy world read back from disk (``M`` images; dtypes as stored, masks unpacked to bool).

    Attributes:
        rgb: ``[M, H, W, 3]`` uint8; depth: ``[M, H, W]`` float16 (0 = sky); normals: ``[M, H, W, 3]``
            float16; semantic, instance: ``[M, H, W]`` uint8; silhouette, contours: ``[M, H, W]`` bool.
        cameras: ``M`` OpenCV cameras.
        scene_index, scene_seed, view, count: ``[M]`` int64; slot_shapes, slot_colors: ``[M, S]`` int64.
        records: ``M`` dicts (the ``.jsonl`` lines: scene graph, captions, attributes).
        config: the :class:`ToyWorldConfig`; meta: ``meta.json`` as a dict.
    """

    rgb: Tensor
    depth: Tensor
    normals: Tensor
    semantic: Tensor
    instance: Tensor
    silhouette: Tensor
    contours: Tensor
    cameras: Cameras
    scene_index: Tensor
    scene_seed: Tensor
    view: Tensor
    count: Tensor
    slot_shapes: Tensor
    slot_colors: Tensor
    records: Tuple[Dict[str, Any], ...]
    config: ToyWorldConfig
    meta: Dict[str, Any]

    def __len__(self) -> int:
        return self.rgb.shape[0]

    def scene(self, i: int) -> ToyScene:
        """The scene graph of image ``i``."""
        return ToyScene.from_dict(self.records[i]["scene"], where=f"records[{i}].scene")


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise InputError(f"{path}: missing (not a toy-world folder, or written by an interrupted run: run write_toyworld again)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _check_meta(meta: Dict[str, Any], path: Path) -> None:
    if meta.get("format") != FORMAT:
        raise InputError(f"{path}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("version") != FORMAT_VERSION:
        raise InputError(f"{path}: version {meta.get('version')!r} is not supported (this langfield reads version {FORMAT_VERSION})")
    for key in ("seed", "num_scenes", "views_per_scene", "scenes_per_shard", "num_shards"):
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "seed" else 1):
            raise InputError(f"{path}: field {key!r} must be a positive integer, got {value!r}")
    if meta["num_shards"] != math.ceil(meta["num_scenes"] / meta["scenes_per_shard"]):
        raise InputError(f"{path}: num_shards={meta['num_shards']} does not match num_scenes / scenes_per_shard")


def _load_npz(path: Path, num: int, size: int, slots: int) -> Dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(f"{path}: missing shard (interrupted write? run write_toyworld with the same settings to finish it)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise InputError(f"{path}: cannot be read as a .npz archive ({type(err).__name__}: {err})") from None
    for name, (dtype, shape) in _ARRAYS.items():
        if name not in arrays:
            raise InputError(f"{path}: array {name!r} is missing")
        want = (num, *shape(size, size, slots))
        a = arrays[name]
        if str(a.dtype) != dtype or tuple(a.shape) != want:
            raise InputError(f"{path}: array {name!r} is {a.dtype} {tuple(a.shape)}, expected {dtype} {want}")
    return arrays


def _load_jsonl(path: Path, num: int, first_image: int) -> List[Dict[str, Any]]:
    if not path.is_file():
        raise InputError(f"{path}: missing shard records (interrupted write? run write_toyworld with the same settings to finish it)")
    records = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{path}:{line_no}: not valid JSON ({err.msg})") from None
            if not isinstance(rec, dict) or rec.get("image") != first_image + len(records):
                raise InputError(f"{path}:{line_no}: expected a record with \"image\": {first_image + len(records)}")
            records.append(rec)
    if len(records) != num:
        raise InputError(f"{path}: holds {len(records)} records, expected {num}")
    return records


def read_toyworld(directory: PathLike) -> ToyWorldData:
    """Read a folder written by :func:`write_toyworld` (every shard must be complete).

    Raises :class:`InputError` naming the file (and array, line or field) for a missing or malformed
    ``meta.json``, a missing shard, a shard whose arrays have other dtypes/shapes than
    ``meta.json`` implies, or a ``.jsonl`` whose records do not match.
    """
    root = Path(directory)
    if not root.is_dir():
        raise InputError(f"directory {root}: not a folder")
    meta_path = root / "meta.json"
    meta = _read_json(meta_path)
    _check_meta(meta, meta_path)
    try:
        config = ToyWorldConfig.from_dict(meta.get("config"), where=f"{meta_path}: config")
    except TypeError as err:
        raise InputError(f"{meta_path}: config: {err}") from None
    views, per, size = meta["views_per_scene"], meta["scenes_per_shard"], config.image_size
    total = meta["num_scenes"] * views
    bytes_per_image = size * size * (3 + 2 + 6 + 1 + 1 + 2)
    check_memory(total * bytes_per_image, f"the toy world in {root} ({total} images of {size}x{size})")
    parts: Dict[str, List[np.ndarray]] = {name: [] for name in _ARRAYS}
    records: List[Dict[str, Any]] = []
    for k in range(meta["num_shards"]):
        lo, hi = k * per, min((k + 1) * per, meta["num_scenes"])
        num = (hi - lo) * views
        arrays = _load_npz(root / f"{_shard_name(k)}.npz", num, size, config.num_slots)
        for name in _ARRAYS:
            parts[name].append(arrays[name])
        records.extend(_load_jsonl(root / f"{_shard_name(k)}.jsonl", num, lo * views))
    a = {name: np.concatenate(values) for name, values in parts.items()}
    t = torch.from_numpy
    unpack = lambda x: t(np.unpackbits(x, axis=-1, count=size).astype(bool))  # noqa: E731
    cameras = Cameras.create(t(a["c2w"]), t(a["K"]), size, size)
    return ToyWorldData(
        rgb=t(a["rgb"]), depth=t(a["depth"]), normals=t(a["normals"]), semantic=t(a["semantic"]), instance=t(a["instance"]),
        silhouette=unpack(a["silhouette"]), contours=unpack(a["contours"]), cameras=cameras,
        scene_index=t(a["scene_index"]), scene_seed=t(a["scene_seed"]), view=t(a["view"]), count=t(a["count"]),
        slot_shapes=t(a["slot_shapes"]), slot_colors=t(a["slot_colors"]), records=tuple(records), config=config, meta=meta,
    )
