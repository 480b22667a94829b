"""Named hyper-parameter presets: whole typed method configs, per method and device.

``paper`` keeps each paper's settings. ``cpu`` trades sample density for throughput on a few CPU
cores (Instant-NGP: 512 marching steps across the box diagonal, 2^16 samples per step, at most 8192
rays, occupancy-grid updates on 1/8 of the cells after a 64-step warm-up, and on unbounded scenes
cone steps of t/64 instead of t/256 -- chosen on validation views of the bonsai capture, see the
README); the hash grid stays the paper's. Gaussian splatting on CPU gets a few thousand steps
where the paper runs 30k: it starts from 50k instead of 100k random Gaussians, raises the SH degree
every 500 steps, stops densifying at step 2500 so the rest of the budget refines a fixed cloud, and
trains large images coarse to fine (splatfacto's two downscales, each level a quarter of the
budget; never below 128 px on the short side, so images under 256 px train at full size
throughout). The CLI and the benchmark pick ``cpu`` on CPU and ``paper`` on CUDA unless told
otherwise.

A preset is a whole typed config (:class:`Preset`), registered with its method
(:mod:`langfield.methods.registry`); the user's ``--set`` overrides apply on top of it
(:func:`langfield.configs.apply_overrides`): ``--set strategy=mcmc`` starts the MCMC strategy from
its own defaults (the ``cpu`` preset's ``refine_stop_iter`` belongs to the default strategy), and
``--set strategy.cap_max=...`` after it tunes the MCMC one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict

import torch

from langfield.data.samplers import DEFAULT_NUM_RAYS
from langfield.methods.gaussians import DefaultStrategy, GaussiansConfig
from langfield.methods.mipnerf import MipNeRFConfig
from langfield.methods.ngp import NGPConfig
from langfield.methods.nerf import NeRFConfig
from langfield.ops.occupancy import OccupancyGridConfig

__all__ = ["PRESET_NAMES", "Preset", "cpu_presets", "default_preset_name", "paper_preset"]


@dataclass(frozen=True)
class Preset:
    """A whole method configuration plus the trainer default it was tuned with.

    Attributes:
        description: one line for ``--help`` and the README.
        method_config: the method's complete typed config (``XConfig``).
        num_rays: rays per training step (ray methods; image methods ignore it).
    """

    description: str
    method_config: Any
    num_rays: int = DEFAULT_NUM_RAYS


def cpu_presets() -> Dict[str, Preset]:
    """The ``cpu`` preset of every built-in method (see the module docstring)."""
    return {
        "ngp": Preset(
            "Instant-NGP for a few CPU cores: 512 marching steps across the box diagonal, 2^16 samples "
            "per step (at most 8192 rays), occupancy updates on 1/8 of the cells after 64 steps, "
            "cone steps t/64 on unbounded scenes",
            NGPConfig(
                steps_per_diagonal=512,
                unbounded_cone_angle=1.0 / 64,
                target_samples_per_step=65536,
                max_rays=8192,
                grid=OccupancyGridConfig(update_fraction=0.125, warmup_steps=64),
            ),
            num_rays=1024,
        ),
        "gaussians": Preset(
            "3DGS for a few thousand CPU steps: 50k random initial Gaussians, SH degree raised every "
            "500 steps, densification stops at step 2500, coarse to fine (1/4, 1/2, full) on images of 256 px and more",
            dataclasses.replace(
                GaussiansConfig(),
                init_num_random=50_000,
                sh_degree_interval=500,
                strategy=DefaultStrategy(refine_stop_iter=2500),
                num_downscales=2,
                coarse_min_side=128,
            ),
            num_rays=4096,  # unused: a step renders one whole image
        ),
        "nerf": Preset("NeRF with 256 rays per step", NeRFConfig(), num_rays=256),
        "mipnerf": Preset("Mip-NeRF with 256 rays per step", MipNeRFConfig(), num_rays=256),
    }


PRESET_NAMES = ("paper", "cpu")


def default_preset_name(device: torch.device) -> str:
    return "cpu" if device.type == "cpu" else "paper"


def paper_preset(config_cls: type) -> Preset:
    """Each paper's settings: the method config's defaults."""
    return Preset("the paper's settings", config_cls(), DEFAULT_NUM_RAYS)
