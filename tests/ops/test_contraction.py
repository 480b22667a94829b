"""Mip-NeRF 360 scene contraction (Barron et al. 2022, eq. 10): values, inverse, continuity,
gradients, and parity with the slow reference twin."""

from __future__ import annotations

import math

import pytest
import torch

from langfield._checks import InputError
from langfield.ops.contraction import contract, contract_from_box, uncontract, uncontract_to_box
from langfield.ops.reference import contraction as reference

NORMS = ["l2", "linf"]


def _points(n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """Points at log-uniform distances 0.05 .. 200 in random directions (inside and outside)."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g, dtype=dtype)
    d = d / d.norm(dim=-1, keepdim=True)
    r = torch.exp(torch.empty(n, dtype=dtype).uniform_(math.log(0.05), math.log(200.0), generator=g))
    return d * r[:, None]


def test_known_values():
    x = torch.tensor([[0.3, -0.4, 0.0], [3.0, 0.0, 0.0], [0.0, -10.0, 0.0], [2.0, 2.0, 0.0], [1.0, 1.0, 1.0]])
    l2 = contract(x, norm="l2")
    assert torch.allclose(l2[0], x[0])  # inside the unit ball: unchanged
    assert torch.allclose(l2[1], torch.tensor([5.0 / 3.0, 0.0, 0.0]))  # 2 - 1/3
    assert torch.allclose(l2[2], torch.tensor([0.0, -1.9, 0.0]))  # 2 - 1/10
    r = 2.0 * math.sqrt(2.0)
    assert torch.allclose(l2[3], (2.0 - 1.0 / r) * x[3] / r)
    linf = contract(x, norm="linf")
    assert torch.allclose(linf[3], torch.tensor([1.5, 1.5, 0.0]))  # ||x||_inf = 2
    assert torch.allclose(linf[4], x[4])  # the cube's corner is inside the unit L-inf ball
    assert not torch.allclose(l2[4], x[4])  # but outside the L2 one


@pytest.mark.parametrize("norm", NORMS)
def test_range_and_monotone_radius(norm):
    x = _points(500)
    y = contract(x, norm=norm)
    ny = y.norm(dim=-1) if norm == "l2" else y.abs().amax(-1)
    nx = x.norm(dim=-1) if norm == "l2" else x.abs().amax(-1)
    assert float(ny.max()) < 2.0 and float(ny.max()) > 1.99  # 200 -> 1.995
    order = torch.argsort(nx)
    assert torch.all(torch.diff(ny[order]) >= 0)  # the contracted radius grows with the radius
    assert torch.allclose(ny[nx > 1], 2.0 - 1.0 / nx[nx > 1])
    # Same direction: contracted points are positive multiples of the originals.
    assert torch.allclose(torch.nn.functional.normalize(y, dim=-1), torch.nn.functional.normalize(x, dim=-1))


@pytest.mark.parametrize("norm", NORMS)
def test_inverse_round_trip(norm):
    x = _points(400, seed=1)
    assert torch.allclose(uncontract(contract(x, norm=norm), norm=norm), x, rtol=1e-9, atol=1e-12)
    g = torch.Generator().manual_seed(2)
    y = (torch.rand(400, 3, generator=g, dtype=torch.float64) * 3.9 - 1.95)  # inside the cube of half width 1.95
    if norm == "l2":
        y = y[y.norm(dim=-1) < 1.95]
    assert torch.allclose(contract(uncontract(y, norm=norm), norm=norm), y, rtol=1e-9, atol=1e-12)
    # Norm 2 is infinitely far: clamped to a large finite point, not inf/nan.
    far = uncontract(torch.tensor([[2.0, 0.0, 0.0]], dtype=torch.float64), norm=norm)
    assert torch.isfinite(far).all() and float(far[0, 0]) > 1e5


@pytest.mark.parametrize("norm", NORMS)
def test_continuous_with_unit_slope_at_the_boundary(norm):
    d = torch.tensor([[0.6, -0.48, 0.64]], dtype=torch.float64)  # unit L2 norm
    if norm == "linf":
        d = d / d.abs().max()
    for eps in (1e-4, 1e-7):
        inside, outside = contract(d * (1 - eps), norm=norm), contract(d * (1 + eps), norm=norm)
        assert float((outside - inside).norm()) < 3 * eps * float(d.norm())
        # radial derivative 1 on both sides: (2 - 1/(1+e)) - 1 = e - e^2 + ...
        assert abs(float((outside / d)[0, 0]) - 1.0 - eps) < 2 * eps * eps


@pytest.mark.parametrize("norm", NORMS)
def test_matches_reference_values_and_gradients(norm):
    x = _points(40, seed=3).requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    y, y_ref = contract(x, norm=norm), reference.contract(x_ref, norm=norm)
    assert torch.allclose(y, y_ref, rtol=1e-12, atol=1e-14)
    up = torch.randn_like(y)
    (y * up).sum().backward()
    (y_ref * up).sum().backward()
    assert torch.allclose(x.grad, x_ref.grad, rtol=1e-10, atol=1e-12)
    # the inverse too
    q = (contract(_points(40, seed=4), norm=norm) * 0.999).requires_grad_(True)
    q_ref = q.detach().clone().requires_grad_(True)
    z, z_ref = uncontract(q, norm=norm), reference.uncontract(q_ref, norm=norm)
    assert torch.allclose(z, z_ref, rtol=1e-10)
    up = torch.randn_like(z)
    (z * up).sum().backward()
    (z_ref * up).sum().backward()
    assert torch.allclose(q.grad, q_ref.grad, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("norm", NORMS)
def test_gradcheck(norm):
    x = _points(8, seed=5).requires_grad_(True)  # random directions: no L-inf ties, none at |x| = 1
    assert torch.autograd.gradcheck(lambda p: contract(p, norm=norm), (x,))
    y = (contract(_points(8, seed=6), norm=norm) * 0.99).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: uncontract(p, norm=norm), (y,))


def test_gradient_is_finite_at_the_origin():
    x = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    contract(x, norm="l2").sum().backward()
    assert torch.equal(x.grad, torch.ones(1, 3, dtype=torch.float64))


def test_box_frame_maps_the_box_to_the_unit_cube():
    aabb = torch.tensor([[-1.0, 0.0, 2.0], [3.0, 1.0, 4.0]], dtype=torch.float64)  # centre (1, .5, 3), half (2, .5, 1)
    corner = aabb[1:2]
    assert torch.allclose(contract_from_box(corner, aabb, norm="linf"), torch.ones(1, 3, dtype=torch.float64))
    far = torch.tensor([[1.0 + 2.0 * 10.0, 0.5, 3.0]], dtype=torch.float64)  # 10 half extents along +x
    assert torch.allclose(contract_from_box(far, aabb, norm="l2"), torch.tensor([[1.9, 0.0, 0.0]], dtype=torch.float64))
    pts = _points(100, seed=7) * 3 + torch.tensor([1.0, 0.5, 3.0], dtype=torch.float64)
    for norm in NORMS:
        y = contract_from_box(pts, aabb, norm=norm)
        assert float(y.abs().max()) < 2.0
        assert torch.allclose(uncontract_to_box(y, aabb, norm=norm), pts, rtol=1e-9, atol=1e-9)


def test_bad_inputs_name_the_argument():
    with pytest.raises(InputError, match="norm"):
        contract(torch.zeros(2, 3), norm="l1")
    with pytest.raises(InputError, match="points"):
        contract(torch.zeros(2, 2))
    with pytest.raises(InputError, match="contracted"):
        uncontract(torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(InputError, match="aabb"):
        contract_from_box(torch.zeros(2, 3), torch.zeros(2, 3))
