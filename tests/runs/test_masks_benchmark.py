"""``benchmarks/masks.py``: the simulated occluders and their masks, and the smoke run end to end."""

from __future__ import annotations

import json

import pytest
import torch

from langfield.data.procedural import ProceduralSceneConfig, make_procedural_dataset
from tests.benchmark_scripts import load_benchmark

pytestmark = pytest.mark.usefixtures("single_thread")  # the benchmark sets its threads; restored after


def test_occluders_change_exactly_the_masked_pixels_of_the_chosen_views():
    bench = load_benchmark("masks")
    clean = make_procedural_dataset(ProceduralSceneConfig(width=20, height=20, num_train=10, num_test=2, supersample=1))
    occluded, masked, clean_masked = bench.add_occluders(clean, fraction=0.5, area=0.15, seed=4)
    a, b, m = clean.split("train"), occluded.split("train"), masked.split("train").masks
    assert occluded.split("train").masks is None and torch.equal(masked.split("train").images, b.images)
    changed = (a.images != b.images).any(-1, keepdim=True) | (a.alphas != b.alphas)
    assert not bool((changed & m).any())  # nothing outside the rectangles changed
    hidden = ~m
    per_view = hidden.reshape(10, -1).sum(1)
    assert int((per_view > 0).sum()) == 5  # half the views
    assert all(abs(int(n) - 60) <= 12 for n in per_view if n > 0)  # ~15 % of 400 pixels
    assert bool((b.alphas[hidden] == 255).all())  # opaque
    assert torch.equal(occluded.split("test").images, clean.split("test").images)  # test views stay clean
    again = bench.add_occluders(clean, fraction=0.5, area=0.15, seed=4)[1].split("train").masks
    assert torch.equal(again, m)  # seeded
    assert torch.equal(clean_masked.split("train").images, a.images) and torch.equal(clean_masked.split("train").masks, m)


@pytest.mark.slow
def test_smoke_run_writes_rows_summary_and_panels(tmp_path):
    bench = load_benchmark("masks")
    out = tmp_path / "masks.json"
    bench.main(["--out", str(out), "--smoke", "--threads", "1"])
    report = json.loads(out.read_text())
    assert {r["setting"] for r in report["rows"]} == {"clean", "occluded", "masked", "clean_masked"}
    assert set(report["summary"]) == {f"gaussians/{s}" for s in ("clean", "occluded", "masked", "clean_masked")}
    assert "simulated" in report and report["settings"]["smoke"] is True
    assert (tmp_path / "masks_panels" / "gaussians_test0.png").is_file()
