"""Atomic writes: file modes follow the umask, killed writers leave nothing a reader sees,
and their temporary files are swept by the next write into the directory."""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from langfield.io import atomic
from langfield.io.atomic import (
    STALE_AFTER_S,
    atomic_path,
    atomic_save_torch,
    atomic_write,
    atomic_write_json,
    remove_stale_temp_files,
)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp" in p.name)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _dead_pid() -> int:
    """The PID of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _touch(path: Path, age_s: float = 0.0) -> Path:
    path.write_bytes(b"partial")
    if age_s:
        t = time.time() - age_s
        os.utime(path, (t, t))
    return path


# ----------------------------------------------------------------------------- modes


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002, 0o027])
def test_written_files_get_the_mode_a_plain_open_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        plain = tmp_path / "plain.txt"
        with open(plain, "w") as f:
            f.write("x")
        expected = 0o666 & ~umask
        assert _mode(plain) == expected

        with atomic_write(tmp_path / "a.txt", "w") as f:
            f.write("x")
        atomic_write_json({"a": 1}, tmp_path / "a.json")
        atomic_save_torch({"w": torch.zeros(2)}, tmp_path / "a.pt")
        with atomic_path(tmp_path / "a.bin") as tmp:
            tmp.write_bytes(b"external tool")
        for name in ("a.txt", "a.json", "a.pt", "a.bin"):
            assert _mode(tmp_path / name) == expected, name
    finally:
        os.umask(old)


def test_an_existing_target_gets_the_umask_mode_not_its_old_one(tmp_path):
    """Decision (see the module docstring): a rewrite is a new file; old 0600 files get fixed."""
    path = tmp_path / "latest.ckpt"
    path.write_bytes(b"old")
    path.chmod(0o600)
    old = os.umask(0o022)
    try:
        atomic_save_torch({"step": 1}, path)
    finally:
        os.umask(old)
    assert _mode(path) == 0o644
    assert torch.load(path)["step"] == 1


# ----------------------------------------------------------------------------- failures


def test_a_write_that_raises_leaves_the_old_target_and_no_temp_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save_torch({"step": 1}, path)
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(path) as f:
            f.write(b"half")
            raise RuntimeError("boom")
    with pytest.raises(Exception):
        atomic_save_torch({"fn": lambda: None}, path)  # lambdas cannot be pickled
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert torch.load(path) == {"step": 1}
    assert _leftovers(tmp_path) == []


def test_temporary_names_are_recognisable_and_keep_the_suffix(tmp_path):
    seen = []
    with atomic_path(tmp_path / "video.mp4") as tmp:
        seen.append(tmp.name)
        assert tmp.parent == tmp_path and tmp.exists()
    name = seen[0]
    assert name.startswith(".video.mp4.") and name.endswith(".tmp.mp4")
    assert f".{os.getpid()}-" in name
    assert atomic._TEMP_RE.match(name) is not None


# ----------------------------------------------------------------------------- sweeping stale temp files


def test_temp_files_of_a_dead_pid_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "render.png"
    dead = _touch(tmp_path / atomic._temp_name(target, ".png", pid=_dead_pid()))
    legacy_old = _touch(tmp_path / ".render.k2x_9qab.tmp.png", age_s=STALE_AFTER_S + 60)  # mkstemp-era name
    foreign_old = _touch(tmp_path / atomic._temp_name(target, ".png", pid=1, machine="0" * 8), STALE_AFTER_S + 60)
    atomic_write_json({"ok": True}, tmp_path / "other.json")  # any write into the directory sweeps it
    assert not dead.exists() and not legacy_old.exists() and not foreign_old.exists()
    assert _leftovers(tmp_path) == []


def test_live_and_unknown_temp_files_are_not_touched(tmp_path):
    target = tmp_path / "ckpt.pt"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        keep = [
            _touch(tmp_path / atomic._temp_name(target, ".pt", pid=sleeper.pid)),  # a live writer
            _touch(tmp_path / atomic._temp_name(target, ".pt")),  # this process
            _touch(tmp_path / atomic._temp_name(target, ".pt", pid=_dead_pid(), machine="0" * 8)),  # other machine
            _touch(tmp_path / ".ckpt.k2x_9qab.tmp.pt"),  # mkstemp-era name, recent
            _touch(tmp_path / "notes.tmp", age_s=STALE_AFTER_S + 60),  # not ours
            _touch(tmp_path / ".cache.tmp", age_s=STALE_AFTER_S + 60),  # not ours
        ]
        assert remove_stale_temp_files(tmp_path) == []
        atomic_save_torch({"step": 1}, target)
        for path in keep:
            assert path.exists(), path.name
    finally:
        sleeper.kill()
        sleeper.wait()
    assert remove_stale_temp_files(tmp_path) == [keep[0]]  # its writer is gone now


def test_a_directory_is_swept_once_then_again_after_the_rescan_interval(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(atomic, "remove_stale_temp_files", lambda d: calls.append(Path(d)) or [])
    for i in range(3):
        atomic_write_json({"i": i}, tmp_path / "m.json")
    assert calls == [tmp_path]
    monkeypatch.setattr(atomic, "RESCAN_AFTER_S", 0.0)
    atomic_write_json({"i": 3}, tmp_path / "m.json")
    assert calls == [tmp_path, tmp_path]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_writer_killed_mid_write_never_leaves_a_truncated_target(tmp_path):
    """SIGKILL a process that rewrites a 32 MB checkpoint in a loop; the target is always whole.

    The child is forked (torch already imported, so it starts at once); it only pickles and
    writes, no OpenMP work. It is killed a random moment after a rewrite has begun.
    """
    target = tmp_path / "big.pt"
    x = torch.arange(8_000_000, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "fork() in a multi-threaded process"
        pid = os.fork()
    if pid == 0:  # child: write until killed, never return into pytest
        try:
            step = 0
            while True:
                step += 1
                atomic_save_torch({"step": step, "x": x}, target)
        finally:
            os._exit(1)
    try:
        deadline = time.monotonic() + 30
        while not (target.exists() and _leftovers(tmp_path)):  # one rewrite done, the next one begun
            assert time.monotonic() < deadline, "the child never started writing"
            time.sleep(0.002)
        time.sleep(random.uniform(0.0, 0.05))
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)

    loaded = torch.load(target)
    assert loaded["step"] >= 1 and torch.equal(loaded["x"], x)
    left = _leftovers(tmp_path)
    assert len(left) <= 1
    atomic_write_json({"after": "kill"}, tmp_path / "next.json")  # the next write sweeps the directory
    assert _leftovers(tmp_path) == []
    assert torch.equal(torch.load(target)["x"], x)
