import math

import pytest
import torch

from langfield.geometry.camera_paths import (
    average_pose,
    interpolate_path,
    orbit_path,
    path_cameras,
    spiral_path,
)
from langfield.geometry.conventions import check_rigid
from langfield.geometry.rotations import axis_angle_to_matrix, look_at, matrix_to_quaternion
from langfield.types import Cameras

D = torch.float64


def _looks_at(c2w: torch.Tensor, point: torch.Tensor, atol: float = 1e-6) -> None:
    """Each frame's optical (+z) axis points at ``point``."""
    to_point = point - c2w[:, :, 3]
    to_point = to_point / to_point.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(c2w[:, :, 2], to_point, atol=atol, rtol=0)


def _keyframes() -> torch.Tensor:
    eye = torch.tensor([[0.0, -4, 1], [3, -3, 2], [4, 0, 1], [2, 2, 3], [-1, 3, 1]], dtype=D)
    target = torch.tensor([[0.0, 0, 0], [0, 0, 0.5], [0.5, 0, 0], [0, 0, 0], [0, 0, 1]], dtype=D)
    return look_at(eye, target, torch.tensor([0.0, 0, 1], dtype=D))


def test_orbit_distance_elevation_and_look_at_center():
    center = torch.tensor([1.0, -2.0, 0.5], dtype=D)
    c2w = orbit_path(center, radius=3.0, elevation_deg=30.0, num_frames=12, start_azimuth_deg=90.0)
    assert c2w.shape == (12, 3, 4) and c2w.dtype == D
    assert bool(check_rigid(c2w).all())
    offs = c2w[:, :, 3] - center
    torch.testing.assert_close(offs.norm(dim=-1), torch.full((12,), 3.0, dtype=D))
    torch.testing.assert_close(offs[:, 2], torch.full((12,), 3.0 * math.sin(math.radians(30.0)), dtype=D))
    _looks_at(c2w, center)
    # Azimuth 90 deg from +x about +z is +y; frames step by 30 degrees counter-clockwise.
    torch.testing.assert_close(offs[0, :2], torch.tensor([0.0, 3.0 * math.cos(math.radians(30))], dtype=D))
    az = torch.atan2(offs[:, 1], offs[:, 0])
    step = torch.remainder(az[1:] - az[:-1], 2 * math.pi)
    torch.testing.assert_close(step, torch.full((11,), math.radians(30.0), dtype=D))
    # World up is image up (camera -y) and the horizon is level (no roll).
    up_cam = c2w[:, :, :3].transpose(1, 2) @ torch.tensor([0.0, 0, 1], dtype=D)
    assert bool((up_cam[:, 1] < 0).all())
    torch.testing.assert_close(up_cam[:, 0], torch.zeros(12, dtype=D), atol=1e-12, rtol=0)


def test_orbit_bad_inputs():
    with pytest.raises(ValueError, match="elevation_deg"):
        orbit_path([0, 0, 0], 1.0, 90.0, 4)
    with pytest.raises(ValueError, match="radius"):
        orbit_path([0, 0, 0], 0.0, 10.0, 4)
    with pytest.raises(ValueError, match="num_frames"):
        orbit_path([0, 0, 0], 1.0, 10.0, 0)
    with pytest.raises(ValueError, match="center"):
        orbit_path([0, 0], 1.0, 10.0, 4)


def test_average_pose():
    # Two cameras yawed +-20 degrees about the world y axis, side by side: average looks along +z.
    R1 = axis_angle_to_matrix(torch.tensor([0.0, math.radians(20), 0], dtype=D))
    R2 = axis_angle_to_matrix(torch.tensor([0.0, -math.radians(20), 0], dtype=D))
    t1 = torch.tensor([[1.0], [0], [0]], dtype=D)
    t2 = torch.tensor([[-1.0], [2], [0]], dtype=D)
    c2w = torch.stack([torch.cat([R1, t1], 1), torch.cat([R2, t2], 1)])
    avg = average_pose(c2w)
    expected = torch.cat([torch.eye(3, dtype=D), torch.tensor([[0.0], [1.0], [0.0]], dtype=D)], 1)
    torch.testing.assert_close(avg, expected, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="c2w"):
        average_pose(torch.zeros(2, 3, 3))
    opposite = c2w.clone()
    opposite[1, :, :3] = -opposite[0, :, :3] @ torch.diag(torch.tensor([1.0, -1.0, 1.0], dtype=D))
    with pytest.raises(ValueError, match="cancel"):
        average_pose(opposite)  # two cameras looking in opposite directions


def test_interpolate_passes_through_keyframes_open_and_loop():
    kf = _keyframes()
    K = kf.shape[0]
    path = interpolate_path(kf, num_frames=(K - 1) * 10 + 1)
    torch.testing.assert_close(path[::10], kf, atol=1e-9, rtol=0)
    loop = interpolate_path(kf, num_frames=K * 10, loop=True)
    torch.testing.assert_close(loop[::10], kf, atol=1e-9, rtol=0)
    assert bool(check_rigid(path).all()) and bool(check_rigid(loop).all())


def test_interpolate_is_continuous_and_smooth():
    kf = _keyframes()
    K, n = kf.shape[0], 100  # n frames per segment
    for loop in (False, True):
        path = interpolate_path(kf, K * n if loop else (K - 1) * n + 1, loop=loop)
        ext = torch.cat([path, path[:1]]) if loop else path  # a loop closes on frame 0
        step = (ext[1:, :, 3] - ext[:-1, :, 3]).norm(dim=-1)
        rot_step = (ext[1:, :, :3] - ext[:-1, :, :3]).flatten(1).norm(dim=-1)
        # Keyframes are 3-7 units apart; 100 frames per segment: steps < 0.15, no jumps.
        assert float(step.max()) < 0.15 and float(rot_step.max()) < 0.05
        # Positions are C1 in the centripetal knot parameter: at each interior keyframe the
        # one-sided velocities, divided by their segments' knot lengths |dP|^(1/2), agree.
        P = torch.cat([kf[:, :, 3], kf[:1, :, 3]]) if loop else kf[:, :, 3]
        knot = (P[1:] - P[:-1]).norm(dim=-1).sqrt()
        for k in range(1, P.shape[0] - 1):
            f = k * n
            p = ext[f - 2 : f + 3, :, 3]  # second-order one-sided differences
            v_in = (3 * p[2] - 4 * p[1] + p[0]) * (n / 2) / knot[k - 1]
            v_out = (-3 * p[2] + 4 * p[3] - p[4]) * (n / 2) / knot[k]
            assert float((v_in - v_out).norm()) < 5e-3 * float(v_in.norm())
        # Rotations (squad, equal time per segment) are C1 in frame time: no kink at keyframes.
        qs = matrix_to_quaternion(ext[:, :, :3])
        for i in range(1, qs.shape[0]):  # continuous sign along the path
            if float((qs[i] * qs[i - 1]).sum()) < 0:
                qs[i] = -qs[i]
        dq = qs[1:] - qs[:-1]
        assert float((dq[1:] - dq[:-1]).norm(dim=-1).max()) < 0.002


def _barry_goldman(P0, P1, P2, P3, s, alpha=0.5):
    """Independent centripetal Catmull-Rom (Barry & Goldman pyramid) on the P1 -> P2 segment."""
    t0 = 0.0
    t1 = t0 + float((P1 - P0).norm()) ** alpha
    t2 = t1 + float((P2 - P1).norm()) ** alpha
    t3 = t2 + float((P3 - P2).norm()) ** alpha
    t = t1 + s * (t2 - t1)
    A1 = (t1 - t) / (t1 - t0) * P0 + (t - t0) / (t1 - t0) * P1
    A2 = (t2 - t) / (t2 - t1) * P1 + (t - t1) / (t2 - t1) * P2
    A3 = (t3 - t) / (t3 - t2) * P2 + (t - t2) / (t3 - t2) * P3
    B1 = (t2 - t) / (t2 - t0) * A1 + (t - t0) / (t2 - t0) * A2
    B2 = (t3 - t) / (t3 - t1) * A2 + (t - t1) / (t3 - t1) * A3
    return (t2 - t) / (t2 - t1) * B1 + (t - t1) / (t2 - t1) * B2


def test_interpolate_positions_are_centripetal_catmull_rom():
    kf = _keyframes()
    P = kf[:, :, 3]
    path = interpolate_path(kf, num_frames=41)  # 10 frames per segment
    for f, s in ((13, 0.3), (17, 0.7), (25, 0.5)):  # segment 1 (P1 -> P2) and segment 2
        seg = f // 10
        ref = _barry_goldman(P[seg - 1], P[seg], P[seg + 1], P[seg + 2], s)
        torch.testing.assert_close(path[f, :, 3], ref, atol=1e-9, rtol=0)


def test_interpolate_two_keyframes_and_repeated_positions():
    kf = _keyframes()[:2]
    path = interpolate_path(kf, 11)
    # Two keyframes: positions on the straight segment, rotation a plain slerp.
    a, b = kf[0, :, 3], kf[1, :, 3]
    d = path[:, :, 3] - a
    cross = torch.linalg.cross(d, (b - a).expand_as(d))
    torch.testing.assert_close(cross, torch.zeros_like(cross), atol=1e-9, rtol=0)
    # Rotation in place (same position twice) stays finite and put.
    still = kf.clone()
    still[1, :, 3] = still[0, :, 3]
    p2 = interpolate_path(still, 11)
    torch.testing.assert_close(p2[:, :, 3], still[0, :, 3].expand(11, 3), atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="keyframes"):
        interpolate_path(kf[:1], 5)


def test_spiral_looks_at_focus_point():
    # Forward-facing rig: 9 cameras on a 3x3 grid, all looking along +z (OpenCV, like LLFF).
    xs = torch.tensor([-1.0, 0.0, 1.0], dtype=D)
    grid = torch.stack(torch.meshgrid(xs, 0.5 * xs, indexing="ij"), -1).reshape(-1, 2)
    centres = torch.cat([grid, torch.zeros(9, 1, dtype=D)], -1) + torch.tensor([0.0, 0.0, -5.0], dtype=D)
    c2w = torch.cat([torch.eye(3, dtype=D).expand(9, 3, 3), centres[:, :, None]], -1)
    F = 24
    path = spiral_path(c2w, F, radius_scale=1.0, focus_distance=4.0)
    assert path.shape == (F, 3, 4)
    assert bool(check_rigid(path).all())
    focus = torch.tensor([0.0, 0.0, -1.0], dtype=D)  # average centre (0, 0, -5) + 4 * forward
    _looks_at(path, focus)
    # Radii = 90th percentile of |offset| per axis: x 1.0, y 0.5, z 0.
    offs = path[:, :, 3] - torch.tensor([0.0, 0.0, -5.0], dtype=D)
    theta = 2 * math.pi * 2 * torch.arange(F, dtype=D) / F
    torch.testing.assert_close(offs[:, 0], torch.cos(theta))
    torch.testing.assert_close(offs[:, 1], 0.5 * torch.sin(theta))
    # Average up (-y) stays image up.
    assert bool((path[:, 1, 1] > 0).all())
    scaled = spiral_path(c2w, F, radius_scale=[2.0, 2.0, 1.0], focus_distance=4.0)
    torch.testing.assert_close(scaled[:, 0, 3], 2 * path[:, 0, 3])
    with pytest.raises(ValueError, match="c2w_ref"):
        spiral_path(c2w[:1], F, 1.0, 4.0)
    with pytest.raises(ValueError, match="focus_distance"):
        spiral_path(c2w, F, 1.0, -1.0)


def test_path_cameras_copies_reference_intrinsics():
    Ks = torch.tensor([[[100.0, 0, 32], [0, 90, 24], [0, 0, 1]], [[50.0, 0, 16], [0, 50, 12], [0, 0, 1]]])
    like = Cameras.create(torch.eye(4).expand(2, 4, 4), Ks, torch.tensor([64, 32]), torch.tensor([48, 24]),
                          dist=torch.tensor([[0.1, 0, 0, 0, 0], [0.0, 0, 0, 0, 0]]))
    path = orbit_path([0.0, 0.0, 0.0], 2.0, 20.0, 5)
    cams = path_cameras(path, like, index=1)
    assert len(cams) == 5
    torch.testing.assert_close(cams.Ks, Ks[1].expand(5, 3, 3))
    assert cams.widths.tolist() == [32] * 5 and cams.heights.tolist() == [24] * 5
    assert not cams.has_distortion
    torch.testing.assert_close(cams.c2w, path)
    assert path_cameras(path, like, 0).has_distortion
    with pytest.raises(ValueError, match="index"):
        path_cameras(path, like, index=2)
