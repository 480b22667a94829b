"""The one generic trainer: it talks to every method through :class:`~langfield.methods.base.Method`.

``Trainer(method, config, *, dataset=None, sampler=None, callbacks=())``. The batches come from
``sampler`` (any :class:`~langfield.data.samplers.Sampler`: random pixels, whole images, cameras
without images, indices into precomputed targets); without one, ``method.make_sampler(dataset)``
picks the method's own. One training step::

    method.before_train_step(step)                 # under no_grad (e.g. occupancy-grid update)
    batch  = sampler.sample(step)                  # a pure function of (seed, step, rank)
    out    = model(*batch.model_inputs())          # Method.forward == Method.outputs (DDP-wrapped)
    losses = method.losses(out, batch)             # losses["loss"] is back-propagated
    backward; every optimiser steps; every scheduler steps
    method.after_train_step(step, out)             # e.g. Gaussian densification

At log steps the record holds the loss terms and ``method.metrics(out, batch)`` (e.g. PSNR for
reconstructions). Callbacks (:mod:`langfield.training.callbacks`) run at the sync points.

Outputs under ``config.output_dir`` (nothing is written when it is ``None``)::

    config.json          the TrainerConfig
    metrics.jsonl        one JSON object per line: {"event": "train" | "eval" | "test" | ..., "step", ...}
    checkpoints/         step_XXXXXXXX.ckpt (newest k kept) and latest.ckpt
    eval_<split>.json    per-image and mean PSNR/SSIM of :meth:`Trainer.evaluate`
    renders/<split>/     PNGs when ``evaluate(write_renders=True)``

Reproducibility: the sampler is a pure function of ``(seed, step, stream)``; the global RNGs are
seeded from ``config.seed`` (offset by rank) when the trainer is built and restored from
checkpoints; evaluation runs inside ``torch.random.fork_rng`` so it never shifts the training
RNG. Build the method after :func:`seed_everything` so its initialisation is seeded too.

Performance notes: loss values are read back (a CPU-GPU sync) only at log, eval and checkpoint
steps; non-finite losses are tracked on the device in between, so a NaN is reported with the
step and loss terms where it first appeared even if it is noticed later. Under DDP the time
budget (``max_seconds``) is decided by rank 0 at those same sync steps.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from langfield._checks import (
    DEVICE_TYPES,
    InputError,
    check_choice,
    check_device,
    check_finite_number,
    check_int_range,
    check_memory,
)
from langfield.configs import check_field_types
from langfield.data.dataset import SceneDataset
from langfield.data.samplers import DEFAULT_NUM_RAYS, Sampler, SamplerOptions
from langfield.io.atomic import atomic_write, atomic_write_json, to_jsonable
from langfield.kernels.cpu_allocator import keep_freed_memory
from langfield.methods.base import Method, SceneMethod, evaluation_mode
from langfield.methods.schedules import ProgressLR
from langfield.training.callbacks import CallbackList, TrainerCallback
from langfield.training.checkpoint import (
    CheckpointManager,
    capture_rng_state,
    load_checkpoint,
    load_method_state,
    restore_rng_state,
)
from langfield.training.distributed import DistributedInfo, all_gather_object, env_distributed_info, init_distributed, wrap_ddp
from langfield.training.evaluation import evaluate_views

__all__ = ["TrainerConfig", "Trainer", "NonFiniteLossError", "check_batch_memory", "seed_everything", "set_deterministic"]

logger = logging.getLogger("langfield.training")

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
# Config fields that may change between a run and its resumption without a warning.
_RESUME_FREE_FIELDS = {
    "max_steps", "max_seconds", "output_dir", "device", "progress", "log_every", "eval_every",
    "eval_num_images", "eval_chunk", "checkpoint_every", "keep_last_checkpoints", "name",
}


# What resume() reads from a checkpoint (refused up front when missing: a clear error, not a KeyError).
_RESUME_KEYS = ("model", "optimizers", "schedulers", "sampler", "step", "elapsed_seconds", "rng")


@dataclass(frozen=True)
class TrainerConfig:
    """Options of :class:`Trainer` (methods keep their own hyper-parameters in ``XConfig``).

    Attributes:
        max_steps: training steps; schedulers are built for this many (``method.optimizers``).
        max_seconds: wall-clock training budget in seconds (eval and checkpoint time excluded),
            or ``None``. Training stops at whichever of ``max_steps``/``max_seconds`` binds first.
        num_rays: rays per step summed over all processes (each of ``W`` ranks draws
            ``num_rays / W``; must divide); ``None``: the method preset's (``langfield.runs``),
            else 4096. Only ray samplers read it.
        eval_every: periodic eval every this many steps on a few held-out views (0 = never).
        eval_num_images: how many evenly spaced views of the val (else test) split to evaluate.
        eval_chunk: rays per ``render_rays`` call when rendering whole images (``None``: 2048 on
            the CPU, 8192 elsewhere; :func:`langfield.methods.base.default_ray_chunk`).
        checkpoint_every: checkpoint every this many steps (0 = only at the end of ``train()``).
        keep_last_checkpoints: how many ``step_*.ckpt`` files to keep (``latest.ckpt`` is extra).
        log_every: log/progress/``metrics.jsonl`` every this many steps.
        output_dir: run directory (created by rank 0); ``None`` writes nothing (no checkpoints,
            no ``metrics.jsonl``): for in-memory experiments and tests.
        seed: seeds the global RNGs (offset by rank) and the pixel sampler.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, or ``None`` (CUDA if available). Under DDP with
            CUDA each process uses ``cuda:LOCAL_RANK``.
        mixed_precision: autocast + (for float16) ``GradScaler``; CUDA only, ignored on CPU.
        amp_dtype: ``"float16"`` (with loss scaling) or ``"bfloat16"`` (no scaling needed).
        deterministic: ``torch.use_deterministic_algorithms(True, warn_only=True)`` and
            deterministic cuDNN/cuBLAS settings (process-wide).
        progress: show a rich progress bar (rank 0 only).
        sampler_streams: number of independent ray streams the global batch is split into
            (default: world size). Fix it to make results independent of the process count.
        name: label of the progress bar (e.g. ``"train"``, ``"language fit"``).
    """

    max_steps: int = 30_000
    max_seconds: Optional[float] = None
    num_rays: Optional[int] = None
    eval_every: int = 0
    eval_num_images: int = 2
    eval_chunk: Optional[int] = None
    checkpoint_every: int = 5_000
    keep_last_checkpoints: int = 3
    log_every: int = 100
    output_dir: Optional[str] = "outputs/run"
    seed: int = 0
    device: Optional[str] = None
    mixed_precision: bool = False
    amp_dtype: str = "float16"
    deterministic: bool = False
    progress: bool = True
    sampler_streams: Optional[int] = None
    name: str = "train"

    def __post_init__(self) -> None:
        check_field_types(self)
        for name in ("max_steps", "eval_num_images", "keep_last_checkpoints", "log_every"):
            check_int_range(getattr(self, name), f"TrainerConfig.{name}", lo=1)
        if self.eval_chunk is not None:
            check_int_range(self.eval_chunk, "TrainerConfig.eval_chunk", lo=1)
        if self.num_rays is not None:
            check_int_range(self.num_rays, "TrainerConfig.num_rays", lo=1)
        for name in ("eval_every", "checkpoint_every", "seed"):
            check_int_range(getattr(self, name), f"TrainerConfig.{name}", lo=0)
        if self.max_seconds is not None:
            check_finite_number(self.max_seconds, "TrainerConfig.max_seconds", lo=0, lo_inclusive=False)
        check_choice(self.amp_dtype, "TrainerConfig.amp_dtype", AMP_DTYPES)
        if self.device is not None:
            _check_device_syntax(self.device)
        if self.output_dir is not None and not str(self.output_dir).strip():
            raise InputError("TrainerConfig.output_dir: empty path (use None to write nothing)")
        if self.sampler_streams is not None:
            check_int_range(self.sampler_streams, "TrainerConfig.sampler_streams", lo=1)
            if self.resolved_num_rays % self.sampler_streams:
                raise InputError(
                    f"TrainerConfig.num_rays ({self.resolved_num_rays}) must be divisible by sampler_streams ({self.sampler_streams})"
                )

    @property
    def resolved_num_rays(self) -> int:
        """``num_rays``, or :data:`DEFAULT_NUM_RAYS` when it is ``None``."""
        return DEFAULT_NUM_RAYS if self.num_rays is None else self.num_rays

    def to_dict(self) -> Dict[str, Any]:
        """Plain-typed dict (paths as strings), safe for JSON and ``weights_only`` checkpoints."""
        return {k: (os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in dataclasses.asdict(self).items()}


class NonFiniteLossError(FloatingPointError):
    """Training hit a NaN/inf loss. The last good checkpoint (if any) was left untouched.

    Attributes:
        step: index of the first training step whose loss was non-finite (-1 if it happened on
            another rank only).
        terms: the loss terms at that step (floats).
        checkpoint: path of the last good checkpoint, or ``None``.
    """

    def __init__(self, step: int, terms: Dict[str, float], checkpoint: Optional[Path], rank: int = 0) -> None:
        self.step, self.terms, self.checkpoint, self.rank = step, terms, checkpoint, rank
        if step >= 0:
            shown = ", ".join(f"{k}={v:.6g}" for k, v in terms.items()) or "no scalar terms"
            where = f"at step {step}" + (f" on rank {rank}" if rank else "") + f" ({shown})"
        else:
            where = "on another rank"
        kept = f"last good checkpoint kept at {checkpoint}" if checkpoint else "no checkpoint had been written yet"
        super().__init__(
            f"non-finite training loss {where}; training stopped, {kept}. "
            "Lower the learning rate, check the data, or disable mixed precision."
        )


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy and torch (CPU and all CUDA devices)."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def set_deterministic(enabled: bool = True) -> None:
    """Process-wide deterministic kernels (warn-only for ops without a deterministic version)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled and torch.backends.cudnn.benchmark


def _check_device_syntax(device: str) -> None:
    """``TrainerConfig.device`` names a device type langfield runs on (availability is checked when a
    Trainer is built: a stored config may come from a machine with other devices)."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError, TypeError):
        kind = None
    if kind not in DEVICE_TYPES:
        raise InputError(f"TrainerConfig.device: unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'mps'")


#: Lower bound of the memory one training ray costs (the ray, its pixel, a few samples' activations
#: and gradients); ``num_rays`` beyond what fits is refused before anything is allocated.
BYTES_PER_RAY = 512


def check_batch_memory(num_rays: int, device: Any = "cpu") -> None:
    """Refuse a batch of ``num_rays`` rays that cannot fit (:data:`BYTES_PER_RAY` each, a lower bound)."""
    check_memory(
        int(num_rays) * BYTES_PER_RAY, f"TrainerConfig.num_rays={num_rays} (--num-rays)", device=device,
        hint=f"at least {BYTES_PER_RAY} bytes per ray; ask for fewer rays",
    )  # fmt: skip


def _resolve_device(requested: Optional[str], info: DistributedInfo) -> torch.device:
    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = check_device(requested, "TrainerConfig.device")
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", info.local_rank if info.enabled else torch.cuda.current_device())
    return device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _progress_stats(record: Dict[str, Any]) -> str:
    """``loss 0.0123 | psnr 24.31 | 12.3k rays/s`` from a train record (loss + the method's metrics)."""
    parts = [f"loss {record['loss']:.4g}"] if "loss" in record else []
    parts += [f"{k} {record[k]:.4g}" for k in record.get("metric_names", []) if k in record]
    parts.append(f"{record.get('rays_per_s', 0.0) / 1e3:,.1f}k rays/s")
    return " | ".join(parts)


def _format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-:--:--"
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class _NonFiniteWatch:
    """Device-side record of the first step with a non-finite loss (no host sync per step)."""

    def __init__(self) -> None:
        self.first_step: Optional[Tensor] = None
        self.terms: Dict[str, Tensor] = {}

    def update(self, step: int, losses: Dict[str, Tensor]) -> None:
        loss = losses["loss"].detach()
        if self.first_step is None:
            self.first_step = torch.full((), -1, dtype=torch.int64, device=loss.device)
        fresh = ~torch.isfinite(loss.float()).all() & (self.first_step < 0)
        for name, value in losses.items():
            if isinstance(value, Tensor) and value.numel() == 1:
                prev = self.terms.get(name)
                prev = torch.zeros((), device=loss.device) if prev is None else prev
                self.terms[name] = torch.where(fresh, value.detach().float().reshape(()), prev)
        self.first_step = torch.where(fresh, torch.full_like(self.first_step, step), self.first_step)

    def local_bad(self) -> Optional[Tensor]:
        """``[]`` int64 tensor: 1 if a non-finite loss has been seen here, else 0."""
        return None if self.first_step is None else (self.first_step >= 0).long()

    def report(self) -> Tuple[int, Dict[str, float]]:
        step = -1 if self.first_step is None else int(self.first_step)
        return step, ({k: float(v) for k, v in self.terms.items()} if step >= 0 else {})


def _load_part(obj: Any, state: Any, where: str) -> None:
    """``obj.load_state_dict(state)`` with an error naming the checkpoint entry instead of torch's bare one."""
    try:
        obj.load_state_dict(state)
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError, AttributeError) as err:
        raise ValueError(f"{where} does not fit this run ({type(err).__name__}: {err})") from err


class Trainer:
    """Generic training loop, evaluation and checkpointing for any :class:`Method`.

    Args:
        method: the method (``nn.Module``); moved to the trainer's device. Under ``torchrun`` it
            is wrapped in ``DistributedDataParallel`` (when ``method.supports_ddp``) and called
            through ``Method.forward``.
        config: :class:`TrainerConfig`.
        dataset: the scene, when there is one: its ``"train"`` split feeds the method's default
            sampler and ``"val"`` (else ``"test"``) the periodic evaluation of scene methods.
        sampler: where batches come from; default ``method.make_sampler(dataset, options)``.
            Required when ``dataset`` is ``None`` (e.g. cameras without images).
        callbacks: :class:`~langfield.training.callbacks.TrainerCallback` objects (main process).
        resume: ``False``; ``True`` to continue from ``output_dir/checkpoints/latest.ckpt`` when it
            exists (fresh start otherwise); or the path of a checkpoint (must exist).

    Attributes:
        step: number of completed training steps.
        elapsed_seconds: training wall-clock time so far (excludes eval/checkpoint time).
        device, dist (:class:`DistributedInfo`), sampler, optimizers, schedulers, output_dir.
    """

    def __init__(
        self,
        method: Method,
        config: TrainerConfig,
        *,
        dataset: Optional[SceneDataset] = None,
        sampler: Optional[Sampler] = None,
        callbacks: Sequence[TrainerCallback] = (),
        resume: Union[bool, str, os.PathLike] = False,
    ) -> None:
        if not isinstance(method, Method):
            raise TypeError(f"method must be a langfield Method, got {type(method).__name__}")
        if not isinstance(config, TrainerConfig):
            raise TypeError(f"config must be a TrainerConfig, got {type(config).__name__}")
        if dataset is not None and not isinstance(dataset, SceneDataset):
            raise TypeError(f"dataset must be a SceneDataset or None, got {type(dataset).__name__}")
        if sampler is not None and not isinstance(sampler, Sampler):
            raise TypeError(f"sampler must be a langfield.data.samplers.Sampler, got {type(sampler).__name__}")
        if sampler is None and dataset is None:
            raise ValueError("Trainer needs a dataset (for the method's default sampler) or a sampler")
        self.config = config
        self.dataset = dataset
        self.callbacks = CallbackList(callbacks)

        already = dist.is_available() and dist.is_initialized()
        # Before joining a group only the environment is read: the backend depends on the device.
        planned = init_distributed() if already else env_distributed_info()
        self.device = _resolve_device(config.device, planned)
        if self.device.type == "cpu":  # fresh pages for every large temporary: ~8 % of an NGP step (kernels.cpu_allocator)
            keep_freed_memory()
        if config.deterministic:
            set_deterministic(True)
        self.dist = init_distributed(backend="nccl" if self.device.type == "cuda" else "gloo")
        num_rays = config.resolved_num_rays
        if sampler is None:
            check_batch_memory(num_rays, self.device)
        if num_rays % self.dist.world_size:
            raise ValueError(f"num_rays ({num_rays}) must be divisible by the number of processes ({self.dist.world_size})")
        if self.dist.world_size > 1 and not method.supports_ddp:
            raise ValueError(
                f"{type(method).__name__} changes its parameters' shapes while training (e.g. densification) "
                "and cannot run under DDP yet: run a single process"
            )
        seed_everything(config.seed + 1_000_003 * self.dist.rank)

        self.method = method.to(self.device)
        self.method.train()
        optimizers, schedulers = method.optimizers(config.max_steps)
        self.optimizers: List[torch.optim.Optimizer] = list(optimizers)
        self.schedulers: List[Any] = [s for s in schedulers if s is not None]
        if not self.optimizers:
            raise ValueError(f"{type(method).__name__}.optimizers() returned no optimiser")
        for opt in self.optimizers:
            if not isinstance(opt, torch.optim.Optimizer):
                raise TypeError(f"{type(method).__name__}.optimizers() must return torch optimisers, got {type(opt).__name__}")
        self.model = wrap_ddp(self.method, self.device) if method.supports_ddp else self.method

        self.use_amp = config.mixed_precision and self.device.type == "cuda"
        if config.mixed_precision and not self.use_amp:
            logger.info("mixed_precision is ignored on %s", self.device)
        self.amp_dtype = AMP_DTYPES[config.amp_dtype]
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)

        if sampler is None:
            options = SamplerOptions(
                seed=config.seed, device=self.device, num_rays=num_rays, rank=self.dist.rank,
                world_size=self.dist.world_size, num_streams=config.sampler_streams,
            )  # fmt: skip
            sampler = method.make_sampler(dataset, options)
            if not isinstance(sampler, Sampler):
                raise TypeError(f"{type(method).__name__}.make_sampler must return a Sampler, got {type(sampler).__name__}")
        self.sampler = sampler
        can_eval = dataset is not None and isinstance(method, SceneMethod)
        self.eval_split = next((s for s in ("val", "test") if s in dataset.splits), None) if can_eval else None

        self.output_dir: Optional[Path] = None if config.output_dir is None else Path(config.output_dir)
        self.metrics_path = None if self.output_dir is None else self.output_dir / "metrics.jsonl"
        self.checkpoints = (
            None if self.output_dir is None
            else CheckpointManager(self.output_dir / "checkpoints", config.keep_last_checkpoints)
        )  # fmt: skip
        self.last_checkpoint: Optional[Path] = None
        self.step = 0
        self.elapsed_seconds = 0.0
        self.total_rays = 0  # work items trained on, summed over processes
        self._segment_start = time.perf_counter()
        self._last_train_record: Dict[str, Any] = {}
        self._stop_requested = False

        if resume is not False and resume is not None:
            path = None if resume is True else Path(resume)
            if path is not None and not path.is_file():
                raise FileNotFoundError(f"resume checkpoint {path} does not exist")
            if path is None and self.checkpoints is None:
                raise ValueError("resume=True needs TrainerConfig.output_dir (where the checkpoints are)")
            if not self.resume(path):
                logger.info("no checkpoint in %s; starting from scratch", self.checkpoints.directory)
        if self.is_main and self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.config.to_dict(), self.output_dir / "config.json")

    # ------------------------------------------------------------------ properties / logging

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def request_stop(self) -> None:
        """Stop at the next sync point, after checkpointing (e.g. from a callback or a viewer)."""
        self._stop_requested = True

    def log_record(self, record: Dict[str, Any]) -> None:
        """Append one JSON object to ``metrics.jsonl`` (rank 0 only; flushed; NaN -> null)."""
        if not self.is_main or self.metrics_path is None:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps(to_jsonable(record), allow_nan=False)
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()

    def _truncate_metrics(self, step: int) -> None:
        """Drop records past ``step`` (and torn lines) left by a run that crashed after its checkpoint."""
        if not self.is_main or self.metrics_path is None or not self.metrics_path.is_file():
            return
        kept = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] > step:
                continue
            kept.append(line)
        with atomic_write(self.metrics_path, "w") as f:
            f.write("".join(k + "\n" for k in kept))

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint_state(self, rng_states: List[Dict[str, Any]]) -> Dict[str, Any]:
        return {
            "step": self.step,
            "elapsed_seconds": self.elapsed_seconds,
            "total_rays": self.total_rays,
            "method_class": f"{type(self.method).__module__}.{type(self.method).__qualname__}",
            "model": self.method.state_dict(),
            "method_extra": self.method.extra_state(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
            "grad_scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": rng_states,
            "world_size": self.dist.world_size,
            "config": self.config.to_dict(),
        }

    def save_checkpoint(self) -> Optional[Path]:
        """Checkpoint the current step (collective under DDP: every rank must call it).

        Rank 0 writes ``step_XXXXXXXX.ckpt`` atomically and repoints ``latest.ckpt``; the RNG states
        of all ranks are gathered so each can resume exactly. Returns the path on rank 0.
        """
        if self.checkpoints is None:
            return None
        rng_states = all_gather_object(capture_rng_state())
        path = None
        if self.is_main:
            path = self.checkpoints.save(self._checkpoint_state(rng_states), self.step)
            self.last_checkpoint = path
        if self.dist.enabled:
            dist.barrier()
        if path is not None:
            self.callbacks.on_checkpoint(self, path)
        return path

    def resume(self, path: Optional[Union[str, os.PathLike]] = None) -> bool:
        """Load ``path`` (default ``output_dir/checkpoints/latest.ckpt``) and continue exactly from it.

        Restores parameters/buffers, ``method.extra_state`` (via ``method.load_extra_state`` when the
        method defines it), optimisers, schedulers, the grad scaler, the sampler step, training time
        and every RNG state. Returns ``False`` if ``path`` is ``None`` and no checkpoint exists.
        """
        if path is None:
            path = self.checkpoints.latest()
            if path is None:
                return False
        path = Path(path)
        state = load_checkpoint(path, map_location="cpu", required=_RESUME_KEYS)
        name = type(self.method).__name__
        load_method_state(self.method, state["model"], f"checkpoint {path} (written by {state.get('method_class')})")
        self.method.load_extra_state(state.get("method_extra") or {})
        for kind, objs in (("optimizers", self.optimizers), ("schedulers", self.schedulers)):
            saved = state[kind]
            if len(saved) != len(objs):
                raise ValueError(f"checkpoint {path} has {len(saved)} {kind}, {name} builds {len(objs)}")
            for i, (obj, sd) in enumerate(zip(objs, saved)):
                _load_part(obj, sd, f"checkpoint {path}: {kind}[{i}]")
        if state.get("grad_scaler"):
            _load_part(self.scaler, state["grad_scaler"], f"checkpoint {path}: grad_scaler")
        _load_part(self.sampler, state["sampler"], f"checkpoint {path}: sampler")
        self.step = int(state["step"])
        self.elapsed_seconds = float(state["elapsed_seconds"])
        self.total_rays = int(state.get("total_rays", 0))
        rng = state["rng"]
        if len(rng) == self.dist.world_size:
            restore_rng_state(rng[self.dist.rank])
        else:
            warnings.warn(
                f"checkpoint was written by {len(rng)} processes, resuming with {self.dist.world_size}: "
                "RNG streams are re-seeded, so the continuation is not bitwise identical",
                stacklevel=2,
            )
        changed = {
            k: (v, getattr(self.config, k))
            for k, v in state.get("config", {}).items()
            if k not in _RESUME_FREE_FIELDS and hasattr(self.config, k) and getattr(self.config, k) != v
        }
        if changed:
            warnings.warn(f"resuming with a changed config (checkpoint, now): {changed}", stacklevel=2)
        self.last_checkpoint = path
        self._truncate_metrics(self.step)
        self.log_record({"event": "resume", "step": self.step, "checkpoint": str(path)})
        logger.info("resumed from %s at step %d", path, self.step)
        return True

    # ------------------------------------------------------------------ training

    def _train_step(self, step: int) -> Tuple[Dict[str, Tensor], Any, Any]:
        with torch.no_grad():
            self.method.set_training_progress(self._progress(step))
            self.method.before_train_step(step)
        batch = self.sampler.sample(step)
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            out = self.model(*batch.model_inputs())
            losses = self.method.losses(out, batch)
        if not isinstance(losses, dict) or "loss" not in losses:
            raise KeyError(f"{type(self.method).__name__}.losses() must return a dict with a 'loss' entry")
        self.scaler.scale(losses["loss"]).backward()
        for opt in self.optimizers:
            self.scaler.step(opt)
        self.scaler.update()
        with torch.no_grad():
            self.method.after_train_step(step, out)
        progress = self._progress(step + 1)
        for sched in self.schedulers:
            if isinstance(sched, ProgressLR):
                sched.step(progress)
            else:
                sched.step()
        return losses, out, batch

    def _progress(self, steps_done: int) -> float:
        """Training progress in [0, 1]: the larger of the step and the time-budget fractions.

        Under DDP only the step fraction is used, so every rank applies the same learning rate.
        """
        progress = steps_done / self.config.max_steps
        if self.config.max_seconds is not None and not self.dist.enabled:
            elapsed = self.elapsed_seconds + (time.perf_counter() - self._segment_start)
            progress = max(progress, elapsed / self.config.max_seconds)
        return min(progress, 1.0)

    def _train_record(self, losses: Dict[str, Tensor], out: Any, batch: Any, rays_per_s: float) -> Dict[str, Any]:
        with torch.no_grad():
            record: Dict[str, Any] = {"event": "train", "step": self.step}
            metrics = self.method.metrics(out, batch)
            for name, value in {**losses, **metrics}.items():
                if isinstance(value, Tensor) and value.numel() == 1:
                    record[name] = float(value.detach().float())
                elif isinstance(value, (int, float)) and not isinstance(value, bool):
                    record[name] = float(value)
            record["metric_names"] = list(metrics)
        record["lr"] = [group["lr"] for opt in self.optimizers for group in opt.param_groups][:4]
        record["rays_per_s"] = rays_per_s
        record["elapsed_s"] = self.elapsed_seconds
        return record

    def _eta(self, window_seconds_per_step: float) -> float:
        eta = (self.config.max_steps - self.step) * window_seconds_per_step
        if self.config.max_seconds is not None:
            eta = min(eta, max(0.0, self.config.max_seconds - self.elapsed_seconds))
        return eta

    def _make_progress(self):
        progress = Progress(
            TextColumn(f"[bold blue]{self.config.name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TextColumn("ETA {task.fields[eta]}"),
        )
        task = progress.add_task("train", total=self.config.max_steps, completed=self.step, stats="", eta="-:--:--")
        return progress, task

    def train(self) -> Dict[str, Any]:
        """Train until ``max_steps`` or ``max_seconds``; returns the last ``"train"`` metrics record.

        Raises:
            NonFiniteLossError: a loss became NaN/inf (no checkpoint is written after that step).
        """
        cfg = self.config
        if self.step >= cfg.max_steps:
            logger.info("already at step %d >= max_steps %d", self.step, cfg.max_steps)
            return self._last_train_record
        watch = _NonFiniteWatch()
        progress, task = self._make_progress() if (cfg.progress and self.is_main) else (None, None)
        if progress is not None:
            progress.start()
        self.log_record({"event": "start", "step": self.step, "world_size": self.dist.world_size, "device": str(self.device)})
        if self.is_main:
            self.callbacks.on_train_start(self)
        try:
            self._train_loop(watch, progress, task)
        finally:
            if progress is not None:
                progress.stop()
        if self.is_main:
            self.callbacks.on_train_end(self, self._last_train_record)
        return self._last_train_record

    def _budget_spent(self, segment_start: float) -> bool:
        if self.config.max_seconds is None:
            return False
        return self.elapsed_seconds + (time.perf_counter() - segment_start) >= self.config.max_seconds

    def _train_loop(self, watch: _NonFiniteWatch, progress, task) -> None:
        cfg = self.config
        window_steps, window_train_s, window_rays = 0, 0.0, 0
        segment_start = self._segment_start = time.perf_counter()
        stop_for_time = False
        while self.step < cfg.max_steps and not stop_for_time:
            losses, out, batch = self._train_step(self.step)
            watch.update(self.step, losses)
            self.step += 1
            window_steps += 1
            window_rays += self.sampler.num_rays
            self.total_rays += self.sampler.num_rays
            hint = self.method.num_rays_hint()
            if hint is not None:
                self.sampler.set_num_rays(hint)

            done = self.step >= cfg.max_steps
            is_log = self.step % cfg.log_every == 0 or done
            is_eval = cfg.eval_every > 0 and self.step % cfg.eval_every == 0 and self.eval_split is not None
            is_ckpt = cfg.checkpoint_every > 0 and self.step % cfg.checkpoint_every == 0
            sync_step = self.device.type == "cpu" or is_log or is_eval or is_ckpt or done
            if not sync_step:
                # Single process: the time budget needs no communication, check it every step.
                if not self.dist.enabled and self._budget_spent(segment_start):
                    stop_for_time = True
                    sync_step = True
                else:
                    continue

            # --- sync point: agree on NaN / time budget, then log, eval, checkpoint -------------
            _sync(self.device)
            now = time.perf_counter()
            self.elapsed_seconds += now - segment_start
            window_train_s += now - segment_start
            stop_for_time = stop_for_time or (
                cfg.max_seconds is not None and self.elapsed_seconds >= cfg.max_seconds
            )
            if self.is_main:
                self.callbacks.on_sync(self)  # may block (pause) or request a stop
            stop_requested = self._stop_requested
            bad = watch.local_bad()
            flags = torch.stack([bad if bad is not None else torch.zeros((), dtype=torch.int64, device=self.device),
                                 torch.tensor(int(stop_for_time), device=self.device),
                                 torch.tensor(int(stop_requested), device=self.device)]).to(self.device)
            if self.dist.enabled:
                if not self.is_main:
                    flags[1:] = 0  # rank 0 alone decides the time budget and stop requests
                dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            any_bad, stop_for_time, stop_requested = bool(flags[0]), bool(flags[1]), bool(flags[2])
            if any_bad:
                self._stop_nonfinite(watch)

            stop = stop_for_time or stop_requested
            if is_log or stop:
                rays_per_s = window_rays / max(window_train_s, 1e-9)
                if self.is_main:
                    record = self._train_record(losses, out, batch, rays_per_s)
                    self._last_train_record = record
                    self.log_record(record)
                    self.callbacks.on_log(self, record)
                    if progress is not None:
                        eta = self._eta(window_train_s / max(window_steps, 1))
                        progress.update(task, completed=self.step, stats=_progress_stats(record), eta=_format_seconds(eta))
                window_steps, window_train_s, window_rays = 0, 0.0, 0
            del losses, out, batch
            if is_eval and self.is_main:
                record = self._evaluate_views(self.eval_split, self._eval_indices(self.eval_split, cfg.eval_num_images))
                self.log_record({"event": "eval", **record})
                self.callbacks.on_eval(self, record)
            if is_ckpt or done or stop:
                self.save_checkpoint()
            segment_start = self._segment_start = time.perf_counter()
            if stop_requested:
                break
        if stop_for_time and self.is_main:
            logger.info("time budget of %.1fs reached at step %d", cfg.max_seconds, self.step)
            self.log_record({"event": "time_budget", "step": self.step, "elapsed_s": self.elapsed_seconds})
        if self._stop_requested and self.is_main:
            self.log_record({"event": "stop_requested", "step": self.step})
        self._stop_requested = False

    def _stop_nonfinite(self, watch: _NonFiniteWatch) -> None:
        step, terms = watch.report()
        err = NonFiniteLossError(step, terms, self.last_checkpoint, self.dist.rank)
        self.log_record({"event": "nonfinite", "step": step if step >= 0 else self.step, "terms": terms,
                         "checkpoint": None if self.last_checkpoint is None else str(self.last_checkpoint)})
        raise err

    # ------------------------------------------------------------------ evaluation

    def _require_scene(self, what: str) -> SceneDataset:
        if self.dataset is None or not isinstance(self.method, SceneMethod):
            raise ValueError(f"{what} needs a scene method trained on a dataset (Trainer(..., dataset=...))")
        return self.dataset

    def _eval_indices(self, split: str, num_images: Optional[int]) -> List[int]:
        n = len(self._require_scene("evaluation").split(split))
        if num_images is None or num_images >= n:
            return list(range(n))
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        return sorted({int(round(x)) for x in np.linspace(0, n - 1, num_images)})

    def _evaluate_views(
        self, split: str, indices: List[int], render_dir: Optional[Path] = None
    ) -> Dict[str, Any]:
        """:func:`~langfield.training.evaluation.evaluate_views` in eval mode, isolated from the training RNG."""
        fork_devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork_devices), evaluation_mode(self.method):
            result = evaluate_views(
                self.method, self.dataset, split, indices, chunk=self.config.eval_chunk, render_dir=render_dir
            )
        return {"step": self.step, **result}

    def evaluate(
        self, split: str = "test", *, num_images: Optional[int] = None, write_renders: bool = False
    ) -> Dict[str, Any]:
        """Mean PSNR/SSIM over ``split`` (all views, or ``num_images`` evenly spaced ones).

        Renders with :func:`~langfield.training.evaluation.evaluate_views` over the dataset's eval
        background (white for "random"). Writes ``output_dir/eval_<split>.json`` (per-image values)
        and a ``metrics.jsonl`` record; with ``write_renders`` also ``output_dir/renders/<split>/``
        (``<name>.png``, ``<name>_depth.png``, ``<name>_compare.png``). Rank 0 only: other ranks
        return ``{}`` at once.

        Returns:
            ``{"step", "split", "num_images", "psnr", "ssim", "lpips" (None), "seconds", "render_fps",
            "per_image": [...]}``.
        """
        if not self.is_main:
            return {}
        self._require_scene("Trainer.evaluate")
        if split not in self.dataset.splits:
            raise ValueError(f"dataset {self.dataset.name!r} has no split {split!r}; it has {sorted(self.dataset.splits)}")
        write = self.output_dir is not None
        render_dir = self.output_dir / "renders" / split if (write_renders and write) else None
        result = self._evaluate_views(split, self._eval_indices(split, num_images), render_dir)
        if write:
            atomic_write_json(result, self.output_dir / f"eval_{split}.json")
        self.log_record({"event": split, **{k: v for k, v in result.items() if k != "per_image"}})
        return result
