"""The classifier of the bad-input table tells each outcome apart (so the table cannot pass by accident)."""

from __future__ import annotations

import time

from tests.robustness.framework import Case, run_case


def _raise(exc):
    def run(tmp):
        raise exc

    return run


def test_outcomes(tmp_path):
    clean = Case("t/clean", _raise(ValueError("data.json: field 'fl_x' must be finite")), ValueError, r"fl_x")
    unclear = Case("t/unclear", _raise(ValueError("bad value")), ValueError, r"fl_x")
    traceback = Case("t/traceback", _raise(ZeroDivisionError("division by zero")), ValueError, r".")
    silent = Case("t/silent", lambda tmp: None, ValueError, r".")
    hang = Case("t/hang", lambda tmp: time.sleep(5), ValueError, r".", timeout_s=0.2)

    def leave_temp(tmp):
        (tmp / ".out.json.tmp123").write_text("{")
        raise ValueError("out.json: refused")

    leftover = Case("t/leftover", leave_temp, ValueError, r"out\.json")
    got = {c.name: run_case(c, root=tmp_path).outcome for c in (clean, unclear, traceback, silent, hang, leftover)}
    assert got == {"t/clean": "clean", "t/unclear": "unclear", "t/traceback": "traceback", "t/silent": "silent",
                   "t/hang": "hang", "t/leftover": "leftover"}  # fmt: skip
    assert not any(tmp_path.iterdir()), "case folders must be removed"
