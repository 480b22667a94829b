"""Multiresolution hash encoding (Müller et al. 2022, "Instant Neural Graphics Primitives", Sec. 3).

``L`` levels of trainable feature tables (``F`` features per entry). Level ``l`` has grid
resolution ``N_l = floor(N_min * b^l)`` with ``b = exp((ln N_max - ln N_min) / (L - 1))``
(NGP eq. 2-3). A point ``x`` in ``[0, 1]^3`` is scaled to ``pos = x * N_l``; its cell corner is
``p0 = min(floor(pos), N_l - 1)`` (so ``x = 1`` sits on vertex ``N_l`` with weight 1) and the 8
corner features are blended trilinearly with ``w = pos - p0``. Corners index a level's table
1:1 when its dense grid fits, ``(N_l + 1)^3 <= T``, and otherwise through the spatial hash of NGP
eq. 4, ``(i * 1 xor j * 2654435761 xor k * 805459861) mod T`` in 32-bit arithmetic. Level ``l``'s
table has ``min(T, (N_l + 1)^3)`` rows (no padding); all levels are concatenated into one
``[T_total, F]`` tensor, level ``l`` starting at row ``config.level_offsets()[l]``.

Points outside ``[0, 1]`` are clamped to the unit cube (zero gradient w.r.t. ``x`` there); the
caller maps its scene box to ``[0, 1]^3``.

Backends (all agree with :mod:`langfield.ops.reference.hash_encoding` in values and gradients):

``"cpp"``
    C++/OpenMP kernel (:mod:`langfield.kernels.hash_encoding_cpu`), CPU float32/float64 only;
    the default on CPU. Recomputes indices in the backward instead of storing them.
``"torch"``
    vectorised PyTorch (any device): one level-major ``[L, 8, N]`` int32 row tensor, one fused
    gather-and-blend (``embedding_bag`` with per-sample weights), per-feature ``index_add_`` in
    the backward.
``"reference"``
    the slow, readable twin (plain autograd).

All are differentiable w.r.t. the table and ``x`` (e.g. normals from density gradients). The
fast backends compute the ``x`` gradient analytically (derivative of the trilinear weights,
``d w / d x = N_l``) and support first-order gradients only; the reference, plain autograd,
also supports double backward.

CPU performance notes (2 cores, N = 2^17, default config; see ``benchmarks/hash_encoding.py``):
the work is dominated by random reads/writes into the level tables, so all fast paths go level by
level; the C++ kernel also asks for transparent huge pages for the table (see
:func:`langfield.kernels.hash_encoding_cpu.advise_huge_pages`). Use ``torch.optim.Adam(...,
fused=True)`` for the table: on CPU a foreach/for-loop Adam step over the 12M table values costs
100-150 ms, the fused one about 16 ms.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from langfield.kernels import hash_encoding_cpu
from langfield.ops.reference import hash_encoding as _reference

__all__ = ["HashGridConfig", "HashGridEncoding", "available_backends", "hash_encode", "BACKENDS"]

BACKENDS = ("cpp", "torch", "reference")
# NGP eq. 4 primes; the second one as the int32 with the same bits (torch has no uint32 mul).
_PRIMES = (1, 2654435761, 805459861)
_PRIMES_INT32 = tuple(p - (1 << 32) if p >= (1 << 31) else p for p in _PRIMES)


@dataclass(frozen=True)
class HashGridConfig:
    """Hash grid layout (NGP Sec. 3, Table 1 defaults for ``L``, ``F``, ``T``, ``N_min``).

    ``num_levels`` L, ``features_per_level`` F, ``log2_hashmap_size`` log2 T (T = table rows per
    hashed level), ``base_resolution`` N_min, ``max_resolution`` N_max.

    Example:
        Two levels, 2 and 4 cells a side; the coarse one fits its dense ``3^3 = 27`` corners in
        ``T = 64`` rows, the fine one (``5^3 = 125`` corners) is hashed:

        >>> from langfield.ops.hash_encoding import HashGridConfig
        >>> config = HashGridConfig(num_levels=2, features_per_level=1, log2_hashmap_size=6,
        ...                         base_resolution=2, max_resolution=4)
        >>> config.resolutions(), config.dense_levels(), config.level_offsets(), config.output_dim
        ([2, 4], [True, False], [0, 27, 91], 2)
    """

    num_levels: int = 16
    features_per_level: int = 2
    log2_hashmap_size: int = 19
    base_resolution: int = 16
    max_resolution: int = 2048

    def __post_init__(self) -> None:
        for name in ("num_levels", "features_per_level", "log2_hashmap_size", "base_resolution", "max_resolution"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.log2_hashmap_size > 30:
            raise ValueError(f"log2_hashmap_size must be <= 30, got {self.log2_hashmap_size}")
        if self.max_resolution < self.base_resolution:
            raise ValueError(
                f"max_resolution ({self.max_resolution}) must be >= base_resolution ({self.base_resolution})"
            )
        if self.num_levels == 1 and self.max_resolution != self.base_resolution:
            raise ValueError("with num_levels == 1, max_resolution must equal base_resolution")
        if self.num_rows >= 2**31:
            raise ValueError(f"the concatenated table has {self.num_rows} rows; it must stay below 2^31")

    @property
    def hashmap_size(self) -> int:
        """``T = 2^log2_hashmap_size``, rows of each hashed level."""
        return 2**self.log2_hashmap_size

    @property
    def per_level_scale(self) -> float:
        """``b = exp((ln N_max - ln N_min) / (L - 1))`` (NGP eq. 3); 1 for a single level."""
        if self.num_levels == 1:
            return 1.0
        return math.exp((math.log(self.max_resolution) - math.log(self.base_resolution)) / (self.num_levels - 1))

    def resolutions(self) -> list[int]:
        """``[L]`` grid resolutions ``N_l = floor(N_min * b^l)`` (NGP eq. 2).

        A 1e-6 guard absorbs round-off so the last level is exactly ``N_max``.
        """
        log_b = math.log(self.per_level_scale)
        return [int(math.floor(self.base_resolution * math.exp(l * log_b) + 1e-6)) for l in range(self.num_levels)]

    def dense_levels(self) -> list[bool]:
        """``[L]`` whether level ``l`` indexes its table 1:1, i.e. ``(N_l + 1)^3 <= T``."""
        return [(r + 1) ** 3 <= self.hashmap_size for r in self.resolutions()]

    def level_sizes(self) -> list[int]:
        """``[L]`` table rows per level, ``min(T, (N_l + 1)^3)``."""
        return [min(self.hashmap_size, (r + 1) ** 3) for r in self.resolutions()]

    def level_offsets(self) -> list[int]:
        """``[L + 1]`` first row of each level in the concatenated table, then ``T_total``."""
        offsets = [0]
        for size in self.level_sizes():
            offsets.append(offsets[-1] + size)
        return offsets

    @property
    def num_rows(self) -> int:
        """``T_total``, rows of the concatenated table."""
        return sum(self.level_sizes())

    @property
    def output_dim(self) -> int:
        """``L * F``, channels of the encoding."""
        return self.num_levels * self.features_per_level


# --------------------------------------------------------------------------------------------
# Vectorised torch backend
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TorchLevelConstants:
    resolution: Tensor  # [L] float, N_l
    max_corner: Tensor  # [L] float, N_l - 1
    num_dense: int  # dense levels come first (resolutions never decrease)
    dense_strides: Tensor  # [Ld, 3] int32, (1, N_l + 1, (N_l + 1)^2)
    dense_offsets: Tensor  # [Ld] int32
    hash_primes: Tensor  # [3] int32 (bit patterns of the uint32 primes)
    hash_offsets: Tensor  # [Lh] int32
    hash_mask: int  # T - 1


@functools.lru_cache(maxsize=32)
def _torch_constants(config: HashGridConfig, device: torch.device, dtype: torch.dtype) -> _TorchLevelConstants:
    resolutions = config.resolutions()
    dense = config.dense_levels()
    offsets = config.level_offsets()
    num_dense = sum(dense)
    if dense != [True] * num_dense + [False] * (len(dense) - num_dense):
        raise AssertionError("dense levels must form a prefix")  # resolutions are non-decreasing
    res = torch.tensor(resolutions, dtype=dtype, device=device)
    strides = [[1, r + 1, (r + 1) ** 2] for r in resolutions[:num_dense]]
    return _TorchLevelConstants(
        resolution=res,
        max_corner=res - 1,
        num_dense=num_dense,
        dense_strides=torch.tensor(strides, dtype=torch.int32, device=device).reshape(num_dense, 3),
        dense_offsets=torch.tensor(offsets[:num_dense], dtype=torch.int32, device=device),
        hash_primes=torch.tensor(_PRIMES_INT32, dtype=torch.int32, device=device),
        hash_offsets=torch.tensor(offsets[num_dense:-1], dtype=torch.int32, device=device),
        hash_mask=config.hashmap_size - 1,
    )


def _corner_bits(c: int) -> tuple[int, int, int]:
    """Corner ``c`` in ``0..7`` → offsets along x, y, z (bit 0 = +x, bit 1 = +y, bit 2 = +z)."""
    return c & 1, (c >> 1) & 1, c >> 2


def _torch_rows_and_weights(x: Tensor, consts: _TorchLevelConstants) -> tuple[Tensor, Tensor, Tensor]:
    """``x [N, 3]`` (clamped) → rows ``[L, 8, N]`` int32, weights ``[L, 8, N]``, ``frac [L, 3, N]``.

    Layout: level-major (one level table at a time for the gather/scatter, several times faster on
    CPU than points-major) with the points innermost, so that every elementwise op runs over long
    contiguous rows (ops whose innermost dimension is a corner pair of size 2 were 2-3x slower).
    """
    num_levels, n = consts.resolution.shape[0], x.shape[0]
    pos = consts.resolution[:, None, None] * x.t()[None]  # [L, 3, N]
    p0 = torch.minimum(torch.floor(pos), consts.max_corner[:, None, None])
    frac = pos - p0  # [L, 3, N]
    cell = p0.to(torch.int32)  # [L, 3, N]

    rows = torch.empty(num_levels, 8, n, dtype=torch.int32, device=x.device)
    nd = consts.num_dense
    if nd > 0:  # i + j (N_l+1) + k (N_l+1)^2 + level offset
        step = consts.dense_strides[:, :, None]  # [Ld, 3, 1]
        low = cell[:nd] * step
        low[:, 0] += consts.dense_offsets[:, None]
        ends = (low, low + step)  # per axis: low / high corner contribution
        for c in range(8):
            bx, by, bz = _corner_bits(c)
            out = rows[:nd, c]
            torch.add(ends[bx][:, 0], ends[by][:, 1], out=out).add_(ends[bz][:, 2])
    if nd < num_levels:  # NGP eq. 4; int32 multiplication wraps, giving the uint32 bit patterns
        step = consts.hash_primes[None, :, None]  # [1, 3, 1]
        low = cell[nd:] * step
        ends = (low, low + step)
        for c in range(8):
            bx, by, bz = _corner_bits(c)
            out = rows[nd:, c]
            torch.bitwise_xor(ends[bx][:, 0], ends[by][:, 1], out=out).bitwise_xor_(ends[bz][:, 2])
        hashed = rows[nd:]
        hashed.bitwise_and_(consts.hash_mask).add_(consts.hash_offsets[:, None, None])

    axis_weights = (1.0 - frac, frac)  # low / high corner weight per axis, [L, 3, N] each
    weights = torch.empty(num_levels, 8, n, dtype=x.dtype, device=x.device)
    for c in range(8):
        bx, by, bz = _corner_bits(c)
        out = weights[:, c]
        torch.mul(axis_weights[bx][:, 0], axis_weights[by][:, 1], out=out).mul_(axis_weights[bz][:, 2])
    return rows, weights, frac


class _TorchHashEncode(torch.autograd.Function):
    """All levels and corners at once; saves int32 rows + float weights for the backward."""

    @staticmethod
    def forward(ctx, x, embeddings, config):  # noqa: D401
        consts = _torch_constants(config, x.device, x.dtype)
        rows, weights, frac = _torch_rows_and_weights(x.clamp(0.0, 1.0), consts)
        num_levels, n, feat = rows.shape[0], x.shape[0], embeddings.shape[1]
        # fused gather + trilinear blend: each (level, point) is a bag of 8 weighted rows
        out = F.embedding_bag(
            rows.transpose(1, 2).reshape(num_levels * n, 8),
            embeddings,
            mode="sum",
            per_sample_weights=weights.transpose(1, 2).reshape(num_levels * n, 8),
        )  # [L * N, F]
        if ctx.needs_input_grad[0]:
            inside = (x >= 0) & (x <= 1)  # torch.clamp passes gradients on the closed interval
            ctx.save_for_backward(rows, weights, frac, inside, embeddings)
        else:
            ctx.save_for_backward(rows, weights)
        ctx.config = config
        ctx.num_rows = embeddings.shape[0]
        return out.view(num_levels, n, feat).transpose(0, 1).reshape(n, num_levels * feat)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        rows, weights = ctx.saved_tensors[:2]
        num_levels, n = rows.shape[0], rows.shape[2]
        # level-major copy (16 MiB by default) so the products below read contiguous rows
        grad = grad_out.reshape(n, num_levels, -1).permute(1, 2, 0).contiguous()  # [L, F, N]
        feat = grad.shape[1]
        grad_x = grad_table = None
        if ctx.needs_input_grad[1]:
            # One 1-D index_add_ per feature: on CPU, index_add_ into a 2-D table goes row by row
            # through tensor ops (measured 11x slower for the default config).
            flat_rows = rows.view(-1)
            columns = []
            for f in range(feat):
                values = (weights * grad[:, None, f, :]).view(-1)  # [L * 8 * N]
                column = torch.zeros(ctx.num_rows, dtype=grad.dtype, device=grad.device)
                columns.append(column.index_add_(0, flat_rows, values))
            grad_table = torch.stack(columns, dim=1)  # [T_total, F]
        if ctx.needs_input_grad[0]:
            _, _, frac, inside, embeddings = ctx.saved_tensors
            consts = _torch_constants(ctx.config, grad.device, grad.dtype)
            corner = F.embedding(rows.view(-1), embeddings).view(num_levels, 8, n, feat)
            s = (corner * grad.transpose(1, 2)[:, None]).sum(-1)  # [L, 8, N]: <corner feature, grad>
            w = (1.0 - frac, frac)
            # d(trilinear)/d frac_axis = sum over corner pairs along the axis of
            # (high - low) * the other two axes' weights
            gfrac = torch.zeros_like(frac)  # [L, 3, N]
            for c in range(8):
                bx, by, bz = _corner_bits(c)
                sign = [1.0 if b else -1.0 for b in (bx, by, bz)]
                gfrac[:, 0] += sign[0] * s[:, c] * w[by][:, 1] * w[bz][:, 2]
                gfrac[:, 1] += sign[1] * s[:, c] * w[bx][:, 0] * w[bz][:, 2]
                gfrac[:, 2] += sign[2] * s[:, c] * w[bx][:, 0] * w[by][:, 1]
            grad_x = (gfrac * consts.resolution[:, None, None]).sum(0).t() * inside  # d frac / d x = N_l
        return grad_x, grad_table, None


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def available_backends() -> list[str]:
    """Backends usable in this process, fastest first (``"cpp"`` only if its kernel builds/loads)."""
    backends = ["torch", "reference"]
    if hash_encoding_cpu.cpp_available():
        backends.insert(0, "cpp")
    return backends


def _resolve_backend(backend: Optional[str], x: Tensor) -> str:
    if backend is None or backend == "auto":
        cpp_ok = x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
        return "cpp" if cpp_ok and hash_encoding_cpu.cpp_available() else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or 'auto', got {backend!r}")
    if backend == "cpp":
        if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"backend 'cpp' needs float32/float64 CPU tensors, got {x.dtype} on {x.device}")
        if not hash_encoding_cpu.cpp_available():
            raise ValueError("backend 'cpp' is unavailable (LANGFIELD_NO_CPP is set or the kernel failed to build)")
    return backend


def _check_inputs(x: Tensor, embeddings: Tensor, config: HashGridConfig) -> None:
    if not isinstance(config, HashGridConfig):
        raise ValueError(f"config must be a HashGridConfig, got {type(config).__name__}")
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != 3:
        raise ValueError(f"x must have shape [N, 3], got {tuple(x.shape) if isinstance(x, Tensor) else type(x)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating point tensor, got dtype {x.dtype}")
    expected = (config.num_rows, config.features_per_level)
    if not isinstance(embeddings, Tensor) or tuple(embeddings.shape) != expected:
        got = tuple(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings)
        raise ValueError(f"embeddings must have shape [T_total, F] = {list(expected)}, got {got}")
    if embeddings.dtype != x.dtype:
        raise ValueError(f"embeddings dtype {embeddings.dtype} must match x dtype {x.dtype}")
    if embeddings.device != x.device:
        raise ValueError(f"embeddings device {embeddings.device} must match x device {x.device}")


def hash_encode(
    x: Tensor, embeddings: Tensor, config: HashGridConfig, backend: Optional[str] = None
) -> Tensor:
    """Multiresolution hash encoding (NGP Sec. 3, eq. 2-4) of ``x [N, 3]`` in ``[0, 1]^3``.

    Args:
        x: ``[N, 3]`` points; clamped to ``[0, 1]^3``. Same dtype and device as ``embeddings``.
        embeddings: ``[T_total, F]`` all level tables concatenated (``config.level_offsets()``).
        config: the grid layout.
        backend: ``"cpp"``, ``"torch"``, ``"reference"`` or ``None``/``"auto"`` (C++ kernel for
            float32/float64 CPU tensors when it is available, otherwise the torch path).

    Returns:
        ``[N, L * F]``; level ``l`` fills columns ``l * F`` to ``l * F + F - 1``. Differentiable
        w.r.t. ``embeddings`` and ``x`` (first order).

    Example:
        A dense level whose table stores each corner's ``x`` coordinate ``i / N`` interpolates
        ``x`` exactly (trilinear interpolation reproduces linear functions):

        >>> import torch
        >>> from langfield.ops.hash_encoding import HashGridConfig, hash_encode
        >>> config = HashGridConfig(num_levels=1, features_per_level=1, log2_hashmap_size=6,
        ...                         base_resolution=2, max_resolution=2)
        >>> table = ((torch.arange(config.num_rows) % 3) / 2.0)[:, None]  # row i + 3 j + 9 k holds i / 2
        >>> x = torch.tensor([[0.3, 0.7, 0.2], [1.0, 0.0, 0.5]])
        >>> [round(v, 4) for v in hash_encode(x, table, config, backend="torch")[:, 0].tolist()]
        [0.3, 1.0]
        >>> torch.allclose(hash_encode(x, table, config, backend="reference"), hash_encode(x, table, config, backend="torch"))
        True
    """
    _check_inputs(x, embeddings, config)
    backend = _resolve_backend(backend, x)
    if x.shape[0] == 0:
        return x.new_zeros(0, config.output_dim) + embeddings.sum() * 0  # keeps the graph connected
    if backend == "reference":
        return _reference.hash_encode(x, embeddings, config)
    if backend == "cpp":
        return hash_encoding_cpu.hash_encode_cpp(
            x, embeddings, config.resolutions(), config.level_offsets(), config.dense_levels(), config.hashmap_size
        )
    return _TorchHashEncode.apply(x, embeddings, config)


class HashGridEncoding(nn.Module):
    """Trainable multiresolution hash grid (NGP Sec. 3): ``x [N, 3]`` in ``[0, 1]^3`` → ``[N, L * F]``.

    ``embeddings`` is one ``[T_total, F]`` parameter, initialised uniformly in
    ``[-init_scale, init_scale]`` (NGP Sec. 4: U(-1e-4, 1e-4)). The buffers ``resolutions [L]`` and
    ``level_offsets [L + 1]`` describe the layout (derived from ``config``, not saved in state
    dicts). ``backend`` is ``"cpp"``, ``"torch"`` or ``"reference"``; ``"auto"`` resolves at
    construction to ``"cpp"`` when the kernel is available, else ``"torch"``. A ``"cpp"``
    module whose inputs are not float32/float64 CPU tensors (e.g. after ``.cuda()``) runs the
    torch path.

    Example:
        The trilinear weights of every level sum to one, so a table of ones encodes every point as ones:

        >>> import torch
        >>> from langfield.ops.hash_encoding import HashGridConfig, HashGridEncoding
        >>> encoding = HashGridEncoding(HashGridConfig(num_levels=2, log2_hashmap_size=8, base_resolution=4,
        ...                                            max_resolution=16), backend="torch")
        >>> with torch.no_grad():
        ...     _ = encoding.embeddings.fill_(1.0)
        >>> features = encoding(torch.rand(5, 3))
        >>> tuple(features.shape), bool(torch.allclose(features, torch.ones(5, 4)))
        ((5, 4), True)
    """

    def __init__(self, config: HashGridConfig = HashGridConfig(), init_scale: float = 1e-4, backend: str = "auto"):
        super().__init__()
        if not isinstance(config, HashGridConfig):
            raise ValueError(f"config must be a HashGridConfig, got {type(config).__name__}")
        if not init_scale >= 0:
            raise ValueError(f"init_scale must be >= 0, got {init_scale}")
        if backend == "auto":
            backend = "cpp" if hash_encoding_cpu.cpp_available() else "torch"
        elif backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} or 'auto', got {backend!r}")
        elif backend == "cpp" and not hash_encoding_cpu.cpp_available():
            raise ValueError("backend 'cpp' is unavailable (LANGFIELD_NO_CPP is set or the kernel failed to build)")
        self.config = config
        self.backend = backend
        table = torch.empty(config.num_rows, config.features_per_level)
        if backend == "cpp":  # huge pages before the first touch (fewer TLB misses in the gathers)
            hash_encoding_cpu.advise_huge_pages(table)
        self.embeddings = nn.Parameter(table.uniform_(-init_scale, init_scale))
        self.register_buffer("resolutions", torch.tensor(config.resolutions(), dtype=torch.int64), persistent=False)
        self.register_buffer("level_offsets", torch.tensor(config.level_offsets(), dtype=torch.int64), persistent=False)

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    def forward(self, x: Tensor) -> Tensor:
        """``x [N, 3]`` in ``[0, 1]^3`` (clamped) → ``[N, L * F]``."""
        backend = self.backend
        if backend == "cpp" and (x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64)):
            backend = "torch"
        return hash_encode(x, self.embeddings, self.config, backend=backend)

    def extra_repr(self) -> str:
        return f"{self.config}, rows={self.config.num_rows}, backend={self.backend!r}"
