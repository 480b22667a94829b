"""What a trained language field knows about its scene, as a :class:`SceneDescription` for captions.

Scene-aware prompt rewriting (:func:`~langfield.generation.prompts.rewrite_prompt`, issue 13)
needs the scene's objects, their colours and 3D positions, and a camera to read left and right
from. A run with a language field (``langfield language RUN``) answers all three::

    from langfield.runs.scene_description import describe_language_run
    scene, c2w = describe_language_run("outputs/demo", ["sphere", "box"], split="test", view=0)
    rewrite_prompt("a sphere", scene, c2w)      # "a red sphere left of a blue box"

For each object name:

* **position** and **size**: :meth:`LanguageScene.localize` (relevancy maps of up to 12 training
  views back-projected with the rendered depth; LERF relevancy >= 0.5 required, so a name the
  field does not know is not placed); size = the largest side of its robust box;
* **visibility**: in the chosen camera, the pixels where the name wins the segmentation over
  all given names (:meth:`LanguageScene.segment`) *and* its relevancy reaches ``min_relevancy``;
  at least ``min_pixels`` of them, else the object is left out with a warning (a caption from
  this camera cannot place it);
* **colour**: :func:`~langfield.generation.prompts.color_name_of_pixels` of the *rendered* colour
  at those pixels (read on the object's lit side).

Positions and the returned camera are in the dataset's *normalised* world frame (the frame of its
cameras; ``dataset.world_transform`` maps the original frame into it), so left/right relations are
read consistently. Names default to the dataset's labels without the background ones
(:data:`BACKGROUND_LABELS`); runs of unlabelled captures must name their objects.
"""

from __future__ import annotations

import logging
import os
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from langfield._checks import InputError, check_int_range
from langfield.generation.prompts import SceneDescription, SceneObject, color_name_of_pixels
from langfield.language.queries import QueryNotFoundError, check_label_list
from langfield.language.scene import LanguageScene
from langfield.runs.language import load_language_scene

__all__ = ["BACKGROUND_LABELS", "describe_language_run", "describe_language_scene"]

_LOG = logging.getLogger("langfield.runs.scene_description")

PathLike = Union[str, "os.PathLike[str]"]

#: Dataset labels that are not objects a caption names.
BACKGROUND_LABELS = frozenset({"background", "ground", "floor", "sky", "wall", "walls", "ceiling", "unknown"})


def _object_names(scene: LanguageScene, names: Optional[Sequence[str]]) -> List[str]:
    if names is not None:
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        if not names:
            raise InputError("rewrite objects: give at least one object name (--rewrite-objects sphere,box)")
        try:
            return list(check_label_list(list(names)))
        except ValueError as err:
            raise InputError(f"rewrite objects: {err}") from None
    labels = [lab for lab in (scene.dataset.labels or []) if lab and lab.lower() not in BACKGROUND_LABELS]
    if not labels:
        raise InputError(
            "rewrite objects: this run's dataset has no object labels; name the objects to describe "
            "(--rewrite-objects 'chair,table')"
        )
    return labels


@torch.no_grad()
def describe_language_scene(
    scene: LanguageScene,
    names: Optional[Sequence[str]] = None,
    *,
    split: str = "test",
    view: int = 0,
    min_relevancy: float = 0.5,
    min_pixels: int = 4,
) -> Tuple[SceneDescription, np.ndarray]:
    """``(SceneDescription, c2w [3, 4] float64)`` of ``names`` as seen from camera ``view`` of ``split``.

    See the module docstring for how each object is placed and coloured. Raises
    :class:`InputError` for a bad split/view/name list and when no named object is found and
    visible from the camera (the message lists what happened to each name).
    """
    if split not in scene.dataset.splits:
        raise InputError(f"rewrite split {split!r}: the run's dataset has {sorted(scene.dataset.splits)}")
    cams = scene.dataset.split(split).cameras
    view = check_int_range(view, "rewrite view", lo=0, hi=len(cams) - 1)
    check_int_range(min_pixels, "min_pixels", lo=1)
    object_names = _object_names(scene, names)

    seg, rendered = scene.segment(object_names, cams, view)
    rgb = rendered.render.rgb.float().clamp(0, 1)  # [H, W, 3]
    T = scene.dataset.world_transform.double()
    scale = float(torch.linalg.det(T[:3, :3]).abs() ** (1.0 / 3.0))

    objects: List[SceneObject] = []
    fate: List[str] = []
    for k, name in enumerate(object_names):
        try:
            loc = scene.localize(name, split="train", min_relevancy=min_relevancy)
        except QueryNotFoundError:
            fate.append(f"{name!r}: not found by the language field")
            continue
        rel, _ = scene.relevancy(name, cams, view)
        mask = (seg.labels == k) & (rel >= min_relevancy)
        count = int(mask.sum())
        if count < min_pixels:
            fate.append(f"{name!r}: {count} pixel(s) in camera {view} of {split!r} (fewer than {min_pixels})")
            continue
        point = T @ torch.cat([loc.point.double(), torch.ones(1, dtype=torch.float64)])
        size = float((loc.aabb[1] - loc.aabb[0]).double().max()) * scale
        objects.append(SceneObject(name, color_name_of_pixels(rgb[mask]), tuple(point[:3].tolist()), size=size if size > 0 else None))
        fate.append(f"{name!r}: {objects[-1].label} ({count} pixels)")
    if not objects:
        raise InputError("rewrite scene: no named object was found and seen from the chosen camera: " + "; ".join(fate))
    left_out = [f for f in fate if "pixel(s)" in f or "not found" in f]
    if left_out:
        _LOG.warning("rewrite scene: left out %s", "; ".join(left_out))
    c2w = cams.c2w[view].double().cpu().numpy()
    return SceneDescription(tuple(objects)), c2w


def describe_language_run(
    run_dir: PathLike,
    names: Optional[Sequence[str]] = None,
    *,
    split: str = "test",
    view: int = 0,
    device: Optional[str] = None,
) -> Tuple[SceneDescription, np.ndarray]:
    """:func:`describe_language_scene` of the run ``run_dir`` (loaded with its language field)."""
    return describe_language_scene(load_language_scene(run_dir, device), names, split=split, view=view)
