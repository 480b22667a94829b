"""C++/OpenMP CPU kernel for the multiresolution hash encoding (Müller et al. 2022, Sec. 3).

The kernel (``csrc/hash_encoding_cpu.cpp``) is JIT-compiled on first use by
:class:`~langfield.kernels.jit.JitKernel` (about 30 s once; later processes load the cached
``langfield_hashgrid-<tag>-<key>.so`` from ``$TORCH_EXTENSIONS_DIR`` or
``~/.cache/langfield/torch_extensions``, keyed by interpreter, torch build, flags and source).
It registers ``torch.ops.langfield_hashgrid.forward`` / ``.backward``. If compilation fails (or
another process's build lock is not released within ``LANGFIELD_KERNEL_LOCK_TIMEOUT``), one
warning is logged and :func:`cpp_available` returns ``False`` so callers use the torch path.
Setting ``LANGFIELD_NO_CPP=1`` disables the kernel without trying to build it.

This module takes plain level descriptions (resolutions, row offsets, dense flags) rather than a
config object, so it does not import from :mod:`langfield.ops` (imports point downward).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from langfield.kernels.jit import JitKernel, cpp_disabled

__all__ = ["advise_huge_pages", "cpp_available", "cpp_disabled", "hash_encode_cpp", "load_cpp_extension"]

_SOURCE = Path(__file__).parent / "csrc" / "hash_encoding_cpu.cpp"
# -ffp-contract=off: no fused multiply-adds, so weights round exactly like the torch twins.
KERNEL = JitKernel("langfield_hashgrid", _SOURCE, ["-ffp-contract=off"], "C++ hash-encoding kernel")


def load_cpp_extension(verbose: bool = False) -> bool:
    """Build (or load the cached build of) the kernel once per process; return whether it works.

    A failure is logged once as a warning and remembered, so callers fall back to the torch path.
    """
    return KERNEL.load(verbose)


def cpp_available() -> bool:
    """Whether the C++ kernel can be used (builds it on first call unless ``LANGFIELD_NO_CPP=1``)."""
    return KERNEL.available()


class _CppHashEncode(torch.autograd.Function):
    """Forward and backward of the hash encoding in the C++ kernel.

    Saves only ``x`` (and the table when the input gradient is needed); the backward recomputes the
    corner indices and trilinear weights, which is cheaper than storing ``[N, L, 8]`` of each
    (and leaves the table free to be updated in place between forward and backward when only
    its own gradient is wanted).
    """

    @staticmethod
    def forward(ctx, x, embeddings, resolutions, offsets, dense, hashmap_size):  # noqa: D401
        out = torch.ops.langfield_hashgrid.forward(x, embeddings, resolutions, offsets, dense, hashmap_size)
        ctx.save_for_backward(x, embeddings if ctx.needs_input_grad[0] else None)
        ctx.level_args = (resolutions, offsets, dense, hashmap_size)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, embeddings = ctx.saved_tensors
        need_input_grad, need_table_grad = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if embeddings is None:
            embeddings = x.new_empty(0)
        grad_table, grad_x = torch.ops.langfield_hashgrid.backward(
            grad_out, x, embeddings, *ctx.level_args, need_table_grad, need_input_grad
        )
        return (
            grad_x if need_input_grad else None,
            grad_table if need_table_grad else None,
            None,
            None,
            None,
            None,
        )


def hash_encode_cpp(
    x: Tensor,
    embeddings: Tensor,
    resolutions: Sequence[int],
    offsets: Sequence[int],
    dense: Sequence[bool],
    hashmap_size: int,
) -> Tensor:
    """Hash-encode ``x [N, 3]`` with ``embeddings [T_total, F]`` → ``[N, L * F]`` on the CPU.

    ``resolutions [L]``, ``offsets [L + 1]`` (first table row of each level, then ``T_total``),
    ``dense [L]`` (1:1 indexing instead of the NGP eq. 4 hash) and ``hashmap_size`` (``T``, a
    power of two) describe the level layout. Inputs are assumed validated by the caller
    (:func:`langfield.ops.hash_encoding.hash_encode`); ``x`` and ``embeddings`` must be float32 or
    float64 CPU tensors of the same dtype. Differentiable w.r.t. both ``embeddings`` and ``x``
    (first order only).
    """
    return _CppHashEncode.apply(
        x, embeddings, list(resolutions), list(offsets), [int(bool(d)) for d in dense], int(hashmap_size)
    )


def advise_huge_pages(tensor: Tensor) -> None:
    """Best effort: back a large, not yet written CPU tensor with transparent huge pages (Linux).

    Call it between ``torch.empty`` and the first write. Fewer page faults on first touch and
    fewer TLB misses for the random gathers of the hash table. A no-op when the kernel is
    unavailable or the tensor is not on the CPU.
    """
    if tensor.device.type == "cpu" and tensor.numel() > 0 and cpp_available():
        torch.ops.langfield_hashgrid.advise_huge_pages(tensor)
