"""Image conversion, reading and (atomic) writing.

Conventions: images are channel-last, ``[H, W, C]`` with ``C`` in ``{1, 3, 4}``.
Floating-point images (torch tensors or numpy arrays) hold linear values in
``[0, 1]`` and are *clamped* to that range before quantisation; ``uint8`` images are
passed through unchanged. Quantisation rounds to nearest: ``round(255 * x)``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from torch import Tensor

from langfield.io.atomic import atomic_write

PathLike = Union[str, os.PathLike]
ImageLike = Union[Tensor, np.ndarray]

__all__ = ["to_uint8", "to_float", "write_image", "read_image", "side_by_side", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg"}


def _as_hwc(img: ImageLike, name: str) -> ImageLike:
    if not isinstance(img, (Tensor, np.ndarray)):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(img).__name__}")
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{name} must be [H, W, C] with C in (1, 3, 4) (or [H, W]), got {tuple(img.shape)}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got {tuple(img.shape)}")
    return img


def to_uint8(img: ImageLike) -> np.ndarray:
    """Convert an image to a ``uint8`` numpy array ``[H, W, C]``.

    Args:
        img: ``[H, W, C]`` or ``[H, W]`` float tensor/array in ``[0, 1]`` (clamped;
            NaN becomes 0), or ``uint8`` (returned as a contiguous copy-free view).

    Returns:
        ``uint8`` array ``[H, W, C]`` (a ``[H, W]`` input gains ``C = 1``).
    """
    img = _as_hwc(img, "img")
    if isinstance(img, Tensor):
        if img.dtype == torch.uint8:
            return np.ascontiguousarray(img.detach().cpu().numpy())
        if not img.is_floating_point():
            raise ValueError(f"img must be floating point in [0, 1] or uint8, got {img.dtype}")
        x = torch.nan_to_num(img.detach().float(), nan=0.0).clamp(0.0, 1.0)
        return (x * 255.0).round().to(torch.uint8).cpu().numpy()
    if img.dtype == np.uint8:
        return np.ascontiguousarray(img)
    if not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"img must be floating point in [0, 1] or uint8, got {img.dtype}")
    x = np.clip(np.nan_to_num(img.astype(np.float32), nan=0.0), 0.0, 1.0)
    return np.round(x * 255.0).astype(np.uint8)


def to_float(img: ImageLike, device: torch.device | str | None = None) -> Tensor:
    """Convert an image to a float32 tensor ``[H, W, C]`` in ``[0, 1]``.

    ``uint8`` inputs are divided by 255; float inputs are returned as float32 (not
    clamped, so gradients and out-of-range renders are preserved).
    """
    img = _as_hwc(img, "img")
    t = torch.from_numpy(np.ascontiguousarray(img)) if isinstance(img, np.ndarray) else img
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    elif t.is_floating_point():
        t = t.float()
    else:
        raise ValueError(f"img must be floating point in [0, 1] or uint8, got {t.dtype}")
    return t if device is None else t.to(device)


def write_image(path: PathLike, img: ImageLike) -> Path:
    """Write an image as PNG or JPEG (chosen by suffix), atomically.

    Args:
        path: destination ending in ``.png``, ``.jpg`` or ``.jpeg``.
        img: float ``[H, W, C]`` in ``[0, 1]`` or ``uint8``; ``C = 1`` (or ``[H, W]``)
            is written as a single-channel grey image, ``C = 4`` keeps alpha (PNG only).

    Returns:
        The destination path.
    """
    import imageio.v3 as iio

    path = Path(path)
    ext = IMAGE_SUFFIXES.get(path.suffix.lower())
    if ext is None:
        raise ValueError(f"path must end in one of {sorted(IMAGE_SUFFIXES)}, got {str(path)!r}")
    arr = to_uint8(img)
    if arr.shape[-1] == 1:
        arr = arr[..., 0]
    elif arr.shape[-1] == 4 and ext == ".jpg":
        raise ValueError(f"JPEG cannot store alpha; drop the 4th channel or write a .png ({str(path)!r})")
    kwargs = {"quality": 95} if ext == ".jpg" else {}
    data = iio.imwrite("<bytes>", arr, extension=ext, **kwargs)
    with atomic_write(path, "wb") as f:
        f.write(data)
    return path


def read_image(path: PathLike) -> np.ndarray:
    """Read an image file into a ``uint8`` array ``[H, W, C]``.

    Grey images get ``C = 1``; 16-bit images are rescaled to 8 bits
    (``round(x / 257)``). Raises ``FileNotFoundError`` naming the path if it is
    missing and ``ValueError`` if the file cannot be decoded.
    """
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {str(path)!r}")
    try:
        with warnings.catch_warnings():  # imageio probes legacy plugins on undecodable files
            warnings.simplefilter("ignore", DeprecationWarning)
            arr = np.asarray(iio.imread(path))
    except Exception as e:  # imageio raises a zoo of plugin-specific errors
        raise ValueError(f"could not decode image file {str(path)!r}: {e}") from e
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ValueError(f"image file {str(path)!r} decoded to unexpected shape {arr.shape}")
    if arr.dtype == np.uint16:
        arr = np.round(arr.astype(np.float64) / 257.0).astype(np.uint8)
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        raise ValueError(f"image file {str(path)!r} has unsupported dtype {arr.dtype}")
    return arr


def _draw_labels(panel: np.ndarray, labels: Sequence[str], widths: Sequence[int], sep: int) -> np.ndarray:
    """Draw ``labels`` on a header strip above ``panel`` with Pillow's built-in font."""
    from PIL import Image, ImageDraw, ImageFont

    strip_h = 14
    header = np.zeros((strip_h, panel.shape[1], 3), dtype=np.uint8)
    canvas = Image.fromarray(np.concatenate([header, panel], axis=0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    x = 0
    for label, w in zip(labels, widths):
        if label:
            draw.text((x + 2, 1), str(label), fill=(255, 255, 255), font=font)
        x += w + sep
    return np.asarray(canvas)


def side_by_side(
    *imgs: ImageLike,
    labels: Sequence[str] | None = None,
    separator: int = 2,
    separator_value: float = 1.0,
) -> Tensor:
    """Concatenate images horizontally, e.g. a "render | ground truth | depth" panel.

    Args:
        *imgs: images ``[H, W, C]`` (``C`` in 1, 3, 4; float in ``[0, 1]`` or ``uint8``),
            all with the same ``H``. Grey images are repeated to RGB, alpha is dropped.
        labels: optional captions, one per image, drawn in white on a 14-pixel black
            header strip with Pillow's default bitmap font (the only place this
            module touches text). ``None`` (default) adds no header.
        separator: width in pixels of the plain vertical bar between panels (0 for none).
        separator_value: grey level of the bar in ``[0, 1]``.

    Returns:
        Float tensor ``[H (+14 with labels), sum(W) + separator * (n - 1), 3]`` in
        ``[0, 1]``, on the first image's device (CPU for numpy inputs).
    """
    if len(imgs) == 0:
        raise ValueError("side_by_side needs at least one image")
    if separator < 0:
        raise ValueError(f"separator must be >= 0, got {separator}")
    if labels is not None and len(labels) != len(imgs):
        raise ValueError(f"labels must have one entry per image ({len(imgs)}), got {len(labels)}")
    panels = []
    device = None
    for i, img in enumerate(imgs):
        _as_hwc(img, f"imgs[{i}]")
        t = to_float(img)
        device = t.device if device is None else device
        t = t.to(device).clamp(0.0, 1.0)
        if t.shape[-1] == 1:
            t = t.expand(-1, -1, 3)
        elif t.shape[-1] == 4:
            t = t[..., :3]
        panels.append(t)
    h = panels[0].shape[0]
    for i, p in enumerate(panels):
        if p.shape[0] != h:
            raise ValueError(f"imgs[{i}] has height {p.shape[0]}, expected {h} (all heights must match)")
    pieces = []
    for i, p in enumerate(panels):
        if i > 0 and separator > 0:
            pieces.append(torch.full((h, separator, 3), float(separator_value), device=device))
        pieces.append(p)
    out = torch.cat(pieces, dim=1)
    if labels is not None:
        drawn = _draw_labels(to_uint8(out), labels, [p.shape[1] for p in panels], separator)
        out = torch.from_numpy(drawn.copy()).to(device).float() / 255.0
    return out
