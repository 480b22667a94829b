"""Input checks and torch preprocessing for CLIP-family image and text towers.

Images are preprocessed in torch (resize, centre crop, normalise with the checkpoint's own
mean/std), never through PIL, so batches of rendered or loaded images go straight to the
device. The resize is bicubic with antialiasing, as the reference PIL pipeline, so values
match the Hugging Face processors closely but not bit-for-bit. An :class:`ImageSpec` holds what
a checkpoint expects; :func:`preprocess_images` applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ImageSpec", "check_images", "check_texts", "preprocess_images"]


def check_images(images: Any) -> Tensor:
    """Validate a batch of images ``[B, H, W, 3]`` (``uint8`` or float in ``[0, 1]``); return it.

    Raises:
        TypeError: not a tensor.
        ValueError: wrong shape, an empty batch or image, or an integer dtype other than uint8.
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor [B, H, W, 3], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must have shape [B, H, W, 3], got {tuple(images.shape)}")
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise ValueError(f"images must hold at least one non-empty image, got shape {tuple(images.shape)}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}")
    return images


def check_texts(texts: Any) -> list[str]:
    """Validate text queries for an encoder: one ``str`` or a non-empty sequence of ``str``.

    Raises:
        TypeError: not a sequence, or an element that is not a string.
        ValueError: an empty sequence.
    """
    if isinstance(texts, str):  # one query, not a sequence of characters
        texts = [texts]
    if not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a sequence of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError("texts must hold at least one string, got an empty sequence")
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts must hold only strings, got elements of type {sorted(set(bad))}")
    return list(texts)


@dataclass(frozen=True)
class ImageSpec:
    """How a checkpoint expects its pixels: resize, optional centre crop, normalisation."""

    shortest_edge: int | None  # resize the short side to this (aspect kept), else...
    resize_hw: tuple[int, int] | None  # ...resize to exactly (H, W)
    crop_hw: tuple[int, int] | None  # centre crop after resizing
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mode: str = "bicubic"

    @property
    def output_hw(self) -> tuple[int, int]:
        """``(h, w)`` of the preprocessed image."""
        if self.crop_hw is not None:
            return self.crop_hw
        if self.resize_hw is not None:
            return self.resize_hw
        assert self.shortest_edge is not None
        return (self.shortest_edge, self.shortest_edge)


def preprocess_images(images: Tensor, spec: ImageSpec, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Resize, centre-crop and normalise images for a CLIP-family image tower.

    Args:
        images: ``[B, H, W, 3]`` uint8, or float in ``[0, 1]`` (validate with :func:`check_images` first).
        spec: the checkpoint's resize / crop / mean / std.
        device, dtype: where and in which precision the result lives (the arithmetic is float32).

    Returns:
        ``[B, 3, h, w]`` normalised pixels, ``(h, w) == spec.output_hw``.

    >>> spec = ImageSpec(shortest_edge=4, resize_hw=None, crop_hw=(4, 4), mean=(0.5,) * 3, std=(0.5,) * 3)
    >>> white = torch.full((1, 8, 12, 3), 255, dtype=torch.uint8)
    >>> out = preprocess_images(white, spec, torch.device("cpu"), torch.float32)
    >>> tuple(out.shape), float(out.min()), float(out.max())
    ((1, 3, 4, 4), 1.0, 1.0)
    """
    x = images.to(device)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    x = x.permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    if spec.shortest_edge is not None:
        # Same rounding as transformers' get_resize_output_image_size(default_to_square=False).
        short, long = (h, w) if h <= w else (w, h)
        new_short, new_long = spec.shortest_edge, int(spec.shortest_edge * long / short)
        target = (new_short, new_long) if h <= w else (new_long, new_short)
    else:
        assert spec.resize_hw is not None
        target = spec.resize_hw
    if tuple(target) != (h, w):
        antialias = spec.mode in ("bilinear", "bicubic")
        align = False if spec.mode in ("bilinear", "bicubic") else None
        x = F.interpolate(x, size=target, mode=spec.mode, align_corners=align, antialias=antialias)
        x = x.clamp(0.0, 1.0)  # bicubic overshoots; PIL clamps to the uint8 range
    if spec.crop_hw is not None:
        ch, cw = spec.crop_hw
        h, w = x.shape[-2:]
        if ch > h or cw > w:  # pad symmetrically with zeros, as the HF centre crop does
            pad_h, pad_w = max(ch - h, 0), max(cw - w, 0)
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
            h, w = x.shape[-2:]
        top, left = (h - ch) // 2, (w - cw) // 2
        x = x[..., top : top + ch, left : left + cw]
    mean = torch.tensor(spec.mean, device=device, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - mean) / std).to(dtype).contiguous()
