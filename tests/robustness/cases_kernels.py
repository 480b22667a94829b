"""Bad inputs for the C++ kernel builds: settings that must be refused, naming the setting.

(A stale or busy build lock, a damaged cache or a missing ninja are not refusals: the kernel falls
back to its torch path with one warning; ``tests/kernels/test_jit.py`` covers those.)
"""

from __future__ import annotations

import os
from pathlib import Path

from langfield._checks import InputError
from tests.robustness.framework import Case

_ENV = "LANGFIELD_KERNEL_LOCK_TIMEOUT"


def _load_with_timeout(value: str, module: str):
    """Ask a fresh copy of ``langfield.kernels.<module>``'s kernel to load with ``$_ENV = value``."""

    def run(tmp: Path):
        import importlib

        from langfield.kernels.jit import JitKernel

        kernel = importlib.import_module(f"langfield.kernels.{module}").KERNEL
        fresh = JitKernel(kernel.name, kernel.source, kernel.cflags[2:], kernel.what, kernel.probe)
        saved = {key: os.environ.get(key) for key in (_ENV, "TORCH_EXTENSIONS_DIR", "LANGFIELD_NO_CPP")}
        os.environ.update({_ENV: value, "TORCH_EXTENSIONS_DIR": str(tmp / "cache")})
        os.environ.pop("LANGFIELD_NO_CPP", None)
        try:
            return fresh.available()
        finally:
            for key, old in saved.items():
                if old is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = old

    return run


CASES = [
    Case("kernels/lock-timeout/not-a-number", _load_with_timeout("banana", "hash_encoding_cpu"), InputError,
         rf"{_ENV}.*number of seconds.*banana", timeout_s=10),
    Case("kernels/lock-timeout/negative", _load_with_timeout("-5", "gaussian_rasterize_cpu"), InputError,
         rf"{_ENV}.*>= 0", timeout_s=10),
    Case("kernels/lock-timeout/infinite", _load_with_timeout("inf", "hash_encoding_cpu"), InputError,
         rf"{_ENV}.*finite", timeout_s=10),
    Case("kernels/lock-timeout/nan", _load_with_timeout("nan", "gaussian_rasterize_cpu"), InputError,
         rf"{_ENV}.*finite", timeout_s=10),
]  # fmt: skip
