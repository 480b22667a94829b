"""The Python API that the CLI and benchmarks use: data + method + trainer + outputs in a few calls.

A *run directory* holds everything about one training run::

    run.json                 what was trained on what (method, method config, data, trainer config)
    config.json              the trainer config (written by the trainer)
    checkpoints/latest.ckpt  resumable checkpoint
    metrics.jsonl            training / eval log
    eval_test.json           final metrics
    renders/                 test-view renders beside ground truth, depth maps, videos

Example::

    from langfield.pipeline import DataConfig, train, render_path
    run = train(DataConfig("../shared/data/nerf_synthetic/lego", downscale=4), "ngp",
                TrainerConfig(max_seconds=600, output_dir="outputs/lego"))
    print(run.trainer.evaluate("test"))
"""

from __future__ import annotations

import time
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch

from langfield.configs import config_from_dict, config_to_dict
from langfield.data import load_dataset
from langfield.data.dataset import SceneDataset
from langfield.data.readers.procedural import PROCEDURAL
from langfield.geometry.camera_paths import interpolate_path, orbit_path, path_cameras, spiral_path
from langfield.io.atomic import atomic_write_json
from langfield.methods.base import Method, SceneInfo
from langfield.methods.registry import METHODS, make_method
from langfield.training.checkpoint import load_checkpoint
from langfield.training.render import render_camera
from langfield.training.trainer import Trainer, TrainerConfig
from langfield.types import Cameras, RenderOutput

RUN_FILE = "run.json"


@dataclass(frozen=True)
class DataConfig:
    """Which scene to load.

    Attributes:
        path: a dataset folder / transforms json, or ``"procedural"`` for the built-in demo scene.
        downscale: image downscale factor (4 -> quarter resolution).
        background: ``"white" | "black" | "random"`` to override the dataset's default compositing
            of RGBA images during training (evaluation uses white for "random").
        procedural_size: image size of the procedural scene (ignored otherwise).
        procedural_views: training views of the procedural scene (8 held-out test views besides).
    """

    path: str = PROCEDURAL
    downscale: float = 1.0
    background: Optional[str] = None
    procedural_size: int = 64
    procedural_views: int = 100


def load_data(cfg: DataConfig) -> SceneDataset:
    """Load the scene described by ``cfg`` (through the reader registry, procedural scene included)."""
    if cfg.path == PROCEDURAL:
        return load_dataset(
            PROCEDURAL,
            format=PROCEDURAL,
            downscale=cfg.downscale,
            background=cfg.background,
            size=cfg.procedural_size,
            num_train=cfg.procedural_views,
        )
    return load_dataset(cfg.path, downscale=cfg.downscale, background=cfg.background)


def scene_info(dataset: SceneDataset) -> SceneInfo:
    """What a method needs to know about ``dataset`` to be built."""
    return SceneInfo(
        scene_box=dataset.scene_box,
        near=dataset.near,
        far=dataset.far,
        num_train_images=len(dataset.split("train")),
        unbounded=dataset.unbounded,
        points3d=dataset.points3d,
        points3d_rgb=dataset.points3d_rgb,
        camera_centers=dataset.split("train").cameras.c2w[:, :3, 3].clone(),
    )


@dataclass(frozen=True)
class RunSpec:
    """Everything needed to rebuild a run: method name + config, data, trainer config."""

    method: str
    method_config: Dict[str, Any]
    data: DataConfig
    trainer: TrainerConfig

    def to_dict(self) -> Dict[str, Any]:
        return {
            "method": self.method,
            "method_config": self.method_config,
            "data": config_to_dict(self.data),
            "trainer": self.trainer.to_dict(),
        }

    @staticmethod
    def from_dict(d: Dict[str, Any], where: str = RUN_FILE) -> "RunSpec":
        for key in ("method", "method_config", "data", "trainer"):
            if key not in d:
                raise ValueError(f"{where}: missing field {key!r}")
        return RunSpec(
            method=d["method"],
            method_config=d["method_config"],
            data=config_from_dict(DataConfig, d["data"], f"{where}:data"),
            trainer=config_from_dict(TrainerConfig, d["trainer"], f"{where}:trainer"),
        )

    def build_method_config(self) -> Any:
        if self.method not in METHODS:
            raise ValueError(f"{RUN_FILE}: unknown method {self.method!r}; available: {sorted(METHODS)}")
        return config_from_dict(METHODS[self.method].config_cls, self.method_config, f"{RUN_FILE}:method_config")


@dataclass
class Run:
    """A built run: the method, its dataset, the spec and (when training) the trainer."""

    method: Method
    dataset: SceneDataset
    spec: RunSpec
    trainer: Optional[Trainer] = None

    @property
    def output_dir(self) -> Path:
        return Path(self.spec.trainer.output_dir)


def prepare_run(
    data: Union[DataConfig, SceneDataset],
    method: str,
    trainer: TrainerConfig,
    method_config: Any = None,
    resume: bool = False,
    preset: Optional[str] = None,
) -> Run:
    """Build dataset, method and trainer; write ``run.json``. Call ``run.trainer.train()`` next.

    Without ``method_config`` the method's defaults under ``preset`` are used (``"paper"`` or
    ``"cpu"``; default: ``"cpu"`` when training on a CPU, see :mod:`langfield.methods.presets`).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(sorted(METHODS))}")
    if method_config is None:
        from langfield.methods.presets import apply_overrides, default_preset_name, get_preset

        device = torch.device(trainer.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        overrides = get_preset(method, preset or default_preset_name(device))["set"]
        method_config = apply_overrides(METHODS[method].config_cls(), overrides)
    if isinstance(data, SceneDataset):
        dataset, data_cfg = data, DataConfig(path=f"<in-memory:{data.name}>")
    else:
        dataset, data_cfg = load_data(data), data
    model = make_method(method, scene_info(dataset), method_config)
    spec = RunSpec(method, config_to_dict(method_config), data_cfg, trainer)
    tr = Trainer(model, dataset, trainer, resume=resume)
    out = Path(trainer.output_dir)
    if tr.is_main:
        atomic_write_json(spec.to_dict(), out / RUN_FILE)
    return Run(model, dataset, spec, tr)


def train(
    data: Union[DataConfig, SceneDataset],
    method: str,
    trainer: TrainerConfig,
    method_config: Any = None,
    resume: bool = False,
    preset: Optional[str] = None,
) -> Run:
    """Build and train a method (see :func:`prepare_run`); returns the :class:`Run` (its trainer holds metrics)."""
    run = prepare_run(data, method, trainer, method_config, resume, preset)
    assert run.trainer is not None
    run.trainer.train()
    return run


def _read_run_file(run_dir: Path) -> Dict[str, Any]:
    """The raw ``run.json`` of ``run_dir`` (clear errors when missing or malformed)."""
    spec_path = run_dir / RUN_FILE
    if not spec_path.is_file():
        raise FileNotFoundError(f"{spec_path} not found: is {run_dir} a langfield run directory (langfield train --output-dir)?")
    try:
        return json.loads(spec_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{spec_path}: malformed JSON at line {exc.lineno}: {exc.msg}") from None


def _checkpoint_path(run_dir: Path, checkpoint: Optional[Union[str, Path]]) -> Path:
    """``checkpoint`` or ``run_dir/checkpoints/latest.ckpt``; it must exist."""
    path = Path(checkpoint) if checkpoint else run_dir / "checkpoints" / "latest.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found (train first, or pass --checkpoint)")
    return path


def load_run(run_dir: Union[str, Path], device: Optional[str] = None, checkpoint: Optional[str] = None) -> Run:
    """Rebuild a trained run from its directory (``run.json`` + ``checkpoints/latest.ckpt``)."""
    run_dir = Path(run_dir)
    spec_path = run_dir / RUN_FILE
    spec = RunSpec.from_dict(_read_run_file(run_dir), str(spec_path))
    if spec.data.path.startswith("<in-memory"):
        raise ValueError(f"{spec_path}: the run was trained on an in-memory dataset and cannot be reloaded from disk")
    dataset = load_data(spec.data)
    model = make_method(spec.method, scene_info(dataset), spec.build_method_config())
    state = load_checkpoint(_checkpoint_path(run_dir, checkpoint))
    model.load_state_dict(state["model"])
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(dev).eval()
    prepare = getattr(model, "prepare_for_render", None)
    if prepare is not None:
        prepare()
    return Run(model, dataset, spec)


def export_run(
    run_dir: Union[str, Path], fmt: str = "ply", output: Optional[Union[str, Path]] = None,
    checkpoint: Optional[Union[str, Path]] = None,
) -> Path:
    """Export a Gaussian-splatting run's cloud; returns the written file.

    ``fmt="ply"`` writes the reference 3DGS layout (:func:`langfield.io.gaussian_ply.write_gaussian_ply`),
    by default to ``run_dir/export/point_cloud.ply`` (atomically)."""
    if fmt != "ply":
        raise ValueError(f"unknown export format {fmt!r}; supported: 'ply'")
    from langfield.fields.gaussian_cloud import GaussianCloud
    from langfield.io.gaussian_ply import write_gaussian_ply

    run_dir = Path(run_dir)
    method = _read_run_file(run_dir).get("method")
    if method != "gaussians":
        raise ValueError(f"{run_dir} was trained with method {method!r}; only 'gaussians' runs export to PLY")
    state = load_checkpoint(_checkpoint_path(run_dir, checkpoint))
    cloud = GaussianCloud.from_state_dict(state["model"], prefix="cloud.")
    cloud.check_finite()
    out = Path(output) if output is not None else run_dir / "export" / "point_cloud.ply"
    return write_gaussian_ply(out, cloud.raw())


# ----------------------------------------------------------------------------- outputs

RENDER_OUTPUTS = ("rgb", "depth", "accumulation", "normals")


def _frame_images(out: RenderOutput, what: Sequence[str], near: float, far: float) -> Dict[str, torch.Tensor]:
    from langfield.io.colormaps import colorize_depth, colorize_normals

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
        raise ValueError(f"unknown camera path {kind!r}; choose orbit, spiral or interpolate")
    return path_cameras(c2w, train_cams, 0)


def render_path(
    run: Run,
    kind: str,
    out_dir: Union[str, Path],
    num_frames: int = 60,
    fps: int = 24,
    what: Sequence[str] = ("rgb", "depth"),
    chunk: int = 8192,
    progress: bool = True,
) -> List[Path]:
    """Render a camera path to one mp4 per output in ``what``; returns the video paths."""
    from rich.progress import Progress

    from langfield.io.video import write_video

    cams = make_path(run.dataset, kind, num_frames)
    bg = run.dataset.eval_background()
    out_dir = Path(out_dir)
    frames: Dict[str, List[np.ndarray]] = {w: [] for w in what}
    from langfield.io.images import to_uint8

    with Progress(disable=not progress) as bar:
        task = bar.add_task(f"render {kind}", total=len(cams))
        for i in range(len(cams)):
            out = render_camera(run.method, cams, i, run.dataset.near, run.dataset.far, bg, chunk, output_device="cpu",
                                with_normals="normals" in what)
            for name, img in _frame_images(out, what, run.dataset.near, run.dataset.far).items():
                frames[name].append(to_uint8(img))
            bar.advance(task)
    paths = []
    for name, seq in frames.items():
        path = out_dir / f"{kind}_{name}.mp4"
        write_video(path, seq, fps=fps)
        paths.append(path)
    return paths


def render_views(
    run: Run,
    split: str,
    out_dir: Union[str, Path],
    what: Sequence[str] = ("rgb", "depth"),
    chunk: int = 8192,
    indices: Optional[Iterable[int]] = None,
    progress: bool = True,
) -> List[Path]:
    """Render the cameras of ``split``: per view ``<name>_<output>.png`` plus ``<name>_compare.png``
    (render | ground truth | depth). Returns the written paths."""
    from rich.progress import Progress

    from langfield.io.images import side_by_side, write_image

    image_set = run.dataset.split(split)
    bg = run.dataset.eval_background()
    out_dir = Path(out_dir)
    written = []
    idx = list(range(len(image_set))) if indices is None else list(indices)
    with Progress(disable=not progress) as bar:
        task = bar.add_task(f"render {split}", total=len(idx))
        for i in idx:
            out = render_camera(run.method, image_set.cameras, i, run.dataset.near, run.dataset.far, bg, chunk,
                                output_device="cpu", with_normals="normals" in what)
            name = Path(image_set.paths[i]).stem if image_set.paths else f"{i:04d}"
            images = _frame_images(out, what, run.dataset.near, run.dataset.far)
            for kind, img in images.items():
                written.append(write_image(out_dir / f"{name}_{kind}.png", img))
            gt = image_set.image_float(i, bg)
            panel = [images.get("rgb", out.rgb.clamp(0, 1)), gt]
            if "depth" in images:
                panel.append(images["depth"])
            written.append(write_image(out_dir / f"{name}_compare.png", side_by_side(*panel)))
            bar.advance(task)
    return written


def evaluate_run(
    run: Run,
    split: str = "test",
    write_renders: bool = True,
    lpips_weights: Optional[Union[str, Path]] = None,
    chunk: int = 8192,
) -> Dict[str, Any]:
    """Evaluate a loaded run on every view of ``split``; writes ``RUN_DIR/eval_<split>.json``.

    LPIPS is computed when weights are found locally (``lpips_weights`` or
    ``$LANGFIELD_LPIPS_WEIGHTS``); otherwise the result's ``lpips`` is None and ``lpips_note`` says why.
    """
    from langfield.eval.lpips import try_load_lpips
    from langfield.training.evaluation import evaluate_views

    device = next(run.method.parameters()).device
    lpips_model, note = try_load_lpips(lpips_weights, device=device)
    result = evaluate_views(
        run.method,
        run.dataset,
        split,
        chunk=chunk,
        render_dir=run.output_dir / "renders" / split if write_renders else None,
        lpips_model=lpips_model,
    )
    result["lpips_note"] = note
    atomic_write_json(result, run.output_dir / f"eval_{split}.json")
    return result


def run_demo(
    output_dir: Union[str, Path] = "outputs/demo",
    budget_s: float = 170.0,
    size: int = 64,
    device: Optional[str] = None,
    seed: int = 0,
    console: Any = None,
) -> Dict[str, Any]:
    """The ``langfield demo``: Instant-NGP on the procedural scene, then renders, depth, video, metrics.

    Writes into ``output_dir``: ``renders/test/*_compare.png`` (render | ground truth | depth),
    ``renders/test/*_depth.png``, ``orbit_rgb.mp4`` + ``orbit_depth.mp4``, ``metrics.json``
    (test PSNR/SSIM and depth error against the analytic ground truth).
    """
    from langfield.methods.ngp import NGPConfig
    from langfield.training.evaluation import evaluate_views

    out = Path(output_dir)
    say = console.print if console is not None else print
    data = DataConfig(PROCEDURAL, 1.0, None, size, procedural_views=100)
    trainer_cfg = TrainerConfig(
        max_steps=20_000,
        max_seconds=budget_s,
        num_rays=2048,
        eval_every=0,
        checkpoint_every=500,
        log_every=25,
        output_dir=str(out),
        seed=seed,
        device=device,
        mixed_precision=True,
    )
    say(f"langfield demo: training Instant-NGP on the procedural scene ({size}x{size}) for {budget_s:.0f}s")
    run = train(data, "ngp", trainer_cfg, demo_ngp_config())
    assert run.trainer is not None
    t0 = time.perf_counter()
    result = evaluate_views(run.method, run.dataset, "test", render_dir=out / "renders" / "test")
    depth_err = result["depth_mae"]
    videos = render_path(run, "orbit", out, num_frames=60, fps=20, what=("rgb", "depth"))
    metrics = {
        "scene": run.dataset.name,
        "method": "ngp",
        "width": run.dataset.split("test").width,
        "height": run.dataset.split("test").height,
        "steps": run.trainer.step,
        "train_seconds": run.trainer.elapsed_seconds,
        "test_psnr": result["psnr"],
        "test_ssim": result["ssim"],
        "test_depth_mae": depth_err,
        "render_fps": result["render_fps"],
        "per_image": result["per_image"],
    }
    atomic_write_json(metrics, out / "metrics.json")
    say(
        f"test PSNR {result['psnr']:.2f} dB | SSIM {result['ssim']:.4f} | depth MAE {depth_err:.4f} "
        f"({time.perf_counter() - t0:.0f}s to render)"
    )
    say(f"renders beside ground truth: {out / 'renders' / 'test'}")
    say(f"orbit videos: {', '.join(str(v) for v in videos)}")
    say(f"metrics: {out / 'metrics.json'}")
    return metrics


def demo_ngp_config():
    """Instant-NGP settings for the small procedural scene on a CPU: a 2^17 table and a 64^3
    occupancy grid are plenty for 64^2 images, and 2^15 samples per step keep steps short."""
    from langfield.fields.ngp_field import NGPFieldConfig
    from langfield.methods.ngp import NGPConfig
    from langfield.ops.hash_encoding import HashGridConfig

    from langfield.ops.occupancy import OccupancyGridConfig

    return NGPConfig(
        field=NGPFieldConfig(hash_grid=HashGridConfig(log2_hashmap_size=17, max_resolution=512)),
        grid=OccupancyGridConfig(resolution=64, warmup_steps=48),
        steps_per_diagonal=384,
        target_samples_per_step=1 << 15,
    )
