"""NDC rays (NeRF App. C, eqs. 25-26 in OpenCV axes): values vs the slow twin, collinearity, the
near plane and infinity, gradients, depth back to the world, and the NDCSpace ray conversion."""

from __future__ import annotations

import math

import pytest
import torch

from langfield._checks import InputError
from langfield.geometry.ndc import (
    NDCSpace,
    ndc_fraction_to_world_distance,
    ndc_points,
    ndc_rays,
    ndc_rays_reference,
    points_from_ndc,
)
from langfield.geometry.rotations import look_at
from langfield.types import Rays

W, H, NEAR = 8, 6, 1.5
FOCAL = (7.0, 5.5)  # fx != fy
PP = (3.7, 3.2)  # off-centre principal point


def _rays(n=7, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    o = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * 0.6
    d = torch.cat([(torch.rand(n, 2, generator=g, dtype=dtype) - 0.5) * 1.2, torch.ones(n, 1, dtype=dtype)], -1)
    return o, d / d.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("pp", [None, PP])
def test_matches_reference_twin(pp):
    o, d = _rays()
    got = ndc_rays(o, d, FOCAL, W, H, NEAR, principal_point=pp)
    want = ndc_rays_reference(o, d, FOCAL, W, H, NEAR, principal_point=pp)
    torch.testing.assert_close(got[0], want[0], atol=1e-10, rtol=0)
    torch.testing.assert_close(got[1], want[1], atol=1e-6, rtol=0)  # twin extrapolates from z = 1e6 near


def test_per_ray_focal_tensor_matches_scalars():
    o, d = _rays(3)
    f = torch.tensor([[7.0, 5.5], [3.0, 3.0], [2.0, 9.0]], dtype=torch.float64)
    got_o, got_d = ndc_rays(o, d, f, W, H, NEAR)
    for i in range(3):
        oi, di = ndc_rays(o[i : i + 1], d[i : i + 1], tuple(f[i].tolist()), W, H, NEAR)
        torch.testing.assert_close(got_o[i : i + 1], oi)
        torch.testing.assert_close(got_d[i : i + 1], di)
    twin = ndc_rays_reference(o, d, f, W, H, NEAR)
    torch.testing.assert_close(got_d, twin[1], atol=1e-6, rtol=0)


def test_hand_computed_paper_form():
    # Centred principal point: eqs. 25-26 with z -> -z, y -> -y. Origin (0.2, -0.1, 0), direction (0.3, 0.2, 1).
    o = torch.tensor([[0.2, -0.1, 0.0]], dtype=torch.float64)
    d = torch.tensor([[0.3, 0.2, 1.0]], dtype=torch.float64)
    o_ndc, d_ndc = ndc_rays(o, d, (4.0, 3.0), 8, 6, 2.0)
    # shifted origin: t = 2 -> (0.8, 0.3, 2); a_x = 1, a_y = 1
    torch.testing.assert_close(o_ndc, torch.tensor([[0.8 / 2, 0.3 / 2, -1.0]], dtype=torch.float64))
    torch.testing.assert_close(d_ndc, torch.tensor([[0.3 - 0.4, 0.2 - 0.15, 2.0]], dtype=torch.float64))


@pytest.mark.parametrize("pp", [None, PP])
def test_world_ray_points_lie_on_the_ndc_ray(pp):
    o, d = _rays(5)
    o_ndc, d_ndc = ndc_rays(o, d, FOCAL, W, H, NEAR, principal_point=pp)
    t_near = (NEAR - o[:, 2]) / d[:, 2]
    for extra in (0.0, 0.3, 2.0, 50.0):
        p = o + (t_near + extra)[:, None] * d
        q = ndc_points(p, FOCAL, W, H, NEAR, principal_point=pp)
        s = (q[:, 2] + 1.0) / 2.0  # d'_z = 2, o'_z = -1
        torch.testing.assert_close(q, o_ndc + s[:, None] * d_ndc, atol=1e-12, rtol=0)
        assert bool(((s >= 0) & (s < 1)).all())
    # the world distance back from the NDC fraction
    p = o + (t_near + 0.7)[:, None] * d
    s = (ndc_points(p, FOCAL, W, H, NEAR)[:, 2] + 1.0) / 2.0
    torch.testing.assert_close(ndc_fraction_to_world_distance(s, o, d, NEAR), t_near + 0.7)


def test_near_plane_and_infinity():
    pts = torch.tensor([[0.3, -0.2, NEAR], [0.3, -0.2, 1e12]], dtype=torch.float64)
    z = ndc_points(pts, FOCAL, W, H, NEAR)[:, 2]
    assert z[0].item() == -1.0 and abs(z[1].item() - 1.0) < 1e-10
    o, d = _rays()
    o_ndc, d_ndc = ndc_rays(o, d, FOCAL, W, H, NEAR)
    torch.testing.assert_close(o_ndc[:, 2], torch.full((7,), -1.0, dtype=torch.float64))
    torch.testing.assert_close((o_ndc + d_ndc)[:, 2], torch.full((7,), 1.0, dtype=torch.float64))
    # the image corners of the reference camera at infinity are the NDC corners (-1, -1) and (1, 1)
    corners = torch.tensor([[-PP[0] / FOCAL[0], -PP[1] / FOCAL[1], 1.0], [(W - PP[0]) / FOCAL[0], (H - PP[1]) / FOCAL[1], 1.0]])
    end = sum(ndc_rays(torch.zeros(2, 3), corners, FOCAL, W, H, NEAR, principal_point=PP))
    torch.testing.assert_close(end, torch.tensor([[-1.0, -1.0, 1.0], [1.0, 1.0, 1.0]]))


def test_points_round_trip():
    p = torch.tensor([[0.4, -0.3, 2.0], [-1.0, 0.5, 30.0]], dtype=torch.float64)
    q = ndc_points(p, FOCAL, W, H, NEAR, principal_point=PP)
    torch.testing.assert_close(points_from_ndc(q, FOCAL, W, H, NEAR, principal_point=PP), p)


def test_gradcheck():
    o, d = _rays(3)
    o.requires_grad_(True)
    d.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: ndc_rays(a, b, FOCAL, W, H, NEAR, principal_point=PP), (o, d))


def test_gradients_match_twin():
    o, d = _rays(3)
    g = torch.Generator().manual_seed(1)
    up_o, up_d = torch.randn(3, 3, generator=g, dtype=torch.float64), torch.randn(3, 3, generator=g, dtype=torch.float64)
    grads = []
    for fn in (ndc_rays, ndc_rays_reference):
        a, b = o.clone().requires_grad_(True), d.clone().requires_grad_(True)
        oo, dd = fn(a, b, FOCAL, W, H, NEAR, principal_point=PP)
        ((oo * up_o).sum() + (dd * up_d).sum()).backward()
        grads.append((a.grad, b.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-5, rtol=1e-5)


def test_bad_inputs():
    o, d = _rays(2)
    with pytest.raises(InputError, match="directions: every ray must point forward"):
        ndc_rays(o, -d, FOCAL, W, H, NEAR)
    with pytest.raises(InputError, match="near"):
        ndc_rays(o, d, FOCAL, W, H, 0.0)
    with pytest.raises(InputError, match="focal"):
        ndc_rays(o, d, (1.0, 2.0, 3.0), W, H, NEAR)
    with pytest.raises(InputError, match="focal"):
        ndc_rays(o, d, -1.0, W, H, NEAR)
    with pytest.raises(InputError, match="origins"):
        ndc_rays(o[:, :2], d, FOCAL, W, H, NEAR)


def _space(pp=PP):
    c2w = look_at(torch.tensor([0.5, -0.2, -1.0]), torch.tensor([0.3, 0.1, 5.0]), torch.tensor([0.0, -1.0, 0.0]))
    return NDCSpace(c2w=c2w.float(), focal=FOCAL, principal_point=pp, width=W, height=H, near=NEAR)


def _world_rays(space, n=6):
    o_ref, d_ref = _rays(n, seed=3, dtype=torch.float32)
    R, c = space.c2w[:, :3], space.c2w[:, 3]
    ones = torch.ones(n, 1)
    return Rays(o_ref @ R.T + c, d_ref @ R.T, 0.01 * ones, 0 * ones, 10 * ones, torch.zeros(n, dtype=torch.int64))


def test_space_rays_unit_bounds_and_collinear():
    space = _space()
    world = _world_rays(space)
    ndc = space.rays(world)
    torch.testing.assert_close(ndc.directions.norm(dim=-1), torch.ones(6))
    assert bool((ndc.near == 0).all()) and bool((ndc.far >= 2.0).all())
    # the end of each NDC ray is at infinity (z = 1), its start on the near plane (z = -1)
    torch.testing.assert_close((ndc.origins + ndc.far * ndc.directions)[:, 2], torch.ones(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(ndc.origins[:, 2], -torch.ones(6), atol=1e-5, rtol=0)
    # world points on the ray project onto the NDC ray, at the NDC distance world_distance inverts
    o_ref, d_ref = space.to_reference(world.origins, world.directions)
    t_world = (NEAR - o_ref[:, 2]) / d_ref[:, 2] + torch.tensor([0.1, 0.5, 1.0, 3.0, 10.0, 100.0])
    p_ndc = space.points(world.origins + t_world[:, None] * world.directions)
    t_ndc = ((p_ndc - ndc.origins) * ndc.directions).sum(-1, keepdim=True)
    torch.testing.assert_close(ndc.origins + t_ndc * ndc.directions, p_ndc, atol=1e-5, rtol=0)
    torch.testing.assert_close(space.world_distance(t_ndc, world)[:, 0], t_world, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(space.world_points(p_ndc), world.origins + t_world[:, None] * world.directions, atol=1e-3, rtol=1e-4)


def test_space_radius_of_central_ray_is_mipnerfs():
    space = _space(pp=(W / 2, H / 2))
    c = space.c2w[:, 3]
    axis = space.c2w[:, 2]
    one = torch.ones(1, 1)
    r_world = (2 / math.sqrt(12)) / math.sqrt(FOCAL[0] * FOCAL[1])
    world = Rays(c[None], axis[None], r_world * one, 0 * one, one, torch.zeros(1, dtype=torch.int64))
    ndc = space.rays(world)
    # Mip-NeRF's NDC radius dx * 2/sqrt(12) with dx = 2/W per unit of the fraction s; |d'| = 2
    want = 0.5 * (2 * FOCAL[0] / W + 2 * FOCAL[1] / H) * r_world / 2.0
    assert math.isclose(float(ndc.radii), want, rel_tol=1e-5)


def test_space_refuses_backward_rays():
    space = _space()
    world = _world_rays(space)
    with pytest.raises(InputError, match="point forward"):
        space.rays(Rays(world.origins, -world.directions, world.radii, world.near, world.far, world.camera_indices))


def test_space_world_normals_match_the_projection_jacobian():
    """A world normal m maps into NDC as J^-T m (J the Jacobian of pi, here by autograd);
    world_normals must map it back."""
    space = _space()
    world = _world_rays(space, n=4)
    o_ref, d_ref = space.to_reference(world.origins.double(), world.directions.double())
    t = ((NEAR - o_ref[:, 2]) / d_ref[:, 2] + torch.tensor([0.5, 1.0, 3.0, 8.0], dtype=torch.float64))[:, None]
    g = torch.Generator().manual_seed(2)
    m_world = torch.nn.functional.normalize(torch.randn(4, 3, generator=g, dtype=torch.float64), dim=-1)
    m_ref = m_world @ space.c2w[:, :3].double()
    n_ndc = []
    for i in range(4):
        p = o_ref[i] + t[i] * d_ref[i]
        J = torch.autograd.functional.jacobian(lambda q: ndc_points(q[None], FOCAL, W, H, NEAR, principal_point=PP)[0], p)
        n_ndc.append(torch.linalg.solve(J.T, m_ref[i]))
    n_ndc = torch.nn.functional.normalize(torch.stack(n_ndc), dim=-1)
    got = space.world_normals(n_ndc.float(), world, t.float())
    torch.testing.assert_close(got, m_world.float(), atol=1e-4, rtol=0)
    assert space.world_normals(torch.zeros(4, 3), world, t.float()).abs().max() == 0
