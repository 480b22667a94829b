"""Rotations: unit quaternions, rotation matrices, axis-angle and ``look_at``.

Conventions (see ``docs/conventions.md``):

* Quaternions are stored **scalar first, ``(w, x, y, z)``**, the order of the Gaussian
  splatting PLY (``rot_0..rot_3`` = ``w, x, y, z``), gsplat and pytorch3d. A unit quaternion
  ``q`` acts on vectors as ``v' = q v q*`` (Hamilton product), so
  ``quaternion_to_matrix(quaternion_multiply(a, b)) == quaternion_to_matrix(a) @ quaternion_to_matrix(b)``.
* ``q`` and ``-q`` are the same rotation; :func:`matrix_to_quaternion` returns the one with
  ``w >= 0``.
* Rotation matrices act on column vectors (``v' = R @ v``).
* :func:`look_at` builds **OpenCV** camera-to-world poses (x right, y down, z forward).

Formulas: quaternion <-> matrix and the Hamilton product follow Shoemake, "Animating rotation
with quaternion curves", SIGGRAPH 1985; the robust matrix -> quaternion branch selection is
Shepperd, "Quaternion from rotation matrix", J. Guidance and Control 1(3), 1978; Rodrigues'
formula for axis-angle; slerp is Shoemake 1985, Sec. 3.3.
"""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor

__all__ = [
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "quaternion_multiply",
    "quaternion_conjugate",
    "normalize_quaternion",
    "slerp",
    "axis_angle_to_matrix",
    "look_at",
]


def _check_last(t: Tensor, size: int, name: str) -> None:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim < 1 or t.shape[-1] != size:
        raise ValueError(f"{name} must have shape [..., {size}], got {tuple(t.shape)}")


def normalize_quaternion(q: Tensor, eps: float = 1e-12) -> Tensor:
    """Scale quaternions ``[*B, 4]`` to unit length (``(w, x, y, z)``; zero stays near zero).

    Example:
        >>> import torch
        >>> from langfield.geometry.rotations import normalize_quaternion
        >>> [round(v, 4) for v in normalize_quaternion(torch.tensor([0.0, 0.0, 3.0, 4.0])).tolist()]
        [0.0, 0.0, 0.6, 0.8]
    """
    _check_last(q, 4, "q")
    return q / q.norm(dim=-1, keepdim=True).clamp_min(eps)


def quaternion_conjugate(q: Tensor) -> Tensor:
    """Conjugate ``(w, -x, -y, -z)`` of ``q [*B, 4]``; the inverse rotation for unit ``q``.

    Example:
        >>> import torch
        >>> from langfield.geometry.rotations import quaternion_conjugate
        >>> quaternion_conjugate(torch.tensor([1.0, 2.0, 3.0, 4.0])).tolist()
        [1.0, -2.0, -3.0, -4.0]
    """
    _check_last(q, 4, "q")
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """Rotation matrices ``[*B, 3, 3]`` from quaternions ``q [*B, 4]`` in ``(w, x, y, z)`` order.

    ``q`` need not be unit length; it is normalised first (as 3DGS' ``build_rotation`` does).

    Example:
        A quarter turn about ``z`` (``w = cos 45, z = sin 45``) takes ``+x`` to ``+y``:

        >>> import math, torch
        >>> from langfield.geometry.rotations import quaternion_to_matrix
        >>> R = quaternion_to_matrix(torch.tensor([math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)]))
        >>> [round(v, 4) + 0.0 for v in (R @ torch.tensor([1.0, 0.0, 0.0])).tolist()]  # + 0.0: no "-0.0"
        [0.0, 1.0, 0.0]
    """
    _check_last(q, 4, "q")
    w, x, y, z = normalize_quaternion(q).unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    rows = [
        1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
        2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
        2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quaternion(R: Tensor) -> Tensor:
    """Unit quaternions ``[*B, 4]`` ``(w, x, y, z)`` with ``w >= 0`` from rotations ``R [*B, 3, 3]``.

    Shepperd's method: of the four algebraically equivalent formulas, each one dividing by
    ``4 |q_i|`` for one component ``i``, use the one whose ``|q_i|`` is largest (always
    ``>= 1/2``), so the result is accurate for every rotation, including 180 degree turns.
    The result is renormalised, so slightly non-orthonormal input is tolerated.

    Example:
        A half turn about ``x`` (where naive formulas divide by ``w = 0``):

        >>> import torch
        >>> from langfield.geometry.rotations import matrix_to_quaternion
        >>> matrix_to_quaternion(torch.diag(torch.tensor([1.0, -1.0, -1.0]))).tolist()
        [0.0, 1.0, 0.0, 0.0]
    """
    if not isinstance(R, Tensor) or R.ndim < 2 or tuple(R.shape[-2:]) != (3, 3):
        raise ValueError(f"R must have shape [..., 3, 3], got {tuple(getattr(R, 'shape', ()))}")
    m = R.unbind(-1)
    m00, m10, m20 = m[0].unbind(-1)
    m01, m11, m21 = m[1].unbind(-1)
    m02, m12, m22 = m[2].unbind(-1)
    # 4 q_i^2 for i = w, x, y, z (Shepperd 1978, eq. 3); they sum to 4, so the largest is >= 1.
    t = torch.stack(
        [
            1.0 + m00 + m11 + m22,
            1.0 + m00 - m11 - m22,
            1.0 - m00 + m11 - m22,
            1.0 - m00 - m11 + m22,
        ],
        dim=-1,
    )
    # Row i holds 4 q_i * q (with 4 q_i^2 = t_i on the diagonal).
    cand = torch.stack(
        [
            torch.stack([t[..., 0], m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, t[..., 1], m01 + m10, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m01 + m10, t[..., 2], m12 + m21], dim=-1),
            torch.stack([m10 - m01, m02 + m20, m12 + m21, t[..., 3]], dim=-1),
        ],
        dim=-2,
    )
    # Clamp keeps the unused rows finite (and their gradients zero, not NaN); the selected row
    # always has t_i >= 1 so it is unaffected.
    cand = cand / (2.0 * t.clamp_min(0.1).sqrt())[..., None]
    best = t.argmax(dim=-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = normalize_quaternion(q)
    return torch.where(q[..., :1] < 0, -q, q)


def quaternion_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a * b`` of ``(w, x, y, z)`` quaternions ``[*B, 4]`` (broadcast).

    The rotation of the product applies ``b`` first, then ``a``.

    Example:
        Two quarter turns about ``z`` make a half turn:

        >>> import math, torch
        >>> from langfield.geometry.rotations import quaternion_multiply
        >>> quarter = torch.tensor([math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)])
        >>> [round(v, 4) for v in quaternion_multiply(quarter, quarter).tolist()]
        [0.0, 0.0, 0.0, 1.0]
    """
    _check_last(a, 4, "a")
    _check_last(b, 4, "b")
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def slerp(q0: Tensor, q1: Tensor, t: Union[float, Tensor], shortest_path: bool = True) -> Tensor:
    """Spherical linear interpolation between unit quaternions (Shoemake 1985).

    Args:
        q0, q1: ``[*B, 4]`` quaternions ``(w, x, y, z)`` (normalised here), broadcastable.
        t: float or tensor broadcastable to ``[*B]``; ``0`` gives ``q0``, ``1`` gives ``q1``
            (up to sign when ``shortest_path`` flips ``q1``). Values outside ``[0, 1]`` extrapolate.
        shortest_path: negate ``q1`` when ``q0 . q1 < 0`` so the rotation takes the short arc.

    Returns:
        ``[*B, 4]`` unit quaternions, rotating at constant angular speed in ``t``.

    Example:
        Halfway from the identity to a quarter turn about ``z`` is an eighth of a turn
        (``cos 22.5 = 0.9239``, ``sin 22.5 = 0.3827``):

        >>> import math, torch
        >>> from langfield.geometry.rotations import slerp
        >>> identity = torch.tensor([1.0, 0.0, 0.0, 0.0])
        >>> quarter = torch.tensor([math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)])
        >>> [round(v, 4) for v in slerp(identity, quarter, 0.5).tolist()]
        [0.9239, 0.0, 0.0, 0.3827]
    """
    _check_last(q0, 4, "q0")
    _check_last(q1, 4, "q1")
    q0 = normalize_quaternion(q0)
    q1 = normalize_quaternion(q1)
    t = torch.as_tensor(t, dtype=q0.dtype, device=q0.device)[..., None]
    dot = (q0 * q1).sum(-1, keepdim=True)
    if shortest_path:
        q1 = torch.where(dot < 0, -q1, q1)
        dot = dot.abs()
    dot = dot.clamp(-1.0, 1.0)
    theta = torch.arccos(dot)
    sin_theta = torch.sin(theta)
    # Nearly parallel: sin(theta) -> 0; fall back to normalised linear interpolation.
    near = sin_theta < 1e-6
    safe_sin = torch.where(near, torch.ones_like(sin_theta), sin_theta)
    w0 = torch.where(near, 1.0 - t, torch.sin((1.0 - t) * theta) / safe_sin)
    w1 = torch.where(near, t, torch.sin(t * theta) / safe_sin)
    return normalize_quaternion(w0 * q0 + w1 * q1)


def _skew(v: Tensor) -> Tensor:
    """``[*B, 3] -> [*B, 3, 3]`` cross-product matrix ``[v]x`` with ``[v]x u = v x u``."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*v.shape[:-1], 3, 3)


def axis_angle_to_matrix(axis_angle: Tensor) -> Tensor:
    """Rotation matrices ``[*B, 3, 3]`` from rotation vectors ``[*B, 3]`` (unit axis * angle, radians).

    Rodrigues' formula ``R = I + sin(a)/a [v]x + (1 - cos a)/a^2 [v]x^2`` with ``a = |v|``; Taylor
    expansions near ``a = 0`` keep values and gradients finite. A positive angle turns
    counter-clockwise when looking down the axis (right-hand rule).

    Example:
        >>> import math, torch
        >>> from langfield.geometry.rotations import axis_angle_to_matrix
        >>> R = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2]))  # a quarter turn about +z
        >>> [round(v, 4) + 0.0 for v in (R @ torch.tensor([1.0, 0.0, 0.0])).tolist()]  # + 0.0: no "-0.0"
        [0.0, 1.0, 0.0]
    """
    _check_last(axis_angle, 3, "axis_angle")
    a2 = (axis_angle * axis_angle).sum(-1)
    small = a2 < 1e-8
    a2_safe = torch.where(small, torch.ones_like(a2), a2)
    a = a2_safe.sqrt()
    c1 = torch.where(small, 1.0 - a2 / 6.0, torch.sin(a) / a)
    c2 = torch.where(small, 0.5 - a2 / 24.0, (1.0 - torch.cos(a)) / a2_safe)
    K = _skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + c1[..., None, None] * K + c2[..., None, None] * (K @ K)


def _frame_opencv(forward: Tensor, up: Tensor, eye: Tensor, what: str) -> Tensor:
    """OpenCV ``c2w [*B, 3, 4]`` with z along ``forward`` and ``up`` mapping to image -y."""
    eps = 1e-9
    fnorm = forward.norm(dim=-1, keepdim=True)
    if bool(torch.any(fnorm < eps)):
        raise ValueError(f"{what}: viewing direction has zero length (eye == target?)")
    z = forward / fnorm
    x = torch.linalg.cross(z, up)
    xnorm = x.norm(dim=-1, keepdim=True)
    if bool(torch.any(xnorm < 1e-6 * up.norm(dim=-1, keepdim=True).clamp_min(eps))):
        raise ValueError(f"{what}: `up` is zero or parallel to the viewing direction")
    x = x / xnorm
    y = torch.linalg.cross(z, x)  # right-handed: x cross y = z, so y = z cross x (image down)
    return torch.stack([x, y, z, eye], dim=-1)


def look_at(eye: Tensor, target: Tensor, up: Tensor) -> Tensor:
    """OpenCV camera-to-world poses ``[*B, 3, 4]`` at ``eye`` looking at ``target``.

    Args:
        eye: ``[*B, 3]`` camera centres (world).
        target: ``[*B, 3]`` points to look at; they land on the camera's +z (optical) axis.
        up: ``[*B, 3]`` world "up" (need not be unit or orthogonal to the view direction); it
            appears as image up, i.e. the camera's **-y** direction (OpenCV y points down).

    All three broadcast against each other. Columns of the rotation are
    ``x = normalize(forward x up)`` (right), ``y = forward x x`` (down), ``z = forward``.

    Raises:
        ValueError: if ``eye == target`` or ``up`` is parallel to ``target - eye``.

    Example:
        A camera at ``(0, 0, -2)`` looking at the origin with world up ``+y``: its optical axis
        (``z``) is world ``+z`` and its ``y`` axis (image down) is world ``-y``:

        >>> import torch
        >>> from langfield.geometry.rotations import look_at
        >>> c2w = look_at(torch.tensor([0.0, 0.0, -2.0]), torch.zeros(3), torch.tensor([0.0, 1.0, 0.0]))
        >>> c2w[:, 2].tolist(), c2w[:, 1].tolist(), c2w[:, 3].tolist()
        ([0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [0.0, 0.0, -2.0])
    """
    _check_last(eye, 3, "eye")
    _check_last(target, 3, "target")
    _check_last(up, 3, "up")
    dtype = torch.promote_types(torch.promote_types(eye.dtype, target.dtype), up.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    eye, target, up = torch.broadcast_tensors(eye.to(dtype), target.to(dtype), up.to(dtype))
    return _frame_opencv(target - eye, up, eye, "look_at")
