"""``langfield`` command line: ``train | render | eval | export | language | query | demo``.

This is the only module that parses arguments; everything it does is a call into
:mod:`langfield.pipeline`, so the Python API can do the same in a few lines.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional, Tuple

import tyro
from rich.console import Console

console = Console(stderr=True)

Output = Literal["rgb", "depth", "accumulation", "normals"]


def parse_overrides(items: List[str]) -> dict:
    """``["a.b=3", "c=x"]`` -> ``{"a.b": 3, "c": "x"}`` (values parsed as JSON when they parse)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


@dataclass
class Train:
    """Train a method on a scene and evaluate it on the test split."""

    data: str = "procedural"
    """Dataset: a folder with transforms*.json (Blender/nerfstudio/instant-ngp), an LLFF folder
    (poses_bounds.npy), a COLMAP folder (sparse/0 + images), a transforms json file, or
    'procedural' for the built-in demo scene."""
    method: Literal["ngp", "nerf", "mipnerf", "gaussians"] = "ngp"
    """Reconstruction method."""
    output_dir: Path = Path("outputs/run")
    """Run directory: checkpoints, metrics.jsonl, renders and run.json go here."""
    downscale: float = 1.0
    """Image downscale factor (4 = quarter resolution)."""
    background: Optional[Literal["white", "black", "random"]] = None
    """Override how RGBA images are composited for training (default: the dataset's)."""
    max_steps: int = 20_000
    """Maximum number of training steps (LR schedules span this or the budget)."""
    budget_s: Optional[float] = None
    """Wall-clock training budget in seconds (evaluation time excluded)."""
    num_rays: Optional[int] = None
    """Rays per training step (over all processes under torchrun); default from the preset
    (Instant-NGP then adapts it to keep the samples per step constant)."""
    eval_every: int = 1000
    """Evaluate PSNR/SSIM on a few held-out views every N steps (0 = never)."""
    checkpoint_every: int = 1000
    """Write an atomic, resumable checkpoint every N steps."""
    seed: int = 0
    """Random seed (runs are deterministic on CPU for a seed)."""
    device: Optional[str] = None
    """'cpu', 'cuda', 'cuda:1'; default CUDA when available."""
    mixed_precision: bool = True
    """Autocast on CUDA (ignored on CPU)."""
    resume: bool = False
    """Continue from OUTPUT_DIR/checkpoints/latest.ckpt when it exists."""
    set: tyro.conf.UseAppendAction[List[str]] = field(default_factory=list)
    """Method hyper-parameter overrides KEY=VALUE (repeatable), e.g. field.hash_grid.log2_hashmap_size=17."""
    preset: Optional[Literal["paper", "cpu"]] = None
    """Hyper-parameter preset: 'paper' settings, or 'cpu' (cheaper sampling for a few CPU cores).
    Default: 'cpu' on CPU, 'paper' on CUDA. --set overrides apply on top."""
    eval_split: str = "test"
    """Split evaluated (all views) at the end; renders are written under OUTPUT_DIR/renders."""
    skip_eval: bool = False
    """Do not evaluate after training."""


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
    fps: int = 30
    """Video frame rate."""
    chunk: int = 8192
    """Rays per render call (lower it to bound memory)."""
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
    chunk: int = 8192
    """Rays per render call."""
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
    rsr: bool = True
    """Region Semantic Ranking of the 2D targets (--no-rsr to ablate)."""
    cse: bool = True
    """Cross-view Self-enhancement rounds (--no-cse to ablate)."""
    cse_rounds: int = 2
    """Render-correct-retrain rounds."""
    steps: int = 1000
    """Steps of the first fit (each CSE round adds half)."""
    autoencoder_steps: int = 800
    """Steps of the per-scene language autoencoder (LangSplat) fitted before the codes."""
    masks: Literal["auto", "sam", "superpixels"] = "auto"
    """Mask proposals: SAM when its weights load (auto), else the weight-free superpixel fallback."""
    cache_dir: Optional[Path] = None
    """CLIP embedding cache (default RUN_DIR/language/cache)."""
    device: Optional[str] = None
    """'cpu' or 'cuda' (default CUDA when available)."""
    seed: int = 0
    """Random seed."""


@dataclass
class Query:
    """Ask a scene with a language field: relevancy map, segmentation, 3D location, extraction."""

    run_dir: tyro.conf.Positional[Path]
    """Run directory with a language field ('langfield language RUN_DIR' first)."""
    text: Optional[str] = None
    """Text query, e.g. 'red chair': writes its relevancy heat-map over the render."""
    labels: List[str] = field(default_factory=list)
    """Label list for segmentation (argmax with an 'unknown' threshold), e.g. --labels chair table floor."""
    unknown_threshold: Optional[float] = None
    """Pixels whose best label probability is below this are 'unknown' (id 255 in the ID image)."""
    split: str = "test"
    """Split whose camera is rendered."""
    view: int = 0
    """Camera index in the split."""
    localize: bool = False
    """Also compute the 3D point and axis-aligned box of TEXT (dataset world frame)."""
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
    """Train Instant-NGP on the built-in procedural scene (no download) and write renders, depth, video, metrics."""

    output_dir: Path = Path("outputs/demo")
    """Where the demo writes its outputs."""
    budget_s: float = 170.0
    """Training time budget in seconds."""
    size: int = 64
    """Image size of the procedural scene."""
    device: Optional[str] = None
    """'cpu' or 'cuda' (default CUDA when available)."""
    seed: int = 0
    """Random seed."""


def _trainer_config(args: Train, num_rays: int):
    from langfield.training.trainer import TrainerConfig

    return TrainerConfig(
        max_steps=args.max_steps,
        max_seconds=args.budget_s,
        num_rays=num_rays,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
        log_every=50,
        output_dir=str(args.output_dir),
        seed=args.seed,
        device=args.device,
        mixed_precision=args.mixed_precision,
    )


def run_train(args: Train) -> dict:
    import torch

    from langfield.methods.presets import apply_overrides, default_preset_name, get_preset
    from langfield.methods.registry import METHODS
    from langfield.pipeline import DataConfig, prepare_run

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    preset = get_preset(args.method, args.preset or default_preset_name(device))
    # Preset first, then the user's overrides in their order (a variant switch resets its fields).
    method_config = apply_overrides(METHODS[args.method].config_cls(), preset["set"])
    method_config = apply_overrides(method_config, parse_overrides(args.set))
    num_rays = args.num_rays or preset["num_rays"]
    run = prepare_run(
        DataConfig(args.data, args.downscale, args.background), args.method, _trainer_config(args, num_rays), method_config, args.resume
    )
    assert run.trainer is not None
    console.print(f"training [bold]{args.method}[/] on {run.dataset.name} ({len(run.dataset.split('train'))} views) -> {run.output_dir}")
    run.trainer.train()
    if args.skip_eval or args.eval_split not in run.dataset.splits:
        return {}
    result = run.trainer.evaluate(args.eval_split, write_renders=True)
    if run.trainer.is_main:
        console.print(f"{args.eval_split}: PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.4f} -> {run.output_dir}")
    return result


def run_render(args: Render) -> None:
    from langfield.pipeline import load_run, render_path, render_views

    run = load_run(args.run_dir, args.device)
    out_dir = args.out_dir or args.run_dir / "renders" / args.path
    if args.path in ("orbit", "spiral", "interpolate"):
        paths = render_path(run, args.path, out_dir, args.num_frames, args.fps, args.outputs, args.chunk)
    else:
        paths = render_views(run, args.path, out_dir, args.outputs, args.chunk)
    console.print(f"wrote {len(paths)} files to {out_dir}")


def run_eval(args: Eval) -> dict:
    from langfield.pipeline import evaluate_run, load_run

    run = load_run(args.run_dir, args.device)
    result = evaluate_run(run, args.split, args.write_renders, args.lpips_weights, args.chunk)
    msg = f"{args.split}: PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.4f}"
    msg += f", LPIPS {result['lpips']:.4f}" if result.get("lpips") is not None else f" ({result['lpips_note']})"
    console.print(msg)
    return result


def run_export(args: Export) -> None:
    from langfield.pipeline import export_run

    path = export_run(args.run_dir, args.format, args.output, args.checkpoint)
    console.print(f"wrote {path}")


def run_language(args: Language) -> dict:
    from langfield.language.scene import train_language

    summary = train_language(
        args.run_dir, args.teacher, rsr=args.rsr, cse=args.cse, cse_rounds=args.cse_rounds, steps=args.steps,
        masks=args.masks, dense=args.dense, strength=args.strength, cache_dir=args.cache_dir, device=args.device,
        seed=args.seed, autoencoder_steps=args.autoencoder_steps,
    )  # fmt: skip
    console.print(f"language field ({summary['kind']}, {summary['variant']}, teacher {summary['teacher']}) "
                  f"written to {summary['path']}")  # fmt: skip
    return summary


def run_query(args: Query) -> dict:
    from langfield.language.scene import run_queries

    result = run_queries(
        args.run_dir, text=args.text, labels=args.labels, unknown_threshold=args.unknown_threshold, split=args.split,
        view=args.view, localize=args.localize, extract=args.extract, threshold=args.threshold,
        out_dir=args.out_dir, device=args.device,
    )  # fmt: skip
    console.print(json.dumps(result, indent=1, default=str))
    return result


def run_demo(args: Demo) -> dict:
    from langfield.pipeline import run_demo as demo

    return demo(args.output_dir, args.budget_s, args.size, args.device, args.seed, console)


COMMANDS = {
    "train": (Train, run_train),
    "render": (Render, run_render),
    "eval": (Eval, run_eval),
    "export": (Export, run_export),
    "language": (Language, run_language),
    "query": (Query, run_query),
    "demo": (Demo, run_demo),
}


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = tyro.extras.subcommand_cli_from_dict({name: cls for name, (cls, _) in COMMANDS.items()}, args=argv, prog="langfield")
    handler = next(fn for cls, fn in COMMANDS.values() if isinstance(args, cls))
    try:
        handler(args)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
