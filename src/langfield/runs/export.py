"""Export a trained run's geometry to files other tools open."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from langfield._checks import InputError, check_choice, check_output_file
from langfield.io.gaussian_ply import write_gaussian_ply
from langfield.methods.capabilities import SplatsGaussians
from langfield.methods.registry import METHODS, method_names
from langfield.runs.spec import check_run_dir, checkpoint_path, read_run_file
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
    check_choice(fmt, "format (--format)", EXPORT_FORMATS)
    run_dir = check_run_dir(run_dir)
    out = Path(output) if output is not None else run_dir / "export" / "point_cloud.ply"
    check_output_file(out, "output (--output)")
    name = read_run_file(run_dir).get("method")  # refuse before loading any data
    splatting = [m for m in method_names() if issubclass(METHODS[m].method_cls, SplatsGaussians)]
    if name not in splatting:
        raise InputError(
            f"{run_dir} was trained with method {name!r}, which has no Gaussian cloud; "
            f"only {', '.join(repr(m) for m in splatting)} runs export to PLY"
        )
    path = checkpoint_path(run_dir, checkpoint)
    state = load_checkpoint(path, required=("model",))
    cls = METHODS[name].method_cls
    written_by = state.get("method_class")
    if isinstance(written_by, str) and written_by.rsplit(".", 1)[-1] != cls.__name__:
        raise InputError(f"checkpoint {path}: written by {written_by}, but {run_dir} is a {name!r} run ({cls.__name__})")
    try:
        cloud = cls.cloud_from_state_dict(state["model"])
        cloud.check_finite()
    except (ValueError, KeyError, IndexError, RuntimeError) as err:
        raise InputError(f"checkpoint {path}: not a Gaussian cloud of a {name!r} run: {err}") from None
    return write_gaussian_ply(out, cloud.raw())
