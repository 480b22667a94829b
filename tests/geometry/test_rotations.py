import math

import pytest
import torch

from langfield.geometry.rotations import (
    axis_angle_to_matrix,
    look_at,
    matrix_to_quaternion,
    normalize_quaternion,
    quaternion_conjugate,
    quaternion_multiply,
    quaternion_to_matrix,
    slerp,
)

D = torch.float64


def _random_quats(n: int, seed: int = 0, dtype: torch.dtype = D) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return normalize_quaternion(torch.randn(n, 4, generator=g, dtype=D)).to(dtype)


def _atol(dtype: torch.dtype) -> float:
    return 1e-10 if dtype == torch.float64 else 1e-5


def _assert_rotation(R: torch.Tensor, atol: float = 1e-10) -> None:
    eye = torch.eye(3, dtype=R.dtype, device=R.device).expand_as(R)
    torch.testing.assert_close(R.transpose(-1, -2) @ R, eye, atol=atol, rtol=0)
    ones = torch.ones(R.shape[:-2], dtype=R.dtype, device=R.device)
    torch.testing.assert_close(torch.linalg.det(R), ones, atol=atol, rtol=0)


def test_quaternion_to_matrix_known_90_deg_about_z(device, dtype):
    q = torch.tensor([math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)], dtype=dtype, device=device)  # w, x, y, z
    R = quaternion_to_matrix(q)
    assert R.dtype == dtype and R.device.type == device.type
    expected = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=dtype, device=device)
    atol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(R, expected, atol=atol, rtol=0)
    # x axis goes to y axis
    ex, ey = torch.eye(3, dtype=dtype, device=device)[:2]
    torch.testing.assert_close(R @ ex, ey, atol=atol, rtol=0)


def test_identity_quaternion_is_w_first():
    torch.testing.assert_close(quaternion_to_matrix(torch.tensor([1.0, 0, 0, 0], dtype=D)), torch.eye(3, dtype=D))
    # (0, 1, 0, 0) is 180 degrees about x, not the identity: confirms scalar-first order.
    torch.testing.assert_close(
        quaternion_to_matrix(torch.tensor([0.0, 1, 0, 0], dtype=D)), torch.diag(torch.tensor([1.0, -1, -1], dtype=D))
    )


def test_quaternion_matrix_round_trip_and_orthonormal(device, dtype):
    q = _random_quats(500, dtype=dtype).to(device)
    R = quaternion_to_matrix(q)
    _assert_rotation(R, atol=_atol(dtype))
    q2 = matrix_to_quaternion(R)
    assert q2.dtype == dtype and bool((q2[:, 0] >= 0).all())
    q_canon = torch.where(q[:, :1] < 0, -q, q)
    torch.testing.assert_close(q2, q_canon, atol=_atol(dtype), rtol=0)
    torch.testing.assert_close(quaternion_to_matrix(q2), R, atol=_atol(dtype), rtol=0)


def test_matrix_to_quaternion_180_degree_turns():
    # trace = -1: the w-branch formula divides by ~0; Shepperd's branch choice must handle it.
    for axis in torch.eye(3, dtype=D).unbind(0):
        R = axis_angle_to_matrix(math.pi * axis)
        q = matrix_to_quaternion(R)
        torch.testing.assert_close(q, torch.cat([torch.zeros(1, dtype=D), axis]), atol=1e-7, rtol=0)
    diag = torch.tensor([1.0, 1.0, 1.0], dtype=D) / math.sqrt(3.0)
    R = axis_angle_to_matrix(math.pi * diag)
    torch.testing.assert_close(quaternion_to_matrix(matrix_to_quaternion(R)), R, atol=1e-12, rtol=0)


def test_matrix_to_quaternion_gradient_finite():
    R = quaternion_to_matrix(_random_quats(8, seed=3)).requires_grad_(True)
    matrix_to_quaternion(R).sum().backward()
    assert bool(torch.isfinite(R.grad).all())


def test_quaternion_multiply_composes_rotations():
    a, b = _random_quats(50, 1), _random_quats(50, 2)
    Rab = quaternion_to_matrix(quaternion_multiply(a, b))
    torch.testing.assert_close(Rab, quaternion_to_matrix(a) @ quaternion_to_matrix(b), atol=1e-12, rtol=0)
    ident = quaternion_multiply(a, quaternion_conjugate(a))
    torch.testing.assert_close(ident, torch.tensor([1.0, 0, 0, 0], dtype=D).expand_as(ident), atol=1e-12, rtol=0)


def test_normalize_quaternion_and_bad_shape():
    q = torch.tensor([[2.0, 0, 0, 0], [0, 3.0, 4.0, 0]], dtype=D)
    torch.testing.assert_close(normalize_quaternion(q).norm(dim=-1), torch.ones(2, dtype=D))
    with pytest.raises(ValueError, match="q"):
        normalize_quaternion(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="R"):
        matrix_to_quaternion(torch.zeros(3, 4))


def test_slerp_endpoints_and_midpoint():
    q0 = torch.tensor([1.0, 0, 0, 0], dtype=D)
    q1 = torch.tensor([math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)], dtype=D)  # 90 deg about z
    torch.testing.assert_close(slerp(q0, q1, 0.0), q0)
    torch.testing.assert_close(slerp(q0, q1, 1.0), q1)
    mid = slerp(q0, q1, 0.5)
    expected = torch.tensor([math.cos(math.pi / 8), 0, 0, math.sin(math.pi / 8)], dtype=D)  # 45 deg
    torch.testing.assert_close(mid, expected, atol=1e-12, rtol=0)
    # Constant angular speed: t = 1/3 is 30 degrees.
    R = quaternion_to_matrix(slerp(q0, q1, torch.tensor(1.0 / 3.0, dtype=D)))
    torch.testing.assert_close(R, axis_angle_to_matrix(torch.tensor([0, 0, math.pi / 6], dtype=D)), atol=1e-12, rtol=0)


def test_slerp_short_path_and_batched():
    q0 = _random_quats(20, 4)
    q1 = _random_quats(20, 5)
    t = torch.linspace(0, 1, 20, dtype=D)
    out = slerp(q0, -q1, t)  # -q1 is the same rotation: shortest path must give the same curve
    ref = slerp(q0, q1, t)
    torch.testing.assert_close(quaternion_to_matrix(out), quaternion_to_matrix(ref), atol=1e-10, rtol=0)
    # Nearly identical quaternions take the linear fallback without NaN.
    near = slerp(q0, q0 + 1e-9, 0.5)
    torch.testing.assert_close(near, q0, atol=1e-8, rtol=0)


def test_axis_angle_known_and_small_angles():
    R = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2], dtype=D))
    expected = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=D)
    torch.testing.assert_close(R, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(axis_angle_to_matrix(torch.zeros(3, dtype=D)), torch.eye(3, dtype=D))
    v = torch.randn(100, 3, dtype=D, generator=torch.Generator().manual_seed(0))
    _assert_rotation(axis_angle_to_matrix(v))
    # Axis is fixed by its own rotation.
    torch.testing.assert_close((axis_angle_to_matrix(v) @ v[:, :, None])[..., 0], v, atol=1e-12, rtol=0)
    vv = (torch.tensor([0.3, -0.2, 0.1], dtype=D) * 1e-6).requires_grad_(True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (vv,))
    vv = torch.tensor([0.3, -0.2, 0.1], dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (vv,))


def test_look_at_target_on_plus_z_and_up_is_image_up():
    eye = torch.tensor([[1.0, -4.0, 2.0], [3.0, 3.0, 3.0]], dtype=D)
    target = torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=D)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=D)
    c2w = look_at(eye, target, up)
    assert c2w.shape == (2, 3, 4)
    R, t = c2w[:, :, :3], c2w[:, :, 3]
    _assert_rotation(R)
    torch.testing.assert_close(t, eye)
    # Target in camera frame: on the +z axis at distance |target - eye|.
    p_cam = torch.einsum("bji,bj->bi", R, target - t)
    dist = (target - eye).norm(dim=-1)
    torch.testing.assert_close(p_cam, torch.stack([torch.zeros(2, dtype=D), torch.zeros(2, dtype=D), dist], -1))
    # World up in camera frame: negative y (image up, OpenCV y points down) and zero x (no roll).
    up_cam = R.transpose(-1, -2) @ up
    assert bool((up_cam[:, 1] < 0).all())
    torch.testing.assert_close(up_cam[:, 0], torch.zeros(2, dtype=D), atol=1e-12, rtol=0)


def test_look_at_known_pose():
    # Camera on -y looking at the origin with z up: x right = +x, y down = -z, z forward = +y.
    c2w = look_at(torch.tensor([0.0, -3.0, 0.0]), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
    expected = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, -3.0], [0.0, -1.0, 0.0, 0.0]])
    torch.testing.assert_close(c2w, expected)


def test_look_at_degenerate_inputs():
    with pytest.raises(ValueError, match="up"):
        look_at(torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, 2.0]))
    with pytest.raises(ValueError, match="eye == target"):
        look_at(torch.ones(3), torch.ones(3), torch.tensor([0.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="eye"):
        look_at(torch.ones(2), torch.ones(3), torch.ones(3))
