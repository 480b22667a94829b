"""The 2D "teacher" a language field is distilled from: dense per-pixel embeddings plus text.

A teacher turns one training image into a dense ``[H, W, E]`` map of unit-norm embeddings that
live in the same space as its text embeddings, so that a text query can be scored against any
pixel (or, after distillation, against any rendered 3D point). Two families implement it:

- :class:`langfield.language.teachers.clip.CLIPDenseTeacher`: a real CLIP-family model
  (LERF-style multi-scale crop pyramid, or region pooling over mask proposals).
- :class:`langfield.language.teachers.simulated.SimulatedTeacher`: a *simulated* teacher for
  offline benchmarks (ground-truth label text embeddings, corrupted the way CLIP's dense
  features are). Everything that reports its numbers must say "simulated".

The language-field trainer, RSR, CSE and the query API only talk to this interface.
:func:`check_text_queries` (defined beside the text encoder in
:mod:`langfield.pretrained.text`) validates every text query.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional, Sequence

from torch import Tensor

from langfield.pretrained.text import check_text_queries

__all__ = ["DenseTeacher", "check_text_queries"]


class DenseTeacher(ABC):
    """Dense 2D language features for images and embeddings for texts, in one space.

    Attributes:
        name: short identifier used in cache keys, logs and benchmark JSON.
        simulated: True for teachers that are not a real vision-language model.
    """

    name: str = "teacher"
    simulated: bool = False

    def spec(self) -> dict:
        """JSON-able description stored with a trained language field, from which
        :func:`langfield.language.teachers.load_teacher` rebuilds the teacher (its text side
        embeds the queries at query time). Subclasses add what they need."""
        return {"kind": type(self).__name__, "name": self.name}

    @property
    @abstractmethod
    def embedding_dim(self) -> int:
        """``E``: size of every embedding this teacher returns."""

    @abstractmethod
    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """``T`` strings -> ``[T, E]`` float32 CPU, unit norm. Empty list/strings raise ``ValueError``."""

    @abstractmethod
    def dense_features(
        self, image: Tensor, *, view_key: str, semantics: Optional[Tensor] = None, camera: Optional[Tensor] = None
    ) -> Tensor:
        """Dense features of one image.

        Args:
            image: ``[H, W, 3]`` uint8 RGB (composited over the dataset's background).
            view_key: stable identifier of the view (e.g. ``"train/12"``); simulated teachers seed
                their per-view corruption with it, real teachers may use it for caching.
            semantics: ``[H, W]`` int64 ground-truth label ids; only simulated teachers read it
                (a real teacher ignores it).
            camera: ``[3, 4]`` camera-to-world (OpenCV) of the view; simulated teachers whose
                mistakes depend on the viewing direction read it (a real teacher ignores it).

        Returns:
            ``[H, W, E]`` float32 CPU, unit norm per pixel.
        """
