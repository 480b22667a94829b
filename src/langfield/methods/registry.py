"""Plain registry of reconstruction methods: name -> :class:`MethodSpec`.

A spec says how to build the method (its config class and its class) and which presets it has
besides ``paper`` (its config's defaults). Third-party methods add themselves with
:func:`register_method` or an entry point in the ``langfield.methods`` group (loaded by
:func:`load_entry_points`); the CLI offers every registered name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Dict, Mapping, Tuple

from langfield.configs import config_from_dict
from langfield.methods.base import RayMethod, SceneInfo, SceneMethod
from langfield.methods.gaussians import Gaussians, GaussiansConfig
from langfield.methods.mipnerf import MipNeRF, MipNeRFConfig
from langfield.methods.nerf import NeRF, NeRFConfig
from langfield.methods.ngp import NGP, NGPConfig
from langfield.methods.presets import PRESET_NAMES, Preset, cpu_presets, paper_preset

__all__ = [
    "METHODS",
    "MethodSpec",
    "get_preset",
    "load_entry_points",
    "make_method",
    "method_config_from_dict",
    "method_names",
    "register_method",
    "uses_rays",
]


@dataclass(frozen=True)
class MethodSpec:
    """How to build and configure a method.

    Attributes:
        config_cls: the method's frozen config dataclass (``XConfig``).
        method_cls: ``method_cls(scene: SceneInfo, config) -> SceneMethod``.
        description: one line for ``--help``.
        presets: named :class:`~langfield.methods.presets.Preset` objects besides ``paper``.

    Stored configs (``run.json``) are read with :func:`langfield.configs.config_from_dict`, which
    lets a config class migrate layouts written by earlier versions (its ``migrate_dict``).
    """

    config_cls: type
    method_cls: Callable[[SceneInfo, Any], SceneMethod]
    description: str
    presets: Mapping[str, Preset] = field(default_factory=dict)


_CPU = cpu_presets()
METHODS: Dict[str, MethodSpec] = {
    "ngp": MethodSpec(NGPConfig, NGP, "Instant-NGP: hash grid + occupancy grid (fast)", {"cpu": _CPU["ngp"]}),
    "nerf": MethodSpec(NeRFConfig, NeRF, "vanilla NeRF: positional encoding, coarse + fine MLPs", {"cpu": _CPU["nerf"]}),
    "mipnerf": MethodSpec(
        MipNeRFConfig, MipNeRF, "Mip-NeRF: conical frustums + integrated positional encoding", {"cpu": _CPU["mipnerf"]}
    ),
    "gaussians": MethodSpec(
        GaussiansConfig, Gaussians, "3D Gaussian Splatting: tiled rasteriser + adaptive density control",
        {"cpu": _CPU["gaussians"]},
    ),  # fmt: skip
}


def register_method(name: str, spec: MethodSpec) -> None:
    """Add a method under ``name`` (refuses to replace one)."""
    if not isinstance(spec, MethodSpec):
        raise TypeError(f"register_method needs a MethodSpec, got {type(spec).__name__}")
    if name in METHODS:
        raise ValueError(f"method {name!r} is already registered")
    METHODS[name] = spec


def load_entry_points() -> None:
    """Register the methods of installed packages (entry-point group ``langfield.methods``)."""
    for ep in entry_points(group="langfield.methods"):
        if ep.name not in METHODS:
            METHODS[ep.name] = ep.load()


def method_names() -> Tuple[str, ...]:
    """Every registered method name (entry points included), sorted."""
    load_entry_points()
    return tuple(sorted(METHODS))


def _spec(name: str) -> MethodSpec:
    if name not in METHODS:
        load_entry_points()
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def get_preset(method: str, name: str) -> Preset:
    """Preset ``name`` (``"paper"``, ``"cpu"`` or one the method registered) of ``method``.

    A method without a ``cpu`` preset runs its paper settings under ``cpu``."""
    spec = _spec(method)
    if name in spec.presets:
        return spec.presets[name]
    if name == "paper" or name in PRESET_NAMES:
        return paper_preset(spec.config_cls)
    raise ValueError(f"unknown preset {name!r} for {method}; choose from {sorted(set(PRESET_NAMES) | set(spec.presets))}")


def method_config_from_dict(method: str, data: Dict[str, Any], where: str = "method_config") -> Any:
    """``method``'s typed config from a stored dict (migrating older layouts when the method can)."""
    return config_from_dict(_spec(method).config_cls, data, where)


def make_method(name: str, scene: SceneInfo, config: Any = None) -> SceneMethod:
    """Build method ``name`` for ``scene`` (default config when ``config`` is None)."""
    spec = _spec(name)
    if config is not None and not isinstance(config, spec.config_cls):
        raise TypeError(f"method {name!r} takes a {spec.config_cls.__name__}, got {type(config).__name__}")
    if scene.ndc is not None and not uses_rays(name):
        raise ValueError(
            f"method {name!r} renders cameras directly and cannot work in NDC ray space; "
            "load the dataset with ray_space='world' (--ray-space world)"
        )
    method = spec.method_cls(scene, config if config is not None else spec.config_cls())
    if isinstance(method, RayMethod):
        method.set_ray_space(scene.ndc)
    return method


def uses_rays(name: str) -> bool:
    """Whether method ``name`` is ray-marched (a :class:`RayMethod`), so it can work in NDC ray space."""
    cls = _spec(name).method_cls
    return isinstance(cls, type) and issubclass(cls, RayMethod)
