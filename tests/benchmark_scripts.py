"""Import the scripts under ``benchmarks/`` (not a package) in tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` imported as the module ``<name>_benchmark``, registered in ``sys.modules``
    (dataclasses with string annotations look their module up there); unregistered again if it fails.
    Call :func:`unload_benchmark` to drop it."""
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(spec.name, None)
        raise
    return module


def unload_benchmark(name: str) -> None:
    """Forget the module :func:`load_benchmark` registered for ``name``."""
    sys.modules.pop(f"{name}_benchmark", None)
