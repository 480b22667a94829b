"""A tiny trained Gaussian-splatting run for the viewer tests that need a Gaussian cloud.

10 steps on the 16 px procedural scene: seconds, not a quality run (its render is far from blank
from the first step: the cloud starts from coloured points). The browser and language-mode tests
use the shared ``tiny_ngp_language_run`` of tests/conftest.py instead.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def gaussians_run(tmp_path_factory):
    import torch

    from langfield.runs.spec import DataConfig
    from langfield.runs.train import train
    from langfield.training.trainer import TrainerConfig

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_dir = tmp_path_factory.mktemp("viewer_gaussians")
        cfg = TrainerConfig(max_steps=10, output_dir=str(run_dir), progress=False, checkpoint_every=0, eval_every=0,
                            device="cpu", num_rays=256)  # fmt: skip
        train(DataConfig("procedural", procedural_size=16, procedural_views=6), "gaussians", cfg)
    finally:
        torch.set_num_threads(threads)
    return run_dir
