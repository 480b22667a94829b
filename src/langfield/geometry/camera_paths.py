"""Camera paths for rendering videos: orbit, LLFF spiral, keyframe spline, average pose.

Every pose taken and returned here is an **OpenCV camera-to-world** ``[*, 3, 4]``
(x right, y down, z forward), see ``docs/conventions.md``. Paths are plain tensors; turn
them into :class:`~langfield.types.Cameras` with :func:`path_cameras`.
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch
from torch import Tensor

# One implementation of NeRF's ``poses_avg`` (OpenCV axes, float64 result), shared with the
# LLFF recentring; re-exported here because render paths are built around it.
from langfield.geometry.normalize import average_pose
from langfield.geometry.rotations import (
    look_at,
    matrix_to_quaternion,
    normalize_quaternion,
    quaternion_conjugate,
    quaternion_multiply,
    quaternion_to_matrix,
    slerp,
)
from langfield.types import Cameras

__all__ = ["average_pose", "orbit_path", "spiral_path", "interpolate_path", "path_cameras"]

Vec3 = Union[Tensor, Sequence[float]]


def _check_poses(c2w: Tensor, name: str) -> None:
    if not isinstance(c2w, Tensor) or c2w.ndim != 3 or tuple(c2w.shape[1:]) != (3, 4):
        raise ValueError(f"{name} must be a [N, 3, 4] tensor, got {tuple(getattr(c2w, 'shape', ()))}")
    if c2w.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if not bool(torch.isfinite(c2w).all()):
        raise ValueError(f"{name} contains NaN or inf")


def _check_num_frames(num_frames: int) -> None:
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")


def _vec3(v: Vec3, name: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    t = torch.as_tensor(v, dtype=dtype, device=device)
    if tuple(t.shape) != (3,):
        raise ValueError(f"{name} must have shape [3], got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    return t


def orbit_path(
    center: Vec3,
    radius: float,
    elevation_deg: float,
    num_frames: int,
    up: Vec3 = (0.0, 0.0, 1.0),
    start_azimuth_deg: float = 0.0,
) -> Tensor:
    """A full circle of ``num_frames`` cameras ``[F, 3, 4]`` looking at ``center``.

    Args:
        center: ``[3]`` world point every frame looks at (it lies on each frame's +z axis).
        radius: distance from ``center`` to every camera centre (> 0).
        elevation_deg: angle of the cameras above the plane through ``center`` orthogonal to
            ``up``, in (-90, 90) degrees.
        num_frames: number of frames; they are spaced by ``360 / F`` degrees of azimuth and the
            last frame does not repeat the first, so the path loops seamlessly.
        up: ``[3]`` world up (default +z, Blender's). It is image-up in every frame.
        start_azimuth_deg: azimuth of frame 0. Azimuth 0 is the world +x axis projected onto
            the plane orthogonal to ``up`` (+y if ``up`` is along x); it grows counter-clockwise
            seen from above (right-handed about ``up``).

    Example:
        Four frames around the origin at radius 2 (up ``+z``): frame 0 sits on ``+x`` and looks back
        along ``-x``, frame 1 is a quarter turn further, on ``+y``:

        >>> from langfield.geometry.camera_paths import orbit_path
        >>> path = orbit_path(center=(0.0, 0.0, 0.0), radius=2.0, elevation_deg=0.0, num_frames=4)
        >>> tuple(path.shape)
        (4, 3, 4)
        >>> [[round(v, 4) + 0.0 for v in path[f, :, 3].tolist()] for f in (0, 1)]  # camera centres
        [[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]
        >>> [round(v, 4) + 0.0 for v in path[0, :, 2].tolist()]  # frame 0's optical axis
        [-1.0, 0.0, 0.0]
    """
    _check_num_frames(num_frames)
    if not radius > 0 or not math.isfinite(radius):
        raise ValueError(f"radius must be finite and > 0, got {radius}")
    if not -90.0 < elevation_deg < 90.0:
        raise ValueError(f"elevation_deg must be in (-90, 90), got {elevation_deg}")
    dtype = center.dtype if isinstance(center, Tensor) and center.is_floating_point() else torch.float32
    device = center.device if isinstance(center, Tensor) else torch.device("cpu")
    c = _vec3(center, "center", dtype, device)
    u = _vec3(up, "up", torch.float64, device)
    if float(u.norm()) < 1e-12:
        raise ValueError("up must be non-zero")
    u = u / u.norm()
    ref = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64, device=device)
    if abs(float(u @ ref)) > 0.99:
        ref = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64, device=device)
    e1 = ref - (ref @ u) * u
    e1 = e1 / e1.norm()
    e2 = torch.linalg.cross(u, e1)
    az = torch.deg2rad(
        start_azimuth_deg + 360.0 * torch.arange(num_frames, dtype=torch.float64, device=device) / num_frames
    )
    el = math.radians(elevation_deg)
    offs = math.cos(el) * (torch.cos(az)[:, None] * e1 + torch.sin(az)[:, None] * e2) + math.sin(el) * u
    eye = c.double() + radius * offs
    return look_at(eye, c.double().expand_as(eye), u.expand_as(eye)).to(dtype)


def spiral_path(
    c2w_ref: Tensor,
    num_frames: int,
    radius_scale: Union[float, Sequence[float], Tensor],
    focus_distance: float,
    num_rotations: float = 2.0,
    zrate: float = 0.5,
) -> Tensor:
    """NeRF/LLFF forward-facing "render spiral" ``[F, 3, 4]`` around the average pose.

    Re-implements the behaviour of ``render_path_spiral`` in NeRF's ``load_llff.py``
    (Mildenhall et al. 2020), written for OpenCV poses:

    * ``avg = average_pose(c2w_ref)`` (NeRF's ``poses_avg``); radii ``r [3]`` = 90th percentile
      of ``|p - centre|`` per axis of the camera centres expressed in ``avg``'s frame, times
      ``radius_scale``.
    * frame ``f`` has ``theta = 2 pi num_rotations f / F`` and its centre at
      ``avg @ (r_x cos theta, r_y sin theta, r_z sin(zrate theta), 1)`` (OpenCV axes; NeRF's
      ``(cos, -sin, -sin)`` in OpenGL axes is the same point).
    * it looks at the focus point ``avg @ (0, 0, focus_distance, 1)``, with the average up.

    Args:
        c2w_ref: ``[C, 3, 4]`` reference poses (``C >= 2``, the spiral size comes from their spread).
        num_frames: number of frames ``F``; the last does not repeat the first.
        radius_scale: float or ``[3]`` per-axis factor on the percentile radii (NeRF uses 1).
        focus_distance: distance of the focus point in front of the average camera (> 0);
            NeRF uses ``1 / ((1 - 0.75) / near + 0.75 / far)`` from the scene's depth bounds.
        num_rotations: turns of the spiral (NeRF: 2).
        zrate: frequency of the forward/backward motion relative to the circle (NeRF: 0.5).

    Example:
        Two forward-facing cameras at ``x = -1`` and ``x = +1``: the spiral swings along ``x`` only
        (their spread in ``y`` and ``z`` is zero) and always looks at the focus point ``(0, 0, 5)``:

        >>> import torch
        >>> from langfield.geometry.camera_paths import spiral_path
        >>> ref = torch.eye(4)[:3].repeat(2, 1, 1)
        >>> ref[:, 0, 3] = torch.tensor([-1.0, 1.0])
        >>> path = spiral_path(ref, num_frames=4, radius_scale=1.0, focus_distance=5.0, num_rotations=1)
        >>> [round(v, 4) + 0.0 for v in path[:, 0, 3].tolist()]  # x of the camera centres
        [1.0, 0.0, -1.0, 0.0]
        >>> to_focus = torch.tensor([0.0, 0.0, 5.0]) - path[0, :, 3]
        >>> torch.allclose(path[0, :, 2], to_focus / to_focus.norm())  # frame 0 looks at the focus point
        True
    """
    _check_poses(c2w_ref, "c2w_ref")
    _check_num_frames(num_frames)
    if c2w_ref.shape[0] < 2:
        raise ValueError("c2w_ref needs at least 2 cameras: the spiral radii come from their spread")
    if not focus_distance > 0 or not math.isfinite(focus_distance):
        raise ValueError(f"focus_distance must be finite and > 0, got {focus_distance}")
    dtype = c2w_ref.dtype
    scale = torch.as_tensor(radius_scale, dtype=dtype, device=c2w_ref.device)
    if scale.numel() not in (1, 3) or not bool(torch.all(torch.isfinite(scale) & (scale >= 0))):
        raise ValueError(f"radius_scale must be a non-negative float or 3 floats, got {radius_scale!r}")
    avg = average_pose(c2w_ref).to(dtype)
    R, center = avg[:, :3], avg[:, 3]
    local = (c2w_ref[:, :, 3] - center) @ R  # R^T (p - c) for each row
    radii = torch.quantile(local.abs(), 0.9, dim=0) * scale.reshape(-1)
    theta = 2.0 * math.pi * num_rotations * torch.arange(num_frames, dtype=dtype, device=c2w_ref.device) / num_frames
    offs_cam = torch.stack([torch.cos(theta), torch.sin(theta), torch.sin(zrate * theta)], dim=-1) * radii
    eye = center + offs_cam @ R.T
    focus = center + focus_distance * R[:, 2]
    up = -R[:, 1]
    return look_at(eye, focus.expand_as(eye), up.expand_as(eye))


def _quat_log(q: Tensor) -> Tensor:
    """Log of unit quaternions ``[*, 4]`` -> pure-vector part ``[*, 3]`` (``theta * n``)."""
    w, v = q[..., :1], q[..., 1:]
    vn = v.norm(dim=-1, keepdim=True)
    theta = torch.atan2(vn, w)
    small = vn < 1e-9
    factor = torch.where(small, 1.0 / w.clamp_min(1e-9), theta / torch.where(small, torch.ones_like(vn), vn))
    return v * factor


def _quat_exp(v: Tensor) -> Tensor:
    """Exp of pure-vector quaternions ``[*, 3]`` -> unit quaternions ``[*, 4]``."""
    a = v.norm(dim=-1, keepdim=True)
    small = a < 1e-9
    sinc = torch.where(small, 1.0 - a * a / 6.0, torch.sin(a) / torch.where(small, torch.ones_like(a), a))
    return torch.cat([torch.cos(a), v * sinc], dim=-1)


def _relative_log(qa: Tensor, qb: Tensor) -> Tensor:
    """``log(qa^-1 qb)`` along the short arc."""
    rel = quaternion_multiply(quaternion_conjugate(qa), qb)
    rel = torch.where(rel[..., :1] < 0, -rel, rel)
    return _quat_log(rel)


def interpolate_path(keyframes: Tensor, num_frames: int, loop: bool = False) -> Tensor:
    """Smooth path ``[F, 3, 4]`` through keyframe poses ``keyframes [K, 3, 4]`` (``K >= 2``).

    * Positions: centripetal Catmull-Rom spline (alpha = 1/2; Barry & Goldman, SIGGRAPH 1988;
      Yuksel, Schaefer & Keyser, CAD 2011), evaluated in Hermite form. It passes through every
      keyframe, never forms cusps or self-intersections inside a segment, and stays put between
      keyframes at the same position. Open paths get mirrored phantom end points
      ``2 P_0 - P_1`` and ``2 P_{K-1} - P_{K-2}``.
    * Rotations: squad (Shoemake, "Animating rotation with quaternion curves", 1985/1987),
      a C1 spline of unit quaternions through every keyframe rotation; open paths use
      ``s_0 = q_0`` and ``s_{K-1} = q_{K-1}`` at the ends (so ``K = 2`` is a plain slerp).

    Timing: each keyframe segment gets the same share of frames. Open paths place frame ``f`` at
    segment parameter ``u = f (K - 1) / (F - 1)`` (first and last frame are the end keyframes;
    keyframe ``k`` is hit exactly when ``(F - 1)`` is a multiple of ``K - 1``). Loops place it at
    ``u = f K / F`` and the last segment returns to keyframe 0 (``F`` a multiple of ``K`` hits
    every keyframe); frame ``F`` would repeat frame 0, so the video loops seamlessly.

    Smoothness: rotations are C1 in frame time. Positions are C1 in the spline's own (centripetal)
    knot parameter; with equal frames per segment the camera's speed therefore changes at a
    keyframe whose two segments differ in length (as three.js ``CatmullRomCurve3("centripetal")``
    sampled with ``getPoint``). Place keyframes roughly evenly for constant speed.

    Example:
        Between a camera at the origin and one at ``(2, 0, 0)`` turned a quarter turn about ``z``, the
        middle frame is halfway in position and rotation (an eighth of a turn):

        >>> import math, torch
        >>> from langfield.geometry.camera_paths import interpolate_path
        >>> from langfield.geometry.rotations import axis_angle_to_matrix, matrix_to_quaternion
        >>> keyframes = torch.eye(4)[:3].repeat(2, 1, 1)
        >>> keyframes[1, :, :3] = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2]))
        >>> keyframes[1, 0, 3] = 2.0
        >>> path = interpolate_path(keyframes, num_frames=3)
        >>> [round(v, 4) for v in path[1, :, 3].tolist()]
        [1.0, 0.0, 0.0]
        >>> [round(v, 4) for v in matrix_to_quaternion(path[1, :, :3]).tolist()]
        [0.9239, 0.0, 0.0, 0.3827]
    """
    _check_poses(keyframes, "keyframes")
    _check_num_frames(num_frames)
    K = keyframes.shape[0]
    if K < 2:
        raise ValueError(f"keyframes needs at least 2 poses, got {K}")
    dtype, device = keyframes.dtype, keyframes.device
    kf = keyframes.double()
    P = kf[:, :, 3]
    q = matrix_to_quaternion(kf[:, :, :3])
    # Sign-consistent quaternions: each keyframe on the same hemisphere as the previous one.
    for k in range(1, K):
        if float((q[k] * q[k - 1]).sum()) < 0:
            q[k] = -q[k]

    num_seg = K if loop else K - 1
    seg = torch.arange(num_seg, device=device)
    i1, i2 = seg, (seg + 1) % K
    if loop:
        i0, i3 = (seg - 1) % K, (seg + 2) % K
        P0, P3 = P[i0], P[i3]
    else:
        ext = torch.cat([2 * P[:1] - P[1:2], P, 2 * P[-1:] - P[-2:-1]], dim=0)  # phantom ends
        P0, P3 = ext[seg], ext[seg + 3]
    P1, P2 = P[i1], P[i2]

    # Centripetal knot intervals |P_{j+1} - P_j|^(1/2), clamped so coincident points stay finite.
    d01, d12, d23 = [(b - a).norm(dim=-1, keepdim=True).sqrt() for a, b in ((P0, P1), (P1, P2), (P2, P3))]
    eps = (torch.cat([d01, d12, d23]).max() * 1e-6).clamp_min(1e-12)
    d01, d12, d23 = d01.clamp_min(eps), d12.clamp_min(eps), d23.clamp_min(eps)
    # Tangents of the non-uniform Catmull-Rom spline at P1 and P2 (derivative w.r.t. knot time).
    m1 = (P1 - P0) / d01 - (P2 - P0) / (d01 + d12) + (P2 - P1) / d12
    m2 = (P2 - P1) / d12 - (P3 - P1) / (d12 + d23) + (P3 - P2) / d23

    # Squad control quaternions s_k = q_k exp(-(log(q_k^-1 q_{k+1}) + log(q_k^-1 q_{k-1})) / 4).
    nxt, prv = torch.roll(q, -1, 0), torch.roll(q, 1, 0)
    s = quaternion_multiply(q, _quat_exp(-0.25 * (_relative_log(q, nxt) + _relative_log(q, prv))))
    if not loop:
        s[0], s[-1] = q[0], q[-1]
    qa, qb, sa, sb = q[i1], q[i2], s[i1], s[i2]
    flip = torch.where((qa * qb).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(qa)  # loop closure
    qb, sb = qb * flip, sb * flip

    if loop:
        u = torch.arange(num_frames, dtype=torch.float64, device=device) * K / num_frames
    elif num_frames == 1:
        u = torch.zeros(1, dtype=torch.float64, device=device)
    else:
        u = torch.linspace(0.0, K - 1, num_frames, dtype=torch.float64, device=device)
    j = u.floor().long().clamp(0, num_seg - 1)
    t = (u - j.double()).clamp(0.0, 1.0)
    tc = t[:, None]

    # Cubic Hermite basis on the segment; tangents scaled by the segment's knot length.
    h00 = 2 * tc**3 - 3 * tc**2 + 1
    h10 = tc**3 - 2 * tc**2 + tc
    h01 = -2 * tc**3 + 3 * tc**2
    h11 = tc**3 - tc**2
    pos = h00 * P1[j] + h10 * d12[j] * m1[j] + h01 * P2[j] + h11 * d12[j] * m2[j]

    outer = slerp(qa[j], qb[j], t, shortest_path=False)
    inner = slerp(sa[j], sb[j], t, shortest_path=False)
    rot = quaternion_to_matrix(normalize_quaternion(slerp(outer, inner, 2 * t * (1 - t), shortest_path=False)))
    return torch.cat([rot, pos[:, :, None]], dim=-1).to(dtype)


def path_cameras(c2w: Tensor, like: Cameras, index: int = 0) -> Cameras:
    """Cameras at poses ``c2w [F, 3, 4]`` (OpenCV) sharing intrinsics, size and distortion of ``like[index]``.

    Example:
        >>> import torch
        >>> from langfield.types import Cameras
        >>> from langfield.geometry.camera_paths import orbit_path, path_cameras
        >>> K = torch.tensor([[50.0, 0.0, 32.0], [0.0, 50.0, 24.0], [0.0, 0.0, 1.0]])
        >>> like = Cameras.create(torch.eye(4), K, widths=64, heights=48)
        >>> cameras = path_cameras(orbit_path((0.0, 0.0, 0.0), 3.0, 20.0, num_frames=5), like)
        >>> len(cameras), cameras.widths.tolist(), cameras.Ks[4, 0, 0].item()
        (5, [64, 64, 64, 64, 64], 50.0)
    """
    _check_poses(c2w, "c2w")
    if not isinstance(like, Cameras):
        raise ValueError(f"like must be a Cameras, got {type(like).__name__}")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(like):
        raise ValueError(f"index must be an int in [0, {len(like)}), got {index!r}")
    num = c2w.shape[0]

    def rep(t: Tensor) -> Tensor:
        return t[index : index + 1].expand(num, *t.shape[1:]).contiguous()

    return Cameras(
        c2w=c2w.to(device=like.device, dtype=like.c2w.dtype).contiguous(),
        Ks=rep(like.Ks),
        widths=rep(like.widths),
        heights=rep(like.heights),
        dist=rep(like.dist),
    )
