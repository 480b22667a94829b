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
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from langfield.io.atomic import atomic_path, atomic_save_torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointManager",
    "save_checkpoint",
    "load_checkpoint",
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


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a langfield checkpoint or has an unknown format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupted file, foreign pickle, non-allowlisted types
        raise ValueError(f"could not load checkpoint {path}: {err}") from err
    if not isinstance(state, dict) or "format" not in state:
        raise ValueError(f"{path} is not a langfield checkpoint (no 'format' key)")
    if state["format"] != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} has checkpoint format {state['format']}, this version reads {CHECKPOINT_FORMAT}")
    return state


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
