"""Training objective of the per-pixel fidelity instruments (segmenter, depth regressor), for the one Trainer.

:class:`PixelInstrumentObjective` trains a :class:`~langfield.generation.fidelity.PixelNet` on
preloaded *real* toy-world renders ``images [N, 3, H, W]`` (uint8) with per-pixel targets:

* ``task="segmentation"``: ``targets [N, H, W]`` integer class ids; loss = per-pixel cross-entropy.
* ``task="depth"``: ``targets [N, H, W]`` float depth (0 = no depth, e.g. sky, not scored);
  loss = L1 on ``log`` depth over pixels with depth (scale-aware: the toy world's depths are
  metric, and ``1 - AbsRel`` is measured on them).

Augmentation (no geometric change, so the targets stay aligned; drawn from the batch seed): a
brightness gain in ``[1 - b, 1 + b]`` per image and, with ``blur > 0``, a Gaussian blur of standard
deviation uniform in ``[0, blur]`` px per image (:func:`blur_each`). The blur makes an instrument read
the layout of an image rather than its sharpness: an image decoded from a latent is softer than a
render, and an instrument that has only seen sharp renders mistakes the softness for content.
Batches are :class:`~langfield.types.IndexBatch` from an
:class:`~langfield.data.samplers.IndexSampler`; a step is a pure function of its index.
AdamW with a cosine decay to ``lr / 20``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from langfield._checks import InputError, check_choice, check_finite_number
from langfield.generation.fidelity import PixelNet, check_pixel_images
from langfield.methods.base import Method
from langfield.types import IndexBatch

__all__ = ["PIXEL_TASKS", "PixelInstrumentObjective", "blur_each"]

PIXEL_TASKS = ("segmentation", "depth")


def blur_each(images: Tensor, sigmas: Tensor) -> Tensor:
    """Blur image ``i`` of ``images [B, C, H, W]`` with an isotropic Gaussian of std ``sigmas[i]`` px.

    Separable, ``replicate``-padded, kernel radius ``ceil(3 * max(sigmas))``; a ``sigma`` below 1e-3
    leaves its image unchanged. Differentiable in ``images``; ``[B, C, H, W]`` out.
    """
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise InputError(f"images: expected [B, C, H, W], got {getattr(images, 'shape', images)}")
    if not isinstance(sigmas, Tensor) or sigmas.shape != (images.shape[0],) or bool((sigmas < 0).any()):
        raise InputError(f"sigmas: expected [{images.shape[0]}] values >= 0, got {getattr(sigmas, 'shape', sigmas)}")
    b, c, h, w = images.shape
    half = int(math.ceil(3.0 * float(sigmas.max()))) if b else 0
    if half == 0:
        return images
    taps = torch.arange(-half, half + 1, dtype=torch.float64, device=images.device)
    sig = sigmas.to(device=images.device, dtype=torch.float64).clamp_min(1e-3)[:, None]
    kernel = torch.exp(-0.5 * (taps[None] / sig) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).to(images.dtype).repeat_interleave(c, 0)  # [B*C, k]
    k = 2 * half + 1
    x = F.pad(images.reshape(1, b * c, h, w), (half, half, half, half), mode="replicate")
    x = F.conv2d(x, kernel.view(b * c, 1, k, 1), groups=b * c)
    x = F.conv2d(x, kernel.view(b * c, 1, 1, k), groups=b * c)
    return x.reshape(b, c, h, w)


class PixelInstrumentObjective(Method):
    """Per-pixel supervised training of a :class:`PixelNet` (module docstring).

    Args:
        net: the network (``K`` outputs for segmentation, 1 for depth).
        images: ``[N, 3, H, W]`` uint8 or float in ``[0, 1]`` (kept where they are).
        targets: ``[N, H, W]``: class ids in ``[0, K)`` or depths ``>= 0``.
        task: ``"segmentation"`` or ``"depth"``.
        lr, weight_decay: AdamW; brightness, blur: augmentation strengths (module docstring).
    """

    supports_ddp = False

    def __init__(self, net: PixelNet, images: Tensor, targets: Tensor, *, task: str, lr: float = 2e-3,
                 weight_decay: float = 1e-4, brightness: float = 0.05, blur: float = 0.0) -> None:  # fmt: skip
        super().__init__()
        self.task = check_choice(task, "task", PIXEL_TASKS)
        if not isinstance(net, PixelNet):
            raise InputError(f"net: expected a PixelNet, got {type(net).__name__}")
        check_pixel_images(images[:1], "images")
        if not isinstance(targets, Tensor) or targets.shape != (images.shape[0], *images.shape[2:]):
            raise InputError(f"targets: expected [{images.shape[0]}, {images.shape[2]}, {images.shape[3]}], got {getattr(targets, 'shape', targets)}")
        if self.task == "segmentation":
            if targets.is_floating_point() or int(targets.min()) < 0 or int(targets.max()) >= net.out_channels:
                raise InputError(f"targets: segmentation targets must be integer class ids in [0, {net.out_channels})")
        else:
            if net.out_channels != 1:
                raise InputError(f"net: a depth regressor has 1 output channel, got {net.out_channels}")
            if not targets.is_floating_point() or bool((targets < 0).any()) or not bool(torch.isfinite(targets).all()):
                raise InputError("targets: depth targets must be finite floats >= 0 (0 = no depth)")
        self.net, self.images, self.targets = net, images, targets
        self.lr = check_finite_number(lr, "lr", lo=0, lo_inclusive=False)
        self.weight_decay = check_finite_number(weight_decay, "weight_decay", lo=0)
        self.brightness = check_finite_number(brightness, "brightness", lo=0, hi=1)
        self.blur = check_finite_number(blur, "blur", lo=0, hi=8)

    def _batch(self, batch: IndexBatch) -> Tuple[Tensor, Tensor]:
        rows = batch.indices.to(self.images.device)
        device = next(self.net.parameters()).device
        x = check_pixel_images(self.images[rows]).to(device)
        gen = torch.Generator().manual_seed(int(batch.seed))
        if self.brightness > 0:
            gain = 1.0 + self.brightness * (2.0 * torch.rand(x.shape[0], generator=gen) - 1.0)
            x = (x * gain.to(device)[:, None, None, None]).clamp(0.0, 1.0)
        if self.blur > 0:
            x = blur_each(x, self.blur * torch.rand(x.shape[0], generator=gen))
        return x, self.targets[rows.to(self.targets.device)].to(device)

    def outputs(self, batch: IndexBatch) -> Dict[str, Tensor]:
        x, target = self._batch(batch)
        return {"out": self.net(x), "target": target}

    def losses(self, outputs: Dict[str, Tensor], batch: IndexBatch) -> Dict[str, Tensor]:
        out, target = outputs["out"], outputs["target"]
        if self.task == "segmentation":
            return {"loss": F.cross_entropy(out, target.long())}
        valid = target > 0
        if not bool(valid.any()):
            return {"loss": out.sum() * 0.0}
        log_t = torch.log(target.float().clamp_min(1e-6))
        return {"loss": (out[:, 0] - log_t).abs()[valid].mean()}

    def metrics(self, outputs: Dict[str, Tensor], batch: IndexBatch) -> Dict[str, Tensor]:
        out, target = outputs["out"].detach(), outputs["target"]
        if self.task == "segmentation":
            return {"pixel_acc": (out.argmax(1) == target).float().mean()}
        valid = target > 0
        rel = ((out[:, 0].exp() - target).abs() / target.clamp_min(1e-6))[valid]
        return {"abs_rel": rel.mean() if rel.numel() else out.new_zeros(())}

    def optimizers(self, max_steps: int) -> Tuple[List[torch.optim.Optimizer], List[Any]]:
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        total = max(int(max_steps), 1)

        def factor(step: int) -> float:
            return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(step / total, 1.0)))

        return [opt], [torch.optim.lr_scheduler.LambdaLR(opt, factor)]
