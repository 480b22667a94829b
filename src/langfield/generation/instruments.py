"""Measurement instruments for the toy world: an attribute classifier and GenEval-like accuracy.

The classifier is trained on *real renders only* (never on generated images) and reports its own
held-out accuracy beside every number it produces. It reads what a prompt of the toy world asks
for: how many objects (1-3), and for each object, taken left to right in the image, its shape and
colour. Its penultimate features give a "toy-FID/KID" (:mod:`langfield.eval.distribution`).

Label encoding (:class:`AttributeLabels`), shared by targets and predictions:

* ``count [N]`` int64 in ``1..max_objects`` (the classifier's count head has ``max_objects``
  classes; class ``c - 1`` means ``c`` objects).
* ``shapes [N, S]`` and ``colours [N, S]`` int64, ``S = max_objects`` slots; slot ``s`` is the
  ``s``-th object from the left in the image (the toy world sorts by the projected x of the object
  centre); ``-1`` marks an empty slot. The heads have one extra class, index ``num_shapes`` /
  ``num_colours``, for "none" (an empty slot).

The names behind the integers (which shape is 0, which colour is 3) belong to the data that
produced the labels (the toy world's palette); nothing here depends on them.

GenEval-like accuracy (Ghosh et al., "GenEval: An Object-Focused Framework for Evaluating
Text-to-Image Alignment", NeurIPS 2023 D&B, scores each prompt by whether a detector finds what it
asks for); here the instrument is the classifier and :func:`attribute_accuracy` defines:

* ``count``: share of images whose predicted count equals the target count.
* ``shape`` / ``colour``: over all *present target slots* ``(i, s)`` (``s < count_i``), the share
  whose predicted slot-``s`` shape (colour) equals the target's. A missing object (predicted
  "none") is wrong; predictions for empty target slots are not scored.
* ``left_right``: over the 2-object targets whose two objects differ in shape or colour, the
  share where the two objects appear in the prompt's order: for every attribute in which the two
  target objects differ, predicted slot 0 holds object 0's value and slot 1 holds object 1's.
  (It tests the order only: "a red sphere left of a blue sphere" read as "a red box left of a blue
  cone" is in order; the shapes count against ``shape``.) Targets with two identical objects have
  no order and are left out; ``nan`` when no target qualifies. Its chance level is low (both
  objects must be told apart: about 1/56 for two distinct colours of 8), not 1/2.
* ``order``: the same 2-object targets, counting only the images where the two objects are found
  in *either* order (by the same distinguishing attributes): the share in the prompt's order.
  Position given presence, chance 1/2 (``nan`` when no image qualifies).
* ``whole``: share of images where everything is right: count, and shape and colour of every
  present slot (which implies the left-to-right order).
* ``attribute``: the unweighted mean of ``count``, ``shape``, ``colour`` and ``left_right``
  (the last left out when it is ``nan``): one "attribute accuracy"; for uniform labels of 1-3
  objects, 4 shapes and 8 distinct colours its chance level is about
  ``(1/3 + 1/4 + 1/8 + 1/56) / 4 = 0.18``.

:func:`chance_accuracy` gives the same numbers for an image-blind predictor built from the
training labels' marginals, the level every accuracy must be printed beside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from langfield._checks import InputError, check_choice, check_int_range

__all__ = [
    "MAX_OBJECTS",
    "NUM_COLOURS",
    "NUM_SHAPES",
    "AttributeAccuracy",
    "AttributeClassifier",
    "AttributeLabels",
    "AttributeLogits",
    "attribute_accuracy",
    "attribute_losses",
    "chance_accuracy",
    "check_attribute_images",
    "evaluate_classifier",
]

#: Defaults of the toy world: sphere, box, cylinder, cone; a palette of 8 named colours; 1-3 objects.
NUM_SHAPES = 4
NUM_COLOURS = 8
MAX_OBJECTS = 3


# ----------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class AttributeLabels:
    """What is in each image: ``count [N]`` (1..S), ``shapes [N, S]`` and ``colours [N, S]`` (-1 = empty).

    Targets are *consistent* (slots ``< count`` present, the rest ``-1``; see :meth:`check`);
    predictions from :meth:`AttributeClassifier.predict` are per-head argmaxes and need not be.
    """

    count: Tensor
    shapes: Tensor
    colours: Tensor

    def __len__(self) -> int:
        return int(self.count.shape[0])

    @property
    def num_slots(self) -> int:
        return int(self.shapes.shape[1])

    def index(self, idx: Tensor) -> "AttributeLabels":
        """The rows ``idx`` (any index tensor)."""
        return AttributeLabels(self.count[idx], self.shapes[idx], self.colours[idx])

    def to(self, device: Union[str, torch.device]) -> "AttributeLabels":
        return AttributeLabels(self.count.to(device), self.shapes.to(device), self.colours.to(device))

    @staticmethod
    def from_arrays(count, shapes, colours) -> "AttributeLabels":
        """Build from anything ``torch.as_tensor`` takes (lists, numpy), as int64 CPU tensors."""
        return AttributeLabels(
            torch.as_tensor(count, dtype=torch.int64),
            torch.as_tensor(shapes, dtype=torch.int64),
            torch.as_tensor(colours, dtype=torch.int64),
        )

    def check(
        self,
        where: str = "labels",
        *,
        num_shapes: int = NUM_SHAPES,
        num_colours: int = NUM_COLOURS,
        consistent: bool = True,
    ) -> "AttributeLabels":
        """Validate shapes, dtypes and ranges (and, with ``consistent``, that exactly the slots
        ``< count`` are filled); :class:`InputError` naming ``where`` and the first bad row."""
        for name in ("count", "shapes", "colours"):
            t = getattr(self, name)
            if not isinstance(t, Tensor) or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                got = t.dtype if isinstance(t, Tensor) else type(t).__name__
                raise InputError(f"{where}.{name}: expected an integer tensor, got {got}")
        n = self.count.shape[0] if self.count.ndim == 1 else -1
        if n < 0:
            raise InputError(f"{where}.count: expected shape [N], got {tuple(self.count.shape)}")
        for name in ("shapes", "colours"):
            t = getattr(self, name)
            if t.ndim != 2 or t.shape[0] != n:
                raise InputError(f"{where}.{name}: expected shape [{n}, S] (S slots), got {tuple(t.shape)}")
        if self.shapes.shape != self.colours.shape:
            raise InputError(
                f"{where}: shapes {tuple(self.shapes.shape)} and colours {tuple(self.colours.shape)} differ in shape"
            )
        s = self.shapes.shape[1]
        if s < 1:
            raise InputError(f"{where}.shapes: needs at least one slot")

        def first_bad(mask: Tensor) -> Optional[int]:
            rows = torch.nonzero(mask.reshape(mask.shape[0], -1).any(-1)).flatten()
            return int(rows[0]) if rows.numel() else None

        for name, t, lo, hi in (
            ("count", self.count, 1, s),
            ("shapes", self.shapes, -1, num_shapes - 1),
            ("colours", self.colours, -1, num_colours - 1),
        ):
            bad = first_bad((t < lo) | (t > hi)) if n else None
            if bad is not None:
                raise InputError(f"{where}.{name}: values must lie in [{lo}, {hi}], row {bad} has {t[bad].tolist()}")
        if consistent and n:
            present = torch.arange(s, device=self.count.device)[None, :] < self.count[:, None]
            for name, t in (("shapes", self.shapes), ("colours", self.colours)):
                bad = first_bad((t >= 0) != present)
                if bad is not None:
                    raise InputError(
                        f"{where}.{name}: row {bad} has count {int(self.count[bad])} but slots {t[bad].tolist()}; "
                        f"slots 0..count-1 must be filled (>= 0) and the rest -1 (empty)"
                    )
        return self


# ----------------------------------------------------------------------------- the network


def check_attribute_images(images: Tensor, where: str = "images", *, image_size: Optional[int] = None) -> Tensor:
    """``images [B, 3, H, W]`` as float32 in ``[0, 1]`` (uint8 is divided by 255); InputError otherwise."""
    if not isinstance(images, Tensor):
        raise InputError(f"{where}: expected a [B, 3, H, W] tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"{where}: expected RGB images [B, 3, H, W] (channel first), got shape {tuple(images.shape)}")
    if image_size is not None and tuple(images.shape[2:]) != (image_size, image_size):
        raise InputError(
            f"{where}: the classifier was built for {image_size}x{image_size} images, got "
            f"{images.shape[2]}x{images.shape[3]}; resize them or build AttributeClassifier(image_size=...)"
        )
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise InputError(f"{where}: expected float images in [0, 1] or uint8, got {images.dtype}")
    return images.float()


@dataclass(frozen=True)
class AttributeLogits:
    """Raw head outputs: ``count [B, S]``, ``shapes [B, S, num_shapes + 1]``, ``colours [B, S, num_colours + 1]``
    (the last class of a slot head is "none")."""

    count: Tensor
    shapes: Tensor
    colours: Tensor


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1),
        nn.GroupNorm(1, c_out),
        nn.SiLU(),
    )


class AttributeClassifier(nn.Module):
    """A small conv net reading count, and shape and colour of each object left to right.

    Architecture: a 3x3 conv stem at full resolution, then stride-2 stages (each: a strided 3x3
    conv and a 3x3 conv, GroupNorm + SiLU, channels doubling up to ``4 * width``) down to a
    ``4 x 4`` grid, which is *flattened* (not pooled: the slots are ordered left to right, so the
    features must keep where things are), a linear layer to ``feature_dim`` + SiLU (the
    penultimate features, :meth:`features`), and three linear heads.

    Args:
        image_size: square input side in pixels, a power of two >= 8 (toy world: 32 or 64).
        width: channels of the stem (32 by default; tests use 16).
        feature_dim: size of the penultimate features (the toy-FID dimension ``D``; FD needs
            many more images than ``D`` per set).
        num_shapes, num_colours: attribute classes (each slot head adds one "none" class).
        max_objects: slots ``S`` and count classes (counts ``1..S``).

    Example:
        >>> import torch
        >>> net = AttributeClassifier(image_size=32, width=8, feature_dim=16)
        >>> x = torch.rand(2, 3, 32, 32)
        >>> tuple(net.features(x).shape), tuple(net(x).shapes.shape), len(net.predict(x))
        ((2, 16), (2, 3, 5), 2)
    """

    def __init__(
        self,
        *,
        image_size: int = 32,
        width: int = 32,
        feature_dim: int = 128,
        num_shapes: int = NUM_SHAPES,
        num_colours: int = NUM_COLOURS,
        max_objects: int = MAX_OBJECTS,
    ) -> None:
        super().__init__()
        image_size = check_int_range(image_size, "image_size", lo=8)
        if image_size & (image_size - 1):
            raise InputError(f"image_size: must be a power of two (8, 16, 32, 64, ...), got {image_size}")
        self.image_size = image_size
        self.width = check_int_range(width, "width", lo=1)
        self.feature_dim = check_int_range(feature_dim, "feature_dim", lo=1)
        self.num_shapes = check_int_range(num_shapes, "num_shapes", lo=1)
        self.num_colours = check_int_range(num_colours, "num_colours", lo=1)
        self.max_objects = check_int_range(max_objects, "max_objects", lo=1)
        layers: List[nn.Module] = [_block(3, width, 1)]
        ch, side = width, image_size
        while side > 4:
            out = min(2 * ch, 4 * width)
            layers += [_block(ch, out, 2), _block(out, out, 1)]
            ch, side = out, side // 2
        self.trunk = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(ch * 16, feature_dim), nn.SiLU())
        self.count_head = nn.Linear(feature_dim, max_objects)
        self.shape_head = nn.Linear(feature_dim, max_objects * (num_shapes + 1))
        self.colour_head = nn.Linear(feature_dim, max_objects * (num_colours + 1))

    def features(self, images: Tensor) -> Tensor:
        """Penultimate features ``[B, feature_dim]`` of ``images [B, 3, H, W]`` in ``[0, 1]``
        (differentiable; wrap in ``torch.no_grad()`` and :meth:`eval` for measuring)."""
        x = check_attribute_images(images, image_size=self.image_size)
        x = x.to(self.count_head.weight.device)
        return self.embed(self.trunk(2.0 * x - 1.0))

    def heads(self, features: Tensor) -> AttributeLogits:
        """The three heads on penultimate ``features [B, feature_dim]``."""
        b, s = features.shape[0], self.max_objects
        return AttributeLogits(
            self.count_head(features),
            self.shape_head(features).reshape(b, s, self.num_shapes + 1),
            self.colour_head(features).reshape(b, s, self.num_colours + 1),
        )

    def forward(self, images: Tensor) -> AttributeLogits:
        return self.heads(self.features(images))

    @torch.no_grad()
    def predict(self, images: Tensor, *, batch_size: int = 256) -> AttributeLabels:
        """Per-head argmax as :class:`AttributeLabels` on the CPU (eval mode, no gradients).

        ``count`` is in ``1..S``; a slot whose argmax is "none" is ``-1``. The heads are read
        independently (a predicted count of 1 with two filled slots is possible).
        """
        images = check_attribute_images(images, image_size=self.image_size)
        batch_size = check_int_range(batch_size, "batch_size", lo=1)
        was_training = self.training
        self.eval()
        try:
            counts, shapes, colours = [], [], []
            for chunk in images.split(batch_size):
                logits = self(chunk)
                counts.append(logits.count.argmax(-1).cpu() + 1)
                sh = logits.shapes.argmax(-1).cpu()
                co = logits.colours.argmax(-1).cpu()
                shapes.append(torch.where(sh == self.num_shapes, -1, sh))
                colours.append(torch.where(co == self.num_colours, -1, co))
        finally:
            self.train(was_training)
        return AttributeLabels(torch.cat(counts), torch.cat(shapes), torch.cat(colours))

    @torch.no_grad()
    def embed_images(self, images: Tensor, *, batch_size: int = 256) -> Tensor:
        """:meth:`features` in eval mode without gradients, batched, on the CPU (for FD/KID)."""
        images = check_attribute_images(images, image_size=self.image_size)
        was_training = self.training
        self.eval()
        try:
            return torch.cat([self.features(chunk).cpu() for chunk in images.split(batch_size)])
        finally:
            self.train(was_training)


def attribute_losses(logits: AttributeLogits, target: AttributeLabels) -> Dict[str, Tensor]:
    """Cross-entropy losses of the three heads (a pure function: logits and labels in, losses out).

    ``count``: CE of the count head against ``count - 1``; ``shape`` / ``colour``: CE over all
    ``B * S`` slots, an empty slot (``-1``) being the "none" class; ``loss`` is their sum.
    """
    num_shapes = logits.shapes.shape[-1] - 1
    num_colours = logits.colours.shape[-1] - 1
    device = logits.count.device
    count = target.count.to(device)
    shapes = target.shapes.to(device)
    colours = target.colours.to(device)
    shape_t = torch.where(shapes < 0, num_shapes, shapes)
    colour_t = torch.where(colours < 0, num_colours, colours)
    terms = {
        "count": F.cross_entropy(logits.count, count - 1),
        "shape": F.cross_entropy(logits.shapes.reshape(-1, num_shapes + 1), shape_t.reshape(-1)),
        "colour": F.cross_entropy(logits.colours.reshape(-1, num_colours + 1), colour_t.reshape(-1)),
    }
    terms["loss"] = terms["count"] + terms["shape"] + terms["colour"]
    return terms


# ----------------------------------------------------------------------------- accuracy


@dataclass(frozen=True)
class AttributeAccuracy:
    """GenEval-like accuracies (definitions in the module docstring) and what they were counted over.

    Attributes:
        count, shape, colour, left_right, whole: accuracies in ``[0, 1]`` (``left_right`` is
            ``nan`` without 2-object targets whose objects differ).
        order: ``left_right`` among the images that show both objects in either order (``nan``
            when none does).
        attribute: mean of ``count, shape, colour, left_right`` (``left_right`` skipped if ``nan``).
        num_images, num_slots, num_left_right: the denominators (images; present target slots;
            qualifying 2-object targets).
    """

    count: float
    shape: float
    colour: float
    left_right: float
    order: float
    whole: float
    attribute: float
    num_images: int
    num_slots: int
    num_left_right: int

    def as_dict(self) -> Dict[str, Union[float, int, None]]:
        """Plain dict for JSON (``nan`` becomes ``None``)."""
        out: Dict[str, Union[float, int, None]] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = None if isinstance(v, float) and math.isnan(v) else v
        return out


def _mean_of(parts: Sequence[float]) -> float:
    kept = [p for p in parts if not math.isnan(p)]
    return sum(kept) / len(kept) if kept else float("nan")


def _accuracy_from_scores(
    count: Tensor,
    shape: Tensor,
    colour: Tensor,
    in_order: Tensor,
    swapped: Tensor,
    whole: Tensor,
    target: AttributeLabels,
) -> AttributeAccuracy:
    """Assemble :class:`AttributeAccuracy` from per-item scores in ``[0, 1]`` (indicators or
    probabilities): ``count [N]``, ``shape [N, S]``, ``colour [N, S]``, ``in_order [N]`` and
    ``swapped [N]`` (the two objects found in the prompt's / the reversed order), ``whole [N]``;
    the masks (present slots, qualifying 2-object targets) come from ``target``. ``order`` is
    ``sum(in_order) / sum(in_order + swapped)`` over the qualifying targets (the two events are
    disjoint): the conditional share for indicators, the ratio of expectations for probabilities."""
    present = _present(target)
    lr_mask = _left_right_mask(target)
    n, n_slots, n_lr = len(target), int(present.sum()), int(lr_mask.sum())

    def avg(x: Tensor, mask: Optional[Tensor] = None) -> float:
        if mask is not None:
            x = x[mask]
        return float(x.double().mean()) if x.numel() else float("nan")

    acc = dict(
        count=avg(count),
        shape=avg(shape, present),
        colour=avg(colour, present),
        left_right=avg(in_order, lr_mask),
        whole=avg(whole),
    )
    found = float((in_order[lr_mask].double() + swapped[lr_mask].double()).sum())
    acc["order"] = float(in_order[lr_mask].double().sum()) / found if found > 0 else float("nan")
    acc["attribute"] = _mean_of([acc["count"], acc["shape"], acc["colour"], acc["left_right"]])
    return AttributeAccuracy(**acc, num_images=n, num_slots=n_slots, num_left_right=n_lr)


def _present(target: AttributeLabels) -> Tensor:
    slots = torch.arange(target.num_slots)[None, :]
    return slots < target.count[:, None]


def _left_right_mask(target: AttributeLabels) -> Tensor:
    """``[N]`` bool: two-object targets whose objects differ in shape or colour."""
    if target.num_slots < 2:
        return torch.zeros(len(target), dtype=torch.bool)
    differ = (target.shapes[:, 0] != target.shapes[:, 1]) | (target.colours[:, 0] != target.colours[:, 1])
    return (target.count == 2) & differ


def attribute_accuracy(pred: AttributeLabels, target: AttributeLabels) -> AttributeAccuracy:
    """GenEval-like accuracy of predicted attributes against the prompts' targets.

    ``target`` must be consistent (see :meth:`AttributeLabels.check`); ``pred`` need not be (raw
    per-head predictions). Both need the same number of rows and slots. The definitions of
    ``count``, ``shape``, ``colour``, ``left_right``, ``order``, ``whole`` and ``attribute`` are in the module
    docstring.

    >>> t = AttributeLabels.from_arrays([2, 1], [[0, 1, -1], [2, -1, -1]], [[3, 3, -1], [5, -1, -1]])
    >>> p = AttributeLabels.from_arrays([2, 2], [[0, 1, -1], [2, 0, -1]], [[3, 4, -1], [1, 0, -1]])
    >>> acc = attribute_accuracy(p, t)
    >>> acc.count, acc.shape, acc.colour, acc.left_right, acc.whole
    (0.5, 1.0, 0.3333333333333333, 1.0, 0.0)
    """
    target = target.check("target")
    pred.check("pred", num_shapes=1 << 30, num_colours=1 << 30, consistent=False)
    if len(pred) != len(target) or pred.num_slots != target.num_slots:
        raise InputError(
            f"pred and target: {len(pred)} x {pred.num_slots} slots vs {len(target)} x {target.num_slots}; "
            f"they must describe the same images"
        )
    pred = pred.to("cpu")
    target = target.to("cpu")
    count_ok = pred.count == target.count
    shape_ok = pred.shapes == target.shapes
    colour_ok = pred.colours == target.colours
    present = _present(target)
    whole = count_ok & ((shape_ok & colour_ok) | ~present).all(-1)
    in_order = torch.ones(len(target), dtype=torch.bool)
    swapped = torch.ones(len(target), dtype=torch.bool)
    if target.num_slots >= 2:
        for p_att, t_att in ((pred.shapes, target.shapes), (pred.colours, target.colours)):
            distinguishes = t_att[:, 0] != t_att[:, 1]
            in_order &= ((p_att[:, 0] == t_att[:, 0]) & (p_att[:, 1] == t_att[:, 1])) | ~distinguishes
            swapped &= ((p_att[:, 0] == t_att[:, 1]) & (p_att[:, 1] == t_att[:, 0])) | ~distinguishes
    return _accuracy_from_scores(count_ok, shape_ok, colour_ok, in_order, swapped, whole, target)


def _marginals(values: Tensor, mask: Tensor, num_classes: int) -> Tensor:
    """Class frequencies of ``values[mask]`` (uniform if the mask is empty)."""
    kept = values[mask]
    if kept.numel() == 0:
        return torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64)
    return torch.bincount(kept, minlength=num_classes)[:num_classes].double() / kept.numel()


def chance_accuracy(
    train_labels: AttributeLabels,
    eval_labels: Optional[AttributeLabels] = None,
    *,
    rule: str = "majority",
    num_shapes: int = NUM_SHAPES,
    num_colours: int = NUM_COLOURS,
) -> AttributeAccuracy:
    """Accuracy of an image-blind predictor built from the training labels' marginals, exactly.

    The marginals are the frequencies of the counts, and per slot ``s`` of the shapes and colours
    of the training images whose slot ``s`` is present. Two image-blind predictors:

    * ``rule="majority"`` (default): always the most frequent count and, per slot, the most
      frequent shape and colour (ties: the smallest index); its :func:`attribute_accuracy` on
      ``eval_labels``. This is the higher of the two, so the conservative level to beat.
    * ``rule="prior"``: every head guesses independently at random with the marginal
      frequencies; the *expected* accuracy (per item: the product of the probabilities of the
      guesses it needs right), e.g. ``sum_k p_k^2`` for the count on the training distribution.

    ``eval_labels`` (default: ``train_labels``) are the targets the chance level is read on.

    >>> labels = AttributeLabels.from_arrays([1, 1, 1, 2], [[0, -1], [0, -1], [1, -1], [1, 0]],
    ...                                      [[0, -1], [1, -1], [0, -1], [1, 1]])
    >>> chance_accuracy(labels, num_shapes=2, num_colours=2).count
    0.75
    >>> chance_accuracy(labels, rule="prior", num_shapes=2, num_colours=2).count  # (3/4)^2 + (1/4)^2
    0.625
    """
    check_choice(rule, "rule", ("majority", "prior"))
    train = train_labels.check("train_labels", num_shapes=num_shapes, num_colours=num_colours).to("cpu")
    target = train
    if eval_labels is not None:
        target = eval_labels.check("eval_labels", num_shapes=num_shapes, num_colours=num_colours).to("cpu")
    if len(train) == 0:
        raise InputError("train_labels: needs at least one labelled image")
    if target.num_slots != train.num_slots:
        raise InputError(f"eval_labels: {target.num_slots} slots, train_labels {train.num_slots}")
    s = train.num_slots
    present_train = _present(train)
    p_count = _marginals(train.count - 1, torch.ones(len(train), dtype=torch.bool), s)
    p_shape = [_marginals(train.shapes[:, k], present_train[:, k], num_shapes) for k in range(s)]
    p_colour = [_marginals(train.colours[:, k], present_train[:, k], num_colours) for k in range(s)]

    if rule == "majority":
        n = len(target)
        const = AttributeLabels(
            torch.full((n,), int(p_count.argmax()) + 1, dtype=torch.int64),
            torch.stack([torch.full((n,), int(p.argmax()), dtype=torch.int64) for p in p_shape], 1),
            torch.stack([torch.full((n,), int(p.argmax()), dtype=torch.int64) for p in p_colour], 1),
        )
        return attribute_accuracy(const, target)

    # rule == "prior": probabilities that each independent guess is right, per item.
    present = _present(target)
    count_p = p_count[target.count - 1]
    shape_p = torch.stack([p_shape[k][target.shapes[:, k].clamp_min(0)] for k in range(s)], 1)
    colour_p = torch.stack([p_colour[k][target.colours[:, k].clamp_min(0)] for k in range(s)], 1)
    slot_p = torch.where(present, shape_p * colour_p, torch.ones_like(shape_p))
    whole = count_p * slot_p.prod(-1)
    in_order = torch.ones(len(target), dtype=torch.float64)
    swapped = torch.ones(len(target), dtype=torch.float64)
    if s >= 2:
        for probs, att in ((p_shape, target.shapes), (p_colour, target.colours)):
            a0, a1 = att[:, 0].clamp_min(0), att[:, 1].clamp_min(0)
            distinguishes = att[:, 0] != att[:, 1]
            ones = torch.ones_like(in_order)
            in_order = in_order * torch.where(distinguishes, probs[0][a0] * probs[1][a1], ones)
            swapped = swapped * torch.where(distinguishes, probs[0][a1] * probs[1][a0], ones)
    return _accuracy_from_scores(count_p, shape_p, colour_p, in_order, swapped, whole, target)


def evaluate_classifier(
    classifier: AttributeClassifier, images: Tensor, labels: AttributeLabels, *, batch_size: int = 256
) -> AttributeAccuracy:
    """Held-out accuracy of ``classifier`` on ``images [N, 3, H, W]`` with true ``labels``."""
    if len(labels) != images.shape[0]:
        raise InputError(f"images and labels: {images.shape[0]} images but {len(labels)} labels")
    return attribute_accuracy(classifier.predict(images, batch_size=batch_size), labels)
