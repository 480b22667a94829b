"""Distil a 2D teacher into a 3D language field on a trained run (OV-NeRF / LERF / LangSplat).

Pipeline (geometry frozen: the language field is trained *after* colour, as LangSplat and the
"frozen geometry" option of LERF-style pipelines do):

1. **Teacher targets**: dense ``[H, W, E]`` features of every training image from a
   :class:`~langfield.language.teacher.DenseTeacher` (real CLIP or the simulated teacher).
2. **Mask proposals** per training image (SAM when available, else the weight-free fallback).
3. **RSR** (optional, :mod:`langfield.language.rsr`): region-level rectified targets.
4. **Fit** the field: NGP -> a hash-grid feature head rendered with the frozen compositing
   weights, squared error to the unit targets (LERF regresses CLIP embeddings the same way);
   Gaussians -> the scene autoencoder is trained on the targets first, then per-Gaussian codes are
   fitted with L1 to the encoded targets (LangSplat Sec. 3.3-3.4).
5. **CSE** (optional, :mod:`langfield.language.cse`): render the field into every training view,
   correct the targets, train further; ``cse.rounds`` times.

The field and the current targets are checkpointed atomically after every phase under
``run_dir/language/``; an interrupted job resumes after the last finished phase.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from langfield.configs import config_from_dict, config_to_dict
from langfield.data.dataset import ImageSet, SceneDataset
from langfield.fields.semantic import HashFeatureFieldConfig
from langfield.io.atomic import atomic_save_torch
from langfield.language.cse import CSEConfig, cross_view_correction
from langfield.language.fields import (
    GaussianLanguageField,
    NGPLanguageField,
    RayWeights,
    render_view_features,
    view_geometry,
)
from langfield.language.masks import MaskProposalConfig, propose_masks, split_masks_at_depth_edges
from langfield.language.rsr import RSRConfig, region_semantic_ranking
from langfield.language.teacher import DenseTeacher

logger = logging.getLogger(__name__)

__all__ = [
    "LanguageFieldConfig",
    "LanguageFieldTrainer",
    "LANGUAGE_DIR",
    "FIELD_FILE",
    "teacher_features",
    "view_masks",
    "view_image_uint8",
]

LANGUAGE_DIR = "language"
FIELD_FILE = "field.pt"
TARGETS_FILE = "targets.pt"
FORMAT = 1


@dataclass(frozen=True)
class LanguageFieldConfig:
    """How a language field is distilled.

    Attributes:
        use_rsr: apply Region Semantic Ranking to the teacher targets.
        use_cse: run Cross-view Self-enhancement rounds after the first fit.
        rsr, cse: their settings; masks: mask proposals (for RSR and region-level CSE); the
            superpixel fallback defaults are finer than :class:`MaskProposalConfig`'s (small
            segments are fine for RSR, segments that straddle objects are not).
        split_masks_at_depth: cut every proposal where the run's rendered depth jumps
            (:func:`~langfield.language.masks.split_masks_at_depth_edges`); the reconstruction
            knows where surfaces separate even where colours do not.
        depth_edge_threshold: relative depth jump that counts as an edge.
        steps: optimisation steps of the first fit (CSE rounds add ``cse.steps_fraction`` of it).
        seed: seeds the pixel/view sampling and initialisation.
        rays_per_step, lr, top_k, field: NGP head (rays per step, Adam LR, samples kept per ray, sizes).
        normalize_rendered: NGP loss on the unit-normalised render (LERF, Sec. 3.2), so only the
            direction of the embedding is fitted (full-dimensional head only).
        footprint_jitter: NGP training samples are jittered by this many pixel-footprint radii
            (:meth:`~langfield.language.fields.RayWeights.jittered`; 0 disables).
        ngp_latent: the NGP head outputs ``latent_dim`` codes decoded by the scene autoencoder
            (as the Gaussians); ``False``: LERF's full ``E``-dimensional head.
        latent_dim, codes_lr, autoencoder_steps, autoencoder_batch, autoencoder_lr: Gaussian codes
            and the scene autoencoder (LangSplat: ``d = 3``).
    """

    use_rsr: bool = True
    use_cse: bool = True
    rsr: RSRConfig = field(default_factory=RSRConfig)
    cse: CSEConfig = field(default_factory=CSEConfig)
    masks: MaskProposalConfig = field(
        default_factory=lambda: MaskProposalConfig(scale=20.0, min_size=8, merge_threshold=5.0)
    )
    split_masks_at_depth: bool = True
    depth_edge_threshold: float = 0.05
    steps: int = 1000
    seed: int = 0
    rays_per_step: int = 4096
    normalize_rendered: bool = True
    ngp_latent: bool = True
    footprint_jitter: float = 1.0
    lr: float = 1e-2
    top_k: int = 8
    field: HashFeatureFieldConfig = field(default_factory=HashFeatureFieldConfig)
    latent_dim: int = 3
    codes_lr: float = 2.5e-2
    autoencoder_steps: int = 800
    autoencoder_batch: int = 4096
    autoencoder_lr: float = 1e-3

    def __post_init__(self) -> None:
        for name in ("steps", "rays_per_step", "top_k", "latent_dim", "autoencoder_batch"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"LanguageFieldConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.autoencoder_steps < 0:
            raise ValueError(f"LanguageFieldConfig.autoencoder_steps must be >= 0, got {self.autoencoder_steps}")
        for name in ("lr", "codes_lr", "autoencoder_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"LanguageFieldConfig.{name} must be > 0, got {getattr(self, name)}")

    @property
    def variant(self) -> str:
        """``field`` / ``field+rsr`` / ``field+cse`` / ``field+rsr+cse`` (benchmark naming)."""
        return "field" + ("+rsr" if self.use_rsr else "") + ("+cse" if self.use_cse else "")

    @property
    def num_phases(self) -> int:
        return 1 + (self.cse.rounds if self.use_cse else 0)


def view_image_uint8(split: ImageSet, index: int, background: Tensor) -> Tensor:
    """``[H, W, 3]`` uint8 training image ``index`` composited over ``background [3]``."""
    return (split.image_float(index, background) * 255.0 + 0.5).clamp(0, 255).to(torch.uint8)


def _progress_bar(description: str, total: int, enabled: bool):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn(f"[bold blue]{description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"), TimeRemainingColumn(),
    )  # fmt: skip
    bar.add_task(description, total=total, stats="")
    bar.start()
    return bar


def _advance(bar, stats: str = "") -> None:
    if bar is not None:
        bar.update(bar.task_ids[0], advance=1, stats=stats)


def teacher_features(
    teacher: DenseTeacher, split: ImageSet, background: Tensor, split_name: str = "train", progress: bool = True
) -> Tensor:
    """``[V, H, W, E]`` float16 dense teacher features of every image of ``split``."""
    bar = _progress_bar(f"teacher ({teacher.name})", len(split), progress)
    out = None
    try:
        for i in range(len(split)):
            sem = split.semantics[i] if split.semantics is not None else None
            f = teacher.dense_features(view_image_uint8(split, i, background), view_key=f"{split_name}/{i}", semantics=sem)
            if f.shape[:2] != (split.height, split.width):
                raise ValueError(f"teacher {teacher.name} returned {tuple(f.shape)} for a {split.height}x{split.width} image")
            if out is None:
                out = torch.empty(len(split), split.height, split.width, f.shape[-1], dtype=torch.float16)
            out[i] = F.normalize(f.float(), dim=-1).to(torch.float16)
            _advance(bar)
    finally:
        if bar is not None:
            bar.stop()
    return out


def view_masks(split: ImageSet, background: Tensor, config: MaskProposalConfig, progress: bool = True) -> List[Tensor]:
    """``[K_v, H, W]`` bool mask proposals of every image of ``split``."""
    bar = _progress_bar(f"masks ({config.method})", len(split), progress)
    out = []
    try:
        for i in range(len(split)):
            out.append(propose_masks(view_image_uint8(split, i, background), config).masks.cpu())
            _advance(bar)
    finally:
        if bar is not None:
            bar.stop()
    return out


class LanguageFieldTrainer:
    """Trains one language field on a trained run (see module docstring).

    Args:
        method: the trained :class:`~langfield.methods.ngp.NGP` or
            :class:`~langfield.methods.gaussians.Gaussians` (eval mode; never modified).
        dataset: its dataset (training split, backgrounds).
        teacher: the 2D teacher.
        config: :class:`LanguageFieldConfig`.
        output_dir: where ``field.pt`` / ``targets.pt`` go (``None``: keep in memory only).
        progress: rich progress bars.
        teacher_cache: optional precomputed ``(features [V, H, W, E], masks)`` to share between
            variants (benchmarks train several variants on the same teacher output).
    """

    def __init__(
        self, method, dataset: SceneDataset, teacher: DenseTeacher, config: LanguageFieldConfig = LanguageFieldConfig(),
        output_dir: Optional[Path] = None, progress: bool = True,
        teacher_cache: Optional[Tuple[Tensor, List[Tensor]]] = None,
    ) -> None:  # fmt: skip
        self.method, self.dataset, self.teacher, self.config = method, dataset, teacher, config
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.progress = progress
        self.device = next(method.parameters()).device
        self.split = dataset.split("train")
        self.background = dataset.eval_background()
        kind = "gaussians" if hasattr(method, "cloud") else "ngp"
        if kind == "ngp" and not hasattr(method, "sample_weights"):
            raise TypeError(
                f"language fields need an 'ngp' or 'gaussians' run; {type(method).__name__} cannot share its weights"
            )
        self.kind = kind
        self.generator = torch.Generator().manual_seed(config.seed)
        # Teacher features and masks are computed on first use: a resumed job whose phases are
        # all done never pays for them.
        self._teacher_cache = teacher_cache
        self._raw: Optional[Tensor] = None
        self._masks: Optional[List[Tensor]] = None
        self.embedding_dim = int(teacher_cache[0].shape[-1]) if teacher_cache is not None else int(teacher.embedding_dim)
        self.targets: Optional[Tensor] = None
        self.phase_done = -1
        self.history: List[Dict[str, Any]] = []
        self._geometry: Optional[List[Any]] = None
        torch.manual_seed(config.seed)
        if kind == "ngp":
            latent = config.latent_dim if config.ngp_latent else None
            self.field = NGPLanguageField(method.aabb.detach().cpu(), self.embedding_dim, config.field, latent).to(self.device)
        else:
            n = method.cloud.num_gaussians
            self.field = GaussianLanguageField(
                n, self.embedding_dim, config.latent_dim, tile_size=method.config.splat.tile_size,
                backend=method.config.splat.backend,
            ).to(self.device)  # fmt: skip

    @property
    def raw(self) -> Tensor:
        """``[V, H, W, E]`` float16 teacher features of the training views."""
        if self._raw is None:
            if self._teacher_cache is not None:
                self._raw = self._teacher_cache[0]
            else:
                self._raw = teacher_features(self.teacher, self.split, self.background, progress=self.progress)
        return self._raw

    @property
    def masks(self) -> List[Tensor]:
        """``[K_v, H, W]`` mask proposals of every training view (split at depth edges when enabled)."""
        if self._masks is None:
            if self._teacher_cache is not None:
                masks = self._teacher_cache[1]
            else:
                masks = view_masks(self.split, self.background, self.config.masks, progress=self.progress)
            if self.config.split_masks_at_depth:
                masks = self._split_masks_at_depth(masks)
            self._masks = masks
        return self._masks

    @property
    def _latent(self) -> bool:
        """The field stores codes decoded by a scene autoencoder (Gaussians; NGP with ``ngp_latent``)."""
        return getattr(self.field, "autoencoder", None) is not None

    # ------------------------------------------------------------------ geometry and targets
    def _split_masks_at_depth(self, masks: List[Tensor]) -> List[Tensor]:
        from langfield.training.render import render_camera

        out = []
        cams = self.split.cameras
        for v, m in enumerate(masks):
            r = render_camera(self.method, cams, v, self.dataset.near, self.dataset.far, self.background, output_device="cpu")
            out.append(split_masks_at_depth_edges(m, r.depth, r.accumulation, self.config.depth_edge_threshold))
        return out

    def geometry(self) -> List[Any]:
        """Frozen per-view geometry: :class:`RayWeights` (NGP) or :class:`SplatView` (Gaussians)."""
        if self._geometry is None:
            cams = self.split.cameras
            self._geometry = [view_geometry(self.method, cams, i, self.config.top_k) for i in range(len(cams))]
        return self._geometry

    def initial_targets(self) -> Tensor:
        """Teacher features, rectified by RSR when enabled: ``[V, H, W, E]`` float16."""
        if not self.config.use_rsr:
            return self.raw.clone()
        out = torch.empty_like(self.raw)
        for v in range(len(self.raw)):
            out[v] = region_semantic_ranking(self.raw[v].float(), self.masks[v], self.config.rsr).features.to(out.dtype)
        return out

    # ------------------------------------------------------------------ rendering
    def render_view(self, geometry: Any, height: Optional[int] = None, width: Optional[int] = None) -> Tensor:
        """``[H, W, E]`` unit features of one frozen view (no gradients). ``height``/``width``
        default to the training images' (NGP geometry is a flat ray list)."""
        return render_view_features(self.field, geometry, height or self.split.height, width or self.split.width)

    # ------------------------------------------------------------------ fitting
    def _fit_autoencoder(self) -> None:
        cfg, ae = self.config, self.field.autoencoder
        flat = self.targets.reshape(-1, self.embedding_dim)
        opt = torch.optim.Adam(ae.parameters(), lr=cfg.autoencoder_lr)
        bar = _progress_bar("autoencoder", cfg.autoencoder_steps, self.progress)
        try:
            for step in range(cfg.autoencoder_steps):
                idx = torch.randint(len(flat), (cfg.autoencoder_batch,), generator=self.generator)
                loss, _ = ae.loss(flat[idx].float().to(self.device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                _advance(bar, f"loss {loss.item():.4f}" if step % 50 == 0 else "")
        finally:
            if bar is not None:
                bar.stop()
        self._encode_targets()
        # Start every code at its Gaussian's most likely latent: the mean target code would be
        # better still, but zero + the learned background is what LangSplat does.

    def _encode_targets(self) -> None:
        ae = self.field.autoencoder
        with torch.no_grad():
            self.latent_targets = torch.cat(
                [ae.encode(t.float().to(self.device)).cpu() for t in self.targets.reshape(-1, self.embedding_dim).split(65536)]
            ).reshape(*self.targets.shape[:3], -1)

    def fit(self, steps: int, description: str) -> Dict[str, float]:
        """Optimise the field on the current targets for ``steps`` steps; returns loss stats."""
        cfg = self.config
        geometry = self.geometry()
        if self.kind == "ngp":
            opt = torch.optim.Adam(self.field.param_groups(cfg.lr), betas=(0.9, 0.99), eps=1e-15)
            latent = self.field.autoencoder is not None
            flat_targets = (self.latent_targets if latent else self.targets).reshape(-1, self.field.background.shape[0])
            all_rays = RayWeights.cat(geometry)
        else:
            opt = torch.optim.Adam([self.field.codes, self.field.background_code], lr=cfg.codes_lr, eps=1e-15)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 ** (s / max(steps, 1)))
        bar = _progress_bar(description, steps, self.progress)
        losses = []
        t0 = time.perf_counter()
        try:
            for step in range(steps):
                if self.kind == "ngp" and self.field.autoencoder is not None:
                    idx = torch.randint(len(flat_targets), (cfg.rays_per_step,), generator=self.generator)
                    batch = all_rays.select(idx).jittered(self.generator, cfg.footprint_jitter).to(self.device)
                    pred = self.field.render_codes(batch)
                    loss = (pred - flat_targets[idx].to(self.device)).abs().mean()
                elif self.kind == "ngp":
                    idx = torch.randint(len(flat_targets), (cfg.rays_per_step,), generator=self.generator)
                    batch = all_rays.select(idx).jittered(self.generator, cfg.footprint_jitter).to(self.device)
                    pred = self.field.render(batch)
                    tgt = flat_targets[idx].float().to(self.device)
                    if cfg.normalize_rendered:  # LERF normalises the rendered embedding before the loss
                        pred = F.normalize(pred, dim=-1)
                    loss = ((pred - tgt) ** 2).sum(-1).mean()
                else:
                    v = int(torch.randint(len(geometry), (1,), generator=self.generator))
                    pred = self.field.render_codes(geometry[v])
                    loss = (pred - self.latent_targets[v].to(self.device)).abs().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                _advance(bar, f"loss {losses[-1]:.4f}" if step % 25 == 0 else "")
        finally:
            if bar is not None:
                bar.stop()
        tail = losses[-max(1, len(losses) // 10) :]
        return {"steps": steps, "loss_last": sum(tail) / len(tail), "seconds": time.perf_counter() - t0}

    def cse_round(self) -> float:
        """Render every training view and correct its targets; returns the share of replaced pixels."""
        replaced = 0
        total = 0
        for v, geom in enumerate(self.geometry()):
            rendered = self.render_view(geom)
            corr = cross_view_correction(self.targets[v].float(), rendered, self.masks[v], self.config.cse)
            self.targets[v] = corr.features.to(self.targets.dtype)
            replaced += int(corr.replaced.sum())
            total += corr.replaced.numel()
        if self._latent:
            self._encode_targets()
        return replaced / max(total, 1)

    # ------------------------------------------------------------------ the whole job
    def run(self, on_phase_end: Optional[Callable[["LanguageFieldTrainer", int], None]] = None) -> Dict[str, Any]:
        """All phases (resuming after the last checkpointed one); returns a summary dict.

        ``on_phase_end(trainer, phase)`` is called after every finished phase (phase 0 = the
        first fit; ``r >= 1`` = CSE round ``r``), e.g. to score ``field+rsr`` before CSE."""
        cfg = self.config
        if self._try_resume():
            logger.info("language field: resuming after phase %d", self.phase_done)
        if self.phase_done < 0:
            self.targets = self.initial_targets()
            if self._latent and cfg.autoencoder_steps > 0:
                self._fit_autoencoder()
            elif self._latent:
                self._encode_targets()
            stats = self.fit(cfg.steps, f"{self.kind} {cfg.variant}: fit")
            self.history.append({"phase": 0, **stats})
            self.phase_done = 0
            self._save()
            if on_phase_end is not None:
                on_phase_end(self, 0)
        while self.phase_done < cfg.num_phases - 1:
            r = self.phase_done + 1
            share = self.cse_round()
            stats = self.fit(max(1, int(cfg.steps * cfg.cse.steps_fraction)), f"{self.kind} {cfg.variant}: CSE round {r}")
            self.history.append({"phase": r, "replaced": share, **stats})
            self.phase_done = r
            self._save()
            if on_phase_end is not None:
                on_phase_end(self, r)
        return {"kind": self.kind, "variant": cfg.variant, "phases": self.history}

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> Dict[str, Any]:
        """Everything needed to rebuild the field for queries (see :func:`load_language_field`)."""
        return {
            "format": FORMAT,
            "kind": self.kind,
            "phase": self.phase_done,
            "config": config_to_dict(self.config),
            "teacher": self.teacher.spec(),
            "embedding_dim": self.embedding_dim,
            "latent_dim": self.config.latent_dim if self._latent else None,
            "num_gaussians": self.field.num_gaussians if self.kind == "gaussians" else 0,
            "field": {k: v.detach().cpu() for k, v in self.field.state_dict().items()},
            "history": self.history,
        }

    def _save(self) -> None:
        if self.output_dir is None:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        # Targets first: a crash between the two files leaves a field that is one phase behind
        # its targets, and resume then redoes that phase from the older field's checkpoint.
        atomic_save_torch({"phase": self.phase_done, "targets": self.targets}, self.output_dir / TARGETS_FILE)
        atomic_save_torch(self.state(), self.output_dir / FIELD_FILE)

    def _try_resume(self) -> bool:
        if self.output_dir is None or not (self.output_dir / FIELD_FILE).is_file():
            return False
        state = torch.load(self.output_dir / FIELD_FILE, map_location="cpu", weights_only=True)
        if state.get("config") != config_to_dict(self.config) or state.get("teacher") != self.teacher.spec():
            logger.warning("%s was trained with another config or teacher; starting over", self.output_dir / FIELD_FILE)
            return False
        tpath = self.output_dir / TARGETS_FILE
        targets = torch.load(tpath, map_location="cpu", weights_only=True) if tpath.is_file() else None
        if targets is None or targets.get("phase") != state["phase"]:
            logger.warning("%s does not match the field checkpoint; starting over", tpath)
            return False
        self.field.load_state_dict(state["field"])
        self.targets = targets["targets"]
        self.phase_done = int(state["phase"])
        self.history = list(state.get("history", []))
        if self._latent:
            self._encode_targets()
        return True


def language_config_from_dict(data: Dict[str, Any], where: str = "language config") -> LanguageFieldConfig:
    return config_from_dict(LanguageFieldConfig, data, where)


def build_language_field(state: Dict[str, Any], method, where: str = FIELD_FILE):
    """Rebuild the field module saved by :meth:`LanguageFieldTrainer.state` for ``method``."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{where} is not a langfield language-field checkpoint (format {FORMAT})")
    cfg = language_config_from_dict(state["config"], f"{where}: config")
    kind, e = state["kind"], int(state["embedding_dim"])
    if kind == "ngp":
        latent = state.get("latent_dim")
        field_ = NGPLanguageField(method.aabb.detach().cpu(), e, cfg.field, None if latent is None else int(latent))
    elif kind == "gaussians":
        n = int(state["num_gaussians"])
        if not hasattr(method, "cloud") or method.cloud.num_gaussians != n:
            raise ValueError(f"{where} was trained on {n} Gaussians; this run's cloud differs (retrain the language field)")
        field_ = GaussianLanguageField(
            n, e, int(state["latent_dim"]), tile_size=method.config.splat.tile_size, backend=method.config.splat.backend
        )
    else:
        raise ValueError(f"{where}: unknown language field kind {kind!r}")
    field_.load_state_dict(state["field"])
    return field_.to(next(method.parameters()).device).eval(), cfg
