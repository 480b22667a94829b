"""Lazy package exports (PEP 562): the one ``__getattr__`` / ``__dir__`` pair every package uses.

A package that wants ``from langfield.runs import train`` to work without importing every
submodule up front (``transformers``, ``diffusers`` and ``viser`` are heavy) declares
``{name: module}`` and installs the pair::

    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

``module`` is absolute (``"langfield.runs.train"``) or relative to the package (``"train"``).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, List, Mapping, Tuple

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` that import ``exports[name]`` on first access."""
    modules = {name: mod if mod.startswith("langfield") else f"{package}.{mod}" for name, mod in exports.items()}

    def __getattr__(name: str) -> Any:
        if name in modules:
            return getattr(importlib.import_module(modules[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> List[str]:
        return sorted(set(vars(sys.modules[package])) | set(modules))

    return __getattr__, __dir__
