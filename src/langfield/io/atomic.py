"""Atomic file writes: a reader never sees a half-written file.

Every user-visible artefact langfield writes (images, videos, checkpoints, metric
JSON) goes through this module. The recipe is the usual POSIX one: write to a
temporary file *in the destination directory* (so the final rename never crosses a
file system), ``flush`` + ``os.fsync`` it, then ``os.replace`` it over the target,
which is atomic on POSIX and Windows. If anything raises before the rename, the
temporary file is removed and the target is left untouched.

**File mode.** The result has the mode a plain ``open(path, "w")`` gives a new file:
``0o666 & ~umask`` (or whatever a default ACL of the directory says). The umask is
never *read*: the temporary file is created with ``os.open(tmp, O_CREAT | O_EXCL, 0o666)``
exactly as ``open`` does, so the kernel applies the umask itself. That avoids the
``os.umask(0); os.umask(old)`` dance (which changes the process-wide umask for a moment,
a race with any other thread creating a file) and any parsing of ``/proc``.
The mode of an already existing target is *not* kept: the rename creates a new inode
anyway (owner, group and hard links are the writer's, not the old file's), files written
before this rule carry ``mkstemp``'s mode 0600, which a resumed run would otherwise keep
forever, and this way a file's mode depends only on the umask of whoever wrote it.

**Temporary files.** They are named ``.<target name>.<pid>-<machine>.<random>.tmp<suffix>``
beside the target (``<machine>``: 8 hex digits identifying host name + PID namespace,
so a PID is only ever interpreted on the machine that owns it). A process killed with
``SIGKILL`` mid-write cannot remove its temporary file; the next write into the same
directory (the first one per directory in a process, then at most every
:data:`RESCAN_AFTER_S` seconds: one ``listdir``) removes every temporary file whose
owner is gone:

* the name carries this machine's tag and its PID is no longer alive, or
* it has not been modified for :data:`STALE_AFTER_S` (24 h) -- this also covers
  other machines' files on a shared file system, a reused PID, and the
  ``.<stem>.<8 random>.tmp<suffix>`` names written before this scheme.

A live writer's temporary file is never removed: its PID is alive and it keeps
modifying the file. :func:`remove_stale_temp_files` runs the same sweep on demand.

See e.g. the ``atomicwrites`` package's design notes and Python's ``os.replace``
documentation for the guarantees this relies on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import IO, Any, Iterator, Union

PathLike = Union[str, os.PathLike]

__all__ = [
    "atomic_path",
    "atomic_write",
    "atomic_save_torch",
    "atomic_write_json",
    "fsync_dir",
    "remove_stale_temp_files",
    "to_jsonable",
]

STALE_AFTER_S = 24 * 3600.0
"""A temporary file untouched for this long is stale whoever owns it (seconds)."""

RESCAN_AFTER_S = 600.0
"""A process sweeps a directory for stale temporary files at most this often (seconds)."""

_NAME_CHARS = 100  # the target name is cut to this many characters inside a temporary name

# New-style names: .<name>.<pid>-<machine>.<token>.tmp<suffix>
_TEMP_RE = re.compile(r"^\.(?P<name>.*)\.(?P<pid>\d+)-(?P<machine>[0-9a-f]{8})\.[0-9a-f]{8}\.tmp(?:\.[\w-]+)*$")
# Names written by tempfile.mkstemp before this scheme: .<stem>.<8 random>.tmp<suffix>
_LEGACY_TEMP_RE = re.compile(r"^\..*\.[a-z0-9_]{8}\.tmp(?:\.[\w-]+)*$")


def _machine_tag() -> str:
    """8 hex digits naming the host and PID namespace in which our PIDs mean something."""
    try:
        pid_namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_namespace = ""
    return hashlib.sha1(f"{socket.gethostname()}\0{pid_namespace}".encode()).hexdigest()[:8]


_MACHINE = _machine_tag()
_last_sweep: dict[str, float] = {}  # directory -> time.monotonic() of this process's last sweep
_sweep_lock = threading.Lock()


def _temp_name(target: Path, suffix: str, pid: int | None = None, machine: str | None = None) -> str:
    """The recognisable temporary file name for ``target`` (see the module docstring)."""
    pid = os.getpid() if pid is None else pid
    machine = _MACHINE if machine is None else machine
    return f".{target.name[:_NAME_CHARS]}.{pid}-{machine}.{secrets.token_hex(4)}.tmp{suffix}"


def _pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this machine (POSIX only; True when unsure)."""
    if os.name != "posix":
        return True  # os.kill(pid, 0) would terminate the process on Windows
    if pid <= 0:
        return False  # not a process id a writer can have (and kill(0) would mean our group)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    except (OverflowError, ValueError):
        return False
    except OSError:
        return True
    return True


def _is_stale(name: str, mtime: float, now: float) -> bool:
    """Whether the temporary file ``name`` (last modified at ``mtime``) has no live writer."""
    match = _TEMP_RE.match(name)
    if match is None and _LEGACY_TEMP_RE.match(name) is None:
        return False  # not one of ours
    if now - mtime > STALE_AFTER_S:
        return True
    if match is None or match["machine"] != _MACHINE:
        return False  # an old-style name, or a PID of another machine: only age counts
    pid = int(match["pid"])
    return pid != os.getpid() and not _pid_alive(pid)


def remove_stale_temp_files(directory: PathLike) -> list[Path]:
    """Remove the temporary files of dead atomic writes in ``directory``; returns what was removed.

    Only names of the shape this module writes are considered, and of those only the
    stale ones (dead PID on this machine, or untouched for :data:`STALE_AFTER_S`).
    Never raises on file-system errors (a file that vanished or cannot be removed is skipped).
    """
    directory = Path(directory)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not entry.name.startswith(".") or ".tmp" not in entry.name:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if _is_stale(entry.name, entry.stat(follow_symlinks=False).st_mtime, now):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def _sweep_once_in_a_while(directory: Path) -> None:
    """:func:`remove_stale_temp_files`, at most once per :data:`RESCAN_AFTER_S` per directory."""
    key = os.path.abspath(directory)
    now = time.monotonic()
    with _sweep_lock:
        last = _last_sweep.get(key)
        if last is not None and now - last < RESCAN_AFTER_S:
            return
        _last_sweep[key] = now
    remove_stale_temp_files(directory)


def _create_temp_file(target: Path, suffix: str) -> Path:
    """Create an empty temporary file beside ``target`` with the mode ``open(path, "w")`` would give."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = target.parent / _temp_name(target, suffix)
        try:
            fd = os.open(tmp, flags, 0o666)  # the kernel applies the umask, as for open()
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a unique temporary file beside {target}")


def fsync_dir(directory: Path) -> None:
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
    so tools that choose a container from the extension still work. The first write
    into a directory (per process, then every :data:`RESCAN_AFTER_S`) removes the
    temporary files that killed writers left there.

    Args:
        path: final destination. Its parent directory is created if missing.
        suffix: suffix of the temporary file; defaults to ``Path(path).suffix``.

    Yields:
        The temporary path. It exists (empty, mode ``0o666 & ~umask``) when yielded;
        the body overwrites it.
    """
    target = Path(path)
    if target.name == "" or target.is_dir():
        raise ValueError(f"path must name a file, got a directory: {str(path)!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = target.suffix if suffix is None else suffix
    _sweep_once_in_a_while(target.parent)
    tmp = _create_temp_file(target, suffix)
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
    fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; atomically replace ``path`` with it on success.

    The written file has the mode ``open(path, "w")`` would give a new file (see the
    module docstring).

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
