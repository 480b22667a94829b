"""Open-vocabulary queries on rendered language-feature maps: relevancy, segmentation, 3D localization.

Pure functions on tensors; no model is loaded here. Inputs are rendered feature maps
``[..., E]`` (e.g. ``[H, W, E]``) and text embeddings ``[T, E]`` from the same teacher
(:class:`langfield.language.teachers.base.DenseTeacher`). All embeddings are treated as directions and
normalised inside, so similarities are cosines (a zero feature, e.g. empty background, has
cosine 0 with every text).

* :func:`relevancy`: LERF's relevancy score (Kerr et al., "LERF: Language Embedded Radiance
  Fields", ICCV 2023, Sec. 3.4) against canonical negatives :data:`CANONICAL_NEGATIVES`.
* :func:`segment`: closed-vocabulary segmentation by the softmax over label cosines, with an
  optional "unknown" (:data:`UNKNOWN` ``= -1``) for low-confidence pixels.
* :func:`localize_3d`: back-projects the most relevant pixels of rendered views with their
  rendered depth (a *ray distance*, see ``docs/conventions.md``) to a 3D point and box.
* :func:`label_colors`, :func:`colorize_labels`, :func:`write_relevancy_image`,
  :func:`write_segmentation`: visualisation and (atomic) export.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from langfield.geometry.rays import pixel_centers, rays_from_pixels
from langfield.io.atomic import atomic_write
from langfield.io.colormaps import Colormap, heatmap_overlay
from langfield.io.images import write_image
from langfield.language.teachers.base import check_text_queries
from langfield.types import Cameras

__all__ = [
    "CANONICAL_NEGATIVES",
    "UNKNOWN",
    "Localization",
    "QueryNotFoundError",
    "Segmentation",
    "check_label_list",
    "colorize_labels",
    "label_colors",
    "localize_3d",
    "name_key",
    "relevancy",
    "segment",
    "write_relevancy_image",
    "write_segmentation",
]

PathLike = Union[str, os.PathLike]

# LERF (Kerr et al. 2023, Sec. 3.4): the fixed negative phrases relevancy is measured against.
CANONICAL_NEGATIVES: Tuple[str, ...] = ("object", "things", "stuff", "texture")

# Label id of pixels no label is confident about (see :func:`segment`).
UNKNOWN = -1

_EPS = 1e-12
# Rows of features scored per matrix product: bounds the temporary normalised copy to ~16 MiB of
# float32 whatever the image size (a 200x200x512 map is 80 MiB; its full normalised copy is not made).
_CHUNK_ELEMENTS = 1 << 22


def _unit(x: Tensor) -> Tensor:
    x = x.float()
    return x / x.norm(dim=-1, keepdim=True).clamp_min(_EPS)


def _check_features(features: Tensor, name: str = "features", min_ndim: int = 1) -> None:
    if not isinstance(features, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(features).__name__}")
    if features.ndim < min_ndim or features.shape[-1] < 1:
        raise ValueError(f"{name} must be [..., E] with E >= 1, got {tuple(features.shape)}")
    if not features.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {features.dtype}")


def _check_embeddings(x: Tensor, name: str, dim: int) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] != dim:
        raise ValueError(f"{name} must be [N, {dim}] with N >= 1 (E of the features), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {x.dtype}")


def _check_temperature(temperature: float) -> float:
    if not float(temperature) > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return float(temperature)


def _chunked_cosines(features: Tensor, texts: Tensor, fn) -> list:
    """Apply ``fn(cos [n, T])`` to row chunks of ``features [N, E]`` against unit ``texts [T, E]``.

    The dot products are divided by the feature norms afterwards (``[n, T]``, not ``[n, E]``): the
    same cosines as normalising the features first, without writing a normalised copy of them."""
    chunk = max(1, _CHUNK_ELEMENTS // features.shape[-1])
    out = []
    for i in range(0, features.shape[0], chunk):
        part = features[i : i + chunk].float()
        out.append(fn((part @ texts.T) / part.norm(dim=-1, keepdim=True).clamp_min(_EPS)))
    return out


# ----------------------------------------------------------------------------- relevancy


def relevancy(features: Tensor, positive: Tensor, negatives: Tensor, temperature: float = 10.0) -> Tensor:
    """LERF relevancy of each feature for a positive text against negative texts.

    For each negative ``j`` the positive's probability under the two-way softmax
    ``softmax(s cos(f, pos), s cos(f, neg_j))`` is taken, and the score is the minimum over
    negatives (LERF Sec. 3.4, ``s = temperature = 10`` as in LERF's code). The pairwise softmax is
    ``sigmoid(s (cos_pos - cos_neg_j))`` and the sigmoid is increasing, so the minimum is
    ``sigmoid(s (cos_pos - max_j cos_neg_j))``, which is what is computed. ``0.5`` means "as
    similar to the positive as to the closest negative".

    Args:
        features: ``[..., E]`` rendered features (any scale; normalised inside).
        positive: ``[E]`` text embedding of the query.
        negatives: ``[Nn, E]`` embeddings of the negatives (e.g. of :data:`CANONICAL_NEGATIVES`),
            ``Nn >= 1``.
        temperature: ``s > 0``.

    Returns:
        ``[...]`` float32 scores in ``[0, 1]`` on ``features``' device (differentiable).
    """
    _check_features(features)
    dim = features.shape[-1]
    if not isinstance(positive, Tensor) or positive.ndim != 1 or positive.shape[0] != dim:
        shape = tuple(positive.shape) if isinstance(positive, Tensor) else type(positive).__name__
        raise ValueError(f"positive must be [{dim}] (E of the features), got {shape}")
    _check_embeddings(negatives, "negatives", dim)
    s = _check_temperature(temperature)
    texts = _unit(torch.cat([positive[None].to(features.device), negatives.to(features.device)], dim=0))

    def score(cos: Tensor) -> Tensor:
        return torch.sigmoid(s * (cos[:, 0] - cos[:, 1:].amax(dim=1)))

    flat = features.reshape(-1, dim)
    out = _chunked_cosines(flat, texts, score) if flat.shape[0] else [flat.new_zeros(0, dtype=torch.float32)]
    return torch.cat(out).reshape(features.shape[:-1])


# ----------------------------------------------------------------------------- segmentation


@dataclass(frozen=True)
class Segmentation:
    """Per-pixel label assignment.

    Attributes:
        labels: ``[H, W]`` int64 label index, :data:`UNKNOWN` (``-1``) where not confident.
        scores: ``[H, W]`` float32 probability of the best label (softmax over labels).
    """

    labels: Tensor
    scores: Tensor


def name_key(name: str) -> str:
    """How label and object names compare: case-insensitively, with whitespace runs collapsed
    (CLIP's tokenizer lowercases and cleans whitespace, so such names embed identically)."""
    return " ".join(name.split()).casefold()


def check_label_list(labels: Sequence[str]) -> list[str]:
    """Validate segmentation label names; returns them stripped.

    Raises ``ValueError`` for an empty list, a non-string or blank label, or a duplicate.
    Duplicates are detected case-insensitively with whitespace runs collapsed, because CLIP's
    tokenizer lowercases and cleans whitespace, so such labels embed identically and tie.
    """
    names = check_text_queries(labels, what="labels")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        key = name_key(name)
        if key in seen:
            j = seen[key]
            raise ValueError(f"labels[{i}] {name!r} duplicates labels[{j}] {names[j]!r}; give each label once")
        seen[key] = i
    return names


def segment(
    features: Tensor,
    label_embeddings: Tensor,
    unknown_threshold: Optional[float] = None,
    temperature: float = 10.0,
    background_index: Optional[int] = None,
) -> Segmentation:
    """Assign each pixel the label with the highest cosine similarity.

    The label probabilities are ``softmax(temperature * cos(f, label_l))`` over the ``L`` labels;
    the argmax label has the top probability (ties: the lowest index).

    Args:
        features: ``[H, W, E]`` (or any ``[..., E]``) rendered features.
        label_embeddings: ``[L, E]`` text embeddings of the labels (:func:`check_label_list`
            validates the names they came from).
        unknown_threshold: if given (in ``[0, 1]``), pixels whose top probability is below it
            are labelled :data:`UNKNOWN`. Note the top probability is at least ``1 / L``.
        temperature: softmax scale ``> 0``.
        background_index: if given, the low-confidence pixels get this label instead of
            :data:`UNKNOWN` (for label sets with an explicit background class). It has no
            effect without ``unknown_threshold``.

    Returns:
        :class:`Segmentation` with ``labels [...]`` int64 and ``scores [...]`` float32.
    """
    _check_features(features)
    dim = features.shape[-1]
    _check_embeddings(label_embeddings, "label_embeddings", dim)
    s = _check_temperature(temperature)
    num_labels = label_embeddings.shape[0]
    if unknown_threshold is not None and not 0.0 <= float(unknown_threshold) <= 1.0:
        raise ValueError(f"unknown_threshold must be in [0, 1] (a probability), got {unknown_threshold}")
    if background_index is not None and not 0 <= int(background_index) < num_labels:
        raise ValueError(f"background_index must be in [0, {num_labels}), got {background_index}")
    texts = _unit(label_embeddings.to(features.device))

    def best(cos: Tensor) -> Tuple[Tensor, Tensor]:
        top, idx = torch.softmax(s * cos, dim=1).max(dim=1)
        return top, idx

    flat = features.reshape(-1, dim)
    parts = _chunked_cosines(flat, texts, best) if flat.shape[0] else []
    shape = features.shape[:-1]
    if parts:
        scores = torch.cat([p[0] for p in parts]).reshape(shape)
        labels = torch.cat([p[1] for p in parts]).reshape(shape).long()
    else:
        scores = flat.new_zeros(shape, dtype=torch.float32)
        labels = torch.zeros(shape, dtype=torch.int64, device=features.device)
    if unknown_threshold is not None:
        fill = UNKNOWN if background_index is None else int(background_index)
        labels = torch.where(scores < float(unknown_threshold), torch.full_like(labels, fill), labels)
    return Segmentation(labels=labels, scores=scores)


# ----------------------------------------------------------------------------- 3D localization


class QueryNotFoundError(ValueError):
    """A query matched nothing in the scene: no pixel is relevant enough (a "not found" answer,
    never a made-up box)."""


@dataclass(frozen=True)
class Localization:
    """Where a query is in 3D.

    Attributes:
        point: ``[3]`` relevancy-weighted centre of the matched surface points.
        aabb: ``[2, 3]`` axis-aligned box ``(min, max)`` of the matched points (robust
            percentiles, see :func:`localize_3d`).
        num_points: number of back-projected pixels that matched.
        score: the highest relevancy among them (the query's peak relevancy).
    """

    point: Tensor
    aabb: Tensor
    num_points: int
    score: float


def _per_pixel(x: Tensor, name: str, views: int, height: int, width: int) -> Tensor:
    """Accept ``[V, H, W, 1]`` / ``[V, H, W]`` (and ``[H, W, 1]`` / ``[H, W]`` for one view)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    ok = [(views, height, width, 1), (views, height, width)]
    if views == 1:
        ok += [(height, width, 1), (height, width)]
    if tuple(x.shape) not in ok:
        raise ValueError(f"{name} must be [{views}, {height}, {width}, 1] (matching relevancy), got {tuple(x.shape)}")
    return x.reshape(views, height, width)


def _quantiles(x: Tensor, qs: Sequence[float]) -> Tensor:
    """Linear-interpolated quantiles along dim 0 of ``x [N, D]`` (no size limit, unlike torch.quantile)."""
    xs = x.sort(dim=0).values
    n = xs.shape[0]
    out = []
    for q in qs:
        pos = q * (n - 1)
        lo = int(np.floor(pos))
        hi = min(lo + 1, n - 1)
        frac = pos - lo
        out.append(xs[lo] * (1.0 - frac) + xs[hi] * frac)
    return torch.stack(out)


def _check_world_transform(world_transform: Tensor) -> Tensor:
    if not isinstance(world_transform, Tensor) or tuple(world_transform.shape) != (4, 4):
        shape = tuple(world_transform.shape) if isinstance(world_transform, Tensor) else type(world_transform).__name__
        raise ValueError(f"world_transform must be a [4, 4] tensor, got {shape}")
    T = world_transform.detach().double().cpu()
    if not bool(torch.isfinite(T).all()):
        raise ValueError("world_transform must be finite")
    if not torch.allclose(T[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=T.dtype), atol=1e-6):
        raise ValueError(f"world_transform's last row must be (0, 0, 0, 1), got {T[3].tolist()}")
    if abs(float(torch.linalg.det(T[:3, :3]))) < 1e-12:
        raise ValueError("world_transform must be invertible")
    return T


def localize_3d(
    relevancy: Tensor,
    depth: Tensor,
    cameras: Cameras,
    threshold: float = 0.5,
    min_pixels: int = 1,
    *,
    accumulation: Optional[Tensor] = None,
    world_transform: Optional[Tensor] = None,
    per_view: bool = True,
    percentiles: Tuple[float, float] = (2.0, 98.0),
    min_relevancy: Optional[float] = None,
) -> Localization:
    """Locate a query in 3D from relevancy maps rendered with depth from known cameras.

    A pixel *qualifies* if its depth is finite and ``> 0``, its relevancy is finite, its
    accumulation is ``>= 0.5`` (when ``accumulation`` is given), and its relevancy reaches
    ``threshold`` of the way from the minimum to the maximum relevancy of the valid pixels::

        relevancy >= lo + threshold * (hi - lo)

    with ``lo, hi`` taken per view (``per_view=True``) or over all views. For maps whose minimum
    is 0 this is ``relevancy >= threshold * max``; subtracting the minimum matters for LERF
    relevancy, whose "no evidence" level is 0.5 rather than 0 (LangSplat normalises its maps
    the same way). A view whose valid relevancy is constant has no qualifying pixel (unless
    ``threshold <= 0``). With ``per_view=True`` every view contributes its best pixels, also a
    view that does not see the object; pass ``per_view=False`` when that can happen.

    Qualifying pixels are back-projected along the repo's rays (:func:`rays_from_pixels` at the
    pixel centres, OpenCV ``c2w``): ``x = origin + direction * depth``, ``depth`` being the
    rendered *ray distance*. Then

    * ``point`` = mean of the points weighted by their normalised relevancy
      ``(r - lo) / (hi - lo)`` (uniform if those weights are all 0);
    * ``aabb`` = per-axis ``percentiles`` (default 2nd and 98th, linear interpolation) of the
      points, robust to a few stray pixels at depth edges.

    Args:
        relevancy: ``[V, H, W]`` (or ``[H, W]`` for one view), e.g. from :func:`relevancy`.
        depth: ``[V, H, W, 1]`` rendered ray distances (``[H, W, 1]`` for one view).
        cameras: the ``V`` cameras (``H x W`` each) the maps were rendered from.
        threshold: relative threshold in ``[0, 1]``.
        min_pixels: fewest qualifying pixels (over all views) accepted as a match.
        accumulation: optional ``[V, H, W, 1]`` rendered opacity; pixels below 0.5 are skipped.
        world_transform: optional ``[4, 4]`` similarity of the dataset
            (``x_norm = world_transform @ x_orig``, cameras and depth in the normalised frame).
            If given, the result is in the dataset's **original** world frame (points are mapped
            through the inverse before the mean and box are taken).
        per_view: normalise the threshold per view (default) or over all views.
        percentiles: lower and upper percentile (``0 <= lo <= hi <= 100``) for the box.
        min_relevancy: absolute floor in ``[0, 1]``: pixels below it never qualify, whatever the
            relative threshold. The relative threshold alone always picks each view's best pixels,
            so it "finds" queries that are not in the scene; for LERF relevancy ``0.5`` ("closer to
            the query than to any negative") is the natural floor (:meth:`LanguageScene.localize`).

    Returns:
        :class:`Localization` (float32 tensors on ``relevancy``'s device).

    Raises:
        ValueError: on bad shapes/arguments.
        QueryNotFoundError: fewer than ``min_pixels`` pixels qualify (the query is not found).
    """
    if not isinstance(relevancy, Tensor):
        raise ValueError(f"relevancy must be a torch.Tensor, got {type(relevancy).__name__}")
    if relevancy.ndim == 2:
        relevancy = relevancy[None]
    if relevancy.ndim != 3 or relevancy.numel() == 0:
        raise ValueError(f"relevancy must be [V, H, W] or [H, W], got {tuple(relevancy.shape)}")
    if not relevancy.is_floating_point():
        raise ValueError(f"relevancy must be floating point, got {relevancy.dtype}")
    views, height, width = relevancy.shape
    if not isinstance(cameras, Cameras):
        raise ValueError(f"cameras must be langfield.types.Cameras, got {type(cameras).__name__}")
    if len(cameras) != views:
        raise ValueError(f"cameras must hold one camera per view ({views}), got {len(cameras)}")
    if bool((cameras.widths != width).any() | (cameras.heights != height).any()):
        raise ValueError(
            f"cameras must all be {width}x{height} (W x H of relevancy), got widths {cameras.widths.tolist()} "
            f"and heights {cameras.heights.tolist()}"
        )
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1] (relative to the relevancy range), got {threshold}")
    if isinstance(min_pixels, bool) or not isinstance(min_pixels, int) or min_pixels < 1:
        raise ValueError(f"min_pixels must be an integer >= 1, got {min_pixels!r}")
    lo_p, hi_p = percentiles
    if not 0.0 <= lo_p <= hi_p <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= lo <= hi <= 100, got {percentiles}")
    if min_relevancy is not None and not 0.0 <= float(min_relevancy) <= 1.0:
        raise ValueError(f"min_relevancy must be in [0, 1], got {min_relevancy}")
    T = None if world_transform is None else _check_world_transform(world_transform)

    device = relevancy.device
    rel = relevancy.detach().float()
    dep = _per_pixel(depth, "depth", views, height, width).detach().to(device).float()
    valid = torch.isfinite(dep) & (dep > 0) & torch.isfinite(rel)
    if accumulation is not None:
        acc = _per_pixel(accumulation, "accumulation", views, height, width).detach().to(device).float()
        valid &= acc >= 0.5

    big = torch.finfo(torch.float32).max
    masked_hi = torch.where(valid, rel, torch.full_like(rel, -big))
    masked_lo = torch.where(valid, rel, torch.full_like(rel, big))
    if per_view:
        hi = masked_hi.amax(dim=(1, 2), keepdim=True)
        lo = masked_lo.amin(dim=(1, 2), keepdim=True)
    else:
        hi = masked_hi.amax().reshape(1, 1, 1)
        lo = masked_lo.amin().reshape(1, 1, 1)
    span = hi - lo
    has_range = span > 0
    safe_span = torch.where(has_range, span, torch.ones_like(span))
    norm = torch.where(has_range, (rel - lo) / safe_span, torch.zeros_like(rel))
    chosen = valid & (norm >= float(threshold))
    if min_relevancy is not None:
        chosen &= rel >= float(min_relevancy)
        if bool(valid.any()) and not bool((valid & (rel >= float(min_relevancy))).any()):
            peak = float(rel[valid].max())
            raise QueryNotFoundError(
                f"query not found: the highest relevancy over {views} view(s) is {peak:.3f}, below min_relevancy="
                f"{float(min_relevancy):g} (no pixel is closer to the query than to the negatives)"
            )

    count = int(chosen.sum())
    if count < min_pixels:
        what = "nothing" if count == 0 else f"only {count} pixel(s) (min_pixels={min_pixels})"
        cond = "finite depth > 0" + (" and accumulation >= 0.5" if accumulation is not None else "")
        raise QueryNotFoundError(
            f"query matched {what}: {int(valid.sum())} of {views * height * width} pixels ({views} view(s) of "
            f"{width}x{height}) have {cond}, and {count} of them reach threshold={threshold} of the relevancy "
            "range. Check that depth and cameras belong to the same renders and that the object is in view, "
            "or lower the threshold."
        )

    view_idx, rows, cols = torch.nonzero(chosen, as_tuple=True)
    pixels = pixel_centers(width, height, device=device)[rows, cols]
    rays = rays_from_pixels(cameras.to(device), view_idx, pixels, 0.0, 1.0)
    points = rays.origins.double() + rays.directions.double() * dep[view_idx, rows, cols].double()[:, None]
    if T is not None:
        T_inv = torch.linalg.inv(T).to(device)
        points = points @ T_inv[:3, :3].T + T_inv[:3, 3]

    weights = norm[view_idx, rows, cols].double()
    if float(weights.sum()) <= 0:
        weights = torch.ones_like(weights)
    point = (points * weights[:, None]).sum(dim=0) / weights.sum()
    aabb = _quantiles(points, (lo_p / 100.0, hi_p / 100.0))
    return Localization(
        point=point.float(),
        aabb=aabb.float(),
        num_points=count,
        score=float(rel[view_idx, rows, cols].max()),
    )


# ----------------------------------------------------------------------------- visualisation


def label_colors(num_labels: int) -> Tensor:
    """A deterministic palette of ``num_labels`` distinct, non-black colours ``[L, 3]`` uint8.

    Label ``l`` gets the PASCAL VOC devkit colour of index ``l + 1`` (the bits of the index are
    spread over the high bits of R, G and B), so the first colours are far apart, every colour
    differs (for up to ``2**24 - 1`` labels) and black stays free for :data:`UNKNOWN`.
    """
    if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)) or not 0 <= num_labels < 1 << 24:
        raise ValueError(f"num_labels must be an integer in [0, 2**24), got {num_labels!r}")
    idx = torch.arange(1, int(num_labels) + 1, dtype=torch.int64)
    rgb = torch.zeros(int(num_labels), 3, dtype=torch.int64)
    for bit in range(8):
        for ch in range(3):
            rgb[:, ch] |= ((idx >> (3 * bit + ch)) & 1) << (7 - bit)
    return rgb.to(torch.uint8)


def _check_labels(labels: Tensor, num_labels: int) -> Tensor:
    if not isinstance(labels, Tensor):
        raise ValueError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.ndim != 2:
        raise ValueError(f"labels must be [H, W], got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must hold integer label ids, got {labels.dtype}")
    labels = labels.long()
    bad = (labels < UNKNOWN) | (labels >= num_labels)
    if bool(bad.any()):
        raise ValueError(f"labels must be in [0, {num_labels}) or UNKNOWN (-1), got {labels[bad][0].item()}")
    return labels


def colorize_labels(labels: Tensor, num_labels: int) -> Tensor:
    """Colour a label map with :func:`label_colors`; :data:`UNKNOWN` pixels are black.

    Returns:
        ``[H, W, 3]`` uint8 on ``labels``' device.
    """
    table = label_colors(num_labels)
    labels = _check_labels(labels, num_labels)
    table = torch.cat([torch.zeros(1, 3, dtype=torch.uint8), table]).to(labels.device)
    return table[labels + 1]


def write_relevancy_image(
    path: PathLike, rgb: Tensor, relevancy: Tensor, alpha: float = 0.6, cmap: Colormap = "turbo"
) -> Path:
    """Write a relevancy heat-map blended over the render (:func:`heatmap_overlay`), atomically.

    Args:
        path: ``.png`` or ``.jpg`` destination.
        rgb: ``[H, W, 3]`` float render in ``[0, 1]``.
        relevancy: ``[H, W]`` scores in ``[0, 1]`` (clamped, not re-normalised, so images of
            different queries stay comparable).
        alpha, cmap: see :func:`heatmap_overlay`.
    """
    return write_image(path, heatmap_overlay(rgb.detach().cpu(), relevancy.detach().cpu(), alpha=alpha, cmap=cmap))


def _legend_image(color: np.ndarray, names: Sequence[str], palette: np.ndarray, with_unknown: bool) -> np.ndarray:
    """``color`` with a legend panel on its right: one swatch + name per label."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    entries = list(zip(names, palette.tolist()))
    if with_unknown:
        entries.append(("unknown", [0, 0, 0]))
    row_h, swatch, pad = 14, 10, 4
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max(int(np.ceil(probe.textlength(name, font=font))) for name, _ in entries)
    panel_w = pad + swatch + pad + text_w + pad
    height = max(color.shape[0], pad + row_h * len(entries))
    canvas = Image.new("RGB", (color.shape[1] + panel_w, height), (32, 32, 32))
    canvas.paste(Image.fromarray(color), (0, 0))
    draw = ImageDraw.Draw(canvas)
    x0 = color.shape[1] + pad
    for i, (name, rgb) in enumerate(entries):
        y = pad + i * row_h
        draw.rectangle([x0, y + 1, x0 + swatch - 1, y + swatch], fill=tuple(rgb), outline=(255, 255, 255))
        draw.text((x0 + swatch + pad, y), name, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def write_segmentation(
    path_prefix: PathLike, labels: Tensor, label_names: Sequence[str], legend: bool = False
) -> dict[str, Path]:
    """Write a segmentation as a colour PNG and a label-id PNG (atomically).

    Files (``path_prefix`` + suffix, parent directories created):

    * ``"color"``: ``{prefix}_color.png``, :func:`colorize_labels` (unknown black);
    * ``"ids"``: ``{prefix}_ids.png``, single channel label ids. With fewer than 255 labels it is
      8-bit and :data:`UNKNOWN` is stored as ``255``; otherwise 16-bit with unknown ``65535``
      (at most 65535 labels);
    * ``"legend"`` (only if ``legend=True``): ``{prefix}_legend.png``, the colour image with a
      panel naming each label's colour.

    Args:
        path_prefix: e.g. ``"renders/seg_0003"``.
        labels: ``[H, W]`` int64 ids in ``[0, L)`` or :data:`UNKNOWN`.
        label_names: the ``L`` label names (validated by :func:`check_label_list`).
        legend: also write the legend image.

    Returns:
        ``{"color": Path, "ids": Path[, "legend": Path]}``.
    """
    import imageio.v3 as iio

    names = check_label_list(label_names)
    num_labels = len(names)
    if num_labels > 65535:
        raise ValueError(f"label_names: at most 65535 labels fit a 16-bit id image, got {num_labels}")
    labels = _check_labels(labels, num_labels).detach().cpu()
    prefix = os.fspath(path_prefix)
    paths = {"color": Path(prefix + "_color.png"), "ids": Path(prefix + "_ids.png")}

    color = colorize_labels(labels, num_labels).numpy()
    write_image(paths["color"], color)

    if num_labels < 255:
        ids = torch.where(labels == UNKNOWN, torch.full_like(labels, 255), labels).numpy().astype(np.uint8)
    else:
        ids = torch.where(labels == UNKNOWN, torch.full_like(labels, 65535), labels).numpy().astype(np.uint16)
    data = iio.imwrite("<bytes>", ids, extension=".png")
    with atomic_write(paths["ids"], "wb") as f:
        f.write(data)

    if legend:
        paths["legend"] = Path(prefix + "_legend.png")
        unknown = bool((labels == UNKNOWN).any())
        write_image(paths["legend"], _legend_image(color, names, label_colors(num_labels).numpy(), unknown))
    return paths
