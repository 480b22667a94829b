"""Shared fixtures: a tiny procedural scene, the shared-data root and the ``requires_cuda`` marker."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "requires_cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_scene():
    """The procedural scene at 16x16 with 12 train / 3 test views (built once per session)."""
    from langfield.data.procedural import ProceduralSceneConfig, make_procedural_dataset

    return make_procedural_dataset(ProceduralSceneConfig(width=16, height=16, num_train=12, num_test=3))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
