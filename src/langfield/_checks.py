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
    "DEVICE_TYPES",
    "check_choice",
    "check_fields",
    "check_device",
    "check_output_dir",
    "check_output_file",
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


def check_choice(value: Any, where: str, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``; else an :class:`InputError` listing them."""
    options = list(choices)
    if value not in options:
        raise InputError(f"{where}: {value!r} is not one of {', '.join(repr(c) for c in options)}")
    return value


#: Device types langfield runs on; every other string torch knows (``"xla"``, ``"meta"``...) is refused.
DEVICE_TYPES = ("cpu", "cuda", "mps")


def check_device(device: Any, where: str = "device") -> Any:
    """Parse a device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) and check it exists here.

    Returns the ``torch.device``. Refuses unknown strings (``"banana"``), CUDA on a machine without
    it, a CUDA index beyond the device count, and MPS where it is unavailable, before anything is
    loaded onto it.
    """
    import torch

    if isinstance(device, torch.device):
        parsed = device
    elif isinstance(device, str) and device.strip():
        try:
            parsed = torch.device(device.strip())
        except (RuntimeError, ValueError):
            parsed = None
        if parsed is None or parsed.type not in DEVICE_TYPES:
            raise InputError(f"{where}: unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'mps'")
    else:
        raise InputError(f"{where}: expected a device string such as 'cpu' or 'cuda', got {device!r}")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"{where}: {str(device)!r} requested but CUDA is not available on this machine; use 'cpu'")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise InputError(f"{where}: {str(device)!r} requested but this machine has {count} CUDA device(s)")
    if parsed.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise InputError(f"{where}: 'mps' requested but MPS is not available on this machine; use 'cpu'")
    return parsed


def _first_existing(path: "os.PathLike[str]") -> Any:
    """The path itself or its nearest ancestor that exists (``Path``)."""
    from pathlib import Path

    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_dir(path: Any, where: str) -> Any:
    """Refuse an output folder that cannot be created: it (or an ancestor) is an existing file, or
    the nearest existing ancestor is not writable. Creates nothing; returns ``Path(path)``."""
    from pathlib import Path

    if path is None or (isinstance(path, str) and not path.strip()):
        raise InputError(f"{where}: an output folder is required, got {path!r}")
    out = Path(path)
    found = _first_existing(out)
    if not found.is_dir():
        what = "exists and is not a folder" if found == out.absolute() else f"cannot be created: {found} is a file"
        raise InputError(f"{where} {out}: {what}")
    if not os.access(found, os.W_OK | os.X_OK):
        raise InputError(f"{where} {out}: {found} is not writable")
    return out


def check_output_file(path: Any, where: str) -> Any:
    """Refuse an output file path that is an existing folder or whose folder cannot be created."""
    from pathlib import Path

    if path is None or (isinstance(path, str) and not path.strip()):
        raise InputError(f"{where}: an output file is required, got {path!r}")
    out = Path(path)
    if out.is_dir():
        raise InputError(f"{where} {out}: is an existing folder, expected a file path")
    found = _first_existing(out.parent)
    if not found.is_dir():
        raise InputError(f"{where} {out}: cannot be created: {found} is a file")
    if not os.access(found, os.W_OK | os.X_OK):
        raise InputError(f"{where} {out}: {found} is not writable")
    return out


def check_fields(
    cfg: Any,
    where: Optional[str] = None,
    *,
    int_min_1: Iterable[str] = (),
    int_min_0: Iterable[str] = (),
    positive: Iterable[str] = (),
    non_negative: Iterable[str] = (),
    fraction: Iterable[str] = (),
) -> None:
    """Range checks of ``cfg``'s fields by name (for ``__post_init__``): integers ``>= 1`` / ``>= 0``,
    finite numbers ``> 0`` / ``>= 0`` / in ``[0, 1]``. ``where`` prefixes the field names (default:
    the class name), e.g. ``"NGPConfig.grid"``; errors are :class:`InputError`.
    """
    prefix = where or type(cfg).__name__
    for name in int_min_1:
        check_int_range(getattr(cfg, name), f"{prefix}.{name}", lo=1)
    for name in int_min_0:
        check_int_range(getattr(cfg, name), f"{prefix}.{name}", lo=0)
    for name in positive:
        check_finite_number(getattr(cfg, name), f"{prefix}.{name}", lo=0, lo_inclusive=False)
    for name in non_negative:
        check_finite_number(getattr(cfg, name), f"{prefix}.{name}", lo=0)
    for name in fraction:
        check_finite_number(getattr(cfg, name), f"{prefix}.{name}", lo=0, hi=1)
