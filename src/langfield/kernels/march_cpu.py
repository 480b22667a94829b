"""C++/OpenMP CPU kernel for constant-step ray marching through a binary occupancy grid.

The torch path of :func:`langfield.ops.occupancy.march_rays` lays out every candidate step of
every ray (``aabb diagonal / step`` of them: ~190 per ray on the procedural scene) as tensors and
then gathers the grid, several passes over ``[R * candidates]`` temporaries. The kernel
(``csrc/march_cpu.cpp``) walks each ray's candidates in a loop, tests the grid cell of each
midpoint and writes only the kept samples: the same float32 operations in the same order
(``-ffp-contract=off``), so the samples are identical to the torch path's, bit for bit, and no
thread count changes them.

The caller computes the rays' clipped entry/exit distances, first-sample offsets and candidate
counts in torch (those are ``[R]``, cheap) and passes them in; see :func:`march_constant_cpp`.

Built on first use by :class:`~langfield.kernels.jit.JitKernel` (about 20 s once, cached like the
other kernels); ``LANGFIELD_NO_CPP=1`` disables it and :func:`cpp_available` returns ``False`` when
it cannot be built, so callers keep the torch path. This module does not import from
:mod:`langfield.ops` (imports point downward).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import torch
from torch import Tensor

from langfield.kernels.jit import JitKernel

__all__ = ["cpp_available", "load_cpp_extension", "march_constant_cpp"]

_SOURCE = Path(__file__).parent / "csrc" / "march_cpu.cpp"
# -ffp-contract=off: no fused multiply-adds, so every sample rounds exactly as the torch path's.
KERNEL = JitKernel("langfield_march", _SOURCE, ["-ffp-contract=off"], "C++ ray-marching kernel", probe="march_constant")


def load_cpp_extension(verbose: bool = False) -> bool:
    """Build (or load the cached build of) the kernel once per process; return whether it works."""
    return KERNEL.load(verbose)


def cpp_available() -> bool:
    """Whether the C++ kernel can be used (builds it on first call unless ``LANGFIELD_NO_CPP=1``)."""
    return KERNEL.available()


def march_constant_cpp(
    origins: Tensor, directions: Tensor, t_min: Tensor, t_max: Tensor, offset: Tensor, counts: Tensor,
    step_size: float, binary: Optional[Tensor], aabb: Tensor, resolution: int,
) -> Tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """Kept samples of rays marched with constant steps (float32, CPU).

    Args:
        origins, directions: ``[R, 3]`` float32.
        t_min, t_max: ``[R]`` float32 entry/exit distances (clipped to near/far).
        offset: ``[R]`` float32 first-sample offset as a fraction of a step.
        counts: ``[R]`` int64 candidate steps per ray (0 for rays that miss).
        step_size: the step length.
        binary: ``[res^3]`` bool occupancy (flat index ``i res^2 + j res + k``), or ``None``.
        aabb: ``[2, 3]`` float32 box of the grid.
        resolution: cells per axis of ``binary``.

    Returns:
        ``(t_starts [N], t_ends [N], ray_indices [N])`` sorted by ray, then along the ray.
    """
    if not load_cpp_extension():
        raise RuntimeError("the C++ ray-marching kernel is unavailable (LANGFIELD_NO_CPP is set or the build failed)")
    args = [t.detach().contiguous() for t in (origins, directions, t_min, t_max, offset, counts)]
    grid = torch.zeros(0, dtype=torch.bool) if binary is None else binary.detach().contiguous()
    return torch.ops.langfield_march.march_constant(
        *args, float(step_size), grid, aabb.detach().float().contiguous(), int(resolution)
    )
