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

from langfield._checks import MAX_ABS_COORDINATE, InputError, check_finite_array
from langfield.io.atomic import atomic_write
from langfield.io.ply_header import check_ply_header

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
    """``[P, 3]`` float32 positions of a point PLY.

    The header's vertex count is checked against the file size before anything is allocated
    (:func:`~langfield.io.ply_header.check_ply_header`); positions must be finite and within
    :data:`~langfield._checks.MAX_ABS_COORDINATE`. Errors name the file.
    """
    from plyfile import PlyData

    path = Path(path)
    check_ply_header(path)
    try:
        with open(path, "rb") as f:
            data = PlyData.read(f, mmap=False)
    except Exception as exc:  # noqa: BLE001 - plyfile raises several types on malformed files
        raise InputError(f"{path}: not a readable PLY file ({type(exc).__name__}: {exc})") from None
    if "vertex" not in data:
        raise InputError(f"{path}: no 'vertex' element")
    v = data["vertex"]
    names = [p.name for p in v.properties]
    missing = [a for a in "xyz" if a not in names]
    if missing:
        raise InputError(f"{path}: vertex properties {missing} missing (has {names[:10]})")
    try:
        xyz = np.stack([np.asarray(v[a], dtype=np.float64) for a in "xyz"], -1)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: vertex x, y, z must be numeric scalars ({exc})") from None
    check_finite_array(xyz, f"{path}: vertex positions (x, y, z)", max_abs=MAX_ABS_COORDINATE)
    return torch.from_numpy(xyz.astype(np.float32))
