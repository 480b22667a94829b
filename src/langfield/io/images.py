"""Image conversion, reading and (atomic) writing.

Reading: :func:`read_image` always returns ``uint8 [H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA),
whatever the file's mode; :func:`read_label_map` reads integer ids without any colour conversion;
:func:`read_depth_image` raw single-channel depth values; :func:`read_mask_image` a single-channel
training mask as booleans. All decode with Pillow and name the file in every error.

Conventions: images are channel-last, ``[H, W, C]`` with ``C`` in ``{1, 3, 4}``.
Floating-point images (torch tensors or numpy arrays) hold linear values in
``[0, 1]`` and are *clamped* to that range before quantisation; ``uint8`` images are
passed through unchanged. Quantisation rounds to nearest: ``round(255 * x)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from langfield._checks import InputError
from langfield.io.atomic import atomic_write
from langfield.io.text import check_regular_file

PathLike = Union[str, os.PathLike]
ImageLike = Union[Tensor, np.ndarray]

__all__ = [
    "IMAGE_SUFFIXES",
    "image_grid",
    "read_depth_image",
    "read_image",
    "read_image_size",
    "read_label_map",
    "read_mask_image",
    "side_by_side",
    "to_float",
    "to_uint8",
    "write_image",
]

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


# ----------------------------------------------------------------------------- reading

#: Pillow modes that carry an alpha channel ("LAB" does not: it is a colour space).
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


def _open_image(path: Path, what: str) -> Image.Image:
    """Open and fully decode ``path`` with Pillow; errors name the file."""
    check_regular_file(path, what)
    image = None
    try:
        image = Image.open(path)
        image.load()  # decode now, so a truncated file fails here with its name
    except Exception as e:  # noqa: BLE001 - Pillow raises a zoo of decoder errors; name the file
        if image is not None:
            image.close()
        raise InputError(f"{path}: cannot decode {what} ({type(e).__name__}: {e})") from None
    return image


def _sixteen_bit_to_uint8(values: np.ndarray, path: Path, mode: str) -> np.ndarray:
    """Integer values in ``[0, 65535]`` to uint8 by rounding ``x / 257`` (65535 -> 255)."""
    lo, hi = int(values.min()), int(values.max())
    if lo < 0 or hi > 65535:
        raise InputError(
            f"{path}: integer image (mode {mode!r}) has values in [{lo}, {hi}]; only 8- or 16-bit "
            f"data ([0, 65535]) is read as an image"
        )
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def read_image(path: PathLike) -> np.ndarray:
    """Read an image file as ``uint8 [H, W, 3]`` (RGB) or ``uint8 [H, W, 4]`` (RGBA), nothing else.

    Every Pillow mode is decoded to one of those two (pixels as stored: EXIF orientation is not
    applied, so the pixels match the cameras that COLMAP and the transforms files describe):

    * ``RGB``, ``RGBA``: as stored. ``RGBa`` (premultiplied) is un-premultiplied, ``RGBX`` drops X.
    * grey ``L`` / ``1`` is replicated to RGB; ``LA`` becomes RGBA (grey replicated, alpha kept).
    * palette ``P`` / ``PA``: looked up; RGBA when the palette or a ``tRNS`` chunk has transparency.
    * a ``tRNS`` transparent colour on an ``L`` or ``RGB`` image gives RGBA (alpha 0 on that colour).
    * ``CMYK`` (e.g. CMYK JPEGs) and ``YCbCr`` / ``LAB`` / ``HSV`` are converted to RGB.
    * 16-bit grey (``I;16*``) and 32-bit integer ``I`` data are read as 16-bit values and scaled
      to 8 bits by ``round(x / 257)``; values outside ``[0, 65535]`` are an error. 16-bit colour
      PNGs reach us through Pillow as 8-bit (the high byte, within 1 of ``round(x / 257)``).
    * float ``F`` is taken as ``[0, 1]``: ``round(255 x)``, clipped; then replicated to RGB. NaN or
      infinite pixels are an error.

    Args:
        path: the image file.

    Returns:
        ``uint8`` array, C-contiguous, ``[H, W, 3]`` or ``[H, W, 4]`` (straight, not premultiplied, alpha).

    Raises:
        FileNotFoundError: ``path`` is not a file (the message names it).
        ValueError: the file is not a decodable image, or its mode cannot be converted (names the file).
    """
    path = Path(path)
    with _open_image(path, "image") as image:
        mode = image.mode
        if mode == "F":
            values = np.asarray(image, dtype=np.float32)
            bad = ~np.isfinite(values)
            if bad.any():
                raise InputError(f"{path}: float image (mode 'F') has {int(bad.sum())} NaN/inf pixel(s)")
            grey = np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
            return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=-1))
        if mode == "I" or mode.startswith("I;16"):
            grey = _sixteen_bit_to_uint8(np.asarray(image), path, mode)
            return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=-1))
        transparent = "transparency" in image.info or (
            mode == "P" and image.palette is not None and image.palette.mode == "RGBA"
        )
        target = "RGBA" if mode in _ALPHA_MODES or transparent else "RGB"
        if mode != target:
            try:
                image = image.convert(target)
            except ValueError as e:
                raise InputError(f"{path}: cannot convert image mode {mode!r} to {target} ({e})") from None
        arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] != len(target):
        raise InputError(f"{path}: mode {mode!r} decoded to {arr.dtype} {arr.shape}, expected uint8 [H, W, {len(target)}]")
    return np.ascontiguousarray(arr)


def read_image_size(path: PathLike) -> Tuple[int, int]:
    """``(width, height)`` of an image file, from its header (no pixel decoding).

    Raises ``FileNotFoundError`` / ``ValueError`` naming the file, like :func:`read_image`.
    """
    path = check_regular_file(path, "image")
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) == 24 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        # PNG: the IHDR chunk comes first; width and height are big-endian uint32 at bytes 16-24.
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    try:
        with Image.open(path) as image:  # lazy: reads the header only
            return int(image.size[0]), int(image.size[1])
    except Exception as e:  # noqa: BLE001 - any decoder failure, reported with the file name
        raise InputError(f"{path}: cannot read image header ({type(e).__name__}: {e})") from None


def _single_channel(path: PathLike, what: str, modes: Sequence[str], expected: str, *,
                    hint: Callable[[str], str] = lambda mode: "") -> np.ndarray:  # fmt: skip
    """The pixel values of a single-channel image as stored: one of Pillow ``modes`` or 16-bit ``I;16*``,
    else :class:`InputError` ``"<path>: a <what> must be <expected>, got mode '<mode>'<hint(mode)>"``."""
    path = Path(path)
    with _open_image(path, what) as image:
        mode = image.mode
        if not (mode in modes or mode.startswith("I;16")):
            raise InputError(f"{path}: a {what} must be {expected}, got mode {mode!r}{hint(mode)}")
        return np.asarray(image)


def read_label_map(path: PathLike) -> np.ndarray:
    """Read a label map: a single-channel image of integer ids, as ``int64 [H, W]``.

    Its contract differs from :func:`read_image` on purpose: ids are never converted or scaled.
    Accepted modes: 8-bit grey ``L``, 16-bit ``I;16*``, 32-bit ``I``, bilevel ``1`` (ids 0/1) and
    palette ``P``, whose *indices* are the ids (VOC-style colour-coded label PNGs); the palette
    colours are ignored. Colour, alpha and float images raise ``ValueError`` naming the file.
    """
    ids = _single_channel(path, "label map", ("1", "L", "P", "I"), "a single-channel image of integer ids (mode L, I;16, I, P or 1)")
    return ids.astype(np.int64)


def read_depth_image(path: PathLike) -> np.ndarray:
    """Read a depth image: one channel of raw sensor values, as ``float32 [H, W]``, never rescaled.

    What the values mean (millimetres, metres, z-depth or ray distance) is the caller's business: a
    16-bit PNG of millimetres (mode ``I;16*``, the RGB-D sensors' and nerfstudio's ``depth_file_path``
    format) comes back as millimetres. Accepted modes: 16-bit ``I;16*``, 32-bit integer ``I``, float
    ``F`` (32-bit TIFF) and 8-bit grey ``L``. Colour, alpha and palette images (a coloured depth
    *visualisation* is not depth) raise :class:`InputError` naming the file.
    """
    values = _single_channel(
        path, "depth image", ("L", "I", "F"), "a single-channel image of depth values (mode I;16, I, F or L)",
        hint=lambda mode: " -- a coloured depth visualisation is not depth" if mode in ("RGB", "RGBA", "P") else "",
    )
    return values.astype(np.float32)


def read_mask_image(path: PathLike) -> np.ndarray:
    """Read a training mask (nerfstudio's ``mask_path``) as ``bool [H, W]``: True = use the pixel.

    A mask is a single-channel image where 0 (black) marks a pixel to ignore and any non-zero
    value (usually 255, white) a pixel to use. Accepted modes: bilevel ``1``, 8-bit grey ``L``,
    16-bit ``I;16*`` and 32-bit integer ``I``. Anything else (colour, alpha, palette, float) is
    refused with an :class:`InputError` naming the file and its mode: which channel would be the
    mask is a guess this reader does not make.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "mask.png"
    ...     Image.fromarray(np.array([[0, 255], [255, 7]], dtype=np.uint8)).save(path)  # mode L
    ...     read_mask_image(path).tolist()
    [[False, True], [True, True]]
    """
    values = _single_channel(
        path, "mask", ("1", "L", "I"), "a single-channel image (mode 1, L, I;16 or I; 0 = ignore the pixel, non-zero = use it)",
        hint=lambda mode: "; save it as a grey PNG",
    )
    return np.ascontiguousarray(values != 0)


def _draw_labels(panel: np.ndarray, labels: Sequence[str], widths: Sequence[int], sep: int) -> np.ndarray:
    """Draw ``labels`` on a header strip above ``panel`` with Pillow's built-in font."""
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


def image_grid(
    images: ImageLike,
    *,
    columns: int | None = None,
    padding: int = 2,
    pad_value: float = 1.0,
) -> Tensor:
    """Tile ``N`` images into one picture, row-major (image ``i`` at row ``i // columns``).

    Args:
        images: ``[N, H, W, C]`` (``C`` in 1, 3, 4; float in ``[0, 1]``, clamped, or ``uint8``),
            a tensor or a numpy array. Grey images are repeated to RGB, alpha is dropped.
        columns: images per row; ``None``: ``ceil(sqrt(N))``. Missing cells of the last row are
            left at ``pad_value``.
        padding: pixels between cells and around the border.
        pad_value: grey level of the padding in ``[0, 1]``.

    Returns:
        Float tensor ``[rows * (H + p) + p, columns * (W + p) + p, 3]`` in ``[0, 1]`` on the CPU
        (``p = padding``), ready for :func:`write_image`.

    >>> import torch
    >>> grid = image_grid(torch.zeros(5, 4, 6, 3), columns=3, padding=1)
    >>> tuple(grid.shape), float(grid[1, 1, 0]), float(grid[0, 0, 0])
    ((11, 22, 3), 0.0, 1.0)
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, Tensor):
        raise InputError(f"images: expected a [N, H, W, C] tensor or array, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or min(images.shape[:3]) == 0:
        raise InputError(f"images: expected a non-empty [N, H, W, C] batch with C in (1, 3, 4), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        x = images.float() / 255.0
    elif images.is_floating_point():
        x = torch.nan_to_num(images.detach().float(), nan=0.0).clamp(0.0, 1.0)
    else:
        raise InputError(f"images: expected float images in [0, 1] or uint8, got {images.dtype}")
    x = x.cpu()
    if x.shape[-1] == 1:
        x = x.expand(-1, -1, -1, 3)
    x = x[..., :3]
    n, h, w, _ = x.shape
    if columns is None:
        columns = max(1, int(np.ceil(np.sqrt(n))))
    if isinstance(columns, bool) or not isinstance(columns, (int, np.integer)) or columns < 1:
        raise InputError(f"columns: expected a positive integer or None, got {columns!r}")
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise InputError(f"padding: expected an integer >= 0, got {padding!r}")
    columns = int(min(columns, n))
    rows = (n + columns - 1) // columns
    p = int(padding)
    out = torch.full((rows * (h + p) + p, columns * (w + p) + p, 3), float(pad_value))
    for i in range(n):
        r, c = divmod(i, columns)
        y, xo = p + r * (h + p), p + c * (w + p)
        out[y : y + h, xo : xo + w] = x[i]
    return out
