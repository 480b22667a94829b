"""Dense 2D teachers a language field is distilled from, behind one interface.

* :class:`~langfield.language.teachers.base.DenseTeacher` — ``dense_features(image, view_key,
  semantics) -> [H, W, E]`` and ``embed_texts``.
* :mod:`~langfield.language.teachers.clip` — a real CLIP-family model (LERF's crop pyramid or
  region pooling over mask proposals).
* :mod:`~langfield.language.teachers.simulated` — ground-truth labels corrupted like CLIP's dense
  features, for offline benchmarks (always reported as simulated).
* :func:`load_teacher` — either one from a CLI string or the spec a trained field stored.
"""

from langfield.language.teachers.base import DenseTeacher, check_text_queries
from langfield.language.teachers.loading import SIMULATED, load_teacher

__all__ = ["DenseTeacher", "SIMULATED", "check_text_queries", "load_teacher"]
