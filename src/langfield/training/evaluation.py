"""Evaluate a method on the views of a split: render, compare with ground truth, optionally write panels."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from langfield.data.dataset import SceneDataset
from langfield.eval.metrics import psnr as image_psnr
from langfield.eval.metrics import ssim as image_ssim
from langfield.io.colormaps import colorize_depth
from langfield.io.images import side_by_side, write_image
from langfield.methods.base import SceneMethod, unwrap_model


def ssim_window(height: int, width: int) -> int:
    """The standard 11-px SSIM window, shrunk (odd) for images smaller than that."""
    w = min(11, height, width)
    return w if w % 2 == 1 else w - 1


def depth_mae(depth: torch.Tensor, image_set, index: int) -> float:
    """Mean absolute error of a rendered ray distance ``[H, W, 1]`` against the ground-truth depth of
    view ``index`` on its foreground pixels: finite, positive truth (0 marks "no surface", e.g. a
    procedural pixel whose centre ray misses although its subpixel coverage exceeds one half) and
    alpha > 0.5 where alphas exist. ``nan`` when no pixel qualifies."""
    gt = image_set.depths[index]
    mask = torch.isfinite(gt) & (gt > 0)
    if image_set.alphas is not None:
        mask &= image_set.alphas[index] > 127
    return float((depth - gt).abs()[mask].mean())


@torch.no_grad()
def evaluate_views(
    method: nn.Module,
    dataset: SceneDataset,
    split: str,
    indices: Optional[Sequence[int]] = None,
    chunk: Optional[int] = None,
    render_dir: Optional[Path] = None,
    lpips_model: Optional[nn.Module] = None,
    progress: bool = False,
) -> Dict[str, Any]:
    """PSNR / SSIM (/ LPIPS) of ``method`` on views ``indices`` (default all) of ``split``.

    Renders over the dataset's evaluation background (white for "random"). With ``render_dir``,
    writes per view ``<name>.png`` (render), ``<name>_depth.png`` (coloured depth) and
    ``<name>_compare.png`` (render | ground truth | depth).

    Returns:
        ``{"split", "num_images", "psnr", "ssim", "lpips" (or None), "depth_mae" (None without
        ground-truth depth), "seconds", "render_fps", "per_image"}``.
    """
    scene_method = unwrap_model(method)
    if not isinstance(scene_method, SceneMethod):
        raise TypeError(f"evaluate_views needs a SceneMethod (a reconstruction), got {type(scene_method).__name__}")
    image_set = dataset.split(split)
    idx: List[int] = list(range(len(image_set))) if indices is None else list(indices)
    background = dataset.eval_background()
    per_image = []
    render_seconds = 0.0
    start = time.perf_counter()
    bar = Progress(TextColumn(f"[bold blue]eval {split}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   disable=not progress)
    bar.start()
    task = bar.add_task("eval", total=len(idx))
    for i in idx:
        t0 = time.perf_counter()
        out = scene_method.render_camera(image_set.cameras[i], background, chunk=chunk)
        if out.rgb.is_cuda:
            torch.cuda.synchronize()
        render_seconds += time.perf_counter() - t0
        pred = out.rgb.float().clamp(0.0, 1.0)
        target = image_set.image_float(i, background).to(pred.device)
        item: Dict[str, Any] = {
            "index": i,
            "psnr": float(image_psnr(pred, target)),
            "ssim": float(image_ssim(pred, target, window_size=ssim_window(*pred.shape[:2]))),
        }
        if image_set.depths is not None:
            item["depth_mae"] = depth_mae(out.depth.float().cpu(), image_set, i)
        if lpips_model is not None:
            dev = next(lpips_model.parameters()).device
            item["lpips"] = float(lpips_model(pred[None].to(dev), target[None].to(dev)))
        per_image.append(item)
        if render_dir is not None:
            name = Path(image_set.paths[i]).stem if image_set.paths else f"{i:04d}"
            depth = colorize_depth(out.depth.float().cpu(), out.accumulation.float().cpu())
            write_image(render_dir / f"{name}.png", pred.cpu())
            write_image(render_dir / f"{name}_depth.png", depth)
            write_image(render_dir / f"{name}_compare.png", side_by_side(pred.cpu(), target.cpu(), depth))
        bar.advance(task)
    bar.stop()
    lp = [p["lpips"] for p in per_image if "lpips" in p]
    dm = [p["depth_mae"] for p in per_image if "depth_mae" in p]
    return {
        "split": split,
        "num_images": len(per_image),
        "psnr": float(np.mean([p["psnr"] for p in per_image])),
        "ssim": float(np.mean([p["ssim"] for p in per_image])),
        "lpips": float(np.mean(lp)) if lp else None,
        "depth_mae": float(np.mean(dm)) if dm else None,
        "seconds": time.perf_counter() - start,
        "render_fps": len(per_image) / max(render_seconds, 1e-9),
        "per_image": per_image,
    }
