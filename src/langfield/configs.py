"""(De)serialisation of nested frozen config dataclasses to plain JSON-able dicts, and dotted
``KEY=VALUE`` overrides.

Used to store a run's configuration beside its checkpoints (``run.json``) and to rebuild it later.
The stored layout:

* a field holding a dataclass -> a nested dict of that dataclass's fields;
* a **variant field**, typed as a ``Union`` of two or more dataclasses (e.g. the Gaussians'
  ``strategy: Union[DefaultStrategy, MCMCStrategy]``) -> the chosen variant's fields plus
  ``"type": <name>`` (:data:`VARIANT_KEY`). Each variant class names itself with a class
  attribute ``config_type: ClassVar[str]`` (unique within the union); the name is what is stored
  and what ``--set strategy=NAME`` selects;
* tuples stay tuples (lists once written as JSON; read back as tuples where the field is typed as
  a tuple); every other value is copied as is.

Example (``{"strategy": {"type": "mcmc", "cap_max": 150000, ...}, ...}`` for the Gaussians)::

    >>> from dataclasses import dataclass, field
    >>> from typing import ClassVar, Union
    >>> @dataclass(frozen=True)
    ... class Adam:
    ...     config_type: ClassVar[str] = "adam"
    ...     lr: float = 1e-3
    >>> @dataclass(frozen=True)
    ... class SGD:
    ...     config_type: ClassVar[str] = "sgd"
    ...     lr: float = 1e-2
    ...     momentum: float = 0.0
    >>> @dataclass(frozen=True)
    ... class Config:
    ...     optim: Union[Adam, SGD] = field(default_factory=Adam)
    ...     steps: int = 10
    >>> config_to_dict(Config(SGD(momentum=0.9)))
    {'optim': {'type': 'sgd', 'lr': 0.01, 'momentum': 0.9}, 'steps': 10}
    >>> config_from_dict(Config, {"optim": {"type": "sgd", "momentum": 0.9}})
    Config(optim=SGD(lr=0.01, momentum=0.9), steps=10)
    >>> apply_overrides(Config(), {"optim": "sgd", "optim.momentum": 0.5, "steps": 3})
    Config(optim=SGD(lr=0.01, momentum=0.5), steps=3)

**Types.** :func:`config_from_dict` (hence :func:`apply_overrides` and every ``run.json`` read)
checks each value against its field's annotation before building the dataclass
(:func:`check_value`): ``int`` fields take integers (an integral float such as ``1e9`` from JSON
becomes an int), ``float`` fields finite real numbers, ``bool``/``str``/``Literal``/``Optional``/
``Tuple`` fields what they say; annotations it does not understand are not checked. Config classes
call :func:`check_field_types` in ``__post_init__`` so a directly constructed config is checked the
same way. Errors are :class:`ConfigError` (a ``ValueError``) naming the field path
(``"override.grid.resolution: expected an integer, got 'abc'"``).

**Older stored layouts.** A config class may define a classmethod ``migrate_dict(data) -> data``
that turns a layout written by an older version into the current one (returning a new dict, or
``data`` unchanged when it is already current). :func:`config_from_dict` calls it before reading
``data``, at every nesting level, so run directories written before a layout change still load.
"""

# No `from __future__ import annotations` here: the doctest above runs with this module's future
# flags, and its dataclasses need real (not string) annotations for get_type_hints.
import copy
import dataclasses
import math
import numbers
import os
import types
import typing
from typing import Any, Dict, Mapping, Optional, Type, TypeVar



class ConfigError(ValueError):
    """A stored or overridden config value is invalid; the message names the field path."""


__all__ = [
    "VARIANT_KEY",
    "apply_overrides",
    "ConfigError",
    "check_field_types",
    "check_value",
    "config_from_dict",
    "config_to_dict",
    "variants_of",
]

T = TypeVar("T")

VARIANT_KEY = "type"
"""The key under which a variant field stores the chosen variant's ``config_type``."""

MIGRATE_HOOK = "migrate_dict"
"""Name of the optional classmethod ``(data: dict) -> dict`` that upgrades an older layout."""


# --------------------------------------------------------------------------- variant fields


def variants_of(hint: Any) -> Optional[Dict[str, type]]:
    """``{config_type: class}`` when ``hint`` is a Union of two or more dataclasses, else None.

    Raises ``TypeError`` when such a union has a member without a ``config_type`` string or two
    members with the same name (a programming error in the config's declaration).
    """
    if typing.get_origin(hint) not in (typing.Union, types.UnionType):
        return None
    members = [a for a in typing.get_args(hint) if isinstance(a, type) and dataclasses.is_dataclass(a)]
    if len(members) < 2:
        return None
    out: Dict[str, type] = {}
    for cls in members:
        name = vars(cls).get("config_type")
        if not isinstance(name, str):
            raise TypeError(f"{cls.__name__} is a variant of a Union config field; declare `config_type: ClassVar[str]`")
        if name in out:
            raise TypeError(f"{cls.__name__} and {out[name].__name__} share config_type {name!r}")
        if VARIANT_KEY in {f.name for f in dataclasses.fields(cls)}:
            raise TypeError(f"{cls.__name__} has a field named {VARIANT_KEY!r}, which its stored dict reserves")
        out[name] = cls
    return out


def _field_hints(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


# --------------------------------------------------------------------------- type checks


class _Unchecked(Exception):
    """The annotation is beyond :func:`check_value`; the value is taken as is."""


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_value(hint: Any, value: Any, where: str) -> Any:
    """``value`` checked against the annotation ``hint`` (coerced where lossless); see the module doc.

    Raises :class:`ConfigError` naming ``where``.
    """
    try:
        return _check(hint, value, where)
    except _Unchecked:
        return value


def _check(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any or hint is None:
        raise _Unchecked
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {_describe(value)}")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            return _check(members[0], value, where)
        if any(isinstance(m, type) and isinstance(value, m) for m in members):
            return value
        raise _Unchecked  # variants and mixed unions: their own readers check them
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if value in choices and not (isinstance(value, bool) and not any(isinstance(c, bool) for c in choices)):
            return value
        raise ConfigError(f"{where}: {_describe(value)} is not one of {', '.join(repr(c) for c in choices)}")
    if origin is tuple:
        return _check_tuple(typing.get_args(hint), value, where)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {_describe(value)}")
    if hint is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {_describe(value)}")
    if hint is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise ConfigError(f"{where}: must be a finite number, got {_describe(value)}")
            return value
        raise ConfigError(f"{where}: expected a number, got {_describe(value)}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        raise ConfigError(f"{where}: expected a string, got {_describe(value)}")
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        raise ConfigError(f"{where}: expected a {hint.__name__} (an object of its fields), got {_describe(value)}")
    raise _Unchecked


def _check_tuple(args: tuple, value: Any, where: str) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {_describe(value)}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(check_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if not args:
        return tuple(value)
    if len(value) != len(args):
        raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
    return tuple(check_value(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))


def check_field_types(cfg: Any) -> None:
    """Check every field of the dataclass instance ``cfg`` against its annotation (for ``__post_init__``).

    Only checks: a frozen dataclass cannot take the coerced values; :func:`config_from_dict` coerces
    (``1e9`` -> ``1000000000``) before it constructs. Messages read ``"<Class>.<field>: ..."``.
    """
    hints = _field_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        if f.name in hints:
            value = getattr(cfg, f.name)
            checked = check_value(hints[f.name], value, f"{type(cfg).__name__}.{f.name}")
            if isinstance(value, float) and isinstance(checked, int):  # 3.0 for an int: not here
                raise ConfigError(f"{type(cfg).__name__}.{f.name}: expected an integer, got {_describe(value)}")


# --------------------------------------------------------------------------- to dict


def _plain(value: Any) -> Any:
    """A value as ``dataclasses.asdict`` would store it (dataclasses become dicts)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _dataclass_to_dict(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return copy.deepcopy(value)


def _dataclass_to_dict(cfg: Any) -> Dict[str, Any]:
    hints = _field_hints(type(cfg))
    out: Dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        variants = variants_of(hints.get(f.name))
        if variants is not None and dataclasses.is_dataclass(value):
            names = [name for name, cls in variants.items() if type(value) is cls]
            if not names:
                raise TypeError(
                    f"{type(cfg).__name__}.{f.name} holds a {type(value).__name__}; expected one of "
                    f"{[c.__name__ for c in variants.values()]}"
                )
            out[f.name] = {VARIANT_KEY: names[0], **_dataclass_to_dict(value)}
        else:
            out[f.name] = _plain(value)
    return out


def config_to_dict(cfg: Any) -> Dict[str, Any]:
    """Dataclass instance -> nested dict (variant fields tagged with ``"type"``; see the module doc)."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"expected a dataclass instance, got {type(cfg).__name__}")
    return _dataclass_to_dict(cfg)


# --------------------------------------------------------------------------- from dict


def _variant_from_dict(variants: Dict[str, type], value: Dict[str, Any], where: str) -> Any:
    name = value.get(VARIANT_KEY)
    if name not in variants:
        got = f"missing {VARIANT_KEY!r}" if name is None else f"unknown {VARIANT_KEY} {name!r}"
        raise ConfigError(f"{where}: {got}; expected {VARIANT_KEY!r} to be one of {sorted(variants)}")
    fields = {k: v for k, v in value.items() if k != VARIANT_KEY}
    return config_from_dict(variants[name], fields, f"{where}[{name}]")


def config_from_dict(cls: Type[T], data: Dict[str, Any], where: str = "config") -> T:
    """Rebuild dataclass ``cls`` from ``data``; unknown keys and mistyped values raise a ConfigError (a ValueError) naming them.

    ``cls.migrate_dict(data)`` runs first when ``cls`` defines it (see the module docstring).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object for {cls.__name__}, got {type(data).__name__}")
    migrate = getattr(cls, MIGRATE_HOOK, None)
    if migrate is not None:
        data = migrate(data)
    hints = _field_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown} for {cls.__name__}; known: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        hint = hints.get(f.name)
        variants = variants_of(hint)
        if variants is not None and isinstance(value, dict):
            value = _variant_from_dict(variants, value, f"{where}.{f.name}")
        elif dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = config_from_dict(hint, value, f"{where}.{f.name}")
        elif hint is not None:
            value = check_value(hint, value, f"{where}.{f.name}")
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:  # __post_init__ validation: say where the values came from
        message = str(err)
        raise ConfigError(message if message.startswith(where) else f"{where}: {message}") from None


# --------------------------------------------------------------------------- overrides


def apply_overrides(config: T, overrides: Mapping[str, Any], where: str = "override") -> T:
    """Return ``config`` (a nested frozen dataclass) with dotted-key ``overrides`` applied in order.

    ``"grid.update_fraction": 0.125`` sets a nested field. On a variant field (a Union of
    dataclasses, see the module docstring) ``"strategy": "mcmc"`` selects the variant by name: a
    different variant starts from its defaults, the current one keeps its settings; then
    ``"strategy.cap_max": 150000`` sets a field of the variant chosen at that point (so select
    first, then set). A dict value replaces the whole sub-config. Errors name the key and the
    valid fields or variants.
    """
    data = config_to_dict(config)
    for key, value in overrides.items():
        _set_dotted(type(config), data, key, value)
    return config_from_dict(type(config), data, where)


def _set_dotted(cls: type, data: Dict[str, Any], key: str, value: Any) -> None:
    node, node_cls, context = data, cls, cls.__name__
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = sorted(f.name for f in dataclasses.fields(node_cls))
        if part not in fields:
            raise ConfigError(f"override {key}: unknown field {part!r} of {context}; known: {fields}")
        hint = _field_hints(node_cls)[part]
        variants = variants_of(hint)
        if i == len(parts) - 1:
            if variants is not None and isinstance(value, str):
                if value not in variants:
                    raise ConfigError(f"override {key}={value}: unknown {part} {value!r}; choose one of {sorted(variants)}")
                current = node[part].get(VARIANT_KEY) if isinstance(node[part], dict) else None
                if value != current:
                    node[part] = {VARIANT_KEY: value}
            else:
                node[part] = value
            return
        child = node[part]
        if variants is not None and isinstance(child, dict) and child.get(VARIANT_KEY) in variants:
            name = child[VARIANT_KEY]
            node_cls = variants[name]
            context = (
                f"{node_cls.__name__} (the {part} is {name!r}; select another with "
                f"{'.'.join(parts[: i + 1])}=NAME first, NAME one of {sorted(variants)})"
            )
        elif dataclasses.is_dataclass(hint) and isinstance(child, dict):
            node_cls, context = hint, hint.__name__
        else:
            raise ConfigError(f"override {key}: {part!r} is not a nested config of {node_cls.__name__}")
        node = child
