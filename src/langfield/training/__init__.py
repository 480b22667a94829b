"""One generic trainer for every method, chunked camera rendering, checkpoints and torchrun/DDP.

The trainer talks to methods only through :class:`langfield.methods.base.Method`
(``before_train_step``, ``outputs``/``forward``, ``losses``, ``rgb_of``, ``optimizers``,
``render_rays``, ``extra_state``).
"""

from langfield.training.checkpoint import (
    CheckpointManager,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from langfield.training.distributed import DistributedInfo, cleanup_distributed, init_distributed
from langfield.training.render import render_camera, render_image_set
from langfield.training.trainer import NonFiniteLossError, Trainer, TrainerConfig, seed_everything, set_deterministic

__all__ = [
    "CheckpointManager",
    "DistributedInfo",
    "NonFiniteLossError",
    "Trainer",
    "TrainerConfig",
    "capture_rng_state",
    "cleanup_distributed",
    "init_distributed",
    "load_checkpoint",
    "render_camera",
    "render_image_set",
    "restore_rng_state",
    "save_checkpoint",
    "seed_everything",
    "set_deterministic",
]
