"""Trainer callbacks: how a viewer, a logger or an experiment watches and steers training.

The trainer calls every hook on the main process only, at its *sync points* — where it already
reads values back from the device (every step on CPU; on CUDA at log, eval and checkpoint steps) —
so a callback never adds a CPU-GPU synchronisation of its own. A callback may block (a viewer's
"pause" waits in :meth:`TrainerCallback.on_sync`) and may ask the trainer to stop cleanly with
``trainer.request_stop()`` (it checkpoints and returns at the next sync point).

Example::

    class PrintLoss(TrainerCallback):
        def on_log(self, trainer, record):
            print(record["step"], record["loss"])

    Trainer(method, config, dataset=ds, callbacks=[PrintLoss()]).train()
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Sequence

if TYPE_CHECKING:  # the trainer imports this module; annotations only
    from langfield.training.trainer import Trainer

__all__ = ["TrainerCallback", "CallbackList"]


class TrainerCallback:
    """Base class with every hook a no-op; override the ones you need.

    Hooks receive the :class:`~langfield.training.trainer.Trainer` (read ``trainer.step``,
    ``trainer.elapsed_seconds``, ``trainer.method``; call ``trainer.request_stop()``).
    """

    def on_train_start(self, trainer: "Trainer") -> None:
        """Before the first step of a ``train()`` call (also after a resume)."""

    def on_sync(self, trainer: "Trainer") -> None:
        """At every sync point, after ``trainer.step`` was incremented (may block, e.g. pause)."""

    def on_log(self, trainer: "Trainer", record: Dict[str, Any]) -> None:
        """At log steps with the ``"train"`` record (losses, metrics, lr, rays/s, elapsed)."""

    def on_eval(self, trainer: "Trainer", record: Dict[str, Any]) -> None:
        """After a periodic evaluation with its record (PSNR/SSIM of a few held-out views)."""

    def on_checkpoint(self, trainer: "Trainer", path: Path) -> None:
        """After a checkpoint was written (``path`` is complete on disk)."""

    def on_train_end(self, trainer: "Trainer", record: Dict[str, Any]) -> None:
        """When ``train()`` returns normally, with the last ``"train"`` record."""


class CallbackList(TrainerCallback):
    """Calls each callback in order (what the trainer holds)."""

    def __init__(self, callbacks: Sequence[TrainerCallback] = ()) -> None:
        callbacks = list(callbacks)
        for cb in callbacks:
            if not isinstance(cb, TrainerCallback):
                raise TypeError(f"callbacks must be TrainerCallback instances, got {type(cb).__name__}")
        self.callbacks = callbacks

    def __len__(self) -> int:
        return len(self.callbacks)

    def on_train_start(self, trainer: "Trainer") -> None:
        for cb in self.callbacks:
            cb.on_train_start(trainer)

    def on_sync(self, trainer: "Trainer") -> None:
        for cb in self.callbacks:
            cb.on_sync(trainer)

    def on_log(self, trainer: "Trainer", record: Dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_log(trainer, record)

    def on_eval(self, trainer: "Trainer", record: Dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_eval(trainer, record)

    def on_checkpoint(self, trainer: "Trainer", path: Path) -> None:
        for cb in self.callbacks:
            cb.on_checkpoint(trainer, path)

    def on_train_end(self, trainer: "Trainer", record: Dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_train_end(trainer, record)
