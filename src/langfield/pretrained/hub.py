"""Where the Hugging Face hub cache is and whether the hub may be contacted: the one offline policy.

Every pretrained-model loader in langfield asks these two questions through this module, never
by probing the network:

- :func:`hub_offline`: ``True`` when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set to a
  true value (``1``, ``ON``, ``YES``, ``TRUE``; case-insensitive), the values huggingface_hub
  itself accepts.
- :func:`hub_cache_dir`: the hub cache directory, read from the environment at call time with
  huggingface_hub's precedence: ``HF_HUB_CACHE``, then the legacy ``HUGGINGFACE_HUB_CACHE``,
  then ``$HF_HOME/hub``, then ``$XDG_CACHE_HOME/huggingface/hub``, then
  ``~/.cache/huggingface/hub``. (huggingface_hub reads these once at import; reading them per
  call lets a process or a test point at another cache.)

:func:`looks_like_path` decides whether a model name is meant as a directory rather than a hub
id (``org/name`` or ``name``).

>>> import os
>>> old = os.environ.pop("HF_HUB_OFFLINE", None), os.environ.pop("TRANSFORMERS_OFFLINE", None)
>>> hub_offline()
False
>>> os.environ["HF_HUB_OFFLINE"] = "1"
>>> hub_offline()
True
>>> del os.environ["HF_HUB_OFFLINE"]
>>> for key, value in zip(("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"), old):
...     if value is not None:
...         os.environ[key] = value
>>> looks_like_path("openai/clip-vit-base-patch16"), looks_like_path("./models/clip")
(False, True)
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["OFFLINE_ENV_VARS", "hub_cache_dir", "hub_cache_source", "hub_offline", "looks_like_path"]

#: Environment variables that switch the hub off (either one is enough).
OFFLINE_ENV_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """``True`` when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set to a true value."""
    return any(os.environ.get(key, "").strip().upper() in _TRUE for key in OFFLINE_ENV_VARS)


def _env_path(key: str) -> Path | None:
    value = os.environ.get(key, "").strip()
    return Path(os.path.expandvars(os.path.expanduser(value))) if value else None


def hub_cache_source() -> str:
    """Which setting chose :func:`hub_cache_dir`: ``"HF_HUB_CACHE"``, ``"HUGGINGFACE_HUB_CACHE"``,
    ``"HF_HOME"``, ``"XDG_CACHE_HOME"`` or ``"default"`` (for messages)."""
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        if _env_path(key) is not None:
            return key
    return "default"


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache directory (``models--org--name/`` folders live in it)."""
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        path = _env_path(key)
        if path is not None:
            return path
    home = _env_path("HF_HOME")
    if home is None:
        xdg = _env_path("XDG_CACHE_HOME") or Path.home() / ".cache"
        home = xdg / "huggingface"
    return home / "hub"


def looks_like_path(name: str) -> bool:
    """``True`` when ``name`` is meant as a directory, not a hub id.

    A hub id is ``name`` or ``org/name`` and never starts with ``.``, ``/`` or ``~``; anything
    else (``./x``, ``/x``, ``~/x``, ``a/b/c``, a backslash, a drive letter) is a path. An id-shaped
    name that exists on disk is also a path (the local directory wins, as in ``from_pretrained``).
    """
    return (
        name.startswith((".", "/", "~"))
        or "\\" in name
        or name.count("/") > 1
        or os.path.isabs(name)
        or os.path.exists(os.path.expanduser(name))
    )
