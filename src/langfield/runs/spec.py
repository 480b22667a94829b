"""What a run directory records: which data, which method with which settings, which trainer.

A *run directory* holds everything about one training run::

    run.json                 RunSpec: method name + config, DataConfig, TrainerConfig
    config.json              the trainer config (written by the trainer)
    checkpoints/latest.ckpt  resumable checkpoint
    metrics.jsonl            training / eval log
    eval_test.json           final metrics
    renders/                 test-view renders beside ground truth, depth maps, videos
    language/                a language field distilled on the run (``langfield language``)

``run.json`` files written by earlier versions still load: method configs go through the method
registry's own reader (:func:`langfield.methods.registry.method_config_from_dict`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Dict, Literal, Optional, Union

import tyro

from langfield._checks import InputError, check_finite_number, check_int_range
from langfield.configs import check_field_types, config_from_dict, config_to_dict
from langfield.data.loading import read_json
from langfield.data.readers.procedural import PROCEDURAL
from langfield.methods.registry import method_config_from_dict, method_names
from langfield.training.trainer import TrainerConfig

__all__ = ["DataConfig", "PROCEDURAL", "RUN_FILE", "RunSpec", "check_run_dir", "checkpoint_path", "read_run_file"]

RUN_FILE = "run.json"
PathLike = Union[str, Path]
#: Bounds of the procedural scene's options (far beyond any use; memory is checked on load too).
MAX_PROCEDURAL_SIZE = 1 << 14
MAX_PROCEDURAL_VIEWS = 100_000


@dataclass(frozen=True)
class DataConfig:
    """Which scene to load.

    Attributes:
        path: a dataset folder / transforms json, or ``"procedural"`` for the built-in demo scene.
        downscale: image downscale factor (4 -> quarter resolution).
        background: ``"white" | "black" | "random"`` to override the dataset's default compositing
            of RGBA images during training (evaluation uses white for "random").
        procedural_size: image size of the procedural scene (ignored otherwise).
        procedural_views: training views of the procedural scene (8 held-out test views besides).
        procedural_val_views: validation views of the procedural scene (0: no "val" split), for
            choosing settings without looking at the test views.
        allow_outside_paths: let the dataset's image paths point outside its folder (``../``,
            absolute paths, symlinks out of it); refused by default.
        ray_space: where NeRF / Mip-NeRF / Instant-NGP rays live: auto (NDC for forward-facing
            scenes such as LLFF, else world), world, or ndc (langfield.data.ray_space). A run.json
            written before this option existed loads as world, the space it was trained in.
        colmap_depth_maps: ``"geometric"`` / ``"photometric"``: a COLMAP dense workspace's depth maps
            become ``ImageSet.depths`` (:func:`~langfield.data.readers.colmap.load_colmap`'s ``depth_maps``).
        colmap_masks: a folder of training masks for a COLMAP scene (``load_colmap``'s ``masks``).
    """

    path: Annotated[str, tyro.conf.arg(aliases=("--data",))] = PROCEDURAL
    """Dataset: a folder with transforms*.json (Blender/nerfstudio/instant-ngp), an LLFF folder
    (poses_bounds.npy), a COLMAP folder (sparse/0 + images), a transforms json file, or
    'procedural' for the built-in demo scene."""
    downscale: float = 1.0
    """Image downscale factor (4 = quarter resolution)."""
    background: Optional[Literal["white", "black", "random"]] = None
    """Override how RGBA images are composited for training: white, black or random (default: the dataset's)."""
    procedural_size: int = 64
    """Image size of the procedural scene."""
    procedural_views: int = 100
    """Training views of the procedural scene (8 held-out test views besides)."""
    procedural_val_views: int = 0
    """Validation views of the procedural scene (0: no val split)."""
    allow_outside_paths: bool = False
    """Read image files that lie outside the dataset folder (../, absolute paths, symlinks); refused by default."""
    ray_space: Literal["auto", "world", "ndc"] = "auto"
    """Ray space of NeRF/Mip-NeRF/NGP: auto (NDC for forward-facing scenes such as LLFF), world or ndc."""
    colmap_depth_maps: Optional[Literal["geometric", "photometric"]] = None
    """COLMAP dense workspace: read its multi-view-stereo depth maps (stereo/depth_maps/*.<kind>.bin) as the
    scene's depth, e.g. for --set depth_loss_weight=W (estimates, not ground truth)."""
    colmap_masks: Optional[str] = None
    """COLMAP scene: a folder of training masks, <image name>.png (COLMAP's convention) or <image stem>.png;
    0 = ignore the pixel in training (relative paths: inside the scene folder)."""

    @classmethod
    def migrate_dict(cls, data: Dict[str, Any]) -> Dict[str, Any]:
        """Runs stored before ``ray_space`` existed were trained on world rays: keep them so."""
        if isinstance(data, dict) and "ray_space" not in data:
            data = {**data, "ray_space": "world"}
        return data

    def __post_init__(self) -> None:
        check_field_types(self)
        if not self.path.strip():
            raise InputError("DataConfig.path (--data): empty path")
        check_finite_number(self.downscale, "DataConfig.downscale (--downscale)", lo=0, lo_inclusive=False)
        check_int_range(self.procedural_size, "DataConfig.procedural_size (--procedural-size)", lo=1, hi=MAX_PROCEDURAL_SIZE)
        check_int_range(self.procedural_views, "DataConfig.procedural_views (--procedural-views)", lo=1, hi=MAX_PROCEDURAL_VIEWS)
        check_int_range(self.procedural_val_views, "DataConfig.procedural_val_views (--procedural-val-views)", lo=0, hi=MAX_PROCEDURAL_VIEWS)


@dataclass(frozen=True)
class RunSpec:
    """Everything needed to rebuild a run: method name + config, data, trainer config."""

    method: str
    method_config: Dict[str, Any]
    data: DataConfig
    trainer: TrainerConfig

    def to_dict(self) -> Dict[str, Any]:
        return {
            "method": self.method,
            "method_config": self.method_config,
            "data": config_to_dict(self.data),
            "trainer": self.trainer.to_dict(),
        }

    @staticmethod
    def from_dict(d: Dict[str, Any], where: str = RUN_FILE) -> "RunSpec":
        if not isinstance(d, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(d).__name__}")
        for key in ("method", "method_config", "data", "trainer"):
            if key not in d:
                raise InputError(f"{where}: missing field {key!r}")
        method = d["method"]
        if not isinstance(method, str) or method not in method_names():
            raise InputError(f"{where}: method: {method!r} is not a registered method ({', '.join(method_names())})")
        if not isinstance(d["method_config"], dict):
            raise InputError(f"{where}: method_config: expected an object, got {type(d['method_config']).__name__}")
        return RunSpec(
            method=method,
            method_config=d["method_config"],
            data=config_from_dict(DataConfig, d["data"], f"{where}:data"),
            trainer=config_from_dict(TrainerConfig, d["trainer"], f"{where}:trainer"),
        )

    def build_method_config(self) -> Any:
        """The method's typed config (older ``run.json`` layouts are migrated by the method's reader)."""
        return method_config_from_dict(self.method, self.method_config, f"{RUN_FILE}:method_config")


def check_run_dir(run_dir: PathLike) -> Path:
    """``run_dir`` as a ``Path`` after checking it is an existing folder (clear errors otherwise)."""
    if run_dir is None or not str(run_dir).strip():
        raise InputError("run_dir: empty path; pass a run directory written by 'langfield train'")
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise FileNotFoundError(f"run directory {run_dir} not found (train one with 'langfield train --output-dir {run_dir}')")
    if not run_dir.is_dir():
        raise NotADirectoryError(f"run directory {run_dir}: is a file, not a run directory")
    return run_dir


def read_run_file(run_dir: PathLike) -> Dict[str, Any]:
    """The raw ``run.json`` of ``run_dir`` as a dict (clear errors when missing or malformed)."""
    run_dir = check_run_dir(run_dir)
    spec_path = run_dir / RUN_FILE
    if not spec_path.is_file():
        raise FileNotFoundError(f"{spec_path} not found: is {run_dir} a langfield run directory (langfield train --output-dir)?")
    return read_json(spec_path)


def checkpoint_path(run_dir: PathLike, checkpoint: Optional[PathLike] = None) -> Path:
    """``checkpoint`` or ``run_dir/checkpoints/latest.ckpt``; it must be an existing file."""
    if checkpoint is not None and not str(checkpoint).strip():
        raise InputError("checkpoint: empty path")
    path = Path(checkpoint) if checkpoint else Path(run_dir) / "checkpoints" / "latest.ckpt"
    if path.is_dir():
        raise InputError(f"checkpoint {path}: is a folder, expected a .ckpt file")
    if not path.is_file():
        hint = "check --checkpoint" if checkpoint else "the run has no checkpoint yet: train it first, or pass --checkpoint"
        raise FileNotFoundError(f"checkpoint {path} not found ({hint})")
    return path
