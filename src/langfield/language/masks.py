"""Per-image mask proposals for language fields (LERF / OV-NeRF style region pooling).

A language field pools CLIP features over image regions; this module proposes those regions.

Two back-ends:

* ``"sam"`` -- Segment Anything as an automatic mask generator
  (:mod:`langfield.pretrained.sam`: a grid of point prompts, IoU and stability filtering, mask
  NMS). Masks may overlap. The model is a local directory, a hub id in the local Hugging Face
  cache, or a hub id to download (unless ``HF_HUB_OFFLINE`` is set).
* ``"superpixels"`` -- a weight-free fallback: Felzenszwalb graph segmentation
  (:func:`skimage.segmentation.felzenszwalb`), greedy merging of adjacent regions whose mean
  CIE-Lab colours are closer than ``merge_threshold`` (union-find over the region adjacency
  graph built from neighbouring pixel pairs), then small regions are absorbed by their most
  similar neighbour. Deterministic; the masks form a partition of the image; scores are 1.
* ``"auto"`` -- SAM when its weights are on this machine (a directory or the local cache; it is
  never downloaded, so ``auto`` never waits on the network), otherwise the fallback with one
  logged warning.

Example::

    proposals = propose_masks(image, MaskProposalConfig(method="superpixels"))
    proposals.masks       # [K, H, W] bool
    proposals.label_map() # [H, W] long, -1 where no mask covers the pixel
"""

from __future__ import annotations

import heapq
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Literal, Union

import numpy as np
import torch

from langfield.pretrained.errors import PretrainedUnavailableError
from langfield.pretrained.sam import LoadedSam, SamAutomaticMaskConfig, load_sam, sam_automatic_masks

__all__ = [
    "MaskProposalConfig",
    "MaskProposals",
    "propose_masks",
    "propose_masks_sam",
    "propose_masks_superpixels",
    "split_masks_at_depth_edges",
    "superpixel_labels",
]

_LOG = logging.getLogger(__name__)

MaskMethod = Literal["auto", "sam", "superpixels"]
_METHODS = ("auto", "sam", "superpixels")


# --------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class MaskProposalConfig:
    """Options for :func:`propose_masks`.

    Args:
        method: ``"auto"`` (SAM if its weights are on this machine, else superpixels), ``"sam"``
            or ``"superpixels"``.
        sam_model: Hugging Face hub id or local directory holding a ``SamModel`` and its
            ``SamProcessor`` (``save_pretrained`` layout).
        points_per_side, points_per_batch, pred_iou_thresh, stability_score_thresh,
        stability_score_offset, nms_iou_thresh, min_mask_area: the SAM automatic mask
            generator (:class:`~langfield.pretrained.sam.SamAutomaticMaskConfig`, built by
            :meth:`sam_config`; kept flat here so stored language configs still load).
        scale: Felzenszwalb ``scale`` (larger -> larger segments) on the image in [0, 1].
        sigma: Felzenszwalb Gaussian pre-smoothing width in pixels.
        min_size: Felzenszwalb minimum component size in pixels (enforced in post-processing).
        merge_threshold: merge adjacent regions whose mean Lab colours differ by less than this
            (Euclidean distance in CIE-Lab, i.e. CIE76 Delta E; 0 disables merging).
        min_region_fraction: regions smaller than this fraction of the image are merged into
            their most similar neighbour (0 disables).
    """

    method: MaskMethod = "auto"
    # SAM
    sam_model: str = "facebook/sam-vit-base"
    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    nms_iou_thresh: float = 0.7
    min_mask_area: int = 0
    # superpixel fallback
    scale: float = 100.0
    sigma: float = 0.8
    min_size: int = 50
    merge_threshold: float = 10.0
    min_region_fraction: float = 0.002

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {self.method!r}")
        if not isinstance(self.sam_model, (str, os.PathLike)) or not str(self.sam_model):
            raise ValueError(f"sam_model must be a non-empty hub id or directory, got {self.sam_model!r}")
        self.sam_config()  # validates the SAM settings
        if isinstance(self.min_size, bool) or not isinstance(self.min_size, int) or self.min_size < 1:
            raise ValueError(f"min_size must be an integer >= 1, got {self.min_size!r}")
        if not _is_real(self.min_region_fraction) or not 0.0 <= self.min_region_fraction < 1.0:
            raise ValueError(f"min_region_fraction must be in [0, 1), got {self.min_region_fraction!r}")
        if not _is_real(self.scale) or not self.scale > 0:
            raise ValueError(f"scale must be a finite number > 0, got {self.scale!r}")
        for name in ("sigma", "merge_threshold"):
            value = getattr(self, name)
            if not _is_real(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    def sam_config(self) -> SamAutomaticMaskConfig:
        """The SAM automatic-mask-generator settings of this config."""
        return SamAutomaticMaskConfig(
            points_per_side=self.points_per_side,
            points_per_batch=self.points_per_batch,
            pred_iou_thresh=self.pred_iou_thresh,
            stability_score_thresh=self.stability_score_thresh,
            stability_score_offset=self.stability_score_offset,
            nms_iou_thresh=self.nms_iou_thresh,
            min_mask_area=self.min_mask_area,
        )


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------------------- result


@dataclass(frozen=True)
class MaskProposals:
    """Mask proposals for one image.

    Attributes:
        masks: ``[K, H, W]`` bool. May overlap (SAM); a partition of the image (superpixels).
        scores: ``[K]`` float confidence, sorted in non-increasing order (SAM: predicted IoU;
            superpixels: all ones, masks ordered by decreasing area).
    """

    masks: torch.Tensor
    scores: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.masks, torch.Tensor) or self.masks.dtype != torch.bool or self.masks.ndim != 3:
            got = (self.masks.dtype, tuple(self.masks.shape)) if isinstance(self.masks, torch.Tensor) else type(self.masks)
            raise ValueError(f"masks must be a bool tensor [K, H, W], got {got}")
        if not isinstance(self.scores, torch.Tensor) or self.scores.shape != self.masks.shape[:1]:
            got = tuple(self.scores.shape) if isinstance(self.scores, torch.Tensor) else type(self.scores)
            raise ValueError(f"scores must be a tensor [K] with K={self.masks.shape[0]}, got {got}")

    @property
    def num_masks(self) -> int:
        return int(self.masks.shape[0])

    def areas(self) -> torch.Tensor:
        """Pixel count of each mask, ``[K]`` long."""
        return self.masks.flatten(1).sum(1)

    def label_map(self) -> torch.Tensor:
        """Pixel -> mask index, ``[H, W]`` long; ``-1`` where no mask covers the pixel.

        Where masks overlap, the smallest covering mask wins (the finest region, as language
        fields want for pooling); ties go to the higher score, then to the lower index. For a
        partition this is simply the index of the unique covering mask.
        """
        num, height, width = self.masks.shape
        labels = torch.full((height, width), -1, dtype=torch.long, device=self.masks.device)
        if num == 0:
            return labels
        areas = self.areas().cpu().tolist()
        scores = self.scores.detach().float().cpu().tolist()
        priority = sorted(range(num), key=lambda k: (areas[k], -scores[k], k))
        for k in reversed(priority):  # paint lowest priority first; the winner is painted last
            labels[self.masks[k]] = k
        return labels


# --------------------------------------------------------------------------------------- entry


def propose_masks(image: Union[torch.Tensor, np.ndarray], config: MaskProposalConfig = MaskProposalConfig()) -> MaskProposals:
    """Propose region masks for one image.

    Args:
        image: ``[H, W, 3]`` RGB, float in [0, 1] or uint8 (torch tensor or numpy array).
        config: which back-end and its options.

    Returns:
        :class:`MaskProposals` with ``masks [K, H, W]`` on the image's device.

    Raises:
        ValueError: bad ``image`` or ``config``.
        PretrainedUnavailableError: ``method="sam"`` and the SAM model is not available (the
            message says how to get it; ``method="auto"`` falls back to superpixels instead).
    """
    if not isinstance(config, MaskProposalConfig):
        raise ValueError(f"config must be a MaskProposalConfig, got {type(config).__name__}")
    rgb, device = _image_to_uint8(image)
    if config.method == "superpixels":
        return propose_masks_superpixels(rgb, config, device=device)
    if config.method == "sam":
        return propose_masks_sam(rgb, config, device=device)
    try:  # auto: SAM only when its weights are already here
        sam = load_sam(str(config.sam_model), device, allow_download=False, hint=_SAM_HINT)
    except (PretrainedUnavailableError, ImportError) as e:
        _warn_fallback_once(str(config.sam_model), str(e))
        return propose_masks_superpixels(rgb, config, device=device)
    return _proposals_from_sam(rgb, sam, config, device)


def _image_to_uint8(image: Union[torch.Tensor, np.ndarray]) -> tuple[np.ndarray, torch.device]:
    """Validate ``image`` and return it as a contiguous ``[H, W, 3]`` uint8 array + its device."""
    if isinstance(image, np.ndarray):
        array, device = image, torch.device("cpu")
    elif isinstance(image, torch.Tensor):
        device = image.device
        array = image.detach().cpu().numpy() if image.dtype != torch.bfloat16 else image.detach().float().cpu().numpy()
    else:
        raise ValueError(f"image must be a torch.Tensor or numpy array, got {type(image).__name__}")
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3] RGB, got shape {tuple(array.shape)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image must be non-empty, got shape {tuple(array.shape)}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array), device
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"image must be floating point in [0, 1] or uint8, got dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError("image must be finite, got NaN or inf values")
    lo, hi = float(array.min()), float(array.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"image must be floating point in [0, 1] or uint8, got values in [{lo:.4g}, {hi:.4g}]")
    return np.round(array.astype(np.float64) * 255.0).astype(np.uint8), device


# --------------------------------------------------------------------------------- superpixels


class _Regions:
    """Union-find over region labels with running Lab sums, pixel counts and adjacency sets."""

    def __init__(self, labels: np.ndarray, lab: np.ndarray) -> None:
        num = int(labels.max()) + 1
        flat = labels.ravel()
        self.parent = list(range(num))
        self.count = np.bincount(flat, minlength=num).astype(np.float64)
        self.sum = np.stack([np.bincount(flat, weights=lab[..., c].ravel(), minlength=num) for c in range(3)], 1)
        self.version = [0] * num
        self.neighbours: list[set[int]] = [set() for _ in range(num)]
        for a, b in _adjacent_pairs(labels):
            self.neighbours[a].add(b)
            self.neighbours[b].add(a)

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:  # path compression
            self.parent[a], a = root, self.parent[a]
        return root

    def distance(self, a: int, b: int) -> float:
        diff = self.sum[a] / self.count[a] - self.sum[b] / self.count[b]
        return float(np.sqrt(diff @ diff))

    def union(self, a: int, b: int) -> int:
        """Merge roots ``a`` and ``b`` into the lower label; return the surviving root."""
        keep, gone = (a, b) if a < b else (b, a)
        self.parent[gone] = keep
        self.count[keep] += self.count[gone]
        self.sum[keep] += self.sum[gone]
        merged = (self.neighbours[keep] | self.neighbours[gone]) - {keep, gone}
        for n in self.neighbours[gone]:
            self.neighbours[n].discard(gone)
            if n != keep:
                self.neighbours[n].add(keep)
        self.neighbours[keep], self.neighbours[gone] = merged, set()
        self.version[keep] += 1
        self.version[gone] += 1
        return keep

    def roots(self) -> list[int]:
        return [r for r in range(len(self.parent)) if self.parent[r] == r]


def _adjacent_pairs(labels: np.ndarray) -> np.ndarray:
    """Unique 4-connected label pairs ``(a, b)`` with ``a < b``, ``[P, 2]`` int64, sorted."""
    num = int(labels.max()) + 1
    keys = []
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        a, b = a.ravel().astype(np.int64), b.ravel().astype(np.int64)
        differ = a != b
        lo, hi = np.minimum(a[differ], b[differ]), np.maximum(a[differ], b[differ])
        keys.append(lo * num + hi)
    keys = np.unique(np.concatenate(keys))
    return np.stack([keys // num, keys % num], 1)


def _merge_similar(regions: _Regions, threshold: float) -> None:
    """Greedily merge the closest adjacent pair while its Lab distance is below ``threshold``."""
    if threshold <= 0:
        return
    heap = []
    for a in range(len(regions.parent)):
        for b in regions.neighbours[a]:
            if a < b:
                d = regions.distance(a, b)
                if d < threshold:
                    heap.append((d, a, b, 0, 0))
    heapq.heapify(heap)
    while heap:
        _, a, b, va, vb = heapq.heappop(heap)
        if regions.version[a] != va or regions.version[b] != vb:  # stale entry
            continue
        keep = regions.union(a, b)
        for n in sorted(regions.neighbours[keep]):
            d = regions.distance(keep, n)
            if d < threshold:
                lo, hi = min(keep, n), max(keep, n)
                heapq.heappush(heap, (d, lo, hi, regions.version[lo], regions.version[hi]))


def _absorb_small(regions: _Regions, min_area: float) -> None:
    """Merge every region with fewer than ``min_area`` pixels into its most similar neighbour."""
    if min_area <= 0:
        return
    heap = [(regions.count[r], r, regions.version[r]) for r in regions.roots() if regions.count[r] < min_area]
    heapq.heapify(heap)
    while heap:
        _, r, version = heapq.heappop(heap)
        if regions.version[r] != version or regions.parent[r] != r:
            continue
        if not regions.neighbours[r]:  # a single region covering the image
            continue
        target = min(regions.neighbours[r], key=lambda n: (regions.distance(r, n), n))
        keep = regions.union(r, target)
        if regions.count[keep] < min_area:
            heapq.heappush(heap, (regions.count[keep], keep, regions.version[keep]))


def superpixel_labels(rgb: np.ndarray, config: MaskProposalConfig) -> np.ndarray:
    """Felzenszwalb + Lab merging + small-region absorption on ``[H, W, 3]`` uint8 RGB.

    Returns:
        ``[H, W]`` int64 labels ``0..K-1``, numbered by decreasing region area (ties: the
        region whose first pixel in raster order comes first).
    """
    from skimage.color import rgb2lab
    from skimage.segmentation import felzenszwalb

    image = rgb.astype(np.float64) / 255.0
    labels = felzenszwalb(image, scale=config.scale, sigma=config.sigma, min_size=config.min_size, channel_axis=-1)
    labels = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)  # compact 0..N-1
    regions = _Regions(labels, rgb2lab(image))
    _merge_similar(regions, config.merge_threshold)
    _absorb_small(regions, config.min_region_fraction * labels.size)
    root_of = np.array([regions.find(i) for i in range(len(regions.parent))], dtype=np.int64)
    merged = root_of[labels]
    # Renumber deterministically: by decreasing area, then first occurrence in raster order.
    roots, first, counts = np.unique(merged.ravel(), return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    new_id = np.empty(int(roots.max()) + 1, dtype=np.int64)
    new_id[roots[order]] = np.arange(len(roots))
    return new_id[merged]


def propose_masks_superpixels(
    rgb: np.ndarray, config: MaskProposalConfig, device: Union[str, torch.device] = "cpu"
) -> MaskProposals:
    """Weight-free fallback; ``rgb`` is ``[H, W, 3]`` uint8. Masks partition the image, scores are 1."""
    labels = torch.from_numpy(superpixel_labels(rgb, config)).to(device)
    num = int(labels.max()) + 1
    masks = labels[None] == torch.arange(num, device=device)[:, None, None]
    return MaskProposals(masks=masks, scores=torch.ones(num, device=device))


# ------------------------------------------------------------------------------------------ SAM


_WARNED_FALLBACK: set[str] = set()


def _warn_fallback_once(model: str, reason: str) -> None:
    if model not in _WARNED_FALLBACK:
        _WARNED_FALLBACK.add(model)
        _LOG.warning("SAM unavailable, using superpixel mask proposals instead. %s", reason)


_SAM_HINT = "Or, without SAM: pass `--masks superpixels` (MaskProposalConfig(method='superpixels'))."


def _proposals_from_sam(
    rgb: np.ndarray, sam: LoadedSam, config: MaskProposalConfig, device: torch.device
) -> MaskProposals:
    masks, scores = sam_automatic_masks(rgb, sam, config.sam_config())
    return MaskProposals(masks=masks.to(device), scores=scores.to(device))


def propose_masks_sam(
    rgb: np.ndarray, config: MaskProposalConfig, device: Union[str, torch.device] = "cpu"
) -> MaskProposals:
    """SAM automatic mask generation on ``[H, W, 3]`` uint8 RGB (downloads the model when allowed).

    Raises:
        PretrainedUnavailableError: the SAM model is not available; the message says how to get it.
    """
    sam = load_sam(str(config.sam_model), device, hint=_SAM_HINT)
    return _proposals_from_sam(rgb, sam, config, torch.device(device))


# ----------------------------------------------------------------------------- geometry-aware split


def depth_edges(depth: torch.Tensor, accumulation: torch.Tensor | None = None, rel_threshold: float = 0.05) -> torch.Tensor:
    """``[H, W]`` bool: pixels next to a depth discontinuity.

    A pixel is an edge when a 4-neighbour's ray distance differs by more than ``rel_threshold``
    times the nearer of the two. Pixels whose ``accumulation < 0.5`` (nothing hit) count as
    infinitely far, so silhouettes are edges.
    """
    d = depth.reshape(depth.shape[0], depth.shape[1]).double()
    if accumulation is not None:
        d = torch.where(accumulation.reshape(d.shape) >= 0.5, d, torch.full_like(d, 1e6))
    edge = torch.zeros(d.shape, dtype=torch.bool, device=d.device)
    for dim in (0, 1):
        a, b = d.narrow(dim, 0, d.shape[dim] - 1), d.narrow(dim, 1, d.shape[dim] - 1)
        jump = (a - b).abs() > rel_threshold * torch.minimum(a, b).clamp_min(1e-6)
        edge.narrow(dim, 0, d.shape[dim] - 1).logical_or_(jump)
        edge.narrow(dim, 1, d.shape[dim] - 1).logical_or_(jump)
    return edge


def split_masks_at_depth_edges(
    masks: torch.Tensor, depth: torch.Tensor, accumulation: torch.Tensor | None = None,
    rel_threshold: float = 0.05, min_area: int = 3, fill_iterations: int = 2,
) -> torch.Tensor:  # fmt: skip
    """Split 2D mask proposals where the reconstruction's rendered depth jumps.

    Colour-based proposals (and sometimes SAM's) leak across object borders where foreground and
    background look alike; a trained 3D scene knows where the surfaces separate. Each mask is cut
    along :func:`depth_edges` into connected components (``scipy.ndimage.label``, 4-connectivity);
    components smaller than ``min_area`` are dropped; then the edge pixels of the mask are given
    back, ``fill_iterations`` rings at a time, to the neighbouring component whose depth is
    closest, so borders follow the geometry instead of being left out.

    Args:
        masks: ``[K, H, W]`` bool proposals.
        depth: ``[H, W]`` or ``[H, W, 1]`` rendered ray distance of the same view.
        accumulation: optional ``[H, W(, 1)]`` rendered opacity (``< 0.5`` = empty).

    Returns:
        ``[K', H, W]`` bool masks, each inside one original mask and free of depth edges.
    """
    from scipy import ndimage

    if masks.ndim != 3 or masks.dtype != torch.bool:
        raise ValueError(f"masks must be a [K, H, W] bool tensor, got {getattr(masks, 'dtype', None)} {tuple(masks.shape)}")
    h, w = masks.shape[1:]
    if depth.shape[:2] != (h, w):
        raise ValueError(f"depth is {tuple(depth.shape[:2])} but masks are {(h, w)} (H, W)")
    d = depth.reshape(h, w).double().cpu()
    if accumulation is not None:
        d = torch.where(accumulation.reshape(h, w).cpu() >= 0.5, d, torch.full_like(d, 1e6))
    edge = depth_edges(d, None, rel_threshold).numpy()
    out = []
    for m in masks.cpu().numpy():
        comps, n = ndimage.label(m & ~edge)
        if n == 0:
            continue
        sizes = np.bincount(comps.ravel(), minlength=n + 1)
        comps[(sizes < min_area)[comps]] = 0
        lab = torch.from_numpy(comps.astype(np.int64))
        lab[~torch.from_numpy(m)] = -1  # outside the mask: never filled
        for _ in range(fill_iterations):
            holes = lab == 0
            if not bool(holes.any()):
                break
            best_gap = torch.full((h, w), float("inf"), dtype=torch.float64)
            best_lab = torch.zeros((h, w), dtype=torch.int64)
            for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                nb_lab = torch.roll(lab, (dy, dx), (0, 1))
                nb_d = torch.roll(d, (dy, dx), (0, 1))
                valid = nb_lab > 0
                if dy == 1:
                    valid[0] = False
                elif dy == -1:
                    valid[-1] = False
                elif dx == 1:
                    valid[:, 0] = False
                else:
                    valid[:, -1] = False
                gap = torch.where(valid, (nb_d - d).abs(), torch.full_like(d, float("inf")))
                better = gap < best_gap
                best_gap = torch.where(better, gap, best_gap)
                best_lab = torch.where(better, nb_lab, best_lab)
            fill = holes & torch.isfinite(best_gap)
            lab[fill] = best_lab[fill]
        for i in torch.unique(lab[lab > 0]).tolist():
            out.append(lab == i)
    if not out:
        return torch.zeros(0, h, w, dtype=torch.bool, device=masks.device)
    return torch.stack(out).to(masks.device)
