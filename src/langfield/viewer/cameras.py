"""The browser's camera as langfield :class:`~langfield.types.Cameras`, and the render-size policy.

viser reports each client's camera as ``wxyz`` and ``position`` — the rotation and translation of
``P_world = R p_camera + t`` with the camera axes of **OpenCV** (x right, y down, looking along
+z; viser 1.1 ``CameraHandle.wxyz``) — a **vertical** field of view in **radians** and the canvas
size in pixels. langfield's poses are OpenCV camera-to-world too, so the conversion is exact:
``c2w = [R(wxyz) | position]``, square pixels, principal point at the canvas centre,
``f = H / 2 / tan(fov / 2)``. Quaternions are scalar-first ``(w, x, y, z)`` on both sides
(:mod:`langfield.geometry.rotations`).

Nothing here imports viser; the functions take plain numbers, so they are tested without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
from torch import Tensor

from langfield._checks import InputError, check_fields, check_finite_number, check_image_size
from langfield.geometry.rotations import matrix_to_quaternion, quaternion_to_matrix
from langfield.types import Cameras

__all__ = [
    "ResolutionPolicy",
    "band_camera",
    "cameras_from_viser",
    "viser_pose_from_c2w",
]


def cameras_from_viser(
    wxyz: Sequence[float], position: Sequence[float], fov_y: float, width: int, height: int
) -> Cameras:
    """One :class:`Cameras` (OpenCV c2w) from a viser camera.

    Args:
        wxyz: ``[4]`` camera-to-world rotation, scalar first (normalised here).
        position: ``[3]`` camera centre in world coordinates.
        fov_y: vertical field of view in radians, in ``(0, pi)``.
        width, height: image size in pixels (the render size, not necessarily the canvas').

    Example:
        The identity quaternion is a camera looking along world +z with image-down = world +y:

        >>> import math
        >>> from langfield.viewer.cameras import cameras_from_viser
        >>> cam = cameras_from_viser((1, 0, 0, 0), (0, 0, -2), math.radians(90), 64, 48)
        >>> cam.c2w[0].tolist()
        [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -2.0]]
        >>> [round(v, 4) for v in (cam.Ks[0, 0, 0].item(), cam.Ks[0, 1, 1].item(), cam.Ks[0, 0, 2].item())]
        [24.0, 24.0, 32.0]
    """
    q = torch.as_tensor([float(v) for v in wxyz], dtype=torch.float64)
    t = torch.as_tensor([float(v) for v in position], dtype=torch.float64)
    if q.shape != (4,) or t.shape != (3,):
        raise InputError(f"viser camera: expected wxyz [4] and position [3], got {tuple(q.shape)} and {tuple(t.shape)}")
    if not bool(torch.isfinite(q).all() & torch.isfinite(t).all()) or float(q.norm()) < 1e-12:
        raise InputError(f"viser camera: wxyz {q.tolist()} / position {t.tolist()} must be finite and non-zero")
    check_finite_number(fov_y, "viser camera fov (radians)", lo=0.0, lo_inclusive=False, hi=math.pi, hi_inclusive=False)
    width, height = check_image_size(width, height, "viser camera size")
    R = quaternion_to_matrix(q)
    c2w = torch.cat([R, t[:, None]], dim=1)
    focal = height / 2.0 / math.tan(fov_y / 2.0)
    K = torch.tensor([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return Cameras.create(c2w.float(), K.float(), width, height)


def viser_pose_from_c2w(c2w: Tensor) -> Tuple[Tuple[float, ...], Tuple[float, ...], Tuple[float, ...], Tuple[float, ...]]:
    """``(wxyz, position, forward, up)`` of an OpenCV ``c2w [3|4, 4]`` for viser.

    ``forward`` is the optical axis (the camera's +z) and ``up`` image-up (the camera's -y), both in
    world coordinates; viser's orbit controls take ``look_at = position + d * forward`` and ``up``.
    Inverse of :func:`cameras_from_viser` for the pose:
    ``cameras_from_viser(wxyz, position, ...).c2w == c2w`` (to float precision).
    """
    c2w = torch.as_tensor(c2w, dtype=torch.float64)
    if c2w.shape[-2:] not in ((3, 4), (4, 4)) or c2w.ndim != 2:
        raise InputError(f"c2w: expected [3, 4] or [4, 4], got {tuple(c2w.shape)}")
    R, t = c2w[:3, :3], c2w[:3, 3]
    q = matrix_to_quaternion(R)
    as_tuple = lambda v: tuple(float(x) for x in v)  # noqa: E731
    return as_tuple(q), as_tuple(t), as_tuple(R[:, 2]), as_tuple(-R[:, 1])


def band_camera(cameras: Cameras, row0: int, rows: int) -> Cameras:
    """Rows ``[row0, row0 + rows)`` of camera 0 of ``cameras`` as a camera of its own.

    The principal point moves up by ``row0`` pixels, so pixel ``(u, v)`` of the band sees exactly
    the ray of pixel ``(u, row0 + v)`` of the full image: rendering an image band by band (and
    stopping between bands when a newer camera arrives) gives the same pixels as one call.
    """
    height = int(cameras.heights[0])
    if not (0 <= row0 < height and 1 <= rows <= height - row0):
        raise InputError(f"band rows [{row0}, {row0 + rows}) outside the image height {height}")
    Ks = cameras.Ks[:1].clone()
    Ks[:, 1, 2] -= row0
    return Cameras(c2w=cameras.c2w[:1], Ks=Ks, widths=cameras.widths[:1], heights=torch.full_like(cameras.heights[:1], rows),
                   dist=cameras.dist[:1])  # fmt: skip


@dataclass(frozen=True)
class ResolutionPolicy:
    """How large the viewer renders: small while the camera moves, full when it rests.

    Attributes:
        moving_max_side: longest image side (pixels) while the camera moves.
        max_side: longest side once the camera rests (the canvas size when that is smaller).
        rest_seconds: the camera "rests" when no update came for this long.
    """

    moving_max_side: int = 96
    max_side: int = 512
    rest_seconds: float = 0.2

    def __post_init__(self) -> None:
        check_fields(self, int_min_1=("moving_max_side", "max_side"), non_negative=("rest_seconds",))

    def is_resting(self, now: float, last_update: float) -> bool:
        """Whether a camera last updated at ``last_update`` rests at time ``now`` (seconds)."""
        return now - last_update >= self.rest_seconds

    def size(self, canvas_width: int, canvas_height: int, moving: bool) -> Tuple[int, int]:
        """``(width, height)`` to render for a canvas, keeping its aspect ratio; never upscaled.

        Example:
            >>> from langfield.viewer.cameras import ResolutionPolicy
            >>> policy = ResolutionPolicy(moving_max_side=100, max_side=400)
            >>> policy.size(800, 600, moving=True), policy.size(800, 600, moving=False), policy.size(200, 100, False)
            ((100, 75), (400, 300), (200, 100))
        """
        w, h = check_image_size(canvas_width, canvas_height, "canvas size")
        cap = self.moving_max_side if moving else self.max_side
        scale = min(1.0, cap / max(w, h))
        return max(1, int(round(w * scale))), max(1, int(round(h * scale)))
