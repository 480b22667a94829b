"""viser's camera <-> Cameras (exact and round trip), image bands, the resolution policy."""

from __future__ import annotations

import math

import pytest
import torch

from langfield._checks import InputError
from langfield.geometry.conventions import invert_rigid
from langfield.geometry.rays import rays_from_camera
from langfield.geometry.rotations import matrix_to_quaternion, quaternion_to_matrix
from langfield.viewer.cameras import ResolutionPolicy, band_camera, cameras_from_viser, viser_pose_from_c2w


def project(cameras, point):
    """Pixel (u, v) of a world point in camera 0 (OpenCV pinhole)."""
    w2c = invert_rigid(cameras.c2w[0].double())
    p = w2c[:, :3] @ point.double() + w2c[:, 3]
    uvw = cameras.Ks[0].double() @ (p / p[2])
    return uvw[:2], p[2]


def test_viser_camera_is_converted_exactly():
    # a quarter turn about world y: the camera looks along world +x, image-down is world +y
    half = math.sqrt(0.5)
    cam = cameras_from_viser((half, 0.0, half, 0.0), (1.0, 2.0, 3.0), math.radians(60), 80, 40)
    expected = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 2.0], [-1.0, 0.0, 0.0, 3.0]])
    assert torch.allclose(cam.c2w[0], expected, atol=1e-7)
    f = 20.0 / math.tan(math.radians(30))  # H / 2 / tan(fov / 2)
    assert torch.allclose(cam.Ks[0], torch.tensor([[f, 0, 40.0], [0, f, 20.0], [0, 0, 1.0]]), atol=1e-5)
    assert (cam.widths.item(), cam.heights.item()) == (80, 40) and not cam.has_distortion


def test_what_viser_looks_at_lands_in_the_image_centre_and_its_up_is_image_up():
    q = torch.nn.functional.normalize(torch.tensor([0.3, -0.5, 0.7, 0.2], dtype=torch.float64), dim=0)
    R = quaternion_to_matrix(q)
    position = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    cam = cameras_from_viser(q.tolist(), position.tolist(), math.radians(50), 64, 48)
    # viser: look direction = R[:, 2], up = -R[:, 1] (CameraHandle.wxyz's setter)
    centre, depth = project(cam, position + 3.0 * R[:, 2])
    assert depth > 0 and torch.allclose(centre, torch.tensor([32.0, 24.0], dtype=torch.float64), atol=1e-4)
    above, _ = project(cam, position + 3.0 * R[:, 2] + 0.5 * (-R[:, 1]))
    assert above[1] < 24.0 - 1 and abs(float(above[0]) - 32.0) < 1e-3
    # the vertical field of view spans the image height exactly
    edge, _ = project(cam, position + R[:, 2] + math.tan(math.radians(25)) * R[:, 1])
    assert abs(float(edge[1]) - 48.0) < 1e-3


def test_pose_round_trip():
    torch.manual_seed(0)
    for _ in range(20):
        q = torch.nn.functional.normalize(torch.randn(4, dtype=torch.float64), dim=0)
        c2w = torch.cat([quaternion_to_matrix(q), torch.randn(3, 1, dtype=torch.float64)], dim=1)
        wxyz, position, forward, up = viser_pose_from_c2w(c2w)
        back = cameras_from_viser(wxyz, position, 1.0, 32, 32).c2w[0].double()
        assert torch.allclose(back, c2w, atol=1e-6)
        assert torch.allclose(torch.tensor(forward, dtype=torch.float64), c2w[:, 2], atol=1e-12)
        assert torch.allclose(torch.tensor(up, dtype=torch.float64), -c2w[:, 1], atol=1e-12)
        q_back = torch.tensor(wxyz, dtype=torch.float64)
        assert torch.allclose(q_back, q if q[0] >= 0 else -q, atol=1e-9)
        assert torch.allclose(q_back, matrix_to_quaternion(c2w[:, :3]), atol=1e-12)


def test_matches_viser_own_rotation_convention():
    tf = pytest.importorskip("viser.transforms", reason="viser is optional: pip install -e '.[viewer]'")
    import numpy as np

    wxyz = np.array([0.9, 0.1, -0.3, 0.2])
    wxyz /= np.linalg.norm(wxyz)
    R_viser = tf.SO3(wxyz).as_matrix()
    cam = cameras_from_viser(wxyz, (0.0, 0.0, 0.0), 1.0, 8, 8)
    assert np.allclose(cam.c2w[0, :, :3].numpy(), R_viser, atol=1e-6)


def test_bad_viser_cameras_are_refused_with_the_field():
    with pytest.raises(InputError, match="fov"):
        cameras_from_viser((1, 0, 0, 0), (0, 0, 0), math.pi, 8, 8)
    with pytest.raises(InputError, match="finite and non-zero"):
        cameras_from_viser((0, 0, 0, 0), (0, 0, 0), 1.0, 8, 8)
    with pytest.raises(InputError, match="size"):
        cameras_from_viser((1, 0, 0, 0), (0, 0, 0), 1.0, 0, 8)


def test_bands_see_exactly_the_rows_of_the_full_image():
    cam = cameras_from_viser((0.8, 0.2, -0.4, 0.4), (0.1, 0.2, -3.0), math.radians(70), 7, 11)
    full = rays_from_camera(cam, 0, 0.1, 10.0)
    for row0, rows in ((0, 4), (4, 4), (8, 3), (10, 1)):
        band = rays_from_camera(band_camera(cam, row0, rows), 0, 0.1, 10.0)
        assert band.directions.shape == (rows, 7, 3)
        assert torch.equal(band.directions, full.directions[row0 : row0 + rows])
        assert torch.equal(band.origins, full.origins[row0 : row0 + rows])
    with pytest.raises(InputError, match="outside"):
        band_camera(cam, 9, 3)


def test_resolution_policy_small_while_moving_full_at_rest():
    policy = ResolutionPolicy(moving_max_side=64, max_side=256, rest_seconds=0.2)
    assert policy.size(1024, 768, moving=True) == (64, 48)
    assert policy.size(1024, 768, moving=False) == (256, 192)
    assert policy.size(768, 1024, moving=False) == (192, 256)  # portrait: the height is the long side
    assert policy.size(200, 100, moving=False) == (200, 100)  # never upscaled
    assert policy.size(3, 1000, moving=True) == (1, 64)  # never zero
    assert not policy.is_resting(now=10.19, last_update=10.0)
    assert policy.is_resting(now=10.21, last_update=10.0)
    with pytest.raises(InputError, match="moving_max_side"):
        ResolutionPolicy(moving_max_side=0)
    with pytest.raises(InputError, match="rest_seconds"):
        ResolutionPolicy(rest_seconds=-1.0)
