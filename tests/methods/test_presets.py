"""Hyper-parameter presets and dotted-key overrides."""

from __future__ import annotations

import pytest
import torch

from langfield.methods.ngp import NGPConfig
from langfield.methods.presets import PRESETS, apply_overrides, default_preset_name, get_preset
from langfield.methods.registry import METHODS


def test_cpu_preset_changes_sampling_but_keeps_the_paper_hash_grid():
    cfg = apply_overrides(NGPConfig(), get_preset("ngp", "cpu")["set"])
    assert cfg.steps_per_diagonal == 512 and cfg.max_rays == 8192 and cfg.grid.update_fraction == 0.125
    assert cfg.field.hash_grid == NGPConfig().field.hash_grid
    assert apply_overrides(NGPConfig(), get_preset("ngp", "paper")["set"]) == NGPConfig()


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


def test_every_preset_applies_to_its_method():
    for (method, name), preset in PRESETS.items():
        cfg = apply_overrides(METHODS[method].config_cls(), preset["set"])
        assert cfg != METHODS[method].config_cls() or not preset["set"], (method, name)

