"""What the viewer draws for one camera: the render function behind every client's stream.

:class:`SceneView` wraps a scene method (and, when the run has one, its language field) as a
function ``render(cameras, settings, cancelled) -> uint8 [H, W, 3] | None``. The image is drawn in
horizontal bands (:func:`langfield.viewer.cameras.band_camera`); between bands ``cancelled()`` is
asked, so a newer camera supersedes a render in flight within one band's time. Each band is drawn
inside ``gate()``: a no-op lock for a finished run, the trainer callback's render window while a
run trains (:class:`langfield.viewer.training.ViewerCallback`).

Modes: ``rgb``, ``depth`` (coloured, range from the whole image), ``accumulation``, ``normals``
(methods that render them; others raise :class:`ModeUnavailable`), and with a language field
``relevancy`` (LERF relevancy of the typed query over the render) and ``segmentation`` (label
colours of the typed comma-separated labels over the render).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, ContextManager, List, Optional, Sequence, Tuple

import numpy as np
import torch

from langfield._checks import InputError
from langfield.data.dataset import SceneDataset
from langfield.geometry.rotations import quaternion_to_matrix
from langfield.geometry.spherical_harmonics import sh_dc_to_rgb
from langfield.io.colormaps import colorize_depth, colorize_normals, heatmap_overlay
from langfield.io.images import to_uint8
from langfield.language.queries import check_label_list, colorize_labels, label_colors
from langfield.language.scene import LanguageScene
from langfield.methods.base import SceneMethod
from langfield.methods.capabilities import SplatsGaussians
from langfield.types import Cameras
from langfield.viewer.cameras import band_camera

__all__ = ["BASE_MODES", "LANGUAGE_MODES", "ModeUnavailable", "SceneView", "ViewSettings", "parse_labels", "splat_arrays"]

BASE_MODES = ("rgb", "depth", "accumulation", "normals")
LANGUAGE_MODES = ("relevancy", "segmentation")


class ModeUnavailable(InputError):
    """The chosen render mode cannot be drawn (no normals, no query, no language field)."""


@dataclass(frozen=True)
class ViewSettings:
    """What to draw: ``mode`` and, for the language modes, the query text / label list."""

    mode: str = "rgb"
    query: str = ""
    labels: Tuple[str, ...] = ()


def parse_labels(text: str) -> Tuple[str, ...]:
    """``"chair, table ,floor"`` -> ``("chair", "table", "floor")`` (validated, empty items dropped).

    Example:
        >>> from langfield.viewer.scene_view import parse_labels
        >>> parse_labels("sphere, box ,, ground")
        ('sphere', 'box', 'ground')
    """
    items = [s.strip() for s in text.split(",") if s.strip()]
    try:
        return tuple(check_label_list(items)) if items else ()
    except ValueError as err:
        raise InputError(str(err)) from None


def splat_arrays(method: SplatsGaussians) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A Gaussian cloud for a browser-side splat renderer (viser's ``add_gaussian_splats``).

    Returns ``(centers [N, 3], covariances [N, 3, 3], rgbs [N, 3], opacities [N, 1])`` as float32
    numpy arrays in the normalised world frame: ``Sigma = R diag(s)^2 R^T`` from each Gaussian's
    unit quaternion ``(w, x, y, z)`` and scales, colour from the degree-0 SH term only (the
    browser renderer has no view-dependent colour), opacity after the sigmoid.
    """
    with torch.no_grad():
        cloud = method.gaussian_cloud()
        R = quaternion_to_matrix(cloud.quats.float())
        s = cloud.scales.float()
        cov = R @ torch.diag_embed(s * s) @ R.transpose(-1, -2)
        rgb = sh_dc_to_rgb(cloud.sh[:, 0, :].float()).clamp(0, 1)
        arrays = (cloud.means.float(), cov, rgb, cloud.opacities.float().reshape(-1, 1))
        return tuple(a.detach().cpu().numpy().astype(np.float32) for a in arrays)  # type: ignore[return-value]


class SceneView:
    """Render a scene method for the viewer (see the module docstring).

    Args:
        method: a scene method in eval mode (or being trained: pass ``gate``).
        dataset: its dataset (background colour, cameras for the initial view).
        language: the run's :class:`LanguageScene`, or ``None``.
        chunk: rays per ``render_camera`` call (``None``: the method's device default).
        band_pixels: pixels per band (a band is at least one row).
        gate: a context manager factory entered around every band (default: one lock shared by
            every client's thread, so two renders never run on the model at once).
    """

    def __init__(
        self,
        method: SceneMethod,
        dataset: SceneDataset,
        language: Optional[LanguageScene] = None,
        *,
        chunk: Optional[int] = None,
        band_pixels: int = 16384,
        gate: Optional[Callable[[], ContextManager]] = None,
    ) -> None:
        self.method, self.dataset, self.language = method, dataset, language
        self.chunk, self.band_pixels = chunk, band_pixels
        lock = threading.Lock()
        self.gate = gate if gate is not None else (lambda: lock)
        self._no_normals = False

    @property
    def has_splats(self) -> bool:
        """Whether the method is a Gaussian cloud the browser can also splat itself (:func:`splat_arrays`)."""
        return isinstance(self.method, SplatsGaussians)

    def splats(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:func:`splat_arrays` of the method, read inside the gate (never during a training step)."""
        if not self.has_splats:
            raise ModeUnavailable(f"{type(self.method).__name__} is not a Gaussian cloud")
        with self.gate():
            return splat_arrays(self.method)

    @property
    def modes(self) -> Tuple[str, ...]:
        return BASE_MODES + (LANGUAGE_MODES if self.language is not None else ())

    def initial_camera(self) -> Cameras:
        """The first training camera (OpenCV c2w), where a new client starts."""
        return self.dataset.split("train").cameras[0]

    # ------------------------------------------------------------------ render
    @torch.no_grad()
    def render(
        self, cameras: Cameras, settings: ViewSettings = ViewSettings(), cancelled: Callable[[], bool] = lambda: False
    ) -> Optional[np.ndarray]:
        """``uint8 [H, W, 3]`` of camera 0 of ``cameras`` in ``settings.mode``; ``None`` when cancelled."""
        mode = settings.mode
        if mode not in self.modes:
            raise ModeUnavailable(f"render mode {mode!r}: choose from {', '.join(self.modes)}"
                                  + ("" if self.language is not None else " (the run has no language field)"))  # fmt: skip
        if mode == "normals" and self._no_normals:
            raise ModeUnavailable(f"{type(self.method).__name__} does not render normals")
        if mode == "relevancy" and not settings.query.strip():
            raise ModeUnavailable("relevancy: type a query first")
        if mode == "segmentation" and not settings.labels:
            raise ModeUnavailable("segmentation: type a comma-separated label list first")
        height, width = int(cameras.heights[0]), int(cameras.widths[0])
        rows = max(1, self.band_pixels // width)
        parts: List[Tuple[torch.Tensor, ...]] = []
        for row0 in range(0, height, rows):
            if cancelled():
                return None
            band = band_camera(cameras, row0, min(rows, height - row0))
            with self.gate():
                parts.append(self._render_band(band, settings))
        return to_uint8(self._compose(parts, settings))

    def _render_band(self, band: Cameras, settings: ViewSettings) -> Tuple[torch.Tensor, ...]:
        mode, bg = settings.mode, self.dataset.eval_background()
        if mode == "relevancy":
            rel, view = self.language.relevancy(settings.query, band, 0)
            return (view.render.rgb.clamp(0, 1), rel)
        if mode == "segmentation":
            seg, view = self.language.segment(list(settings.labels), band, 0)
            return (view.render.rgb.clamp(0, 1), seg.labels)
        try:
            out = self.method.render_camera(band, bg, chunk=self.chunk, output_device="cpu", with_normals=mode == "normals")
        except ValueError as err:
            if mode != "normals":
                raise
            self._no_normals = True  # methods that cannot render normals raise ValueError (SceneMethod contract)
            raise ModeUnavailable(f"{type(self.method).__name__} does not render normals ({err})") from None
        if mode == "rgb":
            return (out.rgb.clamp(0, 1),)
        if mode == "normals":
            return (out.normals, out.accumulation)
        return (out.depth, out.accumulation)

    def _compose(self, parts: Sequence[Tuple[torch.Tensor, ...]], settings: ViewSettings) -> torch.Tensor:
        cat = [torch.cat([p[i] for p in parts], dim=0) for i in range(len(parts[0]))]
        mode = settings.mode
        if mode == "rgb":
            return cat[0]
        if mode == "depth":
            return colorize_depth(cat[0], cat[1])
        if mode == "accumulation":
            return cat[1].clamp(0, 1).expand(*cat[1].shape[:-1], 3)
        if mode == "normals":
            return colorize_normals(cat[0], cat[1])
        if mode == "relevancy":
            return heatmap_overlay(cat[0], cat[1])
        colors = colorize_labels(cat[1], len(settings.labels)).float() / 255.0
        return 0.35 * cat[0] + 0.65 * colors

    def legend(self, labels: Sequence[str]) -> List[Tuple[str, str]]:
        """``[(label, "#rrggbb")]`` of the segmentation colours (unknown pixels are black)."""
        palette = label_colors(len(labels)).tolist()
        return [(name, "#%02x%02x%02x" % tuple(rgb)) for name, rgb in zip(labels, palette)]
