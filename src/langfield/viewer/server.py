"""The live web viewer on viser: one render thread per browser, GUI for render modes, language
queries, training status and camera paths.

Example::

    from langfield.viewer import Viewer, open_scene_view
    viewer = Viewer(open_scene_view("outputs/lego")).start()   # 127.0.0.1, a free port
    print(viewer.url)
    viewer.wait()                                              # until Ctrl+C

The viewer takes a render function (:class:`~langfield.viewer.scene_view.SceneView`) and,
while a run trains, the trainer callback (:class:`~langfield.viewer.callback.ViewerCallback`);
it knows nothing else about the trainer. viser is an optional dependency
(``pip install -e ".[viewer]"``); it is imported when a viewer starts.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from langfield._checks import InputError, check_int_range
from langfield.data.camera_path_json import CameraPath, fov_from_focal, read_camera_path, write_camera_path
from langfield.geometry.camera_paths import interpolate_path
from langfield.language.distillation import FIELD_FILE, LANGUAGE_DIR
from langfield.runs.language import load_language_scene
from langfield.runs.loading import load_run
from langfield.runs.spec import check_run_dir
from langfield.viewer.callback import TrainingStatus, ViewerCallback
from langfield.viewer.cameras import ResolutionPolicy, viser_pose_from_c2w
from langfield.viewer.render_loop import CameraState, ClientRenderLoop
from langfield.viewer.scene_view import SceneView, ViewSettings, parse_labels

__all__ = ["LOCALHOST", "Viewer", "ViewerUnavailableError", "host_warning", "import_viser", "open_scene_view"]

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
LOCALHOST = "127.0.0.1"


class ViewerUnavailableError(InputError):
    """viser is not installed."""


def import_viser() -> Any:
    """The viser module, or :class:`ViewerUnavailableError` saying how to install it."""
    try:
        import viser
    except ImportError:
        raise ViewerUnavailableError(
            "the viewer needs viser: pip install -e \".[viewer]\" (or pip install 'viser>=1.1')"
        ) from None
    return viser


def host_warning(host: str) -> Optional[str]:
    """The warning to print when ``host`` exposes the viewer beyond this machine (else ``None``)."""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        if host == "localhost":
            return None
    return (f"the viewer listens on {host}: anyone who can reach this machine on that address can see the "
            "scene and control training (pause it). Use the default 127.0.0.1 with an SSH tunnel unless you "
            "mean to share it.")  # fmt: skip


def open_scene_view(run_dir: PathLike, device: Optional[str] = None, chunk: Optional[int] = None) -> SceneView:
    """A :class:`SceneView` of a trained run, with its language field when ``run_dir`` has one.

    Errors are the loaders' (:func:`langfield.runs.loading.load_run`): a folder that is not a run,
    a missing or corrupt checkpoint, ... each an :class:`~langfield._checks.InputError` naming the file.
    """
    run_dir = check_run_dir(run_dir)
    if (run_dir / LANGUAGE_DIR / FIELD_FILE).is_file():
        scene = load_language_scene(run_dir, device)
        return SceneView(scene.method, scene.dataset, scene, chunk=chunk)
    run = load_run(run_dir, device)
    return SceneView(run.method, run.dataset, chunk=chunk)


class Viewer:
    """A viser server streaming renders of a :class:`SceneView` to every connected browser.

    Args:
        view: what to render.
        host: address to bind (default ``127.0.0.1``: this machine only; see :func:`host_warning`).
        port: port to bind; ``0`` or ``None`` picks a free one (viser moves on to the next port
            when the given one is taken; :attr:`url` is the one bound).
        policy: render sizes while moving / at rest.
        callback: the trainer callback of a run being trained (adds the training panel).
        camera_path_file: default file of the camera-path panel's Save / Load.
        title: the GUI panel's label.
    """

    def __init__(
        self,
        view: SceneView,
        *,
        host: str = LOCALHOST,
        port: Optional[int] = 0,
        policy: ResolutionPolicy = ResolutionPolicy(),
        callback: Optional[ViewerCallback] = None,
        camera_path_file: Optional[PathLike] = None,
        title: str = "langfield",
    ) -> None:
        if not isinstance(host, str) or not host.strip():
            raise InputError(f"host (--host): expected an address, got {host!r}")
        self.host, self.port = host, check_int_range(port or 0, "port (--port)", lo=0, hi=65535)
        self.view, self.policy, self.callback, self.title = view, policy, callback, title
        if callback is not None:
            view.gate = lambda: callback.render_access(timeout=60.0)
        self.camera_path_file = Path(camera_path_file) if camera_path_file else Path("camera_path.json")
        self.settings = ViewSettings()
        self.loops: Dict[int, ClientRenderLoop] = {}
        self.last_images: Dict[int, np.ndarray] = {}  # client id -> the last image sent
        self._all_loops: List[ClientRenderLoop] = []  # joined on stop (a disconnected client's too)
        self.keyframes: List[Tuple[torch.Tensor, float]] = []  # (OpenCV c2w [3, 4], vertical fov degrees)
        self.server: Any = None
        self._splats: Any = None  # viser's splat node while "Splat in the browser" is on
        self._lock = threading.Lock()
        self._gui: Dict[str, Any] = {}
        self._last_panel_update = 0.0

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        if self.server is None:
            raise RuntimeError("the viewer is not started")
        host = self.server.get_host()
        shown = LOCALHOST if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
        return f"http://{shown}:{self.server.get_port()}"

    def start(self) -> "Viewer":
        viser = import_viser()
        self.server = viser.ViserServer(host=self.host, port=self.port, label=self.title, verbose=False)
        self._set_initial_camera()
        self._build_gui()
        self.server.on_client_connect(self._on_connect)
        self.server.on_client_disconnect(self._on_disconnect)
        if self.callback is not None:
            self.callback.listeners.append(self._on_training_status)
            self._on_training_status(self.callback.status)
        return self

    def stop(self) -> None:
        with self._lock:
            loops, self.loops, self._all_loops = self._all_loops, {}, []
        for loop in loops:
            loop.stop()
        if self.server is not None:
            self.server.stop()

    def wait(self) -> None:
        """Block until Ctrl+C, then stop."""
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    # ------------------------------------------------------------------ clients
    def _set_initial_camera(self) -> None:
        cam = self.view.initial_camera()
        _, position, forward, up = viser_pose_from_c2w(cam.c2w[0])
        distance = float(torch.as_tensor(position).sub(self.view.dataset.scene_box.float().mean(0)).norm()) or 1.0
        init = self.server.initial_camera
        init.position = position
        init.look_at = tuple(p + distance * f for p, f in zip(position, forward))
        init.up = up
        init.fov = math.radians(float(fov_from_focal(float(cam.Ks[0, 1, 1]), int(cam.heights[0]))))
        self.server.scene.set_up_direction(up)

    def _on_connect(self, client: Any) -> None:
        def show(image: np.ndarray) -> None:
            if self._splats is not None:  # the browser splats the cloud itself: no server renders over it
                return
            client.scene.set_background_image(image, format="jpeg", jpeg_quality=90)
            self.last_images[client.client_id] = image

        loop = ClientRenderLoop(
            lambda cams, cancelled: self.view.render(cams, self.settings, cancelled), show, self.policy,
            on_error=self._show_error, name=f"langfield-viewer-client-{client.client_id}",
        )  # fmt: skip
        with self._lock:
            self.loops[client.client_id] = loop
            self._all_loops.append(loop)
        loop.start()

        def state(camera: Any) -> CameraState:
            return CameraState(tuple(camera.wxyz), tuple(camera.position), float(camera.fov),
                               int(camera.image_width), int(camera.image_height))  # fmt: skip

        client.camera.on_update(lambda camera: loop.update(state(camera)))
        try:  # the camera may have arrived before the callback was attached: draw it now
            loop.update(state(client.camera))
        except AssertionError:  # viser asserts until the client sent its first camera
            pass

    def _on_disconnect(self, client: Any) -> None:
        with self._lock:
            loop = self.loops.pop(client.client_id, None)
        if loop is not None:
            loop.stop(timeout=0.0)

    def refresh(self, supersede: bool = True) -> None:
        """Redraw every client's current camera (see :meth:`ClientRenderLoop.refresh`)."""
        with self._lock:
            loops = list(self.loops.values())
        for loop in loops:
            loop.refresh(supersede)

    def set_settings(self, **changes: Any) -> None:
        """Change what is drawn (``mode``, ``query``, ``labels``) and redraw."""
        self.settings = replace(self.settings, **changes)
        self._show_error("")
        self.refresh()

    # ------------------------------------------------------------------ GUI
    def _build_gui(self) -> None:
        gui = self.server.gui
        with gui.add_folder("Render"):
            mode = gui.add_dropdown("Mode", options=list(self.view.modes), initial_value="rgb")
            mode.on_update(lambda _: self.set_settings(mode=mode.value))
            self._gui["mode"] = mode
            if self.view.language is not None:
                query = gui.add_text("Query", initial_value="", hint="relevancy of this text, e.g. 'red chair'")
                labels = gui.add_text("Labels", initial_value="", hint="comma-separated labels for segmentation")
                legend = gui.add_markdown("")
                query.on_update(lambda _: self._on_query(query.value))
                labels.on_update(lambda _: self._on_labels(labels.value))
                self._gui.update(query=query, labels=labels, legend=legend)
                teacher = self.view.language.teacher
                if teacher.simulated:
                    gui.add_markdown(f"language field distilled from a **simulated** teacher ({teacher.name})")
            if self.view.has_splats:
                splat = gui.add_checkbox("Splat in the browser", initial_value=False,
                                         hint="viser's own Gaussian splat renderer (degree-0 colour) instead of langfield's renders")  # fmt: skip
                splat.on_update(lambda _: self.show_splats(splat.value))
            self._gui["message"] = gui.add_markdown("")
        if self.callback is not None:
            self._build_training_gui()
        self._build_camera_path_gui()

    def show_splats(self, on: bool) -> None:
        """Show the Gaussian cloud through viser's splat renderer (``on``) or langfield's renders."""
        if on and self._splats is None:
            centers, covariances, rgbs, opacities = self.view.splats()
            self._splats = self.server.scene.add_gaussian_splats("/splats", centers=centers, covariances=covariances,
                                                                 rgbs=rgbs, opacities=opacities)  # fmt: skip
            for client in self.server.get_clients().values():
                client.scene.set_background_image(None)
        elif not on and self._splats is not None:
            self._splats.remove()
            self._splats = None
            self.refresh()

    def _show_error(self, message: str) -> None:
        handle = self._gui.get("message")
        if handle is not None:
            handle.content = f"**{message}**" if message else ""

    def _on_query(self, text: str) -> None:
        self._switch(replace(self.settings, query=text.strip()), "relevancy" if text.strip() else None)

    def _on_labels(self, text: str) -> None:
        try:
            labels = parse_labels(text)
        except InputError as err:
            self._show_error(f"labels: {err}")
            return
        self._gui["legend"].content = "  \n".join(
            f'<span style="color:{hex_}">&#9632;</span> {name}' for name, hex_ in self.view.legend(labels)
        ) + ("  \n&#9632; unknown: black" if labels else "")  # fmt: skip
        self._switch(replace(self.settings, labels=labels), "segmentation" if labels else None)

    def _switch(self, settings: ViewSettings, mode: Optional[str]) -> None:
        """Take ``settings``; show ``mode`` (the dropdown follows, and its callback redraws)."""
        self.settings = settings
        if mode is not None and self._gui["mode"].value != mode:
            self._gui["mode"].value = mode  # fires the dropdown's on_update: set_settings(mode=mode)
        else:
            self.set_settings()

    def _build_training_gui(self) -> None:
        gui, cb = self.server.gui, self.callback
        with gui.add_folder("Training"):
            self._gui["status"] = gui.add_markdown(cb.status.markdown())
            pause = gui.add_button("Pause")

            @pause.on_click
            def _(_: Any) -> None:
                paused = cb.toggle_pause()
                pause.label = "Resume" if paused else "Pause"

            self._gui["pause"] = pause
            empty = (np.zeros(0), np.zeros(0))
            self._gui["loss_plot"] = gui.add_uplot(empty, ({"label": "step"}, {"label": "loss", "stroke": "#e4572e"}),
                                                   title="loss", aspect=2.0)  # fmt: skip
            self._gui["psnr_plot"] = gui.add_uplot(empty, ({"label": "step"}, {"label": "PSNR (dB)", "stroke": "#1b998b"}),
                                                   title="PSNR", aspect=2.0)  # fmt: skip

    def _on_training_status(self, status: TrainingStatus) -> None:
        now = time.monotonic()
        if status.state == "training" and now - self._last_panel_update < 0.25:
            return  # at most 4 GUI updates a second while training
        self._last_panel_update = now
        if "status" not in self._gui:
            return
        self._gui["status"].content = status.markdown()
        self._gui["pause"].label = "Resume" if status.paused else "Pause"
        if status.steps:
            steps = np.asarray(status.steps, dtype=np.float64)
            self._gui["loss_plot"].data = (steps, np.asarray(status.losses, dtype=np.float64))
            self._gui["psnr_plot"].data = (steps, np.asarray(status.psnrs, dtype=np.float64))
        if status.state in ("training", "done"):
            self.refresh(supersede=False)  # show the scene as it trains, without cancelling a slow render

    # ------------------------------------------------------------------ camera paths
    def _build_camera_path_gui(self) -> None:
        gui = self.server.gui
        with gui.add_folder("Camera path", expand_by_default=False):
            add = gui.add_button("Add keyframe (current view)")
            clear = gui.add_button("Clear keyframes")
            frames = gui.add_number("Frames", initial_value=120, min=2, max=100000, step=1)
            fps = gui.add_number("FPS", initial_value=24, min=1, max=240, step=1)
            path_text = gui.add_text("File", initial_value=str(self.camera_path_file))
            save, load, preview = gui.add_button("Save"), gui.add_button("Load"), gui.add_button("Preview")
            info = gui.add_markdown("no keyframes")
        self._gui.update(keyframe_info=info)

        @add.on_click
        def _(event: Any) -> None:
            if event.client is not None:
                self.add_keyframe(event.client.camera)

        @clear.on_click
        def _(_: Any) -> None:
            self.keyframes.clear()
            self.server.scene.remove_by_name("/keyframes")
            self._keyframe_info("keyframes cleared")

        @save.on_click
        def _(event: Any) -> None:
            try:
                out = self.save_camera_path(path_text.value, int(frames.value), float(fps.value), event.client)
                self._keyframe_info(f"saved {out}")
            except InputError as err:
                self._keyframe_info(f"**{err}**")

        @load.on_click
        def _(_: Any) -> None:
            try:
                path = read_camera_path(path_text.value)
            except InputError as err:
                self._keyframe_info(f"**{err}**")
                return
            self.keyframes = [(path.c2w[i], float(path.fov_y_deg[i])) for i in range(len(path))]
            frames.value, fps.value = len(path), path.fps
            self._draw_keyframes()
            self._keyframe_info(f"loaded {len(path)} frames from {path_text.value} (as keyframes)")

        @preview.on_click
        def _(event: Any) -> None:
            if event.client is None or len(self.keyframes) < 2:
                self._keyframe_info("**preview needs two keyframes or more**")
                return
            path = self.camera_path(int(frames.value), float(fps.value), event.client.camera.aspect)
            threading.Thread(target=self._play, args=(event.client, path), daemon=True).start()

    def _keyframe_info(self, text: str) -> None:
        self._gui["keyframe_info"].content = f"{len(self.keyframes)} keyframe(s). {text}"

    def add_keyframe(self, camera: Any) -> None:
        """Add a client's current view (a viser ``CameraHandle``) as a keyframe."""
        cams = CameraState(tuple(camera.wxyz), tuple(camera.position), float(camera.fov), 64, 64).cameras(64, 64)
        self.keyframes.append((cams.c2w[0], math.degrees(float(camera.fov))))
        self._draw_keyframes()
        self._keyframe_info("added")

    def _draw_keyframes(self) -> None:
        scale = 0.05 * float((self.view.dataset.scene_box[1] - self.view.dataset.scene_box[0]).norm())
        for i, (c2w, fov) in enumerate(self.keyframes):
            wxyz, position, _, _ = viser_pose_from_c2w(c2w)
            self.server.scene.add_camera_frustum(f"/keyframes/{i}", fov=math.radians(fov), aspect=4 / 3, scale=scale,
                                                 wxyz=wxyz, position=position, color=(230, 120, 20))  # fmt: skip

    def camera_path(self, num_frames: int, fps: float, aspect: float, max_side: Optional[int] = None) -> CameraPath:
        """The keyframes interpolated to ``num_frames`` frames (positions by spline, rotations by slerp,
        fields of view linearly) at the viewer's full resolution for ``aspect``."""
        if len(self.keyframes) < 2:
            raise InputError("a camera path needs two keyframes or more (Add keyframe)")
        check_int_range(num_frames, "Frames", lo=2)
        keys = torch.stack([c2w for c2w, _ in self.keyframes]).float()
        c2w = interpolate_path(keys, num_frames)
        fovs = torch.tensor([fov for _, fov in self.keyframes], dtype=torch.float64)
        u = torch.linspace(0, len(fovs) - 1, num_frames, dtype=torch.float64)
        lo = u.floor().long().clamp(max=len(fovs) - 2)
        fov = fovs[lo] + (u - lo) * (fovs[lo + 1] - fovs[lo])
        side = max_side or self.policy.max_side
        width, height = (side, max(1, round(side / aspect))) if aspect >= 1 else (max(1, round(side * aspect)), side)
        return CameraPath(c2w, fov.float(), width, height, fps)

    def save_camera_path(self, file: PathLike, num_frames: int, fps: float, client: Any = None) -> Path:
        aspect = client.camera.aspect if client is not None else 4 / 3
        path = self.camera_path(num_frames, fps, aspect)
        return write_camera_path(file, path.c2w, path.fov_y_deg, path.width, path.height, fps=fps)

    def _play(self, client: Any, path: CameraPath) -> None:
        distance = 1.0
        for i in range(len(path)):
            wxyz, position, forward, up = viser_pose_from_c2w(path.c2w[i])
            with client.atomic():
                client.camera.position = position
                client.camera.look_at = tuple(p + distance * f for p, f in zip(position, forward))
                client.camera.up_direction = up
                client.camera.fov = math.radians(float(path.fov_y_deg[i]))
            time.sleep(1.0 / path.fps)
