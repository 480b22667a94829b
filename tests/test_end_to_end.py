"""End to end: Instant-NGP trained on the procedural scene reaches a stated test PSNR.

The bar (see README) is deliberately below what the run reaches on an idle 2-core machine so
that CI noise does not flake it, and far above what an untrained or broken model gives
(an untrained field renders ~8.5 dB; 300 steps reach ~20.0 dB at 32x32 with 100 training views;
the demo at 64x64 reaches ~28.9 dB in 170 s).
"""

from __future__ import annotations

import pytest
import torch

from langfield.pipeline import DataConfig, demo_ngp_config, train
from langfield.training.trainer import TrainerConfig

E2E_MIN_PSNR = 19.0
E2E_STEPS = 300


@pytest.mark.slow
def test_ngp_reaches_stated_psnr_on_procedural_scene(tmp_path):
    torch.manual_seed(0)
    cfg = TrainerConfig(max_steps=E2E_STEPS, num_rays=1024, output_dir=str(tmp_path), progress=False,
                        checkpoint_every=0, log_every=100, device="cpu", seed=0)
    run = train(DataConfig("procedural", procedural_size=32), "ngp", cfg, demo_ngp_config())
    result = run.trainer.evaluate("test")
    assert result["num_images"] == 8
    assert result["psnr"] >= E2E_MIN_PSNR, f"test PSNR {result['psnr']:.2f} dB < {E2E_MIN_PSNR} dB"
    # Geometry is learnt too: rendered depth matches the analytic ground truth on the object.
    assert result["depth_mae"] < 0.5  # measured 0.32 (an untrained field: > 1)
