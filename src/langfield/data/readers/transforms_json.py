"""``transforms*.json`` scenes: Blender (NeRF-synthetic), nerfstudio and instant-ngp flavours.

Registered as ``"transforms"`` (:mod:`langfield.data.readers.registry`): :func:`is_transforms_scene`
recognises it, :func:`load_transforms` loads it.

Layouts:

* **Blender** (``layout="blender"``): one file per split, ``transforms_{train,val,test}.json``, as in
  NeRF-synthetic. The original world frame is kept (standard protocol: ``scene_box = [-1.5, 1.5]^3``,
  ``near = 2``, ``far = 6``, bounded) when every camera centre lies between ``near`` and ``far``
  from the origin, as in all NeRF-synthetic scenes. Otherwise the scene is moved so the cameras'
  :func:`~langfield.geometry.normalize.focus_point` is the origin and scaled so the mean camera
  distance is 4 (the NeRF-synthetic value), and the same box and bounds are used. A file that
  states its own bounds (top-level ``scene_box: [[min], [max]]``, optionally ``near`` and ``far``;
  :func:`~langfield.data.procedural.write_procedural_dataset` writes them) keeps its frame and
  those bounds instead (``near``/``far`` default to the cameras' distances to the box).
* **Single file** (``layout="single"``): one ``transforms.json`` (nerfstudio, instant-ngp). Frames
  are sorted by ``file_path``; splits come from the ``train_filenames`` / ``val_filenames`` /
  ``test_filenames`` lists when present, otherwise view ``i`` is a test view iff ``i % 8 == 0``
  (LLFF protocol). The scene is a real capture: normalised with
  :func:`~langfield.geometry.normalize.normalize_poses` (``"cameras"`` by default: camera centres in
  the unit ball), ``unbounded=True``, box and bounds from
  :func:`~langfield.data.loading.capture_bounds`.

Fields (frame-level values override top-level ones):

* intrinsics: ``fl_x`` [``fl_y``] [``cx cy``] or ``camera_angle_x`` [``camera_angle_y``]
  (``f = 0.5 W / tan(0.5 angle)``); ``w h`` (default: the image's size; must match it);
  ``cx, cy`` default to ``W / 2, H / 2`` (pixel centres at ``+0.5``, as in nerfstudio and COLMAP);
  distortion ``k1 k2 k3 p1 p2`` (``k4`` must be 0: not representable); ``camera_model`` if given must
  be a pinhole/OpenCV model.
* ``transform_matrix``: ``4x4`` (or ``3x4``) **OpenGL** camera-to-world (x right, y up, z back),
  converted with :func:`~langfield.geometry.conventions.opengl_to_opencv`.
* ``file_path``: relative to the json's folder, with or without extension (Blender omits ``.png``).
  It must stay inside that folder (no ``..`` escape, absolute path or symlink out of it) unless
  the caller passes ``allow_outside_paths=True``; the same ``file_path`` twice in one file is refused.
* ``semantic_path`` (optional, per frame): label-id PNG; top-level ``labels``: their names.
* depth (optional, per frame): a float ``.npy`` ``[H, W]`` of **ray distances** along the unit
  pixel-centre ray in the file's world units, 0 (or non-finite, or ``<= 0``) where there is no
  surface. Taken from the frame's ``depth_path`` when it has one, else from the file beside the
  image named ``<image stem>_depth.npy`` when it exists (what
  :func:`~langfield.data.procedural.write_procedural_dataset` and
  :func:`~langfield.data.toyworld.scene_dataset.write_toyworld_scene` write). All frames of a split
  have one or none does (else an :class:`~langfield._checks.InputError` naming the missing file); a
  map has its image's size or, at another resolution, its aspect ratio
  (:func:`~langfield.data.loading.load_depths`: larger maps averaged, smaller ones upsampled).
  Loaded into ``ImageSet.depths`` area-averaged over valid pixels only when the images are
  downscaled (:func:`~langfield.data.loading.resize_depth`) and
  multiplied by the uniform scale of ``world_transform``, so the distances are in the normalised
  frame like the cameras. Sensor depth in nerfstudio's form is read too: the frame's
  ``depth_file_path`` (a 16-bit PNG, float TIFF or numeric ``.npy`` of camera **z-depth**, 0 = none),
  times the top-level ``depth_unit_scale_factor`` (default 0.001: millimetres to metres, as in
  nerfstudio), turned into ray distances through the frame's camera (``z * |K^-1 (u, v, 1)|``,
  distortion removed) before any downscaling. A frame may not have both fields.
* ``mask_path`` (optional, per frame; nerfstudio's): a single-channel image (usually PNG; modes
  ``1``, ``L``, ``I;16``, ``I``) the size of the frame's image, relative to the json's folder and
  confined to it like ``file_path``: 0 (black) = ignore the pixel (moving people, the capture rig,
  sky), non-zero (white) = use it. All frames of a split have one or none does. Loaded into
  ``ImageSet.masks`` (``[C, H, W, 1]`` bool, True = use); when the images are downscaled a small
  pixel is usable only if every pixel it covers is (:func:`~langfield.data.loading.resize_mask`).
  Masks affect training only: evaluation uses the full images.
* ``objects`` (optional, top level): ``[{"name": str, "aabb": [[xmin, ymin, zmin], [xmax, ymax,
  zmax]]}, ...]``, the true world-axis-aligned boxes of named objects in the file's frame (a
  langfield extension, written by :func:`~langfield.data.procedural.write_procedural_dataset`);
  read into ``SceneDataset.object_boxes``, the ground truth of spatial questions.

Validation: every number is finite and plausible (:data:`~langfield._checks.MAX_ABS_COORDINATE`
for pose entries and distortion, :func:`~langfield._checks.check_pinhole` for intrinsics); errors
are :class:`~langfield._checks.InputError` naming the json file, the frame and the field.
"""

from __future__ import annotations

import math
import posixpath
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from langfield._checks import (
    MAX_ABS_COORDINATE,
    MAX_FOCAL_PIXELS,
    InputError,
    check_finite_number,
    check_finite_array,
    check_image_size,
    check_pinhole,
)
from langfield.data.dataset import ImageSet, SceneDataset
from langfield.data.loading import (
    PathLike,
    capture_bounds,
    check_downscale,
    check_splits_arg,
    check_unique,
    confine_path,
    every_nth_split,
    limit_indices,
    DepthFile,
    load_depths,
    load_images,
    load_masks,
    make_image_set,
    read_json,
    resolve_background,
)
from langfield.geometry.conventions import check_rigid, opengl_to_opencv
from langfield.geometry.normalize import (
    NORMALIZE_METHODS,
    focus_point,
    make_similarity,
    normalize_poses,
    similarity_scale,
    transform_poses,
)
from langfield.io.images import read_image_size
from langfield.types import Cameras

SPLITS = ("train", "val", "test")
#: NeRF-synthetic protocol bounds (world frame of the Blender scenes).
SYNTHETIC_SCENE_BOX = ((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5))
SYNTHETIC_NEAR = 2.0
SYNTHETIC_FAR = 6.0
SYNTHETIC_CAMERA_DISTANCE = 4.0
_EXTENSIONS = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")
#: Name ending of the depth map beside an image without a ``depth_path``: ``r_000.png`` -> ``r_000_depth.npy``.
DEPTH_SUFFIX = "_depth.npy"
#: nerfstudio's default ``depth_unit_scale_factor``: depth images in millimetres, worlds in metres.
DEFAULT_DEPTH_UNIT_SCALE = 1e-3
_PINHOLE_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")
_SPLIT_FILE = re.compile(r"^transforms_(train|val|test)\.json$")


@dataclass(frozen=True)
class TransformsSplit:
    """One split of a transforms scene: metadata only, no pixels.

    Attributes:
        json_path: the file the frames come from.
        cameras: ``C`` full-resolution cameras, OpenCV c2w in the file's (original) world frame.
        image_paths: resolved image file of each frame.
        file_paths: ``file_path`` as written in the json (for messages).
        semantic_paths: resolved label maps, or ``None`` when the frames have no ``semantic_path``.
        depth_files: the frames' resolved depth maps (:class:`~langfield.data.loading.DepthFile`: float
            ``.npy`` ray distances or sensor z-depth), or ``None`` when the split has none.
        mask_paths: the frames' resolved training masks (``mask_path``), or ``None`` when the split has none.
    """

    json_path: Path
    cameras: Cameras
    image_paths: List[Path]
    file_paths: List[str]
    semantic_paths: Optional[List[Path]] = None
    depth_files: Optional[List[DepthFile]] = None
    mask_paths: Optional[List[Path]] = None

    def __len__(self) -> int:
        return len(self.image_paths)

    def subset(self, indices: Sequence[int]) -> "TransformsSplit":
        idx = list(indices)
        return TransformsSplit(
            json_path=self.json_path,
            cameras=self.cameras[idx],
            image_paths=[self.image_paths[i] for i in idx],
            file_paths=[self.file_paths[i] for i in idx],
            semantic_paths=None if self.semantic_paths is None else [self.semantic_paths[i] for i in idx],
            depth_files=None if self.depth_files is None else [self.depth_files[i] for i in idx],
            mask_paths=None if self.mask_paths is None else [self.mask_paths[i] for i in idx],
        )


@dataclass(frozen=True)
class TransformsScene:
    """A parsed transforms scene.

    Attributes:
        name: scene name (the folder name).
        layout: ``"blender"`` (one json per split) or ``"single"`` (one transforms.json).
        splits: split name -> :class:`TransformsSplit`.
        labels: names of the semantic ids (top-level ``labels``) or ``None``.
        objects: ``{name: [2, 3] float64 (min, max)}`` from the top-level ``objects`` or ``None``.
        bounds: ``(scene_box [2, 3], near or None, far or None)`` stated by the file or ``None``.
    """

    name: str
    layout: str
    splits: Dict[str, TransformsSplit]
    labels: Optional[List[str]] = None
    objects: Optional[Dict[str, torch.Tensor]] = None
    bounds: Optional[Tuple[torch.Tensor, Optional[float], Optional[float]]] = None


# ----------------------------------------------------------------------------- field parsing


def _where(json_path: Path, index: Optional[int], file_path: Optional[str] = None) -> str:
    if index is None:
        return f"{json_path}"
    fp = f" ({file_path})" if file_path else ""
    return f"{json_path}: frame {index}{fp}"


def _number(value: Any, where: str, name: str) -> float:
    """A finite JSON number of plausible magnitude (strings and bools refused).

    The limit is :data:`MAX_FOCAL_PIXELS` for focal lengths, :data:`MAX_ABS_COORDINATE` otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise InputError(f"{where}: field {name!r} must be a finite number, got {value!r}")
    limit = MAX_FOCAL_PIXELS if name in ("fl_x", "fl_y") else MAX_ABS_COORDINATE
    if abs(float(value)) > limit:
        raise InputError(f"{where}: field {name!r} = {float(value):g} is implausibly large (limit +-{limit:g})")
    return float(value)


def _resolve_image(
    json_path: Path,
    file_path: str,
    where: str,
    what: str = "image",
    *,
    field: str = "file_path",
    allow_outside: bool = False,
) -> Path:
    base = json_path.parent
    if not file_path.strip():
        raise InputError(f"{where}: field {field!r} is empty")
    if "\x00" in file_path:
        raise InputError(f"{where}: field {field!r} contains a NUL character")
    cand = base / file_path
    tried = [cand]
    found = cand if cand.is_file() else None
    for ext in _EXTENSIONS:
        if found is not None:
            break
        p = Path(str(cand) + ext)
        if p.is_file():
            found = p
        tried.append(p)
    if found is not None:
        return confine_path(found, base, f"{where}: field {field!r}", allow_outside=allow_outside)
    if cand.is_dir():
        raise InputError(f"{where}: field {field!r} = {file_path!r} is a directory ({cand}), expected an {what} file")
    raise FileNotFoundError(
        f"{where}: {what} for file_path {file_path!r} not found (tried {tried[0]} and with extensions "
        f"{', '.join(_EXTENSIONS)})"
    )


def _depth_file(
    frame: Dict[str, Any], image: Path, json_path: Path, where: str, allow_outside: bool, unit_scale: float
) -> Tuple[DepthFile, bool]:
    """``(depth file, whether it exists)`` of a frame: its ``depth_path`` (float ray distances) or
    ``depth_file_path`` (nerfstudio's sensor z-depth, times ``unit_scale``), which must exist, else
    ``<image stem>_depth.npy`` beside the image."""
    if "depth_path" in frame and "depth_file_path" in frame:
        raise InputError(
            f"{where}: both 'depth_path' (float ray distances) and 'depth_file_path' (sensor z-depth) are given; keep one"
        )
    for field, convention in (("depth_path", "ray"), ("depth_file_path", "z")):
        if field not in frame:
            continue
        path = _frame_file(frame, field, "depth map", json_path, where, allow_outside)
        return DepthFile(path, convention, unit_scale if convention == "z" else 1.0), True
    beside = image.with_name(f"{image.stem}{DEPTH_SUFFIX}")
    if not beside.is_file():
        return DepthFile(beside), False
    beside = confine_path(beside, json_path.parent, f"{where}: depth map beside the image", allow_outside=allow_outside)
    return DepthFile(beside), True


def _frame_file(frame: Dict[str, Any], field: str, what: str, json_path: Path, where: str, allow_outside: bool) -> Path:
    """The file a frame's path ``field`` names (a ``what``: depth map, mask), resolved against the json's
    folder, confined to it (unless ``allow_outside``), and present; refused naming the frame and field."""
    value = frame[field]
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise InputError(f"{where}: field {field!r} must be a non-empty path string, got {value!r}")
    path = confine_path(json_path.parent / value, json_path.parent, f"{where}: field {field!r}", allow_outside=allow_outside)
    if path.is_dir():
        raise InputError(f"{where}: field {field!r} = {value!r} is a directory ({path}), expected a {what} file")
    if not path.is_file():
        raise InputError(f"{where}: field {field!r} = {value!r}: {what} {path} not found")
    return path


def _mask_file(frame: Dict[str, Any], json_path: Path, where: str, allow_outside: bool) -> Optional[Path]:
    """The frame's resolved ``mask_path`` (which must exist inside the json's folder), or ``None`` without one."""
    return _frame_file(frame, "mask_path", "mask", json_path, where, allow_outside) if "mask_path" in frame else None


def _depth_unit_scale(data: Dict[str, Any], json_path: Path) -> float:
    """Top-level ``depth_unit_scale_factor`` (nerfstudio's: stored z-depth units -> world units), default 0.001."""
    if "depth_unit_scale_factor" not in data:
        return DEFAULT_DEPTH_UNIT_SCALE
    return check_finite_number(data["depth_unit_scale_factor"], f"{json_path}: field 'depth_unit_scale_factor'",
                               lo=0.0, lo_inclusive=False)  # fmt: skip


def _pose(frame: Dict[str, Any], where: str) -> np.ndarray:
    """The frame's OpenGL ``transform_matrix`` as a validated float64 ``[3, 4]`` array."""
    if "transform_matrix" not in frame:
        raise InputError(f"{where}: missing field 'transform_matrix'")
    rows = frame["transform_matrix"]
    shape_ok = isinstance(rows, list) and len(rows) in (3, 4) and all(isinstance(r, list) and len(r) == 4 for r in rows)
    if not shape_ok:
        raise InputError(f"{where}: field 'transform_matrix' must be 4x4 (or 3x4) nested lists of numbers, got {rows!r:.80}")
    for r, row in enumerate(rows):
        for c, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InputError(f"{where}: field 'transform_matrix' [{r}][{c}] must be a number, got {v!r}")
    m = np.asarray(rows, dtype=np.float64)
    check_finite_array(m, f"{where}: field 'transform_matrix'", max_abs=MAX_ABS_COORDINATE)
    if m.shape[0] == 4 and not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], atol=1e-4):
        raise InputError(f"{where}: field 'transform_matrix' last row must be (0, 0, 0, 1), got {m[3].tolist()}")
    return m[:3, :4]


def _opencv_poses(mats: List[np.ndarray], wheres: List[str]) -> torch.Tensor:
    """Stack OpenGL ``[3, 4]`` poses, convert to OpenCV and check rigidity (error names the frame)."""
    c2w = opengl_to_opencv(torch.from_numpy(np.stack(mats)))
    rigid = check_rigid(c2w)
    if not bool(rigid.all()):
        k = int((~rigid).nonzero()[0, 0])
        raise InputError(
            f"{wheres[k]}: field 'transform_matrix' is not a rigid transform (rotation block must be "
            f"orthonormal with determinant +1; scale or shear is not supported)"
        )
    return c2w


def _intrinsics(
    top: Dict[str, Any], frame: Dict[str, Any], image_wh: Tuple[int, int], where: str, image: Path
) -> Tuple[List[List[float]], int, int, List[float]]:
    """``(K, W, H, dist)`` of one frame."""

    def get(key: str) -> Optional[float]:
        if key in frame:
            return _number(frame[key], where, key)
        if key in top:
            return _number(top[key], f"{where} (top level)", key)
        return None

    model = frame.get("camera_model", top.get("camera_model"))
    if model is not None and not isinstance(model, str):
        raise InputError(f"{where}: field 'camera_model' must be a string, got {model!r}")
    if model is not None and model not in _PINHOLE_MODELS:
        raise InputError(
            f"{where}: field 'camera_model' is {model!r}; supported: {', '.join(_PINHOLE_MODELS)} "
            f"(fisheye / equirectangular cameras are not supported)"
        )
    iw, ih = image_wh
    W, H = get("w"), get("h")
    for name, given, actual in (("w", W, iw), ("h", H, ih)):
        if given is not None and (given < 1 or not float(given).is_integer()):
            raise InputError(f"{where}: field {name!r} must be a whole number of pixels >= 1, got {given:g}")
        if given is not None and int(round(given)) != actual:
            raise InputError(
                f"{where}: field {name!r} is {int(round(given))} but image {image} is {iw}x{ih} (width x height)"
            )
    W, H = iw, ih
    fx, fy = get("fl_x"), get("fl_y")
    ax, ay = get("camera_angle_x"), get("camera_angle_y")
    for name, a in (("camera_angle_x", ax), ("camera_angle_y", ay)):
        if a is not None and not 0.0 < a < math.pi:
            raise InputError(f"{where}: field {name!r} must be in (0, pi) radians, got {a}")
    if fx is None and ax is not None:
        fx = 0.5 * W / math.tan(0.5 * ax)
    if fy is None and ay is not None:
        fy = 0.5 * H / math.tan(0.5 * ay)
    if fx is None and fy is not None:
        fx = fy
    if fx is None:
        raise InputError(
            f"{where}: no intrinsics: need 'fl_x' (and optionally 'fl_y', 'cx', 'cy') or 'camera_angle_x', "
            f"per frame or at the top level"
        )
    if fy is None:
        fy = fx
    if fx <= 0 or fy <= 0:
        raise InputError(f"{where}: focal lengths must be > 0, got fl_x={fx}, fl_y={fy}")
    cx, cy = get("cx"), get("cy")
    cx = 0.5 * W if cx is None else cx
    cy = 0.5 * H if cy is None else cy
    check_pinhole(fx, fy, cx, cy, W, H, f"{where}: intrinsics (fl_x, fl_y, cx, cy)")
    k1, k2, k3, k4 = (get(k) or 0.0 for k in ("k1", "k2", "k3", "k4"))
    p1, p2 = (get(k) or 0.0 for k in ("p1", "p2"))
    if k4 != 0.0:
        raise InputError(f"{where}: field 'k4' = {k4} is not supported (only k1 k2 k3 p1 p2 distortion)")
    K = [[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]
    return K, int(W), int(H), [k1, k2, p1, p2, k3]


def _frames(data: Dict[str, Any], json_path: Path) -> List[Dict[str, Any]]:
    if "frames" not in data:
        raise InputError(f"{json_path}: missing field 'frames'")
    frames = data["frames"]
    if not isinstance(frames, list):
        raise InputError(f"{json_path}: field 'frames' must be a list, got {type(frames).__name__}")
    if not frames:
        raise InputError(f"{json_path}: field 'frames' is empty (the split has no views)")
    for i, fr in enumerate(frames):
        if not isinstance(fr, dict):
            raise InputError(f"{json_path}: frame {i} must be an object, got {type(fr).__name__}")
        if "file_path" not in fr:
            raise InputError(f"{json_path}: frame {i}: missing field 'file_path'")
        if not isinstance(fr["file_path"], str):
            raise InputError(f"{json_path}: frame {i}: field 'file_path' must be a string, got {fr['file_path']!r}")
    check_unique([_norm_name(fr["file_path"]) for fr in frames], f"{json_path}: frames", "file_path")
    return frames


def _parse_split(
    data: Dict[str, Any], frames: List[Dict[str, Any]], json_path: Path, indices: List[int], allow_outside: bool = False
) -> TransformsSplit:
    """Parse frames (``frames[i]`` for ``i`` in ``indices``; messages use ``i``) into a split."""
    c2ws, Ks, Ws, Hs, dists, images, file_paths, sems, wheres, depths = [], [], [], [], [], [], [], [], [], []
    masks: List[Optional[Path]] = []
    has_sem = ["semantic_path" in frames[i] for i in indices]
    if any(has_sem) and not all(has_sem):
        i = indices[has_sem.index(False)]
        raise InputError(
            f"{_where(json_path, i, frames[i]['file_path'])}: missing field 'semantic_path' (other frames have one)"
        )
    first: Optional[Tuple[Path, Tuple[int, int]]] = None
    used: Dict[Path, int] = {}
    unit_scale = _depth_unit_scale(data, json_path)
    for i in indices:
        fr = frames[i]
        fp = fr["file_path"]
        where = _where(json_path, i, fp)
        img = _resolve_image(json_path, fp, where, allow_outside=allow_outside)
        if img.resolve() in used:
            raise InputError(f"{where}: field 'file_path' names the same image file as frame {used[img.resolve()]} ({img})")
        used[img.resolve()] = i
        wh = check_image_size(*read_image_size(img), str(img))
        if first is None:
            first = (img, wh)
        elif wh != first[1]:
            raise InputError(
                f"{json_path}: images of one split must share a size, but {first[0]} is {first[1][0]}x{first[1][1]} "
                f"and {img} (frame {i}) is {wh[0]}x{wh[1]} (width x height)"
            )
        K, W, H, dist = _intrinsics(data, fr, wh, where, img)
        c2ws.append(_pose(fr, where))
        wheres.append(where)
        Ks.append(K)
        Ws.append(W)
        Hs.append(H)
        dists.append(dist)
        images.append(img)
        file_paths.append(fp)
        depths.append(_depth_file(fr, img, json_path, where, allow_outside, unit_scale))
        masks.append(_mask_file(fr, json_path, where, allow_outside))
        if has_sem and has_sem[0]:
            sp = fr["semantic_path"]
            if not isinstance(sp, str):
                raise InputError(f"{where}: field 'semantic_path' must be a string")
            sems.append(
                _resolve_image(
                    json_path, sp, where, what="label map", field="semantic_path", allow_outside=allow_outside
                )
            )
    found = [exists for _, exists in depths]
    if any(found) and not all(found):
        k = found.index(False)
        raise InputError(
            f"{wheres[k]}: depth map {depths[k][0].path} not found, but other frames of this split have one "
            f"(e.g. {depths[found.index(True)][0].path}); depth is read for every frame of a split or for none"
        )
    has_mask = [m is not None for m in masks]
    if any(has_mask) and not all(has_mask):
        k = has_mask.index(False)
        raise InputError(
            f"{wheres[k]}: no field 'mask_path', but other frames of this split have one "
            f"(e.g. {masks[has_mask.index(True)]}); masks are read for every frame of a split or for none"
        )
    cameras = Cameras.create(
        c2w=_opencv_poses(c2ws, wheres).float(),
        Ks=torch.tensor(Ks, dtype=torch.float32),
        widths=torch.tensor(Ws),
        heights=torch.tensor(Hs),
        dist=torch.tensor(dists, dtype=torch.float32),
    )
    return TransformsSplit(
        json_path=json_path,
        cameras=cameras,
        image_paths=images,
        file_paths=file_paths,
        semantic_paths=sems if sems else None,
        depth_files=[file for file, _ in depths] if depths and all(found) else None,
        mask_paths=list(masks) if all(has_mask) else None,
    )


def _labels(data: Dict[str, Any], json_path: Path) -> Optional[List[str]]:
    if "labels" not in data:
        return None
    labels = data["labels"]
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise InputError(f"{json_path}: field 'labels' must be a list of strings")
    return list(labels)


def _box(value: Any, prefix: str, key: str) -> np.ndarray:
    """A ``[[xmin, ymin, zmin], [xmax, ymax, zmax]]`` field as a finite float64 ``[2, 3]`` array;
    errors read ``{prefix}: field {key!r} ...`` (the caller checks the order of min and max)."""
    try:
        box = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        box = np.zeros(0)
    if box.shape != (2, 3):
        raise InputError(f"{prefix}: field {key!r} must be [[xmin, ymin, zmin], [xmax, ymax, zmax]]")
    check_finite_array(box, f"{prefix}: field {key!r}", max_abs=MAX_ABS_COORDINATE)
    return box


def _objects(data: Dict[str, Any], json_path: Path) -> Optional[Dict[str, torch.Tensor]]:
    """The top-level ``objects`` field: ``{name: [2, 3] float64 (min, max)}`` or ``None``."""
    if "objects" not in data:
        return None
    entries = data["objects"]
    if not isinstance(entries, list):
        raise InputError(f"{json_path}: field 'objects' must be a list of {{'name': ..., 'aabb': [[min], [max]]}}")
    out: Dict[str, torch.Tensor] = {}
    for k, entry in enumerate(entries):
        where = f"{json_path}: objects[{k}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
            raise InputError(f"{where}: needs a non-empty string 'name'")
        name = entry["name"]
        if name in out:
            raise InputError(f"{where}: object name {name!r} appears twice")
        box = _box(entry.get("aabb"), f"{where} ({name!r})", "aabb")
        if not bool(np.all(box[0] <= box[1])):
            raise InputError(f"{where} ({name!r}): field 'aabb' has a min above its max: {box.tolist()}")
        out[name] = torch.from_numpy(box)
    return out


def _bounds(data: Dict[str, Any], json_path: Path) -> Optional[Tuple[torch.Tensor, Optional[float], Optional[float]]]:
    """The file's own ``scene_box`` (``[2, 3]``, min < max) with optional ``near`` / ``far``, or ``None``."""
    if "scene_box" not in data:
        return None
    box = _box(data["scene_box"], str(json_path), "scene_box")
    if not bool(np.all(box[0] < box[1])):
        raise InputError(f"{json_path}: field 'scene_box' needs min < max on every axis, got {box.tolist()}")
    near_far = []
    for key in ("near", "far"):
        v = data.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0):
            raise InputError(f"{json_path}: field {key!r} must be a finite number >= 0, got {v!r}")
        near_far.append(None if v is None else float(v))
    if near_far[0] is not None and near_far[1] is not None and not near_far[0] < near_far[1]:
        raise InputError(f"{json_path}: field 'near' ({near_far[0]}) must be below 'far' ({near_far[1]})")
    return torch.from_numpy(box).float(), near_far[0], near_far[1]


def _norm_name(p: str) -> str:
    p = posixpath.normpath(p.replace("\\", "/"))
    return p[2:] if p.startswith("./") else p


def _strip_ext(p: str) -> str:
    root, ext = posixpath.splitext(p)
    return root if ext.lower() in tuple(e.lower() for e in _EXTENSIONS) else p


def _split_by_lists(data: Dict[str, Any], frames: List[Dict[str, Any]], order: List[int], json_path: Path) -> Dict[str, List[int]]:
    """Frame indices per split from ``{split}_filenames`` lists, or every-8th when there are none."""
    keys = [f"{s}_filenames" for s in SPLITS]
    if not any(k in data for k in keys):
        pos_train, pos_test = every_nth_split(len(order), 8)
        return {"train": [order[i] for i in pos_train], "test": [order[i] for i in pos_test]}
    exact: Dict[str, int] = {}
    loose: Dict[str, int] = {}
    for i in order:
        name = _norm_name(frames[i]["file_path"])
        exact.setdefault(name, i)
        loose.setdefault(_strip_ext(name), i)
    out: Dict[str, List[int]] = {}
    for split, key in zip(SPLITS, keys):
        if key not in data:
            continue
        names = data[key]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InputError(f"{json_path}: field {key!r} must be a list of strings")
        idx = []
        for n in names:
            nn = _norm_name(n)
            i = exact.get(nn, loose.get(_strip_ext(nn)))
            if i is None:
                raise InputError(f"{json_path}: field {key!r}: {n!r} matches no frame's 'file_path'")
            idx.append(i)
        rank = {i: r for r, i in enumerate(order)}
        out[split] = sorted(set(idx), key=rank.__getitem__)
    if "train" not in out:
        held = set(out.get("val", [])) | set(out.get("test", []))
        out["train"] = [i for i in order if i not in held]
    return out


def is_transforms_scene(path: PathLike) -> bool:
    """True for a ``.json`` file, or a folder holding ``transforms.json`` or ``transforms_{train,val,test}.json``."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() == ".json"
    return path.is_dir() and any((path / name).is_file() for name in ("transforms.json", *(f"transforms_{s}.json" for s in SPLITS)))


def read_transforms(path: PathLike, *, allow_outside_paths: bool = False) -> TransformsScene:
    """Parse a transforms scene (folder or json file) without decoding images.

    ``path`` is a folder holding ``transforms_{train,val,test}.json`` (Blender layout; preferred) or
    ``transforms.json``, or a json file: ``transforms_{split}.json`` means its folder's Blender
    layout, any other name a single-file scene. ``allow_outside_paths`` lets ``file_path`` /
    ``semantic_path`` / ``depth_path`` / ``mask_path`` point outside the json's folder.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"transforms scene not found: {path}")
    if path.is_file():
        folder, single = path.parent, None if _SPLIT_FILE.match(path.name) else path
    else:
        folder, single = path, None
        if not any((path / f"transforms_{s}.json").is_file() for s in SPLITS):
            single = path / "transforms.json"
            if not single.is_file():
                raise FileNotFoundError(
                    f"{path}: no transforms_train.json / transforms_val.json / transforms_test.json and no transforms.json"
                )
    name = folder.resolve().name
    if single is None:
        splits: Dict[str, TransformsSplit] = {}
        labels: Optional[List[str]] = None
        objects: Optional[Dict[str, torch.Tensor]] = None
        bounds = None
        for s in SPLITS:
            jp = folder / f"transforms_{s}.json"
            if jp.is_dir():
                raise InputError(f"{jp}: is a directory, expected a JSON file")
            if not jp.is_file():
                continue
            data = read_json(jp)
            frames = _frames(data, jp)
            splits[s] = _parse_split(data, frames, jp, list(range(len(frames))), allow_outside_paths)
            labels = labels if labels is not None else _labels(data, jp)
            objects = objects if objects is not None else _objects(data, jp)
            bounds = bounds if bounds is not None else _bounds(data, jp)
        if "train" not in splits:
            raise FileNotFoundError(f"{folder}: Blender layout without transforms_train.json")
        return TransformsScene(name=name, layout="blender", splits=splits, labels=labels, objects=objects, bounds=bounds)

    data = read_json(single)
    frames = _frames(data, single)
    order = sorted(range(len(frames)), key=lambda i: (frames[i]["file_path"], i))
    groups = _split_by_lists(data, frames, order, single)
    splits = {}
    for s in SPLITS:
        if s not in groups:
            continue
        if not groups[s]:
            raise InputError(f"{single}: split {s!r} is empty ({len(frames)} frames in the file)")
        splits[s] = _parse_split(data, frames, single, groups[s], allow_outside_paths)
    return TransformsScene(
        name=name, layout="single", splits=splits, labels=_labels(data, single), objects=_objects(data, single)
    )


# ----------------------------------------------------------------------------- framing


def _synthetic_transform(c2w_all: torch.Tensor) -> torch.Tensor:
    """Identity if the cameras fit the NeRF-synthetic protocol, else focus-centre + rescale (float64)."""
    r = c2w_all[:, :3, 3].double().norm(dim=-1)
    if bool(torch.all((r > SYNTHETIC_NEAR) & (r < SYNTHETIC_FAR))):
        return torch.eye(4, dtype=torch.float64)
    center = focus_point(c2w_all)
    d = (c2w_all[:, :3, 3].double() - center).norm(dim=-1).mean()
    scale = SYNTHETIC_CAMERA_DISTANCE / float(d) if float(d) > 1e-12 else 1.0
    return make_similarity(scale, None, center)


def _scene_framing(scene: TransformsScene, normalize: Optional[str]):
    """``(T [4,4] float32, scene_box [2,3], near, far, unbounded)`` from all cameras of all splits."""
    c2w_all = torch.cat([s.cameras.c2w for s in scene.splits.values()], 0)
    if scene.layout == "blender":
        if normalize is None and scene.bounds is not None:  # the file states its frame's bounds: keep both
            box, near, far = scene.bounds
            centres = c2w_all[:, :3, 3].double()
            mid, half = (box[0] + box[1]).double() / 2, (box[1] - box[0]).double().norm() / 2
            dist = (centres - mid).norm(dim=-1)
            near = float((dist.min() - half).clamp_min(1e-2)) if near is None else near
            far = float(dist.max() + half) if far is None else far
            return torch.eye(4), box.clone(), near, far, False
        if normalize is None:
            T = _synthetic_transform(c2w_all).float()
        else:
            _, T = normalize_poses(c2w_all.double(), method=normalize, target_radius=SYNTHETIC_CAMERA_DISTANCE)
            T = T.float()
        box = torch.tensor(SYNTHETIC_SCENE_BOX, dtype=torch.float32)
        return T, box, SYNTHETIC_NEAR, SYNTHETIC_FAR, False
    method = "cameras" if normalize is None else normalize
    c2w_n, T = normalize_poses(c2w_all.double(), method=method, target_radius=1.0)
    box, near, far = capture_bounds(c2w_n)
    return T.float(), box, near, far, True


def load_transforms(
    path: PathLike,
    downscale: float = 1,
    background: Optional[str] = None,
    *,
    splits: Optional[Sequence[str]] = None,
    max_images: Optional[int] = None,
    normalize: Optional[str] = None,
    progress: Optional[bool] = None,
    allow_outside_paths: bool = False,
) -> SceneDataset:
    """Load a transforms scene (see the module docstring for layouts and fields).

    Args:
        path: folder or json file (see :func:`read_transforms`).
        downscale: image downscale factor ``>= 1``; intrinsics follow via ``Cameras.rescaled``.
        background: ``"white"`` (default), ``"black"`` or ``"random"`` (``SceneDataset.background``).
        splits: splits to load (default: all present; ``"train"`` is always loaded).
        max_images: keep only the first ``max_images`` views of each split (quick looks, tests);
            the normalisation still uses every camera, so it does not depend on this.
        normalize: override the framing: a :func:`~langfield.geometry.normalize.normalize_poses`
            method (``"cameras"``, ``"focus"``, ``"none"``); ``None`` is the layout's default.
        progress: force the loading progress bar on/off.
        allow_outside_paths: read ``file_path`` s that lie outside the json's folder (refused by default).

    Returns:
        A :class:`SceneDataset` with poses in OpenCV convention in the normalised frame; splits whose
        frames have depth maps carry them as ``ImageSet.depths`` (ray distances in the normalised frame),
        splits whose frames have a ``mask_path`` carry their training masks as ``ImageSet.masks``.
    """
    downscale = check_downscale(downscale)
    background = resolve_background(background)
    if normalize is not None and normalize not in NORMALIZE_METHODS:
        raise InputError(f"normalize: must be one of {NORMALIZE_METHODS} (or None), got {normalize!r}")
    scene = read_transforms(path, allow_outside_paths=allow_outside_paths)
    wanted = check_splits_arg(splits, list(scene.splits), str(path))
    T, box, near, far, unbounded = _scene_framing(scene, normalize)
    depth_scale = float(similarity_scale(T))  # ray distances scale like camera centres
    image_sets: Dict[str, ImageSet] = {}
    for s in wanted:
        split = scene.splits[s]
        split = split.subset(limit_indices(range(len(split)), max_images))
        loaded = load_images(
            split.image_paths,
            downscale,
            semantic_paths=split.semantic_paths,
            source=f"{split.json_path} [{s}]",
            progress=progress,
        )
        depths = None
        if split.depth_files is not None:
            w0, h0 = loaded.source_sizes[0]
            depths = load_depths(split.depth_files, (w0, h0), downscale, scale=depth_scale, cameras=split.cameras,
                                 source=f"{split.json_path} [{s}]", progress=progress)  # fmt: skip
        masks = None
        if split.mask_paths is not None:
            masks = load_masks(split.mask_paths, loaded.source_sizes[0], downscale, source=f"{split.json_path} [{s}]",
                               progress=progress)  # fmt: skip
        cams = split.cameras.rescaled(downscale)
        cams = replace(cams, c2w=transform_poses(T, cams.c2w))
        image_sets[s] = make_image_set(cams, loaded, split.image_paths, depths, masks)
    return SceneDataset(
        name=scene.name,
        splits=image_sets,
        scene_box=box,
        near=float(near),
        far=float(far),
        background=background,
        world_transform=T,
        labels=scene.labels,
        object_boxes=scene.objects,
        unbounded=unbounded,
    )
