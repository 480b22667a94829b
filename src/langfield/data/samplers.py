"""Random pixel sampling for training: ``(camera, v, u)`` triples → a :class:`~langfield.types.Batch`.

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
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

from langfield.data.dataset import BACKGROUNDS, ImageSet
from langfield.geometry.rays import rays_from_pixels
from langfield.types import Batch, ImageBatch

__all__ = ["ImageSampler", "PixelSampler", "stream_seed"]


def stream_seed(seed: int, step: int, stream: int) -> int:
    """A well-mixed 63-bit generator seed for ``(seed, step, stream)`` (numpy ``SeedSequence``)."""
    for name, value in (("seed", seed), ("step", step), ("stream", stream)):
        if int(value) < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    state = np.random.SeedSequence([int(seed), int(step), int(stream)]).generate_state(1, dtype=np.uint64)
    return int(state[0]) & ((1 << 63) - 1)


class PixelSampler:
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
    ) -> None:
        if background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
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
        self.step = 0

        self._shape = (num_cams, height, width)
        self._num_pixels = num_cams * height * width
        self._cameras = cams.to(self.device)
        self._rgb = images.to(self.device).reshape(-1, 3)  # uint8 [C*H*W, 3]
        self._alpha = None if alphas is None else alphas.to(self.device).reshape(-1)  # uint8 [C*H*W]
        fixed = {"white": 1.0, "black": 0.0}.get(background)
        self._fixed_bg = None if fixed is None else torch.full((3,), fixed, device=self.device)

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
        gen = torch.Generator(device="cpu")
        gen.manual_seed(stream_seed(self.seed, step, stream))
        flat = torch.randint(0, self._num_pixels, (self.rays_per_stream,), generator=gen, dtype=torch.int64)
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
        return Batch(rays=rays, rgb=rgb, background=bg)

    def next_batch(self) -> Batch:
        """The batch of the current step, then advance the step counter."""
        batch = self.sample(self.step)
        self.step += 1
        return batch

    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to continue the exact stream: the step and the stream layout."""
        return {"step": self.step, "seed": self.seed, "num_rays": self.num_rays, "num_streams": self.num_streams}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; warns if the stream layout differs (batches will differ)."""
        if "step" not in state:
            raise KeyError("sampler state has no 'step'")
        if "num_rays" in state and state["num_rays"] != self.num_rays:
            self.set_num_rays(int(state["num_rays"]))
        for key in ("seed", "num_streams"):
            if key in state and state[key] != getattr(self, key):
                warnings.warn(
                    f"PixelSampler: checkpoint has {key}={state[key]} but this sampler has "
                    f"{key}={getattr(self, key)}; the ray stream will not continue exactly",
                    stacklevel=2,
                )
        step = int(state["step"])
        if step < 0:
            raise ValueError(f"sampler step must be >= 0, got {step}")
        self.step = step


class ImageSampler:
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

    Attributes:
        num_rays: pixels per step (``H * W``), reported as rays by the trainer.
    """

    def __init__(self, image_set: ImageSet, *, background: str = "white", seed: int = 0,
                 device: Union[str, torch.device] = "cpu") -> None:
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
        self.step = 0
        self._cameras = image_set.cameras.to(self.device)
        self._images = images.to(self.device)
        self._alphas = None if image_set.alphas is None else image_set.alphas.to(self.device)
        self.num_images, height, width = (int(s) for s in images.shape[:3])
        self.num_rays = height * width
        fixed = {"white": 1.0, "black": 0.0}.get(background)
        self._fixed_bg = None if fixed is None else torch.full((3,), fixed, device=self.device)
        self._perm_epoch = -1
        self._perm = None

    @property
    def num_local_rays(self) -> int:
        return self.num_rays

    def set_num_rays(self, num_rays: int) -> None:
        """Ignored: a step always uses one whole image."""

    def index_at(self, step: int) -> int:
        """Training-image index used at ``step``."""
        epoch = step // self.num_images
        if epoch != self._perm_epoch:
            gen = torch.Generator(device="cpu")
            gen.manual_seed(stream_seed(self.seed, epoch, 0))
            self._perm = torch.randperm(self.num_images, generator=gen)
            self._perm_epoch = epoch
        return int(self._perm[step % self.num_images])

    def sample(self, step: int) -> ImageBatch:
        """The batch of step ``step``."""
        index = self.index_at(step)
        if self._fixed_bg is None:
            gen = torch.Generator(device="cpu")
            gen.manual_seed(stream_seed(self.seed, step, 1))
            bg = torch.rand(3, generator=gen).to(self.device)
        else:
            bg = self._fixed_bg
        rgb = self._images[index].float() / 255.0
        if self._alphas is not None:
            a = self._alphas[index].float() / 255.0
            rgb = rgb * a + bg * (1.0 - a)
        return ImageBatch(cameras=self._cameras[index], rgb=rgb, background=bg, index=index)

    def next_batch(self) -> ImageBatch:
        batch = self.sample(self.step)
        self.step += 1
        return batch

    def state_dict(self) -> Dict[str, Any]:
        return {"step": self.step, "seed": self.seed}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if "step" not in state:
            raise KeyError("sampler state has no 'step'")
        if state.get("seed", self.seed) != self.seed:
            warnings.warn(f"ImageSampler: checkpoint has seed={state['seed']}, this sampler {self.seed}", stacklevel=2)
        step = int(state["step"])
        if step < 0:
            raise ValueError(f"sampler step must be >= 0, got {step}")
        self.step = step
