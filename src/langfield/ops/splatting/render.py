"""One-call Gaussian splatting of a camera: project -> colour (SH) -> rasterise (Kerbl et al. 2023).

Stateless: takes tensors, never a model (STYLE.md principle 2). Colour and any extra channels
(e.g. language features) go through the same rasteriser in one pass, with the ray distance to
each Gaussian's mean appended as one more channel for the depth map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from langfield.geometry.spherical_harmonics import eval_sh
from langfield.ops.splatting.projection import Projection, project_gaussians
from langfield.ops.splatting.rasterize import BACKENDS, rasterize_gaussians
from langfield.types import RenderOutput

__all__ = ["SplatSettings", "SplatRender", "render_gaussians"]


@dataclass(frozen=True)
class SplatSettings:
    """Rasteriser options.

    Attributes:
        near, far: camera-z culling planes.
        eps2d: screen-space low-pass added to every 2D covariance (pixels^2).
        tile_size: tile edge in pixels (16 as the reference).
        backend: ``"auto" | "cpp" | "torch"`` (see :mod:`langfield.ops.splatting.rasterize`).
        render_depth: also render the expected ray distance (one extra channel).
    """

    near: float = 0.01
    far: float = 1e10
    eps2d: float = 0.3
    tile_size: int = 16
    backend: str = "auto"
    render_depth: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.near < self.far:
            raise ValueError(f"SplatSettings needs 0 <= near < far, got near={self.near}, far={self.far}")
        if self.eps2d < 0:
            raise ValueError(f"SplatSettings.eps2d must be >= 0, got {self.eps2d}")
        if self.tile_size < 1:
            raise ValueError(f"SplatSettings.tile_size must be >= 1, got {self.tile_size}")
        if self.backend not in BACKENDS:
            raise ValueError(f"SplatSettings.backend must be one of {BACKENDS}, got {self.backend!r}")


@dataclass(frozen=True)
class SplatRender:
    """A rendered camera plus the screen-space quantities densification needs.

    Attributes:
        render: :class:`RenderOutput` with ``[H, W, *]`` images (``features`` = extra channels).
        projection: the :class:`Projection`; ``projection.means2d`` is the view-space 2D mean
            whose gradient drives densification (call ``retain_grad()`` before backward).
    """

    render: RenderOutput
    projection: Projection


def render_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    c2w: Tensor,
    K: Tensor,
    width: int,
    height: int,
    background: Optional[Tensor] = None,
    sh_degree: Optional[int] = None,
    features: Optional[Tensor] = None,
    settings: SplatSettings = SplatSettings(),
) -> SplatRender:
    """Render ``N`` Gaussians into one pinhole camera.

    Args:
        means, quats, scales: ``[N, 3]``, ``[N, 4]`` (w, x, y, z), ``[N, 3]`` (activated).
        opacities: ``[N]`` activated opacities.
        colors: ``[N, 3]`` RGB, or ``[N, K, 3]`` SH coefficients when ``sh_degree`` is given
            (evaluated toward the camera as in 3DGS: ``clamp_min(SH(d) + 0.5, 0)``).
        c2w: ``[3, 4]``/``[4, 4]`` camera-to-world, OpenCV convention.
        K: ``[3, 3]`` intrinsics.
        background: ``[3]`` colour behind the Gaussians (``None`` = black).
        features: optional ``[N, F]`` extra channels rendered alongside (background 0).
        settings: :class:`SplatSettings`.

    Returns:
        :class:`SplatRender`: rgb ``[H, W, 3]``, depth ``[H, W, 1]`` (expected ray distance,
        normalised by alpha; zeros if ``render_depth`` is off), accumulation ``[H, W, 1]``,
        features ``[H, W, F]`` or ``None``.

    Example:
        One Gaussian of opacity 0.8 two units straight ahead of the camera, over a white background:
        the pixel it is centred on gets ``0.8 * colour + 0.2``, depth 2:

        >>> import torch
        >>> from langfield.ops.splatting import SplatSettings, render_gaussians
        >>> K = torch.tensor([[10.0, 0.0, 7.5], [0.0, 10.0, 7.5], [0.0, 0.0, 1.0]])  # pixel (7, 7) centred
        >>> out = render_gaussians(
        ...     means=torch.tensor([[0.0, 0.0, 2.0]]), quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
        ...     scales=torch.full((1, 3), 0.5), opacities=torch.tensor([0.8]), colors=torch.tensor([[1.0, 0.5, 0.0]]),
        ...     c2w=torch.eye(4), K=K, width=16, height=16, background=torch.ones(3),
        ...     settings=SplatSettings(backend="torch")).render
        >>> [round(v, 4) for v in out.rgb[7, 7].tolist()], round(out.depth[7, 7].item(), 4), round(out.accumulation[7, 7].item(), 4)
        ([1.0, 0.6, 0.2], 2.0, 0.8)
    """
    c2w = c2w[:3, :4]
    R = c2w[:, :3]
    w2c = torch.cat([R.T, -(R.T @ c2w[:, 3:])], dim=1)
    proj = project_gaussians(
        means, quats, scales, w2c, K, width, height, settings.near, settings.far, settings.eps2d
    )
    if sh_degree is not None:
        if colors.ndim != 3 or colors.shape[-1] != 3:
            raise ValueError(f"with sh_degree, colors must be [N, K, 3] SH coefficients, got {tuple(colors.shape)}")
        dirs = means - c2w[:, 3]
        rgb = torch.clamp_min(eval_sh(colors, dirs, sh_degree) + 0.5, 0.0)
    else:
        if colors.ndim != 2 or colors.shape[-1] != 3:
            raise ValueError(f"colors must be [N, 3] RGB (or pass sh_degree for SH), got {tuple(colors.shape)}")
        rgb = colors
    channels = [rgb]
    if features is not None:
        if features.ndim != 2 or features.shape[0] != means.shape[0]:
            raise ValueError(f"features must be [N={means.shape[0]}, F], got {tuple(features.shape)}")
        channels.append(features)
    if settings.render_depth:
        channels.append(proj.distances[:, None])
    stacked = torch.cat(channels, dim=-1) if len(channels) > 1 else rgb
    bg = stacked.new_zeros(stacked.shape[-1])
    if background is not None:
        bg = torch.cat([background.to(bg), bg[3:]])
    image, alpha = rasterize_gaussians(
        proj.means2d, proj.conics, opacities, stacked, proj.depths, proj.radii, width, height,
        bg, settings.tile_size, settings.backend,
    )
    rgb_img = image[..., :3]
    feat_img = image[..., 3 : 3 + features.shape[1]] if features is not None else None
    if settings.render_depth:
        depth = image[..., -1:] / alpha.clamp_min(1e-10)
    else:
        depth = torch.zeros_like(alpha)
    return SplatRender(RenderOutput(rgb=rgb_img, depth=depth, accumulation=alpha, features=feat_img), proj)
