"""The kernel build lock: bounded waits, stale-lock takeover, messages that name the lock file."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import threading
import time

import pytest

from langfield._checks import InputError
from langfield.kernels.build_lock import (
    DEFAULT_TIMEOUT_S,
    TIMEOUT_ENV,
    BuildLock,
    BuildLockTimeout,
    lock_timeout_s,
    machine_tag,
    read_holder,
)

LOGGER = "langfield.kernels.build_lock"


def _write_lock(path, pid, *, machine=None, created=None, age_s=0.0):
    """A lock file as another process would leave it (``age_s``: how long since it was touched)."""
    info = {
        "pid": pid,
        "host": socket.gethostname(),
        "machine": machine_tag() if machine is None else machine,
        "created": time.time() - age_s if created is None else created,
        "token": "someone-else",
    }
    path.write_text(json.dumps(info))
    if age_s:
        stamp = time.time() - age_s
        os.utime(path, (stamp, stamp))


@pytest.fixture
def dead_pid():
    """The PID of a process that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.fixture
def live_pid():
    """The PID of a sleeping child process (killed afterwards)."""
    child = subprocess.Popen(["sleep", "60"])
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait()


def test_lock_file_records_holder_and_is_removed_on_release(tmp_path):
    path = tmp_path / "k.lock"
    with BuildLock(path, timeout_s=1):
        info = json.loads(path.read_text())
        assert info["pid"] == os.getpid()
        assert info["host"] == socket.gethostname()
        assert abs(info["created"] - time.time()) < 60
        assert info["machine"] == machine_tag()
    assert not path.exists()


def test_second_acquirer_waits_for_the_first(tmp_path):
    path = tmp_path / "k.lock"
    first = BuildLock(path, timeout_s=1)
    first.acquire()
    released_at = []

    def release_later():
        time.sleep(0.5)
        released_at.append(time.monotonic())
        first.release()

    thread = threading.Thread(target=release_later)
    thread.start()
    try:
        with BuildLock(path, timeout_s=10, poll_s=0.05):
            got_at = time.monotonic()
            assert read_holder(path).token not in (None, "someone-else")
    finally:
        thread.join()
    assert got_at >= released_at[0]  # never both at once


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, dead_pid, caplog):
    path = tmp_path / "k.lock"
    _write_lock(path, dead_pid)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        with BuildLock(path, timeout_s=10):
            assert json.loads(path.read_text())["pid"] == os.getpid()
    assert time.monotonic() - start < 5
    removed = [r.getMessage() for r in caplog.records if "removed the stale build lock" in r.getMessage()]
    assert len(removed) == 1
    assert str(path) in removed[0] and f"pid {dead_pid}" in removed[0] and "no longer running" in removed[0]


def test_live_holder_times_out_quickly_naming_the_lock_file(tmp_path, live_pid, caplog):
    path = tmp_path / "k.lock"
    _write_lock(path, live_pid)
    start = time.monotonic()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        with pytest.raises(BuildLockTimeout) as info:
            BuildLock(path, timeout_s=1, poll_s=0.05).acquire()
    elapsed = time.monotonic() - start
    assert 0.9 < elapsed < 5
    message = str(info.value)
    assert str(path) in message and f"pid {live_pid}" in message and f"rm '{path}'" in message
    assert TIMEOUT_ENV in message
    assert info.value.path == path
    waiting = [r.getMessage() for r in caplog.records if r.getMessage().startswith("langfield: waiting for")]
    assert len(waiting) == 1  # said once, not once per poll
    assert str(path) in waiting[0] and f"held by pid {live_pid} on {socket.gethostname()} since" in waiting[0]
    assert json.loads(path.read_text())["pid"] == live_pid  # a live holder's lock is left alone


def test_zero_timeout_tries_once(tmp_path, live_pid):
    path = tmp_path / "k.lock"
    _write_lock(path, live_pid)
    start = time.monotonic()
    with pytest.raises(BuildLockTimeout):
        BuildLock(path, timeout_s=0).acquire()
    assert time.monotonic() - start < 1


def test_old_lock_is_taken_over_even_from_another_machine(tmp_path, live_pid, caplog):
    path = tmp_path / "k.lock"
    _write_lock(path, live_pid, machine="0badf00d", age_s=20 * 60)  # a PID we cannot check; silent 20 min
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        with BuildLock(path, timeout_s=5, stale_after_s=15 * 60):
            assert json.loads(path.read_text())["pid"] == os.getpid()
    assert any("last touched 20 min ago" in r.getMessage() for r in caplog.records)


def test_recent_lock_of_another_machine_is_respected(tmp_path, dead_pid):
    path = tmp_path / "k.lock"
    _write_lock(path, dead_pid, machine="0badf00d")  # that PID means nothing here: rely on the age only
    with pytest.raises(BuildLockTimeout):
        BuildLock(path, timeout_s=0.3, poll_s=0.05).acquire()
    assert path.exists()


def test_unreadable_lock_is_waited_for_briefly_then_taken_over(tmp_path):
    path = tmp_path / "k.lock"
    path.write_bytes(b"")  # a holder between creating the file and writing its JSON
    with pytest.raises(BuildLockTimeout):
        BuildLock(path, timeout_s=0.3, poll_s=0.05).acquire()
    stamp = time.time() - 60
    os.utime(path, (stamp, stamp))  # ... but nobody writes for a minute: garbage
    with BuildLock(path, timeout_s=5):
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_dangling_symlink_lock_is_taken_over_not_spun_on(tmp_path):
    path = tmp_path / "k.lock"
    path.symlink_to(tmp_path / "nowhere")
    with pytest.raises(BuildLockTimeout):
        BuildLock(path, timeout_s=0.3, poll_s=0.05).acquire()  # young: could be anything, wait (bounded)
    stamp = time.time() - 60
    os.utime(path, (stamp, stamp), follow_symlinks=False)
    with BuildLock(path, timeout_s=5):
        assert not path.is_symlink() and json.loads(path.read_text())["pid"] == os.getpid()


def test_release_never_removes_someone_elses_lock(tmp_path, live_pid):
    path = tmp_path / "k.lock"
    lock = BuildLock(path, timeout_s=1)
    lock.acquire()
    path.unlink()
    _write_lock(path, live_pid)  # e.g. taken over by another process meanwhile
    lock.release()
    assert json.loads(path.read_text())["pid"] == live_pid


def test_heartbeat_keeps_a_long_build_from_looking_stale(tmp_path):
    path = tmp_path / "k.lock"
    with BuildLock(path, timeout_s=1, stale_after_s=0.4):  # heartbeat every 0.1 s
        stamp = time.time() - 3600
        os.utime(path, (stamp, stamp))
        time.sleep(0.5)
        assert time.time() - path.stat().st_mtime < 1.0


def test_timeout_from_environment(monkeypatch):
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert lock_timeout_s() == DEFAULT_TIMEOUT_S
    monkeypatch.setenv(TIMEOUT_ENV, " 2.5 ")
    assert lock_timeout_s() == 2.5
    assert BuildLock("unused.lock").timeout_s == 2.5
    for bad in ("banana", "-1", "inf", "nan"):
        monkeypatch.setenv(TIMEOUT_ENV, bad)
        with pytest.raises(InputError, match=TIMEOUT_ENV):
            lock_timeout_s()
