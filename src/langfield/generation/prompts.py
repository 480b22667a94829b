"""Scene-aware prompt rewriting: a short prompt becomes a descriptive caption of what a scene holds.

The idea of DALL-E 3 (Betker et al., "Improving Image Generation with Better Captions", 2023):
a text-to-image model trained on *descriptive* captions follows prompts better when the user's
short prompt is expanded into such a caption before sampling. Here the expansion is grounded in
what a langfield scene knows (its objects, their colours and 3D positions), and the spatial
relations are read from a chosen camera.

**The caption grammar** (one grammar for the toy world's captions and for the rewrites; the toy
world's caption code should call :func:`descriptive_caption` / :func:`short_caption`):

* Descriptive: the objects *from left to right in the image*, each ``"<article> <colour> <name>"``,
  joined by ``" left of "``, then ``" on <article> <floor> floor"`` when the floor is known::

      a red sphere on a checkered floor
      a red sphere left of a blue box on a checkered floor
      an orange cone left of a red sphere left of a white cylinder on a plain floor

  The article is ``"an"`` before a vowel letter (``"an orange cone"``), else ``"a"``. Words are
  lower case; there is no final period.
* Short: the object names only, grouped by name in order of first appearance from the left, with
  number words: ``"a sphere"``, ``"a sphere and a box"``, ``"two spheres and a cone"``,
  ``"a cone, a sphere and a box"``.

**Which objects a rewrite describes** (:func:`rewrite_prompt`, template style): the prompt is
read as lower-case words. An *object mention* is an object name of the scene (``"sphere"``, a
multi-word name such as ``"coffee mug"``) or of :data:`SHAPE_WORDS`, its plural (``"spheres"``, ``"boxes"``) or a synonym
(:data:`SYNONYMS`: ``"ball"`` -> sphere, ``"cube"`` / ``"block"`` -> box); colour words directly
before it narrow it (``"red sphere"``); a colour word on its own is a colour-only mention
(``"the red one"``). Each mention selects every object of the scene that matches it; the caption
describes the selected objects (in front of the camera), in the scene's left-to-right order.
A prompt without mentions (``"a scene"``, ``"objects on the floor"``, ``""``) describes every
object in front of the camera. Counts in the prompt are not checked (``"two spheres"`` selects
all spheres).

Errors (:class:`~langfield._checks.InputError`, naming the prompt and listing the scene's
objects): a mention that matches no object (``"a cone"`` in a scene without cones, ``"a red
sphere"`` when the sphere is blue), a mentioned object behind the camera, and, with
``unknown="error"`` (the default), a word outside the vocabulary (object names, colours,
:data:`GENERIC_WORDS`, :data:`FUNCTION_WORDS`), because an unknown word is most likely an object
the scene does not have (``"a chair"``). ``unknown="ignore"`` drops such words instead (the
documented fallback: with no mention left, the whole scene is described).

**Left and right** come from the camera: an object is projected with the OpenCV ``c2w`` (x right,
y down, z forward; ``docs/conventions.md``) to ``u = x / z`` (the image column up to the
intrinsics, principal point at the centre); objects are ordered by increasing ``u``. Objects with
``z <= 0`` are behind the camera. The image borders are not known here, so an object in front of
the camera but outside the field of view still counts as visible.

The LLM path (``style="llm"``) hands the scene facts (objects left to right with colours, 3D
positions, optional sizes, pairwise relations, the template caption) to a local causal language
model as a system prompt and returns its first line (greedy decoding).
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from langfield._checks import InputError, check_choice, check_int_range
from langfield.pretrained.resolver import explain_load_errors, resolve_pretrained

__all__ = [
    "BASIC_COLORS",
    "COLOR_WORDS",
    "FUNCTION_WORDS",
    "GENERIC_WORDS",
    "SHAPE_WORDS",
    "SYNONYMS",
    "SceneDescription",
    "SceneObject",
    "color_name",
    "color_name_of_pixels",
    "descriptive_caption",
    "objects_left_to_right",
    "pluralize",
    "rewrite_prompt",
    "scene_facts",
    "short_caption",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Colour words recognised in prompts besides the scene's own colours (a colour absent from the
#: scene then gets a "no such object" error rather than an "unknown word" one).
COLOR_WORDS = frozenset(
    "red orange yellow green cyan blue purple white black gray grey pink brown magenta violet teal".split()
)
#: Named reference colours (sRGB in [0, 1]) that :func:`color_name` chooses from: Berlin and Kay's
#: eleven basic colour terms plus cyan (the toy world's palette names are a subset).
BASIC_COLORS: Dict[str, Tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.10), "orange": (0.98, 0.55, 0.05), "yellow": (0.95, 0.88, 0.12),
    "green": (0.15, 0.65, 0.20), "cyan": (0.05, 0.75, 0.85), "blue": (0.12, 0.28, 0.85),
    "purple": (0.50, 0.20, 0.70), "pink": (0.98, 0.62, 0.75), "brown": (0.50, 0.30, 0.12),
    "white": (0.95, 0.95, 0.95), "gray": (0.50, 0.50, 0.50), "black": (0.05, 0.05, 0.05),
}  # fmt: skip
#: Weight of CIELAB lightness against the two chroma axes in :func:`color_name` (shading changes
#: an object's lightness far more than its hue).
LIGHTNESS_WEIGHT = 0.5
#: Words that ask for the whole scene.
GENERIC_WORDS = frozenset(
    "scene scenes object objects thing things shape shapes item items everything something stuff "
    "image picture photo photograph render rendering view".split()
)
#: Words carrying no object (articles, numbers, relations, the floor, common glue).
FUNCTION_WORDS = frozenset(
    "a an the some one two three four few several many all every each of and or with without on in at "
    "by to from near next beside behind front back left right above below under over between "
    "its their there here is are it this that these those one ones floor ground checkered striped plain "
    "standing sitting lying placed resting".split()
)
#: Object names known without a scene (the toy world's shapes): a mention of one the scene lacks
#: is a "no such object" error rather than an "unknown word" one.
SHAPE_WORDS: Tuple[str, ...] = ("sphere", "box", "cylinder", "cone")
#: Synonyms of the toy world's shape names.
SYNONYMS: Dict[str, str] = {
    "ball": "sphere", "balls": "sphere", "cube": "box", "cubes": "box", "block": "box", "blocks": "box",
}  # fmt: skip

_NUMBER_WORDS = {1: "a", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}


# ----------------------------------------------------------------------------- scene description


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene, as a caption sees it.

    Attributes:
        name: what the object is (``"sphere"``, ``"box"``, ``"coffee mug"``), lower-case words.
        color: its colour name, one word (``"red"``).
        position: ``(x, y, z)`` of its centre in world coordinates (the frame of ``c2w``).
        size: optional characteristic size in world units (the LLM path states it; the template
            grammar does not use it).
    """

    name: str
    color: str
    position: Tuple[float, float, float]
    size: Optional[float] = None

    def __post_init__(self) -> None:
        for field_name in ("name", "color"):
            value = getattr(self, field_name)
            if not isinstance(value, str) or not _words(value):
                raise InputError(f"SceneObject.{field_name}: expected a non-empty name of letters, got {value!r}")
            object.__setattr__(self, field_name, " ".join(_words(value)))
        if " " in self.color:
            raise InputError(f"SceneObject.color: expected one colour word (e.g. 'red'), got {self.color!r}")
        pos = tuple(float(v) for v in np.asarray(self.position, dtype=np.float64).reshape(-1))
        if len(pos) != 3 or not all(np.isfinite(pos)):
            raise InputError(f"SceneObject.position: expected 3 finite world coordinates, got {self.position!r}")
        object.__setattr__(self, "position", pos)
        if self.size is not None:
            size = float(self.size)
            if not np.isfinite(size) or size <= 0:
                raise InputError(f"SceneObject.size: expected a positive size or None, got {self.size!r}")
            object.__setattr__(self, "size", size)

    @property
    def label(self) -> str:
        """``"<colour> <name>"``, e.g. ``"red sphere"``."""
        return f"{self.color} {self.name}"


@dataclass(frozen=True)
class SceneDescription:
    """What a scene holds, for captions: its objects and (optionally) its floor.

    Attributes:
        objects: the :class:`SceneObject` s (at least one).
        floor: the floor's texture word (``"checkered"`` -> ``"on a checkered floor"``), or
            ``None`` (no floor phrase).
    """

    objects: Tuple[SceneObject, ...]
    floor: Optional[str] = None

    def __post_init__(self) -> None:
        objects = tuple(self.objects)
        if not objects:
            raise InputError("SceneDescription.objects: a scene needs at least one object")
        for i, obj in enumerate(objects):
            if not isinstance(obj, SceneObject):
                raise InputError(f"SceneDescription.objects[{i}]: expected a SceneObject, got {type(obj).__name__}")
        object.__setattr__(self, "objects", objects)
        if self.floor is not None:
            if not isinstance(self.floor, str) or not _words(self.floor):
                raise InputError(f"SceneDescription.floor: expected a texture word or None, got {self.floor!r}")
            object.__setattr__(self, "floor", " ".join(_words(self.floor)))


# ----------------------------------------------------------------------------- colour names


def _lab(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(np.clip(rgb, 0.0, 1.0).reshape(-1, 1, 3)).reshape(-1, 3)


def color_name(rgb: Any, names: Optional[Sequence[str]] = None) -> str:
    """The reference colour (:data:`BASIC_COLORS`, or the subset ``names``) nearest to ``rgb``.

    ``rgb``: three sRGB values in ``[0, 1]``. Distance: CIELAB (D65) with lightness weighted by
    :data:`LIGHTNESS_WEIGHT`, so a shaded red stays "red" while white, gray and black (which
    differ in lightness only) stay apart.

    >>> color_name((0.9, 0.1, 0.1)), color_name((0.1, 0.2, 0.6)), color_name((0.9, 0.9, 0.92))
    ('red', 'blue', 'white')
    >>> color_name((0.5, 0.1, 0.08))  # a dark red is a brown: read objects on their lit side
    'brown'
    """
    value = np.asarray(rgb, dtype=np.float64).reshape(-1)
    if value.shape != (3,) or not np.all(np.isfinite(value)):
        raise InputError(f"color_name: expected three finite sRGB values in [0, 1], got {rgb!r}")
    table = BASIC_COLORS if names is None else {n: BASIC_COLORS[check_choice(n, "color_name: names", BASIC_COLORS)] for n in names}
    if not table:
        raise InputError("color_name: names is empty")
    keys = list(table)
    ref = _lab(np.asarray([table[k] for k in keys], dtype=np.float64))
    lab = _lab(value[None])
    w = np.array([LIGHTNESS_WEIGHT, 1.0, 1.0])
    return keys[int(np.argmin((((ref - lab) * w) ** 2).sum(axis=1)))]


def color_name_of_pixels(pixels: Any, names: Optional[Sequence[str]] = None) -> str:
    """The colour name of an object seen in ``pixels`` ``[K, 3]`` (sRGB in ``[0, 1]``, K >= 1).

    Shading darkens the side turned away from the light, so the object's own colour is read on
    its lit side: the per-channel median of the pixels whose luminance (Rec. 709 weights) lies
    between its 75th and 95th percentiles (the brightest quarter, without the top 5 %, where
    highlights and bleeding from a bright background sit), then :func:`color_name`.
    """
    px = torch.as_tensor(pixels, dtype=torch.float64).detach().cpu().reshape(-1, 3) if not isinstance(pixels, np.ndarray) else torch.from_numpy(np.asarray(pixels, dtype=np.float64).reshape(-1, 3))
    if px.shape[0] == 0 or not bool(torch.isfinite(px).all()):
        raise InputError(f"color_name_of_pixels: expected [K, 3] finite pixels with K >= 1, got {tuple(px.shape)}")
    luma = px @ torch.tensor([0.2126, 0.7152, 0.0722], dtype=torch.float64)
    lo, hi = torch.quantile(luma, torch.tensor([0.75, 0.95], dtype=torch.float64))
    band = (luma >= lo) & (luma <= hi)
    lit = px[band] if bool(band.any()) else px[luma >= lo]  # few pixels: the band can fall between them
    return color_name(lit.median(dim=0).values.numpy(), names)


# ----------------------------------------------------------------------------- the grammar


def _words(text: str) -> List[str]:
    return re.findall(r"[a-z]+", text.lower())


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def pluralize(name: str) -> str:
    """English plural of the last word: ``box -> boxes``, ``sphere -> spheres``, ``coffee mug -> coffee mugs``.

    >>> pluralize("box"), pluralize("sphere"), pluralize("coffee mug")
    ('boxes', 'spheres', 'coffee mugs')
    """
    if re.search(r"(s|x|z|ch|sh)$", name):
        return name + "es"
    if re.search(r"[^aeiou]y$", name):
        return name[:-1] + "ies"
    return name + "s"


def descriptive_caption(objects: Sequence[Tuple[str, str]], floor: Optional[str] = None) -> str:
    """The descriptive caption of ``(colour, name)`` pairs given LEFT TO RIGHT (grammar: module docstring).

    >>> descriptive_caption([("red", "sphere"), ("blue", "box")], "checkered")
    'a red sphere left of a blue box on a checkered floor'
    >>> descriptive_caption([("orange", "cone")])
    'an orange cone'
    """
    if not objects:
        raise InputError("objects: a caption needs at least one (colour, name) pair")
    parts = []
    for colour, name in objects:
        phrase = f"{colour} {name}".strip()
        parts.append(f"{_article(phrase)} {phrase}")
    text = " left of ".join(parts)
    if floor:
        text += f" on {_article(floor)} {floor} floor"
    return text


def short_caption(names: Sequence[str]) -> str:
    """The short caption of object ``names`` given left to right (grammar: module docstring).

    >>> short_caption(["sphere"]), short_caption(["sphere", "box", "sphere"])
    ('a sphere', 'two spheres and a box')
    """
    if not names:
        raise InputError("names: a caption needs at least one object name")
    counts: Dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    parts = []
    for name, n in counts.items():
        if n == 1:
            parts.append(f"{_article(name)} {name}")
        else:
            parts.append(f"{_NUMBER_WORDS.get(n, str(n))} {pluralize(name)}")
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


# ----------------------------------------------------------------------------- camera


def _camera(c2w: Any) -> Tuple[np.ndarray, np.ndarray]:
    """``(R [3, 3], t [3])`` of an OpenCV ``c2w`` ``[3, 4]`` or ``[4, 4]`` (tensor or array)."""
    if isinstance(c2w, torch.Tensor):
        c2w = c2w.detach().cpu().double().numpy()
    try:
        mat = np.asarray(c2w, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"c2w: expected a [3, 4] or [4, 4] camera-to-world matrix, got {type(c2w).__name__}") from None
    if mat.shape not in ((3, 4), (4, 4)):
        raise InputError(f"c2w: expected a [3, 4] or [4, 4] camera-to-world matrix (OpenCV), got shape {mat.shape}")
    if not np.isfinite(mat).all():
        raise InputError("c2w: contains NaN or inf")
    rot = mat[:3, :3]
    if np.abs(rot.T @ rot - np.eye(3)).max() > 1e-3 or abs(np.linalg.det(rot) - 1.0) > 1e-3:
        raise InputError("c2w: its rotation part is not a rotation (orthonormal, det +1)")
    return rot, mat[:3, 3]


def objects_left_to_right(scene: SceneDescription, c2w: Any) -> List[Tuple[SceneObject, float, float]]:
    """The scene's objects in front of the camera, left to right: ``(object, u, depth)`` each.

    ``u = x / z`` and ``depth = z`` in the OpenCV camera frame of ``c2w`` (x right, z forward);
    objects with ``z <= 0`` (behind the camera) are left out. Ties in ``u`` keep scene order.
    """
    rot, centre = _camera(c2w)
    out = []
    for obj in scene.objects:
        x, _, z = rot.T @ (np.asarray(obj.position) - centre)
        if z > 0:
            out.append((obj, float(x / z), float(z)))
    out.sort(key=lambda item: item[1])
    return out


# ----------------------------------------------------------------------------- prompt parsing


@dataclass(frozen=True)
class _Mention:
    words: str  # as written, for messages
    name: Optional[str]  # canonical object name, or None (colour only)
    color: Optional[str]


def _parse_mentions(prompt: str, scene: SceneDescription, unknown: str) -> List[_Mention]:
    tokens = _words(prompt)
    phrases: Dict[Tuple[str, ...], str] = {}
    for name in SHAPE_WORDS + tuple(obj.name for obj in scene.objects):
        phrases[tuple(name.split())] = name
        phrases[tuple(pluralize(name).split())] = name
    for synonym, name in SYNONYMS.items():
        phrases.setdefault((synonym,), name)
    colours = COLOR_WORDS | {obj.color for obj in scene.objects}
    floor_words = set(_words(scene.floor)) if scene.floor else set()
    longest = max(len(p) for p in phrases)
    mentions: List[_Mention] = []
    pending: List[str] = []  # colour words waiting for a noun
    unknown_words: List[str] = []
    i = 0

    def flush_colours() -> None:
        for colour in pending:
            mentions.append(_Mention(colour, None, colour))
        pending.clear()

    while i < len(tokens):
        for span in range(min(longest, len(tokens) - i), 0, -1):
            key = tuple(tokens[i : i + span])
            if key in phrases:
                colour = pending[-1] if pending else None
                written = " ".join(([colour] if colour else []) + list(key))
                # earlier stacked colour words ("red blue sphere") stay colour-only mentions
                for extra in pending[:-1]:
                    mentions.append(_Mention(extra, None, extra))
                pending.clear()
                mentions.append(_Mention(written, phrases[key], colour))
                i += span
                break
        else:
            word = tokens[i]
            if word in colours:
                pending.append(word)
            else:
                flush_colours()
                if word not in GENERIC_WORDS and word not in FUNCTION_WORDS and word not in floor_words:
                    unknown_words.append(word)
            i += 1
    flush_colours()
    if unknown_words and unknown == "error":
        have = ", ".join(obj.label for obj in scene.objects)
        raise InputError(
            f"prompt {prompt!r}: unknown word(s) {', '.join(repr(w) for w in dict.fromkeys(unknown_words))}; "
            f"the scene holds {have}. Name those objects (or their colours), use a generic word such as "
            f"'scene', or pass unknown='ignore' to drop unknown words"
        )
    return mentions


def _select(prompt: str, scene: SceneDescription, ordered, unknown: str) -> List[Tuple[SceneObject, float, float]]:
    mentions = _parse_mentions(prompt, scene, unknown)
    if not mentions:
        if not ordered:
            raise InputError(f"prompt {prompt!r}: no object of the scene is in front of the camera (check c2w)")
        return ordered
    have = ", ".join(obj.label for obj in scene.objects)
    chosen: set = set()
    for m in mentions:
        matches = [
            k for k, obj in enumerate(scene.objects)
            if (m.name is None or obj.name == m.name) and (m.color is None or obj.color == m.color)
        ]  # fmt: skip
        if not matches:
            raise InputError(f"prompt {prompt!r}: mentions {m.words!r}, but the scene holds {have}")
        chosen.update(matches)
    visible = {id(obj) for obj, _, _ in ordered}
    behind = [scene.objects[k].label for k in sorted(chosen) if id(scene.objects[k]) not in visible]
    if behind:
        raise InputError(
            f"prompt {prompt!r}: {', '.join(behind)} is behind the camera (c2w, OpenCV: +z looks forward); "
            f"choose a camera that sees it"
        )
    picked = {id(scene.objects[k]) for k in chosen}
    return [item for item in ordered if id(item[0]) in picked]


# ----------------------------------------------------------------------------- facts and LLM


def scene_facts(scene: SceneDescription, c2w: Any) -> str:
    """The scene as plain-text facts seen from ``c2w``: objects left to right, positions, relations.

    >>> scene = SceneDescription((SceneObject("box", "blue", (1, 0, 0)), SceneObject("sphere", "red", (-1, 0, 0))))
    >>> c2w = [[1, 0, 0, 0], [0, 0, 1, -4], [0, -1, 0, 0]]  # at y = -4 looking along +y, x right
    >>> print(scene_facts(scene, c2w))
    Objects from left to right as seen by the camera:
    1. a red sphere at world position (-1.00, 0.00, 0.00), 4.00 units from the camera
    2. a blue box at world position (1.00, 0.00, 0.00), 4.00 units from the camera
    Relations: the red sphere is left of the blue box.
    """
    ordered = objects_left_to_right(scene, c2w)
    lines = ["Objects from left to right as seen by the camera:"]
    for k, (obj, _, depth) in enumerate(ordered, start=1):
        pos = ", ".join(f"{v:.2f}" for v in obj.position)
        size = f", size {obj.size:.2f}" if obj.size is not None else ""
        where = f"at world position ({pos}){size}, {depth:.2f} units from the camera"
        lines.append(f"{k}. {_article(obj.label)} {obj.label} {where}")
    relations = [f"the {a.label} is left of the {b.label}" for (a, _, _), (b, _, _) in zip(ordered, ordered[1:])]
    if relations:
        lines.append("Relations: " + "; ".join(relations) + ".")
    hidden = [obj.label for obj in scene.objects if all(obj is not o for o, _, _ in ordered)]
    if hidden:
        lines.append("Behind the camera (not visible): " + ", ".join(hidden) + ".")
    if scene.floor:
        lines.append(f"Floor: {_article(scene.floor)} {scene.floor} floor.")
    return "\n".join(lines)


@lru_cache(maxsize=2)
def _load_causal_lm(path: str, device: str) -> Tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_pretrained(
        path, what="language model (transformers causal LM)", allow_download=False,
        hint="style='template' needs no model.",
    )  # fmt: skip
    with explain_load_errors(resolved):
        tokenizer = AutoTokenizer.from_pretrained(resolved.name_or_path, **resolved.from_pretrained_kwargs)
        model = AutoModelForCausalLM.from_pretrained(resolved.name_or_path, **resolved.from_pretrained_kwargs)
    return tokenizer, model.to(device).eval()


_SYSTEM = (
    "You rewrite a short image prompt into ONE descriptive caption of the scene below, in the style "
    "'a red sphere left of a blue box on a checkered floor'. Use only these facts; name colours and "
    "left/right relations exactly as given; answer with the caption only, on one line.\n\n{facts}\n\n"
    "A caption that follows the facts: {template}"
)


def _llm_rewrite(prompt: str, facts: str, template: str, llm_dir: PathLike, device: str, max_new_tokens: int) -> str:
    tokenizer, model = _load_causal_lm(str(os.fspath(llm_dir)), device)
    system = _SYSTEM.format(facts=facts, template=template)
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt or "the scene"}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = f"{system}\n\nPrompt: {prompt}\nCaption:"
    enc = tokenizer(text, return_tensors="pt")
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    length = int(enc["input_ids"].shape[1])
    if limit is not None and length + max_new_tokens > int(limit):
        raise InputError(
            f"llm_dir {llm_dir}: the request is {length} tokens + {max_new_tokens} new ones, more than the model's "
            f"{limit} positions; use a model with a longer context or a smaller max_new_tokens"
        )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        out = model.generate(
            input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
            max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
        )  # fmt: skip
    answer = tokenizer.decode(out[0, length:], skip_special_tokens=True)
    lines = [line.strip().strip("\"'").strip() for line in answer.splitlines()]
    first = next((line for line in lines if line), "")
    if not first:
        warnings.warn(f"the language model in {llm_dir} returned no text; using the template caption", stacklevel=3)
        return template
    return first


# ----------------------------------------------------------------------------- the entry point


def rewrite_prompt(
    prompt: str,
    scene: SceneDescription,
    c2w: Any,
    *,
    style: str = "template",
    unknown: str = "error",
    llm_dir: Optional[PathLike] = None,
    device: str = "cpu",
    max_new_tokens: int = 48,
) -> str:
    """Expand ``prompt`` into a descriptive caption of ``scene`` as seen from ``c2w``.

    Args:
        prompt: the user's short prompt (``"a sphere and a box"``, ``"the red one"``, ``"a scene"``).
        scene: what the scene holds (:class:`SceneDescription`).
        c2w: ``[3, 4]`` or ``[4, 4]`` OpenCV camera-to-world pose (tensor or array) that decides
            left and right.
        style: ``"template"`` (default): the caption grammar over the objects the prompt mentions
            (module docstring); ``"llm"``: a local causal language model writes the caption from
            the scene facts (:func:`scene_facts`) and the template caption.
        unknown: ``"error"`` (default) or ``"ignore"``: what the template style does with a word
            outside its vocabulary (module docstring). The LLM style reads the prompt as it is.
        llm_dir: ``style="llm"``: a transformers causal-LM directory (or a hub id already in the
            local cache), loaded with ``AutoTokenizer`` / ``AutoModelForCausalLM`` through
            :func:`~langfield.pretrained.resolver.resolve_pretrained` (never downloaded).
        device: where the language model runs.
        max_new_tokens: the most tokens the language model may write.

    Returns:
        The caption. With ``style="llm"``: the model's first non-empty output line (greedy
        decoding), or the template caption (with a warning) when the model writes nothing.

    Raises:
        InputError: a mention that matches no object, a mentioned object behind the camera, an
            unknown word (``unknown="error"``), no object in front of the camera, a bad ``c2w``,
            ``style="llm"`` without ``llm_dir``, a request longer than the model's context.
        PretrainedUnavailableError: ``llm_dir`` is not a loadable causal-LM directory.

    >>> scene = SceneDescription(
    ...     (SceneObject("box", "blue", (1.0, 0.0, 0.3)), SceneObject("sphere", "red", (-1.0, 0.0, 0.3))),
    ...     floor="checkered",
    ... )
    >>> front = [[1, 0, 0, 0], [0, 0, 1, -4], [0, -1, 0, 0.5]]  # at y = -4, looking along +y
    >>> rewrite_prompt("a sphere and a box", scene, front)
    'a red sphere left of a blue box on a checkered floor'
    >>> back = [[-1, 0, 0, 0], [0, 0, -1, 4], [0, -1, 0, 0.5]]  # at y = +4, looking along -y
    >>> rewrite_prompt("a scene", scene, back)
    'a blue box left of a red sphere on a checkered floor'
    >>> rewrite_prompt("a ball", scene, front)
    'a red sphere on a checkered floor'
    """
    if not isinstance(prompt, str):
        raise InputError(f"prompt: expected a string, got {type(prompt).__name__}")
    if not isinstance(scene, SceneDescription):
        raise InputError(f"scene: expected a SceneDescription, got {type(scene).__name__}")
    check_choice(style, "style", ("template", "llm"))
    check_choice(unknown, "unknown", ("error", "ignore"))
    ordered = objects_left_to_right(scene, c2w)
    if style == "template":
        chosen = _select(prompt, scene, ordered, unknown)
        return descriptive_caption([(obj.color, obj.name) for obj, _, _ in chosen], scene.floor)
    if llm_dir is None:
        raise InputError("llm_dir: style='llm' needs a local transformers causal-LM directory")
    max_new_tokens = check_int_range(max_new_tokens, "max_new_tokens", lo=1)
    if not ordered:
        raise InputError(f"prompt {prompt!r}: no object of the scene is in front of the camera (check c2w)")
    template = descriptive_caption([(obj.color, obj.name) for obj, _, _ in ordered], scene.floor)
    return _llm_rewrite(prompt, scene_facts(scene, c2w), template, llm_dir, device, max_new_tokens)
