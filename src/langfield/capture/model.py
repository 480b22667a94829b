"""The sparse model a capture hands on: the largest reconstruction, without dropped cameras, as
``sparse/0``, and the same cameras as a nerfstudio / instant-ngp ``transforms.json``.

Incremental mapping may leave several models (``sparse/0``, ``sparse/1``, ...): the scene split in
parts, or the real model beside a stray two-image one, and not necessarily in that order.
:func:`choose_largest_model` keeps the one with the most registered images (ties: more points).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from langfield._checks import InputError
from langfield.geometry.conventions import opencv_to_opengl
from langfield.io.atomic import atomic_write_json
from langfield.io.colmap import (
    ColmapImage,
    ColmapModel,
    ColmapPoints,
    camera_intrinsics,
    find_model_dir,
    read_model,
    write_model,
)

PathLike = Union[str, os.PathLike]

__all__ = [
    "add_image",
    "choose_largest_model",
    "model_sizes",
    "remove_images",
    "transforms_dict",
    "write_final_model",
    "write_transforms_json",
]


def model_sizes(sparse_dir: PathLike) -> Dict[str, Tuple[int, int]]:
    """``{subfolder name: (registered images, points)}`` of every model folder under ``sparse_dir``."""
    sizes: Dict[str, Tuple[int, int]] = {}
    root = Path(sparse_dir)
    if not root.is_dir():
        return sizes
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if find_model_dir(sub) == sub:
            model = read_model(sub)
            sizes[sub.name] = (len(model.images), 0 if model.points is None else len(model.points))
    return sizes


def choose_largest_model(sparse_dir: PathLike) -> Optional[Path]:
    """The model folder under ``sparse_dir`` with the most registered images (ties: most points, then
    the lower folder name); ``None`` when there is no model.

    >>> choose_largest_model("/nonexistent") is None
    True
    """
    sizes = model_sizes(sparse_dir)
    if not sizes:
        return None
    best = max(sizes, key=lambda name: (sizes[name][0], sizes[name][1], -int(name) if name.isdigit() else 0))
    return Path(sparse_dir) / best


def remove_images(model: ColmapModel, image_ids: Iterable[int]) -> ColmapModel:
    """``model`` without the images ``image_ids``: their observations leave the point tracks, points
    left with fewer than 2 observations are removed, and the remaining images' references to removed
    points become ``-1``."""
    drop = {int(i) for i in image_ids}
    images = {k: im for k, im in model.images.items() if k not in drop}
    pts = model.points
    if pts is None or not drop:
        return ColmapModel(model.cameras, images, pts)
    point_of_obs = np.repeat(np.arange(len(pts)), pts.track_lengths)
    keep_obs = ~np.isin(pts.track_image_ids, list(drop))
    new_lengths = np.bincount(point_of_obs[keep_obs], minlength=len(pts))
    keep_pt = new_lengths >= 2
    keep_obs &= keep_pt[point_of_obs]
    points = ColmapPoints(
        ids=pts.ids[keep_pt],
        xyz=pts.xyz[keep_pt],
        rgb=pts.rgb[keep_pt],
        errors=pts.errors[keep_pt],
        track_lengths=new_lengths[keep_pt].astype(np.int64),
        track_image_ids=pts.track_image_ids[keep_obs],
        track_point2d_idx=pts.track_point2d_idx[keep_obs],
    )
    kept_ids = set(points.ids.tolist())
    cleaned = {}
    for k, im in images.items():
        ids = np.asarray(im.point3d_ids, np.int64)
        gone = (ids >= 0) & ~np.isin(ids, list(kept_ids))
        cleaned[k] = replace(im, point3d_ids=np.where(gone, -1, ids)) if gone.any() else im
    return ColmapModel(model.cameras, cleaned, points)


def add_image(model: ColmapModel, image: ColmapImage) -> ColmapModel:
    """``model`` with ``image`` registered: its observations (``point3d_ids >= 0``, which must be points
    of the model) join the point tracks. Refuses an image id or name already in the model."""
    if image.id in model.images or any(im.name == image.name for im in model.images.values()):
        raise InputError(f"add_image: image {image.id} ({image.name}) is already in the model")
    pts = model.points
    images = dict(model.images)
    images[image.id] = image
    if pts is None:
        return ColmapModel(model.cameras, images, None)
    obs = np.flatnonzero(np.asarray(image.point3d_ids) >= 0)
    row = {int(pid): k for k, pid in enumerate(pts.ids)}
    missing = [int(image.point3d_ids[i]) for i in obs if int(image.point3d_ids[i]) not in row]
    if missing:
        raise InputError(f"add_image: image {image.name} observes points {missing[:5]} that are not in the model")
    extra = np.zeros(len(pts), np.int64)
    rows = np.array([row[int(image.point3d_ids[i])] for i in obs], np.int64)
    np.add.at(extra, rows, 1)
    starts = np.concatenate([[0], np.cumsum(pts.track_lengths)])
    new_lengths = pts.track_lengths + extra
    new_starts = np.concatenate([[0], np.cumsum(new_lengths)])
    total = int(new_starts[-1])
    img_ids = np.empty(total, np.int64)
    p2d = np.empty(total, np.int64)
    # an old observation keeps its place in its track; its track starts later by the added ones before it
    old_pos = np.arange(len(pts.track_image_ids)) + np.repeat(new_starts[:-1] - starts[:-1], pts.track_lengths)
    img_ids[old_pos] = pts.track_image_ids
    p2d[old_pos] = pts.track_point2d_idx
    fill = new_starts[:-1] + pts.track_lengths  # next free slot of each point's track
    for i, r in zip(obs, rows):
        img_ids[fill[r]] = image.id
        p2d[fill[r]] = int(i)
        fill[r] += 1
    points = replace(pts, track_lengths=new_lengths.astype(np.int64), track_image_ids=img_ids, track_point2d_idx=p2d)
    return ColmapModel(model.cameras, images, points)


def write_final_model(model: ColmapModel, sparse_dir: PathLike) -> Path:
    """Write ``model`` as ``sparse_dir/0`` (binary) and remove every other entry of ``sparse_dir``.

    The model is written to a temporary folder first and renamed over ``0``, so a reader never sees
    a half-written model.
    """
    root = Path(sparse_dir)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".0.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    write_model(model, tmp, ".bin")
    for entry in root.iterdir():
        if entry != tmp:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    tmp.rename(root / "0")
    return root / "0"


def transforms_dict(model: ColmapModel, image_prefix: str = "images") -> dict:
    """The nerfstudio / instant-ngp ``transforms.json`` content for ``model``'s registered images.

    * ``transform_matrix``: ``4x4`` **OpenGL** camera-to-world (x right, y up, z back) in COLMAP's
      world frame, unchanged (``applied_transform`` is the identity; nerfstudio re-orients on load).
    * ``fl_x fl_y cx cy w h`` in pixels of the image files (COLMAP's principal point, pixel
      centres at ``+0.5``), ``k1 k2 p1 p2`` (and ``k3`` when non-zero) with ``camera_model
      "OPENCV"``; per frame when the model has several cameras, else at the top level.
    * ``file_path``: ``image_prefix/NAME``, relative to the json's folder; frames sorted by name.
    """
    if not model.images:
        raise InputError("transforms.json: the model has no registered images")
    intr = {cid: camera_intrinsics(cam, source="sparse/0/cameras.bin") for cid, cam in model.cameras.items()}

    def camera_fields(cid: int) -> dict:
        (K, dist), cam = intr[cid], model.cameras[cid]
        out = {
            "camera_model": "OPENCV",
            "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
            "w": int(cam.width), "h": int(cam.height),
            "k1": float(dist[0]), "k2": float(dist[1]), "p1": float(dist[2]), "p2": float(dist[3]),
        }  # fmt: skip
        if dist[4] != 0:
            out["k3"] = float(dist[4])
        return out

    shared = len({im.camera_id for im in model.images.values()}) == 1
    data: dict = {}
    if shared:
        data.update(camera_fields(next(iter(model.images.values())).camera_id))
    frames = []
    for im in sorted(model.images.values(), key=lambda im: im.name):
        c2w = np.eye(4)
        c2w[:3] = im.c2w()
        gl = opencv_to_opengl(torch.from_numpy(c2w)).numpy()
        frame = {"file_path": f"{image_prefix}/{im.name}", "transform_matrix": gl.tolist(), "colmap_im_id": int(im.id)}
        if not shared:
            frame.update(camera_fields(im.camera_id))
        frames.append(frame)
    data["applied_transform"] = np.eye(4)[:3].tolist()
    data["frames"] = frames
    return data


def write_transforms_json(model: ColmapModel, path: PathLike, image_prefix: str = "images") -> Path:
    """Write :func:`transforms_dict` to ``path`` atomically; returns ``path``."""
    path = Path(path)
    atomic_write_json(transforms_dict(model, image_prefix), path)
    return path


def registered_names(model: ColmapModel) -> List[str]:
    """Sorted names of the registered images."""
    return sorted(im.name for im in model.images.values())


def names_by_id(model: ColmapModel, ids: Sequence[int]) -> List[str]:
    """Names of ``ids`` (sorted by name)."""
    return sorted(model.images[int(i)].name for i in ids)
