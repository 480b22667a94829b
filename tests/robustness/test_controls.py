"""Controls for the bad-input table: the same commands *without* the bad input succeed.

A table case passes when its command is refused; these tests make sure the refusal comes from the
one bad option or damaged file, not from a baseline that never worked (and that the checks do not
refuse good input: a finite checkpoint evaluates, a query for an object in the scene is found, two
queries that differ only in punctuation write different files).
"""

from __future__ import annotations

import json

import pytest

from langfield.cli.main import main
from tests.robustness import fixtures as fx
from tests.robustness.cases_cli import TINY, TINY_GS, TINY_NGP


@pytest.mark.parametrize(
    "base",
    [TINY_NGP, TINY_GS, ["--method", "nerf", "--set", "num_coarse=4", "--set", "num_fine=4"],
     ["--method", "mipnerf", "--set", "num_samples=4"]],
    ids=["ngp", "gaussians", "nerf", "mipnerf"],
)  # fmt: skip
def test_train_baseline_runs(tmp_path, base):
    out = tmp_path / "run"
    assert main(["train", *TINY, *base, "--skip-eval", "--output-dir", str(out)]) == 0
    assert (out / "checkpoints" / "latest.ckpt").is_file() and (out / "run.json").is_file()


def test_resume_baseline_continues(tmp_path):
    run = fx.copy_run("ngp", tmp_path)
    argv = ["train", *TINY, *fx.set_args("ngp"), "--skip-eval", "--max-steps", "5", "--resume", "--output-dir", str(run)]
    assert main(argv) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "resume" and r["step"] == 3 for r in records)
    assert max(r.get("step", 0) for r in records) == 5


def test_finite_checkpoint_evaluates_and_renders(tmp_path):
    run = fx.copy_run("ngp", tmp_path)
    assert main(["eval", str(run), "--device", "cpu", "--no-write-renders"]) == 0
    assert json.loads((run / "eval_test.json").read_text())["num_images"] == 8
    assert main(["render", str(run), "--path", "orbit", "--num-frames", "2", "--fps", "2", "--device", "cpu"]) == 0
    gs = fx.copy_run("gaussians", tmp_path, "gs")
    assert main(["export", str(gs)]) == 0 and (gs / "export" / "point_cloud.ply").is_file()


def test_queries_differing_in_punctuation_write_different_files(tmp_path):
    run = fx.copy_run("ngp+language", tmp_path)
    out = tmp_path / "q"
    for text in ("red chair", "red-chair", "red_chair"):
        assert main(["query", str(run), "--text", text, "--out-dir", str(out), "--device", "cpu"]) == 0
    written = sorted(p.name for p in out.glob("*_relevancy.png"))
    assert len(written) == 3, written


def test_an_object_in_the_scene_is_localized(tmp_path):
    from langfield.runs.language import load_language_scene

    scene = load_language_scene(fx.copy_run("ngp+language", tmp_path), "cpu")
    loc = scene.localize("ground")
    assert loc.num_points > 0 and loc.score >= 0.5
    # the ground plane sits at the bottom of the procedural scene box [-1, 1]^3
    assert float(loc.aabb[0].min()) >= -1.5 and float(loc.aabb[1].max()) <= 1.5


def test_undamaged_language_files_resume_without_work(tmp_path):
    from langfield.runs.language import train_language

    run = fx.copy_run("ngp+language", tmp_path)
    field = run / "language" / "field.pt"
    before = field.stat().st_mtime_ns
    train_language(run, "simulated", fx.language_config(), device="cpu", progress=False)
    assert field.stat().st_mtime_ns == before


def test_labels_from_a_file(tmp_path):
    run = fx.copy_run("ngp+language", tmp_path)
    labels = tmp_path / "labels.txt"
    labels.write_text("# scene labels\nground\n\nsphere\n", encoding="utf-8")
    out = tmp_path / "q"
    assert main(["query", str(run), "--labels", "box", f"@{labels}", "--out-dir", str(out), "--device", "cpu"]) == 0
    legend = sorted(p.name for p in out.glob("segmentation_test0*"))
    assert legend, "segmentation written"
