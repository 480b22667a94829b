"""E3 (issue 14): ControlNet vs ControlNet-XS vs ControlNeXt on the toy world, on top of the frozen base UNet.

Takes the toy world's models from the cache (:func:`~langfield.runs.toyworld.train_toyworld`, the
``default`` preset, or ``fine`` with ``--preset fine``: a factor-2 VAE; ``smoke`` with ``--smoke``;
trained there when absent), trains the fidelity
instruments on real renders (:func:`~langfield.runs.controlnet.train_fidelity`, cached), then for
each condition (depth, edges, segmentation) and adapter (controlnet, controlnet_xs, controlnext)
trains the adapter on the frozen base (:func:`~langfield.runs.controlnet.train_control`, the same
steps, batch, learning rate and data order for every adapter) and measures, on ``N`` held-out
scenes whose exact conditions it is given (prompt: the scene's descriptive caption):

* ``fidelity``: segmentation mIoU by the segmenter / ``1 - AbsRel`` by the depth regressor / edge
  F1 (1 px) of Canny of the generated image against the condition; mean and std over the sampling
  seeds (``--seeds``; one trained adapter per row: training seeds are not varied); beside it
  ``no_control_fidelity``, ``fidelity_real_renders`` (the instrument on the real renders of the
  same scenes: its ceiling), ``fidelity_vae_roundtrip`` (the same renders encoded and decoded by
  the frozen autoencoder: the ceiling of any image generated in its latent space),
  ``fidelity_other_scene`` (another scene's real render) and ``fidelity_image_blind`` (per-pixel
  majority class / median depth of the training renders; edges: another scene's edges);
* ``toy_fid``: Fréchet distance of the attribute classifier's features to real held-out renders,
  beside its real-vs-real split-half floor at the same set size;
* ``trainable_params``, ``s_per_step`` (training), ``sample_s`` (seconds per generated image) and
  ``sample_overhead`` (over the base without control);
* ``steps_to_half``: the first of ``CURVE_POINTS`` evenly spaced training steps at which fidelity
  (on ``CURVE_IMAGES`` images, seed 0) has covered half the way from no control (step 0) to its
  last value; ``None`` when fidelity never rose above no control.

``--prompts descriptive,empty`` measures every set a second time with the empty prompt (rows with
``prompt: "empty"``, fidelity only; the descriptive rows carry ``prompt: "descriptive"``): the
condition alone. With its caption the base already places the named objects where the toy world's
cameras put them (centred, in the caption's left-to-right order), so the descriptive setting's no-control
floor is high; the empty prompt isolates what the condition controls (the ControlNet paper trains with
50 % empty prompts so that the condition alone carries the semantics, Sec. 3.3), and the segmentation
bar is stated for each setting. ``empty_guess`` samples the empty prompt in guess mode (the ControlNet paper's
Sec. 3.4 answer to sampling without a prompt: control on the conditional branch only, so classifier-free
guidance amplifies it; ControlNets in diffusers' guess mode, XS and ControlNeXt with that branch rule alone,
:func:`~langfield.generation.control.generate_controlled`) at each adapter's scale and guidance in
``GUESS_SETTINGS``, chosen on validation scenes (``--guess-settings controlnext=1/2`` replaces one adapter's, for an
adapter trained otherwise and tuned on the validation scenes); its no-control rows are the empty prompt's images
(both guidance branches are the same prediction).

``--adapter-cache DIR`` trains every adapter into ``DIR/<adapter>-<condition>-<steps>-<key>``
(:func:`adapter_cache_dir`: keyed by everything its training and fidelity curve depend on): a later run
with the same settings reuses it (its recorded training time and curve), and a run stopped mid-training
resumes from the adapter's last checkpoint (every :data:`~langfield.runs.controlnet.CHECKPOINT_EVERY` steps) with the same result an
uninterrupted run gives. Rows carry ``adapter_dir`` and ``resumed_at_step``. ``--decay-steps N`` (with
``--adapter-cache``) follows each adapter's constant-rate ``--steps`` with a second stage of ``N`` steps from its
weights, the rate decayed to 0 (:func:`decay_stage`; the decay of a warmup-stable-decay schedule), cached the
same way; its rows describe the decayed adapter (``train_steps`` both stages, ``decay_stage`` what the second
did, its own ``resumed_at_step`` among it, one more fidelity-curve point after it); the row's ``resumed_at_step``
stays the first stage's.

Rows ``variant: "none"`` are the base without control (the floor every variant must beat); the
top-level ``instruments`` section holds the instruments' own held-out scores on real renders
(their ceiling) and the image-blind floors. Multi-ControlNet rows (``variant: "multi"``) combine the
depth and edges ControlNets with the weights of ``MULTI_WEIGHTS`` and report both fidelities.
``bars`` states each of the issue's bars and whether this run met it.

**E4** (``--e4``, default on; ``--no-e4`` skips it): 3D-aware control on a langfield scene: ``--data
toyworld`` (default: toy-world scene ``E4_TOY_SCENE`` seen from ``E4Plan.views`` + 8 cameras, written
into the work folder by :func:`~langfield.data.toyworld.scene_dataset.write_toyworld_scene` -- the
domain the ControlNets and the instruments know), ``procedural`` (langfield's built-in scene: textured
primitives on a checkered ground, another domain) or a dataset folder. A Gaussians reconstruction of the scene is trained into ``--work``
(default ``<out>_e4work``; reused when a finished run with the same settings is there: 1500 steps at
64 px, 32 views, about a minute), ``E4Plan.num_views`` views that overlap are rendered at the base's size
(``--e4-cameras``, :func:`e4_cameras`: on toy-world scenes, by default, a sweep of views ``E4_SWEEP_STEP_DEG``
apart that the toy world's camera sampler accepts, in the camera distribution the ControlNet and the instruments
know; elsewhere consecutive frames of the run's 24-frame orbit, 15 degrees apart; 32 px:
:func:`~langfield.runs.scene_control.resize_cameras`),
and :func:`~langfield.runs.scene_control.measure_e4` runs the ladder uncontrolled / controlled /
shared_noise / dataset_update over the sampling seeds with the depth ControlNet E3 just trained (prompt:
on a toy-world scene, its caption seen from the ladder's first camera, and for each edited training
view the caption from that view's camera (:func:`e4_prompts`; ``--e4-prompt stored``: the folder's
stored caption, from its first training camera, everywhere); on other folders ``E4_PROMPT``, or the
``caption`` their ``transforms_train.json`` carries). Rows ``experiment: "E4"`` (one per setting) carry ``warp_psnr`` (mean, std and per seed),
``fidelity`` (E3's depth instrument, ``1 - AbsRel`` of the regressor's depth of each generated view
against the scene's rendered depth), ``covisible``, ``seeds``, ``e3_fidelity`` (E3's controlnet/depth
fidelity, the bar's reference), ``fidelity_scene_renders`` (the instrument on the scene's own renders: its
ceiling there) and ``fidelity_image_blind`` (on a uniform grey image: its floor there). **Domain gap**
(``procedural`` or another folder): the
ControlNet and the instrument know the toy world (plain-coloured primitives on a floor, per-image
inverse-depth range); the procedural scene has textured primitives on a checkered ground. Every E4 scene's depth
conditions use one scale for all views (``depth_range``: the rendered depth's range over the ladder's
cameras and the edited training views, so nearest is bright and farthest dark as in the toy world).
The JSON's ``e4`` section says so and whether the instrument beats that floor by ``E4_VALID_MARGIN``
(0.05) on the scene (``instrument_valid_on_scene``); when it does not, the fidelity bars carry a note
that they say nothing.

``--e4-scenes 0,1,2,3`` (``--data toyworld``) runs the ladder on several toy-world scenes and pools them
(:func:`pool_e4_scenes`: per seed the mean over the scenes, then mean and std over the seeds; each scene's
own figures under ``per_scene``); the ``e4`` section keeps each scene's section under ``scenes``. Beside
every toy-world scene, :func:`same_scene_e3` samples the same scene the way E3 samples its test scenes
(``E3_SAME_SCENE_VIEWS`` cameras of the toy world's own sampler, exact depth conditions, each view's caption)
with the same ControlNet: E4 rows carry that as ``e3_same_scenes``, and the bars add a paired one
("E4 (paired reference): ... >= E3's setting on the same scenes", langfield's, beside the issue's bar
against E3's 128-scene mean, which a few scenes cannot resolve: E3's per-scene fidelity spreads by ~0.04).
``--e4-depth-weight W`` trains E4's Gaussians (and the dataset update) with a depth term of weight ``W`` on the
scene's depth maps (``GaussiansConfig.depth_loss_weight``): a toy-world scene carries its exact ray-cast depth,
so this is a simulated RGB-D capture, not photos alone; the run gets its own folder (``..._depthW``).

    python benchmarks/controlnet.py --out bench_out/controlnet.json             # default budget (~90 min, E3 + E4)
    python benchmarks/controlnet.py --out /tmp/cn_smoke.json --smoke            # about a minute (E4 included)
    python benchmarks/controlnet.py --out F.json --budget-minutes 45 --seeds 0,1,2
    python benchmarks/controlnet.py --out F.json --data data/my_scene --work runs/e4   # E4 on another scene
    python benchmarks/controlnet.py --out F.json --data procedural --conditions depth  # E4 on the built-in scene
    python benchmarks/controlnet.py --out F.json --conditions depth --adapters controlnet --steps 1544  # E4 + its reference only
    python benchmarks/controlnet.py --out F.json --conditions depth --adapters controlnet --steps 1000 --e4-scenes 0,1,2,3

Budget: the adapters' training steps (the same for all nine) are chosen at run time from measured
costs: 3 timed training steps of each adapter (after a warm-up step) and the measured time of the
no-control sets, scaled to the adapter and Multi-ControlNet sets and the fidelity curves (x 1.3 for
the adapters' own cost); training gets what ``--budget-minutes`` leaves after that estimate
(at least 20 % of it; ``MIN_STEPS`` .. ``MAX_STEPS`` steps). E4 is inside the budget: the scene's training is
timed before the probe, and E4's ladder is estimated (:func:`e4_estimate_s`, from the measured seconds per
image and per Gaussians step) and subtracted too; the plan line ``budget: ...`` prints all three before the
adapters train. Measured for the default (2 cores, loaded): 0.34 s for one 20-step image of the toy UNet
with guidance, 0.07 s per image in batches of 16; Gaussians 0.03 s/step at 64 px; so E4 takes about
1 min (scene) + ~1.5 min per seed, ~6 min of the 90. ``--num-images`` per set, default 128. The toy-world models and the fidelity
instruments come from the cache (their first training is not counted in the budget: ~1 h for the
default toy world, a few minutes for the instruments). Image grids beside the JSON: ``F_E3_<condition>.png``
(rows: real renders, conditions, no control, controlnet, controlnet_xs, controlnext) and ``F_multi.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from langfield._checks import InputError, check_choice
from langfield.configs import config_to_dict
from langfield.generation.control import INJECTIONS, NORMALIZATIONS, generate_controlled
from langfield.generation.loading import load_pipeline
from langfield.generation.sampling import generate
from langfield.io.atomic import atomic_write_json
from langfield.io.images import image_grid, write_image
from langfield.methods.schedules import LR_SCHEDULES
from langfield.runs.controlnet import (
    ADAPTERS,
    MEASURED_CONDITIONS,
    ControlTrainConfig,
    FidelityConfig,
    ToyTruth,
    condition_images,
    control_source,
    controlled_pipeline,
    measure_fidelity,
    read_truth,
    scene_truth,
    train_control,
    train_fidelity,
)
from langfield.runs.controlnet_config import config_identity
from langfield.runs.toyworld import load_split, toyworld_preset, train_toyworld, vae_reconstruct
from langfield.runs.toyworld_measure import SEED_STRIDE, Instruments, mean_std
from langfield.training.callbacks import TrainerCallback

DEFAULT_MINUTES = 90.0
DEFAULT_NUM_IMAGES = 128
MAX_STEPS = 20000
MIN_STEPS = 100
SAMPLING_STEPS = 20
GUIDANCE = 3.0
CURVE_POINTS = 4
CURVE_IMAGES = 32
BATCH_SIZE = 32
LR = 5e-4
MULTI_WEIGHTS = ((1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (0.5, 0.5))
# "empty_guess": the empty prompt in diffusers' guess mode (the ControlNet paper's answer to sampling without a
# prompt, Sec. 3.4: control on the conditional branch only, so classifier-free guidance amplifies the control;
# diffusers scales the residuals logspace(-1, 0) from the finest block to the middle one). Scale and guidance were
# chosen on validation scenes (held-out rows 1000..1127, not the measured rows 0..127) with a 4,000-step
# segmentation ControlNet on the 'fine' base, seed 0 (README, "Segmentation without a prompt").
GUESS_SCALE = 2.0
GUESS_GUIDANCE = 10.0
# ControlNet-XS and ControlNeXt have no per-resolution residual weights in guess mode (the branch rule alone), and at
# the ControlNet's scale 2 they overshoot; their settings were chosen the same way on the same validation scenes
# (XS at 4,000 steps: scale 1 / guidance 5 0.504 vs scale 2 / guidance 10 0.309; ControlNeXt at 1,544 steps: 0.187
# vs 0.032; README, "Segmentation without a prompt"). ControlNeXt's unconditional half has run on the base as given
# (its trained subset put back) since 2026-12-07; for that rule 1.5 / 3 was validated on the 18.1 % adapter
# (docs/controlnet_results.md) and is passed with --guess-settings; this default is the earlier rule's choice.
GUESS_SETTINGS = {"controlnet": (GUESS_SCALE, GUESS_GUIDANCE), "controlnet_xs": (1.0, 5.0), "controlnext": (1.0, 5.0)}
#: adapter kind -> (conditioning scale, guidance) in guess mode (``--guess-settings`` overrides ``GUESS_SETTINGS``).
GuessSettings = Dict[str, tuple]
GRID_COLUMNS = 8
SAMPLE_BATCH = 64
GS_S_PER_STEP_EST = 0.05  # Gaussians on the 64 px procedural scene, 5000 initial: 0.031 s/step measured at start (2 cores, loaded)


@dataclasses.dataclass(frozen=True)
class Plan:
    mode: str
    preset: str
    fidelity: FidelityConfig
    num_images: int
    sampling_steps: int
    curve_images: int
    batch_size: int
    fixed_steps: Optional[int]  # smoke: fixed; else chosen from the probe
    budget_s: float


def make_plan(smoke: bool, budget_minutes: float, num_images: Optional[int]) -> Plan:
    if budget_minutes <= 0:
        raise SystemExit("--budget-minutes must be positive")
    if smoke:
        return Plan("smoke", "smoke", FidelityConfig(width=8, steps=20, batch_size=16), num_images or 8, 4, 4, 8, 4, budget_minutes * 60)
    mode = "default" if budget_minutes == DEFAULT_MINUTES else "budget"
    return Plan(mode, "default", FidelityConfig(), num_images or DEFAULT_NUM_IMAGES, SAMPLING_STEPS, CURVE_IMAGES, BATCH_SIZE, None,
                budget_minutes * 60)  # fmt: skip


def machine_info(load_before) -> Dict[str, Any]:
    import diffusers

    return {"platform": platform.platform(), "processor": platform.processor(), "python": sys.version.split()[0],
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average_before": load_before, "load_average_after": os.getloadavg()}  # fmt: skip


# ----------------------------------------------------------------------------- sampling


def sample_set(pipe, adapters, conds, truth: ToyTruth, seed: int, steps: int, weights=1.0, prompt: str = "descriptive",
               kind: str = "controlnet", guess_settings: Optional[GuessSettings] = None) -> torch.Tensor:
    """``[N, H, W, 3]``: image ``i`` from noise seed ``seed * SEED_STRIDE + i`` (with or without control), prompted
    with its scene's descriptive caption (``prompt="descriptive"``) or the empty prompt (``"empty"``: the condition
    alone, as the ControlNet paper shows its models without prompts; ``"empty_guess"``: the same in diffusers'
    guess mode at the adapter ``kind``'s ``GUESS_SETTINGS`` (or ``guess_settings``'s) -- control on the conditional
    branch only; without control it is the empty setting, whose two guidance branches are the same prediction)."""
    check_choice(prompt, "prompt", PROMPT_SETTINGS)
    settings = prompt_sampling(prompt, "none" if adapters is None else kind, guess_settings)
    guidance, guess = settings["guidance"], settings.get("guess_mode", False)
    multi = adapters is not None and len(adapters) > 1
    if adapters is not None:  # the setting's scale on the given weights, once before the batches
        scale = settings["conditioning_scale"]
        weights = [scale * w for w in weights] if multi else scale * weights
    out = []
    for start in range(0, len(truth), SAMPLE_BATCH):
        prompts = list(truth.captions[start : start + SAMPLE_BATCH])
        if prompt in ("empty", "empty_guess"):
            prompts = [""] * len(prompts)
        s = seed * SEED_STRIDE + start
        if adapters is None:
            out.append(generate(pipe, prompts, steps=steps, guidance=guidance, seed=s).images)
        else:
            chunk = [c[start : start + SAMPLE_BATCH].float() / 255.0 for c in conds]
            res = generate_controlled(pipe, prompts, chunk if multi else chunk[0], adapters=adapters if multi else adapters[0],
                                      weights=list(weights) if multi else weights, steps=steps, guidance=guidance, seed=s,
                                      guess_mode=guess)  # fmt: skip
            out.append(res.images)
    return torch.cat(out)


PROMPT_SETTINGS = ("descriptive", "empty", "empty_guess")


class FidelityCurve(TrainerCallback):
    """Fidelity on a small set at ``points`` training steps (for steps_to_half). With ``path`` the points are kept
    in that JSON as they are taken and read back first, so a resumed training run keeps the points it had."""

    def __init__(self, pipe, condition, truth, cond, instruments, points: Sequence[int], steps: int, path: Optional[Path] = None) -> None:
        self.pipe, self.condition, self.truth, self.cond = pipe, condition, truth, cond
        self.instruments, self.points, self.steps, self.path = instruments, set(points), steps, path
        self.values: List[Dict[str, Any]] = []
        if path is not None and path.is_file():
            self.values = [v for v in json.loads(path.read_text(encoding="utf-8")) if v["step"] in self.points]

    def on_sync(self, trainer) -> None:
        # CPU: every step is a sync point; CUDA: only log steps, so a point is taken at the first sync at or after it
        pending = [p for p in self.points if p > (self.values[-1]["step"] if self.values else 0)]
        if pending and trainer.step >= min(pending):
            adapter = trainer.method.adapter
            device = next(adapter.parameters()).device
            adapter.cpu()  # sampling runs on the CPU beside the pipeline's VAE; .to() keeps the Parameter objects
            try:
                pipe = controlled_pipeline(self.pipe, adapter)
                images = sample_set(pipe, [adapter], [self.cond], self.truth, 0, self.steps)
                value = measure_fidelity(self.instruments, self.condition, images, self.truth)
            finally:
                adapter.to(device)
            self.values.append({"step": trainer.step, "fidelity": value})
            if self.path is not None:
                atomic_write_json(self.values, self.path)


def adapter_cache_dir(root: Path, cfg: ControlTrainConfig, source, plan: "Plan", points: Sequence[int], device: str) -> Path:
    """``--adapter-cache``'s folder for one adapter: keyed by everything its training and fidelity curve depend on
    (the configuration, the base UNet's phase folder, the curve's steps, images and sampling steps, the instruments'
    configuration, the device); ``identity.json`` inside says which."""
    identity = {"config": config_identity(cfg), "base": str(Path(source.pipeline_dir).resolve()), "device": device,
                "curve": {"points": list(points), "images": plan.curve_images, "sampling_steps": plan.sampling_steps,
                          "instruments": config_to_dict(plan.fidelity)}}  # fmt: skip
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    folder = root / f"{cfg.adapter}-{cfg.condition}-{cfg.steps}-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "identity.json").is_file():
        atomic_write_json(identity, folder / "identity.json")
    return folder


def score_set(instruments, condition: str, images: torch.Tensor, truth: ToyTruth, per_seed: List[float], per_seed_all: List[float]) -> None:
    """Append the fidelity of one generated set to ``per_seed`` (and, for segmentation, the all-class mIoU to
    ``per_seed_all``)."""
    per_seed.append(measure_fidelity(instruments, condition, images, truth))
    if condition == "segmentation":
        per_seed_all.append(measure_fidelity(instruments, condition, images, truth, all_classes=True))


def prompt_rows(kind: str, condition: str, pipe, adapter, cond, truth: ToyTruth, instruments, seeds: Sequence[int], steps: int,
                prompts: Sequence[str], reference: Dict[str, Any], trainable_params: int,
                guess_settings: Optional[GuessSettings] = None) -> List[Dict[str, Any]]:  # fmt: skip
    """E3 rows of ``kind`` (``"none"``: ``adapter`` None) on ``condition`` in the other prompt settings (``prompt``
    key; the same scenes, conditions and noise seeds as the descriptive rows, fidelity only; guess mode at
    ``guess_settings``, default ``GUESS_SETTINGS``)."""
    rows = []
    for prompt in prompts:
        per_seed, per_seed_all, times = [], [], []
        for s in seeds:
            t0 = time.perf_counter()
            images = sample_set(pipe, None if adapter is None else [adapter], None if adapter is None else [cond], truth, s, steps,
                                prompt=prompt, kind=kind, guess_settings=guess_settings)  # fmt: skip
            times.append((time.perf_counter() - t0) / len(truth))
            score_set(instruments, condition, images, truth, per_seed, per_seed_all)
        stats = mean_std(per_seed)
        rows.append({"experiment": "E3", "variant": kind, "condition": condition, "prompt": prompt, "fidelity": stats["mean"],
                     "fidelity_std": stats["std"], "fidelity_per_seed": per_seed, **_all_classes(per_seed_all),
                     **reference_fields(reference, condition), "trainable_params": trainable_params,
                     "sample_s": sum(times) / len(times), "seeds": list(seeds), **prompt_sampling(prompt, kind, guess_settings)})  # fmt: skip
    return rows


def prompt_sampling(prompt: str, kind: str, guess_settings: Optional[GuessSettings] = None) -> Dict[str, Any]:
    """The sampling settings a row of ``prompt`` and adapter ``kind`` (``"none"``: no control) ran with (guess mode:
    ``guess_settings``, default ``GUESS_SETTINGS``); the no-control rows of ``empty_guess`` carry the ControlNet's
    guidance label (their images are the empty prompt's, whose two guidance branches are the same prediction)."""
    guess = prompt == "empty_guess"
    table = GUESS_SETTINGS if guess_settings is None else guess_settings
    scale, guidance = table.get(kind, table["controlnet"]) if guess else (1.0, GUIDANCE)
    out: Dict[str, Any] = {"guidance": guidance}
    if kind != "none":
        out.update(conditioning_scale=scale, guess_mode=guess)
    return out


def reference_fields(reference: Dict[str, Any], condition: str) -> Dict[str, float]:
    """A row's reference figures for ``condition``: ``fidelity_real_renders`` (the instrument's ceiling),
    ``fidelity_vae_roundtrip`` (a latent model's), ``fidelity_image_blind`` and ``fidelity_other_scene`` (floors)."""
    return {f"fidelity_{k}": v for k, v in reference[condition].items() if k != "all_classes"}


def steps_to_half(curve: List[Dict[str, Any]], start: float) -> Optional[int]:
    if not curve:
        return None
    final = curve[-1]["fidelity"]
    if final <= start:
        return None
    for point in curve:
        if point["fidelity"] - start >= 0.5 * (final - start):
            return int(point["step"])
    return None


#: The decay stage (``--decay-steps``): from the constant-rate adapter, the same rate decayed along a half cosine to
#: 0 after a short warm-up (the optimizer starts afresh), its own batch order -- the "decay" of a
#: warmup-stable-decay schedule (MiniCPM, Hu et al. 2024; Hägele et al. 2024) run as a second stage.
DECAY_WARMUP = 0.01
DECAY_SEED = 1


def decay_stage(source, cfg: ControlTrainConfig, first_dir: Path, first: Dict[str, Any], steps: int, pipe, condition: str, curve_truth,
                curve_cond, instruments, plan: "Plan", points: Sequence[int], args, say) -> tuple:  # fmt: skip
    """Train ``steps`` more steps from the adapter in ``first_dir`` (the constant-rate run ``cfg`` wrote; ``first`` its
    record) with the rate decaying to 0 (``DECAY_*``), cached in ``--adapter-cache`` like the first stage:
    ``(adapter, record, folder, summary, curve points)`` -- the curve point after the decay at step ``cfg.steps +
    steps``; the record's ``s_per_step`` over both stages."""
    tail_cfg = dataclasses.replace(cfg, steps=steps, lr_schedule="cosine", warmup=DECAY_WARMUP, seed=DECAY_SEED, init_from=str(first_dir))
    folder = adapter_cache_dir(args.adapter_cache, tail_cfg, source, plan, points, args.device)
    tail_cb = FidelityCurve(pipe, condition, curve_truth, curve_cond, instruments, [steps], plan.sampling_steps, path=folder / "curve.json")
    adapter, rec = train_control(source, tail_cfg, folder, device=args.device, pipeline=pipe, callbacks=[tail_cb], progress=not args.quiet)
    rec = {**rec, "s_per_step": (first["s_per_step"] * first["steps"] + rec["s_per_step"] * rec["steps"]) / rec["total_steps"]}
    summary = {"steps": steps, "from_steps": first["steps"], "schedule": "cosine", "warmup": DECAY_WARMUP, "seed": DECAY_SEED,
               "lr": tail_cfg.lr, "adapter_dir": str(folder), "first_stage_dir": str(first_dir),
               "resumed_at_step": rec.get("resumed_at_step", 0)}  # fmt: skip
    say(f"{cfg.adapter} on {condition}: decay stage of {steps} steps from step {first['steps']} -> {folder}")
    return adapter, rec, folder, summary, [{"step": first["steps"] + v["step"], "fidelity": v["fidelity"]} for v in tail_cb.values]


def controlnet_options(args) -> ControlTrainConfig:
    """The adapters' own training options from the command line (``--lr-schedule``, ``--controlnext-*``); the benchmark
    sets condition, kind, steps, batch, rate and seed per run."""
    names = args.controlnext_train_base.strip()
    train_base = () if names == "none" else tuple(n.strip() for n in names.split(","))
    try:
        return ControlTrainConfig(lr_schedule=args.lr_schedule, controlnext_normalization=args.controlnext_normalization,
                                  controlnext_train_base=train_base, controlnext_injection=args.controlnext_injection)  # fmt: skip
    except InputError as err:
        raise SystemExit(f"--controlnext-train-base: {err}") from None


def probe_steps(source, pipe, plan: Plan, say, adapters: Sequence[str] = ADAPTERS,
                options: ControlTrainConfig = ControlTrainConfig()) -> Dict[str, float]:  # fmt: skip
    """Seconds per training step of each adapter (3 timed steps after 1 warm-up, depth condition; the adapters'
    own options, such as ``controlnext_*``, from ``options``)."""
    out = {}
    for kind in adapters:
        cfg = dataclasses.replace(options, condition="depth", adapter=kind, steps=1, batch_size=plan.batch_size, lr=LR, max_images=256)
        train_control(source, cfg, pipeline=pipe)
        cfg = dataclasses.replace(cfg, steps=3)
        _, rec = train_control(source, cfg, pipeline=pipe)
        out[kind] = rec["s_per_step"]
        say(f"probe: {kind} {rec['s_per_step']:.3f} s/step (batch {plan.batch_size})")
    return out


# ----------------------------------------------------------------------------- E4: 3D-aware control on a langfield scene

E4_PROMPT = "a red sphere left of a green cylinder on a checkered floor"  # in the toy world's caption vocabulary


def e4_prompt(data: str) -> str:
    """The E4 prompt: the ``caption`` of ``<data>/transforms_train.json`` when it has one (a toy-world scene
    written by ``langfield toyworld scene``), else ``E4_PROMPT``."""
    meta = Path(data) / "transforms_train.json"
    if data != "procedural" and meta.is_file():
        caption = json.loads(meta.read_text(encoding="utf-8")).get("caption")
        if isinstance(caption, str) and caption.strip():
            return caption
    return E4_PROMPT


def is_toy_scene_folder(data: str) -> bool:
    """Whether ``data`` (``--data``) is a dataset folder that ``langfield toyworld scene`` wrote (its
    ``transforms_train.json`` names the toy-world scene)."""
    meta = Path(data) / "transforms_train.json"
    return data != "procedural" and meta.is_file() and "toyworld_scene_seed" in json.loads(meta.read_text(encoding="utf-8"))


def e4_prompts(data: str, run, cams, edit_views: Sequence[int], mode: str) -> tuple:
    """``(prompt, source, edit_prompts)`` of the E4 ladder.

    ``mode == "view"`` on a toy-world scene folder (``langfield toyworld scene``): the scene's
    descriptive caption seen from the ladder's first camera, and each edited training view's caption
    from its own camera (``edit_prompts``): the toy captions order the objects left to right, so the
    caption the folder stores (from its first training camera) can contradict what another camera
    sees, which E3's prompts never do. Otherwise (``"stored"``, or another folder): :func:`e4_prompt`
    for every view, ``edit_prompts`` ``None``."""
    from langfield.data.toyworld.scene_dataset import read_toyworld_scene, scene_captions

    folder = Path(data)
    if mode == "view" and is_toy_scene_folder(data):
        scene = read_toyworld_scene(folder)  # read once for both sets of cameras
        train = run.dataset.split("train").cameras
        views = list(edit_views)
        captions = scene_captions(scene, train[views])
        return (scene_captions(scene, cams[0:1])[0], "the scene's caption at the ladder's first camera; edits: each view's own",
                dict(zip(views, captions)))  # fmt: skip
    prompt = e4_prompt(data)
    return prompt, ("transforms_train.json caption" if prompt != E4_PROMPT else "E4_PROMPT"), None


#: The toy-world scene (its seed) of ``--data toyworld``: the first, not chosen (``--e4-scenes`` takes several).
E4_TOY_SCENE = 0
#: Views of each E4 scene from the toy world's own camera sampler in :func:`same_scene_e3`.
E3_SAME_SCENE_VIEWS = 8
#: How far the instrument on the scene's own renders must beat its grey-image floor there for E4 fidelity to mean anything.
E4_VALID_MARGIN = 0.05
E4_CONDITION = "depth"  # the one E3 condition the scene renders exactly and an instrument reads back
E4_DOMAIN_NOTE = (
    "domain gap: the ControlNet and the depth regressor were trained on the toy world (plain-coloured primitives on a "
    "floor, 32 px, per-image inverse-depth range); with --data procedural the E4 scene has textured primitives "
    "on a checkered ground, another domain (--data toyworld, the default, is a toy-world scene: the same domain); "
    "its depth conditions use one inverse-depth scale for every view (depth_range: what the "
    "content spans at the ladder's cameras and the edited training views), so they agree across views. E4 fidelity is "
    "the toy-world instrument applied across that gap: it is only "
    "meaningful when the instrument on the scene's own renders (fidelity_scene_renders) beats its image-blind floor on "
    "the same cameras (fidelity_image_blind: its depth of a uniform grey image) by at least E4_VALID_MARGIN (0.05); "
    "'instrument_valid_on_scene' says whether it did."
)


@dataclasses.dataclass(frozen=True)
class E4Plan:
    """The E4 scene and ladder: a Gaussians run of ``data`` (``size`` px, ``views`` training views,
    ``gs_steps`` steps), ``num_views`` consecutive frames of a ``orbit_frames``-frame orbit rendered at
    the base's size, and the dataset update's ``rounds`` x (every training view edited, then
    ``steps_per_round`` Gaussians steps). ``depth_weight > 0`` trains the Gaussians with that weight on the
    scene's depth maps (``GaussiansConfig.depth_loss_weight``; a toy-world scene has its exact ray-cast depth:
    a simulated RGB-D capture), the dataset update too (its edits change colours, not the captured depth)."""

    gs_steps: int
    size: int
    views: int
    init_gaussians: int
    num_views: int
    orbit_frames: int
    rounds: int
    steps_per_round: int
    depth_weight: float = 0.0


def make_e4_plan(smoke: bool) -> E4Plan:
    if smoke:
        return E4Plan(gs_steps=30, size=32, views=6, init_gaussians=1500, num_views=3, orbit_frames=24, rounds=1, steps_per_round=5)
    return E4Plan(gs_steps=1500, size=64, views=32, init_gaussians=5000, num_views=4, orbit_frames=24, rounds=3, steps_per_round=100)


def e4_run(plan: E4Plan, data: str, work: Path, device: str, say, toy_scene: int = E4_TOY_SCENE) -> tuple:
    """``(run, record)``: the Gaussians reconstruction of ``data`` (``"toyworld"``: toy-world scene ``toy_scene``),
    reused from ``work`` when a finished run with the same settings is there (its training time is then not spent
    again)."""
    from langfield.runs.loading import load_run
    from langfield.runs.spec import DataConfig
    from langfield.runs.train import train
    from langfield.training.trainer import TrainerConfig

    if data == "toyworld":
        from langfield.data.toyworld.scene_dataset import write_toyworld_scene

        folder = work / f"toyworld_scene{toy_scene}_{plan.size}px_{plan.views}v"
        if not (folder / "transforms_test.json").is_file():
            write_toyworld_scene(folder, toy_scene, train_views=plan.views, val_views=4, test_views=4, image_size=plan.size)
            say(f"E4: wrote toy-world scene {toy_scene} to {folder}")
        data = str(folder)
    tag = "procedural" if data == "procedural" else Path(data).resolve().name
    depth_tag = f"_depth{plan.depth_weight:g}" if plan.depth_weight > 0 else ""  # photos-only runs keep their old names
    run_dir = work / f"gaussians_{tag}_{plan.size}px_{plan.views}v_{plan.init_gaussians}g_{plan.gs_steps}steps{depth_tag}"
    if (run_dir / "run.json").is_file() and (run_dir / "checkpoints" / "latest.ckpt").is_file():
        say(f"E4: reusing the Gaussians run {run_dir}")
        return load_run(run_dir, "cpu"), {"run_dir": str(run_dir), "data_dir": data, "reused": True, "train_s": 0.0, "s_per_step": None}
    dc = DataConfig("procedural", procedural_size=plan.size, procedural_views=plan.views) if data == "procedural" else DataConfig(data)
    cfg = TrainerConfig(max_steps=plan.gs_steps, output_dir=str(run_dir), progress=False, checkpoint_every=0, device=device)
    t0 = time.perf_counter()
    overrides = {"init_num_random": plan.init_gaussians, "sh_degree": 0}
    if plan.depth_weight > 0:
        overrides["depth_loss_weight"] = plan.depth_weight
    run = train(dc, "gaussians", cfg, overrides=overrides)
    seconds = time.perf_counter() - t0
    run = load_run(run_dir, "cpu")
    say(f"E4: trained Gaussians on {data} ({plan.gs_steps} steps, {seconds:.0f} s) -> {run_dir}")
    return run, {"run_dir": str(run_dir), "data_dir": data, "reused": False, "train_s": seconds, "s_per_step": seconds / plan.gs_steps}


E4_CAMERAS = ("sweep", "orbit")
E4_SWEEP_STEP_DEG = 10.0  # degrees between the sweep's views (they overlap; 15 finds no sweep on a third of the scenes)


def e4_cameras(run, plan: E4Plan, height: int, width: int, mode: str = "orbit", data_dir: Optional[str] = None, world=None):
    """The ladder's ``num_views`` cameras at the base's size, and a sentence saying which.

    ``mode="orbit"``: consecutive frames of the run's ``orbit_frames``-frame orbit (360 / ``orbit_frames`` degrees
    apart, around the scene box at the training cameras' mean distance and elevation). ``"sweep"`` (a toy-world
    scene folder ``data_dir``): :func:`~langfield.data.toyworld.cameras.sweep_cameras` of its scene with the data
    phase's ``world`` config -- consecutive views ``E4_SWEEP_STEP_DEG`` apart that the toy world's own camera
    sampler would accept (framed, told apart, visible), i.e. inside the camera distribution the ControlNet and
    the instruments were trained on -- moved into the run's frame by its ``world_transform``."""
    from langfield.runs.scene_control import path_cameras_for, resize_cameras

    check_choice(mode, "--e4-cameras", E4_CAMERAS)
    if mode == "orbit":
        cams = path_cameras_for(run, "orbit", plan.orbit_frames)
        note = f"orbit frames 0..{plan.num_views - 1} of {plan.orbit_frames}, resized to {height}x{width}"
        return resize_cameras(cams[list(range(plan.num_views))], height, width), note
    from langfield.data.toyworld.cameras import sweep_cameras
    from langfield.data.toyworld.scene_dataset import read_toyworld_scene
    from langfield.geometry.normalize import transform_poses
    from langfield.types import Cameras

    if data_dir is None or not is_toy_scene_folder(data_dir):
        raise SystemExit(f"--e4-cameras sweep: needs a toy-world scene folder (--data toyworld), got {data_dir!r}; use --e4-cameras orbit")
    sweep = sweep_cameras(read_toyworld_scene(data_dir), plan.num_views, world, step_deg=E4_SWEEP_STEP_DEG)
    c2w = transform_poses(run.dataset.world_transform.double(), sweep.c2w.double()).float()
    cams = Cameras.create(c2w, sweep.Ks, sweep.widths, sweep.heights)
    note = (f"toy-world sweep: {plan.num_views} views {E4_SWEEP_STEP_DEG:g} degrees apart that the toy camera sampler accepts "
            f"(sweep_cameras), resized to {height}x{width}")  # fmt: skip
    return resize_cameras(cams, height, width), note


def e4_fidelity(instruments):
    """``fidelity(images [C, H, W, 3], conditions) -> 1 - AbsRel`` of the depth regressor against the
    rendered depth (E3's depth instrument)."""
    from langfield.generation.fidelity import depth_fidelity

    def fidelity(images: torch.Tensor, conditions) -> float:
        return depth_fidelity(instruments.depth, images.permute(0, 3, 1, 2).float().clamp(0, 1).contiguous(), conditions.depth)

    return fidelity


def e4_depth_range(run, cams, edit_views: Sequence[int], height: int, width: int) -> Optional[tuple]:
    """``(near, far)``: the rendered depth's range over the ladder's cameras and the edited training views
    (``None`` when it is empty or flat). The depth conditions use it for every view: one scale, so they agree
    across views, spanning the content as the toy world's per-image ranges did (nearest bright, farthest dark)."""
    from langfield.runs.scene_control import render_conditions, resize_cameras

    train = resize_cameras(run.dataset.split("train").cameras[list(edit_views)], height, width)
    depth = torch.cat([render_conditions(run, c, ("depth",)).depth.flatten() for c in (cams, train)])
    depth = depth[depth > 0]
    if depth.numel() == 0 or float(depth.max()) <= float(depth.min()):
        return None
    return float(depth.min()), float(depth.max())


def e4_estimate_s(plan: E4Plan, seeds: int, image_s: float, gs_s_per_step: float) -> float:
    """Seconds E4 takes after the scene is trained: per seed 3 x ``num_views`` generated images (uncontrolled,
    controlled, shared noise), ``rounds x views`` single edits and ``rounds x steps_per_round`` Gaussians steps;
    ``image_s``: seconds per image (one-image batches cost ~4x a batched image's), x 1.3 for rendering and warping."""
    images = 3 * plan.num_views + plan.rounds * plan.views
    return seeds * (images * image_s * 4 + plan.rounds * plan.steps_per_round * gs_s_per_step) * 1.3


def e4_rows(raw: List[Dict[str, Any]], e3_fidelity: float, scene_fidelity: float, blind_floor: float,
            settings: Sequence[str], extra: Dict[str, Any]) -> List[Dict[str, Any]]:  # fmt: skip
    """One row per setting from :func:`~langfield.runs.scene_control.measure_e4`'s per-seed rows: mean, std and
    per-seed values of ``warp_psnr`` and ``fidelity``, beside E3's fidelity, the instrument on the scene's own
    renders (its ceiling there) and on a uniform grey image (its image-blind floor there)."""
    out = []
    for setting in settings:
        rs = [r for r in raw if r["setting"] == setting]
        if not rs:
            continue
        w = mean_std([r["warp_psnr"] for r in rs])
        f = mean_std([r["fidelity"] for r in rs]) if all(r["fidelity"] is not None for r in rs) else {"mean": None, "std": None}
        row = {"experiment": "E4", "setting": setting, "warp_psnr": w["mean"], "warp_psnr_std": w["std"],
               "warp_psnr_per_seed": [r["warp_psnr"] for r in rs], "fidelity": f["mean"], "fidelity_std": f["std"],
               "fidelity_per_seed": [r["fidelity"] for r in rs], "covisible": mean_std([r["covisible"] for r in rs])["mean"],
               "seeds": [r["seed"] for r in rs], "e3_fidelity": e3_fidelity, "fidelity_scene_renders": scene_fidelity,
               "fidelity_image_blind": blind_floor, **extra}  # fmt: skip
        if setting == "dataset_update":
            row["rounds_per_seed"] = [r.get("rounds") for r in rs]
        out.append(row)
    return out


def e4_bars(rows: List[Dict[str, Any]], e3_fidelity: float, valid: bool) -> List[Dict[str, Any]]:
    """E4's bar: each step up the ladder improves warp-PSNR (means over seeds, std beside); control fidelity >= E3's."""
    by = {r["setting"]: r for r in rows}
    out = []
    ladder = [s for s in ("uncontrolled", "controlled", "shared_noise", "dataset_update") if s in by]
    for a, b in zip(ladder, ladder[1:]):
        ra, rb = by[a], by[b]
        out.append({"bar": f"E4: warp-PSNR {b} > {a}", "value": rb["warp_psnr"], "value_std": rb["warp_psnr_std"],
                    "baseline": ra["warp_psnr"], "baseline_std": ra["warp_psnr_std"],
                    "met": bool(rb["warp_psnr"] > ra["warp_psnr"])})  # fmt: skip
    caveat = {} if valid else {"note": "the depth instrument fails on this scene's own renders (domain gap): this comparison "
                                       "says nothing about control fidelity"}  # fmt: skip
    for s in ("controlled", "shared_noise", "dataset_update"):
        if s in by and by[s]["fidelity"] is not None:
            out.append({"bar": f"E4: {s} depth fidelity >= E3's (controlnet, depth)", "value": by[s]["fidelity"],
                        "value_std": by[s]["fidelity_std"], "e3": e3_fidelity, "met": bool(by[s]["fidelity"] >= e3_fidelity),
                        "instrument_valid_on_scene": valid, **caveat})  # fmt: skip
    for s in ("controlled", "shared_noise", "dataset_update"):  # langfield's paired reference (same_scene_e3), not the issue's
        ref = by[s].get("e3_same_scenes") if s in by else None
        if ref is not None and by[s]["fidelity"] is not None:
            out.append({"bar": f"E4 (paired reference): {s} depth fidelity >= E3's setting on the same scenes", "value": by[s]["fidelity"],
                        "value_std": by[s]["fidelity_std"], "e3_same_scenes": ref, "met": bool(by[s]["fidelity"] >= ref),
                        "instrument_valid_on_scene": valid, **caveat})  # fmt: skip
    return out


def same_scene_e3(data_dir: str, world, pipe, adapter, instruments, seeds: Sequence[int], sampling_steps: int) -> Optional[Dict[str, Any]]:
    """E3's setting on E4's scene: the toy-world scene of ``data_dir`` from ``E3_SAME_SCENE_VIEWS`` cameras of the toy
    world's own sampler at the base's size (``world``: the data phase's :class:`ToyWorldConfig`), exact depth
    conditions, each view's caption, the same depth ControlNet, sampled and scored as E3 samples and scores its
    test scenes (:func:`sample_set`, :func:`~langfield.runs.controlnet.measure_fidelity`). The paired reference of
    the E4 fidelity bar: E3's own figure is a mean over 128 scenes, E4's over a few. ``None`` when ``data_dir`` is
    not a toy-world scene folder."""
    from langfield.data.toyworld.cameras import sample_cameras
    from langfield.data.toyworld.scene_dataset import read_toyworld_scene

    if not is_toy_scene_folder(data_dir):
        return None
    scene = read_toyworld_scene(data_dir)
    truth = scene_truth(scene, sample_cameras(scene, E3_SAME_SCENE_VIEWS, world), world)
    cond = condition_images(truth, E4_CONDITION)
    run_pipe = controlled_pipeline(pipe, adapter)
    per_seed = [measure_fidelity(instruments, E4_CONDITION, sample_set(run_pipe, [adapter], [cond], truth, s, sampling_steps), truth)
                for s in seeds]  # fmt: skip
    stats = mean_std(per_seed)
    return {"fidelity": stats["mean"], "fidelity_std": stats["std"], "fidelity_per_seed": per_seed, "views": len(truth),
            "real_renders": measure_fidelity(instruments, E4_CONDITION, truth.rgb.permute(0, 2, 3, 1).float() / 255.0, truth)}  # fmt: skip


def pool_e4_scenes(per_scene: Sequence[List[Dict[str, Any]]], scenes: Sequence[int],
                   same_scene: Sequence[Optional[Dict[str, Any]]]) -> List[Dict[str, Any]]:  # fmt: skip
    """One E4 row per setting from each scene's :func:`e4_rows`: per seed, the mean over the scenes of that seed's
    warp-PSNR and fidelity; mean and std over the seeds of those; each scene's own means (``per_scene``) and their
    std (``*_scene_std``); the instrument's ceiling and floor averaged; ``e3_same_scenes``: the mean of the
    scenes' :func:`same_scene_e3` fidelity (``None`` unless every scene has one). One scene: its rows, plus those
    fields."""
    if len(per_scene) != len(scenes) or len(same_scene) != len(scenes) or not scenes:
        raise ValueError("pool_e4_scenes: one list of rows and one same-scene reference per scene")
    refs = [r["fidelity"] for r in same_scene if r is not None]
    e3_same = sum(refs) / len(refs) if len(refs) == len(scenes) else None
    out = []
    for first in per_scene[0]:
        setting = first["setting"]
        rows = [next((r for r in rs if r["setting"] == setting), None) for rs in per_scene]
        if any(r is None for r in rows):
            continue
        row = dict(first)
        for key in ("warp_psnr", "fidelity"):
            if any(r[key] is None for r in rows):
                row.update({key: None, f"{key}_std": None, f"{key}_per_seed": None, f"{key}_scene_std": None})
                continue
            pooled = [sum(vals) / len(vals) for vals in zip(*(r[f"{key}_per_seed"] for r in rows))]
            stats = mean_std(pooled)
            row.update({key: stats["mean"], f"{key}_std": stats["std"], f"{key}_per_seed": pooled,
                        f"{key}_scene_std": mean_std([r[key] for r in rows])["std"]})  # fmt: skip
        for key in ("covisible", "fidelity_scene_renders", "fidelity_image_blind"):
            row[key] = sum(r[key] for r in rows) / len(rows)
        if setting == "dataset_update":  # rounds_per_seed stays the first scene's
            row["rounds_per_scene"] = [r.get("rounds_per_seed") for r in rows]
        row["scenes"] = list(scenes)
        row["per_scene"] = [{"scene": sc, "warp_psnr": r["warp_psnr"], "fidelity": r["fidelity"],
                             "e3_same_scene": None if ref is None else ref["fidelity"]}
                            for sc, r, ref in zip(scenes, rows, same_scene)]  # fmt: skip
        row["e3_same_scenes"] = e3_same
        out.append(row)
    return out


def run_e4(args, plan: E4Plan, e4_run_rec, run, pipe, adapter, instruments, e3_fidelity: float, seeds, sampling_steps: int, say,
           world=None):
    """The E4 ladder on ``run`` with the E3-trained depth ControlNet: ``(rows, bars, section)`` for the JSON.

    ``args`` needs ``data``; ``instruments``: ``.depth`` (a depth :class:`~langfield.generation.fidelity.PixelNet`)
    and ``heldout_scores()["floor"]["depth_fidelity"]`` (its toy-world image-blind floor)."""
    from langfield.generation.sampling import check_image_size
    from langfield.runs.scene_control import PER_VIEW, DatasetUpdateConfig, E4_SETTINGS, measure_e4, render_conditions

    height, width = check_image_size(pipe, None, None)  # the base's native size (32 px for the toy UNet)
    data_dir = e4_run_rec.get("data_dir", args.data)
    cams, cameras_note = e4_cameras(run, plan, height, width, args.e4_cameras, data_dir, world)
    fidelity = e4_fidelity(instruments)
    # the instrument on the scene's own renders at these cameras: its ceiling in this domain
    scene = render_conditions(run, cams, (E4_CONDITION,))
    scene_fid = fidelity(scene.rgb, scene)
    # its image-blind floor in this domain: the regressor's depth of a uniform grey image, scored the same way
    blind = fidelity(torch.full_like(scene.rgb, 0.5), scene)
    blind_toy = instruments.heldout_scores()["floor"]["depth_fidelity"]
    valid = bool(scene_fid - blind >= E4_VALID_MARGIN)
    # the update edits at most plan.views training views, evenly spaced (all of the procedural scene's)
    n_train = len(run.dataset.split("train"))
    edit_views = tuple(sorted({int(round(x)) for x in torch.linspace(0, n_train - 1, min(plan.views, n_train)).tolist()}))
    update = DatasetUpdateConfig(rounds=plan.rounds, steps_per_round=plan.steps_per_round, views=edit_views)
    depth_range = e4_depth_range(run, cams, edit_views, height, width) if args.e4_depth_scale == "shared" else PER_VIEW
    t0 = time.perf_counter()
    prompt, prompt_source, edit_prompts = e4_prompts(data_dir, run, cams, edit_views, args.e4_prompt)
    raw = measure_e4(run, controlled_pipeline(pipe, adapter), adapter, cams, prompt, seeds, kinds=(E4_CONDITION,),
                     fidelity=fidelity, update=update, steps=sampling_steps, guidance=GUIDANCE, depth_range=depth_range,
                     edit_prompts=edit_prompts)  # fmt: skip
    seconds = time.perf_counter() - t0
    extra = {"condition": E4_CONDITION, "adapter": adapter.kind, "num_views": len(cams), "data": args.data}
    rows = e4_rows(raw, e3_fidelity, scene_fid, blind, E4_SETTINGS, extra)
    for r in rows:
        say(f"E4 {r['setting']:>14}: warp-PSNR {r['warp_psnr']:.2f} +- {r['warp_psnr_std']:.2f} dB, "
            f"fidelity {r['fidelity']:.3f} (E3 {e3_fidelity:.3f}; instrument on the scene's renders {scene_fid:.3f}, "
            f"blind {blind:.3f})")  # fmt: skip
    section = {"plan": dataclasses.asdict(plan), "data": args.data, "edited_views": list(edit_views), "prompt": prompt, "prompt_source": prompt_source,
               "edit_prompts": None if edit_prompts is None else {str(k): v for k, v in edit_prompts.items()},
               "depth_scale": args.e4_depth_scale,
               "depth_range": list(depth_range) if isinstance(depth_range, tuple) else depth_range,
               "condition": E4_CONDITION,
               "cameras": cameras_note, "camera_mode": args.e4_cameras,
               "scene": e4_run_rec, "measure_s": seconds, "instrument_valid_on_scene": valid,
               "fidelity_scene_renders": scene_fid, "fidelity_image_blind": blind, "fidelity_image_blind_toyworld": blind_toy,
               "note": E4_DOMAIN_NOTE}  # fmt: skip
    return rows, e4_bars(rows, e3_fidelity, valid), section


def run_e4_scenes(args, plan: E4Plan, scenes: Sequence[tuple], pipe, adapter, instruments, e3_fidelity: float, seeds,
                  sampling_steps: int, world, say):  # fmt: skip
    """:func:`run_e4` on each of ``scenes`` (``(toy_scene, run, record)``; ``toy_scene`` ``None`` for a folder or the
    procedural scene) and :func:`same_scene_e3` beside each, pooled (:func:`pool_e4_scenes`): ``(rows, bars,
    section)``. The section keeps each scene's own section under ``scenes``."""
    per_scene, refs, sections = [], [], []
    for toy_scene, run, rec in scenes:
        rows, _, section = run_e4(args, plan, rec, run, pipe, adapter, instruments, e3_fidelity, seeds, sampling_steps, say, world)
        ref = same_scene_e3(rec.get("data_dir", args.data), world, pipe, adapter, instruments, seeds, sampling_steps)
        if ref is not None:
            say(f"E4 scene {toy_scene}: E3's setting on the same scene (toy cameras, exact depth) {ref['fidelity']:.3f} "
                f"+- {ref['fidelity_std']:.3f}")  # fmt: skip
        per_scene.append(rows)
        refs.append(ref)
        sections.append({"toy_scene": toy_scene, **section, "e3_same_scene": ref})
    ids = [t if t is not None else i for i, (t, _, _) in enumerate(scenes)]
    rows = pool_e4_scenes(per_scene, ids, refs)
    valid = all(sec["instrument_valid_on_scene"] for sec in sections)
    if len(scenes) > 1:
        for r in rows:
            say(f"E4 {r['setting']:>14} over {len(scenes)} scenes: warp-PSNR {r['warp_psnr']:.2f} +- {r['warp_psnr_std']:.2f} dB, "
                f"fidelity {r['fidelity']:.3f} +- {r['fidelity_std']:.3f} (E3 {e3_fidelity:.3f}; E3's setting on these scenes "
                f"{r['e3_same_scenes'] if r['e3_same_scenes'] is not None else float('nan'):.3f})")  # fmt: skip
    section = {"scenes": sections, "toy_scenes": [t for t, _, _ in scenes], "data": args.data, "plan": dataclasses.asdict(plan),
               "instrument_valid_on_scene": valid, "e3_same_scenes": rows[0]["e3_same_scenes"] if rows else None,
               "e3_same_scene_views": E3_SAME_SCENE_VIEWS, "measure_s": sum(sec["measure_s"] for sec in sections),
               "pooling": "rows: per seed the mean over the scenes, then mean and std over the seeds; per_scene: each scene's means",
               "note": E4_DOMAIN_NOTE}  # fmt: skip
    return rows, e4_bars(rows, e3_fidelity, valid), section


# ----------------------------------------------------------------------------- main


def main(argv=None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write (image grids go beside it)")
    parser.add_argument("--smoke", action="store_true", help="tiny models and sets: checks that everything runs (numbers mean nothing)")
    parser.add_argument("--preset", default="default", choices=("default", "fine"),
                        help="the toy-world base: 'default' (8x8x4 latents) or 'fine' (factor-2 VAE, 16x16x4 latents); --smoke uses 'smoke'")
    parser.add_argument("--budget-minutes", type=float, default=DEFAULT_MINUTES, help="wall-clock budget of adapter training + measuring")
    parser.add_argument("--seeds", default="0,1,2", help="sampling seeds (comma-separated)")
    parser.add_argument("--num-images", type=int, default=None, help="held-out scenes per measured set (default 128; smoke 8)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="toy-world cache root (default $LANGFIELD_CACHE_DIR/toyworld or ~/.cache/langfield/toyworld)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (adapter training); sampling and measuring on the CPU")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    parser.add_argument("--e4", action=argparse.BooleanOptionalAction, default=True,
                        help="E4: 3D-aware control on a langfield scene with the E3 depth ControlNet (default on)")
    parser.add_argument("--data", default="toyworld",
                        help="E4 scene: 'toyworld' (toy-world scene E4_TOY_SCENE, written into --work), 'procedural' or a dataset folder")
    parser.add_argument("--conditions", default=",".join(MEASURED_CONDITIONS),
                        help="E3 conditions (comma-separated, of depth,edges,segmentation); Multi-ControlNet needs depth and "
                             "edges, E4 needs depth")
    parser.add_argument("--adapters", default=",".join(ADAPTERS),
                        help="adapters to train (comma-separated, of controlnet,controlnet_xs,controlnext); E4 needs controlnet")
    parser.add_argument("--prompts", default="descriptive",
                        help="prompt settings of the E3 sets: descriptive (the scene's caption, the table's), empty (the "
                             "condition alone) and/or empty_guess (empty, adapters in guess mode at their GUESS_SETTINGS scale and "
                             "guidance); each adds rows with that prompt and its own segmentation bars")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps of every adapter (default: chosen from --budget-minutes after a probe)")
    parser.add_argument("--lr-schedule", default="constant", choices=LR_SCHEDULES,
                        help="every adapter's rate after the warm-up: constant (the ControlNet paper's scripts) or cosine to 0")
    parser.add_argument("--decay-steps", type=int, default=0,
                        help="after each adapter's --steps at a constant rate, this many more steps with the rate decaying to 0 "
                             "from its weights (a warmup-stable-decay schedule in two stages; needs --adapter-cache); 0: none")
    parser.add_argument("--controlnext-normalization", default=ControlTrainConfig.controlnext_normalization, choices=NORMALIZATIONS,
                        help="ControlNeXt's cross-normalisation statistics: sample (per sample over C, H, W, the authors' released "
                             "code) or channel (per sample and channel over H, W; the default before 2026-12-06)")
    parser.add_argument("--controlnext-train-base", default=",".join(ControlTrainConfig.controlnext_train_base),
                        help="substrings (comma-separated) of the base UNet's parameter names ControlNeXt trains besides its "
                             "encoder; 'none': the encoder alone")
    parser.add_argument("--controlnext-injection", default=ControlTrainConfig.controlnext_injection, choices=INJECTIONS,
                        help="where ControlNeXt adds its control in the UNet's first down block: after_block (after its "
                             "downsampler, the authors' released code) or before_downsample (at the latent's own resolution)")
    parser.add_argument("--guess-settings", default="",
                        help="guess-mode scale / guidance per adapter for the empty_guess rows, overriding GUESS_SETTINGS: "
                             "comma-separated KIND=SCALE/GUIDANCE, e.g. controlnext=1/3 (choose them on validation scenes)")
    parser.add_argument("--instrument-blur", type=float, default=None,
                        help="the fidelity instruments' training blur (FidelityConfig.blur, px; default: FidelityConfig's)")
    parser.add_argument("--e4-prompt", default="view", choices=("view", "stored"),
                        help="E4 on a toy-world scene: 'view' (the scene's caption at the ladder's first camera, each edited view's "
                             "own) or 'stored' (the folder's caption, from its first training camera, everywhere)")
    parser.add_argument("--e4-scenes", default=str(E4_TOY_SCENE),
                        help="E4 with --data toyworld: the toy-world scenes (seeds, comma-separated) to run the ladder on, "
                             "pooled over scenes (each beside E3's setting on the same scene)")
    parser.add_argument("--e4-depth-scale", default="shared", choices=("shared", "per_view"),
                        help="E4's depth conditions: one inverse-depth scale for every view (the content's range over the "
                             "cameras; views agree) or each view's own range (what the toy-world ControlNet saw in training)")
    parser.add_argument("--e4-cameras", default=None, choices=E4_CAMERAS,
                        help="E4's views: 'sweep' (toy-world scenes, the default there: consecutive views the toy camera sampler "
                             "accepts, in the ControlNet's and instruments' camera distribution) or 'orbit' (the run's orbit "
                             "path, the default elsewhere)")
    parser.add_argument("--e4-depth-weight", type=float, default=0.0,
                        help="E4's Gaussians: weight of the depth term (GaussiansConfig.depth_loss_weight) on the scene's depth "
                             "maps -- a toy-world scene has its exact ray-cast depth (a simulated RGB-D capture); 0: photos only")
    parser.add_argument("--adapter-cache", type=Path, default=None,
                        help="train every adapter into a folder here keyed by its configuration (adapter_cache_dir): a finished "
                             "one is reused (its training time and curve as recorded), an interrupted one resumes from its last "
                             "checkpoint; default: none (every run trains afresh)")
    parser.add_argument("--work", type=Path, default=None,
                        help="E4 work folder: the Gaussians run is trained there, or reused when already there (default: <out>_e4work)")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.e4_depth_weight) and args.e4_depth_weight >= 0):
        raise SystemExit(f"--e4-depth-weight: must be a finite number >= 0, got {args.e4_depth_weight}")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    conditions = parse_conditions(args.conditions)
    adapters = parse_names(args.adapters, ADAPTERS, "--adapters")
    prompt_settings = parse_names(args.prompts, PROMPT_SETTINGS, "--prompts")
    if "descriptive" not in prompt_settings:
        raise SystemExit("--prompts: the descriptive setting is the table's; add 'empty' beside it")
    extra_prompts = [p for p in prompt_settings if p != "descriptive"]
    if args.steps is not None and not MIN_STEPS <= args.steps <= MAX_STEPS:
        raise SystemExit(f"--steps must be in [{MIN_STEPS}, {MAX_STEPS}], got {args.steps}")
    if args.decay_steps < 0 or args.decay_steps > MAX_STEPS:
        raise SystemExit(f"--decay-steps must be in [0, {MAX_STEPS}], got {args.decay_steps}")
    if args.decay_steps and args.adapter_cache is None:
        raise SystemExit("--decay-steps: needs --adapter-cache (the decay stage starts from the first stage's folder)")
    adapter_options = controlnet_options(args)
    guess_settings = parse_guess_settings(args.guess_settings)
    plan = make_plan(args.smoke, args.budget_minutes, args.num_images)
    if not args.smoke:
        plan = dataclasses.replace(plan, preset=args.preset)
    if args.steps is not None and not args.smoke:
        plan = dataclasses.replace(plan, fixed_steps=args.steps)
    if args.instrument_blur is not None:
        try:  # FidelityConfig holds the bound
            plan = dataclasses.replace(plan, fidelity=dataclasses.replace(plan.fidelity, blur=args.instrument_blur))
        except InputError as err:
            raise SystemExit(f"--instrument-blur: {err}") from None
    e4_scenes = parse_scenes(args.e4_scenes, args.data)
    toy_scene_data = args.data == "toyworld" or is_toy_scene_folder(args.data)
    if args.e4_cameras is None:  # the sweep needs a toy-world scene folder
        args.e4_cameras = "sweep" if toy_scene_data else "orbit"
    elif args.e4_cameras == "sweep" and not toy_scene_data:
        raise SystemExit(f"--e4-cameras sweep: needs a toy-world scene (--data toyworld or a `langfield toyworld scene` folder), "
                         f"got --data {args.data}")
    with_multi = {"depth", "edges"} <= set(conditions) and "controlnet" in adapters
    say = (lambda m: None) if args.quiet else (lambda m: print(m, flush=True))
    if args.e4 and (E4_CONDITION not in conditions or "controlnet" not in adapters):
        say(f"E4 skipped: it uses the {E4_CONDITION} ControlNet, which --conditions {args.conditions} / --adapters {args.adapters} leave out")
        args.e4 = False
    started = time.perf_counter()

    # 1. The base models and the instruments (cached).
    models = train_toyworld(toyworld_preset(plan.preset), cache_dir=args.cache_dir, device=args.device, progress=not args.quiet, log=say,
                            with_dit=False)  # fmt: skip
    fidelity = train_fidelity(models, plan.fidelity, device=args.device, progress=not args.quiet, log=say)
    source = control_source(models)
    pipe = load_pipeline(source.pipeline_dir, device="cpu", dtype=torch.float32)
    n = plan.num_images
    heldout_split = load_split(models.phases["data"], "heldout")
    n = min(n, len(heldout_split) // 2)
    truth = read_truth(models.phases["data"], "heldout", limit=n)
    attr = Instruments(models.classifier(), heldout_split, models.split("train").labels, n)
    conds = {c: condition_images(truth, c) for c in conditions}
    curve_truth = truth.rows(slice(0, plan.curve_images))
    curve_conds = {c: v[: plan.curve_images] for c, v in conds.items()}
    setup_s = time.perf_counter() - started
    budget_start = time.perf_counter()  # the cached models' first training is not part of the budget

    # 1b. E4's scene: a Gaussians reconstruction (trained here or reused from --work; inside the budget).
    e4_plan = dataclasses.replace(make_e4_plan(args.smoke), depth_weight=args.e4_depth_weight) if args.e4 else None
    scene_runs: List[tuple] = []
    if e4_plan is not None:
        work = args.work if args.work is not None else args.out.with_name(f"{args.out.stem}_e4work")
        say(f"E4 plan: Gaussians on {args.data}: {e4_plan.gs_steps} steps at {e4_plan.size} px, {e4_plan.views} views "
            f"(~{e4_plan.gs_steps * GS_S_PER_STEP_EST:.0f} s unless reused from {work}); ladder on {e4_plan.num_views} {args.e4_cameras} views, "
            f"{len(seeds)} seeds, dataset update {e4_plan.rounds} rounds x ({e4_plan.views} edits + "
            f"{e4_plan.steps_per_round} steps)" + (f", on toy-world scenes {e4_scenes}" if args.data == "toyworld" else ""))  # fmt: skip
        for toy_scene in e4_scenes:
            scene_runs.append((toy_scene, *e4_run(e4_plan, args.data, work, args.device, say, toy_scene=toy_scene)))

    # 2. Floors: the base without control, per condition and seed; image-blind floors.
    measure_start = time.perf_counter()
    results: List[Dict[str, Any]] = []
    base_images = {}
    base_sample_s = []
    per_seed_none: Dict[str, List[float]] = {c: [] for c in conditions}
    per_seed_none_all: List[float] = []  # segmentation over every class (sky and floor too), for comparison
    fids_none = []
    for s in seeds:
        t0 = time.perf_counter()
        images = sample_set(pipe, None, None, truth, s, plan.sampling_steps)
        base_sample_s.append((time.perf_counter() - t0) / n)
        base_images.setdefault("first", images)
        fids_none.append(attr.measure(images, heldout_split.labels.index(torch.arange(n)), with_swd=False)["toy_fid"])
        for c in conditions:
            score_set(fidelity, c, images, truth, per_seed_none[c], per_seed_none_all)
    none_sample_s = sum(base_sample_s) / len(base_sample_s)
    floors = attr.floors()
    for c in conditions:
        stats = mean_std(per_seed_none[c])
        results.append({"experiment": "E3", "variant": "none", "condition": c, "prompt": "descriptive", "fidelity": stats["mean"],
                        "fidelity_std": stats["std"],
                        "fidelity_per_seed": per_seed_none[c], "toy_fid": mean_std(fids_none)["mean"],
                        "toy_fid_floor": floors["toy_fid_floor"]["mean"], "trainable_params": 0, "s_per_step": None,
                        "steps_to_half": None, "sample_s": none_sample_s, "sample_overhead": 1.0, "seeds": seeds})  # fmt: skip
    # every fidelity beside the instrument on the real renders of the same scenes (its ceiling), an image-blind floor
    # (per-pixel majority class / median depth of the training renders) and another scene's real render (right kind of
    # image, wrong layout: what following the caption but not the condition can reach)
    real = truth.rgb.permute(0, 2, 3, 1).float() / 255.0
    other = real[torch.roll(torch.arange(n), 1)]
    held = fidelity.heldout_scores()
    blind = {"segmentation": held["floor"]["segmentation_object_miou"], "depth": held["floor"]["depth_fidelity"]}
    # and the same real renders read back through the frozen autoencoder: a generated image is a decoded latent, so
    # this is the ceiling any control of the latent UNet can reach (vae_roundtrip)
    roundtrip = vae_reconstruct(pipe.pipeline.vae, truth.rgb.float() / 255.0).permute(0, 2, 3, 1)
    reference = {}
    for c in conditions:
        other_fid = measure_fidelity(fidelity, c, other, truth)
        # edges have no image-blind map: their floor is another scene's edges
        reference[c] = {"real_renders": measure_fidelity(fidelity, c, real, truth), "other_scene": other_fid,
                        "image_blind": blind.get(c, other_fid), "vae_roundtrip": measure_fidelity(fidelity, c, roundtrip, truth)}  # fmt: skip
    if "segmentation" in reference:
        reference["segmentation"]["all_classes"] = {"real_renders": measure_fidelity(fidelity, "segmentation", real, truth, all_classes=True),
                                                    "other_scene": measure_fidelity(fidelity, "segmentation", other, truth, all_classes=True),
                                                    "image_blind": held["floor"]["segmentation_miou"]}  # fmt: skip
    for row in results:
        row.update(reference_fields(reference, row["condition"]))
        if row["condition"] == "segmentation":
            row.update(_all_classes(per_seed_none_all))
    measure_s = time.perf_counter() - measure_start  # the descriptive sets only (the budget's unit)
    for c in conditions:
        results.extend(prompt_rows("none", c, pipe, None, None, truth, fidelity, seeds, plan.sampling_steps, extra_prompts, reference, 0,
                                   guess_settings))  # fmt: skip
    say(f"no control: " + ", ".join(f"{c} {results[i]['fidelity']:.3f}" for i, c in enumerate(conditions))
        + ("" if not per_seed_none_all else f" (segmentation over every class {mean_std(per_seed_none_all)['mean']:.3f})"))

    # 3. Steps from the budget (measured s/step), the same for every adapter.
    if plan.fixed_steps is not None:
        steps, probe = plan.fixed_steps, None
        say(f"plan: {steps} steps per adapter (fixed: --steps or smoke)" + (", then E4 on the scene" if e4_plan else ""))
    else:
        probe = probe_steps(source, pipe, plan, say, adapters, adapter_options)
        # the measuring left after training: the floors' cost x (9 adapter sets + 4 multi) / 3 conditions, x ~1.3 overhead
        per_image = measure_s / (len(seeds) * n)
        curve_images = (CURVE_POINTS + 1) * plan.curve_images * len(adapters) * len(conditions)
        measure_est = (measure_s * (len(adapters) * len(conditions) + len(MULTI_WEIGHTS) * with_multi) + per_image * curve_images) * 1.3
        e4_est = 0.0 if e4_plan is None else len(scene_runs) * e4_estimate_s(e4_plan, len(seeds), none_sample_s,
                                                                            scene_runs[0][2]["s_per_step"] or GS_S_PER_STEP_EST)  # fmt: skip
        train_s = max(plan.budget_s - (time.perf_counter() - budget_start) - measure_est - e4_est, plan.budget_s * 0.2)
        per_cond = sum(probe.values()) * len(conditions)
        steps = int(max(MIN_STEPS, min(MAX_STEPS, train_s / per_cond)))
        say(f"budget: {steps} steps per adapter (training ~{steps * per_cond / 60:.1f} min, measuring ~{measure_est / 60:.1f} min, "
            f"E4 ladder ~{e4_est / 60:.1f} min; spent so far {(time.perf_counter() - budget_start) / 60:.1f} min)")
    points = sorted({max(1, round(steps * (k + 1) / CURVE_POINTS)) for k in range(CURVE_POINTS)})

    # 4. Train and measure every adapter on every condition.
    trained: Dict[tuple, Any] = {}
    grids: Dict[str, List[torch.Tensor]] = {c: [] for c in conditions}
    for c in conditions:
        none_curve = sum(per_seed_none[c]) / len(seeds)
        # step 0 of every curve: the base without control on the curve's images (seed 0)
        start_value = measure_fidelity(fidelity, c, sample_set(pipe, None, None, curve_truth, 0, plan.sampling_steps), curve_truth)
        for kind in adapters:
            cfg = dataclasses.replace(adapter_options, condition=c, adapter=kind, steps=steps, batch_size=plan.batch_size, lr=LR, seed=0)
            cache = None if args.adapter_cache is None else adapter_cache_dir(args.adapter_cache, cfg, source, plan, points, args.device)
            curve_cb = FidelityCurve(pipe, c, curve_truth, curve_conds[c], fidelity, points, plan.sampling_steps,
                                     path=None if cache is None else cache / "curve.json")  # fmt: skip
            adapter, rec = train_control(source, cfg, cache, device=args.device, pipeline=pipe, callbacks=[curve_cb], progress=not args.quiet)
            if rec.get("resumed_at_step"):
                say(f"{kind} on {c}: {'reused' if rec['resumed_at_step'] >= steps else 'resumed at step ' + str(rec['resumed_at_step'])} "
                    f"from {cache}")  # fmt: skip
            curve = [{"step": 0, "fidelity": start_value}] + curve_cb.values
            decay, resumed_at = None, rec.get("resumed_at_step", 0)  # the first stage's (a decay stage reports its own)
            if args.decay_steps:  # the decay stage from the constant-rate adapter just trained (or reused)
                adapter, rec, cache, decay, tail = decay_stage(source, cfg, cache, rec, args.decay_steps, pipe, c, curve_truth,
                                                               curve_conds[c], fidelity, plan, points, args, say)  # fmt: skip
                curve = curve + tail
            trained[(c, kind)] = adapter
            run_pipe = controlled_pipeline(pipe, adapter)
            per_seed, per_seed_all, fids, times = [], [], [], []
            for s in seeds:
                t0 = time.perf_counter()
                images = sample_set(run_pipe, [adapter], [conds[c]], truth, s, plan.sampling_steps)
                times.append((time.perf_counter() - t0) / n)
                score_set(fidelity, c, images, truth, per_seed, per_seed_all)
                fids.append(attr.measure(images, heldout_split.labels.index(torch.arange(n)), with_swd=False)["toy_fid"])
                if s == seeds[0]:
                    grids[c].append(images[:GRID_COLUMNS])
            stats = mean_std(per_seed)
            sample_s = sum(times) / len(times)
            results.append({
                "experiment": "E3", "variant": kind, "condition": c, "prompt": "descriptive", "fidelity": stats["mean"],
                "fidelity_std": stats["std"],
                "fidelity_per_seed": per_seed, "no_control_fidelity": none_curve, "toy_fid": mean_std(fids)["mean"],
                **reference_fields(reference, c), **_all_classes(per_seed_all),
                "toy_fid_std": mean_std(fids)["std"], "toy_fid_floor": floors["toy_fid_floor"]["mean"],
                "trainable_params": rec["trainable_params"], "s_per_step": rec["s_per_step"],
                "train_steps": rec.get("total_steps", rec["steps"]), "decay_stage": decay,
                "final_loss": rec["final_loss"], "adapter_dir": None if cache is None else str(cache),
                "resumed_at_step": resumed_at, "fidelity_curve": curve,
                "steps_to_half": steps_to_half(curve[1:], start_value), "sample_s": sample_s,
                "sample_overhead": sample_s / none_sample_s, "seeds": seeds, "training_seeds": [0], **prompt_sampling("descriptive", kind),
            })  # fmt: skip
            say(f"{kind:>14} {c:<12} fidelity {stats['mean']:.3f} +- {stats['std']:.3f} (no control {none_curve:.3f}); "
                f"{rec['trainable_params']} params, {rec['s_per_step']:.3f} s/step")  # fmt: skip
            for row in prompt_rows(kind, c, run_pipe, adapter, conds[c], truth, fidelity, seeds, plan.sampling_steps, extra_prompts,
                                   reference, rec["trainable_params"], guess_settings):  # fmt: skip
                row["no_control_fidelity"] = _row(results, "none", c, row["prompt"])["fidelity"]
                results.append(row)
                say(f"{kind:>14} {c:<12} prompt {row['prompt']}: fidelity {row['fidelity']:.3f} +- {row['fidelity_std']:.3f} "
                    f"(no control {row['no_control_fidelity']:.3f})")  # fmt: skip

    # 5. Multi-ControlNet: the depth and edges ControlNets together, a weight sweep.
    multi_images = []
    pair = [trained[("depth", "controlnet")], trained[("edges", "controlnet")]] if with_multi else []
    for w in MULTI_WEIGHTS if with_multi else ():
        vals: Dict[str, List[float]] = {"depth": [], "edges": []}
        times = []
        for s in seeds:
            t0 = time.perf_counter()
            images = sample_set(pipe, pair, [conds["depth"], conds["edges"]], truth, s, plan.sampling_steps, weights=w)
            times.append((time.perf_counter() - t0) / n)
            for c in vals:
                vals[c].append(measure_fidelity(fidelity, c, images, truth))
            if s == seeds[0]:
                multi_images.append(images[:GRID_COLUMNS])
        for c, v in vals.items():
            stats = mean_std(v)
            results.append({"experiment": "E3", "variant": "multi", "condition": c, "conditions": ["depth", "edges"],
                            "weights": list(w), "fidelity": stats["mean"], "fidelity_std": stats["std"], "fidelity_per_seed": v,
                            "no_control_fidelity": _row(results, "none", c)["fidelity"],
                            **reference_fields(reference, c), "trainable_params": sum(a.num_trainable_parameters() for a in pair),
                            "s_per_step": None,
                            "steps_to_half": None, "sample_s": sum(times) / len(times),
                            "sample_overhead": sum(times) / len(times) / none_sample_s, "seeds": seeds})  # fmt: skip

    # 5b. E4: the ladder on the scene with the depth ControlNet E3 just trained.
    e4_bar_list: List[Dict[str, Any]] = []
    e4_section = None
    if e4_plan is not None:
        e3_depth = _row(results, "controlnet", E4_CONDITION)["fidelity"]
        e4_results, e4_bar_list, e4_section = run_e4_scenes(args, e4_plan, scene_runs, pipe, trained[(E4_CONDITION, "controlnet")],
                                                            fidelity, e3_depth, seeds, plan.sampling_steps,
                                                            toyworld_preset(plan.preset).world, say)  # fmt: skip
        results.extend(e4_results)

    # 6. Grids, bars, JSON.
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    k = min(GRID_COLUMNS, n)
    real = real[:k]
    grid_files = {}
    for c in conditions:
        rows = [real, conds[c][:k].permute(0, 2, 3, 1).float() / 255.0, base_images["first"][:k]] + [g[:k] for g in grids[c]]
        path = out.with_name(f"{out.stem}_E3_{c}.png")
        write_image(path, image_grid(torch.cat(rows), columns=k))
        grid_files[c] = str(path)
    if with_multi:
        rows = [real, conds["depth"][:k].permute(0, 2, 3, 1).float() / 255.0, conds["edges"][:k].permute(0, 2, 3, 1).float() / 255.0]
        path = out.with_name(f"{out.stem}_multi.png")
        write_image(path, image_grid(torch.cat(rows + [m[:k] for m in multi_images]), columns=k))
        grid_files["multi"] = str(path)

    report = {
        "benchmark": "controlnet", "mode": plan.mode, "preset": plan.preset, "budget_minutes": args.budget_minutes, "sampling_seeds": seeds,
        "conditions": list(conditions), "adapters": list(adapters), "prompts": list(prompt_settings),
        "guess_mode": {k: {"conditioning_scale": v[0], "guidance": v[1]} for k, v in guess_settings.items()},
        "num_images": n, "sampling_steps": plan.sampling_steps, "guidance": GUIDANCE, "train_steps": steps, "batch_size": plan.batch_size,
        "lr": LR, "lr_schedule": args.lr_schedule,
        "controlnext_normalization": args.controlnext_normalization, "controlnext_injection": args.controlnext_injection,
        "controlnext_train_base": list(adapter_options.controlnext_train_base), "probe_s_per_step": probe, "curve_points": points,
        "instruments": {
            "fidelity_phase": str(fidelity.folder),
            "config": dataclasses.asdict(plan.fidelity),
            "heldout": fidelity.heldout_scores(),
            "edge_f1_image_blind_floor": reference["edges"]["other_scene"] if "edges" in reference else None,
            "measured_set": reference,
            "attribute_classifier_floors": floors,
            "note": "segmenter mIoU over the shape classes (sky and floor left out of the mean; 'all_classes': every class) / "
                    "depth 1-AbsRel of the instruments on real held-out renders (their ceiling) beside image-blind floors "
                    "(per-pixel majority class / median depth of the training renders; edges: another scene's edges) and "
                    "another scene's real render (other_scene: the right kind of image with the wrong layout)",
        },
        "results": results,
        "bars": bars(results, fidelity.heldout_scores()) + e4_bar_list,
        "e4": e4_section,
        "grids": grid_files,
        "phases": models.phase_summary(),
        "seconds": {"setup": setup_s, "total": time.perf_counter() - started},
        "machine": machine_info(load_before),
    }
    atomic_write_json(report, out)
    say(f"wrote {out} ({report['seconds']['total']:.0f} s)")
    return report


def parse_names(text: str, choices: Sequence[str], flag: str) -> List[str]:
    """A comma-separated, non-empty, repeat-free subset of ``choices``, in their canonical order."""
    names = [c.strip() for c in text.split(",") if c.strip()]
    unknown = sorted(set(names) - set(choices))
    if not names or unknown or len(set(names)) != len(names):
        raise SystemExit(f"{flag}: expected distinct names of {', '.join(choices)}, got {text!r}")
    return [c for c in choices if c in names]


def parse_guess_settings(text: str) -> GuessSettings:
    """``GUESS_SETTINGS`` with ``--guess-settings``'s ``KIND=SCALE/GUIDANCE`` entries (comma-separated) in place."""
    out = dict(GUESS_SETTINGS)
    for item in (t.strip() for t in text.split(",") if t.strip()):
        kind, _, value = item.partition("=")
        try:
            scale, guidance = (float(v) for v in value.split("/"))
        except ValueError:
            raise SystemExit(f"--guess-settings: expected KIND=SCALE/GUIDANCE, got {item!r}") from None
        if kind.strip() not in ADAPTERS:
            raise SystemExit(f"--guess-settings: unknown adapter {kind.strip()!r} in {item!r} (one of {', '.join(ADAPTERS)})")
        if not (scale > 0 and guidance >= 1 and math.isfinite(scale) and math.isfinite(guidance)):
            raise SystemExit(f"--guess-settings: {item!r} needs a positive scale and a guidance >= 1")
        out[kind.strip()] = (scale, guidance)
    return out


def parse_scenes(text: str, data: str) -> List[Optional[int]]:
    """``--e4-scenes``: distinct non-negative toy-world scene seeds; ``[None]`` (one scene, the folder's or the procedural
    one) unless ``data`` is ``"toyworld"``, where only the default may be left."""
    try:
        scenes = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise SystemExit(f"--e4-scenes: expected comma-separated toy-world scene seeds, got {text!r}") from None
    if not scenes or min(scenes) < 0 or len(set(scenes)) != len(scenes):
        raise SystemExit(f"--e4-scenes: expected distinct non-negative scene seeds, got {text!r}")
    if data != "toyworld":
        if scenes != [E4_TOY_SCENE]:
            raise SystemExit(f"--e4-scenes: toy-world scenes need --data toyworld (got --data {data})")
        return [None]
    return scenes


def parse_conditions(text: str) -> List[str]:
    """``--conditions``: a non-empty, repeat-free subset of ``MEASURED_CONDITIONS`` in their canonical order."""
    return parse_names(text, MEASURED_CONDITIONS, "--conditions")


def _all_classes(per_seed: List[float]) -> Dict[str, Any]:
    """Segmentation rows: the mIoU over every class (sky and floor too) beside the shapes' mIoU, for comparison."""
    if not per_seed:
        return {}
    stats = mean_std(per_seed)
    return {"fidelity_all_classes": stats["mean"], "fidelity_all_classes_std": stats["std"], "fidelity_all_classes_per_seed": per_seed}


def _row(results, variant, condition, prompt: str = "descriptive"):
    return next((r for r in results if r.get("experiment", "E3") == "E3" and r.get("variant") == variant
                 and r.get("condition") == condition and r.get("prompt", "descriptive") == prompt), None)  # fmt: skip


def bars(results: List[Dict[str, Any]], heldout: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The issue's bars for the conditions and adapters this run measured, each with the numbers it was decided on
    and whether it was met. Segmentation fidelity is the shapes' mIoU (``OBJECT_CLASSES``: sky and floor left out)."""
    out = []
    measured = [c for c in MEASURED_CONDITIONS if _row(results, "none", c) is not None]
    kinds = [k for k in ADAPTERS if any(_row(results, k, c) is not None for c in measured)]
    for prompt in PROMPT_SETTINGS if "segmentation" in measured else ():
        if _row(results, "none", "segmentation", prompt) is None:
            continue
        seg_none = _row(results, "none", "segmentation", prompt)["fidelity"]
        for kind in kinds:
            r = _row(results, kind, "segmentation", prompt)
            if r is None:  # an older run without this adapter's rows in this setting
                continue
            out.append({"bar": f"{kind}: segmentation mIoU (shapes) >= 0.6 where no control gives <= 0.2 ({prompt} prompt)",
                        "prompt": prompt, "value": r["fidelity"], "value_std": r["fidelity_std"], "no_control": seg_none,
                        "met": r["fidelity"] >= 0.6 and seg_none <= 0.2})  # fmt: skip
    for c in measured:
        none = _row(results, "none", c)["fidelity"]
        for kind in kinds:
            r = _row(results, kind, c)
            out.append({"bar": f"{kind} {c}: fidelity above no control by more than 2 std", "value": r["fidelity"],
                        "no_control": none, "met": r["fidelity"] - none > 2 * max(r["fidelity_std"], 1e-9)})  # fmt: skip
    both = lambda a, b: a in kinds and b in kinds  # noqa: E731
    if both("controlnet", "controlnext"):
        cn = _row(results, "controlnet", measured[0])["trainable_params"]
        nx = _row(results, "controlnext", measured[0])["trainable_params"]
        out.append({"bar": "ControlNeXt trainable parameters <= 20 % of ControlNet's", "value": nx / cn, "met": nx <= 0.2 * cn})
    for c in measured if both("controlnet", "controlnet_xs") else ():
        a, b = _row(results, "controlnet_xs", c)["fidelity"], _row(results, "controlnet", c)["fidelity"]
        out.append({"bar": f"ControlNet-XS within 0.05 fidelity of ControlNet ({c})", "value": a - b, "met": abs(a - b) <= 0.05})
    for c in measured:
        if both("controlnet", "controlnext"):
            a, b = _row(results, "controlnext", c)["steps_to_half"], _row(results, "controlnet", c)["steps_to_half"]
            out.append({"claim": f"ControlNeXt trains faster (fewer steps to half its final fidelity) ({c})", "controlnext": a,
                        "controlnet": b, "confirmed": None if a is None or b is None else a < b})  # fmt: skip
        if both("controlnet", "controlnet_xs"):
            a, b = _row(results, "controlnet_xs", c)["sample_s"], _row(results, "controlnet", c)["sample_s"]
            out.append({"claim": f"ControlNet-XS infers faster ({c})", "controlnet_xs_sample_s": a, "controlnet_sample_s": b,
                        "confirmed": a < b})  # fmt: skip
    return out


if __name__ == "__main__":
    main()
