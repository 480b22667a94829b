"""PersistentSimulatedTeacher: mistakes fixed by (object, viewing sector), small-object bleeding, modality gap."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from langfield.language.teachers.loading import load_teacher
from langfield.language.teachers.persistent import (
    PersistentErrorConfig,
    PersistentSimulatedTeacher,
    camera_azimuth,
)
from langfield.language.teachers.simulated import SimulatedTeacher, SimulatedTeacherConfig
from langfield.language.vocabulary import NUM_PARAPHRASES, paraphrase_queries, paraphrase_set
from tests.language.teachers.test_simulated import LABELS, _designed_encoder

NO_VIEW_NOISE = SimulatedTeacherConfig(blur_fraction=0.0, noise=0.0, global_mix=0.0, confusion_view_prob=0.0)
NO_GAP = dict(modality_gap_cosine=1.0, bleed=0.0)


def _camera(azimuth: float, radius: float = 3.0, height: float = 1.0) -> torch.Tensor:
    c2w = torch.zeros(3, 4)
    c2w[:3, :3] = torch.eye(3)
    c2w[:, 3] = torch.tensor([radius * math.cos(azimuth), radius * math.sin(azimuth), height])
    return c2w


def _label_map(size: int = 32) -> torch.Tensor:
    ids = torch.ones(size, size, dtype=torch.int64)  # ground
    ids[:4] = 0  # background strip
    ids[6:20, 4:18] = 3  # a large box
    ids[24:27, 24:27] = 2  # a small sphere (9 px)
    return ids


def _teacher(config=NO_VIEW_NOISE, **errors) -> PersistentSimulatedTeacher:
    return PersistentSimulatedTeacher(LABELS, _designed_encoder(), config, errors=PersistentErrorConfig(**errors))


def _decoded(teacher, feats):
    """Per-pixel label id whose text embedding is most similar."""
    return (feats @ teacher.label_embeddings.T).argmax(-1)


@pytest.mark.parametrize("layout", ["arc", "sectors"])
def test_mistakes_depend_on_object_and_sector_not_on_the_view(layout):
    teacher = _teacher(persistent_prob=0.5, layout=layout, **NO_GAP)
    ids = _label_map()
    image = torch.zeros(32, 32, 3, dtype=torch.uint8)
    seen_mistaken, seen_right = 0, 0
    for a in range(16):
        az = 2 * math.pi * (a + 0.5) / 16
        cam = _camera(az)
        one = _decoded(teacher, teacher.dense_features(image, view_key=f"train/{a}", semantics=ids, camera=cam))
        # another view (key, distance, height) from the same azimuth: the same mistakes
        two = _decoded(teacher, teacher.dense_features(image, view_key=f"x/{a}", semantics=ids, camera=_camera(az, 5.0, 2.0)))
        assert torch.equal(one, two)
        expected = teacher.persistent_confusion(cam)
        box_pixels = one[ids == 3]
        if "box" in expected:
            assert expected["box"] == "cylinder" and bool((box_pixels == LABELS.index("cylinder")).all())
            seen_mistaken += 1
        else:
            assert bool((box_pixels == 3).all())
            seen_right += 1
        # whole regions only; background never confused
        assert bool((one[ids == 0] == 0).all())
    assert seen_mistaken > 0 and seen_right > 0  # p = 0.5 of the directions


@pytest.mark.parametrize("layout", ["arc", "sectors"])
def test_prob_zero_and_one(layout):
    ids = _label_map()
    image = torch.zeros(32, 32, 3, dtype=torch.uint8)
    cam = _camera(1.0)
    never = _decoded(t := _teacher(persistent_prob=0.0, layout=layout, **NO_GAP), t.dense_features(image, view_key="v", semantics=ids, camera=cam))
    assert torch.equal(never, ids)
    always = _teacher(persistent_prob=1.0, layout=layout, **NO_GAP)
    got = _decoded(always, always.dense_features(image, view_key="v", semantics=ids, camera=cam))
    related = torch.tensor([LABELS.index(always.related[n]) if always.related[n] else i for i, n in enumerate(LABELS)])
    assert torch.equal(got, related[ids])


def test_sector_fraction_matches_probability():
    teacher = _teacher(persistent_prob=0.3, layout="sectors", azimuth_bins=64, **NO_GAP)
    mistaken = [
        "sphere" in teacher.persistent_confusion(_camera(2 * math.pi * (a + 0.5) / 64, 3.0)) for a in range(64)
    ]
    assert 0.15 <= sum(mistaken) / 64 <= 0.45


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_arc_is_one_contiguous_range_of_the_given_width(seed):
    """Every object (with a related label) is wrong from exactly ``persistent_prob`` of the
    directions, in one contiguous arc, wherever the seed puts it."""
    teacher = _teacher(persistent_prob=0.3, persistent_seed=seed, **NO_GAP)
    n = 720
    starts = set()
    for name in ("ground", "sphere", "box"):
        mistaken = [name in teacher.persistent_confusion(_camera(2 * math.pi * (a + 0.5) / n)) for a in range(n)]
        assert abs(sum(mistaken) / n - 0.3) <= 2 / n
        rising = [a for a in range(n) if mistaken[a] and not mistaken[a - 1]]  # rising edges on the circle
        assert len(rising) == 1
        starts.add(rising[0])
    assert len(starts) > 1  # objects get their own arcs


def test_strength_scales_the_arc():
    teacher = PersistentSimulatedTeacher(
        LABELS, _designed_encoder(), dataclasses.replace(NO_VIEW_NOISE, strength=0.5),
        errors=PersistentErrorConfig(persistent_prob=0.4, **NO_GAP),
    )  # fmt: skip
    n = 400
    share = sum("box" in teacher.persistent_confusion(_camera(2 * math.pi * (a + 0.5) / n)) for a in range(n)) / n
    assert abs(share - 0.2) <= 2 / n


def test_stored_specs_without_a_layout_load_as_sectors(monkeypatch):
    import langfield.language.teachers.loading as loading

    monkeypatch.setattr(loading, "load_text_encoder", lambda model=None: _designed_encoder())
    assert load_teacher("simulated-persistent", LABELS).errors.layout == "arc"
    spec = load_teacher("simulated-persistent", LABELS).spec()
    assert load_teacher(spec).errors.layout == "arc"
    del spec["errors"]["layout"]  # a field distilled before layouts existed
    assert load_teacher(spec).errors.layout == "sectors"


def test_redraws_change_view_noise_not_persistent_mistakes():
    cfg = dataclasses.replace(NO_VIEW_NOISE, noise=0.3)
    teacher = _teacher(cfg, persistent_prob=1.0, **NO_GAP)
    ids = _label_map()
    image = torch.zeros(32, 32, 3, dtype=torch.uint8)
    cam = _camera(0.3)
    f0 = teacher.dense_features(image, view_key="v", semantics=ids, camera=cam)
    f0b = teacher.dense_features(image, view_key="v", semantics=ids, camera=cam, draw=0)
    f1 = teacher.dense_features(image, view_key="v", semantics=ids, camera=cam, draw=1)
    assert torch.equal(f0, f0b) and not torch.allclose(f0, f1)
    box = ids == 3
    mean0, mean1 = F.normalize(f0[box].mean(0), dim=0), F.normalize(f1[box].mean(0), dim=0)
    cyl = teacher.label_embeddings[LABELS.index("cylinder")]
    assert float(mean0 @ cyl) > 0.9 and float(mean1 @ cyl) > 0.9  # both draws make the same mistake


def test_modality_gap_cosine_and_ranking():
    teacher = _teacher(persistent_prob=0.0, modality_gap_cosine=0.25, bleed=0.0)
    ids = _label_map()
    f = teacher.dense_features(torch.zeros(32, 32, 3, dtype=torch.uint8), view_key="v", semantics=ids, camera=_camera(0.0))
    own = (f * teacher.label_embeddings[ids]).sum(-1)
    assert torch.allclose(own, torch.full_like(own, 0.25), atol=1e-5)
    assert torch.allclose(f.norm(dim=-1), torch.ones(32, 32), atol=1e-5)
    assert torch.equal(_decoded(teacher, f), ids)  # the gap favours no label
    assert float((teacher.gap_direction @ teacher.label_embeddings.T).abs().max()) < 1e-5


def test_small_objects_bleed_more():
    cfg = dataclasses.replace(NO_VIEW_NOISE, blur_fraction=3 / 32)
    ids = _label_map()
    image = torch.zeros(32, 32, 3, dtype=torch.uint8)
    sphere = LABELS.index("sphere")

    def spread(bleed: float, label: int) -> int:
        t = _teacher(cfg, persistent_prob=0.0, modality_gap_cosine=1.0, bleed=bleed)
        f = t.dense_features(image, view_key="v", semantics=ids, camera=_camera(0.0))
        target = t.label_embeddings[label]
        clean = t.label_embeddings[ids] @ target  # each pixel's own label vs the object's
        leaks = (f @ target > clean + 1e-3) & (ids != label)  # pixels pulled toward the object
        return int(leaks.sum())

    assert spread(2.0, sphere) > spread(0.0, sphere)
    assert spread(2.0, 3) == spread(0.0, 3)  # the large box keeps the base kernel


def test_errors_name_the_problem():
    teacher = _teacher(**NO_GAP)
    ids = _label_map()
    image = torch.zeros(32, 32, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="camera"):
        teacher.dense_features(image, view_key="v", semantics=ids)
    with pytest.raises(ValueError, match="camera must be"):
        teacher.dense_features(image, view_key="v", semantics=ids, camera=torch.zeros(3))
    with pytest.raises(ValueError, match="draw"):
        teacher.dense_features(image, view_key="v", semantics=ids, camera=_camera(0.0), draw=-1)
    with pytest.raises(ValueError, match="persistent_prob"):
        PersistentErrorConfig(persistent_prob=1.5)
    with pytest.raises(ValueError, match="modality_gap_cosine"):
        PersistentErrorConfig(modality_gap_cosine=0.0)
    with pytest.raises(ValueError, match="azimuth_bins"):
        PersistentErrorConfig(azimuth_bins=0)
    with pytest.raises(ValueError, match="layout"):
        PersistentErrorConfig(layout="ring")


def test_spec_round_trip_and_name(monkeypatch):
    import langfield.language.teachers.loading as loading

    monkeypatch.setattr(loading, "load_text_encoder", lambda model=None: _designed_encoder())
    teacher = load_teacher("simulated-persistent", LABELS)
    assert isinstance(teacher, PersistentSimulatedTeacher) and teacher.simulated
    assert teacher.name.startswith("simulated-persistent[")
    assert teacher.config.confusion_view_prob == 0.2  # the persistent preset's per-view confusion
    spec = teacher.spec()
    spec["errors"]["persistent_prob"] = 0.7
    again = load_teacher(spec)
    assert again.errors.persistent_prob == 0.7 and again.config == teacher.config
    ids = _label_map()
    image = torch.zeros(32, 32, 3, dtype=torch.uint8)
    spec["errors"]["persistent_prob"] = teacher.errors.persistent_prob
    same = load_teacher(spec)
    a = teacher.dense_features(image, view_key="train/1", semantics=ids, camera=_camera(1.0))
    assert torch.equal(a, same.dense_features(image, view_key="train/1", semantics=ids, camera=_camera(1.0)))
    with pytest.raises(ValueError, match="teacher.errors"):
        load_teacher({**spec, "errors": {"nonsense": 1}})


def test_base_teacher_redraws_and_ignores_camera():
    teacher = SimulatedTeacher(LABELS, _designed_encoder())
    ids = _label_map()
    image = torch.zeros(32, 32, 3, dtype=torch.uint8)
    a = teacher.dense_features(image, view_key="v", semantics=ids)
    assert torch.equal(a, teacher.dense_features(image, view_key="v", semantics=ids, camera=_camera(2.0)))
    assert not torch.allclose(a, teacher.dense_features(image, view_key="v", semantics=ids, draw=1))


def test_camera_azimuth():
    assert camera_azimuth(_camera(0.25)) == pytest.approx(0.25)
    assert camera_azimuth(_camera(-0.25)) == pytest.approx(2 * math.pi - 0.25)


def test_paraphrases_are_never_label_strings():
    labels = ["background", "ground", "sphere", "box", "cylinder", "ellipsoid", "teapot"]
    table = paraphrase_queries(labels)
    for name in labels[1:]:
        assert len(table[name]) == NUM_PARAPHRASES
        assert all(q not in labels for q in table[name])
    assert table["background"] == ["background"] * NUM_PARAPHRASES
    assert "teapot" in table["teapot"][0]
    assert paraphrase_set(labels, 0)[2] == "a ball"
    with pytest.raises(ValueError, match="k must be"):
        paraphrase_set(labels, NUM_PARAPHRASES)
