"""Open-vocabulary queries: paraphrases and synonyms that were never label strings.

A language field distilled from a teacher whose features are built from label *names* (the
SIMULATED teachers) answers those exact names trivially well. Users type other words: "ball" for
a sphere, "a round red thing", "the floor". :func:`paraphrase_queries` gives, for every label, a
fixed list of such queries (hand-written for the built-in procedural scene's labels, templated for
any other label), so a benchmark can segment with query set ``k`` (the ``k``-th paraphrase of every
label) instead of the label names and report how much is lost.

The background label keeps its name: it is the "nothing here" class, not something users ask for.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

__all__ = ["DISTRACTOR_QUERIES", "PARAPHRASES", "NUM_PARAPHRASES", "paraphrase_queries", "paraphrase_set"]

#: Number of paraphrases per label (query sets).
NUM_PARAPHRASES = 3

#: Hand-written paraphrases of the procedural scene's labels (and a few common object names):
#: a synonym, a description by shape, a description in context. None is a label string.
PARAPHRASES: Dict[str, List[str]] = {
    "ground": ["the floor", "a flat surface underneath", "the ground plane the objects stand on"],
    "sphere": ["a ball", "a round ball-shaped thing", "an orb"],
    "box": ["a cube", "a crate", "a square block"],
    "cylinder": ["a can", "a round pillar", "a tube standing upright"],
    "ellipsoid": ["an egg", "an oval blob", "an egg-shaped object"],
    "cone": ["a traffic cone", "a pointed cone-shaped object", "a pyramid with a round base"],
    "chair": ["a seat", "something to sit on", "a stool"],
    "table": ["a desk", "a flat table top", "a dining table"],
}

#: Queries for objects that are in none of the built-in scenes: localization must answer "not
#: here" for them (:func:`langfield.language.evaluation.evaluate_semantics`, distractors).
DISTRACTOR_QUERIES = ("a teapot", "a dog", "a bicycle", "a laptop", "a banana", "a potted plant")

_TEMPLATES = ("a {} in the scene", "the {} object", "something that looks like a {}")


def paraphrase_queries(labels: Sequence[str], background: str = "background") -> Dict[str, List[str]]:
    """``{label: [NUM_PARAPHRASES queries]}`` for every label.

    Known labels (:data:`PARAPHRASES`, case-insensitive) get their hand-written paraphrases; others
    get templates around the name ("a mug in the scene", ...), which still differ from the label
    string; the ``background`` label maps to itself ``NUM_PARAPHRASES`` times.
    """
    out: Dict[str, List[str]] = {}
    for name in labels:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"labels must be non-empty strings, got {name!r}")
        key = name.strip().lower()
        if name == background:
            out[name] = [name] * NUM_PARAPHRASES
        elif key in PARAPHRASES:
            out[name] = list(PARAPHRASES[key])
        else:
            out[name] = [t.format(name) for t in _TEMPLATES]
    return out


def paraphrase_set(labels: Sequence[str], k: int, background: str = "background") -> List[str]:
    """Query set ``k``: the ``k``-th paraphrase of every label, in label order."""
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < NUM_PARAPHRASES:
        raise ValueError(f"k must be an int in [0, {NUM_PARAPHRASES}), got {k!r}")
    table = paraphrase_queries(labels, background)
    return [table[name][k] for name in labels]
