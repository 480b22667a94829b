"""Shared helpers of the scene readers (:mod:`langfield.data.readers`); this module imports no reader.

* Images are decoded once with :func:`langfield.io.images.read_image` (optionally in a thread
  pool, with a rich progress bar for more than :data:`PROGRESS_MIN_IMAGES` files), downscaled right
  away and stored as ``uint8`` tensors.
* Downscaling by a factor ``f`` (integer or float, ``>= 1``) produces ``floor(W / f) x floor(H / f)``
  images, exactly the sizes of :meth:`langfield.types.Cameras.rescaled`, by *area averaging*: each
  output pixel is the mean of the input area it covers, so the image border maps onto the same
  rays as the rescaled intrinsics. RGBA images are averaged with premultiplied alpha (then
  un-premultiplied), so compositing the small image equals downscaling the composited one. Label
  maps are resampled with nearest neighbour (ids are never blended). Depth maps (ray distances,
  or z-depths converted to them through the frame's camera; 0 = none) are area-averaged over their
  valid pixels only (:func:`resize_depth`), so holes never blend into surfaces. Training masks (True = use the pixel) are downscaled *conservatively*
  (:func:`resize_mask`): a small pixel is usable only if every source pixel it covers is.
* The held-out protocol of LLFF / Mip-NeRF 360 is :func:`every_nth_split`: view ``i`` is a test view
  iff ``i % 8 == 0`` (in sorted file order).
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from langfield._checks import (
    InputError,
    check_finite_number,
    check_image_size,
    check_int_range,
    check_memory,
    format_bytes,
    product,
)
from langfield.data.dataset import BACKGROUNDS, ImageSet
from langfield.geometry.rays import camera_directions, pixel_centers
from langfield.io.colmap import read_dense_array
from langfield.io.images import read_depth_image, read_image, read_image_size, read_label_map, read_mask_image
from langfield.io.text import check_regular_file, read_utf8_text
from langfield.types import Cameras

PathLike = Union[str, os.PathLike]

#: Extensions recognised as images (compared case-insensitively).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: Show a progress bar when loading more images than this.
PROGRESS_MIN_IMAGES = 20


# ----------------------------------------------------------------------------- small helpers


def check_downscale(factor: float, where: str = "downscale") -> float:
    """Validate a downscale factor and return it as ``float``.

    ``factor`` must be a finite number ``>= 1``: downscaling only ever shrinks images, and there is
    no upsampling option (a factor below 1 would silently invent pixels). ``where`` names the option
    in the message (``"--downscale"`` from the CLI).
    """
    if isinstance(factor, str):
        try:
            factor = float(factor)
        except ValueError:
            raise InputError(f"{where}: expected a number >= 1, got {factor!r}") from None
    f = check_finite_number(factor, where)
    if f < 1:
        raise InputError(
            f"{where}: must be >= 1 (1 = full resolution, 2 = half, ...), got {factor!r}; "
            f"a factor below 1 would upsample the images, which langfield does not do"
        )
    return f


def downscaled_size(width: int, height: int, factor: float) -> Tuple[int, int]:
    """``(w, h)`` of a ``width x height`` image downscaled by ``factor`` (same rule as ``Cameras.rescaled``)."""
    return max(1, math.floor(width / factor)), max(1, math.floor(height / factor))


def resolve_background(background: Optional[str]) -> str:
    """``background`` checked against :data:`BACKGROUNDS`; ``None`` means ``"white"``."""
    if background is None:
        return "white"
    if background not in BACKGROUNDS:
        raise InputError(f"background must be one of {BACKGROUNDS} or None, got {background!r}")
    return background


def read_json(path: PathLike) -> Dict[str, Any]:
    """Read a JSON object; bad bytes or syntax are an :class:`InputError` naming the file, line and column."""
    path = Path(path)
    text = read_utf8_text(path, "JSON file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    return data


def read_npy(path: PathLike, what: str = ".npy array") -> np.ndarray:
    """Load a numeric ``.npy`` file, never a pickle, checking its header against the file size first.

    The declared shape is trusted only once the file is large enough to hold it, so a header that
    claims ``2^40`` rows is refused before anything is allocated. Raises :class:`InputError` naming
    the file for pickled (object) arrays, non-numeric dtypes, bad headers and truncation.
    """
    path = check_regular_file(path, what)
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(f)
            header_end = f.tell()
    except Exception as e:  # noqa: BLE001 - numpy raises ValueError/OSError/EOFError on bad headers
        raise InputError(f"{path}: not a valid .npy file ({type(e).__name__}: {e})") from None
    if dtype.hasobject:
        raise InputError(f"{path}: holds Python objects (a pickle); only numeric arrays are read, never pickles")
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise InputError(f"{path}: expected a numeric array, got dtype {dtype}")
    need = int(np.prod(shape, dtype=object) if shape else 1) * dtype.itemsize
    if header_end + need > size:
        raise InputError(
            f"{path}: header declares shape {tuple(shape)} ({format_bytes(need)}) but the file holds only "
            f"{format_bytes(size - header_end)} of data (truncated or corrupt)"
        )
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{path}: cannot read as a .npy array ({type(e).__name__}: {e})") from None


def confine_path(path: PathLike, root: PathLike, where: str, *, allow_outside: bool = False) -> Path:
    """``Path(path)``, refused if it lies outside the dataset folder ``root``.

    Both are compared after resolving ``..`` and symbolic links, so an absolute path, a ``../``
    path and a symlink pointing out of ``root`` are all refused. ``allow_outside=True`` (the
    readers' ``allow_outside_paths`` option) skips the check. Raises :class:`InputError` naming
    ``where`` (the file and field the path came from).
    """
    path = Path(path)
    if allow_outside:
        return path
    try:
        resolved = path.resolve()
        inside = Path(root).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise InputError(f"{where}: cannot resolve {path} ({e})") from None
    if resolved != inside and inside not in resolved.parents:
        raise InputError(
            f"{where}: {path} resolves to {resolved}, outside the dataset folder {inside}; files outside it are "
            f"not read unless you opt in (allow_outside_paths=True, DataConfig.allow_outside_paths)"
        )
    return path


def check_unique(names: Sequence[str], where: str, what: str = "file_path") -> None:
    """Refuse the same ``what`` twice in ``names`` (the message names both positions)."""
    seen: Dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen:
            raise InputError(f"{where}: {what} {n!r} appears twice (entries {seen[n]} and {i})")
        seen[n] = i


def every_nth_split(num: int, n: int = 8) -> Tuple[List[int], List[int]]:
    """``(train, test)`` index lists: view ``i`` is held out for test iff ``i % n == 0`` (LLFF protocol)."""
    if n < 1:
        raise InputError(f"hold-out period must be >= 1, got {n}")
    test = [i for i in range(num) if i % n == 0]
    train = [i for i in range(num) if i % n != 0]
    return train, test


def is_image_file(path: PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_image_files(folder: PathLike) -> List[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if folder.is_file():
        raise InputError(f"{folder}: is a file, expected an image folder")
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def resolve_image_folder(root: PathLike, downscale: float, base: str = "images") -> Tuple[Path, float]:
    """Pick the image folder for ``downscale`` and the factor still to apply after reading it.

    ``root/images_K`` holds images pre-shrunk by ``K`` (LLFF / nerfstudio layout), ``root/images`` the
    originals. An exact ``images_K`` match is used as is (residual factor 1); otherwise the
    folder with the largest ``K <= downscale`` is resized by ``downscale / K``.
    """
    root = Path(root)
    downscale = check_downscale(downscale)
    candidates: Dict[float, Path] = {}
    if (root / base).is_dir():
        candidates[1.0] = root / base
    for p in root.glob(f"{base}_*"):
        suffix = p.name[len(base) + 1 :]
        if p.is_dir() and suffix.isdigit() and int(suffix) > 0:
            candidates[float(int(suffix))] = p
    usable = [k for k in candidates if k <= downscale + 1e-9]
    if not usable:
        have = ", ".join(sorted(p.name for p in candidates.values())) or "none"
        odd = (root / base).exists() and not (root / base).is_dir()
        raise FileNotFoundError(
            f"{root}: no image folder usable for downscale {downscale:g}: looked for '{base}/' or "
            f"'{base}_K/' with K <= {downscale:g}; found: {have}" + (f" ('{base}' is not a folder)" if odd else "")
        )
    k = max(usable)
    residual = downscale / k
    if abs(residual - 1.0) < 1e-9:
        residual = 1.0
    return candidates[k], residual


# ----------------------------------------------------------------------------- resampling


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` float32 averaging matrix: output cell ``j`` covers ``[j s, (j+1) s)``, ``s = n_in/n_out``."""
    s = n_in / n_out
    lo = np.arange(n_out, dtype=np.float64)[:, None] * s
    hi = lo + s
    i = np.arange(n_in, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(i + 1.0, hi) - np.maximum(i, lo), 0.0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def resize_area(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-average ``array [H, W, D]`` to ``[height, width, D]`` float32."""
    h_in, w_in = array.shape[:2]
    x = array.astype(np.float32, copy=False)
    if (h_in, w_in) == (height, width):
        return x.copy()
    if h_in % height == 0 and w_in % width == 0:
        fy, fx = h_in // height, w_in // width
        return x.reshape(height, fy, width, fx, -1).mean(axis=(1, 3))
    wy = _area_weights(h_in, height)
    wx = _area_weights(w_in, width)
    tmp = (wy @ x.reshape(h_in, -1)).reshape(height, w_in, -1)
    return np.einsum("xW,hWd->hxd", wx, tmp)


def resize_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-downscale a ``uint8 [H, W, 3|4]`` image to ``[height, width, 3|4]`` uint8.

    RGBA colour is averaged premultiplied by alpha, then divided by the averaged alpha.
    """
    if image.shape[:2] == (height, width):
        return image
    if image.shape[-1] == 4:
        a = image[:, :, 3:].astype(np.float32) / 255.0
        pre = np.concatenate([image[:, :, :3].astype(np.float32) * a, a], axis=-1)
        small = resize_area(pre, width, height)
        alpha = small[:, :, 3:]
        rgb = np.where(alpha > 1e-6, small[:, :, :3] / np.maximum(alpha, 1e-6), 0.0)
        out = np.concatenate([rgb, alpha * 255.0], axis=-1)
    else:
        out = resize_area(image, width, height)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def resize_labels(labels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resample of a label map ``[H, W]`` (sampled at output pixel centres)."""
    h_in, w_in = labels.shape[:2]
    if (h_in, w_in) == (height, width):
        return labels
    ys = np.minimum(((np.arange(height) + 0.5) * (h_in / height)).astype(np.int64), h_in - 1)
    xs = np.minimum(((np.arange(width) + 0.5) * (w_in / width)).astype(np.int64), w_in - 1)
    return labels[ys[:, None], xs[None, :]]


def resize_depth(depth: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-downscale a ray-distance map ``depth [H, W]`` to ``[height, width]`` float32 over its valid pixels.

    Valid means finite and ``> 0`` (0 marks "no depth": sky, background, sensor holes). Each output
    pixel is the mean of the valid depths in the input area it covers (the areas of
    :func:`resize_area`, as the images), valid when at least half of that area is valid, else 0:
    a hole is never averaged into a surface. Invalid input values come out as 0.

    >>> resize_depth(np.array([[2.0, 0.0], [4.0, np.nan]]), 1, 1).tolist()  # half of the area valid
    [[3.0]]
    """
    valid = np.isfinite(depth) & (depth > 0)
    stacked = np.stack([np.where(valid, depth, 0.0), valid], axis=-1).astype(np.float32)
    small = resize_area(stacked, width, height)
    total, cover = small[..., 0], small[..., 1]
    return np.where(cover >= 0.5, total / np.maximum(cover, 1e-12), 0.0).astype(np.float32)


def resample_depth(depth: np.ndarray, width: int, height: int) -> np.ndarray:
    """A ray-distance (or z) map ``depth [H, W]`` at ``[height, width]`` float32, 0 = no depth.

    Down (the output no larger on either axis): :func:`resize_depth`, the valid-only area average.
    Up (a low-resolution sensor's depth beside its colour image): nearest-neighbour at the output pixel
    centres (:func:`resize_labels`), so a hole stays a hole and no depth is interpolated across an edge.

    >>> resample_depth(np.array([[1.0, 0.0]], np.float32), 4, 2).tolist()
    [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]]
    """
    h_in, w_in = depth.shape[:2]
    if w_in >= width and h_in >= height:
        return resize_depth(depth, width, height)
    valid = np.isfinite(depth) & (depth > 0)
    return resize_labels(np.where(valid, depth, 0.0).astype(np.float32), width, height)


def resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """Downscale a training mask ``mask [H, W]`` (bool, True = use the pixel) to ``[height, width]`` bool.

    Conservative: an output pixel is usable only if **every** input pixel it covers (the areas of
    :func:`resize_area`, as the images) is usable, i.e. the area average of the mask is 1 (up to
    float round-off, ``>= 1 - 1e-6``). A pixel that mixes in any ignored colour (a passer-by's
    edge, the rig) is thus never a training target.

    >>> resize_mask(np.array([[True, True, True, False], [True, True, True, True]]), 2, 1).tolist()
    [[True, False]]
    """
    h_in, w_in = mask.shape[:2]
    if (h_in, w_in) == (height, width):
        return mask.astype(bool, copy=True)
    cover = resize_area(mask.astype(np.float32)[..., None], width, height)[..., 0]
    return cover >= 1.0 - 1e-6


# ----------------------------------------------------------------------------- batch loading


@dataclass(frozen=True)
class LoadedImages:
    """Decoded, downscaled images of one split.

    Attributes:
        images: ``[C, H, W, 3]`` uint8 RGB (un-composited colour where there is alpha).
        alphas: ``[C, H, W, 1]`` uint8 or ``None`` when no file has an alpha channel.
        semantics: ``[C, H, W]`` int64 label ids or ``None``.
        source_sizes: ``(width, height)`` of each file before downscaling.
    """

    images: Tensor
    alphas: Optional[Tensor]
    semantics: Optional[Tensor]
    source_sizes: List[Tuple[int, int]]


def check_same_size(paths: Sequence[PathLike], sizes: Sequence[Tuple[int, int]], source: str) -> None:
    """Raise ``ValueError`` naming both files if ``sizes`` (``(w, h)`` each) are not all equal."""
    for p, s in zip(paths, sizes):
        if tuple(s) != tuple(sizes[0]):
            raise InputError(
                f"{source}: images of one split must share a size, but {paths[0]} is "
                f"{sizes[0][0]}x{sizes[0][1]} and {p} is {s[0]}x{s[1]} (width x height)"
            )


def _progress_map(fn, items: Sequence[Any], description: str, num_workers: Optional[int], progress: Optional[bool]):
    """``[fn(x) for x in items]`` in a thread pool, with a rich progress bar for long lists."""
    n = len(items)
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1)
    show = (n > PROGRESS_MIN_IMAGES) if progress is None else bool(progress)
    results: List[Any] = [None] * n

    def run(update):
        if num_workers <= 1 or n <= 1:
            for i, x in enumerate(items):
                results[i] = fn(x)
                update()
            return
        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            for i, r in enumerate(pool.map(fn, items)):
                results[i] = r
                update()

    if not show:
        run(lambda: None)
        return results
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
    ) as bar:
        task = bar.add_task(description, total=n)
        run(lambda: bar.advance(task))
    return results


def image_memory_bytes(
    num: int, source_wh: Tuple[int, int], stored_wh: Tuple[int, int], *, workers: int = 1, semantics: bool = False
) -> int:
    """Estimated peak bytes of :func:`load_images`: the stored tensors plus the decode buffers in flight.

    Stored (per pixel of ``stored_wh``, per image): uint8 RGB + alpha (4 B) in the stacked tensor and
    again in the per-image arrays held until stacking (4 B); with ``semantics``, int64 label ids in
    both (16 B). In flight: ``workers`` full-size decodes at ``source_wh``, each about 4 B/px for the
    pixels plus 16 B/px of float32 resampling buffers when the size changes (and 8 B/px of labels).
    """
    w0, h0 = source_wh
    w, h = stored_wh
    per_stored = 4 + 4 + (16 if semantics else 0)
    per_source = 4 + (16 if (w, h) != (w0, h0) else 0) + (8 if semantics else 0)
    return product((num, w, h, per_stored)) + product((workers, w0, h0, per_source))


def load_images(
    paths: Sequence[PathLike],
    downscale: float = 1.0,
    *,
    semantic_paths: Optional[Sequence[PathLike]] = None,
    source: str = "images",
    num_workers: Optional[int] = None,
    progress: Optional[bool] = None,
) -> LoadedImages:
    """Decode ``paths`` (all of one size), downscale each by ``downscale`` and stack them.

    Args:
        paths: image files of one split.
        downscale: factor ``>= 1``; output size is :func:`downscaled_size` of the file size.
        semantic_paths: optional label maps, one per image, same size as the image.
        source: what the images belong to (a json file, a folder), used in error messages.
        num_workers: decoding threads (default ``min(8, cpu_count)``).
        progress: force the progress bar on/off (default: on for > 20 images).
    """
    downscale = check_downscale(downscale)
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError(f"{source}: no images to load")
    for p in paths:
        if p.is_dir():
            raise InputError(f"{source}: {p} is a directory, expected an image file")
        if not p.is_file():
            raise FileNotFoundError(f"{source}: image not found: {p}")
    sizes = [check_image_size(*read_image_size(p), str(p)) for p in paths]
    check_same_size(paths, sizes, source)
    w0, h0 = sizes[0]
    w, h = downscaled_size(w0, h0, downscale)
    sem_paths = None if semantic_paths is None else [Path(p) for p in semantic_paths]
    if sem_paths is not None and len(sem_paths) != len(paths):
        raise InputError(f"{source}: {len(sem_paths)} label maps for {len(paths)} images")
    workers = min(num_workers or min(8, os.cpu_count() or 1), len(paths))
    check_memory(
        image_memory_bytes(len(paths), (w0, h0), (w, h), workers=workers, semantics=sem_paths is not None),
        f"{source}: {len(paths)} images of {w0}x{h0} (stored at {w}x{h})",
        hint="load fewer or smaller images (a larger downscale, or max_images)",
    )

    def work(i: int):
        img = read_image(paths[i])
        if img.shape[:2] != (h0, w0):
            raise InputError(f"{paths[i]}: decoded size {img.shape[1]}x{img.shape[0]} differs from header {w0}x{h0}")
        img = resize_image(img, w, h)
        sem = None
        if sem_paths is not None:
            lab = read_label_map(sem_paths[i])
            if lab.shape != (h0, w0):
                raise InputError(
                    f"{source}: label map {sem_paths[i]} is {lab.shape[1]}x{lab.shape[0]} but its image "
                    f"{paths[i]} is {w0}x{h0}"
                )
            sem = resize_labels(lab, w, h)
        return img, sem

    results = _progress_map(work, list(range(len(paths))), f"loading {source}", num_workers, progress)
    has_alpha = any(r[0].shape[-1] == 4 for r in results)
    rgb = np.empty((len(paths), h, w, 3), dtype=np.uint8)
    alpha = np.full((len(paths), h, w, 1), 255, dtype=np.uint8) if has_alpha else None
    sem = np.empty((len(paths), h, w), dtype=np.int64) if sem_paths is not None else None
    for i, (img, lab) in enumerate(results):
        rgb[i] = img[:, :, :3]
        if alpha is not None and img.shape[-1] == 4:
            alpha[i] = img[:, :, 3:]
        if sem is not None:
            sem[i] = lab
    return LoadedImages(
        images=torch.from_numpy(rgb),
        alphas=None if alpha is None else torch.from_numpy(alpha),
        semantics=None if sem is None else torch.from_numpy(sem),
        source_sizes=sizes,
    )


#: Conventions of a depth file: ``"ray"`` (float distances along the unit pixel-centre ray, in the
#: dataset's world units) or ``"z"`` (camera-frame z-depth in sensor units, nerfstudio's ``depth_file_path``).
DEPTH_CONVENTIONS = ("ray", "z")


@dataclass(frozen=True)
class DepthFile:
    """One frame's depth map on disk and how to read it.

    Attributes:
        path: the file. ``"ray"``: a float ``.npy``. ``"z"``: a ``.npy`` of any numeric dtype, a COLMAP
            dense depth map (``.bin``, :func:`~langfield.io.colmap.read_dense_array`) or a single-channel
            image (:func:`~langfield.io.images.read_depth_image`: 16-bit PNG, float TIFF).
        convention: ``"ray"`` or ``"z"`` (:data:`DEPTH_CONVENTIONS`). A z-depth becomes a ray distance
            through the frame's camera: ``z * |K^-1 (u, v, 1)|`` at the pixel centre, distortion removed.
        unit_scale: multiplies the stored values into the dataset's world units (nerfstudio's
            ``depth_unit_scale_factor``: 0.001 for millimetres); 1 for ``"ray"`` files.
    """

    path: Path
    convention: str = "ray"
    unit_scale: float = 1.0


def _read_depth_file(item: DepthFile) -> np.ndarray:
    """The raw ``[H, W]`` float values of one depth file, checked (messages name the file)."""
    path = item.path
    if item.convention == "ray":
        depth = read_npy(path, "depth map")
        if not np.issubdtype(depth.dtype, np.floating):
            raise InputError(
                f"{path}: depth map has dtype {depth.dtype}; expected float ray distances in the dataset's world "
                f"units (an integer sensor map, e.g. millimetre z-depth, goes in the frame's 'depth_file_path' "
                f"with a top-level 'depth_unit_scale_factor', as in nerfstudio)"
            )
    elif path.suffix.lower() == ".npy":
        depth = read_npy(path, "depth map")
        if depth.dtype == np.bool_:
            raise InputError(f"{path}: depth map is a boolean array; expected depth values")
    elif path.suffix.lower() == ".bin":
        depth = read_dense_array(path)
        if depth.shape[2] != 1:
            raise InputError(f"{path}: a COLMAP depth map has 1 channel, this array has {depth.shape[2]} (a normal map?)")
    else:
        depth = read_depth_image(path)
    if depth.ndim == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    return np.asarray(depth, dtype=np.float32)


def _ray_lengths(cameras: Cameras, index: int) -> np.ndarray:
    """``[H, W]`` length of the ``z = 1`` direction through every pixel centre of camera ``index``:
    a z-depth times it is the ray distance (:func:`~langfield.geometry.rays.camera_directions`)."""
    w, h = int(cameras.widths[index]), int(cameras.heights[index])
    pixels = pixel_centers(w, h).reshape(-1, 2)
    dirs = camera_directions(cameras[index], torch.zeros(w * h, dtype=torch.int64), pixels)
    return dirs.norm(dim=-1).reshape(h, w).numpy()


def load_depths(
    paths: Sequence[Union[PathLike, DepthFile]],
    image_size: Tuple[int, int],
    downscale: float = 1.0,
    *,
    scale: float = 1.0,
    cameras: Optional[Cameras] = None,
    source: str = "depth maps",
    progress: Optional[bool] = None,
) -> Tensor:
    """Read one depth map per image and return ray distances, 0 (or non-finite, or ``<= 0``) = none.

    Args:
        paths: one per image and in order: a path (a ``"ray"`` :class:`DepthFile`: float ``.npy``
            ``[H, W]`` or ``[H, W, 1]`` ray distances in the dataset's original world units) or a
            :class:`DepthFile` (``"z"``: sensor z-depth times its ``unit_scale``).
        image_size: ``(W, H)`` of the images at full resolution. A map of another size with the same
            aspect ratio (within 1 %) is resampled (:func:`resample_depth`): a larger one (a dense
            depth at full resolution beside pre-shrunk ``images_K``) is area-averaged over its valid
            pixels, a smaller one (a phone's LiDAR depth beside its colour) is upsampled nearest-neighbour,
            so no depth is blended across an edge.
        downscale: the images' factor; the maps follow to :func:`downscaled_size`, the images' size.
        scale: multiplies every valid distance: the uniform scale of the dataset's
            ``world_transform`` (:func:`~langfield.geometry.normalize.similarity_scale`), so the
            distances are in the normalised frame like the cameras.
        cameras: the images' cameras at full resolution, one per map; needed by ``"z"`` files only
            (a z-depth becomes a ray distance through the camera rescaled to the map's own size when
            the map is downsampled, to the output size when it is upsampled).
        source: what the maps belong to, for messages.

    Returns:
        ``[C, h, w, 1]`` float32, 0 where there is no depth.

    Raises:
        InputError: naming the file, for a map that cannot be read as depth or whose aspect ratio is
            not its image's.
    """
    items = [p if isinstance(p, DepthFile) else DepthFile(Path(p)) for p in paths]
    for item in items:
        if item.convention not in DEPTH_CONVENTIONS:
            raise InputError(f"{item.path}: depth convention {item.convention!r} is not one of {DEPTH_CONVENTIONS}")
        check_finite_number(item.unit_scale, f"{item.path}: depth unit scale", lo=0.0, lo_inclusive=False)
    w0, h0 = image_size
    if any(item.convention == "z" for item in items):
        if cameras is None or len(cameras) != len(items):
            raise InputError(f"{source}: z-depth maps need their cameras (one per map) to become ray distances")
        if bool((cameras.widths != w0).any()) or bool((cameras.heights != h0).any()):
            raise InputError(f"{source}: the cameras of the z-depth maps must be those of the {w0}x{h0} images")
    w, h = downscaled_size(w0, h0, check_downscale(downscale))
    check_memory(product((len(items), w, h, 4)) + product((w0, h0, 12)), f"{source}: {len(items)} depth maps of {w0}x{h0}",
                 hint="load fewer or smaller images (a larger downscale, or max_images)")  # fmt: skip

    def work(i: int) -> np.ndarray:
        item = items[i]
        depth = _read_depth_file(item)
        hm, wm = depth.shape
        if (hm, wm) != (h0, w0) and abs((wm / w0) / (hm / h0) - 1.0) > 0.01:
            raise InputError(
                f"{source}: depth map {item.path} has shape {tuple(depth.shape)} but its image is {h0}x{w0} (height x width); "
                f"expected [H, W] = [{h0}, {w0}] or the same aspect ratio at another resolution"
            )
        if item.unit_scale != 1.0:
            depth = depth * np.float32(item.unit_scale)
        shrink = wm >= w and hm >= h  # area-average over valid pixels, else nearest-neighbour upsampling
        if not shrink:
            depth = resample_depth(depth, w, h)
        if item.convention == "z":
            at = (wm, hm) if shrink else (w, h)
            camera = cameras[i : i + 1]
            if at != (w0, h0):
                camera = cameras_for_image_size(camera, *at, source=f"{source}: depth map {item.path}")
            depth = depth * _ray_lengths(camera, 0)
        if shrink:
            depth = resample_depth(depth, w, h)
        return depth * np.float32(scale)

    maps = _progress_map(work, list(range(len(items))), f"loading {source}", None, progress)
    return torch.from_numpy(np.stack(maps))[..., None]


def load_masks(
    paths: Sequence[PathLike],
    image_size: Tuple[int, int],
    downscale: float = 1.0,
    *,
    source: str = "masks",
    progress: Optional[bool] = None,
) -> Tensor:
    """Read one training mask per image (nerfstudio's ``mask_path``): True = use the pixel.

    Args:
        paths: one single-channel mask image per image, in order
            (:func:`~langfield.io.images.read_mask_image`: 0 = ignore, non-zero = use).
        image_size: ``(W, H)`` of the images at full resolution; every mask must have that size.
        downscale: the images' factor; the masks follow to :func:`downscaled_size` with the
            conservative :func:`resize_mask` (a small pixel is usable only if every pixel it
            covers is).
        source: what the masks belong to, for messages.
        progress: force the loading progress bar on/off.

    Returns:
        ``[C, h, w, 1]`` bool.

    Raises:
        InputError: naming the file, for a mask that is not a single-channel image or not its image's size.
    """
    paths = [Path(p) for p in paths]
    w0, h0 = image_size
    w, h = downscaled_size(w0, h0, check_downscale(downscale))
    check_memory(product((len(paths), w, h, 2)) + product((w0, h0, 12)), f"{source}: {len(paths)} masks of {w0}x{h0}",
                 hint="load fewer or smaller images (a larger downscale, or max_images)")  # fmt: skip

    def work(i: int) -> np.ndarray:
        mask = read_mask_image(paths[i])
        if mask.shape != (h0, w0):
            raise InputError(
                f"{source}: mask {paths[i]} is {mask.shape[1]}x{mask.shape[0]} but its image is {w0}x{h0} "
                f"(width x height); a mask must be the size of its image"
            )
        return resize_mask(mask, w, h)

    masks = _progress_map(work, list(range(len(paths))), f"loading {source}", None, progress)
    return torch.from_numpy(np.stack(masks))[..., None]


def cameras_for_image_size(cameras: Cameras, width: int, height: int, source: str = "cameras") -> Cameras:
    """Rescale ``cameras`` (all of one size) to images of ``width x height``, per axis.

    Used when images on disk were pre-shrunk (``images_K``): their size may differ from
    ``W / K`` by rounding. A change of aspect ratio by more than 1% is an error.
    """
    W = cameras.widths.double()
    H = cameras.heights.double()
    sx = width / W
    sy = height / H
    if bool(torch.any((sx / sy - 1.0).abs() > 0.01)):
        raise InputError(
            f"{source}: image size {width}x{height} does not match the camera size "
            f"{int(W[0])}x{int(H[0])} up to a uniform scale"
        )
    Ks = cameras.Ks.clone()
    Ks[:, 0, :] *= sx.float()[:, None]
    Ks[:, 1, :] *= sy.float()[:, None]
    num = len(cameras)
    return replace(
        cameras,
        Ks=Ks,
        widths=torch.full((num,), int(width), dtype=torch.int64),
        heights=torch.full((num,), int(height), dtype=torch.int64),
    )


def make_image_set(
    cameras: Cameras,
    loaded: LoadedImages,
    paths: Sequence[PathLike],
    depths: Optional[Tensor] = None,
    masks: Optional[Tensor] = None,
) -> ImageSet:
    """Pair cameras with loaded images (and optional ``depths [C, H, W, 1]`` float, ``masks [C, H, W, 1]``
    bool), checking that their sizes agree."""
    h, w = loaded.images.shape[1:3]
    if bool(torch.any(cameras.widths != w) | torch.any(cameras.heights != h)):
        raise InputError(
            f"camera sizes {cameras.widths.tolist()[:3]}x{cameras.heights.tolist()[:3]} do not match "
            f"the loaded images ({w}x{h}), first file {paths[0] if paths else '?'}"
        )
    if depths is not None and tuple(depths.shape) != (len(loaded.images), h, w, 1):
        raise InputError(
            f"depth maps {tuple(depths.shape)} do not match the loaded images [{len(loaded.images)}, {h}, {w}, 1], "
            f"first file {paths[0] if paths else '?'}"
        )
    if masks is not None and (masks.dtype != torch.bool or tuple(masks.shape) != (len(loaded.images), h, w, 1)):
        raise InputError(
            f"masks {masks.dtype} {tuple(masks.shape)} do not match the loaded images: expected bool "
            f"[{len(loaded.images)}, {h}, {w}, 1], first file {paths[0] if paths else '?'}"
        )
    return ImageSet(
        cameras=cameras,
        images=loaded.images,
        alphas=loaded.alphas,
        paths=[str(p) for p in paths],
        semantics=loaded.semantics,
        depths=depths,
        masks=masks,
    )


#: Bounds of normalised real captures: ``near = CAPTURE_NEAR * r``, ``far = CAPTURE_FAR_DIAGONALS`` box diagonals.
CAPTURE_NEAR = 0.05
CAPTURE_FAR_DIAGONALS = 4.0


def capture_bounds(c2w: Tensor) -> Tuple[Tensor, float, float]:
    """``(scene_box [2, 3], near, far)`` of a normalised real capture from its cameras ``c2w [C, 3, 4]``.

    The box is the cube ``[-r, r]^3`` with ``r`` the largest absolute camera-centre coordinate
    (``r <= 1`` after ``normalize_poses(..., target_radius=1)``); ``near = 0.05 r`` and
    ``far = 4`` box diagonals, a generous bound for unbounded scenes.
    """
    half = max(float(c2w[:, :3, 3].abs().max()), 1e-3)
    box = torch.tensor([[-half] * 3, [half] * 3], dtype=torch.float32)
    diag = float((box[1] - box[0]).norm())
    return box, CAPTURE_NEAR * half, CAPTURE_FAR_DIAGONALS * diag


def limit_indices(indices: Sequence[int], max_images: Optional[int]) -> List[int]:
    """The first ``max_images`` of ``indices`` (all when ``None``)."""
    if max_images is None:
        return list(indices)
    return list(indices)[: check_int_range(max_images, "max_images", lo=1)]


def check_splits_arg(splits: Optional[Sequence[str]], available: Sequence[str], source: str) -> List[str]:
    """Requested split names (all available when ``None``); ``"train"`` is always included."""
    if splits is None:
        return list(available)
    if isinstance(splits, str) or not all(isinstance(x, str) for x in splits):
        raise InputError(f"{source}: splits: expected a list of split names such as ['train', 'test'], got {splits!r}")
    wanted = list(dict.fromkeys(["train", *splits]))
    for s in wanted:
        if s not in available:
            raise InputError(f"{source}: no split {s!r}; available: {list(available)}")
    return wanted


def load_holdout_splits(
    cameras: Cameras,
    paths: Sequence[PathLike],
    downscale: float,
    *,
    source: str,
    folder: PathLike,
    root: PathLike,
    splits: Optional[Sequence[str]] = None,
    max_images: Optional[int] = None,
    progress: Optional[bool] = None,
    holdout: int = 8,
    depth_files: Optional[Sequence[DepthFile]] = None,
    depth_cameras: Optional[Cameras] = None,
    depth_scale: float = 1.0,
    mask_files: Optional[Sequence[PathLike]] = None,
) -> Dict[str, ImageSet]:
    """Split views into train / every-``holdout``-th test (the LLFF protocol) and load their images.

    ``cameras`` and ``paths`` list every view in order; ``source`` names the file that defined the
    views (for the empty-split error), ``folder`` the image folder (for loading messages). With
    ``depth_files`` (one per view) the depth maps are loaded too (:func:`load_depths`, scaled by
    ``depth_scale``; ``depth_cameras``: every view's camera at the image files' resolution); with
    ``mask_files`` (one per view, each the size of its image file) the training masks
    (:func:`load_masks`).
    """
    train_idx, test_idx = every_nth_split(len(paths), holdout)
    if not train_idx:
        raise InputError(f"{source}: {len(paths)} view(s): the every-{holdout}th test hold-out leaves the 'train' split empty")
    groups = {"train": train_idx, "test": test_idx}
    wanted = check_splits_arg(splits, list(groups), str(root))
    image_sets: Dict[str, ImageSet] = {}
    for name in wanted:
        idx = limit_indices(groups[name], max_images)
        split_paths = [paths[i] for i in idx]
        loaded = load_images(split_paths, downscale, source=f"{folder} [{name}]", progress=progress)
        depths = None
        if depth_files is not None:
            depths = load_depths([depth_files[i] for i in idx], loaded.source_sizes[0], downscale, scale=depth_scale,
                                 cameras=None if depth_cameras is None else depth_cameras[idx],
                                 source=f"{source} [{name}]", progress=progress)  # fmt: skip
        masks = None
        if mask_files is not None:
            masks = load_masks([mask_files[i] for i in idx], loaded.source_sizes[0], downscale,
                               source=f"{source} [{name}]", progress=progress)  # fmt: skip
        image_sets[name] = make_image_set(cameras[idx], loaded, split_paths, depths, masks)
    return image_sets
