"""Instant-NGP (Müller et al. 2022): hash-grid field, occupancy-grid ray marching, early termination.

Training recipe (paper Sec. 4-5 and the nerfacc re-implementation): Adam (beta 0.9/0.99, eps 1e-15,
lr 1e-2, L2 1e-6 on the MLP weights only), a short linear warm-up and x0.33 drops at 50/75/90 % of
training; random background colours for RGBA data; occupancy grid refreshed every 16 steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field as dc_field
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from langfield.fields.ngp_field import NGPField, NGPFieldConfig
from langfield.methods.base import Batch, Method, SceneInfo
from langfield.methods.schedules import ProgressLR, warmup_multistep
from langfield.ops.occupancy import OccupancyGrid, OccupancyGridConfig, PackedSamples, march_rays
from langfield.ops.volume_rendering import render_rays, render_transmittance_from_density
from langfield.types import Rays, RenderOutput


@dataclass(frozen=True)
class NGPConfig:
    """Instant-NGP hyper-parameters.

    Attributes:
        field: hash grid and MLP sizes.
        grid: occupancy grid settings.
        steps_per_diagonal: marching step = (aabb diagonal) / this (NGP: sqrt(3)/1024 of a unit cube
            -> 1024 steps across the diagonal).
        cone_angle: exponential stepping for unbounded scenes (NGP: 1/256); 0 for object scenes.
        early_stop_eps: drop samples once transmittance falls below this (NGP: 1e-4).
        alpha_threshold: drop samples whose opacity is below this after warm-up (skips near-empty space).
        lr, weight_decay: Adam settings (weight decay on MLP weights only).
        chunk: rays per evaluation chunk.
    """

    field: NGPFieldConfig = dc_field(default_factory=NGPFieldConfig)
    grid: OccupancyGridConfig = dc_field(default_factory=OccupancyGridConfig)
    steps_per_diagonal: int = 1024
    cone_angle: float = 0.0
    early_stop_eps: float = 1e-4
    alpha_threshold: float = 1e-3
    lr: float = 1e-2
    weight_decay: float = 1e-6
    max_samples_per_ray: int = 1024


@dataclass
class NGPOutputs:
    """Outputs of :meth:`NGP.outputs` for ``R`` rays."""

    render: RenderOutput
    num_samples: int

    @property
    def rgb(self) -> Tensor:
        return self.render.rgb


class NGP(Method):
    """Instant-NGP method: see module docstring."""

    def __init__(self, scene: SceneInfo, config: NGPConfig = NGPConfig()) -> None:
        super().__init__()
        self.config = config
        aabb = scene.scene_box.float().reshape(2, 3)
        self.field = NGPField(aabb, config.field)
        self.grid = OccupancyGrid(aabb, config.grid)
        self.register_buffer("aabb", aabb.clone())
        diag = float((aabb[1] - aabb[0]).norm())
        self.step_size = diag / config.steps_per_diagonal
        self.near, self.far = scene.near, scene.far
        self._step = 0

    # -- sampling -------------------------------------------------------------------------
    def _march(self, rays: Rays, jitter: bool) -> PackedSamples:
        return march_rays(
            rays.origins,
            rays.directions,
            rays.near,
            rays.far,
            self.grid,
            self.aabb,
            self.step_size,
            cone_angle=self.config.cone_angle,
            jitter=jitter,
            max_samples_per_ray=self.config.max_samples_per_ray,
        )

    @torch.no_grad()
    def _prune_samples(self, rays: Rays, samples: PackedSamples) -> PackedSamples:
        """Early ray termination and empty-sample skipping with a gradient-free density pass."""
        if len(samples) == 0:
            return samples
        sigmas = self.field.density(samples.positions(rays.origins, rays.directions))
        trans, alphas = render_transmittance_from_density(
            samples.t_starts, samples.t_ends, sigmas, ray_indices=samples.ray_indices, num_rays=samples.num_rays
        )
        keep = trans > self.config.early_stop_eps
        if self.grid.num_updates > 0 and self._step >= self.config.grid.warmup_steps:
            keep &= alphas > self.config.alpha_threshold
        return samples.select(keep)

    def outputs(self, rays: Rays, background: Tensor) -> NGPOutputs:
        samples = self._march(rays, jitter=self.training)
        samples = self._prune_samples(rays, samples)
        origins, directions = rays.origins, rays.directions

        def rgb_sigma_fn(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor) -> Tuple[Tensor, Tensor]:
            t_mid = 0.5 * (t_starts + t_ends)
            dirs = directions[ray_indices]
            pts = origins[ray_indices] + dirs * t_mid[:, None]
            rgb, sigmas = self.field(pts, dirs)
            return rgb, sigmas

        render, _ = render_rays(
            samples.t_starts,
            samples.t_ends,
            rgb_sigma_fn,
            ray_indices=samples.ray_indices,
            num_rays=samples.num_rays,
            background=background,
        )
        return NGPOutputs(render=render, num_samples=len(samples))

    def losses(self, outputs: NGPOutputs, batch: Batch) -> Dict[str, Tensor]:
        mse = F.mse_loss(outputs.render.rgb, batch.rgb)
        return {"loss": mse, "mse": mse.detach()}

    # -- training hooks -------------------------------------------------------------------
    def optimizers(self, max_steps: int) -> Tuple[List[torch.optim.Optimizer], List[Any]]:
        cfg = self.config
        mlp_params = list(self.field.density_net.parameters()) + list(self.field.color_net.parameters())
        groups = [
            {"params": [self.field.encoding.embeddings], "weight_decay": 0.0},
            {"params": mlp_params, "weight_decay": cfg.weight_decay},
        ]
        opt = torch.optim.Adam(groups, lr=cfg.lr, betas=(0.9, 0.99), eps=1e-15)
        sched = ProgressLR(opt, warmup_multistep(min(0.05, 100 / max_steps), (0.5, 0.75, 0.9), 0.33), max_steps)
        return [opt], [sched]

    def before_train_step(self, step: int) -> None:
        self._step = step
        self.grid.update(step, self.field.density, self.step_size)

    @torch.no_grad()
    def render_rays(self, rays: Rays, background: Tensor) -> RenderOutput:
        return self.outputs(rays, background).render

    def prepare_for_render(self) -> None:
        """Make sure the occupancy grid reflects the field (e.g. after loading a checkpoint)."""
        if int(self.grid.num_updates) == 0:
            self.grid.update(0, self.field.density, self.step_size, force=True)
