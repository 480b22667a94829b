"""evaluate_semantics with distractors: thresholded localization must say "not here" for absent queries."""

from __future__ import annotations

import torch

from langfield.language.evaluation import evaluate_semantics


class _Split:
    def __init__(self, semantics: torch.Tensor) -> None:
        self.semantics = semantics
        self.height, self.width = semantics.shape[1:]

    def __len__(self) -> int:
        return self.semantics.shape[0]


def _setup():
    basis = torch.eye(8)
    labels = basis[:3]  # background, a, b
    negatives = torch.nn.functional.normalize(basis[:4].sum(0), dim=0)[None]  # cos 0.5 with every label
    distractors = basis[5:7]
    gt = torch.zeros(1, 16, 16, dtype=torch.int64)
    gt[0, 4:10, 4:10] = 1  # label a present, b absent
    return labels, negatives, distractors, _Split(gt)


def test_perfect_features_reject_absent_and_distractors():
    labels, negatives, distractors, split = _setup()
    feats = labels[split.semantics[0]]
    s = evaluate_semantics(lambda i: feats, split, labels, negatives, distractor_embeddings=distractors)
    assert s["loc_acc"] == 1.0 and s["loc_present_acc"] == 1.0
    assert s["num_rejections"] == 3  # b (absent) + 2 distractors
    assert s["loc_reject_acc"] == 1.0 and s["loc_balanced_acc"] == 1.0


def test_hallucinated_absent_object_and_weak_present_one_are_caught():
    labels, negatives, distractors, split = _setup()
    feats = labels[split.semantics[0]].clone()
    feats[0, 0] = labels[2]  # one pixel claims the absent label b
    feats[4:10, 4:10] = torch.nn.functional.normalize(labels[1] * 0.2 + negatives[0], dim=0)  # a below its negative
    s = evaluate_semantics(lambda i: feats, split, labels, negatives, distractor_embeddings=distractors)
    assert s["loc_acc"] == 1.0  # the unthresholded LERF protocol still counts the hit
    assert s["loc_present_acc"] == 0.0  # the thresholded one does not
    assert abs(s["loc_reject_acc"] - 2 / 3) < 1e-9
    assert abs(s["loc_balanced_acc"] - (0.0 + 2 / 3) / 2) < 1e-9


def test_without_distractors_the_keys_are_absent():
    labels, negatives, _, split = _setup()
    s = evaluate_semantics(lambda i: labels[split.semantics[0]], split, labels, negatives)
    assert "loc_balanced_acc" not in s
