"""Condition-fidelity instruments: read a (generated) image back into the condition it should follow.

To measure how well a controlled image follows its condition without pretrained weights, small
per-pixel networks are trained on *real* toy-world renders only (never on generated images) and
report their own held-out scores, which are the ceiling of any fidelity measured with them:

* :class:`PixelNet` with ``num_classes`` outputs = the **segmenter**: per-pixel class logits
  ``[B, K, H, W]`` (the toy world's semantic labels: sky, floor, one per shape). Fidelity of a
  generated image = mIoU of its predicted labels against the condition's labels
  (:func:`segmentation_fidelity`; ``classes=`` averages over chosen classes only, e.g. the shapes:
  the sky and floor cover most pixels and sit where any plausible image puts them).
* :class:`PixelNet` with one output = the **depth regressor**: ``log`` depth per pixel; fidelity =
  ``1 - AbsRel`` of its prediction against the exact rendered depth on pixels with depth
  (:func:`depth_fidelity`).
* Edges need no weights: Canny of the generated image against the condition's edge map with
  :func:`~langfield.eval.condition_metrics.edge_f1` (``tolerance`` 1 px).

The network is a small U-Net (Ronneberger et al. 2015): two stride-2 stages and a decoder with skip
connections, at most a few hundred thousand parameters at 32 px. Images are ``[B, 3, H, W]``
float in ``[0, 1]`` (uint8 accepted by the helpers).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from langfield._checks import InputError, check_int_range
from langfield.eval.condition_metrics import depth_abs_rel
from langfield.eval.semantic_metrics import SemanticScores, semantic_scores

__all__ = [
    "PixelNet",
    "check_pixel_images",
    "depth_fidelity",
    "mean_iou_over",
    "predict_depth",
    "predict_labels",
    "segmentation_fidelity",
]


def check_pixel_images(images: Tensor, where: str = "images") -> Tensor:
    """``images [B, 3, H, W]`` (uint8, or float in ``[0, 1]``) as float32 in ``[0, 1]``; H, W multiples of 4."""
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"{where}: expected [B, 3, H, W] images, got {getattr(images, 'shape', type(images).__name__)}")
    if images.shape[2] % 4 or images.shape[3] % 4:
        raise InputError(f"{where}: height and width must be multiples of 4 (two stride-2 stages), got {tuple(images.shape[2:])}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise InputError(f"{where}: expected uint8 or float images, got {images.dtype}")
    return images.float()


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    groups = 4 if c_out % 4 == 0 else 1
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.GroupNorm(groups, c_out), nn.SiLU())


class PixelNet(nn.Module):
    """A small U-Net mapping images ``[B, 3, H, W]`` to per-pixel outputs ``[B, out_channels, H, W]``.

    Args:
        out_channels: ``K`` class logits (segmenter) or 1 (depth regressor: ``log`` depth).
        width: channels of the first stage (then ``2 w`` and ``4 w``).
    """

    def __init__(self, out_channels: int, width: int = 16) -> None:
        super().__init__()
        self.out_channels = check_int_range(out_channels, "out_channels", lo=1)
        w = check_int_range(width, "width", lo=4)
        self.width = w
        self.enc1 = nn.Sequential(_conv(3, w), _conv(w, w))
        self.enc2 = nn.Sequential(_conv(w, 2 * w, 2), _conv(2 * w, 2 * w))
        self.enc3 = nn.Sequential(_conv(2 * w, 4 * w, 2), _conv(4 * w, 4 * w))
        self.dec2 = nn.Sequential(_conv(4 * w + 2 * w, 2 * w), _conv(2 * w, 2 * w))
        self.dec1 = nn.Sequential(_conv(2 * w + w, w), _conv(w, w))
        self.head = nn.Conv2d(w, self.out_channels, 1)

    def forward(self, images: Tensor) -> Tensor:
        x = images * 2.0 - 1.0
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([F.interpolate(e3, size=e2.shape[2:], mode="nearest"), e2], dim=1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[2:], mode="nearest"), e1], dim=1))
        return self.head(d1)


@torch.no_grad()
def _run(net: PixelNet, images: Tensor, batch_size: int) -> Tensor:
    images = check_pixel_images(images)
    batch_size = check_int_range(batch_size, "batch_size", lo=1)
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    try:
        return torch.cat([net(chunk.to(device)).cpu() for chunk in images.split(batch_size)])
    finally:
        net.train(was_training)


def predict_labels(segmenter: PixelNet, images: Tensor, *, batch_size: int = 256) -> Tensor:
    """``[B, H, W]`` int64: the segmenter's argmax class per pixel."""
    return _run(segmenter, images, batch_size).argmax(1)


def predict_depth(regressor: PixelNet, images: Tensor, *, batch_size: int = 256) -> Tensor:
    """``[B, H, W]`` float32: the depth regressor's depth per pixel (``exp`` of its log depth)."""
    if regressor.out_channels != 1:
        raise InputError(f"regressor: a depth regressor has 1 output channel, this net has {regressor.out_channels}")
    return _run(regressor, images, batch_size)[:, 0].clamp(-20.0, 20.0).exp()


def segmentation_fidelity(
    segmenter: PixelNet,
    images: Tensor,
    labels: Tensor,
    *,
    num_classes: Optional[int] = None,
    classes: Optional[Sequence[int]] = None,
) -> float:
    """mIoU of the segmenter's labels of ``images`` against ``labels [B, H, W]``.

    The confusion is accumulated over all ``num_classes`` (default: the segmenter's outputs); the
    mean is over ``classes`` (default: all), leaving out classes absent from both target and
    prediction (:class:`~langfield.eval.semantic_metrics.SemanticScores`). ``classes`` = the object
    classes scores the layout of the objects alone: a pixel of another class predicted as an object
    still lowers that object's IoU, and an object pixel predicted as anything else is still missed.
    ``nan`` when none of ``classes`` is present anywhere."""
    k = segmenter.out_channels if num_classes is None else int(num_classes)
    if not isinstance(labels, Tensor) or labels.ndim != 3 or labels.shape[0] != images.shape[0]:
        raise InputError(f"labels: expected [{images.shape[0]}, H, W] class ids, got {getattr(labels, 'shape', labels)}")
    scores = semantic_scores(predict_labels(segmenter, images), labels.long(), k)
    return float(scores.miou) if classes is None else mean_iou_over(scores, classes)


def mean_iou_over(scores: SemanticScores, classes: Sequence[int]) -> float:
    """Mean of ``scores``' per-class IoU over ``classes`` (ids), leaving out classes absent from both
    target and prediction; ``nan`` when none is present."""
    k = len(scores.per_class_iou)
    chosen = [int(c) for c in classes]
    if not chosen or any(c < 0 or c >= k for c in chosen):
        raise InputError(f"classes: expected class ids in [0, {k}), got {list(classes)}")
    ious = [scores.per_class_iou[c] for c in chosen if scores.per_class_iou[c] is not None]
    return float(sum(ious) / len(ious)) if ious else float("nan")


def depth_fidelity(regressor: PixelNet, images: Tensor, depth: Tensor) -> float:
    """``1 - AbsRel`` of the regressor's depth of ``images`` against ``depth [B, H, W]`` (0 = no depth)."""
    if not isinstance(depth, Tensor) or depth.ndim != 3 or depth.shape[0] != images.shape[0]:
        raise InputError(f"depth: expected [{images.shape[0]}, H, W] depths, got {getattr(depth, 'shape', depth)}")
    return 1.0 - depth_abs_rel(predict_depth(regressor, images), depth.float())
