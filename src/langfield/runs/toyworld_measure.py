"""Measure generated toy-world images against exact truth: attribute accuracy, toy-FID, SWD, floors.

The instruments come from :func:`~langfield.runs.toyworld.train_toyworld` (trained on real renders
only) and every number is read against a reference that says what it is worth:

* **attribute accuracy** (GenEval-like, :func:`~langfield.generation.instruments.attribute_accuracy`):
  the attribute classifier reads count, shapes and colours left to right from each generated
  image and compares them with what its prompt asked for (the held-out scene the prompt was
  written from). Beside it: the image-blind **chance** level
  (:func:`~langfield.generation.instruments.chance_accuracy`, majority rule, from the training
  labels) and the classifier's own **held-out accuracy on real renders** (its ceiling).
* **toy-FID**: the Fréchet distance (Heusel et al. 2017) between the classifier's penultimate
  features of ``N`` generated images and of ``N`` real held-out renders; its **floor** is the same
  distance between two disjoint halves of ``2N`` real held-out renders
  (:func:`~langfield.eval.distribution.split_half_floor`, mean and std over three splits), so
  both figures are computed at the same set size ``N`` (FD is biased upwards for finite sets).
* **SWD** (Karras et al. 2018, Sec. 5) on Laplacian-pyramid patches of the pixels, no weights at
  all, with its split-half floor the same way.

Prompt sets (:func:`heldout_prompts`) are drawn from the held-out split: prompt ``i`` describes
held-out image ``i`` (``"descriptive"``: its descriptive caption, ``"short"``: its short caption,
``"rewritten"``: the short caption expanded by
:func:`~langfield.generation.prompts.rewrite_prompt` from the scene's objects and the image's
camera). The real reference set is held-out images ``[N, 2N)``: other scenes than the prompts',
independent of them exactly as the floor's two halves are of each other.

Sampling (:func:`sample_images`): image ``i`` of sampling seed ``s`` starts from the noise of seed
``s * SEED_STRIDE + i`` (:func:`~langfield.generation.sampling.generate`'s per-image seeds), so
a row of images is the same noise under every guidance scale or step count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from langfield._checks import InputError, check_choice, check_int_range
from langfield.data.toyworld.scene import ToyScene
from langfield.eval.distribution import MeanStd, frechet_distance, sliced_wasserstein_distance, split_half_floor
from langfield.generation.instruments import (
    AttributeClassifier,
    AttributeLabels,
    attribute_accuracy,
    chance_accuracy,
    evaluate_classifier,
)
from langfield.generation.loading import GenerationPipeline
from langfield.generation.prompts import SceneDescription, SceneObject, rewrite_prompt
from langfield.generation.sampling import generate
from langfield.runs.toyworld import ToySplit

__all__ = [
    "PROMPT_STYLES",
    "SEED_STRIDE",
    "Instruments",
    "PromptSet",
    "heldout_prompts",
    "mean_std",
    "sample_images",
    "scene_description",
]

PROMPT_STYLES = ("descriptive", "short", "rewritten")
#: Image ``i`` of sampling seed ``s`` uses noise seed ``s * SEED_STRIDE + i``.
SEED_STRIDE = 1_000_000


def scene_description(scene: ToyScene) -> SceneDescription:
    """A toy scene as :func:`~langfield.generation.prompts.rewrite_prompt` reads it: each object's
    shape name, colour and 3D centre (world, +z up), its largest half extent as size, the floor."""
    objects = tuple(SceneObject(o.shape, o.color, o.center, size=float(max(o.size))) for o in scene.objects)
    return SceneDescription(objects, floor=scene.floor)


@dataclass(frozen=True)
class PromptSet:
    """``N`` prompts with the attributes each one asks for.

    Attributes:
        style: ``"descriptive"``, ``"short"`` or ``"rewritten"``.
        prompts: ``N`` strings; targets: their :class:`AttributeLabels` (the held-out images').
        rows: ``[N]`` the held-out rows the prompts were written from.
    """

    style: str
    prompts: Tuple[str, ...]
    targets: AttributeLabels
    rows: Tensor

    def __len__(self) -> int:
        return len(self.prompts)


def heldout_prompts(split: ToySplit, num: int, style: str = "descriptive", *, start: int = 0) -> PromptSet:
    """Prompts of held-out images ``[start, start + num)`` in ``style`` (module docstring).

    ``"rewritten"`` runs :func:`~langfield.generation.prompts.rewrite_prompt` (template style) on
    each image's short caption with :func:`scene_description` of its scene and its camera.
    """
    check_choice(style, "style", PROMPT_STYLES)
    num = check_int_range(num, "num", lo=1)
    start = check_int_range(start, "start", lo=0)
    if start + num > len(split):
        raise InputError(f"num: {start + num} held-out images needed, the split has {len(split)}")
    rows = torch.arange(start, start + num)
    if style == "descriptive":
        prompts = tuple(split.descriptive_captions[int(i)] for i in rows)
    elif style == "short":
        prompts = tuple(split.short_captions[int(i)] for i in rows)
    else:
        prompts = tuple(
            rewrite_prompt(split.short_captions[int(i)], scene_description(split.scenes[int(i)]), split.c2w[int(i)])
            for i in rows
        )
    return PromptSet(style, prompts, split.labels.index(rows), rows)


def sample_images(
    pipe: GenerationPipeline,
    prompts: Sequence[str],
    *,
    steps: int,
    guidance: float,
    seed: int = 0,
    scheduler: Optional[str] = None,
    batch_size: int = 64,
) -> Tensor:
    """``[N, H, W, 3]`` float32 in ``[0, 1]``: one image per prompt, image ``i`` from noise seed
    ``seed * SEED_STRIDE + i`` (so the result does not depend on ``batch_size``)."""
    batch_size = check_int_range(batch_size, "batch_size", lo=1)
    seed = check_int_range(seed, "seed", lo=0, hi=2**40)
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        result = generate(pipe, chunk, steps=steps, guidance=guidance, seed=seed * SEED_STRIDE + start, scheduler=scheduler)
        out.append(result.images)
    return torch.cat(out)


def _chw(images: Tensor) -> Tensor:
    """``[N, H, W, 3]`` -> ``[N, 3, H, W]`` float in ``[0, 1]``."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"images: expected [N, H, W, 3], got {tuple(images.shape)}")
    return images.permute(0, 3, 1, 2).float().clamp(0.0, 1.0).contiguous()


class Instruments:
    """The attribute classifier with the held-out reference sets and floors at set size ``N``.

    Args:
        classifier: the trained :class:`AttributeClassifier`.
        heldout: the held-out split (at least ``2 * num_images`` images).
        train_labels: the training labels (for the chance level).
        num_images: ``N``, the size of every generated set to be measured.
        floor_seeds: splits averaged for the floors.
        swd: keyword arguments of :func:`~langfield.eval.distribution.sliced_wasserstein_distance`.
    """

    def __init__(
        self,
        classifier: AttributeClassifier,
        heldout: ToySplit,
        train_labels: AttributeLabels,
        num_images: int,
        *,
        floor_seeds: Sequence[int] = (0, 1, 2),
        swd: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.classifier = classifier.eval()
        self.num_images = check_int_range(num_images, "num_images", lo=4)
        if len(heldout) < 2 * self.num_images:
            raise InputError(f"heldout: {len(heldout)} images, need at least 2 x num_images = {2 * self.num_images}")
        self.heldout = heldout
        self.train_labels = train_labels
        self.swd_kwargs = dict(swd or {})
        n = self.num_images
        self.real = heldout.float_images(slice(0, 2 * n))  # [2N, 3, H, W]
        self.real_features = classifier.embed_images(self.real)  # [2N, D]
        self.reference_images = self.real[n : 2 * n]
        self.reference_features = self.real_features[n : 2 * n]
        start = time.perf_counter()
        self.toy_fid_floor = split_half_floor(frechet_distance, self.real_features, seeds=floor_seeds)
        self.swd_floor = split_half_floor(lambda a, b: self._swd(a, b), self.real, seeds=floor_seeds)
        self.floor_seconds = time.perf_counter() - start

    def _swd(self, a: Tensor, b: Tensor) -> float:
        return sliced_wasserstein_distance(a, b, **self.swd_kwargs).mean

    def heldout_accuracy(self) -> Dict[str, Any]:
        """The classifier on all held-out real renders, beside chance (majority rule) on them."""
        acc = evaluate_classifier(self.classifier, self.heldout.images, self.heldout.labels)
        chance = chance_accuracy(self.train_labels, self.heldout.labels)
        return {"accuracy": acc.as_dict(), "chance": chance.as_dict(), "num_images": len(self.heldout)}

    def chance(self, targets: AttributeLabels) -> float:
        """Attribute accuracy of the image-blind majority predictor on ``targets``."""
        return chance_accuracy(self.train_labels, targets).attribute

    def accuracy(self, images: Tensor, targets: AttributeLabels) -> Dict[str, Any]:
        """GenEval-like accuracy of ``images [N, H, W, 3]`` against ``targets`` (as a dict)."""
        return attribute_accuracy(self.classifier.predict(_chw(images)), targets).as_dict()

    def measure(self, images: Tensor, targets: AttributeLabels, *, with_swd: bool = True) -> Dict[str, Any]:
        """Attribute accuracy, toy-FID and (optionally) SWD of ``N`` generated images ``[N, H, W, 3]``.

        Returns ``{"attribute_accuracy", "accuracy" (every component), "toy_fid", "swd"}``.
        """
        if images.shape[0] != self.num_images:
            raise InputError(f"images: {images.shape[0]} images, the floors are for sets of {self.num_images}")
        x = _chw(images)
        acc = attribute_accuracy(self.classifier.predict(x), targets).as_dict()
        feats = self.classifier.embed_images(x)
        out = {"attribute_accuracy": acc["attribute"], "accuracy": acc, "toy_fid": frechet_distance(feats, self.reference_features)}
        if with_swd:
            out["swd"] = self._swd(x, self.reference_images)
        return out

    def floors(self) -> Dict[str, Any]:
        """``{"num_images", "toy_fid_floor": MeanStd dict, "swd_floor": MeanStd dict}``."""
        return {"num_images": self.num_images, "toy_fid_floor": self.toy_fid_floor.as_dict(),
                "swd_floor": self.swd_floor.as_dict(), "seconds": self.floor_seconds}  # fmt: skip


def mean_std(values: Sequence[float]) -> Dict[str, Any]:
    """``{"mean", "std", "values"}`` (sample std, 0 for one value)."""
    return MeanStd.of([float(v) for v in values]).as_dict()
