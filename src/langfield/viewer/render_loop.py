"""One render thread per browser client: low resolution while the camera moves, full when it rests,
and a newer camera always supersedes the render in flight.

The loop knows nothing about viser: it is fed :class:`CameraState` snapshots (``update``) and
hands finished images to ``show``. Every camera update or settings change bumps a version number;
a render started for an older version is cancelled between bands (``SceneView.render``'s
``cancelled``) and its image is never shown.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np

from langfield.types import Cameras
from langfield.viewer.cameras import ResolutionPolicy, cameras_from_viser

__all__ = ["CameraState", "ClientRenderLoop", "RenderStats"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CameraState:
    """A client's camera as viser reports it (see :func:`langfield.viewer.cameras.cameras_from_viser`).

    Attributes:
        wxyz: ``[4]`` camera-to-world rotation (OpenCV axes), scalar first.
        position: ``[3]`` camera centre.
        fov_y: vertical field of view, radians.
        width, height: the client's canvas size in pixels.
    """

    wxyz: Tuple[float, float, float, float]
    position: Tuple[float, float, float]
    fov_y: float
    width: int
    height: int

    def cameras(self, width: int, height: int) -> Cameras:
        return cameras_from_viser(self.wxyz, self.position, self.fov_y, width, height)


@dataclass
class RenderStats:
    """What the loop has done (read by the GUI and by tests)."""

    renders: int = 0  #: images shown
    full_renders: int = 0  #: of which at rest resolution
    cancelled: int = 0  #: renders superseded in flight
    errors: int = 0
    last_size: Tuple[int, int] = (0, 0)  #: (width, height) of the last image shown
    last_seconds: float = 0.0  #: time of the last render
    last_error: str = ""


class ClientRenderLoop:
    """The render thread of one client.

    Args:
        render: ``(cameras, cancelled) -> uint8 [H, W, 3] | None`` (``None``: cancelled), e.g. a
            :class:`~langfield.viewer.scene_view.SceneView` bound to the current settings.
        show: receives each finished image (e.g. ``client.scene.set_background_image``).
        policy: render sizes and the rest delay.
        on_error: receives the message of a render that failed (bad query, no normals, ...).
        clock: time source (tests pass a fake one).
    """

    def __init__(
        self,
        render: Callable[[Cameras, Callable[[], bool]], Optional[np.ndarray]],
        show: Callable[[np.ndarray], None],
        policy: ResolutionPolicy = ResolutionPolicy(),
        *,
        on_error: Callable[[str], None] = lambda msg: None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "langfield-viewer-render",
    ) -> None:
        self._render, self._show, self.policy = render, show, policy
        self._on_error, self._clock = on_error, clock
        self._cond = threading.Condition()
        self._camera: Optional[CameraState] = None
        self._version = 0
        self._updated_at = -float("inf")
        self._done: Tuple[int, bool] = (-1, False)  # (version, at full resolution) last shown
        self._stopped = False
        self._drawing = False  # a render is in flight
        self._dirty = False  # redraw once the render in flight is shown (refresh(supersede=False))
        self.stats = RenderStats()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # ------------------------------------------------------------------ feeding
    def start(self) -> "ClientRenderLoop":
        self._thread.start()
        return self

    def update(self, camera: CameraState) -> None:
        """A new camera from the client: supersedes any render in flight; renders small first."""
        with self._cond:
            self._camera = camera
            self._version += 1
            self._updated_at = self._clock()
            self._cond.notify_all()

    def refresh(self, supersede: bool = True) -> None:
        """Redraw the current camera at full resolution.

        ``supersede=True`` (settings changed) cancels the render in flight; ``supersede=False`` (the
        scene changed as it trains) lets it finish and redraws after it, so frequent refreshes
        never starve a slow render.
        """
        with self._cond:
            if not supersede and self._drawing:
                self._dirty = True
                return
            self._version += 1
            self._updated_at = -float("inf")  # not a camera motion: go straight to full resolution
            self._cond.notify_all()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def version(self) -> int:
        """Bumped by every camera update and refresh."""
        return self._version

    @property
    def up_to_date(self) -> bool:
        """Whether the newest camera and settings are shown at full resolution."""
        with self._cond:
            return self._done == (self._version, True)

    def wait_for_renders(self, count: int, timeout: float) -> bool:
        """Block until ``stats.renders >= count`` (tests); returns whether it happened."""
        with self._cond:
            return self._cond.wait_for(lambda: self.stats.renders >= count, timeout)

    # ------------------------------------------------------------------ the thread
    def next_job(self, now: float) -> Tuple[Optional[float], Optional[Tuple[int, CameraState, bool]]]:
        """What to do at time ``now``: ``(wait_seconds, None)`` or ``(None, (version, camera, full))``.

        The policy in one place (called under the lock): nothing to draw until a camera arrived; a
        moving camera (updated less than ``rest_seconds`` ago) is drawn once small per version; a
        resting camera is drawn at full size once per version.
        """
        if self._camera is None:
            return None if self._stopped else 3600.0, None
        resting = self.policy.is_resting(now, self._updated_at)
        done_version, done_full = self._done
        if resting:
            if done_version == self._version and done_full:
                return 3600.0, None
            return None, (self._version, self._camera, True)
        if done_version == self._version:  # drawn small already: wait for rest (or a newer camera)
            return max(1e-3, self._updated_at + self.policy.rest_seconds - now), None
        return None, (self._version, self._camera, False)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    wait, job = self.next_job(self._clock())
                    if job is not None:
                        break
                    self._cond.wait(wait)
                self._drawing = True
            version, camera, full = job
            try:
                self._draw(version, camera, full)
            finally:
                with self._cond:
                    self._drawing = False
                    if self._dirty:
                        self._dirty = False
                        self._version += 1
                        self._updated_at = -float("inf")

    def _draw(self, version: int, camera: CameraState, full: bool) -> None:
        start = self._clock()
        cancelled = lambda: self._version != version or self._stopped  # noqa: E731
        try:
            width, height = self.policy.size(camera.width, camera.height, moving=not full)
            image = self._render(camera.cameras(width, height), cancelled)
        except (ValueError, TimeoutError) as err:  # bad input (InputError is one; the CLI's policy too): say it, draw nothing
            with self._cond:
                self.stats.errors += 1
                self.stats.last_error = str(err)
                self._done = (version, True)
            self._on_error(str(err))
            return
        except Exception as err:  # a bug: log it with its traceback, keep the thread alive
            logger.exception("viewer render failed")
            with self._cond:
                self.stats.errors += 1
                self.stats.last_error = f"{type(err).__name__}: {err}"
                self._done = (version, True)
            self._on_error(f"render failed: {type(err).__name__}: {err}")
            return
        if image is None or cancelled():
            with self._cond:
                self.stats.cancelled += 1
            return
        self._show(image)
        with self._cond:
            self._done = (version, full)
            self.stats.renders += 1
            self.stats.full_renders += int(full)
            self.stats.last_size = (int(image.shape[1]), int(image.shape[0]))
            self.stats.last_seconds = self._clock() - start
            self._cond.notify_all()
