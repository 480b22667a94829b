"""Reconstruction benchmark: train a method on a scene for a wall-clock budget, evaluate on the test split.

    python benchmarks/recon.py --data ../shared/data/nerf_synthetic/lego --method ngp --downscale 4 \
        --budget-s 600 --out bench_out/ngp_lego_200.json [--device cpu|cuda]

Writes JSON with (at least) ``method, scene, width, height, device, steps, train_seconds,
train_rays_per_s, test_psnr, test_ssim, render_fps, num_gaussians (None for NeRF methods),
peak_memory_mb`` (CUDA: peak allocated; CPU: peak resident set of the process) (means over the evaluated test views; all of
them unless ``--test-views`` limits it, which the JSON then states), plus the configuration and the
machine. Test renders beside ground truth go to ``<out stem>_renders/``; the trained run (reloadable
with ``langfield eval|render``) to ``<out stem>_run/``. Dataset loading and evaluation are not counted
in ``train_seconds``.

``--validation`` is for choosing settings without looking at the test views: every 8th training
view is held out and evaluated instead (``val_psnr`` / ``val_ssim``); the test views are neither
trained on nor rendered.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from langfield.cli.main import parse_overrides
from langfield.data.dataset import SceneDataset
from langfield.io.atomic import atomic_write_json
from langfield.methods.capabilities import SplatsGaussians
from langfield.methods.presets import default_preset_name
from langfield.methods.registry import method_names
from langfield.runs.loading import load_data
from langfield.runs.spec import DataConfig
from langfield.runs.train import prepare_run
from langfield.training.evaluation import evaluate_views
from langfield.training.trainer import TrainerConfig

def machine_info(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated on ``device``, or the process's peak resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def validation_dataset(dataset: SceneDataset, every: int = 8) -> SceneDataset:
    """``dataset`` with every ``every``-th training view moved to a ``validation`` split that
    replaces the test split (the test views are dropped, so nothing can look at them)."""
    train = dataset.split("train")
    held = list(range(every // 2, len(train), every))
    if not held or len(held) == len(train):
        raise SystemExit(f"--validation: {len(train)} training views are too few to hold out every {every}th")
    held_set = set(held)
    rest = [i for i in range(len(train)) if i not in held_set]
    return dataset.with_splits({"train": train.subset(rest), "validation": train.subset(held)})


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset folder (transforms*.json / LLFF / COLMAP) or 'procedural'")
    p.add_argument("--method", required=True, choices=method_names())
    p.add_argument("--downscale", type=float, default=1.0, help="image downscale factor")
    p.add_argument("--budget-s", type=float, required=True, help="training wall-clock budget in seconds")
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--num-rays", type=int, default=None, help="rays per step (default: the preset's)")
    p.add_argument("--test-views", type=int, default=None, help="evaluate only N evenly spaced test views")
    p.add_argument("--set", action="append", default=[], help="method config override KEY=VALUE")
    p.add_argument("--preset", choices=["paper", "cpu"], default=None,
                   help="hyper-parameter preset (default: cpu on CPU, paper on CUDA; see langfield.methods.presets)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validation", action="store_true",
                   help="hold out every 8th training view and evaluate on it instead of the test views")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    preset_name = args.preset or default_preset_name(device)
    out = Path(args.out)
    run_dir = out.with_name(out.stem + "_run")

    trainer_cfg = TrainerConfig(
        max_steps=10_000_000,
        max_seconds=args.budget_s,
        num_rays=args.num_rays,  # None: the preset's
        eval_every=0,
        checkpoint_every=0,
        log_every=25,
        output_dir=str(run_dir),
        seed=args.seed,
        device=str(device),
        mixed_precision=device.type == "cuda",
        progress=not args.no_progress,
    )
    t0 = time.perf_counter()
    data = DataConfig(args.data, args.downscale)
    if args.validation:
        data = validation_dataset(load_data(data))
    run = prepare_run(data, args.method, trainer_cfg, preset=preset_name,
                      overrides=parse_overrides(args.set))  # preset first, then the overrides in their order
    load_s = time.perf_counter() - t0
    dataset, trainer = run.dataset, run.trainer
    assert trainer is not None
    trainer.train()

    split, prefix = ("validation", "val") if args.validation else ("test", "test")
    test = dataset.split(split)
    indices = None
    if args.test_views is not None and args.test_views < len(test):
        indices = sorted({int(round(x)) for x in np.linspace(0, len(test) - 1, args.test_views)})
    # Panels people can look at (render | ground truth | depth) are written for every evaluated view.
    render_dir = out.with_name(out.stem + "_renders")
    result = evaluate_views(run.method, dataset, split, indices=indices, chunk=16384, render_dir=render_dir,
                            progress=not args.no_progress)

    method = run.method
    hash_backend = method.field.encoding.backend if args.method == "ngp" else None
    record = {
        "method": args.method,
        "scene": dataset.name,
        "width": test.width,
        "height": test.height,
        "device": str(device),
        "steps": trainer.step,
        "train_seconds": trainer.elapsed_seconds,
        "train_rays_per_s": trainer.total_rays / max(trainer.elapsed_seconds, 1e-9),
        "eval_split": split,
        f"{prefix}_psnr": result["psnr"],
        f"{prefix}_ssim": result["ssim"],
        "render_fps": result["render_fps"],
        "num_test_views": result["num_images"],
        "test_views_total": len(test),
        "budget_s": args.budget_s,
        "downscale": args.downscale,
        "ray_space": dataset.ray_space,  # resolved ("world" or "ndc"), not the "auto" asked for
        "load_seconds": load_s,
        "hash_backend": hash_backend,
        "num_gaussians": method.gaussian_cloud().num_gaussians if isinstance(method, SplatsGaussians) else None,
        "peak_memory_mb": peak_memory_mb(device),
        "preset": preset_name,
        "method_config": run.spec.method_config,
        "trainer_config": run.spec.trainer.to_dict(),
        "machine": machine_info(device),
        "per_image_psnr": [p["psnr"] for p in result["per_image"]],
        "command": " ".join(sys.argv),
    }
    atomic_write_json(record, out)
    print(json.dumps({k: record[k] for k in ("method", "scene", "width", "height", "device", "steps", "train_seconds",
                                              "train_rays_per_s", f"{prefix}_psnr", f"{prefix}_ssim", "render_fps", "num_test_views",
                                              "num_gaussians", "peak_memory_mb")}, indent=1))
    return record


if __name__ == "__main__":
    main()
