"""Gaussian splatting primitives (Kerbl et al. 2023): project, bin into tiles, sort, blend.

The slow twins live in :mod:`langfield.ops.reference.splatting`.
"""

from langfield.ops.splatting.binning import TileBins, bin_gaussians, num_tiles, tile_rectangles
from langfield.ops.splatting.projection import Projection, covariances_from_scales_quats, project_gaussians
from langfield.ops.splatting.rasterize import BACKENDS, rasterize_gaussians, resolve_backend
from langfield.ops.splatting.render import SplatRender, SplatSettings, render_gaussians

__all__ = [
    "BACKENDS",
    "Projection",
    "SplatRender",
    "SplatSettings",
    "TileBins",
    "bin_gaussians",
    "covariances_from_scales_quats",
    "num_tiles",
    "project_gaussians",
    "rasterize_gaussians",
    "render_gaussians",
    "resolve_backend",
    "tile_rectangles",
]
