"""A SIMULATED CLIP teacher whose mistakes persist across views, with a modality gap.

:class:`~langfield.language.teachers.simulated.SimulatedTeacher` draws every corruption afresh per
view, so averaging a few re-draws of the *same* view (no geometry at all) already undoes most of
them. A real CLIP is deterministic: it makes the *same* mistake about an object every time it sees
it from a similar direction. :class:`PersistentSimulatedTeacher` keeps the per-view corruptions
(at the strengths of its base config) and adds, in this order:

1. **Persistent confusion** (view-dependent but repeatable mistakes). Each object is taken for its
   related label (the most text-similar other label, as in the base teacher) in every view whose
   camera lies in a range of viewing directions, decided by draws seeded by ``(persistent_seed,
   label id)`` -- *never* by the view. The direction is the azimuth around the world up axis
   (``+z``, the convention of langfield's readers and the procedural scene) of the camera centre
   seen from the world origin (object-centric captures). Two layouts of that range:

   * ``layout="arc"`` (default): one contiguous arc per object, a fraction ``persistent_prob`` of
     the circle wide, starting at a seeded azimuth. Every object is wrong from exactly that share of
     directions and right from the rest, wherever the seed puts the arc.
   * ``layout="sectors"`` (the first version, kept for comparison): the circle is cut into
     ``azimuth_bins`` sectors with a seeded offset per object, and each (object, sector) pair is
     mistaken with probability ``persistent_prob``. The *number* of mistaken sectors then varies
     with the seed (binomial): at 0.3 over 8 sectors an object is wrong from half the directions or
     more with probability 0.19, and a large object such as the ground can end up mistaken in most
     training views, which no fusion of views can undo (the benchmark's seeds 1 and 2, README).

   Imitates: CLIP calling a white mug "a cup" from the side but not from above, identically on
   every frame of a video, while still naming it correctly from most directions.
2. **Scale-dependent bleeding** (small objects smear). The base teacher box-blurs every label map
   with one kernel; here the kernel of a label whose region covers a fraction ``a`` of the image
   grows to ``k * (1 + bleed * min(max_growth, sqrt(reference_area / a) - 1))`` when ``a <
   reference_area``; the blurred one-hot maps are renormalised per pixel. Imitates: ViT patches and
   crop pyramids have a fixed footprint, so a small object is a minority in every patch that sees
   it and its feature leaks into its surroundings, while a large one keeps a clean interior.
3. **Modality gap** (image features are not text features). CLIP's image and text embeddings live
   in two separated cones (Liang et al., NeurIPS 2022, "Mind the Gap"): a matching image-text pair
   has a cosine of about 0.2-0.35, not 1. Every pixel feature ``f`` (unit) becomes
   ``normalize(c f + sqrt(1 - c^2) u)`` with ``c = modality_gap_cosine`` and ``u`` one fixed random
   unit vector orthogonal to every label's text embedding (so the gap favours no label; a query
   string that is not a label, e.g. a paraphrase, gets its own small bias ``u . t``, as CLIP queries
   do -- LERF's canonical negatives exist to cancel that). A clean pixel's cosine with its own
   label's text is then exactly ``c``.

Open-vocabulary queries (paraphrases never used as label strings) are in
:mod:`langfield.language.vocabulary`. Everything here is SIMULATED: its ``name`` starts with
``"simulated-persistent["`` and ``simulated`` is ``True``.

Determinism: persistent confusion and the gap direction depend only on ``persistent_seed`` and the
label set; the per-view corruptions on ``(config.seed, view_key, draw)``. Re-drawing a view
(``draw=1, 2, ...``, the K-draw baseline) changes the per-view corruptions and never the persistent
mistakes, exactly as re-running CLIP on the same image would not.
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

from langfield.language.teachers.simulated import SimulatedTeacher, SimulatedTeacherConfig, _box_blur, _is_number

__all__ = ["LAYOUTS", "PersistentErrorConfig", "PersistentSimulatedTeacher", "PERSISTENT_BASE_CONFIG"]

#: The per-view corruptions under the persistent errors: the base teacher's, with per-view random
#: confusion halved (most confusion is now the persistent kind).
PERSISTENT_BASE_CONFIG = SimulatedTeacherConfig(confusion_view_prob=0.2)

#: Layouts of the directions an object is mistaken from (see the module docstring).
LAYOUTS = ("arc", "sectors")


@dataclass(frozen=True)
class PersistentErrorConfig:
    """The errors :class:`PersistentSimulatedTeacher` adds to the base teacher's.

    Attributes:
        persistent_prob: the share of viewing directions from which an object is mistaken for its
            related label (the margin knob: 0 = no persistent mistakes). ``layout="arc"``: the width
            of each object's arc as a fraction of the circle; ``"sectors"``: the probability that a
            sector is mistaken.
        layout: ``"arc"`` (one contiguous arc per object) or ``"sectors"`` (independent sectors).
        azimuth_bins: number of azimuth sectors of ``layout="sectors"`` (8: each 45 degrees wide).
        bleed: growth of a small object's blur kernel (0 = the base teacher's single kernel).
        reference_area: image fraction below which an object bleeds more.
        max_growth: cap on ``sqrt(reference_area / a) - 1``.
        modality_gap_cosine: cosine of a clean pixel feature with its label's text embedding,
            in ``(0, 1]``; 1 = no gap.
        persistent_seed: seeds the persistent mistakes, the sector offsets and the gap direction.
    """

    persistent_prob: float = 0.3
    layout: str = "arc"
    azimuth_bins: int = 8
    bleed: float = 1.0
    reference_area: float = 0.05
    max_growth: float = 3.0
    modality_gap_cosine: float = 0.25
    persistent_seed: int = 0

    def __post_init__(self) -> None:
        if not _is_number(self.persistent_prob) or not 0 <= self.persistent_prob <= 1:
            raise ValueError(f"persistent_prob must be a probability in [0, 1], got {self.persistent_prob!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if isinstance(self.azimuth_bins, bool) or not isinstance(self.azimuth_bins, int) or self.azimuth_bins < 1:
            raise ValueError(f"azimuth_bins must be an int >= 1, got {self.azimuth_bins!r}")
        for name in ("bleed", "max_growth"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not _is_number(self.reference_area) or not 0 < self.reference_area <= 1:
            raise ValueError(f"reference_area must be in (0, 1] (a fraction of the image), got {self.reference_area!r}")
        if not _is_number(self.modality_gap_cosine) or not 0 < self.modality_gap_cosine <= 1:
            raise ValueError(f"modality_gap_cosine must be in (0, 1], got {self.modality_gap_cosine!r}")
        if isinstance(self.persistent_seed, bool) or not isinstance(self.persistent_seed, int):
            raise ValueError(f"persistent_seed must be an int, got {self.persistent_seed!r}")


def _uniform(*key: Any) -> float:
    """A uniform in ``[0, 1)`` that is a pure function of ``key`` (stable across processes)."""
    digest = hashlib.blake2b("\x00".join(map(str, key)).encode("utf-8"), digest_size=8).digest()
    return (int.from_bytes(digest, "little") >> 11) / float(1 << 53)


def camera_azimuth(camera: Tensor) -> float:
    """Azimuth in ``[0, 2 pi)`` around ``+z`` of a camera centre seen from the world origin.

    Args:
        camera: ``[3, 4]`` (or ``[4, 4]``) camera-to-world; its last column is the centre.
    """
    c = camera[:3, 3].double()
    return float(torch.atan2(c[1], c[0]).remainder(2 * math.pi))


class PersistentSimulatedTeacher(SimulatedTeacher):
    """SIMULATED CLIP with repeatable, direction-dependent mistakes, small-object bleeding and a
    modality gap (see the module docstring).

    Args:
        labels, text_encoder, related: as :class:`SimulatedTeacher`.
        config: the per-view corruptions (default :data:`PERSISTENT_BASE_CONFIG`).
        errors: the persistent errors and the gap.

    ``dense_features`` needs ``camera=`` (the view's ``[3, 4]`` camera-to-world).
    """

    def __init__(
        self,
        labels: Sequence[str],
        text_encoder: Any = None,
        config: SimulatedTeacherConfig = PERSISTENT_BASE_CONFIG,
        related: Optional[Mapping[str, Optional[str]]] = None,
        errors: PersistentErrorConfig = PersistentErrorConfig(),
    ) -> None:
        if not isinstance(errors, PersistentErrorConfig):
            raise TypeError(f"errors must be a PersistentErrorConfig, got {type(errors).__name__}")
        super().__init__(labels, text_encoder, config, related)
        self.errors = errors
        self.name = "simulated-persistent" + self.name[len("simulated"):]
        self._offsets = [_uniform("offset", errors.persistent_seed, i) for i in range(len(self.labels))]
        self.gap_direction = self._gap_direction()

    def _gap_direction(self) -> Tensor:
        """``[E]`` unit vector orthogonal to the span of the label embeddings (seeded)."""
        gen = torch.Generator().manual_seed(int(_uniform("gap", self.errors.persistent_seed) * (1 << 62)))
        u = torch.randn(self.embedding_dim, generator=gen, dtype=torch.float64)
        q, _ = torch.linalg.qr(self.label_embeddings.double().T)  # [E, L] orthonormal basis of the label span
        u = u - q @ (q.T @ u)
        return F.normalize(u, dim=0).float()

    def spec(self) -> dict:
        return {**super().spec(), "kind": "simulated-persistent", "errors": dataclasses.asdict(self.errors)}

    def sector(self, label: int, azimuth: float) -> int:
        """The azimuth sector of ``label`` a camera at ``azimuth`` (radians) falls in (``layout="sectors"``)."""
        bins = self.errors.azimuth_bins
        return int(math.floor((azimuth / (2 * math.pi) + self._offsets[label]) * bins)) % bins

    def mistaken_from(self, label: int, azimuth: float) -> bool:
        """Whether ``label`` is persistently mistaken by a camera at ``azimuth`` (radians)."""
        p = min(1.0, self.errors.persistent_prob * self.config.strength)
        if self.errors.layout == "arc":  # the arc starts at the object's seeded offset (fraction of a turn)
            return (azimuth / (2 * math.pi) - self._offsets[label]) % 1.0 < p
        return _uniform("persist", self.errors.persistent_seed, label, self.sector(label, azimuth)) < p

    def persistent_confusion(self, camera: Tensor) -> dict[str, str]:
        """``{label: related label}`` of the objects this camera sees mistaken (every view from
        the same viewing direction gets the same answer)."""
        lut = self._persistent_lut(camera)
        return {self.labels[i]: self.labels[j] for i, j in enumerate(lut.tolist()) if i != j}

    def _persistent_lut(self, camera: Tensor) -> Tensor:
        azimuth = camera_azimuth(camera)
        lut = torch.arange(len(self.labels))
        for i in range(len(self.labels)):
            j = int(self._related[i])
            if j >= 0 and self.mistaken_from(i, azimuth):
                lut[i] = j
        return lut

    def _check_camera(self, camera: Any) -> Tensor:
        if camera is None:
            raise ValueError(
                "the persistent-error teacher needs each view's camera: pass camera= the [3, 4] camera-to-world "
                "(its mistakes depend on the viewing direction)"
            )
        if not isinstance(camera, Tensor) or camera.ndim != 2 or tuple(camera.shape) not in ((3, 4), (4, 4)):
            got = tuple(camera.shape) if isinstance(camera, Tensor) else type(camera).__name__
            raise ValueError(f"camera must be a [3, 4] camera-to-world tensor, got {got}")
        if not torch.isfinite(camera).all():
            raise ValueError("camera holds non-finite values")
        return camera.detach().to("cpu", torch.float64)

    def _blur_by_size(self, ids: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Blur each present label's one-hot map with its own size-dependent kernel.

        Returns ``(present [P], soft [P, H, W])`` with ``soft`` summing to 1 over ``P``."""
        height, width = ids.shape
        present, compact = torch.unique(ids, return_inverse=True)
        onehot = F.one_hot(compact, len(present)).permute(2, 0, 1).to(torch.float32)  # [P, H, W]
        if k <= 1:
            return present, onehot
        e = self.errors
        area = onehot.mean(dim=(1, 2))  # [P]
        maps = []
        for p in range(len(present)):
            growth = min(e.max_growth, max(0.0, math.sqrt(e.reference_area / float(area[p])) - 1.0))
            kp = int(round(k * (1.0 + e.bleed * growth))) | 1
            kp = min(kp, (2 * max(height, width)) | 1)
            maps.append(_box_blur(onehot[p : p + 1], kp)[0])
        soft = torch.stack(maps)
        return present, soft / soft.sum(dim=0, keepdim=True).clamp_min(1e-12)

    def dense_features(
        self, image: Tensor, *, view_key: str, semantics: Optional[Tensor] = None, camera: Optional[Tensor] = None,
        draw: int = 0,
    ) -> Tensor:  # fmt: skip
        """SIMULATED dense CLIP features of one view, ``[H, W, E]`` float32 CPU, unit norm.

        Args:
            image, view_key, semantics: as :meth:`SimulatedTeacher.dense_features`.
            camera: ``[3, 4]`` camera-to-world of the view (required).
            draw: re-draw index of the per-view corruptions (0 = the teacher's answer; the K-draw
                baseline averages draws 0..K-1); persistent mistakes are the same for every draw.
        """
        ids = self._check_inputs(image, view_key, semantics)
        cam = self._check_camera(camera)
        draw = self._check_draw(draw)
        emb = self.label_embeddings
        if self.config.strength == 0:
            feats = emb[ids]
        else:
            gen = torch.Generator().manual_seed(self._draw_seed(view_key, draw))
            lut = self._confusion_lut(gen)  # per-view random confusion (consumes its draws either way)
            persistent = self._persistent_lut(cam)[ids]
            if lut is not None:  # regions not persistently mistaken may still be confused at random
                persistent = torch.where(persistent == ids, lut[ids], persistent)
            ids = persistent
            height, width = ids.shape
            k = self.blur_kernel_size(height, width)
            present, soft = self._blur_by_size(ids, k)
            feats = (soft.reshape(len(present), -1).T @ emb[present]).reshape(height, width, -1)
            feats = self._noise_and_mix(feats, k, gen)
        c = self.errors.modality_gap_cosine
        if c < 1:
            feats = F.normalize(feats, dim=-1).mul(c).add_(self.gap_direction, alpha=math.sqrt(1 - c * c))
        return F.normalize(feats, dim=-1)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", errors={self.errors})"
