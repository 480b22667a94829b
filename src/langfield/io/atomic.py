"""Atomic file writes: a reader never sees a half-written file.

Every user-visible artefact langfield writes (images, videos, checkpoints, metric
JSON) goes through this module. The recipe is the usual POSIX one: write to a
temporary file *in the destination directory* (so the final rename never crosses a
file system), ``flush`` + ``os.fsync`` it, then ``os.replace`` it over the target,
which is atomic on POSIX and Windows. If anything raises before the rename, the
temporary file is removed and the target is left untouched.

See e.g. the ``atomicwrites`` package's design notes and Python's ``os.replace``
documentation for the guarantees this relies on.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Union

PathLike = Union[str, os.PathLike]

__all__ = ["atomic_path", "atomic_write", "atomic_save_torch", "atomic_write_json", "to_jsonable"]


def _fsync_dir(directory: Path) -> None:
    """Best-effort fsync of a directory so the rename itself is durable (POSIX only)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success, move it over ``path``.

    Use this when something other than Python writes the file (e.g. an ``ffmpeg``
    subprocess). The temporary name keeps ``suffix`` (default: the target's suffix)
    so tools that choose a container from the extension still work.

    Args:
        path: final destination. Its parent directory is created if missing.
        suffix: suffix of the temporary file; defaults to ``Path(path).suffix``.

    Yields:
        The temporary path. It exists (empty) when yielded; the body overwrites it.
    """
    target = Path(path)
    if target.name == "" or target.is_dir():
        raise ValueError(f"path must name a file, got a directory: {str(path)!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = target.suffix if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"temporary file {tmp} vanished before it could be moved to {target}")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; atomically replace ``path`` with it on success.

    Example::

        with atomic_write("out/metrics.txt", "w") as f:
            f.write("psnr 31.2\\n")

    Args:
        path: final destination. Its parent directory is created if missing.
        mode: ``"wb"`` (default) or ``"w"`` (text, UTF-8 unless ``encoding`` says
            otherwise). Append/read modes make no sense for an atomic replace.
        encoding: text encoding for ``mode="w"``.

    Yields:
        The open file object. It is flushed and ``fsync``-ed before the rename.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def atomic_save_torch(obj: Any, path: PathLike) -> None:
    """``torch.save(obj, path)`` through :func:`atomic_write` (no partial checkpoints)."""
    import torch

    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def to_jsonable(obj: Any) -> Any:
    """Convert ``obj`` to plain JSON types; non-finite floats become ``None`` (JSON ``null``).

    Handles dicts (keys turned into ``str``), lists/tuples, ``pathlib`` paths, numpy
    scalars/arrays, torch tensors (via ``tolist``) and dataclasses (via ``asdict``).
    Anything else raises ``TypeError`` naming the type.
    """
    import dataclasses

    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    tolist = getattr(obj, "tolist", None)  # numpy arrays / scalars, torch tensors
    if callable(tolist):
        return to_jsonable(tolist())
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def atomic_write_json(obj: Any, path: PathLike) -> None:
    """Write ``obj`` as indented JSON (indent 2, trailing newline) atomically.

    NaN-safe: NaN/inf floats are written as ``null`` rather than the non-standard
    ``NaN`` token Python's ``json`` emits by default; see :func:`to_jsonable`.
    """
    text = json.dumps(to_jsonable(obj), indent=2, allow_nan=False)
    with atomic_write(path, "w") as f:
        f.write(text + "\n")
