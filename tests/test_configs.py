"""Config (de)serialisation and dotted overrides: nested dataclasses, variant fields (a Union of
dataclasses, stored with a ``"type"`` name), the ``migrate_dict`` hook, and the error messages."""

from __future__ import annotations

import doctest
import json
from dataclasses import dataclass, field
from typing import ClassVar, Optional, Tuple, Union

import pytest

import langfield.configs
from langfield.configs import apply_overrides, config_from_dict, config_to_dict, variants_of


@dataclass(frozen=True)
class Cosine:
    config_type: ClassVar[str] = "cosine"
    warmup: int = 10


@dataclass(frozen=True)
class Step:
    config_type: ClassVar[str] = "step"
    every: int = 100
    gamma: float = 0.5


@dataclass(frozen=True)
class Inner:
    size: int = 3
    dims: Tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class Outer:
    schedule: Union[Cosine, Step] = field(default_factory=Cosine)
    inner: Inner = field(default_factory=Inner)
    maybe: Optional[float] = None
    name: str = "x"


@dataclass(frozen=True)
class Renamed:
    """Stored once as ``{"old_size": ...}``; the hook turns that into ``size``."""

    size: int = 1

    @classmethod
    def migrate_dict(cls, data):
        if "old_size" not in data:
            return data
        data = dict(data)
        data["size"] = data.pop("old_size")
        return data


@dataclass(frozen=True)
class HoldsRenamed:
    part: Renamed = field(default_factory=Renamed)


def test_variant_fields_round_trip_through_json():
    for cfg in (Outer(), Outer(Step(every=7), Inner(5, (4,)), 0.5, "y")):
        stored = config_to_dict(cfg)
        assert stored["schedule"]["type"] == cfg.schedule.config_type
        assert config_from_dict(Outer, json.loads(json.dumps(stored))) == cfg
    assert config_to_dict(Outer(Step(every=7))) == {
        "schedule": {"type": "step", "every": 7, "gamma": 0.5},
        "inner": {"size": 3, "dims": (1, 2)},
        "maybe": None,
        "name": "x",
    }
    assert variants_of(Union[Cosine, Step]) == {"cosine": Cosine, "step": Step}
    assert variants_of(Optional[Inner]) is None and variants_of(int) is None


def test_bad_stored_variants_name_the_choices():
    with pytest.raises(ValueError, match=r"run.json.schedule: unknown type 'linear'.*\['cosine', 'step'\]"):
        config_from_dict(Outer, {"schedule": {"type": "linear"}}, "run.json")
    with pytest.raises(ValueError, match=r"schedule: missing 'type'"):
        config_from_dict(Outer, {"schedule": {"every": 3}})
    with pytest.raises(ValueError, match=r"schedule\[cosine\].*'every'"):
        config_from_dict(Outer, {"schedule": {"type": "cosine", "every": 3}})
    with pytest.raises(ValueError, match="unknown field"):
        config_from_dict(Outer, {"nope": 1})


@dataclass(frozen=True)
class Nameless:
    x: int = 0


@dataclass(frozen=True)
class Bad:
    choice: Union[Cosine, Nameless] = field(default_factory=Cosine)


def test_a_variant_without_a_name_is_a_declaration_error():
    with pytest.raises(TypeError, match="Nameless.*config_type"):
        config_to_dict(Bad())
    with pytest.raises(TypeError, match="Nameless.*config_type"):
        config_from_dict(Bad, {"choice": {"type": "cosine"}})


def test_migrate_hook_runs_at_every_level():
    assert config_from_dict(Renamed, {"old_size": 4}) == Renamed(4)
    assert config_from_dict(HoldsRenamed, {"part": {"old_size": 5}}) == HoldsRenamed(Renamed(5))
    assert config_from_dict(Renamed, {"size": 6}) == Renamed(6)


def test_overrides_select_variants_and_set_their_fields():
    cfg = Outer(Cosine(warmup=3))
    assert apply_overrides(cfg, {"schedule": "cosine"}) == cfg  # the current variant keeps its settings
    assert apply_overrides(cfg, {"schedule": "step"}).schedule == Step()  # another starts from defaults
    assert apply_overrides(cfg, {"schedule": "step", "schedule.gamma": 0.1}).schedule == Step(gamma=0.1)
    assert apply_overrides(cfg, {"schedule.warmup": 0, "inner.size": 9}) == Outer(Cosine(0), Inner(9))
    assert apply_overrides(cfg, {"schedule": {"type": "step", "every": 2}}).schedule == Step(every=2)
    assert apply_overrides(cfg, {"inner.dims": [7, 8]}).inner.dims == (7, 8)

    with pytest.raises(ValueError, match=r"schedule=linear: unknown schedule 'linear'; choose one of \['cosine', 'step'\]"):
        apply_overrides(cfg, {"schedule": "linear"})
    with pytest.raises(ValueError, match=r"schedule.gamma: unknown field 'gamma' of Cosine.*schedule=NAME first.*known: \['warmup'\]"):
        apply_overrides(cfg, {"schedule.gamma": 0.1})
    with pytest.raises(ValueError, match="'name' is not a nested config of Outer"):
        apply_overrides(cfg, {"name.x": 1})
    with pytest.raises(ValueError, match=r"unknown field 'nope' of Inner"):
        apply_overrides(cfg, {"inner.nope": 1})


def test_module_examples_run():
    result = doctest.testmod(langfield.configs)
    assert result.attempted >= 5 and result.failed == 0
