"""Semantic feature heads: a hash-grid feature field (NeRF family) and a language autoencoder (Gaussians).

- :class:`HashFeatureField`: its own multiresolution hash grid + MLP mapping a 3D point to an
  ``E``-dimensional language embedding (LERF, Kerr et al. 2023, Sec. 3.2: a separate hash grid
  for language so colour and semantics do not compete for capacity). It is rendered with the
  radiance field's volume-rendering weights.
- :class:`FeatureAutoencoder`: LangSplat's scene-wise language autoencoder (Qin et al. 2024,
  Sec. 3.3): an MLP encoder ``E -> d`` and decoder ``d -> E`` trained on the scene's own 2D
  features, so each Gaussian stores a ``d``-dimensional code (``d = 3`` in the paper) that the
  any-channel rasteriser renders and the decoder lifts back to the embedding space.
  Optionally *standardised* (langfield's addition, not in LangSplat): inputs are the features minus
  the scene's mean feature, divided by their RMS distance to it. Image features that share one large
  common component (CLIP's modality gap: every image feature is far from every text feature in the
  same direction) otherwise leave the label-dependent part a small fraction of each vector, which
  the paper's loss on unit vectors barely sees.
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


#: Codes decoded at once by :meth:`FeatureAutoencoder.decode`.
DECODE_BLOCK = 4096


class FeatureAutoencoder(nn.Module):
    """LangSplat-style scene autoencoder ``E -> d -> E`` (Qin et al. 2024, Sec. 3.3).

    Args:
        embedding_dim: ``E``.
        latent_dim: ``d`` (LangSplat: 3).
        hidden: encoder widths; the decoder mirrors them.

    Buffers ``center [E]`` (zeros) and ``scale []`` (one) standardise the inputs once
    :meth:`standardize` has set them from the scene's features: ``encode(f) = enc((f - center) /
    scale)``, ``decode(z) = normalize(center + scale * dec(z))``. At their defaults both are the
    paper's plain autoencoder on unit features, bit for bit.
    """

    def __init__(self, embedding_dim: int, latent_dim: int = 3, hidden: Sequence[int] = (256, 128, 64, 32)):
        super().__init__()
        if embedding_dim < 1 or latent_dim < 1:
            raise ValueError(f"need embedding_dim >= 1 and latent_dim >= 1, got {embedding_dim}, {latent_dim}")
        self.embedding_dim, self.latent_dim = int(embedding_dim), int(latent_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.encoder = self._stack([embedding_dim, *self.hidden, latent_dim])
        self.decoder = self._stack([latent_dim, *reversed(self.hidden), embedding_dim])
        self.register_buffer("center", torch.zeros(self.embedding_dim))
        self.register_buffer("scale", torch.ones(()))

    @staticmethod
    def _stack(widths: Sequence[int]) -> nn.Sequential:
        layers = []
        for i in range(len(widths) - 1):
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            if i < len(widths) - 2:
                layers.append(nn.LayerNorm(widths[i + 1]))
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Autoencoders saved before standardisation existed have no center/scale: they are plain ones.
        state_dict.setdefault(prefix + "center", torch.zeros(self.embedding_dim))
        state_dict.setdefault(prefix + "scale", torch.ones(()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def standardized(self) -> bool:
        """Whether :meth:`standardize` set non-default statistics."""
        return bool(self.center.abs().sum() > 0) or float(self.scale) != 1.0

    @torch.no_grad()
    def standardize(self, features: Tensor, chunk: int = 65536) -> None:
        """Set ``center`` to the mean of ``features [P, E]`` and ``scale`` to their RMS distance to it.

        Raises:
            ValueError: ``features`` is not ``[P, E]`` with ``P >= 2``, is not finite, or all rows are equal.
        """
        if features.dim() != 2 or features.shape[1] != self.embedding_dim or features.shape[0] < 2:
            raise ValueError(f"standardize needs features [P >= 2, {self.embedding_dim}], got {tuple(features.shape)}")
        total = torch.zeros(self.embedding_dim, dtype=torch.float64)
        for part in features.split(chunk):
            total += part.double().sum(0).cpu()
        center = total / features.shape[0]
        sq = 0.0
        for part in features.split(chunk):
            sq += float((part.double().cpu() - center).pow(2).sum())
        scale = (sq / features.shape[0]) ** 0.5
        if not (torch.isfinite(center).all() and scale == scale and 0 < scale < float("inf")):
            raise ValueError(f"standardize: features must be finite and not all equal (RMS spread {scale})")
        self.center.copy_(center.to(self.center.dtype))
        self.scale.fill_(scale)

    def encode(self, features: Tensor) -> Tensor:
        """``[..., E]`` -> ``[..., d]``."""
        return self.encoder((features - self.center) / self.scale)

    def decode(self, codes: Tensor) -> Tensor:
        """``[..., d]`` -> ``[..., E]`` unit-norm embeddings.

        More than :data:`DECODE_BLOCK` codes are decoded block by block (the decoder's activations
        then stay in cache; at 200x200 on 2 CPU cores a first Gaussians query took 246 ms instead of
        293, mean of 3 alternating runs, decoding being most of it); the result is the same."""
        flat = codes.reshape(-1, codes.shape[-1])
        if flat.shape[0] <= DECODE_BLOCK:
            out = self._decode_rows(flat)
        else:
            out = torch.cat([self._decode_rows(block) for block in flat.split(DECODE_BLOCK)])
        return out.reshape(*codes.shape[:-1], out.shape[-1])

    def _decode_rows(self, codes: Tensor) -> Tensor:
        return F.normalize(self.center + self.scale * self.decoder(codes), dim=-1)

    def loss(self, features: Tensor) -> Tuple[Tensor, Tensor]:
        """Reconstruction loss of unit ``features [B, E]``: ``(loss, codes)``.

        LangSplat's L1 + (1 - cos) between the decoded unit vectors and the features. Standardised,
        the two terms are divided by ``scale`` and ``scale**2``: a decoded vector off by ``scale * e``
        then costs about what ``e`` costs the plain autoencoder, so the small part of each feature
        that differs across the scene gets the plain loss's weight (plain: ``scale = 1``, unchanged).
        """
        codes = self.encode(features)
        rec = self.decode(codes)
        l1 = (rec - features).abs().sum(-1).mean()
        cos = (1.0 - (rec * features).sum(-1)).mean()
        return l1 / self.scale + cos / self.scale.square(), codes  # scale 1: exactly l1 + cos
