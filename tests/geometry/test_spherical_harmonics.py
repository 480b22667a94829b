import math

import numpy as np
import pytest
import torch

from langfield.geometry.spherical_harmonics import (
    SH_C0,
    SH_C1,
    SH_C2,
    SH_C3,
    eval_sh,
    num_sh_coeffs,
    rgb_to_sh_dc,
    sh_basis,
    sh_dc_to_rgb,
)

D = torch.float64


def _sphere_quadrature(n_z: int = 12, n_phi: int = 24):
    """Gauss-Legendre in z = cos(theta) x uniform in phi: exact for polynomials of degree < 2 n_z (and n_phi)."""
    z, wz = np.polynomial.legendre.leggauss(n_z)
    phi = np.arange(n_phi) * 2 * np.pi / n_phi
    Z, PHI = np.meshgrid(z, phi, indexing="ij")
    s = np.sqrt(1 - Z**2)
    dirs = np.stack([s * np.cos(PHI), s * np.sin(PHI), Z], -1).reshape(-1, 3)
    weights = (wz[:, None] * np.full(n_phi, 2 * np.pi / n_phi)[None]).reshape(-1)
    return torch.tensor(dirs, dtype=D), torch.tensor(weights, dtype=D)


@pytest.mark.parametrize("degree", [0, 1, 2, 3, 4])
def test_orthonormal_on_sphere(degree):
    dirs, w = _sphere_quadrature()
    torch.testing.assert_close(w.sum(), torch.tensor(4 * math.pi, dtype=D))
    B = sh_basis(dirs, degree)
    assert B.shape == (dirs.shape[0], num_sh_coeffs(degree))
    gram = B.T @ (B * w[:, None])
    torch.testing.assert_close(gram, torch.eye(B.shape[1], dtype=D), atol=1e-10, rtol=0)


def test_addition_theorem_rotation_invariance():
    # sum_m Y_lm(d)^2 = (2l + 1) / (4 pi) for every unit d: a check independent of the constant table.
    d = torch.randn(200, 3, dtype=D, generator=torch.Generator().manual_seed(0))
    B = sh_basis(d, 4)
    for l in range(5):
        band = B[:, l * l : (l + 1) ** 2]
        torch.testing.assert_close(band.pow(2).sum(-1), torch.full((200,), (2 * l + 1) / (4 * math.pi), dtype=D))


def test_degree_zero_constant():
    d = torch.randn(10, 3, dtype=D)
    B = sh_basis(d, 0)
    torch.testing.assert_close(B, torch.full((10, 1), 1 / (2 * math.sqrt(math.pi)), dtype=D))
    assert SH_C0 == pytest.approx(1 / (2 * math.sqrt(math.pi)))


def test_known_values_at_axes_3dgs_signs():
    ez = sh_basis(torch.tensor([0.0, 0.0, 1.0], dtype=D), 4)
    # Zonal (m = 0) functions at the pole are sqrt((2l + 1) / (4 pi)); all others vanish.
    zonal = {0: 0, 2: 1, 6: 2, 12: 3, 20: 4}
    for k in range(25):
        expected = math.sqrt((2 * zonal[k] + 1) / (4 * math.pi)) if k in zonal else 0.0
        assert float(ez[k]) == pytest.approx(expected, abs=1e-12), k
    ex = sh_basis(torch.tensor([1.0, 0.0, 0.0], dtype=D), 2)
    ey = sh_basis(torch.tensor([0.0, 1.0, 0.0], dtype=D), 2)
    # 3DGS degree-1 signs: (-C1 y, C1 z, -C1 x).
    torch.testing.assert_close(ex[1:4], torch.tensor([0.0, 0.0, -SH_C1], dtype=D))
    torch.testing.assert_close(ey[1:4], torch.tensor([-SH_C1, 0.0, 0.0], dtype=D))
    assert float(ex[6]) == pytest.approx(-SH_C2[2])  # 2z^2 - x^2 - y^2 = -1
    assert float(ex[8]) == pytest.approx(SH_C2[4])  # x^2 - y^2 = 1
    assert float(ey[8]) == pytest.approx(-SH_C2[4])
    # A mixed direction against a hand-evaluated 3DGS term: C3[1] * x * y * z.
    d = torch.tensor([1.0, 2.0, 2.0], dtype=D) / 3.0
    assert float(sh_basis(d, 3)[10]) == pytest.approx(SH_C3[1] * (1 / 3) * (2 / 3) * (2 / 3))


def test_dirs_are_normalised():
    d = torch.randn(7, 3, dtype=D)
    torch.testing.assert_close(sh_basis(3.7 * d, 4), sh_basis(d, 4))


def test_eval_sh_matches_basis_and_uses_first_coeffs():
    g = torch.Generator().manual_seed(1)
    coeffs = torch.randn(5, 25, 6, dtype=D, generator=g)  # any channel count
    dirs = torch.randn(5, 3, dtype=D, generator=g)
    out = eval_sh(coeffs, dirs, 2)
    assert out.shape == (5, 6)
    expected = torch.einsum("nk,nkc->nc", sh_basis(dirs, 2), coeffs[:, :9])
    torch.testing.assert_close(out, expected)
    # Degree 0: colour is SH_C0 * dc, no +0.5 offset.
    torch.testing.assert_close(eval_sh(coeffs, dirs, 0), SH_C0 * coeffs[:, 0])


def test_rgb_dc_round_trip():
    rgb = torch.tensor([[0.0, 0.5, 1.0]], dtype=D)
    dc = rgb_to_sh_dc(rgb)
    torch.testing.assert_close(dc[0, 1], torch.tensor(0.0, dtype=D))
    torch.testing.assert_close(sh_dc_to_rgb(dc), rgb)
    # Renderer convention: eval_sh(dc) + 0.5 reproduces the colour.
    torch.testing.assert_close(eval_sh(dc[:, None, :], torch.tensor([[0.0, 0.0, 1.0]], dtype=D), 0) + 0.5, rgb)


def test_gradcheck_eval_sh():
    g = torch.Generator().manual_seed(2)
    coeffs = torch.randn(3, 25, 2, dtype=D, generator=g, requires_grad=True)
    dirs = torch.randn(3, 3, dtype=D, generator=g, requires_grad=True)
    for degree in (1, 4):
        assert torch.autograd.gradcheck(lambda c, d: eval_sh(c, d, degree), (coeffs, dirs))


def test_bad_inputs():
    with pytest.raises(ValueError, match="degree"):
        sh_basis(torch.ones(3), 5)
    with pytest.raises(ValueError, match="dirs"):
        sh_basis(torch.ones(4), 1)
    with pytest.raises(ValueError, match="coeffs"):
        eval_sh(torch.ones(2, 4, 3), torch.ones(2, 3), 2)
