"""nerfstudio's ``camera_path.json``: read, validate and write camera paths for videos.

The file (written by nerfstudio's viewer and by ``langfield view``; rendered by ``ns-render
camera-path`` and ``langfield render RUN --camera-path FILE``)::

    {
      "camera_type": "perspective",
      "render_width": 640, "render_height": 480,
      "fps": 24, "seconds": 4.0,
      "camera_path": [
        {"camera_to_world": [16 numbers, row-major 4x4, OpenGL axes], "fov": 50.0, "aspect": 1.333},
        ...
      ],
      "keyframes": [...]            # optional, the editor's keyframes (kept, not interpreted)
    }

Conventions, converted here at the boundary and nowhere else:

* ``camera_to_world`` is an **OpenGL** camera-to-world (x right, y up, looking along -z), the
  16 numbers of the 4x4 matrix in row-major order; langfield's :class:`~langfield.types.Cameras`
  hold **OpenCV** poses, so the camera's y and z axes are flipped on read and on write
  (:func:`langfield.geometry.conventions.opengl_to_opencv`).
* ``fov`` is the **vertical** field of view in **degrees**; the focal length in pixels is
  ``f = render_height / 2 / tan(fov / 2)`` for both axes (square pixels, principal point at the
  image centre), as in nerfstudio's ``get_path_from_json``.
* Poses are in the run's world frame: the frame of the run's dataset cameras
  (``run.dataset.split("train").cameras``), the frame the viewer shows.

Only ``"perspective"`` paths are supported (fisheye and equirectangular paths are refused with a
clear error). Every error is an :class:`~langfield._checks.InputError` naming the file and the field,
e.g. ``camera_path.json: camera_path[3].fov: must be < 180, got 190``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor

from langfield._checks import (
    MAX_ABS_COORDINATE,
    InputError,
    check_finite_number,
    check_image_size,
    check_output_file,
)
from langfield.geometry.conventions import check_rigid, opencv_to_opengl, opengl_to_opencv
from langfield.io.atomic import atomic_write_json
from langfield.types import Cameras

__all__ = [
    "CameraPath",
    "MAX_PATH_FRAMES",
    "camera_path_from_dict",
    "camera_path_to_dict",
    "focal_from_fov",
    "fov_from_focal",
    "read_camera_path",
    "write_camera_path",
]

PathLike = Union[str, Path]
#: Longest path accepted from a file (over 9 hours at 30 fps).
MAX_PATH_FRAMES = 1_000_000
#: Largest ``camera_path.json`` read (a million frames of 16 numbers is ~200 MB of text).
MAX_FILE_BYTES = 512 * 1024 * 1024


def focal_from_fov(fov_y_deg: Union[float, Tensor], height: int) -> Union[float, Tensor]:
    """Focal length in pixels of a vertical field of view ``fov_y_deg`` (degrees) over ``height`` pixels.

    Example:
        >>> from langfield.data.camera_path_json import focal_from_fov, fov_from_focal
        >>> round(focal_from_fov(90.0, 100), 6)  # tan(45 deg) = 1: half the height
        50.0
        >>> round(fov_from_focal(50.0, 100), 6)
        90.0
    """
    if isinstance(fov_y_deg, Tensor):
        return height / 2.0 / torch.tan(torch.deg2rad(fov_y_deg) / 2.0)
    return height / 2.0 / math.tan(math.radians(fov_y_deg) / 2.0)


def fov_from_focal(focal: Union[float, Tensor], height: int) -> Union[float, Tensor]:
    """Vertical field of view in degrees of a focal length ``focal`` (pixels) over ``height`` pixels."""
    if isinstance(focal, Tensor):
        return torch.rad2deg(2.0 * torch.atan(height / 2.0 / focal))
    return math.degrees(2.0 * math.atan(height / 2.0 / focal))


@dataclass(frozen=True)
class CameraPath:
    """A camera path: ``F`` frames at one image size.

    Attributes:
        c2w: ``[F, 3, 4]`` camera-to-world, **OpenCV** (converted from the file's OpenGL).
        fov_y_deg: ``[F]`` vertical field of view of each frame, degrees.
        width, height: render size in pixels.
        fps: frame rate of the video.
        keyframes: the editor's keyframes as found in the file (kept for a round trip).
    """

    c2w: Tensor
    fov_y_deg: Tensor
    width: int
    height: int
    fps: float = 24.0
    keyframes: List[Any] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.c2w.shape[0])

    @property
    def seconds(self) -> float:
        return len(self) / self.fps

    def cameras(self) -> Cameras:
        """The frames as :class:`Cameras` (square pixels, principal point at the image centre)."""
        num = len(self)
        focal = focal_from_fov(self.fov_y_deg.double(), self.height).float()
        Ks = torch.zeros(num, 3, 3)
        Ks[:, 0, 0] = focal
        Ks[:, 1, 1] = focal
        Ks[:, 0, 2] = self.width / 2.0
        Ks[:, 1, 2] = self.height / 2.0
        Ks[:, 2, 2] = 1.0
        return Cameras.create(self.c2w.float(), Ks, self.width, self.height)


def _require(obj: Dict[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise InputError(f"{where}: missing field {key!r}")
    return obj[key]


def camera_path_from_dict(obj: Any, where: str = "camera_path.json") -> CameraPath:
    """Validate a parsed ``camera_path.json`` and convert it (see the module docstring).

    Required: ``render_width``, ``render_height``, ``camera_path`` (a non-empty list of objects with
    ``camera_to_world`` and ``fov``). Optional: ``camera_type`` (only ``"perspective"``), ``fps``
    (default 24; nerfstudio's default), ``keyframes``, and per frame ``aspect`` (when given it must
    match ``render_width / render_height`` within 1 %, since nerfstudio renders at the file's size).

    Example:
        >>> from langfield.data.camera_path_json import camera_path_from_dict
        >>> eye = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 0, 0, 0, 1]  # OpenGL camera at z=2 looking along -z
        >>> path = camera_path_from_dict({"render_width": 64, "render_height": 48, "fps": 30,
        ...                               "camera_path": [{"camera_to_world": eye, "fov": 60.0}]})
        >>> [v + 0.0 for v in path.c2w[0, :, 2].tolist()], path.c2w[0, :, 3].tolist()  # OpenCV +z: still world -z
        ([0.0, 0.0, -1.0], [0.0, 0.0, 2.0])
        >>> camera_path_from_dict({"render_width": 64, "render_height": 48, "camera_path": []})
        Traceback (most recent call last):
        ...
        langfield._checks.InputError: camera_path.json: camera_path: the path has no frames
    """
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object at the top level, got {type(obj).__name__}")
    camera_type = obj.get("camera_type", "perspective")
    if camera_type != "perspective":
        raise InputError(f"{where}: camera_type: only 'perspective' paths are supported, got {camera_type!r}")
    width, height = check_image_size(
        _require(obj, "render_width", where), _require(obj, "render_height", where), f"{where}: render_width/render_height"
    )
    fps = check_finite_number(obj.get("fps", 24.0), f"{where}: fps", lo=0.0, lo_inclusive=False, hi=1000.0)
    frames = _require(obj, "camera_path", where)
    if not isinstance(frames, list):
        raise InputError(f"{where}: camera_path: expected a list of frames, got {type(frames).__name__}")
    if not frames:
        raise InputError(f"{where}: camera_path: the path has no frames")
    if len(frames) > MAX_PATH_FRAMES:
        raise InputError(f"{where}: camera_path: {len(frames)} frames, at most {MAX_PATH_FRAMES} are accepted")
    keyframes = obj.get("keyframes", [])
    if not isinstance(keyframes, list):
        raise InputError(f"{where}: keyframes: expected a list, got {type(keyframes).__name__}")
    poses, fovs = [], []
    for i, frame in enumerate(frames):
        at = f"{where}: camera_path[{i}]"
        if not isinstance(frame, dict):
            raise InputError(f"{at}: expected an object with camera_to_world and fov, got {type(frame).__name__}")
        matrix = _require(frame, "camera_to_world", at)
        if isinstance(matrix, list) and len(matrix) == 4 and all(isinstance(r, list) for r in matrix):
            matrix = [v for row in matrix for v in row]  # a nested 4x4 is accepted too
        if not isinstance(matrix, list) or len(matrix) != 16:
            got = f"{len(matrix)} entries" if isinstance(matrix, list) else type(matrix).__name__
            raise InputError(f"{at}.camera_to_world: expected 16 numbers (row-major 4x4), got {got}")
        for j, v in enumerate(matrix):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InputError(f"{at}.camera_to_world[{j}]: expected a number, got {v!r}")
            if not math.isfinite(v) or abs(v) > MAX_ABS_COORDINATE:
                raise InputError(f"{at}.camera_to_world[{j}]: must be finite and within +-{MAX_ABS_COORDINATE:g}, got {v!r}")
        poses.append(matrix)
        fovs.append(check_finite_number(_require(frame, "fov", at), f"{at}.fov (vertical, degrees)", lo=0.0,
                                        lo_inclusive=False, hi=180.0, hi_inclusive=False))  # fmt: skip
        if "aspect" in frame:
            aspect = check_finite_number(frame["aspect"], f"{at}.aspect", lo=0.0, lo_inclusive=False)
            if abs(aspect - width / height) > 0.01 * (width / height):
                raise InputError(f"{at}.aspect: {aspect:g} does not match render_width / render_height = "
                                 f"{width}/{height} = {width / height:.4g}")  # fmt: skip
    mats = torch.tensor(poses, dtype=torch.float64).reshape(-1, 4, 4)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    bad_bottom = (mats[:, 3] - bottom).abs().amax(-1) > 1e-6
    if bool(bad_bottom.any()):
        i = int(bad_bottom.nonzero()[0])
        raise InputError(f"{where}: camera_path[{i}].camera_to_world: the last row must be 0 0 0 1, got {mats[i, 3].tolist()}")
    rigid = check_rigid(mats, atol=1e-3)
    if not bool(rigid.all()):
        i = int((~rigid).nonzero()[0])
        raise InputError(f"{where}: camera_path[{i}].camera_to_world: the rotation is not orthonormal with "
                         "determinant +1 (scaled or mirrored cameras are not supported)")  # fmt: skip
    c2w = opengl_to_opencv(mats[:, :3, :4]).float()
    return CameraPath(c2w, torch.tensor(fovs, dtype=torch.float32), width, height, fps, list(keyframes))


def camera_path_to_dict(path: CameraPath) -> Dict[str, Any]:
    """The JSON object of ``path`` (OpenGL row-major ``camera_to_world``, vertical ``fov`` in degrees)."""
    gl = opencv_to_opengl(path.c2w.double())
    bottom = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64).expand(len(path), 1, 4)
    mats = torch.cat([gl, bottom], dim=1)
    aspect = path.width / path.height
    frames = [
        {"camera_to_world": mats[i].reshape(-1).tolist(), "fov": float(path.fov_y_deg[i]), "aspect": aspect}
        for i in range(len(path))
    ]
    return {
        "camera_type": "perspective",
        "render_width": int(path.width),
        "render_height": int(path.height),
        "fps": float(path.fps),
        "seconds": path.seconds,
        "camera_path": frames,
        "keyframes": list(path.keyframes),
    }


def read_camera_path(path: PathLike) -> CameraPath:
    """Read and validate a ``camera_path.json`` (errors name the file and the field)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"camera path {path}: is a folder, expected a camera_path.json file")
    if not path.is_file():
        raise InputError(f"camera path {path}: file not found")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InputError(f"camera path {path}: {size} bytes, larger than the {MAX_FILE_BYTES} accepted")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"camera path {path}: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise InputError(f"camera path {path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    return camera_path_from_dict(obj, str(path))


def write_camera_path(
    path: PathLike,
    c2w: Tensor,
    fov_y_deg: Union[float, Sequence[float], Tensor],
    width: int,
    height: int,
    fps: float = 24.0,
    keyframes: Optional[List[Any]] = None,
) -> Path:
    """Write frames ``c2w [F, 3|4, 4]`` (**OpenCV**) as a ``camera_path.json`` atomically; returns the path.

    ``fov_y_deg`` is one vertical field of view (degrees) for every frame or ``[F]`` of them.
    The file round-trips through :func:`read_camera_path` (same poses, fields of view and size).
    """
    out = check_output_file(path, "camera path")
    if not isinstance(c2w, Tensor) or c2w.ndim != 3 or tuple(c2w.shape[1:]) not in ((3, 4), (4, 4)) or not len(c2w):
        raise InputError(f"camera path c2w: expected a non-empty [F, 3, 4] tensor, got {tuple(getattr(c2w, 'shape', ()))}")
    width, height = check_image_size(width, height, "camera path: width/height")
    fovs = torch.as_tensor(fov_y_deg, dtype=torch.float64).reshape(-1).expand(len(c2w)).float()
    for i, v in enumerate(fovs.tolist()):
        check_finite_number(v, f"camera path fov_y_deg[{i}]", lo=0.0, lo_inclusive=False, hi=180.0, hi_inclusive=False)
    check_finite_number(fps, "camera path fps", lo=0.0, lo_inclusive=False, hi=1000.0)
    cp = CameraPath(c2w[:, :3, :4].detach().cpu().float(), fovs, width, height, float(fps), list(keyframes or []))
    atomic_write_json(camera_path_to_dict(cp), out)
    return out
