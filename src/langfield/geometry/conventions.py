"""Camera pose conventions.

* **OpenCV / COLMAP**: camera x right, y down, z forward (looks along +z). langfield's
  internal convention for every ``c2w``.
* **OpenGL / Blender / nerfstudio / instant-ngp**: camera x right, y up, z backward
  (looks along -z).

Converting a camera-to-world between the two flips the camera's y and z axes, i.e.
right-multiplies the rotation by ``diag(1, -1, -1)``; the camera centre is unchanged.
The map is its own inverse.
"""

from __future__ import annotations

import torch
from torch import Tensor

_FLIP_YZ = (1.0, -1.0, -1.0)


def _flip_camera_axes(c2w: Tensor) -> Tensor:
    if c2w.shape[-2:] not in ((3, 4), (4, 4)):
        raise ValueError(f"pose must be [..., 3, 4] or [..., 4, 4], got {tuple(c2w.shape)}")
    out = c2w.clone()
    flip = torch.tensor(_FLIP_YZ, dtype=c2w.dtype, device=c2w.device)
    out[..., :3, :3] = c2w[..., :3, :3] * flip
    return out


def opengl_to_opencv(c2w: Tensor) -> Tensor:
    """OpenGL/Blender camera-to-world ``[..., 3|4, 4]`` -> OpenCV camera-to-world.

    Example:
        An OpenGL camera looks along its ``-z``; the same camera in OpenCV axes has ``y`` and ``z``
        flipped, and the map is its own inverse:

        >>> import torch
        >>> from langfield.geometry.conventions import opencv_to_opengl, opengl_to_opencv
        >>> c2w_gl = torch.eye(4)
        >>> opengl_to_opencv(c2w_gl)[:3, :3].diagonal().tolist()
        [1.0, -1.0, -1.0]
        >>> torch.equal(opencv_to_opengl(opengl_to_opencv(c2w_gl)), c2w_gl)
        True
    """
    return _flip_camera_axes(c2w)


def opencv_to_opengl(c2w: Tensor) -> Tensor:
    """OpenCV camera-to-world ``[..., 3|4, 4]`` -> OpenGL/Blender camera-to-world.

    Example:
        >>> import torch
        >>> from langfield.geometry.conventions import opencv_to_opengl
        >>> c2w_cv = torch.eye(4)[:3]  # an OpenCV camera at the origin looking along world +z
        >>> (-opencv_to_opengl(c2w_cv)[:, 2]).tolist()  # in OpenGL axes it looks along its -z: still world +z
        [0.0, 0.0, 1.0]
    """
    return _flip_camera_axes(c2w)


def to_homogeneous(pose: Tensor) -> Tensor:
    """``[..., 3, 4]`` -> ``[..., 4, 4]`` by appending the row ``(0, 0, 0, 1)``.

    Example:
        >>> import torch
        >>> from langfield.geometry.conventions import to_homogeneous
        >>> to_homogeneous(torch.eye(4)[:3])[3].tolist()
        [0.0, 0.0, 0.0, 1.0]
    """
    if pose.shape[-2:] == (4, 4):
        return pose
    bottom = torch.zeros(*pose.shape[:-2], 1, 4, dtype=pose.dtype, device=pose.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([pose, bottom], dim=-2)


def invert_rigid(pose: Tensor) -> Tensor:
    """Invert rigid transforms ``[..., 3|4, 4]`` (``c2w`` <-> ``w2c``); returns ``[..., 3, 4]``.

    Example:
        A camera at ``(1, 2, 3)`` turned 90 degrees about ``z``; its ``w2c`` maps the camera centre to the origin:

        >>> import torch
        >>> from langfield.geometry.conventions import invert_rigid
        >>> c2w = torch.tensor([[0.0, -1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 3.0]])
        >>> w2c = invert_rigid(c2w)
        >>> (w2c[:, :3] @ torch.tensor([1.0, 2.0, 3.0]) + w2c[:, 3]).tolist()
        [0.0, 0.0, 0.0]
        >>> torch.equal(invert_rigid(w2c), c2w)
        True
    """
    R = pose[..., :3, :3]
    t = pose[..., :3, 3:4]
    Rt = R.transpose(-1, -2)
    return torch.cat([Rt, -Rt @ t], dim=-1)


def check_rigid(pose: Tensor, atol: float = 1e-3) -> Tensor:
    """Boolean ``[...]``: which rotations are orthonormal with determinant +1 within ``atol``.

    Example:
        >>> import torch
        >>> from langfield.geometry.conventions import check_rigid
        >>> mirror = torch.diag(torch.tensor([1.0, 1.0, -1.0, 1.0]))  # orthonormal, but det -1
        >>> check_rigid(torch.stack([torch.eye(4), 2 * torch.eye(4), mirror])).tolist()
        [True, False, False]
    """
    R = pose[..., :3, :3].double()
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    ortho = (R.transpose(-1, -2) @ R - eye).abs().amax(dim=(-1, -2)) < atol
    det = (torch.linalg.det(R) - 1.0).abs() < atol
    finite = torch.isfinite(pose).flatten(-2).all(-1)
    return ortho & det & finite
