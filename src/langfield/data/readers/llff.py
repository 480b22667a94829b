"""LLFF forward-facing captures (``poses_bounds.npy`` + ``images[_K]/``), as used by NeRF.

Registered as ``"llff"`` (:mod:`langfield.data.readers.registry`): :func:`is_llff_scene` recognises
it, :func:`load_llff` loads it.

``poses_bounds.npy`` is an ``[N, 17]`` float array, one row per image (in sorted file order):
the first 15 values are a row-major ``3 x 5`` matrix ``[R | t | hwf]`` and the last 2 the
``near, far`` *z-depth* bounds of the scene in that view.

* ``R``'s columns are the camera's **down, right, back** axes in world coordinates (LLFF's
  convention), ``t`` the camera centre, ``hwf = (H, W, focal)`` at full resolution (principal point
  at the image centre).
* LLFF made them from COLMAP's OpenCV camera-to-world ``[right, down, forward]`` by the column
  permutation ``[down, right, back] = [c1, c0, -c2]``; the world frame is COLMAP's. We invert it::

      OpenCV c2w columns = [right, down, forward] = [R[:, 1], R[:, 0], -R[:, 2]],  t unchanged

  (:func:`llff_to_opencv`, its inverse :func:`opencv_to_llff`). Because the world frame is
  COLMAP's, a ``sparse/0/points3D.bin`` beside it lives in the same frame.

Normalisation (NeRF's ``load_llff_data`` with ``bd_factor=0.75`` and ``recenter=True``, written
as one similarity ``T``): scale by ``s = 1 / (0.75 * min(near))`` so the closest bound becomes
``1 / 0.75``, then move the :func:`~langfield.geometry.normalize.average_pose` to the identity
(origin at the mean camera centre, mean camera looking along ``+z`` with ``+y`` down).

Scene values: ``unbounded=True``, ``forward_facing=True`` (the ``"auto"`` ray space of
:mod:`langfield.data.ray_space` reconstructs it in NDC, as NeRF does); ``near = 0.9 s min(near)`` (a z-depth lower bound is also a
ray-distance lower bound); ``far = s max(far) * c`` with ``c`` the largest corner-ray length for
``z = 1`` (turns the z-depth bound into a ray distance); ``scene_box`` the bounding box of all
camera frusta between the depth bounds. Test views: ``i % 8 == 0``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from langfield._checks import MAX_ABS_COORDINATE, MAX_FOCAL_PIXELS, InputError, check_image_size
from langfield.data.dataset import SceneDataset
from langfield.data.loading import (
    PathLike,
    cameras_for_image_size,
    check_downscale,
    confine_path,
    list_image_files,
    load_holdout_splits,
    read_npy,
    resolve_background,
    resolve_image_folder,
)
from langfield.geometry.conventions import check_rigid
from langfield.geometry.normalize import (
    apply_transform_to_points,
    average_pose,
    make_similarity,
    transform_poses,
)
from langfield.io.colmap import read_points3d
from langfield.io.images import read_image_size
from langfield.types import Cameras

#: NeRF's bd_factor: the closest near bound is scaled to 1 / BD_FACTOR.
BD_FACTOR = 0.75
HOLDOUT = 8
POSES_FILE = "poses_bounds.npy"


def is_llff_scene(path: PathLike) -> bool:
    """True for a ``poses_bounds.npy`` file or a folder holding one."""
    path = Path(path)
    if path.is_file():
        return path.name == POSES_FILE
    return (path / POSES_FILE).is_file()


def llff_to_opencv(poses: Tensor) -> Tensor:
    """LLFF ``[..., 3, 4]`` ``[down | right | back | centre]`` -> OpenCV c2w ``[right | down | forward | centre]``."""
    return torch.stack([poses[..., 1], poses[..., 0], -poses[..., 2], poses[..., 3]], dim=-1)


def opencv_to_llff(c2w: Tensor) -> Tensor:
    """OpenCV c2w ``[..., 3, 4]`` -> LLFF ``[down | right | back | centre]`` (inverse of :func:`llff_to_opencv`)."""
    return torch.stack([c2w[..., 1], c2w[..., 0], -c2w[..., 2], c2w[..., 3]], dim=-1)


def read_poses_bounds(path: PathLike) -> Tuple[Tensor, Tensor, Tensor]:
    """Read ``poses_bounds.npy``.

    Returns:
        ``(c2w [N, 3, 4], hwf [N, 3], bounds [N, 2])`` float64: OpenCV camera-to-world in the
        file's (COLMAP) world frame, ``(H, W, focal)`` at full resolution, ``(near, far)`` z-depths.
    """
    path = Path(path)
    arr = read_npy(path, "LLFF poses file")
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{path}: expected a real-valued (float or integer) array, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != 17 or arr.shape[0] == 0:
        raise InputError(f"{path}: expected an [N, 17] array (3x5 pose + near, far per view), got shape {arr.shape}")
    t = torch.from_numpy(arr.astype(np.float64))
    mats = t[:, :15].reshape(-1, 3, 5)
    hwf = mats[:, :, 4].clone()
    bounds = t[:, 15:17].clone()
    c2w = llff_to_opencv(mats[:, :, :4])
    for i in range(t.shape[0]):
        _check_row(path, i, t[i], c2w[i], hwf[i], bounds[i])
    return c2w, hwf, bounds


def _check_row(path: Path, i: int, row: Tensor, c2w: Tensor, hwf: Tensor, bounds: Tensor) -> None:
    """Refuse a ``poses_bounds.npy`` row with non-finite or implausible values (the message names the row)."""
    where = f"{path}: row {i}"
    if not bool(torch.isfinite(row).all()):
        raise InputError(f"{where} has non-finite values (NaN/inf)")
    if float(c2w.abs().max()) > MAX_ABS_COORDINATE:
        raise InputError(
            f"{where}: pose entries up to {float(c2w.abs().max()):g} are implausibly large (limit +-{MAX_ABS_COORDINATE:g})"
        )
    if not bool(check_rigid(c2w)):
        raise InputError(f"{where}: pose rotation is not rigid (orthonormal with det +1)")
    h, w, f = (float(v) for v in hwf)
    for name, v in (("H", h), ("W", w)):
        if not v.is_integer():
            raise InputError(f"{where}: hwf {name} must be a whole number of pixels, got {v:g}")
    check_image_size(int(w), int(h), f"{where}: hwf (H, W)")
    if not 0 < f <= MAX_FOCAL_PIXELS:
        raise InputError(f"{where}: hwf focal must be in (0, {MAX_FOCAL_PIXELS:g}] pixels, got {f:g}")
    near, far = float(bounds[0]), float(bounds[1])
    if not (0 < near < far <= MAX_ABS_COORDINATE):
        raise InputError(f"{where}: bounds must satisfy 0 < near < far <= {MAX_ABS_COORDINATE:g}, got {[near, far]}")


def llff_transform(c2w: Tensor, bounds: Tensor, bd_factor: float = BD_FACTOR, recenter: bool = True) -> Tensor:
    """``[4, 4]`` float64 normalising similarity of an LLFF capture (see the module docstring)."""
    if not bd_factor > 0:
        raise InputError(f"bd_factor must be > 0, got {bd_factor}")
    S = make_similarity(1.0 / (float(bounds[:, 0].min()) * bd_factor))
    if not recenter:
        return S
    avg = average_pose(transform_poses(S, c2w.double()))
    T_rc = make_similarity(1.0, avg[:, :3].T, avg[:, 3])
    return T_rc @ S


def _frustum_box(cameras: Cameras, z_near: float, z_far: float) -> Tensor:
    """``[2, 3]`` bounds of the camera frusta between z-depths ``z_near`` and ``z_far``."""
    W = cameras.widths.double()
    H = cameras.heights.double()
    K = cameras.Ks.double()
    corners = []
    for u, v in ((0, 0), (1, 0), (0, 1), (1, 1)):
        x = (u * W - K[:, 0, 2]) / K[:, 0, 0]
        y = (v * H - K[:, 1, 2]) / K[:, 1, 1]
        d = torch.stack([x, y, torch.ones_like(x)], -1)
        d = torch.einsum("cij,cj->ci", cameras.c2w[:, :3, :3].double(), d)
        for z in (z_near, z_far):
            corners.append(cameras.c2w[:, :3, 3].double() + z * d)
    pts = torch.cat(corners, 0)
    return torch.stack([pts.min(0).values, pts.max(0).values]).float()


def _corner_factor(cameras: Cameras) -> float:
    K = cameras.Ks.double()
    W, H = cameras.widths.double(), cameras.heights.double()
    x = torch.maximum(K[:, 0, 2], W - K[:, 0, 2]) / K[:, 0, 0]
    y = torch.maximum(K[:, 1, 2], H - K[:, 1, 2]) / K[:, 1, 1]
    return float(torch.sqrt(1 + x * x + y * y).max())


def load_llff(
    path: PathLike,
    downscale: float = 1,
    background: Optional[str] = None,
    *,
    splits: Optional[Sequence[str]] = None,
    max_images: Optional[int] = None,
    bd_factor: float = BD_FACTOR,
    recenter: bool = True,
    progress: Optional[bool] = None,
    allow_outside_paths: bool = False,
) -> SceneDataset:
    """Load an LLFF scene folder (``poses_bounds.npy``, ``images[_K]/``, optional ``sparse/0``).

    Args:
        path: the scene folder, or its ``poses_bounds.npy``.
        downscale: image factor; ``images_K`` is used when ``K == downscale``, else the folder with
            the largest ``K <= downscale`` is resized (fern ships only ``images_4`` and ``images_8``).
        background: stored in ``SceneDataset.background`` (photos have no alpha).
        splits: ``"train"`` and/or ``"test"`` (default both).
        max_images: keep the first ``max_images`` views of each split.
        bd_factor, recenter: NeRF's normalisation options (see the module docstring).
        progress: force the progress bar on/off.
        allow_outside_paths: read image files (symlinks) that resolve outside the scene folder.
    """
    root = Path(path)
    if root.is_file() and root.name == POSES_FILE:
        root = root.parent
    downscale = check_downscale(downscale)
    background = resolve_background(background)
    pb_path = root / POSES_FILE
    c2w, hwf, bounds = read_poses_bounds(pb_path)
    num = c2w.shape[0]
    folder, residual = resolve_image_folder(root, downscale)
    files = list_image_files(folder)
    for f in files:
        confine_path(f, root, f"{folder}: image", allow_outside=allow_outside_paths)
    if len(files) != num:
        raise InputError(f"{pb_path}: {num} poses but {len(files)} images in {folder}")
    w_img, h_img = check_image_size(*read_image_size(files[0]), str(files[0]))

    Ks = torch.zeros(num, 3, 3, dtype=torch.float64)
    Ks[:, 0, 0] = Ks[:, 1, 1] = hwf[:, 2]
    Ks[:, 0, 2] = hwf[:, 1] / 2
    Ks[:, 1, 2] = hwf[:, 0] / 2
    Ks[:, 2, 2] = 1.0
    full = Cameras.create(c2w.float(), Ks.float(), hwf[:, 1].round().long(), hwf[:, 0].round().long())
    cams = cameras_for_image_size(full, w_img, h_img, source=f"{folder} vs {pb_path} hwf")
    cams = cams.rescaled(residual) if residual != 1.0 else cams

    T = llff_transform(c2w, bounds, bd_factor=bd_factor, recenter=recenter)
    s = float(torch.linalg.det(T[:3, :3]) ** (1.0 / 3.0))
    cams = replace(cams, c2w=transform_poses(T, c2w).float())
    near = 0.9 * s * float(bounds[:, 0].min())
    far = s * float(bounds[:, 1].max()) * _corner_factor(cams)
    box = _frustum_box(cams, s * float(bounds[:, 0].min()), s * float(bounds[:, 1].max()))

    image_sets = load_holdout_splits(
        cams, files, residual, source=str(pb_path), folder=folder, root=root,
        splits=splits, max_images=max_images, progress=progress, holdout=HOLDOUT,
    )

    points = rgb = None
    for pts_path in (root / "sparse" / "0" / "points3D.bin", root / "sparse" / "0" / "points3D.txt"):
        if pts_path.is_file():
            model_pts = read_points3d(pts_path)
            points = apply_transform_to_points(T, torch.from_numpy(model_pts.xyz)).float()
            rgb = torch.from_numpy(model_pts.rgb.copy())
            break
    return SceneDataset(
        name=root.resolve().name,
        splits=image_sets,
        scene_box=box,
        near=near,
        far=far,
        background=background,
        world_transform=T.float(),
        points3d=points,
        points3d_rgb=rgb,
        unbounded=True,
        forward_facing=True,
    )
