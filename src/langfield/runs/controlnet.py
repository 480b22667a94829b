"""Control on the toy world: exact condition maps, fidelity instruments, and training an adapter for any condition.

Three things, on top of the toy-world models of :mod:`langfield.runs.toyworld` (issue 14, E3):

**Conditions from the exact renders** (:func:`read_truth`, :func:`condition_images`; :func:`scene_truth`
renders one scene from any cameras the same way). Every stored
toy-world image carries its exact depth, world normals and semantic labels (the data phase's shards,
:mod:`langfield.data.toyworld.dataset`), so each condition is computed from the truth, not estimated:

================  ========================================================================  =========
condition         image ``[N, 3, H, W]`` uint8                                               kind
================  ========================================================================  =========
``depth``         :func:`~langfield.generation.conditions.depth_condition` of the rendered  exact
                  ray depth (inverse depth, per-image range, sky black)
``normals``       :func:`~langfield.generation.conditions.normal_condition` of the rendered  exact
                  normals rotated into the OpenCV camera frame (``R_c2w^T n``), sky black
``segmentation``  :func:`~langfield.generation.conditions.segmentation_condition` of the     exact
                  semantic labels (sky, floor, one class per shape; VOC palette)
``edges``         :func:`~langfield.generation.conditions.canny` of the real render         classical
                  (``EDGE_CANNY``), the ControlNet paper's Canny condition
================  ========================================================================  =========

Conditions are cheap to compute (milliseconds per thousand 32-px images) and are not cached; what
they are computed from is the data phase, whose key they inherit.

**Fidelity instruments** (:func:`train_fidelity`): a segmenter and a depth regressor
(:mod:`langfield.generation.fidelity`) trained on the *real* training renders only, measured on the
held-out renders (mIoU over every class and over the shapes alone, ``OBJECT_CLASSES``; ``1 - AbsRel``)
beside image-blind floors (the per-pixel majority class / median depth of the training set).
Segmentation fidelity is the shapes' mIoU: sky and floor are where any plausible image has them.
A cached phase ``fidelity-<key>`` in the toy-world cache root, keyed by :class:`FidelityConfig`
and the data phase's key (:func:`fidelity_payload`); built resumably under the phase lock like
every toy-world phase. Edge fidelity needs no weights: :func:`~langfield.eval.condition_metrics.edge_f1`
(1 px) of Canny of the generated image against the condition's Canny map.

**Training a control adapter for a condition** (:func:`train_control`, ``langfield controlnet-train``):
ControlNet, ControlNet-XS or ControlNeXt (:mod:`langfield.generation.control`) trained with
:class:`~langfield.methods.diffusion.controlnet.ControlNetMethod` on the frozen toy UNet, the VAE
phase's training latents, the text phase's caption embeddings (50 % empty prompts) and the
conditions above, through the one Trainer. Writes ``OUT/adapter/`` (loadable with
:func:`load_trained_control`), ``OUT/control_train.json`` and, with ``preview``, ``OUT/preview.png``
(rows: real held-out renders, their conditions, images generated from those conditions); the run
checkpoints into ``OUT/train/`` every ``CHECKPOINT_EVERY`` steps, and the same command on the same
folder resumes an interrupted run exactly (a finished one returns at once)::

    langfield controlnet-train --base ~/.cache/langfield/toyworld/unet-<key> --condition normals \\
        --adapter controlnet --steps 2000 --out outputs/control_normals
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from langfield._checks import InputError, check_choice, check_fields, check_int_range
from langfield.configs import check_field_types, config_to_dict
from langfield.data.loading import read_json
from langfield.data.samplers import IndexSampler
from langfield.data.toyworld import ToyWorldConfig, read_toyworld
from langfield.data.toyworld.captions import descriptive_caption
from langfield.data.toyworld.render import render_toyworld
from langfield.data.toyworld.scene import SEMANTIC_LABELS, ToyScene
from langfield.eval.condition_metrics import depth_abs_rel, edge_f1
from langfield.eval.semantic_metrics import semantic_scores
from langfield.generation.conditions import canny, default_palette, depth_condition, normal_condition, segmentation_condition
from langfield.generation.control import (
    CONTROL_FILE,
    ControlAdapter,
    ControlNeXtConfig,
    ControlNetAdapter,
    XSControlAdapter,
    build_controlnet,
    build_controlnet_xs,
    build_controlnext,
    generate_controlled,
    load_control_adapter,
)
from langfield.generation.fidelity import PixelNet, depth_fidelity, mean_iou_over, segmentation_fidelity
from langfield.generation.loading import GenerationPipeline, build_pipeline, load_pipeline
from langfield.io.atomic import atomic_save_torch, atomic_write_json
from langfield.io.images import image_grid, write_image
from langfield.methods.diffusion import ControlNetMethod, ControlTrainingConfig, PixelInstrumentObjective
from langfield.runs.controlnet_config import (
    ADAPTERS,
    CONDITIONS,
    MEASURED_CONDITIONS,
    ControlTrainConfig,
    architecture_fields,
    config_identity,
    identity_field,
)
from langfield.runs.toyworld import (
    CACHE_VERSION,
    ToyWorldModels,
    load_text_embeddings,
    phase_keys,
    read_phase_record,
    run_cached_phase,
    train_phase,
)
from langfield.training.callbacks import TrainerCallback
from langfield.training.checkpoint import CheckpointManager
from langfield.types import Cameras

__all__ = [
    "ADAPTERS",
    "CONDITIONS",
    "ControlSource",
    "ControlTrainConfig",
    "FidelityConfig",
    "FidelityInstruments",
    "MEASURED_CONDITIONS",
    "NUM_SEMANTIC_CLASSES",
    "OBJECT_CLASSES",
    "ToyTruth",
    "build_adapter",
    "condition_images",
    "control_source",
    "controlled_pipeline",
    "edge_maps",
    "fidelity_payload",
    "load_fidelity",
    "load_trained_control",
    "measure_fidelity",
    "read_truth",
    "scene_truth",
    "train_control",
    "train_fidelity",
]

NUM_SEMANTIC_CLASSES = len(SEMANTIC_LABELS)
#: The shape classes (every label but sky and floor): segmentation fidelity is their mIoU. Sky and
#: floor cover most of a 32-px image and lie where any plausible image puts them (sky above the
#: horizon, floor below), so an all-class mIoU rewards an uncontrolled image for them; the shapes'
#: IoU rewards only putting each object where the condition draws it.
OBJECT_CLASSES: Tuple[int, ...] = tuple(i for i, name in enumerate(SEMANTIC_LABELS) if name not in ("sky", "floor"))
#: Canny settings of the edge condition and of edge fidelity (conditions.canny's defaults, luma).
EDGE_CANNY = {"low": 0.1, "high": 0.2, "sigma": 1.0}
#: Pixels a generated edge may be off by and still match (edge_f1's tolerance).
EDGE_TOLERANCE = 1


# ----------------------------------------------------------------------------- exact truth and conditions


@dataclass(frozen=True)
class ToyTruth:
    """Exact renders of ``N`` toy-world images (CPU).

    Attributes:
        rgb: ``[N, 3, H, W]`` uint8; depth: ``[N, H, W]`` float32 ray depth (0 = sky);
        semantic: ``[N, H, W]`` int64 (``SEMANTIC_LABELS``); normals_cam: ``[N, H, W, 3]`` float32
        unit normals in the OpenCV camera frame (0 = sky); captions: descriptive captions.
    """

    rgb: Tensor
    depth: Tensor
    semantic: Tensor
    normals_cam: Tensor
    captions: Tuple[str, ...]

    def __len__(self) -> int:
        return int(self.rgb.shape[0])

    def rows(self, rows: Union[slice, Tensor]) -> "ToyTruth":
        idx = rows if isinstance(rows, slice) else rows.long()
        caps = self.captions[rows] if isinstance(rows, slice) else tuple(self.captions[int(i)] for i in rows)
        return ToyTruth(self.rgb[idx], self.depth[idx], self.semantic[idx], self.normals_cam[idx], caps)


def read_truth(data_dir: Union[str, os.PathLike], split: str, *, limit: Optional[int] = None) -> ToyTruth:
    """The exact renders of ``<data_dir>/<split>`` (a toy-world data phase folder), the first ``limit`` images."""
    check_choice(split, "split", ("train", "heldout"))
    data = read_toyworld(Path(data_dir) / split)
    n = len(data) if limit is None else min(len(data), check_int_range(limit, "limit", lo=1))
    return ToyTruth(
        rgb=data.rgb[:n].permute(0, 3, 1, 2).contiguous(),
        depth=data.depth[:n].float(),
        semantic=data.semantic[:n].long(),
        normals_cam=_camera_normals(data.cameras.c2w[:n], data.normals[:n]),
        captions=tuple(r["descriptive_caption"] for r in data.records[:n]),
    )


def scene_truth(scene: ToyScene, cameras: Cameras, world: ToyWorldConfig = ToyWorldConfig()) -> ToyTruth:
    """The exact renders of one toy-world ``scene`` seen by ``cameras`` (their size), as :func:`read_truth` reads a
    data phase: colour rounded to uint8, depth and normals through float16 as the data phase stores them, each
    view's descriptive caption."""
    if not isinstance(scene, ToyScene):
        raise InputError(f"scene: expected a ToyScene, got {type(scene).__name__}")
    render = render_toyworld([scene], cameras, world)
    return ToyTruth(
        rgb=_to_uint8_chw(render.rgb.numpy()),
        depth=render.depth.half().float(),
        semantic=render.semantic.long(),
        normals_cam=_camera_normals(cameras.c2w, render.normals.half()),
        captions=tuple(descriptive_caption(scene, cameras[i : i + 1]) for i in range(len(cameras))),
    )


def _camera_normals(c2w: Tensor, normals: Tensor) -> Tensor:
    """World normals ``[N, H, W, 3]`` of cameras ``c2w [N, 3|4, 4]`` in each camera's (OpenCV) frame: ``R^T n``."""
    rot = c2w[:, :3, :3].float()  # world <- camera
    return torch.einsum("nji,nhwj->nhwi", rot, normals.float())


def _to_uint8_chw(x: np.ndarray) -> Tensor:
    return torch.from_numpy(np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)).permute(0, 3, 1, 2).contiguous()


def edge_maps(images: Tensor) -> Tensor:
    """``[N, H, W]`` bool Canny edges (``EDGE_CANNY``) of ``images`` ``[N, 3, H, W]`` (uint8 or float in ``[0, 1]``)."""
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"images: expected [N, 3, H, W], got {getattr(images, 'shape', images)}")
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float().clamp(0.0, 1.0)
    out = canny(x.permute(0, 2, 3, 1).numpy(), **EDGE_CANNY)
    return torch.from_numpy(np.asarray(out)[..., 0] > 0.5)


def condition_images(truth: ToyTruth, condition: str) -> Tensor:
    """The ``condition`` image of every image of ``truth``: ``[N, 3, H, W]`` uint8 (module docstring)."""
    check_choice(condition, "condition", CONDITIONS)
    if condition == "depth":
        out = depth_condition(truth.depth.numpy())
    elif condition == "normals":
        out = normal_condition(truth.normals_cam.numpy(), mask=(truth.depth > 0).numpy(), frame="opencv")
    elif condition == "segmentation":
        out = segmentation_condition(truth.semantic.numpy(), palette=default_palette(NUM_SEMANTIC_CLASSES))
    else:
        return edge_maps(truth.rgb)[:, None].expand(-1, 3, -1, -1).to(torch.uint8) * 255
    return _to_uint8_chw(np.asarray(out))


# ----------------------------------------------------------------------------- fidelity instruments


@dataclass(frozen=True)
class FidelityConfig:
    """The segmenter and depth regressor (:class:`~langfield.generation.fidelity.PixelNet`) and their training.

    Attributes:
        width: first-stage channels of both nets.
        steps, batch_size, lr: training of each net (AdamW, cosine to ``lr / 20``).
        max_train_images: real training renders used (the first ones of the split).
        blur: training renders blurred by a Gaussian of std uniform in ``[0, blur]`` px per image
            (:class:`~langfield.methods.diffusion.PixelInstrumentObjective`): the instruments then
            read the layout of an image decoded from latents, not its softness (0 = sharp only).
        seed: initial weights and batch order.

    Cost (measured 2026-12-03 on the shared 2-core VM, one thread): 0.56 s per step of 64 images for
    the width-16 net (119 k parameters) at 32 px, so the defaults (1000 steps of 32, two nets) take
    about 10 minutes, once (cached).
    """

    width: int = 16
    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-3
    max_train_images: int = 20_000
    blur: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_field_types(self)
        check_fields(self, "FidelityConfig", int_min_1=("width", "steps", "batch_size", "max_train_images"), positive=("lr",),
                     non_negative=("blur",))  # fmt: skip
        if self.blur > 8.0:
            raise InputError(f"FidelityConfig.blur: at most 8 px (a 32-px image blurred further is a flat colour), got {self.blur}")
        check_int_range(self.seed, "FidelityConfig.seed", lo=0)


@dataclass
class FidelityInstruments:
    """The trained segmenter and depth regressor (CPU, eval mode), the phase folder and its record."""

    segmenter: PixelNet
    depth: PixelNet
    folder: Path
    record: Dict[str, Any]

    def heldout_scores(self) -> Dict[str, Any]:
        """``{"segmentation_miou", "segmentation_object_miou", "depth_fidelity", "floor": {the same}}``
        on the held-out renders (``segmentation_miou``: all classes; ``segmentation_object_miou``:
        ``OBJECT_CLASSES``, what :func:`measure_fidelity` reports)."""
        return dict(self.record["heldout"])


#: Bumped when the fidelity phase's record gains or changes a score (2: the object-class mIoU).
FIDELITY_RECORD_VERSION = 2


def fidelity_payload(models: ToyWorldModels, config: FidelityConfig) -> Dict[str, Any]:
    """What the fidelity phase's cache key is the sha256 of: its configuration and the data phase's key."""
    return {"phase": "fidelity", "version": CACHE_VERSION, "record": FIDELITY_RECORD_VERSION, "config": config_to_dict(config),
            "inputs": {"data": phase_keys(models.config)["data"]}}  # fmt: skip


def _majority_floor(train: ToyTruth, heldout: ToyTruth) -> Dict[str, float]:
    """Image-blind predictions from the training set: the per-pixel majority class and median depth."""
    counts = torch.nn.functional.one_hot(train.semantic, NUM_SEMANTIC_CLASSES).sum(0)  # [H, W, K]
    majority = counts.argmax(-1).expand_as(heldout.semantic)
    depth = train.depth.median(dim=0).values.clamp_min(1e-3).expand_as(heldout.depth)
    scores = semantic_scores(majority, heldout.semantic, NUM_SEMANTIC_CLASSES)
    return {"segmentation_miou": float(scores.miou), "segmentation_object_miou": mean_iou_over(scores, OBJECT_CLASSES),
            "depth_fidelity": 1.0 - depth_abs_rel(depth.contiguous(), heldout.depth)}  # fmt: skip


def train_fidelity(
    models: ToyWorldModels,
    config: FidelityConfig = FidelityConfig(),
    *,
    device: Optional[str] = None,
    progress: bool = False,
    log: Optional[Callable[[str], None]] = None,
) -> FidelityInstruments:
    """Train (or take from the cache) the segmenter and the depth regressor on real renders (module docstring)."""
    if not isinstance(config, FidelityConfig):
        raise InputError(f"config: expected a FidelityConfig, got {type(config).__name__}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    data_dir = models.phases["data"]

    def build(work: Path) -> Dict[str, Any]:
        train = read_truth(data_dir, "train", limit=config.max_train_images)
        heldout = read_truth(data_dir, "heldout")
        info: Dict[str, Any] = {}
        nets = {}
        for task, out, target in (("segmentation", NUM_SEMANTIC_CLASSES, train.semantic), ("depth", 1, train.depth)):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                net = PixelNet(out, width=config.width)
            objective = PixelInstrumentObjective(net, train.rgb, target, task=task, lr=config.lr, blur=config.blur)
            sampler = IndexSampler(len(train), config.batch_size, seed=config.seed)
            info[task] = train_phase(objective, sampler, steps=config.steps, work=work / task, name=f"fidelity_{task}",
                                     seed=config.seed, device=device, progress=progress)  # fmt: skip
            nets[task] = net.cpu().eval()
            atomic_save_torch({"out_channels": out, "width": config.width, "state_dict": net.state_dict()}, work / f"{task}.pt")
        scores = {
            "segmentation_miou": segmentation_fidelity(nets["segmentation"], heldout.rgb, heldout.semantic),
            "segmentation_object_miou": segmentation_fidelity(nets["segmentation"], heldout.rgb, heldout.semantic, classes=OBJECT_CLASSES),
            "depth_fidelity": depth_fidelity(nets["depth"], heldout.rgb, heldout.depth),
            "num_heldout": len(heldout),
        }
        floors = _majority_floor(train, heldout)
        return {"training": info, "heldout": {**scores, "floor": floors}, "num_train": len(train),
                "num_params": {t: int(sum(p.numel() for p in n.parameters())) for t, n in nets.items()}}  # fmt: skip

    folder, _ = run_cached_phase(models.root, "fidelity", fidelity_payload(models, config), build, log=log)
    return load_fidelity(folder)


def load_fidelity(folder: Union[str, os.PathLike]) -> FidelityInstruments:
    """The instruments of a finished fidelity phase folder."""
    folder = Path(folder)
    nets = {}
    for task in ("segmentation", "depth"):
        path = folder / f"{task}.pt"
        if not path.is_file():
            raise InputError(f"{path}: missing (not a finished fidelity phase)")
        data = torch.load(path, map_location="cpu", weights_only=True)
        net = PixelNet(int(data["out_channels"]), width=int(data["width"]))
        net.load_state_dict(data["state_dict"])
        nets[task] = net.eval()
    return FidelityInstruments(nets["segmentation"], nets["depth"], folder, read_phase_record(folder))


def measure_fidelity(instruments: FidelityInstruments, condition: str, images: Tensor, truth: ToyTruth, *,
                     all_classes: bool = False) -> float:  # fmt: skip
    """Fidelity of ``images`` (``[N, H, W, 3]`` float in ``[0, 1]``, generated from ``truth``'s
    conditions) to the ``condition``: segmentation mIoU over ``OBJECT_CLASSES`` (over every class
    with ``all_classes``), ``1 - AbsRel`` (depth), edge F1 (edges)."""
    check_choice(condition, "condition", MEASURED_CONDITIONS)
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] != len(truth):
        raise InputError(f"images: expected [{len(truth)}, H, W, 3], got {getattr(images, 'shape', images)}")
    chw = images.permute(0, 3, 1, 2).float().clamp(0.0, 1.0).contiguous()
    if condition == "segmentation":
        classes = None if all_classes else OBJECT_CLASSES
        return segmentation_fidelity(instruments.segmenter, chw, truth.semantic, num_classes=NUM_SEMANTIC_CLASSES, classes=classes)
    if condition == "depth":
        return depth_fidelity(instruments.depth, chw, truth.depth)
    return edge_f1(edge_maps(chw), edge_maps(truth.rgb), tolerance=EDGE_TOLERANCE).f1


# ----------------------------------------------------------------------------- training an adapter


@dataclass(frozen=True)
class ControlSource:
    """The toy-world folders an adapter trains from: the base pipeline, the VAE phase (training
    latents), the text phase (caption embeddings) and the data phase (exact renders)."""

    pipeline_dir: Path
    vae_dir: Path
    text_dir: Path
    data_dir: Path


def _phase_dir(root: Path, name: str, key: str, where: str) -> Path:
    folder = root / f"{name}-{key[:16]}"
    if not (folder / "phase.json").is_file():
        raise InputError(f"{where}: its {name} phase {folder} is missing or unfinished (train the toy world again)")
    return folder


def control_source(base: Union[str, os.PathLike, ToyWorldModels]) -> ControlSource:
    """Resolve ``base``: a :class:`ToyWorldModels`, a toy-world UNet phase folder (``unet-<key>``) or its ``pipeline`` subfolder."""
    if isinstance(base, ToyWorldModels):
        p = base.phases
        return ControlSource(base.pipelines["unet"], p["vae"], p["text"], p["data"])
    path = Path(os.path.expanduser(os.fspath(base)))
    if path.name == "pipeline" and (path.parent / "phase.json").is_file():
        path = path.parent
    record_file = path / "phase.json"
    if not record_file.is_file() or not (path / "pipeline").is_dir():
        raise InputError(f"base: {path} is not a toy-world UNet phase folder (expected phase.json and pipeline/ inside; "
                         f"'langfield toyworld train' prints where they are)")  # fmt: skip
    record = read_phase_record(path)
    inputs = record.get("payload", {}).get("inputs", {})
    if record.get("phase") != "unet" or not {"vae", "text"} <= set(inputs):
        raise InputError(f"base: {path} is a {record.get('phase')!r} phase; give the UNet phase (unet-<key>)")
    root = path.parent
    vae = _phase_dir(root, "vae", inputs["vae"], "base")
    text = _phase_dir(root, "text", inputs["text"], "base")
    data = _phase_dir(root, "data", read_phase_record(vae)["payload"]["inputs"]["data"], "base")
    return ControlSource(path / "pipeline", vae, text, data)


#: Steps between the checkpoints of a :func:`train_control` run that writes a folder.
CHECKPOINT_EVERY = 500


def build_adapter(kind: str, unet: Any, *, vae_factor: int, seed: int = 0, xs_size_ratio: float = 0.25,
                  controlnext: ControlNeXtConfig = ControlNeXtConfig()) -> ControlAdapter:  # fmt: skip
    """A fresh adapter of ``kind`` on ``unet`` (ControlNeXt gets its own copy: it trains a subset of the base;
    ``xs_size_ratio`` as in :class:`ControlTrainConfig`; ``controlnext`` the architecture of a ControlNeXt)."""
    check_choice(kind, "adapter", ADAPTERS)
    if kind == "controlnet":
        return ControlNetAdapter(unet, build_controlnet(unet, vae_factor=vae_factor, seed=seed), vae_factor=vae_factor)
    if kind == "controlnet_xs":
        return XSControlAdapter(build_controlnet_xs(unet, xs_size_ratio, vae_factor=vae_factor, seed=seed), vae_factor=vae_factor)
    return build_controlnext(copy.deepcopy(unet), vae_factor=vae_factor, seed=seed, config=controlnext)


def controlled_pipeline(pipe: GenerationPipeline, adapter: ControlAdapter) -> GenerationPipeline:
    """The pipeline to sample ``adapter`` with: ``pipe`` itself, or for ControlNeXt the same VAE,
    scheduler and text conditioning around the adapter's own (partly trained) UNet."""
    if adapter.kind != "controlnext":
        return pipe
    return build_pipeline(vae=pipe.pipeline.vae, unet=adapter.base, scheduler=pipe.pipeline.scheduler, text=pipe.text)


def train_control(
    base: Union[str, os.PathLike, ToyWorldModels, ControlSource],
    config: ControlTrainConfig = ControlTrainConfig(),
    out_dir: Union[str, os.PathLike, None] = None,
    *,
    device: str = "cpu",
    progress: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
    pipeline: Optional[GenerationPipeline] = None,
    preview: int = 0,
    checkpoint_every: int = CHECKPOINT_EVERY,
) -> Tuple[ControlAdapter, Dict[str, Any]]:
    """Train an adapter of ``config.adapter`` for ``config.condition`` on the frozen toy UNet (module docstring).

    With ``out_dir`` the run is resumable: the Trainer checkpoints into ``out_dir/train/checkpoints/``
    every ``checkpoint_every`` steps (and at the end), and a call on a folder that holds a checkpoint
    of the same configuration and base continues exactly from it (parameters, AdamW moments, the
    batch order and every RNG: the result is the one an uninterrupted run gives). A folder holding
    another configuration's run is refused, naming the fields that differ.

    Args:
        base: the toy world's models, a UNet phase folder, or a :class:`ControlSource`.
        out_dir: where ``adapter/``, ``control_train.json`` (and ``preview.png``) go; ``None``: nothing written.
        pipeline: the base pipeline if already loaded (else loaded from the source).
        preview: held-out images to sample into ``preview.png`` (0 = none; needs ``out_dir``).
        checkpoint_every: steps between checkpoints with ``out_dir`` (0: only at the end).

    Returns:
        ``(adapter, record)``: the trained adapter and what ``control_train.json`` holds
        (trainable parameters, seconds per step, final loss...).
    """
    if not isinstance(config, ControlTrainConfig):
        raise InputError(f"config: expected a ControlTrainConfig, got {type(config).__name__}")
    check_int_range(checkpoint_every, "checkpoint_every", lo=0)
    source = base if isinstance(base, ControlSource) else control_source(base)
    out = None if out_dir is None else Path(out_dir)
    if out is not None:  # before anything is loaded: a folder of another run is refused at once
        _claim_run_dir(out / "train", config, source)
    pipe = pipeline if pipeline is not None else load_pipeline(source.pipeline_dir, device="cpu", dtype=torch.float32)
    if pipe.kind != "sd":
        raise InputError(f"base: the control adapters here need a UNet (SD-style) pipeline, got {pipe.kind!r}")
    factor = pipe.vae_scale_factor
    latents = torch.load(source.vae_dir / "latents.pt", map_location="cpu", weights_only=True)["latents"]
    prompts, empty, caption_ids, _ = load_text_embeddings(source.text_dir)
    n = len(latents) if config.max_images == 0 else min(len(latents), config.max_images)
    truth = read_truth(source.data_dir, "train", limit=n)
    conditions = condition_images(truth, config.condition)
    adapter = build_adapter(config.adapter, pipe.denoiser, vae_factor=factor, seed=config.seed, xs_size_ratio=config.xs_size_ratio,
                            controlnext=config.controlnext_config())
    init = _init_stage(adapter, config, source, pipe, out) if config.init_from else None
    adapter.to(device)
    training = ControlTrainingConfig(lr=config.lr, lr_schedule=config.lr_schedule, warmup=config.warmup,
                                     empty_prompt_rate=config.empty_prompt_rate)
    method = ControlNetMethod(adapter, latents[:n], conditions, prompts, empty, caption_ids=caption_ids[:n], config=training)
    sampler = IndexSampler(n, config.batch_size, seed=config.seed)
    start = time.perf_counter()
    info = train_phase(method, sampler, steps=config.steps, work=out, name=f"{config.adapter}:{config.condition}", seed=config.seed,
                       device=device, progress=progress, checkpoint_every=checkpoint_every, callbacks=callbacks)  # fmt: skip
    seconds = time.perf_counter() - start
    adapter = adapter.cpu().eval()
    record = {
        "condition": config.condition,
        "adapter": config.adapter,
        "config": config_to_dict(config),
        "base": str(source.pipeline_dir),
        "data": str(source.data_dir),
        "num_train": n,
        "steps": info["steps"],
        "resumed_at_step": info["resumed_from_step"],
        # this call's wall clock (a resumed run: since the resume); s_per_step covers every step
        "train_seconds": seconds,
        # the Trainer's own clock: training steps only (callbacks such as evaluations excluded)
        "s_per_step": info["train_seconds"] / max(info["steps"], 1),
        "trainable_params": adapter.num_trainable_parameters(),
        "final_loss": _final_loss(info["last_log"], None if out is None else out / "train" / "metrics.jsonl"),
    }
    if init is not None:  # a second stage: the steps before it are the first stage's
        record["init_from"] = init
        record["total_steps"] = init["total_steps"] + info["steps"]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        adapter.save(out / "adapter")
        if preview:
            record["preview"] = str(_preview(pipe, adapter, source, config.condition, int(preview), out / "preview.png"))
        atomic_write_json(record, out / "control_train.json")
    return adapter, record


#: In a second stage's ``out_dir/train/``: what its record keeps of the first stage, written when the stage starts.
INIT_FROM_FILE = "init_from.json"


def _init_stage(adapter: ControlAdapter, config: ControlTrainConfig, source: ControlSource, pipe: GenerationPipeline,
                out: Optional[Path]) -> Dict[str, Any]:  # fmt: skip
    """A second stage's start: the first stage's weights loaded by :func:`_start_from`, or -- when ``out`` already holds
    a checkpoint of this run, which the Trainer resumes from -- nothing loaded (the checkpoint's weights replace
    whatever the adapter starts with) and the first stage's summary read back from ``out/train/init_from.json``, so a
    resumed stage neither reloads the first stage nor needs its folder any more."""
    train_dir = None if out is None else out / "train"
    saved = None if train_dir is None else train_dir / INIT_FROM_FILE
    if saved is not None and saved.is_file() and CheckpointManager(train_dir / "checkpoints").latest() is not None:
        return _read_run_json(saved)
    init = _start_from(adapter, config, source, pipe)
    if saved is not None:
        atomic_write_json(init, saved)
    return init


def _start_from(adapter: ControlAdapter, config: ControlTrainConfig, source: ControlSource, pipe: GenerationPipeline) -> Dict[str, Any]:
    """Load ``config.init_from``'s trained weights into the freshly built ``adapter`` (the same kind, condition, base and
    architecture, checked field by field; the trained parameters must be the same names and shapes). Returns what the
    record keeps of the first stage."""
    where = "init_from"
    folder = Path(config.init_from)
    try:
        first, _, rec = load_trained_control(folder, pipeline=pipe)
    except InputError as err:
        raise InputError(f"{where}: {err}".replace(f"{where}: out_dir: ", f"{where}: ")) from None
    old = rec.get("config", {})
    now = config_identity(config)
    diff = [f"{k}: {identity_field(old, k)!r} there, {identity_field(now, k)!r} here" for k in architecture_fields(config.adapter)
            if json.loads(json.dumps(identity_field(old, k))) != identity_field(now, k)]
    if Path(rec.get("base", "")).resolve() != Path(source.pipeline_dir).resolve():
        diff.append(f"base: {rec.get('base')} there, {source.pipeline_dir} here")
    if diff:
        raise InputError(f"{where}: {folder} holds an adapter this run cannot start from ({'; '.join(diff)})")
    names = {n: tuple(p.shape) for n, p in adapter.named_parameters() if p.requires_grad}
    theirs = {n: tuple(p.shape) for n, p in first.named_parameters() if p.requires_grad}
    if names != theirs:
        raise InputError(f"{where}: {folder}'s trained parameters differ from this run's ({len(theirs)} tensors there, "
                         f"{len(names)} here)")  # fmt: skip
    adapter.load_state_dict(first.state_dict())
    return {"dir": str(folder.resolve()), "steps": int(rec["steps"]), "total_steps": int(rec.get("total_steps", rec["steps"])),
            "config": old}  # fmt: skip


def _claim_run_dir(train_dir: Path, config: ControlTrainConfig, source: ControlSource) -> None:
    """Write ``train_dir/control_config.json`` (the configuration and base of the run), or check that the one there
    matches (a resumed run must be the same run)."""
    identity = {"config": config_identity(config), "base": str(Path(source.pipeline_dir).resolve())}
    path = train_dir / "control_config.json"
    if path.is_file():
        previous = _read_run_json(path)
        if previous != identity:
            old, now = previous.get("config", {}), identity["config"]
            fields = sorted(k for k in set(old) | set(now) if old.get(k) != now.get(k))
            diff = ", ".join(f"{k}: {identity_field(old, k)!r} there, {identity_field(now, k)!r} now" for k in fields)
            if previous.get("base") != identity["base"]:
                diff = ", ".join(filter(None, [diff, f"base: {previous.get('base')} there, {identity['base']} now"]))
            raise InputError(f"out_dir: {train_dir.parent} holds a run of another configuration ({diff}); give a new folder "
                             f"or remove that one")  # fmt: skip
        return
    train_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(identity, path)


def _read_run_json(path: Path) -> Dict[str, Any]:
    """A JSON object a run folder keeps (:func:`~langfield.data.loading.read_json`), an unreadable one refused naming
    ``out_dir`` and the way out."""
    try:
        return read_json(path)
    except InputError as err:
        raise InputError(f"out_dir: {err}; remove the folder to start afresh") from None


def _final_loss(last: Dict[str, Any], metrics: Optional[Path]) -> float:
    """The last training record's loss; a run resumed at its last step trains nothing, so its loss is the last one
    ``metrics.jsonl`` logged (NaN when neither has one)."""
    if "loss" in last:
        return float(last["loss"])
    if metrics is not None and metrics.is_file():
        for line in reversed(metrics.read_text(encoding="utf-8").splitlines()):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("event") == "train" and isinstance(rec.get("loss"), (int, float)):
                return float(rec["loss"])
    return float("nan")


def _preview(pipe: GenerationPipeline, adapter: ControlAdapter, source: ControlSource, condition: str, num: int, path: Path) -> Path:
    truth = read_truth(source.data_dir, "heldout", limit=num)
    cond = condition_images(truth, condition)
    result = generate_controlled(controlled_pipeline(pipe, adapter), list(truth.captions), cond.float() / 255.0, adapters=adapter,
                                 steps=20, guidance=3.0, seed=0)  # fmt: skip
    rows = torch.cat([truth.rgb.permute(0, 2, 3, 1).float() / 255.0, cond.permute(0, 2, 3, 1).float() / 255.0, result.images])
    write_image(path, image_grid(rows, columns=len(truth)))
    return path


def load_trained_control(out_dir: Union[str, os.PathLike], pipeline: Optional[GenerationPipeline] = None) -> Tuple[ControlAdapter, GenerationPipeline, Dict[str, Any]]:
    """``(adapter, pipeline to sample it with, record)`` of a folder :func:`train_control` wrote."""
    out = Path(out_dir)
    record_file = out / "control_train.json"
    if not record_file.is_file() or not (out / "adapter" / CONTROL_FILE).is_file():
        raise InputError(f"out_dir: {out} holds no trained adapter (expected control_train.json and adapter/{CONTROL_FILE})")
    record = json.loads(record_file.read_text(encoding="utf-8"))
    pipe = pipeline if pipeline is not None else load_pipeline(record["base"], device="cpu", dtype=torch.float32)
    kind = record["adapter"]
    base = None if kind == "controlnet_xs" else (copy.deepcopy(pipe.denoiser) if kind == "controlnext" else pipe.denoiser)
    adapter = load_control_adapter(out / "adapter", base)
    return adapter, controlled_pipeline(pipe, adapter), record
