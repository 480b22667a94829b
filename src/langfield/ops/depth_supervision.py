"""Depth supervision: a masked L1 between a rendered depth and ground-truth ray distances.

One term for every method that renders an alpha-normalised expected ray distance
(``RenderOutput.depth``: Gaussian splatting's images, the NeRF family's rays) against the
dataset's depth maps (``ImageSet.depths``: RGB-D captures, synthetic scenes with exact depth).
It is langfield's plain expected-depth L1 -- not DS-NeRF's ray-distribution KL (Deng et al.,
CVPR 2022) nor Urban Radiance Fields' line-of-sight terms -- and is named as such in the configs
(``depth_loss_weight``) and logs (``depth_l1``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["DEPTH_MIN_ACCUMULATION", "depth_l1"]

#: The depth term skips pixels whose rendered accumulation is below this: the alpha-normalised depth
#: ``sum(w_i d_i) / sum(w_i)`` has gradients ``(d_i - depth) / sum(w_i)``, unbounded as coverage vanishes.
DEPTH_MIN_ACCUMULATION = 0.5


def depth_l1(depth: Tensor, accumulation: Tensor, target: Tensor) -> Tensor:
    """Masked L1 depth loss: the mean of ``|depth - target|`` over the pixels (or rays) where ``target``
    is valid (finite and ``> 0``) and ``accumulation >= DEPTH_MIN_ACCUMULATION``; 0 when there is none.

    Args:
        depth: ``[..., 1]`` rendered depth, the alpha-normalised expected ray distance
            (``RenderOutput.depth``): ``[H, W, 1]`` for an image, ``[R, 1]`` for rays.
        accumulation: ``[..., 1]`` rendered opacity (only selects pixels; no gradient flows through the mask).
        target: ``[..., 1]`` ground-truth ray distance in the same world units, 0 (or non-finite) = none.

    Returns:
        A scalar tensor, differentiable with respect to ``depth``.

    >>> depth, acc = torch.tensor([[[2.0], [3.0]], [[5.0], [1.0]]]), torch.tensor([[[1.0], [1.0]], [[1.0], [0.1]]])
    >>> float(depth_l1(depth, acc, torch.tensor([[[2.5], [0.0]], [[4.0], [9.0]]])))  # (0.5 + 1.0) / 2
    0.75
    """
    if depth.shape != target.shape or accumulation.shape != target.shape or target.shape[-1:] != (1,):
        raise ValueError(
            f"depth_l1: depth {tuple(depth.shape)}, accumulation {tuple(accumulation.shape)} and target "
            f"{tuple(target.shape)} must share one [..., 1] shape"
        )
    valid = torch.isfinite(target) & (target > 0) & (accumulation.detach() >= DEPTH_MIN_ACCUMULATION)
    reference = torch.where(valid, target.to(depth.dtype), depth.detach())  # invalid pixels: zero error, zero gradient
    return (depth - reference).abs().sum() / valid.sum().clamp_min(1)
