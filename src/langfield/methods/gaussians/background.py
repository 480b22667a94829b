"""A background shell of initial Gaussians for unbounded scenes.

Structure-from-motion points of a real 360 capture cover the foreground well and the distant
background (sky, far walls, treelines) sparsely or not at all: COLMAP triangulates little there,
because far points have almost no parallax. Splatting can only move Gaussians that exist, so
without help the background is painted by stretched foreground Gaussians or floaters near the
cameras. The common fix is to seed Gaussians far away: 3DGS notes the weak background of sparse
initialisations (Kerbl et al. 2023, Sec. 7), and Mip-NeRF 360's contraction (Barron et al. 2022,
Sec. 2) is the same observation for NeRFs — the background lives on a far shell around the scene.

:func:`background_shell` puts ``N`` points evenly on a sphere around the scene centre with a
Fibonacci lattice (spacing ``~ R sqrt(4 pi / N)``, so the initial 3-nearest-neighbour scales of
:meth:`~langfield.fields.gaussian_cloud.GaussianCloud.from_points` are that spacing and the
shell is closed). Colours: each shell point takes the colour of the sparse point nearest to it *in
direction* among the farther half of the sparse points (distance from the centre above the
median). Seen from cameras near the centre, a shell point covers the same viewing directions as
those far points, which are background themselves, so this is a first guess of the sky or far
wall in that direction; the near half is left out because it is the foreground object, which a
camera looking outward does not see behind itself. Without sparse points (or colours) the shell
is grey (0.5): random colours would add noise to the whole background that training must remove.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["background_shell", "fibonacci_sphere"]

_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))


def fibonacci_sphere(num: int) -> Tensor:
    """``[num, 3]`` unit vectors spread evenly over the sphere (Fibonacci lattice).

    Point ``i`` has ``z = 1 - (2 i + 1) / num`` and azimuth ``i`` golden angles, so every point
    covers an equal area ``4 pi / num``.
    """
    if num < 1:
        raise ValueError(f"fibonacci_sphere: num must be >= 1, got {num}")
    i = torch.arange(num, dtype=torch.float64)
    z = 1.0 - (2.0 * i + 1.0) / num
    rho = torch.sqrt((1.0 - z * z).clamp_min(0.0))
    phi = i * _GOLDEN_ANGLE
    return torch.stack([rho * torch.cos(phi), rho * torch.sin(phi), z], dim=-1).float()


def background_shell(
    num: int,
    centre: Tensor,
    radius: float,
    points: Optional[Tensor] = None,
    colors: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """``num`` points on the sphere ``|x - centre| = radius`` and their initial colours.

    Args:
        num: number of shell points (>= 1).
        centre: ``[3]`` world centre of the sphere.
        radius: its radius (world units, > 0).
        points, colors: optional sparse points ``[P, 3]`` and their colours ``[P, 3]`` in
            ``[0, 1]``: the shell colours are taken from them (see the module docstring).

    Returns:
        ``(points [num, 3], colors [num, 3])`` float32, colours in ``[0, 1]``.
    """
    if radius <= 0 or not math.isfinite(radius):
        raise ValueError(f"background_shell: radius must be a finite number > 0, got {radius}")
    centre = torch.as_tensor(centre, dtype=torch.float32).reshape(3)
    directions = fibonacci_sphere(num)
    shell = centre + radius * directions
    if points is None or colors is None or len(points) == 0:
        return shell, torch.full((num, 3), 0.5)
    offsets = torch.as_tensor(points, dtype=torch.float32) - centre
    dist = torch.linalg.vector_norm(offsets, dim=-1)
    far = torch.argsort(dist)[len(dist) // 2 :]  # the farther half (at least one point)
    far_dirs = (offsets[far] / dist[far, None].clamp_min(1e-12)).double().numpy()
    from scipy.spatial import cKDTree

    # Nearest unit vector in the Euclidean sense = largest cosine = nearest in direction.
    _, idx = cKDTree(far_dirs).query(directions.double().numpy(), k=1)
    far_colors = torch.as_tensor(colors, dtype=torch.float32)[far]
    return shell, far_colors[torch.from_numpy(np.asarray(idx, dtype=np.int64))].clamp(0.0, 1.0)
