"""Cameras a reconstruction should not hand to training: per-image evidence and the checks on it.

Repetitive structure (tiled floors, repeated textures, symmetric objects) lets incremental SfM
register a camera flipped or displaced against a wrong copy of the structure while the rest of the
model looks fine. Four checks, each on numbers a test can write by hand:

* **residuals**: the image's mean reprojection error (its observations re-projected through its
  camera, distortion included) above ``max(max_reprojection_px, reprojection_factor x median)``;
* **track support**: fewer observed 3D points than ``max(min_points, min_points_fraction x median)``;
* **neighbour consistency**: for the image pairs with the most verified matches, the relative
  rotation estimated from the two images alone (``cam_b_from_cam_a``, from the matches and the
  final intrinsics) against the one the model implies (``R_b R_a^T``, world-to-camera rotations);
  an image disagreeing by more than ``max_pair_rotation_deg`` with more than
  ``max_disagreeing_fraction`` of at least ``min_pair_checks`` neighbours is flagged (its
  neighbours disagree with it once each, so the majority keeps them);
* **temporal jumps** (video frames, ordered by name): a camera farther than ``jump_factor x``
  the median step from both of its temporal neighbours.

Flagged cameras are removed by the capture with a warning that lists them (never silently).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from langfield._checks import check_fields
from langfield.geometry.alignment import rotation_angles_deg
from langfield.geometry.distortion import distort_points
from langfield.io.colmap import ColmapModel, camera_intrinsics, qvec_to_rotmat

__all__ = [
    "CameraCheckConfig",
    "ImageStats",
    "PairRotation",
    "SuspiciousCamera",
    "find_suspicious_cameras",
    "image_statistics",
    "model_statistics",
    "pair_disagreements",
]


@dataclass(frozen=True)
class ImageStats:
    """Evidence about one registered image.

    Attributes:
        image_id, name: as in the model.
        num_points: observed 3D points (track support).
        mean_reprojection_px: mean distance between keypoints and their re-projected 3D points (px);
            ``inf`` when the image observes no point.
        rotation: ``[3, 3]`` world-to-camera rotation (OpenCV camera).
        centre: ``[3]`` camera centre in world coordinates.
    """

    image_id: int
    name: str
    num_points: int
    mean_reprojection_px: float
    rotation: np.ndarray
    centre: np.ndarray


@dataclass(frozen=True)
class PairRotation:
    """A relative rotation estimated from the matches of two images alone.

    Attributes:
        name_a, name_b: image names.
        num_inliers: verified matches between them.
        rotation: ``[3, 3]`` ``cam_b_from_cam_a`` rotation (OpenCV cameras): ``x_b = R x_a + t``.
    """

    name_a: str
    name_b: str
    num_inliers: int
    rotation: np.ndarray


@dataclass(frozen=True)
class CameraCheckConfig:
    """Thresholds of :func:`find_suspicious_cameras` (see the module docstring)."""

    max_reprojection_px: float = 2.0
    """Mean reprojection error (px) always tolerated; above it an image is flagged when it also exceeds
    reprojection_factor x the median image."""
    reprojection_factor: float = 3.0
    """Flag an image whose mean reprojection error exceeds this multiple of the median image's."""
    min_points: int = 20
    """Flag an image observing fewer 3D points than this..."""
    min_points_fraction: float = 0.1
    """...or fewer than this fraction of the median image's (whichever is larger)."""
    max_pair_rotation_deg: float = 10.0
    """A matched pair disagrees when its two-view rotation and the model's differ by more than this."""
    min_pair_checks: int = 2
    """Neighbour consistency is judged only for images with at least this many checked pairs."""
    max_disagreeing_fraction: float = 0.5
    """Flag an image disagreeing with more than this fraction of its checked pairs."""
    jump_factor: float = 8.0
    """Video: flag a camera farther than this multiple of the median step from both temporal neighbours."""

    def __post_init__(self):
        check_fields(self, positive=("max_reprojection_px", "reprojection_factor", "max_pair_rotation_deg", "jump_factor"),
                     int_min_0=("min_points",), int_min_1=("min_pair_checks",),
                     fraction=("min_points_fraction", "max_disagreeing_fraction"))  # fmt: skip


@dataclass(frozen=True)
class SuspiciousCamera:
    """A flagged image and why (one human-readable reason per failed check)."""

    image_id: int
    name: str
    reasons: Tuple[str, ...] = field(default_factory=tuple)


def image_statistics(model: ColmapModel) -> List[ImageStats]:
    """:class:`ImageStats` of every registered image, sorted by name.

    Re-projection uses each image's camera (pinhole + OpenCV ``k1 k2 p1 p2 k3`` distortion through
    :func:`~langfield.geometry.distortion.distort_points`); observations behind the camera count
    as ``inf`` error.
    """
    pts = model.points
    if pts is not None and len(pts):
        order = np.argsort(pts.ids)
        sorted_ids, sorted_xyz = pts.ids[order], pts.xyz[order]
    else:
        sorted_ids, sorted_xyz = np.zeros(0, np.int64), np.zeros((0, 3))
    intr = {cid: camera_intrinsics(cam, source="cameras") for cid, cam in model.cameras.items()}
    out = []
    for im in sorted(model.images.values(), key=lambda im: im.name):
        R = qvec_to_rotmat(im.qvec)
        t = np.asarray(im.tvec, np.float64)
        ids = np.asarray(im.point3d_ids, np.int64)
        obs = ids >= 0
        if sorted_ids.size:
            pos = np.clip(np.searchsorted(sorted_ids, ids[obs]), 0, len(sorted_ids) - 1)
            found = sorted_ids[pos] == ids[obs]
        else:
            pos, found = np.zeros(0, np.int64), np.zeros(int(obs.sum()), bool)
        xyz = sorted_xyz[pos[found]]
        xy = np.asarray(im.xys, np.float64)[obs][found]
        err = float("inf")
        if len(xyz):
            K, dist = intr[im.camera_id]
            cam = xyz @ R.T + t
            z = cam[:, 2]
            with np.errstate(divide="ignore", invalid="ignore"):
                norm = cam[:, :2] / z[:, None]
            d = distort_points(torch.from_numpy(norm), torch.from_numpy(dist)).numpy()
            proj = d * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
            e = np.linalg.norm(proj - xy, axis=1)
            e[~(z > 0)] = np.inf
            err = float(e.mean())
        out.append(ImageStats(int(im.id), im.name, int(len(xyz)), err, R, -R.T @ t))
    return out


def model_statistics(model: ColmapModel) -> Dict[str, float]:
    """Whole-model figures: registered images, points, mean track length and the mean reprojection
    error over all observations (px, from the per-image re-projection)."""
    stats = image_statistics(model)
    n_obs = sum(s.num_points for s in stats)
    finite = [s for s in stats if np.isfinite(s.mean_reprojection_px)]
    mean_err = sum(s.mean_reprojection_px * s.num_points for s in finite) / max(1, sum(s.num_points for s in finite))
    pts = model.points
    num_points = 0 if pts is None else len(pts)
    return {
        "registered_images": len(model.images),
        "points": num_points,
        "observations": int(n_obs),
        "mean_track_length": float(pts.track_lengths.mean()) if num_points else 0.0,
        "mean_reprojection_error_px": float(mean_err),
    }


def pair_disagreements(stats: Sequence[ImageStats], pairs: Sequence[PairRotation]) -> List[Tuple[str, str, float]]:
    """``(name_a, name_b, degrees)``: for each pair of registered images, the angle between its two-view
    rotation and the one the model implies (``R_b R_a^T``); pairs with an unregistered image are skipped."""
    by_name = {s.name: s for s in stats}
    out = []
    for p in pairs:
        a, b = by_name.get(p.name_a), by_name.get(p.name_b)
        if a is None or b is None:
            continue
        implied = b.rotation @ a.rotation.T  # cam_b_from_cam_a of the model
        angle = float(rotation_angles_deg(implied[None], np.asarray(p.rotation, np.float64)[None])[0])
        out.append((p.name_a, p.name_b, angle))
    return out


def _pair_reasons(stats: Sequence[ImageStats], pairs: Sequence[PairRotation], cfg: CameraCheckConfig) -> Dict[str, str]:
    checked: Dict[str, List[float]] = {}
    for name_a, name_b, angle in pair_disagreements(stats, pairs):
        checked.setdefault(name_a, []).append(angle)
        checked.setdefault(name_b, []).append(angle)
    reasons = {}
    for name, angles in checked.items():
        bad = [a for a in angles if a > cfg.max_pair_rotation_deg]
        if len(angles) >= cfg.min_pair_checks and len(bad) > cfg.max_disagreeing_fraction * len(angles):
            reasons[name] = (
                f"rotation disagrees with {len(bad)} of {len(angles)} matched neighbours by more than "
                f"{cfg.max_pair_rotation_deg:g} deg (median {np.median(bad):.1f} deg)"
            )
    return reasons


def _jump_reasons(stats: Sequence[ImageStats], cfg: CameraCheckConfig) -> Dict[str, str]:
    if len(stats) < 3:
        return {}
    c = np.stack([s.centre for s in stats])
    steps = np.linalg.norm(np.diff(c, axis=0), axis=1)
    median = float(np.median(steps))
    if median <= 0:
        return {}
    reasons = {}
    for i, s in enumerate(stats):
        near = [steps[j] for j in (i - 1, i) if 0 <= j < len(steps)]
        if min(near) > cfg.jump_factor * median:
            reasons[s.name] = (f"camera centre is {min(near) / median:.1f}x the median step away from its "
                               f"temporal neighbours (limit {cfg.jump_factor:g}x)")  # fmt: skip
    return reasons


def find_suspicious_cameras(
    stats: Sequence[ImageStats],
    pairs: Sequence[PairRotation] = (),
    *,
    ordered: bool = False,
    config: CameraCheckConfig = CameraCheckConfig(),
) -> List[SuspiciousCamera]:
    """The images failing any check of the module docstring, sorted by name, with their reasons.

    Args:
        stats: :func:`image_statistics` of the model (sorted by name).
        pairs: two-view rotations of matched image pairs (unregistered names are ignored).
        ordered: the names are in capture order (video frames): run the temporal-jump check.
        config: the thresholds.
    """
    cfg = config
    reasons: Dict[str, List[str]] = {s.name: [] for s in stats}
    if stats:
        errs = np.array([s.mean_reprojection_px for s in stats])
        finite = errs[np.isfinite(errs)]
        med_err = float(np.median(finite)) if finite.size else 0.0
        err_limit = max(cfg.max_reprojection_px, cfg.reprojection_factor * med_err)
        med_pts = float(np.median([s.num_points for s in stats]))
        pts_limit = max(cfg.min_points, cfg.min_points_fraction * med_pts)
        for s in stats:
            if not s.mean_reprojection_px <= err_limit:
                reasons[s.name].append(f"mean reprojection error {s.mean_reprojection_px:.2f} px > {err_limit:.2f} px "
                                       f"(median image {med_err:.2f} px)")  # fmt: skip
            if s.num_points < pts_limit:
                reasons[s.name].append(f"observes {s.num_points} 3D points < {pts_limit:.0f} (median image {med_pts:.0f})")
    for name, why in _pair_reasons(stats, pairs, cfg).items():
        reasons[name].append(why)
    if ordered:
        for name, why in _jump_reasons(stats, cfg).items():
            reasons[name].append(why)
    ids = {s.name: s.image_id for s in stats}
    return [SuspiciousCamera(ids[n], n, tuple(r)) for n, r in sorted(reasons.items()) if r]
