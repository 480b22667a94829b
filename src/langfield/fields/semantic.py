"""Semantic feature heads: a hash-grid feature field (NeRF family) and a language autoencoder (Gaussians).

- :class:`HashFeatureField`: its own multiresolution hash grid + MLP mapping a 3D point to an
  ``E``-dimensional language embedding (LERF, Kerr et al. 2023, Sec. 3.2: a separate hash grid
  for language so colour and semantics do not compete for capacity). It is rendered with the
  radiance field's volume-rendering weights.
- :class:`FeatureAutoencoder`: LangSplat's scene-wise language autoencoder (Qin et al. 2024,
  Sec. 3.3): an MLP encoder ``E -> d`` and decoder ``d -> E`` trained on the scene's own 2D
  features, so each Gaussian stores a ``d``-dimensional code (``d = 3`` in the paper) that the
  any-channel rasteriser renders and the decoder lifts back to the embedding space.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from langfield.fields.mlp import MLP
from langfield.ops.hash_encoding import HashGridConfig, HashGridEncoding

__all__ = ["HashFeatureFieldConfig", "HashFeatureField", "FeatureAutoencoder"]


@dataclass(frozen=True)
class HashFeatureFieldConfig:
    """Sizes of the language hash grid and its MLP."""

    hash_grid: HashGridConfig = field(
        default_factory=lambda: HashGridConfig(num_levels=12, features_per_level=4, log2_hashmap_size=18, max_resolution=512)
    )
    hidden_dim: int = 128
    num_hidden: int = 2

    def __post_init__(self) -> None:
        if self.hidden_dim < 1 or self.num_hidden < 0:
            raise ValueError("HashFeatureFieldConfig needs hidden_dim >= 1 and num_hidden >= 0")


class HashFeatureField(nn.Module):
    """World points inside ``aabb [2, 3]`` -> ``[N, E]`` language features (not normalised).

    Points outside the box are clamped onto it (their rendering weight is ~0 there anyway).
    """

    def __init__(self, aabb: Tensor, embedding_dim: int, config: HashFeatureFieldConfig = HashFeatureFieldConfig()):
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        self.config = config
        self.embedding_dim = int(embedding_dim)
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3).clone())
        self.encoding = HashGridEncoding(config.hash_grid)
        self.mlp = MLP(self.encoding.output_dim, config.hidden_dim, config.num_hidden, embedding_dim)

    def forward(self, points: Tensor) -> Tensor:
        """``points [N, 3]`` (world) -> ``[N, E]``."""
        x = ((points - self.aabb[0]) / (self.aabb[1] - self.aabb[0])).clamp(0.0, 1.0)
        return self.mlp(self.encoding(x))


class FeatureAutoencoder(nn.Module):
    """LangSplat-style scene autoencoder ``E -> d -> E`` (Qin et al. 2024, Sec. 3.3).

    Args:
        embedding_dim: ``E``.
        latent_dim: ``d`` (LangSplat: 3).
        hidden: encoder widths; the decoder mirrors them.
    """

    def __init__(self, embedding_dim: int, latent_dim: int = 3, hidden: Sequence[int] = (256, 128, 64, 32)):
        super().__init__()
        if embedding_dim < 1 or latent_dim < 1:
            raise ValueError(f"need embedding_dim >= 1 and latent_dim >= 1, got {embedding_dim}, {latent_dim}")
        self.embedding_dim, self.latent_dim = int(embedding_dim), int(latent_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.encoder = self._stack([embedding_dim, *self.hidden, latent_dim])
        self.decoder = self._stack([latent_dim, *reversed(self.hidden), embedding_dim])

    @staticmethod
    def _stack(widths: Sequence[int]) -> nn.Sequential:
        layers = []
        for i in range(len(widths) - 1):
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            if i < len(widths) - 2:
                layers.append(nn.LayerNorm(widths[i + 1]))
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    def encode(self, features: Tensor) -> Tensor:
        """``[..., E]`` -> ``[..., d]``."""
        return self.encoder(features)

    def decode(self, codes: Tensor) -> Tensor:
        """``[..., d]`` -> ``[..., E]`` unit-norm embeddings."""
        return F.normalize(self.decoder(codes), dim=-1)

    def loss(self, features: Tensor) -> Tuple[Tensor, Tensor]:
        """Reconstruction loss of unit ``features [B, E]``: ``(L1 + (1 - cos), codes)`` (LangSplat uses L1 + cosine)."""
        codes = self.encode(features)
        rec = self.decode(codes)
        loss = (rec - features).abs().sum(-1).mean() + (1.0 - (rec * features).sum(-1)).mean()
        return loss, codes
