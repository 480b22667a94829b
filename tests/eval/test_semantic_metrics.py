"""Semantic segmentation (confusion, mIoU, accuracy) and localization metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from langfield.eval.semantic_metrics import (
    SemanticScores,
    confusion_matrix,
    localization_accuracy,
    localization_hit,
    semantic_scores,
)

# 3 classes, 8 pixels:           target 0 0 0 1 1 2 2 2
#                                 pred  0 0 1 1 2 2 2 0
TARGET = torch.tensor([[0, 0, 0, 1], [1, 2, 2, 2]])
PRED = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 0]])


def test_confusion_matrix_hand_computed():
    cm = confusion_matrix(PRED, TARGET, 3)
    expected = torch.tensor([[2, 1, 0], [0, 1, 1], [1, 0, 2]])
    assert cm.dtype == torch.int64
    assert torch.equal(cm, expected)


def test_scores_hand_computed():
    s = semantic_scores(PRED, TARGET, 3)
    # IoU_0 = 2 / (3 + 3 - 2), IoU_1 = 1 / (2 + 2 - 1), IoU_2 = 2 / (3 + 3 - 2)
    assert s.per_class_iou == pytest.approx([0.5, 1 / 3, 0.5])
    assert s.per_class_acc == pytest.approx([2 / 3, 1 / 2, 2 / 3])
    assert s.miou == pytest.approx((0.5 + 1 / 3 + 0.5) / 3)
    assert s.macc == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    assert s.pixel_acc == pytest.approx(5 / 8)
    d = s.as_dict()
    assert set(d) == {"miou", "macc", "pixel_acc", "per_class_iou", "per_class_acc"}
    assert d["miou"] == pytest.approx(s.miou)


def test_perfect_prediction():
    s = semantic_scores(TARGET, TARGET, 3)
    assert s.miou == 1.0 and s.macc == 1.0 and s.pixel_acc == 1.0


def test_unknown_predictions_count_as_wrong():
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, -1, 1, 1])
    cm = confusion_matrix(pred, target, 2)
    assert torch.equal(cm, torch.tensor([[1, 0], [0, 2]]))  # the unknown pixel is in no column
    cm_u = confusion_matrix(pred, target, 2, unknown_column=True)
    assert torch.equal(cm_u, torch.tensor([[1, 0, 1], [0, 2, 0]]))
    s = semantic_scores(pred, target, 2)
    assert s.pixel_acc == pytest.approx(3 / 4)
    assert s.per_class_acc == pytest.approx([0.5, 1.0])
    assert s.per_class_iou == pytest.approx([0.5, 1.0])  # 1 / (2 + 1 - 1)
    assert s.pixel_acc < semantic_scores(target, target, 2).pixel_acc
    # Predictions >= C are out of range too.
    assert semantic_scores(torch.tensor([0, 7, 1, 1]), target, 2).pixel_acc == pytest.approx(3 / 4)


def test_absent_classes_are_excluded():
    target = torch.tensor([0, 0, 2, 2])
    s = semantic_scores(target.clone(), target, 4)
    assert s.per_class_iou == [1.0, None, 1.0, None]
    assert s.per_class_acc == [1.0, None, 1.0, None]
    assert s.miou == 1.0 and s.macc == 1.0
    # Class 1 predicted but absent from the target: IoU 0 (counts), accuracy undefined.
    pred = torch.tensor([0, 1, 2, 2])
    s = semantic_scores(pred, target, 4)
    assert s.per_class_iou[:3] == pytest.approx([0.5, 0.0, 1.0])
    assert s.per_class_iou[3] is None and s.per_class_acc[1] is None and s.per_class_acc[3] is None
    assert s.miou == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert s.macc == pytest.approx((0.5 + 1.0) / 2)


def test_ignore_index():
    target = torch.tensor([0, 255, 1, 255])
    pred = torch.tensor([0, 1, 1, 0])
    cm = confusion_matrix(pred, target, 2, ignore_index=255)
    assert torch.equal(cm, torch.tensor([[1, 0], [0, 1]]))
    assert semantic_scores(pred, target, 2, ignore_index=255).miou == 1.0
    with pytest.raises(ValueError, match="ignore_index"):
        confusion_matrix(pred, target, 2)
    # An in-range ignored class is skipped in the target and reported as None.
    target = torch.tensor([0, 0, 1, 2])
    pred = torch.tensor([1, 1, 1, 0])
    s = semantic_scores(pred, target, 3, ignore_index=0)
    assert s.per_class_iou[0] is None and s.per_class_acc[0] is None
    assert s.per_class_iou == [None, 1.0, 0.0]
    assert s.pixel_acc == pytest.approx(1 / 2)
    # All pixels ignored: means undefined.
    s = semantic_scores(torch.tensor([0]), torch.tensor([255]), 2, ignore_index=255)
    assert math.isnan(s.miou) and math.isnan(s.pixel_acc)


def test_accumulating_views_equals_concatenation():
    gen = torch.Generator().manual_seed(0)
    preds = [torch.randint(-1, 5, (6, 7), generator=gen) for _ in range(4)]
    targets = [torch.randint(0, 5, (6, 7), generator=gen) for _ in range(4)]
    targets[1][targets[1] == 3] = 255  # some void labels
    cm = sum(confusion_matrix(p, t, 5, ignore_index=255, unknown_column=True) for p, t in zip(preds, targets))
    acc = SemanticScores.from_confusion(cm, ignore_index=255)
    whole = semantic_scores(torch.cat(preds), torch.cat(targets), 5, ignore_index=255)
    assert acc == whole
    # Accumulated mIoU differs from the mean of per-view mIoUs in general (not asserted equal),
    # but the per-view scores are still computed from the same counts.
    assert acc.pixel_acc == pytest.approx(
        sum(int((p == t).sum()) for p, t in zip(preds, targets)) / sum(int((t != 255).sum()) for t in targets)
    )


def test_from_confusion_square_matrix_without_unknowns():
    cm = confusion_matrix(PRED, TARGET, 3)
    assert SemanticScores.from_confusion(cm) == semantic_scores(PRED, TARGET, 3)


def test_numpy_inputs():
    s = semantic_scores(PRED.numpy(), TARGET.numpy().astype(np.int32), 3)
    assert s.pixel_acc == pytest.approx(5 / 8)


def test_validation_errors():
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(PRED[:, :3], TARGET, 3)
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix(PRED, TARGET, 0)
    with pytest.raises(ValueError, match="pred"):
        confusion_matrix(PRED.float(), TARGET, 3)
    with pytest.raises(ValueError, match="target"):
        confusion_matrix(PRED, TARGET.float(), 3)
    with pytest.raises(ValueError, match="target has class id 3"):
        confusion_matrix(PRED, TARGET + 1, 3)
    with pytest.raises(ValueError, match="cm"):
        SemanticScores.from_confusion(torch.zeros(3, 5, dtype=torch.int64))


def test_localization_hit_and_miss():
    rel = torch.zeros(4, 5)
    rel[1, 3] = 0.9
    rel[2, 0] = 0.5
    mask = torch.zeros(4, 5, dtype=torch.bool)
    mask[1, 3] = True
    assert localization_hit(rel, mask) is True
    assert localization_hit(rel, ~mask) is False
    # Ties: the first maximal pixel (row-major) decides.
    rel[3, 4] = 0.9
    tie_mask = torch.zeros(4, 5, dtype=torch.bool)
    tie_mask[3, 4] = True
    assert localization_hit(rel, tie_mask) is False
    assert localization_hit(rel, mask) is True
    # NaN is never the most relevant pixel.
    rel[0, 0] = float("nan")
    assert localization_hit(rel, mask) is True
    assert localization_hit(rel[..., None], mask[..., None]) is True
    assert localization_accuracy([True, False, True, True]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="target_mask"):
        localization_hit(rel, mask.float())
    with pytest.raises(ValueError, match="target_mask must have shape"):
        localization_hit(rel, mask[:2])
    with pytest.raises(ValueError, match="hits"):
        localization_accuracy([])
