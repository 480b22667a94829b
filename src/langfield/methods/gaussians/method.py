"""3D Gaussian Splatting (Kerbl et al. 2023) as a langfield method (``--method gaussians``).

Recipe (paper Sec. 5 and the reference code's defaults):

* initialisation from the dataset's sparse points (COLMAP ``points3D``), else ``init_num_random``
  random points in the scene box (the reference uses 100k for NeRF-synthetic); unbounded scenes
  (real 360 captures) get a background shell of points on a far sphere as well
  (:mod:`~langfield.methods.gaussians.background`);
* one Adam per parameter (eps 1e-15) with the paper's learning rates; the position LR is scaled
  by the scene extent and decays exponentially from 1.6e-4 to 1.6e-6 over training (driven by
  training progress, so wall-clock budgets work);
* loss ``(1 - lambda) L1 + lambda (1 - SSIM)`` with ``lambda = 0.2`` (Eq. 7), plus, off by default,
  ``depth_loss_weight`` times an L1 depth term against the dataset's ground-truth ray distances
  (:func:`depth_l1`; RGB-D captures, synthetic scenes with exact depth); with training masks
  (``ImageSet.masks``, nerfstudio's ``mask_path``) every term averages over the usable pixels only
  (:meth:`Gaussians.losses`);
* the active SH degree grows by one every ``sh_degree_interval`` steps up to ``sh_degree``;
* adaptive density control through an explicit strategy object, ``GaussiansConfig.strategy``
  (:class:`~langfield.methods.gaussians.strategy.DefaultStrategy`, or the fixed-budget
  :class:`~langfield.methods.gaussians.strategy.MCMCStrategy` of Kheradmand et al. 2024, whose
  regularisers enter the loss through :meth:`Strategy.regularization`).

Scene extent: ``1.1 x`` the largest distance of a training camera from the cameras' centroid
(the reference's ``getNerfppNorm``), else half the scene box diagonal.
"""

from __future__ import annotations

import logging
import math
import typing
from dataclasses import dataclass, field as dc_field
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

from langfield._checks import InputError, check_fields, check_finite_number, check_int_range, check_memory
from langfield.configs import VARIANT_KEY, check_field_types
from langfield.data.dataset import SceneDataset
from langfield.data.samplers import ImageSampler, Sampler, SamplerOptions
from langfield.eval.metrics import ssim
from langfield.fields.gaussian_cloud import GaussianCloud
from langfield.fields.language_fields import SplatView
from langfield.methods.gaussians.background import background_shell
from langfield.methods.base import SampleFilter, SceneInfo, SceneMethod, check_background, evaluation_mode
from langfield.methods.capabilities import SplatsGaussians
from langfield.methods.gaussians.strategy import DefaultStrategy, MCMCStrategy, Strategy
from langfield.methods.schedules import ProgressLR, exponential_decay
from langfield.ops.depth_supervision import DEPTH_MIN_ACCUMULATION, depth_l1
from langfield.ops.splatting import SplatSettings, render_gaussians
from langfield.ops.splatting.projection import project_gaussians
from langfield.types import Cameras, ImageBatch, RenderOutput

__all__ = [
    "DEPTH_MIN_ACCUMULATION", "GaussiansConfig", "Gaussians", "GaussiansOutputs", "depth_l1", "num_shell_points",
    "scene_extent", "shell_radius",
]  # fmt: skip

logger = logging.getLogger("langfield.methods.gaussians")

INITS = ("auto", "points", "random")

StrategyConfig = Union[DefaultStrategy, MCMCStrategy]
"""The densification strategies a config can hold (stored as ``{"type": <config_type>, ...}``)."""
STRATEGIES = typing.get_args(StrategyConfig)


#: Coarse-to-fine training never shrinks a training image below this many pixels on its short side.
MIN_TRAIN_SIDE = 16


@dataclass(frozen=True)
class GaussiansConfig:
    """Gaussian Splatting hyper-parameters (paper / reference defaults).

    Attributes:
        sh_degree: maximum SH degree of the colour (0..3).
        sh_degree_interval: raise the active SH degree every this many steps.
        init: ``"auto"`` (sparse points if the dataset has them, else random), ``"points"``,
            ``"random"``.
        init_num_random: number of random initial Gaussians.
        init_extent: the random points fill the scene box scaled by this about its centre.
        init_opacity, init_scale: initial opacity; scale factor on the 3-NN distance.
        background_shell_points: for unbounded scenes, this many extra initial Gaussians on a
            sphere around the scene centre (the far background SfM misses); ``None``: 10% of the
            initial points, at least 1,000; ``0``: no shell. Bounded scenes never get one.
        background_shell_radius: the shell's radius in scene extents (the camera spread below),
            raised if needed to lie beyond 99% of the sparse points.
        num_features: extra per-Gaussian channels rendered alongside colour (0 = none).
        lr_*: Adam learning rates; ``lr_means`` -> ``lr_means_final`` are multiplied by the scene
            extent.
        ssim_lambda: weight of the D-SSIM term.
        depth_loss_weight: weight of the depth term :func:`depth_l1` (0 = off, the paper): the mean
            absolute difference between the rendered depth (the alpha-normalised expected ray
            distance) and the training image's ground-truth ray distance, over the pixels with a
            valid ground truth (finite, ``> 0``) and rendered accumulation ``>=``
            :data:`DEPTH_MIN_ACCUMULATION`. Needs a dataset with depth maps in its ``"train"``
            split (``ImageSet.depths``; a transforms folder with ``*_depth.npy``, the procedural
            scene); training refuses to start without them. Logged as ``depth_l1``. On the command
            line: ``--set depth_loss_weight=0.1``.
        strategy: the densification strategy and its settings: a
            :class:`~langfield.methods.gaussians.strategy.DefaultStrategy` (clone/split/prune,
            Sec. 5.2) or an :class:`~langfield.methods.gaussians.strategy.MCMCStrategy` (fixed
            budget). On the command line: ``--set strategy=mcmc --set strategy.cap_max=300000``.
        splat: rasteriser settings (near plane, tile size, backend).
        num_downscales: coarse-to-fine training: the first steps see the training images
            area-averaged by ``2 ** num_downscales``, the resolution doubling every
            ``downscale_interval`` of training progress until it is full (0 = always full, the
            paper). nerfstudio's splatfacto does the same with ``num_downscales=2`` and a
            step-based ``resolution_schedule``; here the schedule follows the trainer's progress
            (steps or wall-clock budget, whichever binds), so it also fits a time budget.
            Densification sees the same normalised screen-space gradients at every resolution.
        coarse_min_side: coarse-to-fine never shrinks a training image below this many pixels on
            its short side (at least ``MIN_TRAIN_SIDE``, 16, D-SSIM's window needs it): images
            with a short side under twice this train at full size throughout.
        downscale_interval: fraction of training progress per resolution level, in ``(0, 1]``.
        seed: seed of the random initialisation.
    """

    sh_degree: int = 3
    sh_degree_interval: int = 1000
    init: str = "auto"
    init_num_random: int = 100_000
    init_extent: float = 1.0
    init_opacity: float = 0.1
    init_scale: float = 1.0
    background_shell_points: Optional[int] = None
    background_shell_radius: float = 10.0
    num_features: int = 0
    lr_means: float = 1.6e-4
    lr_means_final: float = 1.6e-6
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_opacities: float = 5e-2
    lr_sh0: float = 2.5e-3
    lr_shN: float = 2.5e-3 / 20
    lr_features: float = 2.5e-3
    ssim_lambda: float = 0.2
    depth_loss_weight: float = 0.0
    strategy: StrategyConfig = dc_field(default_factory=DefaultStrategy)
    splat: SplatSettings = dc_field(default_factory=SplatSettings)
    num_downscales: int = 0
    downscale_interval: float = 0.25
    coarse_min_side: int = MIN_TRAIN_SIDE
    seed: int = 0

    def __post_init__(self) -> None:
        check_field_types(self)
        check_fields(
            self, int_min_1=("sh_degree_interval", "init_num_random"), int_min_0=("num_features", "seed", "num_downscales"),
            positive=("init_extent", "init_scale", "background_shell_radius"),
            non_negative=("lr_means", "lr_means_final", "lr_scales", "lr_quats", "lr_opacities", "lr_sh0", "lr_shN",
                          "lr_features", "depth_loss_weight"),
        )  # fmt: skip
        check_int_range(self.coarse_min_side, "GaussiansConfig.coarse_min_side", lo=MIN_TRAIN_SIDE)
        check_finite_number(self.init_opacity, "GaussiansConfig.init_opacity", lo=0, hi=1, lo_inclusive=False, hi_inclusive=False)
        if self.background_shell_points is not None:
            check_int_range(self.background_shell_points, "GaussiansConfig.background_shell_points", lo=0)
        if self.init not in INITS:
            raise ValueError(f"GaussiansConfig.init must be one of {INITS}, got {self.init!r}")
        if not isinstance(self.strategy, STRATEGIES):
            names = " or ".join(cls.__name__ for cls in STRATEGIES)
            raise ValueError(f"GaussiansConfig.strategy must be a {names} instance, got {self.strategy!r}")
        if not 0 <= self.sh_degree <= 3:
            raise ValueError(f"GaussiansConfig.sh_degree must be in 0..3 (the PLY layout), got {self.sh_degree}")
        check_finite_number(self.downscale_interval, "GaussiansConfig.downscale_interval", lo=0, hi=1, lo_inclusive=False)
        if not 0 <= self.ssim_lambda <= 1:
            raise ValueError(f"GaussiansConfig.ssim_lambda must be in [0, 1], got {self.ssim_lambda}")
        if self.depth_loss_weight > 0 and not self.splat.render_depth:
            raise ValueError("GaussiansConfig.depth_loss_weight > 0 needs the rendered depth: set splat.render_depth=True")

    def bytes_per_gaussian(self) -> int:
        """Training memory of one Gaussian: its float32 parameters (means 3, scales 3, quats 4,
        opacity 1, SH ``3 (sh_degree + 1)^2``, features) with gradient and Adam's two moments, plus
        the strategy's per-Gaussian accumulators."""
        values = 3 + 3 + 4 + 1 + 3 * (self.sh_degree + 1) ** 2 + self.num_features
        return 16 * values + 16

    @classmethod
    def migrate_dict(cls, data: Dict[str, Any]) -> Dict[str, Any]:
        """Upgrade a stored config dict written before ``strategy`` became one typed field.

        Old layout (``run.json`` of earlier versions): ``"strategy": "default" | "mcmc"`` beside
        the settings of both strategies, ``"default": {...}, "mcmc": {...}``. Current layout:
        ``"strategy": {"type": <name>, **settings of that strategy}``; the settings of the
        unused strategy are dropped. :func:`langfield.configs.config_from_dict` calls this hook
        first; a current-layout dict is returned unchanged.
        """
        if "background_shell_points" not in data:  # stored before the shell existed: none
            data = {**data, "background_shell_points": 0}
        strategy = data.get("strategy")
        old = isinstance(strategy, str) or (strategy is None and ("default" in data or "mcmc" in data))
        if not old:
            return data
        data = dict(data)
        name = data.pop("strategy", "default")
        settings = {"default": data.pop("default", {}), "mcmc": data.pop("mcmc", {})}
        if name not in settings:
            raise ValueError(f"GaussiansConfig (old layout): strategy must be one of {sorted(settings)}, got {name!r}")
        if not isinstance(settings[name], dict):
            raise ValueError(f"GaussiansConfig (old layout): {name!r} must be an object, got {type(settings[name]).__name__}")
        data["strategy"] = {VARIANT_KEY: name, **settings[name]}
        return data


@dataclass
class GaussiansOutputs:
    """Outputs of one training render: the images and the screen-space info densification reads."""

    render: RenderOutput
    info: Dict[str, Any]


def scene_extent(scene: SceneInfo) -> float:
    """The scale positions are measured in (see the module docstring)."""
    centers = scene.camera_centers
    if centers is not None and len(centers) > 1:
        c = centers.float()
        return 1.1 * float(torch.linalg.vector_norm(c - c.mean(0), dim=-1).max())
    box = scene.scene_box.float()
    return 0.5 * float(torch.linalg.vector_norm(box[1] - box[0]))


def num_shell_points(config: GaussiansConfig, scene: SceneInfo, num_initial: int) -> int:
    """How many background-shell points an initial cloud of ``num_initial`` points gets (0 for
    bounded scenes; see ``GaussiansConfig.background_shell_points``)."""
    if not scene.unbounded:
        return 0
    if config.background_shell_points is None:
        return max(1000, num_initial // 10)
    return int(config.background_shell_points)


def shell_radius(config: GaussiansConfig, scene: SceneInfo, extent: float) -> float:
    """``background_shell_radius`` scene extents, and at least 1.1x the distance from the scene
    centre within which 99% of the sparse points lie (so the shell is behind the SfM background)."""
    radius = config.background_shell_radius * extent
    if scene.points3d is not None and len(scene.points3d) > 0:
        centre = scene.scene_box.float().mean(0)
        dist = torch.linalg.vector_norm(scene.points3d.float() - centre, dim=-1)
        radius = max(radius, 1.1 * float(torch.quantile(dist[:: max(1, len(dist) // 100_000)], 0.99)))
    return radius


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values [H, W, D]`` over the pixels where ``mask [H, W, 1]`` is True (all ``D`` channels);
    0 with a zero gradient when there is none. No host sync: the count stays a tensor."""
    kept = torch.where(mask, values, torch.zeros_like(values))
    count = mask.sum() * values.shape[-1]
    return kept.sum() / count.clamp_min(1).to(values.dtype)


class Gaussians(SceneMethod, SplatsGaussians):
    """3D Gaussian Splatting; trains on whole images (one :class:`~langfield.types.ImageBatch` per step).

    DDP is refused (``supports_ddp = False``): densification changes the parameters' shapes.
    """

    supports_ddp = False

    def __init__(self, scene: SceneInfo, config: GaussiansConfig = GaussiansConfig()) -> None:
        super().__init__()
        self.config = config
        self.extent = max(scene_extent(scene), 1e-6)
        use_points = config.init == "points" or (config.init == "auto" and scene.points3d is not None and len(scene.points3d) > 0)
        count, what = (
            (len(scene.points3d), f"{len(scene.points3d)} sparse points") if use_points and scene.points3d is not None
            else (config.init_num_random, f"GaussiansConfig.init_num_random={config.init_num_random}")
        )  # fmt: skip
        num_shell = num_shell_points(config, scene, count)
        if num_shell:
            count, what = count + num_shell, f"{what} + {num_shell} background shell points"
        check_memory(count * config.bytes_per_gaussian(), f"{what} initial Gaussians",
                     hint=f"about {config.bytes_per_gaussian()} bytes per Gaussian while training; start from fewer")
        cap = getattr(config.strategy, "cap_max", None)
        if cap is not None:
            check_memory(cap * config.bytes_per_gaussian(), f"GaussiansConfig.strategy.cap_max={cap} Gaussians",
                         hint="lower strategy.cap_max")
        kwargs = dict(sh_degree=config.sh_degree, init_opacity=config.init_opacity, init_scale=config.init_scale,
                      num_features=config.num_features)
        if use_points:
            if scene.points3d is None or len(scene.points3d) == 0:
                raise ValueError("GaussiansConfig.init='points' but the dataset has no sparse points (points3D)")
            colors = scene.points3d_rgb if scene.points3d_rgb is not None else torch.full_like(scene.points3d, 0.5)
            colors = colors.float() / 255.0 if colors.dtype == torch.uint8 or float(colors.max()) > 1.0 else colors
            points = scene.points3d.float()
            if num_shell:
                shell, shell_colors = background_shell(
                    num_shell, scene.scene_box.float().mean(0), shell_radius(config, scene, self.extent),
                    points, colors if scene.points3d_rgb is not None else None,
                )  # fmt: skip
                points, colors = torch.cat([points, shell]), torch.cat([colors.float(), shell_colors])
            self.cloud = GaussianCloud.from_points(points, colors, **kwargs)
        else:
            box = scene.scene_box.float()
            centre, half = box.mean(0), 0.5 * (box[1] - box[0]) * config.init_extent
            random_box = torch.stack([centre - half, centre + half])
            if num_shell:
                g = torch.Generator().manual_seed(config.seed)  # the same draws as random_in_box
                points = random_box[0] + torch.rand(config.init_num_random, 3, generator=g) * (random_box[1] - random_box[0])
                colors = torch.rand(config.init_num_random, 3, generator=g)
                shell, shell_colors = background_shell(num_shell, centre, shell_radius(config, scene, self.extent))
                self.cloud = GaussianCloud.from_points(torch.cat([points, shell]), torch.cat([colors, shell_colors]), **kwargs)
            else:
                self.cloud = GaussianCloud.random_in_box(config.init_num_random, random_box, seed=config.seed, **kwargs)
        self.num_shell_points = num_shell
        self.strategy: Strategy = config.strategy  # settings only; its state is strategy_state
        self.strategy_state = self.strategy.initialize_state(scene_scale=self.extent)
        self.register_buffer("active_sh_degree", torch.zeros((), dtype=torch.int64))
        self._optimizers: Dict[str, torch.optim.Optimizer] = {}
        self._step = 0
        self._train_downscale = 2**config.num_downscales
        self._warned_distortion = False

    # ------------------------------------------------------------------ rendering

    @property
    def params(self):
        return self.cloud.params

    @property
    def num_gaussians(self) -> int:
        return self.cloud.num_gaussians

    def make_sampler(self, dataset: SceneDataset, options: SamplerOptions) -> Sampler:
        """One whole training image per step, every image once per epoch (the paper's sampling).

        Raises:
            InputError: ``depth_loss_weight > 0`` but the ``"train"`` split has no depth maps.
        """
        train = dataset.split("train")
        if self.config.depth_loss_weight > 0 and train.depths is None:
            raise self.missing_depth_error(
                self.config.depth_loss_weight, f"dataset {dataset.name!r} has no depth maps in its 'train' split"
            )
        downscale = None
        if self.config.num_downscales:
            # never below coarse_min_side (>= MIN_TRAIN_SIDE: D-SSIM's 11-pixel window) on the short side
            side = min(int(train.cameras.widths.min()), int(train.cameras.heights.min()))
            cap = 1
            while side // (2 * cap) >= self.config.coarse_min_side:
                cap *= 2
            downscale = lambda: min(self._train_downscale, cap)  # noqa: E731
        return ImageSampler(train, background=dataset.background, seed=options.seed, device=options.device,
                            downscale=downscale, use_depth=self.config.depth_loss_weight > 0)  # fmt: skip

    def training_downscale(self, progress: float) -> int:
        """Image downscale factor of a training step at ``progress`` in ``[0, 1]`` (see
        :attr:`GaussiansConfig.num_downscales`): ``2 ** max(num_downscales - floor(progress /
        downscale_interval), 0)``."""
        cfg = self.config
        level = int(math.floor(min(max(progress, 0.0), 1.0) / cfg.downscale_interval + 1e-9))
        return 2 ** max(cfg.num_downscales - level, 0)

    def _render(self, cameras: Cameras, background: Tensor, keep: Optional[Tensor] = None):
        if len(cameras) != 1:
            raise ValueError(f"Gaussians renders one camera at a time, got {len(cameras)}")
        if cameras.has_distortion and not self._warned_distortion:
            logger.warning("Gaussian splatting renders pinhole cameras; lens distortion is ignored "
                           "(undistort the images first for best results)")
            self._warned_distortion = True
        cloud = self.cloud
        means, quats, scales, opacities, sh, features = (
            cloud.means, cloud.quats, cloud.scales, cloud.opacities, cloud.sh, cloud.features
        )  # fmt: skip
        if keep is not None:
            means, quats, scales, opacities, sh = means[keep], quats[keep], scales[keep], opacities[keep], sh[keep]
            features = None if features is None else features[keep]
        return render_gaussians(
            means, quats, scales, opacities, sh,
            cameras.c2w[0], cameras.Ks[0], int(cameras.widths[0]), int(cameras.heights[0]),
            background=background, sh_degree=int(self.active_sh_degree), features=features,
            settings=self.config.splat,
        )  # fmt: skip

    def outputs(self, cameras: Cameras, background: Tensor) -> GaussiansOutputs:
        res = self._render(cameras, background)
        proj = res.projection
        info = {
            "means2d": proj.means2d, "radii": proj.radii, "width": int(cameras.widths[0]),
            "height": int(cameras.heights[0]), "n_cameras": 1,
        }  # fmt: skip
        if self.training and torch.is_grad_enabled():
            self.strategy.step_pre_backward(self.params, self._optimizers, self.strategy_state, self._step, info)
        return GaussiansOutputs(render=res.render, info=info)

    @torch.no_grad()
    def render_camera(
        self,
        cameras: Cameras,
        background: Tensor,
        *,
        keep: Optional[Union[Tensor, SampleFilter]] = None,
        with_normals: bool = False,
        chunk: Optional[int] = None,
        output_device: Optional[Union[str, torch.device]] = None,
    ) -> RenderOutput:
        """The whole camera in one rasterisation (``chunk`` does not apply).

        ``keep``: a ``[N]`` bool mask of the Gaussians to render (e.g. a scene without a selected object).
        """
        if with_normals:
            raise ValueError("Gaussians do not render normals")
        device = self.cloud.means.device
        if keep is not None:
            if not isinstance(keep, Tensor) or keep.dtype != torch.bool or keep.shape != (self.num_gaussians,):
                raise ValueError(f"Gaussians.render_camera: keep must be a [{self.num_gaussians}] bool tensor")
            keep = keep.to(device)
        background = check_background(background)
        with evaluation_mode(self):
            out = self._render(cameras.to(device), background.to(device), keep).render
        return out if output_device is None else out.to(output_device)

    # ------------------------------------------------------------------ capabilities (SplatsGaussians)

    def gaussian_cloud(self) -> GaussianCloud:
        return self.cloud

    def splat_settings(self) -> SplatSettings:
        return self.config.splat

    @classmethod
    def cloud_from_state_dict(cls, state_dict: Dict[str, Tensor]) -> GaussianCloud:
        return GaussianCloud.from_state_dict(state_dict, prefix="cloud.")

    @torch.no_grad()
    def project_view(self, cameras: Cameras) -> SplatView:
        if len(cameras) != 1:
            raise ValueError(f"project_view takes one camera, got {len(cameras)}")
        cloud, s = self.cloud, self.config.splat
        cam = cameras.to(cloud.means.device)
        c2w = cam.c2w[0]
        rot = c2w[:, :3]
        w2c = torch.cat([rot.T, -(rot.T @ c2w[:, 3:])], dim=1)
        w, h = int(cam.widths[0]), int(cam.heights[0])
        proj = project_gaussians(cloud.means, cloud.quats, cloud.scales, w2c, cam.Ks[0], w, h, s.near, s.far, s.eps2d)
        return SplatView(proj, cloud.opacities.detach(), w, h)

    # ------------------------------------------------------------------ training

    def losses(self, outputs: GaussiansOutputs, batch: ImageBatch) -> Dict[str, Tensor]:
        """``l1``, ``dssim`` (when ``ssim_lambda > 0``), ``depth_l1`` (when ``depth_loss_weight > 0``),
        the strategy's regulariser and their weighted sum ``loss``.

        With a training mask (``batch.mask [H, W, 1]``, True = use the pixel) no term depends on an
        ignored pixel: ignored pixels are set to 0 in both the render and the target (as nerfstudio's
        splatfacto does), ``l1`` is the mean absolute error over the usable pixels, ``dssim`` is
        ``1 -`` the mean of the SSIM map (:func:`~langfield.eval.metrics.ssim`, ``return_map=True``)
        over the windows centred on usable pixels (the windows see ignored pixels as 0 in both
        images), and the depth term skips ignored pixels (their ground truth counts as "none"). A
        term with no usable pixel is 0 (``dssim``: 1) with a zero gradient. Without a mask the terms
        are the plain means over the whole image.
        """
        pred, target, mask = outputs.render.rgb, batch.rgb, batch.mask
        lam = self.config.ssim_lambda
        if mask is None:
            l1 = (pred - target).abs().mean()
        else:
            if tuple(mask.shape) != tuple(pred.shape[:-1]) + (1,) or mask.dtype != torch.bool:
                raise ValueError(
                    f"Gaussians.losses: batch.mask must be bool {list(pred.shape[:-1]) + [1]} like the render, "
                    f"got {mask.dtype} {tuple(mask.shape)}"
                )
            pred = torch.where(mask, pred, torch.zeros_like(pred))
            target = torch.where(mask, target, torch.zeros_like(target))
            l1 = _masked_mean((pred - target).abs(), mask)
        terms = {"l1": l1}
        loss = (1.0 - lam) * l1
        if lam > 0:
            if mask is None:
                dssim = 1.0 - ssim(pred, target)
            else:
                _, ssim_map = ssim(pred, target, return_map=True)  # [H', W', 3]: valid windows only
                top, left = (mask.shape[0] - ssim_map.shape[0]) // 2, (mask.shape[1] - ssim_map.shape[1]) // 2
                centres = mask[top : top + ssim_map.shape[0], left : left + ssim_map.shape[1]]
                dssim = 1.0 - _masked_mean(ssim_map, centres)
            terms["dssim"] = dssim
            loss = loss + lam * dssim
        if self.config.depth_loss_weight > 0:
            if batch.depth is None:
                raise self.missing_depth_error(self.config.depth_loss_weight, f"training batch {batch.index} has no depth")
            render = outputs.render
            gt_depth = batch.depth if mask is None else torch.where(mask, batch.depth, torch.zeros_like(batch.depth))
            terms["depth_l1"] = depth_l1(render.depth, render.accumulation, gt_depth)
            loss = loss + self.config.depth_loss_weight * terms["depth_l1"]
        reg = self.strategy.regularization(self.params)
        if reg is not None:
            terms[f"{self.strategy.config_type}_reg"] = reg
            loss = loss + reg
        terms["loss"] = loss
        return terms

    def optimizers(self, max_steps: int) -> Tuple[List[torch.optim.Optimizer], List[Any]]:
        cfg = self.config
        lrs = {
            "means": cfg.lr_means * self.extent, "scales": cfg.lr_scales, "quats": cfg.lr_quats,
            "opacities": cfg.lr_opacities, "sh0": cfg.lr_sh0, "shN": cfg.lr_shN, "features": cfg.lr_features,
        }  # fmt: skip
        self._optimizers = {
            name: torch.optim.Adam([param], lr=lrs[name], eps=1e-15) for name, param in self.params.items()
        }
        decay = ProgressLR(self._optimizers["means"], exponential_decay(cfg.lr_means, cfg.lr_means_final), max_steps)
        return list(self._optimizers.values()), [decay]

    def set_training_progress(self, progress: float) -> None:
        self._train_downscale = self.training_downscale(progress)

    def before_train_step(self, step: int) -> None:
        self._step = step
        degree = min(step // self.config.sh_degree_interval, self.config.sh_degree)
        self.active_sh_degree.fill_(degree)

    def after_train_step(self, step: int, outputs: GaussiansOutputs) -> None:
        if not self._optimizers:
            raise RuntimeError("Gaussians.optimizers() must be called before training (the strategy edits them)")
        self.strategy.step_post_backward(self.params, self._optimizers, self.strategy_state, step, outputs.info)

    # ------------------------------------------------------------------ checkpoints

    def extra_state(self) -> Dict[str, Any]:
        state = {k: (v.detach().cpu() if isinstance(v, Tensor) else v) for k, v in self.strategy_state.items()}
        return {"strategy": state, "step": self._step}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        saved = state.get("strategy")
        if saved:
            device = self.cloud.means.device
            self.strategy_state = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in saved.items()}
        self._step = int(state.get("step", 0))
