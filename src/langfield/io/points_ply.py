"""Plain point-cloud PLY (``x y z`` + optional ``red green blue``), written atomically.

Used to export a density region selected by a language query from a NeRF-family run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from langfield.io.atomic import atomic_write

__all__ = ["write_points_ply", "read_points_ply"]


def write_points_ply(path: Union[str, os.PathLike], points: Tensor, colors: Optional[Tensor] = None) -> Path:
    """Write ``points [P, 3]`` (float) and optional ``colors [P, 3]`` (uint8) as a binary PLY."""
    from plyfile import PlyData, PlyElement

    pts = torch.as_tensor(points).detach().cpu()
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must be [P, 3], got {tuple(pts.shape)}")
    if not bool(torch.isfinite(pts).all()):
        raise ValueError("points contain NaN/inf; refusing to write them")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        col = torch.as_tensor(colors).detach().cpu()
        if col.shape != pts.shape or col.dtype != torch.uint8:
            raise ValueError(f"colors must be uint8 [P, 3] like points, got {col.dtype} {tuple(col.shape)}")
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertex = np.empty(len(pts), dtype=fields)
    for i, axis in enumerate("xyz"):
        vertex[axis] = pts[:, i].numpy()
    if colors is not None:
        for i, ch in enumerate(("red", "green", "blue")):
            vertex[ch] = col[:, i].numpy()
    target = Path(path)
    with atomic_write(target, "wb") as f:
        PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<").write(f)
    return target


def read_points_ply(path: Union[str, os.PathLike]) -> Tensor:
    """``[P, 3]`` float32 positions of a point PLY."""
    from plyfile import PlyData

    data = PlyData.read(str(path))
    if "vertex" not in data:
        raise ValueError(f"{path}: no 'vertex' element")
    v = data["vertex"]
    return torch.from_numpy(np.stack([np.asarray(v[a], dtype=np.float32) for a in "xyz"], -1))
