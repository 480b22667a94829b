import os
import random

import numpy as np
import pytest
import torch

from langfield.training.checkpoint import (
    CheckpointManager,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)

from .toy_method import torch_test_state  # noqa: F401


def test_keep_last_k_and_latest(tmp_path):
    manager = CheckpointManager(tmp_path / "ckpt", keep_last=2)
    assert manager.latest() is None and manager.list_steps() == []
    for step in (10, 20, 30):
        manager.save({"step": step, "w": torch.full((3,), float(step))}, step)
    assert [s for s, _ in manager.list_steps()] == [20, 30]
    latest = load_checkpoint(manager.latest())
    assert latest["step"] == 30 and torch.equal(latest["w"], torch.full((3,), 30.0))
    assert load_checkpoint(manager.step_path(20))["step"] == 20
    # nothing but the checkpoints is left behind (no temporary files)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["latest.ckpt", "step_00000020.ckpt", "step_00000030.ckpt"]


def test_latest_survives_pruning_of_its_step_file(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=1)
    manager.save({"step": 1}, 1)
    manager.save({"step": 2}, 2)
    os.remove(manager.step_path(2))
    assert load_checkpoint(manager.latest())["step"] == 2


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path):
    path = save_checkpoint({"step": 1}, tmp_path / "a.ckpt")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint({"step": 2, "bad": Unpicklable()}, path)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]


def test_rng_round_trip_through_a_checkpoint(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    save_checkpoint({"rng": capture_rng_state()}, tmp_path / "rng.ckpt")
    first = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)], np.random.randn(1))
    restore_rng_state(load_checkpoint(tmp_path / "rng.ckpt")["rng"])  # loads with weights_only=True
    again = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)], np.random.randn(1))
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1]) and first[2] == again[2] and np.array_equal(first[3], again[3])


def test_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not load"):
        load_checkpoint(tmp_path / "junk.ckpt")
    torch.save({"step": 1}, tmp_path / "foreign.ckpt")
    with pytest.raises(ValueError, match="not a langfield checkpoint"):
        load_checkpoint(tmp_path / "foreign.ckpt")
    torch.save({"format": 999}, tmp_path / "future.ckpt")
    with pytest.raises(ValueError, match="format 999"):
        load_checkpoint(tmp_path / "future.ckpt")
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointManager(tmp_path, keep_last=0)
    with pytest.raises(TypeError):
        save_checkpoint([1, 2], tmp_path / "x.ckpt")
