"""Running pycolmap in a child process: matcher choice, the optional import, crash handling.

pycolmap is an optional dependency (``pip install -e '.[capture]'``); langfield imports without
it and :func:`require_pycolmap` says how to get it. COLMAP's C++ may abort the process it runs in
(a failed internal check, a vocabulary-tree download attempted offline), so the work runs in
the script ``langfield/capture/_worker.py`` and :func:`run_worker` turns a non-zero exit or a signal
into a :class:`CaptureError` naming the stage, the log file and COLMAP's last error lines.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, List, Optional, Union

from langfield._checks import InputError

PathLike = Union[str, os.PathLike]

__all__ = ["CaptureError", "EXHAUSTIVE_MAX_IMAGES", "MATCHERS", "choose_matcher", "require_pycolmap", "run_worker"]

MATCHERS = ("auto", "sequential", "exhaustive", "vocab_tree")
#: ``matcher="auto"`` matches photo collections up to this size exhaustively (all pairs).
EXHAUSTIVE_MAX_IMAGES = 100
INSTALL_HINT = "pip install -e '.[capture]' (or pip install pycolmap; pycolmap-cuda12 where CUDA is available)"

#: ``on_event(kind, stage, value)``: kind ``"stage"`` (value None), ``"done"`` (seconds) or
#: ``"progress"`` (items done in the stage, as COLMAP logs them).
EventFn = Callable[[str, str, Optional[float]], None]

_PROGRESS_RE = re.compile(r"(?:Processed file|Processing block|Matching block) \[(\d+)/(\d+)")


class CaptureError(InputError):
    """A capture could not produce a usable reconstruction; the message says why and what to try."""


def require_pycolmap() -> None:
    """Raise :class:`CaptureError` with the install command when pycolmap cannot be imported.

    Only looks the package up (no import), so the parent process never loads COLMAP."""
    if importlib.util.find_spec("pycolmap") is None:
        raise CaptureError(f"langfield capture needs pycolmap, which is not installed: {INSTALL_HINT}")


def choose_matcher(matcher: str, num_images: int, *, is_video: bool, vocab_tree: Optional[PathLike] = None) -> str:
    """The matcher to run: ``matcher`` itself unless it is ``"auto"``.

    ``"auto"``: ``"sequential"`` for video frames (neighbours in time overlap); for photos
    ``"exhaustive"`` (all pairs) up to :data:`EXHAUSTIVE_MAX_IMAGES`, above that ``"vocab_tree"``
    when a vocabulary file is given, else ``"sequential"``: the photos are taken to be in capture
    order by file name (as a camera numbers them), with COLMAP's quadratic overlap adding pairs
    ``i + 2^k`` -- exhaustive matching grows with the square of the count (42k pairs for 292 photos,
    hours on a CPU) and pycolmap's own vocabulary download is never used (offline). ``"vocab_tree"``
    needs ``vocab_tree`` to be an existing file.

    >>> choose_matcher("auto", 300, is_video=True), choose_matcher("auto", 50, is_video=False)
    ('sequential', 'exhaustive')
    >>> choose_matcher("auto", 292, is_video=False)
    'sequential'
    """
    if matcher not in MATCHERS:
        raise InputError(f"--matcher: must be one of {', '.join(MATCHERS)}, got {matcher!r}")
    if vocab_tree is not None and not Path(vocab_tree).is_file():
        raise InputError(f"--vocab-tree {vocab_tree}: no such file "
                         "(a COLMAP vocabulary tree, e.g. vocab_tree_flickr100K_words32K.bin)")  # fmt: skip
    if matcher == "vocab_tree" and vocab_tree is None:
        raise InputError("--matcher vocab_tree needs --vocab-tree FILE (langfield never downloads one)")
    if matcher != "auto":
        return matcher
    if is_video:
        return "sequential"
    if num_images <= EXHAUSTIVE_MAX_IMAGES:
        return "exhaustive"
    return "vocab_tree" if vocab_tree is not None else "sequential"


def _worker_env() -> dict:
    """The environment of the child: ``PYTHONPATH`` starts with the folder holding this langfield, and
    COLMAP's glog logs to stderr only (by default it also leaves a log file per process in /tmp)."""
    env = dict(os.environ)
    env.setdefault("GLOG_logtostderr", "1")
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([src] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _error_lines(log: List[str], limit: int = 6) -> str:
    """COLMAP's fatal/error lines (glog ``F``/``E`` prefixes, Python errors) or else the last lines."""
    errs = [ln for ln in log if re.match(r"^[FE]\d{8} ", ln) or "Error" in ln or "Check failed" in ln]
    chosen = (errs or log)[-limit:]
    return " | ".join(ln.strip()[-300:] for ln in chosen if ln.strip())


def run_worker(
    request: dict,
    work_dir: PathLike,
    log_path: PathLike,
    *,
    on_event: Optional[EventFn] = None,
    timeout_s: Optional[float] = None,
    command: Optional[List[str]] = None,
) -> None:
    """Run the worker on ``request`` (written to ``work_dir/request_<task>.json``) in a child process.

    COLMAP's log is appended to ``log_path``. Raises :class:`CaptureError` when the child exits
    non-zero, is killed by a signal (e.g. ``SIGABRT``) or runs past ``timeout_s``; the message names
    the task, the stage it was in, the log file and the last error lines. ``command`` replaces
    ``[python, .../langfield/capture/_worker.py]`` (tests).
    """
    work_dir, log_path = Path(work_dir), Path(log_path)
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    req_path = work_dir / f"request_{request['task']}.json"
    req_path.write_text(json.dumps(request), encoding="utf-8")
    cmd = (command or [sys.executable, str(Path(__file__).with_name("_worker.py"))]) + [str(req_path)]
    tail: List[str] = []
    stage = {"name": "start"}
    timed_out = threading.Event()
    lock = threading.Lock()  # the log is written from two threads (stdout here, stderr in the reader)
    with open(log_path, "a", encoding="utf-8") as log:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace", env=_worker_env(), bufsize=1
        )

        def read_stderr() -> None:
            registered = 0
            for line in proc.stderr:
                with lock:
                    log.write(line)
                tail.append(line.rstrip("\n"))
                del tail[:-200]
                if on_event is None:
                    continue
                m = _PROGRESS_RE.search(line)
                if m:
                    on_event("progress", stage["name"], float(m.group(1)))
                elif "Registering image" in line:
                    registered += 1
                    on_event("progress", stage["name"], float(registered))

        def kill() -> None:
            timed_out.set()
            proc.kill()

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        timer = threading.Timer(timeout_s, kill) if timeout_s else None
        if timer:
            timer.start()
        try:
            for line in proc.stdout:
                parts = line.split()
                if len(parts) >= 2 and parts[0] in ("@@stage", "@@done"):
                    stage["name"] = parts[1]
                    if on_event is not None:
                        kind = "stage" if parts[0] == "@@stage" else "done"
                        on_event(kind, parts[1], float(parts[2]) if kind == "done" else None)
                else:
                    with lock:
                        log.write(line)
            code = proc.wait()
        finally:
            if timer:
                timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reader.join(timeout=10)
    if code == 0:
        return
    task = request["task"]
    if timed_out.is_set():
        why = f"ran past the time limit of {timeout_s:g} s"
    elif code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        cause = {"SIGABRT": " (COLMAP aborted the process)", "SIGKILL": " (out of memory?)"}.get(name, "")
        why = f"was killed by {name}{cause}"
    else:
        why = f"failed with exit status {code}"
    detail = "" if timed_out.is_set() else f"; last lines: {_error_lines(tail)}"  # a timeout's log tail is noise
    raise CaptureError(f"pycolmap {task} {why} during stage '{stage['name']}'; full log: {log_path}{detail}")
