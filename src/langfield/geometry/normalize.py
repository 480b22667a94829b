"""Scene normalisation: similarity transforms that bring a capture into a canonical box.

A normalising transform is a ``[4, 4]`` similarity ``T = [s R | t]`` (uniform scale ``s > 0``,
rotation ``R``, translation ``t``) acting on homogeneous world points: ``x_norm = T @ x_orig``.
It is what :class:`langfield.data.dataset.SceneDataset` keeps as ``world_transform`` so that
results can be exported back to the capture's original frame with ``torch.linalg.inv(T)``.

Poses are OpenCV camera-to-world ``[C, 3, 4]`` (x right, y down, z forward). A similarity moves
the camera centre like any point and rotates the camera axes by ``R``; the scale is *not* baked
into the rotation block, so transformed poses stay rigid (orthonormal, det +1) and projections of
transformed points through transformed cameras land on the same pixels.

When ``align_up=True`` the world is rotated so that the mean camera "up" direction (``-y`` of the
OpenCV camera, i.e. ``-c2w[:, :3, 1]``) becomes world ``+z`` (the Blender / NeRF-synthetic
convention).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

NORMALIZE_METHODS = ("cameras", "focus", "points", "none")


def _check_poses(c2w: Tensor, name: str = "c2w") -> None:
    if not isinstance(c2w, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(c2w).__name__}")
    if c2w.ndim != 3 or tuple(c2w.shape[1:]) not in ((3, 4), (4, 4)):
        raise ValueError(f"{name} must be [C, 3, 4] or [C, 4, 4], got {tuple(c2w.shape)}")
    if c2w.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one camera")


def _check_transform(T: Tensor) -> None:
    if not isinstance(T, Tensor) or tuple(T.shape) != (4, 4):
        shape = tuple(T.shape) if isinstance(T, Tensor) else type(T).__name__
        raise ValueError(f"transform T must be a [4, 4] tensor, got {shape}")


def similarity_scale(T: Tensor) -> Tensor:
    """Uniform scale ``s`` of a similarity ``T [4, 4]`` (cube root of ``det`` of its 3x3 block).

    Example:
        >>> from langfield.geometry.normalize import make_similarity, similarity_scale
        >>> similarity_scale(make_similarity(scale=2.5)).item()
        2.5
    """
    _check_transform(T)
    det = torch.linalg.det(T[:3, :3].double())
    if not bool(det > 0):
        raise ValueError(f"transform T must have a positive-determinant 3x3 block, got det={float(det):.3g}")
    return det.pow(1.0 / 3.0).to(T.dtype)


def make_similarity(scale: float = 1.0, rotation: Optional[Tensor] = None, center: Optional[Tensor] = None) -> Tensor:
    """``[4, 4]`` float64 similarity ``x -> scale * rotation @ (x - center)``.

    Args:
        scale: uniform scale ``> 0``.
        rotation: ``[3, 3]`` rotation (identity when ``None``).
        center: ``[3]`` point mapped to the origin (origin when ``None``).

    Example:
        ``x -> 2 (x - c)`` with ``c = (1, 1, 1)``:

        >>> import torch
        >>> from langfield.geometry.normalize import apply_transform_to_points, make_similarity
        >>> T = make_similarity(2.0, center=torch.tensor([1.0, 1.0, 1.0]))
        >>> apply_transform_to_points(T, torch.tensor([[1.0, 1.0, 1.0], [2.0, 1.0, 1.0]])).tolist()
        [[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]
    """
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    R = torch.eye(3, dtype=torch.float64) if rotation is None else rotation.double()
    c = torch.zeros(3, dtype=torch.float64) if center is None else center.double().reshape(3)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = scale * R
    T[:3, 3] = -scale * (R @ c)
    return T


def apply_transform_to_points(T: Tensor, pts: Tensor) -> Tensor:
    """Map points ``pts [*B, 3]`` by the ``[4, 4]`` transform ``T``: ``T[:3, :3] @ p + T[:3, 3]``.

    Example:
        >>> import torch
        >>> from langfield.geometry.normalize import apply_transform_to_points
        >>> T = torch.eye(4)
        >>> T[:3, 3] = torch.tensor([1.0, 0.0, -1.0])  # a translation
        >>> apply_transform_to_points(T, torch.tensor([[1.0, 2.0, 3.0]])).tolist()
        [[2.0, 2.0, 2.0]]
    """
    _check_transform(T)
    if not isinstance(pts, Tensor) or pts.shape[-1] != 3:
        shape = tuple(pts.shape) if isinstance(pts, Tensor) else type(pts).__name__
        raise ValueError(f"points must be [*B, 3], got {shape}")
    T = T.to(device=pts.device, dtype=pts.dtype if pts.is_floating_point() else torch.float32)
    return pts.to(T.dtype) @ T[:3, :3].T + T[:3, 3]


def transform_poses(T: Tensor, c2w: Tensor) -> Tensor:
    """Move OpenCV camera-to-world poses ``c2w [C, 3|4, 4]`` by the similarity ``T [4, 4]``.

    Camera centres map like points; rotations become ``R_T @ R_c`` with the scale removed so the
    result stays orthonormal. Returns ``[C, 3, 4]`` in ``c2w``'s dtype.

    Example:
        Scaling by 2 about ``(1, 0, 0)`` moves a camera at ``(2, 0, 0)`` to ``(2, 0, 0)`` in the new
        frame and keeps its rotation rigid (the scale is not baked in):

        >>> import torch
        >>> from langfield.geometry.normalize import make_similarity, transform_poses
        >>> c2w = torch.eye(4)[:3][None].clone()
        >>> c2w[0, 0, 3] = 2.0
        >>> out = transform_poses(make_similarity(2.0, center=torch.tensor([1.0, 0.0, 0.0])), c2w)
        >>> out[0, :, 3].tolist(), torch.equal(out[0, :, :3], torch.eye(3))
        ([2.0, 0.0, 0.0], True)
    """
    _check_poses(c2w)
    s = similarity_scale(T).double().to(c2w.device)
    Td = T.double().to(c2w.device)
    R_T = Td[:3, :3] / s
    R = R_T @ c2w[:, :3, :3].double()
    t = c2w[:, :3, 3].double() @ Td[:3, :3].T + Td[:3, 3]
    return torch.cat([R, t[:, :, None]], dim=-1).to(c2w.dtype)


def _rotation_between(a: Tensor, b: Tensor) -> Tensor:
    """``[3, 3]`` float64 rotation taking unit vector ``a`` onto unit vector ``b`` (Rodrigues)."""
    a = a.double() / a.double().norm()
    b = b.double() / b.double().norm()
    v = torch.linalg.cross(a, b)
    c = float(a @ b)
    if c < -1.0 + 1e-9:
        # Opposite vectors: rotate by pi about any axis perpendicular to a.
        axis = torch.linalg.cross(a, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
        if axis.norm() < 1e-6:
            axis = torch.linalg.cross(a, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
        axis = axis / axis.norm()
        return 2.0 * torch.outer(axis, axis) - torch.eye(3, dtype=torch.float64)
    vx = torch.tensor([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + vx + vx @ vx / (1.0 + c)


def average_pose(c2w: Tensor) -> Tensor:
    """``[3, 4]`` float64 mean OpenCV pose: mean centre, mean forward (``+z``) and down (``+y``) axes.

    This is NeRF's ``poses_avg`` written for OpenCV axes; used to recentre forward-facing captures.

    Example:
        >>> import torch
        >>> from langfield.geometry.normalize import average_pose
        >>> c2w = torch.eye(4)[:3].repeat(2, 1, 1)
        >>> c2w[:, 0, 3] = torch.tensor([-1.0, 3.0])  # two forward-facing cameras on the x axis
        >>> avg = average_pose(c2w)
        >>> avg[:, 3].tolist(), torch.equal(avg[:, :3], torch.eye(3, dtype=torch.float64))
        ([1.0, 0.0, 0.0], True)
    """
    _check_poses(c2w)
    c2w = c2w.double()
    center = c2w[:, :3, 3].mean(0)
    forward = c2w[:, :3, 2].sum(0)
    down = c2w[:, :3, 1].sum(0)
    if forward.norm() < 1e-9:
        raise ValueError("average_pose: camera forward axes cancel out; cannot define an average pose")
    z = forward / forward.norm()
    x = torch.linalg.cross(down, z)
    if x.norm() < 1e-9:
        raise ValueError("average_pose: mean down axis is parallel to mean forward axis")
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    return torch.stack([x, y, z, center], dim=-1)


def focus_point(c2w: Tensor) -> Tensor:
    """``[3]`` float64 point closest (least squares) to all cameras' optical axes (``+z`` rays).

    Falls back to the mean camera centre when the axes are (nearly) parallel, e.g. a
    forward-facing capture, where the least-squares system is ill-conditioned.

    Example:
        Three cameras around ``(0, 0, 1)`` looking at it:

        >>> import torch
        >>> from langfield.geometry.normalize import focus_point
        >>> from langfield.geometry.rotations import look_at
        >>> eyes = torch.tensor([[2.0, 0.0, 1.0], [-2.0, 0.0, 1.5], [0.0, 2.0, 0.5]])
        >>> c2w = look_at(eyes, torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, 1.0]))
        >>> [round(v, 4) + 0.0 for v in focus_point(c2w).tolist()]
        [0.0, 0.0, 1.0]
    """
    _check_poses(c2w)
    c2w = c2w.double()
    o = c2w[:, :3, 3]
    d = c2w[:, :3, 2] / c2w[:, :3, 2].norm(dim=-1, keepdim=True)
    proj = torch.eye(3, dtype=torch.float64) - d[:, :, None] * d[:, None, :]  # [C, 3, 3]
    A = proj.sum(0)
    b = (proj @ o[:, :, None]).sum(0)[:, 0]
    evals = torch.linalg.eigvalsh(A)
    if float(evals[0]) < 1e-3 * max(float(evals[-1]), 1e-12) or c2w.shape[0] < 2:
        return o.mean(0)
    return torch.linalg.solve(A, b)


def normalize_poses(
    c2w: Tensor,
    points: Optional[Tensor] = None,
    method: str = "cameras",
    target_radius: float = 1.0,
    align_up: bool = False,
) -> Tuple[Tensor, Tensor]:
    """Normalise a capture so it fits the box ``[-target_radius, target_radius]^3``.

    Args:
        c2w: ``[C, 3, 4]`` (or ``[C, 4, 4]``) OpenCV camera-to-world poses.
        points: ``[N, 3]`` sparse scene points (required for ``method="points"`` only).
        method: where the origin goes and what sets the scale:

            * ``"cameras"``: origin at the mean camera centre; camera centres within ``target_radius``.
            * ``"focus"``: origin at :func:`focus_point` (where the cameras look, good for
              inward-facing captures); camera centres within ``target_radius``.
            * ``"points"``: origin at the per-axis median of ``points``; the 1st-99th percentile
              extent of the points fits the box.
            * ``"none"``: identity.
        target_radius: half-size of the target box (> 0).
        align_up: also rotate the mean camera up vector (``-c2w[:, :3, 1]``) onto world ``+z``.

    Returns:
        ``(c2w_norm [C, 3, 4], T [4, 4])`` with ``x_norm = T @ x_orig``, both in ``c2w``'s dtype.

    Example:
        Two cameras 4 apart: the origin moves to their mean and the scale 1/2 puts them on the unit sphere:

        >>> import torch
        >>> from langfield.geometry.normalize import normalize_poses
        >>> c2w = torch.eye(4)[:3].repeat(2, 1, 1)
        >>> c2w[1, 0, 3] = 4.0
        >>> c2w_norm, T = normalize_poses(c2w, method="cameras", target_radius=1.0)
        >>> c2w_norm[:, :, 3].tolist(), T[0, 0].item()
        ([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], 0.5)
    """
    _check_poses(c2w)
    if method not in NORMALIZE_METHODS:
        raise ValueError(f"normalize method must be one of {NORMALIZE_METHODS}, got {method!r}")
    if not target_radius > 0:
        raise ValueError(f"target_radius must be > 0, got {target_radius}")
    if not bool(torch.isfinite(c2w).all()):
        raise ValueError("c2w contains non-finite values")
    if method == "none":
        T = torch.eye(4, dtype=c2w.dtype, device=c2w.device)
        return c2w[:, :3, :4].clone(), T

    poses = c2w[:, :3, :4].double().cpu()
    centers = poses[:, :, 3]
    R = torch.eye(3, dtype=torch.float64)
    if align_up:
        up = -poses[:, :, 1].sum(0)
        if up.norm() < 1e-9:
            raise ValueError("align_up: camera up vectors cancel out; cannot define an up direction")
        R = _rotation_between(up, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))

    if method == "points":
        if points is None or not isinstance(points, Tensor) or points.ndim != 2 or points.shape[-1] != 3:
            raise ValueError("normalize method 'points' needs points as an [N, 3] tensor")
        if points.shape[0] == 0:
            raise ValueError("normalize method 'points' needs at least one point")
        pts = points.double().cpu()
        center = pts.median(dim=0).values
        local = (pts - center) @ R.T
        lo = torch.quantile(local, 0.01, dim=0)
        hi = torch.quantile(local, 0.99, dim=0)
        extent = torch.maximum(lo.abs(), hi.abs()).max()
    else:
        center = centers.mean(0) if method == "cameras" else focus_point(poses)
        extent = (centers - center).norm(dim=-1).max()
    extent = float(extent)
    scale = target_radius / extent if extent > 1e-12 else 1.0
    T = make_similarity(scale, R, center)
    out = transform_poses(T, poses)
    return out.to(dtype=c2w.dtype, device=c2w.device), T.to(dtype=c2w.dtype, device=c2w.device)
