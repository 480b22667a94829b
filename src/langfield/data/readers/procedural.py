"""The built-in procedural demo scene as a reader: the path ``"procedural"`` names it.

Registered as ``"procedural"`` (:mod:`langfield.data.readers.registry`), so ``langfield train --data
procedural`` and ``load_dataset("procedural", size=32)`` go through the same door as a folder on
disk. The scene itself is :mod:`langfield.data.procedural`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from langfield.data.dataset import SceneDataset
from langfield.data.loading import PathLike, check_downscale, resolve_background
from langfield.data.procedural import ProceduralSceneConfig, make_procedural_dataset

#: The path that names the procedural scene (it wins over a folder of that name).
PROCEDURAL = "procedural"
#: Image side and number of training views of ``langfield train --data procedural``.
DEFAULT_SIZE = 64
DEFAULT_NUM_TRAIN = 100


def is_procedural(path: PathLike) -> bool:
    """True when ``path`` is the name ``"procedural"``."""
    return str(path) == PROCEDURAL


def load_procedural(
    path: PathLike = PROCEDURAL,
    downscale: float = 1,
    background: Optional[str] = None,
    *,
    size: int = DEFAULT_SIZE,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = 0,
) -> SceneDataset:
    """Render the procedural scene (8 held-out test views besides ``num_train`` training views and
    ``num_val`` validation views).

    Args:
        path: ignored (the registry passes the ``"procedural"`` it detected).
        downscale: ``>= 1``; the images are ``round(size / downscale)`` pixels square.
        background: ``"white"`` (default), ``"black"`` or ``"random"`` (``SceneDataset.background``).
        size: image side before ``downscale``.
        num_train: training views.
        num_val: validation views (a ``"val"`` split; 0: none).
    """
    downscale = check_downscale(downscale)
    side = int(round(size / downscale))
    dataset = make_procedural_dataset(ProceduralSceneConfig(width=side, height=side, num_train=num_train, num_val=num_val))
    return replace(dataset, background=resolve_background(background))
