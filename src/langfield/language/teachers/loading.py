"""Build a :class:`~langfield.language.teachers.base.DenseTeacher` from a CLI string or a stored spec.

``"simulated"`` -> :class:`~langfield.language.teachers.simulated.SimulatedTeacher` over the
dataset's labels (needs a labelled scene); ``"simulated-persistent"`` ->
:class:`~langfield.language.teachers.persistent.PersistentSimulatedTeacher` (mistakes that persist
across views, small-object bleeding, a modality gap); anything else is a CLIP-family model id or directory
-> :class:`~langfield.language.teachers.clip.CLIPDenseTeacher`. Trained language fields store
``teacher.spec()``; :func:`load_teacher` rebuilds the same teacher (its text side embeds queries).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence, Union

from langfield.configs import config_from_dict
from langfield.language.teachers.base import DenseTeacher
from langfield.language.teachers.clip import load_clip_teacher
from langfield.language.teachers.persistent import PERSISTENT_BASE_CONFIG, PersistentErrorConfig, PersistentSimulatedTeacher
from langfield.language.teachers.simulated import SimulatedTeacher, SimulatedTeacherConfig
from langfield.pretrained.text import load_text_encoder

__all__ = ["SIMULATED", "SIMULATED_PERSISTENT", "load_teacher"]

SIMULATED = "simulated"
SIMULATED_PERSISTENT = "simulated-persistent"


def load_teacher(
    spec: Union[str, Dict[str, Any]], labels: Optional[Sequence[str]] = None, *, device: Optional[str] = None,
    cache_dir: Optional[str] = None, method: str = "pyramid", strength: Optional[float] = None,
    seed: Optional[int] = None,
) -> DenseTeacher:  # fmt: skip
    """A teacher from ``spec``.

    Args:
        spec: ``"simulated"``, ``"simulated-persistent"``, a CLIP model id/directory (``"openai/clip-vit-base-patch16"``), or
            the dict a trained field stored (``teacher.spec()``).
        labels: the dataset's label names (required by the simulated teacher).
        device, cache_dir, method: CLIP teachers (dense method ``pyramid | regions | both``).
        strength: simulated teacher corruption strength (default: the config's).
        seed: simulated teachers: seeds every random draw (the per-view corruptions and, for the
            persistent-error teacher, its persistent mistakes and gap direction); default: the spec's.
    """
    if isinstance(spec, str):
        if spec in (SIMULATED, SIMULATED_PERSISTENT):
            spec = {"kind": spec}
        else:
            spec = {"kind": "clip", "model": spec, "method": method}
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ValueError(f"teacher spec must be 'simulated', a model id or a stored spec dict, got {spec!r}")
    kind = spec["kind"]
    if kind in (SIMULATED, SIMULATED_PERSISTENT):
        labels = spec.get("labels", labels)
        if not labels:
            raise ValueError(
                "the simulated teacher needs a labelled scene: transforms.json must carry 'labels' and each frame a "
                "'semantic_path' (the built-in procedural scene has them)"
            )
        persistent = kind == SIMULATED_PERSISTENT
        default = dataclasses.asdict(PERSISTENT_BASE_CONFIG if persistent else SimulatedTeacherConfig())
        given = spec.get("config", {})
        cfg = config_from_dict(SimulatedTeacherConfig, {**default, **given} if isinstance(given, dict) else given, "teacher.config")
        if strength is not None:
            cfg = dataclasses.replace(cfg, strength=float(strength))
        if seed is not None:
            cfg = dataclasses.replace(cfg, seed=int(seed))
        text = load_text_encoder(spec.get("text_model"))
        if persistent:
            given_errors = spec.get("errors", {})
            if isinstance(given_errors, dict) and given_errors and "layout" not in given_errors:
                given_errors = {**given_errors, "layout": "sectors"}  # stored before layouts existed: the sectors teacher
            errors = config_from_dict(PersistentErrorConfig, given_errors, "teacher.errors")
            if seed is not None:
                errors = dataclasses.replace(errors, persistent_seed=int(seed))
            return PersistentSimulatedTeacher(list(labels), text, cfg, related=spec.get("related"), errors=errors)
        return SimulatedTeacher(list(labels), text, cfg, related=spec.get("related"))
    if kind == "clip":
        return load_clip_teacher(spec["model"], method=spec.get("method", method), device=device, cache_dir=cache_dir)
    raise ValueError(f"unknown teacher kind {kind!r}; expected 'simulated', 'simulated-persistent' or 'clip'")
