"""A SIMULATED CLIP teacher: ground-truth label text embeddings, corrupted like CLIP's dense features.

Why: distilling a language field needs a dense 2D teacher (:class:`~langfield.language.teachers.base.
DenseTeacher`), and the real one is a pretrained CLIP-family model whose weights cannot be
downloaded on an offline machine. For offline benchmarks :class:`SimulatedTeacher` stands in: for
every pixel it starts from the *text* embedding of the pixel's ground-truth label (from the
dataset's label map, ``semantic_path`` in ``transforms.json``) and then damages it in the ways
dense CLIP features are known to be damaged. Text queries go through the same text encoder
(:class:`~langfield.pretrained.text.SentenceTextEncoder`, all-MiniLM-L6-v2 by default), so
queries and features share one space. It is not a vision model: anything that reports numbers
obtained with it must say "simulated" (``SimulatedTeacher.simulated`` is ``True`` and its
``name`` starts with ``"simulated["``).

The corruptions, and what each one mimics (LERF, Kerr et al., ICCV 2023, arXiv:2303.09553;
OV-NeRF, Liao et al. 2024, arXiv:2402.04648, which name CLIP's *blurry object boundaries* and
*view-inconsistent semantics* as the two failure modes its RSR and CSE modules repair):

1. **Confusion** (view-inconsistent semantics). CLIP labels the same object differently from
   different viewpoints, mostly as a semantically *related* class. In a random subset of views
   (probability ``confusion_view_prob`` per view) each object region (all pixels of one label id)
   is, with probability ``confusion_region_prob``, replaced whole by the embedding of its related
   label: the most text-similar other label of the scene. The background label is never confused
   and nothing is confused into it.
2. **Blur** (blurry boundaries). ViT patches and LERF's crop pyramid mix neighbouring objects:
   the per-pixel map is box-blurred with a kernel of ``blur_fraction * min(H, W)`` pixels
   (borders renormalised), so features within half a kernel of a label border are mixtures.
3. **Noise** (patch-grid artefacts and per-pixel jitter). Gaussian noise on a grid of
   kernel-sized patches (nearest-upsampled, random grid phase per view) plus per-pixel noise,
   each with half the variance, so the total noise vector has norm about ``noise``; then every
   pixel is L2-normalised.
4. **Global mix** (image-level bias). Large crops and CLIP's global attention pull every patch
   toward the image's dominant content: ``f = (1 - m) f + m g`` with ``g`` the normalised mean
   embedding of the corrupted image.
5. **Normalise** every pixel to unit norm.

Order: confusion -> blur -> noise (+ normalise) -> global mix -> normalise. One overall
``strength`` scales every corruption (probabilities, kernel size, noise, mix; probabilities and
the mix weight are clipped to 1); ``strength = 0`` returns the exact label embeddings.

Everything random is drawn from a :class:`torch.Generator` seeded by a hash of
``(config.seed, view_key)``, so a view's features are identical on every call and in every process.

Efficiency: the clean map is ``one_hot(labels) @ label_embeddings``, so confusion (a relabelling)
and blur run on the ``[P, H, W]`` one-hot maps of the ``P`` labels present, and only then are
multiplied by the ``[P, E]`` embeddings; noise is added in ``E`` space afterwards.

Example::

    teacher = SimulatedTeacher(["background", "ground", "sphere", "box", "cylinder", "ellipsoid"])
    feats = teacher.dense_features(image, view_key="train/3", semantics=label_map)   # [H, W, 384]
    query = teacher.embed_texts(["sphere"])                                          # [1, 384]
    relevancy = feats @ query[0]                                                     # [H, W]
"""

from __future__ import annotations

import dataclasses

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from langfield.language.teachers.base import DenseTeacher
from langfield.pretrained.text import load_text_encoder

__all__ = ["SimulatedTeacher", "SimulatedTeacherConfig"]


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class SimulatedTeacherConfig:
    """How strongly :class:`SimulatedTeacher` corrupts the ground-truth label embeddings.

    The knobs below are the values at ``strength = 1``; ``strength`` scales all of them (see
    :meth:`effective`). Apply order: confusion -> blur -> noise -> global mix -> normalise.

    Attributes:
        strength: overall scale of every corruption, ``>= 0``; 0 is a perfect teacher (exact
            label embeddings), 1 the defaults below, 2 twice as strong.
        blur_fraction: box-blur kernel size as a fraction of ``min(H, W)`` (also the noise patch size).
            Default 16/224: one patch of a ViT-B/16 CLIP at its 224 px input, the scale at which
            its dense features mix neighbouring objects.
        confusion_view_prob: probability that a view has confused regions.
        confusion_region_prob: in such a view, probability that a region takes its related label.
        global_mix: weight ``m`` of the image's mean embedding in ``(1 - m) f + m g``.
        noise: norm of the added Gaussian noise, relative to the unit-norm embeddings.
        seed: mixed with each ``view_key`` to seed the per-view random stream.
        background_label: label id that is never confused and never confused into; ``None``: no
            label is special.
    """

    strength: float = 1.0
    blur_fraction: float = 16.0 / 224.0
    confusion_view_prob: float = 0.35
    confusion_region_prob: float = 0.6
    global_mix: float = 0.45
    noise: float = 0.5
    seed: int = 0
    background_label: Optional[int] = 0

    def __post_init__(self) -> None:
        for field in ("strength", "blur_fraction", "global_mix", "noise"):
            value = getattr(self, field)
            if not _is_number(value) or value < 0:
                raise ValueError(f"{field} must be a finite number >= 0, got {value!r}")
        for field in ("confusion_view_prob", "confusion_region_prob"):
            value = getattr(self, field)
            if not _is_number(value) or not 0 <= value <= 1:
                raise ValueError(f"{field} must be a probability in [0, 1], got {value!r}")
        if self.blur_fraction > 1:
            raise ValueError(f"blur_fraction must be in [0, 1] (a fraction of min(H, W)), got {self.blur_fraction!r}")
        if self.global_mix > 1:
            raise ValueError(f"global_mix must be in [0, 1], got {self.global_mix!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        bg = self.background_label
        if bg is not None and (isinstance(bg, bool) or not isinstance(bg, int) or bg < 0):
            raise ValueError(f"background_label must be None or a label id >= 0, got {bg!r}")

    def effective(self) -> dict[str, float]:
        """The knobs after scaling by ``strength`` (probabilities and ``global_mix`` clipped to 1)."""
        s = float(self.strength)
        return {
            "blur_fraction": self.blur_fraction * s,
            "confusion_view_prob": min(1.0, self.confusion_view_prob * s),
            "confusion_region_prob": min(1.0, self.confusion_region_prob * s),
            "global_mix": min(1.0, self.global_mix * s),
            "noise": self.noise * s,
        }


def _view_seed(seed: int, view_key: str) -> int:
    """A 63-bit generator seed that is a pure function of ``(seed, view_key)`` (stable across processes)."""
    digest = hashlib.blake2b(f"{seed}\x00{view_key}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _box_blur(maps: Tensor, k: int) -> Tensor:
    """Separable ``k x k`` box blur of ``[P, H, W]`` maps; windows are cut at the image border and
    renormalised, so each pixel's weights still sum to 1. ``k`` must be odd."""
    pad = k // 2
    x = F.avg_pool2d(maps, (k, 1), stride=1, padding=(pad, 0), count_include_pad=False)
    return F.avg_pool2d(x, (1, k), stride=1, padding=(0, pad), count_include_pad=False)


class SimulatedTeacher(DenseTeacher):
    """A dense teacher that SIMULATES CLIP from ground-truth label maps (see the module docstring).

    Args:
        labels: ``labels[i]`` is the name of label id ``i`` (the dataset's label list, e.g.
            ``["background", "ground", "sphere", "box", "cylinder", "ellipsoid"]``); non-empty,
            no duplicates.
        text_encoder: anything with ``embed_texts(texts) -> [T, E]`` unit-norm, ``name`` and
            ``embedding_dim``; ``None``: :func:`~langfield.pretrained.text.load_text_encoder`
            (all-MiniLM-L6-v2, cached).
        config: corruption strengths, seed and background label.
        related: optional ``{label: related label}`` overrides of the related label used by
            confusion (a value of ``None`` means "never confuse this label"). Labels not listed
            use the most text-similar other non-background label.

    Attributes:
        labels: the label names, as a tuple.
        label_embeddings: ``[L, E]`` float32 CPU unit-norm text embeddings of ``labels``.
        related: ``{label: related label or None}`` for every label (``None`` for the
            background label and labels with no candidate).
        config: the :class:`SimulatedTeacherConfig`.
    """

    simulated = True

    def __init__(
        self,
        labels: Sequence[str],
        text_encoder: Any = None,
        config: SimulatedTeacherConfig = SimulatedTeacherConfig(),
        related: Optional[Mapping[str, Optional[str]]] = None,
    ) -> None:
        if not isinstance(config, SimulatedTeacherConfig):
            raise TypeError(f"config must be a SimulatedTeacherConfig, got {type(config).__name__}")
        self.labels = self._check_labels(labels)
        num = len(self.labels)
        bg = config.background_label
        if bg is not None and bg >= num:
            raise ValueError(
                f"config.background_label={bg} is not a label id; labels has {num} names (ids 0..{num - 1})"
            )
        if text_encoder is None:
            text_encoder = load_text_encoder()
        self.config = config
        self.text_encoder = text_encoder
        self.name = f"simulated[{getattr(text_encoder, 'name', type(text_encoder).__name__)}]"

        emb = text_encoder.embed_texts(list(self.labels))
        if not isinstance(emb, Tensor) or emb.ndim != 2 or emb.shape[0] != num:
            got = tuple(emb.shape) if isinstance(emb, Tensor) else type(emb).__name__
            raise ValueError(f"text_encoder.embed_texts must return a [{num}, E] tensor for {num} labels, got {got}")
        emb = emb.detach().to("cpu", torch.float32)
        norms = emb.norm(dim=-1)
        if not torch.isfinite(emb).all() or (norms - 1).abs().max() > 1e-3:
            raise ValueError("text_encoder.embed_texts must return finite, unit-norm embeddings")
        self.label_embeddings = emb

        related_index = self._related_index(emb, bg, related)  # [L]; -1: never confused
        self._related = related_index
        self.related = {
            name: (self.labels[j] if j >= 0 else None) for name, j in zip(self.labels, related_index.tolist())
        }

    # ----------------------------------------------------------------------------------------
    # Construction helpers
    # ----------------------------------------------------------------------------------------

    @staticmethod
    def _check_labels(labels: Sequence[str]) -> tuple[str, ...]:
        if isinstance(labels, str) or not isinstance(labels, Sequence):
            raise ValueError(f"labels must be a sequence of label names, got {type(labels).__name__}")
        if len(labels) == 0:
            raise ValueError("labels must hold at least one label name, got an empty sequence")
        seen: dict[str, int] = {}
        for i, name in enumerate(labels):
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"labels[{i}] must be a non-empty string, got {name!r}")
            if name in seen:
                raise ValueError(
                    f"labels has the duplicate name {name!r} (ids {seen[name]} and {i}); names must be unique"
                )
            seen[name] = i
        return tuple(labels)

    def _related_index(
        self, emb: Tensor, bg: Optional[int], overrides: Optional[Mapping[str, Optional[str]]]
    ) -> Tensor:
        num = emb.shape[0]
        sims = emb @ emb.T
        sims.fill_diagonal_(-math.inf)
        if bg is not None:
            sims[:, bg] = -math.inf
        best = sims.argmax(dim=1)
        has_candidate = torch.isfinite(sims.max(dim=1).values)
        index = torch.where(has_candidate, best, torch.full_like(best, -1))
        if bg is not None:
            index[bg] = -1
        ids = {name: i for i, name in enumerate(self.labels)}
        for key, value in (overrides or {}).items():
            if key not in ids:
                raise ValueError(f"related: key {key!r} is not one of the labels {list(self.labels)}")
            i = ids[key]
            if i == bg:
                raise ValueError(f"related: the background label {key!r} is never confused; remove it")
            if value is None:
                index[i] = -1
                continue
            if value not in ids:
                raise ValueError(f"related[{key!r}] = {value!r} is not one of the labels {list(self.labels)}")
            j = ids[value]
            if j == i or j == bg:
                what = "itself" if j == i else "the background label"
                raise ValueError(f"related[{key!r}] = {value!r}: a label cannot be confused into {what}")
            index[i] = j
        assert index.shape == (num,)
        return index

    # ----------------------------------------------------------------------------------------
    # DenseTeacher interface
    # ----------------------------------------------------------------------------------------

    @property
    def embedding_dim(self) -> int:
        """``E``: size of the text (and feature) embeddings."""
        return int(self.label_embeddings.shape[1])

    def spec(self) -> dict:
        """Labels, config, related-label map and text model (``None`` = the bundled MiniLM)."""
        model_dir = getattr(self.text_encoder, "model_dir", None)
        if model_dir is not None and getattr(self.text_encoder, "name", None) == "all-MiniLM-L6-v2":
            model_dir = None
        return {
            "kind": "simulated",
            "name": self.name,
            "labels": list(self.labels),
            "config": dataclasses.asdict(self.config),
            "related": {
                k: v for i, (k, v) in enumerate(self.related.items()) if i != self.config.background_label
            },
            "text_model": None if model_dir is None else str(model_dir),
        }

    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """``T`` strings -> ``[T, E]`` float32 CPU unit norm, through the text encoder (the feature space)."""
        return self.text_encoder.embed_texts(texts).to("cpu", torch.float32)

    def blur_kernel_size(self, height: int, width: int) -> int:
        """Odd box-blur (and noise patch) size in pixels for an ``height x width`` image at the
        configured strength; 1 means no blur."""
        k = int(round(self.config.blur_fraction * self.config.strength * min(height, width)))
        return 1 if k < 2 else k | 1

    def confusion_map(self, view_key: str) -> dict[str, str]:
        """``{label: label it is replaced by}`` in the view ``view_key`` (empty when the view is not
        confused). The same draws as :meth:`dense_features`, for diagnostics."""
        lut = self._confusion_lut(torch.Generator().manual_seed(_view_seed(self.config.seed, view_key)))
        if lut is None:
            return {}
        return {self.labels[i]: self.labels[j] for i, j in enumerate(lut.tolist()) if i != j}

    def _confusion_lut(self, gen: torch.Generator) -> Optional[Tensor]:
        """Draw this view's confusion: an ``[L]`` id lookup table, or ``None`` for no change.

        Always consumes the same draws (1 + L uniforms) so later draws do not depend on the outcome.
        """
        eff = self.config.effective()
        u_view = torch.rand((), generator=gen)
        u_region = torch.rand(len(self.labels), generator=gen)
        if not bool(u_view < eff["confusion_view_prob"]):
            return None
        swap = (u_region < eff["confusion_region_prob"]) & (self._related >= 0)
        if not bool(swap.any()):
            return None
        return torch.where(swap, self._related, torch.arange(len(self.labels)))

    def _check_inputs(self, image: Any, view_key: Any, semantics: Any) -> Tensor:
        if not isinstance(image, Tensor) or image.ndim != 3:
            got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"image must be a [H, W, 3] tensor, got {got}")
        if not isinstance(view_key, str) or not view_key:
            raise ValueError(f"view_key must be a non-empty string such as 'train/12', got {view_key!r}")
        if semantics is None:
            raise ValueError(
                "the simulated teacher needs the ground-truth label map: pass semantics= the [H, W] label ids "
                "(the dataset's `semantic_path` in transforms.json)"
            )
        if not isinstance(semantics, Tensor):
            raise ValueError(f"semantics must be a [H, W] integer tensor, got {type(semantics).__name__}")
        if semantics.dtype == torch.bool or semantics.is_floating_point() or semantics.is_complex():
            raise ValueError(f"semantics must hold integer label ids, got dtype {semantics.dtype}")
        if semantics.ndim != 2 or tuple(semantics.shape) != tuple(image.shape[:2]):
            raise ValueError(
                f"semantics must have the image's shape [H, W] = {list(image.shape[:2])}, got {list(semantics.shape)}"
            )
        ids = semantics.detach().to("cpu", torch.int64)
        num = len(self.labels)
        bad = (ids < 0) | (ids >= num)
        if bool(bad.any()):
            offending = torch.unique(ids[bad])[:5].tolist()
            raise ValueError(
                f"semantics holds label id {offending[0]} (bad ids: {offending}) outside [0, {num}); "
                f"the teacher has {num} labels {list(self.labels)}"
            )
        return ids

    def _check_draw(self, draw: Any) -> int:
        if isinstance(draw, bool) or not isinstance(draw, int) or draw < 0:
            raise ValueError(f"draw must be an int >= 0 (the re-draw index of the per-view corruptions), got {draw!r}")
        return draw

    def _draw_seed(self, view_key: str, draw: int) -> int:
        """Seed of the per-view random stream; draw 0 is the teacher's own answer."""
        return _view_seed(self.config.seed, view_key if draw == 0 else f"{view_key}\x00draw{draw}")

    def _noise_and_mix(self, feats: Tensor, k: int, gen: torch.Generator) -> Tensor:
        """Steps 3-5 on ``[H, W, E]`` features (modified in place where possible): patch-grid and
        per-pixel noise (``k``: patch size), global mix, normalisation (skipped when ``k <= 1`` and
        there is no noise and no mix: the features are then exact label embeddings already)."""
        height, width = feats.shape[:2]
        eff = self.config.effective()
        sigma = eff["noise"]
        if sigma > 0:
            dim = feats.shape[-1]
            std = sigma / math.sqrt(2 * dim)
            offset = torch.randint(0, k, (2,), generator=gen).tolist()
            rows = (torch.arange(height) + offset[0]) // k
            cols = (torch.arange(width) + offset[1]) // k
            grid = torch.randn(int(rows[-1]) + 1, int(cols[-1]) + 1, dim, generator=gen).mul_(std)
            feats.add_(grid[rows[:, None], cols[None, :]])
            feats.add_(torch.randn(height, width, dim, generator=gen).mul_(std))
            feats = F.normalize(feats, dim=-1)
        m = eff["global_mix"]
        if m > 0:
            g = F.normalize(feats.mean(dim=(0, 1)), dim=0)
            feats = feats.mul(1 - m).add_(g, alpha=m)
        return F.normalize(feats, dim=-1) if (k > 1 or sigma > 0 or m > 0) else feats

    def dense_features(
        self, image: Tensor, *, view_key: str, semantics: Optional[Tensor] = None, camera: Optional[Tensor] = None,
        draw: int = 0,
    ) -> Tensor:  # fmt: skip
        """Simulated dense CLIP features of one view.

        Args:
            image: ``[H, W, 3]``; only its shape is used.
            view_key: stable view identifier; with ``config.seed`` it seeds all of this view's
                corruptions, so the same view always gets the same features.
            semantics: ``[H, W]`` integer ground-truth label ids in ``[0, len(labels))`` (required).
            camera: the view's camera-to-world; not used by this teacher (its corruptions do not
                depend on the viewpoint).
            draw: re-draw index (0 = the teacher's answer); ``draw > 0`` draws the view's
                corruptions afresh (the K-draw baseline averages draws ``0..K-1``).

        Returns:
            ``[H, W, E]`` float32 CPU, unit norm per pixel. With ``strength = 0``: exactly
            ``label_embeddings[semantics]``.

        Raises:
            ValueError: ``semantics`` is missing, has the wrong shape or dtype, or holds an id
                outside ``[0, len(labels))``; a bad ``image`` or ``view_key``.
        """
        ids = self._check_inputs(image, view_key, semantics)
        draw = self._check_draw(draw)
        height, width = ids.shape
        emb = self.label_embeddings
        if self.config.strength == 0:
            return emb[ids]
        gen = torch.Generator().manual_seed(self._draw_seed(view_key, draw))

        # 1. Confusion: relabel whole regions (a lookup table on label ids).
        lut = self._confusion_lut(gen)
        if lut is not None:
            ids = lut[ids]

        # 2. Blur, on the one-hot maps of the labels present, then into E space.
        k = self.blur_kernel_size(height, width)
        if k > 1:
            present, compact = torch.unique(ids, return_inverse=True)  # [P], [H, W] in 0..P-1
            soft = F.one_hot(compact, len(present)).permute(2, 0, 1).to(torch.float32)  # [P, H, W]
            soft = _box_blur(soft, k)
            feats = (soft.reshape(len(present), -1).T @ emb[present]).reshape(height, width, -1)
        else:
            feats = emb[ids].clone()  # [H, W, E]

        # 3-5. Noise (a kernel-sized patch grid with a random phase plus per-pixel, half the
        # variance each), global mix toward the image's normalised mean embedding, normalise.
        return self._noise_and_mix(feats, k, gen)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, labels={list(self.labels)}, "
            f"embedding_dim={self.embedding_dim}, config={self.config})"
        )
