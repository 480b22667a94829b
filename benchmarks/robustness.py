"""Run the bad-input table (and the kill/resume checks) and report how langfield copes.

Every case of ``tests/robustness/cases_*.py`` (:func:`tests.robustness.framework.all_cases`) is run
with :func:`~tests.robustness.framework.run_case` and classified: ``clean`` (the expected error,
naming the file/field/option, nothing half-written), ``unclear`` (right kind of error, message
does not say what is wrong), ``leftover`` (a temp file stayed behind), ``traceback`` (any other
exception), ``silent`` (no error: the worst), ``hang`` (past the case's timeout). When
``tests/robustness/kills.py`` exists, its ``run_kill_checks(work_dir) -> dict`` (``kill -9`` in the
middle of training and checkpoint writes, then resume) runs too and its result is stored under
``"kills"``.

    python benchmarks/robustness.py --out bench_out/robustness.json
    python benchmarks/robustness.py --filter cli/ --out /tmp/cli.json      # a subset

Writes JSON: ``counts`` (``inputs_tried`` and one count per outcome), ``by_area`` (the same per
case area), ``cases`` (name, outcome, seconds, detail), ``kills`` and ``machine``; prints a table.
The exit status is 1 when any case is not ``clean`` (or the kill checks report a failure).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `tests.robustness` lives beside `benchmarks/`
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from tests.robustness.framework import OUTCOMES, CaseResult, all_cases, run_case  # noqa: E402

console = Console(width=max(Console().width, 110))  # the table stays readable when piped to a file


def machine_info() -> Dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def run_cases(name_filter: str, root: Path) -> List[CaseResult]:
    cases = [c for c in all_cases() if name_filter in c.name]
    results: List[CaseResult] = []
    columns = (TextColumn("[bold blue]bad inputs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[last]}"))  # fmt: skip
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("cases", total=len(cases), last="")
        for case in cases:
            result = run_case(case, root=root)
            results.append(result)
            mark = "" if result.outcome == "clean" else f"[red]{result.outcome}[/] "
            bar.update(task, advance=1, last=f"{mark}{case.name}")
    return results


def run_kills(work_dir: Path) -> Optional[Dict[str, Any]]:
    """``tests.robustness.kills.run_kill_checks(work_dir)`` when that module exists, else ``None``."""
    try:
        module = importlib.import_module("tests.robustness.kills")
    except ModuleNotFoundError as err:
        if err.name in ("tests.robustness.kills",):
            return None
        raise
    start = time.perf_counter()
    try:
        out = module.run_kill_checks(work_dir)
    except Exception as err:  # noqa: BLE001 -- report it in the JSON instead of losing the table
        return {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(), "ok": False}
    out = dict(out) if isinstance(out, dict) else {"result": out}
    out.setdefault("seconds", time.perf_counter() - start)
    return out


def summarize(results: List[CaseResult]) -> Dict[str, Any]:
    counts = Counter(r.outcome for r in results)
    by_area: Dict[str, Counter] = defaultdict(Counter)
    for r in results:
        by_area[r.name.split("/", 1)[0]][r.outcome] += 1
    return {
        "counts": {"inputs_tried": len(results), **{o: counts.get(o, 0) for o in OUTCOMES}},
        "by_area": {area: {"inputs_tried": sum(c.values()), **{o: c.get(o, 0) for o in OUTCOMES}}
                    for area, c in sorted(by_area.items())},  # fmt: skip
    }


def print_report(report: Dict[str, Any]) -> None:
    table = Table(title="bad-input table")
    table.add_column("area")
    for col in ("inputs_tried", *OUTCOMES):
        table.add_column(col, justify="right")
    for area, row in [*report["by_area"].items(), ("all", report["counts"])]:
        table.add_row(area, *(str(row[c]) for c in ("inputs_tried", *OUTCOMES)), style="bold" if area == "all" else None)
    console.print(table)
    bad = [c for c in report["cases"] if c["outcome"] != "clean"]
    for c in bad[:40]:
        console.print(f"[red]{c['outcome']:9s}[/] {c['name']}: {c['detail'][:200]}", markup=True, highlight=False)
    kills = report.get("kills")
    if kills is not None:
        kt = Table(title="kill / resume checks")
        kt.add_column("key")
        kt.add_column("value", justify="right")
        for key, value in kills.items():
            if isinstance(value, (int, float, str, bool)) or value is None:
                kt.add_row(str(key), str(value)[:80])
        console.print(kt)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--filter", default="", help="only cases whose name contains this")
    parser.add_argument("--skip-kills", action="store_true", help="do not run the kill/resume checks")
    parser.add_argument("--work-dir", type=Path, default=None, help="scratch folder (default: a temp folder)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="lf_robustness_", dir=args.work_dir) as work:
        work_dir = Path(work)
        start = time.perf_counter()
        results = run_cases(args.filter, work_dir)
        report: Dict[str, Any] = summarize(results)
        report["cases"] = [{"name": r.name, "outcome": r.outcome, "seconds": round(r.seconds, 4), "detail": r.detail}
                           for r in results]  # fmt: skip
        report["cases_seconds"] = time.perf_counter() - start
        kills_dir = work_dir / "kills"
        kills_dir.mkdir()
        kills = None if args.skip_kills else run_kills(kills_dir)
        if kills is not None:
            report["kills"] = kills
    report["machine"] = machine_info()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    print_report(report)
    console.print(f"wrote {args.out}")
    kills_failed = kills is not None and kills.get("ok") is False
    return 1 if report["counts"]["clean"] != report["counts"]["inputs_tried"] or kills_failed else 0


if __name__ == "__main__":
    sys.exit(main())
