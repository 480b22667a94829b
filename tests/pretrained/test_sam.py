"""SAM through the resolver, and the automatic mask generator, on a tiny random SamModel (no downloads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from langfield.pretrained import PretrainedUnavailableError  # noqa: E402
from langfield.pretrained.sam import SamAutomaticMaskConfig, load_sam, sam_automatic_masks  # noqa: E402

from .tiny_models import place_in_hub_cache, save_tiny_clip, save_tiny_sam  # noqa: E402

LOOSE = SamAutomaticMaskConfig(
    points_per_side=4,
    points_per_batch=5,  # several decoder batches, the last one partial
    pred_iou_thresh=0.0,
    stability_score_thresh=0.0,
    nms_iou_thresh=0.9,
)


@pytest.fixture(scope="module")
def tiny_sam_dir(tmp_path_factory):
    return save_tiny_sam(tmp_path_factory.mktemp("tiny_sam"))


def _rgb(height=24, width=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_load_sam_from_directory_is_loaded_once(tiny_sam_dir, hub_cache, no_network):
    sam = load_sam(str(tiny_sam_dir), "cpu")
    assert type(sam.model).__name__ == "SamModel" and type(sam.processor).__name__ == "SamProcessor"
    assert not sam.model.training and next(sam.model.parameters()).device.type == "cpu"
    assert load_sam(str(tiny_sam_dir), torch.device("cpu")) is sam


def test_automatic_masks(tiny_sam_dir, hub_cache):
    sam = load_sam(str(tiny_sam_dir))
    masks, scores = sam_automatic_masks(_rgb(), sam, LOOSE)
    num = masks.shape[0]
    assert 0 < num <= 3 * 4 * 4
    assert masks.shape == (num, 24, 40) and masks.dtype == torch.bool and scores.shape == (num,)
    assert torch.all(scores[:-1] >= scores[1:]) and torch.all(masks.flatten(1).sum(1) > 0)
    # NMS: no two kept masks overlap by more than the threshold
    flat = masks.flatten(1).float()
    inter = flat @ flat.T
    iou = inter / (flat.sum(1)[:, None] + flat.sum(1)[None, :] - inter)
    assert torch.all(iou[~torch.eye(num, dtype=torch.bool)] <= 0.9)
    # Deterministic, and a strict IoU threshold keeps nothing (random weights predict IoU far below 1).
    again, _ = sam_automatic_masks(_rgb(), sam, LOOSE)
    assert torch.equal(again, masks)
    strict = SamAutomaticMaskConfig(**{**LOOSE.__dict__, "pred_iou_thresh": 1.0})
    none, none_scores = sam_automatic_masks(_rgb(), sam, strict)
    assert none.shape == (0, 24, 40) and none_scores.shape == (0,)


def test_cached_hub_id_offline(tiny_sam_dir, hub_cache, monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    place_in_hub_cache(hub_cache, "tiny-org/tiny-sam", tiny_sam_dir)
    cached = load_sam("tiny-org/tiny-sam", allow_download=False)
    direct = load_sam(str(tiny_sam_dir))
    for (name, a), b in zip(cached.model.state_dict().items(), direct.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_unavailable_sam(tmp_path, hub_cache, no_network):
    missing = tmp_path / "no_such_sam"
    with pytest.raises(PretrainedUnavailableError) as info:
        load_sam(str(missing), hint="Or pass --masks superpixels.")
    assert str(missing) in str(info.value) and "SAM model" in str(info.value)
    assert str(info.value).endswith("Or pass --masks superpixels.")
    with pytest.raises(PretrainedUnavailableError, match="never downloaded"):
        load_sam("facebook/sam-vit-base", allow_download=False)


def test_another_kind_of_model_is_refused(tmp_path, hub_cache):
    pytest.importorskip("tokenizers")
    clip_dir = save_tiny_clip(tmp_path / "clip")  # SamModel would load it with random weights
    with pytest.raises(PretrainedUnavailableError, match="model_type 'clip', not 'sam'") as info:
        load_sam(str(clip_dir))
    assert str(clip_dir) in str(info.value)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(points_per_side=0), "points_per_side"),
        (dict(points_per_batch=True), "points_per_batch"),
        (dict(pred_iou_thresh=1.5), "pred_iou_thresh"),
        (dict(stability_score_thresh=-0.1), "stability_score_thresh"),
        (dict(stability_score_offset=float("nan")), "stability_score_offset"),
        (dict(nms_iou_thresh=2), "nms_iou_thresh"),
        (dict(min_mask_area=-1), "min_mask_area"),
    ],
)
def test_bad_config_raises(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SamAutomaticMaskConfig(**kwargs)
