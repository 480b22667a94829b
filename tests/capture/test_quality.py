"""Suspicious-camera checks (langfield.capture.quality) on synthetic models and hand-written numbers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from langfield._checks import InputError
from langfield.capture.quality import (
    CameraCheckConfig,
    ImageStats,
    PairRotation,
    find_suspicious_cameras,
    image_statistics,
    model_statistics,
)
from langfield.io.colmap import qvec_to_rotmat, rotmat_to_qvec


def test_reprojection_error_and_track_support_are_measured(make_model):
    model = make_model()
    stats = image_statistics(model)
    assert [s.name for s in stats] == sorted(im.name for im in model.images.values())
    assert all(s.num_points == 80 for s in stats)
    assert max(s.mean_reprojection_px for s in stats) < 1e-9  # exact projections, distortion included
    im = model.images[3]
    shifted = replace(im, xys=im.xys + np.array([3.0, 4.0]))  # every keypoint 5 px off
    model.images[3] = shifted
    err = {s.name: s.mean_reprojection_px for s in image_statistics(model)}
    assert err[im.name] == pytest.approx(5.0, abs=1e-9)
    assert np.allclose(image_statistics(model)[0].centre, -qvec_to_rotmat(model.images[1].qvec).T @ model.images[1].tvec)
    figures = model_statistics(model)
    assert figures["registered_images"] == 8 and figures["points"] == 80 and figures["mean_track_length"] == 8.0
    assert figures["mean_reprojection_error_px"] == pytest.approx(5.0 / 8)


def _stats(n=10, err=0.5, points=500):
    out = []
    for i in range(n):
        a = np.radians(10 * i)
        R = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
        out.append(ImageStats(i + 1, f"f{i:02d}", points, err, R, np.array([i * 0.1, 0.0, 0.0])))
    return out


def test_residual_and_support_outliers_are_flagged_with_reasons():
    stats = _stats()
    stats[2] = replace(stats[2], mean_reprojection_px=2.6)  # > max(2.0, 3 x 0.5)
    stats[5] = replace(stats[5], mean_reprojection_px=1.9)  # > 3 x median but under the 2 px floor: kept
    stats[7] = replace(stats[7], num_points=40)  # < 0.1 x median 500
    stats[8] = replace(stats[8], num_points=60)  # above both limits: kept
    flagged = find_suspicious_cameras(stats)
    assert [(f.name, len(f.reasons)) for f in flagged] == [("f02", 1), ("f07", 1)]
    assert "reprojection error 2.60 px > 2.00 px" in flagged[0].reasons[0]
    assert "observes 40 3D points < 50" in flagged[1].reasons[0]
    assert flagged[0].image_id == 3


def test_a_flipped_camera_disagrees_with_its_matched_neighbours():
    stats = _stats()
    pairs = []
    for i in range(len(stats)):  # each camera matched with its next two (true relative rotations)
        for j in (i + 1, i + 2):
            if j < len(stats):
                a, b = stats[i], stats[j]
                pairs.append(PairRotation(a.name, b.name, 100, b.rotation @ a.rotation.T))
    assert find_suspicious_cameras(stats, pairs) == []
    flip = np.diag([-1.0, 1.0, -1.0])  # turned 180 degrees about its own y axis
    stats[4] = replace(stats[4], rotation=flip @ stats[4].rotation)
    flagged = find_suspicious_cameras(stats, pairs)
    assert [f.name for f in flagged] == ["f04"]
    assert "disagrees with 4 of 4 matched neighbours" in flagged[0].reasons[0]
    # a camera with a single checked pair is not judged (min_pair_checks = 2)
    assert find_suspicious_cameras(stats, pairs[:1] + [p for p in pairs if "f04" not in (p.name_a, p.name_b)]) == []


def test_a_video_frame_that_jumps_is_flagged_only_for_ordered_input():
    stats = _stats(n=12)
    stats[6] = replace(stats[6], centre=np.array([0.6, 2.0, 0.0]))  # 20 median steps off the path
    assert find_suspicious_cameras(stats) == []
    flagged = find_suspicious_cameras(stats, ordered=True)
    assert [f.name for f in flagged] == ["f06"]
    assert "median step" in flagged[0].reasons[0]


def test_suspicious_on_a_model_and_config_checks(make_model):
    model = make_model()
    R = qvec_to_rotmat(model.images[2].qvec)
    flipped = np.diag([-1.0, -1.0, 1.0]) @ R  # 180 degrees about the optical axis, centre kept
    c = -R.T @ model.images[2].tvec
    model.images[2] = replace(model.images[2], qvec=rotmat_to_qvec(flipped), tvec=-flipped @ c)
    flagged = find_suspicious_cameras(image_statistics(model))
    assert [f.name for f in flagged] == [model.images[2].name]  # its residuals explode
    with pytest.raises(InputError, match="max_disagreeing_fraction"):
        CameraCheckConfig(max_disagreeing_fraction=1.5)
    with pytest.raises(InputError, match="min_pair_checks"):
        CameraCheckConfig(min_pair_checks=0)
