"""Plain registry of reconstruction methods: name -> (config class, method class).

Third-party methods add themselves with :func:`register_method` (or an entry point in the
``langfield.methods`` group, loaded by :func:`load_entry_points`).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable, Dict

from langfield.methods.base import Method, SceneInfo
from langfield.methods.gaussians import Gaussians, GaussiansConfig
from langfield.methods.mipnerf import MipNeRF, MipNeRFConfig
from langfield.methods.nerf import NeRF, NeRFConfig
from langfield.methods.ngp import NGP, NGPConfig


@dataclass(frozen=True)
class MethodSpec:
    """How to build a method: its config dataclass and its class ``cls(scene, config)``."""

    config_cls: type
    method_cls: Callable[[SceneInfo, Any], Method]
    description: str


METHODS: Dict[str, MethodSpec] = {
    "ngp": MethodSpec(NGPConfig, NGP, "Instant-NGP: hash grid + occupancy grid (fast)"),
    "nerf": MethodSpec(NeRFConfig, NeRF, "vanilla NeRF: positional encoding, coarse + fine MLPs"),
    "mipnerf": MethodSpec(MipNeRFConfig, MipNeRF, "Mip-NeRF: conical frustums + integrated positional encoding"),
    "gaussians": MethodSpec(GaussiansConfig, Gaussians, "3D Gaussian Splatting: tiled rasteriser + adaptive density control"),
}


def register_method(name: str, spec: MethodSpec) -> None:
    if name in METHODS:
        raise ValueError(f"method {name!r} is already registered")
    METHODS[name] = spec


def load_entry_points() -> None:
    for ep in entry_points(group="langfield.methods"):
        if ep.name not in METHODS:
            METHODS[ep.name] = ep.load()


def make_method(name: str, scene: SceneInfo, config: Any = None) -> Method:
    """Build method ``name`` for ``scene`` (default config when ``config`` is None)."""
    if name not in METHODS:
        load_entry_points()
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    spec = METHODS[name]
    return spec.method_cls(scene, config if config is not None else spec.config_cls())
