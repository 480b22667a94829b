"""The attribute-classifier instrument: labels, network shapes, GenEval-like accuracy, chance."""

from __future__ import annotations

import math

import pytest
import torch

from langfield._checks import InputError
from langfield.generation.instruments import (
    AttributeClassifier,
    AttributeLabels,
    AttributeLogits,
    attribute_accuracy,
    attribute_losses,
    chance_accuracy,
)

L = AttributeLabels.from_arrays


def test_classifier_shapes_features_and_predictions():
    torch.manual_seed(0)
    for size in (32, 64):
        net = AttributeClassifier(image_size=size, width=8, feature_dim=24)
        x = torch.rand(5, 3, size, size)
        assert net.features(x).shape == (5, 24)
        logits = net(x)
        assert logits.count.shape == (5, 3) and logits.shapes.shape == (5, 3, 5) and logits.colours.shape == (5, 3, 9)
        pred = net.predict(x, batch_size=2)
        assert pred.count.dtype == torch.int64 and pred.count.min() >= 1 and pred.count.max() <= 3
        assert pred.shapes.min() >= -1 and pred.shapes.max() <= 3 and pred.colours.max() <= 7
        emb = net.embed_images((x * 255).to(torch.uint8), batch_size=3)
        assert emb.shape == (5, 24) and not emb.requires_grad
    # predict() maps the "none" class to -1 and count class c to c + 1
    net = AttributeClassifier(image_size=8, width=4, feature_dim=4, max_objects=2, num_shapes=2, num_colours=2)
    with torch.no_grad():
        for head in (net.count_head, net.shape_head, net.colour_head):
            head.weight.zero_()
        net.count_head.bias.copy_(torch.tensor([0.0, 1.0]))
        net.shape_head.bias.copy_(torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 1.0]))  # slot 0 -> 1, slot 1 -> none
        net.colour_head.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 1.0]))  # slot 0 -> 0, slot 1 -> none
    pred = net.predict(torch.rand(2, 3, 8, 8))
    assert pred.count.tolist() == [2, 2] and pred.shapes.tolist() == [[1, -1]] * 2 and pred.colours.tolist() == [[0, -1]] * 2


def test_classifier_input_errors():
    net = AttributeClassifier(image_size=32, width=4, feature_dim=4)
    with pytest.raises(InputError, match="images: the classifier was built for 32x32"):
        net.features(torch.rand(1, 3, 64, 64))
    with pytest.raises(InputError, match=r"images: expected RGB images \[B, 3, H, W\]"):
        net.predict(torch.rand(1, 32, 32, 3))
    with pytest.raises(InputError, match="image_size"):
        AttributeClassifier(image_size=48)


def test_losses_of_uniform_logits_are_log_class_counts():
    b, s = 4, 3
    logits = AttributeLogits(torch.zeros(b, s), torch.zeros(b, s, 5), torch.zeros(b, s, 9))
    target = L([1, 2, 3, 1], [[0, -1, -1], [1, 2, -1], [3, 0, 1], [2, -1, -1]], [[7, -1, -1], [0, 1, -1], [2, 3, 4], [5, -1, -1]])
    terms = attribute_losses(logits, target)
    assert terms["count"].item() == pytest.approx(math.log(3))
    assert terms["shape"].item() == pytest.approx(math.log(5))
    assert terms["loss"].item() == pytest.approx(math.log(3) + math.log(5) + math.log(9))
    # a confident correct slot head (including "none" for empty slots) has ~zero loss
    shapes = torch.full((b, s, 5), -20.0)
    for i in range(b):
        for k in range(s):
            cls = int(target.shapes[i, k])
            shapes[i, k, 4 if cls < 0 else cls] = 20.0
    assert attribute_losses(AttributeLogits(logits.count, shapes, logits.colours), target)["shape"].item() < 1e-6


def test_attribute_accuracy_exact_on_hand_made_predictions():
    target = L(
        [1, 2, 2, 2, 3],
        [[0, -1, -1], [0, 1, -1], [2, 2, -1], [3, 3, -1], [0, 1, 2]],
        [[5, -1, -1], [4, 4, -1], [1, 6, -1], [7, 7, -1], [0, 1, 2]],
    )
    pred = L(
        [1, 2, 2, 1, 3],
        # img0 right; img1 objects swapped (shape order wrong, colours equal); img2 colours right,
        # shapes wrong in slot 1; img3 second object missed; img4 all right but one colour
        [[0, 2, 2], [1, 0, -1], [2, 0, -1], [3, -1, -1], [0, 1, 2]],
        [[5, -1, -1], [4, 4, -1], [1, 6, -1], [7, -1, -1], [0, 1, 3]],
    )
    acc = attribute_accuracy(pred, target)
    assert acc.num_images == 5 and acc.num_slots == 1 + 2 + 2 + 2 + 3 and acc.num_left_right == 2
    assert acc.count == pytest.approx(4 / 5)  # img3 wrong
    # shape: img0 1/1, img1 0/2, img2 1/2, img3 1/2, img4 3/3 -> 6/10
    assert acc.shape == pytest.approx(6 / 10)
    # colour: img0 1, img1 2, img2 2, img3 1 (slot 1 missing), img4 2 -> 8/10
    assert acc.colour == pytest.approx(8 / 10)
    # left/right: img1 (differ in shape: swapped -> wrong), img2 (differ in colour: in order -> right);
    # img3 holds two identical objects: no order, excluded
    assert acc.left_right == pytest.approx(1 / 2)
    # order given presence: img1 shows both objects, reversed; img2 in order
    assert acc.order == pytest.approx(1 / 2)
    assert acc.whole == pytest.approx(1 / 5)  # only img0 (extra slots of a 1-object target are not scored)
    assert acc.attribute == pytest.approx((4 / 5 + 6 / 10 + 8 / 10 + 1 / 2) / 4)
    d = acc.as_dict()
    assert d["whole"] == pytest.approx(0.2) and d["num_left_right"] == 2


def test_attribute_accuracy_without_two_object_targets_has_nan_left_right():
    t = L([1, 3], [[0, -1, -1], [0, 1, 2]], [[0, -1, -1], [0, 1, 2]])
    acc = attribute_accuracy(t, t)
    assert math.isnan(acc.left_right) and acc.as_dict()["left_right"] is None and math.isnan(acc.order)
    assert acc.whole == acc.count == acc.shape == acc.colour == acc.attribute == 1.0


def test_attribute_accuracy_input_errors():
    t = L([1], [[0, -1, -1]], [[0, -1, -1]])
    with pytest.raises(InputError, match="target.shapes: row 0 has count 2"):
        attribute_accuracy(t, L([2], [[0, -1, -1]], [[0, 1, -1]]))
    with pytest.raises(InputError, match="pred and target"):
        attribute_accuracy(L([1, 1], [[0, -1, -1]] * 2, [[0, -1, -1]] * 2), t)
    with pytest.raises(InputError, match=r"target.colours: values must lie in \[-1, 7\]"):
        attribute_accuracy(t, L([1], [[0, -1, -1]], [[8, -1, -1]]))
    with pytest.raises(InputError, match=r"target.count: values must lie in \[1, 3\]"):
        attribute_accuracy(t, L([0], [[-1, -1, -1]], [[-1, -1, -1]]))


# The label distribution of the chance tests (S = 2 slots, 2 shapes, 2 colours); by hand:
# counts 1,1,2,2; slot 0 shapes 0,0,0,1 and colours 0,1,0,1; slot 1 (images 2, 3) shapes 1,1 and colours 0,0.
CHANCE_LABELS = L([1, 1, 2, 2], [[0, -1], [0, -1], [0, 1], [1, 1]], [[0, -1], [1, -1], [0, 0], [1, 0]])


def test_chance_majority_is_exact():
    # majority predictor: count 1 (tie -> smallest), slot 0 (shape 0, colour 0), slot 1 (shape 1, colour 0)
    acc = chance_accuracy(CHANCE_LABELS, num_shapes=2, num_colours=2)
    assert acc.count == pytest.approx(0.5)
    assert acc.shape == pytest.approx(5 / 6)  # only image 3's slot 0 (shape 1) is missed
    assert acc.colour == pytest.approx(4 / 6)  # images 1 and 3 have colour 1 in slot 0
    assert acc.left_right == pytest.approx(0.5)  # image 2 (by shape) in order, image 3 (by colour) not
    assert acc.order == 1.0  # image 3 shows neither order; image 2 the right one
    assert acc.whole == pytest.approx(0.25)  # image 0 only
    assert acc.attribute == pytest.approx((0.5 + 5 / 6 + 4 / 6 + 0.5) / 4)


def test_chance_prior_is_the_exact_expectation():
    acc = chance_accuracy(CHANCE_LABELS, rule="prior", num_shapes=2, num_colours=2)
    assert acc.count == pytest.approx(0.5)  # (1/2)^2 + (1/2)^2
    assert acc.shape == pytest.approx((3 * 0.75 + 0.25 + 2 * 1.0) / 6)
    assert acc.colour == pytest.approx((4 * 0.5 + 2 * 1.0) / 6)
    assert acc.left_right == pytest.approx((0.75 * 1.0 + 0.5 * 1.0) / 2)
    assert acc.whole == pytest.approx((3 * 0.5 * 0.75 * 0.5 + 0.5 * 0.25 * 0.5) / 4)
    # ... and a Monte-Carlo run of that random predictor (one big batch of tiled targets) agrees
    g = torch.Generator().manual_seed(0)
    reps = 20_000
    target = CHANCE_LABELS.index(torch.arange(4).repeat(reps))
    m = len(target)

    def draw(p):
        return torch.multinomial(torch.tensor(p), m, True, generator=g)

    pred = L(
        draw([0.5, 0.5]) + 1,
        torch.stack([draw([0.75, 0.25]), draw([0.0, 1.0])], 1),
        torch.stack([draw([0.5, 0.5]), draw([1.0, 0.0])], 1),
    )
    mc = attribute_accuracy(pred, target)
    for name in ("count", "shape", "colour", "left_right", "order", "whole"):
        assert getattr(mc, name) == pytest.approx(getattr(acc, name), abs=0.01), name


def test_chance_on_separate_eval_labels_and_uniform_levels():
    # majority prediction (count 1; slot 0: shape 0, colour 0; slot 1: shape 1, colour 0) read on other targets
    eval_labels = L([2], [[0, 0]], [[1, 0]])
    acc = chance_accuracy(CHANCE_LABELS, eval_labels, num_shapes=2, num_colours=2)
    assert (acc.count, acc.shape, acc.colour, acc.whole) == (0.0, 0.5, 0.5, 0.0)
    assert acc.left_right == 0.0  # the two objects differ by colour; slot 0 should be colour 1
    # uniform labels: majority and prior give 1/K per head
    counts = torch.arange(24) % 3 + 1
    shapes = torch.full((24, 3), -1)
    colours = torch.full((24, 3), -1)
    for i in range(24):
        for k in range(int(counts[i])):
            shapes[i, k] = (i // 3 + k) % 4
            colours[i, k] = (i + 5 * k) % 8
    labels = AttributeLabels(counts, shapes, colours)
    prior = chance_accuracy(labels, rule="prior")
    assert prior.count == pytest.approx(1 / 3)
    majority = chance_accuracy(labels)
    assert majority.count == pytest.approx(1 / 3) and majority.count >= prior.count
    # two objects of distinct colours from 8: telling them apart in order is far below 1/2 ...
    assert prior.left_right < 0.1 and majority.left_right < 0.1
    # ... while the order given both are found is about a coin flip
    assert 0.3 < prior.order < 0.7
    with pytest.raises(InputError, match="rule"):
        chance_accuracy(labels, rule="uniform")
