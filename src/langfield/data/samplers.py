"""Training samplers: random pixels ``(camera, v, u)`` → a :class:`~langfield.types.Batch`, and the rest below.

Nothing is precomputed per pixel. Images stay ``uint8`` (a full-resolution NeRF-synthetic scene,
100 × 800 × 800 RGBA, is ~256 MB), each step draws ``R`` flat pixel indices, gathers their
colours, converts to float and composites RGBA over the background on the fly. Rays go through
pixel *centres* (``(u + 0.5, v + 0.5)``, see :mod:`langfield.geometry.rays`).

Determinism and data parallelism
--------------------------------
The global batch of ``num_rays`` rays of step ``s`` is split into ``num_streams`` equal
*streams*; stream ``k`` is drawn from a fresh CPU generator seeded from ``(seed, s, k)``. A process
of rank ``r`` in a group of ``world_size`` takes the contiguous block of streams
``[r * K, (r + 1) * K)`` with ``K = num_streams / world_size``. Hence

* batches depend only on ``(seed, step, stream)``: resuming needs nothing but the step counter,
  and CPU and CUDA runs see the same rays;
* ranks draw disjoint, independent streams (no two ranks share a stream);
* a single process with ``num_streams=W`` yields exactly the concatenation (rank 0 first) of the
  batches of a ``W``-process run, which is what makes DDP testable against one process.

Random backgrounds ("random") draw one colour per ray (the Instant-NGP trick), from the same
stream generator, so they are reproducible too.

Training masks
--------------
An image set with ``masks`` (``[C, H, W, 1]`` bool, True = use the pixel; nerfstudio's
``mask_path``) restricts training to its usable pixels. :class:`PixelSampler` keeps a table of
the flat indices of the usable pixels (built once on its device, int32 when it fits) and draws
uniformly into that table with the very same generator calls, so batches stay a pure function of
``(seed, step, stream)`` and an image set without masks gives exactly the batches it always did.
:class:`ImageSampler` hands each image's mask out with it (``ImageBatch.mask``) for the loss to
average over; coarse-to-fine steps shrink it conservatively (:func:`downscale_mask`).

The sampler contract
--------------------
The trainer talks to any sampler through :class:`Sampler`: ``sample(step)`` returns the batch of
step ``step`` (a pure function of the sampler's seed and the step, so resuming needs only the step
counter the trainer checkpoints), ``num_rays`` counts the work items of a step (rays, pixels,
views) for throughput logging, ``set_num_rays`` lets a method adapt the batch (Instant-NGP), and
``state_dict``/``load_state_dict`` carry whatever else a sampler needs to continue exactly.
Samplers of this module: :class:`PixelSampler` (random pixels), :class:`ImageSampler` (whole
images), :class:`CameraSampler` (random cameras without images, e.g. score distillation) and
:class:`IndexSampler` (random indices into precomputed targets, e.g. language distillation).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from langfield.data.dataset import BACKGROUNDS, ImageSet
from langfield.data.ray_space import check_cameras_in_ndc
from langfield.geometry.ndc import NDCSpace
from langfield.geometry.rays import rays_from_pixels
from langfield.geometry.rotations import look_at
from langfield.types import Batch, CameraBatch, Cameras, ImageBatch, IndexBatch

#: rays per training step when neither the user nor a method preset says otherwise.
DEFAULT_NUM_RAYS = 4096

__all__ = [
    "DEFAULT_NUM_RAYS",
    "CameraSampler",
    "CameraSamplerConfig",
    "ImageSampler",
    "IndexSampler",
    "PixelSampler",
    "Sampler",
    "SamplerOptions",
    "downscale_depth",
    "downscale_mask",
    "stream_seed",
]


def stream_seed(seed: int, step: int, stream: int) -> int:
    """A well-mixed 63-bit generator seed for ``(seed, step, stream)`` (numpy ``SeedSequence``)."""
    for name, value in (("seed", seed), ("step", step), ("stream", stream)):
        if int(value) < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    state = np.random.SeedSequence([int(seed), int(step), int(stream)]).generate_state(1, dtype=np.uint64)
    return int(state[0]) & ((1 << 63) - 1)


@dataclass(frozen=True)
class SamplerOptions:
    """What the trainer tells a method when it asks for its default sampler
    (:meth:`langfield.methods.base.Method.make_sampler`).

    Attributes:
        seed: non-negative base seed.
        device: where batches live.
        num_rays: global rays per step (summed over processes) for ray samplers.
        rank, world_size: this process's place in a data-parallel group.
        num_streams: independent ray streams (default: ``world_size``), see :class:`PixelSampler`.
    """

    seed: int = 0
    device: Union[str, torch.device] = "cpu"
    num_rays: int = DEFAULT_NUM_RAYS
    rank: int = 0
    world_size: int = 1
    num_streams: Optional[int] = None


class Sampler:
    """Base class of everything the trainer can draw batches from (see the module docstring).

    Subclasses implement :meth:`sample` and set ``num_rays``; override :meth:`state_dict` /
    :meth:`load_state_dict` when they hold state that the step alone does not determine.
    """

    #: work items per step (rays, pixels, views); the trainer logs ``num_rays`` per second.
    num_rays: int = 1

    def sample(self, step: int) -> Any:
        """The batch of training step ``step`` (deterministic for a given seed and step)."""
        raise NotImplementedError

    def set_num_rays(self, num_rays: int) -> None:
        """Adapt the batch size; samplers with a fixed batch ignore it."""

    @property
    def num_local_rays(self) -> int:
        """Work items drawn by this process per step (``num_rays`` unless data parallel)."""
        return self.num_rays

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; an old checkpoint's ``step`` entry is ignored (the trainer owns the step)."""


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    return int(seed)


def _generator(seed: int, step: int, stream: int) -> torch.Generator:
    gen = torch.Generator(device="cpu")
    gen.manual_seed(stream_seed(seed, step, stream))
    return gen


def _check_masks(image_set: ImageSet, who: str) -> None:
    """Refuse ``image_set.masks`` that are not ``bool [C, H, W, 1]`` like the images, or hold no usable pixel."""
    masks = image_set.masks
    if masks is None:
        return
    expected = tuple(image_set.images.shape[:3]) + (1,)
    if masks.dtype != torch.bool or tuple(masks.shape) != expected:
        raise ValueError(f"{who}: ImageSet.masks must be bool {list(expected)}, got {masks.dtype} {tuple(masks.shape)}")
    if not bool(masks.any()):
        raise ValueError(
            f"{who}: ImageSet.masks marks no pixel of the {len(masks)} training image(s) as usable (all masks are 0); "
            f"nothing would be trained: check the masks (0 = ignore the pixel, non-zero = use it)"
        )


def _check_depths(image_set: ImageSet, who: str) -> None:
    """Refuse ``use_depth=True`` on an image set without ``depths [C, H, W, 1]`` like its images."""
    if image_set.depths is None:
        raise ValueError(f"{who}(use_depth=True): the image set has no depth maps (ImageSet.depths is None)")
    expected = tuple(image_set.images.shape[:3]) + (1,)
    if tuple(image_set.depths.shape) != expected:
        raise ValueError(f"ImageSet.depths must be {list(expected)}, got {tuple(image_set.depths.shape)}")


class PixelSampler(Sampler):
    """Uniformly random training pixels of an :class:`ImageSet`, composited over a background.

    Args:
        image_set: the training split; images ``[C, H, W, 3]`` uint8 (+ optional alphas
            ``[C, H, W, 1]`` uint8). They are moved to ``device`` once, still as ``uint8``.
        num_rays: rays per step **summed over all processes** (the global batch). Must be
            divisible by ``num_streams``.
        near, far: ray distance bounds written into every ray.
        background: ``"white" | "black" | "random"`` (random = one uniform colour per ray).
        seed: non-negative base seed of every stream.
        device: where batches (and the uint8 images) live.
        rank, world_size: this process's place in a data-parallel group.
        num_streams: number of independent streams the global batch is split into; defaults to
            ``world_size`` and must be a multiple of it. Keep it fixed to make batches independent
            of the number of processes (e.g. ``num_streams=2`` in one process == 2 ranks).
        ndc: hand out NDC rays of this space (``dataset.ndc``, see :mod:`langfield.data.ray_space`)
            instead of world rays; ``near``/``far`` then only describe the world rays they come from
            (NDC rays always span ``0`` to ``|d'|``). The cameras are checked against it once here.
        use_depth: also hand out each pixel's ground-truth ray distance (``image_set.depths``, 0 =
            none; required then) as ``Batch.depth [R, 1]``; world rays only (not with ``ndc``).

    With ``image_set.masks`` (``[C, H, W, 1]`` bool, True = use) only usable pixels are drawn,
    uniformly among them: the flat indices of the usable pixels are gathered once into a table on
    ``device`` (4 bytes per usable pixel while ``C * H * W < 2^31``, else 8) and each ray draws an
    entry of it with the same generator call as without masks. A mask set without any usable
    pixel is refused. The losses need no change: every ray is a usable pixel.

    The local batch of each call has ``num_rays // world_size`` rays.
    """

    def __init__(
        self,
        image_set: ImageSet,
        *,
        num_rays: int,
        near: float,
        far: float,
        background: str = "white",
        seed: int = 0,
        device: Union[str, torch.device] = "cpu",
        rank: int = 0,
        world_size: int = 1,
        num_streams: Optional[int] = None,
        ndc: Optional[NDCSpace] = None,
        use_depth: bool = False,
    ) -> None:
        if background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
        if use_depth:
            _check_depths(image_set, "PixelSampler")
        if use_depth and ndc is not None:
            raise ValueError("PixelSampler(use_depth=True): depth is a world ray distance; NDC rays (ndc=...) cannot carry it")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        num_streams = world_size if num_streams is None else int(num_streams)
        if num_streams < 1 or num_streams % world_size != 0:
            raise ValueError(f"num_streams ({num_streams}) must be a positive multiple of world_size ({world_size})")
        if num_rays < 1 or num_rays % num_streams != 0:
            raise ValueError(
                f"num_rays ({num_rays}) must be positive and divisible by num_streams ({num_streams}); "
                f"with data parallelism pick num_rays as a multiple of the number of processes"
            )
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if not far > near:
            raise ValueError(f"need far > near, got near={near}, far={far}")
        images = image_set.images
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"ImageSet.images must be uint8 [C, H, W, 3], got {images.dtype} {tuple(images.shape)}")
        alphas = image_set.alphas
        if alphas is not None and (alphas.dtype != torch.uint8 or tuple(alphas.shape) != tuple(images.shape[:3]) + (1,)):
            raise ValueError(
                f"ImageSet.alphas must be uint8 {list(images.shape[:3]) + [1]}, got {alphas.dtype} {tuple(alphas.shape)}"
            )
        num_cams, height, width = (int(s) for s in images.shape[:3])
        cams = image_set.cameras
        if len(cams) != num_cams:
            raise ValueError(f"ImageSet has {num_cams} images but {len(cams)} cameras")
        if bool(torch.any(cams.widths != width)) or bool(torch.any(cams.heights != height)):
            raise ValueError(f"camera sizes do not match the {width}x{height} images")
        _check_masks(image_set, "PixelSampler")

        self.device = torch.device(device)
        self.num_rays = int(num_rays)
        self.near = float(near)
        self.far = float(far)
        self.background = background
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.num_streams = num_streams
        self.rays_per_stream = self.num_rays // num_streams
        streams_per_rank = num_streams // world_size
        self.streams = list(range(rank * streams_per_rank, (rank + 1) * streams_per_rank))

        self._shape = (num_cams, height, width)
        self._num_pixels = num_cams * height * width
        if ndc is not None:
            check_cameras_in_ndc(ndc, cams, "PixelSampler: training cameras")
        self.ndc = ndc
        self._cameras = cams.to(self.device)
        self._rgb = images.to(self.device).reshape(-1, 3)  # uint8 [C*H*W, 3]
        self._alpha = None if alphas is None else alphas.to(self.device).reshape(-1)  # uint8 [C*H*W]
        self._depth = image_set.depths.to(self.device).reshape(-1, 1) if use_depth else None  # [C*H*W, 1]
        # usable pixels: [U] flat indices into C*H*W (None = every pixel); draws index this table
        self._usable = None
        self._num_draw = self._num_pixels
        if image_set.masks is not None:
            index_dtype = torch.int32 if self._num_pixels < 2**31 else torch.int64
            flat_mask = image_set.masks.to(self.device).reshape(-1)
            self._usable = torch.nonzero(flat_mask).squeeze(1).to(index_dtype)
            self._num_draw = int(self._usable.shape[0])
        fixed = {"white": 1.0, "black": 0.0}.get(background)
        self._fixed_bg = None if fixed is None else torch.full((3,), fixed, device=self.device)

    @property
    def num_usable_pixels(self) -> int:
        """Pixels the rays are drawn from: the usable ones of ``image_set.masks``, else all ``C * H * W``."""
        return self._num_draw

    def set_num_rays(self, num_rays: int) -> None:
        """Change the global batch size (e.g. Instant-NGP's adaptive batch that targets a fixed
        number of *samples* per step); rounded to a positive multiple of ``num_streams``."""
        per_stream = max(1, int(num_rays) // self.num_streams)
        self.rays_per_stream = per_stream
        self.num_rays = per_stream * self.num_streams

    @property
    def num_local_rays(self) -> int:
        """Rays per call on this process (``num_rays // world_size``)."""
        return self.rays_per_stream * len(self.streams)

    def _draw(self, step: int, stream: int):
        gen = _generator(self.seed, step, stream)
        flat = torch.randint(0, self._num_draw, (self.rays_per_stream,), generator=gen, dtype=torch.int64)
        bg = torch.rand(self.rays_per_stream, 3, generator=gen) if self.background == "random" else None
        return flat, bg

    def sample(self, step: int) -> Batch:
        """The (local) batch of training step ``step``; a pure function of ``(seed, step, rank)``."""
        draws = [self._draw(step, s) for s in self.streams]
        flat = torch.cat([d[0] for d in draws])
        if self.device.type == "cuda":
            flat = flat.pin_memory().to(self.device, non_blocking=True)
        else:
            flat = flat.to(self.device)
        if self._usable is not None:  # a draw is a row of the usable-pixel table
            flat = self._usable[flat].long()
        _, height, width = self._shape
        cam = torch.div(flat, height * width, rounding_mode="floor")
        rem = flat - cam * (height * width)
        v = torch.div(rem, width, rounding_mode="floor")
        u = rem - v * width
        pixels = torch.stack([u, v], dim=-1).float() + 0.5

        if self._fixed_bg is None:
            bg = torch.cat([d[1] for d in draws])
            bg = bg.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else bg.to(self.device)
        else:
            bg = self._fixed_bg.expand(flat.shape[0], 3)
        rgb = self._rgb[flat].float() / 255.0
        if self._alpha is not None:
            a = self._alpha[flat].float()[:, None] / 255.0
            rgb = rgb * a + bg * (1.0 - a)
        rays = rays_from_pixels(self._cameras, cam, pixels, self.near, self.far)
        if self.ndc is not None:  # cameras checked in __init__: no per-batch sync
            rays = self.ndc.rays(rays, check=False)
        depth = None if self._depth is None else self._depth[flat]
        return Batch(rays=rays, rgb=rgb, background=bg, depth=depth)

    def state_dict(self) -> Dict[str, Any]:
        """The stream layout and the adaptive batch size (the step is the trainer's)."""
        return {"seed": self.seed, "num_rays": self.num_rays, "num_streams": self.num_streams}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; warns if the stream layout differs (batches will differ)."""
        if "num_rays" in state and state["num_rays"] != self.num_rays:
            self.set_num_rays(int(state["num_rays"]))
        _warn_if_changed(self, state, ("seed", "num_streams"))


def _warn_if_changed(sampler: Sampler, state: Dict[str, Any], keys: Tuple[str, ...]) -> None:
    for key in keys:
        if key in state and state[key] != getattr(sampler, key):
            warnings.warn(
                f"{type(sampler).__name__}: checkpoint has {key}={state[key]} but this sampler has "
                f"{key}={getattr(sampler, key)}; the batches will not continue exactly",
                stacklevel=3,
            )


def downscale_depth(depth: Tensor, size: Tuple[int, int]) -> Tensor:
    """Area-average a ray-distance map ``depth [H, W, 1]`` to ``size = (h, w)`` over its valid pixels only.

    Valid means finite and ``> 0`` (0 marks "no depth"). An output pixel is the mean of the valid
    depths in the input area it covers (the areas of ``F.interpolate(mode="area")``, as the colour)
    and is valid when at least half of that area is; otherwise it is 0. Holes are never blended
    into surfaces (a plain area average would pull edge depths toward 0). The same rule as the
    readers' :func:`~langfield.data.loading.resize_depth`.

    >>> d = torch.tensor([[2.0, 0.0], [4.0, 0.0]])[..., None]  # left column surface, right column none
    >>> downscale_depth(d, (1, 1)).flatten().tolist()
    [3.0]
    """
    valid = torch.isfinite(depth) & (depth > 0)
    stacked = torch.cat([torch.where(valid, depth, torch.zeros_like(depth)), valid.to(depth.dtype)], -1)
    small = F.interpolate(stacked.permute(2, 0, 1)[None], size=size, mode="area")[0].permute(1, 2, 0)
    total, cover = small[..., :1], small[..., 1:]
    return torch.where(cover >= 0.5, total / cover.clamp_min(1e-12), torch.zeros_like(total))


def downscale_mask(mask: Tensor, size: Tuple[int, int]) -> Tensor:
    """Shrink a training mask ``mask [H, W, 1]`` (bool, True = use the pixel) to ``size = (h, w)``, conservatively.

    An output pixel is usable only if **every** input pixel it covers is (the areas of
    ``F.interpolate(mode="area")``, as the colour): the area average of the mask must be 1 (up
    to round-off, ``>= 1 - 1e-6``). The same rule as the readers'
    :func:`~langfield.data.loading.resize_mask`.

    >>> m = torch.tensor([[True, True, True, False], [True, True, True, True]])[..., None]
    >>> downscale_mask(m, (1, 2)).flatten().tolist()
    [True, False]
    """
    cover = F.interpolate(mask.float().permute(2, 0, 1)[None], size=size, mode="area")[0].permute(1, 2, 0)
    return cover >= 1.0 - 1e-6


class ImageSampler(Sampler):
    """Whole training images in random order, one per step (Gaussian splatting's sampling).

    Every epoch (``len(image_set)`` steps) visits each image once, in a permutation drawn from a
    generator seeded by ``(seed, epoch)``; so, like :class:`PixelSampler`, a batch is a pure
    function of ``(seed, step)`` and resuming needs only the step counter. With a ``"random"``
    background one uniform colour per step is drawn from ``(seed, step)``.

    Args:
        image_set: the training split (uint8 images, optional uint8 alphas); moved to ``device``
            once, still as ``uint8``.
        background: ``"white" | "black" | "random"``.
        seed: non-negative base seed.
        device: where batches live.
        downscale: ``None``, or a callable asked at every step for an integer factor ``d >= 1``:
            the step's image is then area-averaged to ``floor(H / d) x floor(W / d)`` and its
            camera rescaled to match (:meth:`~langfield.types.Cameras.rescaled`), for coarse-to-fine
            schedules (:attr:`~langfield.methods.gaussians.GaussiansConfig.num_downscales`).
        use_depth: also hand out the image's ground-truth depth (``image_set.depths``, ray distances,
            0 = none; required then) as ``ImageBatch.depth [H, W, 1]``, moved to ``device`` once; a
            downscaled step averages it over the same areas as the colour but over the valid pixels
            only (:func:`downscale_depth`), so holes never blend into surfaces. Off: ``depth`` is
            ``None`` and the depth maps stay where they are.

    With ``image_set.masks`` (bool, True = use the pixel) each batch carries its image's mask as
    ``ImageBatch.mask [H, W, 1]`` (moved to ``device`` once; ``None`` without masks); a downscaled
    step shrinks it conservatively (:func:`downscale_mask`: usable only where every covered pixel
    is). A mask set without any usable pixel is refused; an image whose mask is all 0 still comes
    up in its turn (its loss terms then have nothing to average and are 0).

    Attributes:
        num_rays: pixels of the last step's image (``H * W``, as downscaled), reported as rays by the trainer.
    """

    def __init__(self, image_set: ImageSet, *, background: str = "white", seed: int = 0,
                 device: Union[str, torch.device] = "cpu", downscale: Optional[Callable[[], int]] = None,
                 use_depth: bool = False) -> None:
        if background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        images = image_set.images
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"ImageSet.images must be uint8 [C, H, W, 3], got {images.dtype} {tuple(images.shape)}")
        if len(images) == 0:
            raise ValueError("the training split has no images")
        self.device = torch.device(device)
        self.background = background
        self.seed = int(seed)
        self._cameras = image_set.cameras.to(self.device)
        self._images = images.to(self.device)
        self._alphas = None if image_set.alphas is None else image_set.alphas.to(self.device)
        if use_depth:
            _check_depths(image_set, "ImageSampler")
        self._depths = image_set.depths.to(self.device) if use_depth else None
        _check_masks(image_set, "ImageSampler")
        self._masks = None if image_set.masks is None else image_set.masks.to(self.device)
        self.num_images, height, width = (int(s) for s in images.shape[:3])
        self.num_rays = height * width
        fixed = {"white": 1.0, "black": 0.0}.get(background)
        self._fixed_bg = None if fixed is None else torch.full((3,), fixed, device=self.device)
        self._perm_epoch = -1
        self._perm = None
        if downscale is not None and not callable(downscale):
            raise TypeError(f"downscale must be a callable returning an int factor, got {type(downscale).__name__}")
        self._downscale = downscale

    def index_at(self, step: int) -> int:
        """Training-image index used at ``step``."""
        epoch = step // self.num_images
        if epoch != self._perm_epoch:
            self._perm = torch.randperm(self.num_images, generator=_generator(self.seed, epoch, 0))
            self._perm_epoch = epoch
        return int(self._perm[step % self.num_images])

    def sample(self, step: int) -> ImageBatch:
        """The batch of step ``step``."""
        index = self.index_at(step)
        if self._fixed_bg is None:
            bg = torch.rand(3, generator=_generator(self.seed, step, 1)).to(self.device)
        else:
            bg = self._fixed_bg
        rgb = self._images[index].float() / 255.0
        if self._alphas is not None:
            a = self._alphas[index].float() / 255.0
            rgb = rgb * a + bg * (1.0 - a)
        cameras = self._cameras[index]
        depth = None if self._depths is None else self._depths[index]
        mask = None if self._masks is None else self._masks[index]
        factor = 1 if self._downscale is None else self._downscale()
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ValueError(f"ImageSampler: downscale() must return an int >= 1, got {factor!r}")
        if factor > 1:
            cameras = cameras.rescaled(factor)
            size = (int(cameras.heights[0]), int(cameras.widths[0]))
            rgb = F.interpolate(rgb.permute(2, 0, 1)[None], size=size, mode="area")[0].permute(1, 2, 0)
            depth = None if depth is None else downscale_depth(depth, size)
            mask = None if mask is None else downscale_mask(mask, size)
        self.num_rays = int(rgb.shape[0]) * int(rgb.shape[1])
        return ImageBatch(cameras=cameras, rgb=rgb, background=bg, index=index, depth=depth, mask=mask)

    def state_dict(self) -> Dict[str, Any]:
        return {"seed": self.seed}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        _warn_if_changed(self, state, ("seed",))


@dataclass(frozen=True)
class CameraSamplerConfig:
    """Random cameras on a sphere looking at a point (DreamFusion-style view sampling, Sec. 3.2).

    Attributes:
        width, height: image size in pixels.
        radius: camera distance range ``(min, max)`` from ``target``.
        elevation_deg: elevation range above the horizontal plane, in degrees.
        azimuth_deg: azimuth range, in degrees.
        fov_deg: vertical field-of-view range, in degrees.
        target: the point every camera looks at (world frame).
        up: the world's up direction.
        num_cameras: cameras per step.
        background: ``"white" | "black" | "random"`` (random: one colour per step).
    """

    width: int = 64
    height: int = 64
    radius: Tuple[float, float] = (3.0, 3.5)
    elevation_deg: Tuple[float, float] = (-10.0, 45.0)
    azimuth_deg: Tuple[float, float] = (-180.0, 180.0)
    fov_deg: Tuple[float, float] = (40.0, 70.0)
    target: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    up: Tuple[float, float, float] = (0.0, 0.0, 1.0)
    num_cameras: int = 1
    background: str = "random"

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1 or self.num_cameras < 1:
            raise ValueError("CameraSamplerConfig.width, height and num_cameras must be >= 1")
        for name in ("radius", "elevation_deg", "azimuth_deg", "fov_deg"):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ValueError(f"CameraSamplerConfig.{name} must be a finite (min, max) range, got {(lo, hi)}")
        if self.radius[0] <= 0 or not 0 < self.fov_deg[0] <= self.fov_deg[1] < 180:
            raise ValueError("CameraSamplerConfig.radius must be > 0 and fov_deg within (0, 180)")
        if not -90 < self.elevation_deg[0] <= self.elevation_deg[1] < 90:
            raise ValueError(f"CameraSamplerConfig.elevation_deg must lie within (-90, 90), got {self.elevation_deg}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"CameraSamplerConfig.background must be one of {BACKGROUNDS}, got {self.background!r}")


class CameraSampler(Sampler):
    """Random cameras without images, one :class:`~langfield.types.CameraBatch` per step.

    Each step draws ``num_cameras`` cameras uniformly in the configured radius / elevation /
    azimuth / field-of-view ranges from a generator seeded by ``(seed, step)``, looking at
    ``target`` with the pinhole principal point at the image centre (OpenCV c2w).
    ``num_rays`` counts pixels.
    """

    def __init__(self, config: CameraSamplerConfig = CameraSamplerConfig(), *, seed: int = 0,
                 device: Union[str, torch.device] = "cpu") -> None:  # fmt: skip
        self.config = config
        self.seed = _check_seed(seed)
        self.device = torch.device(device)
        self.num_rays = config.width * config.height * config.num_cameras

    def sample(self, step: int) -> CameraBatch:
        cfg = self.config
        gen = _generator(self.seed, step, 0)
        n = cfg.num_cameras

        def uniform(bounds: Tuple[float, float]) -> torch.Tensor:
            return bounds[0] + (bounds[1] - bounds[0]) * torch.rand(n, generator=gen, dtype=torch.float64)

        radius, elev = uniform(cfg.radius), torch.deg2rad(uniform(cfg.elevation_deg))
        azim, fov = torch.deg2rad(uniform(cfg.azimuth_deg)), torch.deg2rad(uniform(cfg.fov_deg))
        up = torch.tensor(cfg.up, dtype=torch.float64)
        up = up / up.norm()
        # An orthonormal horizontal basis (e1, e2) of the plane orthogonal to ``up``.
        helper = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
        if abs(float(helper @ up)) > 0.9:
            helper = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
        e1 = torch.linalg.cross(helper, up)
        e1 = e1 / e1.norm()
        e2 = torch.linalg.cross(up, e1)
        target = torch.tensor(cfg.target, dtype=torch.float64)
        offsets = (torch.cos(elev) * torch.cos(azim))[:, None] * e1 + (torch.cos(elev) * torch.sin(azim))[:, None] * e2
        positions = target + radius[:, None] * (offsets + torch.sin(elev)[:, None] * up)
        c2w = look_at(positions, target.expand_as(positions), up.expand_as(positions)).float()
        focal = 0.5 * cfg.height / torch.tan(0.5 * fov)
        Ks = torch.zeros(n, 3, 3)
        Ks[:, 0, 0] = focal.float()
        Ks[:, 1, 1] = focal.float()
        Ks[:, 0, 2], Ks[:, 1, 2], Ks[:, 2, 2] = 0.5 * cfg.width, 0.5 * cfg.height, 1.0
        cams = Cameras.create(c2w, Ks, cfg.width, cfg.height).to(self.device)
        if cfg.background == "random":
            bg = torch.rand(3, generator=_generator(self.seed, step, 1))
        else:
            bg = torch.full((3,), 1.0 if cfg.background == "white" else 0.0)
        return CameraBatch(cams, bg.to(self.device))

    def state_dict(self) -> Dict[str, Any]:
        return {"seed": self.seed}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        _warn_if_changed(self, state, ("seed",))


class IndexSampler(Sampler):
    """``batch_size`` uniformly random indices in ``[0, num_items)`` per step (with replacement).

    For objectives whose targets are precomputed tensors (language distillation: rays with their
    frozen compositing weights, whole views, feature rows of an autoencoder). Each step's indices
    come from a generator seeded by ``(seed, step)``, and the batch carries a second per-step seed
    for any further randomness of the objective.
    """

    def __init__(self, num_items: int, batch_size: int, *, seed: int = 0,
                 device: Union[str, torch.device] = "cpu") -> None:  # fmt: skip
        if int(num_items) < 1 or int(batch_size) < 1:
            raise ValueError(f"IndexSampler needs num_items >= 1 and batch_size >= 1, got {num_items}, {batch_size}")
        self.num_items, self.num_rays = int(num_items), int(batch_size)
        self.seed = _check_seed(seed)
        self.device = torch.device(device)

    def sample(self, step: int) -> IndexBatch:
        gen = _generator(self.seed, step, 0)
        idx = torch.randint(0, self.num_items, (self.num_rays,), generator=gen, dtype=torch.int64)
        return IndexBatch(idx.to(self.device), int(step), stream_seed(self.seed, step, 1))

    def state_dict(self) -> Dict[str, Any]:
        return {"seed": self.seed, "num_items": self.num_items, "num_rays": self.num_rays}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        _warn_if_changed(self, state, ("seed", "num_items", "num_rays"))
