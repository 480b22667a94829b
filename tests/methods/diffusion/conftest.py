"""Fixtures for the generation-stack Trainer objectives."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread):
    """Tiny conv nets and transformers: one intra-op thread (two spin against each other on a busy
    2-core machine and ran these tests 10x slower)."""
    yield
