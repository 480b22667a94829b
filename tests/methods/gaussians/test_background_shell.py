"""The background shell of initial Gaussians for unbounded scenes (3DGS initialisation)."""

from __future__ import annotations

import math

import pytest
import torch

from langfield._checks import InputError
from langfield.configs import config_from_dict, config_to_dict
from langfield.methods.base import SceneInfo
from langfield.methods.gaussians import Gaussians, GaussiansConfig
from langfield.methods.gaussians.background import background_shell, fibonacci_sphere

BOX = torch.tensor([[-1.0] * 3, [1.0] * 3])


def _scene(unbounded: bool, with_points: bool = True) -> SceneInfo:
    g = torch.Generator().manual_seed(0)
    angles = torch.linspace(0, 2 * math.pi, 9)[:-1]
    cams = torch.stack([torch.cos(angles), torch.sin(angles), torch.zeros(8)], -1)  # radius 1, extent 1.1
    points = rgb = None
    if with_points:
        near = torch.randn(400, 3, generator=g) * 0.3  # foreground: red
        far = torch.nn.functional.normalize(torch.randn(400, 3, generator=g), dim=-1) * 4.0  # background
        points = torch.cat([near, far])
        far_rgb = torch.where(far[:, 2:3] > 0, torch.tensor([0.2, 0.4, 1.0]), torch.tensor([0.1, 0.8, 0.1]))  # sky / grass
        rgb = (torch.cat([torch.tensor([1.0, 0.0, 0.0]).expand(400, 3), far_rgb]) * 255).to(torch.uint8)
    return SceneInfo(scene_box=BOX.clone(), near=0.05, far=14.0, num_train_images=8, unbounded=unbounded,
                     points3d=points, points3d_rgb=rgb, camera_centers=cams)


def test_fibonacci_sphere_is_even():
    d = fibonacci_sphere(500)
    assert torch.allclose(d.norm(dim=-1), torch.ones(500), atol=1e-6)
    assert float(d.mean(0).norm()) < 0.01  # balanced
    nn_dist = torch.cdist(d, d).fill_diagonal_(9.0).min(dim=1).values
    spacing = math.sqrt(4 * math.pi / 500)
    assert 0.6 * spacing < float(nn_dist.min()) and float(nn_dist.max()) < 1.4 * spacing


def test_shell_colours_come_from_the_far_points_in_the_same_direction():
    scene = _scene(True)
    colors = scene.points3d_rgb.float() / 255
    pts, rgb = background_shell(300, torch.zeros(3), 20.0, scene.points3d, colors)
    assert torch.allclose(pts.norm(dim=-1), torch.full((300,), 20.0), rtol=1e-5)
    up, down = pts[:, 2] > 6.0, pts[:, 2] < -6.0  # clearly above / below the horizon (17 degrees)
    assert torch.allclose(rgb[up], torch.tensor([0.2, 0.4, 1.0]).expand(int(up.sum()), 3), atol=1 / 255)
    assert torch.allclose(rgb[down], torch.tensor([0.1, 0.8, 0.1]).expand(int(down.sum()), 3), atol=1 / 255)
    assert not bool((rgb == torch.tensor([1.0, 0.0, 0.0])).all(-1).any())  # never the foreground's red
    _, grey = background_shell(10, torch.zeros(3), 5.0)
    assert torch.equal(grey, torch.full((10, 3), 0.5))


def test_shell_only_for_unbounded_scenes_with_count_and_radius():
    base = GaussiansConfig(sh_degree=0)
    bounded = Gaussians(_scene(False), base)
    assert bounded.num_gaussians == 800 and bounded.num_shell_points == 0
    m = Gaussians(_scene(True), base)
    assert m.num_shell_points == 1000  # default: 10% of 800 sparse points, at least 1000
    assert m.num_gaussians == 1800
    shell = m.cloud.means[800:].detach()
    # 10 scene extents (1.1 x camera radius 1) = 11 > 1.1 x the 99% quantile of the points (4.4)
    assert torch.allclose(shell.norm(dim=-1), torch.full((1000,), 11.0), rtol=1e-5)
    assert torch.equal(m.cloud.means[:800].detach(), _scene(True).points3d)
    # scales from the spacing of the shell (3-NN distance on the sphere ~ R sqrt(4 pi / N))
    spacing = 11.0 * math.sqrt(4 * math.pi / 1000)
    scales = m.cloud.scales[800:].detach()
    assert 0.7 * spacing < float(scales.median()) < 1.5 * spacing
    custom = Gaussians(_scene(True), GaussiansConfig(sh_degree=0, background_shell_points=50, background_shell_radius=20.0))
    assert custom.num_gaussians == 850
    assert torch.allclose(custom.cloud.means[800:].detach().norm(dim=-1), torch.full((50,), 22.0), rtol=1e-5)
    off = Gaussians(_scene(True), GaussiansConfig(sh_degree=0, background_shell_points=0))
    assert off.num_gaussians == 800


def test_radius_moves_behind_far_sparse_points():
    scene = _scene(True)
    scene.points3d[400:] *= 10.0  # background points at radius 40
    m = Gaussians(scene, GaussiansConfig(sh_degree=0, background_shell_points=100))
    assert float(m.cloud.means[800:].detach().norm(dim=-1).min()) == pytest.approx(44.0, rel=1e-3)


def test_random_init_gets_a_grey_shell_and_keeps_its_random_points():
    cfg = GaussiansConfig(sh_degree=0, init="random", init_num_random=200, background_shell_points=100)
    m = Gaussians(_scene(True, with_points=False), cfg)
    assert m.num_gaussians == 300
    plain = Gaussians(_scene(False, with_points=False), cfg)
    assert torch.equal(m.cloud.means[:200].detach(), plain.cloud.means.detach())  # the same random draws
    assert torch.allclose(m.params["sh0"][200:].detach(), m.params["sh0"][200:201].detach().expand(100, 1, 3))  # one grey


def test_config_checks_and_old_runs():
    with pytest.raises(InputError, match="GaussiansConfig.background_shell_points"):
        GaussiansConfig(background_shell_points=-1)
    with pytest.raises(InputError, match="GaussiansConfig.background_shell_radius"):
        GaussiansConfig(background_shell_radius=0.0)
    old = config_to_dict(GaussiansConfig())
    del old["background_shell_points"]
    assert config_from_dict(GaussiansConfig, old).background_shell_points == 0
    assert config_from_dict(GaussiansConfig, config_to_dict(GaussiansConfig())).background_shell_points is None


def test_the_shell_covers_what_a_camera_sees_beyond_the_box():
    """A camera beside the box looking outward sees only background: the shell fills its image
    (in the shell's grey), the box-only cloud leaves it empty."""
    from langfield.geometry.rotations import look_at
    from langfield.types import Cameras

    cfg = GaussiansConfig(sh_degree=0, init="random", init_num_random=200, init_opacity=0.5, background_shell_points=2000)
    eye = torch.tensor([[1.5, 0.0, 0.0]])  # just outside the box, looking away from it
    c2w = look_at(eye, torch.tensor([[5.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0]]))
    camera = Cameras.create(c2w, torch.tensor([[16.0, 0.0, 16.0], [0.0, 16.0, 16.0], [0.0, 0.0, 1.0]]), 32, 32)
    black = torch.zeros(3)
    with_shell = Gaussians(_scene(True, with_points=False), cfg).render_camera(camera, black)
    without = Gaussians(_scene(False, with_points=False), cfg).render_camera(camera, black)
    assert float(with_shell.accumulation.mean()) > 0.9
    assert float(without.accumulation.mean()) < 0.05
    assert torch.allclose(with_shell.rgb.reshape(-1, 3).mean(0), torch.full((3,), 0.5), atol=0.06)
