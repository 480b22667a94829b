"""Normalized device coordinates (NDC) for forward-facing scenes (NeRF, Mildenhall et al. 2020, App. C).

A forward-facing capture (LLFF) sees content from ``z = near`` to infinity in front of one
*reference* camera. NeRF reconstructs it in the reference camera's NDC space, where the whole
frustum from the near plane to infinity becomes the bounded box ``[-1, 1]^3``; sampling linearly in
NDC depth is sampling linearly in *disparity* in the world.

Conventions (this library is OpenCV throughout, the paper is OpenGL):

* Everything here is in the **reference camera's frame, OpenCV**: ``x`` right, ``y`` down, ``z``
  forward (content at ``z > 0``). The paper's eq. 25 is written for OpenGL (camera looking along
  ``-z``, ``y`` up); substituting ``z -> -z``, ``y -> -y`` gives the projection used here::

      pi(x, y, z) = (a_x x / z + b_x,  a_y y / z + b_y,  1 - 2 n / z)
      a_x = 2 f_x / W,   a_y = 2 f_y / H,   b_x = 2 c_x / W - 1,   b_y = 2 c_y / H - 1

  so NDC keeps the image orientation: ``x_ndc`` runs from -1 (left image edge) to +1 (right),
  ``y_ndc`` from -1 (top) to +1 (bottom), ``z_ndc`` from -1 (the near plane ``z = n``) to +1
  (infinity). With the principal point at the image centre (``c_x = W / 2``, ``c_y = H / 2``, the
  LLFF assumption and the default) ``b = 0`` and ``pi`` is exactly the paper's eq. 25 up to the axis
  flips; an off-centre principal point only shifts ``x_ndc, y_ndc`` by constants (still a
  projective map, so straight lines stay straight).
* Rays (eq. 26): a ray ``o + t d`` is first moved to the near plane, ``o_n = o + t_n d`` with
  ``t_n = (n - o_z) / d_z`` (the paper's "shift to ``z = -n``"), then mapped to
  ``o' = pi(o_n)`` and ``d' = pi(o_n + inf d) - pi(o_n)``::

      o' = (a_x o_x / o_z + b_x,  a_y o_y / o_z + b_y,  1 - 2 n / o_z)       (o = o_n)
      d' = (a_x (d_x / d_z - o_x / o_z),  a_y (d_y / d_z - o_y / o_z),  2 n / o_z)

  As in the paper ``d'`` is *not* unit length: ``o' + s d'`` for ``s in [0, 1]`` runs from the near
  plane (``z_ndc = -1``) to infinity (``z_ndc = +1``); ``o'_z = -1`` and ``d'_z = 2`` for every ray.
  Rays must point away from the reference camera's image plane (``d_z > 0``).
* Depth back to the world: the NDC fraction ``s`` is the world z-depth ``z = n / (1 - s)``
  (:func:`ndc_fraction_to_world_z`), and the world distance from the *original* origin along the
  unit world direction is ``(z - o_z) / d_z`` (:func:`ndc_fraction_to_world_distance`).

:class:`NDCSpace` bundles a reference camera (pose + intrinsics + near plane) and converts
:class:`~langfield.types.Rays` between world and NDC (unit NDC directions, per-ray bounds), so
training, evaluation and rendering share one conversion.

>>> import torch
>>> o, d = torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0]])
>>> o_ndc, d_ndc = ndc_rays(o, d, focal=2.0, width=4, height=4, near=1.0)
>>> o_ndc.tolist(), d_ndc.tolist()  # the central ray: from the near plane (z = -1) to infinity (z = +1)
([[0.0, 0.0, -1.0]], [[0.0, 0.0, 2.0]])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from langfield._checks import InputError
from langfield.types import Rays

__all__ = [
    "MIN_DIRECTION_Z",
    "NDCSpace",
    "ndc_fraction_to_world_distance",
    "ndc_fraction_to_world_z",
    "ndc_points",
    "ndc_rays",
    "ndc_rays_reference",
    "points_from_ndc",
]

Focal = Union[float, Tuple[float, float], Tensor]
#: Smallest accepted ``d_z`` of a unit ray direction in the reference frame (about 89.4 degrees off axis):
#: rays closer to parallel with the image plane have no usable NDC image.
MIN_DIRECTION_Z = 1e-2


def _affine(focal: Focal, width: float, height: float, principal_point, like: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(a_x, a_y, b_x, b_y)`` of the projection (see the module docstring), as tensors broadcasting over ``[*B]``."""
    if not (float(width) > 0 and float(height) > 0):
        raise InputError(f"width and height must be > 0, got width={width}, height={height}")
    f = torch.as_tensor(focal, dtype=like.dtype, device=like.device)
    if f.ndim >= 1 and f.shape[-1] == 2:
        fx, fy = f[..., 0], f[..., 1]
    elif f.ndim == 0 or f.shape[-1] == 1:
        fx = fy = f[..., 0] if f.ndim >= 1 else f
    else:
        raise InputError(f"focal: expected a number, a pair (fx, fy) or a [..., 2] tensor, got shape {tuple(f.shape)}")
    if not bool(torch.all(torch.isfinite(f))) or bool(torch.any(f <= 0)):
        raise InputError("focal: focal lengths must be finite and > 0")
    if principal_point is None:
        cx = torch.as_tensor(0.5 * float(width), dtype=like.dtype, device=like.device)
        cy = torch.as_tensor(0.5 * float(height), dtype=like.dtype, device=like.device)
    else:
        c = torch.as_tensor(principal_point, dtype=like.dtype, device=like.device)
        if c.ndim < 1 or c.shape[-1] != 2:
            raise InputError(f"principal_point: expected a pair (cx, cy) or a [..., 2] tensor, got shape {tuple(c.shape)}")
        cx, cy = c[..., 0], c[..., 1]
    return 2.0 * fx / width, 2.0 * fy / height, 2.0 * cx / width - 1.0, 2.0 * cy / height - 1.0


def _check_near(near: float) -> float:
    if not (isinstance(near, (int, float)) and math.isfinite(near) and near > 0):
        raise InputError(f"near: the near plane z = near must be a finite number > 0, got {near!r}")
    return float(near)


def _check_vectors(name: str, t: Tensor) -> None:
    if not isinstance(t, Tensor) or t.ndim < 1 or t.shape[-1] != 3:
        raise InputError(f"{name}: expected a [*B, 3] tensor, got {getattr(t, 'shape', type(t).__name__)}")


def ndc_points(points: Tensor, focal: Focal, width: float, height: float, near: float, *, principal_point=None) -> Tensor:
    """NDC coordinates ``[*B, 3]`` of reference-frame points ``points [*B, 3]`` (``z > 0``): the projection ``pi``.

    ``z = near`` maps to ``z_ndc = -1``, ``z -> inf`` to ``+1``; ``focal`` is a number, ``(fx, fy)``
    or a ``[*B, 2]`` tensor; ``principal_point`` ``(cx, cy)`` defaults to the image centre.

    >>> import torch
    >>> ndc_points(torch.tensor([[1.0, 0.0, 2.0]]), focal=2.0, width=4, height=4, near=1.0).tolist()
    [[0.5, 0.0, 0.0]]
    """
    _check_vectors("points", points)
    near = _check_near(near)
    ax, ay, bx, by = _affine(focal, width, height, principal_point, points)
    x, y, z = points.unbind(-1)
    return torch.stack([ax * x / z + bx, ay * y / z + by, 1.0 - 2.0 * near / z], dim=-1)


def points_from_ndc(points_ndc: Tensor, focal: Focal, width: float, height: float, near: float, *, principal_point=None) -> Tensor:
    """Inverse of :func:`ndc_points`: reference-frame points ``[*B, 3]`` of NDC points (``z_ndc < 1``).

    >>> import torch
    >>> points_from_ndc(torch.tensor([[0.5, 0.0, 0.0]]), focal=2.0, width=4, height=4, near=1.0).tolist()
    [[1.0, 0.0, 2.0]]
    """
    _check_vectors("points_ndc", points_ndc)
    near = _check_near(near)
    ax, ay, bx, by = _affine(focal, width, height, principal_point, points_ndc)
    xn, yn, zn = points_ndc.unbind(-1)
    z = 2.0 * near / (1.0 - zn)
    return torch.stack([(xn - bx) * z / ax, (yn - by) * z / ay, z], dim=-1)


def ndc_rays(
    origins: Tensor,
    directions: Tensor,
    focal: Focal,
    width: float,
    height: float,
    near: float,
    *,
    principal_point=None,
    check: bool = True,
) -> Tuple[Tensor, Tensor]:
    """NDC rays of reference-frame rays (NeRF App. C, eqs. 25-26, OpenCV axes; see the module docstring).

    Args:
        origins: ``[*B, 3]`` ray origins in the reference camera's frame (OpenCV).
        directions: ``[*B, 3]`` ray directions (any length) with ``d_z > 0``.
        focal: the reference camera's focal length in pixels: a number, ``(fx, fy)`` or a ``[*B, 2]`` tensor.
        width, height: the reference image size in pixels.
        near: the near plane ``z = near > 0``; origins are first moved onto it.
        principal_point: ``(cx, cy)`` in pixels (default: the image centre, ``(W / 2, H / 2)``).
        check: refuse rays with ``d_z <= 0`` (one device sync; callers that validated their
            cameras already, like the training sampler, pass ``False``).

    Returns:
        ``(origins_ndc [*B, 3], directions_ndc [*B, 3])``: ``o' + s d'`` with ``s in [0, 1]`` spans
        the ray from the near plane (``z_ndc = -1``) to infinity (``z_ndc = 1``); ``d'`` is not unit.
        Differentiable in ``origins`` and ``directions``.

    >>> import torch
    >>> o, d = torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, 1.0]])
    >>> o_ndc, d_ndc = ndc_rays(o, d, focal=(2.0, 3.0), width=4, height=4, near=1.0)
    >>> o_ndc.tolist(), d_ndc.tolist()  # from (a_x, 0, -1) on the near plane to (a_x, 0, 1) at infinity
    ([[1.0, 0.0, -1.0]], [[0.0, 0.0, 2.0]])
    """
    _check_vectors("origins", origins)
    _check_vectors("directions", directions)
    near = _check_near(near)
    ax, ay, bx, by = _affine(focal, width, height, principal_point, origins)
    dx, dy, dz = directions.unbind(-1)
    if check and bool(torch.any(dz <= 0)):
        raise InputError(
            "directions: every ray must point forward of the reference camera (d_z > 0 in its OpenCV frame); "
            "NDC covers only the half-space in front of it (is the scene forward-facing?)"
        )
    t_near = (near - origins[..., 2]) / dz  # eq. 26's shift of the origin onto the near plane
    o = origins + t_near[..., None] * directions
    ox, oy, oz = o.unbind(-1)
    o_ndc = torch.stack([ax * ox / oz + bx, ay * oy / oz + by, 1.0 - 2.0 * near / oz], dim=-1)
    d_ndc = torch.stack([ax * (dx / dz - ox / oz), ay * (dy / dz - oy / oz), 2.0 * near / oz], dim=-1)
    return o_ndc, d_ndc


def ndc_rays_reference(
    origins: Tensor,
    directions: Tensor,
    focal: Focal,
    width: float,
    height: float,
    near: float,
    *,
    principal_point=None,
) -> Tuple[Tensor, Tensor]:
    """Slow readable twin of :func:`ndc_rays`: project two points of each ray and take their difference.

    Ray by ray in float64 and through *pixels*: a point is projected to pixel ``(u, v)`` with the
    pinhole model, the pixel is mapped to ``[-1, 1]`` (``2 u / W - 1``), and the depth to
    ``1 - 2 near / z``. The NDC origin is the image of the ray's crossing with the near plane; the
    NDC direction is the difference to the image of a far point (``z = 1e6 near``), stretched along
    the (straight: NDC maps lines to lines) NDC segment until ``z_ndc`` reaches +1 (infinity).
    """
    batch = origins.shape[:-1]
    flat_o = origins.reshape(-1, 3).double()
    flat_d = directions.reshape(-1, 3).double()
    f = torch.as_tensor(focal, dtype=torch.float64)
    f = f.reshape(-1, f.shape[-1]) if f.ndim > 1 else f.reshape(1, -1).expand(flat_o.shape[0], -1)
    if principal_point is None:
        pp = torch.tensor([[0.5 * width, 0.5 * height]], dtype=torch.float64).expand(flat_o.shape[0], 2)
    else:
        pp = torch.as_tensor(principal_point, dtype=torch.float64).reshape(-1, 2).expand(flat_o.shape[0], 2)

    def to_ndc(p: Tensor, fx: Tensor, fy: Tensor, cx: Tensor, cy: Tensor) -> Tensor:
        u = fx * p[0] / p[2] + cx  # pixel coordinates of the point
        v = fy * p[1] / p[2] + cy
        return torch.stack([2.0 * u / width - 1.0, 2.0 * v / height - 1.0, 1.0 - 2.0 * near / p[2]])

    out_o, out_d = [], []
    for i in range(flat_o.shape[0]):
        fx, fy = f[i, 0], f[i, -1]
        cx, cy = pp[i, 0], pp[i, 1]
        o, d = flat_o[i], flat_d[i]
        p_near = o + ((near - o[2]) / d[2]) * d
        p_far = o + ((1e6 * near - o[2]) / d[2]) * d
        q_near, q_far = to_ndc(p_near, fx, fy, cx, cy), to_ndc(p_far, fx, fy, cx, cy)
        scale = (1.0 - q_near[2]) / (q_far[2] - q_near[2])
        out_o.append(q_near)
        out_d.append((q_far - q_near) * scale)
    o_ndc = torch.stack(out_o).reshape(*batch, 3).to(origins.dtype)
    d_ndc = torch.stack(out_d).reshape(*batch, 3).to(origins.dtype)
    return o_ndc, d_ndc


def ndc_fraction_to_world_z(fraction: Tensor, near: float) -> Tensor:
    """Reference-frame z-depth ``near / (1 - s)`` of the NDC ray fraction ``s`` (``s = 0``: near plane, ``1``: infinity).

    ``s`` is the parameter of :func:`ndc_rays`' non-unit ``d'``; it equals ``(z_ndc + 1) / 2``.

    >>> import torch
    >>> ndc_fraction_to_world_z(torch.tensor([0.0, 0.5, 0.75]), near=1.0).tolist()
    [1.0, 2.0, 4.0]
    """
    near = _check_near(near)
    return near / (1.0 - fraction)


def ndc_fraction_to_world_distance(fraction: Tensor, origins: Tensor, directions: Tensor, near: float) -> Tensor:
    """World ray distance ``[*B]`` of the NDC ray fraction ``fraction [*B]``, measured from the *original*
    reference-frame ``origins [*B, 3]`` along unit ``directions [*B, 3]``: ``(near / (1 - s) - o_z) / d_z``.

    ``s = 1`` (infinity) gives ``inf``; clamp ``s`` below 1 first if a finite value is needed.

    >>> import torch
    >>> o, d = torch.tensor([[0.0, 0.0, 0.5]]), torch.tensor([[0.0, 0.6, 0.8]])
    >>> ndc_fraction_to_world_distance(torch.tensor([0.5]), o, d, near=1.0).tolist()  # z = 2: 1.5 / 0.8
    [1.875]
    """
    return (ndc_fraction_to_world_z(fraction, near) - origins[..., 2]) / directions[..., 2]


@dataclass(frozen=True, eq=False)
class NDCSpace:
    """The NDC space of one reference camera: converts world :class:`Rays` to NDC rays and NDC depth back.

    Attributes:
        c2w: ``[3, 4]`` reference camera-to-world (OpenCV) in the dataset's (normalised) world frame.
        focal: ``(fx, fy)`` reference focal lengths in pixels.
        principal_point: ``(cx, cy)`` in pixels.
        width, height: reference image size in pixels.
        near: the near plane ``z = near`` in the reference frame (world units); content in front of
            it is not seen.
        box: ``[2, 3]`` NDC bounds of the content (the methods' scene box), or ``None`` when unknown.

    NDC rays of :meth:`rays` have **unit** directions (the fields' view-direction encodings expect
    unit vectors), so a ray's NDC distance runs from ``near = 0`` (the near plane) to
    ``far = |d'|`` (infinity, ``|d'| >= 2``). The NDC direction at a point determines the world
    direction there (NDC maps lines to lines), so view dependence is expressed as well as in world
    directions. Radii (Mip-NeRF cones) are mapped with the reference scale at the far end: a world
    radius ``r`` per unit distance becomes ``mean(a_x, a_y) r / d_z`` at ``s = 1``, divided by
    ``|d'|`` (per unit NDC distance); for the reference camera's central ray this is Mip-NeRF's
    NDC radius ``(2 / W) (2 / sqrt(12))``.
    """

    c2w: Tensor
    focal: Tuple[float, float]
    principal_point: Tuple[float, float]
    width: int
    height: int
    near: float
    box: Optional[Tensor] = None

    def __post_init__(self) -> None:
        if tuple(self.c2w.shape) != (3, 4):
            raise InputError(f"NDCSpace.c2w must be [3, 4], got {tuple(self.c2w.shape)}")
        _check_near(self.near)
        if len(self.focal) != 2 or min(self.focal) <= 0:
            raise InputError(f"NDCSpace.focal must be (fx, fy) > 0, got {self.focal}")

    def matches(self, other: Optional["NDCSpace"], atol: float = 1e-5) -> bool:
        """Whether ``other`` is the same space (``None`` never is)."""
        if other is None:
            return False
        return (
            torch.allclose(self.c2w.double().cpu(), other.c2w.double().cpu(), atol=atol)
            and all(abs(a - b) <= atol * max(1.0, abs(a)) for a, b in zip(self.focal, other.focal))
            and all(abs(a - b) <= atol * max(1.0, abs(a)) for a, b in zip(self.principal_point, other.principal_point))
            and (self.width, self.height) == (other.width, other.height)
            and abs(self.near - other.near) <= atol * max(1.0, self.near)
        )

    def to_reference(self, origins: Tensor, directions: Tensor) -> Tuple[Tensor, Tensor]:
        """World origins/directions ``[*B, 3]`` in the reference camera's frame."""
        R = self.c2w[:, :3].to(origins)
        c = self.c2w[:, 3].to(origins)
        return (origins - c) @ R, directions @ R

    def project_rays(self, o: Tensor, d: Tensor, *, check: bool = True) -> Tuple[Tensor, Tensor]:
        """:func:`ndc_rays` of *reference-frame* rays ``o, d [*B, 3]``: ``(o', d')`` with non-unit ``d'``."""
        return ndc_rays(o, d, self.focal, self.width, self.height, self.near, principal_point=self.principal_point, check=check)

    def points(self, points: Tensor) -> Tensor:
        """NDC coordinates ``[*B, 3]`` of world points ``[*B, 3]`` (in front of the near plane)."""
        R = self.c2w[:, :3].to(points)
        p = (points - self.c2w[:, 3].to(points)) @ R
        return ndc_points(p, self.focal, self.width, self.height, self.near, principal_point=self.principal_point)

    def world_points(self, points_ndc: Tensor) -> Tensor:
        """World points ``[*B, 3]`` of NDC points (inverse of :meth:`points`)."""
        p = points_from_ndc(points_ndc, self.focal, self.width, self.height, self.near, principal_point=self.principal_point)
        return p @ self.c2w[:, :3].to(p).T + self.c2w[:, 3].to(p)

    def rays(self, rays: Rays, *, check: bool = True) -> Rays:
        """NDC rays (unit directions, ``near = 0``, ``far = |d'|``, mapped radii) of world ``rays``.

        The world ``near``/``far`` of ``rays`` are dropped: an NDC ray always spans the near plane
        to infinity. Raises :class:`InputError` for rays that do not point forward of the reference.
        """
        o, d = self.to_reference(rays.origins, rays.directions)
        o_ndc, d_ndc = self.project_rays(o, d, check=check)
        length = d_ndc.norm(dim=-1, keepdim=True)
        a_mean = self.focal[0] / self.width + self.focal[1] / self.height  # mean(a_x, a_y)
        radii = rays.radii * a_mean / (d[..., 2:3] * d.norm(dim=-1, keepdim=True)) / length
        return replace(
            rays,
            origins=o_ndc,
            directions=d_ndc / length,
            radii=radii,
            near=torch.zeros_like(length),
            far=length,
        )

    def world_distance(self, ndc_distance: Tensor, world_rays: Rays, max_fraction: float = 1.0 - 1e-6) -> Tensor:
        """World ray distances ``[*B, 1]`` of NDC distances ``[*B, 1]`` along the NDC rays of ``world_rays``.

        ``ndc_distance`` is a distance along the unit NDC direction (e.g. a rendered NDC depth); it
        is turned into the fraction ``s = t / |d'|`` (clamped to ``[0, max_fraction]``, so a ray
        that sees nothing gets a large finite depth) and then into the world distance from the
        world ray's origin (:func:`ndc_fraction_to_world_distance`).
        """
        o, d = self.to_reference(world_rays.origins, world_rays.directions)
        _, d_ndc = self.project_rays(o, d, check=False)
        s = (ndc_distance / d_ndc.norm(dim=-1, keepdim=True)).clamp(0.0, max_fraction)
        unit = d / d.norm(dim=-1, keepdim=True)
        return ndc_fraction_to_world_distance(s[..., 0], o, unit, self.near)[..., None]

    def world_normals(self, normals_ndc: Tensor, world_rays: Rays, world_distance: Tensor) -> Tensor:
        """World unit normals ``[*B, 3]`` of NDC normals ``[*B, 3]`` at the points ``world_distance [*B, 1]``
        along ``world_rays``.

        A normal is a density gradient, so it maps with the transposed Jacobian of the projection
        ``pi`` at the point (reference frame ``(x, y, z)``)::

            g_x = a_x n_x / z,   g_y = a_y n_y / z,   g_z = -(a_x x n_x + a_y y n_y) / z^2 + 2 near n_z / z^2

        then normalised and rotated to the world. Zero normals (rays that hit nothing) stay zero.
        """
        o, d = self.to_reference(world_rays.origins, world_rays.directions)
        p = o + world_distance * d
        x, y, z = p.unbind(-1)
        ax, ay, _, _ = _affine(self.focal, self.width, self.height, self.principal_point, p)
        nx, ny, nz = normals_ndc.to(p).unbind(-1)
        g = torch.stack([ax * nx / z, ay * ny / z, (-(ax * x * nx + ay * y * ny) + 2.0 * self.near * nz) / (z * z)], -1)
        norm = g.norm(dim=-1, keepdim=True)
        g = torch.where(norm > 0, g / norm.clamp_min(1e-30), torch.zeros_like(g))
        return g @ self.c2w[:, :3].to(p).T

