import pytest
import torch

from langfield.geometry.distortion import distort_points, undistort_points

D = torch.float64

# Realistic OpenCV (k1, k2, p1, p2, k3): a wide-angle barrel lens, a mild pincushion lens.
LENSES = [
    torch.tensor([-0.28, 0.07, 1e-4, -2e-4, 0.0]),
    torch.tensor([0.1, -0.05, 1e-3, 5e-4, 0.01]),
    torch.tensor([-0.05, 0.0, 0.0, 0.0, 0.0]),
]


def _grid(dtype=torch.float32) -> torch.Tensor:
    """Normalised coordinates covering a 4:3 image with ~62 degree horizontal field of view."""
    xs = torch.linspace(-0.6, 0.6, 25, dtype=dtype)
    ys = torch.linspace(-0.45, 0.45, 19, dtype=dtype)
    return torch.stack(torch.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2)


def test_known_value_by_hand():
    # x = 0.5, y = 0.2: r2 = 0.29; radial = 1 + 0.1 r2 = 1.029;
    # xd = 0.5 * 1.029 + 2 * 0.01 * 0.1 + 0 = 0.5165; yd = 0.2 * 1.029 + 0.01 * (0.29 + 0.08) = 0.2095.
    dist = torch.tensor([0.1, 0.0, 0.01, 0.0, 0.0], dtype=D)
    out = distort_points(torch.tensor([0.5, 0.2], dtype=D), dist)
    torch.testing.assert_close(out, torch.tensor([0.5165, 0.2095], dtype=D))
    # p2 term: xd gets p2 (r2 + 2 x^2), yd gets 2 p2 x y.
    out = distort_points(torch.tensor([0.5, 0.2], dtype=D), torch.tensor([0.0, 0.0, 0.0, 0.01, 0.0], dtype=D))
    torch.testing.assert_close(out, torch.tensor([0.5 + 0.01 * 0.79, 0.2 + 0.002], dtype=D))


@pytest.mark.parametrize("lens", range(len(LENSES)))
def test_undistort_inverts_distort(lens):
    dist = LENSES[lens]
    xy = _grid()
    torch.testing.assert_close(undistort_points(distort_points(xy, dist), dist), xy, atol=1e-6, rtol=0)
    xy64, d64 = _grid(D), dist.double()
    torch.testing.assert_close(undistort_points(distort_points(xy64, d64), d64), xy64, atol=1e-12, rtol=0)
    # And the other way round on distorted (image) coordinates.
    torch.testing.assert_close(distort_points(undistort_points(xy64, d64), d64), xy64, atol=1e-12, rtol=0)
    # Real distortion moves points: the test is not vacuous.
    assert float((distort_points(xy, dist) - xy).abs().max()) > 1e-3


def test_zero_coefficients_identity_and_per_point_coefficients():
    xy = _grid()
    zero = torch.zeros(5)
    torch.testing.assert_close(distort_points(xy, zero), xy, atol=0, rtol=0)
    torch.testing.assert_close(undistort_points(xy, zero), xy, atol=0, rtol=0)
    # [*B, 5] coefficients per point: half the points undistorted, half with a real lens.
    dist = torch.zeros(xy.shape[0], 5)
    dist[::2] = LENSES[0]
    out = distort_points(xy, dist)
    torch.testing.assert_close(out[1::2], xy[1::2], atol=0, rtol=0)
    torch.testing.assert_close(out[::2], distort_points(xy[::2], LENSES[0]))
    torch.testing.assert_close(undistort_points(out, dist), xy, atol=1e-6, rtol=0)


def test_undistort_gradient_is_inverse_jacobian():
    # The last Newton step carries the implicit-function gradient: gradcheck against finite differences.
    g = torch.Generator().manual_seed(0)
    xy = (0.4 * torch.rand(6, 2, dtype=D, generator=g) - 0.2).requires_grad_(True)
    dist = LENSES[1].double().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: undistort_points(a, b, num_iters=20), (xy, dist))
    assert torch.autograd.gradcheck(distort_points, (xy, dist))


def test_bad_shapes():
    with pytest.raises(ValueError, match="dist"):
        distort_points(torch.zeros(3, 2), torch.zeros(4))
    with pytest.raises(ValueError, match="xy"):
        distort_points(torch.zeros(3, 3), torch.zeros(5))
    with pytest.raises(ValueError, match="xy_distorted"):
        undistort_points(torch.zeros(3, 1), torch.zeros(5))
