"""Fast paths selected at run time (C++/OpenMP CPU kernels; Triton/CUDA where available).

Nothing here compiles on import: each kernel module builds lazily on first use and reports
whether it is usable (e.g. :func:`langfield.kernels.hash_encoding_cpu.cpp_available`), so the
public ops in :mod:`langfield.ops` can fall back to their torch paths. ``LANGFIELD_NO_CPP=1``
disables every C++ kernel.
"""

from langfield.kernels.hash_encoding_cpu import cpp_available, cpp_disabled

__all__ = ["cpp_available", "cpp_disabled"]
