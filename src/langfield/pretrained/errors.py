"""The one error every pretrained-model loader raises, and the messages that say how to get the model.

:class:`PretrainedUnavailableError` subclasses :class:`FileNotFoundError`, so code (and the CLI)
that catches ``FileNotFoundError`` keeps working. Its message always names the model and says
what to do: which directory or cache was searched, whether ``HF_HUB_OFFLINE`` is set, the
``hf download`` command to run on a machine with network access, and the caller's own
alternative (for instance ``--teacher simulated`` or ``--masks superpixels``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Union

from langfield.pretrained.hub import OFFLINE_ENV_VARS, hub_cache_dir, hub_cache_source, hub_offline

__all__ = [
    "PretrainedUnavailableError",
    "bad_local_dir_message",
    "hub_model_missing_message",
    "short_error",
    "with_hint",
]


class PretrainedUnavailableError(FileNotFoundError):
    """A pretrained model is not available on this machine, or is not a valid model of its kind.

    Attributes:
        model_name: the hub id or directory as the caller gave it.
    """

    def __init__(self, message: str, *, model_name: str = "") -> None:
        super().__init__(message)
        self.model_name = model_name


def short_error(err: BaseException, limit: int = 300) -> str:
    """``"TypeName: first words of the message..."`` on one line."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


def _offline_status() -> str:
    set_vars = [f"{key}={os.environ[key].strip()}" for key in OFFLINE_ENV_VARS if os.environ.get(key, "").strip()]
    if hub_offline():
        return f"{' and '.join(set_vars)} is set, so nothing is downloaded"
    return "HF_HUB_OFFLINE is not set"


def with_hint(message: str, hint: str) -> str:
    """``message`` with the caller's alternative ``hint`` on its own last line (if any)."""
    return f"{message}\n{hint}" if hint else message


def _files_text(required_files: Sequence[str]) -> str:
    return " or ".join(required_files)


def hub_model_missing_message(name: str, what: str, reason: str = "", hint: str = "") -> str:
    """A hub id that is neither a local directory nor in the local Hugging Face cache.

    Args:
        name: the hub id (``org/name``).
        what: the kind of model, e.g. ``"vision-language model"``.
        reason: why it was not downloaded when the hub is not switched off (downloads not
            allowed, the download failed), or an extra note.
        hint: the caller's alternative, appended on its own line.
    """
    cache = hub_cache_dir()
    source = hub_cache_source()
    where = "the default location" if source == "default" else f"from {source}"
    local_name = name.rstrip("/").split("/")[-1] or "model"
    message = (
        f"{what} {name!r} is not a local directory and is not in the local Hugging Face cache.\n"
        f"  cache searched: {cache} ({where}; set HF_HUB_CACHE or HF_HOME to use another one)\n"
        f"  {_offline_status()}{'; ' + reason if reason else ''}.\n"
        f"To get it, on a machine with network access either\n"
        f"  1. run `hf download {name}` (older huggingface_hub: `huggingface-cli download {name}`),\n"
        f"     then copy that machine's hub cache (~/.cache/huggingface/hub, or its HF_HUB_CACHE) to {cache} here, or\n"
        f"  2. run `hf download {name} --local-dir ./{local_name}`, copy that folder here\n"
        f"     and pass its path instead of {name!r}."
    )
    return with_hint(message, hint)


def bad_local_dir_message(
    path: Union[str, Path], what: str, problem: str, required_files: Sequence[str], hint: str = ""
) -> str:
    """A local directory that is missing, a file, or not a valid model of its kind.

    Args:
        path: the directory as given (expanded).
        what: the kind of model.
        problem: what is wrong, e.g. ``"does not exist"`` or ``"has no config.json"``.
        required_files: the marker files a directory of this kind holds.
        hint: the caller's alternative, appended on its own line.
    """
    message = (
        f"{what}: the local directory {str(path)!r} {problem}.\n"
        f"A {what} directory holds {_files_text(required_files)} and the files next to it (weights, "
        f"tokenizer / processor files), as written by `save_pretrained` or by `hf download <hub-id> "
        f"--local-dir {path}` on a machine with network access. Pass such a directory, or a hub id that is "
        f"already in the local Hugging Face cache ({hub_cache_dir()})."
    )
    return with_hint(message, hint)
