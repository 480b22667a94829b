"""The README's promises, checked end to end in separate processes (CPU):

- two identical ``langfield train`` runs end with bitwise-equal parameters (seeding happens before any
  parameter exists; torch's per-process initial seed must not leak in);
- a run killed with SIGKILL after its first checkpoint (possibly in the middle of writing the next
  one) and resumed with ``--resume`` ends bitwise equal to an uninterrupted run (sampler, RNG,
  optimiser, scheduler, strategy and adaptive-batch state are all in the checkpoint);
- the same for the language distillation job, killed in the middle of a phase.

The jobs and the kill machinery live in :mod:`tests.robustness.kills` (``benchmarks/robustness.py``
uses them too, with random kill moments).
"""

from __future__ import annotations

import pytest

from tests.robustness import kills

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """One folder for the module: each method's uninterrupted run (:func:`kills.straight_run`) is
    trained once and serves every test below (each test still trains it itself when run alone)."""
    return tmp_path_factory.mktemp("reproducibility")


@pytest.mark.parametrize("method", sorted(kills.METHODS))
def test_two_identical_runs_are_bitwise_equal(method, work, tmp_path):
    first = kills.straight_run(work, method)
    kills.train(tmp_path / "b", method)
    kills.assert_bitwise_equal(kills.final_model(first), kills.final_model(tmp_path / "b"))


@pytest.mark.parametrize("method", sorted(kills.METHODS))
def test_kill_then_resume_equals_uninterrupted(method, work):
    try:
        record = kills.kill_resume_trial(work, method, delay_s=0.05)
    except kills.FinishedBeforeKill:
        pytest.skip("the run finished before the kill landed (machine faster than the test assumes)")
    if not record["killed"]:
        pytest.skip("the run finished before the kill landed (machine faster than the test assumes)")
    assert f"step_{kills.MAX_STEPS:08d}.ckpt" not in record["checkpoints_at_kill"], "the kill came too late"
    assert record.get("resumed"), record.get("error")
    assert record["exact"], record.get("difference")
    assert not record["temp_files_after_resume"], "temp files stranded by the kill were not swept"


def test_language_job_killed_mid_phase_resumes_exactly(work):
    record = kills.language_kill_trial(work, delay_s=0.0)
    if not record["killed"] or any(c.startswith("1_") for c in record["checkpoints_at_kill"]):
        pytest.skip("the first fitting phase finished before the kill landed (machine faster than assumed)")
    assert record.get("resumed"), record.get("error")
    assert record["exact"], record.get("difference")
    assert not record["temp_files_after_resume"], "temp files stranded by the kill were not swept"
