"""Spatial questions about a scene from a camera: left/right, closer, larger, what is on top.

The answers are read from 3D geometry: each named object is a point and a box (from
:meth:`LanguageScene.localize <langfield.language.scene.LanguageScene.localize>` for a trained
field, or from the true objects of the procedural scene for ground truth), and the question's
camera. Everything below is pure tensor geometry except :func:`ask_scene`, which asks a scene to
localise the names first.

**Grammar** (:func:`parse_question`; case-insensitive, a trailing ``?`` or ``.`` and the articles
*the / a / an* before a name are optional, names are free text)::

    is A [to the|on the] left of B          -> kind "left_of"   (yes / no)
    is A [to the|on the] right of B         -> kind "right_of"  (yes / no)
    is A above|over|on top of B             -> kind "is_above"  (yes / no)
    which [one|object] is closer|nearer [to the camera|to me], A or B     -> "closer"  (A or B)
    which [one|object] is farther|further [from the camera|from me], A or B -> "farther"
    which [one|object] is larger|bigger, A or B                            -> "larger"
    which [one|object] is smaller, A or B                                   -> "smaller"
    what is|what's above|over|on top of|on X                               -> "above" (names or "nothing")

**Frames and conventions.** Object points and boxes are held in the dataset's *normalised* world
frame, the frame of its cameras (OpenCV ``c2w``: x right, y down, z forward); a localisation in
the dataset's original frame is mapped there with ``dataset.world_transform``
(:meth:`SpatialObject.from_localization`). Lengths reported in the evidence are converted back to
original units.

* **left / right**: compared by the camera-frame azimuth ``atan2(x, z)`` of the objects' points,
  which orders them as their image ``x`` does whenever both are in front of the camera (and stays
  defined behind it). "A left of B" means A's azimuth is smaller (further left in the image).
* **closer / farther**: camera-frame depth ``z`` (along the optical axis) of the points.
* **larger / smaller**: the length of the box diagonal (a flat floor seen from above still has an
  extent; a volume would be ~0 for a box fitted to its visible surface). Volumes are reported too.
* **above / on top of X**: with ``up`` a unit vector (default :func:`mean_camera_up`, the mean
  ``-y`` axis of the training cameras, as nerfstudio's ``orient_method="up"``; within 1 degree of
  the procedural scene's world ``+z`` for its 40 training cameras), each box is described by its
  footprint (the rectangle its corners span in the plane orthogonal to ``up``) and its height
  range along ``up``. A is above X when their footprints overlap by at least ``min_overlap`` of the
  smaller footprint and A's box centre is higher than X's top. Candidates default to the dataset's
  labels without :data:`NON_OBJECT_LABELS` and without X.

**Confidence** in ``[0.5, 1]`` is ``0.5 + 0.5 * min(1, margin)`` with a dimensionless margin: the
separation of the two compared values over the sum of the two objects' half extents along the
compared axis (azimuth or depth); for size, ``(ratio - 1) / 0.5`` of the larger over the smaller
diagonal; for "above", the weakest decision over the candidates (height over the candidate's
half height; the overlap fraction's distance from ``min_overlap`` over the room on that side,
``min_overlap`` below it or ``1 - min_overlap`` above it). It measures how clear the geometry is, not
whether the localisations are right (their relevancy scores are in the evidence).

Scoring (:func:`spatial_questions`, :func:`score_spatial`) generates questions with their true
answers from known objects (:func:`objects_from_boxes` of a dataset's ``object_boxes``;
:func:`procedural_objects`) and test cameras, and returns the accuracy
of any answering function.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

import torch
from torch import Tensor

from langfield._checks import InputError, check_finite_number
from langfield.data.procedural import procedural_object_boxes
from langfield.language.queries import Localization, QueryNotFoundError, name_key
from langfield.types import Cameras

__all__ = [
    "KINDS",
    "NON_OBJECT_LABELS",
    "GeneratedQuestion",
    "SpatialAnswer",
    "SpatialObject",
    "SpatialQuestion",
    "answer_spatial",
    "ask_scene",
    "mean_camera_up",
    "objects_from_boxes",
    "parse_question",
    "procedural_objects",
    "score_spatial",
    "spatial_questions",
    "transform_scale",
]

#: Question kinds: yes/no (``left_of``, ``right_of``, ``is_above``), one of two names (``closer``,
#: ``farther``, ``larger``, ``smaller``) or a list of names (``above``).
KINDS = ("left_of", "right_of", "is_above", "closer", "farther", "larger", "smaller", "above")
YES_NO_KINDS = ("left_of", "right_of", "is_above")
#: Dataset labels that are never candidates of "what is above X".
NON_OBJECT_LABELS = frozenset({"background", "void", "unknown", "sky"})
#: Size ratio at which a "larger" answer is fully confident (margin 1).
_CLEAR_SIZE_RATIO = 1.5

GRAMMAR = (
    "'is A left of B?', 'is A right of B?', 'is A above B?', 'which is closer, A or B?', "
    "'which is farther, A or B?', 'which is larger, A or B?', 'which is smaller, A or B?', "
    "'what is above X?' / 'what is on top of X?'"
)

# ----------------------------------------------------------------------------------------------
# Grammar
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpatialQuestion:
    """A parsed spatial question.

    Attributes:
        kind: one of :data:`KINDS`.
        objects: ``(A, B)`` for every kind but ``above``, ``(X,)`` for ``above``.
        text: the question as asked (empty when built directly).
    """

    kind: str
    objects: Tuple[str, ...]
    text: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"question kind {self.kind!r}: expected one of {KINDS}")
        want = 1 if self.kind == "above" else 2
        if not isinstance(self.objects, tuple) or len(self.objects) != want:
            raise InputError(f"question {self.kind!r} needs {want} object name(s), got {self.objects!r}")
        for name in self.objects:
            if not isinstance(name, str) or not name.strip():
                raise InputError(f"question {self.kind!r}: object names must be non-empty strings, got {self.objects!r}")
        if want == 2 and name_key(self.objects[0]) == name_key(self.objects[1]):
            raise InputError(f"question {self.text or self.kind!r}: compares {self.objects[0]!r} with itself; name two objects")

    def to_text(self) -> str:
        """The question in the grammar's canonical form (parses back to the same question)."""
        a = self.objects[0]
        if self.kind == "above":
            return f"what is above the {a}?"
        b = self.objects[1]
        if self.kind in ("left_of", "right_of"):
            return f"is the {a} {self.kind.replace('_of', '')} of the {b}?"
        if self.kind == "is_above":
            return f"is the {a} above the {b}?"
        return f"which is {self.kind}, the {a} or the {b}?"


_ARTICLE = re.compile(r"^(?:the|a|an)\s+")
_NAME = r"(?P<{}>.+?)"
_PATTERNS = [
    (re.compile(r"^is\s+" + _NAME.format("a") + r"\s+(?:(?:to|on)\s+the\s+)?(?P<side>left|right)\s+of\s+" + _NAME.format("b") + r"$"), "side"),
    (re.compile(r"^is\s+" + _NAME.format("a") + r"\s+(?:above|over|on\s+top\s+of)\s+" + _NAME.format("b") + r"$"), "is_above"),
    (
        re.compile(
            r"^which\s+(?:one\s+|object\s+)?is\s+(?P<rel>closer|nearer|farther|further|larger|bigger|smaller)"
            r"(?:\s+(?:to|from)\s+(?:the\s+camera|me|the\s+viewer))?\s*[,:]?\s+" + _NAME.format("a") + r"\s*,?\s+or\s+" + _NAME.format("b") + r"$"
        ),
        "which",
    ),
    (re.compile(r"^what(?:\s+is|'s|\s+are)\s+(?:above|over|on\s+top\s+of|on)\s+" + _NAME.format("x") + r"$"), "above"),
]
_WHICH = {"closer": "closer", "nearer": "closer", "farther": "farther", "further": "farther",
          "larger": "larger", "bigger": "larger", "smaller": "smaller"}  # fmt: skip


def _clean_name(name: str) -> str:
    name = " ".join(name.strip(" ,").split())
    name = _ARTICLE.sub("", name).strip()
    return "" if name == "the" else name  # "is the left of the box": the name is missing


def parse_question(text: str) -> SpatialQuestion:
    """Parse ``text`` with the grammar of the module docstring.

    Raises:
        InputError: not a string, blank, no form of the grammar matches, a name is empty or both
            names are the same.

    >>> parse_question("Is the sphere left of the box?")
    SpatialQuestion(kind='left_of', objects=('sphere', 'box'), text='Is the sphere left of the box?')
    >>> parse_question("which is closer to the camera, the red mug or the laptop").objects
    ('red mug', 'laptop')
    >>> parse_question("What's on top of the table?").kind
    'above'
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"question (--ask): give a question such as 'is the sphere left of the box?', got {text!r}")
    norm = " ".join(text.strip().split()).lower().rstrip("?.! ").strip()
    norm = norm.replace("\u2019", "'")
    for pattern, form in _PATTERNS:
        m = pattern.match(norm)
        if m is None:
            continue
        if form == "above":
            names: Tuple[str, ...] = (_clean_name(m["x"]),)
        else:
            names = (_clean_name(m["a"]), _clean_name(m["b"]))
        if form == "side":
            kind = f"{m['side']}_of"
        elif form == "which":
            kind = _WHICH[m["rel"]]
        else:
            kind = form  # "above" or "is_above"
        if any(not n for n in names):
            raise InputError(f"question {text!r}: an object name is missing (forms: {GRAMMAR})")
        return SpatialQuestion(kind, names, text)
    raise InputError(f"question {text!r}: not understood; the spatial grammar has the forms {GRAMMAR}")


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------


def transform_scale(world_transform: Tensor) -> float:
    """Normalised units per original unit of a ``[4, 4]`` similarity ``x_norm = T @ x``."""
    T = torch.as_tensor(world_transform).double()
    if T.shape != (4, 4):
        raise InputError(f"world_transform must be [4, 4], got {tuple(T.shape)}")
    return float(torch.linalg.det(T[:3, :3]).abs() ** (1.0 / 3.0))


def _unit_corners() -> Tensor:
    """``[8, 3]`` corners of the unit cube, corner ``k`` = bits ``(k & 1, k >> 1 & 1, k >> 2 & 1)``."""
    k = torch.arange(8)
    return torch.stack([k & 1, (k >> 1) & 1, (k >> 2) & 1], -1).double()


def _apply(T: Tensor, pts: Tensor) -> Tensor:
    return pts @ T[:3, :3].T + T[:3, 3]


@dataclass(frozen=True)
class SpatialObject:
    """A named object as a point and a box, in the normalised world frame (the cameras' frame).

    Attributes:
        name: the object's name as asked.
        point: ``[3]`` float64 representative point (a localisation's relevancy-weighted surface
            point, or the true centre).
        corners: ``[8, 3]`` float64 corners of its box (an axis-aligned box of the frame it was
            given in, mapped into the normalised frame; corner 0 = min, 7 = max).
        scale: normalised units per original unit (``world_transform``'s scale), for reporting.
        score: the localisation's peak relevancy (1.0 for ground truth).
        placed_by: how the name was placed (e.g. ``"object map"``, ``"relevancy"``); reported in the evidence.
    """

    name: str
    point: Tensor
    corners: Tensor
    scale: float = 1.0
    score: float = 1.0
    placed_by: str = ""

    @staticmethod
    def from_aabb(name: str, point: Tensor, aabb: Tensor, world_transform: Optional[Tensor] = None, score: float = 1.0) -> "SpatialObject":
        """From a point ``[3]`` and a box ``[2, 3]`` (min, max) in the frame that ``world_transform``
        (``[4, 4]`` similarity, ``x_norm = T @ x``; default identity) maps to the normalised frame."""
        point = torch.as_tensor(point).double().reshape(-1)
        aabb = torch.as_tensor(aabb).double()
        if point.shape != (3,) or aabb.shape != (2, 3):
            raise InputError(f"object {name!r}: point must be [3] and aabb [2, 3], got {tuple(point.shape)} and {tuple(aabb.shape)}")
        if not bool(torch.isfinite(point).all() & torch.isfinite(aabb).all()):
            raise InputError(f"object {name!r}: point and aabb must be finite")
        corners = aabb[0] + _unit_corners() * (aabb[1] - aabb[0]).clamp_min(0)
        scale = 1.0
        if world_transform is not None:
            T = torch.as_tensor(world_transform).double()
            scale = transform_scale(T)
            point, corners = _apply(T, point[None])[0], _apply(T, corners)
        return SpatialObject(name, point, corners, scale, float(score))

    @staticmethod
    def from_localization(name: str, loc: Localization, world_transform: Optional[Tensor] = None) -> "SpatialObject":
        """From :meth:`LanguageScene.localize`'s result (dataset's *original* frame) and the
        dataset's ``world_transform``."""
        return SpatialObject.from_aabb(name, loc.point, loc.aabb, world_transform, score=loc.score)

    def with_scale(self, scale: float) -> "SpatialObject":
        """The same object reporting lengths with ``scale`` normalised units per original unit."""
        return SpatialObject(self.name, self.point, self.corners, float(scale), self.score, self.placed_by)

    def placed(self, how: str) -> "SpatialObject":
        """The same object, noting how it was placed."""
        return SpatialObject(self.name, self.point, self.corners, self.scale, self.score, how)

    @property
    def diagonal(self) -> float:
        """Length of the box diagonal in normalised units."""
        return float((self.corners[7] - self.corners[0]).norm())

    def evidence(self, c2w: Tensor, K: Tensor, up: Tensor) -> Dict[str, Any]:
        """JSON-ready facts about the object seen from the camera ``c2w [3, 4]`` (OpenCV), ``K [3, 3]``."""
        cam = _to_camera(self.point[None], c2w)[0]
        x, y, z = cam.tolist()
        image = [float(K[0, 0] * x / z + K[0, 2]), float(K[1, 1] * y / z + K[1, 2])] if z > 0 else None
        inv = 1.0 / self.scale
        edges = self.corners[[1, 2, 4]] - self.corners[0]  # the box's three edges (corner bits)
        return {
            "point_normalised": [round(v, 6) for v in self.point.tolist()],
            "box_corners_normalised": [self.corners[0].tolist(), self.corners[7].tolist()],
            "camera_xyz": [x, y, z],
            "image_xy": image,
            "depth": z * inv,
            "distance": float(cam.norm()) * inv,
            "size": self.diagonal * inv,
            "volume": float(edges.norm(dim=1).prod()) * inv**3,
            "height_range": [v * inv for v in _heights(self.corners, up)],
            "relevancy": self.score,
            **({"placed_by": self.placed_by} if self.placed_by else {}),
        }


def mean_camera_up(c2w: Tensor) -> Tensor:
    """``[3]`` float64 unit mean "up" (``-y`` axis) of OpenCV cameras ``c2w [C, 3, 4]``.

    nerfstudio orients captures the same way (``orient_method="up"``). Raises ``InputError`` when
    the up vectors cancel out (no dominant up direction)."""
    c2w = torch.as_tensor(c2w).double()
    if c2w.ndim != 3 or tuple(c2w.shape[1:]) not in ((3, 4), (4, 4)) or c2w.shape[0] == 0:
        raise InputError(f"c2w must be [C, 3, 4] with C >= 1, got {tuple(c2w.shape)}")
    up = (-c2w[:, :3, 1]).mean(0)
    if float(up.norm()) < 1e-3:
        raise InputError("the cameras' up vectors cancel out; pass up= explicitly")
    return up / up.norm()


def _to_camera(points: Tensor, c2w: Tensor) -> Tensor:
    """World points ``[N, 3]`` -> OpenCV camera frame: ``R^T (p - t)``."""
    R, t = c2w[:3, :3].double(), c2w[:3, 3].double()
    return (points.double() - t) @ R


def _azimuth(points: Tensor, c2w: Tensor) -> Tensor:
    cam = _to_camera(points, c2w)
    return torch.atan2(cam[:, 0], cam[:, 2])


def _up_basis(up: Tensor) -> Tensor:
    """``[3, 3]`` rows ``(e1, e2, up)``: an orthonormal basis with ``up`` last."""
    up = up / up.norm()
    helper = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    if abs(float(up @ helper)) > 0.9:
        helper = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    e1 = torch.linalg.cross(up, helper)
    e1 = e1 / e1.norm()
    return torch.stack([e1, torch.linalg.cross(up, e1), up])


def _heights(corners: Tensor, up: Tensor) -> List[float]:
    h = corners @ (up / up.norm())
    return [float(h.min()), float(h.max())]


def _margin(delta: float, half_a: float, half_b: float) -> float:
    return abs(delta) / max(half_a + half_b, 1e-12)


def _confidence(margin: float) -> float:
    return 0.5 + 0.5 * min(1.0, max(0.0, margin))


def _above_margin(a: SpatialObject, x: SpatialObject, basis: Tensor, min_overlap: float) -> Tuple[bool, float, Dict[str, float]]:
    """Whether ``a`` sits above ``x``, the decision's margin and its numbers."""
    pa, px = a.corners @ basis.T, x.corners @ basis.T  # [8, 3] in (e1, e2, up)
    lo_a, hi_a, lo_x, hi_x = pa.min(0).values, pa.max(0).values, px.min(0).values, px.max(0).values
    inter = (torch.minimum(hi_a[:2], hi_x[:2]) - torch.maximum(lo_a[:2], lo_x[:2])).clamp_min(0).prod()
    smaller = torch.minimum((hi_a[:2] - lo_a[:2]).prod(), (hi_x[:2] - lo_x[:2]).prod())
    overlap = float(inter / smaller) if float(smaller) > 1e-12 else (1.0 if float(inter) > 0 else 0.0)
    centre_a = float(lo_a[2] + hi_a[2]) / 2
    half_a = max(float(hi_a[2] - lo_a[2]) / 2, 1e-12)
    height = max(-1.0, min(1.0, (centre_a - float(hi_x[2])) / half_a))
    over = max(-1.0, min(1.0, (overlap - min_overlap) / max(min_overlap if overlap < min_overlap else 1.0 - min_overlap, 1e-12)))
    decision = min(height, over)
    facts = {"footprint_overlap": overlap, "centre_height": centre_a / a.scale, "reference_top": float(hi_x[2]) / x.scale}
    return decision >= 0, abs(decision), facts


def _check_camera(c2w: Tensor, K: Tensor) -> Tuple[Tensor, Tensor]:
    c2w, K = torch.as_tensor(c2w).double(), torch.as_tensor(K).double()
    if c2w.shape == (4, 4):
        c2w = c2w[:3]
    if c2w.shape != (3, 4) or K.shape != (3, 3):
        raise InputError(f"camera: c2w must be [3, 4] (OpenCV) and K [3, 3], got {tuple(c2w.shape)} and {tuple(K.shape)}")
    return c2w, K


@dataclass(frozen=True)
class SpatialAnswer:
    """The answer to a :class:`SpatialQuestion` with its evidence.

    Attributes:
        question: what was asked.
        answer: ``"yes"`` / ``"no"``, an object name, the names above X joined by ``", "``, or
            ``"nothing"``.
        objects: the names the answer picks (empty for yes/no and "nothing").
        confidence: in ``[0.5, 1]`` (module docstring): how clearly the geometry separates.
        evidence: JSON-ready numbers the answer rests on (per object: points, box corners, camera
            coordinates, image position, depth, size, volume; the compared values; ``up``).
    """

    question: SpatialQuestion
    answer: str
    objects: Tuple[str, ...]
    confidence: float
    evidence: Dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, Any]:
        """Plain-Python dict (JSON-ready)."""
        return {
            "question": self.question.text or self.question.to_text(),
            "kind": self.question.kind,
            "objects_asked": list(self.question.objects),
            "answer": self.answer,
            "objects": list(self.objects),
            "confidence": self.confidence,
            "evidence": self.evidence,
        }


def answer_spatial(
    question: SpatialQuestion,
    objects: Dict[str, SpatialObject],
    c2w: Tensor,
    K: Tensor,
    up: Tensor,
    *,
    candidates: Optional[Sequence[str]] = None,
    min_overlap: float = 0.25,
) -> SpatialAnswer:
    """Answer ``question`` from known objects, seen from one camera (pure geometry).

    Args:
        question: a parsed question.
        objects: name -> :class:`SpatialObject` (normalised frame); must hold the question's
            names and, for ``above``, the candidates to consider.
        c2w: ``[3, 4]`` OpenCV camera-to-world of the camera asked from (normalised frame).
        K: ``[3, 3]`` its intrinsics (pixels), used for the reported image positions.
        up: ``[3]`` the world's up direction in the normalised frame.
        candidates: names considered for ``above`` (default: every object but X).
        min_overlap: ``above``: smallest footprint overlap, as a fraction of the smaller footprint.

    Raises:
        QueryNotFoundError: a name of the question is not in ``objects``.
    """
    c2w, K = _check_camera(c2w, K)
    up = torch.as_tensor(up).double().reshape(-1)
    if up.shape != (3,) or not bool(torch.isfinite(up).all()) or float(up.norm()) < 1e-9:
        raise InputError(f"up must be a finite non-zero [3] vector, got {up.tolist()}")
    up = up / up.norm()
    check_finite_number(min_overlap, "min_overlap", lo=0, hi=1)
    for name in question.objects:
        if name not in objects:
            raise QueryNotFoundError(f"object {name!r} is not in the scene (known: {sorted(objects)})")
    kind = question.kind
    evidence: Dict[str, Any] = {"frame": "normalised world (the cameras' frame); lengths in original units",
                                "camera": {"c2w": c2w.tolist(), "convention": "OpenCV"}, "up": up.tolist()}  # fmt: skip
    if kind == "above":
        x = objects[question.objects[0]]
        names = [n for n in (candidates if candidates is not None else objects) if name_key(n) != name_key(x.name)]
        basis = _up_basis(up)
        above, margins, facts = [], [], {}
        for n in names:
            if n not in objects:
                continue
            is_above, margin, f = _above_margin(objects[n], x, basis, min_overlap)
            facts[n] = {**f, "above": is_above}
            margins.append(margin)
            if is_above:
                above.append(n)
        evidence["objects"] = {n: objects[n].evidence(c2w, K, up) for n in [x.name, *facts]}
        evidence["candidates"] = facts
        conf = _confidence(min(margins)) if margins else 1.0
        return SpatialAnswer(question, ", ".join(above) if above else "nothing", tuple(above), conf, evidence)

    a, b = objects[question.objects[0]], objects[question.objects[1]]
    evidence["objects"] = {a.name: a.evidence(c2w, K, up), b.name: b.evidence(c2w, K, up)}
    if kind in ("left_of", "right_of"):
        az = _azimuth(torch.stack([a.point, b.point]), c2w)
        span_a, span_b = _azimuth(a.corners, c2w), _azimuth(b.corners, c2w)
        half_a, half_b = float(span_a.max() - span_a.min()) / 2, float(span_b.max() - span_b.min()) / 2
        delta = float(az[0] - az[1])  # < 0: A left of B
        yes = delta < 0 if kind == "left_of" else delta > 0
        evidence["compared"] = {"azimuth_rad": {a.name: float(az[0]), b.name: float(az[1])}}
        return SpatialAnswer(question, "yes" if yes else "no", (), _confidence(_margin(delta, half_a, half_b)), evidence)
    if kind == "is_above":
        is_above, margin, facts = _above_margin(a, b, _up_basis(up), min_overlap)
        evidence["compared"] = facts
        return SpatialAnswer(question, "yes" if is_above else "no", (), _confidence(margin), evidence)
    if kind in ("closer", "farther"):
        cam = _to_camera(torch.stack([a.point, b.point]), c2w)
        za, zb = _to_camera(a.corners, c2w)[:, 2], _to_camera(b.corners, c2w)[:, 2]
        delta = float(cam[0, 2] - cam[1, 2])
        a_closer = delta < 0
        pick = a if a_closer == (kind == "closer") else b
        evidence["compared"] = {"depth": {a.name: float(cam[0, 2]) / a.scale, b.name: float(cam[1, 2]) / b.scale}}
        margin = _margin(delta, float(za.max() - za.min()) / 2, float(zb.max() - zb.min()) / 2)
        return SpatialAnswer(question, pick.name, (pick.name,), _confidence(margin), evidence)
    # larger / smaller
    da, db = a.diagonal, b.diagonal
    a_larger = da > db
    pick = a if a_larger == (kind == "larger") else b
    ratio = max(da, db) / max(min(da, db), 1e-12)
    evidence["compared"] = {"size": {a.name: da / a.scale, b.name: db / b.scale}, "ratio": ratio}
    return SpatialAnswer(question, pick.name, (pick.name,), _confidence((ratio - 1) / (_CLEAR_SIZE_RATIO - 1)), evidence)


# ----------------------------------------------------------------------------------------------
# Asking a scene
# ----------------------------------------------------------------------------------------------


class LocalizingScene(Protocol):
    """What :func:`ask_scene` needs: ``localize(name) -> Localization`` (dataset's original frame)
    and ``dataset`` (``world_transform``, ``labels``, ``split(name).cameras``)."""

    dataset: Any

    def localize(self, query: str, **kwargs: Any) -> Localization: ...


def default_candidates(labels: Optional[Sequence[str]]) -> List[str]:
    """The dataset's labels that can be objects (without :data:`NON_OBJECT_LABELS`)."""
    return [lab for lab in (labels or []) if lab and lab.strip().casefold() not in NON_OBJECT_LABELS]


def ask_scene(
    scene: LocalizingScene,
    question: "SpatialQuestion | str",
    cameras: Cameras,
    index: int,
    *,
    candidates: Optional[Sequence[str]] = None,
    up: Optional[Tensor] = None,
    locate: Optional[Callable[[str], "Localization | SpatialObject"]] = None,
    min_overlap: float = 0.25,
) -> SpatialAnswer:
    """Answer a spatial question about a scene from camera ``index`` of ``cameras`` (normalised frame).

    Every name is localised with ``locate`` (default ``scene.localize``): a :class:`Localization`
    (the original frame) is mapped into the normalised frame with ``scene.dataset.world_transform``;
    a :class:`SpatialObject` is taken as it is (already normalised). A name of the
    question that is not found raises :class:`QueryNotFoundError` naming it; "above"
    candidates (default :func:`default_candidates` of the dataset's labels) that are not found are
    skipped and listed in ``evidence["not_found"]``. ``up`` defaults to :func:`mean_camera_up` of
    the training cameras.
    """
    q = parse_question(question) if isinstance(question, str) else question
    if not isinstance(q, SpatialQuestion):
        raise InputError(f"question: expected a string or a SpatialQuestion, got {type(question).__name__}")
    if not 0 <= int(index) < len(cameras):
        raise InputError(f"camera {index} is out of range: {len(cameras)} cameras")
    locate = locate or scene.localize
    T = scene.dataset.world_transform

    def place(name: str) -> SpatialObject:
        found = locate(name)
        return found if isinstance(found, SpatialObject) else SpatialObject.from_localization(name, found, T)

    objects: Dict[str, SpatialObject] = {}
    for name in q.objects:
        try:
            objects[name] = place(name)
        except QueryNotFoundError as err:
            raise QueryNotFoundError(f"question {q.text or q.to_text()!r}: object {name!r} was not found in the scene ({err})") from None
    not_found: List[str] = []
    if q.kind == "above":
        pool = default_candidates(scene.dataset.labels) if candidates is None else list(candidates)
        pool = [n for n in pool if name_key(n) != name_key(q.objects[0])]
        if not pool:
            raise InputError(f"question {q.text or q.to_text()!r}: no candidate objects to look for; pass candidates")
        for name in pool:
            try:
                objects[name] = place(name)
            except QueryNotFoundError:
                not_found.append(name)
        candidates = [n for n in pool if n in objects]
    if up is None:
        up = mean_camera_up(scene.dataset.split("train").cameras.c2w)
    ans = answer_spatial(q, objects, cameras.c2w[index], cameras.Ks[index], up, candidates=candidates, min_overlap=min_overlap)
    if not_found:
        ans.evidence["not_found"] = not_found
    return ans


# ----------------------------------------------------------------------------------------------
# Ground truth and scoring
# ----------------------------------------------------------------------------------------------


def objects_from_boxes(boxes: Mapping[str, Tensor], world_transform: Optional[Tensor] = None) -> List[SpatialObject]:
    """Known objects from true boxes ``{name: [2, 3] (min, max)}`` (e.g. ``SceneDataset.object_boxes``,
    in the dataset's original frame), each placed at its box's centre and mapped by
    ``world_transform`` to the normalised frame."""
    out = []
    for name, box in boxes.items():
        box = torch.as_tensor(box, dtype=torch.float64)
        out.append(SpatialObject.from_aabb(name, box.mean(0) if box.shape == (2, 3) else box, box, world_transform))
    return out


def procedural_objects(world_transform: Optional[Tensor] = None, layout: str = "demo") -> List[SpatialObject]:
    """The true objects of the procedural scene's ``layout`` (:mod:`langfield.data.procedural`):
    centre and exact world-axis-aligned box (:func:`~langfield.data.procedural.object_aabb`),
    mapped by ``world_transform`` (identity for
    :func:`~langfield.data.procedural.make_procedural_dataset`)."""
    return objects_from_boxes(procedural_object_boxes(layout), world_transform)


@dataclass(frozen=True)
class GeneratedQuestion:
    """A question with its true answer. ``view`` indexes the cameras it was generated for."""

    question: SpatialQuestion
    view: int
    answer: str
    objects: Tuple[str, ...]


def spatial_questions(
    objects: Sequence[SpatialObject], cameras: Cameras, up: Tensor, *, min_confidence: float = 0.75, min_overlap: float = 0.25
) -> List[GeneratedQuestion]:
    """Questions with true answers from known ``objects`` (normalised frame) and ``cameras``.

    Per camera: "is A left of B" and "is A right of B" and "which is closer, A or B" for every
    ordered pair. Once (camera 0; the answers do not depend on the camera): "which is larger, A or
    B" for every ordered pair and "what is above X" for every object. A question is kept only when
    its true answer is clear, i.e. its ground-truth confidence (module docstring) is at least
    ``min_confidence`` (default 0.75: the centres are separated by at least half the sum of the
    half extents, or the sizes differ by 25 %), so the ground floor, which spans the whole image,
    is not asked to be left of anything.
    """
    check_finite_number(min_confidence, "min_confidence", lo=0.5, hi=1)
    by_name = {o.name: o for o in objects}
    names = list(by_name)
    out: List[GeneratedQuestion] = []

    def add(q: SpatialQuestion, view: int) -> None:
        ans = answer_spatial(q, by_name, cameras.c2w[view], cameras.Ks[view], up, min_overlap=min_overlap)
        if ans.confidence >= min_confidence:
            out.append(GeneratedQuestion(SpatialQuestion(q.kind, q.objects, q.to_text()), view, ans.answer, ans.objects))

    for view in range(len(cameras)):
        for a, b in itertools.permutations(names, 2):
            for kind in ("left_of", "right_of", "closer"):
                add(SpatialQuestion(kind, (a, b)), view)
    for a, b in itertools.permutations(names, 2):
        add(SpatialQuestion("larger", (a, b)), 0)
    for x in names:
        add(SpatialQuestion("above", (x,)), 0)
    return out


def score_spatial(questions: Sequence[GeneratedQuestion], answer: Callable[[SpatialQuestion, int], SpatialAnswer]) -> Dict[str, Any]:
    """Accuracy of ``answer(question, view)`` on generated questions.

    Each question is asked through its text (parsed with :func:`parse_question`, so the grammar is
    exercised too). A yes/no or which-question is right when the answer string matches; an
    "above" question when the *set* of names matches. A :class:`QueryNotFoundError` counts as a
    wrong answer (``not_found`` counts them).

    Returns:
        ``{"accuracy", "num_questions", "num_correct", "not_found", "by_kind": {kind: {"accuracy", "num"}}}``.
    """
    if not questions:
        raise InputError("score_spatial: no questions to score")
    correct, not_found = 0, 0
    by_kind: Dict[str, List[int]] = {}
    for g in questions:
        q = parse_question(g.question.text or g.question.to_text())
        try:
            got = answer(q, g.view)
            ok = set(got.objects) == set(g.objects) if q.kind == "above" else name_key(got.answer) == name_key(g.answer)
        except QueryNotFoundError:
            ok = False
            not_found += 1
        correct += int(ok)
        by_kind.setdefault(q.kind, [0, 0])
        by_kind[q.kind][0] += int(ok)
        by_kind[q.kind][1] += 1
    return {
        "accuracy": correct / len(questions),
        "num_questions": len(questions),
        "num_correct": correct,
        "not_found": not_found,
        "by_kind": {k: {"accuracy": c / n, "num": n} for k, (c, n) in by_kind.items()},
    }
