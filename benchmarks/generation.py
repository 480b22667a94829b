"""Generation on the toy world (issue 13): E1 text-to-image, E2 rectified flow vs DDPM, E9 prompt rewriting.

Trains (or takes from the cache, :mod:`langfield.runs.toyworld`) the attribute-classifier
instrument, the VAE, an ε-prediction UNet and SD3 transformers trained with rectified flow and with
DDPM ε-prediction (same network, steps, data order and seeds), then measures:

* **E1** (UNet, DDIM, ``E1_STEPS`` steps): attribute accuracy at guidance 1, 2, 3, 5 beside chance
  and the classifier's held-out accuracy on real renders; toy-FID beside its real-vs-real floor.
  Bar: >= 0.8 at the best guidance, rising from guidance 1 to 3, toy-FID <= 3x floor.
* **E2** (SD3 transformer, guidance ``E2_GUIDANCE``): toy-FID, SWD and attribute accuracy at 5, 10,
  20 and 50 sampling steps for ``rectified_flow`` (flow-matching Euler) and ``ddpm`` (the
  ε-prediction control, DDIM), per sampling seed (and per training seed with ``--train-seeds``),
  mean and std. Bar: run and reported with spread, whichever way it falls.
* **E9** (UNet trained on 90 % descriptive captions, guidance ``E9_GUIDANCE``): attribute accuracy
  with the short captions ("a sphere and a box") vs their scene-aware rewrites
  (:func:`~langfield.generation.prompts.rewrite_prompt` from the held-out scene's objects and its
  camera). Bar: rewrites >= short + 10 points.

Every prompt describes a held-out scene (never trained on); every accuracy is printed beside
chance and the instrument's own held-out accuracy, every distance beside its floor at the same
set size (E1 and E9: 256 images per set and seed; E2: 128, as it samples 85 steps per set). The
guidance of E2 and E9 is fixed here, before any result. The instrument section also reports the
classifier on the VAE's reconstructions of real renders: the most any generated image decoded by
that VAE can score.

    python benchmarks/generation.py --out bench_out/generation.json            # default budget
    python benchmarks/generation.py --out /tmp/gen_smoke.json --smoke          # a minute or two
    python benchmarks/generation.py --out F.json --budget-minutes 45 --seeds 0,1,2 --train-seeds 0,1

Writes F.json and one image grid per experiment beside it (F_E1.png, F_E2.png, F_E9.png; top
row: the real held-out renders the prompts describe). ``--budget-minutes`` scales the training
steps and the number of images per measured set from the default (sized for about 90 minutes on
2 CPU cores in total, models included); already-trained models come from the cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import torch

from langfield.generation.loading import load_pipeline
from langfield.io.atomic import atomic_write_json
from langfield.io.images import image_grid, write_image
from langfield.runs.toyworld import ToyWorldExperimentConfig, ToyWorldModels, toyworld_preset, train_toyworld, vae_reconstruct
from langfield.runs.toyworld_measure import Instruments, PromptSet, heldout_prompts, mean_std, sample_images

E1_GUIDANCES = (1.0, 2.0, 3.0, 5.0)
E1_STEPS = 20
E2_STEPS = (5, 10, 20, 50)
E2_GUIDANCE = 3.0
E9_GUIDANCE = 3.0
E9_STEPS = 20
DEFAULT_MINUTES = 90.0
DEFAULT_NUM_IMAGES = 256
#: E2 samples 85 steps per seed and objective (5 + 10 + 20 + 50): half the set size keeps it in budget;
#: its floors are computed at its own size.
DEFAULT_NUM_IMAGES_E2 = 128
GRID_COLUMNS = 8
SCHEDULER = {"rectified_flow": "flow_euler", "epsilon": "ddim"}
OBJECTIVE_NAME = {"rectified_flow": "rectified_flow", "epsilon": "ddpm"}


@dataclasses.dataclass(frozen=True)
class Plan:
    """What is trained and how much is measured."""

    config: ToyWorldExperimentConfig
    num_images: int
    num_images_e2: int
    mode: str
    scale: float


def make_plan(smoke: bool, budget_minutes: float, train_seeds: Sequence[int]) -> Plan:
    if smoke:
        config = dataclasses.replace(toyworld_preset("smoke"), dit_seeds=tuple(train_seeds))
        return Plan(config, 16, 16, "smoke", 0.0)
    base = toyworld_preset("default")
    scale = budget_minutes / DEFAULT_MINUTES
    if scale <= 0:
        raise SystemExit("--budget-minutes must be positive")

    def steps(t):
        return dataclasses.replace(t, steps=max(10, int(round(t.steps * scale))))

    config = dataclasses.replace(
        base,
        instrument=steps(base.instrument),
        vae_training=steps(base.vae_training),
        unet_training=steps(base.unet_training),
        dit_training=steps(base.dit_training),
        dit_seeds=tuple(train_seeds),
    )
    num = int(min(DEFAULT_NUM_IMAGES, max(128, 32 * round(DEFAULT_NUM_IMAGES * scale / 32))))
    num_e2 = int(min(DEFAULT_NUM_IMAGES_E2, max(96, 32 * round(DEFAULT_NUM_IMAGES_E2 * scale / 32))))
    return Plan(config, num, num_e2, "default" if scale == 1.0 else "budget", scale)


def machine_info(load_before) -> Dict[str, Any]:
    import diffusers

    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


def _grid_rows(real: torch.Tensor, rows: List[torch.Tensor]) -> torch.Tensor:
    """The first GRID_COLUMNS images of each row, real renders on top."""
    k = min(GRID_COLUMNS, real.shape[0])
    stack = [real[:k]] + [r[:k] for r in rows]
    return image_grid(torch.cat(stack), columns=k)


def _seed_rows(instruments: Instruments, pipe, prompts: PromptSet, seeds: Sequence[int], *, steps: int, guidance: float,
               scheduler: str, with_swd: bool):  # fmt: skip
    per_seed, first = [], None
    for s in seeds:
        start = time.perf_counter()
        images = sample_images(pipe, prompts.prompts, steps=steps, guidance=guidance, seed=s, scheduler=scheduler)
        seconds = time.perf_counter() - start
        m = instruments.measure(images, prompts.targets, with_swd=with_swd)
        per_seed.append({"seed": s, "sampling_seconds": seconds, **m})
        if first is None:
            first = images
    return per_seed, first


def _summary(per_seed: List[Dict[str, Any]], keys: Sequence[str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key in keys:
        stats = mean_std([row[key] for row in per_seed])
        out[key] = stats["mean"]
        out[f"{key}_std"] = stats["std"]
    return out


def _load(path, device: str):
    """A saved toy pipeline on ``device`` in float32 (the dtype it was trained in, on every device)."""
    return load_pipeline(path, device=device, dtype=torch.float32)


def run_e1(models: ToyWorldModels, instruments: Instruments, seeds, num: int, real_top, log, device: str) -> Tuple[list, torch.Tensor]:
    pipe = _load(models.pipelines["unet"], device)
    prompts = heldout_prompts(models.split("heldout"), num, "descriptive")
    chance = instruments.chance(prompts.targets)
    rows, grid = [], []
    for g in E1_GUIDANCES:
        per_seed, first = _seed_rows(instruments, pipe, prompts, seeds, steps=E1_STEPS, guidance=g, scheduler="ddim", with_swd=True)
        row = {"experiment": "E1", "model": "unet", "objective": "ddpm", "guidance": g, "steps": E1_STEPS, "scheduler": "ddim",
               "num_images": num, **_summary(per_seed, ("attribute_accuracy", "toy_fid", "swd")), "chance": chance,
               "toy_fid_floor": instruments.toy_fid_floor.mean, "toy_fid_floor_std": instruments.toy_fid_floor.std,
               "swd_floor": instruments.swd_floor.mean, "per_seed": per_seed}  # fmt: skip
        rows.append(row)
        grid.append(first)
        log(f"E1 guidance {g:g}: attribute accuracy {row['attribute_accuracy']:.3f} ± {row['attribute_accuracy_std']:.3f} "
            f"(chance {chance:.3f}); toy-FID {row['toy_fid']:.2f} (floor {row['toy_fid_floor']:.2f})")  # fmt: skip
    return rows, _grid_rows(real_top, grid)


def run_e2(models: ToyWorldModels, instruments: Instruments, seeds, num: int, real_top, log, device: str) -> Tuple[list, torch.Tensor]:
    cfg = models.config
    prompts = heldout_prompts(models.split("heldout"), num, "descriptive")
    chance = instruments.chance(prompts.targets)
    rows, grid = [], []
    for objective in cfg.dit_objectives:
        pipes = {s: _load(models.pipelines[models.pipeline_name(objective, s)], device) for s in cfg.dit_seeds}
        for steps in E2_STEPS:
            per_seed = []
            for tseed, pipe in pipes.items():
                rows_s, first = _seed_rows(instruments, pipe, prompts, seeds, steps=steps, guidance=E2_GUIDANCE,
                                           scheduler=SCHEDULER[objective], with_swd=True)  # fmt: skip
                per_seed += [{"training_seed": tseed, **r} for r in rows_s]
                if tseed == cfg.dit_seeds[0]:
                    grid.append(first)
            row = {"experiment": "E2", "model": "sd3_transformer", "objective": OBJECTIVE_NAME[objective], "steps": steps,
                   "scheduler": SCHEDULER[objective], "guidance": E2_GUIDANCE, "num_images": num,
                   "training_seeds": list(cfg.dit_seeds), "sampling_seeds": list(seeds),
                   **_summary(per_seed, ("toy_fid", "swd", "attribute_accuracy")),
                   "toy_fid_floor": instruments.toy_fid_floor.mean, "toy_fid_floor_std": instruments.toy_fid_floor.std,
                   "swd_floor": instruments.swd_floor.mean, "swd_floor_std": instruments.swd_floor.std, "chance": chance,
                   "per_seed": per_seed}  # fmt: skip
            rows.append(row)
            log(f"E2 {row['objective']:>14} {steps:2d} steps: toy-FID {row['toy_fid']:.2f} ± {row['toy_fid_std']:.2f} "
                f"(floor {row['toy_fid_floor']:.2f}), SWD {row['swd']:.3f} (floor {row['swd_floor']:.3f}), "
                f"accuracy {row['attribute_accuracy']:.3f}")  # fmt: skip
    return rows, _grid_rows(real_top, grid)


def run_e9(models: ToyWorldModels, instruments: Instruments, seeds, num: int, real_top, log, device: str) -> Tuple[list, torch.Tensor]:
    pipe = _load(models.pipelines["unet"], device)
    split = models.split("heldout")
    rows, grid = [], []
    descriptive = heldout_prompts(split, num, "descriptive")
    for style, name in (("short", "short"), ("rewritten", "rewritten")):
        prompts = heldout_prompts(split, num, style)
        per_seed, first = _seed_rows(instruments, pipe, prompts, seeds, steps=E9_STEPS, guidance=E9_GUIDANCE, scheduler="ddim",
                                     with_swd=False)  # fmt: skip
        row = {"experiment": "E9", "model": "unet", "prompts": name, "guidance": E9_GUIDANCE, "steps": E9_STEPS,
               "scheduler": "ddim", "num_images": num, "descriptive_fraction": models.config.descriptive_fraction,
               **_summary(per_seed, ("attribute_accuracy", "toy_fid")), "chance": instruments.chance(prompts.targets),
               "toy_fid_floor": instruments.toy_fid_floor.mean, "example_prompts": list(prompts.prompts[:4]),
               "per_seed": per_seed}  # fmt: skip
        if style == "rewritten":
            same = sum(a == b for a, b in zip(prompts.prompts, descriptive.prompts))
            row["rewrite_equals_descriptive_caption"] = same / len(prompts)
        rows.append(row)
        grid.append(first)
        log(f"E9 {name:>9}: attribute accuracy {row['attribute_accuracy']:.3f} ± {row['attribute_accuracy_std']:.3f} "
            f"(chance {row['chance']:.3f})")  # fmt: skip
    return rows, _grid_rows(real_top, grid)


def bars(rows: List[Dict[str, Any]], instrument_acc: float) -> Dict[str, Any]:
    """The issue's bars, evaluated on the means (pass/fail, with the numbers they were read from)."""
    e1 = {r["guidance"]: r for r in rows if r["experiment"] == "E1"}
    out: Dict[str, Any] = {}
    if e1:
        best_g = max(e1, key=lambda g: e1[g]["attribute_accuracy"])
        acc = {g: e1[g]["attribute_accuracy"] for g in sorted(e1)}
        rising = acc.get(1.0, 1.0) <= acc.get(2.0, 0.0) <= acc.get(3.0, 0.0) and acc.get(3.0, 0.0) > acc.get(1.0, 1.0)
        ratio = e1[best_g]["toy_fid"] / max(e1[best_g]["toy_fid_floor"], 1e-12)
        out["E1"] = {
            "best_guidance": best_g, "best_attribute_accuracy": acc[best_g], "accuracy_at_least_0.8": acc[best_g] >= 0.8,
            "rising_from_1_to_3": rising, "toy_fid_over_floor_at_best_guidance": ratio, "toy_fid_within_3x_floor": ratio <= 3.0,
            "instrument_heldout_attribute_accuracy": instrument_acc,
        }  # fmt: skip
    e2 = [r for r in rows if r["experiment"] == "E2"]
    if e2:
        out["E2"] = {"reported_with_spread": all(len(r["per_seed"]) >= 3 for r in e2),
                     "num_values_per_row": min(len(r["per_seed"]) for r in e2)}  # fmt: skip
    e9 = {r["prompts"]: r for r in rows if r["experiment"] == "E9"}
    if len(e9) == 2:
        gain = e9["rewritten"]["attribute_accuracy"] - e9["short"]["attribute_accuracy"]
        out["E9"] = {"gain": gain, "rewrites_at_least_short_plus_0.10": gain >= 0.10}
    return out


def _parse_seeds(text: str) -> List[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"expected comma-separated integers, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise SystemExit(f"expected distinct seeds >= 0, got {text!r}")
    return seeds


def main(argv=None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write (image grids go beside it)")
    parser.add_argument("--smoke", action="store_true", help="tiny models and sets: checks that everything runs (numbers mean nothing)")
    parser.add_argument("--budget-minutes", type=float, default=DEFAULT_MINUTES,
                        help="scale training steps and set sizes from the default (sized for ~90 min on 2 cores)")
    parser.add_argument("--seeds", default="0,1,2", help="sampling seeds (comma-separated)")
    parser.add_argument("--train-seeds", default="0", help="training seeds of the E2 transformers (comma-separated)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="toy-world cache root (default $LANGFIELD_CACHE_DIR/toyworld or ~/.cache/langfield/toyworld)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 by default: on a shared 2-core VM two threads ran conv nets 10-30x slower)")
    parser.add_argument("--experiments", default="E1,E2,E9", help="which experiments to run")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available); models stay float32")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    seeds, train_seeds = _parse_seeds(args.seeds), _parse_seeds(args.train_seeds)
    experiments = [e.strip().upper() for e in args.experiments.split(",") if e.strip()]
    unknown = sorted(set(experiments) - {"E1", "E2", "E9"})
    if unknown:
        raise SystemExit(f"--experiments: unknown {unknown}")
    plan = make_plan(args.smoke, args.budget_minutes, train_seeds)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    wall = time.perf_counter()

    def log(msg: str) -> None:
        print(msg, flush=True)

    models = train_toyworld(plan.config, cache_dir=args.cache_dir, device=device, progress=not args.quiet, log=log)
    train_wall = time.perf_counter() - wall
    heldout = models.split("heldout")
    classifier = models.classifier()
    start = time.perf_counter()
    instruments = Instruments(classifier, heldout, models.split("train").labels, plan.num_images)
    instruments_e2 = instruments
    if plan.num_images_e2 != plan.num_images:
        instruments_e2 = Instruments(classifier, heldout, models.split("train").labels, plan.num_images_e2)
    held = instruments.heldout_accuracy()
    vae = models.vae()
    recon = vae_reconstruct(vae, heldout.float_images(slice(0, plan.num_images)))
    recon_acc = instruments.accuracy(recon.permute(0, 2, 3, 1), heldout.labels.index(torch.arange(plan.num_images)))
    instrument_seconds = time.perf_counter() - start
    log(f"instrument: held-out attribute accuracy {held['accuracy']['attribute']:.3f} (chance {held['chance']['attribute']:.3f}); "
        f"on VAE reconstructions {recon_acc['attribute']:.3f}; toy-FID floor {instruments.toy_fid_floor.mean:.2f} "
        f"± {instruments.toy_fid_floor.std:.2f} at N={plan.num_images}")  # fmt: skip

    real_top = heldout.float_images(slice(0, GRID_COLUMNS)).permute(0, 2, 3, 1)
    results: List[Dict[str, Any]] = []
    timings: Dict[str, float] = {}
    grids: Dict[str, str] = {}
    runners = {"E1": run_e1, "E2": run_e2, "E9": run_e9}
    for name in experiments:
        t = time.perf_counter()
        ins, num = (instruments_e2, plan.num_images_e2) if name == "E2" else (instruments, plan.num_images)
        rows, grid = runners[name](models, ins, seeds, num, real_top, log, device)
        timings[name] = time.perf_counter() - t
        results += rows
        path = args.out.with_name(f"{args.out.stem}_{name}.png")
        write_image(path, grid)
        grids[name] = str(path)

    report = {
        "benchmark": "generation",
        "mode": plan.mode,
        "budget_minutes": None if args.smoke else args.budget_minutes,
        "scale": plan.scale,
        "sampling_seeds": seeds,
        "training_seeds": {"sd3_transformer": list(plan.config.dit_seeds), "other_models": [plan.config.seed]},
        "num_images_per_set": {"E1": plan.num_images, "E2": plan.num_images_e2, "E9": plan.num_images},
        "instruments": {
            "attribute_classifier": {
                "heldout_attribute_accuracy": held["accuracy"]["attribute"],
                "heldout_accuracy": held["accuracy"],
                "chance": held["chance"]["attribute"],
                "chance_detail": held["chance"],
                "num_heldout_images": held["num_images"],
                "on_vae_reconstructions": recon_acc,
                "trained_on": "real renders of the training split only",
            },
            "floors": {"E1_E9": instruments.floors(), "E2": instruments_e2.floors()},
        },
        "results": results,
        "bars": bars(results, held["accuracy"]["attribute"]),
        "phases": models.phase_summary(),
        "timing_seconds": {"training_wall": train_wall, "instruments": instrument_seconds, **timings,
                           "total_wall": time.perf_counter() - wall},  # fmt: skip
        "grids": grids,
        "cache_root": str(models.root),
        "pipelines": {k: str(v) for k, v in models.pipelines.items()},
        "config": models.to_dict()["config"],
        "device": device,
        "machine": machine_info(load_before),
    }
    atomic_write_json(report, args.out)
    log(f"wrote {args.out} ({report['timing_seconds']['total_wall']:.0f} s); bars: {json.dumps(report['bars'])}")
    return report


if __name__ == "__main__":
    main()
