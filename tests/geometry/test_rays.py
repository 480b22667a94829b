import math

import pytest
import torch

from langfield.geometry.distortion import distort_points
from langfield.geometry.rays import camera_directions, pixel_centers, project_points, rays_from_camera, rays_from_pixels
from langfield.types import Cameras, Rays

# A 4 x 2 pixel camera, fx = fy = 2, principal point at the image centre (2, 1).
K = torch.tensor([[2.0, 0.0, 2.0], [0.0, 2.0, 1.0], [0.0, 0.0, 1.0]])
# Camera in a z-up world looking along world +y: camera x -> world +x, camera y (down) -> world -z,
# camera z (forward) -> world +y. Centre at (1, 2, 3).
R = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
T = torch.tensor([1.0, 2.0, 3.0])
C2W = torch.cat([R, T[:, None]], 1)


def _camera(dist=None) -> Cameras:
    return Cameras.create(C2W, K, 4, 2, dist=dist)


def test_pixel_centers():
    pc = pixel_centers(4, 2)
    assert pc.shape == (2, 4, 2)
    torch.testing.assert_close(pc[0, 0], torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(pc[1, 3], torch.tensor([3.5, 1.5]))  # (u, v) = (column, row)


def test_rays_from_camera_hand_computed(device):
    rays = rays_from_camera(_camera().to(device), 0, near=0.1, far=5.0)
    assert isinstance(rays, Rays) and rays.shape == (2, 4) and rays.origins.device.type == device.type
    assert rays.radii.shape == (2, 4, 1) and rays.near.shape == (2, 4, 1) and rays.camera_indices.shape == (2, 4)
    rays = rays.to("cpu")
    torch.testing.assert_close(rays.origins, T.expand(2, 4, 3))
    torch.testing.assert_close(rays.directions.norm(dim=-1), torch.ones(2, 4))
    # Pixel (0, 0): centre (0.5, 0.5) -> camera (x, y, z) = ((0.5 - 2) / 2, (0.5 - 1) / 2, 1) = (-0.75, -0.25, 1)
    # -> world x + (-0.25) * (-z) + 1 * (+y) = (-0.75, 1, 0.25): left, forward and up, normalised.
    expected = torch.tensor([-0.75, 1.0, 0.25]) / math.sqrt(0.75**2 + 1.0 + 0.25**2)
    torch.testing.assert_close(rays.directions[0, 0], expected)
    # Pixel (u=3, v=1): camera (0.75, 0.25, 1) -> world (0.75, 1, -0.25).
    expected = torch.tensor([0.75, 1.0, -0.25]) / math.sqrt(0.75**2 + 1.0 + 0.25**2)
    torch.testing.assert_close(rays.directions[1, 3], expected)
    torch.testing.assert_close(rays.near, torch.full((2, 4, 1), 0.1))
    torch.testing.assert_close(rays.far, torch.full((2, 4, 1), 5.0))
    assert bool((rays.camera_indices == 0).all())


def test_principal_ray_is_camera_z_and_radius():
    cams = _camera()
    rays = rays_from_pixels(cams, torch.zeros(1, dtype=torch.int64), torch.tensor([[2.0, 1.0]]), 0.0, 1.0)
    torch.testing.assert_close(rays.directions[0], R[:, 2])  # optical axis = +z camera axis = world +y
    torch.testing.assert_close(rays.radii[0, 0], torch.tensor(2.0 / math.sqrt(12.0) / 2.0))
    # Off-centre rays have a smaller radius at unit distance along the (longer) unnormalised ray.
    corner = rays_from_pixels(cams, torch.zeros(1, dtype=torch.int64), torch.tensor([[0.0, 0.0]]), 0.0, 1.0)
    torch.testing.assert_close(corner.radii[0, 0], torch.tensor(2.0 / math.sqrt(12.0) / 2.0 / math.sqrt(1 + 1 + 0.25)))


def test_rays_batched_cameras_and_per_ray_bounds():
    other = torch.cat([torch.eye(3), torch.tensor([[0.0], [0.0], [-1.0]])], 1)
    cams = Cameras.create(torch.stack([C2W, other]), K, 4, 2)
    idx = torch.tensor([1, 0, 1])
    pix = torch.tensor([[2.0, 1.0], [2.0, 1.0], [0.5, 0.5]])
    near = torch.tensor([0.1, 0.2, 0.3])
    rays = rays_from_pixels(cams, idx, pix, near, 4.0)
    torch.testing.assert_close(rays.origins, torch.stack([other[:, 3], T, other[:, 3]]))
    torch.testing.assert_close(rays.directions[0], torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(rays.directions[1], torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(rays.near[:, 0], near)
    assert rays.camera_indices.tolist() == [1, 0, 1]
    # The same rays as the [H, W] image layout of camera 1.
    full = rays_from_camera(cams, 1, 0.1, 4.0)
    torch.testing.assert_close(rays.directions[2], full.directions[0, 0])


def test_bad_inputs():
    cams = _camera()
    with pytest.raises(IndexError, match="camera index"):
        rays_from_camera(cams, 1, 0.1, 1.0)
    with pytest.raises(IndexError):
        rays_from_camera(cams, -1, 0.1, 1.0)
    with pytest.raises(ValueError, match="pixels"):
        rays_from_pixels(cams, torch.zeros(2, dtype=torch.int64), torch.zeros(2, 3), 0.1, 1.0)
    with pytest.raises(ValueError, match="camera_indices"):
        rays_from_pixels(cams, torch.zeros(3, dtype=torch.int64), torch.zeros(2, 2), 0.1, 1.0)


def test_distorted_rays_reproject_to_their_pixels():
    dist = torch.tensor([-0.2, 0.05, 1e-3, -5e-4, 0.0])
    w, h = 40, 30
    Kd = torch.tensor([[30.0, 0.0, 20.3], [0.0, 31.0, 14.8], [0.0, 0.0, 1.0]])
    cams = Cameras.create(C2W, Kd, w, h, dist=dist)
    rays = rays_from_camera(cams, 0, 0.1, 1.0)
    d_cam = rays.directions.reshape(-1, 3) @ R  # R^T d: world -> camera
    xy = d_cam[:, :2] / d_cam[:, 2:]
    xy_d = distort_points(xy, dist)
    uv = torch.stack([Kd[0, 0] * xy_d[:, 0] + Kd[0, 2], Kd[1, 1] * xy_d[:, 1] + Kd[1, 2]], -1)
    torch.testing.assert_close(uv, pixel_centers(w, h).reshape(-1, 2), atol=1e-4, rtol=0)
    # Distortion really changed the rays (barrel: corners bend outwards in the ideal image).
    plain = rays_from_camera(Cameras.create(C2W, Kd, w, h), 0, 0.1, 1.0)
    assert float((plain.directions - rays.directions).abs().max()) > 1e-2


def test_mixed_distortion_batch_leaves_pinhole_camera_exact():
    dist = torch.tensor([[0.0] * 5, [-0.2, 0.05, 0.0, 0.0, 0.0]])
    cams = Cameras.create(torch.stack([C2W, C2W]), K, 4, 2, dist=dist)
    pinhole = camera_directions(_camera(), torch.zeros(8, dtype=torch.int64), pixel_centers(4, 2).reshape(-1, 2))
    mixed = camera_directions(cams, torch.zeros(8, dtype=torch.int64), pixel_centers(4, 2).reshape(-1, 2))
    torch.testing.assert_close(mixed, pinhole, atol=1e-7, rtol=0)
    distorted = camera_directions(cams, torch.ones(8, dtype=torch.int64), pixel_centers(4, 2).reshape(-1, 2))
    assert float((distorted - pinhole).abs().max()) > 1e-3


def test_project_points_inverts_rays_with_skew_and_distortion():
    dist = torch.tensor([-0.2, 0.05, 1e-3, -5e-4, 0.0], dtype=torch.float64)
    w, h = 40, 30
    Kd = torch.tensor([[30.0, 0.7, 20.3], [0.0, 31.0, 14.8], [0.0, 0.0, 1.0]], dtype=torch.float64)
    for d in (None, dist):
        cams = Cameras.create(C2W.double(), Kd, w, h, dist=d)
        rays = rays_from_camera(cams, 0, 0.1, 1.0)
        depth = torch.linspace(0.5, 4.0, w * h, dtype=torch.float64)[:, None]
        points = rays.origins.reshape(-1, 3).double() + rays.directions.reshape(-1, 3).double() * depth
        pixels, z = project_points(points, C2W.double(), Kd, d)
        torch.testing.assert_close(pixels, pixel_centers(w, h).reshape(-1, 2).double(), atol=1e-4, rtol=0)
        cam_z = rays.directions.reshape(-1, 3).double() @ R.double()[:, 2]  # camera z of the unit directions
        torch.testing.assert_close(z, cam_z * depth[:, 0], atol=1e-6, rtol=0)
    # A point behind the camera has z < 0.
    assert float(project_points(T.double()[None] - R.double()[:, 2], C2W.double(), Kd)[1]) < 0


def test_project_points_batched_equals_one_camera_at_a_time():
    gen = torch.Generator().manual_seed(3)
    c2w = torch.stack([torch.eye(4, dtype=torch.float64)] * 3)
    for b, angle in enumerate((0.0, 0.4, -1.1)):
        c, s = math.cos(angle), math.sin(angle)
        c2w[b, :3, :3] = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=torch.float64)
        c2w[b, :3, 3] = torch.tensor([0.1 * b, -0.2, -3.0 + b], dtype=torch.float64)
    Ks = torch.tensor([[30.0, 0.7, 20.3], [0.0, 31.0, 14.8], [0.0, 0.0, 1.0]], dtype=torch.float64).repeat(3, 1, 1)
    Ks[:, 0, 0] += torch.arange(3)
    dists = torch.tensor([[-0.2, 0.05, 1e-3, -5e-4, 0.0]], dtype=torch.float64).repeat(3, 1) * torch.arange(3)[:, None]
    points = torch.randn(3, 7, 3, generator=gen, dtype=torch.float64)
    for d in (None, dists):
        pixels, z = project_points(points, c2w[:, :3], Ks, d)
        assert pixels.shape == (3, 7, 2) and z.shape == (3, 7)
        for b in range(3):
            one_pixels, one_z = project_points(points[b], c2w[b], Ks[b], None if d is None else d[b])
            torch.testing.assert_close(pixels[b], one_pixels, atol=0, rtol=0)
            torch.testing.assert_close(z[b], one_z, atol=0, rtol=0)
    # The cameras differ, so a broken broadcast (every batch seen by camera 0) would not pass.
    assert float((project_points(points, c2w, Ks)[0][2] - project_points(points[2], c2w[0], Ks[0])[0]).abs().max()) > 1.0
