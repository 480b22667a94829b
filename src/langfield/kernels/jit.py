"""Just-in-time builds of langfield's C++ CPU kernels (shared by every kernel module).

Each kernel is one ``csrc/*.cpp`` file registering ``torch.ops.<name>.*`` through
``TORCH_LIBRARY``. :class:`JitKernel` compiles it on first use with
``torch.utils.cpp_extension.load`` (ninja; ``-O3 -fopenmp``, plus ``-mavx2 -mfma`` where torch
reports AVX2) into ``$TORCH_EXTENSIONS_DIR/<name>_<tag>`` or
``~/.cache/langfield/torch_extensions/<name>_<tag>``, where the tag names the Python, torch and
ISA so that builds never mix. A failed build is logged once as a warning and remembered, so
callers fall back to their torch path. ``LANGFIELD_NO_CPP=1`` disables every kernel without
trying to build.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import sys
import threading
from pathlib import Path
from typing import Optional, Sequence

import torch

__all__ = ["JitKernel", "cpp_disabled", "isa_flags"]

_LOG = logging.getLogger(__name__)


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


class JitKernel:
    """One JIT-built C++ kernel registering ``torch.ops.<name>.<probe>``.

    Args:
        name: extension and ``torch.ops`` namespace name.
        source: the ``.cpp`` file.
        cflags: compiler flags added to ``-O3 -fopenmp`` and the ISA flags.
        what: human-readable name for log messages.
        probe: an op the extension registers (checked after loading).
    """

    def __init__(self, name: str, source: Path, cflags: Sequence[str], what: str, probe: str = "forward") -> None:
        self.name, self.source, self.what, self.probe = name, Path(source), what, probe
        self.cflags = ["-O3", "-fopenmp", *cflags]
        self._lock = threading.Lock()
        self.tried = False
        self.ok = False
        self.error: Optional[BaseException] = None

    def build_directory(self) -> Path:
        root = os.environ.get("TORCH_EXTENSIONS_DIR")
        base = Path(root) if root else Path.home() / ".cache" / "langfield" / "torch_extensions"
        isa = "avx2" if isa_flags() else "base"
        tag = re.sub(r"[^0-9A-Za-z]+", "_", f"py{sys.version_info.major}{sys.version_info.minor}_torch{torch.__version__}_{isa}")
        path = base / f"{self.name}_{tag}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def build_and_load(self, verbose: bool = False) -> None:
        """Compile (or reuse the cached build) and register the ops; raises on failure."""
        if hasattr(getattr(torch.ops, self.name), self.probe):  # already registered in this process
            return
        from torch.utils.cpp_extension import load

        directory = self.build_directory()
        if not any(directory.glob("*.so")):
            _LOG.info("langfield: compiling the %s into %s (about 30 s, once)", self.what, directory)
        load(
            name=self.name,
            sources=[str(self.source)],
            extra_cflags=self.cflags + isa_flags(),
            extra_ldflags=["-fopenmp"],
            build_directory=str(directory),
            is_python_module=False,
            verbose=verbose,
        )
        getattr(getattr(torch.ops, self.name), self.probe)  # raises if registration failed

    def load(self, verbose: bool = False) -> bool:
        """Build/load once per process; return whether the kernel works (failures warn once)."""
        with self._lock:
            if self.tried:
                return self.ok
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
