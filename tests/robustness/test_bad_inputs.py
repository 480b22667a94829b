"""Every case of the bad-input table (``tests/robustness/cases_*.py``) must be refused cleanly."""

from __future__ import annotations

import pytest

from tests.robustness.framework import all_cases, run_case

CASES = all_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_cleanly(case, tmp_path):
    result = run_case(case, root=tmp_path)
    assert result.outcome == "clean", f"{case.name}: {result.outcome}: {result.detail}"


def test_table_is_large():
    assert len(CASES) >= 250, f"only {len(CASES)} bad inputs in the table"
