"""Mask proposals: the weight-free superpixel fallback, label maps, errors and a tiny random SAM."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from langfield.language import masks as masks_module
from langfield.language.masks import MaskProposalConfig, MaskProposals, propose_masks
from langfield.pretrained import PretrainedUnavailableError

SUPERPIXELS = MaskProposalConfig(method="superpixels")
# Background green, disk red, square blue (float RGB in [0, 1]).
COLOURS = np.array([[0.2, 0.7, 0.2], [0.85, 0.1, 0.1], [0.1, 0.2, 0.85]])


def shapes_image(height: int = 64, width: int = 64, noise: float = 0.03, seed: int = 0):
    """A green background with a red disk and a blue square plus Gaussian noise.

    Returns:
        image ``[H, W, 3]`` float32 tensor in [0, 1] and ground-truth labels ``[H, W]`` (0 bg, 1 disk, 2 square).
    """
    yy, xx = np.mgrid[:height, :width]
    gt = np.zeros((height, width), dtype=np.int64)
    gt[(yy - 20) ** 2 + (xx - 22) ** 2 < 12**2] = 1
    gt[40:58, 36:58] = 2
    rng = np.random.default_rng(seed)
    image = np.clip(COLOURS[gt] + rng.normal(0.0, noise, (height, width, 3)), 0.0, 1.0)
    return torch.tensor(image, dtype=torch.float32), gt


def best_iou(region: np.ndarray, label_map: np.ndarray) -> tuple[float, int]:
    """Best IoU of the boolean ``region`` against any label of ``label_map``, and that label."""
    best = (0.0, -1)
    for k in np.unique(label_map):
        pred = label_map == k
        iou = (region & pred).sum() / (region | pred).sum()
        best = max(best, (float(iou), int(k)))
    return best


# ----------------------------------------------------------------------------------- fallback


def test_superpixels_recover_flat_shapes():
    image, gt = shapes_image()
    proposals = propose_masks(image, SUPERPIXELS)
    assert proposals.masks.shape == (3, 64, 64)
    assert proposals.masks.dtype == torch.bool
    labels = proposals.label_map().numpy()
    matched = set()
    for k in range(3):
        iou, label = best_iou(gt == k, labels)
        assert iou > 0.9, f"shape {k}: IoU {iou:.3f}"
        matched.add(label)
    assert len(matched) == 3  # each shape its own mask
    assert torch.equal(proposals.scores, torch.ones(3))
    # ordered by decreasing area: the background first
    assert proposals.areas().tolist() == sorted(proposals.areas().tolist(), reverse=True)
    assert proposals.areas()[0] == (labels == best_iou(gt == 0, labels)[1]).sum()


def test_superpixels_partition_and_label_map():
    image, _ = shapes_image(48, 40, noise=0.08, seed=3)
    proposals = propose_masks(image, SUPERPIXELS)
    coverage = proposals.masks.sum(0)
    assert torch.equal(coverage, torch.ones_like(coverage))
    labels = proposals.label_map()
    assert labels.shape == (48, 40) and labels.dtype == torch.long
    assert torch.equal(labels, proposals.masks.long().argmax(0))
    assert int(proposals.areas().sum()) == 48 * 40


def test_superpixels_deterministic_and_input_types_agree():
    image, _ = shapes_image(noise=0.1, seed=1)
    config = MaskProposalConfig(method="superpixels", scale=5.0, min_size=5, merge_threshold=4.0)
    first = propose_masks(image, config)
    second = propose_masks(image.clone(), config)
    assert first.num_masks > 3  # an over-segmentation, so ordering actually matters
    assert torch.equal(first.masks, second.masks)
    as_uint8 = (image * 255).round().to(torch.uint8)
    assert torch.equal(propose_masks(as_uint8, config).masks, first.masks)
    assert torch.equal(propose_masks(as_uint8.numpy(), config).masks, first.masks)


def test_lab_merging_joins_an_oversegmentation():
    image, gt = shapes_image(noise=0.06, seed=2)
    fine = dict(method="superpixels", scale=1.0, sigma=0.8, min_size=10, min_region_fraction=0.0)
    unmerged = propose_masks(image, MaskProposalConfig(**fine, merge_threshold=0.0))
    merged = propose_masks(image, MaskProposalConfig(**fine, merge_threshold=20.0))
    assert unmerged.num_masks > 10
    assert merged.num_masks == 3
    labels = merged.label_map().numpy()
    for k in range(3):
        assert best_iou(gt == k, labels)[0] > 0.9


def test_small_region_is_absorbed():
    image, gt = shapes_image(noise=0.0)
    image[5:8, 50:53] = torch.tensor([0.9, 0.1, 0.9])  # a 3x3 magenta speck on the background
    speck = np.zeros_like(gt, dtype=bool)
    speck[5:8, 50:53] = True
    base = dict(method="superpixels", sigma=0.0, min_size=1)
    kept = propose_masks(image, MaskProposalConfig(**base, min_region_fraction=0.0))
    assert kept.num_masks == 4
    assert best_iou(speck, kept.label_map().numpy())[0] == 1.0
    absorbed = propose_masks(image, MaskProposalConfig(**base, min_region_fraction=0.01))
    assert absorbed.num_masks == 3
    labels = absorbed.label_map().numpy()
    assert len(np.unique(labels[speck])) == 1
    assert labels[5, 50] == labels[0, 63]  # absorbed into the surrounding background
    assert best_iou(gt == 0, labels)[0] > 0.99


# --------------------------------------------------------------------------------- label map


def test_label_map_prefers_smallest_mask_and_marks_uncovered():
    masks = torch.zeros(3, 4, 5, dtype=torch.bool)
    masks[0, :, :3] = True  # 12 px
    masks[1, 1:3, 1:3] = True  # 4 px, inside mask 0
    masks[2, 1:3, 2:4] = True  # 4 px, overlaps mask 1 at column 2; higher score
    proposals = MaskProposals(masks=masks, scores=torch.tensor([0.9, 0.5, 0.8]))
    expected = torch.tensor(
        [
            [0, 0, 0, -1, -1],
            [0, 1, 2, 2, -1],
            [0, 1, 2, 2, -1],
            [0, 0, 0, -1, -1],
        ]
    )
    assert torch.equal(proposals.label_map(), expected)
    assert proposals.areas().tolist() == [12, 4, 4]
    empty = MaskProposals(masks=torch.zeros(0, 2, 3, dtype=torch.bool), scores=torch.zeros(0))
    assert torch.equal(empty.label_map(), torch.full((2, 3), -1))


def test_mask_proposals_validates_fields():
    with pytest.raises(ValueError, match="masks"):
        MaskProposals(masks=torch.zeros(2, 3, 3), scores=torch.ones(2))
    with pytest.raises(ValueError, match="scores"):
        MaskProposals(masks=torch.zeros(2, 3, 3, dtype=torch.bool), scores=torch.ones(3))


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "image, message",
    [
        (torch.rand(8, 8), r"\[H, W, 3\]"),
        (torch.rand(8, 8, 4), r"\[H, W, 3\]"),
        (torch.rand(0, 8, 3), "non-empty"),
        (torch.zeros(8, 8, 3, dtype=torch.int32), "dtype"),
        (torch.full((8, 8, 3), 1.5), r"\[0, 1\]"),
        (torch.full((8, 8, 3), float("nan")), "finite"),
        ([[0.0, 0.0, 0.0]], "torch.Tensor or numpy"),
    ],
)
def test_bad_image_raises(image, message):
    with pytest.raises(ValueError, match=message) as info:
        propose_masks(image, SUPERPIXELS)
    assert "image" in str(info.value)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(method="watershed"), "method"),
        (dict(points_per_side=0), "points_per_side"),
        (dict(pred_iou_thresh=1.5), "pred_iou_thresh"),
        (dict(stability_score_thresh=-0.1), "stability_score_thresh"),
        (dict(min_mask_area=-1), "min_mask_area"),
        (dict(scale=0.0), "scale"),
        (dict(sigma=float("nan")), "sigma"),
        (dict(min_size=0), "min_size"),
        (dict(merge_threshold=-1.0), "merge_threshold"),
        (dict(min_region_fraction=1.0), "min_region_fraction"),
        (dict(sam_model=""), "sam_model"),
    ],
)
def test_bad_config_raises(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MaskProposalConfig(**kwargs)


def test_propose_masks_rejects_non_config():
    with pytest.raises(ValueError, match="config"):
        propose_masks(torch.rand(4, 4, 3), {"method": "superpixels"})


def test_sam_missing_local_dir_raises_clear_error(tmp_path):
    missing = tmp_path / "no_such_sam"
    with pytest.raises(PretrainedUnavailableError) as info:
        propose_masks(torch.rand(8, 8, 3), MaskProposalConfig(method="sam", sam_model=str(missing)))
    message = str(info.value)
    assert str(missing) in message and "does not exist" in message
    assert "--masks superpixels" in message and "SAM model directory holds config.json" in message


def test_auto_falls_back_with_one_warning(tmp_path, caplog):
    config = MaskProposalConfig(method="auto", sam_model=str(tmp_path / "absent_sam"))
    image, _ = shapes_image(32, 32)
    with caplog.at_level(logging.WARNING, logger=masks_module.__name__):
        first = propose_masks(image, config)
        second = propose_masks(image, config)
    warnings = [r for r in caplog.records if r.name == masks_module.__name__ and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "superpixel" in warnings[0].getMessage()
    expected = propose_masks(image, MaskProposalConfig(method="superpixels"))
    assert torch.equal(first.masks, expected.masks) and torch.equal(second.masks, expected.masks)


def test_auto_never_downloads(tmp_path, monkeypatch):
    """auto with an uncached hub id falls back at once, hub on or off, without touching the network."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    image, _ = shapes_image(32, 32)
    proposals = propose_masks(image, MaskProposalConfig(method="auto", sam_model="nobody/uncached-sam"))
    assert torch.equal(proposals.masks, propose_masks(image, MaskProposalConfig(method="superpixels")).masks)


# --------------------------------------------------------------------------------------- SAM


@pytest.fixture(scope="module")
def tiny_sam_dir(tmp_path_factory):
    """A randomly initialised, tiny SamModel + SamProcessor saved with ``save_pretrained``."""
    pytest.importorskip("transformers")
    from ..pretrained.tiny_models import save_tiny_sam

    return save_tiny_sam(tmp_path_factory.mktemp("tiny_sam"))


def test_sam_proposals_tiny_random_model(tiny_sam_dir):
    from langfield.pretrained.sam import load_sam, sam_automatic_masks

    image = torch.rand(24, 40, 3)
    config = MaskProposalConfig(
        method="sam",
        sam_model=str(tiny_sam_dir),
        points_per_side=4,
        points_per_batch=5,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        nms_iou_thresh=0.9,
    )
    proposals = propose_masks(image, config)
    assert isinstance(proposals, MaskProposals) and proposals.num_masks > 0
    # The same masks as the generator run directly with this config's SAM settings.
    rgb = (image.numpy() * 255.0).round().astype(np.uint8)
    masks, scores = sam_automatic_masks(rgb, load_sam(str(tiny_sam_dir)), config.sam_config())
    assert torch.equal(proposals.masks, masks) and torch.equal(proposals.scores, scores)
    # label map over overlapping masks covers only covered pixels
    labels = proposals.label_map()
    assert torch.equal(labels >= 0, proposals.masks.any(0))

    # auto mode uses the local SAM and gives the same result
    auto = propose_masks(image, MaskProposalConfig(**{**config.__dict__, "method": "auto"}))
    assert torch.equal(auto.masks, proposals.masks)


def test_sam_config_carries_the_sam_settings():
    config = MaskProposalConfig(points_per_side=7, nms_iou_thresh=0.5, min_mask_area=3)
    sam = config.sam_config()
    assert (sam.points_per_side, sam.nms_iou_thresh, sam.min_mask_area) == (7, 0.5, 3)
    assert sam.pred_iou_thresh == config.pred_iou_thresh and sam.points_per_batch == config.points_per_batch
