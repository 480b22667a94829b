"""The bad-input table: each :class:`Case` does one hostile thing and names the error it must get.

Case modules are ``tests/robustness/cases_*.py``; each defines ``CASES: list[Case]``. The same table
drives ``tests/robustness/test_bad_inputs.py`` (every case must come out ``clean``) and
``benchmarks/robustness.py`` (counts per outcome, written as JSON).

A case's ``run(tmp)`` gets a fresh empty folder (its own, deleted afterwards), builds whatever bad
input it needs there (a dataset with a NaN focal length, a checkpoint full of NaN, ...) and calls
langfield the way a user would: a reader, a config object, a Python API function, or the CLI
through :func:`cli` (in-process, so a case costs milliseconds, not a Python start-up).

Outcomes (:func:`run_case`):

- ``clean``: raised ``case.error`` (or a subclass) whose message matches ``case.match`` (the regex
  should name the file, field or option), and no temp file was left behind;
- ``unclear``: raised the right kind of error, but the message does not name what is wrong;
- ``leftover``: clean error, but a half-written temp file (``*.tmp*``) stayed in ``tmp``;
- ``traceback``: any other exception (in the CLI: a traceback instead of one line);
- ``silent``: no error at all (the worst: the user goes on with garbage);
- ``hang``: still running after ``case.timeout_s`` seconds.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import pkgutil
import re
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Type

OUTCOMES = ("clean", "unclear", "leftover", "traceback", "silent", "hang")


class CliRefused(Exception):
    """The CLI refused the input cleanly: exit status 2 and a one-line message (``str(self)``)."""


class CaseTimeout(BaseException):
    """Raised inside a case that ran past its timeout (a ``BaseException`` so no ``except Exception`` eats it)."""


@dataclass(frozen=True)
class Case:
    """One bad input.

    Args:
        name: unique id, ``"<area>/<what>"``, e.g. ``"readers/blender/nan-focal"``.
        run: ``run(tmp)`` performs the bad action inside the empty folder ``tmp``.
        error: the exception class a clean refusal raises (``CliRefused`` for CLI cases).
        match: regex (case-insensitive) the message must contain: the file, field or option.
        timeout_s: seconds before the case counts as a hang.
    """

    name: str
    run: Callable[[Path], Any]
    error: Type[BaseException]
    match: str
    timeout_s: float = 60.0

    @property
    def area(self) -> str:
        return self.name.split("/", 1)[0]


@dataclass
class CaseResult:
    name: str
    outcome: str
    seconds: float
    detail: str


def cli(argv: Sequence[str]) -> str:
    """Run ``langfield <argv>`` in-process; raise :class:`CliRefused` on a clean refusal.

    Returns the captured stderr when the command *succeeded* (exit 0). A clean refusal is exit status
    2 with a one-line message, from langfield or from the argument parser; an escaping exception is
    re-raised untouched (a traceback).
    """
    from langfield.cli import main as cli_main

    err = io.StringIO()
    console = cli_main.console
    # rich's Console(stderr=True) has no file of its own (``_file`` is None) and writes to whatever
    # ``sys.stderr`` is at the time; restoring ``console.file`` would pin it to today's stream (and
    # hide later output from pytest's capsys), so the private slot is saved and restored.
    old_file = console._file
    console.file = err
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = cli_main.main(list(argv))
            except SystemExit as exc:  # the argument parser (tyro) refusing an option
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        console._file = old_file
    text = err.getvalue().strip()
    if code == 0:
        return text
    if "Traceback (most recent call last)" in text:
        raise RuntimeError(f"exit {code} with a traceback:\n{text}")
    raise CliRefused(f"exit {code}: {_last_lines(text)}")


@contextlib.contextmanager
def memory_limit(num_bytes: int) -> Iterator[None]:
    """Pretend the machine has ``num_bytes`` of free memory (``LANGFIELD_MEMORY_LIMIT_BYTES``, restored after)."""
    old = os.environ.get("LANGFIELD_MEMORY_LIMIT_BYTES")
    os.environ["LANGFIELD_MEMORY_LIMIT_BYTES"] = str(int(num_bytes))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LANGFIELD_MEMORY_LIMIT_BYTES", None)
        else:
            os.environ["LANGFIELD_MEMORY_LIMIT_BYTES"] = old


def with_memory_limit(num_bytes: int, fn: Callable[[Path], Any]) -> Callable[[Path], None]:
    """A case's ``run(tmp)`` that calls ``fn(tmp)`` under :func:`memory_limit`."""

    def run(tmp: Path) -> None:
        with memory_limit(num_bytes):
            fn(tmp)

    return run


def _last_lines(text: str, n: int = 12) -> str:
    lines = [ln.strip(" │╭╮╰╯─") for ln in text.splitlines()]
    return " ".join(ln for ln in lines if ln)[-2000:] if n else text


def _leftovers(tmp: Path) -> List[str]:
    return sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if re.search(r"\.tmp", p.name))


@contextlib.contextmanager
def _alarm(seconds: float):
    """SIGALRM after ``seconds``, restoring any timer already set (pytest-timeout's) afterwards."""

    def on_alarm(signum, frame):  # noqa: ARG001
        raise CaseTimeout()

    outer_remaining, _ = signal.getitimer(signal.ITIMER_REAL)
    start = time.monotonic()
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, min(seconds, outer_remaining) if outer_remaining > 0 else seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_remaining > 0:
            signal.setitimer(signal.ITIMER_REAL, max(1e-3, outer_remaining - (time.monotonic() - start)))


def run_case(case: Case, root: Optional[Path] = None) -> CaseResult:
    """Run one case in a fresh temp folder and classify the outcome (see the module docstring)."""
    tmp = Path(tempfile.mkdtemp(prefix="lf_case_", dir=root))
    start = time.perf_counter()
    try:
        try:
            with _alarm(case.timeout_s):
                case.run(tmp)
        except CaseTimeout:
            return CaseResult(case.name, "hang", time.perf_counter() - start, f"still running after {case.timeout_s:g} s")
        except case.error as exc:
            message = str(exc)
            if not re.search(case.match, message, flags=re.IGNORECASE | re.DOTALL):
                return CaseResult(case.name, "unclear", time.perf_counter() - start,
                                  f"{type(exc).__name__}: {message[:500]} (expected /{case.match}/)")  # fmt: skip
            left = _leftovers(tmp)
            if left:
                return CaseResult(case.name, "leftover", time.perf_counter() - start, f"temp files left: {left[:5]}")
            return CaseResult(case.name, "clean", time.perf_counter() - start, f"{type(exc).__name__}: {message[:300]}")
        except Exception as exc:  # noqa: BLE001 -- classifying is the point
            return CaseResult(case.name, "traceback", time.perf_counter() - start, f"{type(exc).__name__}: {str(exc)[:500]}")
        return CaseResult(case.name, "silent", time.perf_counter() - start, "no error raised")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def all_cases() -> List[Case]:
    """Every ``CASES`` list of ``tests/robustness/cases_*.py``, names checked for uniqueness."""
    import tests.robustness as package

    cases: List[Case] = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("cases_"):
            cases.extend(importlib.import_module(f"tests.robustness.{info.name}").CASES)
    names = [c.name for c in cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise AssertionError(f"duplicate case names: {dupes}")
    return cases


def summarize(results: Sequence[CaseResult]) -> Dict[str, int]:
    counts = {outcome: 0 for outcome in OUTCOMES}
    for r in results:
        counts[r.outcome] += 1
    return counts
