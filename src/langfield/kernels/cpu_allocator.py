"""Keep freed CPU memory in the process so large tensors stop page-faulting on every step.

PyTorch's CPU allocator is the C library's ``malloc``. With glibc's defaults a block above the
mmap threshold (128 KiB, raised dynamically up to 32 MiB) is mapped fresh on every allocation
and unmapped on free, and memory freed at the top of the heap is returned to the kernel above the
trim threshold. A training step of a ray method allocates many tensors of a few MiB to tens of
MiB (``[65536, 64]`` float32 activations are 16 MiB); each one then arrives as untouched pages,
and the first write to each 4 KiB page is a page fault in which the kernel zeroes it. Measured on
the 2-core VM (Instant-NGP on the bonsai capture, 2^16 samples a step, torch.profiler over 20
steps after 90 s / 40 s of training): a step took 319 ms with glibc's defaults and 219 ms with the
heap kept, ReLU's backward 14.3 ms a call against 1.9 ms, the hash grid's backward 53 ms against
17 ms. Over a whole 600 s run (same seed and capture) the step went from 0.242 to 0.224 s (+8 %
steps): the same work, fewer page faults.

:func:`keep_freed_memory` sets glibc's ``M_MMAP_THRESHOLD`` to its maximum (32 MiB, so blocks
below it come from the heap) and ``M_TRIM_THRESHOLD`` to its largest value, 2 GiB (``mallopt`` takes
an ``int``): freed heap memory stays mapped and is reused without faults until more than that is
free at the top of the heap. The cost: the process's resident set stays near its peak instead of
shrinking after a transient peak. It is process-wide and cannot be undone, so the Trainer calls it
only for CPU training and the command line once at start-up; ``LANGFIELD_KEEP_FREED_MEMORY=0``
turns it off. Elsewhere than glibc (macOS, musl, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

__all__ = ["keep_freed_memory", "MMAP_THRESHOLD_BYTES", "TRIM_THRESHOLD_BYTES"]

logger = logging.getLogger(__name__)

#: ``mallopt`` parameter numbers from glibc's ``malloc.h``.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: glibc's largest accepted mmap threshold on 64-bit (``DEFAULT_MMAP_THRESHOLD_MAX``: 4 MiB * 8).
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
#: Freed heap memory up to this much stays mapped (the largest ``int`` ``mallopt`` accepts).
TRIM_THRESHOLD_BYTES = 2**31 - 1

_applied = False


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (see the module docstring).

    Returns:
        ``True`` when the settings are in effect (now or from an earlier call), ``False`` when this
        is not glibc, ``mallopt`` refused, or ``LANGFIELD_KEEP_FREED_MEMORY=0``.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get("LANGFIELD_KEEP_FREED_MEMORY", "1").strip() == "0":
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    if not (hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version")):  # only glibc has the latter
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    ok = ok and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    if not ok:
        logger.debug("glibc mallopt refused the allocator settings; keeping the defaults")
        return False
    _applied = True
    return True
