"""``langfield demo``: Instant-NGP on the procedural scene, then renders, depth, video, metrics."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

from langfield._checks import check_finite_number, check_int_range, check_output_dir
from langfield.fields.ngp_field import NGPFieldConfig
from langfield.io.atomic import atomic_write_json
from langfield.methods.ngp import NGPConfig
from langfield.ops.hash_encoding import HashGridConfig
from langfield.ops.occupancy import OccupancyGridConfig
from langfield.runs.loading import resolve_device
from langfield.runs.render import render_path
from langfield.runs.spec import MAX_PROCEDURAL_SIZE, PROCEDURAL, DataConfig
from langfield.runs.train import train
from langfield.training.evaluation import evaluate_views
from langfield.training.trainer import TrainerConfig

__all__ = ["demo_ngp_config", "run_demo"]


def demo_ngp_config() -> NGPConfig:
    """Instant-NGP settings for the small procedural scene on a CPU: a 2^17 table and a 64^3
    occupancy grid are plenty for 64^2 images, and 2^15 samples per step keep steps short."""
    return NGPConfig(
        field=NGPFieldConfig(hash_grid=HashGridConfig(log2_hashmap_size=17, max_resolution=512)),
        grid=OccupancyGridConfig(resolution=64, warmup_steps=48),
        steps_per_diagonal=384,
        target_samples_per_step=1 << 15,
    )


def run_demo(
    output_dir: Union[str, Path] = "outputs/demo",
    budget_s: float = 170.0,
    size: int = 64,
    device: Optional[str] = None,
    seed: int = 0,
    say: Callable[[str], Any] = print,
) -> Dict[str, Any]:
    """Train Instant-NGP on the procedural scene for ``budget_s`` seconds, then evaluate and render.

    Writes into ``output_dir``: ``renders/test/*_compare.png`` (render | ground truth | depth),
    ``renders/test/*_depth.png``, ``orbit_rgb.mp4`` + ``orbit_depth.mp4``, ``metrics.json``
    (test PSNR/SSIM and depth error against the analytic ground truth).

    The options are checked (and the scene's size against memory) before anything is written.
    """
    check_finite_number(budget_s, "budget_s (--budget-s)", lo=0, lo_inclusive=False)
    check_int_range(size, "size (--size)", lo=8, hi=MAX_PROCEDURAL_SIZE)
    check_int_range(seed, "seed (--seed)", lo=0)
    if device is not None:
        resolve_device(device, "device (--device)")
    out = check_output_dir(output_dir, "output_dir (--output-dir)")
    data = DataConfig(PROCEDURAL, 1.0, None, size, procedural_views=100)
    trainer_cfg = TrainerConfig(
        max_steps=20_000,
        max_seconds=budget_s,
        num_rays=2048,
        eval_every=0,
        checkpoint_every=500,
        log_every=25,
        output_dir=str(out),
        seed=seed,
        device=device,
        mixed_precision=True,
    )
    say(f"langfield demo: training Instant-NGP on the procedural scene ({size}x{size}) for {budget_s:.0f}s")
    run = train(data, "ngp", trainer_cfg, demo_ngp_config())
    t0 = time.perf_counter()
    result = evaluate_views(run.method, run.dataset, "test", render_dir=out / "renders" / "test")
    depth_err = result["depth_mae"]
    videos = render_path(run, "orbit", out, num_frames=60, fps=20, what=("rgb", "depth"))
    metrics = {
        "scene": run.dataset.name,
        "method": "ngp",
        "width": run.dataset.split("test").width,
        "height": run.dataset.split("test").height,
        "steps": run.trainer.step,
        "train_seconds": run.trainer.elapsed_seconds,
        "test_psnr": result["psnr"],
        "test_ssim": result["ssim"],
        "test_depth_mae": depth_err,
        "render_fps": result["render_fps"],
        "per_image": result["per_image"],
    }
    atomic_write_json(metrics, out / "metrics.json")
    say(
        f"test PSNR {result['psnr']:.2f} dB | SSIM {result['ssim']:.4f} | depth MAE {depth_err:.4f} "
        f"({time.perf_counter() - t0:.0f}s to render)"
    )
    say(f"renders beside ground truth: {out / 'renders' / 'test'}")
    say(f"orbit videos: {', '.join(str(v) for v in videos)}")
    say(f"metrics: {out / 'metrics.json'}")
    return metrics
