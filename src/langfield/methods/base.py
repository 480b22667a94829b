"""The contract between a method and the generic trainer/renderer.

Three levels, each a plain base class (STYLE.md principles 1, 6 and 7):

* :class:`Method` — anything the one :class:`~langfield.training.trainer.Trainer` can optimise:
  ``outputs(*batch.model_inputs())`` (reached through ``forward`` so DDP syncs gradients),
  ``losses(outputs, batch)``, ``metrics(outputs, batch)`` (what the trainer logs besides the
  losses), ``optimizers(max_steps)`` and, when it trains on a dataset, ``make_sampler``. Language
  distillation objectives and, later, score distillation are Methods too.
* :class:`SceneMethod` — a reconstruction of one scene built from :class:`SceneInfo`; it renders
  any camera (:meth:`SceneMethod.render_camera`) and logs PSNR against its batch's targets.
* :class:`RayMethod` — the NeRF family: trained on random pixels (:class:`~langfield.types.Batch`
  from a :class:`~langfield.data.samplers.PixelSampler`), rendered ray chunk by ray chunk.

What a method can do beyond that is *declared* by inheriting a capability from
:mod:`langfield.methods.capabilities` (never probed with ``hasattr``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from langfield._checks import InputError
from langfield.data.dataset import SceneDataset
from langfield.data.samplers import PixelSampler, Sampler, SamplerOptions
from langfield.eval.metrics import psnr
from langfield.geometry.ndc import NDCSpace
from langfield.geometry.rays import rays_from_camera
from langfield.ops.depth_supervision import depth_l1
from langfield.types import Batch, Cameras, Rays, RenderOutput

__all__ = [
    "Method",
    "RayMethod",
    "SampleFilter",
    "SceneInfo",
    "SceneMethod",
    "check_background",
    "default_ray_chunk",
    "device_of",
    "evaluation_mode",
    "pixel_footprint",
    "unwrap_model",
]

#: ``keep`` for field methods: world sample positions ``[S, 3]`` -> ``[S]`` bool, False = remove.
SampleFilter = Callable[[Tensor], Tensor]
Device = Union[str, torch.device]


#: Rays per evaluation-render call on the CPU when ``chunk=None``: at 2048 rays the per-sample
#: temporaries of a chunk stay small enough to be reused from the heap and to sit in cache. Measured
#: on 2 cores (median of 3): Instant-NGP 200x200 740 ms against 1,065 ms at 8192 rays (400x400:
#: 2.97 s against 4.21 s; 1024 rays 3.16 s, 512 rays 3.68 s); NeRF and Mip-NeRF 100x100 (untrained
#: weights; 64 + 128 and 128 + 128 samples per ray) 29 s and 27 s against 57 s and 53 s.
CPU_RAY_CHUNK = 2048
#: The same on an accelerator, where larger launches pay (the earlier default everywhere).
GPU_RAY_CHUNK = 8192


def default_ray_chunk(chunk: Optional[int], device: Union[str, torch.device]) -> int:
    """``chunk`` (validated, ``>= 1``), else :data:`CPU_RAY_CHUNK` on the CPU and :data:`GPU_RAY_CHUNK` elsewhere."""
    if chunk is None:
        return CPU_RAY_CHUNK if torch.device(device).type == "cpu" else GPU_RAY_CHUNK
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1 (rays per call), got {chunk!r}")
    return chunk


@dataclass(frozen=True)
class SceneInfo:
    """What a method may know about the scene when it is built.

    Attributes:
        scene_box: ``[2, 3]`` axis-aligned content bounds (normalised world frame).
        near, far: ray distance bounds.
        num_train_images: number of training images (for per-image embeddings).
        unbounded: the scene extends to infinity (real 360/forward-facing captures).
        points3d, points3d_rgb: optional sparse points ``[P, 3]`` for initialisation.
        camera_centers: optional ``[C, 3]`` training camera positions (Gaussian splatting
            scales its learning rates and densification thresholds by their spread).
        ndc: the NDC space the rays live in (forward-facing scenes, :mod:`langfield.data.ray_space`),
            or ``None`` for world rays. With NDC, ``scene_box`` is the NDC box, ``near = 0``,
            ``far`` the box diagonal (an upper bound of every NDC ray's length) and ``unbounded``
            is False: NDC space is bounded. ``camera_centers`` and ``points3d`` stay in the world.
        pixel_footprint: width of one training pixel at the centre of ``scene_box`` (world units):
            the median over the training cameras of ``|camera centre - box centre| / focal``
            (focal in pixels, the mean of ``fx`` and ``fy``); ``None`` when unknown or with NDC
            (:func:`pixel_footprint`). Instant-NGP sizes its finest hash-grid level with it.
    """

    scene_box: Tensor
    near: float
    far: float
    num_train_images: int
    unbounded: bool = False
    points3d: Optional[Tensor] = None
    points3d_rgb: Optional[Tensor] = None
    camera_centers: Optional[Tensor] = None
    ndc: Optional[NDCSpace] = None
    pixel_footprint: Optional[float] = None

    @staticmethod
    def from_dataset(dataset: SceneDataset) -> "SceneInfo":
        """What a method needs to know about ``dataset`` (its training split) to be built."""
        train = dataset.split("train")
        if dataset.ndc is not None:
            box = dataset.ndc.box
            if box is None:
                raise ValueError(f"dataset {dataset.name!r}: its NDC space has no box (build it with ndc_space_for)")
            return SceneInfo(
                scene_box=box.clone(),
                near=0.0,
                far=float((box[1] - box[0]).norm()),
                num_train_images=len(train),
                unbounded=False,
                points3d=dataset.points3d,
                points3d_rgb=dataset.points3d_rgb,
                camera_centers=train.cameras.c2w[:, :3, 3].clone(),
                ndc=dataset.ndc,
            )
        return SceneInfo(
            scene_box=dataset.scene_box,
            near=dataset.near,
            far=dataset.far,
            num_train_images=len(train),
            unbounded=dataset.unbounded,
            points3d=dataset.points3d,
            points3d_rgb=dataset.points3d_rgb,
            camera_centers=train.cameras.c2w[:, :3, 3].clone(),
            pixel_footprint=pixel_footprint(train.cameras, dataset.scene_box),
        )


def pixel_footprint(cameras: Cameras, scene_box: Tensor) -> Optional[float]:
    """Median width (world units) of one pixel of ``cameras`` at the centre of ``scene_box [2, 3]``:
    ``median_i |c_i - centre| / f_i`` with ``f_i`` the mean of camera ``i``'s ``fx`` and ``fy``
    (pixels). ``None`` without cameras or when every camera sits at the centre."""
    if len(cameras) == 0:
        return None
    centre = scene_box.double().reshape(2, 3).mean(dim=0)
    dist = (cameras.c2w[:, :3, 3].double() - centre).norm(dim=-1)
    focal = 0.5 * (cameras.Ks[:, 0, 0].double() + cameras.Ks[:, 1, 1].double())
    value = float((dist / focal.clamp_min(1e-12)).median())
    return value if math.isfinite(value) and value > 0 else None


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare module inside a ``DistributedDataParallel`` (or ``DataParallel``) wrapper."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` inside the block, then restore the previous train/eval mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def device_of(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter, else of its first buffer, else the CPU."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def _check_single_camera(cameras: Cameras, who: str) -> None:
    if not isinstance(cameras, Cameras):
        raise TypeError(f"{who}.render_camera takes a langfield Cameras, got {type(cameras).__name__}")
    if len(cameras) != 1:
        raise ValueError(f"{who}.render_camera renders one camera at a time, got {len(cameras)} (index them: cams[i])")


def check_background(background: Tensor) -> Tensor:
    """``background`` as a float32 ``[3]`` colour (clear error otherwise)."""
    background = torch.as_tensor(background, dtype=torch.float32)
    if background.shape != (3,):
        raise ValueError(f"background must be a [3] colour, got {tuple(background.shape)}")
    return background


class Method(nn.Module):
    """Base class of everything the one trainer optimises (see the module docstring).

    Subclasses implement :meth:`outputs`, :meth:`losses` and :meth:`optimizers`; they may
    override :meth:`metrics`, :meth:`make_sampler`, the step hooks and the extra checkpoint state.
    """

    config: Any
    #: Whether the method can be wrapped in ``DistributedDataParallel`` (fixed parameter shapes).
    supports_ddp: bool = True

    def outputs(self, *inputs: Any) -> Any:
        """Differentiable forward pass for one batch's ``model_inputs()``; a method-specific object."""
        raise NotImplementedError

    def forward(self, *inputs: Any) -> Any:
        """Same as :meth:`outputs`; lets ``DistributedDataParallel(method)(*inputs)`` sync gradients."""
        return self.outputs(*inputs)

    def losses(self, outputs: Any, batch: Any) -> Dict[str, Tensor]:
        """Loss terms; must contain ``"loss"`` (the total that is back-propagated)."""
        raise NotImplementedError

    def metrics(self, outputs: Any, batch: Any) -> Dict[str, Tensor]:
        """Scalar training metrics logged beside the losses (called under ``no_grad`` at log steps only)."""
        return {}

    def optimizers(self, max_steps: int) -> Tuple[List[torch.optim.Optimizer], List[Any]]:
        """Optimisers and LR schedulers (stepped once per training step) following the paper."""
        raise NotImplementedError

    def make_sampler(self, dataset: SceneDataset, options: SamplerOptions) -> Sampler:
        """The sampler the trainer uses when it is given a dataset but no sampler."""
        raise TypeError(f"{type(self).__name__} has no default sampler: pass Trainer(..., sampler=...)")

    def num_rays_hint(self) -> Optional[int]:
        """Work items the next training step should use, or ``None`` to keep the sampler's batch.

        Called after every step; Instant-NGP uses it to keep the number of *samples* per step
        roughly constant as empty space is skipped (Müller et al. 2022, Sec. 5.1)."""
        return None

    def set_training_progress(self, progress: float) -> None:
        """Called by the trainer before each step (before :meth:`before_train_step`) with the
        training progress in ``[0, 1]``: the larger of the step and the time-budget fractions (the
        step fraction alone under DDP), the same quantity the LR schedules follow. Schedules that
        must fit a wall-clock budget read it; default does nothing."""

    def before_train_step(self, step: int) -> None:
        """Hook called before each training step (no gradients); default does nothing."""

    def after_train_step(self, step: int, outputs: Any) -> None:
        """Hook called after the optimisers stepped (gradients still readable; no graph
        building), e.g. Gaussian densification. ``step`` is the index of the step just taken."""

    def extra_state(self) -> Dict[str, Any]:
        """Non-parameter state to checkpoint (buffers are already in ``state_dict``).

        Only tensors and plain Python containers (checkpoints load with ``weights_only=True``)."""
        return {}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""


class SceneMethod(Method):
    """A reconstruction of one scene: renders any camera and logs PSNR while training.

    Its training outputs expose ``.render`` (a :class:`RenderOutput` whose ``rgb`` is compared
    with ``batch.rgb`` for the logged PSNR).
    """

    def metrics(self, outputs: Any, batch: Any) -> Dict[str, Tensor]:
        mse = (outputs.render.rgb.detach().float() - batch.rgb.float()).square().mean()
        return {"psnr": -10.0 * torch.log10(mse)}

    def missing_depth_error(self, weight: float, problem: str) -> InputError:
        """The one refusal of a depth term without depth (every method with ``depth_loss_weight``):
        names the method, the config field and its value, ``problem`` (what lacks depth) and the cures."""
        return InputError(
            f"{type(self).__name__}: depth_loss_weight={weight:g} (--set depth_loss_weight=...) needs ground-truth "
            f"depth, but {problem}; give a dataset with depth maps (a transforms folder with <image>_depth.npy, "
            f"per-frame 'depth_path' or nerfstudio's 'depth_file_path'; COLMAP's --colmap-depth-maps; the "
            f"procedural scene) or set depth_loss_weight=0"
        )

    def render_camera(
        self,
        cameras: Cameras,
        background: Tensor,
        *,
        keep: Optional[Union[Tensor, SampleFilter]] = None,
        with_normals: bool = False,
        chunk: Optional[int] = None,
        output_device: Optional[Device] = None,
    ) -> RenderOutput:
        """Evaluation render of every pixel of one camera, ``[H, W, ...]`` tensors, no gradients.

        Args:
            cameras: a length-1 :class:`Cameras` (OpenCV c2w), e.g. ``dataset.split("test").cameras[3]``.
            background: ``[3]`` colour.
            keep: render only part of the scene — a ``[N]`` bool mask over the primitives of a
                primitive-based method (Gaussians), or a :data:`SampleFilter` over the samples of a
                field-based method (Instant-NGP). Methods that support neither raise.
            with_normals: also render normals (methods that cannot raise).
            chunk: rays per call for ray-marched methods (bounds peak memory); ``None``:
                :func:`default_ray_chunk` (2048 on the CPU, 8192 elsewhere).
            output_device: where the image is returned (default: the method's device).
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement render_camera")

    def prepare_for_render(self) -> None:
        """Bring derived state up to date after loading a checkpoint (e.g. an occupancy grid)."""


class RayMethod(SceneMethod):
    """The NeRF family: trained on random pixels, rendered in ray chunks by :meth:`render_rays`.

    Subclasses set ``self.near`` / ``self.far`` (the ray bounds of whole-camera renders).

    Ray space: :attr:`ndc` is ``None`` (world rays) or the NDC space of a forward-facing scene
    (set from ``SceneInfo.ndc`` by :meth:`set_ray_space`, which ``make_method`` calls). Training
    rays (:meth:`make_sampler`) and rendering rays (:meth:`camera_rays`, :meth:`render_camera`)
    then go through the same conversion, :meth:`langfield.geometry.ndc.NDCSpace.rays`, and
    :meth:`render_camera` reports depth as *world* ray distance. :meth:`render_rays` and
    :meth:`outputs` take rays of the method's own space as they are.
    """

    near: float
    far: float
    ndc: Optional[NDCSpace] = None
    #: Weight of the depth term (:func:`~langfield.ops.depth_supervision.depth_l1`, logged ``depth_l1``)
    #: against the dataset's depth maps; subclasses set it from their config's ``depth_loss_weight``.
    depth_loss_weight: float = 0.0

    def set_ray_space(self, ndc: Optional[NDCSpace]) -> None:
        """Receive rays in ``ndc`` (``None``: world rays); the space's bounds are set at build time
        through ``SceneInfo``, so call this with the ``SceneInfo.ndc`` the method was built from."""
        if ndc is not None and not isinstance(ndc, NDCSpace):
            raise TypeError(f"{type(self).__name__}.set_ray_space takes an NDCSpace or None, got {type(ndc).__name__}")
        self.ndc = ndc

    def camera_rays(self, cameras: Cameras, index: int = 0) -> Rays:
        """``[H, W]`` rays of camera ``index`` in the method's ray space (world, or NDC when :attr:`ndc` is set)."""
        rays = rays_from_camera(cameras, index, self.near, self.far)
        return rays if self.ndc is None else self.ndc.rays(rays)

    def to_world_output(self, out: RenderOutput, world_rays: Rays) -> RenderOutput:
        """``out`` rendered along rays of the method's space, with NDC depth and normals brought back
        to the world frame of ``world_rays`` (the same ``[R]`` rays before the NDC conversion);
        unchanged for world rays."""
        if self.ndc is None:
            return out
        depth = self.ndc.world_distance(out.depth, world_rays)
        normals = out.normals
        if normals is not None:
            normals = self.ndc.world_normals(normals, world_rays, depth).to(normals.dtype)
        return dataclasses.replace(out, depth=depth.to(out.depth.dtype), normals=normals)

    def make_sampler(self, dataset: SceneDataset, options: SamplerOptions) -> Sampler:
        if not (dataset.ndc is None and self.ndc is None) and not (dataset.ndc is not None and dataset.ndc.matches(self.ndc)):
            raise ValueError(
                f"{type(self).__name__} was built for {'world' if self.ndc is None else 'NDC'} rays but dataset "
                f"{dataset.name!r} is in ray space {dataset.ray_space!r}: build the method from "
                "SceneInfo.from_dataset(dataset) with make_method (or call set_ray_space(dataset.ndc))"
            )
        use_depth = self.depth_loss_weight > 0
        if use_depth:
            self.check_depth_supervision(dataset)
        return PixelSampler(
            dataset.split("train"),
            num_rays=options.num_rays,
            near=dataset.near,
            far=dataset.far,
            background=dataset.background,
            seed=options.seed,
            device=options.device,
            rank=options.rank,
            world_size=options.world_size,
            num_streams=options.num_streams,
            ndc=dataset.ndc,
            use_depth=use_depth,
        )

    def check_depth_supervision(self, dataset: SceneDataset) -> None:
        """Refuse, naming the config field, a non-zero :attr:`depth_loss_weight` on a dataset without
        depth maps in its ``"train"`` split or in NDC ray space (depth is a world ray distance)."""
        if dataset.split("train").depths is None:
            raise self.missing_depth_error(
                self.depth_loss_weight, f"dataset {dataset.name!r} has no depth maps in its 'train' split"
            )
        if dataset.ndc is not None:
            raise InputError(
                f"{type(self).__name__}: depth_loss_weight={self.depth_loss_weight:g}: dataset {dataset.name!r} is "
                f"trained in NDC ray space, where the depth term is not defined"
            )

    def depth_term(self, render: RenderOutput, batch: Batch) -> Optional[Tensor]:
        """The depth term (:func:`~langfield.ops.depth_supervision.depth_l1`) of ``render`` against the batch's
        depth when :attr:`depth_loss_weight` is on (the caller adds ``depth_loss_weight`` times it to the
        loss, logged as ``depth_l1``), else ``None``. A batch without depth is refused."""
        if self.depth_loss_weight <= 0:
            return None
        if batch.depth is None:
            raise self.missing_depth_error(
                self.depth_loss_weight,
                "the training batch has no depth (a PixelSampler built with use_depth=True hands it out)",
            )
        return depth_l1(render.depth, render.accumulation, batch.depth)

    @torch.no_grad()
    def render_rays(
        self, rays: Rays, background: Tensor, *, with_normals: bool = False, keep: Optional[SampleFilter] = None
    ) -> RenderOutput:
        """Evaluation render of ``[R]`` rays (no gradients). Default: :meth:`outputs` + ``.render``.

        ``with_normals`` asks for density-gradient normals and ``keep`` filters samples; methods
        that cannot provide them raise."""
        if with_normals:
            raise ValueError(f"{type(self).__name__} does not render normals")
        if keep is not None:
            raise ValueError(f"{type(self).__name__} cannot filter its samples (keep=)")
        return self.outputs(rays, background).render

    @torch.no_grad()
    def render_camera(
        self,
        cameras: Cameras,
        background: Tensor,
        *,
        keep: Optional[Union[Tensor, SampleFilter]] = None,
        with_normals: bool = False,
        chunk: Optional[int] = None,
        output_device: Optional[Device] = None,
    ) -> RenderOutput:
        """Every pixel (pixel centres, row-major) through :meth:`render_rays` in chunks of ``chunk`` rays
        (``None``: :func:`default_ray_chunk` for the method's device).

        Rays are generated where the cameras live and moved to the method's device chunk by chunk.
        In NDC (:attr:`ndc`) the rays are converted like the training rays and the rendered depth,
        an NDC distance, is converted back to the world ray distance of the expected NDC point
        (:meth:`langfield.geometry.ndc.NDCSpace.world_distance`), so depth is always in world units;
        normals are mapped to world normals at that point (:meth:`~langfield.geometry.ndc.NDCSpace.world_normals`).
        """
        _check_single_camera(cameras, type(self).__name__)
        chunk = default_ray_chunk(chunk, device_of(self))
        if keep is not None and not callable(keep):
            raise TypeError(f"{type(self).__name__}: keep must be a sample filter (positions -> bool), not a mask")
        device = device_of(self)
        bg = check_background(background).to(device)
        world = rays_from_camera(cameras, 0, self.near, self.far)
        height, width = (int(s) for s in world.shape)
        world = world.flatten()
        rays = world if self.ndc is None else self.ndc.rays(world)
        parts = []
        with evaluation_mode(self):
            for start in range(0, len(rays), chunk):
                sub = rays[start : start + chunk].to(device)
                out = self.render_rays(sub, bg.expand(len(sub), 3), with_normals=with_normals, keep=keep)
                if not isinstance(out, RenderOutput):
                    raise TypeError(f"{type(self).__name__}.render_rays must return a RenderOutput, got {type(out).__name__}")
                out = self.to_world_output(out, world[start : start + chunk].to(device))
                parts.append(out if output_device is None else out.to(output_device))
        return RenderOutput.cat(parts).reshape(height, width)
