"""Run directories: reading run.json layouts written by earlier versions, moved run directories,
seeding before the method is built, and the lazy top-level package."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from langfield.configs import config_to_dict
from langfield.methods.gaussians import DefaultStrategy, GaussiansConfig, MCMCStrategy
from langfield.methods.ngp import NGPConfig
from langfield.runs.evaluate import evaluate_run
from langfield.runs.loading import load_run
from langfield.runs.spec import RunSpec
from langfield.runs.train import prepare_run, train
from langfield.training.trainer import TrainerConfig

FIXTURES = Path(__file__).parent / "fixtures"


def test_run_json_of_the_previous_version_still_reads():
    """``run_v0_*.json`` were written by langfield 3f24b0a (before the strategy field became typed)."""
    spec = RunSpec.from_dict(json.loads((FIXTURES / "run_v0_gaussians.json").read_text()))
    cfg = spec.build_method_config()
    assert isinstance(cfg, GaussiansConfig)
    assert cfg.strategy == DefaultStrategy(refine_stop_iter=2500) and cfg.init_num_random == 50_000
    assert spec.trainer.num_rays == 4096 and spec.data.path == "procedural"
    ngp = RunSpec.from_dict(json.loads((FIXTURES / "run_v0_ngp.json").read_text())).build_method_config()
    assert isinstance(ngp, NGPConfig) and ngp.steps_per_diagonal == 512


def _old_layout(cfg: GaussiansConfig) -> dict:
    """``cfg`` as the previous version stored it: a strategy name beside both strategies' settings."""
    data = config_to_dict(cfg)
    data["strategy"] = "default"
    data["default"] = config_to_dict(cfg.strategy)
    data["mcmc"] = config_to_dict(MCMCStrategy())
    return data


def test_an_old_layout_run_directory_loads_evaluates_and_survives_a_move(tiny_scene, tmp_path):
    from langfield.runs.spec import DataConfig

    cfg = GaussiansConfig(init_num_random=300, strategy=DefaultStrategy(refine_start_iter=10_000))
    trainer = TrainerConfig(max_steps=3, output_dir=str(tmp_path / "run"), progress=False, device="cpu",
                            checkpoint_every=0)  # fmt: skip
    data = DataConfig("procedural", procedural_size=16, procedural_views=6)
    train(data, "gaussians", trainer, cfg)
    run_json = tmp_path / "run" / "run.json"
    stored = json.loads(run_json.read_text())
    stored["method_config"] = _old_layout(cfg)
    run_json.write_text(json.dumps(stored))
    moved = tmp_path / "moved"
    shutil.move(str(tmp_path / "run"), moved)
    run = load_run(moved, device="cpu")
    assert run.method.config == cfg and run.output_dir == moved
    result = evaluate_run(run, "test", write_renders=False)
    assert (moved / "eval_test.json").is_file() and result["psnr"] > 5.0


def test_the_method_is_built_after_seeding(tiny_scene, tmp_path):
    """Two runs with the same seed start from the same parameters (the global RNG is seeded first)."""
    firsts = []
    for i in range(2):
        torch.manual_seed(1000 + i)  # whatever the process did before must not matter
        cfg = TrainerConfig(max_steps=1, output_dir=str(tmp_path / str(i)), progress=False, device="cpu", seed=3)
        run = prepare_run(tiny_scene, "ngp", cfg)
        firsts.append({k: v.clone() for k, v in run.method.state_dict().items()})
    assert firsts[0].keys() == firsts[1].keys()
    assert all(torch.equal(firsts[0][k], firsts[1][k]) for k in firsts[0])


def test_import_langfield_is_lazy():
    code = (
        "import sys, langfield; "
        "assert 'transformers' not in sys.modules and 'diffusers' not in sys.modules, 'heavy import'; "
        "assert 'langfield.runs' not in sys.modules and 'torch' not in sys.modules; "
        "print(langfield.TrainerConfig.__name__, langfield.load_language_scene.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["TrainerConfig", "langfield.runs.language"]
