"""Input/output: atomic writes, images, videos and colormaps.

Everything user-visible is written through :mod:`langfield.io.atomic`, so an
interrupted run never leaves a truncated file behind.
"""

from langfield.io.atomic import atomic_path, atomic_save_torch, atomic_write, atomic_write_json
from langfield.io.colormaps import apply_colormap, colorize_depth, colorize_normals, heatmap_overlay
from langfield.io.images import image_grid, read_image, side_by_side, to_float, to_uint8, write_image
from langfield.io.video import write_video

__all__ = [
    "apply_colormap",
    "atomic_path",
    "atomic_save_torch",
    "atomic_write",
    "atomic_write_json",
    "colorize_depth",
    "colorize_normals",
    "heatmap_overlay",
    "image_grid",
    "read_image",
    "side_by_side",
    "to_float",
    "to_uint8",
    "write_image",
    "write_video",
]
