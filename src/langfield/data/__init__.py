"""Scenes: readers behind a plain registry (transforms.json, LLFF, COLMAP, procedural), the procedural
demo scene, and the pixel and image samplers.

``langfield.data.load_dataset(path, ...)`` is the entry point; ``register_reader`` adds a format.
"""

from langfield.data.dataset import ImageSet, SceneDataset
from langfield.data.readers import READERS, Reader, detect_format, get_reader, load_dataset, register_reader

__all__ = [
    "READERS",
    "ImageSet",
    "Reader",
    "SceneDataset",
    "detect_format",
    "get_reader",
    "load_dataset",
    "register_reader",
]
