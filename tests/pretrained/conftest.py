"""Fixtures for the pretrained-model tests: an empty, isolated Hugging Face setup and no network."""

from __future__ import annotations

import socket

import pytest

HUB_ENV = (
    "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"
)  # fmt: skip


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty hub cache in ``HF_HUB_CACHE`` (every other hub variable unset); returns its path."""
    for key in HUB_ENV:
        monkeypatch.delenv(key, raising=False)
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to resolve a host name or open a socket fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny random CLIP checkpoint directory (``tiny_models.save_tiny_clip``)."""
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from .tiny_models import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"), seed=0)


@pytest.fixture(scope="module")
def clip(clip_dir):
    """The tiny CLIP loaded by ``load_encoder`` on the CPU (batch size 4), with the hub off."""
    from langfield.pretrained.clip import EncoderConfig, load_encoder

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return load_encoder(EncoderConfig(model=str(clip_dir), device="cpu", batch_size=4))
