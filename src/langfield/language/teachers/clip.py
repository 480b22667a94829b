"""Dense 2D CLIP features for every training image: the real-model :class:`DenseTeacher`.

A CLIP-family model embeds a whole image into one vector. A language field needs a vector per
pixel, so the image is cut into pieces, every piece is embedded, and the piece embeddings are
spread back over the pixels. Two ways to cut, both in use in the literature:

**Multi-scale crop pyramid** (LERF, Kerr et al. 2023, Sec. 3.3 and the implementation details):
square crops whose side goes from ``min_scale`` to ``max_scale`` of the image (5% to 50%, 7
scales, 50% overlap between neighbouring crops). Every crop is embedded; the embedding is placed
at the crop's centre, and each pixel's feature is the bilinear interpolation of the crop-centre
grid at the pixel's centre. :func:`crop_pyramid_features` builds the pyramid,
:meth:`CropPyramid.at_pixels` spreads it over the pixels.

- *Scale.* LERF conditions its field on the crop scale and searches over scales at query time.
  Our language fields are scale-free, so :meth:`CropPyramid.at_pixels` with ``scale_index=None``
  fuses the scales: the normalised mean of the per-scale (normalised) maps.
- *Borders.* LERF zero-pads the image by half a crop so crop centres form a regular grid that
  reaches the border; the padded crops show CLIP black bars. Here every crop window is
  **clamped inside the image**: along each axis the crops start at ``0`` and the last one ends
  at the image edge, with starts spread evenly in between (so the actual overlap is *at least*
  ``overlap``). Every crop shows only real pixels; pixels between the border and the outermost
  crop centre take the outermost crop's embedding (the interpolation clamps there).
- *Crop size.* ``round(scale * min(H, W))`` pixels (at least 1), square. Crops are cut at image
  resolution with one gather per batch of crops and handed to the encoder, whose own
  preprocessing resizes them to the model's input size.

**Region pooling over mask proposals** (OV-NeRF's use of SAM regions; OpenSeg / OVSeg style
mask pooling): :func:`region_features` embeds, for each mask, a square crop around the mask's
bounding box (enlarged by ``bbox_margin``), with the pixels outside the mask optionally painted
neutral grey so the model sees the region rather than its surroundings. Each pixel takes the
embedding of the **smallest** mask that contains it (SAM masks overlap and nest; the finest
region is the most specific), and pixels no mask covers take the whole-image embedding.

:class:`CLIPDenseTeacher` wraps either method (or the normalised average of both) behind the
:class:`~langfield.language.teachers.base.DenseTeacher` interface, with an optional on-disk cache
(:class:`~langfield.pretrained.embedding_cache.EmbeddingCache`) keyed by image content, method and
settings, so re-training on the same images does not re-encode them. The cache stores the
compact products (crop-centre embeddings; region embeddings plus the pixel-to-region map), not
the ``[H, W, E]`` maps.

Example::

    teacher = load_clip_teacher("openai/clip-vit-base-patch16", method="pyramid", cache_dir="cache/clip")
    features = teacher.dense_features(image, view_key="train/0")   # [H, W, 512], unit norm
    scores = features @ teacher.embed_texts(["a red mug"])[0]       # [H, W] cosine similarity
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from langfield.language.masks import MaskProposalConfig, MaskProposals, propose_masks
from langfield.language.teachers.base import DenseTeacher, check_text_queries
from langfield.pretrained.clip import EncoderConfig, VisionLanguageEncoder, load_encoder
from langfield.pretrained.embedding_cache import EmbeddingCache

__all__ = [
    "CLIPDenseTeacher",
    "CropPyramid",
    "CropPyramidConfig",
    "CropPyramidLevel",
    "DenseFeatureConfig",
    "RegionFeatures",
    "RegionPoolingConfig",
    "crop_pyramid_features",
    "crop_pyramid_layout",
    "load_clip_teacher",
    "region_features",
]

DenseMethod = Literal["pyramid", "regions", "both"]
_METHODS = ("pyramid", "regions", "both")
_BACKGROUNDS = ("gray", "none")
#: Neutral grey (8-bit 128) painted outside a region's mask and outside the image.
GREY = 128.0 / 255.0
_CACHE_VERSION = "dense-v1"
#: Per scale: ``(scale, crop_size, starts_y [h], starts_x [w])``.
_Layout = list[tuple[float, int, Tensor, Tensor]]


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: Any, minimum: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


# --------------------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class CropPyramidConfig:
    """LERF crop pyramid settings (defaults: the paper's).

    Attributes:
        min_scale: smallest crop side as a fraction of the image's shorter side, in ``(0, 1]``.
        max_scale: largest crop side, same unit, in ``[min_scale, 1]``.
        num_scales: number of crop sizes, spaced linearly from ``min_scale`` to ``max_scale``
            (one scale uses ``min_scale``).
        overlap: fraction of a crop shared with its neighbour, in ``[0, 1)``; the stride is
            ``round(crop_size * (1 - overlap))`` pixels (at least 1), then shrunk so the crops
            reach both image edges.
        batch_size: crops cut and handed to the encoder per call (memory knob; the encoder
            batches its forward passes by its own ``batch_size``).
    """

    min_scale: float = 0.05
    max_scale: float = 0.5
    num_scales: int = 7
    overlap: float = 0.5
    batch_size: int = 256

    def __post_init__(self) -> None:
        if not _is_real(self.min_scale) or not 0.0 < self.min_scale <= 1.0:
            raise ValueError(f"CropPyramidConfig.min_scale must be in (0, 1], got {self.min_scale!r}")
        if not _is_real(self.max_scale) or not self.min_scale <= self.max_scale <= 1.0:
            raise ValueError(
                f"CropPyramidConfig.max_scale must be in [min_scale={self.min_scale}, 1], got {self.max_scale!r}"
            )
        if not _is_count(self.num_scales):
            raise ValueError(f"CropPyramidConfig.num_scales must be an integer >= 1, got {self.num_scales!r}")
        if not _is_real(self.overlap) or not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"CropPyramidConfig.overlap must be in [0, 1), got {self.overlap!r}")
        if not _is_count(self.batch_size):
            raise ValueError(f"CropPyramidConfig.batch_size must be an integer >= 1, got {self.batch_size!r}")

    def scales(self) -> list[float]:
        """The ``num_scales`` crop scales, linearly spaced from ``min_scale`` to ``max_scale``."""
        if self.num_scales == 1:
            return [float(self.min_scale)]
        step = (self.max_scale - self.min_scale) / (self.num_scales - 1)
        return [float(self.min_scale + i * step) for i in range(self.num_scales)]

    def cache_key(self) -> str:
        """Everything that changes the embeddings (not ``batch_size``)."""
        return f"pyramid:min={self.min_scale!r}:max={self.max_scale!r}:n={self.num_scales}:overlap={self.overlap!r}"


@dataclass(frozen=True)
class RegionPoolingConfig:
    """Region pooling settings.

    Attributes:
        bbox_margin: each side of a mask's bounding box is pushed out by this fraction of the
            box's height (top, bottom) or width (left, right); the box is then made square
            around its centre (the encoder would otherwise centre-crop away part of a long
            region), shifted inside the image where it fits, and padded with grey where not.
        mask_background: ``"gray"`` paints the crop's pixels outside the mask neutral grey
            (128), so the model sees the region alone; ``"none"`` keeps the surroundings.
        crop_resolution: side in pixels each region crop is resized to before it is batched;
            ``None`` uses the encoder's input size (``encoder.image_size``), so the encoder's
            own resize is then a no-op.
        batch_size: region crops handed to the encoder per call.
    """

    bbox_margin: float = 0.1
    mask_background: Literal["gray", "none"] = "gray"
    crop_resolution: Optional[int] = None
    batch_size: int = 64

    def __post_init__(self) -> None:
        if not _is_real(self.bbox_margin) or self.bbox_margin < 0:
            raise ValueError(f"RegionPoolingConfig.bbox_margin must be a finite number >= 0, got {self.bbox_margin!r}")
        if self.mask_background not in _BACKGROUNDS:
            raise ValueError(
                f"RegionPoolingConfig.mask_background must be one of {_BACKGROUNDS}, got {self.mask_background!r}"
            )
        if self.crop_resolution is not None and not _is_count(self.crop_resolution):
            raise ValueError(
                f"RegionPoolingConfig.crop_resolution must be None or an integer >= 1, got {self.crop_resolution!r}"
            )
        if not _is_count(self.batch_size):
            raise ValueError(f"RegionPoolingConfig.batch_size must be an integer >= 1, got {self.batch_size!r}")

    def cache_key(self) -> str:
        """Everything that changes the embeddings (not ``batch_size``)."""
        return f"regions:margin={self.bbox_margin!r}:bg={self.mask_background}:res={self.crop_resolution}"


def _superpixels() -> MaskProposalConfig:
    return MaskProposalConfig(method="superpixels")


@dataclass(frozen=True)
class DenseFeatureConfig:
    """How :class:`CLIPDenseTeacher` turns an image into dense features.

    Attributes:
        method: ``"pyramid"`` (LERF crop pyramid), ``"regions"`` (pooling over mask proposals)
            or ``"both"`` (normalised average of the two maps).
        pyramid: crop pyramid settings.
        regions: region pooling settings.
        masks: mask proposals for ``"regions"`` / ``"both"``; the weight-free superpixels by
            default (pass ``MaskProposalConfig(method="sam")`` or ``"auto"`` for SAM).
        cache_dir: directory of the on-disk embedding cache; ``None`` disables it.
    """

    method: DenseMethod = "pyramid"
    pyramid: CropPyramidConfig = field(default_factory=CropPyramidConfig)
    regions: RegionPoolingConfig = field(default_factory=RegionPoolingConfig)
    masks: MaskProposalConfig = field(default_factory=_superpixels)
    cache_dir: Optional[str] = None

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise ValueError(f"DenseFeatureConfig.method must be one of {_METHODS}, got {self.method!r}")
        kinds = {"pyramid": CropPyramidConfig, "regions": RegionPoolingConfig, "masks": MaskProposalConfig}
        for name, kind in kinds.items():
            value = getattr(self, name)
            if not isinstance(value, kind):
                raise ValueError(f"DenseFeatureConfig.{name} must be a {kind.__name__}, got {type(value).__name__}")
        if self.cache_dir is not None and not str(self.cache_dir):
            raise ValueError("DenseFeatureConfig.cache_dir must be None or a non-empty path")


# ----------------------------------------------------------------------------------------- input


def _check_image(image: Any) -> Tensor:
    """``image``: ``[H, W, 3]`` uint8 (or float in [0, 1]) tensor; raise ``ValueError`` otherwise."""
    if not isinstance(image, Tensor):
        raise ValueError(f"image must be a torch.Tensor [H, W, 3] uint8, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must have shape [H, W, 3], got {tuple(image.shape)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image must be non-empty, got shape {tuple(image.shape)}")
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise ValueError(f"image must be uint8 (or float in [0, 1]), got dtype {image.dtype}")
    return image


def _as_float(image: Tensor) -> Tensor:
    """``[..., 3]`` uint8 or float to float32 in [0, 1]."""
    return image.float() / 255.0 if image.dtype == torch.uint8 else image.float()


def _encoder_device(encoder: Any, default: torch.device) -> torch.device:
    device = getattr(encoder, "device", None)
    return torch.device(device) if device is not None else default


# ---------------------------------------------------------------------------------- crop pyramid


@dataclass(frozen=True)
class CropPyramidLevel:
    """One scale of a :class:`CropPyramid`.

    Attributes:
        scale: crop side as a fraction of the image's shorter side.
        crop_size: crop side in pixels (crops are square).
        starts_y: ``[h]`` long, top row of each crop row.
        starts_x: ``[w]`` long, left column of each crop column.
        embeddings: ``[h, w, E]`` unit embeddings of the crops (crop ``(i, j)`` covers rows
            ``starts_y[i] + [0, crop_size)`` and columns ``starts_x[j] + [0, crop_size)``).
    """

    scale: float
    crop_size: int
    starts_y: Tensor
    starts_x: Tensor
    embeddings: Tensor

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(h, w)``: crops per column and per row."""
        return int(self.starts_y.numel()), int(self.starts_x.numel())

    def centres(self) -> tuple[Tensor, Tensor]:
        """Crop centres ``([h], [w])`` float64 in continuous pixel coordinates (pixel ``i`` spans
        ``[i, i + 1)``, so its centre is ``i + 0.5``)."""
        half = self.crop_size / 2.0
        return self.starts_y.double() + half, self.starts_x.double() + half


def _interpolation_matrix(centres: Tensor, length: int) -> Tensor:
    """``[length, n]`` float64: row ``p`` holds the linear-interpolation weights of the pixel
    centre ``p + 0.5`` between the increasing node positions ``centres [n]``, clamped to the
    first / last node outside them."""
    n = centres.numel()
    centres = centres.double().cpu()
    if n == 1:
        return torch.ones(length, 1, dtype=torch.float64)
    query = torch.arange(length, dtype=torch.float64) + 0.5
    right = torch.searchsorted(centres, query).clamp(1, n - 1)
    left = right - 1
    t = ((query - centres[left]) / (centres[right] - centres[left])).clamp(0.0, 1.0)
    rows = torch.arange(length)
    weights = torch.zeros(length, n, dtype=torch.float64)
    weights[rows, left] = 1.0 - t
    weights[rows, right] = t
    return weights


@dataclass(frozen=True)
class CropPyramid:
    """Crop-centre embeddings of one image at several scales.

    Attributes:
        levels: one :class:`CropPyramidLevel` per scale, smallest crops first.
        image_size: ``(H, W)`` of the image.
    """

    levels: tuple[CropPyramidLevel, ...]
    image_size: tuple[int, int]

    @property
    def num_scales(self) -> int:
        return len(self.levels)

    @property
    def embedding_dim(self) -> int:
        return int(self.levels[0].embeddings.shape[-1])

    def _level_at_pixels(self, level: CropPyramidLevel) -> Tensor:
        height, width = self.image_size
        grid = level.embeddings.float()
        h, w, dim = grid.shape
        centres_y, centres_x = level.centres()
        wy = _interpolation_matrix(centres_y, height).to(grid)  # [H, h]
        wx = _interpolation_matrix(centres_x, width).to(grid)  # [W, w]
        # Separable bilinear interpolation: first along y, then along x.
        rows = (wy @ grid.reshape(h, w * dim)).reshape(height, w, dim)  # [H, w, E]
        out = torch.matmul(wx, rows)  # [W, w] @ [H, w, E] -> [H, W, E]
        return F.normalize(out, dim=-1)

    def at_pixels(self, scale_index: Optional[int] = None) -> Tensor:
        """Bilinearly interpolate the crop-centre grids to every pixel centre.

        Args:
            scale_index: the level to read; ``None`` fuses all levels into the normalised mean
                of the per-level maps (LERF instead keeps the scale as an input of its field).

        Returns:
            ``[H, W, E]`` float32 on the embeddings' device, unit norm per pixel.
        """
        if scale_index is not None:
            if isinstance(scale_index, bool) or not isinstance(scale_index, int):
                raise ValueError(f"scale_index must be None or an int, got {type(scale_index).__name__}")
            if not -self.num_scales <= scale_index < self.num_scales:
                raise ValueError(f"scale_index must be in [0, {self.num_scales}), got {scale_index}")
            return self._level_at_pixels(self.levels[scale_index])
        total = self._level_at_pixels(self.levels[0])
        for level in self.levels[1:]:
            total += self._level_at_pixels(level)
        return F.normalize(total, dim=-1)


def _crop_starts(length: int, crop: int, overlap: float) -> Tensor:
    """Starts of crops of size ``crop`` along an axis of ``length`` pixels: the first at 0, the last
    at ``length - crop``, evenly spread, stride at most ``round(crop * (1 - overlap))``."""
    span = length - crop
    if span <= 0:
        return torch.zeros(1, dtype=torch.long)
    stride = max(1, math.floor(crop * (1.0 - overlap) + 0.5))
    count = math.ceil(span / stride) + 1
    return torch.floor(torch.linspace(0.0, float(span), count, dtype=torch.float64) + 0.5).long()


def crop_pyramid_layout(height: int, width: int, config: CropPyramidConfig) -> _Layout:
    """Where the crops of every scale lie, without embedding anything.

    Returns:
        One ``(scale, crop_size, starts_y [h], starts_x [w])`` per scale (long starts, CPU).
    """
    if not _is_count(height) or not _is_count(width):
        raise ValueError(f"height and width must be integers >= 1, got {height!r}, {width!r}")
    short = min(height, width)
    layout = []
    for scale in config.scales():
        crop = min(short, max(1, math.floor(scale * short + 0.5)))
        starts_y, starts_x = _crop_starts(height, crop, config.overlap), _crop_starts(width, crop, config.overlap)
        layout.append((scale, crop, starts_y, starts_x))
    return layout


def _embed_pyramid_crops(
    encoder: VisionLanguageEncoder, image: Tensor, layout: _Layout, batch_size: int
) -> Tensor:
    """Embed every crop of ``layout``: ``[sum_s h_s * w_s, E]`` (levels in order, row-major)."""
    image = image.to(_encoder_device(encoder, image.device))  # cut the crops where the model runs
    chunks = []
    for _, crop, starts_y, starts_x in layout:
        offsets = torch.arange(crop, device=image.device)
        rows = starts_y.to(image.device)[:, None] + offsets  # [h, k]
        cols = starts_x.to(image.device)[:, None] + offsets  # [w, k]
        w = cols.shape[0]
        num = rows.shape[0] * w
        for begin in range(0, num, batch_size):
            index = torch.arange(begin, min(begin + batch_size, num), device=image.device)
            r, c = rows[index // w], cols[index % w]  # [b, k] each
            crops = image[r[:, :, None], c[:, None, :]]  # [b, k, k, 3], one gather
            chunks.append(encoder.embed_images(crops).float())
    return torch.cat(chunks)


def _pyramid_from_embeddings(
    flat: Tensor, layout: _Layout, image_size: tuple[int, int]
) -> CropPyramid:
    levels, begin = [], 0
    for scale, crop, starts_y, starts_x in layout:
        h, w = starts_y.numel(), starts_x.numel()
        grid = flat[begin : begin + h * w].reshape(h, w, -1)
        levels.append(CropPyramidLevel(scale, crop, starts_y, starts_x, grid))
        begin += h * w
    return CropPyramid(tuple(levels), image_size)


def _pyramid_size(layout: _Layout) -> int:
    return sum(starts_y.numel() * starts_x.numel() for _, _, starts_y, starts_x in layout)


def crop_pyramid_features(
    encoder: VisionLanguageEncoder, image: Tensor, config: CropPyramidConfig = CropPyramidConfig()
) -> CropPyramid:
    """Embed LERF's multi-scale crops of one image.

    Args:
        encoder: anything with ``embed_images([B, h, w, 3]) -> [B, E]`` unit rows (crops are cut
            at image resolution; the encoder resizes them).
        image: ``[H, W, 3]`` uint8 (float in [0, 1] is accepted too).
        config: scales, overlap, batch size.

    Returns:
        :class:`CropPyramid`; ``.at_pixels()`` gives the ``[H, W, E]`` map.

    Raises:
        ValueError: bad ``image`` or ``config``.
    """
    image = _check_image(image)
    if not isinstance(config, CropPyramidConfig):
        raise ValueError(f"config must be a CropPyramidConfig, got {type(config).__name__}")
    height, width = int(image.shape[0]), int(image.shape[1])
    layout = crop_pyramid_layout(height, width, config)
    flat = _embed_pyramid_crops(encoder, image, layout, config.batch_size)
    return _pyramid_from_embeddings(flat, layout, (height, width))


# ------------------------------------------------------------------------------- region pooling


@dataclass(frozen=True)
class RegionFeatures:
    """Region-pooled features of one image.

    Attributes:
        pixel_features: ``[H, W, E]`` unit; each pixel holds its smallest covering mask's
            embedding, or ``global_embedding`` where no mask covers it.
        region_embeddings: ``[K, E]`` unit, one per mask (an empty mask gets the global one).
        global_embedding: ``[E]`` unit, the whole image seen as one region (padded to a
            square with grey, so the encoder's centre crop cuts nothing off).
        labels: ``[H, W]`` long, the mask each pixel took (``-1``: none, the global embedding).
        proposals: the masks the regions came from (``None`` when restored from the cache).
    """

    pixel_features: Tensor
    region_embeddings: Tensor
    global_embedding: Tensor
    labels: Tensor
    proposals: Optional[MaskProposals] = None


def _square_window(
    y0: int, y1: int, x0: int, x1: int, margin: float, height: int, width: int
) -> tuple[int, int, int]:
    """Square ``(top, left, side)`` around the box rows ``[y0, y1)``, columns ``[x0, x1)``:
    enlarged by ``margin`` on each side, squared around its centre, shifted inside the image
    where it fits (it may stick out where the image is smaller than ``side``)."""
    bh, bw = y1 - y0, x1 - x0
    side = max(1, math.ceil(max(bh * (1.0 + 2.0 * margin), bw * (1.0 + 2.0 * margin)) - 1e-9))
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0

    def place(centre: float, length: int) -> int:
        start = math.floor(centre - side / 2.0 + 0.5)
        if side <= length:
            return min(max(start, 0), length - side)
        return math.floor((length - side) / 2.0 + 0.5)  # centred; padded on both sides

    return place(cy, height), place(cx, width), side


def _region_crop(
    image: Tensor, mask: Optional[Tensor], window: tuple[int, int, int], paint_outside: bool, size: int
) -> Tensor:
    """Cut the square ``window`` out of ``image`` (float ``[H, W, 3]``), grey outside the image
    and, when ``paint_outside``, outside ``mask``; resize to ``[size, size, 3]``."""
    top, left, side = window
    height, width = image.shape[:2]
    rows = torch.arange(top, top + side, device=image.device)
    cols = torch.arange(left, left + side, device=image.device)
    valid = ((rows >= 0) & (rows < height))[:, None] & ((cols >= 0) & (cols < width))[None, :]  # [s, s]
    r, c = rows.clamp(0, height - 1), cols.clamp(0, width - 1)
    crop = image[r[:, None], c[None, :]]  # [s, s, 3]
    keep = valid
    if paint_outside and mask is not None:
        keep = keep & mask[r[:, None], c[None, :]]
    crop = torch.where(keep[..., None], crop, torch.full_like(crop, GREY))
    if side != size:
        crop = F.interpolate(
            crop.permute(2, 0, 1)[None], size=(size, size), mode="bicubic", align_corners=False, antialias=True
        )[0].permute(1, 2, 0).clamp(0.0, 1.0)
    return crop


def _encoder_resolution(encoder: Any, config: RegionPoolingConfig) -> int:
    if config.crop_resolution is not None:
        return config.crop_resolution
    size = getattr(encoder, "image_size", None)
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return int(max(size))
    return 224


def _check_proposals(proposals: Any, height: int, width: int) -> MaskProposals:
    if not isinstance(proposals, MaskProposals):
        raise ValueError(f"proposals must be a MaskProposals, got {type(proposals).__name__}")
    if tuple(proposals.masks.shape[1:]) != (height, width):
        raise ValueError(
            f"proposals.masks must be [K, {height}, {width}] to match the image, got {tuple(proposals.masks.shape)}"
        )
    return proposals


def _region_table(
    encoder: VisionLanguageEncoder, image: Tensor, proposals: MaskProposals, config: RegionPoolingConfig
) -> Tensor:
    """``[K + 1, E]``: one embedding per mask, then the whole image's (row ``K``)."""
    height, width = int(image.shape[0]), int(image.shape[1])
    device = _encoder_device(encoder, image.device)
    pixels = _as_float(image.to(device))
    masks = proposals.masks.to(device)
    size = _encoder_resolution(encoder, config)
    paint = config.mask_background == "gray"
    # Bounding boxes of all masks at once from the rows / columns each mask touches.
    any_row, any_col = masks.any(dim=2), masks.any(dim=1)  # [K, H], [K, W]
    ys, xs = torch.arange(height, device=device), torch.arange(width, device=device)
    nonempty = any_row.any(dim=1).tolist()
    y0 = torch.where(any_row, ys, height).amin(dim=1).tolist()
    y1 = (torch.where(any_row, ys, -1).amax(dim=1) + 1).tolist()
    x0 = torch.where(any_col, xs, width).amin(dim=1).tolist()
    x1 = (torch.where(any_col, xs, -1).amax(dim=1) + 1).tolist()

    jobs: list[tuple[Optional[int], tuple[int, int, int]]] = []  # (mask index or None for the image, window)
    for k in range(masks.shape[0]):
        if nonempty[k]:
            jobs.append((k, _square_window(y0[k], y1[k], x0[k], x1[k], config.bbox_margin, height, width)))
    jobs.append((None, _square_window(0, height, 0, width, 0.0, height, width)))

    embedded = []
    for begin in range(0, len(jobs), config.batch_size):
        crops = [
            _region_crop(pixels, None if k is None else masks[k], window, paint and k is not None, size)
            for k, window in jobs[begin : begin + config.batch_size]
        ]
        embedded.append(encoder.embed_images(torch.stack(crops)).float())
    table_rows = torch.cat(embedded)
    global_embedding = table_rows[-1]
    table = global_embedding.expand(masks.shape[0] + 1, -1).clone()
    for row, (k, _) in enumerate(jobs[:-1]):
        table[k] = table_rows[row]
    return table


def _features_from_table(table: Tensor, labels: Tensor) -> Tensor:
    """``table [K + 1, E]`` (row ``K``: global), ``labels [H, W]`` (``-1``: global) to ``[H, W, E]``."""
    index = torch.where(labels < 0, table.shape[0] - 1, labels).to(table.device)
    return table[index]


def region_features(
    encoder: VisionLanguageEncoder,
    image: Tensor,
    proposals: MaskProposals,
    config: RegionPoolingConfig = RegionPoolingConfig(),
) -> RegionFeatures:
    """Pool the encoder's embeddings over mask proposals.

    Args:
        encoder: anything with ``embed_images([B, h, w, 3]) -> [B, E]`` unit rows.
        image: ``[H, W, 3]`` uint8 (float in [0, 1] is accepted too).
        proposals: ``masks [K, H, W]`` for this image (may overlap; may be empty).
        config: margin, background, crop resolution, batch size.

    Returns:
        :class:`RegionFeatures`.

    Raises:
        ValueError: bad ``image``, ``proposals`` of another size, or a bad ``config``.
    """
    image = _check_image(image)
    if not isinstance(config, RegionPoolingConfig):
        raise ValueError(f"config must be a RegionPoolingConfig, got {type(config).__name__}")
    proposals = _check_proposals(proposals, int(image.shape[0]), int(image.shape[1]))
    table = _region_table(encoder, image, proposals, config)
    labels = proposals.label_map()
    return RegionFeatures(
        pixel_features=_features_from_table(table, labels),
        region_embeddings=table[:-1],
        global_embedding=table[-1],
        labels=labels,
        proposals=proposals,
    )


# ---------------------------------------------------------------------------------------- teacher


class CLIPDenseTeacher(DenseTeacher):
    """A real CLIP-family model as a :class:`DenseTeacher` (pyramid, regions or both).

    Args:
        encoder: the vision-language encoder (see :func:`langfield.pretrained.clip.load_encoder`).
        config: which dense method and its settings, and the cache directory.

    Attributes:
        name: ``"<encoder name>/<method>"``, e.g. ``"transformers:openai/clip-vit-base-patch16/pyramid"``.
        simulated: ``False``.
    """

    simulated = False

    def __init__(self, encoder: VisionLanguageEncoder, config: DenseFeatureConfig = DenseFeatureConfig()) -> None:
        if not isinstance(config, DenseFeatureConfig):
            raise ValueError(f"config must be a DenseFeatureConfig, got {type(config).__name__}")
        for attr in ("embed_images", "embed_texts", "embedding_dim", "name"):
            if not hasattr(encoder, attr):
                raise ValueError(
                    f"encoder must provide {attr!r} (a VisionLanguageEncoder), got {type(encoder).__name__}"
                )
        self.encoder = encoder
        self.config = config
        self.name = f"{encoder.name}/{config.method}"
        self.cache = EmbeddingCache(config.cache_dir, encoder.name) if config.cache_dir is not None else None

    def spec(self) -> dict:
        """Model id/directory and dense method (the text side is rebuilt from them at query time)."""
        model = getattr(getattr(self.encoder, "config", None), "model", None)
        return {"kind": "clip", "name": self.name, "model": model, "method": self.config.method}

    @property
    def embedding_dim(self) -> int:
        return int(self.encoder.embedding_dim)

    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        return self.encoder.embed_texts(check_text_queries(texts, "texts")).float().cpu()

    # The cache stores the compact products; the [H, W, E] maps are rebuilt from them.

    def _load(self, image: Tensor, extra_key: str) -> Optional[Tensor]:
        return None if self.cache is None else self.cache.load(self.cache.key(image, extra_key))

    def _store(self, image: Tensor, extra_key: str, value: Tensor) -> None:
        if self.cache is not None:
            self.cache.save(self.cache.key(image, extra_key), value)

    def pyramid(self, image: Tensor) -> CropPyramid:
        """The crop pyramid of ``image`` (from the cache when present)."""
        image = _check_image(image)
        config = self.config.pyramid
        height, width = int(image.shape[0]), int(image.shape[1])
        layout = crop_pyramid_layout(height, width, config)
        key = f"{_CACHE_VERSION}/{config.cache_key()}"
        flat = self._load(image, key)
        expected = (_pyramid_size(layout), self.embedding_dim)
        if flat is None or flat.dtype != torch.float32 or tuple(flat.shape) != expected:
            flat = _embed_pyramid_crops(self.encoder, image, layout, config.batch_size)
            self._store(image, key, flat)
        flat = flat.to(_encoder_device(self.encoder, flat.device))
        return _pyramid_from_embeddings(flat, layout, (height, width))

    def regions(self, image: Tensor) -> RegionFeatures:
        """Region features of ``image`` over ``config.masks`` proposals (from the cache when
        present; then ``proposals`` is ``None``)."""
        image = _check_image(image)
        height, width = int(image.shape[0]), int(image.shape[1])
        key = f"{_CACHE_VERSION}/{self.config.regions.cache_key()}/{self.config.masks!r}"
        labels, table = self._load(image, key + "/labels"), self._load(image, key + "/table")
        hit = (
            labels is not None
            and table is not None
            and labels.dtype == torch.long
            and tuple(labels.shape) == (height, width)
            and table.dtype == torch.float32
            and table.ndim == 2
            and table.shape[1] == self.embedding_dim
            and table.shape[0] >= int(labels.max()) + 2  # every label has a row, plus the global row
        )
        if not hit:
            proposals = propose_masks(image, self.config.masks)
            result = region_features(self.encoder, image, proposals, self.config.regions)
            self._store(image, key + "/table", torch.cat([result.region_embeddings, result.global_embedding[None]]))
            self._store(image, key + "/labels", result.labels)
            return result
        device = _encoder_device(self.encoder, labels.device)
        table, labels = table.to(device), labels.to(device)
        return RegionFeatures(
            pixel_features=_features_from_table(table, labels),
            region_embeddings=table[:-1],
            global_embedding=table[-1],
            labels=labels,
        )

    def dense_features(
        self, image: Tensor, *, view_key: str, semantics: Optional[Tensor] = None, camera: Optional[Tensor] = None
    ) -> Tensor:
        """``[H, W, E]`` float32 CPU, unit norm. ``semantics`` and ``camera`` are ignored (a real teacher);
        ``view_key`` is not used (the cache is keyed by the image's content)."""
        image = _check_image(image)
        method = self.config.method
        if method == "pyramid":
            out = self.pyramid(image).at_pixels()
        elif method == "regions":
            out = self.regions(image).pixel_features
        else:
            pyramid = self.pyramid(image).at_pixels()
            out = F.normalize(pyramid + self.regions(image).pixel_features.to(pyramid.device), dim=-1)
        return out.float().cpu()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, embedding_dim={self.embedding_dim}, "
            f"cache_dir={self.config.cache_dir!r})"
        )


_NO_CLIP_HINT = (
    "Or, without a CLIP model, on a labelled scene: the simulated teacher "
    "(`langfield language RUN --teacher simulated`)."
)


def load_clip_teacher(
    model: str,
    method: DenseMethod = "pyramid",
    device: Optional[str] = None,
    cache_dir: Optional[str] = None,
) -> CLIPDenseTeacher:
    """Load a CLIP-family model by hub id or directory and wrap it as a :class:`CLIPDenseTeacher`.

    Args:
        model: e.g. ``"openai/clip-vit-base-patch16"``, a local checkpoint directory or an
            OpenCLIP string (see :class:`~langfield.pretrained.clip.EncoderConfig`).
        method: ``"pyramid"``, ``"regions"`` or ``"both"``.
        device: ``None`` picks CUDA when available.
        cache_dir: on-disk embedding cache (``None``: no cache).

    Raises:
        PretrainedUnavailableError: (a ``FileNotFoundError``) the model is not available locally;
            the message says how to fetch it, or to use the simulated teacher instead.
        ValueError: bad ``method``.
    """
    config = DenseFeatureConfig(method=method, cache_dir=cache_dir)  # validate before loading weights
    encoder = load_encoder(EncoderConfig(model=model, device=device), hint=_NO_CLIP_HINT)
    return CLIPDenseTeacher(encoder, config)
