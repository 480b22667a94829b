"""Hyper-parameter presets (whole typed configs registered with each method) and dotted overrides."""

from __future__ import annotations

import pytest
import torch

from langfield.configs import apply_overrides
from langfield.methods.gaussians import DefaultStrategy, GaussiansConfig
from langfield.methods.ngp import NGPConfig
from langfield.methods.presets import Preset, default_preset_name
from langfield.methods.registry import METHODS, get_preset


def test_cpu_preset_changes_sampling_but_keeps_the_paper_hash_grid():
    preset = get_preset("ngp", "cpu")
    cfg = preset.method_config
    assert isinstance(cfg, NGPConfig) and preset.num_rays == 1024
    assert cfg.steps_per_diagonal == 512 and cfg.max_rays == 8192 and cfg.grid.update_fraction == 0.125
    assert cfg.field.hash_grid == NGPConfig().field.hash_grid
    paper = get_preset("ngp", "paper")
    assert paper.method_config == NGPConfig() and paper.num_rays == 4096


def test_gaussians_cpu_preset_is_a_typed_config():
    cfg = get_preset("gaussians", "cpu").method_config
    assert cfg.init_num_random == 50_000 and cfg.sh_degree_interval == 500
    assert cfg.strategy == DefaultStrategy(refine_stop_iter=2500)
    assert cfg == apply_overrides(GaussiansConfig(), {"init_num_random": 50_000, "sh_degree_interval": 500,
                                                      "strategy.refine_stop_iter": 2500, "num_downscales": 2,
                                                      "coarse_min_side": 128})  # fmt: skip


def test_default_preset_follows_device():
    assert default_preset_name(torch.device("cpu")) == "cpu"
    assert default_preset_name(torch.device("cuda")) == "paper"


def test_bad_override_and_preset_names():
    with pytest.raises(ValueError, match="nope"):
        apply_overrides(NGPConfig(), {"grid.nope": 1})
    with pytest.raises(ValueError, match="not a nested config"):
        apply_overrides(NGPConfig(), {"lr.x": 1})
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("ngp", "fast")
    with pytest.raises(ValueError, match="unknown method"):
        get_preset("nope", "cpu")


def test_every_registered_preset_is_its_methods_config_and_differs_from_paper():
    for name, spec in METHODS.items():
        for preset_name, preset in spec.presets.items():
            assert isinstance(preset, Preset)
            assert isinstance(preset.method_config, spec.config_cls), (name, preset_name)
            differs = preset.method_config != spec.config_cls() or preset.num_rays != 4096
            assert differs, (name, preset_name)
