"""Export a trained run's geometry to files other tools open."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from langfield.io.gaussian_ply import write_gaussian_ply
from langfield.methods.capabilities import SplatsGaussians
from langfield.methods.registry import METHODS, method_names
from langfield.runs.spec import checkpoint_path, read_run_file
from langfield.training.checkpoint import load_checkpoint

__all__ = ["EXPORT_FORMATS", "export_run"]

EXPORT_FORMATS = ("ply",)
PathLike = Union[str, Path]


def export_run(
    run_dir: PathLike, fmt: str = "ply", output: Optional[PathLike] = None, checkpoint: Optional[PathLike] = None
) -> Path:
    """Export a Gaussian-splatting run's cloud; returns the written file.

    ``fmt="ply"`` writes the reference 3DGS layout (:func:`langfield.io.gaussian_ply.write_gaussian_ply`),
    by default to ``run_dir/export/point_cloud.ply`` (atomically). Only ``run.json`` and the
    checkpoint are read: the run's dataset is not needed."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; supported: {', '.join(EXPORT_FORMATS)}")
    run_dir = Path(run_dir)
    name = read_run_file(run_dir).get("method")  # refuse before loading any data
    splatting = [m for m in method_names() if issubclass(METHODS[m].method_cls, SplatsGaussians)]
    if name not in splatting:
        raise ValueError(
            f"{run_dir} was trained with method {name!r}, which has no Gaussian cloud; "
            f"only {', '.join(repr(m) for m in splatting)} runs export to PLY"
        )
    state = load_checkpoint(checkpoint_path(run_dir, checkpoint))
    cloud = METHODS[name].method_cls.cloud_from_state_dict(state["model"])
    cloud.check_finite()
    out = Path(output) if output is not None else run_dir / "export" / "point_cloud.ply"
    return write_gaussian_ply(out, cloud.raw())
