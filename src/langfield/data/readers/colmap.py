"""Scenes from a COLMAP reconstruction: ``DIR/sparse/0`` (or ``DIR/sparse``) + ``DIR/images[_K]``.

Registered as ``"colmap"`` (:mod:`langfield.data.readers.registry`): :func:`is_colmap_scene`
recognises it, :func:`load_colmap` loads it. The model files are parsed by :mod:`langfield.io.colmap`.

* Registered images are sorted by name; view ``i`` is a test view iff ``i % 8 == 0``.
* Cameras: COLMAP's world-to-camera ``(q, t)`` is inverted to an OpenCV camera-to-world;
  intrinsics and ``(k1, k2, p1, p2, k3)`` distortion come from
  :func:`langfield.io.colmap.camera_intrinsics` (pinhole / radial / OpenCV models; fisheye and
  others raise ``ValueError``), rescaled per axis to the size of the image file actually read
  (``images_K`` folders are pre-shrunk), then by any remaining downscale factor.
* The scene is normalised with :func:`~langfield.geometry.normalize.normalize_poses`
  (``"cameras"`` and ``align_up=True`` by default: camera centres inside the unit ball, mean camera
  up direction along world ``+z``), ``unbounded=True``, bounds from
  :func:`~langfield.data.loading.capture_bounds`, sparse points moved into the same frame.
* Depth (opt-in, ``depth_maps="geometric" | "photometric"``): a dense workspace's multi-view-stereo
  depth maps ``stereo/depth_maps/<name>.<kind>.bin`` (:func:`langfield.io.colmap.read_dense_array`),
  z-depth turned into ray distances and scaled into the normalised frame.
* Training masks (opt-in, ``masks=DIR``): one single-channel image per registered image, COLMAP's own
  mask convention ``DIR/<image name>.png`` (``a.jpg`` -> ``a.jpg.png``, as ``colmap feature_extractor
  --ImageReader.mask_path`` reads them) or the image's name with a ``.png`` suffix (``a.png`` for
  ``a.jpg``, as nerfstudio's ``ns-process-data`` writes them); 0 = ignore the pixel in training.
* ``forward_facing`` from :func:`langfield.data.ray_space.capture_looks_forward_facing` (viewing
  directions within 60 degrees of their mean, camera spread under half the median point depth);
  the ``"auto"`` ray space then trains NeRF-family methods in NDC.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch

from langfield._checks import InputError, check_image_size
from langfield.data.dataset import SceneDataset
from langfield.data.ray_space import capture_looks_forward_facing
from langfield.data.loading import (
    DepthFile,
    PathLike,
    cameras_for_image_size,
    capture_bounds,
    check_downscale,
    check_unique,
    confine_path,
    load_holdout_splits,
    resolve_background,
    resolve_image_folder,
)
from langfield.geometry.normalize import NORMALIZE_METHODS, apply_transform_to_points, normalize_poses, similarity_scale
from langfield.io.colmap import camera_intrinsics, find_model_dir, model_file, read_model
from langfield.io.images import read_image_size
from langfield.types import Cameras

HOLDOUT = 8
#: COLMAP's two depth maps per image: ``photometric`` (patch-match's raw estimate) and ``geometric``
#: (after multi-view geometric consistency filtering: fewer, more reliable pixels).
DEPTH_MAP_KINDS = ("geometric", "photometric")


def _depth_map_files(root: Path, images, kind: str, source: str, allow_outside: bool) -> List[DepthFile]:
    """``stereo/depth_maps/<name>.<kind>.bin`` of every registered image (z-depth, model units), all present."""
    folder = root / "stereo" / "depth_maps"
    if not folder.is_dir():
        raise InputError(
            f"depth_maps={kind!r}: {folder} not found; COLMAP writes depth maps into a dense workspace "
            f"(colmap image_undistorter, then patch_match_stereo): load that workspace folder"
        )
    files = []
    for im in images:
        path = folder / f"{im.name}.{kind}.bin"
        if not path.is_file():
            raise InputError(f"{source}: image {im.id} {im.name!r}: depth map {path} not found (depth_maps={kind!r})")
        confine_path(path, root, f"{source}: image {im.id} depth map", allow_outside=allow_outside)
        files.append(DepthFile(path, "z", 1.0))
    return files


def _mask_files(root: Path, masks: PathLike, images, source: str, allow_outside: bool) -> List[Path]:
    """The training mask of every registered image in the folder ``masks`` (relative: to the scene folder):
    ``<name>.png`` (COLMAP's convention) or else ``<name with suffix .png>`` (nerfstudio's), all present."""
    folder = Path(masks)
    if not folder.is_absolute():
        folder = root / folder
    if not folder.is_dir():
        raise InputError(
            f"masks: folder {folder} not found (a folder of one mask image per registered image; a relative path "
            f"is taken inside the scene folder {root})"
        )
    files = []
    for im in images:
        candidates = [folder / f"{im.name}.png", folder / Path(im.name).with_suffix(".png")]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            tried = " or ".join(str(c) for c in dict.fromkeys(candidates))
            raise InputError(f"{source}: image {im.id} {im.name!r}: no training mask in {folder} (looked for {tried})")
        confine_path(found, folder, f"{source}: image {im.id} mask", allow_outside=allow_outside)
        files.append(found)
    return files


def is_colmap_scene(path: PathLike) -> bool:
    """True for a folder holding a COLMAP model (see :func:`~langfield.io.colmap.find_model_dir`)."""
    path = Path(path)
    return path.is_dir() and find_model_dir(path) is not None


def load_colmap(
    path: PathLike,
    downscale: float = 1,
    background: Optional[str] = None,
    *,
    splits: Optional[Sequence[str]] = None,
    max_images: Optional[int] = None,
    normalize: str = "cameras",
    align_up: bool = True,
    progress: Optional[bool] = None,
    allow_outside_paths: bool = False,
    depth_maps: Optional[str] = None,
    masks: Optional[PathLike] = None,
) -> SceneDataset:
    """Load a COLMAP scene folder.

    Args:
        path: folder holding ``sparse/0`` (or ``sparse``, or the model files themselves) and ``images/``.
        downscale: image factor; ``images_K`` is used when ``K == downscale``, else the folder with
            the largest ``K <= downscale`` is resized.
        background: stored in ``SceneDataset.background``.
        splits: ``"train"`` and/or ``"test"`` (default both).
        max_images: keep the first ``max_images`` views of each split.
        normalize: :func:`~langfield.geometry.normalize.normalize_poses` method
            (``"cameras"``, ``"focus"``, ``"points"``, ``"none"``).
        align_up: rotate the mean camera up vector onto world ``+z``.
        progress: force the progress bar on/off.
        allow_outside_paths: read images whose name (``../x.png``, an absolute path, a symlink)
            resolves outside the scene folder; refused by default.
        depth_maps: ``"geometric"`` or ``"photometric"`` to read COLMAP's multi-view-stereo depth maps,
            ``stereo/depth_maps/<image name>.<kind>.bin`` of a dense workspace (``colmap
            image_undistorter`` + ``patch_match_stereo``: ``images/``, ``sparse/``, ``stereo/``), into
            ``ImageSet.depths``: camera z-depth in model units turned into ray distances through each
            image's camera, scaled into the normalised frame (0 where stereo found none). Every
            registered image needs its map, of its image's aspect ratio (full-size maps beside a
            pre-shrunk ``images_K`` folder are converted at their size, then averaged down).
            ``None`` (default): no depth. These are *estimates* (for depth supervision), not ground
            truth: evaluations then report ``depth_mae`` against them.
        masks: a folder of training masks (relative paths: inside the scene folder), one single-channel
            image per registered image, each the size of the image file read: ``<image name>.png``
            (COLMAP's mask convention) or the image name with its suffix replaced by ``.png``
            (nerfstudio's); 0 = ignore the pixel in training (transients, the capture rig), non-zero = use.
            They become ``ImageSet.masks`` (:func:`~langfield.data.loading.load_masks`). ``None``: no masks.
    """
    root = Path(path)
    downscale = check_downscale(downscale)
    background = resolve_background(background)
    if normalize is not None and normalize not in NORMALIZE_METHODS:
        raise InputError(f"normalize: must be one of {NORMALIZE_METHODS} (or None), got {normalize!r}")
    if depth_maps is not None and depth_maps not in DEPTH_MAP_KINDS:
        raise InputError(f"depth_maps: must be one of {DEPTH_MAP_KINDS} (or None), got {depth_maps!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"COLMAP scene folder not found: {root}")
    model_dir = find_model_dir(root)
    if model_dir is None:
        raise FileNotFoundError(f"{root}: no COLMAP model (looked in sparse/0, sparse, the folder itself)")
    model = read_model(model_dir)
    cam_file = model_file(model_dir, "cameras")
    img_file = model_file(model_dir, "images")
    images = sorted(model.images.values(), key=lambda im: im.name)
    if not images:
        raise InputError(f"{img_file}: the model has no registered images")
    check_unique([im.name for im in images], f"{img_file}: images", "image name")
    folder, residual = resolve_image_folder(root, downscale)

    c2ws: List[np.ndarray] = []
    cam_list: List[Cameras] = []
    paths: List[Path] = []
    for im in images:
        p = folder / im.name
        if p.is_dir():
            raise InputError(f"{img_file}: image {im.id} {im.name!r}: {p} is a directory, expected an image file")
        if not p.is_file():
            raise FileNotFoundError(f"{img_file}: image {im.id} {im.name!r} not found in {folder}")
        confine_path(p, root, f"{img_file}: image {im.id} name", allow_outside=allow_outside_paths)
        cam = model.cameras[im.camera_id]
        K, dist = camera_intrinsics(cam, source=str(cam_file))
        full = Cameras.create(
            torch.from_numpy(im.c2w()).float(),
            torch.from_numpy(K).float(),
            cam.width,
            cam.height,
            torch.from_numpy(dist).float(),
        )
        w, h = check_image_size(*read_image_size(p), str(p))
        cams = cameras_for_image_size(full, w, h, source=f"{p} vs camera {cam.id} in {cam_file}")
        cam_list.append(cams)
        c2ws.append(im.c2w())
        paths.append(p)
    cameras = Cameras(**{k: torch.cat([getattr(c, k) for c in cam_list], 0) for k in ("c2w", "Ks", "widths", "heights", "dist")})
    depth_files = None if depth_maps is None else _depth_map_files(root, images, depth_maps, str(img_file), allow_outside_paths)
    mask_files = None if masks is None else _mask_files(root, masks, images, str(img_file), allow_outside_paths)
    file_cameras = cameras  # at the image files' resolution: the depth maps' z-to-ray conversion
    if residual != 1.0:
        cameras = cameras.rescaled(residual)

    c2w = torch.from_numpy(np.stack(c2ws))
    pts = None if model.points is None or len(model.points) == 0 else torch.from_numpy(model.points.xyz)
    c2w_n, T = normalize_poses(c2w, points=pts, method=normalize, align_up=align_up)
    cameras = replace(cameras, c2w=c2w_n.float())
    box, near, far = capture_bounds(c2w_n)

    image_sets = load_holdout_splits(
        cameras, paths, residual, source=str(img_file), folder=folder, root=root,
        splits=splits, max_images=max_images, progress=progress, holdout=HOLDOUT,
        depth_files=depth_files, depth_cameras=file_cameras, depth_scale=float(similarity_scale(T)),
        mask_files=mask_files,
    )

    points = rgb = None
    if pts is not None:
        points = apply_transform_to_points(T, pts).float()
        rgb = torch.from_numpy(model.points.rgb.copy())
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
        forward_facing=capture_looks_forward_facing(c2w_n, points),
    )
