"""Splitting mask proposals at the reconstruction's depth discontinuities."""

from __future__ import annotations

import pytest
import torch

from langfield.language.masks import depth_edges, split_masks_at_depth_edges


def _scene():
    """12x12 view: a 4x4 square at depth 1 in front of a plane at depth 3 (one mask covers both)."""
    depth = torch.full((12, 12), 3.0)
    depth[4:8, 4:8] = 1.0
    fg = torch.zeros(12, 12, dtype=torch.bool)
    fg[4:8, 4:8] = True
    return depth, fg


def test_depth_edges_mark_both_sides_of_a_jump():
    depth, fg = _scene()
    e = depth_edges(depth)
    ring_in = fg & ~torch.nn.functional.pad(fg[1:-1, 1:-1], (1, 1, 1, 1))
    assert e[ring_in].all()  # inner border pixels
    assert not e[5:7, 5:7].any() and not e[0:2, 0:2].any()  # interiors are not edges
    # Empty pixels (accumulation < 0.5) are infinitely far: the square's rim is an edge even on a flat depth.
    acc = fg.float()
    flat = torch.ones(12, 12)
    assert depth_edges(flat, acc)[ring_in].all()


def test_a_mask_straddling_two_depths_is_split_and_borders_are_given_back():
    depth, fg = _scene()
    mask = torch.ones(1, 12, 12, dtype=torch.bool)
    out = split_masks_at_depth_edges(mask, depth, fill_iterations=2)
    assert out.shape[0] == 2
    fg_mask = out[out[:, 5, 5]][0]
    bg_mask = out[out[:, 0, 0]][0]
    # Every pixel is returned to the side of the depth jump it belongs to.
    assert torch.equal(fg_mask, fg)
    assert torch.equal(bg_mask, ~fg)


def test_masks_without_depth_jumps_are_unchanged_and_tiny_parts_dropped():
    depth = torch.full((6, 6), 2.0)
    mask = torch.zeros(2, 6, 6, dtype=torch.bool)
    mask[0, :3] = True
    mask[1, 3:] = True
    out = split_masks_at_depth_edges(mask, depth)
    assert torch.equal(out, mask)
    spot = torch.zeros(1, 6, 6, dtype=torch.bool)
    spot[0, 0, 0] = True
    assert split_masks_at_depth_edges(spot, depth, min_area=3).shape[0] == 0


def test_split_bad_input():
    depth, _ = _scene()
    with pytest.raises(ValueError, match="bool"):
        split_masks_at_depth_edges(torch.ones(1, 12, 12), depth)
    with pytest.raises(ValueError, match="depth"):
        split_masks_at_depth_edges(torch.ones(1, 12, 12, dtype=torch.bool), depth[:6])
