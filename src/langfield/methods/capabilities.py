"""Capabilities a method declares by inheriting them (never probed with ``hasattr``).

Layers above ``methods`` (language fields, extraction, the viewer) ask
``isinstance(method, SharesRayWeights)`` and then call only what the capability promises.

* :class:`SharesRayWeights` — a density field whose evaluation compositing weights another head
  can reuse (LERF, Kerr et al. 2023, Sec. 3.2: the language field is rendered with the radiance
  field's own weights). Instant-NGP declares it.
* :class:`SplatsGaussians` — an explicit Gaussian cloud that projects into any camera, so extra
  per-Gaussian channels (LangSplat codes) go through the same rasteriser as colour. Gaussian
  splatting declares it.
"""

from __future__ import annotations

import abc
from typing import Dict, Tuple

from torch import Tensor

from langfield.fields.gaussian_cloud import GaussianCloud
from langfield.fields.language_fields import SplatView
from langfield.ops.splatting import SplatSettings
from langfield.types import Cameras, Rays, RenderOutput

__all__ = ["SharesRayWeights", "SplatsGaussians"]


class SharesRayWeights(abc.ABC):
    """A volumetric density field that shares its compositing weights (see the module docstring)."""

    @abc.abstractmethod
    def sample_weights(self, rays: Rays) -> Tuple[Tensor, Tensor, Tensor]:
        """Evaluation compositing weights of ``[R]`` rays (the same samples the colour render uses).

        Returns:
            ``(positions [N, 3], weights [N], ray_indices [N])`` packed samples, sorted by ray.
        """

    @abc.abstractmethod
    def render_rays_with_weights(self, rays: Rays, background: Tensor) -> Tuple[RenderOutput, Tensor, Tensor, Tensor]:
        """The evaluation render of ``[R]`` rays and the weights it composited with, from one pass
        (a language query shows the colour and renders features with the same weights).

        Returns:
            ``(render [R, *], positions [N, 3], weights [N], ray_indices [N])``, samples sorted by ray.
        """

    @abc.abstractmethod
    def field_bounds(self) -> Tensor:
        """``[2, 3]`` box (min, max) the density field lives in; a head over the same volume uses it."""

    @abc.abstractmethod
    def solid_points(self, min_opacity: float = 0.5) -> Tensor:
        """``[N, 3]`` points inside solid matter: centres of the cells whose opacity over one cell
        width is at least ``min_opacity`` (for extracting what a query selects in 3D)."""


class SplatsGaussians(abc.ABC):
    """An explicit cloud of 3D Gaussians rendered by the tiled rasteriser (see the module docstring)."""

    @abc.abstractmethod
    def gaussian_cloud(self) -> GaussianCloud:
        """The cloud itself (parameters in the normalised world frame)."""

    @abc.abstractmethod
    def project_view(self, cameras: Cameras) -> SplatView:
        """The cloud projected into a length-1 ``cameras`` (no gradients), ready to rasterise any channels."""

    @abc.abstractmethod
    def splat_settings(self) -> SplatSettings:
        """The rasteriser settings the colour is rendered with (tile size, backend, ...)."""

    @classmethod
    @abc.abstractmethod
    def cloud_from_state_dict(cls, state_dict: Dict[str, Tensor]) -> GaussianCloud:
        """The cloud stored in a checkpoint's ``model`` state dict, without building the method
        (exporting a run needs neither its dataset nor its scene description)."""
