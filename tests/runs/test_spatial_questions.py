"""Spatial questions on a trained language run: ``LanguageScene.relation``, ``run_queries(ask=...)``
and ``langfield query --ask`` on the shared tiny NGP language run; the boundary F-score through
``evaluate_semantics``."""

from __future__ import annotations

import json

import pytest
import torch

from langfield.cli.main import main
from langfield.language.evaluation import evaluate_semantics
from langfield.language.queries import QueryNotFoundError
from langfield.runs.language import load_language_scene, run_queries
from tests.benchmark_scripts import load_benchmark, unload_benchmark

pytestmark = pytest.mark.usefixtures("single_thread")


# A 15-step field rarely clears LERF's 0.5 relevancy floor of localisation ("not found" is tested on
# an exact scene in tests/language/test_spatial.py); min_relevancy=0 keeps these tests about the path.


@pytest.fixture(scope="module")
def scene(tiny_ngp_language_run):
    return load_language_scene(tiny_ngp_language_run, "cpu")


def test_relation_answers_from_the_fields_localisations(scene):
    left = scene.relation("is the sphere left of the box?", "test", 0, min_relevancy=0.0, max_views=4, locate_by="relevancy")
    assert left.answer in ("yes", "no") and 0.5 <= left.confidence <= 1.0
    for name in ("sphere", "box"):
        ev = left.evidence["objects"][name]
        assert len(ev["point_normalised"]) == 3 and ev["depth"] > 0 and ev["image_xy"] is not None
    # The same localisations answer the mirrored question the same way (cached per name).
    right = scene.relation("is the box right of the sphere?", "test", 0, min_relevancy=0.0, max_views=4, locate_by="relevancy")
    assert right.answer == left.answer
    assert right.evidence["objects"]["sphere"] == left.evidence["objects"]["sphere"]
    closer = scene.relation("which is closer, the sphere or the box?", "test", 0, min_relevancy=0.0, max_views=4, locate_by="relevancy")
    depths = closer.evidence["compared"]["depth"]
    assert closer.answer == min(depths, key=depths.get)
    with pytest.raises(ValueError, match="out of range"):
        scene.relation("is the sphere left of the box?", "test", 99)


def test_relation_places_names_on_the_object_map(scene):
    from langfield.language.objects import ObjectMapConfig

    omap = scene.objects(config=ObjectMapConfig(max_views=4))
    assert omap is scene.objects(config=ObjectMapConfig(max_views=4))  # cached
    assert omap.vocabulary == [lab for lab in scene.dataset.labels if lab != "background"] and omap.objects
    names = [o.name for o in omap.objects if o.name is not None]
    assert len(names) == len(set(names)) and set(names) <= set(omap.vocabulary)  # exclusive naming
    for o in omap.objects:
        assert bool(((o.aabb[0] <= o.point) & (o.point <= o.aabb[1])).all()) and o.num_views >= 1
        assert sum(o.scores.values()) == pytest.approx(1.0, abs=1e-4) and o.best_name in omap.vocabulary
    a, b = names[0], (names[1] if len(names) > 1 else names[0])
    if a != b:
        ans = scene.relation(f"which is closer, the {a} or the {b}?", "test", 0, max_views=4)
        depths = ans.evidence["compared"]["depth"]
        assert ans.answer == min(depths, key=depths.get)
        obj = omap.named(a)[0]
        assert ans.evidence["objects"][a]["point_normalised"] == pytest.approx(obj.point.tolist(), abs=1e-6)
    assert ans.evidence["objects"][a]["placed_by"].startswith("object map") if a != b else True
    missing = [v for v in omap.vocabulary if v not in names]
    if missing:  # a name no object was given falls back to its relevant pixels, or is not found
        with pytest.raises(QueryNotFoundError, match="no object of the scene was given this name"):
            scene.relation(f"is the {missing[0]} left of the {a}?", "test", 0, max_views=4, min_relevancy=1.0)
        fallback = scene.relation(f"is the {missing[0]} left of the {a}?", "test", 0, max_views=4, min_relevancy=0.0)
        assert fallback.evidence["objects"][missing[0]]["placed_by"].startswith("relevancy")
    # Text outside the vocabulary goes to the object whose mean feature is most relevant to it.
    free = scene.relation(f"is the round thing left of the {a}?", "test", 0, max_views=4, min_relevancy=0.0)
    assert free.answer in ("yes", "no") and "round thing" in free.evidence["objects"]
    with pytest.raises(QueryNotFoundError, match="relevant enough"):
        scene.relation(f"is the round thing left of the {a}?", "test", 0, max_views=4, min_relevancy=1.0)
    with pytest.raises(ValueError, match="locate_by"):
        scene.relation(f"is the {a} left of the {b}?", "test", 0, locate_by="nearest")
    # A vocabulary of one's own names the objects and is what "on top of" considers.
    vocab = ["ground", "sphere", "box"]
    top = scene.relation("what is on top of the ground?", "test", 0, max_views=4, vocabulary=vocab, min_relevancy=0.0)
    assert set(top.evidence["candidates"]) | set(top.evidence.get("not_found", [])) == {"sphere", "box"}
    assert scene.objects(vocab, config=ObjectMapConfig(max_views=4)).vocabulary == vocab


def test_query_ask_writes_the_answer_and_refuses_bad_questions(tiny_ngp_language_run, tmp_path, capsys):
    out = tmp_path / "q"
    rc = main(["query", str(tiny_ngp_language_run), "--ask", "Which is larger, the sphere or the box?", "--view", "1",
               "--min-relevancy", "0", "--locate-by", "relevancy", "--out-dir", str(out), "--device", "cpu"])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().err  # the CLI's console writes to stderr
    assert "Which is larger, the sphere or the box? -> " in printed and "confidence" in printed
    files = list(out.glob("*_answer.json"))
    assert len(files) == 1
    ans = json.loads(files[0].read_text())
    assert ans["kind"] == "larger" and ans["answer"] in ("sphere", "box") and (ans["split"], ans["view"]) == ("test", 1)
    sizes = ans["evidence"]["compared"]["size"]
    assert ans["answer"] == max(sizes, key=sizes.get) and ans["objects"] == [ans["answer"]]
    # --objects writes the object map and a view with every object's box.
    rc = main(["query", str(tiny_ngp_language_run), "--objects", "--view", "1", "--out-dir", str(out), "--device", "cpu"])
    assert rc == 0
    omap = json.loads((out / "objects.json").read_text())
    assert omap["objects"] and omap["vocabulary"] and omap["assignment"] == "exclusive"
    assert {"name", "best_name", "point", "aabb", "num_points", "scores"} <= set(omap["objects"][0])
    from langfield.io.images import read_image

    drawn = read_image(out / "objects_test1.png")
    assert drawn.shape[0] >= 24 and drawn.shape[1] > 24  # the 24x24 view and its legend
    capsys.readouterr()
    # A question outside the grammar is refused before the run is loaded.
    assert main(["query", str(tiny_ngp_language_run), "--ask", "how big is the sphere?", "--device", "cpu"]) == 2
    assert "not understood" in capsys.readouterr().err
    with pytest.raises(ValueError, match="nothing to ask"):
        run_queries(tiny_ngp_language_run)


def test_evaluate_semantics_reports_boundary_f(tiny_scene):
    test = tiny_scene.split("test")
    num = len(tiny_scene.labels)
    emb = torch.eye(num)
    exact = evaluate_semantics(lambda i: emb[test.semantics[i].long()], test, emb, emb[:1])
    assert exact["miou"] == 1.0 and exact["boundary_f"] == 1.0 and exact["boundary_tolerance_px"] == 1
    shifted = evaluate_semantics(lambda i: emb[test.semantics[i].long().roll(3, dims=1)], test, emb, emb[:1])
    assert shifted["boundary_f"] < 0.9 and len(shifted["per_class_boundary_f"]) == num


def test_semantics_benchmark_scores_spatial_questions_on_a_run(scene):
    """The benchmark's ``spatial_accuracy`` path (questions from the true procedural objects and the
    test cameras, answered by the run) without running the benchmark."""
    try:
        res = load_benchmark("semantics")._spatial(scene, scene.dataset.split("test"), "field+rsr+cse", max_views=4)
    finally:
        unload_benchmark("semantics")
    assert res["num_questions"] > 20 and set(res["by_kind"]) >= {"left_of", "right_of", "closer", "larger"}
    assert res["num_correct"] == round(res["accuracy"] * res["num_questions"])
    assert sum(k["num"] for k in res["by_kind"].values()) == res["num_questions"]
