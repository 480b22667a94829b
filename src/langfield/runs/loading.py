"""Build the pieces of a run: the dataset of a :class:`DataConfig`, and a trained run from its directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from langfield.data import load_dataset
from langfield.data.dataset import SceneDataset
from langfield.methods.base import SceneInfo, SceneMethod
from langfield.methods.registry import make_method
from langfield.runs.spec import PROCEDURAL, RUN_FILE, DataConfig, RunSpec, checkpoint_path, read_run_file
from langfield.training.checkpoint import load_checkpoint
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


def resolve_device(device: Optional[str]) -> torch.device:
    """``device`` or CUDA when available, else CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def load_data(cfg: DataConfig) -> SceneDataset:
    """Load the scene described by ``cfg`` (through the reader registry, procedural scene included)."""
    if cfg.path == PROCEDURAL:
        return load_dataset(
            PROCEDURAL, format=PROCEDURAL, downscale=cfg.downscale, background=cfg.background,
            size=cfg.procedural_size, num_train=cfg.procedural_views,
        )  # fmt: skip
    # passed only when set, so third-party readers without the option keep working by default
    options = {"allow_outside_paths": True} if cfg.allow_outside_paths else {}
    return load_dataset(cfg.path, downscale=cfg.downscale, background=cfg.background, **options)


def load_run(run_dir: PathLike, device: Optional[str] = None, checkpoint: Optional[PathLike] = None) -> Run:
    """Rebuild a trained run from its directory (``run.json`` + ``checkpoints/latest.ckpt``), in eval mode."""
    run_dir = Path(run_dir)
    spec_path = run_dir / RUN_FILE
    spec = RunSpec.from_dict(read_run_file(run_dir), str(spec_path))
    if spec.data.path.startswith("<in-memory"):
        raise ValueError(f"{spec_path}: the run was trained on an in-memory dataset and cannot be reloaded from disk")
    dataset = load_data(spec.data)
    method = make_method(spec.method, SceneInfo.from_dataset(dataset), spec.build_method_config())
    path = checkpoint_path(run_dir, checkpoint)
    state = load_checkpoint(path)
    try:
        method.load_state_dict(state["model"])
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path} does not fit the {spec.method} method described in {spec_path}: {err}") from None
    method.to(resolve_device(device)).eval()
    method.prepare_for_render()
    return Run(method, dataset, spec, directory=run_dir)
