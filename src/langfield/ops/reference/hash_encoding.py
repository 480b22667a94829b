"""Slow, readable twin of :func:`langfield.ops.hash_encoding.hash_encode`.

Multiresolution hash encoding of Müller et al. 2022, "Instant Neural Graphics Primitives with a
Multiresolution Hash Encoding", Sec. 3. It loops over the levels and the 8 cell corners one at a
time and lets autograd handle every gradient (the table gradient is the scatter autograd derives
from indexing). Only torch is imported; the ``config`` argument is used duck-typed (it needs
``resolutions()``, ``log2_hashmap_size`` and ``features_per_level``), so this file stays
independent of the fast paths. Level layout, dense/hashed choice and hashing are re-derived here
from the specification rather than shared with the fast path.
"""

from __future__ import annotations

import torch
from torch import Tensor

# NGP eq. 4: pi_1 = 1, pi_2 = 2654435761, pi_3 = 805459861.
_PRIMES = (1, 2654435761, 805459861)


def hash_encode(x: Tensor, embeddings: Tensor, config) -> Tensor:
    """Encode ``x [N, 3]`` in ``[0, 1]^3`` with the hash grid ``embeddings [T_total, F]``.

    For level ``l`` with resolution ``N_l`` (NGP eq. 2-3) the point is scaled to
    ``pos = x * N_l``, its cell corner is ``p0 = min(floor(pos), N_l - 1)`` (so ``x = 1`` lands on
    vertex ``N_l`` with weight 1) and the 8 corner features are blended trilinearly with weights
    ``w = pos - p0`` (NGP Fig. 3, step 3). Corner vertices index the level's table densely when
    ``(N_l + 1)^3 <= T`` and otherwise through the spatial hash of NGP eq. 4,
    ``(i * 1 xor j * 2654435761 xor k * 805459861) mod T`` taken in 32-bit arithmetic.
    Level tables hold ``min(T, (N_l + 1)^3)`` rows and are concatenated in level order.
    Points outside ``[0, 1]`` are clamped (the gradient w.r.t. ``x`` is zero there).

    Returns ``[N, L * F]``: level ``l`` fills columns ``l * F`` to ``l * F + F - 1``.
    """
    if x.dim() != 2 or x.shape[1] != 3:
        raise ValueError(f"x must have shape [N, 3], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating point tensor, got dtype {x.dtype}")
    if embeddings.dim() != 2 or embeddings.shape[1] != config.features_per_level:
        raise ValueError(
            f"embeddings must have shape [T_total, {config.features_per_level}], got {tuple(embeddings.shape)}"
        )
    if embeddings.dtype != x.dtype:
        raise ValueError(f"embeddings dtype {embeddings.dtype} must match x dtype {x.dtype}")

    hashmap_size = 2**config.log2_hashmap_size
    resolutions = list(config.resolutions())
    # Level l's table holds min(T, (N_l + 1)^3) rows; dense (1:1) when the full grid fits.
    table_sizes = [min(hashmap_size, (r + 1) ** 3) for r in resolutions]
    if sum(table_sizes) != embeddings.shape[0]:
        raise ValueError(f"embeddings must have {sum(table_sizes)} rows for this config, got {embeddings.shape[0]}")

    x = x.clamp(0.0, 1.0)
    offset = 0
    features = []
    for resolution, table_size in zip(resolutions, table_sizes):
        vertices_per_axis = resolution + 1
        dense = vertices_per_axis**3 <= hashmap_size

        pos = x * resolution  # [N, 3]
        p0 = torch.floor(pos).clamp(max=resolution - 1)  # [N, 3], piecewise constant (no gradient)
        frac = pos - p0  # [N, 3], trilinear weights along each axis
        cell = p0.long()  # [N, 3]

        level_feature = torch.zeros(x.shape[0], embeddings.shape[1], dtype=x.dtype, device=x.device)
        for dz in (0, 1):
            for dy in (0, 1):
                for dx in (0, 1):
                    corner = cell + torch.tensor([dx, dy, dz], device=x.device)  # [N, 3]
                    if dense:
                        index = (
                            corner[:, 0]
                            + corner[:, 1] * vertices_per_axis
                            + corner[:, 2] * vertices_per_axis * vertices_per_axis
                        )
                    else:
                        h = (corner[:, 0] * _PRIMES[0]) ^ (corner[:, 1] * _PRIMES[1]) ^ (corner[:, 2] * _PRIMES[2])
                        index = (h & 0xFFFFFFFF) % table_size  # uint32 hash, then mod T
                    wx = frac[:, 0] if dx else 1.0 - frac[:, 0]
                    wy = frac[:, 1] if dy else 1.0 - frac[:, 1]
                    wz = frac[:, 2] if dz else 1.0 - frac[:, 2]
                    weight = wx * wy * wz  # [N]
                    level_feature = level_feature + weight[:, None] * embeddings[offset + index]
        features.append(level_feature)
        offset += table_size
    return torch.cat(features, dim=-1)
