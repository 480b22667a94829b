"""``langfield`` command line: ``capture | train | render | eval | export | language | query | view | demo | generate | toyworld | controlnet-train``.

This is the only module that parses arguments. Each command is a dataclass whose options are the
library's own config dataclasses (``DataConfig``, ``TrainerConfig``, ``LanguageFieldConfig``,
``GenerateOptions``, ``ToyWorldConfig``, ``CaptureConfig``), so every option is declared once, with
its help text, beside the code that reads it; each command is one call into :mod:`langfield.runs`
(``capture``: into :mod:`langfield.capture`, which makes a scene folder, not a run).

Errors: bad input (``ValueError``, ``FileNotFoundError``, a non-finite loss) prints one line and
exits with status 2; anything else is a bug and shows its traceback. ``LANGFIELD_DEBUG=1`` shows
the traceback of bad-input errors too.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Dict, List, Literal, Optional, Tuple, Union

import tyro
from rich.console import Console

from langfield import runs as runs_api
from langfield._checks import check_int_range
from langfield.capture import CaptureConfig, capture
from langfield.configs import apply_overrides
from langfield.data.camera_path_json import read_camera_path
from langfield.data.procedural import ProceduralSceneConfig, write_procedural_dataset
from langfield.data.toyworld import ToyWorldConfig, write_toyworld, write_toyworld_scene
from langfield.kernels.cpu_allocator import keep_freed_memory
from langfield.language.distillation import LanguageFieldConfig
from langfield.methods.registry import method_names
from langfield.runs.controlnet_config import ControlTrainConfig
from langfield.runs.demo import run_demo
from langfield.runs.evaluate import check_evaluate_request, evaluate_run
from langfield.runs.export import export_run
from langfield.runs.generate import GenerateOptions, RewriteScene, generate_to_folder
from langfield.runs.language import run_queries, train_language
from langfield.runs.loading import load_run
from langfield.runs.render import CAMERA_PATHS, check_render_request, render_camera_path, render_path, render_views
from langfield.runs.scene_control import SceneGenerateOptions, check_scene_generate_options, generate_scene_to_folder
from langfield.runs.spec import RUN_FILE, DataConfig, check_run_dir
from langfield.runs.train import prepare_run
from langfield.training.trainer import NonFiniteLossError, TrainerConfig
from langfield.viewer.callback import ViewerCallback
from langfield.viewer.cameras import ResolutionPolicy
from langfield.viewer.scene_view import SceneView
from langfield.viewer.server import LOCALHOST, Viewer, import_viser, host_warning, open_scene_view

console = Console(stderr=True, soft_wrap=True)  # soft wrap: a long path in a message is never broken

Output = Literal["rgb", "depth", "accumulation", "normals"]
#: Every registered method (built-in, ``register_method`` or ``langfield.methods`` entry points).
MethodName = Literal[method_names()]  # type: ignore[valid-type]
Flat = tyro.conf.OmitArgPrefixes

#: The trainer defaults of ``langfield train`` (the library's own defaults suit API use).
TRAIN_DEFAULTS = TrainerConfig(
    max_steps=20_000, eval_every=1000, checkpoint_every=1000, log_every=50, mixed_precision=True
)


def parse_overrides(items: List[str]) -> Dict[str, Any]:
    """``["a.b=3", "c=x"]`` -> ``{"a.b": 3, "c": "x"}`` (values parsed as JSON when they parse)."""
    out = {}
    for item in items:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


@dataclass
class Capture:
    """Photos or a video -> camera poses and sparse points (pycolmap): a COLMAP scene folder that
    'langfield train --data OUTPUT' loads, plus transforms.json and capture_report.json."""

    input: tyro.conf.Positional[Path]
    """A folder of .jpg/.png photos (one size) or a video file."""
    output: Path
    """Scene folder to write (images/, sparse/0/, undistorted/, transforms.json, capture_report.json)."""
    config: Annotated[CaptureConfig, Flat] = CaptureConfig()


@dataclass
class Train:
    """Train a method on a scene and evaluate it on the test split."""

    data: Annotated[DataConfig, Flat] = DataConfig()
    trainer: Annotated[TrainerConfig, Flat] = TRAIN_DEFAULTS
    method: MethodName = "ngp"
    """Reconstruction method (any registered method)."""
    preset: Optional[Literal["paper", "cpu"]] = None
    """Hyper-parameter preset: 'paper' settings, or 'cpu' (cheaper sampling for a few CPU cores).
    Default: 'cpu' on CPU, 'paper' on CUDA. --set overrides apply on top."""
    set: tyro.conf.UseAppendAction[List[str]] = field(default_factory=list)
    """Method hyper-parameter overrides KEY=VALUE (repeatable), e.g. field.hash_grid.log2_hashmap_size=17."""
    resume: bool = False
    """Continue from OUTPUT_DIR/checkpoints/latest.ckpt when it exists."""
    eval_split: str = "test"
    """Split evaluated (all views) at the end; renders are written under OUTPUT_DIR/renders."""
    skip_eval: bool = False
    """Do not evaluate after training."""
    viewer: bool = False
    """Watch training in the live web viewer (needs viser: pip install -e ".[viewer]"); it stays open
    after training until Ctrl+C."""
    viewer_host: str = LOCALHOST
    """Address the viewer binds (127.0.0.1: this machine only)."""
    viewer_port: int = 0
    """Viewer port (0: a free one; the URL is printed)."""


@dataclass
class Render:
    """Render a trained run: the views of a split, or a camera path as video."""

    run_dir: tyro.conf.Positional[Path]
    """Run directory written by 'langfield train'."""
    path: Literal["test", "train", "val", "orbit", "spiral", "interpolate"] = "test"
    """Dataset split to render (PNGs) or camera path to render (mp4)."""
    outputs: Tuple[Output, ...] = ("rgb", "depth")
    """What to write: rgb, depth (coloured), accumulation, normals."""
    out_dir: Optional[Path] = None
    """Where to write (default RUN_DIR/renders/PATH)."""
    num_frames: int = 120
    """Frames of a camera path."""
    fps: Optional[int] = None
    """Video frame rate (default 30; with --camera-path, the file's)."""
    camera_path: Optional[Path] = None
    """A nerfstudio camera_path.json (e.g. saved by 'langfield view') to render to mp4 instead of
    --path; its size, fields of view and frame rate are used (--fps overrides the frame rate when given)."""
    chunk: Optional[int] = None
    """Rays per render call (lower it to bound memory; default 2048 on the CPU, 8192 on a GPU)."""
    device: Optional[str] = None
    """'cpu' or 'cuda' (default CUDA when available)."""


@dataclass
class View:
    """Open the live web viewer on a trained run (viser; pip install -e ".[viewer]"): renders of your
    camera, render modes, language queries when the run has a language field, camera paths."""

    run_dir: tyro.conf.Positional[Path]
    """Run directory written by 'langfield train'."""
    host: str = LOCALHOST
    """Address to bind; the default serves this machine only (use an SSH tunnel). Anything else
    exposes the viewer to the network and prints a warning."""
    port: int = 0
    """Port (0: a free one; the URL is printed)."""
    max_resolution: int = 512
    """Longest side of the image rendered when the camera rests (the browser window's when smaller)."""
    moving_resolution: int = 96
    """Longest side of the image rendered while the camera moves."""
    chunk: Optional[int] = None
    """Rays per render call (default 2048 on the CPU, 8192 on a GPU)."""
    device: Optional[str] = None
    """'cpu' or 'cuda' (default CUDA when available)."""


@dataclass
class Eval:
    """Evaluate a trained run on a split: PSNR, SSIM (and LPIPS when its weights are local)."""

    run_dir: tyro.conf.Positional[Path]
    """Run directory written by 'langfield train'."""
    split: str = "test"
    """Split to evaluate (every view)."""
    write_renders: bool = True
    """Also write render | ground truth | depth panels under RUN_DIR/renders/SPLIT."""
    lpips_weights: Optional[Path] = None
    """LPIPS weights file/folder (or env LANGFIELD_LPIPS_WEIGHTS); LPIPS is skipped, and said so, without them."""
    chunk: Optional[int] = None
    """Rays per render call (default 2048 on the CPU, 8192 on a GPU)."""
    device: Optional[str] = None
    """'cpu' or 'cuda' (default CUDA when available)."""


@dataclass
class Export:
    """Export a trained Gaussian-splatting run (PLY in the reference 3DGS layout, for splat viewers)."""

    run_dir: tyro.conf.Positional[Path]
    """Run directory written by 'langfield train --method gaussians'."""
    format: Literal["ply"] = "ply"
    """Export format: 'ply' (x y z nx ny nz f_dc_* f_rest_* opacity scale_* rot_*)."""
    output: Optional[Path] = None
    """Output file (default RUN_DIR/export/point_cloud.ply)."""
    checkpoint: Optional[Path] = None
    """Checkpoint to export (default RUN_DIR/checkpoints/latest.ckpt)."""


@dataclass
class Language:
    """Distil a 2D vision-language teacher into a 3D language field on a trained ngp/gaussians run
    (OV-NeRF's Region Semantic Ranking and Cross-view Self-enhancement; geometry stays frozen)."""

    run_dir: tyro.conf.Positional[Path]
    """Run directory written by 'langfield train --method ngp|gaussians'."""
    teacher: str = "openai/clip-vit-base-patch16"
    """'simulated' (ground-truth label texts corrupted like CLIP; labelled scenes only, reported as
    simulated) or a CLIP-family model: hub id in the local HF cache, or a local directory."""
    dense: Literal["pyramid", "regions", "both"] = "pyramid"
    """Dense 2D features of a CLIP teacher: LERF crop pyramid, region pooling over masks, or both."""
    strength: Optional[float] = None
    """Simulated teacher corruption strength (default 1.0)."""
    config: Annotated[LanguageFieldConfig, tyro.conf.arg(name="")] = LanguageFieldConfig()
    cache_dir: Optional[Path] = None
    """CLIP embedding cache (default RUN_DIR/language/cache)."""
    device: Optional[str] = None
    """'cpu' or 'cuda' (default CUDA when available)."""


@dataclass
class Query:
    """Ask a scene with a language field: relevancy map, segmentation, 3D location, extraction."""

    run_dir: tyro.conf.Positional[Path]
    """Run directory with a language field ('langfield language RUN_DIR' first)."""
    text: Optional[str] = None
    """Text query, e.g. 'red chair': writes its relevancy heat-map over the render."""
    labels: List[str] = field(default_factory=list)
    """Label list for segmentation (argmax with an 'unknown' threshold), e.g. --labels chair table floor;
    @FILE reads labels from a UTF-8 text file, one per line (blank lines and # comments skipped)."""
    unknown_threshold: Optional[float] = None
    """Pixels whose best label probability is below this are 'unknown' (id 255 in the ID image)."""
    split: str = "test"
    """Split whose camera is rendered."""
    view: int = 0
    """Camera index in the split."""
    localize: bool = False
    """Also compute the 3D point and axis-aligned box of TEXT (dataset world frame)."""
    min_relevancy: float = 0.5
    """Localization: pixels below this relevancy never count (0.5: no closer to TEXT than to the
    negatives); a TEXT that reaches it nowhere is reported as not found."""
    ask: Optional[str] = None
    """A spatial question answered from camera VIEW of SPLIT, e.g. "is the sphere left of the box?",
    "which is closer, the sphere or the box?", "which is larger, A or B?", "what is on top of the
    table?" (grammar: langfield.language.spatial); prints the answer, confidence and evidence and
    writes them to OUT_DIR/<question>_answer.json."""
    objects: bool = False
    """Write the scene's object map: objects grouped from the geometry and named with the dataset's
    labels (OUT_DIR/objects.json, and OUT_DIR/objects_<SPLIT><VIEW>.png with their boxes)."""
    locate_by: Literal["objects", "relevancy"] = "objects"
    """--ask: place the question's names on objects grouped from the geometry and named with the
    dataset's labels ('objects'), or on each name's most relevant pixels ('relevancy')."""
    extract: bool = False
    """Also export what TEXT selects (Gaussians: own PLY; NGP: point PLY) and render the scene without it."""
    threshold: float = 0.55
    """Relevancy threshold for extraction."""
    out_dir: Optional[Path] = None
    """Output folder (default RUN_DIR/queries)."""
    device: Optional[str] = None
    """'cpu' or 'cuda' (default CUDA when available)."""


@dataclass
class Demo:
    """Reconstruct the built-in procedural scene (no download), distil a language field from the SIMULATED
    teacher, ask it, and write OUTPUT_DIR/index.html: renders beside ground truth and depth, the orbit video,
    relevancy maps and segmentations, metrics and the commands to go further (~4 min on 2 CPU cores)."""

    output_dir: Path = Path("outputs/demo")
    """Where the demo writes its outputs (a run directory: 'langfield query/view/render' work on it)."""
    budget_s: float = 100.0
    """Reconstruction time budget in seconds (the language field and the renders come on top)."""
    size: int = 128
    """Image size of the procedural scene."""
    method: Literal["gaussians", "ngp"] = "gaussians"
    """Reconstruction method: 3D Gaussian splatting (faster on a CPU, and ~10x faster language queries) or Instant-NGP."""
    device: Optional[str] = None
    """'cpu' or 'cuda' (default CUDA when available)."""
    seed: int = 0
    """Random seed."""


@dataclass
class Procedural:
    """Write the built-in procedural scene (a labelled layout) as a NeRF-synthetic-style transforms folder: RGBA
    images, label maps, depth, and the true object boxes (field 'objects'), e.g. a second labelled scene for
    'benchmarks/semantics.py --data'."""

    output: tyro.conf.Positional[Path]
    """Output folder (existing files of the same names are replaced)."""
    scene: Annotated[ProceduralSceneConfig, Flat] = ProceduralSceneConfig()


@dataclass
class Generate:
    """Generate images from text with a diffusion pipeline (Stable Diffusion 1.x/2.x/XL, SD3, or a
    toy model from 'langfield toyworld train'): writes grid.png, images/ and generation.json."""

    model: str
    """Hub id (from the local Hugging Face cache; downloaded unless HF_HUB_OFFLINE=1) or a diffusers
    pipeline folder (model_index.json inside); or a langfield run directory (run.json inside): then
    the conditions --control are rendered from the scene at --camera or along --path and fed to the
    ControlNet(s) --adapter on the --base pipeline."""
    prompt: tyro.conf.UseAppendAction[List[str]] = field(default_factory=list)
    """Prompt (repeat --prompt for several; one grid row each)."""
    output: Path = Path("outputs/generate")
    """Output folder."""
    options: Annotated[GenerateOptions, Flat] = GenerateOptions()
    rewrite_scene: Optional[Path] = None
    """Rewrite each prompt into a descriptive caption of this scene before sampling: a scene .json
    ({"objects": [{"name", "color", "position"}], "floor", "c2w"}), a toy-world folder (image --rewrite-view)
    or a run directory with a language field (its objects, colours and positions, seen from camera --rewrite-view)."""
    rewrite_view: int = 0
    """Toy-world image, or camera of --rewrite-split of a run, whose scene and camera --rewrite-scene uses."""
    rewrite_split: str = "test"
    """Split of a run's cameras --rewrite-view counts in."""
    rewrite_objects: Optional[str] = None
    """Comma-separated object names a run's language field describes (default: the dataset's labels)."""
    rewrite_llm: Optional[Path] = None
    """Local causal-LM folder: rewrite with it instead of the caption template."""
    camera: Optional[str] = None
    """(RUN) cameras to generate at: SPLIT, SPLIT:I or SPLIT:I,J,... (e.g. test:3)."""
    path: Optional[Literal["orbit", "spiral", "interpolate"]] = None
    """(RUN) a camera path to generate along (writes generated.mp4 too)."""
    num_frames: int = 24
    """(RUN) frames of --path."""
    fps: float = 12.0
    """(RUN) frame rate of the --path videos."""
    control: str = "depth"
    """(RUN) comma-separated conditions rendered from the scene, one per --adapter: depth, normals, segmentation, edges."""
    adapter: Optional[str] = None
    """(RUN) comma-separated control adapter folders (ControlAdapter.save), one per --control kind."""
    base: Optional[str] = None
    """(RUN) the base pipeline the adapters were trained on (hub id or diffusers folder)."""
    weights: Optional[str] = None
    """(RUN) comma-separated conditioning scales, one per adapter (default 1 each)."""
    labels: Optional[str] = None
    """(RUN) comma-separated segmentation labels (default: the dataset's)."""
    shared_noise: bool = False
    """(RUN) start every view from one noise field attached to the scene (multi-view consistency)."""
    guess_mode: bool = False
    """(RUN) guess mode: control on the conditional half of the guidance batch only (e.g. with an empty
    prompt); ControlNets run diffusers' guess mode, ControlNet-XS and ControlNeXt that branch rule alone."""


@dataclass
class ToyworldRender:
    """Render a toy-world data set (sharded .npz + .jsonl, resumable; docs/toyworld.md)."""

    output: Path
    """Output folder (an interrupted render resumes into it)."""
    scenes: int = 1000
    """Number of scenes."""
    views: int = 1
    """Views (cameras) per scene."""
    seed: int = 0
    """Data-set seed (scene i has seed scene_seed(seed, i)); another seed gives a disjoint held-out set."""
    workers: int = 1
    """Processes rendering shards in parallel."""
    world: Annotated[ToyWorldConfig, Flat] = ToyWorldConfig()


@dataclass
class ToyworldScene:
    """Write one toy-world scene seen from many cameras as a dataset folder (train/val/test, NeRF-synthetic
    layout with depth and labels) that 'langfield train --data DIR' reconstructs."""

    output: Path
    """Output folder."""
    scene: int = 0
    """The scene's seed."""
    train_views: int = 32
    """Training cameras."""
    val_views: int = 4
    """Validation cameras."""
    test_views: int = 4
    """Test cameras."""
    image_size: int = 64
    """Image side in pixels."""


#: The names of ``langfield.runs.toyworld.PRESETS`` (spelled out so that importing the CLI does not
#: import diffusers, an optional dependency; tests/cli checks that they agree).
ToyworldPreset = Literal["default", "fine", "smoke"]


@dataclass
class ToyworldTrain:
    """Train (or find in the cache) the toy-world models: attribute-classifier instrument, VAE, UNet
    (eps) and SD3 transformers (rectified flow and DDPM); prints where the pipelines are."""

    preset: ToyworldPreset = "default"
    """'default' (the benchmark's models, about an hour on 2 cores) or 'smoke' (a minute; tiny models)."""
    set: tyro.conf.UseAppendAction[List[str]] = field(default_factory=list)
    """Overrides KEY=VALUE of ToyWorldExperimentConfig (repeatable), e.g. unet_training.steps=4000."""
    cache_dir: Optional[Path] = None
    """Cache root (default $LANGFIELD_CACHE_DIR/toyworld or ~/.cache/langfield/toyworld)."""
    device: Optional[str] = None
    """'cpu' or 'cuda' (default CUDA when available)."""


@dataclass
class Toyworld:
    """The toy world: render data sets, train the small generation models."""

    command: tyro.conf.OmitSubcommandPrefixes[
        Union[Annotated[ToyworldRender, tyro.conf.subcommand("render")], Annotated[ToyworldTrain, tyro.conf.subcommand("train")],
              Annotated[ToyworldScene, tyro.conf.subcommand("scene")]]
    ]


@dataclass
class ControlnetTrain:
    """Train a control adapter (ControlNet, ControlNet-XS, ControlNeXt) for a condition on a frozen toy-world
    UNet: writes OUT/adapter/, OUT/control_train.json and OUT/preview.png (real renders, conditions, generated)."""

    base: Path
    """The toy-world UNet phase folder (unet-<key>, or its pipeline/ subfolder) that 'langfield toyworld train' printed."""
    out: Path = Path("outputs/controlnet")
    """Output folder."""
    options: Annotated[ControlTrainConfig, Flat] = ControlTrainConfig()
    device: str = "cpu"
    """cpu or cuda."""
    preview: int = 8
    """Held-out scenes sampled into preview.png (0 = none)."""


def run_capture(args: Capture) -> Dict[str, Any]:
    result = capture(args.input, args.output, args.config, console=console)
    r = result.report
    console.print(
        f"registered {r['registered']}/{r['images_given']} images, {r['points']} points, mean reprojection error "
        f"{r['mean_reprojection_error_px']:.2f} px, {len(r['dropped'])} dropped -> {result.output} "
        f"(train with: langfield train --data {result.output})", markup=False,
    )  # fmt: skip
    return r


def start_viewer(view: SceneView, host: str, port: int, **kwargs: Any) -> Viewer:
    """Start a viewer, saying where it is (and warning when ``host`` exposes it)."""
    warning = host_warning(host)
    if warning:
        console.print(f"[bold yellow]warning:[/] {_escape(warning)}")
    viewer = Viewer(view, host=host, port=port, **kwargs).start()
    console.print(f"viewer: [bold]{viewer.url}[/]", markup=True)
    return viewer


def run_train(args: Train) -> Dict[str, Any]:
    if args.viewer:  # refused before anything is built: no viser, a bad port
        import_viser()
        check_int_range(args.viewer_port, "viewer_port (--viewer-port)", lo=0, hi=65535)
    callback = ViewerCallback() if args.viewer else None
    run = prepare_run(
        args.data, args.method, args.trainer, resume=args.resume, preset=args.preset, overrides=parse_overrides(args.set),
        require_splits=() if args.skip_eval else (args.eval_split,), callbacks=[callback] if callback else (),
    )
    viewer = None
    if callback is not None and run.trainer.is_main:
        viewer = start_viewer(SceneView(run.method, run.dataset), args.viewer_host, args.viewer_port, callback=callback,
                              camera_path_file=run.output_dir / "camera_path.json")  # fmt: skip
    console.print(f"training [bold]{args.method}[/] on {run.dataset.name} ({len(run.dataset.split('train'))} views) -> {run.output_dir}")
    try:
        run.trainer.train()
        result: Dict[str, Any] = {}
        if not args.skip_eval:
            result = run.trainer.evaluate(args.eval_split, write_renders=True)
            if run.trainer.is_main:
                console.print(f"{args.eval_split}: PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.4f} -> {run.output_dir}")
        if viewer is not None:
            console.print(f"training finished; the viewer stays open at {viewer.url} (Ctrl+C to exit)")
            viewer.wait()
        return result
    finally:
        if viewer is not None:
            viewer.stop()


def run_render(args: Render) -> None:
    if args.camera_path is not None:
        out_dir = args.out_dir or args.run_dir / "renders" / "camera_path"
        check_render_request(args.outputs, args.chunk, out_dir if args.out_dir else None, None, args.fps)
        read_camera_path(args.camera_path)  # a bad file is refused before the run is loaded
        run = load_run(args.run_dir, args.device)
        paths = render_camera_path(run, args.camera_path, out_dir, args.outputs, args.chunk,
                                   fps=args.fps)  # fmt: skip
        console.print(f"wrote {len(paths)} files to {out_dir}")
        return
    out_dir = args.out_dir or args.run_dir / "renders" / args.path
    fps = args.fps if args.fps is not None else 30
    camera_path = args.path in CAMERA_PATHS
    check_render_request(args.outputs, args.chunk, out_dir if args.out_dir else None,
                         args.num_frames if camera_path else None, fps if camera_path else None)  # fmt: skip
    run = load_run(args.run_dir, args.device)
    if args.path in CAMERA_PATHS:
        paths = render_path(run, args.path, out_dir, args.num_frames, fps, args.outputs, args.chunk)
    else:
        paths = render_views(run, args.path, out_dir, args.outputs, args.chunk)
    console.print(f"wrote {len(paths)} files to {out_dir}")


def run_view(args: View) -> None:
    check_int_range(args.max_resolution, "max_resolution (--max-resolution)", lo=1)
    check_int_range(args.moving_resolution, "moving_resolution (--moving-resolution)", lo=1)
    policy = ResolutionPolicy(moving_max_side=args.moving_resolution, max_side=args.max_resolution)
    check_int_range(args.port, "port (--port)", lo=0, hi=65535)
    check_run_dir(args.run_dir)
    import_viser()  # a missing viser is said before the run is loaded
    view = open_scene_view(args.run_dir, args.device, chunk=args.chunk)
    if view.language is not None:
        console.print(f"language field found: relevancy and segmentation modes (teacher {view.language.teacher.name})",
                      markup=False)  # fmt: skip
    viewer = start_viewer(view, args.host, args.port, policy=policy, camera_path_file=args.run_dir / "camera_path.json")
    console.print("Ctrl+C to exit")
    viewer.wait()


def run_eval(args: Eval) -> Dict[str, Any]:
    check_evaluate_request(args.chunk, args.lpips_weights)
    run = load_run(args.run_dir, args.device)
    result = evaluate_run(run, args.split, args.write_renders, args.lpips_weights, args.chunk)
    msg = f"{args.split}: PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.4f}"
    msg += f", LPIPS {result['lpips']:.4f}" if result.get("lpips") is not None else f" ({result['lpips_note']})"
    console.print(msg)
    return result


def run_export(args: Export) -> None:
    path = export_run(args.run_dir, args.format, args.output, args.checkpoint)
    console.print(f"wrote {path}")


def run_language(args: Language) -> Dict[str, Any]:
    summary = train_language(
        args.run_dir, args.teacher, args.config, dense=args.dense, strength=args.strength, cache_dir=args.cache_dir,
        device=args.device,
    )  # fmt: skip
    console.print(f"language field ({summary['kind']}, {summary['variant']}, teacher {summary['teacher']}) "
                  f"written to {summary['path']}")  # fmt: skip
    return summary


def expand_label_files(labels: List[str]) -> List[str]:
    """``--labels`` with every ``@FILE`` replaced by the labels in that file (one per line)."""
    out: List[str] = []
    for item in labels:
        if not item.startswith("@"):
            out.append(item)
            continue
        path = Path(item[1:])
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "not found"
            raise FileNotFoundError(f"--labels {item}: label file {path} {what}")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise ValueError(f"--labels {item}: label file {path} is not UTF-8 text") from None
        found = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
        if not found:
            raise ValueError(f"--labels {item}: label file {path} holds no labels (one per line)")
        out.extend(found)
    return out


def run_query(args: Query) -> Dict[str, Any]:
    result = run_queries(
        args.run_dir, text=args.text, labels=expand_label_files(args.labels), unknown_threshold=args.unknown_threshold,
        split=args.split, view=args.view, localize=args.localize, min_relevancy=args.min_relevancy, extract=args.extract,
        threshold=args.threshold, ask=args.ask, locate_by=args.locate_by, objects=args.objects,
        out_dir=args.out_dir, device=args.device,
    )  # fmt: skip
    console.print(json.dumps(result, indent=1, default=str))
    if "answer" in result:
        ans = result["answer"]
        console.print(f"{ans['question']} -> {ans['answer']} (confidence {ans['confidence']:.2f}; evidence in {result['answer_file']})", markup=False)
    return result


def run_demo_command(args: Demo) -> Dict[str, Any]:
    return run_demo(args.output_dir, args.budget_s, args.size, args.device, args.seed, lambda m: console.print(m, markup=False),
                    method=args.method)  # fmt: skip


def _csv(value: Optional[str]) -> List[str]:
    return [] if value is None else [v.strip() for v in value.split(",") if v.strip()]


def run_generate_scene(args: Generate) -> Dict[str, Any]:
    """``langfield generate RUN``: controlled generation from conditions rendered from the run's scene."""
    if args.rewrite_scene is not None:
        raise ValueError("--rewrite-scene applies to text-to-image models; for a run directory give --control and --adapter")
    if len(args.prompt) != 1:
        raise ValueError(f"prompt (--prompt): a run takes exactly one prompt (one image per camera), got {len(args.prompt)}")
    if args.base is None:
        raise ValueError("base (--base): a run directory needs the base pipeline the adapters were trained on (hub id or folder)")
    adapters = _csv(args.adapter)
    if not adapters:
        raise ValueError("adapter (--adapter): give the ControlNet folder(s), one per --control kind")
    try:
        weights = None if args.weights is None else tuple(float(w) for w in _csv(args.weights))
    except ValueError:
        raise ValueError(f"weights (--weights): expected comma-separated numbers, got {args.weights!r}") from None
    o = args.options
    labels = _csv(args.labels)
    options = SceneGenerateOptions(
        camera=args.camera, path=args.path, num_frames=args.num_frames, fps=args.fps, control=tuple(_csv(args.control)),
        weights=weights, labels=tuple(labels) if labels else None, shared_noise=args.shared_noise,
        guess_mode=args.guess_mode, steps=o.steps,
        guidance=o.guidance, seed=o.seed, height=o.height, width=o.width, device=o.device,
    )  # fmt: skip
    check_scene_generate_options(options, len(adapters))
    record = generate_scene_to_folder(args.model, args.base, adapters, args.prompt[0], args.output, options)
    extra = f", {len(record['videos'])} video(s)" if record["videos"] else ""
    console.print(f"wrote {len(record['images'])} image(s), the conditions{extra} and generation.json to {args.output}", markup=False)
    return record


def run_generate(args: Generate) -> Dict[str, Any]:
    folder = Path(os.path.expanduser(args.model))
    if folder.is_dir() and (folder / RUN_FILE).is_file():
        return run_generate_scene(args)
    # any other folder is refused by load_pipeline ("no model_index.json"), after the prompts are checked
    scene_only = {"camera": args.camera, "path": args.path, "adapter": args.adapter, "base": args.base}
    given = [k for k, v in scene_only.items() if v is not None] + (["guess-mode"] if args.guess_mode else [])
    if given:
        raise ValueError(f"--{given[0]} needs a run directory as the model (run.json inside); {args.model} is a text-to-image model")
    rewrite = None
    if args.rewrite_scene is not None:
        objects = None if args.rewrite_objects is None else tuple(n.strip() for n in args.rewrite_objects.split(",") if n.strip())
        rewrite = RewriteScene(args.rewrite_scene, args.rewrite_view, args.rewrite_llm, objects=objects, split=args.rewrite_split)
    elif args.rewrite_llm is not None:
        raise ValueError("--rewrite-llm needs --rewrite-scene (the scene the prompts are rewritten with)")
    try:
        record = generate_to_folder(args.model, args.prompt, args.output, args.options, rewrite=rewrite)
    except ValueError as err:
        if folder.is_dir() and "no model_index.json" in str(err):
            raise ValueError(f"{err} (nor is it a langfield run directory: no {RUN_FILE})") from None
        raise
    if rewrite is not None:
        for given, used in zip(record["prompts"], record["sampled_prompts"]):
            console.print(f"rewrote {given!r} -> {used!r}", markup=False)
    n = len(record["images"])
    console.print(f"wrote {n} image(s), {args.output / 'grid.png'} and {args.output / 'generation.json'}", markup=False)
    return record


def run_procedural(args: Procedural) -> Path:
    out = write_procedural_dataset(args.output, args.scene)
    sc = args.scene
    console.print(
        f"wrote the {sc.layout!r} layout ({sc.num_train}/{sc.num_val}/{sc.num_test} train/val/test views, "
        f"{sc.width}x{sc.height}) to {out}", markup=False,
    )  # fmt: skip
    return out


def run_toyworld(args: Toyworld) -> Any:
    cmd = args.command
    if isinstance(cmd, ToyworldRender):
        out = write_toyworld(cmd.output, cmd.world, cmd.scenes, cmd.views, cmd.seed, num_workers=cmd.workers)
        console.print(f"wrote {cmd.scenes * cmd.views} toy-world images to {out}", markup=False)
        return out
    if isinstance(cmd, ToyworldScene):
        out = write_toyworld_scene(cmd.output, cmd.scene, train_views=cmd.train_views, val_views=cmd.val_views,
                                   test_views=cmd.test_views, image_size=cmd.image_size)  # fmt: skip
        caption = json.loads((out / "transforms_train.json").read_text(encoding="utf-8"))["caption"]
        console.print(f"wrote toy-world scene {cmd.scene} ({cmd.train_views}/{cmd.val_views}/{cmd.test_views} views, "
                      f"{cmd.image_size} px) to {out}: {caption}", markup=False)  # fmt: skip
        return out
    config = apply_overrides(runs_api.toyworld_preset(cmd.preset), parse_overrides(cmd.set))
    models = runs_api.train_toyworld(config, cache_dir=cmd.cache_dir, device=cmd.device,
                            log=lambda msg: console.print(msg, markup=False))  # fmt: skip
    acc = models.records["instrument"]["heldout_accuracy"]["attribute"]
    chance = models.records["instrument"]["chance"]["attribute"]
    console.print(f"attribute classifier: held-out accuracy {acc:.3f} (chance {chance:.3f}) -> {models.phases['instrument']}",
                  markup=False)  # fmt: skip
    for name, path in models.pipelines.items():
        console.print(f"{name}: {path}", markup=False)
    return models


def run_controlnet_train(args: ControlnetTrain) -> Dict[str, Any]:
    _, record = runs_api.train_control(args.base, args.options, args.out, device=args.device, progress=True, preview=args.preview)
    resumed = record.get("resumed_at_step", 0)
    note = "" if not resumed else (" (already finished there)" if resumed >= record["steps"] else f" (resumed at step {resumed})")
    console.print(
        f"trained {record['adapter']} for {record['condition']}: {record['trainable_params']} trainable parameters, "
        f"{record['steps']} steps at {record['s_per_step']:.3f} s/step{note} -> {args.out / 'adapter'}", markup=False,
    )  # fmt: skip
    return record


COMMANDS: Dict[str, Tuple[type, Callable[[Any], Any]]] = {
    "capture": (Capture, run_capture),
    "train": (Train, run_train),
    "render": (Render, run_render),
    "eval": (Eval, run_eval),
    "export": (Export, run_export),
    "language": (Language, run_language),
    "query": (Query, run_query),
    "view": (View, run_view),
    "demo": (Demo, run_demo_command),
    "generate": (Generate, run_generate),
    "procedural": (Procedural, run_procedural),
    "toyworld": (Toyworld, run_toyworld),
    "controlnet-train": (ControlnetTrain, run_controlnet_train),
}

#: Errors caused by what the user asked for: one line, exit status 2 (not a traceback). The OS
#: errors are about the paths the user named (a folder where a file is expected, no permission).
USER_ERRORS = (
    ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError, PermissionError,
    NonFiniteLossError,
)  # fmt: skip


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    keep_freed_memory()  # CPU renders and training reuse freed pages instead of faulting in fresh ones
    try:
        # Config objects validate themselves while the options are parsed (tyro reports most of
        # their errors itself; those of some nested configs escape it and are reported here).
        args = tyro.extras.subcommand_cli_from_dict({name: cls for name, (cls, _) in COMMANDS.items()}, args=argv, prog="langfield")
        handler = next(fn for cls, fn in COMMANDS.values() if isinstance(args, cls))
        handler(args)
    except USER_ERRORS as exc:
        if os.environ.get("LANGFIELD_DEBUG", "").strip() not in ("", "0"):
            raise
        console.print(f"[bold red]error:[/] {_escape(exc)}")
        return 2
    return 0


def _escape(exc: BaseException) -> str:
    """The message on one line, with rich markup characters escaped (a path may contain ``[``)."""
    from rich.markup import escape

    return escape(" ".join(str(exc).split()))


if __name__ == "__main__":
    sys.exit(main())
