"""Scene contraction for unbounded scenes (Mip-NeRF 360, Barron et al. 2022, Sec. 2, eq. 10).

``contract(x) = x`` if ``||x|| <= 1`` else ``(2 - 1 / ||x||) x / ||x||``: the unit ball (the
foreground) is kept as is and all of the space outside it is squeezed into the shell
``1 < ||y|| < 2``, distance along a ray from the centre mapping to ``2 - 1/r`` (disparity-like, so
far-away content gets resolution in proportion to how much of the image it covers).

The norm is selectable:

* ``"l2"``: the paper's ball of radius 2;
* ``"linf"``: the L-infinity variant (nerfstudio's ``SceneContraction(order=inf)``, recommended
  there for hash grids): the contracted space is the cube ``[-2, 2]^3``, which an axis-aligned
  grid fills completely (the L2 ball leaves the cube's corners unused).

A scene is first mapped so that its box ``aabb [2, 3]`` becomes ``[-1, 1]^3`` (centre and per-axis
half extent, as nerfstudio normalises positions by its scene box) and then contracted:
:func:`contract_from_box` / :func:`uncontract_to_box`. Instant-NGP encodes ``(y + 2) / 4`` in
``[0, 1]^3`` with its hash grid and keeps its occupancy grid over ``y in [-2, 2]^3``.

A slow, readable twin lives in :mod:`langfield.ops.reference.contraction`.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from langfield._checks import InputError, check_choice

__all__ = ["CONTRACTIONS", "CONTRACTED_BOX", "contract", "uncontract", "contract_from_box", "uncontract_to_box"]

#: The supported norms of the contraction.
CONTRACTIONS = ("l2", "linf")

#: Half-width of the cube that holds every contracted point (``[-2, 2]^3``).
CONTRACTED_BOX = 2.0

# Inverse of a point at ||y|| = 2 is at infinity; contracted norms are kept this far below 2.
_MAX_CONTRACTED = 2.0 - 1e-6


def _check(points: Tensor, name: str, norm: str) -> None:
    check_choice(norm, "norm", CONTRACTIONS)
    if not isinstance(points, Tensor) or points.ndim < 1 or points.shape[-1] != 3:
        shape = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise InputError(f"{name} must be a [..., 3] tensor, got {shape}")
    if not points.is_floating_point():
        raise InputError(f"{name} must be a floating point tensor, got {points.dtype}")


def _norm(points: Tensor, norm: str) -> Tensor:
    """``[..., 1]`` norm of ``points [..., 3]``."""
    if norm == "l2":
        return torch.linalg.vector_norm(points, dim=-1, keepdim=True)
    return points.abs().amax(dim=-1, keepdim=True)


def contract(points: Tensor, *, norm: str = "l2") -> Tensor:
    """Mip-NeRF 360 contraction (eq. 10) of ``points [..., 3]`` -> ``[..., 3]`` with norm ``< 2``.

    Continuous, with a continuous first derivative across ``||x|| = 1`` along the radial
    direction (slope 1 on both sides). Differentiable everywhere except on the L-infinity norm's
    edges (``|x_i| = |x_j|`` maxima), where torch takes a subgradient.

    Example:
        >>> import torch
        >>> from langfield.ops.contraction import contract
        >>> x = torch.tensor([[0.5, 0.0, 0.0], [4.0, 0.0, 0.0], [2.0, 2.0, 0.0]])
        >>> contract(x, norm="l2")[:2].tolist()  # kept inside the unit ball; 2 - 1/4 outside
        [[0.5, 0.0, 0.0], [1.75, 0.0, 0.0]]
        >>> contract(x, norm="linf")[2].tolist()  # ||x||_inf = 2 -> (2 - 1/2) x / 2
        [1.5, 1.5, 0.0]
    """
    _check(points, "points", norm)
    n = _norm(points, norm)
    # Clamp the norm used by the outer branch so that torch.where never differentiates 1/0.
    n_out = n.clamp_min(1.0)
    outside = (2.0 - 1.0 / n_out) * (points / n_out)
    return torch.where(n <= 1.0, points, outside)


def uncontract(contracted: Tensor, *, norm: str = "l2") -> Tensor:
    """Inverse of :func:`contract`: ``[..., 3]`` contracted points (norm ``< 2``) -> world points.

    Outside the unit ball ``||x|| = 1 / (2 - ||y||)`` along the same direction. Norms at or
    above 2 (infinitely far) are clamped to ``2 - 1e-6`` (``||x|| = 1e6``).

    Example:
        >>> import torch
        >>> from langfield.ops.contraction import uncontract
        >>> uncontract(torch.tensor([[0.5, 0.0, 0.0], [1.75, 0.0, 0.0]]), norm="l2").tolist()
        [[0.5, 0.0, 0.0], [4.0, 0.0, 0.0]]
    """
    _check(contracted, "contracted", norm)
    n = _norm(contracted, norm)
    n_out = n.clamp(1.0, _MAX_CONTRACTED)
    outside = contracted / n.clamp_min(1.0) / (2.0 - n_out)
    return torch.where(n <= 1.0, contracted, outside)


def _box_frame(aabb: Tensor, like: Tensor) -> Tuple[Tensor, Tensor]:
    aabb = torch.as_tensor(aabb)
    if aabb.shape != (2, 3):
        raise InputError(f"aabb must be [2, 3] (min, max), got {tuple(aabb.shape)}")
    aabb = aabb.to(device=like.device, dtype=like.dtype)
    half = 0.5 * (aabb[1] - aabb[0])
    if not bool((half > 0).all()):
        raise InputError(f"aabb must have max > min on every axis, got {aabb.tolist()}")
    return 0.5 * (aabb[0] + aabb[1]), half


def contract_from_box(points: Tensor, aabb: Tensor, *, norm: str = "linf") -> Tensor:
    """World ``points [..., 3]`` -> contracted ``[..., 3]`` in ``[-2, 2]^3``: the box
    ``aabb [2, 3]`` becomes ``[-1, 1]^3`` (per-axis centre and half extent), then :func:`contract`.

    Example:
        >>> import torch
        >>> from langfield.ops.contraction import contract_from_box
        >>> aabb = torch.tensor([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]])  # centre 1, half extent 1
        >>> contract_from_box(torch.tensor([[1.5, 1.0, 1.0], [5.0, 1.0, 1.0]]), aabb).tolist()
        [[0.5, 0.0, 0.0], [1.75, 0.0, 0.0]]
    """
    _check(points, "points", norm)
    centre, half = _box_frame(aabb, points)
    return contract((points - centre) / half, norm=norm)


def uncontract_to_box(contracted: Tensor, aabb: Tensor, *, norm: str = "linf") -> Tensor:
    """Inverse of :func:`contract_from_box`: contracted ``[..., 3]`` -> world ``[..., 3]``."""
    _check(contracted, "contracted", norm)
    centre, half = _box_frame(aabb, contracted)
    return uncontract(contracted, norm=norm) * half + centre
