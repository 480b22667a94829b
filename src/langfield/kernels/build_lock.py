"""An inter-process lock for kernel builds that never waits forever.

torch's own build lock (``torch.utils.cpp_extension``'s ``FileBaton``) waits without a limit, so a
process killed in the middle of a first compile leaves a lock that hangs every later process.
:class:`BuildLock` is langfield's replacement:

* **The lock** is a file created with ``O_CREAT | O_EXCL`` (atomic on local file systems and NFSv3+)
  holding JSON ``{"pid", "host", "machine", "created", "token"}``; ``machine`` names the host *and*
  PID namespace, so a PID is only ever interpreted where it means something. While held, a
  heartbeat thread touches the file every :data:`HEARTBEAT_S` seconds (at most), so its mtime says
  when the holder last showed signs of life.
* **Stale locks** are removed (with a warning naming the file and its holder) and taken over when
  the holder's PID is no longer alive on this machine, or the file has not been touched for
  ``stale_after_s`` (default :data:`STALE_AFTER_S`, 15 min: a holder on another machine that
  died), or it is unreadable for more than :data:`UNREADABLE_GRACE_S`. Removal happens under a
  short-lived ``<lock>.takeover`` guard (itself stale after :data:`TAKEOVER_STALE_S`), so two
  waiters never both remove a lock and then both build.
* **Waiting** logs one line, ``waiting for <lock> (held by pid N on <host> since <time>)``, and
  gives up after ``timeout_s`` (default :data:`DEFAULT_TIMEOUT_S`, or the environment variable
  ``LANGFIELD_KERNEL_LOCK_TIMEOUT`` in seconds) with :class:`BuildLockTimeout`, whose message names
  the lock file and how to remove it. Nothing here waits without a bound.

Convention: times in the JSON are POSIX seconds (``time.time()``); ages are measured from the lock
file's mtime, which the heartbeat refreshes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import Optional

from langfield._checks import InputError, check_finite_number

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "STALE_AFTER_S",
    "TIMEOUT_ENV",
    "BuildLock",
    "BuildLockTimeout",
    "LockHolder",
    "lock_timeout_s",
    "machine_tag",
]

_LOG = logging.getLogger(__name__)

TIMEOUT_ENV = "LANGFIELD_KERNEL_LOCK_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0  # a first compile takes ~30 s; ten times that is plenty
STALE_AFTER_S = 15 * 60.0  # no heartbeat for this long: the holder is gone
HEARTBEAT_S = 60.0
UNREADABLE_GRACE_S = 10.0  # a holder writes its JSON within microseconds of creating the file
TAKEOVER_STALE_S = 30.0
POLL_S = 0.25


class BuildLockTimeout(TimeoutError):
    """Another process held the build lock for longer than the timeout; the message names the file."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


def lock_timeout_s() -> float:
    """Seconds to wait for a build lock: ``$LANGFIELD_KERNEL_LOCK_TIMEOUT`` or :data:`DEFAULT_TIMEOUT_S`.

    Raises :class:`~langfield._checks.InputError` naming the variable when it is not a finite
    number >= 0 (``inf`` is refused: nothing may wait forever).
    """
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{TIMEOUT_ENV}: expected a number of seconds, got {text!r}") from None
    return check_finite_number(value, TIMEOUT_ENV, lo=0.0)


def machine_tag() -> str:
    """8 hex digits naming this host and PID namespace (where our PIDs mean something)."""
    try:
        pid_namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_namespace = ""
    return hashlib.sha1(f"{socket.gethostname()}\0{pid_namespace}".encode()).hexdigest()[:8]


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":
        return True  # os.kill(pid, 0) would terminate the process on Windows; rely on the age limit
    if pid <= 0:
        return False  # os.kill(0, ...) would address our own process group
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    except OSError:
        return True  # cannot tell: assume alive (the age limit still applies)
    return True


@dataclass(frozen=True)
class LockHolder:
    """What a lock file says about its holder (fields ``None`` when unreadable)."""

    pid: Optional[int]
    host: Optional[str]
    machine: Optional[str]
    created: Optional[float]
    token: Optional[str]
    mtime: float
    inode: int

    def describe(self) -> str:
        """``"pid 123 on host since 2026-01-01 12:00:00"`` (or what is known of it)."""
        pid = f"pid {self.pid}" if self.pid is not None else "an unknown process"
        host = f" on {self.host}" if self.host else ""
        since = self.created if self.created is not None else self.mtime
        return f"{pid}{host} since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}"


def read_holder(path: Path) -> Optional[LockHolder]:
    """The holder recorded in ``path``, or ``None`` when the file does not exist (any more).

    Anything but a regular file (a symbolic link, dangling or not) reads as an unreadable lock.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None
    except OSError:  # ELOOP: a symbolic link
        try:
            stat = os.lstat(path)
        except FileNotFoundError:
            return None
        return LockHolder(None, None, None, None, None, stat.st_mtime, stat.st_ino)
    with os.fdopen(fd, "rb") as handle:
        stat = os.fstat(handle.fileno())
        raw = handle.read(4096) if S_ISREG(stat.st_mode) else b""
    try:
        info = json.loads(raw.decode("utf-8"))
        if not isinstance(info, dict):
            raise ValueError("not an object")
    except ValueError:  # includes UnicodeDecodeError and JSONDecodeError
        info = {}

    def field(key, kind):
        value = info.get(key)
        return value if isinstance(value, kind) and not isinstance(value, bool) else None

    created = field("created", (int, float))
    return LockHolder(
        pid=field("pid", int),
        host=field("host", str),
        machine=field("machine", str),
        created=float(created) if created is not None else None,
        token=field("token", str),
        mtime=stat.st_mtime,
        inode=stat.st_ino,
    )


class BuildLock:
    """Exclusive, bounded-wait lock on ``path`` across processes (see the module docstring).

    Use as a context manager (``with BuildLock(path): ...``) or with :meth:`acquire` /
    :meth:`release`. Not re-entrant; one instance per acquisition.

    Args:
        path: the lock file (its folder must exist).
        timeout_s: the longest wait for another holder; ``None`` reads :func:`lock_timeout_s`.
        stale_after_s: a lock whose file was not touched for this long is taken over.
        poll_s: seconds between tries while waiting.
    """

    def __init__(
        self,
        path: Path,
        *,
        timeout_s: Optional[float] = None,
        stale_after_s: float = STALE_AFTER_S,
        poll_s: float = POLL_S,
    ) -> None:
        self.path = Path(path)
        self.timeout_s = lock_timeout_s() if timeout_s is None else float(timeout_s)
        self.stale_after_s = float(stale_after_s)
        self.poll_s = float(poll_s)
        self._token: Optional[str] = None
        self._inode: Optional[int] = None
        self._stop = threading.Event()
        self._heartbeat: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ acquire / release

    def acquire(self) -> None:
        """Take the lock, waiting at most ``timeout_s``; raises :class:`BuildLockTimeout`."""
        deadline = time.monotonic() + self.timeout_s
        announced = False
        while True:
            if self._try_create():
                self._start_heartbeat()
                return
            holder = read_holder(self.path)
            if holder is None:
                continue  # released between our try and our read: try again at once
            if self.stale_reason(holder) is not None:
                if self._take_over(holder):
                    continue
            elif not announced:
                _LOG.info("langfield: waiting for %s (held by %s)", self.path, holder.describe())
                announced = True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BuildLockTimeout(self._timeout_message(holder), self.path)
            time.sleep(min(self.poll_s, remaining))

    def release(self) -> None:
        """Stop the heartbeat and remove the lock file if it is still ours."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        holder = read_holder(self.path)
        if holder is not None and self._token is not None and holder.token == self._token:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        self._token = self._inode = None

    def __enter__(self) -> "BuildLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    # ------------------------------------------------------------------ staleness

    def stale_reason(self, holder: LockHolder) -> Optional[str]:
        """Why ``holder``'s lock may be taken over, or ``None`` while it looks alive."""
        age = time.time() - holder.mtime
        if holder.pid is None or holder.token is None:
            if age > UNREADABLE_GRACE_S:
                return f"the lock file is unreadable and {age:.0f} s old"
            return None
        if holder.machine == machine_tag() and holder.pid != os.getpid() and not _pid_alive(holder.pid):
            return f"its holder (pid {holder.pid}) is no longer running"
        if age > self.stale_after_s:
            return f"it was last touched {age / 60:.0f} min ago (limit {self.stale_after_s / 60:g} min)"
        return None

    def _take_over(self, seen: LockHolder) -> bool:
        """Remove the stale lock ``seen`` under the takeover guard, re-checking it there.

        Returns whether the lock file changed (removed here or replaced meanwhile), i.e. whether to
        try to create it again at once; ``False`` while another process holds the guard.
        """
        guard = self.path.with_name(self.path.name + ".takeover")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if time.time() - guard.stat().st_mtime > TAKEOVER_STALE_S:
                    guard.unlink()  # a taker-over died within its few microseconds
            except FileNotFoundError:
                pass
            return False
        os.close(fd)
        try:
            holder = read_holder(self.path)
            if holder is None or holder.inode != seen.inode:
                return True  # someone else already removed or replaced it
            reason = self.stale_reason(holder)
            if reason is None:
                return False
            self.path.unlink()
            _LOG.warning(
                "langfield: removed the stale build lock %s (held by %s; %s)", self.path, holder.describe(), reason
            )
            return True
        finally:
            guard.unlink()

    # ------------------------------------------------------------------ internals

    def _try_create(self) -> bool:
        token = secrets.token_hex(8)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "machine": machine_tag(),
            "created": time.time(),
            "token": token,
        }
        try:
            os.write(fd, json.dumps(info).encode("utf-8"))
            self._inode = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        self._token = token
        return True

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        interval = max(0.05, min(HEARTBEAT_S, self.stale_after_s / 4))
        self._heartbeat = threading.Thread(target=self._beat, args=(interval,), name="build-lock", daemon=True)
        self._heartbeat.start()

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                if os.stat(self.path).st_ino == self._inode:
                    os.utime(self.path)
            except OSError:
                pass

    def _timeout_message(self, holder: LockHolder) -> str:
        return (
            f"timed out after {self.timeout_s:g} s waiting for the build lock {self.path} "
            f"(held by {holder.describe()}); if no langfield build is running, remove it "
            f"(rm '{self.path}'), or wait longer with {TIMEOUT_ENV}=<seconds>"
        )
