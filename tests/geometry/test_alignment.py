"""Similarity alignment of camera poses (langfield.geometry.alignment): exact recovery of a known
similarity, and per-camera errors that show exactly the camera that was perturbed."""

from __future__ import annotations

import numpy as np
import pytest

from langfield._checks import InputError
from langfield.geometry.alignment import align_camera_poses, rotation_angles_deg, umeyama_similarity


def _rotation(axis, deg):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.radians(deg)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K


def _poses(n=12, seed=0):
    rng = np.random.default_rng(seed)
    c2w = np.zeros((n, 3, 4))
    for i in range(n):
        c2w[i, :, :3] = _rotation(rng.normal(size=3), rng.uniform(0, 180))
        c2w[i, :, 3] = rng.normal(size=3) * 2.0
    return c2w


def _apply(c2w, s, R, t):
    out = c2w.copy()
    out[:, :, :3] = R @ c2w[:, :, :3]
    out[:, :, 3] = s * c2w[:, :, 3] @ R.T + t
    return out


def test_known_similarity_is_recovered_exactly():
    est = _poses()
    s, R, t = 3.7, _rotation([1, 2, -0.5], 140.0), np.array([10.0, -4.0, 2.5])
    ref = _apply(est, s, R, t)
    a = align_camera_poses(est, ref)
    assert a.scale == pytest.approx(s, rel=1e-12)
    np.testing.assert_allclose(a.rotation, R, atol=1e-12)
    np.testing.assert_allclose(a.translation, t, atol=1e-10)
    assert a.centre_errors.max() < 1e-12 and a.rotation_errors_deg.max() < 1e-5
    np.testing.assert_allclose(a.transform_poses(est), ref, atol=1e-10)
    # the spread is the RMS distance of the reference centres from their centroid
    c = ref[:, :, 3]
    assert a.spread == pytest.approx(np.sqrt(((c - c.mean(0)) ** 2).sum(1).mean()))
    # 4x4 inputs and torch tensors are accepted
    torch = pytest.importorskip("torch")
    ref44 = np.tile(np.eye(4), (len(ref), 1, 1))
    ref44[:, :3] = ref
    b = align_camera_poses(torch.from_numpy(est), ref44)
    assert b.scale == pytest.approx(s)


def test_a_rotated_camera_shows_its_rotation_error_and_no_other():
    est = _poses()
    s, R, t = 0.5, _rotation([0, 0, 1], 30.0), np.zeros(3)
    ref = _apply(est, s, R, t)
    ref[4, :, :3] = _rotation([1, 1, 0], 7.0) @ ref[4, :, :3]  # camera 4 turned in place by 7 degrees
    a = align_camera_poses(est, ref)
    assert a.rotation_errors_deg[4] == pytest.approx(7.0, abs=1e-6)
    assert np.delete(a.rotation_errors_deg, 4).max() < 1e-5
    assert a.centre_errors.max() < 1e-12  # centres untouched: the fit is exact


def test_a_displaced_camera_has_the_largest_centre_error():
    est = _poses(n=20, seed=1)
    ref = _apply(est, 2.0, _rotation([0, 1, 0], -60.0), np.array([1.0, 2.0, 3.0]))
    a0 = align_camera_poses(est, ref)
    ref[7, :, 3] += np.array([1.0, 0.0, 0.0]) * 0.2 * a0.spread  # 20 % of the spread
    a = align_camera_poses(est, ref)
    assert np.argmax(a.centre_errors) == 7
    assert 0.15 < a.centre_errors[7] <= 0.2 + 1e-9  # least squares absorbs a little of it
    assert np.delete(a.centre_errors, 7).max() < 0.03
    s = a.summary()
    assert s["centre_error_rel_max"] == pytest.approx(a.centre_errors[7]) and s["num_cameras"] == 20


def test_reflection_is_never_fitted():
    x = np.random.default_rng(2).normal(size=(10, 3))
    mirrored = x * np.array([1.0, 1.0, -1.0])
    s, R, t = umeyama_similarity(x, mirrored)
    assert np.linalg.det(R) == pytest.approx(1.0)
    assert np.linalg.norm(s * x @ R.T + t - mirrored) > 0.1  # a reflection cannot be matched by a rotation


def test_mixed_camera_conventions_show_as_180_degrees():
    est = _poses(n=5)
    gl = est * np.array([1.0, -1.0, -1.0, 1.0])  # OpenCV -> OpenGL columns
    a = align_camera_poses(est, gl)
    np.testing.assert_allclose(a.rotation_errors_deg, 180.0, atol=1e-6)
    assert rotation_angles_deg(np.eye(3)[None], _rotation([0, 0, 1], 179.0)[None])[0] == pytest.approx(179.0)


def test_bad_inputs_are_refused():
    with pytest.raises(InputError, match="collinear"):
        umeyama_similarity(np.outer(np.arange(5.0), [1, 2, 3]), np.outer(np.arange(5.0), [3, 2, 1]))
    with pytest.raises(InputError, match="4 estimated poses but 3"):
        align_camera_poses(_poses(4), _poses(3))
    with pytest.raises(InputError, match=r"\[C, 3, 4\]"):
        align_camera_poses(np.zeros((4, 3, 3)), np.zeros((4, 3, 3)))
    bad = _poses(4)
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="finite"):
        align_camera_poses(bad, _poses(4))
