"""The live web viewer (``langfield view RUN``, ``langfield train ... --viewer``), built on viser.

* :mod:`~langfield.viewer.cameras`: viser's camera <-> :class:`~langfield.types.Cameras` (exact,
  both OpenCV), image bands, the resolution policy (small while moving, full at rest);
* :mod:`~langfield.viewer.scene_view`: the render function (rgb / depth / accumulation / normals,
  relevancy and segmentation with a language field), drawn band by band so it can be superseded;
* :mod:`~langfield.viewer.render_loop`: one render thread per client;
* :mod:`~langfield.viewer.callback`: the trainer callback (status, curves, pause/resume, render windows);
* :mod:`~langfield.viewer.server`: the viser server and its GUI (modes, queries, training, camera paths).

viser is optional (``pip install -e ".[viewer]"``) and imported only when a viewer starts.
Submodules are imported on first use (PEP 562).
"""

from __future__ import annotations

from langfield._lazy import lazy_exports

_EXPORTS = {
    "ResolutionPolicy": "cameras",
    "cameras_from_viser": "cameras",
    "viser_pose_from_c2w": "cameras",
    "SceneView": "scene_view",
    "ViewSettings": "scene_view",
    "ClientRenderLoop": "render_loop",
    "CameraState": "render_loop",
    "ViewerCallback": "callback",
    "Viewer": "server",
    "ViewerUnavailableError": "server",
    "host_warning": "server",
    "open_scene_view": "server",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
