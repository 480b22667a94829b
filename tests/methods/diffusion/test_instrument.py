"""The attribute-classifier objective trained through the one Trainer on a separable synthetic set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from langfield._checks import InputError
from langfield.data.samplers import IndexSampler
from langfield.generation.instruments import (
    AttributeClassifier,
    AttributeLabels,
    chance_accuracy,
    evaluate_classifier,
)
from langfield.methods.diffusion.instrument import AttributeClassifierObjective, augment_images
from langfield.training.trainer import Trainer, TrainerConfig
from langfield.types import IndexBatch

PALETTE = np.array(
    [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1], [0, 0, 0]], dtype=np.float32
)


def squares(n: int, seed: int, size: int = 16):
    """1 or 2 coloured squares (filled or hollow) in the left and/or right half of a grey image.

    Labels: slot 0 is the leftmost square; shape 0 = filled, 1 = hollow; colour = palette index.
    """
    rng = np.random.default_rng(seed)
    img = np.full((n, size, size, 3), 0.5, np.float32) + rng.normal(0, 0.03, (n, size, size, 3)).astype(np.float32)
    count = rng.integers(1, 3, n)
    shapes = -np.ones((n, 3), np.int64)
    colours = -np.ones((n, 3), np.int64)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        halves = [0, 1] if count[i] == 2 else [int(rng.integers(2))]
        for slot, half in enumerate(halves):
            cx = (half + 0.5) * size / 2 + rng.integers(-1, 2)
            cy = size / 2 + rng.integers(-2, 3)
            shape, colour = int(rng.integers(2)), int(rng.integers(8))
            box = (abs(xx - cx) <= 2.5) & (abs(yy - cy) <= 2.5)
            if shape == 1:
                box &= ~((abs(xx - cx) <= 1) & (abs(yy - cy) <= 1))
            img[i][box] = PALETTE[colour]
            shapes[i, slot], colours[i, slot] = shape, colour
    images = torch.from_numpy(np.clip(img, 0, 1)).permute(0, 3, 1, 2).contiguous()
    return (images * 255).round().to(torch.uint8), AttributeLabels.from_arrays(count, shapes, colours)


def test_classifier_learns_separable_squares_through_the_trainer():
    train_x, train_y = squares(1024, 0)
    test_x, test_y = squares(256, 1)
    torch.manual_seed(0)
    net = AttributeClassifier(image_size=16, width=8, feature_dim=32)
    before = evaluate_classifier(net, test_x, test_y)
    objective = AttributeClassifierObjective(net, train_x, train_y, lr=5e-3)
    config = TrainerConfig(max_steps=300, output_dir=None, progress=False, device="cpu", log_every=100, seed=0)
    record = Trainer(objective, config, sampler=IndexSampler(len(train_y), 32, seed=0)).train()
    after = evaluate_classifier(net, test_x, test_y)
    chance = chance_accuracy(train_y, test_y)
    assert before.whole < 0.1 and chance.whole < 0.1
    assert after.count > 0.95 and after.shape > 0.9 and after.colour > 0.9 and after.left_right > 0.9
    assert after.whole > 0.9, after
    assert record["loss"] < 0.5 and 0.0 <= record["slot_acc"] <= 1.0
    assert net.features(test_x[:4]).shape == (4, 32)


def test_objective_steps_are_pure_functions_of_the_batch():
    x, y = squares(16, 2)
    net = AttributeClassifier(image_size=16, width=4, feature_dim=8)
    objective = AttributeClassifierObjective(net, x, y)
    batch = IndexBatch(torch.tensor([0, 3, 5]), step=7, seed=123)
    a, b = objective(batch), objective(batch)
    torch.testing.assert_close(a.count, b.count)
    other = objective(IndexBatch(batch.indices, step=8, seed=124))
    assert not torch.equal(a.count, other.count)  # a different augmentation draw
    losses = objective.losses(a, batch)
    assert set(losses) == {"count", "shape", "colour", "loss"} and losses["loss"].requires_grad


def test_augment_images_is_seeded_and_a_shift_of_the_content():
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(augment_images(x, 5, max_shift=0, brightness=0.0), x)
    a = augment_images(x, 5, max_shift=2, brightness=0.0)
    torch.testing.assert_close(a, augment_images(x, 5, max_shift=2, brightness=0.0))
    for i in range(3):  # every image is its original moved by an integer offset within +-2 px
        found = any(
            torch.equal(a[i, :, 2:-2, 2:-2], x[i, :, 2 - dy : 14 - dy, 2 - dx : 14 - dx])
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        )
        assert found


def test_objective_input_errors():
    x, y = squares(8, 3)
    net = AttributeClassifier(image_size=16, width=4, feature_dim=8)
    with pytest.raises(InputError, match="images and labels: 7 images but 8 labels"):
        AttributeClassifierObjective(net, x[:7], y)
    with pytest.raises(InputError, match="images: the classifier was built for 32x32 images, got 16x16"):
        AttributeClassifierObjective(AttributeClassifier(image_size=32, width=4, feature_dim=8), x, y)
    bad = AttributeLabels(y.count, y.shapes.clone(), y.colours)
    bad.shapes[0, 2] = 1
    with pytest.raises(InputError, match="labels.shapes: row 0"):
        AttributeClassifierObjective(net, x, bad)
