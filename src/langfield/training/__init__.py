"""The one generic trainer, its callbacks, checkpoints, evaluation and torchrun/DDP helpers.

The trainer talks to methods only through :class:`langfield.methods.base.Method`
(``before_train_step``, ``outputs``/``forward``, ``losses``, ``metrics``, ``optimizers``,
``make_sampler``, ``after_train_step``, ``extra_state``) and to samplers through
:class:`langfield.data.samplers.Sampler`.
"""

from langfield.training.callbacks import TrainerCallback
from langfield.training.checkpoint import (
    CheckpointManager,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from langfield.training.distributed import DistributedInfo, cleanup_distributed, init_distributed
from langfield.training.trainer import NonFiniteLossError, Trainer, TrainerConfig, seed_everything, set_deterministic

__all__ = [
    "CheckpointManager",
    "DistributedInfo",
    "NonFiniteLossError",
    "Trainer",
    "TrainerCallback",
    "TrainerConfig",
    "capture_rng_state",
    "cleanup_distributed",
    "init_distributed",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "seed_everything",
    "set_deterministic",
]
