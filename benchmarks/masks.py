"""Training masks against transient occluders: does ``mask_path`` recover the clean reconstruction?

    python benchmarks/masks.py --out bench_out/masks.json [--methods gaussians,ngp] [--seeds 0,1,2]
    python benchmarks/masks.py --out /tmp/masks_smoke.json --smoke      # seconds: checks that it runs

The procedural scene (exact, in memory) with **simulated transients**: on a fraction of the training
views (``--occluded``, default 0.5) an opaque rectangle of a random colour (``--occluder-area`` of the
image, default 0.15, at a random place; seeded) stands in front of the scene, as a passer-by or the
capture rig would. Three trainings per method and seed, the same steps (not wall clock, so a loaded
machine gives the same figures):

* ``clean``: no occluders (the ceiling);
* ``occluded``: occluders, no masks (the floor: what training on such photos gives today);
* ``masked``: occluders with their exact masks (``ImageSet.masks``, what a ``mask_path`` gives);
* ``clean_masked``: no occluders, the same masks: what losing those pixels alone costs, so
  ``masked`` against it isolates what the occluders still leak through the masks.

Methods run their CPU preset with :data:`METHOD_OVERRIDES` (the Gaussians: E4's 64-px recipe).

Scored on the clean held-out test views (PSNR / SSIM, every view). The JSON has ``rows`` (one per
method, seed and setting), ``summary`` (per method and setting: mean and std over seeds) and the
settings; a panel per method (test view 0: clean | occluded | masked render, beside the truth) goes
to ``<out stem>_panels/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import torch

from langfield.data.dataset import SceneDataset
from langfield.data.procedural import ProceduralSceneConfig, make_procedural_dataset
from langfield.io.atomic import atomic_write_json
from langfield.io.images import side_by_side, write_image
from langfield.runs.train import prepare_run
from langfield.training.evaluation import evaluate_views
from langfield.training.trainer import TrainerConfig

SETTINGS = ("clean", "occluded", "masked", "clean_masked")
#: Steps per method (CPU-sized: 64-px images).
DEFAULT_STEPS = {"gaussians": 1500, "ngp": 1500}
#: On top of the CPU preset: the Gaussians recipe of benchmarks/controlnet.py's E4 for 64-px scenes (the
#: preset's 50k random Gaussians are sized for larger images).
METHOD_OVERRIDES: Dict[str, Dict[str, Any]] = {"gaussians": {"init_num_random": 5000, "sh_degree": 0}, "ngp": {}}


def add_occluders(dataset: SceneDataset, fraction: float, area: float, seed: int) -> Tuple[SceneDataset, SceneDataset, SceneDataset]:
    """``(occluded, masked, clean_masked)``: ``dataset`` with an opaque random-colour rectangle on ``fraction``
    of its training views (``area`` of the image each, random aspect 0.5-2 and place), without and with
    the exact masks (False on the rectangles), and the clean views with those masks. Other splits are
    kept clean."""
    train = dataset.split("train")
    num, h, w = (int(s) for s in train.images.shape[:3])
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(num, generator=gen)[: int(round(fraction * num))]
    images, alphas = train.images.clone(), train.alphas.clone() if train.alphas is not None else None
    masks = torch.ones(num, h, w, 1, dtype=torch.bool)
    for i in chosen.tolist():
        aspect = float(torch.empty(1).uniform_(0.5, 2.0, generator=gen))
        rh = max(1, min(h, int(round((area * h * w * aspect) ** 0.5))))
        rw = max(1, min(w, int(round(area * h * w / rh))))
        top = int(torch.randint(0, h - rh + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - rw + 1, (1,), generator=gen))
        colour = torch.randint(0, 256, (3,), generator=gen, dtype=torch.int64).to(torch.uint8)
        images[i, top : top + rh, left : left + rw] = colour
        if alphas is not None:
            alphas[i, top : top + rh, left : left + rw] = 255
        masks[i, top : top + rh, left : left + rw] = False
    occluded_train = dataclasses.replace(train, images=images, alphas=alphas, masks=None)
    occluded = dataset.with_splits({**dataset.splits, "train": occluded_train})
    masked = dataset.with_splits({**dataset.splits, "train": dataclasses.replace(occluded_train, masks=masks)})
    clean_masked = dataset.with_splits({**dataset.splits, "train": dataclasses.replace(train, masks=masks)})
    return occluded, masked, clean_masked


def train_and_score(dataset: SceneDataset, method: str, steps: int, seed: int, threads: int) -> Tuple[Dict[str, Any], torch.Tensor]:
    """Train ``method`` for ``steps`` on ``dataset`` (CPU preset), score every test view; ``(row, render of test view 0)``."""
    torch.manual_seed(seed)
    trainer = TrainerConfig(max_steps=steps, output_dir=None, progress=False, checkpoint_every=0, eval_every=0,
                            seed=seed, device="cpu")  # fmt: skip
    run = prepare_run(dataset, method, trainer, preset="cpu", overrides=METHOD_OVERRIDES[method])
    t0 = time.perf_counter()
    run.trainer.train()
    train_s = time.perf_counter() - t0
    result = evaluate_views(run.method, dataset, "test")
    test = dataset.split("test")
    render = run.method.render_camera(test.cameras[0], torch.ones(3)).rgb.detach().clamp(0, 1)
    row = {"method": method, "seed": seed, "steps": run.trainer.step, "train_seconds": train_s, "threads": threads,
           "test_psnr": result["psnr"], "test_ssim": result["ssim"], "per_image_psnr": [p["psnr"] for p in result["per_image"]]}  # fmt: skip
    return row, render


def summarise(rows: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per ``method/setting``: mean and std (over seeds) of test PSNR and SSIM, and the seeds."""
    out: Dict[str, Dict[str, Any]] = {}
    for key in sorted({(r["method"], r["setting"]) for r in rows}):
        rs = [r for r in rows if (r["method"], r["setting"]) == key]
        entry: Dict[str, Any] = {"seeds": [r["seed"] for r in rs]}
        for metric in ("test_psnr", "test_ssim"):
            vals = [r[metric] for r in rs]
            entry[metric] = statistics.fmean(vals)
            entry[metric + "_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out[f"{key[0]}/{key[1]}"] = entry
    return out


def main(argv: Sequence[str] | None = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the JSON to write (panels go beside it)")
    p.add_argument("--methods", default="gaussians", help="comma-separated: gaussians, ngp")
    p.add_argument("--seeds", default="0,1,2", help="training and occluder seeds (comma-separated)")
    p.add_argument("--size", type=int, default=64, help="image side of the procedural scene")
    p.add_argument("--train-views", type=int, default=40)
    p.add_argument("--steps", type=int, default=None, help="training steps (default: per method, DEFAULT_STEPS)")
    p.add_argument("--occluded", type=float, default=0.5, help="fraction of training views with an occluder")
    p.add_argument("--occluder-area", type=float, default=0.15, help="fraction of the image each occluder covers")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="tiny sizes and steps, one seed: checks that it runs")
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(DEFAULT_STEPS))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; choose from {sorted(DEFAULT_STEPS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not 0 < args.occluded <= 1 or not 0 < args.occluder_area < 1:
        raise SystemExit("--occluded must be in (0, 1] and --occluder-area in (0, 1)")
    if args.smoke:
        args.size, args.train_views, seeds = 24, 8, seeds[:1]
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    panels = out.with_name(out.stem + "_panels")
    clean = make_procedural_dataset(ProceduralSceneConfig(width=args.size, height=args.size, num_train=args.train_views, num_test=8))
    rows: List[Dict[str, Any]] = []
    for method in methods:
        steps = 10 if args.smoke else (args.steps or DEFAULT_STEPS[method])
        for seed in seeds:
            occluded, masked, clean_masked = add_occluders(clean, args.occluded, args.occluder_area, seed)
            renders = []
            for setting, data in zip(SETTINGS, (clean, occluded, masked, clean_masked)):
                row, render = train_and_score(data, method, steps, seed, args.threads)
                rows.append({**row, "setting": setting})
                renders.append(render)
                print(f"{method} seed {seed} {setting:9s} test PSNR {row['test_psnr']:.2f} dB  SSIM {row['test_ssim']:.4f}  "
                      f"({row['train_seconds']:.0f} s)", flush=True)  # fmt: skip
            if seed == seeds[0]:
                truth = clean.split("test").images[0].float() / 255.0
                alpha = clean.split("test").alphas[0].float() / 255.0
                truth = truth * alpha + (1.0 - alpha)  # composited on white, like the renders
                panels.mkdir(parents=True, exist_ok=True)
                write_image(panels / f"{method}_test0.png", side_by_side(*renders, truth, labels=[*SETTINGS, "truth"]))
    summary = summarise(rows)
    record = {
        "benchmark": "masks",
        "simulated": "transient occluders painted on the procedural scene's training views; masks exact",
        "settings": {"size": args.size, "train_views": args.train_views, "test_views": 8, "occluded_fraction": args.occluded,
                     "occluder_area": args.occluder_area, "seeds": seeds, "methods": methods, "smoke": args.smoke},  # fmt: skip
        "rows": rows,
        "summary": summary,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads},
        "command": " ".join(sys.argv),
    }
    atomic_write_json(record, out)
    for key, entry in summary.items():
        print(f"{key:22s} test PSNR {entry['test_psnr']:.2f} +- {entry['test_psnr_std']:.2f} dB  "
              f"SSIM {entry['test_ssim']:.4f} +- {entry['test_ssim_std']:.4f}")  # fmt: skip
    return record


if __name__ == "__main__":
    main()
