"""Instant-NGP radiance field: multiresolution hash grid + tiny MLPs (Müller et al. 2022, Sec. 5.4).

Density network: hash features ``[L*F]`` -> one hidden layer (64) -> ``1 + geo_feat_dim`` outputs; the
first is the log-density (exponential activation, truncated gradient). Colour network: the geometry
features concatenated with the spherical-harmonics encoding of the view direction (16 coefficients,
"degree 4" in the paper's band count) -> two hidden layers (64) -> RGB with a sigmoid.

Object scenes encode points of the box ``aabb`` mapped to ``[0, 1]^3`` (zero density outside it).
Unbounded scenes (``contraction="l2"`` or ``"linf"``) encode the Mip-NeRF 360 contracted point
(Barron et al. 2022, eq. 10; :mod:`langfield.ops.contraction`): the box becomes ``[-1, 1]^3``,
all of space is squeezed into ``[-2, 2]^3``, and ``(y + 2) / 4`` is hashed, so the grid covers
the whole scene and every point has a density.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from langfield.fields.activations import trunc_exp
from langfield.fields.mlp import MLP
from langfield.geometry.spherical_harmonics import sh_basis
from langfield.ops.contraction import CONTRACTED_BOX, CONTRACTIONS, contract_from_box
from langfield.ops.hash_encoding import HashGridConfig, HashGridEncoding


@dataclass(frozen=True)
class NGPFieldConfig:
    """Sizes of the Instant-NGP field (paper defaults)."""

    hash_grid: HashGridConfig = field(default_factory=HashGridConfig)
    hidden_dim: int = 64
    geo_feat_dim: int = 15
    color_hidden_layers: int = 2
    sh_degree: int = 3
    density_bias: float = -1.0


class NGPField(nn.Module):
    """Maps world points inside ``aabb [2, 3]`` (anywhere, with a ``contraction``) and unit view
    directions to density and colour.

    Args:
        aabb: ``[2, 3]`` scene box (min, max): the encoded region, or the foreground that the
            contraction keeps undistorted.
        config: sizes.
        contraction: ``None`` (bounded), ``"l2"`` or ``"linf"`` (see the module docstring).
    """

    def __init__(self, aabb: Tensor, config: NGPFieldConfig = NGPFieldConfig(), contraction: Optional[str] = None) -> None:
        super().__init__()
        if contraction is not None and contraction not in CONTRACTIONS:
            raise ValueError(f"NGPField: contraction must be None or one of {CONTRACTIONS}, got {contraction!r}")
        self.config = config
        self.contraction = contraction
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3))
        self.encoding = HashGridEncoding(config.hash_grid)
        self.density_net = MLP(
            self.encoding.output_dim, config.hidden_dim, 1, 1 + config.geo_feat_dim, bias=False
        )
        self.color_net = MLP(
            config.geo_feat_dim + (config.sh_degree + 1) ** 2,
            config.hidden_dim,
            config.color_hidden_layers,
            3,
            bias=False,
            out_activation=torch.sigmoid,
        )

    def normalize(self, points: Tensor) -> Tensor:
        """World points ``[N, 3]`` -> ``[0, 1]^3`` encoder coordinates (box, or contracted space)."""
        if self.contraction is not None:
            return self.normalize_contracted(contract_from_box(points, self.aabb, norm=self.contraction))
        return (points - self.aabb[0]) / (self.aabb[1] - self.aabb[0])

    @staticmethod
    def normalize_contracted(contracted: Tensor) -> Tensor:
        """Contracted points ``[N, 3]`` in ``[-2, 2]^3`` -> ``[0, 1]^3`` encoder coordinates."""
        return (contracted + CONTRACTED_BOX) / (2.0 * CONTRACTED_BOX)

    def density_and_features(self, points: Tensor) -> Tuple[Tensor, Tensor]:
        """World ``points [N, 3]`` -> ``(sigmas [N], geo_features [N, geo_feat_dim])``; zero density
        outside the box unless the field is contracted."""
        return self.density_and_features_normalized(self.normalize(points))

    def density_and_features_normalized(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """The same from encoder coordinates ``x [N, 3]`` (zero density outside ``[0, 1]^3``)."""
        inside = ((x >= 0) & (x <= 1)).all(-1)
        h = self.density_net(self.encoding(x.clamp(0.0, 1.0)))
        sigmas = trunc_exp(h[:, 0] + self.config.density_bias) * inside
        return sigmas, h[:, 1:]

    def density(self, points: Tensor) -> Tensor:
        """``[N, 3] -> [N]`` densities."""
        return self.density_and_features(points)[0]

    def color(self, geo_features: Tensor, directions: Tensor) -> Tensor:
        """``geo_features [N, G]``, unit ``directions [N, 3]`` -> ``rgb [N, 3]``."""
        sh = sh_basis(directions, self.config.sh_degree)
        return self.color_net(torch.cat([geo_features, sh.to(geo_features.dtype)], dim=-1))

    def color_of_rays(self, geo_features: Tensor, ray_directions: Tensor, ray_indices: Tensor) -> Tensor:
        """:meth:`color` of packed samples, with the view direction taken once per ray.

        The first colour layer is split, ``W [geo; sh] = W_geo geo + W_sh sh``: the direction half
        (spherical harmonics and their product with ``W_sh``) is computed for the ``R`` rays and
        gathered, instead of for every sample. Equal to
        ``color(geo_features, ray_directions[ray_indices])`` up to float rounding.

        Args:
            geo_features: ``[N, G]``; ray_directions: unit ``[R, 3]``; ray_indices: ``[N]`` int64.

        Returns:
            ``rgb [N, 3]``.
        """
        net = self.color_net
        if not net.hidden or net.skips:  # no first hidden layer to split: the plain path
            return self.color(geo_features, ray_directions[ray_indices])
        first = net.hidden[0]
        g = geo_features.shape[-1]
        sh = sh_basis(ray_directions, self.config.sh_degree).to(geo_features.dtype)
        per_ray = sh @ first.weight[:, g:].T
        if first.bias is not None:
            per_ray = per_ray + first.bias
        h = net.activate(torch.addmm(per_ray[ray_indices], geo_features, first.weight[:, :g].T))
        for layer in net.hidden[1:]:
            h = net.activate(layer(h))
        out = net.output(h)
        return net.out_activation(out) if net.out_activation is not None else out

    def forward(self, points: Tensor, directions: Tensor) -> Tuple[Tensor, Tensor]:
        """``(rgb [N, 3], sigmas [N])``."""
        sigmas, feats = self.density_and_features(points)
        return self.color(feats, directions), sigmas
