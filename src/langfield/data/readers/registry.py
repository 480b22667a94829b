"""The dataset-format registry: a plain dict ``name -> Reader``, and :func:`load_dataset`.

Built-in formats, tried by :func:`detect_format` in this order (the first match wins):

==============  ============================================================================
``procedural``  the path ``"procedural"``: the built-in demo scene
``transforms``  ``transforms*.json`` (Blender / NeRF-synthetic, nerfstudio, instant-ngp)
``llff``        ``poses_bounds.npy`` + ``images[_K]/``
``colmap``      a COLMAP model (``sparse/0``, ``sparse`` or the folder itself) + ``images[_K]/``
==============  ============================================================================

A third-party format adds itself with :func:`register_reader` (tried after those before it), or
through an entry point in the ``langfield.readers`` group whose object is a :class:`Reader`.
Reader modules import the shared helpers of :mod:`langfield.data.loading` and lower layers, never
the registry or each other; this module is the only one that imports the readers, so nothing inside
``data/`` imports in a circle.

>>> from langfield.data.readers.registry import READERS, load_dataset
>>> list(READERS)[:4]
['procedural', 'transforms', 'llff', 'colmap']
>>> dataset = load_dataset("procedural", size=8, num_train=2)
>>> tuple(dataset.split("train").images.shape)  # [C, H, W, 3] uint8
(2, 8, 8, 3)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from langfield.data.dataset import SceneDataset
from langfield.data.loading import PathLike
from langfield.data.readers.colmap import is_colmap_scene, load_colmap
from langfield.data.readers.llff import is_llff_scene, load_llff
from langfield.data.readers.procedural import is_procedural, load_procedural
from langfield.data.readers.transforms_json import is_transforms_scene, load_transforms

#: Entry-point group searched for third-party readers (each entry point loads a :class:`Reader`).
ENTRY_POINT_GROUP = "langfield.readers"


@dataclass(frozen=True)
class Reader:
    """One dataset format.

    Attributes:
        detect: ``detect(path) -> bool`` for ``path`` as the user gave it (``str`` or ``os.PathLike``,
            possibly not existing): does it hold this format? It looks at names, never at pixels,
            and returns ``False`` (rather than raising) for anything else.
        load: ``load(path, *, downscale=1, background=None, **options) -> SceneDataset``; poses in the
            OpenCV convention in the normalised frame (see :class:`~langfield.data.dataset.SceneDataset`).
        description: what ``detect`` looks for, listed when no format matches a path.
    """

    detect: Callable[[PathLike], bool]
    load: Callable[..., SceneDataset]
    description: str


READERS: Dict[str, Reader] = {
    "procedural": Reader(is_procedural, load_procedural, 'the name "procedural" (the built-in demo scene)'),
    "transforms": Reader(
        is_transforms_scene,
        load_transforms,
        "a folder with transforms.json or transforms_{train,val,test}.json, or such a .json file "
        "(Blender / NeRF-synthetic, nerfstudio, instant-ngp)",
    ),
    "llff": Reader(is_llff_scene, load_llff, "a folder with poses_bounds.npy and images[_K]/, or that .npy file (LLFF)"),
    "colmap": Reader(
        is_colmap_scene,
        load_colmap,
        "a folder with a COLMAP model (cameras + images .bin/.txt in sparse/0/, sparse/ or the folder itself) "
        "and images[_K]/",
    ),
}


def register_reader(name: str, reader: Reader) -> None:
    """Add a dataset format; :func:`detect_format` tries it after the formats registered before it."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a dataset format name must be a non-empty string, got {name!r}")
    if not isinstance(reader, Reader):
        raise TypeError(f"register_reader({name!r}, ...) needs a langfield.data.readers.Reader, got {type(reader).__name__}")
    if name in READERS:
        raise ValueError(f"dataset format {name!r} is already registered")
    READERS[name] = reader


def load_entry_points() -> None:
    """Register the readers of installed packages (entry-point group :data:`ENTRY_POINT_GROUP`)."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in READERS:
            register_reader(ep.name, ep.load())


def get_reader(name: str) -> Reader:
    """The :class:`Reader` registered as ``name`` (``ValueError`` listing the formats if none)."""
    if name not in READERS:
        load_entry_points()
    if name not in READERS:
        raise ValueError(f"unknown dataset format {name!r}; registered formats: {', '.join(READERS)}")
    return READERS[name]


def _first_match(path: PathLike) -> Optional[str]:
    return next((name for name, reader in READERS.items() if reader.detect(path)), None)


def detect_format(path: PathLike) -> str:
    """Name of the first registered format whose ``detect`` accepts ``path``.

    Raises:
        FileNotFoundError: no format matches; the message says whether the path is missing, a file
            or a folder, and lists every format with what it looks for.
    """
    name = _first_match(path)
    if name is None:
        load_entry_points()
        name = _first_match(path)
    if name is not None:
        return name
    p = Path(path)
    formats = "\n".join(f"  {n}: {r.description}" for n, r in READERS.items())
    if not p.exists():
        problem = "dataset path does not exist"
    elif p.is_file():
        problem = "not a known dataset file"
    else:
        problem = "not a known dataset"
    raise FileNotFoundError(f"{p}: {problem}; the dataset formats (tried in this order) are:\n{formats}")


def load_dataset(
    path: PathLike,
    *,
    format: Optional[str] = None,
    downscale: float = 1,
    background: Optional[str] = None,
    **options: Any,
) -> SceneDataset:
    """Load a scene with the reader of its format.

    Args:
        path: a dataset folder or file, or ``"procedural"``.
        format: a registered format name (:data:`READERS`); ``None`` detects it with :func:`detect_format`.
        downscale: image downscale factor (``>= 1``, integer or float; there is no upsampling).
        background: ``"white"`` (default), ``"black"`` or ``"random"``; see ``SceneDataset.background``.
        **options: the format's own options, e.g. ``splits``, ``max_images``, ``progress``,
            ``normalize`` (transforms, COLMAP), ``allow_outside_paths`` (transforms, LLFF, COLMAP:
            read image files that resolve outside the dataset folder, refused by default),
            ``size`` / ``num_train`` (procedural).

    Returns:
        A :class:`~langfield.data.dataset.SceneDataset` with OpenCV poses in the normalised frame.
    """
    name = detect_format(path) if format is None else format
    reader = get_reader(name)
    try:
        inspect.signature(reader.load).bind(path, downscale=downscale, background=background, **options)
    except TypeError as e:
        raise TypeError(f"dataset format {name!r} ({path}): options {sorted(options)} do not fit its reader: {e}") from None
    return reader.load(path, downscale=downscale, background=background, **options)
