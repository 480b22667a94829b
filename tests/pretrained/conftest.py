"""Fixtures for the pretrained-model tests: an empty, isolated Hugging Face setup and no network."""

from __future__ import annotations


import pytest


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
