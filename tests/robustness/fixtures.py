"""Tiny trained run directories for the bad-input table, built once per process and copied per case.

A case that needs a trained run calls ``copy_run("ngp", tmp)`` (or ``"gaussians"``; the language
variants ``"ngp+language"`` / ``"gaussians+language"`` add ``language/field.pt``): the first call
trains the run through the Python API on the procedural scene at 16x16 with a few steps (a few
seconds), later calls only copy the finished folder into the case's own ``tmp``. The runs are
useless as reconstructions; they are real run directories with every file langfield writes.

Helpers to damage them (NaN weights, truncated files, edited JSON) live here too, so every case
module damages files the same way.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

from tests.robustness.framework import Case, memory_limit, with_memory_limit

KINDS = ("ngp", "gaussians", "ngp+language", "gaussians+language")
#: Seconds a case that may build the shared runs is allowed (the build is the first case's cost).
BUILD_TIMEOUT_S = 240.0

_ROOT: Optional[Path] = None
_BUILT: Dict[str, Path] = {}

# Method settings that keep the runs tiny (and checkpoints small, so copies are cheap).
_NGP_OVERRIDES = {
    "field.hash_grid.num_levels": 2, "field.hash_grid.log2_hashmap_size": 10, "field.hash_grid.max_resolution": 32,
    "field.hidden_dim": 16, "grid.resolution": 16, "steps_per_diagonal": 32, "min_rays": 16, "max_rays": 256,
}  # fmt: skip
_GS_OVERRIDES = {"init_num_random": 200, "sh_degree": 1}


def set_args(kind: str) -> list:
    """The ``--set KEY=VALUE`` options that rebuild the method of the cached run ``kind``."""
    return [a for k, v in overrides(kind).items() for a in ("--set", f"{k}={json.dumps(v)}")]


def _root() -> Path:
    global _ROOT
    if _ROOT is None:
        _ROOT = Path(tempfile.mkdtemp(prefix="lf_robust_runs_"))
        atexit.register(shutil.rmtree, _ROOT, True)
    return _ROOT


def _train(method: str, out: Path) -> None:
    from langfield.runs.spec import PROCEDURAL, DataConfig
    from langfield.runs.train import train
    from langfield.training.trainer import TrainerConfig

    data = DataConfig(PROCEDURAL, procedural_size=16, procedural_views=4)
    cfg = TrainerConfig(
        max_steps=3, num_rays=64, eval_every=0, checkpoint_every=0, log_every=1, output_dir=str(out), device="cpu",
        progress=False,
    )  # fmt: skip
    train(data, method, cfg, preset="cpu", overrides=overrides(method))


def overrides(method: str) -> Dict[str, Any]:
    """The method overrides the cached runs were trained with."""
    return dict(_NGP_OVERRIDES if method.startswith("ngp") else _GS_OVERRIDES)


def language_config() -> Any:
    """The (tiny) LanguageFieldConfig of the cached language fields."""
    from langfield.fields.semantic import HashFeatureFieldConfig
    from langfield.language.distillation import LanguageFieldConfig
    from langfield.language.masks import MaskProposalConfig
    from langfield.ops.hash_encoding import HashGridConfig

    return LanguageFieldConfig(
        use_cse=False, steps=60, rays_per_step=128, autoencoder_steps=60, top_k=4,
        masks=MaskProposalConfig(method="superpixels", scale=20.0, min_size=8, merge_threshold=5.0),
        field=HashFeatureFieldConfig(
            hash_grid=HashGridConfig(num_levels=2, features_per_level=2, log2_hashmap_size=10, max_resolution=32),
            hidden_dim=32, num_hidden=1,
        ),
    )  # fmt: skip


def _language(run_dir: Path) -> None:
    from langfield.runs.language import train_language

    train_language(run_dir, "simulated", language_config(), device="cpu", progress=False)


def built_run(kind: str) -> Path:
    """The cached run of ``kind`` (built on first use; do not modify it: copy it with :func:`copy_run`)."""
    if kind not in KINDS:
        raise KeyError(f"unknown run kind {kind!r}; one of {KINDS}")
    if kind in _BUILT:
        return _BUILT[kind]
    method, _, extra = kind.partition("+")
    staging = Path(tempfile.mkdtemp(prefix="build_", dir=_root()))
    if extra:
        shutil.copytree(built_run(method), staging / "run", copy_function=shutil.copy2)
        _language(staging / "run")
    else:
        _train(method, staging / "run")
    final = _root() / kind.replace("+", "_")
    os.replace(staging / "run", final)  # only a finished run is ever cached
    shutil.rmtree(staging, ignore_errors=True)
    _BUILT[kind] = final
    return final


def copy_run(kind: str, tmp: Path, name: str = "run") -> Path:
    """A private copy of the cached run ``kind`` at ``tmp/name`` (the language cache is left out)."""
    dst = Path(tmp) / name
    shutil.copytree(built_run(kind), dst, ignore=shutil.ignore_patterns("cache", "phases"))
    return dst


# --------------------------------------------------------------------------- damaging files


def latest(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "latest.ckpt"


def edit_checkpoint(path: Path, edit: Callable[[Dict[str, Any]], Any]) -> None:
    """Load ``path``, let ``edit(state)`` change it in place (its return value is ignored), save it
    back (a new file: the hard link between ``latest.ckpt`` and its step file is broken first)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    edit(state)
    save(path, state)


def save(path: Path, obj: Any) -> None:
    """``torch.save(obj)`` to a new file at ``path``."""
    if path.exists() or path.is_symlink():
        path.unlink()
    torch.save(obj, path)


def first_float_key(model: Dict[str, torch.Tensor], contains: str = "") -> str:
    return next(k for k, v in model.items() if v.is_floating_point() and v.numel() > 1 and contains in k)


def fill_model(path: Path, value: float, contains: str = "") -> str:
    """Fill one floating-point model tensor of the checkpoint with ``value``; returns its name."""
    key = {}

    def edit(state):
        key["k"] = first_float_key(state["model"], contains)
        state["model"][key["k"]].view(-1)[0] = value

    edit_checkpoint(path, edit)
    return key["k"]


def replace_file(src: Path, dst: Path) -> None:
    """Put a copy of ``src`` at ``dst`` (a new inode: hard-linked checkpoints stay untouched)."""
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    shutil.copyfile(src, dst)


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data[: int(len(data) * keep)])


def write_bytes(path: Path, data: bytes) -> None:
    if path.exists() or path.is_symlink():
        path.unlink()
    path.write_bytes(data)


def edit_json(path: Path, edit: Callable[[Any], Any]) -> None:
    """Load the JSON file, let ``edit(data)`` change it in place, write it back."""
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def edit_field(path: Path, edit: Callable[[Dict[str, Any]], Any]) -> None:
    """Edit a ``language/field.pt`` (or ``targets.pt``) like :func:`edit_checkpoint`."""
    edit_checkpoint(path, edit)


#: Cases about absurd sizes run as if the machine had this much free memory, so that they mean the
#: same on a laptop and on a server with a terabyte of RAM.
LIMIT_4GIB = 4 << 30


def under_memory_limit(num_bytes: int, case: Any) -> Any:
    """The table ``Case`` ``case``, run under :func:`~tests.robustness.framework.memory_limit` ``(num_bytes)``."""
    return Case(case.name, with_memory_limit(num_bytes, case.run), case.error, case.match, case.timeout_s)
