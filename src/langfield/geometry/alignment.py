"""Similarity alignment of two sets of camera poses, and the per-camera errors left after it.

Two reconstructions of one scene (a capture's poses and a reference such as LLFF's
``poses_bounds.npy``) agree only up to a similarity ``x -> s R x + t``: SfM fixes neither the world
frame nor the scale. :func:`align_camera_poses` finds that similarity from the camera centres
(Umeyama 1991, least squares, reflection excluded), applies it to the estimated poses and reports
what is left per camera:

* the centre error ``|s R c_est + t - c_ref|`` divided by the **spread** of the reference cameras,
  ``sqrt(mean |c_ref - mean(c_ref)|^2)`` (RMS distance of the centres from their centroid), so
  ``0.02`` reads "2 % of the camera spread" whatever the units;
* the rotation error in degrees, the angle of ``R_ref^T (R R_est)`` (camera-to-world rotations).

Both pose sets are camera-to-world in the **same camera convention** (OpenCV: x right, y down,
z forward, or OpenGL: x right, y up, z back; mixing them gives 180-degree rotation errors); the
world frames may differ arbitrarily. The functions take numpy arrays or CPU torch tensors and
compute in float64 numpy.

>>> import numpy as np
>>> c2w = np.tile(np.eye(4)[:3], (4, 1, 1)); c2w[:, :, 3] = [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
>>> moved = c2w.copy(); moved[:, :, 3] = 2.0 * c2w[:, :, 3] + 5.0  # scale 2, shift 5
>>> a = align_camera_poses(c2w, moved)
>>> round(a.scale, 6), float(a.centre_errors.max()) < 1e-9, float(a.rotation_errors_deg.max()) < 1e-6
(2.0, True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Tuple

import numpy as np

from langfield._checks import InputError

__all__ = ["PoseAlignment", "align_camera_poses", "umeyama_similarity", "rotation_angles_deg"]


@dataclass(frozen=True)
class PoseAlignment:
    """The similarity mapping the estimated world onto the reference world, and the errors after it.

    Attributes:
        scale: ``s > 0``.
        rotation: ``[3, 3]`` float64 ``R`` (a proper rotation, ``det = +1``).
        translation: ``[3]`` float64 ``t``; a point maps as ``s R x + t``.
        spread: RMS distance of the reference camera centres from their centroid (reference units).
        centre_errors: ``[C]`` distance between aligned and reference centres divided by ``spread``.
        rotation_errors_deg: ``[C]`` angle between aligned and reference camera rotations, degrees.
    """

    scale: float
    rotation: np.ndarray
    translation: np.ndarray
    spread: float
    centre_errors: np.ndarray
    rotation_errors_deg: np.ndarray

    def transform_points(self, points: Any) -> np.ndarray:
        """``[N, 3]`` points of the estimated world in the reference world."""
        p = np.asarray(points, np.float64).reshape(-1, 3)
        return self.scale * p @ self.rotation.T + self.translation

    def transform_poses(self, c2w: Any) -> np.ndarray:
        """``[C, 3, 4]`` camera-to-world poses of the estimated world in the reference world."""
        c2w = _as_poses(c2w, "c2w")
        out = np.empty_like(c2w)
        out[:, :, :3] = self.rotation @ c2w[:, :, :3]
        out[:, :, 3] = self.transform_points(c2w[:, :, 3])
        return out

    def summary(self) -> dict:
        """Max / mean / median of both errors (plain floats, for a JSON report)."""
        out = {"scale": float(self.scale), "spread": float(self.spread), "num_cameras": int(len(self.centre_errors))}
        for name, v in (("centre_error_rel", self.centre_errors), ("rotation_error_deg", self.rotation_errors_deg)):
            out[f"{name}_max"] = float(v.max())
            out[f"{name}_mean"] = float(v.mean())
            out[f"{name}_median"] = float(np.median(v))
        return out


def _as_poses(c2w: Any, name: str) -> np.ndarray:
    arr = np.asarray(c2w.detach().cpu() if hasattr(c2w, "detach") else c2w, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1:] not in ((3, 4), (4, 4)):
        raise InputError(f"{name}: expected camera-to-world poses of shape [C, 3, 4] or [C, 4, 4], got {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"{name}: poses must be finite")
    return arr[:, :3, :4].copy()


def umeyama_similarity(source: Any, target: Any) -> Tuple[float, np.ndarray, np.ndarray]:
    """``(s, R, t)`` minimising ``sum |target_i - (s R source_i + t)|^2`` (Umeyama 1991).

    Args:
        source: ``[N, 3]`` points.
        target: ``[N, 3]`` corresponding points, ``N >= 3`` and not all on one line.

    Returns ``s`` (float), ``R [3, 3]`` with ``det R = +1`` (no reflection) and ``t [3]``.
    Raises :class:`~langfield._checks.InputError` for mismatched shapes and degenerate (collinear
    or coincident) point sets, where the rotation is not determined.

    >>> import numpy as np
    >>> x = np.array([[0., 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 3]])
    >>> R = np.array([[0., -1, 0], [1, 0, 0], [0, 0, 1]])
    >>> s, R_fit, t = umeyama_similarity(x, 3 * x @ R.T + [1, 2, 3])
    >>> round(s, 9), np.allclose(R_fit, R), np.allclose(t, [1, 2, 3])
    (3.0, True, True)
    """
    x = np.asarray(source, np.float64)
    y = np.asarray(target, np.float64)
    if x.ndim != 2 or x.shape[1] != 3 or x.shape != y.shape:
        raise InputError(f"umeyama_similarity: source and target must both be [N, 3], got {x.shape} and {y.shape}")
    if len(x) < 3:
        raise InputError(f"umeyama_similarity: need at least 3 point pairs, got {len(x)}")
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    var_x = float((xc**2).sum(1).mean())
    cov = yc.T @ xc / len(x)  # [3, 3] target-source covariance
    U, d, Vt = np.linalg.svd(cov)
    scale_ref = max(var_x, float((yc**2).sum(1).mean()), 1e-300)
    if d[1] <= 1e-9 * scale_ref:
        raise InputError(
            "umeyama_similarity: the points are collinear or coincident, so the rotation is not determined "
            f"(singular values of the covariance {d.tolist()})"
        )
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1.0  # the best proper rotation, never a reflection
    R = U @ S @ Vt
    s = float(np.trace(np.diag(d) @ S) / var_x)
    t = my - s * R @ mx
    return s, R, t


def rotation_angles_deg(R_a: Any, R_b: Any) -> np.ndarray:
    """``[C]`` angle in degrees of ``R_a[i]^T R_b[i]`` for rotations ``[C, 3, 3]`` (stable near 0 and 180)."""
    A = np.asarray(R_a, np.float64).reshape(-1, 3, 3)
    B = np.asarray(R_b, np.float64).reshape(-1, 3, 3)
    rel = np.einsum("cji,cjk->cik", A, B)
    cos = (np.trace(rel, axis1=1, axis2=2) - 1.0) / 2.0
    skew = np.stack([rel[:, 2, 1] - rel[:, 1, 2], rel[:, 0, 2] - rel[:, 2, 0], rel[:, 1, 0] - rel[:, 0, 1]], -1)
    sin = np.linalg.norm(skew, axis=-1) / 2.0
    return np.degrees(np.arctan2(sin, cos))


def align_camera_poses(estimated_c2w: Any, reference_c2w: Any) -> PoseAlignment:
    """Align ``estimated_c2w`` onto ``reference_c2w`` by a similarity fitted to the camera centres.

    Args:
        estimated_c2w: ``[C, 3, 4]`` or ``[C, 4, 4]`` camera-to-world poses (e.g. a capture's).
        reference_c2w: the same cameras in the same order and camera convention, in another world.

    Returns a :class:`PoseAlignment`: the similarity (least squares over the centres, so one badly
    placed camera also shifts the others a little; its own error stays the largest) and per-camera
    centre errors relative to the reference spread and rotation errors in degrees. The rotations
    take no part in the fit, so a camera turned in place shows its full rotation error.
    """
    est = _as_poses(estimated_c2w, "estimated_c2w")
    ref = _as_poses(reference_c2w, "reference_c2w")
    if len(est) != len(ref):
        raise InputError(f"align_camera_poses: {len(est)} estimated poses but {len(ref)} reference poses")
    s, R, t = umeyama_similarity(est[:, :, 3], ref[:, :, 3])
    c_ref = ref[:, :, 3]
    spread = float(np.sqrt(((c_ref - c_ref.mean(0)) ** 2).sum(1).mean()))
    aligned_c = s * est[:, :, 3] @ R.T + t
    centre = np.linalg.norm(aligned_c - c_ref, axis=1) / spread
    rot = rotation_angles_deg(ref[:, :, :3], R @ est[:, :, :3])
    return PoseAlignment(s, R, t, spread, centre, rot)
