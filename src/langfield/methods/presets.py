"""Named hyper-parameter presets per method and device, as ``--set``-style overrides.

``paper`` keeps each paper's settings. ``cpu`` trades sample density for throughput on a few CPU
cores (Instant-NGP: 512 marching steps across the box diagonal, 2^16 samples per step, at most 8192
rays, occupancy-grid updates on 1/8 of the cells after a 64-step warm-up); the hash grid stays the
paper's. Gaussian splatting on CPU gets a few thousand steps where the paper runs 30k: it starts
from 50k instead of 100k random Gaussians, raises the SH degree every 500 steps and stops
densifying at step 2500 so the rest of the budget refines a fixed cloud. The CLI and the benchmark pick ``cpu`` on CPU and ``paper`` on CUDA unless told otherwise.

A preset is applied first, as its own pass, then the user's ``--set`` overrides (see
:func:`langfield.configs.apply_overrides`): ``--set strategy=mcmc`` therefore starts the MCMC
strategy from its own defaults (the ``cpu`` preset's ``strategy.refine_stop_iter`` belongs to
the default strategy, as before), and ``--set strategy.cap_max=...`` after it tunes the MCMC one.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch

from langfield.configs import apply_overrides

__all__ = ["PRESETS", "PAPER", "apply_overrides", "default_preset_name", "get_preset"]

PRESETS: Dict[Tuple[str, str], Dict[str, Any]] = {
    ("ngp", "cpu"): {
        "num_rays": 1024,
        "set": {
            "steps_per_diagonal": 512,
            "target_samples_per_step": 65536,
            "max_rays": 8192,
            "grid.update_fraction": 0.125,
            "grid.warmup_steps": 64,
        },
    },
    ("gaussians", "cpu"): {
        "num_rays": 4096,  # unused: a step renders one whole image
        "set": {
            "init_num_random": 50_000,
            "sh_degree_interval": 500,
            "strategy.refine_stop_iter": 2500,  # DefaultStrategy's (see the module docstring)
        },
    },
    ("nerf", "cpu"): {"num_rays": 256, "set": {}},
    ("mipnerf", "cpu"): {"num_rays": 256, "set": {}},
}
PAPER = {"num_rays": 4096, "set": {}}


def default_preset_name(device: torch.device) -> str:
    return "cpu" if device.type == "cpu" else "paper"


def get_preset(method: str, name: str) -> Dict[str, Any]:
    """``{"num_rays": int, "set": {dotted.key: value}}`` for ``method`` under preset ``name``."""
    if name == "paper":
        return PAPER
    if name != "cpu":
        raise ValueError(f"unknown preset {name!r}; choose 'paper' or 'cpu'")
    return PRESETS.get((method, name), PAPER)
