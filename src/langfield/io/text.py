"""Reading small text files (JSON, COLMAP ``.txt``) with errors that name the file and line.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "cameras.txt"
>>> _ = p.write_bytes(b"# ok\\n1 PINHOLE 8 6 7 7 4 3\\n\\xff\\n")
>>> read_utf8_text(p, "COLMAP file")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
langfield._checks.InputError: ...cameras.txt: line 3: not valid UTF-8 text (byte 0xff at offset 27); save the file as UTF-8
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from langfield._checks import InputError, check_memory

__all__ = ["check_regular_file", "read_utf8_text"]

PathLike = Union[str, os.PathLike]


def check_regular_file(path: PathLike, what: str) -> Path:
    """``Path(path)`` if it is a regular file; a directory is an :class:`InputError`, a missing path a
    ``FileNotFoundError``, both naming the path and ``what`` was expected there."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory where a file is expected ({what})")
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def read_utf8_text(path: PathLike, what: str = "text file") -> str:
    """The contents of a UTF-8 text file (a leading byte-order mark is dropped).

    The file's size is checked against the available memory before it is read (a decoded
    ``str`` takes up to 4 bytes per character besides the raw bytes). Bytes that are not
    UTF-8 raise :class:`InputError` naming the file, the line and the byte offset.
    """
    path = check_regular_file(path, what)
    check_memory(5 * path.stat().st_size, f"{path}: {what}", hint="is this really the intended file?")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(
            f"{path}: line {line}: not valid UTF-8 text (byte {data[e.start]:#04x} at offset {e.start}); "
            f"save the file as UTF-8"
        ) from None
