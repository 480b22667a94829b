"""Region Semantic Ranking and Cross-view Self-enhancement on hand-built feature maps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from langfield.language.cse import CSEConfig, cross_view_correction
from langfield.language.rsr import RSRConfig, masks_from_label_map, region_features_and_consistency, region_semantic_ranking


def _basis(e: int = 8):
    return torch.eye(e)


def _two_region_view(noise: float = 0.0, seed: int = 0):
    """8x8 view: left half label A (e0), right half label B (e1); a blurred 2-px rim at the border."""
    e = _basis()
    feats = torch.zeros(8, 8, 8)
    feats[:, :4] = e[0]
    feats[:, 4:] = e[1]
    feats[:, 3] = F.normalize(e[0] + e[1], dim=-1)  # border blur
    feats[:, 4] = F.normalize(e[0] + e[1], dim=-1)
    if noise:
        g = torch.Generator().manual_seed(seed)
        feats = feats + noise * torch.randn(feats.shape, generator=g)
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, :, :4] = True
    masks[1, :, 4:] = True
    return F.normalize(feats, dim=-1), masks


def test_rsr_paints_region_features_and_fixes_the_blurred_rim():
    feats, masks = _two_region_view()
    out = region_semantic_ranking(feats, masks, RSRConfig(trim_fraction=0.25))
    e = _basis()
    # The rim (columns 3 and 4) is the trimmed quarter, so the region features are exactly e0 / e1.
    assert torch.allclose(out.region_features[0], e[0], atol=1e-6)
    assert torch.allclose(out.region_features[1], e[1], atol=1e-6)
    assert torch.allclose(out.features[:, :4], e[0].expand(8, 4, 8), atol=1e-6)
    assert torch.allclose(out.features[:, 4:], e[1].expand(8, 4, 8), atol=1e-6)
    assert out.region_ids[:, :4].eq(0).all() and out.region_ids[:, 4:].eq(1).all()
    assert out.kept.all()


def test_rsr_consistency_values_and_ranking_on_overlap():
    e = _basis()
    feats = e[0].expand(4, 4, 8).clone()
    feats[0, 0] = e[1]  # one outlier pixel inside the big mask
    big = torch.ones(4, 4, dtype=torch.bool)
    small = torch.zeros(4, 4, dtype=torch.bool)
    small[:2, :2] = True  # contains the outlier: less consistent than the trimmed big mask
    masks = torch.stack([big, small])
    region, cons = region_features_and_consistency(feats, masks, trim_fraction=0.0)
    # Small mask: mean of 3 x e0 and 1 x e1 -> (3, 1)/sqrt(10); consistency = (3*3/sqrt(10) + 1/sqrt(10)) / 4
    expect_small = (3 * 3 / 10**0.5 + 1 / 10**0.5) / 4
    assert cons[1].item() == pytest.approx(expect_small, abs=1e-5)
    assert cons[0] > cons[1]
    out = region_semantic_ranking(feats, masks, RSRConfig(trim_fraction=0.0))
    # The more consistent big mask ranks first and claims every pixel, outlier included.
    assert out.region_ids.eq(0).all()
    assert torch.allclose(out.features[0, 0], out.region_features[0])


def test_rsr_drops_inconsistent_masks_and_keeps_raw_features():
    g = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(6, 6, 16, generator=g), dim=-1)  # pure noise: inconsistent
    masks = torch.ones(1, 6, 6, dtype=torch.bool)
    out = region_semantic_ranking(feats, masks, RSRConfig(min_consistency=0.6))
    assert not out.kept.any()
    assert torch.equal(out.region_ids, torch.full((6, 6), -1))
    assert torch.allclose(out.features, feats, atol=1e-6)


def test_rsr_small_masks_ignored_and_blend():
    feats, masks = _two_region_view()
    out = region_semantic_ranking(feats, masks, RSRConfig(min_area=33))  # both masks have 32 px
    assert not out.kept.any()
    half = region_semantic_ranking(feats, masks, RSRConfig(blend=0.5, trim_fraction=0.25))
    e = _basis()
    expect = F.normalize(0.5 * e[1] + 0.5 * feats[0, 4], dim=-1)
    assert torch.allclose(half.features[0, 4], expect, atol=1e-6)


def test_rsr_bad_input():
    feats, masks = _two_region_view()
    with pytest.raises(ValueError, match="masks"):
        region_semantic_ranking(feats, masks[:, :4], RSRConfig())
    with pytest.raises(ValueError, match="masks"):
        region_semantic_ranking(feats, masks.float(), RSRConfig())
    with pytest.raises(ValueError, match="features"):
        region_semantic_ranking(feats[0], masks, RSRConfig())
    with pytest.raises(ValueError, match="trim_fraction"):
        RSRConfig(trim_fraction=1.0)


def test_masks_from_label_map():
    lm = torch.tensor([[0, 1], [-1, 1]])
    m = masks_from_label_map(lm)
    assert m.shape == (2, 2, 2)
    assert m[0].tolist() == [[True, False], [False, False]]
    assert m[1].tolist() == [[False, True], [False, True]]


def test_cse_replaces_only_disagreeing_regions():
    e = _basis()
    _, masks = _two_region_view()
    targets = torch.zeros(8, 8, 8)
    targets[:, :4] = e[0]
    targets[:, 4:] = e[2]  # this view confused region B with label C
    rendered = torch.zeros(8, 8, 8)
    rendered[:, :4] = F.normalize(e[0] + 0.1 * e[3], dim=-1)  # agrees (cos ~0.995)
    rendered[:, 4:] = F.normalize(e[1] + 0.2 * e[2], dim=-1)  # the 3D majority says B
    out = cross_view_correction(targets, rendered, masks, CSEConfig(agree_threshold=0.9))
    assert not out.replaced[:, :4].any() and out.replaced[:, 4:].all()
    assert torch.allclose(out.features[:, :4], targets[:, :4])
    assert torch.allclose(out.features[:, 4:], rendered[:, 4:], atol=1e-6)
    assert out.features[0, 6].argmax() == 1


def test_cse_pixelwise_without_masks_and_blend():
    e = _basis()
    targets = e[0].expand(2, 2, 8).clone()
    rendered = targets.clone()
    rendered[0, 0] = e[1]
    out = cross_view_correction(targets, rendered, None, CSEConfig(agree_threshold=0.5))
    assert out.replaced.tolist() == [[True, False], [False, False]]
    assert torch.allclose(out.features[0, 0], e[1])
    half = cross_view_correction(targets, rendered, None, CSEConfig(agree_threshold=0.5, blend=0.5))
    assert torch.allclose(half.features[0, 0], F.normalize(e[0] + e[1], dim=-1), atol=1e-6)


def test_cse_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        cross_view_correction(torch.zeros(2, 2, 4), torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="rounds"):
        CSEConfig(rounds=-1)
