"""Just-in-time builds of langfield's C++ CPU kernels (shared by every kernel module).

Each kernel is one ``csrc/*.cpp`` file registering ``torch.ops.<name>.*`` through
``TORCH_LIBRARY``. :class:`JitKernel` compiles it on first use with
``torch.utils.cpp_extension.load`` (ninja; ``-O3 -fopenmp``, plus ``-mavx2 -mfma`` where torch
reports AVX2) and caches the result; later processes load the cached library with
``torch.ops.load_library`` and never compile or take a lock.

**The cache.** One folder, ``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/langfield/torch_extensions``,
shared safely by any number of environments. A build is stored as
``<name>-py<XY>-torch<version>-<isa>-<key>.so`` where ``<key>`` hashes everything the binary
depends on (:meth:`JitKernel.key_fields`): the interpreter (``realpath(sys.executable)``) and its
version, torch's version, git commit and CUDA version, the compiler (``$CXX``), every compiler and
linker flag, the ISA and the ``.cpp`` source. Beside it, ``<same stem>.json`` records the file's
size and SHA-256; a cached library that does not match its record (truncated, overwritten, never
recorded) is removed and rebuilt instead of being handed to ``dlopen`` (which may crash on a
truncated file). A published library is never rewritten: a new environment or source gets a new
key and so a new file, and a process that has loaded a library keeps it.

**Building** happens under :class:`~langfield.kernels.build_lock.BuildLock` (``<same stem>.lock``:
bounded wait, stale-lock takeover, see that module), in a private temporary folder
``.build-<stem>-*`` inside the cache folder; the finished library is published with ``os.link``
(atomic, and it refuses to replace an existing file). torch's own ``FileBaton`` therefore only
ever guards the private folder and cannot be left behind where anyone waits for it. ``ninja`` is
looked for beside ``sys.executable`` first (a virtual environment's ``bin`` need not be on
``PATH``), then on ``PATH``; its folder is put first on ``PATH`` for the build.

A failed build or load (including a lock wait that timed out) is logged once as a warning and
remembered, so callers fall back to their torch path. ``LANGFIELD_NO_CPP=1`` disables every
kernel without trying to build; ``LANGFIELD_KERNEL_LOCK_TIMEOUT`` (seconds, default 300) bounds
the wait for another process's build.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch

from langfield.kernels.build_lock import STALE_AFTER_S, BuildLock, lock_timeout_s

__all__ = ["JitKernel", "cpp_disabled", "find_ninja", "isa_flags", "ninja_search_path"]

_LOG = logging.getLogger(__name__)

_CACHE_FORMAT = 2  # bump when the file layout or the key changes meaning
_LIB_EXT = ".pyd" if sys.platform == "win32" else ".so"
_PATH_LOCK = threading.Lock()  # serialises the temporary PATH change of concurrent builds


def cpp_disabled() -> bool:
    """True when ``LANGFIELD_NO_CPP`` is set to a truthy value (``1``, ``true``, ``yes``)."""
    return os.environ.get("LANGFIELD_NO_CPP", "").strip().lower() in {"1", "true", "yes", "on"}


def isa_flags() -> list[str]:
    """``-mavx2 -mfma`` where torch reports AVX2/AVX512 on x86-64, else nothing."""
    if platform.machine().lower() not in {"x86_64", "amd64"}:
        return []
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 -- older torch: stay with the baseline ISA
        return []
    return ["-mavx2", "-mfma"] if capability in {"AVX2", "AVX512"} else []


def ninja_search_path() -> List[Path]:
    """Folders searched for ``ninja``, in order: beside the interpreter, the scripts folder, ``PATH``."""
    folders = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    folders += [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    unique: List[Path] = []
    for folder in folders:
        if folder not in unique:
            unique.append(folder)
    return unique


def find_ninja() -> Optional[Path]:
    """The ``ninja`` executable of this environment (see :func:`ninja_search_path`), or ``None``."""
    names = ["ninja.exe", "ninja"] if sys.platform == "win32" else ["ninja"]
    for folder in ninja_search_path():
        for name in names:
            candidate = folder / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    return None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _first_on_path(folder: Path) -> Iterator[None]:
    """Put ``folder`` first on ``PATH`` (torch runs ``ninja`` from ``PATH``), restoring it afterwards."""
    with _PATH_LOCK:
        old = os.environ.get("PATH")
        os.environ["PATH"] = os.pathsep.join([str(folder), old]) if old else str(folder)
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("PATH", None)
            else:
                os.environ["PATH"] = old


class JitKernel:
    """One JIT-built C++ kernel registering ``torch.ops.<name>.<probe>`` (see the module docstring).

    Args:
        name: extension and ``torch.ops`` namespace name.
        source: the ``.cpp`` file.
        cflags: compiler flags added to ``-O3 -fopenmp`` and the ISA flags.
        what: human-readable name for log messages.
        probe: an op the extension registers (checked after loading).
    """

    #: A build lock whose file was not touched (heartbeat) for this long is taken over.
    lock_stale_after_s: float = STALE_AFTER_S

    def __init__(self, name: str, source: Path, cflags: Sequence[str], what: str, probe: str = "forward") -> None:
        self.name, self.source, self.what, self.probe = name, Path(source), what, probe
        self.cflags = ["-O3", "-fopenmp", *cflags]
        self.ldflags = ["-fopenmp"]
        self._lock = threading.Lock()
        self.tried = False
        self.ok = False
        self.error: Optional[BaseException] = None

    # ------------------------------------------------------------------ where the build lives

    def cache_root(self) -> Path:
        """``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/langfield/torch_extensions`` (not created)."""
        root = os.environ.get("TORCH_EXTENSIONS_DIR")
        return Path(root) if root else Path.home() / ".cache" / "langfield" / "torch_extensions"

    def build_directory(self) -> Path:
        """The cache folder holding this kernel's builds (created if missing)."""
        root = self.cache_root()
        root.mkdir(parents=True, exist_ok=True)
        return root

    def key_fields(self) -> Dict[str, Any]:
        """Everything the compiled library depends on; :meth:`cache_key` hashes it."""
        isa = isa_flags()
        return {
            "format": _CACHE_FORMAT,
            "kernel": self.name,
            "source_sha256": _file_sha256(self.source),
            "python": os.path.realpath(sys.executable),
            "python_version": sys.version,
            "torch": torch.__version__,
            "torch_git": getattr(torch.version, "git_version", None),
            "torch_cuda": getattr(torch.version, "cuda", None),
            "cxx": os.environ.get("CXX", "c++"),
            "cflags": [*self.cflags, *isa],
            "ldflags": list(self.ldflags),
            "isa": "avx2" if isa else "base",
        }

    def cache_key(self) -> str:
        """16 hex digits of SHA-256 over :meth:`key_fields`."""
        blob = json.dumps(self.key_fields(), sort_keys=True).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:16]

    def library_path(self) -> Path:
        """``<cache>/<name>-py<XY>-torch<version>-<isa>-<key>.so`` (may not exist yet)."""
        isa = "avx2" if isa_flags() else "base"
        tag = f"py{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__}-{isa}"
        tag = re.sub(r"[^0-9A-Za-z.-]+", "_", tag)
        return self.cache_root() / f"{self.name}-{tag}-{self.cache_key()}{_LIB_EXT}"

    def lock_path(self) -> Path:
        """The build lock of :meth:`library_path` (same stem, ``.lock``)."""
        return self.library_path().with_suffix(".lock")

    # ------------------------------------------------------------------ build / load

    def ensure_built(self, verbose: bool = False) -> Path:
        """Return the verified cached library, building it first (under the build lock) if needed.

        A cached file that does not match its size/SHA-256 record is removed (with a warning) and
        rebuilt. Raises on a build failure or :class:`~langfield.kernels.build_lock.BuildLockTimeout`.
        Note that building goes through ``torch.utils.cpp_extension.load``, which also registers
        the ops in this process (from the private build folder; same file as the published one).
        """
        final = self.library_path()
        if final.is_file() and self.cached_problem(final) is None:
            return final  # the fast path: no lock, no compiler
        root = self.build_directory()
        with BuildLock(self.lock_path(), stale_after_s=self.lock_stale_after_s):
            if final.is_file():
                problem = self.cached_problem(final)
                if problem is None:
                    return final  # built by the process we waited for
                _LOG.warning("langfield: the cached %s %s is unusable (%s); rebuilding it", self.what, final, problem)
                final.unlink()
            self._remove_abandoned_builds(final)
            _LOG.info("langfield: compiling the %s into %s (about 30 s, once)", self.what, root)
            build_dir = Path(tempfile.mkdtemp(prefix=f".build-{final.stem}-", dir=root))
            try:
                self._publish(self._compile(build_dir, verbose), final)
            finally:
                shutil.rmtree(build_dir, ignore_errors=True)
            problem = self.cached_problem(final)
            if problem is not None:
                raise RuntimeError(f"{final}: the freshly built library is unusable ({problem})")
        return final

    def build_and_load(self, verbose: bool = False) -> None:
        """Load the cached build (compiling it first if needed) and check the ops; raises on failure."""
        if self._registered():  # already registered in this process
            return
        path = self.ensure_built(verbose)
        if not self._registered():  # loaded from the cache (a build registers the ops itself)
            try:
                torch.ops.load_library(str(path))
            except OSError as exc:
                raise RuntimeError(f"{path}: cannot be loaded ({exc}); delete it to rebuild") from exc
        getattr(getattr(torch.ops, self.name), self.probe)  # raises if registration failed

    def load(self, verbose: bool = False) -> bool:
        """Build/load once per process; return whether the kernel works (failures warn once).

        A malformed ``LANGFIELD_KERNEL_LOCK_TIMEOUT`` raises :class:`~langfield._checks.InputError`
        (a setting the user got wrong, not a reason to fall back quietly).
        """
        with self._lock:
            if self.tried:
                return self.ok
            lock_timeout_s()
            self.tried = True
            try:
                self.build_and_load(verbose)
                self.ok = True
            except Exception as exc:  # noqa: BLE001 -- any build/load failure means "use the torch path"
                self.error = exc
                _LOG.warning("langfield: %s unavailable, using the torch path (%s)", self.what, exc)
            return self.ok

    def available(self) -> bool:
        """Whether the kernel can be used (builds it on first call unless ``LANGFIELD_NO_CPP=1``)."""
        return False if cpp_disabled() else self.load()

    # ------------------------------------------------------------------ internals

    def cached_problem(self, library: Path) -> Optional[str]:
        """Why the existing cached ``library`` must not be loaded, or ``None`` when it matches its record."""
        try:
            record = json.loads(library.with_suffix(".json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return "no record of its size and checksum"
        except (OSError, ValueError):
            return "its record is unreadable"
        size = library.stat().st_size
        if not isinstance(record, dict) or record.get("size") != size:
            return f"{size} bytes, the record says {record.get('size') if isinstance(record, dict) else '?'}"
        if record.get("sha256") != _file_sha256(library):
            return "its checksum differs from the record"
        return None

    def _registered(self) -> bool:
        return hasattr(getattr(torch.ops, self.name), self.probe)

    def _remove_abandoned_builds(self, final: Path) -> None:
        """Private build folders of this key left by killed builders (we hold the lock, so none is live)."""
        for folder in final.parent.glob(f".build-{final.stem}-*"):
            shutil.rmtree(folder, ignore_errors=True)

    def _compile(self, build_dir: Path, verbose: bool) -> Path:
        """Compile into ``build_dir`` with torch's ninja build; return the built library."""
        from torch.utils.cpp_extension import load

        ninja = find_ninja()
        if ninja is None:
            looked = ", ".join(str(p) for p in ninja_search_path())
            raise RuntimeError(
                f"ninja not found beside the interpreter or on PATH (looked in {looked}); "
                f"install it into this environment: {sys.executable} -m pip install ninja"
            )
        with _first_on_path(ninja.parent):
            load(
                name=self.name,
                sources=[str(self.source)],
                extra_cflags=self.cflags + isa_flags(),
                extra_ldflags=list(self.ldflags),
                build_directory=str(build_dir),
                is_python_module=False,
                verbose=verbose,
            )
        built = sorted(build_dir.glob(f"{self.name}*{_LIB_EXT}"))
        if len(built) != 1:
            raise RuntimeError(f"{build_dir}: expected one built library, found {[p.name for p in built]}")
        return built[0]

    def _publish(self, built: Path, final: Path) -> None:
        """Move ``built`` to ``final`` (never replacing an existing file), then write its record."""
        fd = os.open(built, os.O_RDONLY)
        try:
            os.fsync(fd)  # contents on disk before the name is
        finally:
            os.close(fd)
        try:
            os.link(built, final)  # atomic; refuses to replace a library someone may have loaded
        except FileExistsError:
            return  # published meanwhile by a process that took over our lock; the check decides
        except OSError:  # a file system without hard links
            if final.exists():
                return
            os.replace(built, final)
        record = {
            "size": final.stat().st_size,
            "sha256": _file_sha256(final),
            "built": time.time(),
            "key": self.key_fields(),
        }
        staged = built.parent / "record.json"
        staged.write_text(json.dumps(record, indent=1), encoding="utf-8")
        os.replace(staged, final.with_suffix(".json"))
