"""Tiny valid datasets of every reader format, for the bad-input cases to break one thing at a time.

Each writer builds a minimal scene that loads cleanly (``tests/robustness/test_reader_scenes.py``
proves it), so a case that mutates one field and gets an error got it for that field:

* :func:`blender_scene`: ``transforms_{train,test}.json`` (NeRF-synthetic layout), 2 + 1 views;
* :func:`single_scene`: one nerfstudio ``transforms.json`` with explicit intrinsics, 3 views;
* :func:`llff_scene`: ``poses_bounds.npy`` + ``images/``, 3 views;
* :func:`colmap_scene`: ``sparse/0`` (text or binary) + ``images/``, 3 views and 5 points.

Images are ``W x H = 8 x 6`` RGB PNGs. Helpers edit the files afterwards (:func:`edit_json`,
:func:`edit_text`, :func:`patch_bytes`, :func:`edit_npy`).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
from PIL import Image

from langfield.io.colmap import ColmapCamera, ColmapImage, ColmapModel, ColmapPoints, rotmat_to_qvec, write_model

W, H = 8, 6
FOCAL = 7.0


def png(path: Path, size=(W, H), seed: int = 0, mode: str = "RGB") -> Path:
    """Write a random ``size = (w, h)`` image (format from the suffix)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode).save(path)
    return path


def _look_at(center: Sequence[float], target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """4x4 OpenGL camera-to-world (x right, y up, z back)."""
    c = np.asarray(center, float)
    back = c - np.asarray(target, float)
    back /= np.linalg.norm(back)
    right = np.cross(np.asarray(up, float), back)
    right /= np.linalg.norm(right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, np.cross(back, right), back, c
    return m


def _orbit(n: int, radius: float = 4.0, phase: float = 0.0):
    return [_look_at((radius * math.cos(phase + 2 * math.pi * k / n), radius * math.sin(phase + 2 * math.pi * k / n), 1.0)) for k in range(n)]


# ----------------------------------------------------------------------------- transforms.json


def blender_scene(root: Path, counts: Optional[Dict[str, int]] = None) -> Path:
    """NeRF-synthetic layout: ``transforms_{split}.json`` with extension-less ``./split/r_i`` paths."""
    counts = counts or {"train": 2, "test": 1}
    for s, (split, n) in enumerate(counts.items()):
        frames = []
        for i, m in enumerate(_orbit(n, phase=0.3 * s)):
            png(root / split / f"r_{i}.png", seed=10 * s + i)
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": m.tolist()})
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": 0.9, "frames": frames}))
    return root


def single_scene(root: Path, n: int = 3) -> Path:
    """nerfstudio layout: one ``transforms.json`` with ``fl_x fl_y cx cy w h`` and ``images/frame_i.png``."""
    frames = []
    for i, m in enumerate(_orbit(n)):
        png(root / "images" / f"frame_{i}.png", seed=i)
        frames.append({"file_path": f"images/frame_{i}.png", "transform_matrix": m.tolist()})
    data = {"fl_x": FOCAL, "fl_y": FOCAL, "cx": W / 2, "cy": H / 2, "w": W, "h": H, "frames": frames}
    (root / "transforms.json").write_text(json.dumps(data))
    return root


def edit_json(path: Path, fn: Callable[[Dict[str, Any]], Any]) -> Path:
    """Load ``path``, let ``fn`` mutate the object in place, write it back (NaN/Infinity allowed)."""
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))
    return path


def set_frame(path: Path, index: int, key: str, value: Any) -> Path:
    def fn(d):
        d["frames"][index][key] = value

    return edit_json(path, fn)


def set_top(path: Path, key: str, value: Any) -> Path:
    def fn(d):
        d[key] = value

    return edit_json(path, fn)


def outside_image(tmp: Path) -> Path:
    """A valid image *outside* any scene folder built under ``tmp / "scene"``."""
    return png(tmp / "elsewhere" / "secret.png", seed=99)


# ----------------------------------------------------------------------------- LLFF


def llff_rows(n: int = 3) -> np.ndarray:
    """``[n, 17]`` poses_bounds rows: forward-facing cameras, hwf = (H, W, FOCAL), bounds (2, 20)."""
    rows = []
    for k in range(n):
        c = np.array([0.3 * math.cos(k), 0.2 * math.sin(k), 0.0])
        z = np.array([0.0, 0.0, 10.0]) - c
        z /= np.linalg.norm(z)
        x = np.cross(z, [0.0, -1.0, 0.0])
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        llff = np.stack([y, x, -z, c, [H, W, FOCAL]], 1)  # [down, right, back, centre, hwf]
        rows.append(np.concatenate([llff.reshape(-1), [2.0, 20.0]]))
    return np.array(rows)


def llff_scene(root: Path, n: int = 3) -> Path:
    """``poses_bounds.npy`` + ``images/img_i.png`` at full resolution."""
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "poses_bounds.npy", llff_rows(n))
    for i in range(n):
        png(root / "images" / f"img_{i}.png", seed=i)
    return root


def edit_npy(root: Path, fn: Callable[[np.ndarray], Any]) -> Path:
    """Apply ``fn`` to the poses_bounds array (in place, or return a replacement) and save it."""
    p = root / "poses_bounds.npy"
    arr = np.load(p)
    out = fn(arr)
    np.save(p, arr if out is None else out, allow_pickle=True)
    return root


# ----------------------------------------------------------------------------- COLMAP


def _w2c(center: np.ndarray):
    z = -center / np.linalg.norm(center)
    x = np.cross(z, [0.0, -1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z], 1).T
    return R, -R @ center


def colmap_model(
    n: int = 3,
    *,
    camera: Optional[ColmapCamera] = None,
    qvecs: Optional[Dict[int, Sequence[float]]] = None,
    tvecs: Optional[Dict[int, Sequence[float]]] = None,
    names: Optional[Dict[int, str]] = None,
    camera_ids: Optional[Dict[int, int]] = None,
    points: Optional[ColmapPoints] = None,
) -> ColmapModel:
    """A valid model (PINHOLE 8x6, cameras on a circle looking at the origin); overrides per image index."""
    cam = camera or ColmapCamera(1, "PINHOLE", W, H, (FOCAL, FOCAL, W / 2, H / 2))
    images = {}
    for k in range(n):
        a = 2 * math.pi * k / n
        R, t = _w2c(np.array([5 * math.cos(a), -2.0, 5 * math.sin(a)]))
        images[k + 1] = ColmapImage(
            id=k + 1,
            qvec=np.asarray((qvecs or {}).get(k, rotmat_to_qvec(R)), float),
            tvec=np.asarray((tvecs or {}).get(k, t), float),
            camera_id=(camera_ids or {}).get(k, 1),
            name=(names or {}).get(k, f"view_{k}.png"),
        )
    if points is None:
        rng = np.random.default_rng(0)
        points = ColmapPoints.create(rng.normal(size=(5, 3)), rgb=rng.integers(0, 256, (5, 3)))
    return ColmapModel({cam.id: cam}, images, points)


def colmap_scene(root: Path, ext: str = ".txt", model: Optional[ColmapModel] = None, n: int = 3) -> Path:
    """``sparse/0/{cameras,images,points3D}{ext}`` + ``images/view_i.png``."""
    model = model or colmap_model(n)
    for k in range(n):
        png(root / "images" / f"view_{k}.png", seed=k)
    write_model(model, root / "sparse" / "0", ext=ext)
    return root


def model_path(root: Path, stem: str, ext: str) -> Path:
    return root / "sparse" / "0" / f"{stem}{ext}"


def edit_text(path: Path, old: str, new: str, count: int = 1) -> Path:
    """Replace ``old`` (which must occur) by ``new`` in a text file."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, count))
    return path


def data_line(path: Path, index: int = 0) -> str:
    """The ``index``-th non-comment, non-empty line of a COLMAP text file."""
    lines = [ln for ln in path.read_text().split("\n") if ln.strip() and not ln.startswith("#")]
    return lines[index]


def replace_token(path: Path, index: int, token: int, value: str) -> Path:
    """Set token ``token`` of the ``index``-th data line of a COLMAP text file to ``value``."""
    line = data_line(path, index)
    words = line.split(" ")
    words[token] = value
    return edit_text(path, line, " ".join(words))


def patch_bytes(path: Path, offset: int, fmt: str, *values: Any) -> Path:
    """Overwrite ``struct.pack('<' + fmt, *values)`` at ``offset`` of a binary file."""
    data = bytearray(path.read_bytes())
    packed = struct.pack("<" + fmt, *values)
    data[offset : offset + len(packed)] = packed
    path.write_bytes(bytes(data))
    return path


#: Byte offsets in the binary files written by :func:`colmap_scene` (first record of each file).
CAMERA_PARAMS_AT = 8 + struct.calcsize("<iiQQ")  # the first camera's params
IMAGE_Q_AT = 8 + 4  # the first image's qw
IMAGE_T_AT = IMAGE_Q_AT + 4 * 8  # the first image's tx
POINT_XYZ_AT = 8 + 8  # the first point's x
POINT_TRACK_LEN_AT = 8 + struct.calcsize("<QdddBBBd")  # the first point's track length


def image_num_points_at(name: str = "view_0.png") -> int:
    """Offset of the first image's ``num_points2D`` in ``images.bin`` (after its NUL-terminated name)."""
    return 8 + struct.calcsize("<idddddddi") + len(name.encode()) + 1
