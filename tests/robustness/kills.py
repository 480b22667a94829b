"""Kill-then-resume machinery shared by ``tests/test_reproducibility.py`` and ``benchmarks/robustness.py``.

Every job is a real ``python -m langfield.cli.main`` subprocess on a tiny procedural scene (CPU,
``OMP_NUM_THREADS=1``), as a user would start it. :func:`run_kill_checks` SIGKILLs jobs at random
moments after their first checkpoint (often in the middle of writing the next one), resumes them
with ``--resume`` and compares the final parameters bitwise with an uninterrupted run.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

import torch

from langfield.training.checkpoint import load_checkpoint

TINY_SCENE = ["--data", "procedural", "--procedural-size", "24", "--procedural-views", "6"]
COMMON = ["--checkpoint-every", "8", "--keep-last-checkpoints", "10", "--log-every", "4", "--eval-every", "0",
          "--skip-eval", "--seed", "3", "--device", "cpu", "--no-progress"]  # fmt: skip
MAX_STEPS = 40
METHODS: Dict[str, List[str]] = {
    # no --num-rays: NGP's adaptive batch (rays = target samples / running samples per ray) is in play,
    # so a resume that lost its running estimate takes a different batch and diverges
    "ngp": ["--method", "ngp", "--max-steps", str(MAX_STEPS), "--set", "target_samples_per_step=65536"],
    # refinement (densify / prune / opacity reset) inside the run, so the strategy state crosses the kill
    "gaussians": ["--method", "gaussians", "--max-steps", str(MAX_STEPS), "--num-rays", "256",
                  "--set", "strategy.refine_start_iter=4", "--set", "strategy.refine_every=6",
                  "--set", "strategy.reset_every=20"],  # fmt: skip
}
#: The language job: 24 fitting steps, so its phase Trainer checkpoints every 24 // 4 = 6 steps.
LANGUAGE = ["--teacher", "simulated", "--steps", "24", "--autoencoder-steps", "30", "--cse.rounds", "1",
            "--device", "cpu"]  # fmt: skip


class FinishedBeforeKill(Exception):
    """The job ended before the kill landed (the machine is faster than the kill point assumes)."""


def env() -> Dict[str, str]:
    """The parent's environment with this checkout's ``src`` first and one OpenMP thread."""
    out = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2] / "src")
    out["PYTHONPATH"] = src + (os.pathsep + out["PYTHONPATH"] if out.get("PYTHONPATH") else "")
    out["OMP_NUM_THREADS"] = "1"  # results must not depend on what else runs beside the suite
    return out


def cli(args: Sequence[str]) -> List[str]:
    return [sys.executable, "-m", "langfield.cli.main", *args]


def _run(args: Sequence[str]) -> None:
    proc = subprocess.run(cli(args), env=env(), capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"langfield {' '.join(args[:2])} failed (rc {proc.returncode}): {proc.stderr[-3000:]}")


def train(out: Path, method: str, *extra: str) -> None:
    """``langfield train`` of ``method`` on the tiny scene into ``out`` (raises AssertionError if it fails)."""
    _run(["train", *TINY_SCENE, *COMMON, *METHODS[method], "--output-dir", str(out), *extra])


def language(run_dir: Path) -> None:
    """``langfield language RUN_DIR`` with the simulated teacher (resumes by itself when interrupted)."""
    _run(["language", str(run_dir), *LANGUAGE])


def final_model(run_dir: Path) -> Dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "latest.ckpt", map_location="cpu")["model"]


def language_field(run_dir: Path) -> Dict[str, torch.Tensor]:
    state = torch.load(run_dir / "language" / "field.pt", map_location="cpu", weights_only=True)
    return {k: v for k, v in _flatten(state).items() if isinstance(v, torch.Tensor)}


def _flatten(obj: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(obj, dict):
        out: Dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): obj}


def assert_bitwise_equal(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    for key in a:
        assert a[key].shape == b[key].shape, f"{key}: {tuple(a[key].shape)} vs {tuple(b[key].shape)}"
        diff = (a[key].double() - b[key].double()).abs().max() if a[key].numel() else 0.0
        assert torch.equal(a[key], b[key]), f"{key}: max |diff| {float(diff):.3e}"


def temp_files(folder: Path) -> List[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp" in p.name)


def kill_after(cmd: List[str], ready: Callable[[], bool], *, delay_s: float) -> None:
    """Start ``cmd``; once ``ready()`` holds, wait ``delay_s`` and SIGKILL it.

    Raises :class:`FinishedBeforeKill` if the job ended before the kill, AssertionError if it never
    reached the kill point.
    """
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    try:
        while not ready():
            if proc.poll() is not None:
                raise AssertionError(f"ended before the kill point (rc {proc.returncode}): {proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("kill point never reached in 600 s")
            time.sleep(0.01)
        if delay_s > 0:
            time.sleep(delay_s)
        if proc.poll() is not None:
            raise FinishedBeforeKill(" ".join(cmd[3:5]))
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None and proc.returncode is None:
            proc.wait(timeout=60)
        if proc.stderr is not None:
            proc.stderr.close()


def first_checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "step_00000008.ckpt"


def straight_run(work: Path, method: str) -> Path:
    """The uninterrupted reference run of ``method`` (trained once per ``work`` folder)."""
    out = work / f"{method}_straight"
    if not (out / "checkpoints" / f"step_{MAX_STEPS:08d}.ckpt").exists():
        shutil.rmtree(out, ignore_errors=True)
        train(out, method)
    return out


def kill_resume_trial(work: Path, method: str, delay_s: float) -> Dict[str, Any]:
    """Kill a ``method`` run ``delay_s`` after its first checkpoint, resume it, compare with the straight run."""
    straight = straight_run(work, method)
    killed = work / f"{method}_killed"
    shutil.rmtree(killed, ignore_errors=True)
    args = ["train", *TINY_SCENE, *COMMON, *METHODS[method], "--output-dir", str(killed)]
    record: Dict[str, Any] = {"job": method, "kill_after_first_checkpoint_s": delay_s}
    try:
        kill_after(cli(args), first_checkpoint(killed).exists, delay_s=delay_s)
    except FinishedBeforeKill:
        return {**record, "killed": False}
    done = sorted(p.name for p in (killed / "checkpoints").glob("step_*.ckpt"))
    return _resume_and_compare(record, done, killed, lambda: train(killed, method, "--resume"),
                               lambda: assert_bitwise_equal(final_model(straight), final_model(killed)))  # fmt: skip


def _resume_and_compare(record: Dict[str, Any], checkpoints_at_kill: List[str], killed: Path,
                        resume: Callable[[], None], compare: Callable[[], None]) -> Dict[str, Any]:  # fmt: skip
    """After a kill that landed: ``resume()`` the job, ``compare()`` it with the straight run, fill ``record``."""
    record.update(killed=True, checkpoints_at_kill=checkpoints_at_kill, temp_files_after_kill=temp_files(killed))
    try:
        resume()
    except AssertionError as exc:
        return {**record, "resumed": False, "error": str(exc)[-500:]}
    record["resumed"] = True
    try:
        compare()
        record["exact"] = True
    except AssertionError as exc:
        record["exact"], record["difference"] = False, str(exc)[:300]
    record["temp_files_after_resume"] = temp_files(killed)
    shutil.rmtree(killed, ignore_errors=True)
    return record


def language_kill_trial(work: Path, delay_s: float) -> Dict[str, Any]:
    """Kill ``langfield language`` ``delay_s`` after its first fitting checkpoint, rerun it, compare field.pt."""
    base = straight_run(work, "gaussians")
    straight = work / "language_straight"
    if not (straight / "language" / "field.pt").exists():
        shutil.rmtree(straight, ignore_errors=True)
        shutil.copytree(base, straight)
        language(straight)
    killed = work / "language_killed"
    shutil.rmtree(killed, ignore_errors=True)
    shutil.copytree(base, killed)
    phases = killed / "language" / "phases"
    record: Dict[str, Any] = {"job": "language", "kill_after_first_checkpoint_s": delay_s}
    try:
        kill_after(cli(["language", str(killed), *LANGUAGE]), lambda: any(phases.glob("0_fit/checkpoints/step_*.ckpt")),
                   delay_s=delay_s)  # fmt: skip
    except FinishedBeforeKill:
        return {**record, "killed": False}
    done = sorted(str(p.relative_to(phases)) for p in phases.glob("*/checkpoints/step_*.ckpt"))
    return _resume_and_compare(record, done, killed, lambda: language(killed),
                               lambda: assert_bitwise_equal(language_field(straight), language_field(killed)))  # fmt: skip


def run_kill_checks(work_dir: Path, trials_per_method: int = 4, seed: int = 0,
                    progress: Callable[[str], None] = print) -> Dict[str, Any]:  # fmt: skip
    """Random-moment kills of NGP and Gaussians runs and of the language job, each resumed and compared.

    Returns counts for the benchmark JSON (``ok``: at least one kill landed and every resume was exact).
    """
    rng = random.Random(seed)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    trials: List[Dict[str, Any]] = []
    for method in sorted(METHODS):
        for _ in range(trials_per_method):
            delay = round(rng.uniform(0.0, 1.0), 3)
            trials.append(kill_resume_trial(work, method, delay))
            progress(f"kill/resume {method} +{delay:.3f} s: killed={trials[-1].get('killed')} "
                     f"exact={trials[-1].get('exact')}")  # fmt: skip
    for _ in range(max(1, trials_per_method // 2)):
        delay = round(rng.uniform(0.0, 1.0), 3)
        trials.append(language_kill_trial(work, delay))
        progress(f"kill/resume language +{delay:.3f} s: killed={trials[-1].get('killed')} exact={trials[-1].get('exact')}")
    killed = [t for t in trials if t.get("killed")]
    exact = sum(bool(t.get("exact")) for t in killed)
    return {
        "ok": bool(killed) and exact == len(killed),
        "kills": len(killed),
        "kills_survived": sum(bool(t.get("resumed")) for t in killed),
        "resumes_exact": exact,
        "temp_files_left_after_resume": sum(len(t.get("temp_files_after_resume", [])) for t in killed),
        "trials": trials,
        "note": f"kill -9 at a random moment 0-1 s after the first checkpoint (step 8) of a {MAX_STEPS}-step run "
                "(24x24 procedural scene, CPU, OMP_NUM_THREADS=1), then --resume; language: 0-1 s after the first "
                "checkpoint of its first fitting phase, then rerun; exact = final parameters (field.pt) bitwise "
                "equal to an uninterrupted run",
    }  # fmt: skip
