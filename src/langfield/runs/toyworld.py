"""Train everything the toy-world generation experiments need, once, cached by configuration hash.

One call trains, in order, every model of the generation benchmark (issue 13) from scratch on the
toy world (:mod:`langfield.data.toyworld`), and returns where they are::

    from langfield.runs.toyworld import ToyWorldExperimentConfig, toyworld_preset, train_toyworld
    models = train_toyworld(toyworld_preset("smoke"))      # ~1 minute on 2 cores; "default": ~1 hour
    models.pipelines["unet"]                               # a diffusers folder: load_pipeline(...) it
    models.classifier()                                    # the attribute-classifier instrument

Phases (each one a folder of the cache, see below):

====================  ==========================================================================
phase                 what it does
====================  ==========================================================================
``data``              renders the training split (``num_train_scenes``) and a held-out split
                      (``num_heldout_scenes``, another seed: no scene in common) with
                      :func:`~langfield.data.toyworld.write_toyworld` (itself resumable).
``text``              picks each training image's caption (descriptive with probability
                      ``descriptive_fraction``, else short) and embeds every distinct caption
                      once with the MiniLM prompt encoder (float16 ``[U, T, 384]``).
``instrument``        trains the attribute classifier on the *real* training renders only and
                      measures it on the held-out renders (accuracy beside chance).
``vae``               trains the ``AutoencoderKL``, measures its latent scaling factor
                      (1 / latent std) and encodes the training latents (posterior means).
``unet``              trains the ``UNet2DConditionModel`` with ε-prediction and 10 % empty prompts
                      (classifier-free guidance), saved as a ``StableDiffusionPipeline`` folder.
``dit_<obj>_s<seed>`` trains the ``SD3Transformer2DModel`` per objective in ``dit_objectives``
                      (``rectified_flow``: SD3's flow matching; ``epsilon``: the DDPM control) and
                      per training seed in ``dit_seeds``; the objectives share the network size,
                      step count, data order, prompt drops, noise draws and initial weights.
                      Saved as ``StableDiffusion3Pipeline`` folders.
====================  ==========================================================================

The pipelines are written with :meth:`~langfield.generation.loading.GenerationPipeline.save`
(diffusers' ``save_pretrained`` plus the MiniLM text-conditioning record), so
:func:`~langfield.generation.loading.load_pipeline` and ``langfield generate --model DIR`` load
them exactly as they load real Stable Diffusion weights. ε-prediction models are saved with a
``DDIMScheduler`` built from their training ``DDPMScheduler`` (same betas), flow models with a
``FlowMatchEulerDiscreteScheduler`` (the training shift).

The cache
---------
Root: ``$LANGFIELD_CACHE_DIR/toyworld`` when the variable is set, else
``~/.cache/langfield/toyworld`` (never inside the repository). Each phase lives in
``<root>/<phase>-<key>/`` where ``key`` is the first 16 hex digits of the sha256 of what the phase
depends on: its own part of the configuration, the keys of the phases it reads (so a change
upstream changes every key downstream) and :data:`CACHE_VERSION`. A change to the UNet's steps
therefore retrains the UNet only; the data, text embeddings, instrument and VAE are reused.
Options that do not change results (device, progress bars) are not part of any key.

* **Finished phases are skipped**: a phase folder exists only once complete. It is built in
  ``<phase>-<key>.partial/`` and renamed into place (an atomic rename) after its
  ``phase.json`` is written.
* **Interrupted phases resume**: training phases run the one
  :class:`~langfield.training.trainer.Trainer` with ``output_dir`` inside the ``.partial`` folder,
  checkpoint every ``checkpoint_every`` steps and ``resume=True``; a rerun continues from the
  last checkpoint (bitwise: every random draw of a step is a function of its index). The
  checkpoints are deleted once the phase's outputs and ``phase.json`` are written.
* **Two processes never share a phase**: the ``.partial`` folder is only touched under
  ``<phase>-<key>.lock`` (:class:`~langfield.kernels.build_lock.BuildLock`: ``O_EXCL``, a
  heartbeat, takeover of a lock whose holder died). A second process waits (at most
  ``lock_timeout_s``), then finds the finished folder and uses it.

Each phase folder holds a ``phase.json``: its key, configuration, inputs, wall-clock seconds of
the run that finished it, training seconds summed over resumed runs, the step it resumed from,
peak resident memory of the phase (``VmHWM`` after resetting it through ``/proc/self/clear_refs``
on Linux, else the process peak so far, flagged) and the phase's own results (held-out accuracy,
scaling factor, final loss, parameter count).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from langfield._checks import InputError, check_choice, check_fields, check_int_range
from langfield.configs import check_field_types, config_to_dict
from langfield.data.samplers import IndexSampler
from langfield.data.toyworld import FORMAT_VERSION, ToyWorldConfig, read_toyworld, write_toyworld
from langfield.data.toyworld.scene import ToyScene
from langfield.generation.instruments import AttributeClassifier, AttributeLabels, chance_accuracy, evaluate_classifier
from langfield.generation.loading import TextConditioningSpec, build_pipeline
from langfield.generation.models import ToyDiTConfig, ToyUNetConfig, ToyVAEConfig
from langfield.generation.objectives import encode_latents, latent_scaling_factor
from langfield.generation.text_conditioning import PromptEmbeddings, load_prompt_encoder
from langfield.io.atomic import atomic_save_torch, atomic_write_json, fsync_dir
from langfield.kernels.build_lock import BuildLock, BuildLockTimeout
from langfield.methods.diffusion import (
    AttributeClassifierObjective,
    LatentDiffusionConfig,
    LatentDiffusionMethod,
    VAEConfig,
    VAEMethod,
)
from langfield.training.callbacks import TrainerCallback
from langfield.training.trainer import Trainer, TrainerConfig

__all__ = [
    "CACHE_ENV",
    "CACHE_VERSION",
    "DiffusionTrainingConfig",
    "InstrumentConfig",
    "PRESETS",
    "ToySplit",
    "ToyWorldExperimentConfig",
    "ToyWorldModels",
    "VAETrainingConfig",
    "load_split",
    "load_text_embeddings",
    "phase_keys",
    "run_cached_phase",
    "train_phase",
    "toyworld_cache_dir",
    "toyworld_preset",
    "train_toyworld",
]

_LOG = logging.getLogger("langfield.runs.toyworld")

#: Environment variable naming langfield's cache root (the toy world lives in ``<root>/toyworld``).
CACHE_ENV = "LANGFIELD_CACHE_DIR"
#: Bumped when what a phase computes changes meaning, so old cache entries stop matching.
CACHE_VERSION = 1
#: Digits of the sha256 kept in a phase folder's name.
KEY_DIGITS = 16
PHASE_FILE = "phase.json"
DIT_OBJECTIVES = ("rectified_flow", "epsilon")


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class InstrumentConfig:
    """The attribute-classifier instrument and how it is trained (on real renders only).

    Attributes:
        width: channels of the classifier's stem (:class:`AttributeClassifier`).
        feature_dim: penultimate features, the toy-FID dimension.
        steps, batch_size: training steps and images per step.
        lr: AdamW learning rate (cosine-decayed to ``lr / 20``).
        augment: small translations and brightness changes (no flips: left/right is a label).
    """

    width: int = 16
    feature_dim: int = 64
    steps: int = 1500
    batch_size: int = 128
    lr: float = 2e-3
    augment: bool = True

    def __post_init__(self) -> None:
        check_field_types(self)
        check_fields(self, "InstrumentConfig", int_min_1=("width", "feature_dim", "steps", "batch_size"), positive=("lr",))


#: The autoencoder's optimisation for the toy world. Measured on the default data (600 steps of 32
#: images, the (32, 32, 32) VAE with 8 GroupNorm groups): MSE at lr 2e-3 with KL weight 1e-6 and no
#: clipping reached 23.7 dB held-out PSNR, and the attribute classifier read 0.54 of the attributes
#: right on its reconstructions (0.94 on the real renders); VAEConfig's defaults (L1, lr 1e-3, KL
#: 1e-5, clip 1) with 32 groups reached 22.0 dB / 0.37 after 1200 steps (colours washed out).
#: Not separated: which of the changes matters most. The default (these settings, 2000 steps, 785 s
#: on the shared 2-core VM): 28.7 dB, and 0.874 read right on the reconstructions of 512 held-out
#: renders (0.936 on the renders themselves): the most an image decoded by it can score.
TOY_VAE_OPTIM = VAEConfig(lr=2e-3, kl_weight=1e-6, reconstruction="mse", grad_clip=0.0)


@dataclass(frozen=True)
class VAETrainingConfig:
    """How the autoencoder is trained: ``steps`` of ``batch_size`` images with :class:`VAEConfig`."""

    steps: int = 2000
    batch_size: int = 32
    optim: VAEConfig = TOY_VAE_OPTIM
    scale_images: int = 2048
    """Training images the latent scaling factor (1 / std) is measured on."""

    def __post_init__(self) -> None:
        check_field_types(self)
        check_fields(self, "VAETrainingConfig", int_min_1=("steps", "batch_size", "scale_images"))


@dataclass(frozen=True)
class DiffusionTrainingConfig:
    """How a latent-diffusion backbone is trained (the objective is set per model).

    Attributes:
        steps, batch_size: training steps and latents per step.
        lr, weight_decay, warmup, grad_clip: AdamW with a linear warm-up and a cosine decay to 0.
        cfg_dropout: share of prompts replaced by the empty prompt (classifier-free guidance, 10 %).
        ema_decay: EMA of the weights (0 = none); the EMA copy is what gets saved when on.
        flow_shift: rectified flow's noise-level shift (1 = SD3's logit-normal without shift).
        snr_gamma: Min-SNR-gamma weighting of the epsilon objective (0 = none; rectified flow: 0).
    """

    steps: int = 2000
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 1e-2
    warmup: float = 0.05
    grad_clip: float = 1.0
    cfg_dropout: float = 0.1
    ema_decay: float = 0.0
    flow_shift: float = 1.0
    snr_gamma: float = 0.0

    def __post_init__(self) -> None:
        check_field_types(self)
        check_fields(self, "DiffusionTrainingConfig", int_min_1=("steps", "batch_size"))

    def method_config(self, objective: str) -> LatentDiffusionConfig:
        """The :class:`LatentDiffusionConfig` of this training with ``objective``."""
        return LatentDiffusionConfig(
            objective=objective, lr=self.lr, weight_decay=self.weight_decay, warmup=self.warmup, grad_clip=self.grad_clip,
            cfg_dropout=self.cfg_dropout, ema_decay=self.ema_decay, flow_shift=self.flow_shift,
            snr_gamma=self.snr_gamma if objective == "epsilon" else 0.0,
        )  # fmt: skip


#: The UNet's training in the default experiment: 6000 steps of 64 latents (about 25 minutes on 2
#: quiet cores at 0.25 s per step, 2026-12-05; 0.43 s on 2026-12-02), a rate of 1e-3 (small networks; warm-up and clipping keep it
#: stable), an EMA of the weights (0.999, diffusers' warm-up) sampled from, and Min-SNR-5 weighting
#: (Hang et al. 2023). Chosen from the literature, not tuned here: 444 steps at 5e-4 without EMA
#: (a 20-minute budget) left every attribute at chance; 4000 steps reached 0.786 +- 0.022 attribute
#: accuracy at guidance 3 (measured 2026-12-02), short of the 0.8 bar, hence 6000.
UNET_TRAINING = DiffusionTrainingConfig(steps=6000, lr=1e-3, ema_decay=0.999, snr_gamma=5.0)
#: The SD3 transformers' training (each objective and seed): 2000 steps (about 10 minutes each at
#: 0.30 s per step), EMA 0.999; no Min-SNR, so the DDPM control is the plain Ho et al. objective.
DIT_TRAINING = DiffusionTrainingConfig(steps=2000, lr=5e-4, ema_decay=0.999)


@dataclass(frozen=True)
class ToyWorldExperimentConfig:
    """Everything that decides the trained toy-world models (and hence their cache keys).

    Data:
        world: the toy world (32 px by default).
        num_train_scenes, num_heldout_scenes: scenes of the training and held-out splits
            (``views_per_scene`` images each); the held-out split is rendered with
            ``heldout_seed`` (no scene in common with the training split) and is what the
            instruments are measured on and generated images are compared with.
        data_seed, heldout_seed: the two splits' data-set seeds (must differ).
        descriptive_fraction: share of training images captioned descriptively ("a red sphere
            left of a blue box on a checkered floor"); the rest get the short caption ("a sphere
            and a box"). 0.9: "mostly descriptive captions" (the E9 setting, DALL-E 3's recipe).
        max_length: tokens per prompt of the MiniLM text conditioning (``[CLS]`` and ``[SEP]``
            included); recorded in the saved pipelines, so sampling pads prompts the same way.

    Models: ``instrument`` (:class:`InstrumentConfig`), ``vae`` + ``vae_training``, ``unet`` +
    ``unet_training``, ``dit`` + ``dit_training`` (shared by every objective and seed). The VAE
    and the UNet use 8 GroupNorm groups (at least 4 channels per group, as Stable Diffusion's 32
    groups of >= 4; also the configs' own default for these widths).

    Seeds:
        seed: initial weights and batch order of the instrument, VAE and UNet, and the caption
            mix; ``dit_seeds``: training seeds of the SD3 transformers (E2 runs every objective
            under each, same seed = same initial weights and data order for both objectives).
    """

    world: ToyWorldConfig = ToyWorldConfig()
    num_train_scenes: int = 20_000
    num_heldout_scenes: int = 2_000
    views_per_scene: int = 1
    data_seed: int = 0
    heldout_seed: int = 1
    descriptive_fraction: float = 0.9
    max_length: int = 32
    instrument: InstrumentConfig = InstrumentConfig()
    vae: ToyVAEConfig = ToyVAEConfig(image_size=32, factor=4, block_out_channels=(32, 32, 32))
    vae_training: VAETrainingConfig = VAETrainingConfig()
    unet: ToyUNetConfig = ToyUNetConfig(latent_size=8, block_out_channels=(32, 64, 128))
    unet_training: DiffusionTrainingConfig = UNET_TRAINING
    dit: ToyDiTConfig = ToyDiTConfig(latent_size=8)
    dit_training: DiffusionTrainingConfig = DIT_TRAINING
    dit_objectives: Tuple[str, ...] = DIT_OBJECTIVES
    dit_seeds: Tuple[int, ...] = (0,)
    seed: int = 0

    def __post_init__(self) -> None:
        check_field_types(self)
        where = "ToyWorldExperimentConfig"
        check_fields(self, where, int_min_1=("num_train_scenes", "num_heldout_scenes", "views_per_scene"), fraction=("descriptive_fraction",))
        for name in ("data_seed", "heldout_seed", "seed"):
            check_int_range(getattr(self, name), f"{where}.{name}", lo=0)
        check_int_range(self.max_length, f"{where}.max_length", lo=4, hi=256)
        if self.data_seed == self.heldout_seed:
            raise InputError(f"{where}: data_seed and heldout_seed must differ (the held-out split would repeat the training scenes)")
        if self.vae.image_size != self.world.image_size:
            raise InputError(f"{where}.vae.image_size: {self.vae.image_size}, but the toy world renders {self.world.image_size} px")
        latent = self.vae.latent_size
        for name in ("unet", "dit"):
            net = getattr(self, name)
            if net.latent_size != latent or net.latent_channels != self.vae.latent_channels:
                raise InputError(
                    f"{where}.{name}: built for {net.latent_channels}x{net.latent_size}x{net.latent_size} latents, the VAE makes "
                    f"{self.vae.latent_channels}x{latent}x{latent}; set {name}.latent_size={latent}"
                )
        if self.unet.cross_attention_dim != 384 or self.dit.joint_attention_dim != 384 or self.dit.pooled_projection_dim != 384:
            raise InputError(f"{where}: the text conditioning (all-MiniLM-L6-v2) is 384-d; build the UNet and the transformer for 384-d text")
        if self.world.image_size & (self.world.image_size - 1):
            raise InputError(f"{where}.world: the attribute classifier needs a power-of-two image size, got {self.world.image_size}")
        if not self.dit_objectives:
            raise InputError(f"{where}.dit_objectives: need at least one of {DIT_OBJECTIVES}")
        for obj in self.dit_objectives:
            check_choice(obj, f"{where}.dit_objectives", DIT_OBJECTIVES)
        if len(set(self.dit_objectives)) != len(self.dit_objectives) or len(set(self.dit_seeds)) != len(self.dit_seeds):
            raise InputError(f"{where}: dit_objectives and dit_seeds must not repeat entries")
        for s in self.dit_seeds:
            check_int_range(s, f"{where}.dit_seeds", lo=0)

    @property
    def dit_models(self) -> List[Tuple[str, int]]:
        """``(objective, seed)`` of every SD3 transformer, seed-major."""
        return [(obj, s) for s in self.dit_seeds for obj in self.dit_objectives]


def _smoke_config() -> ToyWorldExperimentConfig:
    """Tiny everything: trains in about a minute on 2 CPU cores; the numbers mean nothing."""
    tiny_diffusion = DiffusionTrainingConfig(steps=12, batch_size=16, lr=1e-3, warmup=0.1)
    return ToyWorldExperimentConfig(
        world=ToyWorldConfig(supersample=1),
        num_train_scenes=96,
        num_heldout_scenes=48,
        max_length=32,
        instrument=InstrumentConfig(width=8, feature_dim=16, steps=20, batch_size=32),
        vae=ToyVAEConfig(image_size=32, factor=4, block_out_channels=(8, 16, 16), norm_num_groups=4),
        vae_training=VAETrainingConfig(steps=10, batch_size=16, scale_images=64),
        unet=ToyUNetConfig(latent_size=8, block_out_channels=(16, 32), attention_heads=2, norm_num_groups=4),
        unet_training=tiny_diffusion,
        dit=ToyDiTConfig(latent_size=8, num_layers=1, attention_head_dim=16, num_attention_heads=2),
        dit_training=tiny_diffusion,
    )


def _fine_latent_config() -> ToyWorldExperimentConfig:
    """The default world and recipes with a finer latent: a factor-2 VAE (32 px -> 16x16x4).

    Why: every generated image is decoded by the frozen VAE, so the VAE bounds what any
    controlled image can show. Through the default 8x8x4 VAE the segmenter reads the test renders'
    shapes at mIoU 0.662 (0.833 on the renders themselves); through this one at 0.774 (32.8 dB
    instead of 28.7; README, "Autoencoder ceilings"). Same data, text, instrument, training
    recipes and seeds as ``default``; only the VAE and the denoisers change shape. The UNet gets
    a fourth, 16-channel level at 16x16 (16, 32, 64, 128), so that the 8x8 and coarser levels
    keep the default's widths (the default's three levels moved to 16x16 would cost about 1.6x
    this one per step); GroupNorm then has 4 groups (>= 4 channels each at 16 channels).
    Measured on 2 CPU cores: 0.66 s per UNet step (batch 64) against the default's ~0.25, so
    the UNet's 6,000 steps take about 66 minutes. Still 4 latent channels and 2 layers per
    block, as ControlNet-XS requires.
    """
    return ToyWorldExperimentConfig(
        vae=ToyVAEConfig(image_size=32, factor=2, block_out_channels=(32, 32)),
        unet=ToyUNetConfig(latent_size=16, block_out_channels=(16, 32, 64, 128)),
        dit=ToyDiTConfig(latent_size=16),
    )


#: Named configurations: ``"default"`` (the benchmark's, sized for ~1 h of training on 2 cores),
#: ``"fine"`` (the default with a factor-2 VAE, 16x16x4 latents; see :func:`_fine_latent_config`)
#: and ``"smoke"`` (about a minute; checks that everything runs, measures nothing).
PRESETS: Dict[str, Callable[[], ToyWorldExperimentConfig]] = {
    "default": ToyWorldExperimentConfig,
    "fine": _fine_latent_config,
    "smoke": _smoke_config,
}


def toyworld_preset(name: str) -> ToyWorldExperimentConfig:
    """The preset ``name`` (``"default"``, ``"fine"`` or ``"smoke"``)."""
    check_choice(name, "preset", PRESETS)
    return PRESETS[name]()


# ----------------------------------------------------------------------------- cache keys


def toyworld_cache_dir(cache_dir: Union[str, os.PathLike, None] = None) -> Path:
    """The toy world's cache root: ``cache_dir``; else ``$LANGFIELD_CACHE_DIR/toyworld``; else
    ``~/.cache/langfield/toyworld``. Not created here."""
    if cache_dir is not None:
        return Path(os.path.expanduser(os.fspath(cache_dir)))
    env = os.environ.get(CACHE_ENV, "").strip()
    base = Path(os.path.expanduser(env)) if env else Path.home() / ".cache" / "langfield"
    return base / "toyworld"


def _digest(payload: Mapping[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _phase_payloads(config: ToyWorldExperimentConfig) -> Dict[str, Dict[str, Any]]:
    """What each phase depends on (its configuration and the keys of its inputs), in training order."""
    c = config_to_dict
    out: Dict[str, Dict[str, Any]] = {}
    keys: Dict[str, str] = {}

    def add(name: str, own: Dict[str, Any], inputs: Sequence[str]) -> None:
        payload = {"phase": name, "version": CACHE_VERSION, "config": own, "inputs": {k: keys[k] for k in inputs}}
        out[name] = payload
        keys[name] = _digest(payload)

    add("data", {
        "world": config.world.to_dict(), "num_train_scenes": config.num_train_scenes,
        "num_heldout_scenes": config.num_heldout_scenes, "views_per_scene": config.views_per_scene,
        "data_seed": config.data_seed, "heldout_seed": config.heldout_seed, "format_version": FORMAT_VERSION,
    }, [])  # fmt: skip
    add("text", {"descriptive_fraction": config.descriptive_fraction, "max_length": config.max_length, "seed": config.seed}, ["data"])
    add("instrument", {"instrument": c(config.instrument), "seed": config.seed}, ["data"])
    add("vae", {"vae": c(config.vae), "training": c(config.vae_training), "seed": config.seed}, ["data"])
    add("unet", {"unet": c(config.unet), "training": c(config.unet_training), "objective": "epsilon",
                 "seed": config.seed}, ["vae", "text"])  # fmt: skip
    for objective, seed in config.dit_models:
        add(_dit_name(objective, seed), {"dit": c(config.dit), "training": c(config.dit_training), "objective": objective,
                                         "seed": seed}, ["vae", "text"])  # fmt: skip
    return out


def _dit_name(objective: str, seed: int) -> str:
    return f"dit_{objective}_s{seed}"


def phase_keys(config: ToyWorldExperimentConfig) -> Dict[str, str]:
    """``{phase: sha256 hex}`` of every phase of ``config`` (see the module docstring).

    A key changes exactly when the phase's own configuration or an upstream key changes."""
    return {name: _digest(payload) for name, payload in _phase_payloads(config).items()}


# ----------------------------------------------------------------------------- phase machinery


def _peak_reset() -> bool:
    """Reset the peak resident set size (``VmHWM``) of this process; ``False`` where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> Tuple[int, str]:
    """(bytes, how): ``VmHWM`` from ``/proc/self/status``, else ``ru_maxrss`` (process peak)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024, "VmHWM"
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale, "ru_maxrss"


def _phase_done(directory: Path) -> bool:
    return (directory / PHASE_FILE).is_file()


def read_phase_record(directory: Path) -> Dict[str, Any]:
    """The ``phase.json`` of a finished phase folder."""
    path = Path(directory) / PHASE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: cannot read the phase record ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


class _Phase:
    """One cached phase: ``<root>/<name>-<key>/``, built in ``.partial`` under a lock (module docstring)."""

    def __init__(self, root: Path, name: str, payload: Dict[str, Any], lock_timeout_s: float) -> None:
        self.name = name
        self.payload = payload
        self.key = _digest(payload)
        self.final = root / f"{name}-{self.key[:KEY_DIGITS]}"
        self.partial = root / f"{self.final.name}.partial"
        self.lock_path = root / f"{self.final.name}.lock"
        self.lock_timeout_s = lock_timeout_s

    def run(self, build: Callable[[Path], Dict[str, Any]], log: Callable[[str], None]) -> Tuple[Path, bool]:
        """Build the phase unless it is finished; returns ``(folder, built_now)``."""
        if _phase_done(self.final):
            return self.final, False
        self.final.parent.mkdir(parents=True, exist_ok=True)
        lock = BuildLock(self.lock_path, timeout_s=self.lock_timeout_s)
        try:
            lock.acquire()
        except BuildLockTimeout as err:
            raise InputError(
                f"toy-world cache: phase {self.name} ({self.final}) is being built by another process and did not finish "
                f"within {self.lock_timeout_s:g} s ({err}); wait for it, or pass a longer lock_timeout_s"
            ) from None
        try:
            if _phase_done(self.final):  # finished by another process while we waited
                return self.final, False
            if self.final.exists():  # a folder without phase.json is not ours to trust
                shutil.rmtree(self.final)
            self.partial.mkdir(parents=True, exist_ok=True)
            log(f"toy world: phase {self.name} -> {self.final}")
            exact = _peak_reset()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            extra = build(self.partial)
            peak, how = _peak_rss_bytes()
            record = {
                "phase": self.name,
                "key": self.key,
                "payload": self.payload,
                "seconds": time.perf_counter() - start,
                "peak_rss_bytes": peak,
                "peak_rss_scope": "phase" if exact and how == "VmHWM" else "process",
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **extra,
            }
            if torch.cuda.is_available():
                record["cuda_peak_bytes"] = int(torch.cuda.max_memory_allocated())
            atomic_write_json(record, self.partial / PHASE_FILE)
            # the Trainer's checkpoints served resumption only; the phase's outputs are written now
            shutil.rmtree(self.partial / "train" / "checkpoints", ignore_errors=True)
            os.replace(self.partial, self.final)
            fsync_dir(self.final.parent)
            log(f"toy world: phase {self.name} done in {record['seconds']:.1f} s (peak RSS {peak / 2**20:.0f} MiB)")
            return self.final, True
        finally:
            lock.release()


def run_cached_phase(root: Union[str, os.PathLike], name: str, payload: Dict[str, Any], build: Callable[[Path], Dict[str, Any]], *,
                     log: Optional[Callable[[str], None]] = None, lock_timeout_s: float = 4 * 3600.0) -> Tuple[Path, bool]:  # fmt: skip
    """Run one cached phase outside :func:`train_toyworld` (used by later experiments' own phases).

    ``<root>/<name>-<key>/`` with ``key`` the sha256 of ``payload`` (which must name the keys of
    the phases it reads, see :func:`phase_keys`); built by ``build(partial_folder)`` in ``.partial``
    under the phase lock, skipped when finished (module docstring). Returns ``(folder, built_now)``.
    """
    return _Phase(Path(root), name, payload, lock_timeout_s).run(build, log or _LOG.info)


def train_phase(method, sampler, *, steps: int, work: Optional[Path], name: str, seed: int, device: str, progress: bool = False,
                checkpoint_every: Optional[int] = None, callbacks: Sequence[TrainerCallback] = ()) -> Dict[str, Any]:  # fmt: skip
    """Train ``method`` for ``steps`` with the one Trainer in ``work/train`` (resumable), as every phase does
    (``work=None``: in memory, nothing written, nothing to resume)."""
    every = checkpoint_every if checkpoint_every is not None else max(1, steps // 4)
    return _train(method, sampler, steps=steps, work=work, name=name, seed=seed, device=device, progress=progress,
                  checkpoint_every=every, callbacks=callbacks)  # fmt: skip


def _train(method, sampler, *, steps: int, work: Optional[Path], name: str, seed: int, device: str, progress: bool,
           checkpoint_every: int, callbacks: Sequence[TrainerCallback]) -> Dict[str, Any]:  # fmt: skip
    """Run the Trainer in ``work/train`` (resumable; ``work=None``: in memory); returns what the phase record keeps."""
    out = None if work is None else work / "train"
    config = TrainerConfig(
        max_steps=steps, output_dir=None if out is None else str(out), seed=seed, device=device, progress=progress, name=name,
        log_every=max(1, min(50, steps // 10 or 1)), checkpoint_every=checkpoint_every, keep_last_checkpoints=1,
    )  # fmt: skip
    trainer = Trainer(method, config, sampler=sampler, callbacks=callbacks, resume=out is not None)
    resumed_from = trainer.step
    record = trainer.train()
    if trainer.step < steps:
        raise InputError(
            f"toy world: phase {name} stopped at step {trainer.step} of {steps}; its checkpoint is kept in {out}, "
            f"run again to resume"
        )
    kept = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {"steps": trainer.step, "resumed_from_step": resumed_from, "train_seconds": trainer.elapsed_seconds,
            "last_log": kept}  # fmt: skip


def _num_params(module: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


# ----------------------------------------------------------------------------- data


@dataclass
class ToySplit:
    """One split of the toy world in memory (``N`` images), what training and measuring need.

    Attributes:
        images: ``[N, 3, H, W]`` uint8 RGB.
        labels: :class:`AttributeLabels` (count, left-to-right shape and colour slots).
        short_captions, descriptive_captions: ``N`` captions each.
        scenes: the scene graph of each image; c2w: ``[N, 3, 4]`` OpenCV camera-to-world.
    """

    images: Tensor
    labels: AttributeLabels
    short_captions: Tuple[str, ...]
    descriptive_captions: Tuple[str, ...]
    scenes: Tuple[ToyScene, ...]
    c2w: Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def float_images(self, rows: Optional[Union[slice, Tensor]] = None) -> Tensor:
        """``[n, 3, H, W]`` float32 in ``[0, 1]`` (all rows, or ``rows``)."""
        x = self.images if rows is None else self.images[rows]
        return x.float() / 255.0


def load_split(data_dir: Union[str, os.PathLike], split: str) -> ToySplit:
    """Read ``<data_dir>/<split>`` (``"train"`` or ``"heldout"``) written by the data phase."""
    check_choice(split, "split", ("train", "heldout"))
    data = read_toyworld(Path(data_dir) / split)
    images = data.rgb.permute(0, 3, 1, 2).contiguous()
    labels = AttributeLabels(data.count.clone(), data.slot_shapes.clone(), data.slot_colors.clone())
    records = data.records
    scenes = tuple(ToyScene.from_dict(r["scene"], where=f"{split} record {i}") for i, r in enumerate(records))
    return ToySplit(
        images=images,
        labels=labels,
        short_captions=tuple(r["short_caption"] for r in records),
        descriptive_captions=tuple(r["descriptive_caption"] for r in records),
        scenes=scenes,
        c2w=data.cameras.c2w.clone(),
    )


def _data_phase(config: ToyWorldExperimentConfig, progress: bool) -> Callable[[Path], Dict[str, Any]]:
    def build(work: Path) -> Dict[str, Any]:
        # write_toyworld resumes on its own (complete shards are kept)
        for split, scenes, seed in (("train", config.num_train_scenes, config.data_seed),
                                    ("heldout", config.num_heldout_scenes, config.heldout_seed)):  # fmt: skip
            write_toyworld(work / split, config.world, scenes, config.views_per_scene, seed, progress=progress)
        views = config.views_per_scene
        return {"images": {"train": config.num_train_scenes * views, "heldout": config.num_heldout_scenes * views}}

    return build


# ----------------------------------------------------------------------------- text


def _caption_choice(num: int, fraction: float, seed: int) -> Tensor:
    """``[num]`` bool: image ``i`` gets the descriptive caption (probability ``fraction``)."""
    gen = torch.Generator().manual_seed(int(seed) * 7919 + 17)
    return torch.rand(num, generator=gen, dtype=torch.float64) < fraction


@contextmanager
def _progress_bar(show: bool, name: str, total: int, unit: str) -> Iterator[Callable[[int], None]]:
    """A rich progress bar (count, rate, ETA) yielding ``advance(n)``; a no-op when ``show`` is false."""
    if not show:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn(f"[bold blue]{name}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                   TextColumn("ETA"), TimeRemainingColumn())  # fmt: skip
    task = bar.add_task(name, total=total, rate="")
    start = time.perf_counter()
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        rate = done[0] / max(time.perf_counter() - start, 1e-9)
        bar.update(task, advance=n, rate=f"{rate:,.0f} {unit}/s")

    with bar:
        yield advance


def _text_phase(config: ToyWorldExperimentConfig, data_dir: Path, progress: bool) -> Callable[[Path], Dict[str, Any]]:
    def build(work: Path) -> Dict[str, Any]:
        train = load_split(data_dir, "train")
        descriptive = _caption_choice(len(train), config.descriptive_fraction, config.seed)
        captions = [d if use else s for d, s, use in zip(train.descriptive_captions, train.short_captions, descriptive.tolist())]
        unique = sorted(set(captions))
        index = {c: i for i, c in enumerate(unique)}
        caption_ids = torch.tensor([index[c] for c in captions], dtype=torch.int64)
        encoder = load_prompt_encoder(max_length=config.max_length)
        embeds, masks, pooled = [], [], []
        with _progress_bar(progress, "text", len(unique), "captions") as advance:
            for start in range(0, len(unique), 256):
                emb = encoder.encode(unique[start : start + 256], where="training captions")
                embeds.append(emb.embeds.half())
                masks.append(emb.attention_mask.to(torch.int8))
                pooled.append(emb.pooled.half())
                advance(len(emb))
        empty = encoder.empty(1)
        atomic_save_torch(
            {
                "captions": unique,
                "caption_ids": caption_ids,
                "descriptive": descriptive,
                "embeds": torch.cat(embeds),
                "attention_mask": torch.cat(masks),
                "pooled": torch.cat(pooled),
                "empty": {"embeds": empty.embeds, "attention_mask": empty.attention_mask, "pooled": empty.pooled},
                "text": TextConditioningSpec.of_encoder(encoder).to_dict(),
            },
            work / "text.pt",
        )
        return {
            "num_captions": len(unique),
            "descriptive_share": float(descriptive.double().mean()),
            "text_conditioning": TextConditioningSpec.of_encoder(encoder).to_dict(),
        }

    return build


def load_text_embeddings(text_dir: Union[str, os.PathLike]) -> Tuple[PromptEmbeddings, PromptEmbeddings, Tensor, TextConditioningSpec]:
    """What a text phase folder holds: ``(caption embeddings [U, T, 384], the empty prompt's [1, T, 384],
    caption_ids [N] of the training images, the text-conditioning spec)``."""
    return _load_text(Path(text_dir))


def _load_text(text_dir: Path) -> Tuple[PromptEmbeddings, PromptEmbeddings, Tensor, TextConditioningSpec]:
    data = torch.load(text_dir / "text.pt", map_location="cpu", weights_only=True)
    prompts = PromptEmbeddings(data["embeds"], data["attention_mask"].long(), data["pooled"])
    e = data["empty"]
    empty = PromptEmbeddings(e["embeds"], e["attention_mask"], e["pooled"], ("",))
    spec = dict(data["text"])
    spec.pop("format", None)
    return prompts, empty, data["caption_ids"], TextConditioningSpec(**spec)


# ----------------------------------------------------------------------------- instrument


def _classifier(config: InstrumentConfig, world: ToyWorldConfig) -> AttributeClassifier:
    return AttributeClassifier(image_size=world.image_size, width=config.width, feature_dim=config.feature_dim,
                               max_objects=world.max_objects)  # fmt: skip


def _instrument_phase(config: ToyWorldExperimentConfig, data_dir: Path, device: str, progress: bool,
                      callbacks: Sequence[TrainerCallback]) -> Callable[[Path], Dict[str, Any]]:  # fmt: skip
    icfg = config.instrument

    def build(work: Path) -> Dict[str, Any]:
        train = load_split(data_dir, "train")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            net = _classifier(icfg, config.world)
        objective = AttributeClassifierObjective(net, train.images, train.labels, lr=icfg.lr, augment=icfg.augment)
        sampler = IndexSampler(len(train), icfg.batch_size, seed=config.seed)
        info = _train(objective, sampler, steps=icfg.steps, work=work, name="instrument", seed=config.seed, device=device,
                      progress=progress, checkpoint_every=max(1, icfg.steps // 4), callbacks=callbacks)  # fmt: skip
        net = net.cpu().eval()
        heldout = load_split(data_dir, "heldout")
        accuracy = evaluate_classifier(net, heldout.images, heldout.labels)
        chance = chance_accuracy(train.labels, heldout.labels)
        kwargs = {"image_size": config.world.image_size, "width": icfg.width, "feature_dim": icfg.feature_dim,
                  "max_objects": config.world.max_objects}  # fmt: skip
        atomic_save_torch({"kwargs": kwargs, "state_dict": net.state_dict()}, work / "classifier.pt")
        return {**info, "num_params": _num_params(net), "heldout_accuracy": accuracy.as_dict(), "chance": chance.as_dict(),
                "num_train": len(train), "num_heldout": len(heldout)}  # fmt: skip

    return build


def load_classifier(instrument_dir: Union[str, os.PathLike]) -> AttributeClassifier:
    """The trained attribute classifier of an instrument phase folder (CPU, eval mode)."""
    path = Path(instrument_dir) / "classifier.pt"
    if not path.is_file():
        raise InputError(f"{path}: missing (not a finished instrument phase)")
    data = torch.load(path, map_location="cpu", weights_only=True)
    net = AttributeClassifier(**data["kwargs"])
    net.load_state_dict(data["state_dict"])
    return net.eval()


# ----------------------------------------------------------------------------- VAE


def _vae_phase(config: ToyWorldExperimentConfig, data_dir: Path, device: str, progress: bool,
               callbacks: Sequence[TrainerCallback]) -> Callable[[Path], Dict[str, Any]]:  # fmt: skip
    vcfg = config.vae_training

    def build(work: Path) -> Dict[str, Any]:
        train = load_split(data_dir, "train")
        vae = config.vae.build(seed=config.seed)
        method = VAEMethod(vae, train.images, vcfg.optim)
        sampler = IndexSampler(len(train), vcfg.batch_size, seed=config.seed)
        info = _train(method, sampler, steps=vcfg.steps, work=work, name="vae", seed=config.seed, device=device,
                      progress=progress, checkpoint_every=max(1, vcfg.steps // 4), callbacks=callbacks)  # fmt: skip
        vae = vae.cpu().eval()
        scale_rows = torch.arange(min(vcfg.scale_images, len(train)))
        factor = latent_scaling_factor(vae, train.float_images(scale_rows) * 2.0 - 1.0)
        latents = torch.cat([encode_latents(vae, train.float_images(slice(s, s + 1024)) * 2.0 - 1.0)
                             for s in range(0, len(train), 1024)])  # fmt: skip
        heldout = load_split(data_dir, "heldout")
        psnr = _reconstruction_psnr(vae, heldout.float_images(slice(0, 512)))
        vae.save_pretrained(str(work / "vae"), safe_serialization=True)
        atomic_save_torch({"latents": latents}, work / "latents.pt")
        return {**info, "num_params": _num_params(vae), "scaling_factor": factor, "heldout_psnr": psnr,
                "latent_shape": list(latents.shape[1:])}  # fmt: skip

    return build


@torch.no_grad()
def _reconstruction_psnr(vae: Any, images: Tensor) -> float:
    """Mean PSNR (dB, ``[0, 1]`` units) of the autoencoder's reconstructions (posterior means)."""
    recon = vae_reconstruct(vae, images)
    mse = (recon - images).square().mean(dim=(1, 2, 3)).clamp_min(1e-10)
    return float((-10.0 * torch.log10(mse)).mean())


@torch.no_grad()
def vae_reconstruct(vae: Any, images: Tensor, batch_size: int = 256) -> Tensor:
    """Decode(encode(``images``)) with posterior means: ``[N, 3, H, W]`` in ``[0, 1]`` in and out."""
    out = []
    was_training = vae.training
    vae.eval()
    try:
        for chunk in images.split(batch_size):
            z = vae.encode(chunk * 2.0 - 1.0).latent_dist.mean
            out.append(((vae.decode(z).sample + 1.0) / 2.0).clamp(0.0, 1.0))
    finally:
        vae.train(was_training)
    return torch.cat(out)


def _load_vae(vae_dir: Path) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(str(vae_dir / "vae"), low_cpu_mem_usage=False).eval()


# ----------------------------------------------------------------------------- diffusion


def _sampling_scheduler(method: LatentDiffusionMethod) -> Any:
    """What the pipeline is saved with: DDIM (the training DDPM's betas) for ε, flow Euler for flow."""
    from diffusers import DDIMScheduler

    scheduler = method.sampling_scheduler()
    if method.config.objective == "epsilon":
        return DDIMScheduler.from_config(scheduler.config, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return scheduler


def _diffusion_phase(config: ToyWorldExperimentConfig, backbone: str, objective: str, seed: int, vae_dir: Path, text_dir: Path,
                     device: str, progress: bool, callbacks: Sequence[TrainerCallback]) -> Callable[[Path], Dict[str, Any]]:  # fmt: skip
    training = config.unet_training if backbone == "unet" else config.dit_training
    name = "unet" if backbone == "unet" else _dit_name(objective, seed)

    def build(work: Path) -> Dict[str, Any]:
        latents = torch.load(vae_dir / "latents.pt", map_location="cpu", weights_only=True)["latents"]
        prompts, empty, caption_ids, text = _load_text(text_dir)
        net = config.unet.build(seed=seed) if backbone == "unet" else config.dit.build(seed=seed)
        method = LatentDiffusionMethod(net, latents, prompts, empty, caption_ids=caption_ids,
                                       config=training.method_config(objective))  # fmt: skip
        # The same sampler seed for every objective: the same latents at every step (E2's pairing).
        sampler = IndexSampler(len(latents), training.batch_size, seed=seed)
        info = _train(method, sampler, steps=training.steps, work=work, name=name, seed=seed, device=device,
                      progress=progress, checkpoint_every=max(1, training.steps // 4), callbacks=callbacks)  # fmt: skip
        trained = method.ema_backbone if method.ema_backbone is not None else method.backbone
        trained = trained.cpu().eval()
        vae = _load_vae(vae_dir)
        kwargs = {"unet": trained} if backbone == "unet" else {"transformer": trained}
        pipe = build_pipeline(vae=vae, scheduler=_sampling_scheduler(method), text=text, **kwargs)
        _quiet_save(pipe, work / "pipeline")
        return {**info, "num_params": _num_params(trained), "backbone": backbone, "objective": objective, "seed": seed,
                "pipeline_kind": pipe.kind, "scheduler": type(pipe.pipeline.scheduler).__name__}  # fmt: skip

    return build


def _quiet_save(pipe: Any, directory: Path) -> None:
    """``pipe.save(directory)`` without diffusers' notes that the (absent) text encoders are not saved."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        pipe.save(directory)
    finally:
        diffusers_logging.set_verbosity(level)


# ----------------------------------------------------------------------------- the entry point


@dataclass
class ToyWorldModels:
    """Where :func:`train_toyworld` put everything, with loaders.

    Attributes:
        config: the experiment configuration.
        root: the cache root.
        phases: ``{phase: folder}``; ``records``: ``{phase: phase.json}``.
        pipelines: ``{"unet": DIR, "dit_rectified_flow_s0": DIR, ...}``: diffusers folders for
            :func:`~langfield.generation.loading.load_pipeline` / ``langfield generate --model``.
        built: phases trained by this call (the others came from the cache).
    """

    config: ToyWorldExperimentConfig
    root: Path
    phases: Dict[str, Path]
    records: Dict[str, Dict[str, Any]]
    pipelines: Dict[str, Path]
    built: Tuple[str, ...] = ()
    _cache: Dict[str, Any] = field(default_factory=dict, repr=False)

    def split(self, name: str) -> ToySplit:
        """The ``"train"`` or ``"heldout"`` split (read once, then kept)."""
        if name not in self._cache:
            self._cache[name] = load_split(self.phases["data"], name)
        return self._cache[name]

    def classifier(self) -> AttributeClassifier:
        """The attribute-classifier instrument (CPU, eval mode)."""
        if "classifier" not in self._cache:
            self._cache["classifier"] = load_classifier(self.phases["instrument"])
        return self._cache["classifier"]

    def vae(self) -> Any:
        """The trained ``AutoencoderKL`` (its ``scaling_factor`` measured)."""
        return _load_vae(self.phases["vae"])

    def pipeline_name(self, objective: str, seed: int) -> str:
        """The phase / pipeline name of the SD3 transformer trained with ``objective`` and ``seed``."""
        return _dit_name(objective, seed)

    def phase_summary(self) -> Dict[str, Dict[str, Any]]:
        """Per phase: folder, seconds, training seconds, peak memory (MiB), steps, parameters."""
        out = {}
        for name, rec in self.records.items():
            out[name] = {
                "folder": str(self.phases[name]),
                "seconds": rec.get("seconds"),
                "train_seconds": rec.get("train_seconds"),
                "peak_rss_mib": None if rec.get("peak_rss_bytes") is None else rec["peak_rss_bytes"] / 2**20,
                "peak_rss_scope": rec.get("peak_rss_scope"),
                "steps": rec.get("steps"),
                "num_params": rec.get("num_params"),
                "built_now": name in self.built,
            }
        return out

    def to_dict(self) -> Dict[str, Any]:
        return {
            "root": str(self.root),
            "config": config_to_dict(self.config),
            "phases": self.phase_summary(),
            "pipelines": {k: str(v) for k, v in self.pipelines.items()},
        }


def train_toyworld(
    config: ToyWorldExperimentConfig = ToyWorldExperimentConfig(),
    *,
    cache_dir: Union[str, os.PathLike, None] = None,
    device: Optional[str] = None,
    progress: bool = True,
    log: Optional[Callable[[str], None]] = None,
    callbacks: Optional[Mapping[str, Sequence[TrainerCallback]]] = None,
    lock_timeout_s: float = 4 * 3600.0,
    with_dit: bool = True,
) -> ToyWorldModels:
    """Train (or find in the cache) every model of ``config``; see the module docstring.

    Args:
        config: what to train.
        cache_dir: the cache root (default :func:`toyworld_cache_dir`).
        device: ``"cpu"``, ``"cuda"``...; ``None``: CUDA when available. Not part of any key.
        progress: progress bars (rate and ETA) for rendering and training.
        log: called with one line per phase start/end (default: the module logger).
        callbacks: ``{phase: [TrainerCallback, ...]}`` handed to that phase's Trainer.
        lock_timeout_s: the longest wait for a phase another process is building.
        with_dit: ``False`` stops after the UNet (no SD3 transformer is trained or looked up: the
            control experiments on the UNet need none); the phases' keys do not change.

    Returns:
        :class:`ToyWorldModels`.
    """
    if not isinstance(config, ToyWorldExperimentConfig):
        raise InputError(f"config: expected a ToyWorldExperimentConfig, got {type(config).__name__}")
    root = toyworld_cache_dir(cache_dir)
    if root.exists() and not root.is_dir():
        raise InputError(f"cache_dir {root}: exists and is not a folder")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    say = log or _LOG.info
    callbacks = dict(callbacks or {})
    unknown = sorted(set(callbacks) - set(_phase_payloads(config)))
    if unknown:
        raise InputError(f"callbacks: unknown phase(s) {unknown}; phases are {sorted(_phase_payloads(config))}")
    payloads = _phase_payloads(config)
    phases: Dict[str, Path] = {}
    built: List[str] = []

    def run(name: str, build: Callable[[Path], Dict[str, Any]]) -> Path:
        folder, now = _Phase(root, name, payloads[name], lock_timeout_s).run(build, say)
        phases[name] = folder
        if now:
            built.append(name)
        return folder

    def cbs(name: str) -> Tuple[TrainerCallback, ...]:
        return tuple(callbacks.get(name, ()))

    data = run("data", _data_phase(config, progress))
    text = run("text", _text_phase(config, data, progress))
    run("instrument", _instrument_phase(config, data, device, progress, cbs("instrument")))
    vae = run("vae", _vae_phase(config, data, device, progress, cbs("vae")))
    pipelines = {"unet": run("unet", _diffusion_phase(config, "unet", "epsilon", config.seed, vae, text, device, progress, cbs("unet"))) / "pipeline"}
    for objective, seed in config.dit_models if with_dit else ():
        name = _dit_name(objective, seed)
        folder = run(name, _diffusion_phase(config, "dit", objective, seed, vae, text, device, progress, cbs(name)))
        pipelines[name] = folder / "pipeline"
    records = {name: read_phase_record(folder) for name, folder in phases.items()}
    return ToyWorldModels(config, root, phases, records, pipelines, tuple(built))
