"""One place for boundary checks: numbers that must be finite and plausible, sizes that must fit.

Every reader, CLI option, config object and checkpoint loader validates what it is handed with
these helpers, so a bad input is refused with a message naming *where* it came from (a file, a
field, an option) before it costs memory or silently trains on garbage.

``where`` is always a human-readable origin such as ``"transforms_train.json: frames[3]"`` or
``"--num-rays"``; messages read ``"<where>: <what is wrong> (<value>)"``.

>>> check_finite_number(0.5, "--scale")
0.5
>>> check_int_range(4, "--downscale", lo=1)
4
>>> format_bytes(3 * 2**30)
'3.0 GiB'
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any, Iterable, Optional

__all__ = [
    "MAX_ABS_COORDINATE",
    "MAX_FOCAL_PIXELS",
    "MAX_IMAGE_SIDE",
    "InputError",
    "TooLargeError",
    "available_memory_bytes",
    "check_finite_array",
    "check_finite_number",
    "check_int_range",
    "check_image_size",
    "check_memory",
    "check_pinhole",
    "format_bytes",
    "product",
]


#: Largest plausible magnitude of a world coordinate (camera centre, 3D point, pose entry, distortion
#: coefficient). Beyond it float32 keeps no useful precision and a scene is surely garbage.
MAX_ABS_COORDINATE = 1e6
#: Largest plausible image side in pixels (above every camera sensor and the JPEG limit of 65535).
MAX_IMAGE_SIDE = 1 << 17
#: Largest plausible focal length in pixels (a 1-degree field of view on a MAX_IMAGE_SIDE image).
MAX_FOCAL_PIXELS = 1e7


class InputError(ValueError):
    """A user input (file, field, option) is invalid; the message names it."""


class TooLargeError(InputError):
    """An input asks for more memory than the machine has; the message states the estimate."""


def check_finite_number(
    value: Any,
    where: str,
    *,
    lo: Optional[float] = None,
    hi: Optional[float] = None,
    lo_inclusive: bool = True,
    hi_inclusive: bool = True,
) -> float:
    """Return ``float(value)`` after checking it is a real, finite number within ``[lo, hi]``.

    Booleans and strings are refused (``True`` is not a focal length). Raises :class:`InputError`.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{where}: expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise InputError(f"{where}: must be finite, got {value!r}")
    if lo is not None and (v < lo or (v == lo and not lo_inclusive)):
        raise InputError(f"{where}: must be {'>=' if lo_inclusive else '>'} {lo:g}, got {value!r}")
    if hi is not None and (v > hi or (v == hi and not hi_inclusive)):
        raise InputError(f"{where}: must be {'<=' if hi_inclusive else '<'} {hi:g}, got {value!r}")
    return v


def check_int_range(value: Any, where: str, *, lo: Optional[int] = None, hi: Optional[int] = None) -> int:
    """Return ``int(value)`` after checking it is an integer (not a bool) within ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InputError(f"{where}: expected an integer, got {value!r}")
    v = int(value)
    if lo is not None and v < lo:
        raise InputError(f"{where}: must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise InputError(f"{where}: must be <= {hi}, got {v}")
    return v


def check_finite_array(array: Any, where: str, *, max_abs: Optional[float] = None) -> None:
    """Refuse NaN/inf entries (and, with ``max_abs``, magnitudes beyond it) in a numpy array or tensor.

    The message names ``where``, how many entries are bad and the first bad flat index. ``max_abs``
    catches values that are finite in float64 but overflow (or lose all precision) in float32.
    """
    import numpy as np

    values = array.detach().cpu().numpy() if hasattr(array, "detach") else np.asarray(array)
    if values.size == 0 or not np.issubdtype(values.dtype, np.number):
        return
    values = values.astype(np.float64, copy=False)
    bad = ~np.isfinite(values)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InputError(f"{where}: {int(bad.sum())} non-finite value(s) (NaN/inf), first at flat index {first}")
    if max_abs is not None:
        big = np.abs(values) > max_abs
        if big.any():
            first = int(np.flatnonzero(big)[0])
            raise InputError(
                f"{where}: {int(big.sum())} value(s) beyond +-{max_abs:g} (e.g. {values.flat[first]:g} at flat "
                f"index {first}); such magnitudes are not plausible here and lose all precision in float32"
            )


def check_image_size(width: Any, height: Any, where: str) -> tuple:
    """``(width, height)`` as ints after checking both are integers in ``[1, MAX_IMAGE_SIDE]``."""
    w = check_int_range(width, f"{where}: width", lo=1, hi=MAX_IMAGE_SIDE)
    h = check_int_range(height, f"{where}: height", lo=1, hi=MAX_IMAGE_SIDE)
    return w, h


def check_pinhole(fx: Any, fy: Any, cx: Any, cy: Any, width: float, height: float, where: str) -> None:
    """Refuse implausible pinhole intrinsics of a ``width x height`` camera (pixels).

    Focal lengths must be finite, ``> 0`` and at most :data:`MAX_FOCAL_PIXELS`; the principal point
    must be finite and lie within the image extended by its own size on each side
    (``cx`` in ``[-W, 2W]``, ``cy`` in ``[-H, 2H]``): real lenses are never shifted further.
    """
    check_finite_number(fx, f"{where}: focal length fx", lo=0.0, lo_inclusive=False, hi=MAX_FOCAL_PIXELS)
    check_finite_number(fy, f"{where}: focal length fy", lo=0.0, lo_inclusive=False, hi=MAX_FOCAL_PIXELS)
    check_finite_number(cx, f"{where}: principal point cx (image width {width:g})", lo=-width, hi=2 * width)
    check_finite_number(cy, f"{where}: principal point cy (image height {height:g})", lo=-height, hi=2 * height)


def format_bytes(num_bytes: float) -> str:
    """``1536 -> '1.5 KiB'`` (binary units)."""
    size = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(size) < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def available_memory_bytes(device: Any = "cpu") -> int:
    """Memory a new allocation can use: free CUDA memory on a CUDA device, else ``MemAvailable``.

    ``LANGFIELD_MEMORY_LIMIT_BYTES`` overrides the reading (tests; containers whose cgroup limit is
    below what ``/proc/meminfo`` reports).
    """
    override = os.environ.get("LANGFIELD_MEMORY_LIMIT_BYTES", "").strip()
    if override:
        return int(float(override))
    if str(device).startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown platform: do not refuse


def check_memory(num_bytes: float, what: str, *, device: Any = "cpu", hint: str = "", fraction: float = 0.9) -> None:
    """Raise :class:`TooLargeError` if ``num_bytes`` exceeds ``fraction`` of the available memory.

    Call it *before* allocating; ``what`` names the input responsible (``"--num-rays 1000000000"``)
    and ``hint`` says how to ask for less. The message states the estimate and what is available.
    """
    available = available_memory_bytes(device)
    if num_bytes > fraction * available:
        where = "GPU" if str(device).startswith("cuda") else "RAM"
        msg = f"{what}: needs about {format_bytes(num_bytes)}, more than the {format_bytes(available)} of {where} available"
        raise TooLargeError(msg + (f"; {hint}" if hint else ""))


def product(values: Iterable[int]) -> int:
    """Exact integer product (no overflow), for size estimates."""
    out = 1
    for v in values:
        out *= int(v)
    return out
