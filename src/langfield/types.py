"""Small frozen dataclasses shared by every layer: cameras, rays and render outputs.

Conventions (see ``docs/conventions.md``):

* Every pose held by these types is **camera-to-world in the OpenCV convention**
  (x right, y down, z forward into the scene). Readers convert OpenGL/Blender poses
  on load with :func:`langfield.geometry.conventions.opengl_to_opencv`.
* Intrinsics ``Ks`` are pixel-unit 3x3 matrices; pixel ``(u, v)`` has its centre at
  ``(u + 0.5, v + 0.5)``.
* Distortion coefficients follow OpenCV's order ``(k1, k2, p1, p2, k3)``.
* Ray directions are unit vectors, so sample distances ``t`` are metric distances along
  the ray ("depth" in render outputs is this ray distance, not the z-depth).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, fields, replace
from typing import Any, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

Index = Union[int, slice, Sequence[int], Tensor]


def _map_tensors(obj, fn):
    """Return a copy of dataclass ``obj`` with ``fn`` applied to each tensor field."""
    changes = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, Tensor):
            changes[f.name] = fn(value)
    return replace(obj, **changes)


@dataclass(frozen=True)
class Cameras:
    """A batch of ``C`` pinhole cameras with optional OpenCV distortion.

    Attributes:
        c2w: ``[C, 3, 4]`` camera-to-world, OpenCV convention.
        Ks: ``[C, 3, 3]`` intrinsics in pixels.
        widths: ``[C]`` int64 image widths in pixels.
        heights: ``[C]`` int64 image heights in pixels.
        dist: ``[C, 5]`` OpenCV ``(k1, k2, p1, p2, k3)``; zeros mean no distortion.
    """

    c2w: Tensor
    Ks: Tensor
    widths: Tensor
    heights: Tensor
    dist: Tensor

    def __post_init__(self) -> None:
        c = self.c2w.shape[0] if self.c2w.ndim == 3 else -1
        if self.c2w.ndim != 3 or tuple(self.c2w.shape[1:]) != (3, 4):
            raise ValueError(f"Cameras.c2w must be [C, 3, 4], got {tuple(self.c2w.shape)}")
        if tuple(self.Ks.shape) != (c, 3, 3):
            raise ValueError(f"Cameras.Ks must be [{c}, 3, 3], got {tuple(self.Ks.shape)}")
        for name in ("widths", "heights"):
            v = getattr(self, name)
            if tuple(v.shape) != (c,):
                raise ValueError(f"Cameras.{name} must be [{c}], got {tuple(v.shape)}")
        if tuple(self.dist.shape) != (c, 5):
            raise ValueError(f"Cameras.dist must be [{c}, 5], got {tuple(self.dist.shape)}")
        if c > 0:
            fx, fy = self.Ks[:, 0, 0], self.Ks[:, 1, 1]
            if not bool(torch.all(torch.isfinite(self.Ks))) or bool(torch.any(fx <= 0) | torch.any(fy <= 0)):
                raise ValueError("Cameras.Ks: focal lengths must be finite and > 0")
            if bool(torch.any(self.widths <= 0) | torch.any(self.heights <= 0)):
                raise ValueError("Cameras.widths/heights must be > 0")

    @staticmethod
    def create(
        c2w: Tensor,
        Ks: Tensor,
        widths: Union[int, Tensor],
        heights: Union[int, Tensor],
        dist: Optional[Tensor] = None,
    ) -> "Cameras":
        """Build cameras from possibly-broadcast inputs (``c2w`` may be ``[C,4,4]``)."""
        c2w = torch.as_tensor(c2w, dtype=torch.float32)
        if c2w.ndim == 2:
            c2w = c2w[None]
        c2w = c2w[:, :3, :4].contiguous()
        num = c2w.shape[0]
        Ks = torch.as_tensor(Ks, dtype=torch.float32)
        if Ks.ndim == 2:
            Ks = Ks[None].expand(num, 3, 3)
        Ks = Ks.contiguous()
        widths = torch.as_tensor(widths, dtype=torch.int64).reshape(-1).expand(num).contiguous()
        heights = torch.as_tensor(heights, dtype=torch.int64).reshape(-1).expand(num).contiguous()
        if dist is None:
            dist = torch.zeros(num, 5)
        dist = torch.as_tensor(dist, dtype=torch.float32)
        if dist.ndim == 1:
            dist = dist[None]
        if dist.shape[-1] < 5:
            dist = torch.nn.functional.pad(dist, (0, 5 - dist.shape[-1]))
        dist = dist.expand(num, 5).contiguous()
        return Cameras(c2w=c2w, Ks=Ks, widths=widths, heights=heights, dist=dist)

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, idx: Index) -> "Cameras":
        """A ``Cameras`` batch; scalar indices (int, 0-d tensor, numpy int) keep a length-1 batch."""
        if isinstance(idx, Tensor) and idx.ndim == 0:
            idx = idx.reshape(1)
        elif not isinstance(idx, (slice, Tensor, list, tuple)) and hasattr(idx, "__index__"):
            idx = [operator.index(idx)]
        return _map_tensors(self, lambda t: t[idx])

    def to(self, device: Union[str, torch.device]) -> "Cameras":
        return _map_tensors(self, lambda t: t.to(device))

    @property
    def device(self) -> torch.device:
        return self.c2w.device

    @property
    def has_distortion(self) -> bool:
        return bool(torch.any(self.dist != 0))

    def rescaled(self, factor: float) -> "Cameras":
        """Cameras for images downscaled by ``factor`` (e.g. 4 -> quarter resolution).

        Widths/heights are floored like image resizing; ``Ks`` is scaled by the exact
        per-axis ratio so the image border maps to the same rays.
        """
        if factor <= 0:
            raise ValueError(f"downscale factor must be > 0, got {factor}")
        new_w = torch.clamp((self.widths.double() / factor).floor().long(), min=1)
        new_h = torch.clamp((self.heights.double() / factor).floor().long(), min=1)
        sx = new_w.float() / self.widths.float()
        sy = new_h.float() / self.heights.float()
        Ks = self.Ks.clone()
        Ks[:, 0, :] *= sx[:, None]
        Ks[:, 1, :] *= sy[:, None]
        return replace(self, Ks=Ks, widths=new_w, heights=new_h)


@dataclass(frozen=True)
class Rays:
    """A batch of rays ``[*B]``.

    Attributes:
        origins: ``[*B, 3]`` world-space origins.
        directions: ``[*B, 3]`` unit world-space directions.
        radii: ``[*B, 1]`` cone radius at unit distance (Mip-NeRF's ``dx * 2/sqrt(12)``).
        near, far: ``[*B, 1]`` sampling bounds along the ray.
        camera_indices: ``[*B]`` int64 index of the source camera.
    """

    origins: Tensor
    directions: Tensor
    radii: Tensor
    near: Tensor
    far: Tensor
    camera_indices: Tensor

    @property
    def shape(self) -> torch.Size:
        return self.origins.shape[:-1]

    def __len__(self) -> int:
        return self.origins.shape[0]

    def reshape(self, *shape: int) -> "Rays":
        """Reshape the batch dims ``[*B] -> shape`` (channel dims are kept)."""
        return Rays(
            origins=self.origins.reshape(*shape, 3),
            directions=self.directions.reshape(*shape, 3),
            radii=self.radii.reshape(*shape, 1),
            near=self.near.reshape(*shape, 1),
            far=self.far.reshape(*shape, 1),
            camera_indices=self.camera_indices.reshape(*shape),
        )

    def flatten(self) -> "Rays":
        return self.reshape(-1)

    def __getitem__(self, idx: Index) -> "Rays":
        return _map_tensors(self, lambda t: t[idx])

    def to(self, device: Union[str, torch.device]) -> "Rays":
        return _map_tensors(self, lambda t: t.to(device))

    @staticmethod
    def cat(items: Sequence["Rays"]) -> "Rays":
        first = items[0]
        return replace(
            first,
            **{f.name: torch.cat([getattr(r, f.name) for r in items], 0) for f in fields(first)},
        )


@dataclass(frozen=True)
class RenderOutput:
    """What a renderer returns for ``[*B]`` rays (or an ``[H, W]`` image).

    Attributes:
        rgb: ``[*B, 3]`` composited colour in [0, 1] (background included).
        depth: ``[*B, 1]`` expected ray distance, normalised by accumulation.
        accumulation: ``[*B, 1]`` opacity (sum of weights).
        normals: ``[*B, 3]`` composited world-space normals, if computed.
        features: ``[*B, D]`` composited extra channels (e.g. language features), if any.
    """

    rgb: Tensor
    depth: Tensor
    accumulation: Tensor
    normals: Optional[Tensor] = None
    features: Optional[Tensor] = None

    def reshape(self, *shape: int) -> "RenderOutput":
        return _map_tensors(self, lambda t: t.reshape(*shape, t.shape[-1]))

    def to(self, device: Union[str, torch.device]) -> "RenderOutput":
        return _map_tensors(self, lambda t: t.to(device))

    @staticmethod
    def cat(items: Sequence["RenderOutput"]) -> "RenderOutput":
        first = items[0]
        out = {}
        for f in fields(first):
            vals = [getattr(r, f.name) for r in items]
            out[f.name] = None if vals[0] is None else torch.cat(vals, 0)
        return RenderOutput(**out)


# ----------------------------------------------------------------------------- training batches
# What a sampler hands the trainer for one step. ``model_inputs()`` gives the positional
# arguments of ``Method.forward`` (so ``DistributedDataParallel(method)(*batch.model_inputs())``
# synchronises gradients whatever the batch kind).


@dataclass(frozen=True)
class Batch:
    """``R`` random pixels of the training images (NeRF family).

    Attributes:
        rays: ``[R]`` rays through the pixel centres.
        rgb: ``[R, 3]`` target colour composited over ``background``.
        background: ``[R, 3]`` background colour each ray is composited over.
        depth: ``[R, 1]`` ground-truth ray distance (normalised world units) of the same pixels, ``0``
            where there is none, or ``None`` when the sampler hands out no depth.
    """

    rays: Rays
    rgb: Tensor
    background: Tensor
    depth: Optional[Tensor] = None

    def to(self, device) -> "Batch":
        depth = None if self.depth is None else self.depth.to(device)
        return Batch(self.rays.to(device), self.rgb.to(device), self.background.to(device), depth)

    def model_inputs(self) -> Tuple[Rays, Tensor]:
        return self.rays, self.background


@dataclass(frozen=True)
class ImageBatch:
    """One whole training image (Gaussian splatting).

    Attributes:
        cameras: the image's camera (a length-1 :class:`Cameras`, OpenCV c2w).
        rgb: ``[H, W, 3]`` target composited over ``background``.
        background: ``[3]`` background colour.
        index: index of the image in the training split.
        depth: ``[H, W, 1]`` ground-truth ray distance (normalised world units) of the same pixels,
            ``0`` where there is none, or ``None`` when the dataset has no depth maps.
        mask: ``[H, W, 1]`` bool training mask of the same pixels, True = use the pixel in the
            losses (``ImageSet.masks``), or ``None`` when every pixel is used.
    """

    cameras: Cameras
    rgb: Tensor
    background: Tensor
    index: int
    depth: Optional[Tensor] = None
    mask: Optional[Tensor] = None

    def to(self, device) -> "ImageBatch":
        depth = None if self.depth is None else self.depth.to(device)
        mask = None if self.mask is None else self.mask.to(device)
        return ImageBatch(self.cameras.to(device), self.rgb.to(device), self.background.to(device), self.index, depth, mask)

    def model_inputs(self) -> Tuple[Cameras, Tensor]:
        return self.cameras, self.background


@dataclass(frozen=True)
class CameraBatch:
    """Cameras without target images (score distillation, generative training).

    Attributes:
        cameras: ``C`` cameras (OpenCV c2w).
        background: ``[3]`` background colour to render over.
    """

    cameras: Cameras
    background: Tensor

    def to(self, device) -> "CameraBatch":
        return CameraBatch(self.cameras.to(device), self.background.to(device))

    def model_inputs(self) -> Tuple[Cameras, Tensor]:
        return self.cameras, self.background


@dataclass(frozen=True)
class IndexBatch:
    """Random item indices of step ``step`` (precomputed targets: rays, views, feature rows).

    Attributes:
        indices: ``[B]`` int64 indices into the sampled collection.
        step: the training step the batch belongs to.
        seed: a 63-bit seed derived from ``(sampler seed, step)`` for any further per-step
            randomness (e.g. jitter), so the whole step stays a pure function of the step.
    """

    indices: Tensor
    step: int
    seed: int

    def to(self, device) -> "IndexBatch":
        return IndexBatch(self.indices.to(device), self.step, self.seed)

    def model_inputs(self) -> Tuple[Any, ...]:
        return (self,)
