"""Named hyper-parameter presets per method and device, as ``--set``-style overrides.

``paper`` keeps each paper's settings. ``cpu`` trades sample density for throughput on a few CPU
cores (Instant-NGP: 512 marching steps across the box diagonal, 2^16 samples per step, at most 8192
rays, occupancy-grid updates on 1/8 of the cells after a 64-step warm-up); the hash grid stays the
paper's. Gaussian splatting on CPU gets a few thousand steps where the paper runs 30k: it starts
from 50k instead of 100k random Gaussians, raises the SH degree every 500 steps and stops
densifying at step 2500 so the rest of the budget refines a fixed cloud. The CLI and the benchmark pick ``cpu`` on CPU and ``paper`` on CUDA unless told otherwise.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch

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
            "default.refine_stop_iter": 2500,
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


def apply_overrides(config: Any, overrides: Dict[str, Any]) -> Any:
    """Return ``config`` (a nested frozen dataclass) with dotted-key ``overrides`` applied."""
    from langfield.configs import config_from_dict, config_to_dict

    data = config_to_dict(config)
    for key, value in overrides.items():
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ValueError(f"override {key}: {p!r} is not a nested config of {type(config).__name__}")
            node = node[p]
        if parts[-1] not in node:
            raise ValueError(f"override {key}: unknown field {parts[-1]!r}; known: {sorted(node)}")
        node[parts[-1]] = value
    return config_from_dict(type(config), data, "override")
