"""The NeRF MLP (Mildenhall et al. 2020, Fig. 7), shared by vanilla NeRF and Mip-NeRF.

``encoded position -> 8 x 256 ReLU layers (input re-injected before the 5th) -> density`` and a
256-d feature; ``[feature, encoded direction] -> 128 -> RGB``. The positional encoding (NeRF) or the
integrated positional encoding (Mip-NeRF) is applied by the caller, so one class serves both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
from torch import Tensor, nn

from langfield.fields.mlp import MLP


@dataclass(frozen=True)
class NeRFFieldConfig:
    """Widths of the NeRF MLP (paper defaults)."""

    depth: int = 8
    width: int = 256
    skip_layer: int = 4
    view_width: int = 128


class NeRFField(nn.Module):
    """``(encoded positions [N, P], encoded directions [N, V]) -> (rgb logits [N, 3], raw density [N])``.

    Activations are left to the method (ReLU density for NeRF, shifted softplus for Mip-NeRF).
    """

    def __init__(self, position_dim: int, direction_dim: int, config: NeRFFieldConfig = NeRFFieldConfig()) -> None:
        super().__init__()
        self.config = config
        self.trunk = MLP(
            position_dim,
            config.width,
            config.depth - 1,
            config.width,
            skips=(config.skip_layer,),
            out_activation=torch.relu,
        )
        self.density_head = nn.Linear(config.width, 1)
        self.bottleneck = nn.Linear(config.width, config.width)
        self.view_net = MLP(config.width + direction_dim, config.view_width, 0, config.view_width, out_activation=torch.relu)
        self.rgb_head = nn.Linear(config.view_width, 3)

    def forward(self, encoded_positions: Tensor, encoded_directions: Tensor) -> Tuple[Tensor, Tensor]:
        h = self.trunk(encoded_positions)
        raw_density = self.density_head(h)[..., 0]
        feat = self.bottleneck(h)
        v = self.view_net(torch.cat([feat, encoded_directions], dim=-1))
        return self.rgb_head(v), raw_density
