"""The images of a capture: photos from a folder, or the sharpest frames of a video.

* Photos: every ``.jpg``/``.jpeg``/``.png`` file directly inside the folder (case-insensitive
  suffix, sorted by name); all must have one size, since SfM fits one shared camera.
* Video: any other file (whatever its suffix), decoded through imageio-ffmpeg (the ffmpeg binary langfield already uses for writing
  videos). The frames are split into ``num_frames`` equal windows of consecutive frames and the
  sharpest frame of each window is kept, sharpness being the variance of the 4-neighbour Laplacian
  of the grey image (a blurred frame has weak second derivatives). Two decoding passes: the first
  scores every frame, the second writes the chosen ones, so no more than one frame is in memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from langfield._checks import InputError
from langfield.io.images import read_image_size, write_image

PathLike = Union[str, os.PathLike]

__all__ = [
    "PHOTO_SUFFIXES",
    "VideoFrames",
    "extract_video_frames",
    "laplacian_variance",
    "list_photos",
    "select_sharpest",
]

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")

#: Frames are scored on a grey image whose longer side is at most this (blur shows at any scale).
SCORE_MAX_SIDE = 480


def list_photos(folder: PathLike, where: str = "INPUT") -> List[Path]:
    """Sorted photos (``PHOTO_SUFFIXES``) directly inside ``folder``, all of one size.

    Raises :class:`InputError` naming ``folder`` when it holds none, and naming two files of
    different sizes when they differ (one shared SfM camera needs one image size).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{where} {folder}: not a folder of photos or a video file")
    photos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    if not photos:
        others = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))[:5]
        seen = f" (it holds e.g. {', '.join(others)})" if others else " (it is empty)"
        raise InputError(f"{where} {folder}: no images ({', '.join(PHOTO_SUFFIXES)}) found{seen}")
    first = read_image_size(photos[0])
    for p in photos[1:]:
        size = read_image_size(p)
        if size != first:
            raise InputError(
                f"{where} {folder}: images have different sizes ({photos[0].name} is {first[0]}x{first[1]}, "
                f"{p.name} is {size[0]}x{size[1]}); a capture uses one camera, so resize them to one size"
            )
    return photos


def laplacian_variance(image: np.ndarray) -> float:
    """Sharpness of an image: the variance of the 4-neighbour Laplacian of its grey values.

    Args:
        image: ``[H, W]`` grey or ``[H, W, C]`` colour (first 3 channels used), any real dtype;
            ``H, W >= 3``. Values are used as given (uint8 frames give values on a 0..255 scale).

    >>> import numpy as np
    >>> checker = (np.indices((8, 8)).sum(0) % 2) * 255.0
    >>> laplacian_variance(checker) > laplacian_variance(np.full((8, 8), 128.0))
    True
    """
    a = np.asarray(image, np.float64)
    if a.ndim == 3:
        a = a[..., :3].mean(-1)
    if a.ndim != 2 or min(a.shape) < 3:
        raise InputError(f"laplacian_variance: expected an [H, W] or [H, W, C] image with H, W >= 3, got {a.shape}")
    lap = a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:] - 4.0 * a[1:-1, 1:-1]
    return float(lap.var())


def select_sharpest(scores: Sequence[float], num_frames: int) -> List[int]:
    """Indices of the sharpest frame in each of ``num_frames`` equal windows of consecutive frames.

    Window ``k`` covers frames ``[floor(k N / n), floor((k + 1) N / n))``; ties go to the earlier
    frame. With ``n >= N`` every frame is kept. Returns sorted indices.

    >>> select_sharpest([1, 5, 2, 9, 3, 3], 3)
    [1, 3, 4]
    """
    n_all = len(scores)
    if num_frames < 1:
        raise InputError(f"num_frames must be >= 1, got {num_frames}")
    if n_all <= num_frames:
        return list(range(n_all))
    s = np.asarray(scores, np.float64)
    edges = (np.arange(num_frames + 1) * n_all) // num_frames
    return [int(lo + np.argmax(s[lo:hi])) for lo, hi in zip(edges[:-1], edges[1:])]


def _grey_small(frame: np.ndarray) -> np.ndarray:
    """Grey ``float32`` copy with the longer side reduced to at most :data:`SCORE_MAX_SIDE` (striding)."""
    step = max(1, int(np.ceil(max(frame.shape[:2]) / SCORE_MAX_SIDE)))
    return frame[::step, ::step, :3].astype(np.float32).mean(-1)


def _iter_frames(path: Path) -> Tuple[dict, Iterator[np.ndarray]]:
    """``(meta, frames)``: imageio-ffmpeg's metadata and an iterator of ``uint8 [H, W, 3]`` frames."""
    try:
        import imageio_ffmpeg
    except ImportError as e:  # a core dependency, but say what to do if it is missing
        raise InputError(f"reading the video {path} needs imageio-ffmpeg: pip install imageio-ffmpeg") from e
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    try:
        meta = next(reader)
    except (RuntimeError, OSError, StopIteration) as e:
        reader.close()
        detail = " ".join(str(e).split())[-400:]
        raise InputError(f"INPUT {path}: ffmpeg cannot read this video: {detail}") from None
    w, h = (int(v) for v in meta["size"])

    def frames() -> Iterator[np.ndarray]:
        try:
            for buf in reader:
                yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
        except RuntimeError as e:
            raise InputError(f"INPUT {path}: ffmpeg failed while decoding: {' '.join(str(e).split())[-400:]}") from None
        finally:
            reader.close()

    return meta, frames()


@dataclass(frozen=True)
class VideoFrames:
    """What :func:`extract_video_frames` did.

    Attributes:
        paths: the written frames, in time order.
        frame_indices: ``[n]`` index of each written frame among all decoded frames.
        num_decoded: frames in the video.
        scores: ``[num_decoded]`` Laplacian-variance sharpness of every frame (on the small grey copy).
        fps: the container's frame rate (0 when unknown).
    """

    paths: List[Path]
    frame_indices: List[int]
    num_decoded: int
    scores: List[float]
    fps: float


def extract_video_frames(
    video: PathLike,
    out_dir: PathLike,
    num_frames: int,
    *,
    suffix: str = ".png",
    on_frame: Optional[Callable[[str, int], None]] = None,
) -> VideoFrames:
    """Write the sharpest frame of each of ``num_frames`` windows of ``video`` to ``out_dir``.

    Frames are named ``frame_000042.png`` after their index in the video (6 digits, so names sort in
    time order; atomic writes).
    ``on_frame(phase, i)`` is called after each decoded frame (phase ``"score"`` then ``"write"``)
    for progress. Raises :class:`InputError` naming the file when ffmpeg cannot read it or when it
    has fewer than 3 frames.
    """
    video, out_dir = Path(video), Path(out_dir)
    if not video.is_file():
        raise InputError(f"INPUT {video}: no such video file")
    _, frames = _iter_frames(video)
    scores: List[float] = []
    for i, frame in enumerate(frames):
        scores.append(laplacian_variance(_grey_small(frame)))
        if on_frame is not None:
            on_frame("score", i)
    if len(scores) < 3:
        raise InputError(f"INPUT {video}: the video has {len(scores)} decodable frame(s); a capture needs at least 3")
    keep = select_sharpest(scores, num_frames)
    wanted = set(keep)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta, frames = _iter_frames(video)
    paths: List[Path] = []
    written: List[int] = []
    for i, frame in enumerate(frames):
        if i in wanted:
            paths.append(write_image(out_dir / f"frame_{i:06d}{suffix}", frame))
            written.append(i)
            if on_frame is not None:
                on_frame("write", len(written))
            if len(written) == len(keep):
                break
    frames.close()  # stop ffmpeg once the last wanted frame is written
    if written != keep:
        raise InputError(f"INPUT {video}: decoding the video a second time gave fewer frames than the first")
    fps = float(meta.get("fps") or 0.0)
    return VideoFrames(paths, keep, len(scores), scores, fps if np.isfinite(fps) else 0.0)
