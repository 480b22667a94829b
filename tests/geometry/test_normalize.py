"""Scene normalisation (langfield.geometry.normalize)."""

from __future__ import annotations

import math

import pytest
import torch

from langfield.geometry.conventions import check_rigid, invert_rigid
from langfield.geometry.normalize import (
    apply_transform_to_points,
    average_pose,
    focus_point,
    make_similarity,
    normalize_poses,
    similarity_scale,
    transform_poses,
)


def look_at_opencv(center, target, up=(0.0, 0.0, 1.0)) -> torch.Tensor:
    """``[3, 4]`` float64 OpenCV c2w at ``center`` looking at ``target`` (image up ~ ``up``)."""
    c = torch.tensor(center, dtype=torch.float64)
    z = torch.tensor(target, dtype=torch.float64) - c
    z = z / z.norm()
    x = torch.linalg.cross(z, torch.tensor(up, dtype=torch.float64))
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    return torch.cat([torch.stack([x, y, z], -1), c[:, None]], -1)


def ring_cameras(num=8, radius=3.0, height=1.0, target=(0.5, -0.2, 0.3)):
    t = torch.tensor(target, dtype=torch.float64)
    poses = []
    for k in range(num):
        a = 2 * math.pi * k / num
        c = t + torch.tensor([radius * math.cos(a), radius * math.sin(a), height], dtype=torch.float64)
        poses.append(look_at_opencv(c.tolist(), target))
    return torch.stack(poses)


def project(c2w, K, X):
    w2c = invert_rigid(c2w)
    pc = X @ w2c[:3, :3].T + w2c[:3, 3]
    return (pc[..., :2] / pc[..., 2:]) @ K[:2, :2].T + K[:2, 2]


def test_none_is_identity():
    c2w = ring_cameras()
    out, T = normalize_poses(c2w, method="none")
    assert torch.equal(T, torch.eye(4, dtype=c2w.dtype))
    assert torch.equal(out, c2w)


def test_cameras_method_centres_and_scales():
    c2w = ring_cameras(radius=3.0, height=1.0)
    out, T = normalize_poses(c2w, method="cameras", target_radius=1.0)
    centers = out[:, :3, 3]
    assert torch.allclose(centers.mean(0), torch.zeros(3, dtype=out.dtype), atol=1e-9)
    assert math.isclose(float(centers.norm(dim=-1).max()), 1.0, rel_tol=1e-9)
    assert bool(check_rigid(out).all())
    assert math.isclose(float(similarity_scale(T)), 1.0 / 3.0, rel_tol=1e-9)
    # T maps the original centres onto the new ones.
    assert torch.allclose(apply_transform_to_points(T, c2w[:, :3, 3]), centers, atol=1e-9)


def test_focus_method_finds_look_at_point():
    target = (0.5, -0.2, 0.3)
    c2w = ring_cameras(target=target)
    p = focus_point(c2w)
    assert torch.allclose(p, torch.tensor(target, dtype=torch.float64), atol=1e-9)
    out, T = normalize_poses(c2w, method="focus", target_radius=2.0)
    assert torch.allclose(apply_transform_to_points(T, p[None]), torch.zeros(1, 3, dtype=torch.float64), atol=1e-9)
    assert math.isclose(float(out[:, :3, 3].norm(dim=-1).max()), 2.0, rel_tol=1e-9)


def test_focus_point_parallel_axes_falls_back_to_mean():
    c2w = torch.stack([look_at_opencv((x, 0.0, 0.0), (x, 5.0, 0.0)) for x in (-1.0, 0.0, 2.0)])
    assert torch.allclose(focus_point(c2w), torch.tensor([1.0 / 3.0, 0.0, 0.0], dtype=torch.float64))


def test_points_method_uses_point_extent():
    c2w = ring_cameras()
    pts = torch.rand(1000, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 4 - 2 + 10
    out, T = normalize_poses(c2w, points=pts, method="points")
    p = apply_transform_to_points(T, pts)
    assert float(p.abs().quantile(0.98)) <= 1.0 + 1e-6
    assert float(p.abs().max()) > 0.9
    with pytest.raises(ValueError, match="points"):
        normalize_poses(c2w, method="points")


def test_align_up_maps_mean_up_to_plus_z():
    # Cameras whose "up" is world -y (COLMAP-like frame).
    c2w = torch.stack(
        [look_at_opencv((3 * math.cos(a), -1.0, 3 * math.sin(a)), (0, 0, 0), up=(0.0, -1.0, 0.0)) for a in (0.1, 1.0, 2.0, 3.0)]
    )
    up0 = -c2w[:, :3, 1].sum(0)
    assert float(up0[1]) < -0.5  # sanity: the helper's cameras are upright w.r.t. -y
    out, T = normalize_poses(c2w, method="cameras", align_up=True)
    up = -out[:, :3, 1].sum(0)
    up = up / up.norm()
    assert torch.allclose(up, torch.tensor([0.0, 0.0, 1.0], dtype=up.dtype), atol=1e-9)
    assert bool(check_rigid(out).all())


def test_projection_is_invariant_under_similarity():
    """A point projects to the same pixel before and after transforming world and cameras."""
    c2w = ring_cameras()
    K = torch.tensor([[50.0, 0, 32], [0, 55.0, 24], [0, 0, 1]], dtype=torch.float64)
    X = torch.tensor([[0.4, -0.1, 0.5], [0.7, 0.1, 0.2]], dtype=torch.float64)
    R = torch.linalg.matrix_exp(torch.tensor([[0, -0.3, 0.2], [0.3, 0, -0.1], [-0.2, 0.1, 0]], dtype=torch.float64))
    T = make_similarity(0.37, R, torch.tensor([1.0, 2.0, -3.0]))
    moved = transform_poses(T, c2w)
    Xm = apply_transform_to_points(T, X)
    for i in range(c2w.shape[0]):
        assert torch.allclose(project(c2w[i], K, X), project(moved[i], K, Xm), atol=1e-9)
    assert bool(check_rigid(moved).all())


def test_look_at_helper_is_upright():
    c = look_at_opencv((0.0, -3.0, 0.0), (0.0, 0.0, 0.0))
    assert torch.allclose(c[:, 1], torch.tensor([0.0, 0.0, -1.0], dtype=c.dtype))  # image down = world -z
    assert torch.allclose(c[:, 2], torch.tensor([0.0, 1.0, 0.0], dtype=c.dtype))


def test_average_pose_of_identical_cameras():
    c = look_at_opencv((1.0, 2.0, 3.0), (0.0, 0.0, 0.0))
    avg = average_pose(torch.stack([c, c, c]))
    assert torch.allclose(avg, c, atol=1e-12)


def test_float32_poses_keep_dtype():
    c2w = ring_cameras().float()
    out, T = normalize_poses(c2w)
    assert out.dtype == torch.float32 and T.dtype == torch.float32 and out.shape == (8, 3, 4)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\[C, 3, 4\]"):
        normalize_poses(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="method"):
        normalize_poses(ring_cameras(), method="sphere")
    with pytest.raises(ValueError, match="target_radius"):
        normalize_poses(ring_cameras(), target_radius=0)
    with pytest.raises(ValueError, match=r"\[4, 4\]"):
        apply_transform_to_points(torch.eye(3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"\[\*B, 3\]"):
        apply_transform_to_points(torch.eye(4), torch.zeros(2, 2))
