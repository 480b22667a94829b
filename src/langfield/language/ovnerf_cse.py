"""OV-NeRF's Cross-view Self-enhancement (CSE), as the paper's code defines it.

OV-NeRF (Liao et al. 2024, arXiv:2402.04648, IEEE TCSVT 2024, Sec. III-C; reference code
``pcl3dv/OV-NeRF``: ``train_seg.py`` from ``update_pseudo_step_list`` on, and
``renderer.py::evaluation_segmentation_train_with_SAM`` / ``evaluation_segmentation_path_with_SAM``).
CLIP labels an object differently from different viewpoints; a field fitted to all views is one 3D
function, so its renders are view-consistent. After the field has been trained (the reference:
10k of 15k iterations), CSE:

1. renders the field's features at every **training view**, turns them into relevancy and pixel
   labels, and rectifies them with RSR using the training image's SAM masks
   (:func:`self_enhanced_labels`); these labels **replace** the 2D CLIP+SAM labels of the RSR loss;
2. renders features *and colour* at **novel views** (:func:`novel_view_poses`), proposes masks on
   the rendered colour image, rectifies the rendered labels with RSR the same way, and adds a
   second cross-entropy on rays of those novel views;
3. trains further with the feature-distillation loss (still to the 2D teacher features) plus both
   cross-entropies. The reference refreshes the labels every ``update_pseudo_step`` iterations
   until the end; here each refresh is one CSE round (``CSEConfig.rounds``,
   ``CSEConfig.steps_fraction`` of the first fit's steps per round).

Documented choices: the reference's novel poses are a 10-frame circle of radius 0.005 around a
hand-set scene centre (dataset-specific); here novel views are interpolated between each training
camera and its nearest training neighbour (by camera centre), spread over the views and over
interior fractions of each pair (:func:`novel_view_poses`). Mask proposals on novel renders use
langfield's proposal config (SAM when available, else superpixels), without the depth split.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from langfield._checks import InputError
from langfield.geometry.camera_paths import interpolate_path
from langfield.language.ovnerf_rsr import region_semantic_ranking_labels

__all__ = ["novel_view_poses", "self_enhanced_labels"]


def novel_view_poses(c2w: Tensor, num_views: int) -> Tensor:
    """Poses between neighbouring training cameras for CSE's novel views.

    View ``n`` pairs training camera ``i = n mod V`` with its nearest other camera ``j`` (camera
    centres, Euclidean) and places a pose at fraction ``t = (r + 1) / (R + 1)`` of the way from
    ``i`` to ``j``, ``r = n // V``, ``R = ceil(N / V)`` (so the first ``V`` views are midpoints).
    Positions are interpolated linearly and rotations by slerp
    (:func:`~langfield.geometry.camera_paths.interpolate_path` with two keyframes).

    Args:
        c2w: ``[V, 3, 4]`` training camera-to-world poses (OpenCV), ``V >= 2``.
        num_views: ``N >= 0``.

    Returns:
        ``[N, 3, 4]`` poses (same convention, dtype and device).

    Example:
        >>> import torch
        >>> c2w = torch.zeros(2, 3, 4); c2w[:, :, :3] = torch.eye(3); c2w[1, 0, 3] = 2.0
        >>> novel_view_poses(c2w, 2)[:, 0, 3].tolist()
        [1.0, 1.0]
    """
    if not isinstance(c2w, Tensor) or c2w.ndim != 3 or tuple(c2w.shape[1:]) != (3, 4):
        raise InputError(f"c2w must be a [V, 3, 4] tensor, got {getattr(c2w, 'shape', type(c2w))}")
    if isinstance(num_views, bool) or not isinstance(num_views, int) or num_views < 0:
        raise InputError(f"num_views must be an int >= 0, got {num_views!r}")
    v = c2w.shape[0]
    if num_views == 0:
        return c2w.new_zeros(0, 3, 4)
    if v < 2:
        raise InputError(f"novel views are interpolated between training cameras: need >= 2, got {v}")
    centres = c2w[:, :, 3]
    dist = torch.cdist(centres[None].double(), centres[None].double())[0]
    dist.fill_diagonal_(float("inf"))
    nearest = dist.argmin(1)
    rounds = math.ceil(num_views / v)
    out = []
    for n in range(num_views):
        i = n % v
        r = n // v
        j = int(nearest[i])
        # With F = R + 2 frames from i to j, frame r + 1 sits at t = (r + 1) / (R + 1).
        path = interpolate_path(torch.stack([c2w[i], c2w[j]]), rounds + 2)
        out.append(path[r + 1])
    return torch.stack(out)


def self_enhanced_labels(rendered: Tensor, text: Tensor, masks: Tensor) -> Tensor:
    """CSE label map of one rendered view (step 1/2 of the module docstring).

    The field's render replaces the 2D teacher as the source of relevancy; RSR with the view's
    masks makes it region-level again.

    Args:
        rendered: ``[H, W, E]`` features rendered from the field at the view.
        text: ``[C, E]`` label text embeddings.
        masks: ``[K, H, W]`` bool masks (the training image's, or proposed on the rendered colour).

    Returns:
        ``[H, W]`` int64 category ids.
    """
    return region_semantic_ranking_labels(rendered, text, masks)
