"""Scene readers, one module per format, behind the plain registry of :mod:`.registry`.

``transforms_json`` (Blender / nerfstudio / instant-ngp), ``llff``, ``colmap`` and ``procedural``
(the built-in demo scene). Their shared helpers live one level down in :mod:`langfield.data.loading`.
"""

from langfield.data.readers.registry import (
    READERS,
    Reader,
    detect_format,
    get_reader,
    load_dataset,
    register_reader,
)

__all__ = ["READERS", "Reader", "detect_format", "get_reader", "load_dataset", "register_reader"]
