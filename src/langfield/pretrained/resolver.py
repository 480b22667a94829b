"""One resolver for every pretrained model: a local directory, a cached hub id, or a hub id.

:func:`resolve_pretrained` turns a model name into a :class:`ResolvedModel` that says where the
model comes from and what to pass to ``from_pretrained``:

1. A **local directory**: anything that looks like a path (``./x``, ``/x``, ``~/x``, ``a/b/c``)
   or an existing directory. It must exist and hold one of ``required_files`` (the marker files
   that make a directory "a model of this kind": ``config.json`` for transformers models,
   ``model_index.json`` for a diffusers pipeline); otherwise the error names the directory and
   what is missing. ``source="local"``, ``local_files_only=True``.
2. A **hub id already in the local Hugging Face cache** (found with
   ``huggingface_hub.snapshot_download(..., local_files_only=True)`` in :func:`hub_cache_dir`,
   which honours ``HF_HUB_CACHE`` / ``HF_HOME``), whose snapshot holds one of ``required_files``.
   ``source="cache"``, the snapshot directory, ``local_files_only=True``: nothing touches the
   network.
3. A **hub id not in the cache**: when the hub is switched off (``HF_HUB_OFFLINE`` or
   ``TRANSFORMERS_OFFLINE``, see :func:`~langfield.pretrained.hub.hub_offline`) or the caller
   does not allow downloads, :class:`PretrainedUnavailableError` at once, with a message saying
   how to get the model; otherwise ``source="hub"`` and ``from_pretrained`` downloads it.

There are no network probes: whether the hub is reachable is decided by the environment only.

Loading itself stays with the caller (transformers, diffusers, ...), inside
:func:`explain_load_errors`, which turns the failures of ``from_pretrained`` into a
:class:`PretrainedUnavailableError` naming the directory or id::

    resolved = resolve_pretrained("openai/clip-vit-base-patch16", what="vision-language model")
    with explain_load_errors(resolved):
        model = AutoModel.from_pretrained(resolved.name_or_path, **resolved.from_pretrained_kwargs)

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "config.json").write_text("{}")
>>> resolved = resolve_pretrained(str(folder))
>>> resolved.source, resolved.local_files_only, resolved.path == folder.resolve()
('local', True, True)
>>> try:  # a diffusers pipeline directory is marked by model_index.json
...     resolve_pretrained(str(folder), required_files=("model_index.json",), what="diffusion pipeline")
... except PretrainedUnavailableError as err:
...     print(str(err).splitlines()[0].endswith("has no model_index.json."))
True
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence, Union

from langfield.pretrained.errors import (
    PretrainedUnavailableError,
    bad_local_dir_message,
    hub_model_missing_message,
    short_error,
    with_hint,
)
from langfield.pretrained.hub import hub_cache_dir, hub_offline, looks_like_path

__all__ = ["ResolvedModel", "Source", "explain_load_errors", "load_failure_error", "resolve_pretrained"]

Source = Literal["local", "cache", "hub"]
PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class ResolvedModel:
    """Where a pretrained model comes from and how to hand it to ``from_pretrained``.

    Attributes:
        name: the name as the caller gave it (hub id or directory).
        source: ``"local"`` (a directory), ``"cache"`` (a snapshot in the local Hugging Face
            cache) or ``"hub"`` (to be downloaded by ``from_pretrained``).
        name_or_path: the first argument for ``from_pretrained``: the directory (``local``:
            the resolved directory, ``cache``: the snapshot directory) or the hub id (``hub``).
        local_files_only: pass it to ``from_pretrained`` (``True`` unless ``source="hub"``).
        cache_dir: the hub cache that was searched; a ``hub`` download goes there too.
        revision: the hub revision asked for (``None``: the default branch).
        what: the kind of model, for messages (``"SAM model"``, ``"text model"``, ...).
        required_files: the marker files a directory of this kind holds.
        hint: the caller's alternative, appended to every error message about this model.
    """

    name: str
    source: Source
    name_or_path: str
    local_files_only: bool
    cache_dir: Path
    revision: str | None = None
    what: str = "model"
    required_files: tuple[str, ...] = ("config.json",)
    hint: str = field(default="", repr=False)

    @property
    def path(self) -> Path | None:
        """The model's directory on this machine (``local`` and ``cache``), ``None`` for ``hub``."""
        return None if self.source == "hub" else Path(self.name_or_path)

    @property
    def from_pretrained_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``from_pretrained``: ``local_files_only``, and for a ``hub``
        download the ``cache_dir`` (and ``revision``) that the resolver searched."""
        kwargs: dict[str, Any] = {"local_files_only": self.local_files_only}
        if self.source == "hub":
            kwargs["cache_dir"] = str(self.cache_dir)
            if self.revision is not None:
                kwargs["revision"] = self.revision
        return kwargs


def _check_required_files(required_files: Sequence[str]) -> tuple[str, ...]:
    if isinstance(required_files, str):
        required_files = (required_files,)
    files = tuple(required_files)
    if not files or not all(isinstance(f, str) and f for f in files):
        raise ValueError(f"required_files must be a non-empty sequence of file names, got {required_files!r}")
    return files


def _has_marker(directory: Path, required_files: Sequence[str]) -> bool:
    return any((directory / name).is_file() for name in required_files)


def resolve_pretrained(
    name: PathLike,
    *,
    required_files: Sequence[str] = ("config.json",),
    what: str = "model",
    allow_download: bool = True,
    revision: str | None = None,
    hint: str = "",
) -> ResolvedModel:
    """Resolve a model name to a local directory, a cached snapshot or a hub id to download.

    Args:
        name: a directory (anything path-like, or an existing directory) or a hub id
            (``"org/name"``).
        required_files: marker files; a directory (or cached snapshot) is a model of this kind
            when it holds at least one of them (``("config.json",)`` for transformers models,
            ``("model_index.json",)`` for a diffusers pipeline).
        what: the kind of model, used in messages (``"vision-language model"``).
        allow_download: ``False`` never returns ``source="hub"``: an uncached hub id raises (for
            callers with a fallback, which must not wait on the network).
        revision: hub branch, tag or commit (``None``: the default branch).
        hint: the caller's alternative, appended to error messages (e.g. ``"Or run with
            --teacher simulated."``).

    Returns:
        A :class:`ResolvedModel`.

    Raises:
        PretrainedUnavailableError: the directory is missing, is a file or has none of
            ``required_files``; the name is neither a directory nor a valid hub id; or the hub id
            is not cached and downloads are off (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``
            or ``allow_download=False``).
        ValueError: ``name`` is empty or ``required_files`` is malformed.
    """
    if not isinstance(name, (str, os.PathLike)) or not str(os.fspath(name)).strip():
        raise ValueError(f"{what} name must be a non-empty hub id or directory, got {name!r}")
    text = str(os.fspath(name)).strip()
    files = _check_required_files(required_files)
    cache_dir = hub_cache_dir()

    def resolved(source: Source, name_or_path: str) -> ResolvedModel:
        local_files_only = source != "hub"
        return ResolvedModel(text, source, name_or_path, local_files_only, cache_dir, revision, what, files, hint)

    if isinstance(name, os.PathLike) or looks_like_path(text):
        shown = os.path.expanduser(text)
        directory = Path(shown)
        problem = None
        if not directory.exists():
            problem = "does not exist"
        elif not directory.is_dir():
            problem = "is a file, not a directory"
        elif not _has_marker(directory, files):
            problem = f"has no {' or '.join(files)}"
        if problem is not None:
            message = bad_local_dir_message(shown, what, problem, files, hint)
            raise PretrainedUnavailableError(message, model_name=text)
        return resolved("local", str(directory.resolve()))

    snapshot = _cached_snapshot(text, cache_dir, revision, what, hint)
    if snapshot is not None and _has_marker(snapshot, files):
        return resolved("cache", str(snapshot))
    incomplete = f"its cached snapshot {snapshot} has no {' or '.join(files)}" if snapshot is not None else ""
    if hub_offline():
        reason = incomplete
    elif not allow_download:
        reason = "this model is used only when it is already on this machine (it is never downloaded)"
        reason = f"{reason}; {incomplete}" if incomplete else reason
    else:
        return resolved("hub", text)
    raise PretrainedUnavailableError(hub_model_missing_message(text, what, reason, hint), model_name=text)


def _cached_snapshot(repo_id: str, cache_dir: Path, revision: str | None, what: str, hint: str) -> Path | None:
    """The snapshot directory of ``repo_id`` in the local cache, or ``None`` (never downloads)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, cache_dir=str(cache_dir), revision=revision, local_files_only=True))
    except FileNotFoundError:  # LocalEntryNotFoundError: not cached (or an incomplete snapshot)
        return None
    except ValueError as err:  # HFValidationError: not a valid repo id
        message = (
            f"{what} {repo_id!r} is neither an existing directory nor a valid Hugging Face hub id "
            f"('org/name'): {short_error(err)}"
        )
        raise PretrainedUnavailableError(with_hint(message, hint), model_name=repo_id) from None


@lru_cache(maxsize=1)
def _load_error_types() -> tuple[type[BaseException], ...]:
    """What ``from_pretrained`` raises for a missing, partial or corrupt checkpoint."""
    types: list[type[BaseException]] = [OSError, ValueError]
    try:
        from safetensors import SafetensorError  # a truncated or corrupt .safetensors file
    except ImportError:  # pragma: no cover - safetensors comes with transformers
        pass
    else:
        types.append(SafetensorError)
    return tuple(types)


def load_failure_error(resolved: ResolvedModel, problem: str) -> PretrainedUnavailableError:
    """The error for a model that was found but cannot be used.

    Args:
        resolved: the model.
        problem: what is wrong, e.g. ``"KeyError: ..."`` from ``from_pretrained`` or
            ``"config.json says model_type 'clip', not 'sam'"``.
    """
    if resolved.source == "local":
        message = bad_local_dir_message(
            Path(resolved.name_or_path), resolved.what,
            f"is not a complete, valid {resolved.what} ({problem})", resolved.required_files, resolved.hint,
        )  # fmt: skip
    elif resolved.source == "cache":
        message = (
            f"{resolved.what} {resolved.name!r} is in the local Hugging Face cache ({resolved.name_or_path}) "
            f"but cannot be loaded from it ({problem}).\nThe download may be incomplete or be another kind "
            f"of model: run `hf download {resolved.name}` again on a machine with network access and copy "
            f"the cache here, or pass a local directory."
        )
        message = with_hint(message, resolved.hint)
    else:
        reason = f"the download failed ({problem}); set HF_HUB_OFFLINE=1 to fail at once instead of retrying"
        message = hub_model_missing_message(resolved.name, resolved.what, reason, resolved.hint)
    return PretrainedUnavailableError(message, model_name=resolved.name)


@contextmanager
def explain_load_errors(resolved: ResolvedModel) -> Iterator[None]:
    """Run ``from_pretrained`` calls; turn their failures into a :class:`PretrainedUnavailableError`.

    Missing or corrupt files, a ``config.json`` without a known ``model_type`` and failed
    downloads (``OSError``, ``ValueError``, ``SafetensorError``) become one error that names the
    directory (``local``), the cached snapshot (``cache``) or the hub id (``hub``) and says how
    to get a valid copy; the chained traceback from inside the library is dropped (its text is
    in the message). Any other exception (a bug) propagates unchanged.
    """
    try:
        yield
    except PretrainedUnavailableError:
        raise
    except _load_error_types() as err:
        raise load_failure_error(resolved, short_error(err)) from None
