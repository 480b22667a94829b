"""A PLY header checked against the file size, before a PLY parser trusts its element counts.

A PLY header is ASCII: ``ply``, ``format <ascii|binary_little_endian|binary_big_endian> 1.0``,
``element <name> <count>``, ``property <type> <name>`` / ``property list <count type> <type> <name>``
lines, ``end_header``. A parser allocates ``count`` rows from the header; a corrupt or hostile
header declaring ``10^12`` vertices would allocate until the process dies. :func:`check_ply_header`
computes the least number of bytes the declared elements need (binary: the fixed row size, a list
counting only its length field; ASCII: two characters per value) and refuses a file too small to
hold them, naming the element and its count.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "cloud.ply"
>>> head = b"ply\\nformat binary_little_endian 1.0\\nelement vertex 1000000000000\\nproperty float x\\nend_header\\n"
>>> _ = p.write_bytes(head + bytes(12))
>>> check_ply_header(p)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
langfield._checks.InputError: ...cloud.ply: ... 'vertex' declares 1000000000000 rows ... only 12 bytes follow...
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Tuple, Union

from langfield._checks import InputError
from langfield.io.text import check_regular_file

__all__ = ["check_ply_header"]

PathLike = Union[str, os.PathLike]

#: Bytes per PLY scalar type (both the classic and the sized names).
_TYPE_SIZES: Dict[str, int] = {
    "char": 1, "uchar": 1, "int8": 1, "uint8": 1,
    "short": 2, "ushort": 2, "int16": 2, "uint16": 2,
    "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4,
    "double": 8, "float64": 8,
}  # fmt: skip
#: Largest header read (a real one is a few KiB).
_MAX_HEADER_BYTES = 1 << 20


def _read_header(path: Path) -> Tuple[List[str], int]:
    """The header's lines and its length in bytes (up to and including ``end_header\\n``)."""
    with open(path, "rb") as f:
        head = f.read(_MAX_HEADER_BYTES)
    if not head.startswith(b"ply"):
        raise InputError(f"{path}: not a readable PLY file (it does not start with 'ply')")
    end = head.find(b"end_header")
    if end < 0:
        raise InputError(f"{path}: PLY header has no 'end_header' line within its first {_MAX_HEADER_BYTES} bytes")
    stop = head.find(b"\n", end)
    stop = len(head) if stop < 0 else stop + 1
    try:
        text = head[:end].decode("ascii")
    except UnicodeDecodeError:
        raise InputError(f"{path}: PLY header is not ASCII text") from None
    return text.replace("\r", "").split("\n"), stop


def check_ply_header(path: PathLike) -> Dict[str, int]:
    """Check a PLY header against the file size; return ``{element name: count}``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        InputError: not a PLY file, a malformed header line (line number named), or element counts
            that need more bytes than the file holds.
    """
    path = check_regular_file(path, "PLY file")
    lines, header_bytes = _read_header(path)
    fmt = None
    counts: Dict[str, int] = {}
    row_bytes: Dict[str, int] = {}
    current = None
    for lineno, line in enumerate(lines, start=1):
        words = line.split()
        if not words or words[0] in ("ply", "comment", "obj_info"):
            continue
        bad = InputError(f"{path}: PLY header line {lineno}: cannot parse {line.strip()[:80]!r}")
        if words[0] == "format":
            if len(words) < 2 or words[1] not in ("ascii", "binary_little_endian", "binary_big_endian"):
                raise bad
            fmt = words[1]
        elif words[0] == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise bad
            current = words[1]
            counts[current], row_bytes[current] = int(words[2]), 0
        elif words[0] == "property":
            if current is None:
                raise bad
            if len(words) == 5 and words[1] == "list" and words[2] in _TYPE_SIZES and words[3] in _TYPE_SIZES:
                row_bytes[current] += _TYPE_SIZES[words[2]] if fmt != "ascii" else 2
            elif len(words) == 3 and words[1] in _TYPE_SIZES:
                row_bytes[current] += _TYPE_SIZES[words[1]] if fmt != "ascii" else 2
            else:
                raise bad
        else:
            raise bad
    if fmt is None:
        raise InputError(f"{path}: PLY header has no 'format' line")
    available = path.stat().st_size - header_bytes
    need = 0
    for name, count in counts.items():
        need += count * row_bytes[name]
        if need > available:
            raise InputError(
                f"{path}: not a readable PLY file: element {name!r} declares {count} rows (at least "
                f"{count * row_bytes[name]} bytes) but only {available} bytes follow the header: the file is "
                f"truncated or its header is corrupt"
            )
    return counts
