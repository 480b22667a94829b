"""Training objective of the attribute-classifier instrument, for the one Trainer.

:class:`AttributeClassifierObjective` is a :class:`~langfield.methods.base.Method` fed by
:class:`~langfield.types.IndexBatch` from an :class:`~langfield.data.samplers.IndexSampler` over
preloaded real renders: ``images [N, 3, H, W]`` (uint8, or float in ``[0, 1]``) with their
:class:`~langfield.generation.instruments.AttributeLabels` (``count [N]``, ``shapes [N, S]``,
``colours [N, S]``, ``-1`` = empty slot, trained as the "none" class). The images and labels
stay plain attributes on the CPU, so a checkpoint holds only the network; each step moves its
batch to the network's device.

Loss: the sum of the three heads' cross-entropies
(:func:`~langfield.generation.instruments.attribute_losses`). Optional light augmentation, drawn
from the batch's seed so a step is a pure function of its index (exact resume): a translation of
up to ``max_shift`` pixels (edge pixels repeated; small enough never to swap two objects that the
renderer separates) and a brightness gain in ``[1 - brightness, 1 + brightness]``. No flips (a
flip would swap left and right) and no hue changes (colour is a label).

Example::

    classifier = AttributeClassifier(image_size=32)
    objective = AttributeClassifierObjective(classifier, train_images, train_labels)
    sampler = IndexSampler(len(train_labels), 64, seed=0)
    Trainer(objective, TrainerConfig(max_steps=2000, output_dir=None), sampler=sampler).train()
    print(evaluate_classifier(classifier, test_images, test_labels))   # held-out accuracy
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from langfield._checks import InputError, check_finite_number, check_int_range
from langfield.generation.instruments import (
    AttributeClassifier,
    AttributeLabels,
    AttributeLogits,
    attribute_losses,
    check_attribute_images,
)
from langfield.methods.base import Method
from langfield.types import IndexBatch

__all__ = ["AttributeClassifierObjective", "augment_images"]


def augment_images(images: Tensor, seed: int, *, max_shift: int = 2, brightness: float = 0.05) -> Tensor:
    """Random translation (edge-replicated, up to ``max_shift`` px) and brightness gain per image.

    ``images [B, C, H, W]`` float; the draws come from a generator seeded with ``seed`` (CPU), so
    the result depends only on the inputs and the seed. Values are clamped to ``[0, 1]``.
    """
    b, _, h, w = images.shape
    gen = torch.Generator().manual_seed(int(seed))
    out = images
    if max_shift > 0:
        padded = F.pad(images, (max_shift,) * 4, mode="replicate")
        dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
        dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
        rows = (dy[:, None] + torch.arange(h)[None, :]).to(images.device)  # [B, H]
        cols = (dx[:, None] + torch.arange(w)[None, :]).to(images.device)  # [B, W]
        batch = torch.arange(b, device=images.device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if brightness > 0:
        gain = 1.0 + brightness * (2.0 * torch.rand(b, generator=gen) - 1.0)
        out = out * gain.to(images.device, images.dtype)[:, None, None, None]
    return out.clamp(0.0, 1.0)


class AttributeClassifierObjective(Method):
    """Cross-entropy training of an :class:`AttributeClassifier` on preloaded labelled renders.

    Args:
        classifier: the network to train (its ``image_size`` must match the images).
        images: ``[N, 3, H, W]`` uint8 or float in ``[0, 1]`` (kept where they are, normally CPU).
        labels: consistent :class:`AttributeLabels` of the ``N`` images.
        lr: AdamW learning rate, decayed by cosine to ``lr / 20`` over the run.
        weight_decay: AdamW weight decay.
        augment: apply :func:`augment_images` (translation + brightness) to each batch.
        max_shift, brightness: augmentation strengths.

    Raises:
        InputError: images not ``[N, 3, S, S]`` at the classifier's size, a label count that
            differs from the image count, labels out of the classifier's ranges, bad numbers.
    """

    supports_ddp = False

    def __init__(
        self,
        classifier: AttributeClassifier,
        images: Tensor,
        labels: AttributeLabels,
        *,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        augment: bool = True,
        max_shift: int = 2,
        brightness: float = 0.05,
    ) -> None:
        super().__init__()
        if not isinstance(classifier, AttributeClassifier):
            raise TypeError(f"classifier must be an AttributeClassifier, got {type(classifier).__name__}")
        check_attribute_images(images[:1], "images", image_size=classifier.image_size)
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise InputError(f"images: expected uint8 or float images, got {images.dtype}")
        labels.check("labels", num_shapes=classifier.num_shapes, num_colours=classifier.num_colours)
        if len(labels) != images.shape[0]:
            raise InputError(f"images and labels: {images.shape[0]} images but {len(labels)} labels")
        if labels.num_slots != classifier.max_objects:
            raise InputError(f"labels: {labels.num_slots} slots, the classifier has {classifier.max_objects}")
        self.classifier = classifier
        self.images = images
        self.labels = labels.to("cpu")
        self.lr = check_finite_number(lr, "lr", lo=0, lo_inclusive=False)
        self.weight_decay = check_finite_number(weight_decay, "weight_decay", lo=0)
        self.augment = bool(augment)
        self.max_shift = check_int_range(max_shift, "max_shift", lo=0)
        self.brightness = check_finite_number(brightness, "brightness", lo=0, hi=1)

    def outputs(self, batch: IndexBatch) -> AttributeLogits:
        device = next(self.classifier.parameters()).device
        x = check_attribute_images(self.images[batch.indices.to(self.images.device)]).to(device)
        if self.augment:
            x = augment_images(x, batch.seed, max_shift=self.max_shift, brightness=self.brightness)
        return self.classifier(x)

    def losses(self, outputs: AttributeLogits, batch: IndexBatch) -> Dict[str, Tensor]:
        return attribute_losses(outputs, self.labels.index(batch.indices.cpu()))

    def metrics(self, outputs: AttributeLogits, batch: IndexBatch) -> Dict[str, Tensor]:
        target = self.labels.index(batch.indices.cpu()).to(outputs.count.device)
        count_ok = (outputs.count.argmax(-1) + 1 == target.count).float().mean()
        shape_t = torch.where(target.shapes < 0, outputs.shapes.shape[-1] - 1, target.shapes)
        colour_t = torch.where(target.colours < 0, outputs.colours.shape[-1] - 1, target.colours)
        slots_ok = (outputs.shapes.argmax(-1) == shape_t) & (outputs.colours.argmax(-1) == colour_t)
        return {"count_acc": count_ok, "slot_acc": slots_ok.float().mean()}

    def optimizers(self, max_steps: int) -> Tuple[List[torch.optim.Optimizer], List[Any]]:
        opt = torch.optim.AdamW(self.classifier.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        total = max(int(max_steps), 1)

        def factor(step: int) -> float:
            progress = min(step / total, 1.0)
            return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))

        return [opt], [torch.optim.lr_scheduler.LambdaLR(opt, factor)]
