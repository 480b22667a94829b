"""3D language fields bound to a trained reconstruction whose geometry stays frozen.

Two representations, one contract (``render_*`` -> ``[..., E]`` features, not normalised):

- :class:`NGPLanguageField` (NeRF family): a :class:`~langfield.fields.semantic.HashFeatureField`
  rendered with the radiance field's own compositing weights (LERF, Kerr et al. 2023, Sec. 3.2;
  weights from :meth:`langfield.methods.ngp.NGP.sample_weights`). Per ray only the ``K``
  heaviest samples are kept (:class:`RayWeights`), rescaled so they still sum to the ray's
  opacity; for surfaces a handful of samples carry all the weight.
- :class:`GaussianLanguageField`: a ``d``-dimensional code per Gaussian rendered through the same
  any-channel rasteriser as colour and decoded to the embedding space by a per-scene
  :class:`~langfield.fields.semantic.FeatureAutoencoder` (LangSplat, Qin et al. 2024, Sec. 3.3).

Both learn a background feature (what a ray that hits nothing "means"), composited like a
background colour. Frozen geometry is computed once per view (:func:`ngp_view_weights`,
:func:`splat_view`) and reused every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import torch
from torch import Tensor, nn

from langfield.fields.semantic import FeatureAutoencoder, HashFeatureField, HashFeatureFieldConfig
from langfield.geometry.rays import rays_from_camera
from langfield.ops.splatting.projection import Projection, project_gaussians
from langfield.ops.splatting.rasterize import rasterize_gaussians
from langfield.types import Cameras

__all__ = [
    "RayWeights",
    "top_k_ray_weights",
    "ngp_view_weights",
    "NGPLanguageField",
    "SplatView",
    "splat_view",
    "GaussianLanguageField",
    "LANGUAGE_FIELD_KINDS",
]


@dataclass(frozen=True)
class RayWeights:
    """The ``K`` heaviest compositing samples of ``R`` rays.

    Attributes:
        positions: ``[R, K, 3]`` sample positions (world, normalised frame).
        weights: ``[R, K]`` compositing weights (0 for padding), rescaled to sum to ``accumulation``.
        accumulation: ``[R]`` ray opacity (sum of all its weights).
    """

    positions: Tensor
    weights: Tensor
    accumulation: Tensor

    def __len__(self) -> int:
        return int(self.weights.shape[0])

    def select(self, index: Tensor) -> "RayWeights":
        return RayWeights(self.positions[index], self.weights[index], self.accumulation[index])

    def to(self, device) -> "RayWeights":
        return RayWeights(self.positions.to(device), self.weights.to(device), self.accumulation.to(device))

    @staticmethod
    def cat(parts: Sequence["RayWeights"]) -> "RayWeights":
        return RayWeights(
            torch.cat([p.positions for p in parts]), torch.cat([p.weights for p in parts]),
            torch.cat([p.accumulation for p in parts]),
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


@torch.no_grad()
def ngp_view_weights(method, cameras: Cameras, index: int, k: int = 8, chunk: int = 16384) -> RayWeights:
    """Frozen-geometry :class:`RayWeights` of every pixel of camera ``index`` (row-major ``H*W``).

    ``method`` must provide ``sample_weights(rays)`` (:class:`~langfield.methods.ngp.NGP`)."""
    if not hasattr(method, "sample_weights"):
        raise TypeError(
            f"{type(method).__name__} cannot share its rendering weights with a language field "
            "(no sample_weights(rays)); train an 'ngp' or 'gaussians' run"
        )
    device = method.aabb.device
    rays = rays_from_camera(cameras, index, method.near, method.far).flatten()
    parts = []
    for start in range(0, len(rays), chunk):
        sub = rays[start : start + chunk].to(device)
        pos, w, ridx = method.sample_weights(sub)
        parts.append(top_k_ray_weights(pos, w, ridx, len(sub), k))
    return RayWeights.cat(parts)


class NGPLanguageField(nn.Module):
    """A hash-grid language field rendered with frozen NeRF weights (see module docstring)."""

    kind = "ngp"

    def __init__(self, aabb: Tensor, embedding_dim: int, config: HashFeatureFieldConfig = HashFeatureFieldConfig()):
        super().__init__()
        self.embedding_dim = int(embedding_dim)
        self.field = HashFeatureField(aabb, embedding_dim, config)
        self.background = nn.Parameter(torch.zeros(embedding_dim))

    def render(self, rw: RayWeights) -> Tensor:
        """``[R]`` rays -> ``[R, E]`` composited features (only non-zero-weight samples are evaluated)."""
        r, k = rw.weights.shape
        live = rw.weights > 0
        out = torch.zeros(r, k, self.embedding_dim, dtype=self.background.dtype, device=rw.weights.device)
        if bool(live.any()):
            out[live] = self.field(rw.positions[live])
        feats = (rw.weights[..., None] * out).sum(1)
        return feats + (1.0 - rw.accumulation).clamp_min(0.0)[:, None] * self.background

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


@torch.no_grad()
def splat_view(method, cameras: Cameras, index: int) -> SplatView:
    """Project a :class:`~langfield.methods.gaussians.Gaussians` run's cloud into camera ``index``."""
    if not hasattr(method, "cloud"):
        raise TypeError(f"{type(method).__name__} has no Gaussian cloud; train a 'gaussians' run")
    cloud, s = method.cloud, method.config.splat
    cam = cameras[index].to(cloud.means.device)
    c2w = cam.c2w[0][:3, :4]
    R = c2w[:, :3]
    w2c = torch.cat([R.T, -(R.T @ c2w[:, 3:])], dim=1)
    w, h = int(cam.widths[0]), int(cam.heights[0])
    proj = project_gaussians(cloud.means, cloud.quats, cloud.scales, w2c, cam.Ks[0], w, h, s.near, s.far, s.eps2d)
    return SplatView(proj, cloud.opacities.detach(), w, h)


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
