"""Atomic training checkpoints with a keep-last-k policy, and RNG state capture.

Layout under a run's ``checkpoints/`` directory::

    step_00001000.ckpt   one file per saved step (the newest ``keep_last`` are kept)
    latest.ckpt          always the newest one (a hard link to it where the file system allows,
                         otherwise a copy); what ``Trainer(..., resume=True)`` loads

Every file is written to a temporary name beside its target and moved with ``os.replace``, so a
crash mid-write never leaves a truncated checkpoint, and ``latest.ckpt`` always points at a
complete one. Checkpoints hold only tensors and plain Python containers, so they load with
``torch.load(weights_only=True)`` (no arbitrary code runs on load). A method's ``extra_state()``
must therefore contain tensors, numbers, strings, lists, tuples and dicts only.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from langfield._checks import InputError
from langfield.io.atomic import atomic_path, atomic_save_torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointManager",
    "save_checkpoint",
    "load_checkpoint",
    "check_model_state",
    "load_method_state",
    "capture_rng_state",
    "restore_rng_state",
]

PathLike = Union[str, os.PathLike]

CHECKPOINT_FORMAT = 1
LATEST_NAME = "latest.ckpt"
_STEP_RE = re.compile(r"^step_(\d+)\.ckpt$")


def save_checkpoint(state: Dict[str, Any], path: PathLike) -> Path:
    """Write ``state`` (plus ``format``) to ``path`` atomically; returns the path."""
    if not isinstance(state, dict):
        raise TypeError(f"checkpoint state must be a dict, got {type(state).__name__}")
    path = Path(path)
    atomic_save_torch({"format": CHECKPOINT_FORMAT, **state}, path)
    return path


def load_checkpoint(
    path: PathLike, map_location: Union[str, torch.device] = "cpu", *, required: Sequence[str] = ()
) -> Dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``) and check it.

    Checks: a dict with the current ``format``, every key of ``required``, a ``model`` state dict
    of named tensors, and no NaN/inf in its floating-point tensors (a diverged run's weights would
    otherwise render as background and "evaluate" without a word).

    Raises:
        FileNotFoundError: no file at ``path``.
        InputError (a ValueError): unreadable, not a langfield checkpoint, unknown format, a
            missing key, or non-finite weights; the message names the file and the first bad entry.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"checkpoint {path}: is a folder, expected a .ckpt file")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 -- truncated file, zip garbage, foreign pickle, non-allowlisted types
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise InputError(f"checkpoint {path}: could not load it (truncated, corrupt or not a torch file): {reason}") from None
    if not isinstance(state, dict) or "format" not in state:
        raise InputError(f"checkpoint {path}: not a langfield checkpoint (no 'format' key)")
    if state["format"] != CHECKPOINT_FORMAT:
        raise InputError(f"checkpoint {path}: format {state['format']!r}, this version reads {CHECKPOINT_FORMAT}")
    missing = [k for k in required if k not in state]
    if missing:
        raise InputError(f"checkpoint {path}: missing {', '.join(repr(k) for k in missing)} (an incomplete or foreign checkpoint)")
    if "model" in state:
        check_model_state(state["model"], f"checkpoint {path}")
    return state


def check_model_state(model: Any, where: str) -> None:
    """A state dict: string keys, tensor values, floating-point tensors all finite. Names the first bad entry."""
    if not isinstance(model, dict):
        raise InputError(f"{where}: 'model' must be a state dict (names -> tensors), got {type(model).__name__}")
    for key, value in model.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise InputError(f"{where}: model entry {key!r} is a {type(value).__name__}, expected a tensor")
        if value.is_floating_point() or value.is_complex():
            bad = ~torch.isfinite(value)
            if bool(bad.any()):
                raise InputError(
                    f"{where}: model tensor {key!r} {tuple(value.shape)} has {int(bad.sum())} non-finite value(s) "
                    "(NaN/inf): the run diverged or the file is damaged; resume from an earlier checkpoint or retrain"
                )


def _first_names(keys: List[str], n: int = 3) -> str:
    return f"{keys[:n]}" + (f" and {len(keys) - n} more" if len(keys) > n else "")


def load_method_state(method: torch.nn.Module, model: Dict[str, Any], where: str) -> None:
    """``method.load_state_dict(model)`` after checking names and dtypes against the method's own state.

    Missing or unexpected entries and a dtype that differs from the method's (integer weights for
    float parameters, say) are refused with the first few names; shape mismatches are reported by
    ``load_state_dict`` and re-raised naming ``where`` (methods that resize on load, like the
    Gaussians, accept other row counts).
    """
    check_model_state(model, where)
    own = method.state_dict()
    missing = [k for k in own if k not in model]
    unexpected = [k for k in model if k not in own]
    name = type(method).__name__
    if missing or unexpected:
        parts = [f"{what} {_first_names(keys)}" for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise InputError(f"{where}: does not hold {name} weights ({'; '.join(parts)})")
    for key, ref in own.items():
        if model[key].dtype != ref.dtype:
            raise InputError(f"{where}: model tensor {key!r} is {model[key].dtype}, {name} stores {ref.dtype}")
    try:
        method.load_state_dict(model)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:400]
        raise InputError(f"{where}: does not fit {name}: {detail}") from None


def capture_rng_state() -> Dict[str, Any]:
    """Global RNG states of python ``random``, numpy, torch CPU and (if initialised) every CUDA device."""
    py_version, py_state, py_gauss = random.getstate()
    np_key, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state = {
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "numpy": {
            "key": str(np_key),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`. CUDA states are restored only for matching device counts."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (npy["key"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


class CheckpointManager:
    """Saves ``step_XXXXXXXX.ckpt`` files in ``directory``, keeps the newest ``keep_last``, and
    points ``latest.ckpt`` at the newest.

    Args:
        directory: created on first save.
        keep_last: how many step files to keep (>= 1). ``latest.ckpt`` is extra.
    """

    def __init__(self, directory: PathLike, keep_last: int = 3) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = int(keep_last)

    @property
    def latest_path(self) -> Path:
        return self.directory / LATEST_NAME

    def step_path(self, step: int) -> Path:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return self.directory / f"step_{step:08d}.ckpt"

    def list_steps(self) -> List[Tuple[int, Path]]:
        """``(step, path)`` of the step files present, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for p in self.directory.iterdir():
            m = _STEP_RE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    def latest(self) -> Optional[Path]:
        """``latest.ckpt`` if it exists."""
        return self.latest_path if self.latest_path.is_file() else None

    def save(self, state: Dict[str, Any], step: int) -> Path:
        """Write the step file, repoint ``latest.ckpt`` at it, prune old step files."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = save_checkpoint(state, self.step_path(step))
        self._point_latest_at(path)
        for _, old in self.list_steps()[: -self.keep_last]:
            try:
                old.unlink()
            except FileNotFoundError:
                pass
        return path

    def _point_latest_at(self, path: Path) -> None:
        tmp = self.directory / f".{LATEST_NAME}.{os.getpid()}.link"
        try:
            if tmp.exists():
                tmp.unlink()
            os.link(path, tmp)  # same inode, no copy; pruning the step file later keeps this one
            os.replace(tmp, self.latest_path)
        except OSError:
            if tmp.exists():
                tmp.unlink()
            with atomic_path(self.latest_path) as dst:
                shutil.copyfile(path, dst)
