"""Mip-NeRF (Barron et al. 2021): conical frustums, integrated positional encoding, one multiscale MLP.

Sec. 3: each interval of a pixel's cone is approximated by a Gaussian (eqs. 7-8) whose IPE (eq. 14)
feeds a single MLP that is queried twice: 128 stratified coarse intervals, then 128 intervals resampled
from the blurred coarse weights (Sec. 3.2, padding 0.01). Loss ``0.1 * coarse + fine`` MSE (eq. 15).
Density = softplus(raw - 1); colour padded sigmoid (pad 0.001). Adam lr 5e-4 -> 5e-6 log-linear with a
2500-step (here: first 1% of progress, at most) 0.01x warm-up (App.).
"""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Any, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from langfield._checks import InputError, check_fields, check_finite_number
from langfield.configs import check_field_types
from langfield.fields.nerf_field import NeRFField, NeRFFieldConfig
from langfield.methods.base import RayMethod, SceneInfo
from langfield.methods.schedules import ProgressLR, log_linear
from langfield.ops.encoding import (
    integrated_positional_encoding,
    integrated_positional_encoding_dim,
    positional_encoding,
    positional_encoding_dim,
)
from langfield.ops.sampling import conical_frustum_to_gaussian, mipnerf_blur_weights, sample_pdf_edges, stratified_bins
from langfield.ops.volume_rendering import render_rays
from langfield.types import Batch, Rays, RenderOutput


@dataclass(frozen=True)
class MipNeRFConfig:
    """Mip-NeRF hyper-parameters (paper defaults). ``depth_loss_weight`` (0 = off, the paper): see
    :class:`~langfield.methods.nerf.NeRFConfig` (the coarse term weighted by ``coarse_loss_mult`` too)."""

    field: NeRFFieldConfig = dc_field(default_factory=NeRFFieldConfig)
    num_samples: int = 128
    min_deg: int = 0
    max_deg: int = 16
    direction_freqs: int = 4
    coarse_loss_mult: float = 0.1
    resample_padding: float = 0.01
    density_bias: float = -1.0
    rgb_padding: float = 0.001
    lr: float = 5e-4
    lr_final: float = 5e-6
    warmup_fraction: float = 0.01
    warmup_mult: float = 0.01
    depth_loss_weight: float = 0.0

    def __post_init__(self) -> None:
        check_field_types(self)
        check_fields(self, int_min_1=("num_samples",), int_min_0=("min_deg", "max_deg", "direction_freqs"),
                     non_negative=("coarse_loss_mult", "resample_padding", "rgb_padding", "depth_loss_weight"),
                     positive=("lr", "lr_final"),
                     fraction=("warmup_fraction", "warmup_mult"))  # fmt: skip
        check_finite_number(self.density_bias, "MipNeRFConfig.density_bias")
        if self.min_deg > self.max_deg:
            raise InputError(f"MipNeRFConfig.min_deg ({self.min_deg}) must be <= max_deg ({self.max_deg})")
        check_field_types(self.field)
        check_fields(self.field, "MipNeRFConfig.field", int_min_1=("depth", "width", "view_width"), int_min_0=("skip_layer",))


@dataclass
class MipNeRFOutputs:
    render: RenderOutput
    coarse: RenderOutput

    @property
    def rgb(self) -> Tensor:
        return self.render.rgb


class MipNeRF(RayMethod):
    """Mip-NeRF with a single MLP shared by the coarse and fine passes."""

    def __init__(self, scene: SceneInfo, config: MipNeRFConfig = MipNeRFConfig()) -> None:
        super().__init__()
        self.config = config
        self.depth_loss_weight = config.depth_loss_weight
        self.near, self.far = scene.near, scene.far
        self.set_ray_space(scene.ndc)
        pos_dim = integrated_positional_encoding_dim(config.min_deg, config.max_deg, 3)
        dir_dim = positional_encoding_dim(3, config.direction_freqs)
        self.mlp = NeRFField(pos_dim, dir_dim, config.field)

    def _render(self, rays: Rays, edges: Tensor, background: Tensor):
        cfg = self.config
        ts, te = edges[..., :-1], edges[..., 1:]

        def fn(t_starts: Tensor, t_ends: Tensor, ray_indices):
            means, cov_diag = conical_frustum_to_gaussian(rays.directions, t_starts, t_ends, rays.radii)
            means = means + rays.origins[:, None, :]
            enc = integrated_positional_encoding(means, cov_diag, cfg.min_deg, cfg.max_deg)
            dirs = rays.directions[:, None, :].expand_as(means)
            rgb_logits, raw = self.mlp(enc, positional_encoding(dirs, cfg.direction_freqs))
            rgb = torch.sigmoid(rgb_logits) * (1 + 2 * cfg.rgb_padding) - cfg.rgb_padding
            return rgb, F.softplus(raw + cfg.density_bias)

        return render_rays(ts, te, fn, background=background)

    def outputs(self, rays: Rays, background: Tensor) -> MipNeRFOutputs:
        cfg = self.config
        edges = stratified_bins(rays.near, rays.far, cfg.num_samples, randomized=self.training)
        coarse, aux = self._render(rays, edges, background)
        weights = mipnerf_blur_weights(aux.weights.detach(), cfg.resample_padding)
        fine_edges = sample_pdf_edges(edges, weights, cfg.num_samples, randomized=self.training).detach()
        fine, _ = self._render(rays, fine_edges, background)
        return MipNeRFOutputs(render=fine, coarse=coarse)

    def losses(self, outputs: MipNeRFOutputs, batch: Batch) -> Dict[str, Tensor]:
        fine = F.mse_loss(outputs.render.rgb, batch.rgb)
        coarse = F.mse_loss(outputs.coarse.rgb, batch.rgb)
        mult = self.config.coarse_loss_mult
        loss = fine + mult * coarse
        terms = {"mse": fine.detach(), "mse_coarse": coarse.detach()}
        depth = self.depth_term(outputs.render, batch)
        if depth is not None:
            depth_coarse = self.depth_term(outputs.coarse, batch)
            loss = loss + self.depth_loss_weight * (depth + mult * depth_coarse)
            terms.update(depth_l1=depth.detach(), depth_l1_coarse=depth_coarse.detach())
        return {"loss": loss, **terms}

    def optimizers(self, max_steps: int) -> Tuple[List[torch.optim.Optimizer], List[Any]]:
        cfg = self.config
        opt = torch.optim.Adam(self.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-6)
        schedule = log_linear(cfg.lr, cfg.lr_final, cfg.warmup_fraction, cfg.warmup_mult)
        return [opt], [ProgressLR(opt, schedule, max_steps)]
