"""Boundary-check helpers (``langfield._checks``) and config type checks (``langfield.configs``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Optional, Tuple

import pytest
import torch

from langfield._checks import (
    InputError,
    TooLargeError,
    check_choice,
    check_device,
    check_fields,
    check_memory,
    check_output_dir,
    check_output_file,
)
from langfield.configs import ConfigError, apply_overrides, check_field_types, check_value, config_from_dict


def test_check_device_accepts_cpu_and_refuses_nonsense():
    assert check_device("cpu", "--device") == torch.device("cpu")
    assert check_device(torch.device("cpu")) == torch.device("cpu")
    for bad in ("banana", "", "meta", "xla", "cuda:x", 3, None):
        with pytest.raises(InputError, match="--device"):
            check_device(bad, "--device")


def test_check_device_refuses_cuda_that_is_not_there():
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(InputError, match=r"cuda:99"):
        check_device("cuda:99", "--device")
    if count == 0:
        with pytest.raises(InputError, match="CUDA is not available"):
            check_device("cuda", "--device")
    else:
        assert check_device("cuda", "--device").type == "cuda"


def test_check_output_dir_and_file(tmp_path):
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    assert check_output_dir(tmp_path / "new" / "deeper", "--out") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists(), "checking creates nothing"
    with pytest.raises(InputError, match=r"--out .*f\.txt: exists and is not a folder"):
        check_output_dir(a_file, "--out")
    with pytest.raises(InputError, match=r"f\.txt is a file"):
        check_output_dir(a_file / "sub", "--out")
    with pytest.raises(InputError, match="required"):
        check_output_dir("  ", "--out")
    assert check_output_file(tmp_path / "x" / "y.ply", "--output").name == "y.ply"
    with pytest.raises(InputError, match="existing folder"):
        check_output_file(tmp_path, "--output")
    with pytest.raises(InputError, match=r"y\.ply: cannot be created: .*f\.txt is a file"):
        check_output_file(a_file / "y.ply", "--output")


def test_check_choice_and_fields():
    assert check_choice("ply", "--format", ("ply",)) == "ply"
    with pytest.raises(InputError, match=r"--format: 'obj' is not one of 'ply'"):
        check_choice("obj", "--format", ("ply",))

    @dataclass
    class Cfg:
        n: int = 1
        lr: float = 0.1
        p: float = 0.5

    check_fields(Cfg(), int_min_1=("n",), positive=("lr",), fraction=("p",))
    for bad, match in ((Cfg(n=0), r"Cfg\.n"), (Cfg(lr=math.nan), r"Cfg\.lr"), (Cfg(p=1.5), r"X\.p")):
        with pytest.raises(InputError, match=match):
            check_fields(bad, "X" if match.startswith("X") else None, int_min_1=("n",), positive=("lr",), fraction=("p",))


def test_check_memory_states_the_estimate(monkeypatch):
    monkeypatch.setenv("LANGFIELD_MEMORY_LIMIT_BYTES", str(1 << 20))
    check_memory(1 << 19, "small")
    with pytest.raises(TooLargeError, match=r"--num-rays 9: needs about 4\.0 MiB, more than the 1\.0 MiB of RAM"):
        check_memory(4 << 20, "--num-rays 9")


# --------------------------------------------------------------------------- config type checks


@dataclass(frozen=True)
class Inner:
    k: int = 3


@dataclass(frozen=True)
class Outer:
    n: int = 1
    x: float = 0.5
    flag: bool = False
    name: str = "a"
    mode: Literal["fast", "slow"] = "fast"
    limit: Optional[float] = None
    pair: Tuple[float, float] = (0.0, 1.0)
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        check_field_types(self)


@pytest.mark.parametrize(
    "data, match",
    [
        ({"n": "3"}, r"cfg\.n: expected an integer"),
        ({"n": 2.5}, r"cfg\.n: expected an integer"),
        ({"n": True}, r"cfg\.n: expected an integer"),
        ({"x": "fast"}, r"cfg\.x: expected a number"),
        ({"x": float("nan")}, r"cfg\.x: must be a finite number"),
        ({"x": float("inf")}, r"cfg\.x: must be a finite number"),
        ({"flag": 1}, r"cfg\.flag: expected true or false"),
        ({"name": 5}, r"cfg\.name: expected a string"),
        ({"mode": "medium"}, r"cfg\.mode: 'medium' is not one of 'fast', 'slow'"),
        ({"limit": "none"}, r"cfg\.limit: expected a number"),
        ({"pair": [1.0]}, r"cfg\.pair: expected 2 values"),
        ({"pair": [1.0, "b"]}, r"cfg\.pair\[1\]: expected a number"),
        ({"inner": 3}, r"cfg\.inner: expected a Inner"),
        ({"inner": {"k": "z"}}, r"cfg\.inner\.k: expected an integer"),
        ({"typo": 1}, r"cfg: unknown field\(s\) \['typo'\]"),
    ],
)
def test_config_from_dict_refuses_mistyped_values(data, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(Outer, data, "cfg")


def test_config_from_dict_coerces_losslessly():
    cfg = config_from_dict(Outer, {"n": 1e3, "x": 2, "limit": None, "pair": [1, 2]}, "cfg")
    assert cfg.n == 1000 and isinstance(cfg.n, int)
    assert cfg.x == 2 and cfg.pair == (1, 2)
    assert check_value(Optional[int], None, "v") is None


def test_direct_construction_is_checked_too():
    with pytest.raises(ValueError, match=r"Outer\.n: expected an integer"):
        Outer(n=1e9)
    with pytest.raises(ValueError, match=r"Outer\.x: must be a finite"):
        Outer(x=math.inf)


def test_override_errors_name_the_key():
    with pytest.raises(ValueError, match=r"override\.inner\.k: expected an integer, got 'big'"):
        apply_overrides(Outer(), {"inner.k": "big"})
    with pytest.raises(ValueError, match=r"override\.n"):
        apply_overrides(Outer(), {"n": [1]})
