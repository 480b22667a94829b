"""Colormaps and visualisation helpers in plain torch (no matplotlib).

The colormaps are evaluated from published polynomial fits, so they are smooth,
differentiable and need no lookup table on disk:

* ``turbo``: Google's polynomial approximation of Turbo, degree 5 per channel
  (A. Mikhailov, "Turbo, An Improved Rainbow Colormap for Visualization", Google AI
  blog, 2019; GLSL fit by R. Du, Apache-2.0). It follows the 256-entry Turbo table
  closely in the interior but deviates at the very ends (up to ~0.13 per channel at
  ``t = 0`` and ~0.09 at ``t = 1``; the end colours are darker).
* ``viridis`` and ``inferno``: degree-6 least-squares fits of matplotlib's tables by
  M. Zucker (shadertoy ``WlfXRN``, CC0), within ~0.01 of the tables.
* ``gray``: identity.

All functions take channel-last images (``[H, W, C]``) and return float tensors in
``[0, 1]`` on the input's device.
"""

from __future__ import annotations

from typing import Dict, Literal, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["COLORMAPS", "apply_colormap", "colorize_depth", "colorize_normals", "heatmap_overlay"]

Colormap = Literal["turbo", "viridis", "inferno", "gray"]

# Coefficients c_k (k = 0..degree) per channel, colour(t) = sum_k c_k t^k.
_POLY: Dict[str, Tuple[Tuple[float, ...], Tuple[float, ...], Tuple[float, ...]]] = {
    # Turbo: v4 = (1, t, t^2, t^3), v2 = (t^4, t^5); rgb = dot(v4, kVec4) + dot(v2, kVec2).
    "turbo": (
        (0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943),
        (0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604),
        (0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973),
    ),
    # Viridis / inferno: c0 + t*(c1 + t*(c2 + ...)), written per channel.
    "viridis": (
        (0.2777273272234177, 0.1050930431085774, -0.3308618287255563, -4.634230498983486,
         6.228269936347081, 4.776384997670288, -5.435455855934631),
        (0.005407344544966578, 1.404613529898575, 0.214847559468213, -5.799100973351585,
         14.17993336680509, -13.74514537774601, 4.645852612178535),
        (0.3340998053353061, 1.384590162594685, 0.09509516302823659, -19.33244095627987,
         56.69055260068105, -65.35303263337234, 26.3124352495832),
    ),
    "inferno": (
        (0.0002189403691192265, 0.1065134194856116, 11.60249308247187, -41.70399613139459,
         77.162935699427, -71.31942824499214, 25.13112622477341),
        (0.001651004631001012, 0.5639564367884091, -3.972853965665698, 17.43639888205313,
         -33.40235894210092, 32.62606426397723, -12.24266895238567),
        (-0.01948089843709184, 3.932712388889277, -15.9423941062914, 44.35414519872813,
         -81.80730925738993, 73.20951985803202, -23.07032500287172),
    ),
}

COLORMAPS = ("turbo", "viridis", "inferno", "gray")


def _eval_colormap(t: Tensor, cmap: str) -> Tensor:
    """Colour of normalised values ``t`` (any shape, in ``[0, 1]``) -> ``[*t.shape, 3]``."""
    if cmap == "gray":
        return t[..., None].expand(*t.shape, 3).clone()
    coeffs = torch.tensor(_POLY[cmap], dtype=t.dtype, device=t.device)  # [3, K]
    out = coeffs[:, -1].expand(*t.shape, 3)
    for k in range(coeffs.shape[1] - 2, -1, -1):  # Horner
        out = out * t[..., None] + coeffs[:, k]
    return out.clamp(0.0, 1.0)


def _as_hw(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 2:
        raise ValueError(f"{name} must be [H, W] or [H, W, 1], got {tuple(x.shape)}")
    return x


def apply_colormap(
    x: Tensor,
    cmap: Colormap = "turbo",
    vmin: Optional[float] = None,
    vmax: Optional[float] = None,
    mask: Optional[Tensor] = None,
) -> Tensor:
    """Map a scalar image to RGB.

    Values are normalised as ``t = clamp((x - vmin) / (vmax - vmin), 0, 1)``; a missing
    ``vmin``/``vmax`` is the min/max over finite, unmasked pixels. If ``vmax == vmin``
    every valid pixel maps to ``t = 0``.

    Args:
        x: ``[H, W]`` or ``[H, W, 1]`` float tensor.
        cmap: one of ``"turbo"``, ``"viridis"``, ``"inferno"``, ``"gray"``.
        vmin, vmax: value range mapped to the ends of the colormap.
        mask: optional ``[H, W]`` or ``[H, W, 1]`` bool tensor; ``False`` pixels (and
            non-finite ``x``) are black.

    Returns:
        ``[H, W, 3]`` float tensor in ``[0, 1]`` (dtype of ``x`` if floating, else float32).
    """
    if cmap not in COLORMAPS:
        raise ValueError(f"cmap must be one of {COLORMAPS}, got {cmap!r}")
    x = _as_hw(x, "x")
    if not x.is_floating_point():
        x = x.float()
    valid = torch.isfinite(x)
    if mask is not None:
        mask = _as_hw(mask, "mask")
        if mask.shape != x.shape:
            raise ValueError(f"mask must have shape {tuple(x.shape)}, got {tuple(mask.shape)}")
        valid = valid & mask.bool()
    if vmin is None or vmax is None:
        vals = x[valid]
        if vals.numel() == 0:
            lo, hi = 0.0, 1.0
        else:
            lo, hi = vals.min().item(), vals.max().item()
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    denom = float(vmax) - float(vmin)
    if denom < 0:
        raise ValueError(f"vmax must be >= vmin, got vmin={vmin}, vmax={vmax}")
    t = (x - float(vmin)) / denom if denom > 0 else torch.zeros_like(x)
    t = torch.where(valid, t, torch.zeros_like(t)).clamp(0.0, 1.0)
    rgb = _eval_colormap(t, cmap)
    return torch.where(valid[..., None], rgb, torch.zeros_like(rgb))


def _quantile(x: Tensor, q: float) -> float:
    """``torch.quantile`` (nearest rank, so one outlier cannot drag the value) of 1-D ``x``.

    Inputs too large for ``torch.quantile`` are sorted and subsampled evenly first.
    """
    max_n = 1 << 22
    if x.numel() > max_n:
        step = (x.numel() + max_n - 1) // max_n
        x = x.sort().values[::step]
    return torch.quantile(x.float(), q, interpolation="nearest").item()


def colorize_depth(
    depth: Tensor,
    accumulation: Optional[Tensor] = None,
    near: Optional[float] = None,
    far: Optional[float] = None,
    cmap: Colormap = "turbo",
    background: Literal["black", "white"] = "black",
    percentiles: Tuple[float, float] = (1.0, 99.0),
) -> Tensor:
    """Colour a depth map with a robust value range.

    Foreground pixels are those with ``accumulation > 0.5`` (all finite pixels when
    ``accumulation`` is ``None``). A missing ``near``/``far`` is taken as the
    ``percentiles`` (default 1st / 99th) of foreground depths, so a few stray
    floaters do not flatten the colour range; depth is clamped into ``[near, far]``.

    Args:
        depth: ``[H, W, 1]`` or ``[H, W]`` depth (ray distance, see ``types.py``).
        accumulation: optional ``[H, W, 1]`` or ``[H, W]`` opacity in ``[0, 1]``.
        near, far: explicit range; overrides the percentile estimate.
        cmap: colormap name, see :func:`apply_colormap`.
        background: colour of background pixels, ``"black"`` or ``"white"``.
        percentiles: lower/upper percentile in ``[0, 100]`` used for the range.

    Returns:
        ``[H, W, 3]`` float tensor in ``[0, 1]``.
    """
    if background not in ("black", "white"):
        raise ValueError(f"background must be 'black' or 'white', got {background!r}")
    lo_p, hi_p = percentiles
    if not 0.0 <= lo_p <= hi_p <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= lo <= hi <= 100, got {percentiles}")
    depth = _as_hw(depth, "depth")
    if not depth.is_floating_point():
        depth = depth.float()
    fg = torch.isfinite(depth)
    if accumulation is not None:
        accumulation = _as_hw(accumulation, "accumulation")
        if accumulation.shape != depth.shape:
            raise ValueError(f"accumulation must have shape {tuple(depth.shape)}, got {tuple(accumulation.shape)}")
        fg = fg & (accumulation > 0.5)
    vals = depth[fg]
    if near is None:
        near = _quantile(vals, lo_p / 100.0) if vals.numel() else 0.0
    if far is None:
        far = _quantile(vals, hi_p / 100.0) if vals.numel() else 1.0
    far = max(float(far), float(near))
    rgb = apply_colormap(depth, cmap=cmap, vmin=near, vmax=far, mask=fg)
    bg = torch.ones_like(rgb) if background == "white" else torch.zeros_like(rgb)
    return torch.where(fg[..., None], rgb, bg)


def colorize_normals(normals: Tensor, accumulation: Optional[Tensor] = None) -> Tensor:
    """Map unit normals ``[H, W, 3]`` from ``[-1, 1]`` to colours ``(n + 1) / 2`` in ``[0, 1]``.

    The frame is whatever the normals are given in (world or camera, OpenCV); the map
    is the usual one used in NeRF/3DGS papers. Pixels with ``accumulation <= 0.5``
    (when given, ``[H, W]`` or ``[H, W, 1]``) are black.
    """
    if not isinstance(normals, Tensor) or normals.ndim != 3 or normals.shape[-1] != 3:
        shape = tuple(normals.shape) if isinstance(normals, Tensor) else type(normals).__name__
        raise ValueError(f"normals must be a [H, W, 3] tensor, got {shape}")
    rgb = ((normals.float() + 1.0) * 0.5).clamp(0.0, 1.0)
    if accumulation is not None:
        accumulation = _as_hw(accumulation, "accumulation")
        if accumulation.shape != normals.shape[:2]:
            raise ValueError(f"accumulation must have shape {tuple(normals.shape[:2])}, got {tuple(accumulation.shape)}")
        rgb = torch.where((accumulation > 0.5)[..., None], rgb, torch.zeros_like(rgb))
    return rgb


def heatmap_overlay(image: Tensor, score: Tensor, alpha: float = 0.6, cmap: Colormap = "turbo") -> Tensor:
    """Blend a colormapped score over an image: ``(1 - alpha) * image + alpha * cmap(score)``.

    Used for language relevancy maps (LERF-style visualisations).

    Args:
        image: ``[H, W, 3]`` float in ``[0, 1]`` (or uint8, divided by 255).
        score: ``[H, W]`` or ``[H, W, 1]`` in ``[0, 1]`` (clamped; not re-normalised,
            so maps from different queries stay comparable).
        alpha: blend weight of the heatmap in ``[0, 1]``.
        cmap: colormap name, see :func:`apply_colormap`.

    Returns:
        ``[H, W, 3]`` float tensor in ``[0, 1]``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[-1] != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image must be a [H, W, 3] tensor, got {shape}")
    score = _as_hw(score, "score")
    if score.shape != image.shape[:2]:
        raise ValueError(f"score must have shape {tuple(image.shape[:2])}, got {tuple(score.shape)}")
    img = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    heat = apply_colormap(score.float().clamp(0.0, 1.0), cmap=cmap, vmin=0.0, vmax=1.0)
    return ((1.0 - alpha) * img + alpha * heat).clamp(0.0, 1.0)
