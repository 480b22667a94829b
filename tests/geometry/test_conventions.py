import math

import numpy as np
import pytest
import torch

from langfield.geometry.conventions import (
    check_rigid,
    invert_rigid,
    opencv_to_opengl,
    opengl_to_opencv,
    to_homogeneous,
)
from langfield.geometry.rays import camera_directions
from langfield.geometry.rotations import axis_angle_to_matrix
from langfield.types import Cameras

D = torch.float64


def _random_poses(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    R = axis_angle_to_matrix(torch.randn(n, 3, dtype=D, generator=g))
    t = torch.randn(n, 3, 1, dtype=D, generator=g)
    return torch.cat([R, t], -1)


def test_opengl_opencv_round_trip_is_identity():
    c2w = _random_poses(10)
    torch.testing.assert_close(opencv_to_opengl(opengl_to_opencv(c2w)), c2w, atol=0, rtol=0)
    h = to_homogeneous(c2w)
    out = opengl_to_opencv(h)
    assert out.shape == (10, 4, 4)
    torch.testing.assert_close(out[:, 3], h[:, 3])  # bottom row untouched
    torch.testing.assert_close(out[:, :3, 3], c2w[:, :, 3])  # camera centre unchanged
    assert bool(check_rigid(out).all())


def test_point_in_front_of_opengl_camera_is_in_front_of_opencv_camera():
    c2w_gl = _random_poses(5, seed=1)
    # 2 units in front of each OpenGL camera (its frame: x right, y up, looks along -z),
    # slightly to the right and up.
    p_cam_gl = torch.tensor([0.3, 0.2, -2.0], dtype=D)
    p_world = (c2w_gl[:, :, :3] @ p_cam_gl) + c2w_gl[:, :, 3]
    c2w_cv = opengl_to_opencv(c2w_gl)
    w2c_cv = invert_rigid(c2w_cv)
    p_cam_cv = (w2c_cv[:, :, :3] @ p_world[:, :, None])[..., 0] + w2c_cv[:, :, 3]
    # OpenCV: positive z in front, same x (right), y flipped (down).
    torch.testing.assert_close(p_cam_cv, torch.tensor([0.3, -0.2, 2.0], dtype=D).expand(5, 3))


def test_invert_rigid():
    c2w = _random_poses(8, seed=2)
    w2c = invert_rigid(c2w)
    assert w2c.shape == (8, 3, 4)
    eye = torch.eye(4, dtype=D).expand(8, 4, 4)
    torch.testing.assert_close(to_homogeneous(w2c) @ to_homogeneous(c2w), eye)
    torch.testing.assert_close(invert_rigid(to_homogeneous(c2w)), w2c)  # 4x4 input too
    # World-space camera centre maps to the origin of the camera frame.
    centre = (w2c[:, :, :3] @ c2w[:, :, 3:4])[..., 0] + w2c[:, :, 3]
    torch.testing.assert_close(centre, torch.zeros(8, 3, dtype=D))


def test_check_rigid_rejects_scaled_sheared_reflected_nan():
    good = _random_poses(1, seed=3)[0]
    assert bool(check_rigid(good))
    scaled = good.clone()
    scaled[:, :3] *= 1.1
    sheared = good.clone()
    sheared[:, :3] = sheared[:, :3] @ torch.tensor([[1.0, 0.2, 0], [0, 1, 0], [0, 0, 1]], dtype=D)
    reflected = good.clone()
    reflected[:, 0] *= -1
    nan = good.clone()
    nan[1, 3] = float("nan")
    batch = torch.stack([good, scaled, sheared, reflected, nan])
    assert check_rigid(batch).tolist() == [True, False, False, False, False]
    # Translation does not matter; a small float32 rounding error is accepted.
    assert bool(check_rigid((good + torch.tensor([[0, 0, 0, 100.0]] * 3, dtype=D)).float()))


def test_opengl_to_opencv_rejects_bad_shape():
    with pytest.raises(ValueError, match="pose"):
        opengl_to_opencv(torch.zeros(3, 3))


def _cams(**kw) -> dict:
    base = dict(
        c2w=torch.zeros(2, 3, 4),
        Ks=torch.tensor([[100.0, 0, 50], [0, 100, 40], [0, 0, 1]]).expand(2, 3, 3).clone(),
        widths=torch.tensor([100, 100]),
        heights=torch.tensor([80, 80]),
        dist=torch.zeros(2, 5),
    )
    base.update(kw)
    return base


def test_cameras_validation_errors():
    Cameras(**_cams())  # valid
    Ks = _cams()["Ks"].clone()
    Ks[1, 0, 0] = 0.0
    with pytest.raises(ValueError, match="focal"):
        Cameras(**_cams(Ks=Ks))
    Ks = _cams()["Ks"].clone()
    Ks[0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="focal"):
        Cameras(**_cams(Ks=Ks))
    with pytest.raises(ValueError, match="c2w"):
        Cameras(**_cams(c2w=torch.zeros(2, 4, 4)))
    with pytest.raises(ValueError, match="Ks"):
        Cameras(**_cams(Ks=torch.zeros(3, 3, 3)))
    with pytest.raises(ValueError, match="widths"):
        Cameras(**_cams(widths=torch.tensor([100, 0])))
    with pytest.raises(ValueError, match="dist"):
        Cameras(**_cams(dist=torch.zeros(2, 4)))
    with pytest.raises(ValueError, match="factor"):
        Cameras(**_cams()).rescaled(0.0)


def test_cameras_create_broadcasts():
    cams = Cameras.create(torch.eye(4).expand(3, 4, 4), torch.eye(3), 10, 8, dist=torch.tensor([0.1, 0.01]))
    assert len(cams) == 3 and cams.c2w.shape == (3, 3, 4)
    assert cams.widths.tolist() == [10] * 3 and cams.heights.tolist() == [8] * 3
    torch.testing.assert_close(cams.dist, torch.tensor([[0.1, 0.01, 0, 0, 0]]).expand(3, 5))
    assert len(cams[1]) == 1 and len(cams[[0, 2]]) == 2
    # Scalar indices of any integer type keep a batch of one camera.
    for i in (torch.tensor(2), np.int64(2), -1):
        sub = cams[i]
        assert len(sub) == 1 and sub.c2w.shape == (1, 3, 4)


@pytest.mark.parametrize("factor", [2.0, 3.0, 7.0])
def test_rescaled_border_pixels_map_to_same_rays(factor):
    K = torch.tensor([[120.0, 0.5, 51.3], [0, 110, 37.9], [0, 0, 1]])
    cams = Cameras.create(torch.eye(4), K, 101, 75)
    small = cams.rescaled(factor)
    w, h = int(small.widths[0]), int(small.heights[0])
    assert (w, h) == (math.floor(101 / factor), math.floor(75 / factor))
    # Image corners (pixel edges, not centres) of both resolutions are the same rays.
    corners_big = torch.tensor([[0.0, 0.0], [101.0, 0.0], [0.0, 75.0], [101.0, 75.0]])
    corners_small = torch.tensor([[0.0, 0.0], [w, 0.0], [0.0, h], [w, h]], dtype=torch.float32)
    idx = torch.zeros(4, dtype=torch.int64)
    torch.testing.assert_close(camera_directions(small, idx, corners_small), camera_directions(cams, idx, corners_big))
    torch.testing.assert_close(small.c2w, cams.c2w)
