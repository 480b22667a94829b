"""Segment Anything (SAM) through ``transformers``: loading, and the automatic mask generator.

:func:`load_sam` finds the model with :func:`~langfield.pretrained.resolver.resolve_pretrained`
(a local directory, a hub id in the local Hugging Face cache, or, when allowed, a hub id to
download) and loads ``SamModel`` + ``SamProcessor`` once per (model, device).

:func:`sam_automatic_masks` runs SAM as an *automatic mask generator* (``SamAutomaticMaskGenerator``
from ``segment-anything``, without crops): a regular ``points_per_side x points_per_side`` grid
of single-point prompts, three multimask outputs per point, filtered by the model's predicted IoU
and by the stability score (the IoU between the mask thresholded at ``+offset`` and at
``-offset`` of the logits), then de-duplicated with greedy mask-IoU NMS. Masks may overlap.

Example::

    sam = load_sam("facebook/sam-vit-base", "cuda")
    masks, scores = sam_automatic_masks(rgb, sam, SamAutomaticMaskConfig(points_per_side=16))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple, Union

import numpy as np
import torch

from langfield.pretrained.resolver import ResolvedModel, explain_load_errors, load_failure_error, resolve_pretrained

__all__ = ["LoadedSam", "SamAutomaticMaskConfig", "load_sam", "sam_automatic_masks"]


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class SamAutomaticMaskConfig:
    """Settings of the automatic mask generator (SAM's defaults).

    Args:
        points_per_side: the prompt grid has ``points_per_side ** 2`` points.
        points_per_batch: prompts decoded per forward pass of the mask decoder (memory knob).
        pred_iou_thresh: keep masks whose predicted IoU is at least this, in [0, 1].
        stability_score_thresh: keep masks whose stability score is at least this, in [0, 1].
        stability_score_offset: logit offset used for the stability score (SAM's default 1.0).
        nms_iou_thresh: drop a mask whose mask-IoU with a better-scored kept mask exceeds this.
        min_mask_area: drop masks with fewer pixels than this.
    """

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    nms_iou_thresh: float = 0.7
    min_mask_area: int = 0

    def __post_init__(self) -> None:
        for name in ("points_per_side", "points_per_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.min_mask_area, bool) or not isinstance(self.min_mask_area, int) or self.min_mask_area < 0:
            raise ValueError(f"min_mask_area must be an integer >= 0, got {self.min_mask_area!r}")
        for name in ("pred_iou_thresh", "stability_score_thresh", "nms_iou_thresh"):
            value = getattr(self, name)
            if not _is_real(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        offset = self.stability_score_offset
        if not _is_real(offset) or offset < 0:
            raise ValueError(f"stability_score_offset must be a finite number >= 0, got {offset!r}")


# ------------------------------------------------------------------------------------- loading


class LoadedSam(NamedTuple):
    """A ``SamModel`` (eval mode, on its device) and its ``SamProcessor``."""

    model: Any
    processor: Any


def load_sam(
    name: str, device: Union[str, torch.device] = "cpu", *, allow_download: bool = True, hint: str = ""
) -> LoadedSam:
    """Resolve and load a SAM checkpoint (once per resolved model and device).

    Args:
        name: a local directory holding ``SamModel`` + ``SamProcessor`` (``save_pretrained``
            layout) or a hub id (``"facebook/sam-vit-base"``).
        device: where the model runs.
        allow_download: ``False`` uses only a directory or the local cache (never the network).
        hint: the caller's alternative, appended to error messages (e.g. ``--masks superpixels``).

    Raises:
        PretrainedUnavailableError: the model is not on this machine and cannot be downloaded, or
            the directory is not a SAM checkpoint; the message says how to get one.
    """
    resolved = resolve_pretrained(name, what="SAM model", allow_download=allow_download, hint=hint)
    return _load_resolved(resolved, str(torch.device(device)))


@lru_cache(maxsize=2)
def _load_resolved(resolved: ResolvedModel, device: str) -> LoadedSam:
    import transformers
    from transformers import AutoConfig, SamModel, SamProcessor

    source, kwargs = resolved.name_or_path, resolved.from_pretrained_kwargs
    verbosity = transformers.logging.get_verbosity()
    try:
        with explain_load_errors(resolved):
            transformers.logging.set_verbosity_error()  # the torchvision-fallback notice of the processor
            model_type = AutoConfig.from_pretrained(source, **kwargs).model_type
            if model_type != "sam":  # SamModel would load another model's config with random weights
                raise load_failure_error(resolved, f"its config.json has model_type {model_type!r}, not 'sam'")
            processor = SamProcessor.from_pretrained(source, **kwargs)
            model = SamModel.from_pretrained(source, **kwargs).eval().to(device)
    finally:
        transformers.logging.set_verbosity(verbosity)
    return LoadedSam(model, processor)


# ----------------------------------------------------------------------------------- inference


def _stability_scores(logits: torch.Tensor, offset: float) -> torch.Tensor:
    """IoU of ``logits > +offset`` and ``logits > -offset``, ``[N, H, W] -> [N]``."""
    inter = (logits > offset).flatten(1).sum(1).float()
    union = (logits > -offset).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(union))


def _mask_nms(masks: torch.Tensor, scores: torch.Tensor, iou_thresh: float, max_side: int = 256) -> torch.Tensor:
    """Greedy NMS on mask IoU (computed at most ``max_side`` px). ``masks [N, H, W]`` -> kept indices, by score."""
    order = torch.argsort(scores, descending=True, stable=True)
    small = masks
    height, width = masks.shape[-2:]
    if max(height, width) > max_side:
        factor = max_side / max(height, width)
        size = (max(1, round(height * factor)), max(1, round(width * factor)))
        small = torch.nn.functional.interpolate(masks[:, None].float(), size=size, mode="nearest")[:, 0] > 0.5
    flat = small.flatten(1).float()
    areas = flat.sum(1)
    kept: list[int] = []
    for i in order.tolist():
        if kept:
            inter = flat[kept] @ flat[i]
            iou = inter / (areas[kept] + areas[i] - inter).clamp_min(1)
            if bool((iou > iou_thresh).any()):
                continue
        kept.append(i)
    return torch.tensor(kept, dtype=torch.long, device=masks.device)


def sam_automatic_masks(
    rgb: np.ndarray, sam: LoadedSam, config: SamAutomaticMaskConfig = SamAutomaticMaskConfig()
) -> tuple[torch.Tensor, torch.Tensor]:
    """Automatic mask generation on one image (see the module docstring).

    Args:
        rgb: ``[H, W, 3]`` uint8 RGB.
        sam: from :func:`load_sam`.
        config: grid, thresholds and NMS.

    Returns:
        ``masks [K, H, W]`` bool and ``scores [K]`` float (predicted IoU), on the CPU, sorted by
        non-increasing score; masks may overlap.
    """
    model, processor = sam
    height, width = rgb.shape[:2]
    model_device = next(model.parameters()).device
    inputs = processor(images=rgb, input_data_format="channels_last", return_tensors="pt")
    pixel_values = inputs["pixel_values"].to(model_device, dtype=next(model.parameters()).dtype)
    original_sizes, reshaped_sizes = inputs["original_sizes"], inputs["reshaped_input_sizes"]
    new_h, new_w = (int(v) for v in reshaped_sizes[0])

    # Grid of point prompts at cell centres (SAM's build_point_grid), in resized-image pixels.
    n = config.points_per_side
    offsets = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    ys, xs = torch.meshgrid(offsets * height, offsets * width, indexing="ij")
    points = torch.stack([xs.ravel() * (new_w / width), ys.ravel() * (new_h / height)], -1)  # [P, 2] (x, y)

    all_logits, all_iou = [], []
    with torch.no_grad():
        embeddings = model.get_image_embeddings(pixel_values)
        for start in range(0, points.shape[0], config.points_per_batch):
            batch = points[start : start + config.points_per_batch].to(model_device)
            out = model(
                image_embeddings=embeddings,
                input_points=batch[None, :, None, :],  # [1, P, 1, 2]
                input_labels=torch.ones(1, batch.shape[0], 1, dtype=torch.long, device=model_device),
                multimask_output=True,
            )
            iou = out.iou_scores[0].flatten().float()  # [P * 3]
            low_res = out.pred_masks[0].flatten(0, 1).float()  # [P * 3, h, w]
            keep = iou >= config.pred_iou_thresh
            if not bool(keep.any()):
                continue
            logits = processor.image_processor.post_process_masks(
                low_res[keep][None, :, None], original_sizes, reshaped_sizes, binarize=False
            )[0][:, 0]  # [N, H, W]
            stable = _stability_scores(logits, config.stability_score_offset) >= config.stability_score_thresh
            all_logits.append((logits[stable] > 0).cpu())
            all_iou.append(iou[keep][stable].cpu())

    if all_logits:
        masks, scores = torch.cat(all_logits), torch.cat(all_iou)
        big = masks.flatten(1).sum(1) >= max(config.min_mask_area, 1)
        masks, scores = masks[big], scores[big]
    else:
        masks, scores = torch.zeros(0, height, width, dtype=torch.bool), torch.zeros(0)
    if masks.shape[0] > 0:
        kept = _mask_nms(masks, scores, config.nms_iou_thresh)
        masks, scores = masks[kept], scores[kept]
    return masks, scores
