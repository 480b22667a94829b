"""Video writing: H.264 MP4 through imageio-ffmpeg, or GIF through Pillow.

Frames are streamed to the encoder one by one (MP4), so a long camera path never
has to be held in memory. The file is written under a temporary name that keeps the
``.mp4``/``.gif`` suffix (ffmpeg picks the container from it) and renamed over the
destination only when encoding succeeded (see :mod:`langfield.io.atomic`).

MP4 settings: ``libx264``, ``yuv420p`` (plays everywhere, browsers included),
imageio-ffmpeg's ``quality=8`` (on its 0-10 scale, mapped to an x264 CRF). ``yuv420p``
needs even width and height, so odd sizes are padded by one pixel, replicating the
last row/column.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, Union

import numpy as np

from langfield.io.atomic import atomic_path
from langfield.io.images import ImageLike, to_uint8

PathLike = Union[str, os.PathLike]

__all__ = ["write_video", "ffmpeg_exe"]

_VIDEO_SUFFIXES = (".mp4", ".gif")


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg (or ``IMAGEIO_FFMPEG_EXE``).

    Raises ``RuntimeError`` with install instructions when it is not available.
    """
    try:
        import imageio_ffmpeg
    except ImportError as e:
        raise RuntimeError(
            "writing .mp4 needs ffmpeg, which langfield gets from imageio-ffmpeg: "
            "`pip install imageio-ffmpeg` (or write a .gif instead)"
        ) from e
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as e:  # RuntimeError when neither the bundled binary nor PATH has one
        raise RuntimeError(
            f"ffmpeg not found ({e}); `pip install imageio-ffmpeg` ships a binary, "
            "or set IMAGEIO_FFMPEG_EXE to an ffmpeg executable"
        ) from e


def _rgb_frames(frames: Iterable[ImageLike]) -> Iterator[np.ndarray]:
    """Yield ``uint8 [H, W, 3]`` frames, checking that every frame has the same size."""
    size = None
    for i, frame in enumerate(frames):
        try:
            arr = to_uint8(frame)
        except ValueError as e:
            raise ValueError(f"frames[{i}]: {e}") from e
        if arr.shape[-1] == 1:
            arr = np.repeat(arr, 3, axis=-1)
        elif arr.shape[-1] == 4:
            arr = arr[..., :3]
        if size is None:
            size = arr.shape[:2]
        elif arr.shape[:2] != size:
            raise ValueError(f"frames[{i}] has size {arr.shape[:2]}, expected {size} like frames[0]")
        yield np.ascontiguousarray(arr)


def _pad_even(arr: np.ndarray) -> np.ndarray:
    h, w = arr.shape[:2]
    ph, pw = h % 2, w % 2
    if ph or pw:
        arr = np.pad(arr, ((0, ph), (0, pw), (0, 0)), mode="edge")
    return np.ascontiguousarray(arr)


def _write_mp4(tmp: Path, frames: Iterator[np.ndarray], fps: float, quality: float) -> int:
    import imageio_ffmpeg

    first = next(frames, None)
    if first is None:
        raise ValueError("frames must contain at least one frame")
    first = _pad_even(first)
    h, w = first.shape[:2]
    writer = imageio_ffmpeg.write_frames(
        str(tmp),
        (w, h),
        pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p",
        fps=fps,
        codec="libx264",
        quality=quality,
        macro_block_size=1,  # we pad to even sizes ourselves; don't let it resize
        ffmpeg_log_level="error",
        output_params=["-movflags", "+faststart"],
    )
    writer.send(None)  # start the ffmpeg subprocess
    n = 0
    try:
        writer.send(first)
        n = 1
        for frame in frames:
            writer.send(_pad_even(frame))
            n += 1
    finally:
        writer.close()
    return n


def _write_gif(tmp: Path, frames: Iterator[np.ndarray], fps: float) -> int:
    from PIL import Image

    first = next(frames, None)
    if first is None:
        raise ValueError("frames must contain at least one frame")
    # Pillow's GIF encoder needs all frames at save time; quantise as we go to keep
    # memory at one palette byte per pixel.
    images = [Image.fromarray(first).quantize(colors=256, method=Image.Quantize.MEDIANCUT)]
    for frame in frames:
        images.append(Image.fromarray(frame).quantize(colors=256, method=Image.Quantize.MEDIANCUT))
    duration_ms = max(int(round(1000.0 / fps)), 1)
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return len(images)


def write_video(path: PathLike, frames: Iterable[ImageLike], fps: float = 30.0, quality: float = 8.0) -> int:
    """Write frames to an H.264 ``.mp4`` (or an animated ``.gif``), atomically.

    Args:
        path: destination ending in ``.mp4`` or ``.gif``.
        frames: iterable (a generator is fine) of ``[H, W, 3]`` images, float in
            ``[0, 1]`` or ``uint8``; ``[H, W, 1]`` is shown as grey, alpha is dropped.
            All frames must have the same size.
        fps: frames per second, > 0.
        quality: imageio-ffmpeg quality in ``[0, 10]`` (MP4 only; 10 is best).

    Returns:
        Number of frames written.

    Raises:
        ValueError: bad suffix, fps, quality, empty ``frames`` or mismatched sizes.
        RuntimeError: ffmpeg is unavailable (message says ``pip install imageio-ffmpeg``).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _VIDEO_SUFFIXES:
        raise ValueError(f"path must end in one of {_VIDEO_SUFFIXES}, got {str(path)!r}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if not 0 <= quality <= 10:
        raise ValueError(f"quality must be in [0, 10], got {quality}")
    if suffix == ".mp4":
        ffmpeg_exe()  # fail before touching the file system if ffmpeg is missing
    stream = _rgb_frames(frames)
    with atomic_path(path, suffix=suffix) as tmp:
        if suffix == ".mp4":
            return _write_mp4(tmp, stream, fps, quality)
        return _write_gif(tmp, stream, fps)
