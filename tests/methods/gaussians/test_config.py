"""``GaussiansConfig.strategy`` as one typed field: the stored layout and its JSON round trip, the
``--set strategy=...`` overrides, and the migration of ``run.json`` files written with the old
layout (``"strategy": "default" | "mcmc"`` beside ``"default": {...}, "mcmc": {...}``)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from langfield.configs import config_from_dict, config_to_dict
from langfield.methods.gaussians import DefaultStrategy, Gaussians, GaussiansConfig, MCMCStrategy
from langfield.configs import apply_overrides
from langfield.methods.registry import get_preset
from langfield.methods.base import SceneInfo
from langfield.runs.loading import load_run
from langfield.runs.spec import DataConfig
from langfield.runs.train import prepare_run
from langfield.training.trainer import TrainerConfig

# ``method_config`` exactly as run.json stored it before the strategy became one typed field
# (written by the previous code for a small MCMC config).
OLD_LAYOUT = {
    "sh_degree": 1, "sh_degree_interval": 4, "init": "auto", "init_num_random": 300, "init_extent": 1.0,
    "init_opacity": 0.1, "init_scale": 1.0, "num_features": 0, "lr_means": 0.00016, "lr_means_final": 1.6e-06,
    "lr_scales": 0.005, "lr_quats": 0.001, "lr_opacities": 0.05, "lr_sh0": 0.0025, "lr_shN": 0.000125,
    "lr_features": 0.0025, "ssim_lambda": 0.2, "strategy": "mcmc",
    "default": {"grow_grad2d": 1e-06, "grow_scale3d": 0.01, "grow_scale2d": 0.05, "prune_opa": 0.005,
                "prune_scale3d": 0.1, "prune_scale2d": 0.15, "refine_scale2d_stop_iter": 0, "refine_start_iter": 3,
                "refine_stop_iter": 100, "refine_every": 4, "reset_every": 9, "split_factor": 1.6, "absgrad": False,
                "verbose": False},
    "mcmc": {"cap_max": 330, "noise_lr": 500000.0, "refine_start_iter": 500, "refine_stop_iter": 25000,
             "refine_every": 100, "min_opacity": 0.005, "grow_rate": 0.05, "noise_k": 100.0, "noise_t": 0.005,
             "verbose": False},
    "splat": {"near": 0.01, "far": 10000000000.0, "eps2d": 0.3, "tile_size": 16, "backend": "auto",
              "render_depth": True},
    "seed": 0,
}  # fmt: skip
OLD_DEFAULT = DefaultStrategy(refine_start_iter=3, refine_every=4, reset_every=9, refine_stop_iter=100, grow_grad2d=1e-6)
SMALL = dict(init_num_random=300, sh_degree=1, sh_degree_interval=4)


def test_both_strategies_round_trip_through_dicts_and_json():
    for strategy in (DefaultStrategy(refine_every=7, absgrad=True), MCMCStrategy(cap_max=330, opacity_reg=0.0)):
        cfg = GaussiansConfig(init_num_random=5, strategy=strategy)
        stored = config_to_dict(cfg)
        assert stored["strategy"] == {"type": strategy.config_type, **dataclasses.asdict(strategy)}
        assert "default" not in stored and "mcmc" not in stored
        back = config_from_dict(GaussiansConfig, json.loads(json.dumps(stored)))
        assert back == cfg and type(back.strategy) is type(strategy)
    assert GaussiansConfig().strategy == DefaultStrategy()
    # a dict without background_shell_points was stored before the shell existed: no shell
    assert config_from_dict(GaussiansConfig, {}) == dataclasses.replace(GaussiansConfig(), background_shell_points=0)


def test_stored_strategy_errors_name_the_choices():
    stored = config_to_dict(GaussiansConfig())
    with pytest.raises(ValueError, match=r"unknown type 'magic'.*\['default', 'mcmc'\]"):
        config_from_dict(GaussiansConfig, {**stored, "strategy": {**stored["strategy"], "type": "magic"}})
    with pytest.raises(ValueError, match="missing 'type'"):
        config_from_dict(GaussiansConfig, {"strategy": {"refine_every": 3}})
    with pytest.raises(ValueError, match=r"strategy\[default\].*cap_max"):
        config_from_dict(GaussiansConfig, {"strategy": {"type": "default", "cap_max": 3}})
    with pytest.raises(ValueError, match="DefaultStrategy or MCMCStrategy"):
        GaussiansConfig(strategy="mcmc")  # a name is not a strategy


def test_overrides_select_and_tune_the_strategy():
    cpu = get_preset("gaussians", "cpu").method_config
    assert cpu.strategy == DefaultStrategy(refine_stop_iter=2500)
    mcmc = apply_overrides(cpu, {"strategy": "mcmc", "strategy.cap_max": 150000})
    assert mcmc.strategy == MCMCStrategy(cap_max=150000)  # MCMC's own defaults, then the user's field
    assert apply_overrides(cpu, {"strategy": "default"}) == cpu  # the current variant keeps its settings
    assert apply_overrides(mcmc, {"strategy": "default"}).strategy == DefaultStrategy()
    assert apply_overrides(cpu, {"strategy": {"type": "mcmc", "cap_max": 9}}).strategy == MCMCStrategy(cap_max=9)
    assert apply_overrides(mcmc, {"strategy.noise_lr": 1.0}).strategy.noise_lr == 1.0

    with pytest.raises(ValueError, match=r"unknown strategy 'magic'; choose one of \['default', 'mcmc'\]"):
        apply_overrides(cpu, {"strategy": "magic"})
    with pytest.raises(ValueError, match=r"unknown field 'cap_max' of DefaultStrategy.*strategy=NAME first"):
        apply_overrides(cpu, {"strategy.cap_max": 150000})
    with pytest.raises(ValueError, match=r"unknown field 'mcmc' of GaussiansConfig.*'strategy'"):
        apply_overrides(cpu, {"mcmc.cap_max": 150000})  # the old spelling


def test_the_old_layout_migrates_to_the_chosen_strategy():
    snapshot = json.loads(json.dumps(OLD_LAYOUT))
    cfg = config_from_dict(GaussiansConfig, OLD_LAYOUT)
    assert cfg == GaussiansConfig(**SMALL, strategy=MCMCStrategy(cap_max=330), background_shell_points=0)
    assert OLD_LAYOUT == snapshot  # the stored dict is not modified
    as_default = config_from_dict(GaussiansConfig, {**OLD_LAYOUT, "strategy": "default"})
    assert as_default == GaussiansConfig(**SMALL, strategy=OLD_DEFAULT, background_shell_points=0)
    without_name = {k: v for k, v in OLD_LAYOUT.items() if k != "strategy"}  # "default" was the default
    assert config_from_dict(GaussiansConfig, without_name).strategy == OLD_DEFAULT
    current = config_to_dict(cfg)
    assert GaussiansConfig.migrate_dict(current) is current  # a current layout passes through
    with pytest.raises(ValueError, match=r"old layout.*'magic'"):
        config_from_dict(GaussiansConfig, {**OLD_LAYOUT, "strategy": "magic"})


def test_a_run_directory_with_the_old_layout_still_loads(tmp_path):
    data = DataConfig("procedural", procedural_size=16, procedural_views=6)
    trainer = TrainerConfig(max_steps=5, output_dir=str(tmp_path), progress=False, checkpoint_every=5, log_every=1)
    cfg = GaussiansConfig(**SMALL, strategy=OLD_DEFAULT)
    run = prepare_run(data, "gaussians", trainer, cfg)
    run.trainer.train()
    spec = json.loads((tmp_path / "run.json").read_text())
    assert spec["method_config"]["strategy"]["type"] == "default"
    spec["method_config"] = {**OLD_LAYOUT, "strategy": "default"}  # as the previous code wrote it
    (tmp_path / "run.json").write_text(json.dumps(spec))

    loaded = load_run(tmp_path, device="cpu")
    old = dataclasses.replace(cfg, background_shell_points=0)  # the old layout predates the background shell
    assert isinstance(loaded.method, Gaussians) and loaded.method.config == old
    assert loaded.method.num_gaussians == run.method.num_gaussians
    cams = loaded.dataset.split("test").cameras[0]
    expected = run.method.eval().render_camera(cams, torch.ones(3))
    assert torch.equal(loaded.method.render_camera(cams, torch.ones(3)).rgb, expected.rgb)


def test_checkpoint_extra_state_keeps_its_layout(tiny_scene):
    method = Gaussians(SceneInfo.from_dataset(tiny_scene), GaussiansConfig(**SMALL))
    n = method.num_gaussians
    old = {"strategy": {"grad2d": torch.arange(n, dtype=torch.float32), "count": torch.ones(n), "max_radii": None,
                        "scene_scale": 2.5, "n_dupli": 4, "n_split": 1, "n_prune": 2, "n_reset": 0}, "step": 7}  # fmt: skip
    method.load_extra_state(old)
    assert method._step == 7 and method.strategy_state["n_dupli"] == 4
    assert torch.equal(method.strategy_state["grad2d"], old["strategy"]["grad2d"])
    saved = method.extra_state()
    assert set(saved) == {"strategy", "step"} and set(saved["strategy"]) == set(old["strategy"])
    assert "cloud.params.means" in method.state_dict() and "active_sh_degree" in method.state_dict()
