"""COLMAP sparse models: readers and writers for the text and binary formats.

Written from COLMAP's documented format (``colmap/src/colmap/scene/reconstruction_io``,
"Output format" in the COLMAP docs). All multi-byte values are little-endian.

* ``cameras``: ``camera_id, model, width, height, params[]``. Binary: ``uint64 num``; per camera
  ``int32 id, int32 model_id, uint64 width, uint64 height, float64 params[n(model)]``.
* ``images``: ``image_id, qw qx qy qz, tx ty tz, camera_id, name`` then the 2D points
  ``(x, y, point3D_id)``; ``point3D_id = -1`` means none. Binary: ``uint64 num``; per image
  ``int32 id, float64 q[4], float64 t[3], int32 camera_id, name\\0, uint64 num_points2D``,
  then ``num_points2D x (float64 x, float64 y, int64 point3D_id)``.
* ``points3D``: ``point3D_id, x y z, r g b, error, track[] = (image_id, point2D_idx)``. Binary:
  ``uint64 num``; per point ``uint64 id, float64 xyz[3], uint8 rgb[3], float64 error,
  uint64 track_length``, then ``track_length x (int32 image_id, int32 point2D_idx)``.

Pose convention: an image's ``(q, t)`` is the **world-to-camera** transform in the OpenCV camera
convention (x right, y down, z forward), ``x_cam = R(q) x_world + t`` with the Hamilton unit
quaternion ``q = (qw, qx, qy, qz)``. Pixel centres are at ``+0.5`` like langfield's.

Text floats are written with Python's shortest round-trip ``repr``, so text write -> read is exact.
This module is a file format only (numpy and the boundary checks of :mod:`langfield._checks`), so it
sits in ``io/`` below both its users: the scene reader :mod:`langfield.data.readers.colmap` and the
capture step, which writes models.

Validation on read (errors are :class:`~langfield._checks.InputError` naming the file and the line,
or for binary files the record and byte offset): camera sizes in ``[1, MAX_IMAGE_SIDE]`` and
plausible pinhole parameters (:func:`~langfield._checks.check_pinhole`), quaternions finite and
non-zero, translations and point positions finite within ``MAX_ABS_COORDINATE``, colours in
``0..255``, ids unique. A binary count (cameras, images, 2D points, points, track length) is trusted
only after checking that the rest of the file is large enough to hold it, so a corrupt header is
refused before anything is allocated.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from langfield._checks import (
    MAX_ABS_COORDINATE,
    MAX_FOCAL_PIXELS,
    InputError,
    check_finite_array,
    check_image_size,
    check_memory,
    check_pinhole,
)
from langfield.io.text import check_regular_file, read_utf8_text

PathLike = Union[str, os.PathLike]

#: COLMAP camera models: id -> (name, number of parameters).
CAMERA_MODELS: Dict[int, Tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}
CAMERA_MODEL_IDS: Dict[str, int] = {name: i for i, (name, _) in CAMERA_MODELS.items()}
#: Models that map to a pinhole + OpenCV ``(k1, k2, p1, p2, k3)`` camera (FULL_OPENCV only when k4..k6 = 0).
SUPPORTED_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")
#: Models with one focal length ``f, cx, cy, ...``; every other model starts ``fx, fy, cx, cy, ...``.
_SINGLE_FOCAL_MODELS = ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE")


@dataclass(frozen=True)
class ColmapCamera:
    """One COLMAP camera: ``model`` name, size in pixels and the model's parameters."""

    id: int
    model: str
    width: int
    height: int
    params: Tuple[float, ...]


@dataclass(frozen=True, eq=False)
class ColmapImage:
    """One registered image.

    Attributes:
        qvec: ``[4]`` float64 world-to-camera rotation as ``(qw, qx, qy, qz)``.
        tvec: ``[3]`` float64 world-to-camera translation (OpenCV camera frame).
        xys: ``[P, 2]`` float64 keypoint pixel coordinates.
        point3d_ids: ``[P]`` int64 id of the observed 3D point, ``-1`` for none.
    """

    id: int
    qvec: np.ndarray
    tvec: np.ndarray
    camera_id: int
    name: str
    xys: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    point3d_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ColmapImage):
            return NotImplemented
        return (
            self.id == other.id
            and self.camera_id == other.camera_id
            and self.name == other.name
            and np.array_equal(self.qvec, other.qvec)
            and np.array_equal(self.tvec, other.tvec)
            and np.array_equal(self.xys, other.xys)
            and np.array_equal(self.point3d_ids, other.point3d_ids)
        )

    def w2c(self) -> np.ndarray:
        """``[3, 4]`` float64 OpenCV world-to-camera ``[R | t]``."""
        return np.concatenate([qvec_to_rotmat(self.qvec), np.asarray(self.tvec, np.float64).reshape(3, 1)], axis=1)

    def c2w(self) -> np.ndarray:
        """``[3, 4]`` float64 OpenCV camera-to-world ``[R^T | -R^T t]``."""
        R = qvec_to_rotmat(self.qvec)
        t = np.asarray(self.tvec, np.float64)
        return np.concatenate([R.T, (-R.T @ t).reshape(3, 1)], axis=1)


@dataclass(frozen=True, eq=False)
class ColmapPoints:
    """Sparse 3D points with tracks stored flat (``track_lengths`` splits the track arrays).

    Attributes:
        ids: ``[P]`` int64 point ids.
        xyz: ``[P, 3]`` float64 world positions.
        rgb: ``[P, 3]`` uint8 colours.
        errors: ``[P]`` float64 mean reprojection errors.
        track_lengths: ``[P]`` int64 observations per point.
        track_image_ids: ``[T]`` int64 image id of each observation (``T = sum(track_lengths)``).
        track_point2d_idx: ``[T]`` int64 keypoint index of each observation.
    """

    ids: np.ndarray
    xyz: np.ndarray
    rgb: np.ndarray
    errors: np.ndarray
    track_lengths: np.ndarray
    track_image_ids: np.ndarray
    track_point2d_idx: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ColmapPoints):
            return NotImplemented
        names = ("ids", "xyz", "rgb", "errors", "track_lengths", "track_image_ids", "track_point2d_idx")
        return all(np.array_equal(getattr(self, n), getattr(other, n)) for n in names)

    @staticmethod
    def create(
        xyz: np.ndarray,
        rgb: Optional[np.ndarray] = None,
        ids: Optional[np.ndarray] = None,
        errors: Optional[np.ndarray] = None,
    ) -> "ColmapPoints":
        """Points without tracks (ids ``1..P``, grey colour and zero error by default)."""
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        n = xyz.shape[0]
        return ColmapPoints(
            ids=np.arange(1, n + 1, dtype=np.int64) if ids is None else np.asarray(ids, np.int64),
            xyz=xyz,
            rgb=np.full((n, 3), 128, np.uint8) if rgb is None else np.asarray(rgb, np.uint8).reshape(n, 3),
            errors=np.zeros(n) if errors is None else np.asarray(errors, np.float64),
            track_lengths=np.zeros(n, np.int64),
            track_image_ids=np.zeros(0, np.int64),
            track_point2d_idx=np.zeros(0, np.int64),
        )


@dataclass(frozen=True)
class ColmapModel:
    """A sparse model: cameras and images keyed by id, and the points (``None`` if the file is absent)."""

    cameras: Dict[int, ColmapCamera]
    images: Dict[int, ColmapImage]
    points: Optional[ColmapPoints] = None


# ----------------------------------------------------------------------------- validation


def check_camera(camera: "ColmapCamera", where: str) -> None:
    """Refuse a camera with an implausible size or parameters (non-finite, focal <= 0, far-off centre)."""
    check_image_size(camera.width, camera.height, f"{where}: camera {camera.id}")
    params = np.asarray(camera.params, np.float64)
    check_finite_array(params, f"{where}: camera {camera.id} params", max_abs=MAX_FOCAL_PIXELS)
    p = camera.params
    fx, fy, cx, cy = (p[0], p[0], p[1], p[2]) if camera.model in _SINGLE_FOCAL_MODELS else p[:4]
    check_pinhole(fx, fy, cx, cy, camera.width, camera.height, f"{where}: camera {camera.id} ({camera.model})")
    extra = np.asarray(p[3:] if camera.model in _SINGLE_FOCAL_MODELS else p[4:], np.float64)
    check_finite_array(extra, f"{where}: camera {camera.id} distortion params", max_abs=MAX_ABS_COORDINATE)


def check_image_pose(qvec: np.ndarray, tvec: np.ndarray, where: str) -> None:
    """Refuse a non-finite or zero quaternion and a non-finite or implausibly large translation."""
    check_finite_array(qvec, f"{where}: quaternion (QW QX QY QZ)", max_abs=MAX_ABS_COORDINATE)
    if float(np.linalg.norm(qvec)) < 1e-8:
        raise InputError(f"{where}: quaternion (QW QX QY QZ) is zero ({np.asarray(qvec).tolist()}); it must have norm > 0")
    check_finite_array(tvec, f"{where}: translation (TX TY TZ)", max_abs=MAX_ABS_COORDINATE)


def check_image_name(name: str, where: str) -> None:
    """Refuse an empty image name or one with control characters (a NUL cannot be a file name)."""
    if not name or any(ord(ch) < 32 for ch in name):
        raise InputError(f"{where}: image name {name!r} is empty or has control characters")


def _first_bad_row(bad: np.ndarray) -> int:
    return int(np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))[0])


def check_points(points: "ColmapPoints", where: str) -> None:
    """Refuse non-finite or implausibly large positions and duplicate point ids (names the point id)."""
    xyz = points.xyz
    bad = ~np.isfinite(xyz) | (np.abs(np.nan_to_num(xyz, nan=0.0)) > MAX_ABS_COORDINATE)
    if bad.any():
        k = _first_bad_row(bad)
        raise InputError(
            f"{where}: point {int(points.ids[k])} (#{k}): position {xyz[k].tolist()} is not finite or beyond "
            f"+-{MAX_ABS_COORDINATE:g}"
        )
    uniq, counts = np.unique(points.ids, return_counts=True)
    if (counts > 1).any():
        raise InputError(f"{where}: point id {int(uniq[counts > 1][0])} appears {int(counts[counts > 1][0])} times")


def _add_unique(table: Dict[int, Any], key: int, value: Any, where: str, what: str) -> None:
    if key in table:
        raise InputError(f"{where}: {what} id {key} appears twice")
    table[key] = value


# ----------------------------------------------------------------------------- rotations


def qvec_to_rotmat(qvec: np.ndarray) -> np.ndarray:
    """``[3, 3]`` rotation of the (normalised) Hamilton quaternion ``(qw, qx, qy, qz)``."""
    q = np.asarray(qvec, dtype=np.float64).reshape(4)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"quaternion must be finite and non-zero, got {q.tolist()}")
    w, x, y, z = q / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(qw, qx, qy, qz)`` with ``qw >= 0`` of a rotation ``R [3, 3]``.

    Uses the symmetric-matrix eigenvector method (as COLMAP does), robust near 180 degrees.
    """
    R = np.asarray(R, dtype=np.float64).reshape(3, 3)
    (r00, r01, r02), (r10, r11, r12), (r20, r21, r22) = R
    K = np.array(
        [
            [r00 - r11 - r22, 0.0, 0.0, 0.0],
            [r01 + r10, r11 - r00 - r22, 0.0, 0.0],
            [r02 + r20, r12 + r21, r22 - r00 - r11, 0.0],
            [r21 - r12, r02 - r20, r10 - r01, r00 + r11 + r22],
        ]
    ) / 3.0
    evals, evecs = np.linalg.eigh(K)
    x, y, z, w = evecs[:, np.argmax(evals)]
    q = np.array([w, x, y, z])
    return -q if q[0] < 0 else q


# ----------------------------------------------------------------------------- model -> langfield cameras


def camera_intrinsics(camera: ColmapCamera, source: str = "cameras") -> Tuple[np.ndarray, np.ndarray]:
    """``(K [3, 3], dist [5])`` of a COLMAP camera; ``dist`` in OpenCV order ``(k1, k2, p1, p2, k3)``.

    Raises ``ValueError`` naming ``source``, the camera id and the model for models other than
    :data:`SUPPORTED_MODELS` (fisheye, FOV, thin-prism ...), which a pinhole + Brown-Conrady camera
    cannot represent.
    """
    p = [float(v) for v in camera.params]
    m = camera.model
    expected = CAMERA_MODELS.get(CAMERA_MODEL_IDS.get(m, -1), (m, None))[1]
    if expected is not None and len(p) != expected:
        raise InputError(f"{source}: camera {camera.id} ({m}) has {len(p)} params, expected {expected}")
    dist = np.zeros(5)
    if m == "SIMPLE_PINHOLE":
        fx = fy = p[0]
        cx, cy = p[1], p[2]
    elif m == "PINHOLE":
        fx, fy, cx, cy = p
    elif m == "SIMPLE_RADIAL":
        fx = fy = p[0]
        cx, cy, dist[0] = p[1], p[2], p[3]
    elif m == "RADIAL":
        fx = fy = p[0]
        cx, cy, dist[0], dist[1] = p[1], p[2], p[3], p[4]
    elif m == "OPENCV":
        fx, fy, cx, cy = p[:4]
        dist[:4] = p[4:8]
    elif m == "FULL_OPENCV":
        fx, fy, cx, cy = p[:4]
        k1, k2, p1, p2, k3, k4, k5, k6 = p[4:12]
        if k4 != 0 or k5 != 0 or k6 != 0:
            raise InputError(
                f"{source}: camera {camera.id} uses COLMAP model FULL_OPENCV with rational terms "
                f"k4..k6 = {k4}, {k5}, {k6}; only (k1, k2, p1, p2, k3) distortion is supported"
            )
        dist[:] = (k1, k2, p1, p2, k3)
    else:
        raise InputError(
            f"{source}: camera {camera.id} uses unsupported COLMAP camera model {m!r}; "
            f"supported: {', '.join(SUPPORTED_MODELS)}"
        )
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return K, dist


def find_model_dir(root: PathLike) -> Optional[Path]:
    """First of ``root/sparse/0``, ``root/sparse``, ``root``, ``root/colmap/sparse/0`` holding a model.

    A model folder has ``cameras`` and ``images`` files (``.bin`` or ``.txt``). Returns ``None`` if none.
    """
    root = Path(root)
    for d in (root / "sparse" / "0", root / "sparse", root, root / "colmap" / "sparse" / "0"):
        if model_file(d, "cameras") is not None and model_file(d, "images") is not None:
            return d
    return None


def model_file(folder: PathLike, stem: str) -> Optional[Path]:
    """``folder/stem.bin`` if present, else ``folder/stem.txt`` if present, else ``None``."""
    folder = Path(folder)
    for ext in (".bin", ".txt"):
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


# ----------------------------------------------------------------------------- text format


def _text_lines(path: Path):
    """``(line_number, stripped_line)`` of non-empty, non-comment lines."""
    text = read_utf8_text(path, "COLMAP file")
    for i, line in enumerate(text.split("\n"), start=1):
        s = line.strip()
        if s and not s.startswith("#"):
            yield i, s


def _parse_error(path: Path, lineno: int, what: str, detail: str) -> InputError:
    return InputError(f"{path}, line {lineno}: cannot parse {what}: {detail}")


def _parse_int(token: str, path: Path, lineno: int, record: str, what: str, lo: int, hi: int) -> int:
    """``int(token)`` within ``[lo, hi]``; the message names the file, line, ``record`` and field ``what``."""
    try:
        v = int(token)
    except ValueError:
        raise _parse_error(path, lineno, record, f"{what}: expected an integer, got {token!r}") from None
    if not lo <= v <= hi:
        raise InputError(f"{path}, line {lineno}: {record} {what} must be in [{lo}, {hi}], got {v}")
    return v


def _parse_floats(tokens: List[str], path: Path, lineno: int, record: str, what: str) -> np.ndarray:
    try:
        return np.array([float(v) for v in tokens], dtype=np.float64)
    except ValueError as err:
        raise _parse_error(path, lineno, record, f"{what}: {err}") from None


_INT32_MAX = 2**31 - 1


def read_cameras_text(path: PathLike) -> Dict[int, ColmapCamera]:
    """Read ``cameras.txt``: ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]`` per line (validated, see the module)."""
    path = Path(path)
    cams: Dict[int, ColmapCamera] = {}
    for lineno, line in _text_lines(path):
        e = line.split()
        if len(e) < 4:
            expected = "expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]'"
            raise _parse_error(path, lineno, "camera", f"{expected}, got {line[:80]!r}")
        model = e[1]
        if model not in CAMERA_MODEL_IDS:
            raise InputError(f"{path}, line {lineno}: unknown COLMAP camera model {model!r}")
        cam_id = _parse_int(e[0], path, lineno, "camera", "CAMERA_ID", 0, _INT32_MAX)
        width = _parse_int(e[2], path, lineno, "camera", "WIDTH", 1, 2**63)
        height = _parse_int(e[3], path, lineno, "camera", "HEIGHT", 1, 2**63)
        params = _parse_floats(e[4:], path, lineno, "camera", "PARAMS[]")
        n = CAMERA_MODELS[CAMERA_MODEL_IDS[model]][1]
        if len(params) != n:
            raise InputError(f"{path}, line {lineno}: camera model {model} needs {n} params, got {len(params)}")
        cam = ColmapCamera(cam_id, model, width, height, tuple(float(v) for v in params))
        check_camera(cam, f"{path}, line {lineno}")
        _add_unique(cams, cam.id, cam, f"{path}, line {lineno}", "camera")
    return cams


def read_images_text(path: PathLike) -> Dict[int, ColmapImage]:
    """Read ``images.txt``: a header line per image followed by its (possibly empty) points line."""
    path = Path(path)
    images: Dict[int, ColmapImage] = {}
    lines = read_utf8_text(path, "COLMAP file").split("\n")
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        lineno = i + 1
        i += 1
        if not line or line.startswith("#"):
            continue
        e = line.split()
        if len(e) < 10:
            raise _parse_error(
                path, lineno, "image", f"expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME', got {line[:80]!r}"
            )
        pts_line = lines[i].strip() if i < len(lines) else ""
        i += 1
        image_id = _parse_int(e[0], path, lineno, "image", "IMAGE_ID", 0, _INT32_MAX)
        qvec = _parse_floats(e[1:5], path, lineno, "image", "QW QX QY QZ")
        tvec = _parse_floats(e[5:8], path, lineno, "image", "TX TY TZ")
        camera_id = _parse_int(e[8], path, lineno, "image", "CAMERA_ID", 0, _INT32_MAX)
        name = " ".join(e[9:])
        where = f"{path}, line {lineno}: image {image_id}"
        check_image_pose(qvec, tvec, where)
        check_image_name(name, where)
        vals = pts_line.split()
        if len(vals) % 3 != 0:
            what = f"the points of image {image_id}"
            raise _parse_error(path, lineno + 1, what, f"{len(vals)} values, not a multiple of 3")
        try:
            xs = np.array([float(v) for v in vals[0::3]], dtype=np.float64)
            ys = np.array([float(v) for v in vals[1::3]], dtype=np.float64)
            ids = np.array([int(v) for v in vals[2::3]], dtype=np.int64)
        except (ValueError, OverflowError) as err:
            raise _parse_error(path, lineno + 1, f"the points of image {image_id}", str(err)) from None
        image = ColmapImage(
            id=image_id,
            qvec=qvec,
            tvec=tvec,
            camera_id=camera_id,
            name=name,
            xys=np.stack([xs, ys], axis=-1).reshape(-1, 2),
            point3d_ids=ids,
        )
        _add_unique(images, image_id, image, f"{path}, line {lineno}", "image")
    return images


def read_points3d_text(path: PathLike) -> ColmapPoints:
    """Read ``points3D.txt``: ``POINT3D_ID X Y Z R G B ERROR TRACK[]`` per line (validated, see the module)."""
    path = Path(path)
    ids: List[int] = []
    xyz: List[List[float]] = []
    rgb: List[List[int]] = []
    errors: List[float] = []
    lengths: List[int] = []
    track: List[int] = []
    linenos: List[int] = []
    for lineno, line in _text_lines(path):
        e = line.split()
        if len(e) < 8 or (len(e) - 8) % 2 != 0:
            raise _parse_error(path, lineno, "point", f"expected 'POINT3D_ID X Y Z R G B ERROR TRACK[]', got {line[:80]!r}")
        ids.append(_parse_int(e[0], path, lineno, "point", "POINT3D_ID", 0, 2**63 - 1))
        xyz.append(_parse_floats(e[1:4], path, lineno, "point", "X Y Z").tolist())
        rgb.append([_parse_int(v, path, lineno, "point", f"colour {c}", 0, 255) for c, v in zip("RGB", e[4:7])])
        errors.append(float(_parse_floats(e[7:8], path, lineno, "point", "ERROR")[0]))
        try:
            t = [int(v) for v in e[8:]]
        except ValueError as err:
            raise _parse_error(path, lineno, "the track (IMAGE_ID, POINT2D_IDX)", str(err)) from None
        if any(not -(2**31) <= v <= _INT32_MAX for v in t):
            raise InputError(f"{path}, line {lineno}: track entries must be 32-bit integers")
        lengths.append(len(t) // 2)
        track.extend(t)
        linenos.append(lineno)
    tr = np.array(track, dtype=np.int64).reshape(-1, 2)
    points = ColmapPoints(
        ids=np.array(ids, dtype=np.int64),
        xyz=np.array(xyz, dtype=np.float64).reshape(-1, 3),
        rgb=np.array(rgb, dtype=np.uint8).reshape(-1, 3),
        errors=np.array(errors, dtype=np.float64),
        track_lengths=np.array(lengths, dtype=np.int64),
        track_image_ids=tr[:, 0].copy(),
        track_point2d_idx=tr[:, 1].copy(),
    )
    bad = ~np.isfinite(points.xyz) | (np.abs(np.nan_to_num(points.xyz, nan=0.0)) > MAX_ABS_COORDINATE)
    if bad.any():
        k = _first_bad_row(bad)
        raise InputError(
            f"{path}, line {linenos[k]}: point {ids[k]}: position (X Y Z) {xyz[k]} is not finite or beyond "
            f"+-{MAX_ABS_COORDINATE:g}"
        )
    check_points(points, str(path))
    return points


def _fmt(v: float) -> str:
    return repr(float(v))


def write_cameras_text(cameras: Dict[int, ColmapCamera], path: PathLike) -> None:
    """Write ``cameras.txt``."""
    lines = [
        "# Camera list with one line of data per camera:",
        "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
        f"# Number of cameras: {len(cameras)}",
    ]
    for cam in cameras.values():
        lines.append(" ".join([str(cam.id), cam.model, str(cam.width), str(cam.height), *map(_fmt, cam.params)]))
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_images_text(images: Dict[int, ColmapImage], path: PathLike) -> None:
    """Write ``images.txt`` (two lines per image)."""
    lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
        f"# Number of images: {len(images)}",
    ]
    for im in images.values():
        lines.append(" ".join([str(im.id), *map(_fmt, im.qvec), *map(_fmt, im.tvec), str(im.camera_id), im.name]))
        pts = []
        for (x, y), pid in zip(np.asarray(im.xys).reshape(-1, 2), np.asarray(im.point3d_ids).reshape(-1)):
            pts.extend([_fmt(x), _fmt(y), str(int(pid))])
        lines.append(" ".join(pts))
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_points3d_text(points: ColmapPoints, path: PathLike) -> None:
    """Write ``points3D.txt``."""
    lines = [
        "# 3D point list with one line of data per point:",
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
        f"# Number of points: {len(points)}",
    ]
    offsets = np.concatenate([[0], np.cumsum(points.track_lengths)])
    for k in range(len(points)):
        a, b = offsets[k], offsets[k + 1]
        track = []
        for img_id, idx in zip(points.track_image_ids[a:b], points.track_point2d_idx[a:b]):
            track.extend([str(int(img_id)), str(int(idx))])
        lines.append(
            " ".join(
                [
                    str(int(points.ids[k])),
                    *map(_fmt, points.xyz[k]),
                    *(str(int(c)) for c in points.rgb[k]),
                    _fmt(points.errors[k]),
                    *track,
                ]
            )
        )
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- binary format


class _Reader:
    """Little-endian cursor over a file's bytes that reports truncation with the file name."""

    def __init__(self, path: Path):
        check_regular_file(path, "COLMAP file")
        check_memory(3 * path.stat().st_size, f"{path}: COLMAP file", hint="is this really the intended file?")
        self.path = path
        self.data = path.read_bytes()
        self.pos = 0

    def unpack(self, fmt: str, what: str):
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise InputError(f"{self.path}: file truncated at byte {self.pos} while reading {what}")
        out = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return out

    def check_count(self, count: int, min_bytes_each: int, what: str) -> None:
        """Refuse a declared ``count`` of records that the rest of the file cannot hold (before allocating)."""
        left = len(self.data) - self.pos
        if count * min_bytes_each > left:
            raise InputError(
                f"{self.path}: declares {count} {what} (at least {count * min_bytes_each} bytes) at byte {self.pos}, "
                f"but only {left} bytes follow: the file is truncated or corrupt"
            )

    def array(self, dtype, count: int, what: str) -> np.ndarray:
        dt = np.dtype(dtype)
        self.check_count(count, dt.itemsize, what)
        out = np.frombuffer(self.data, dtype=dt, count=count, offset=self.pos).copy()
        self.pos += dt.itemsize * count
        return out

    def cstring(self, what: str) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise InputError(f"{self.path}: file truncated at byte {self.pos} while reading {what}")
        raw = self.data[self.pos : end]
        try:
            s = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{self.path}: {what} at byte {self.pos} is not valid UTF-8 ({raw[:40]!r})") from None
        self.pos = end + 1
        return s

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise InputError(f"{self.path}: {len(self.data) - self.pos} unexpected trailing bytes at byte {self.pos}")


#: Lower bounds of a record's size: a camera's fixed part, an image with a 1-character name and no points.
_MIN_CAMERA_BYTES = struct.calcsize("<iiQQ")
_MIN_IMAGE_BYTES = struct.calcsize("<idddddddi") + 2 + 8


def read_cameras_binary(path: PathLike) -> Dict[int, ColmapCamera]:
    """Read ``cameras.bin`` (validated, see the module)."""
    r = _Reader(Path(path))
    (num,) = r.unpack("Q", "the camera count")
    r.check_count(num, _MIN_CAMERA_BYTES, "cameras")
    cams: Dict[int, ColmapCamera] = {}
    for k in range(num):
        at = r.pos
        cam_id, model_id, width, height = r.unpack("iiQQ", f"camera #{k}")
        where = f"{r.path}: camera #{k} at byte {at}"
        if model_id not in CAMERA_MODELS:
            raise InputError(f"{where}: camera {cam_id} has unknown COLMAP camera model id {model_id}")
        name, n = CAMERA_MODELS[model_id]
        params = r.unpack("d" * n, f"the params of camera {cam_id}")
        cam = ColmapCamera(cam_id, name, int(width), int(height), tuple(float(v) for v in params))
        check_camera(cam, where)
        _add_unique(cams, cam_id, cam, where, "camera")
    r.finish()
    return cams


_POINT2D_DTYPE = np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<i8")])


def read_images_binary(path: PathLike) -> Dict[int, ColmapImage]:
    """Read ``images.bin`` (validated, see the module)."""
    r = _Reader(Path(path))
    (num,) = r.unpack("Q", "the image count")
    r.check_count(num, _MIN_IMAGE_BYTES, "images")
    images: Dict[int, ColmapImage] = {}
    for k in range(num):
        at = r.pos
        vals = r.unpack("idddddddi", f"image #{k}")
        image_id = vals[0]
        where = f"{r.path}: image #{k} (id {image_id}) at byte {at}"
        qvec = np.array(vals[1:5], dtype=np.float64)
        tvec = np.array(vals[5:8], dtype=np.float64)
        check_image_pose(qvec, tvec, where)
        name = r.cstring(f"the name of image {image_id}")
        check_image_name(name, where)
        (num_pts,) = r.unpack("Q", f"the point count of image {image_id}")
        pts = r.array(_POINT2D_DTYPE, num_pts, f"2D points of image {image_id}")
        image = ColmapImage(
            id=image_id,
            qvec=qvec,
            tvec=tvec,
            camera_id=vals[8],
            name=name,
            xys=np.stack([pts["x"], pts["y"]], axis=-1).astype(np.float64).reshape(-1, 2),
            point3d_ids=pts["id"].astype(np.int64),
        )
        _add_unique(images, image_id, image, where, "image")
    r.finish()
    return images


_POINT3D_HEAD = struct.Struct("<QdddBBBdQ")


def read_points3d_binary(path: PathLike) -> ColmapPoints:
    """Read ``points3D.bin`` (validated, see the module)."""
    r = _Reader(Path(path))
    (num,) = r.unpack("Q", "the point count")
    r.check_count(num, _POINT3D_HEAD.size, "points")
    data = r.data
    size = _POINT3D_HEAD.size
    ids = np.empty(num, np.int64)
    xyz = np.empty((num, 3), np.float64)
    rgb = np.empty((num, 3), np.uint8)
    errors = np.empty(num, np.float64)
    lengths = np.empty(num, np.int64)
    track_offsets = np.empty(num, np.int64)
    pos = r.pos
    for k in range(num):
        if pos + size > len(data):
            raise InputError(f"{r.path}: file truncated at byte {pos} while reading point #{k}")
        pid, x, y, z, cr, cg, cb, err, tl = _POINT3D_HEAD.unpack_from(data, pos)
        if pid > 2**63 - 1:
            raise InputError(f"{r.path}: point #{k} at byte {pos}: id {pid} does not fit in int64")
        pos += size
        ids[k] = pid
        xyz[k] = (x, y, z)
        rgb[k] = (cr, cg, cb)
        errors[k] = err
        track_offsets[k] = pos
        if pos + 8 * tl > len(data):
            raise InputError(
                f"{r.path}: point {pid} (#{k}) declares a track of {tl} observations at byte {pos}, but only "
                f"{len(data) - pos} bytes follow: the file is truncated or corrupt"
            )
        lengths[k] = tl
        pos += 8 * tl
    r.pos = pos
    r.finish()
    total = int(lengths.sum())
    if total:
        # Gather every track's int32 pairs in one vectorised step.
        starts = np.repeat(track_offsets, lengths) + 8 * (np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths))
        buf = np.frombuffer(data, dtype=np.uint8)
        pairs = buf[starts[:, None] + np.arange(8)[None, :]].copy().view("<i4").reshape(total, 2)
    else:
        pairs = np.zeros((0, 2), np.int32)
    points = ColmapPoints(
        ids=ids,
        xyz=xyz,
        rgb=rgb,
        errors=errors,
        track_lengths=lengths,
        track_image_ids=pairs[:, 0].astype(np.int64),
        track_point2d_idx=pairs[:, 1].astype(np.int64),
    )
    check_points(points, str(r.path))
    return points


def write_cameras_binary(cameras: Dict[int, ColmapCamera], path: PathLike) -> None:
    """Write ``cameras.bin``."""
    out = [struct.pack("<Q", len(cameras))]
    for cam in cameras.values():
        if cam.model not in CAMERA_MODEL_IDS:
            raise ValueError(f"camera {cam.id}: unknown COLMAP camera model {cam.model!r}")
        mid = CAMERA_MODEL_IDS[cam.model]
        n = CAMERA_MODELS[mid][1]
        if len(cam.params) != n:
            raise ValueError(f"camera {cam.id}: model {cam.model} needs {n} params, got {len(cam.params)}")
        out.append(struct.pack("<iiQQ", cam.id, mid, cam.width, cam.height))
        out.append(struct.pack("<" + "d" * n, *cam.params))
    Path(path).write_bytes(b"".join(out))


def write_images_binary(images: Dict[int, ColmapImage], path: PathLike) -> None:
    """Write ``images.bin``."""
    out = [struct.pack("<Q", len(images))]
    for im in images.values():
        out.append(struct.pack("<idddddddi", im.id, *map(float, im.qvec), *map(float, im.tvec), im.camera_id))
        out.append(im.name.encode("utf-8") + b"\x00")
        xys = np.asarray(im.xys, np.float64).reshape(-1, 2)
        pts = np.empty(xys.shape[0], dtype=_POINT2D_DTYPE)
        pts["x"], pts["y"] = xys[:, 0], xys[:, 1]
        pts["id"] = np.asarray(im.point3d_ids, np.int64).reshape(-1)
        out.append(struct.pack("<Q", xys.shape[0]))
        out.append(pts.tobytes())
    Path(path).write_bytes(b"".join(out))


def write_points3d_binary(points: ColmapPoints, path: PathLike) -> None:
    """Write ``points3D.bin``."""
    out = [struct.pack("<Q", len(points))]
    offsets = np.concatenate([[0], np.cumsum(points.track_lengths)])
    track = np.stack([points.track_image_ids, points.track_point2d_idx], axis=-1).astype("<i4")
    for k in range(len(points)):
        out.append(
            _POINT3D_HEAD.pack(
                int(points.ids[k]),
                *map(float, points.xyz[k]),
                *map(int, points.rgb[k]),
                float(points.errors[k]),
                int(points.track_lengths[k]),
            )
        )
        out.append(track[offsets[k] : offsets[k + 1]].tobytes())
    Path(path).write_bytes(b"".join(out))


# ----------------------------------------------------------------------------- whole models


def read_cameras(path: PathLike) -> Dict[int, ColmapCamera]:
    """``cameras.bin`` or ``cameras.txt``, chosen by the suffix."""
    return read_cameras_binary(path) if Path(path).suffix == ".bin" else read_cameras_text(path)


def read_images(path: PathLike) -> Dict[int, ColmapImage]:
    """``images.bin`` or ``images.txt``, chosen by the suffix."""
    return read_images_binary(path) if Path(path).suffix == ".bin" else read_images_text(path)


def read_points3d(path: PathLike) -> ColmapPoints:
    """``points3D.bin`` or ``points3D.txt``, chosen by the suffix."""
    return read_points3d_binary(path) if Path(path).suffix == ".bin" else read_points3d_text(path)


def read_model(folder: PathLike) -> ColmapModel:
    """Read a model folder (``.bin`` preferred over ``.txt`` per file); ``points3D`` may be absent."""
    folder = Path(folder)
    cam_file = model_file(folder, "cameras")
    img_file = model_file(folder, "images")
    if cam_file is None or img_file is None:
        missing = "cameras" if cam_file is None else "images"
        raise FileNotFoundError(f"{folder}: not a COLMAP model: no {missing}.bin or {missing}.txt")
    pts_file = model_file(folder, "points3D")
    cameras = read_cameras(cam_file)
    images = read_images(img_file)
    for im in images.values():
        if im.camera_id not in cameras:
            raise InputError(f"{img_file}: image {im.id} ({im.name}) refers to camera {im.camera_id}, not in {cam_file}")
    return ColmapModel(cameras=cameras, images=images, points=None if pts_file is None else read_points3d(pts_file))


def write_model(model: ColmapModel, folder: PathLike, ext: str = ".bin") -> None:
    """Write ``cameras``, ``images`` (and ``points3D`` when present) with extension ``.bin`` or ``.txt``."""
    if ext not in (".bin", ".txt"):
        raise ValueError(f"ext must be '.bin' or '.txt', got {ext!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if ext == ".bin":
        write_cameras_binary(model.cameras, folder / "cameras.bin")
        write_images_binary(model.images, folder / "images.bin")
        if model.points is not None:
            write_points3d_binary(model.points, folder / "points3D.bin")
    else:
        write_cameras_text(model.cameras, folder / "cameras.txt")
        write_images_text(model.images, folder / "images.txt")
        if model.points is not None:
            write_points3d_text(model.points, folder / "points3D.txt")


# ----------------------------------------------------------------------------- dense (MVS) arrays

#: The header of a dense array is at most this long (``"131072&131072&4&"`` is 16 bytes).
_DENSE_HEADER_MAX = 64


def read_dense_array(path: PathLike) -> np.ndarray:
    """Read a COLMAP dense array (``stereo/depth_maps/*.bin``, ``stereo/normal_maps/*.bin``) as ``float32 [H, W, C]``.

    Format (COLMAP's ``mvs::Mat``): an ASCII header ``"W&H&C&"``, then ``W * H * C`` little-endian float32
    values, channel by channel, each channel row by row. A depth map (``C = 1``) holds the camera z-depth
    of each pixel of the *undistorted* image in model units, 0 where patch-match stereo found none.

    Raises:
        InputError: naming the file, for a bad header, a size outside ``[1, MAX_IMAGE_SIDE]``, a
            channel count outside 1..4, or data that does not have exactly the header's size.
    """
    path = check_regular_file(path, "COLMAP dense array")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(_DENSE_HEADER_MAX)
    fields = head.split(b"&")
    if len(fields) < 4:
        raise InputError(f"{path}: not a COLMAP dense array (expected a header 'width&height&channels&', got {head[:24]!r})")
    try:
        width, height, channels = (int(x.decode("ascii")) for x in fields[:3])
    except (UnicodeDecodeError, ValueError):
        raise InputError(f"{path}: not a COLMAP dense array (header {head[:24]!r} is not 'width&height&channels&')") from None
    width, height = check_image_size(width, height, f"{path}: dense array header")
    if not 1 <= channels <= 4:
        raise InputError(f"{path}: dense array header says {channels} channels; expected 1 (depth) to 4")
    offset = sum(len(x) + 1 for x in fields[:3])
    need = width * height * channels * 4
    if size - offset != need:
        raise InputError(
            f"{path}: dense array of {width}x{height}x{channels} float32 needs {need} bytes after its "
            f"{offset}-byte header, the file has {size - offset} (truncated or not a COLMAP array)"
        )
    check_memory(need, f"{path}: dense array {width}x{height}x{channels}")
    data = np.fromfile(path, dtype="<f4", offset=offset).reshape(channels, height, width)
    return np.ascontiguousarray(data.transpose(1, 2, 0)).astype(np.float32)


def write_dense_array(array: np.ndarray, path: PathLike) -> None:
    """Write ``array`` (``[H, W]`` or ``[H, W, C]``) as a COLMAP dense array (:func:`read_dense_array`)."""
    array = np.asarray(array, dtype="<f4")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or not 1 <= array.shape[2] <= 4:
        raise ValueError(f"write_dense_array: expected [H, W] or [H, W, C<=4], got {array.shape}")
    h, w, c = array.shape
    Path(path).write_bytes(f"{w}&{h}&{c}&".encode("ascii") + np.ascontiguousarray(array.transpose(2, 0, 1)).tobytes())
