"""Evaluate a loaded run on a split and write ``eval_<split>.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

from langfield.eval.lpips import try_load_lpips
from langfield.io.atomic import atomic_write_json
from langfield.runs.loading import Run
from langfield.training.evaluation import evaluate_views

__all__ = ["evaluate_run"]


def evaluate_run(
    run: Run,
    split: str = "test",
    write_renders: bool = True,
    lpips_weights: Optional[Union[str, Path]] = None,
    chunk: int = 8192,
) -> Dict[str, Any]:
    """Evaluate a loaded run on every view of ``split``; writes ``RUN_DIR/eval_<split>.json``.

    LPIPS is computed when weights are found locally (``lpips_weights`` or
    ``$LANGFIELD_LPIPS_WEIGHTS``); otherwise the result's ``lpips`` is None and ``lpips_note`` says why.
    """
    if split not in run.dataset.splits:
        raise ValueError(f"dataset {run.dataset.name!r} has no split {split!r}; it has {sorted(run.dataset.splits)}")
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
