"""Instant-NGP (Müller et al. 2022): hash-grid field, occupancy-grid ray marching, early termination.

Training recipe (paper Sec. 4-5 and the nerfacc re-implementation): Adam (beta 0.9/0.99, eps 1e-15,
lr 1e-2, L2 1e-6 on the MLP weights only), a short linear warm-up and x0.33 drops at 50/75/90 % of
training; random background colours for RGBA data; occupancy grid refreshed every 16 steps.

Unbounded scenes (real 360 captures: ``SceneInfo.unbounded``) use the Mip-NeRF 360 scene
contraction (Barron et al. 2022, Sec. 2, eq. 10; :mod:`langfield.ops.contraction`) with the
L-infinity norm by default (nerfstudio's choice for hash grids: the contracted cube ``[-2, 2]^3``
is filled by the grid). The scene box is the undistorted foreground ``[-1, 1]^3``; the hash grid
encodes contracted points; the occupancy grid covers ``[-2, 2]^3`` in contracted space; rays march
from the dataset's near bound to ``unbounded_far`` with NGP's exponential (cone-angle) steps,
``dt = clamp(t / 256, min_step, max_step)`` (NGP Sec. 5.1 / App. E.2). Object scenes are
unchanged: no contraction, constant steps.

Two additions that are not in the Instant-NGP paper:

* with a contraction, training adds Mip-NeRF 360's distortion loss (Sec. 4, eq. 15;
  :mod:`langfield.ops.ray_regularizers`) with nerfacto's weight 0.002 and its piecewise
  linear/disparity ray distance (unit: the box half-width), meant against the faint fog (opacity
  ~0.02 a step) that an unbounded capture fills with and that no ray terminates in. Its effect was
  not isolated on a real capture (README); ``distortion_loss_mult=0`` turns it off.
* samples are sent through the field front to back in rounds and a ray stops once opaque
  (:func:`langfield.ops.early_termination.densities_front_to_back`; NGP App. E.1 marches this way):
  exact for early termination, and the samples behind surfaces are never evaluated.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field as dc_field
from typing import Any, Dict, List, Literal, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from langfield._checks import InputError, check_fields, check_finite_number, check_int_range, check_memory
from langfield.configs import check_field_types
from langfield.fields.ngp_field import NGPField, NGPFieldConfig
from langfield.methods.base import RayMethod, SampleFilter, SceneInfo
from langfield.methods.capabilities import SharesRayWeights
from langfield.methods.schedules import ProgressLR, warmup_multistep
from langfield.ops.contraction import CONTRACTED_BOX, uncontract_to_box
from langfield.ops.early_termination import densities_front_to_back
from langfield.ops.occupancy import OccupancyGrid, OccupancyGridConfig, PackedSamples, march_rays
from langfield.ops.ray_regularizers import distortion_loss, piecewise_lin_disp
from langfield.ops.volume_rendering import (
    normals_from_density,
    render_rays,
    render_transmittance_from_density,
    render_weights_from_density,
)
from langfield.types import Batch, Rays, RenderOutput


#: Instant-NGP's cone angle for unbounded scenes (App. E.2: steps grow as t / 256).
UNBOUNDED_CONE_ANGLE = 1.0 / 256

#: nerfacto's distortion-loss weight (nerfstudio ``NerfactoModelConfig.distortion_loss_mult``).
NERFACTO_DISTORTION_LOSS_MULT = 0.002

#: Hash-grid cells per training-pixel footprint of the paper's NeRF setting: N_max = 2048 over the
#: 827 pixel footprints (800 px, focal 1111 px, cameras 4.03 from the centre) across the 3-unit
#: NeRF-synthetic box (:attr:`NGPConfig.cells_per_pixel`).
PAPER_CELLS_PER_PIXEL = 2.5

#: Samples per ray in the first front-to-back round (later rounds double it).
FIRST_ROUND_SAMPLES = 32


@dataclass(frozen=True)
class NGPConfig:
    """Instant-NGP hyper-parameters.

    Attributes:
        field: hash grid and MLP sizes.
        grid: occupancy grid settings.
        steps_per_diagonal: marching step = (aabb diagonal) / this (NGP: sqrt(3)/1024 of a unit cube
            -> 1024 steps across the diagonal).
        contraction: ``"auto"`` (contract when the scene is unbounded, with the ``"linf"`` norm),
            ``"none"``, ``"linf"`` or ``"l2"`` (Mip-NeRF 360 eq. 10 with that norm; see the module
            docstring).
        cone_angle: exponential stepping, ``dt = clamp(cone_angle * t, min_step, max_step)``;
            ``None``: ``unbounded_cone_angle`` with a contraction, 0 (constant steps) without.
        unbounded_cone_angle: the cone angle ``None`` resolves to with a contraction (NGP: 1/256).
        max_step: the largest step with a cone angle (world units; NGP caps its steps too).
        unbounded_far: with a contraction, rays march to at least this distance (world units),
            within ``max_samples_per_ray`` cone steps: with the defaults a ray's 1024 steps end
            near 18 box half-widths (contracted radius ~1.95 of 2), as NGP's own step cap does;
            raise ``max_samples_per_ray`` or ``cone_angle`` to reach farther (docs/performance.md).
        max_samples_per_ray: candidate steps per ray before the occupancy test.
        early_stop_eps: drop samples once transmittance falls below this (NGP: 1e-4).
        alpha_threshold: drop samples whose opacity is below this after warm-up (skips near-empty space).
        distortion_loss_mult: weight of the Mip-NeRF 360 distortion loss (see the module
            docstring); ``None``: nerfacto's 0.002 with a contraction, 0 without.
        lr, weight_decay: Adam settings (weight decay on MLP weights only).
        depth_loss_weight: weight of :func:`~langfield.ops.depth_supervision.depth_l1` (0 = off, the
            paper): the rendered expected ray distance against the dataset's depth maps, on rays with
            valid truth and accumulation >= 0.5 (langfield's expected-depth L1, not DS-NeRF's KL);
            needs depth maps in the ``"train"`` split, refused before training otherwise. Logged as
            ``depth_l1``; on the command line ``--set depth_loss_weight=W``.
        target_samples_per_step: the batch adapts its number of rays so that a training step
            evaluates about this many samples (NGP: 2^18); ``min_rays``/``max_rays`` bound it.
        cells_per_pixel: the hash grid's finest resolution ``N_max`` is lowered to this many cells
            per training-pixel footprint across the grid (:meth:`resolved_max_resolution`), never
            above ``field.hash_grid.max_resolution``; ``None`` keeps that value as given. The paper
            chooses ``N_max`` "to match the finest detail in the training data" (Sec. 3, Table 1:
            only ``T`` and ``N_max`` are tuned per task); its NeRF setting, ``N_max = 2048`` for the
            800-px NeRF-synthetic images (827 pixel footprints across the box), is 2.5 cells a
            footprint. A grid much finer than the pixels gives each training ray cells of its own,
            which fit that ray instead of a surface.
    """

    field: NGPFieldConfig = dc_field(default_factory=NGPFieldConfig)
    grid: OccupancyGridConfig = dc_field(default_factory=OccupancyGridConfig)
    steps_per_diagonal: int = 1024
    contraction: Literal["auto", "none", "linf", "l2"] = "auto"
    cone_angle: Optional[float] = None
    unbounded_cone_angle: float = UNBOUNDED_CONE_ANGLE
    max_step: float = 1e10
    unbounded_far: float = 1e3
    early_stop_eps: float = 1e-4
    alpha_threshold: float = 1e-3
    distortion_loss_mult: Optional[float] = None
    lr: float = 1e-2
    weight_decay: float = 1e-6
    max_samples_per_ray: int = 1024
    target_samples_per_step: int = 1 << 18
    min_rays: int = 256
    max_rays: int = 1 << 14
    cells_per_pixel: Optional[float] = PAPER_CELLS_PER_PIXEL
    depth_loss_weight: float = 0.0

    def __post_init__(self) -> None:
        check_field_types(self)
        check_fields(
            self, int_min_1=("steps_per_diagonal", "max_samples_per_ray", "target_samples_per_step", "min_rays", "max_rays"),
            non_negative=("weight_decay", "depth_loss_weight"), positive=("lr", "max_step", "unbounded_far"),
            fraction=("early_stop_eps", "alpha_threshold"),
        )  # fmt: skip
        if self.cone_angle is not None:
            check_finite_number(self.cone_angle, "NGPConfig.cone_angle", lo=0)
        check_finite_number(self.unbounded_cone_angle, "NGPConfig.unbounded_cone_angle", lo=0)
        if self.distortion_loss_mult is not None:
            check_finite_number(self.distortion_loss_mult, "NGPConfig.distortion_loss_mult", lo=0)
        if self.cells_per_pixel is not None:
            check_finite_number(self.cells_per_pixel, "NGPConfig.cells_per_pixel", lo=0, lo_inclusive=False)
        if self.min_rays > self.max_rays:
            raise InputError(f"NGPConfig.min_rays ({self.min_rays}) must be <= max_rays ({self.max_rays})")
        check_field_types(self.field)
        check_fields(self.field, "NGPConfig.field", int_min_1=("hidden_dim", "geo_feat_dim"), int_min_0=("color_hidden_layers",))
        check_int_range(self.field.sh_degree, "NGPConfig.field.sh_degree", lo=0, hi=4)
        check_finite_number(self.field.density_bias, "NGPConfig.field.density_bias")
        check_field_types(self.grid)
        check_fields(
            self.grid, "NGPConfig.grid", int_min_1=("resolution", "update_every"), int_min_0=("warmup_steps",),
            non_negative=("threshold",), fraction=("ema_decay", "update_fraction"),
        )  # fmt: skip

    def estimated_bytes(self) -> int:
        """Memory the parameters need while training (float32 hash table + MLPs with gradients and
        Adam's two moments, i.e. 16 bytes a value) plus the occupancy grid (5 bytes a cell)."""
        grid = self.field.hash_grid
        table = grid.num_rows * grid.features_per_level
        hidden = self.field.hidden_dim
        mlps = hidden * (grid.output_dim + hidden * (self.field.color_hidden_layers + 2) + 64)
        return 16 * (table + mlps) + 5 * self.grid.resolution**3

    def resolved_contraction(self, unbounded: bool) -> Optional[str]:
        """The contraction norm used for a scene (``None``: bounded box)."""
        if self.contraction == "auto":
            return "linf" if unbounded else None
        return None if self.contraction == "none" else self.contraction

    def resolved_max_resolution(self, scene: SceneInfo, contraction: Optional[str]) -> int:
        """The hash grid's finest resolution for ``scene``: ``ceil(cells_per_pixel * span /
        scene.pixel_footprint)`` clamped to ``[base_resolution, field.hash_grid.max_resolution]``,
        where ``span`` is the world width the grid covers (the scene box's largest side; twice
        that with a contraction, whose grid spans the contracted ``[-2, 2]`` around the ``[-1, 1]``
        box). ``field.hash_grid.max_resolution`` itself when ``cells_per_pixel`` is ``None``, the
        footprint unknown (NDC scenes, :attr:`SceneInfo.pixel_footprint`) or the grid has one level."""
        grid = self.field.hash_grid
        if self.cells_per_pixel is None or scene.pixel_footprint is None or grid.num_levels == 1:
            return grid.max_resolution
        box = scene.scene_box.double().reshape(2, 3)
        span = float((box[1] - box[0]).max()) * (2.0 if contraction is not None else 1.0)
        wanted = math.ceil(self.cells_per_pixel * span / scene.pixel_footprint)
        return int(min(grid.max_resolution, max(grid.base_resolution, wanted)))

    def resolved_cone_angle(self, contraction: Optional[str]) -> float:
        if self.cone_angle is not None:
            return float(self.cone_angle)
        return float(self.unbounded_cone_angle) if contraction is not None else 0.0

    def resolved_distortion_loss_mult(self, contraction: Optional[str]) -> float:
        if self.distortion_loss_mult is not None:
            return float(self.distortion_loss_mult)
        return NERFACTO_DISTORTION_LOSS_MULT if contraction is not None else 0.0

    @classmethod
    def migrate_dict(cls, data: Dict[str, Any]) -> Dict[str, Any]:
        """Runs stored before ``contraction`` existed trained without one: keep them that way
        (``"auto"`` would contract a COLMAP scene and the checkpoint would no longer match).
        Runs stored before ``distortion_loss_mult`` existed trained without the loss: resuming
        them keeps it off. Runs stored before ``cells_per_pixel`` existed used
        ``field.hash_grid.max_resolution`` as given (``None``)."""
        data = dict(data)
        data.setdefault("contraction", "none")
        data.setdefault("distortion_loss_mult", 0.0)
        data.setdefault("cells_per_pixel", None)
        return data


@dataclass
class NGPOutputs:
    """Outputs of :meth:`NGP.outputs` for ``R`` rays."""

    render: RenderOutput
    num_samples: int
    distortion: Optional[Tensor] = None

    @property
    def rgb(self) -> Tensor:
        return self.render.rgb


def _fused_adam_ok(device: torch.device) -> bool:
    """Fused Adam (one kernel over the 2^19-entry tables) exists for CUDA and, since torch 2.4, CPU."""
    return device.type == "cuda" or tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4)


class NGP(RayMethod, SharesRayWeights):
    """Instant-NGP method: see module docstring."""

    def __init__(self, scene: SceneInfo, config: NGPConfig = NGPConfig()) -> None:
        super().__init__()
        grid = config.field.hash_grid
        check_memory(
            config.estimated_bytes(),
            f"NGPConfig: field.hash_grid (log2_hashmap_size={grid.log2_hashmap_size}, num_levels={grid.num_levels}, "
            f"features_per_level={grid.features_per_level}) and grid.resolution={config.grid.resolution}",
            hint="lower field.hash_grid.log2_hashmap_size, num_levels or features_per_level",
        )  # fmt: skip
        self.config = config
        self.set_ray_space(scene.ndc)  # NDC for forward-facing scenes: the box below is then the NDC box
        aabb = scene.scene_box.float().reshape(2, 3)
        self.contraction = config.resolved_contraction(scene.unbounded)
        self.cone_angle = config.resolved_cone_angle(self.contraction)
        self.distortion_loss_mult = config.resolved_distortion_loss_mult(self.contraction)
        self.depth_loss_weight = config.depth_loss_weight
        self.max_resolution = config.resolved_max_resolution(scene, self.contraction)
        grid_cfg = dataclasses.replace(config.field.hash_grid, max_resolution=self.max_resolution)
        self.field = NGPField(aabb, dataclasses.replace(config.field, hash_grid=grid_cfg), contraction=self.contraction)
        if self.contraction is None:
            self.grid = OccupancyGrid(aabb, config.grid)
        else:  # the occupancy grid lives in contracted space
            self.grid = OccupancyGrid(torch.tensor([[-CONTRACTED_BOX] * 3, [CONTRACTED_BOX] * 3]), config.grid)
        self.register_buffer("aabb", aabb.clone())
        diag = float((aabb[1] - aabb[0]).norm())
        self.step_size = diag / config.steps_per_diagonal
        self.near, self.far = scene.near, scene.far
        if self.contraction is not None:
            self.far = max(scene.far, config.unbounded_far)
        self._step = 0
        self._samples_per_ray: Optional[float] = None

    # -- sampling -------------------------------------------------------------------------
    def _march(self, rays: Rays, jitter: bool) -> PackedSamples:
        far = rays.far if self.contraction is None else rays.far.clamp_min(self.config.unbounded_far)
        return march_rays(
            rays.origins,
            rays.directions,
            rays.near,
            far,
            self.grid,
            self.aabb,
            self.step_size,
            cone_angle=self.cone_angle,
            max_step_size=self.config.max_step,
            jitter=jitter,
            max_samples_per_ray=self.config.max_samples_per_ray,
            contraction=self.contraction,
        )

    def grid_density(self, points: Tensor) -> Tensor:
        """Density ``[P]`` at occupancy-grid points ``[P, 3]`` (world points, or contracted ones).

        In contracted space the density is scaled by ``dt(r) / min_step``, ``dt`` the marching
        step at the point's distance ``r`` from the scene centre (capped at the far bound): the
        grid thresholds the opacity of one marching step, and far away a step spans
        ``cone_angle * r`` world units, so a thin density there is still visible."""
        if self.contraction is None:
            return self.field.density(points)
        sigmas = self.field.density_and_features_normalized(self.field.normalize_contracted(points))[0]
        if self.cone_angle > 0:
            world = uncontract_to_box(points, self.aabb, norm=self.contraction)
            dist = torch.linalg.vector_norm(world - self.aabb.mean(0), dim=-1).clamp_max(self.far)
            steps = (self.cone_angle * dist).clamp(min=self.step_size, max=max(self.config.max_step, self.step_size))
            sigmas = sigmas * (steps / self.step_size)
        return sigmas

    @torch.no_grad()
    def _prune_samples(self, rays: Rays, samples: PackedSamples) -> PackedSamples:
        """Early ray termination and empty-sample skipping with a gradient-free density pass."""
        if len(samples) == 0:
            return samples
        pts = samples.positions(rays.origins, rays.directions)
        sigmas = self._front_to_back(samples, lambda index: (self.field.density(pts[index]), None))[0]
        past_warmup = self._step >= self.config.grid.warmup_steps
        return samples.select(self._keep_mask(samples, sigmas, skip_transparent=past_warmup))

    def _front_to_back(self, samples: PackedSamples, fn) -> Tuple[Tensor, Optional[Tensor]]:
        """``(sigmas [N], features [N, D] or None)`` of ``samples``, evaluated in rounds that stop
        at each ray's early-termination point (those behind it: 0, and dropped by :meth:`_keep_mask`)."""
        sigmas, feats, _ = densities_front_to_back(
            samples.t_starts, samples.t_ends, samples.ray_indices, samples.num_rays, fn,
            eps=self.config.early_stop_eps, first_round=FIRST_ROUND_SAMPLES,
        )  # fmt: skip
        return sigmas, feats

    def _keep_mask(self, samples: PackedSamples, sigmas: Tensor, skip_transparent: bool) -> Tensor:
        """``[N]`` bool: samples before the transmittance falls below ``early_stop_eps`` and, when
        ``skip_transparent`` (and the grid has been updated), with opacity above ``alpha_threshold``."""
        trans, alphas = render_transmittance_from_density(
            samples.t_starts, samples.t_ends, sigmas, ray_indices=samples.ray_indices, num_rays=samples.num_rays
        )
        keep = trans > self.config.early_stop_eps
        if skip_transparent and int(self.grid.num_updates) > 0:
            keep &= alphas > self.config.alpha_threshold
        return keep

    def outputs(self, rays: Rays, background: Tensor, with_normals: bool = False) -> NGPOutputs:
        samples = self._march(rays, jitter=self.training)
        samples = self._prune_samples(rays, samples)
        origins, directions = rays.origins, rays.directions

        def rgb_sigma_fn(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor) -> Tuple[Tensor, Tensor]:
            t_mid = 0.5 * (t_starts + t_ends)
            pts = origins[ray_indices] + directions[ray_indices] * t_mid[:, None]
            sigmas, feats = self.field.density_and_features(pts)
            return self.field.color_of_rays(feats, directions, ray_indices), sigmas

        def normals_fn(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor) -> Tensor:
            t_mid = 0.5 * (t_starts + t_ends)
            pts = origins[ray_indices] + directions[ray_indices] * t_mid[:, None]
            return normals_from_density(pts, self.field.density)

        render, aux = render_rays(
            samples.t_starts,
            samples.t_ends,
            rgb_sigma_fn,
            ray_indices=samples.ray_indices,
            num_rays=samples.num_rays,
            background=background,
            normals_fn=normals_fn if with_normals else None,
        )
        distortion = None
        if self.training:
            spr = len(samples) / max(samples.num_rays, 1)
            prev = self._samples_per_ray
            self._samples_per_ray = spr if prev is None else 0.8 * prev + 0.2 * spr
            if self.distortion_loss_mult > 0:
                distortion = self._distortion(aux.weights, samples)
        return NGPOutputs(render=render, num_samples=len(samples), distortion=distortion)

    def _distortion(self, weights: Tensor, samples: PackedSamples) -> Tensor:
        """Mean over rays of the distortion loss, in nerfacto's piecewise linear/disparity distance
        with the box half-width as its unit."""
        unit = float((self.aabb[1] - self.aabb[0]).max()) / 2.0
        near, far = float(self.near), float(self.far)
        s0 = piecewise_lin_disp(samples.t_starts, near, far, unit)
        s1 = piecewise_lin_disp(samples.t_ends, near, far, unit)
        return distortion_loss(weights, s0, s1, samples.ray_indices, samples.num_rays).mean()

    def num_rays_hint(self) -> Optional[int]:
        if self._samples_per_ray is None:
            return None
        cfg = self.config
        rays = cfg.target_samples_per_step / max(self._samples_per_ray, 1.0)
        return int(min(max(rays, cfg.min_rays), cfg.max_rays))

    def losses(self, outputs: NGPOutputs, batch: Batch) -> Dict[str, Tensor]:
        mse = F.mse_loss(outputs.render.rgb, batch.rgb)
        loss, terms = mse, {"mse": mse.detach()}
        if outputs.distortion is not None:
            loss = loss + self.distortion_loss_mult * outputs.distortion
            terms["distortion"] = outputs.distortion.detach()
        depth = self.depth_term(outputs.render, batch)
        if depth is not None:
            loss = loss + self.depth_loss_weight * depth
            terms["depth_l1"] = depth.detach()
        return {"loss": loss, **terms}

    # -- training hooks -------------------------------------------------------------------
    def optimizers(self, max_steps: int) -> Tuple[List[torch.optim.Optimizer], List[Any]]:
        cfg = self.config
        mlp_params = list(self.field.density_net.parameters()) + list(self.field.color_net.parameters())
        groups = [
            {"params": [self.field.encoding.embeddings], "weight_decay": 0.0},
            {"params": mlp_params, "weight_decay": cfg.weight_decay},
        ]
        opt = torch.optim.Adam(groups, lr=cfg.lr, betas=(0.9, 0.99), eps=1e-15, fused=_fused_adam_ok(self.aabb.device))
        sched = ProgressLR(opt, warmup_multistep(min(0.05, 100 / max_steps), (0.5, 0.75, 0.9), 0.33), max_steps)
        return [opt], [sched]

    def before_train_step(self, step: int) -> None:
        self._step = step
        self.grid.update(step, self.grid_density, self.step_size)

    @torch.no_grad()
    def render_rays(
        self, rays: Rays, background: Tensor, *, with_normals: bool = False, keep: Optional[SampleFilter] = None
    ) -> RenderOutput:
        """Evaluation render: one density pass serves both early termination and compositing
        (training needs a second, differentiable pass; rendering does not).

        ``keep`` removes samples from the render: it is asked only about samples that are not
        already transparent (opacity above ``alpha_threshold``), and early termination is decided
        after the removal, so whatever lies behind a removed object shows through."""
        if with_normals:
            if keep is not None:
                raise ValueError("NGP.render_rays: keep= and with_normals=True cannot be combined")
            return self.outputs(rays, background, with_normals=True).render
        return self._evaluation_pass(rays, background, keep)[0]

    @torch.no_grad()
    def render_rays_with_weights(self, rays: Rays, background: Tensor) -> Tuple[RenderOutput, Tensor, Tensor, Tensor]:
        """:meth:`render_rays` and the compositing weights it used, from one march and one field pass
        (a language query needs both; :meth:`sample_weights` alone skips the colour head).

        Returns:
            ``(render [R, *], positions [N, 3], weights [N], ray_indices [N])``, samples sorted by ray.
        """
        return self._evaluation_pass(rays, background, None)

    def _visible_samples(
        self, rays: Rays, keep: Optional[SampleFilter] = None
    ) -> Tuple[PackedSamples, Tensor, Tensor, Tensor]:
        """The evaluation march of ``[R]`` rays after ``keep``, early termination and empty-sample
        skipping: ``(samples, positions [N, 3], sigmas [N], geo_features [N, G])`` of the kept ones."""
        samples = self._march(rays, jitter=False)
        pts = samples.positions(rays.origins, rays.directions)
        deltas = samples.t_ends - samples.t_starts

        def evaluate(index: Tensor) -> Tuple[Tensor, Tensor]:
            sig, feat = self.field.density_and_features(pts[index])
            if keep is not None and len(index) > 0:  # removed samples must not stop a ray
                sig = self._apply_sample_filter(deltas[index], pts[index], sig, keep)
            return sig, feat

        sigmas, feats = self._front_to_back(samples, evaluate)
        mask = self._keep_mask(samples, sigmas, skip_transparent=True)
        return samples.select(mask), pts[mask], sigmas[mask], feats[mask]

    def _evaluation_pass(
        self, rays: Rays, background: Tensor, keep: Optional[SampleFilter]
    ) -> Tuple[RenderOutput, Tensor, Tensor, Tensor]:
        """One march, one density+feature pass, the colour head on the kept samples only."""
        kept, pts, sigmas, feats = self._visible_samples(rays, keep)
        rgb = self.field.color_of_rays(feats, rays.directions, kept.ray_indices)
        render, aux = render_rays(
            kept.t_starts,
            kept.t_ends,
            lambda *_: (rgb, sigmas),
            ray_indices=kept.ray_indices,
            num_rays=kept.num_rays,
            background=background,
        )
        return render, pts, aux.weights, kept.ray_indices

    def _apply_sample_filter(self, deltas: Tensor, pts: Tensor, sigmas: Tensor, keep: SampleFilter) -> Tensor:
        """``sigmas`` with the samples that ``keep`` rejects set to zero (only visible samples are
        asked); ``deltas`` are the samples' interval lengths."""
        alphas = 1.0 - torch.exp(-sigmas * deltas)
        visible = alphas > self.config.alpha_threshold
        if not bool(visible.any()):
            return sigmas
        verdict = keep(pts[visible])
        if not isinstance(verdict, Tensor) or verdict.shape != (int(visible.sum()),) or verdict.dtype != torch.bool:
            raise ValueError("keep(positions [S, 3]) must return a [S] bool tensor")
        removed = torch.zeros_like(visible)
        removed[visible] = ~verdict.to(visible.device)
        return torch.where(removed, torch.zeros_like(sigmas), sigmas)

    @torch.no_grad()
    def sample_weights(self, rays: Rays) -> Tuple[Tensor, Tensor, Tensor]:
        """The evaluation compositing weights of ``[R]`` rays, for heads that share the geometry.

        Same marching and pruning as :meth:`render_rays`, so a semantic feature head rendered
        with these weights sees exactly the colour's volume-rendering weights (NeRF Eq. 3).

        Returns:
            ``(positions [N, 3], weights [N], ray_indices [N])`` packed samples, sorted by ray.
        """
        kept, pts, sigmas, _ = self._visible_samples(rays)
        weights, _, _ = render_weights_from_density(
            kept.t_starts, kept.t_ends, sigmas, ray_indices=kept.ray_indices, num_rays=kept.num_rays
        )
        return pts, weights, kept.ray_indices

    def field_bounds(self) -> Tensor:
        return self.aabb

    @torch.no_grad()
    def solid_points(self, min_opacity: float = 0.5) -> Tensor:
        """Centres of occupied grid cells whose density gives opacity ``>= min_opacity`` over one cell width."""
        pts = self.grid.occupied_cell_centers()
        cell = float((self.grid.aabb[1] - self.grid.aabb[0]).max()) / self.grid.resolution
        if self.contraction is not None:  # the foreground cells, mapped back to the world
            pts = pts[(pts.abs() <= 1.0).all(-1)]
            pts = uncontract_to_box(pts, self.aabb, norm=self.contraction)
            cell = cell * float((self.aabb[1] - self.aabb[0]).max()) / 2.0
        if len(pts) == 0:
            return pts
        sigmas = torch.cat([self.field.density(p) for p in pts.split(65536)])
        return pts[1.0 - torch.exp(-sigmas * cell) >= min_opacity]

    def prepare_for_render(self) -> None:
        """Make sure the occupancy grid reflects the field (e.g. after loading a checkpoint)."""
        if int(self.grid.num_updates) == 0:
            self.grid.update(0, self.grid_density, self.step_size, force=True)

    # -- checkpoints ----------------------------------------------------------------------
    def extra_state(self) -> Dict[str, Any]:
        """The adaptive batch's running samples-per-ray estimate (resuming without it changes the
        batch) and the hash grid's resolved finest resolution (checked on resume)."""
        return {"samples_per_ray": self._samples_per_ray, "step": self._step, "max_resolution": self.max_resolution}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        saved = state.get("max_resolution")
        if saved is not None and int(saved) != self.max_resolution:
            raise InputError(
                f"the checkpoint's hash grid was trained with finest resolution {int(saved)}, but this NGP resolves to "
                f"{self.max_resolution} for its scene (NGPConfig.cells_per_pixel sizes it from the training images: "
                f"their size or cameras differ); build it with field.hash_grid.max_resolution={int(saved)} and "
                "cells_per_pixel=None to resume"
            )
        spr = state.get("samples_per_ray")
        self._samples_per_ray = None if spr is None else float(spr)
        self._step = int(state.get("step", 0))
