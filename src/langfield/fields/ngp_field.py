"""Instant-NGP radiance field: multiresolution hash grid + tiny MLPs (Müller et al. 2022, Sec. 5.4).

Density network: hash features ``[L*F]`` -> one hidden layer (64) -> ``1 + geo_feat_dim`` outputs; the
first is the log-density (exponential activation, truncated gradient). Colour network: the geometry
features concatenated with the spherical-harmonics encoding of the view direction (16 coefficients,
"degree 4" in the paper's band count) -> two hidden layers (64) -> RGB with a sigmoid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Tuple

import torch
from torch import Tensor, nn

from langfield.fields.activations import trunc_exp
from langfield.fields.mlp import MLP
from langfield.geometry.spherical_harmonics import sh_basis
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
    """Maps world points inside ``aabb [2, 3]`` and unit view directions to density and colour."""

    def __init__(self, aabb: Tensor, config: NGPFieldConfig = NGPFieldConfig()) -> None:
        super().__init__()
        self.config = config
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
        """World points ``[N, 3]`` -> ``[0, 1]^3`` box coordinates."""
        return (points - self.aabb[0]) / (self.aabb[1] - self.aabb[0])

    def density_and_features(self, points: Tensor) -> Tuple[Tensor, Tensor]:
        """``points [N, 3]`` -> ``(sigmas [N], geo_features [N, geo_feat_dim])``; zero density outside the box."""
        x = self.normalize(points)
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

    def forward(self, points: Tensor, directions: Tensor) -> Tuple[Tensor, Tensor]:
        """``(rgb [N, 3], sigmas [N])``."""
        sigmas, feats = self.density_and_features(points)
        return self.color(feats, directions), sigmas
