"""Vanilla NeRF (Mildenhall et al. 2020): positional encoding, coarse + fine MLPs, hierarchical sampling.

Sec. 5.2: ``num_coarse`` stratified samples feed the coarse network; its weights define a piecewise
constant PDF from which ``num_fine`` more samples are drawn; the fine network is evaluated at the union
of both sets. Loss: MSE of coarse plus MSE of fine renders (eq. 6). Adam lr 5e-4 decaying
exponentially to 5e-5 (Sec. 5.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Any, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from langfield._checks import check_fields
from langfield.configs import check_field_types
from langfield.fields.nerf_field import NeRFField, NeRFFieldConfig
from langfield.methods.base import RayMethod, SceneInfo
from langfield.methods.schedules import ProgressLR, exponential_decay
from langfield.ops.encoding import positional_encoding, positional_encoding_dim
from langfield.ops.sampling import sample_pdf, stratified_bins
from langfield.ops.volume_rendering import render_rays
from langfield.types import Batch, Rays, RenderOutput


@dataclass(frozen=True)
class NeRFConfig:
    """NeRF hyper-parameters (paper defaults).

    ``depth_loss_weight`` (0 = off, the paper) adds that weight times
    :func:`~langfield.ops.depth_supervision.depth_l1` of the coarse and of the fine render against the
    dataset's depth maps (``--set depth_loss_weight=W``; langfield's expected-depth L1, not DS-NeRF).
    """

    field: NeRFFieldConfig = dc_field(default_factory=NeRFFieldConfig)
    num_coarse: int = 64
    num_fine: int = 128
    position_freqs: int = 10
    direction_freqs: int = 4
    density_noise_std: float = 0.0
    lr: float = 5e-4
    lr_final: float = 5e-5
    depth_loss_weight: float = 0.0

    def __post_init__(self) -> None:
        check_field_types(self)
        check_fields(self, int_min_1=("num_coarse",), int_min_0=("num_fine", "position_freqs", "direction_freqs"),
                     non_negative=("density_noise_std", "depth_loss_weight"), positive=("lr", "lr_final"))  # fmt: skip
        check_field_types(self.field)
        check_fields(self.field, "NeRFConfig.field", int_min_1=("depth", "width", "view_width"), int_min_0=("skip_layer",))


@dataclass
class NeRFOutputs:
    """Fine render (``render``) and coarse render (``coarse``) of ``R`` rays."""

    render: RenderOutput
    coarse: RenderOutput

    @property
    def rgb(self) -> Tensor:
        return self.render.rgb


def _edges_to_intervals(t: Tensor) -> Tuple[Tensor, Tensor]:
    return t[..., :-1], t[..., 1:]


class NeRF(RayMethod):
    """Vanilla NeRF with separate coarse and fine networks."""

    def __init__(self, scene: SceneInfo, config: NeRFConfig = NeRFConfig()) -> None:
        super().__init__()
        self.config = config
        self.depth_loss_weight = config.depth_loss_weight
        self.near, self.far = scene.near, scene.far
        self.set_ray_space(scene.ndc)
        self.scale = 1.0
        pos_dim = positional_encoding_dim(3, config.position_freqs)
        dir_dim = positional_encoding_dim(3, config.direction_freqs)
        self.coarse_field = NeRFField(pos_dim, dir_dim, config.field)
        self.fine_field = NeRFField(pos_dim, dir_dim, config.field)

    def _rgb_sigma_fn(self, net: NeRFField, rays: Rays, t_starts: Tensor):
        cfg = self.config

        def fn(ts: Tensor, te: Tensor, ray_indices):
            t_mid = 0.5 * (ts + te)
            pts = rays.origins[:, None, :] + rays.directions[:, None, :] * t_mid[..., None]
            dirs = rays.directions[:, None, :].expand_as(pts)
            rgb_logits, raw = net(
                positional_encoding(pts, cfg.position_freqs), positional_encoding(dirs, cfg.direction_freqs)
            )
            if self.training and cfg.density_noise_std > 0:
                raw = raw + torch.randn_like(raw) * cfg.density_noise_std
            return torch.sigmoid(rgb_logits), F.relu(raw)

        return fn

    def outputs(self, rays: Rays, background: Tensor) -> NeRFOutputs:
        cfg = self.config
        # Bins are edges of the sampling intervals; the last interval is closed at ``far``.
        edges = stratified_bins(rays.near, rays.far, cfg.num_coarse, randomized=self.training)
        ts, te = _edges_to_intervals(edges)
        coarse, aux = render_rays(ts, te, self._rgb_sigma_fn(self.coarse_field, rays, ts), background=background)
        t_mid = 0.5 * (ts + te)
        fine_t = sample_pdf(edges, aux.weights[..., :].detach(), cfg.num_fine, randomized=self.training)
        all_mid = torch.sort(torch.cat([t_mid, fine_t], -1), -1).values
        # Intervals around the merged sample points (midpoints between neighbours).
        mids = 0.5 * (all_mid[..., 1:] + all_mid[..., :-1])
        edges_f = torch.cat([rays.near, mids, rays.far], -1)
        ts_f, te_f = _edges_to_intervals(edges_f)
        fine, _ = render_rays(ts_f, te_f, self._rgb_sigma_fn(self.fine_field, rays, ts_f), background=background)
        return NeRFOutputs(render=fine, coarse=coarse)

    def losses(self, outputs: NeRFOutputs, batch: Batch) -> Dict[str, Tensor]:
        fine = F.mse_loss(outputs.render.rgb, batch.rgb)
        coarse = F.mse_loss(outputs.coarse.rgb, batch.rgb)
        loss = fine + coarse
        terms = {"mse": fine.detach(), "mse_coarse": coarse.detach()}
        depth = self.depth_term(outputs.render, batch)
        if depth is not None:
            depth_coarse = self.depth_term(outputs.coarse, batch)
            loss = loss + self.depth_loss_weight * (depth + depth_coarse)
            terms.update(depth_l1=depth.detach(), depth_l1_coarse=depth_coarse.detach())
        return {"loss": loss, **terms}

    def optimizers(self, max_steps: int) -> Tuple[List[torch.optim.Optimizer], List[Any]]:
        cfg = self.config
        opt = torch.optim.Adam(self.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-7)
        return [opt], [ProgressLR(opt, exponential_decay(cfg.lr, cfg.lr_final), max_steps)]
