"""Tile binning of projected Gaussians: which Gaussians touch which 16x16 tile, front to back.

Kerbl et al. 2023, Sec. 6: the screen is split into tiles; every Gaussian is instanced once per
tile its 3-sigma square overlaps, the instances are sorted by ``(tile, depth)`` with one sort,
and each tile blends its contiguous range front to back.

Conventions: pixel ``(row i, col j)`` has its centre at ``(j + 0.5, i + 0.5)``; tile
``t = ty * tiles_x + tx`` covers columns ``[tx * s, (tx + 1) * s)`` and rows
``[ty * s, (ty + 1) * s)`` (``s = tile_size``; edge tiles are cropped to the image). A Gaussian
with ``radius > 0`` covers the square ``[mean - radius, mean + radius]`` in both axes; it is
binned into every tile that square intersects. ``radius == 0`` means culled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
from torch import Tensor

__all__ = ["TileBins", "bin_gaussians", "tile_rectangles", "num_tiles"]


def num_tiles(width: int, height: int, tile_size: int) -> Tuple[int, int]:
    """``(tiles_x, tiles_y)`` = ``(ceil(W / s), ceil(H / s))``.

    Example:
        >>> from langfield.ops.splatting.binning import num_tiles
        >>> num_tiles(width=33, height=16, tile_size=16)
        (3, 1)
    """
    if tile_size < 1:
        raise ValueError(f"tile_size must be >= 1, got {tile_size}")
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got width={width}, height={height}")
    return (width + tile_size - 1) // tile_size, (height + tile_size - 1) // tile_size


def tile_rectangles(means2d: Tensor, radii: Tensor, width: int, height: int, tile_size: int) -> Tuple[Tensor, Tensor]:
    """Tile rectangle of every Gaussian: ``(tile_min [N, 2], tile_max [N, 2])`` int64 ``(x, y)``,
    ``tile_max`` exclusive, clamped to the tile grid; empty (``max <= min``) for culled Gaussians.

    Example:
        >>> import torch
        >>> from langfield.ops.splatting.binning import tile_rectangles
        >>> lo, hi = tile_rectangles(torch.tensor([[8.0, 8.0], [16.0, 8.0]]), torch.tensor([4, 4]), 32, 16, 16)
        >>> lo.tolist(), hi.tolist()  # (x, y) tiles, hi exclusive: the second Gaussian straddles two tiles
        ([[0, 0], [0, 0]], [[1, 1], [2, 1]])
    """
    tiles_x, tiles_y = num_tiles(width, height, tile_size)
    limit = means2d.new_tensor([tiles_x, tiles_y]).long()
    r = radii.to(means2d.dtype)[:, None]
    lo = torch.floor((means2d.detach() - r) / tile_size).long()
    hi = torch.floor((means2d.detach() + r) / tile_size).long() + 1
    zero = torch.zeros_like(limit)
    lo = torch.minimum(torch.maximum(lo, zero), limit)
    hi = torch.minimum(torch.maximum(hi, zero), limit)
    culled = (radii <= 0)[:, None]
    hi = torch.where(culled, lo, hi)
    return lo, hi


@dataclass(frozen=True)
class TileBins:
    """Gaussian instances sorted by ``(tile, depth)``.

    Attributes:
        gaussian_ids: ``[M]`` int64 Gaussian index of every instance, tiles concatenated in tile
            order, each tile's run sorted front to back (ties keep the Gaussian order).
        tile_ranges: ``[T, 2]`` int64 ``(start, end)`` of tile ``t``'s run in ``gaussian_ids``.
        tiles_x, tiles_y, tile_size: the tile grid.
    """

    gaussian_ids: Tensor
    tile_ranges: Tensor
    tiles_x: int
    tiles_y: int
    tile_size: int

    @property
    def num_instances(self) -> int:
        return int(self.gaussian_ids.shape[0])


@torch.no_grad()
def bin_gaussians(
    means2d: Tensor, radii: Tensor, depths: Tensor, width: int, height: int, tile_size: int = 16
) -> TileBins:
    """Instance every visible Gaussian into the tiles it touches and sort by ``(tile, depth)``.

    Args:
        means2d: ``[N, 2]`` pixel-space centres.
        radii: ``[N]`` integer pixel radii (0 = culled).
        depths: ``[N]`` sort key (camera z); smaller is nearer.
        width, height, tile_size: image and tile size in pixels.

    Example:
        Gaussian 1 is nearer and touches both tiles of a 32 x 16 image, Gaussian 0 only the first:

        >>> import torch
        >>> from langfield.ops.splatting.binning import bin_gaussians
        >>> means2d, radii = torch.tensor([[8.0, 8.0], [16.0, 8.0]]), torch.tensor([4, 4])
        >>> bins = bin_gaussians(means2d, radii, depths=torch.tensor([2.0, 1.0]), width=32, height=16)
        >>> bins.gaussian_ids.tolist(), bins.tile_ranges.tolist()
        ([1, 0, 1], [[0, 2], [2, 3]])
    """
    n = means2d.shape[0]
    if means2d.ndim != 2 or means2d.shape[-1] != 2:
        raise ValueError(f"means2d must be [N, 2], got {tuple(means2d.shape)}")
    if radii.shape != (n,) or depths.shape != (n,):
        raise ValueError(f"radii and depths must be [{n}], got {tuple(radii.shape)} and {tuple(depths.shape)}")
    tiles_x, tiles_y = num_tiles(width, height, tile_size)
    device = means2d.device
    lo, hi = tile_rectangles(means2d, radii, width, height, tile_size)
    extent = hi - lo  # [N, 2]
    counts = extent[:, 0] * extent[:, 1]
    total = int(counts.sum())
    if total == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return TileBins(empty, torch.zeros(tiles_x * tiles_y, 2, dtype=torch.long, device=device), tiles_x, tiles_y, tile_size)
    ids = torch.repeat_interleave(torch.arange(n, device=device), counts)
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(total, device=device) - first[ids]
    w = extent[ids, 0]
    tx = lo[ids, 0] + local % w
    ty = lo[ids, 1] + local // w
    tile = ty * tiles_x + tx
    # Depth rank of every Gaussian (stable: ties keep index order), then one sort by (tile, rank).
    rank = torch.empty(n, dtype=torch.long, device=device)
    rank[torch.argsort(depths.detach(), stable=True)] = torch.arange(n, device=device)
    order = torch.argsort(tile * n + rank[ids])
    gaussian_ids = ids[order]
    per_tile = torch.bincount(tile, minlength=tiles_x * tiles_y)
    ends = torch.cumsum(per_tile, 0)
    tile_ranges = torch.stack([ends - per_tile, ends], dim=-1)
    return TileBins(gaussian_ids, tile_ranges, tiles_x, tiles_y, tile_size)
