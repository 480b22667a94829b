"""Exact ray–primitive intersections and surface normals, shared by the procedural scene and the toy world.

Everything here works on **separate coordinate components** ``(x, y, z)`` (a :data:`Components`
tuple of tensors of one broadcastable shape, e.g. ``[R]`` or ``[M, P]``) in the primitive's *local*
frame (centred, axis-aligned; the caller rotates and translates). Elementwise ops on contiguous
vectors are several times faster on CPU than ``[R, 3] @ [3, 3]`` matmuls or reductions over a
length-3 last dimension, which is why the components are kept apart.

Sizes may be Python floats (one primitive, as in :mod:`langfield.data.procedural`) or tensors that
broadcast against the components (one primitive per row, as in the batched toy-world renderer).

Primitives (local frame, axis of symmetry along local ``z``):

* box ``|x| <= hx, |y| <= hy, |z| <= hz`` (slab test, Kay & Kajiya 1986);
* ellipsoid ``(x/sx)^2 + (y/sy)^2 + (z/sz)^2 <= 1`` (a sphere when all semi-axes agree);
* capped cylinder ``x^2 + y^2 <= r^2, |z| <= h``;
* capped cone ``x^2 + y^2 <= (r (h - z) / 2h)^2, |z| <= h``: base disc of radius ``r`` at
  ``z = -h``, apex at ``z = +h``.

Every ``hit_*`` returns the ray parameter ``t`` of the first intersection with ``t > eps``
(``inf`` where none), in the units of the given direction: for unit directions ``t`` is the metric
ray distance. Rays starting inside a solid return the exit distance.

>>> import torch
>>> o = (torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([-5.0]))
>>> d = (torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([1.0]))
>>> hit_ellipsoid(o, d, (1.0, 1.0, 1.0)).tolist()  # unit sphere at the origin, seen from z = -5
[4.0]
>>> hit_cone(o, d, (1.0, 1.0, 0.5)).tolist()  # the cone's base disc lies at z = -0.5
[4.5]
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = [
    "EPS_T",
    "Components",
    "Size",
    "first_positive",
    "hit_box",
    "hit_cone",
    "hit_cylinder",
    "hit_ellipsoid",
    "normal_box",
    "normal_cone",
    "normal_cylinder",
    "normal_ellipsoid",
    "quadratic_roots",
    "safe_divisor",
    "subpixel_offsets",
]

#: ``(x, y, z)`` components of points or directions, each a tensor of one broadcastable shape.
Components = Tuple[Tensor, Tensor, Tensor]
Scalar = Union[float, Tensor]
#: Per-axis size of a primitive: Python floats or tensors broadcasting against the components.
Size = Tuple[Scalar, Scalar, Scalar]

#: Smallest accepted hit distance (rejects self-hits of rays starting on a surface).
EPS_T = 1e-4


def quadratic_roots(a: Tensor, half_b: Tensor, c: Tensor) -> Tuple[Tensor, Tensor]:
    """Roots ``t_lo <= t_hi`` of ``a t^2 + 2 half_b t + c = 0``, ``inf`` where there are none.

    Uses the cancellation-free form ``q = -(half_b + sign(half_b) sqrt(disc))``, roots ``q / a``
    and ``c / q``. ``a`` may have either sign (a cone's quadric); ``|a| <= 1e-12`` (a ray parallel
    to the quadric's asymptotic direction, or a vertical ray for a cylinder) counts as no root.
    All inputs broadcast against each other.
    """
    a, half_b, c = torch.broadcast_tensors(a, half_b, c)
    inf = torch.full_like(a, math.inf)
    disc = half_b * half_b - a * c
    ok = (disc >= 0) & (a.abs() > 1e-12)
    sq = torch.sqrt(disc.clamp_min(0.0))
    q = -(half_b + torch.where(half_b >= 0, sq, -sq))
    q_safe = torch.where(q == 0, torch.ones_like(q), q)
    a_safe = torch.where(ok, a, torch.ones_like(a))
    r0 = q / a_safe
    r1 = torch.where(q == 0, r0, c / q_safe)
    lo = torch.where(ok, torch.minimum(r0, r1), inf)
    hi = torch.where(ok, torch.maximum(r0, r1), inf)
    return lo, hi


def first_positive(candidates: Sequence[Tensor], eps: float = EPS_T) -> Tensor:
    """Elementwise smallest candidate distance ``> eps`` (``inf`` where none)."""
    best = None
    for t in candidates:
        t = torch.where(t > eps, t, torch.full_like(t, math.inf))
        best = t if best is None else torch.minimum(best, t)
    return best


def safe_divisor(d: Tensor) -> Tensor:
    """``d`` with exact/near zeros (``|d| < 1e-12``) replaced by ``1e-12`` so divisions stay finite."""
    return torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)


def hit_box(o: Components, d: Components, half: Size, eps: float = EPS_T) -> Tensor:
    """Slab test against the box ``|x_i| <= half_i``: first distance ``> eps`` or ``inf``."""
    t_enter, t_exit = None, None
    for oi, di, hi in zip(o, d, half):
        inv = 1.0 / safe_divisor(di)
        t1, t2 = (-hi - oi) * inv, (hi - oi) * inv
        lo, up = torch.minimum(t1, t2), torch.maximum(t1, t2)
        t_enter = lo if t_enter is None else torch.maximum(t_enter, lo)
        t_exit = up if t_exit is None else torch.minimum(t_exit, up)
    valid = t_exit >= t_enter
    inf = torch.full_like(t_enter, math.inf)
    return first_positive([torch.where(valid, t_enter, inf), torch.where(valid, t_exit, inf)], eps)


def hit_ellipsoid(o: Components, d: Components, semi: Size, eps: float = EPS_T) -> Tensor:
    """Ray-ellipsoid ``sum (x_i / s_i)^2 = 1``: first distance ``> eps`` (same ``t`` as the input ray) or ``inf``."""
    o2 = [oi / si for oi, si in zip(o, semi)]
    d2 = [di / si for di, si in zip(d, semi)]
    a = d2[0] * d2[0] + d2[1] * d2[1] + d2[2] * d2[2]
    half_b = o2[0] * d2[0] + o2[1] * d2[1] + o2[2] * d2[2]
    c = o2[0] * o2[0] + o2[1] * o2[1] + o2[2] * o2[2] - 1.0
    lo, hi = quadratic_roots(a, half_b, c)
    return first_positive([lo, hi], eps)


def _caps(o: Components, d: Components, heights: Sequence[Scalar], radii: Sequence[Scalar]) -> list:
    """Hits of the horizontal discs ``z = heights[i]``, ``x^2 + y^2 <= radii[i]^2`` (``inf`` outside)."""
    ox, oy, oz = o
    dx, dy, dz = d
    inv_dz = 1.0 / safe_divisor(dz)
    out = []
    for zc, rc in zip(heights, radii):
        t = (zc - oz) * inv_dz
        x, y = ox + t * dx, oy + t * dy
        out.append(torch.where(x * x + y * y <= rc * rc, t, torch.full_like(t, math.inf)))
    return out


def hit_cylinder(o: Components, d: Components, size: Size, eps: float = EPS_T) -> Tensor:
    """Capped cylinder ``x^2 + y^2 <= r^2, |z| <= h`` with ``size = (r, r, h)``: first distance ``> eps`` or ``inf``."""
    r, hh = size[0], size[2]
    ox, oy, oz = o
    dx, dy, dz = d
    lo, hi = quadratic_roots(dx * dx + dy * dy, ox * dx + oy * dy, ox * ox + oy * oy - r * r)
    cands = []
    for t in (lo, hi):
        z = oz + t.clamp_max(1e6) * dz
        cands.append(torch.where(z.abs() <= hh, t, torch.full_like(t, math.inf)))
    cands += _caps(o, d, (-hh, hh), (r, r))
    return first_positive(cands, eps)


def hit_cone(o: Components, d: Components, size: Size, eps: float = EPS_T) -> Tensor:
    """Capped cone with ``size = (r, r, h)``: base disc of radius ``r`` at ``z = -h``, apex at ``z = +h``.

    The lateral surface is the quadric ``x^2 + y^2 = k^2 (h - z)^2`` with ``k = r / 2h``, cut to
    ``-h <= z <= h`` (which also drops the mirrored nappe above the apex). Substituting the ray gives
    ``a t^2 + 2 half_b t + c = 0`` with ``a = dx^2 + dy^2 - k^2 dz^2`` (either sign),
    ``half_b = ox dx + oy dy + k^2 (h - oz) dz`` and ``c = ox^2 + oy^2 - k^2 (h - oz)^2``.
    """
    r, hh = size[0], size[2]
    ox, oy, oz = o
    dx, dy, dz = d
    k = r / (2.0 * hh)
    k2 = k * k
    w = hh - oz
    lo, hi = quadratic_roots(dx * dx + dy * dy - k2 * dz * dz, ox * dx + oy * dy + k2 * w * dz, ox * ox + oy * oy - k2 * w * w)
    cands = []
    for t in (lo, hi):
        z = oz + t.clamp(-1e6, 1e6) * dz
        cands.append(torch.where(z.abs() <= hh, t, torch.full_like(t, math.inf)))
    cands += _caps(o, d, (-hh,), (r,))
    return first_positive(cands, eps)


def _normalize(x: Tensor, y: Tensor, z: Tensor) -> Components:
    inv = torch.rsqrt((x * x + y * y + z * z).clamp_min(1e-30))
    return x * inv, y * inv, z * inv


def normal_box(p: Components, half: Size) -> Components:
    """Outward local unit normal at surface points ``p`` of the box: the face of the dominant ``|p_i| / half_i``.

    Ties (edges) go to ``x`` before ``y`` before ``z``.
    """
    q = [pi / hi for pi, hi in zip(p, half)]
    a = [qi.abs() for qi in q]
    is_x = (a[0] >= a[1]) & (a[0] >= a[2])
    is_y = ~is_x & (a[1] >= a[2])
    is_z = ~is_x & ~is_y
    zero = torch.zeros_like(q[0])
    return (
        torch.where(is_x, torch.sign(q[0]), zero),
        torch.where(is_y, torch.sign(q[1]), zero),
        torch.where(is_z, torch.sign(q[2]), zero),
    )


def normal_ellipsoid(p: Components, semi: Size) -> Components:
    """Outward local unit normal ``normalize(p_i / s_i^2)`` of the ellipsoid."""
    return _normalize(*(pi / (si * si) for pi, si in zip(p, semi)))


def normal_cylinder(p: Components, size: Size) -> Components:
    """Outward local unit normal of the capped cylinder: ``+-z`` on the caps, radial on the side.

    A point belongs to a cap where ``|z| / h > rho / r`` (``rho`` its distance from the axis).
    """
    r, hh = size[0], size[2]
    x, y, z = p
    rho = torch.sqrt(x * x + y * y)
    cap = (z.abs() / hh) > (rho / r)
    inv = 1.0 / rho.clamp_min(1e-12)
    zero = torch.zeros_like(x)
    return torch.where(cap, zero, x * inv), torch.where(cap, zero, y * inv), torch.where(cap, torch.sign(z), zero)


def normal_cone(p: Components, size: Size) -> Components:
    """Outward local unit normal of the capped cone (see :func:`hit_cone`): ``-z`` on the base disc,
    ``normalize(x, y, k^2 (h - z))`` (the quadric's gradient) on the lateral surface.

    A point belongs to the base where it is nearer the base plane than the lateral surface
    (in the ratio sense used for the cylinder: ``(z + h) / 2h < 1 - rho / (k (h - z))``, simplified
    to ``z + h < (2h) (1 - rho / r_z)`` with ``r_z = k (h - z)`` the radius at that height).
    """
    r, hh = size[0], size[2]
    x, y, z = p
    k = r / (2.0 * hh)
    w = (hh - z).clamp_min(0.0)
    rho = torch.sqrt(x * x + y * y)
    radius_here = (k * w).clamp_min(1e-12)
    base = (z + hh) < (2.0 * hh) * (1.0 - rho / radius_here)
    nx, ny, nz = _normalize(x, y, k * k * w)
    zero = torch.zeros_like(x)
    return torch.where(base, zero, nx), torch.where(base, zero, ny), torch.where(base, -torch.ones_like(z), nz)


def subpixel_offsets(supersample: int) -> Tensor:
    """``[ss*ss, 2]`` offsets (pixels) of a stratified ``ss x ss`` grid around the pixel centre, row-major.

    >>> subpixel_offsets(2).tolist()
    [[-0.25, -0.25], [0.25, -0.25], [-0.25, 0.25], [0.25, 0.25]]
    """
    k = (torch.arange(supersample, dtype=torch.float32) + 0.5) / supersample - 0.5
    oy, ox = torch.meshgrid(k, k, indexing="ij")
    return torch.stack([ox.reshape(-1), oy.reshape(-1)], -1)
