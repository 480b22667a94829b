"""Evaluate a loaded run on a split and write ``eval_<split>.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

from langfield._checks import InputError, check_int_range
from langfield.eval.lpips import try_load_lpips
from langfield.io.atomic import atomic_write_json
from langfield.runs.loading import Run
from langfield.training.evaluation import evaluate_views

__all__ = ["check_evaluate_request", "evaluate_run"]


def check_evaluate_request(chunk: Optional[int], lpips_weights: Optional[Union[str, Path]] = None) -> None:
    """Refuse bad evaluation options before a run is loaded: ``chunk >= 1``, and LPIPS weights the
    user named explicitly must exist (silently skipping LPIPS would hide the typo)."""
    if chunk is not None:  # None: the device's default (langfield.methods.base.default_ray_chunk)
        check_int_range(chunk, "chunk (--chunk)", lo=1)
    if lpips_weights is not None and not Path(lpips_weights).exists():
        raise FileNotFoundError(f"lpips_weights (--lpips-weights) {lpips_weights}: not found")


def evaluate_run(
    run: Run,
    split: str = "test",
    write_renders: bool = True,
    lpips_weights: Optional[Union[str, Path]] = None,
    chunk: Optional[int] = None,
) -> Dict[str, Any]:
    """Evaluate a loaded run on every view of ``split``; writes ``RUN_DIR/eval_<split>.json``.

    LPIPS is computed when weights are found locally (``lpips_weights`` or
    ``$LANGFIELD_LPIPS_WEIGHTS``); otherwise the result's ``lpips`` is None and ``lpips_note`` says why.
    """
    check_evaluate_request(chunk, lpips_weights)
    if split not in run.dataset.splits:
        raise InputError(f"split {split!r} (--split): dataset {run.dataset.name!r} has {sorted(run.dataset.splits)}")
    device = next(run.method.parameters()).device
    lpips_model, note = try_load_lpips(lpips_weights, device=device)
    result = evaluate_views(
        run.method,
        run.dataset,
        split,
        chunk=chunk,
        render_dir=run.output_dir / "renders" / split if write_renders else None,
        lpips_model=lpips_model,
    )
    result["lpips_note"] = note
    atomic_write_json(result, run.output_dir / f"eval_{split}.json")
    return result
