"""The viewer's side of training: a :class:`~langfield.training.callbacks.TrainerCallback` that
collects step, loss, PSNR, rays/s and ETA, pauses and resumes, and opens *render windows*.

A render must never run while the trainer steps (the step changes parameters, densification
resizes them, ``render_camera`` switches the method to eval mode and back). So the viewer's
render threads draw only while the trainer is parked in :meth:`ViewerCallback.on_sync` — the
trainer's own sync point, where a callback may block — and the loop itself is never edited:

* a render thread enters :meth:`ViewerCallback.render_access` and waits;
* at the next sync point the trainer sees a waiting render and parks for at most
  ``max_window_seconds``, and only if it trained at least ``min_train_seconds`` since the last
  window (so a client dragging its camera costs training at most about half its time);
* while paused, or after training ended, the trainer is parked and renders run freely.

On CUDA the trainer syncs only at log, eval and checkpoint steps, so renders during training
come at ``log_every`` intervals there.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional

from langfield.training.callbacks import TrainerCallback

if TYPE_CHECKING:  # annotations only
    from langfield.training.trainer import Trainer

__all__ = ["TrainingStatus", "ViewerCallback", "estimate_eta"]


def estimate_eta(step: int, max_steps: int, elapsed_s: float, start_step: int, start_elapsed_s: float,
                 max_seconds: Optional[float] = None) -> Optional[float]:  # fmt: skip
    """Seconds left: the remaining steps at the mean rate since ``start_step`` (this ``train()``
    call), capped by what is left of a ``max_seconds`` budget; ``None`` before a step was timed.

    Example:
        >>> from langfield.viewer.callback import estimate_eta
        >>> estimate_eta(step=100, max_steps=1000, elapsed_s=20.0, start_step=0, start_elapsed_s=0.0)
        180.0
        >>> estimate_eta(100, 1000, 20.0, 0, 0.0, max_seconds=30.0)  # the budget binds first
        10.0
    """
    steps, seconds = step - start_step, elapsed_s - start_elapsed_s
    if steps <= 0 or seconds <= 0:
        return None
    eta = max(0, max_steps - step) * seconds / steps
    if max_seconds is not None:
        eta = min(eta, max(0.0, max_seconds - elapsed_s))
    return eta


@dataclass
class TrainingStatus:
    """What the training panel shows (the latest values and the curves)."""

    step: int = 0
    max_steps: int = 0
    loss: Optional[float] = None
    psnr: Optional[float] = None
    rays_per_s: Optional[float] = None
    eta_s: Optional[float] = None
    elapsed_s: float = 0.0
    paused: bool = False
    state: str = "waiting"  #: waiting | training | paused | done
    steps: List[int] = field(default_factory=list)  #: curve x: the logged steps
    losses: List[float] = field(default_factory=list)
    psnrs: List[float] = field(default_factory=list)  #: NaN where a record had no PSNR

    def markdown(self) -> str:
        """The status as a short markdown table."""

        def fmt(v: Optional[float], spec: str) -> str:
            return "-" if v is None or not math.isfinite(v) else format(v, spec)

        eta = "-" if self.eta_s is None else time.strftime("%H:%M:%S", time.gmtime(self.eta_s))
        rays = "-" if self.rays_per_s is None else f"{self.rays_per_s / 1e3:,.1f}k"
        return (
            f"**{self.state}** step {self.step:,} / {self.max_steps:,}\n\n"
            f"| loss | PSNR | rays/s | ETA |\n|---|---|---|---|\n"
            f"| {fmt(self.loss, '.4g')} | {fmt(self.psnr, '.2f')} | {rays} | {eta} |"
        )


class ViewerCallback(TrainerCallback):
    """Training status, pause/resume and render windows for the viewer (see the module docstring).

    Args:
        max_window_seconds: longest the trainer waits for renders at one sync point.
        min_train_seconds: shortest training time between two render windows.
        max_curve_points: the curves keep every ``k``-th logged record beyond this many points.

    ``listeners`` are called with the :class:`TrainingStatus` after every log record and every
    state change (the viewer updates its GUI there); a listener must not block.
    """

    def __init__(self, max_window_seconds: float = 0.25, min_train_seconds: float = 0.25, max_curve_points: int = 2000):
        self.max_window_seconds = max_window_seconds
        self.min_train_seconds = min_train_seconds
        self.max_curve_points = max_curve_points
        self.status = TrainingStatus()
        self.listeners: List[Callable[[TrainingStatus], None]] = []
        self._cond = threading.Condition()
        self._parked = True  # nothing trains until on_train_start
        self._waiting = 0
        self._active = 0
        self._last_window_end = -math.inf
        self._start = (0, 0.0)
        self._stop_requested = False

    # ------------------------------------------------------------------ controls (any thread)
    def pause(self) -> None:
        with self._cond:
            self.status.paused = True
            if self.status.state == "training":
                self.status.state = "paused"
            self._cond.notify_all()
        self._notify()

    def resume(self) -> None:
        with self._cond:
            self.status.paused = False
            if self.status.state == "paused":
                self.status.state = "training"
            self._cond.notify_all()
        self._notify()

    def toggle_pause(self) -> bool:
        """Pause when running, resume when paused; returns whether it is paused now."""
        paused = not self.status.paused
        self.pause() if paused else self.resume()
        return paused

    def request_stop(self) -> None:
        """Ask the trainer to checkpoint and return at its next sync point (also resumes a pause)."""
        with self._cond:
            self._stop_requested = True
            self.status.paused = False
            self._cond.notify_all()

    @contextmanager
    def render_access(self, timeout: Optional[float] = None) -> Iterator[None]:
        """Hold the method for one render (a band): waits until the trainer is parked.

        Raises ``TimeoutError`` when the trainer did not park within ``timeout`` seconds.
        """
        with self._cond:
            self._waiting += 1
            self._cond.notify_all()
            try:
                if not self._cond.wait_for(lambda: self._parked, timeout):
                    raise TimeoutError("the trainer did not reach a sync point in time")
            finally:
                self._waiting -= 1
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    # ------------------------------------------------------------------ trainer hooks (main thread)
    def on_train_start(self, trainer: "Trainer") -> None:
        with self._cond:
            self._start = (trainer.step, trainer.elapsed_seconds)
            self.status.max_steps = trainer.config.max_steps
            self.status.step = trainer.step
            self.status.state = "paused" if self.status.paused else "training"
            self._parked = False  # no new render gets in; the ones inside finish their band
            self._wait_out_renders()
            self._last_window_end = time.monotonic()
        self._notify()

    def on_sync(self, trainer: "Trainer") -> None:
        with self._cond:
            self.status.step = trainer.step
            if self._stop_requested:
                self._stop_requested = False
                trainer.request_stop()
                return
            now = time.monotonic()
            window = self._waiting > 0 and now - self._last_window_end >= self.min_train_seconds
            if not (window or self.status.paused):
                return
            self._parked = True
            self._cond.notify_all()
            deadline = now + self.max_window_seconds
            # a pause: until resumed; a render window: until nobody waits or holds, or the time is up
            while not self._stop_requested:
                if self.status.paused:
                    self._cond.wait(0.1)
                    continue
                remaining = deadline - time.monotonic()
                if (self._waiting == 0 and self._active == 0) or remaining <= 0:
                    break
                self._cond.wait(remaining)
            self._parked = False  # no new render gets in; the ones inside finish their band
            self._wait_out_renders()
            self._last_window_end = time.monotonic()
            if self._stop_requested:
                self._stop_requested = False
                trainer.request_stop()

    def on_log(self, trainer: "Trainer", record: Dict[str, Any]) -> None:
        st = self.status
        st.step = int(record.get("step", trainer.step))
        st.loss = record.get("loss")
        st.psnr = record.get("psnr")
        st.rays_per_s = record.get("rays_per_s")
        st.elapsed_s = float(record.get("elapsed_s", trainer.elapsed_seconds))
        st.eta_s = estimate_eta(st.step, trainer.config.max_steps, st.elapsed_s, *self._start, trainer.config.max_seconds)
        if st.loss is not None:
            st.steps.append(st.step)
            st.losses.append(float(st.loss))
            st.psnrs.append(float(st.psnr) if st.psnr is not None else math.nan)
            if len(st.steps) > self.max_curve_points:  # thin the curves: keep every other point
                st.steps[:], st.losses[:], st.psnrs[:] = st.steps[::2], st.losses[::2], st.psnrs[::2]
        self._notify()

    def on_train_end(self, trainer: "Trainer", record: Dict[str, Any]) -> None:
        with self._cond:
            self.status.state = "done"
            self.status.step = trainer.step
            self.status.eta_s = 0.0
            self._parked = True  # renders run freely from now on
            self._cond.notify_all()
        self._notify()

    # ------------------------------------------------------------------ helpers
    def _wait_out_renders(self) -> None:
        while self._active > 0:
            self._cond.wait(0.05)

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener(self.status)
