"""``training.evaluation.depth_mae``: which pixels count."""

from types import SimpleNamespace

import math

import torch

from langfield.training.evaluation import depth_mae


def _set(depth, alpha=None):
    return SimpleNamespace(depths=depth[None, ..., None], alphas=None if alpha is None else alpha[None, ..., None])


def test_counts_only_foreground_pixels_with_a_surface():
    gt = torch.tensor([[2.0, 3.0], [0.0, float("inf")]])
    alpha = torch.tensor([[255, 200], [255, 255]], dtype=torch.uint8)  # the 0-depth pixel is covered (edge)
    rendered = torch.tensor([[2.5, 2.0], [4.0, 1.0]])[..., None]
    # Only the two pixels with finite, positive truth: |0.5| and |1.0|.
    assert depth_mae(rendered, _set(gt, alpha), 0) == 0.75
    # A pixel with low alpha drops out even though its truth is valid.
    alpha[0, 1] = 100
    assert depth_mae(rendered, _set(gt, alpha), 0) == 0.5


def test_without_alphas_and_with_no_valid_pixel():
    gt = torch.tensor([[1.0, 0.0]])
    rendered = torch.tensor([[1.25, 9.0]])[..., None]
    assert depth_mae(rendered, _set(gt), 0) == 0.25
    assert math.isnan(depth_mae(rendered, _set(torch.zeros(1, 2)), 0))
