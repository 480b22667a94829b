"""In-memory scene datasets: one :class:`ImageSet` per split plus scene-level metadata.

Images are stored once as ``uint8`` (``[C, H, W, 3]`` RGB and optional ``[C, H, W, 1]`` alpha),
so a full-resolution NeRF-synthetic scene fits in memory; conversion to float happens per batch.
All poses are OpenCV camera-to-world in the *normalised* world frame (see ``world_transform``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional

import torch
from torch import Tensor

from langfield.geometry.ndc import NDCSpace
from langfield.types import Cameras

BACKGROUNDS = ("white", "black", "random")


@dataclass(frozen=True)
class ImageSet:
    """Images of one split and their cameras.

    Attributes:
        cameras: ``C`` cameras (OpenCV c2w, normalised world frame).
        images: ``[C, H, W, 3]`` uint8 RGB. If ``alphas`` is given these are the *un-composited*
            colours (premultiplication undone is not assumed: colour where alpha > 0 is used as is).
        alphas: ``[C, H, W, 1]`` uint8 alpha or ``None`` for opaque photos.
        paths: source file of each image (for messages and outputs).
        semantics: ``[C, H, W]`` int64 label ids or ``None`` (labelled scenes).
        depths: ``[C, H, W, 1]`` float32 ground-truth ray distances or ``None`` (procedural scenes).
        masks: ``[C, H, W, 1]`` bool training masks, True = use the pixel, or ``None`` (every pixel is
            used). They mark pixels a user wants ignored (moving people, the capture rig, sky;
            nerfstudio's per-frame ``mask_path``) and affect **training only**: ray samplers draw
            usable pixels only, whole-image losses average over them (Gaussian splatting), while
            evaluation, metrics and renders always use the full images.
    """

    cameras: Cameras
    images: Tensor
    alphas: Optional[Tensor] = None
    paths: List[str] = field(default_factory=list)
    semantics: Optional[Tensor] = None
    depths: Optional[Tensor] = None
    masks: Optional[Tensor] = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    def image_float(self, index: int, background: Tensor) -> Tensor:
        """``[H, W, 3]`` float image ``index`` composited over ``background [3]``."""
        rgb = self.images[index].float() / 255.0
        if self.alphas is None:
            return rgb
        a = self.alphas[index].float() / 255.0
        return rgb * a + background.to(rgb) * (1.0 - a)

    def subset(self, indices: List[int]) -> "ImageSet":
        def pick(t):
            return None if t is None else t[indices]

        return ImageSet(
            cameras=self.cameras[indices],
            images=self.images[indices],
            alphas=pick(self.alphas),
            paths=[self.paths[i] for i in indices] if self.paths else [],
            semantics=pick(self.semantics),
            depths=pick(self.depths),
            masks=pick(self.masks),
        )


@dataclass(frozen=True)
class SceneDataset:
    """A scene with its splits.

    Attributes:
        name: short scene name (e.g. ``"lego"``).
        splits: ``{"train": ..., "val": ..., "test": ...}``; "val" may be absent.
        scene_box: ``[2, 3]`` axis-aligned bounds (min, max) of the content, normalised frame.
        near, far: ray distance bounds used for sampling, normalised frame.
        background: ``"white" | "black" | "random"``: how RGBA images are composited for training
            (evaluation always uses white for "random", matching the NeRF-synthetic protocol).
        world_transform: ``[4, 4]`` map from the dataset's original world frame to the normalised
            frame (``x_norm = world_transform @ x_orig``); kept so results can be exported back.
        points3d: ``[P, 3]`` sparse points (COLMAP) in the normalised frame, or ``None``.
        points3d_rgb: ``[P, 3]`` uint8 colours of ``points3d``, or ``None``.
        labels: label names for ``ImageSet.semantics`` ids, or ``None``.
        object_boxes: ``{name: [2, 3] (min, max)}`` true world-axis-aligned boxes of named objects
            in the dataset's **original** frame (map with ``world_transform``), or ``None``; the
            ground truth of spatial questions (a transforms json's ``objects`` field).
        unbounded: True for scenes whose background is at infinity (real captures).
        forward_facing: True for captures whose cameras all look roughly the same way at content
            in front of them (LLFF); the ``"auto"`` ray space reconstructs them in NDC.
        ndc: the :class:`~langfield.geometry.ndc.NDCSpace` the NeRF-family methods receive their
            rays in, or ``None`` for world rays (set by
            :func:`langfield.data.ray_space.apply_ray_space`, never by readers). Everything else
            here (cameras, ``scene_box``, ``near``/``far``) stays in world units either way.
    """

    name: str
    splits: Dict[str, ImageSet]
    scene_box: Tensor
    near: float
    far: float
    background: str = "white"
    world_transform: Tensor = field(default_factory=lambda: torch.eye(4))
    points3d: Optional[Tensor] = None
    points3d_rgb: Optional[Tensor] = None
    labels: Optional[List[str]] = None
    object_boxes: Optional[Dict[str, Tensor]] = None
    unbounded: bool = False
    forward_facing: bool = False
    ndc: Optional[NDCSpace] = None

    def __post_init__(self) -> None:
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}, got {self.background!r}")
        if "train" not in self.splits:
            raise ValueError(f"dataset {self.name!r} has no 'train' split")
        for name, split in self.splits.items():
            if len(split) == 0:
                raise ValueError(f"dataset {self.name!r}: split {name!r} is empty")

    def split(self, name: str) -> ImageSet:
        if name not in self.splits:
            raise KeyError(f"dataset {self.name!r} has no split {name!r}; it has {sorted(self.splits)}")
        return self.splits[name]

    def eval_background(self) -> Tensor:
        """``[3]`` background colour used when evaluating/rendering."""
        return torch.zeros(3) if self.background == "black" else torch.ones(3)

    @property
    def ray_space(self) -> str:
        """``"ndc"`` when :attr:`ndc` is set, else ``"world"``."""
        return "world" if self.ndc is None else "ndc"

    def with_splits(self, splits: Dict[str, ImageSet]) -> "SceneDataset":
        return replace(self, splits=splits)
