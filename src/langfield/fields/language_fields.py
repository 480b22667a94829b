"""Language feature fields: the ``nn.Module`` classes that put CLIP-space features into a reconstruction.

Two representations, one contract (``render_*`` -> ``[..., E]`` features, not normalised):

- :class:`NGPLanguageField` (NeRF family): a :class:`~langfield.fields.semantic.HashFeatureField`
  rendered with the radiance field's own compositing weights (LERF, Kerr et al. 2023, Sec. 3.2).
  Per ray only the ``K`` heaviest samples are kept (:class:`RayWeights`), rescaled so they still
  sum to the ray's opacity; for surfaces a handful of samples carry all the weight.
- :class:`GaussianLanguageField`: a ``d``-dimensional code per Gaussian rendered through the same
  any-channel rasteriser as colour (:class:`SplatView`) and decoded to the embedding space by a
  per-scene :class:`~langfield.fields.semantic.FeatureAutoencoder` (LangSplat, Qin et al. 2024,
  Sec. 3.3).

Both learn a background feature (what a ray that hits nothing "means"), composited like a
background colour. The frozen geometry (:class:`RayWeights`, :class:`SplatView`) is computed once
per view by the language layer from the method's declared capabilities and reused every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from langfield.fields.semantic import FeatureAutoencoder, HashFeatureField, HashFeatureFieldConfig
from langfield.ops.splatting.projection import Projection
from langfield.ops.splatting.rasterize import rasterize_gaussians

__all__ = [
    "GaussianLanguageField",
    "LANGUAGE_FIELD_KINDS",
    "LanguageField",
    "NGPLanguageField",
    "RayWeights",
    "SplatView",
    "top_k_ray_weights",
]


@dataclass(frozen=True)
class RayWeights:
    """The ``K`` heaviest compositing samples of ``R`` rays.

    Attributes:
        positions: ``[R, K, 3]`` sample positions (world, normalised frame).
        weights: ``[R, K]`` compositing weights (0 for padding), rescaled to sum to ``accumulation``.
        accumulation: ``[R]`` ray opacity (sum of all its weights).
        footprints: ``[R, K]`` radius of the pixel's cone at each sample (distance x pixel angle),
            or ``None``; training jitters the samples by it (see :meth:`jittered`).
    """

    positions: Tensor
    weights: Tensor
    accumulation: Tensor
    footprints: Optional[Tensor] = None

    def __len__(self) -> int:
        return int(self.weights.shape[0])

    def select(self, index) -> "RayWeights":
        fp = None if self.footprints is None else self.footprints[index]
        return RayWeights(self.positions[index], self.weights[index], self.accumulation[index], fp)

    def to(self, device) -> "RayWeights":
        fp = None if self.footprints is None else self.footprints.to(device)
        return RayWeights(self.positions.to(device), self.weights.to(device), self.accumulation.to(device), fp)

    def jittered(self, generator: Optional[torch.Generator] = None, scale: float = 1.0) -> "RayWeights":
        """Samples moved by isotropic Gaussian noise of std ``scale x footprint``.

        A fine hash grid gives every training ray its own cells, so it can memorise each view's
        (inconsistent) 2D features instead of averaging them across views; spreading each sample
        over its pixel's footprint (the cone of Mip-NeRF, Barron et al. 2021, Sec. 3.1) makes
        neighbouring rays of different views share cells again.
        """
        if self.footprints is None or scale <= 0:
            return self
        noise = torch.randn(self.positions.shape, generator=generator, dtype=self.positions.dtype)
        pos = self.positions + noise.to(self.positions.device) * (scale * self.footprints)[..., None]
        return RayWeights(pos, self.weights, self.accumulation, self.footprints)

    @staticmethod
    def cat(parts: Sequence["RayWeights"]) -> "RayWeights":
        fps = None if any(p.footprints is None for p in parts) else torch.cat([p.footprints for p in parts])
        return RayWeights(
            torch.cat([p.positions for p in parts]), torch.cat([p.weights for p in parts]),
            torch.cat([p.accumulation for p in parts]), fps,
        )  # fmt: skip


def top_k_ray_weights(positions: Tensor, weights: Tensor, ray_indices: Tensor, num_rays: int, k: int) -> RayWeights:
    """Keep the ``k`` heaviest of each ray's packed samples.

    Args:
        positions: ``[N, 3]``; weights: ``[N]``; ray_indices: ``[N]`` int64 (any order).
        num_rays: ``R``; k: samples kept per ray (padding has weight 0).

    Returns:
        :class:`RayWeights` whose kept weights are rescaled to sum to each ray's total weight.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    device = weights.device
    acc = torch.zeros(num_rays, dtype=weights.dtype, device=device).index_add_(0, ray_indices, weights)
    out_p = torch.zeros(num_rays, k, 3, dtype=positions.dtype, device=device)
    out_w = torch.zeros(num_rays, k, dtype=weights.dtype, device=device)
    if weights.numel() > 0:
        # Sort by (ray, weight descending) in one key; rank within the ray = position - ray start.
        key = ray_indices.double() * 4.0 + (2.0 - weights.double().clamp(0.0, 1.0))
        order = torch.argsort(key)
        rays = ray_indices[order]
        counts = torch.bincount(rays, minlength=num_rays)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(order), device=device) - starts[rays]
        keep = rank < k
        sel = order[keep]
        out_p[rays[keep], rank[keep]] = positions[sel]
        out_w[rays[keep], rank[keep]] = weights[sel]
        total = out_w.sum(1)
        out_w = out_w * torch.where(total > 0, acc / total.clamp_min(1e-12), torch.zeros_like(total))[:, None]
    return RayWeights(out_p, out_w, acc)


class NGPLanguageField(nn.Module):
    """A hash-grid language field rendered with frozen NeRF weights (see module docstring).

    Args:
        aabb: ``[2, 3]`` box of the radiance field.
        embedding_dim: ``E`` of the teacher.
        config: hash grid and MLP sizes.
        latent_dim: ``None``: the head outputs ``E``-dimensional embeddings directly (LERF).
            ``d``: it outputs ``d``-dimensional codes that are composited and then decoded by a
            per-scene :class:`~langfield.fields.semantic.FeatureAutoencoder`, exactly like the
            Gaussian codes (LangSplat's autoencoder applied to a NeRF head: a much smaller output
            layer, and the decoder maps every render onto the scene's own feature manifold).
        hidden: autoencoder widths.
    """

    kind = "ngp"

    def __init__(
        self, aabb: Tensor, embedding_dim: int, config: HashFeatureFieldConfig = HashFeatureFieldConfig(),
        latent_dim: Optional[int] = None, hidden: Sequence[int] = (256, 128, 64, 32),
    ) -> None:  # fmt: skip
        super().__init__()
        self.embedding_dim = int(embedding_dim)
        self.latent_dim = None if latent_dim is None else int(latent_dim)
        out = self.latent_dim or self.embedding_dim
        self.field = HashFeatureField(aabb, out, config)
        self.background = nn.Parameter(torch.zeros(out))
        self.autoencoder = FeatureAutoencoder(embedding_dim, self.latent_dim, hidden) if self.latent_dim else None

    def render_codes(self, rw: RayWeights) -> Tensor:
        """``[R]`` rays -> ``[R, d or E]`` composited head outputs (only non-zero-weight samples are evaluated)."""
        r, k = rw.weights.shape
        live = rw.weights > 0
        out = torch.zeros(r, k, self.background.shape[0], dtype=self.background.dtype, device=rw.weights.device)
        if bool(live.any()):
            out[live] = self.field(rw.positions[live])
        feats = (rw.weights[..., None] * out).sum(1)
        return feats + (1.0 - rw.accumulation).clamp_min(0.0)[:, None] * self.background

    def render(self, rw: RayWeights) -> Tensor:
        """``[R]`` rays -> ``[R, E]`` features (decoded unit embeddings when the head is latent)."""
        codes = self.render_codes(rw)
        return codes if self.autoencoder is None else self.autoencoder.decode(codes)

    def point_features(self, points: Tensor) -> Tensor:
        """``[N, 3]`` world points -> ``[N, E]`` features of the field itself (3D selection)."""
        out = self.field(points)
        return out if self.autoencoder is None else self.autoencoder.decode(out)

    def param_groups(self, lr: float) -> list:
        return [
            {"params": [self.field.encoding.embeddings], "lr": lr, "weight_decay": 0.0},
            {"params": list(self.field.mlp.parameters()) + [self.background], "lr": lr, "weight_decay": 1e-6},
        ]


@dataclass(frozen=True)
class SplatView:
    """Frozen screen-space Gaussians of one camera (projection + activated opacities)."""

    projection: Projection
    opacities: Tensor
    width: int
    height: int


class GaussianLanguageField(nn.Module):
    """Per-Gaussian language codes + scene autoencoder (see module docstring).

    Args:
        num_gaussians: ``N`` (the frozen cloud's size).
        embedding_dim: ``E`` of the teacher.
        latent_dim: ``d`` of the codes (LangSplat: 3).
        hidden: autoencoder widths.
        tile_size, backend: rasteriser options (as the colour render).
    """

    kind = "gaussians"

    def __init__(
        self, num_gaussians: int, embedding_dim: int, latent_dim: int = 3,
        hidden: Sequence[int] = (256, 128, 64, 32), tile_size: int = 16, backend: str = "auto",
    ) -> None:  # fmt: skip
        super().__init__()
        self.embedding_dim, self.latent_dim = int(embedding_dim), int(latent_dim)
        self.tile_size, self.backend = tile_size, backend
        self.autoencoder = FeatureAutoencoder(embedding_dim, latent_dim, hidden)
        self.codes = nn.Parameter(torch.zeros(num_gaussians, latent_dim))
        self.background_code = nn.Parameter(torch.zeros(latent_dim))

    @property
    def num_gaussians(self) -> int:
        return int(self.codes.shape[0])

    def render_codes(self, view: SplatView) -> Tensor:
        """``[H, W, d]`` rendered codes of a frozen view (differentiable w.r.t. codes/background)."""
        p = view.projection
        if p.means2d.shape[0] != self.num_gaussians:
            raise ValueError(f"the view has {p.means2d.shape[0]} Gaussians but the language field {self.num_gaussians}")
        image, _ = rasterize_gaussians(
            p.means2d.detach(), p.conics.detach(), view.opacities, self.codes, p.depths, p.radii,
            view.width, view.height, background=self.background_code, tile_size=self.tile_size, backend=self.backend,
        )  # fmt: skip
        return image

    def render(self, view: SplatView) -> Tensor:
        """``[H, W, E]`` decoded unit features of a view."""
        return self.autoencoder.decode(self.render_codes(view))

    def gaussian_features(self) -> Tensor:
        """``[N, E]`` decoded unit feature of every Gaussian (for 3D selection / extraction)."""
        return self.autoencoder.decode(self.codes)


LanguageField = Union[NGPLanguageField, GaussianLanguageField]
LANGUAGE_FIELD_KINDS = {"ngp": NGPLanguageField, "gaussians": GaussianLanguageField}
