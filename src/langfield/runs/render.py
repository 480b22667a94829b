"""Render a loaded run: the views of a split (PNG panels) or a camera path (mp4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch
from rich.progress import Progress

from langfield._checks import InputError, check_choice, check_finite_number, check_int_range, check_memory, check_output_dir
from langfield.data.camera_path_json import read_camera_path
from langfield.data.dataset import SceneDataset
from langfield.geometry.camera_paths import interpolate_path, orbit_path, path_cameras, spiral_path
from langfield.io.colormaps import colorize_depth, colorize_normals
from langfield.io.images import side_by_side, to_uint8, write_image
from langfield.io.video import write_video
from langfield.runs.loading import Run
from langfield.types import Cameras, RenderOutput

__all__ = [
    "CAMERA_PATHS",
    "RENDER_OUTPUTS",
    "check_render_request",
    "frame_images",
    "make_path",
    "render_camera_path",
    "render_path",
    "render_views",
]

RENDER_OUTPUTS = ("rgb", "depth", "accumulation", "normals")
CAMERA_PATHS = ("orbit", "spiral", "interpolate")
PathLike = Union[str, Path]
#: Longest camera path (over 9 hours at 30 fps); the frames' memory is checked against the machine too.
MAX_FRAMES = 1_000_000
MAX_FPS = 1000


def check_render_request(
    what: Sequence[str],
    chunk: Optional[int],
    out_dir: Optional[PathLike] = None,
    num_frames: Optional[int] = None,
    fps: Optional[float] = None,
) -> None:
    """Refuse bad render options before a run is loaded (the CLI calls it first).

    ``what``: non-empty, each in :data:`RENDER_OUTPUTS`; ``chunk >= 1`` or ``None`` (the device's
    default, :func:`langfield.methods.base.default_ray_chunk`); ``out_dir`` creatable;
    for camera paths ``1 <= num_frames <= MAX_FRAMES`` and ``0 < fps <= MAX_FPS``.
    """
    if isinstance(what, str) or not what:
        raise InputError(f"outputs (--outputs): give one or more of {', '.join(RENDER_OUTPUTS)}, got {what!r}")
    for name in what:
        check_choice(name, "outputs (--outputs)", RENDER_OUTPUTS)
    if chunk is not None:
        check_int_range(chunk, "chunk (--chunk)", lo=1)
    if out_dir is not None:
        check_output_dir(out_dir, "out_dir (--out-dir)")
    if num_frames is not None:
        check_int_range(num_frames, "num_frames (--num-frames)", lo=1, hi=MAX_FRAMES)
    if fps is not None:
        check_finite_number(fps, "fps (--fps)", lo=0, lo_inclusive=False, hi=MAX_FPS)


def frame_images(out: RenderOutput, what: Sequence[str]) -> Dict[str, torch.Tensor]:
    """``[H, W, 3]`` displayable images of the render outputs named in ``what``."""
    images = {}
    for name in what:
        if name == "rgb":
            images[name] = out.rgb.clamp(0, 1)
        elif name == "depth":
            images[name] = colorize_depth(out.depth, out.accumulation)
        elif name == "accumulation":
            images[name] = out.accumulation.clamp(0, 1).expand(*out.accumulation.shape[:-1], 3)
        elif name == "normals":
            if out.normals is None:
                raise ValueError("this method does not render normals")
            images[name] = colorize_normals(out.normals, out.accumulation)
        else:
            raise ValueError(f"unknown render output {name!r}; choose from {RENDER_OUTPUTS}")
    return images


def make_path(dataset: SceneDataset, kind: str, num_frames: int) -> Cameras:
    """Cameras along a path: ``orbit`` (around the scene box centre), ``spiral`` (LLFF-style around the
    mean training pose) or ``interpolate`` (smooth spline through the test cameras)."""
    train_cams = dataset.split("train").cameras
    if kind == "orbit":
        centre = dataset.scene_box.mean(0)
        positions = train_cams.c2w[:, :, 3]
        radius = float((positions - centre).norm(dim=-1).mean())
        rel = positions - centre
        # Elevation: mean angle of the training cameras above the plane orthogonal to the mean "up".
        up = -train_cams.c2w[:, :, 1].mean(0)
        up = up / up.norm()
        elev = float(torch.rad2deg(torch.asin((rel @ up / rel.norm(dim=-1)).clamp(-1, 1))).mean())
        c2w = orbit_path(centre, radius, elev, num_frames, up=up)
    elif kind == "spiral":
        depth = 0.5 * (dataset.near + dataset.far)
        c2w = spiral_path(train_cams.c2w, num_frames, radius_scale=1.0, focus_distance=depth)
    elif kind == "interpolate":
        split = dataset.splits.get("test", dataset.split("train"))
        keys = split.cameras.c2w[:: max(1, len(split) // 8)]
        c2w = interpolate_path(keys, num_frames, loop=True)
    else:
        raise ValueError(f"unknown camera path {kind!r}; choose from {', '.join(CAMERA_PATHS)}")
    return path_cameras(c2w, train_cams, 0)


def render_path(
    run: Run,
    kind: str,
    out_dir: PathLike,
    num_frames: int = 60,
    fps: int = 24,
    what: Sequence[str] = ("rgb", "depth"),
    chunk: Optional[int] = None,
    progress: bool = True,
) -> List[Path]:
    """Render a camera path to one mp4 per output in ``what``; returns the video paths.

    Every frame is kept until the videos are written, so ``num_frames`` frames of every output
    are checked against the available memory first."""
    check_choice(kind, "camera path (--path)", CAMERA_PATHS)
    check_render_request(what, chunk, out_dir, num_frames, fps)
    train = run.dataset.split("train")
    height, width = int(train.cameras.heights[0]), int(train.cameras.widths[0])
    check_memory(
        num_frames * height * width * 3 * len(what), f"num_frames={num_frames} (--num-frames) of {width}x{height} "
        f"for {len(what)} output(s)", hint="render fewer frames or fewer outputs",
    )  # fmt: skip
    cams = make_path(run.dataset, kind, num_frames)
    return _render_videos(run, cams, what, chunk, progress, f"render {kind}", Path(out_dir), kind, fps)


def _render_videos(
    run: Run, cams: Any, what: Sequence[str], chunk: Optional[int], progress: bool, label: str, out_dir: Path, stem: str, fps: float
) -> List[Path]:
    """Render every camera of ``cams`` and write one ``<stem>_<output>.mp4`` per output in ``what``."""
    bg = run.dataset.eval_background()
    frames: Dict[str, List[np.ndarray]] = {w: [] for w in what}
    with Progress(disable=not progress) as bar:
        task = bar.add_task(label, total=len(cams))
        for i in range(len(cams)):
            out = run.method.render_camera(cams[i], bg, chunk=chunk, output_device="cpu", with_normals="normals" in what)
            for name, img in frame_images(out, what).items():
                frames[name].append(to_uint8(img))
            bar.advance(task)
    paths = []
    for name, seq in frames.items():
        path = out_dir / f"{stem}_{name}.mp4"
        write_video(path, seq, fps=fps)
        paths.append(path)
    return paths


def render_camera_path(
    run: Run,
    camera_path: PathLike,
    out_dir: PathLike,
    what: Sequence[str] = ("rgb",),
    chunk: Optional[int] = None,
    fps: Optional[float] = None,
    progress: bool = True,
) -> List[Path]:
    """Render a nerfstudio ``camera_path.json`` (:mod:`langfield.data.camera_path_json`) to one mp4
    per output in ``what`` (``<file stem>_<output>.mp4``); returns the video paths.

    The poses are in the run's world frame (the frame of its dataset cameras, where ``langfield
    view`` saves them); the size and field of view are the file's; ``fps`` overrides the file's."""
    check_render_request(what, chunk, out_dir, None, fps)
    path = read_camera_path(camera_path)
    check_memory(
        len(path) * path.width * path.height * 3 * len(what), f"{len(path)} frames of {path.width}x{path.height} "
        f"from {camera_path} for {len(what)} output(s)", hint="render fewer frames, a smaller size or fewer outputs",
    )  # fmt: skip
    name = Path(camera_path)
    return _render_videos(run, path.cameras(), what, chunk, progress, f"render {name.name}", Path(out_dir), name.stem, fps or path.fps)


def render_views(
    run: Run,
    split: str,
    out_dir: PathLike,
    what: Sequence[str] = ("rgb", "depth"),
    chunk: Optional[int] = None,
    indices: Optional[Iterable[int]] = None,
    progress: bool = True,
) -> List[Path]:
    """Render the cameras of ``split``: per view ``<name>_<output>.png`` plus ``<name>_compare.png``
    (render | ground truth | depth). Returns the written paths."""
    check_render_request(what, chunk, out_dir)
    if split not in run.dataset.splits:
        raise InputError(f"split {split!r} (--path): the dataset has {sorted(run.dataset.splits)}")
    image_set = run.dataset.split(split)
    bg = run.dataset.eval_background()
    out_dir = Path(out_dir)
    written = []
    idx = list(range(len(image_set))) if indices is None else list(indices)
    with Progress(disable=not progress) as bar:
        task = bar.add_task(f"render {split}", total=len(idx))
        for i in idx:
            out = run.method.render_camera(
                image_set.cameras[i], bg, chunk=chunk, output_device="cpu", with_normals="normals" in what
            )
            name = Path(image_set.paths[i]).stem if image_set.paths else f"{i:04d}"
            images = frame_images(out, what)
            for kind, img in images.items():
                written.append(write_image(out_dir / f"{name}_{kind}.png", img))
            gt = image_set.image_float(i, bg)
            panel = [images.get("rgb", out.rgb.clamp(0, 1)), gt]
            if "depth" in images:
                panel.append(images["depth"])
            written.append(write_image(out_dir / f"{name}_compare.png", side_by_side(*panel)))
            bar.advance(task)
    return written
