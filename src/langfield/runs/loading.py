"""Build the pieces of a run: the dataset of a :class:`DataConfig`, and a trained run from its directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from langfield._checks import InputError, check_device, check_memory
from langfield.data import detect_format, load_dataset
from langfield.data.dataset import SceneDataset
from langfield.data.ray_space import apply_ray_space
from langfield.methods.base import SceneInfo, SceneMethod
from langfield.methods.registry import make_method, uses_rays
from langfield.runs.spec import PROCEDURAL, RUN_FILE, DataConfig, RunSpec, check_run_dir, checkpoint_path, read_run_file
from langfield.training.checkpoint import load_checkpoint, load_method_state
from langfield.training.trainer import Trainer

__all__ = ["Run", "load_data", "load_run", "resolve_device"]

PathLike = Union[str, Path]


@dataclass
class Run:
    """A built run: the method, its dataset, the spec and (when training) the trainer.

    ``directory`` is where the run was loaded from (a run directory may have been moved since it
    was trained); ``output_dir`` is that, else the trainer's output directory."""

    method: SceneMethod
    dataset: SceneDataset
    spec: RunSpec
    trainer: Optional[Trainer] = None
    directory: Optional[Path] = None

    @property
    def output_dir(self) -> Path:
        if self.directory is not None:
            return self.directory
        if self.spec.trainer.output_dir is None:
            raise ValueError("this run was trained with output_dir=None and has no directory")
        return Path(self.spec.trainer.output_dir)


def resolve_device(device: Optional[str], where: str = "device") -> torch.device:
    """``device`` (checked: known and present on this machine) or CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return check_device(device, where)


#: Bytes per pixel of the procedural scene as built and kept (RGBA, depth, the renderer's subpixel
#: rays while one view is drawn): a lower bound used to refuse absurd sizes up front.
_PROCEDURAL_BYTES_PER_PIXEL = 64
_PROCEDURAL_TEST_VIEWS = 8


def load_data(cfg: DataConfig, *, allow_ndc: bool = True) -> SceneDataset:
    """Load the scene described by ``cfg`` (through the reader registry, procedural scene included)
    and attach the ray space ``cfg.ray_space`` asks for (:func:`langfield.data.ray_space.apply_ray_space`;
    ``allow_ndc``: whether the run's method marches rays, see ``methods.registry.uses_rays``)."""
    dataset = _read_data(cfg)
    return apply_ray_space(dataset, cfg.ray_space, allow_ndc=allow_ndc, where="DataConfig.ray_space (--ray-space)")


def _read_data(cfg: DataConfig) -> SceneDataset:
    if cfg.path == PROCEDURAL:
        side = max(1, int(round(cfg.procedural_size / cfg.downscale)))
        views = cfg.procedural_views + _PROCEDURAL_TEST_VIEWS + cfg.procedural_val_views
        check_memory(
            views * side * side * _PROCEDURAL_BYTES_PER_PIXEL,
            f"procedural scene of {views} views at {side}x{side} (--procedural-size/--procedural-views)",
            hint="ask for a smaller size or fewer views",
        )  # fmt: skip
        return load_dataset(
            PROCEDURAL, format=PROCEDURAL, downscale=cfg.downscale, background=cfg.background,
            size=cfg.procedural_size, num_train=cfg.procedural_views, num_val=cfg.procedural_val_views,
        )  # fmt: skip
    # passed only when set, so third-party readers without the option keep working by default
    options: Dict[str, Any] = {"allow_outside_paths": True} if cfg.allow_outside_paths else {}
    colmap_only = {  # DataConfig field -> (its value, load_colmap's option, where other scenes get it)
        "colmap_depth_maps": (cfg.colmap_depth_maps, "depth_maps",
                              "COLMAP depth maps come with a COLMAP dense workspace (images/, sparse/, stereo/)"),
        "colmap_masks": (cfg.colmap_masks, "masks", "transforms scenes name their masks per frame ('mask_path')"),
    }  # fmt: skip
    for field, (value, option, why) in colmap_only.items():
        if value is None:
            continue
        found = detect_format(cfg.path)
        if found != "colmap":
            flag = "--" + field.replace("_", "-")
            raise InputError(f"DataConfig.{field} ({flag} {value}): {cfg.path} is a {found!r} scene; {why}")
        options[option] = value
    return load_dataset(cfg.path, downscale=cfg.downscale, background=cfg.background, **options)


def load_run(run_dir: PathLike, device: Optional[str] = None, checkpoint: Optional[PathLike] = None) -> Run:
    """Rebuild a trained run from its directory (``run.json`` + ``checkpoints/latest.ckpt``), in eval mode.

    Everything cheap is checked before the dataset is loaded: the device, the folder, ``run.json``
    and the checkpoint's presence. The checkpoint's weights are checked (names, dtypes, NaN/inf)
    before they reach the method (:func:`langfield.training.checkpoint.load_method_state`).
    """
    target = resolve_device(device)
    run_dir = check_run_dir(run_dir)
    spec_path = run_dir / RUN_FILE
    spec = RunSpec.from_dict(read_run_file(run_dir), str(spec_path))
    if spec.data.path.startswith("<in-memory"):
        raise InputError(f"{spec_path}: the run was trained on an in-memory dataset and cannot be reloaded from disk")
    method_config = spec.build_method_config()
    path = checkpoint_path(run_dir, checkpoint)
    state = load_checkpoint(path, required=("model",))
    dataset = load_data(spec.data, allow_ndc=uses_rays(spec.method))
    method = make_method(spec.method, SceneInfo.from_dataset(dataset), method_config)
    load_method_state(method, state["model"], f"checkpoint {path} (for the {spec.method} run in {spec_path})")
    method.to(target).eval()
    method.prepare_for_render()
    return Run(method, dataset, spec, directory=run_dir)
