"""``capture(INPUT, OUTPUT, config)``: photos or a video -> a COLMAP scene folder langfield loads.

The steps, in order (each timed in ``capture_report.json`` and shown as a progress bar):

1. **images** -- photos are copied to ``OUTPUT/images`` (all one size); a video gives its
   ``num_frames`` sharpest frames (:mod:`langfield.capture.frames`).
2. **features / matching / mapping** -- pycolmap in a child process (:mod:`langfield.capture.sfm`):
   SIFT with one shared camera (``camera_model``, default ``SIMPLE_RADIAL``), matching chosen by
   :func:`~langfield.capture.sfm.choose_matcher`, incremental mapping.
3. **checks** -- the largest model is kept (:func:`~langfield.capture.model.choose_largest_model`),
   suspicious cameras are found (:mod:`langfield.capture.quality`) and taken out; each is
   re-localised in the worker from its verified matches to the other registered images (RANSAC at
   4 px instead of COLMAP's 12) and kept only if it then passes every check, else dropped; the
   warning lists them all.
4. **registration** -- fewer than ``min_registered`` of the images registered fails loudly, naming
   the unregistered images (the report is still written, with ``"status": "failed"`` and the
   ``"error"``, as for every failure after the output folder was created).
5. **write** -- ``OUTPUT/sparse/0`` (binary, strays removed), ``OUTPUT/transforms.json`` (OpenGL
   camera-to-world, nerfstudio fields, referencing ``images/``), ``OUTPUT/sparse_points.ply``.
6. **undistort** -- ``OUTPUT/undistorted/{images,sparse}`` with PINHOLE cameras (for Gaussians,
   which have no distortion model) through ``pycolmap.undistort_images``.

Output layout::

    OUTPUT/images/               the images SfM saw (distorted originals)
    OUTPUT/sparse/0/             cameras.bin images.bin points3D.bin  (loaded by the "colmap" reader)
    OUTPUT/undistorted/          images/ + sparse/ (PINHOLE), also a COLMAP scene folder
    OUTPUT/transforms.json       the same cameras for nerfstudio / instant-ngp tools
    OUTPUT/capture_report.json   what happened (see :func:`capture`)
    OUTPUT/logs/colmap.log       COLMAP's own log
    OUTPUT/work/                 database.db and the raw models

``OUTPUT`` holds both a ``transforms.json`` and a COLMAP model; ``load_dataset(OUTPUT)`` picks
``transforms.json`` first (the reader order), ``format="colmap"`` the model: they hold the same
cameras.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Union

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from langfield._checks import InputError, check_fields, check_output_dir
from langfield.capture.frames import PHOTO_SUFFIXES, extract_video_frames, list_photos
from langfield.capture.model import (
    add_image,
    choose_largest_model,
    model_sizes,
    remove_images,
    write_final_model,
    write_transforms_json,
)
from langfield.capture.quality import (
    CameraCheckConfig,
    PairRotation,
    SuspiciousCamera,
    find_suspicious_cameras,
    image_statistics,
    model_statistics,
    pair_disagreements,
)
from langfield.capture.sfm import CaptureError, choose_matcher, require_pycolmap, run_worker
from langfield.io.atomic import atomic_write_json
from langfield.geometry.alignment import rotation_angles_deg
from langfield.io.colmap import ColmapImage, ColmapModel, qvec_to_rotmat, read_model, rotmat_to_qvec, write_model
from langfield.io.points_ply import write_points_ply

PathLike = Union[str, os.PathLike]

__all__ = ["CaptureConfig", "CaptureResult", "capture", "check_registration"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptureConfig:
    """Options of ``langfield capture`` (every field is a CLI flag)."""

    num_frames: int = 150
    """Video only: frames kept, the sharpest of each of this many equal windows of the video."""
    matcher: Literal["auto", "sequential", "exhaustive", "vocab_tree"] = "auto"
    """Image pairs matched: auto = sequential for video, exhaustive for up to 100 photos; above that
    vocab_tree with --vocab-tree, else sequential (photos in capture order by file name)."""
    vocab_tree: Optional[Path] = None
    """COLMAP vocabulary-tree file (never downloaded): --matcher vocab_tree, large photo sets, and
    loop detection for sequential matching."""
    sequential_overlap: int = 10
    """Sequential matching: each frame is matched with this many following frames."""
    camera_model: Literal["SIMPLE_RADIAL", "RADIAL", "OPENCV", "PINHOLE", "SIMPLE_PINHOLE"] = "SIMPLE_RADIAL"
    """COLMAP camera model shared by all images: SIMPLE_RADIAL (f cx cy k1, COLMAP's default; on LLFF
    fern closer to the published poses than OPENCV), OPENCV (fx fy cx cy k1 k2 p1 p2) for wide-angle lenses."""
    max_image_size: int = 1600
    """Feature extraction works on images whose longer side is at most this (pixels)."""
    max_num_features: int = 8192
    """SIFT features per image."""
    num_threads: int = -1
    """Threads for pycolmap (-1: all cores)."""
    device: Literal["auto", "cpu"] = "auto"
    """pycolmap device: auto uses CUDA when pycolmap-cuda12 finds a GPU."""
    min_registered: float = 0.8
    """Fail when fewer than this fraction of the images is registered (after dropping suspicious cameras)."""
    drop_suspicious: bool = True
    """Take cameras flagged by the checks (residuals, track support, neighbour consistency) out of the
    model, with a warning: re-localised when that passes every check again (--relocalize), else dropped."""
    relocalize: bool = True
    """Re-estimate each flagged camera from its verified matches to the other registered images (tighter
    RANSAC than COLMAP's registration) and keep it if it then passes every check."""
    relocalize_max_error_px: float = 4.0
    """Re-localisation RANSAC threshold in pixels (COLMAP registers images at 12 px)."""
    relocalize_min_inliers: int = 30
    """Re-localisation needs at least this many 2D-3D inliers (and 25 % of the correspondences)."""
    checks: CameraCheckConfig = CameraCheckConfig()
    pairs_per_image: int = 6
    """Neighbour consistency: best-matched pairs per image whose two-view rotation is checked (0: off)."""
    undistort: bool = True
    """Also write OUTPUT/undistorted (PINHOLE images and model, for Gaussians)."""
    seed: int = 0
    """pycolmap's random seed."""
    timeout_s: Optional[float] = None
    """Stop SfM after this many seconds (None: no limit)."""

    def __post_init__(self):
        check_fields(self, int_min_1=("num_frames", "sequential_overlap", "max_image_size", "max_num_features",
                                      "relocalize_min_inliers"),
                     int_min_0=("pairs_per_image",), fraction=("min_registered",),
                     positive=("relocalize_max_error_px",))  # fmt: skip
        if self.num_threads == 0 or self.num_threads < -1:
            raise InputError(f"CaptureConfig.num_threads: must be -1 (all cores) or >= 1, got {self.num_threads}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise InputError(f"CaptureConfig.timeout_s: must be > 0 or None, got {self.timeout_s}")


@dataclass(frozen=True)
class CaptureResult:
    """What :func:`capture` wrote: the scene folder, its model folder and the report."""

    output: Path
    model_dir: Path
    report: Dict[str, Any]


def check_registration(given: Sequence[str], registered: Sequence[str], min_fraction: float,
                       dropped: Sequence[str] = ()) -> List[str]:  # fmt: skip
    """The given images that are not registered; raises :class:`CaptureError` naming them when fewer
    than ``min_fraction`` of ``given`` are registered (``dropped`` cameras count as unregistered).

    >>> check_registration(["a", "b", "c", "d", "e"], ["a", "b", "c", "d"], 0.8)
    ['e']
    """
    reg = set(registered) - set(dropped)
    missing = [n for n in given if n not in reg]
    fraction = (len(given) - len(missing)) / max(1, len(given))
    if fraction < min_fraction or not reg:
        shown = ", ".join(missing[:20]) + (f" ... and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise CaptureError(
            f"only {len(given) - len(missing)} of {len(given)} images registered ({100 * fraction:.0f} % < "
            f"{100 * min_fraction:.0f} %); not registered: {shown}. Try more overlap between photos, sharper "
            "frames, --matcher exhaustive, or --min-registered to accept fewer"
        )
    return missing


class _Stages:
    """One rich progress bar per stage; seconds per stage for the report."""

    def __init__(self, progress: Optional[Progress]):
        self.progress = progress
        self.tasks: Dict[str, Any] = {}
        self.seconds: Dict[str, float] = {}
        self.started: Dict[str, float] = {}

    def start(self, name: str, total: Optional[float] = None) -> None:
        self.started[name] = time.perf_counter()
        if self.progress is not None and name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, total=total)

    def advance_to(self, name: str, completed: float) -> None:
        if self.progress is not None and name in self.tasks:
            self.progress.update(self.tasks[name], completed=completed)

    def done(self, name: str, seconds: Optional[float] = None) -> None:
        t = time.perf_counter() - self.started.get(name, time.perf_counter())
        self.seconds[name] = round(float(seconds if seconds is not None else t), 3)
        if self.progress is not None and name in self.tasks:
            task_id = self.tasks[name]
            total = next(t.total for t in self.progress.tasks if t.id == task_id) or 1
            self.progress.update(task_id, total=total, completed=total)


def _prepare_images(source: Path, images_dir: Path, config: CaptureConfig, stages: _Stages) -> Dict[str, Any]:
    """Step 1: fill ``images_dir``; returns the image names and what the input was."""
    if source.is_file():
        stages.start("frames")

        def on_frame(phase: str, i: int) -> None:
            if phase == "score":
                stages.advance_to("frames", i + 1)

        vf = extract_video_frames(source, images_dir, config.num_frames, on_frame=on_frame)
        stages.done("frames")
        return {"kind": "video", "names": [p.name for p in vf.paths], "video_frames_decoded": vf.num_decoded,
                "video_frame_indices": vf.frame_indices, "video_fps": vf.fps,
                "video_sharpness_kept_mean": float(np.mean([vf.scores[i] for i in vf.frame_indices])),
                "video_sharpness_all_mean": float(np.mean(vf.scores))}  # fmt: skip
    photos = list_photos(source)
    stages.start("images", total=len(photos))
    images_dir.mkdir(parents=True, exist_ok=True)
    same = images_dir.resolve() == source.resolve()
    for i, p in enumerate(photos):
        if not same:
            shutil.copyfile(p, images_dir / p.name)
        stages.advance_to("images", i + 1)
    stages.done("images")
    return {"kind": "photos", "names": [p.name for p in photos]}


def capture(
    input_path: PathLike,
    output: PathLike,
    config: CaptureConfig = CaptureConfig(),
    *,
    progress: Optional[bool] = None,
    console: Optional[Console] = None,
    worker_command: Optional[List[str]] = None,
) -> CaptureResult:
    """Reconstruct cameras and sparse points from a folder of photos or a video file.

    Args:
        input_path: a folder of ``.jpg/.jpeg/.png`` photos (one size) or a video file.
        output: the scene folder to write (created; the outputs of an earlier capture into it are
            replaced; a folder holding a model or transforms.json from elsewhere is refused).
            See the module docstring for the layout.
        config: :class:`CaptureConfig`.
        progress: show rich progress bars (default: when the console is a terminal).
        console: where progress and warnings go (default: stderr).
        worker_command: replaces the pycolmap worker command (tests).

    Returns a :class:`CaptureResult`. ``capture_report.json`` holds: ``status``, input kind,
    ``images_given``, ``registered`` (after dropping), ``registered_fraction``, ``unregistered``,
    ``dropped`` (name and reasons), ``relocalized`` (name, inliers, rotation change),
    ``suspicious`` (all flagged cameras), ``pairs_checked`` and
    ``pair_rotation_disagreement_deg`` (median / p95 / max over the checked image pairs),
    ``points``, ``mean_reprojection_error_px``,
    ``mean_track_length``, ``models_found`` (images/points of every model mapping left),
    ``seconds`` per stage, the matcher and the options.

    Raises :class:`~langfield.capture.sfm.CaptureError` (an ``InputError``) when pycolmap is
    missing, crashes, or registers too few images; ``InputError`` for an input without images or a
    video ffmpeg cannot read.
    """
    source, out = Path(input_path), Path(output)
    if not source.exists():
        raise InputError(f"INPUT {source}: no such folder or video file")
    if source.is_file() and source.suffix.lower() in PHOTO_SUFFIXES:
        raise InputError(f"INPUT {source}: a single photo; give the folder that holds the photos (or a video file)")
    if source.is_dir():
        list_photos(source)  # refuse a folder without usable photos before anything is written
    check_output_dir(out, "--output")
    if worker_command is None:
        require_pycolmap()
    if config.vocab_tree is not None or config.matcher == "vocab_tree":
        choose_matcher(config.matcher, 0, is_video=False, vocab_tree=config.vocab_tree)  # refuse early
    console = console or Console(stderr=True)
    show = console.is_terminal if progress is None else progress
    ours = (out / "capture_report.json").is_file()
    foreign = [n for n in ("sparse", "undistorted", "work", "transforms.json") if (out / n).exists()]
    if foreign and not ours:
        raise InputError(f"--output {out}: already holds {', '.join(foreign)} that langfield capture did not write "
                         "(no capture_report.json); choose a new or empty folder")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    for stale in (work, out / "sparse", out / "undistorted"):
        shutil.rmtree(stale, ignore_errors=True)
    log_path = out / "logs" / "colmap.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("", encoding="utf-8")

    bar = Progress(SpinnerColumn(), TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=console, disable=not show)  # fmt: skip
    report: Dict[str, Any] = {"input": str(source), "output": str(out), "status": "running"}
    atomic_write_json(report, out / "capture_report.json")  # marks the folder as a capture's (rerun replaces it)
    stages = _Stages(bar)
    t_all = time.perf_counter()
    try:
        with bar:
            model_dir = _run(source, out, config, report, stages, console, log_path, worker_command)
    except InputError as err:  # CaptureError included: the report says what happened, then the error
        report["status"] = "failed"
        report["error"] = " ".join(str(err).split())
        _write_report(out, report, stages, t_all, config)
        raise
    report["status"] = "ok"
    _write_report(out, report, stages, t_all, config)
    return CaptureResult(out, model_dir, report)


def _run(source: Path, out: Path, config: CaptureConfig, report: Dict[str, Any], stages: "_Stages",
         console: Console, log_path: Path, worker_command: Optional[List[str]]) -> Path:
    """Steps 1-6 of the module docstring; fills ``report`` and returns the model folder."""
    work = out / "work"
    images = _prepare_images(source, out / "images", config, stages)
    names = images.pop("names")
    report.update(images)
    report["images_given"] = len(names)
    matcher = choose_matcher(config.matcher, len(names), is_video=images["kind"] == "video", vocab_tree=config.vocab_tree)
    report["matcher"] = matcher

    def on_event(kind: str, stage: str, value: Optional[float]) -> None:
        if kind == "stage":
            stages.start(stage, total=len(names) if stage in ("features", "mapping") else None)
        elif kind == "done":
            stages.done(stage, value)
        else:
            stages.advance_to(stage, value or 0)

    request = {
        "task": "sfm", "work_dir": str(work), "image_dir": str(out / "images"), "image_names": names,
        "result_path": str(work / "sfm_result.json"), "camera_model": config.camera_model,
        "max_image_size": config.max_image_size, "max_num_features": config.max_num_features,
        "num_threads": config.num_threads, "device": config.device, "seed": config.seed, "matcher": matcher,
        "vocab_tree": None if config.vocab_tree is None else str(config.vocab_tree),
        "sequential_overlap": config.sequential_overlap, "pairs_per_image": config.pairs_per_image,
        "pair_min_inliers": 30,
    }  # fmt: skip
    run_worker(request, work, log_path, on_event=on_event, timeout_s=config.timeout_s, command=worker_command)
    result = json.loads((work / "sfm_result.json").read_text(encoding="utf-8"))
    report["pycolmap_version"] = result.get("pycolmap_version")

    stages.start("checks")
    sizes = model_sizes(work / "sparse")
    report["models_found"] = {k: {"images": v[0], "points": v[1]} for k, v in sizes.items()}
    best = choose_largest_model(work / "sparse")
    if best is None:
        report["unregistered"] = names
        hint = "more overlap between views" + ("" if matcher == "exhaustive" else ", or --matcher exhaustive")
        raise CaptureError(f"pycolmap reconstructed no model from the {len(names)} images of {source} "
                           f"(matcher {matcher}; see {log_path}); try {hint}")  # fmt: skip
    report["model_chosen"] = best.name
    model = read_model(best)
    pairs = [PairRotation(p["name_a"], p["name_b"], p["num_inliers"], np.asarray(p["rotation"])) for p in result["pairs"]]
    stats = image_statistics(model)
    angles = [a for _, _, a in pair_disagreements(stats, pairs)]
    report["pairs_checked"] = len(angles)
    if angles:
        report["pair_rotation_disagreement_deg"] = {"median": float(np.median(angles)),
                                                    "p95": float(np.percentile(angles, 95)), "max": float(max(angles))}  # fmt: skip
    ordered = images["kind"] == "video"
    suspicious = find_suspicious_cameras(stats, pairs, ordered=ordered, config=config.checks)
    report["suspicious"] = [{"name": s.name, "reasons": list(s.reasons)} for s in suspicious]
    repaired: List[Dict[str, Any]] = []
    if suspicious and config.drop_suspicious:
        model = remove_images(model, [s.image_id for s in suspicious])
        if config.relocalize:  # its own "relocalize" stage runs inside "checks"
            model, repaired = _relocalize(model, read_model(best), suspicious, pairs, ordered, config, work, log_path,
                                          on_event, worker_command)  # fmt: skip
    fixed = {r["name"] for r in repaired}
    dropped = [s for s in suspicious if s.name not in fixed] if config.drop_suspicious else []
    report["relocalized"] = repaired
    report["dropped"] = [{"name": s.name, "reasons": list(s.reasons)} for s in dropped]
    if suspicious:
        if not config.drop_suspicious:
            verb = "kept (--no-drop-suspicious)"
        else:
            verb = f"{len(fixed)} re-localised and kept, {len(dropped)} dropped"
        lines = "; ".join(f"{s.name}: {', '.join(s.reasons)}" for s in suspicious)
        console.print(f"[yellow]warning:[/] {len(suspicious)} suspicious camera(s), {verb}: {escape(lines)}",
                      highlight=False)  # fmt: skip
        log.warning("suspicious cameras, %s: %s", verb, lines)
    figures = model_statistics(model)
    report.update(registered=figures["registered_images"], points=figures["points"],
                  mean_reprojection_error_px=figures["mean_reprojection_error_px"],
                  mean_track_length=figures["mean_track_length"])  # fmt: skip
    registered = sorted(im.name for im in model.images.values())
    report["registered_fraction"] = len(registered) / max(1, len(names))
    report["unregistered"] = [n for n in names if n not in set(registered)]
    stages.done("checks")
    check_registration(names, registered, config.min_registered)

    stages.start("write")
    model_dir = write_final_model(model, out / "sparse")
    write_transforms_json(model, out / "transforms.json")
    if model.points is not None and len(model.points):
        write_points_ply(out / "sparse_points.ply", torch.from_numpy(model.points.xyz).float(),
                         torch.from_numpy(model.points.rgb.copy()))  # fmt: skip
    stages.done("write")

    if config.undistort:
        und = {"task": "undistort", "output_dir": str(out / "undistorted"), "model_dir": str(model_dir),
               "image_dir": str(out / "images"), "num_threads": config.num_threads}  # fmt: skip
        run_worker(und, work, log_path, on_event=on_event, timeout_s=config.timeout_s, command=worker_command)
        for extra in ("stereo", "run-colmap-geometric.sh", "run-colmap-photometric.sh"):
            p = out / "undistorted" / extra
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    return model_dir


def _relocalize(
    model: ColmapModel, original: ColmapModel, suspicious: Sequence[SuspiciousCamera], pairs: Sequence[PairRotation],
    ordered: bool, config: CaptureConfig, work: Path, log_path: Path, on_event: Any, worker_command: Optional[List[str]],
) -> tuple:
    """Re-estimate the flagged cameras against ``model`` (which lacks them) in the worker and keep those
    that then pass every check; returns ``(model with the kept ones, [record per kept camera])``."""
    base_dir = work / "relocalize" / "model"
    shutil.rmtree(base_dir, ignore_errors=True)
    write_model(model, base_dir)
    flagged = {s.name: s for s in suspicious}
    camera_id = original.images[suspicious[0].image_id].camera_id
    request = {"task": "relocalize", "database": str(work / "database.db"), "model_dir": str(base_dir),
               "names": sorted(flagged), "camera_id": camera_id, "result_path": str(work / "relocalize_result.json"),
               "max_error_px": config.relocalize_max_error_px, "min_inliers": config.relocalize_min_inliers,
               "min_inlier_ratio": 0.25}  # fmt: skip
    run_worker(request, work, log_path, on_event=on_event, timeout_s=config.timeout_s, command=worker_command)
    results = json.loads((work / "relocalize_result.json").read_text(encoding="utf-8"))["images"]
    candidate = model
    tried = {}
    for r in results:
        if not r.get("ok"):
            continue
        old = original.images[flagged[r["name"]].image_id]
        R = np.asarray(r["rotation"], np.float64)
        image = ColmapImage(old.id, rotmat_to_qvec(R), np.asarray(r["translation"], np.float64), old.camera_id, old.name,
                            np.asarray(r["xys"], np.float64).reshape(-1, 2), np.asarray(r["point3d_ids"], np.int64))  # fmt: skip
        candidate = add_image(candidate, image)
        tried[r["name"]] = (r, old, image)
    if not tried:
        return model, []
    still = {s.name for s in find_suspicious_cameras(image_statistics(candidate), pairs, ordered=ordered, config=config.checks)}
    kept = []
    for name, (r, old, image) in sorted(tried.items()):
        if name in still:
            continue
        R_old, R_new = qvec_to_rotmat(old.qvec), qvec_to_rotmat(image.qvec)
        kept.append({"name": name, "inliers": r["num_inliers"], "correspondences": r["num_correspondences"],
                     "rotation_change_deg": float(rotation_angles_deg(R_old[None], R_new[None])[0])})  # fmt: skip
    bad = [original.images[flagged[n].image_id].id for n in tried if n in still]
    return remove_images(candidate, bad), kept


def _write_report(out: Path, report: Dict[str, Any], stages: _Stages, t_all: float, config: CaptureConfig) -> None:
    report["seconds"] = dict(stages.seconds, total=round(time.perf_counter() - t_all, 3))
    options = asdict(config)
    options["vocab_tree"] = None if config.vocab_tree is None else str(config.vocab_tree)
    report["options"] = options
    atomic_write_json(report, out / "capture_report.json")
