"""Distances between *distributions* of images or image features: FD, KID, SWD, and their floors.

Pure functions on tensors (numpy arrays are accepted too); nothing here loads a network. The
features come from whatever instrument the caller trusts (in the toy world: the penultimate layer
of :class:`langfield.generation.instruments.AttributeClassifier`, so "toy-FID"); the images for
:func:`sliced_wasserstein_distance` are plain pixels (no weights at all).

* :func:`frechet_distance` — the Fréchet distance between Gaussians fitted to two feature sets
  (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
  Equilibrium", NeurIPS 2017, eq. 6; Dowson & Landau 1982 for the closed form):
  ``|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2)``. The matrix square root is
  taken by eigendecomposition of the *symmetric* product ``C_a^1/2 C_b C_a^1/2`` in float64
  (its trace equals ``tr((C_a C_b)^1/2)``; negative round-off eigenvalues are clamped to 0), which
  never produces the complex parts or NaNs that a general ``sqrtm`` of ``C_a C_b`` can.
* :func:`kernel_inception_distance` — the unbiased estimate of the squared maximum mean
  discrepancy with the cubic polynomial kernel ``k(x, y) = (x.y / D + 1)^3`` (Binkowski et al.,
  "Demystifying MMD GANs", ICLR 2018, Sec. 4 / App. D), averaged over random subsets: mean and
  standard deviation over the subsets.
* :func:`split_half_floor` — what a metric reads between two halves of ONE real set (real vs
  real): the floor every generated-vs-real number must be read against.
* :func:`laplacian_pyramid` / :func:`reconstruct_from_laplacian_pyramid` and
  :func:`sliced_wasserstein_distance` — the SWD of Karras et al., "Progressive Growing of GANs"
  (ICLR 2018, Sec. 5 and App. D): 7x7 neighbourhoods drawn from each level of a Laplacian
  pyramid, normalised per channel, compared by the sliced Wasserstein distance (the mean over
  random unit directions of the 1D Wasserstein-1 distance between the projected sets).

Sample-size bias: FD and SWD are biased upwards for finite sets (FD strongly so when ``N`` is
not much larger than ``D``), KID is unbiased. Compare numbers only at equal set sizes; the floor
of :func:`split_half_floor` compares halves, so a generated-vs-real figure read against it should
use sets of the same size as the halves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from langfield._checks import InputError, check_int_range
from langfield.eval.metrics import separable_filter

__all__ = [
    "MeanStd",
    "SWDResult",
    "frechet_distance",
    "frechet_distance_from_statistics",
    "gaussian_statistics",
    "kernel_inception_distance",
    "laplacian_pyramid",
    "mmd2_unbiased",
    "reconstruct_from_laplacian_pyramid",
    "sliced_wasserstein_distance",
    "split_half_floor",
]

ArrayLike = Union[Tensor, np.ndarray]


@dataclass(frozen=True)
class MeanStd:
    """A metric repeated over subsets or seeds: ``mean``, sample ``std`` (``ddof=1``; 0 for one
    value) and the individual ``values``."""

    mean: float
    std: float
    values: Tuple[float, ...]

    @staticmethod
    def of(values: Sequence[float]) -> "MeanStd":
        vals = tuple(float(v) for v in values)
        arr = np.asarray(vals, dtype=np.float64)
        std = float(arr.std(ddof=1)) if len(vals) > 1 else 0.0
        return MeanStd(float(arr.mean()), std, vals)

    def as_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "values": list(self.values)}


# ----------------------------------------------------------------------------- input checks


def _features(x: Any, name: str, *, min_rows: int) -> Tensor:
    """``x`` as a float64 CPU tensor ``[N, D]`` with ``N >= min_rows``, finite (InputError otherwise)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise InputError(f"{name}: expected a [N, D] tensor or numpy array, got {type(x).__name__}")
    if x.ndim != 2:
        raise InputError(f"{name}: expected features of shape [N, D], got shape {tuple(x.shape)}")
    if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64, torch.uint8)):
        raise InputError(f"{name}: expected real-valued features, got dtype {x.dtype}")
    if x.shape[0] < min_rows:
        raise InputError(f"{name}: needs at least {min_rows} samples (rows), got {x.shape[0]}")
    if x.shape[1] < 1:
        raise InputError(f"{name}: features have no dimensions (shape {tuple(x.shape)})")
    x = x.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise InputError(f"{name}: contains NaN or inf")
    return x


def _same_dim(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise InputError(
            f"{name_a} and {name_b}: feature dimensions differ ({a.shape[1]} vs {b.shape[1]}); "
            f"both sets must come from the same feature extractor"
        )


# ----------------------------------------------------------------------------- Fréchet distance


def gaussian_statistics(feats: ArrayLike) -> Tuple[Tensor, Tensor]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (divided by ``N - 1``) of ``feats [N, D]``, float64.

    Raises :class:`InputError` for fewer than 2 rows (no covariance) or a bad shape.

    >>> import torch
    >>> mu, cov = gaussian_statistics(torch.tensor([[0.0, 1.0], [2.0, 1.0]]))
    >>> mu.tolist(), cov.tolist()
    ([1.0, 1.0], [[2.0, 0.0], [0.0, 0.0]])
    """
    x = _features(feats, "feats", min_rows=2)
    mu = x.mean(0)
    centred = x - mu
    cov = centred.T @ centred / (x.shape[0] - 1)
    return mu, cov


def _sqrt_psd(mat: Tensor) -> Tensor:
    """Symmetric PSD square root by eigendecomposition (negative round-off eigenvalues -> 0)."""
    vals, vecs = torch.linalg.eigh(0.5 * (mat + mat.T))
    return (vecs * vals.clamp_min(0.0).sqrt()) @ vecs.T


def frechet_distance_from_statistics(mu_a: ArrayLike, cov_a: ArrayLike, mu_b: ArrayLike, cov_b: ArrayLike) -> float:
    """Fréchet (2-Wasserstein squared) distance between ``N(mu_a, cov_a)`` and ``N(mu_b, cov_b)``.

    ``|mu_a - mu_b|^2 + tr(cov_a) + tr(cov_b) - 2 tr((cov_a^1/2 cov_b cov_a^1/2)^1/2)`` in float64
    (Heusel et al. 2017, eq. 6); the covariances must be symmetric positive semi-definite.

    Example: two isotropic Gaussians, ``|mu|^2 + D (sigma_a - sigma_b)^2``:

    >>> import torch
    >>> d = 3
    >>> fd = frechet_distance_from_statistics(torch.zeros(d), torch.eye(d), torch.ones(d), 4 * torch.eye(d))
    >>> round(fd, 10)
    6.0
    """

    def vec(x: Any, name: str) -> Tensor:
        t = torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x).detach().to("cpu", torch.float64)
        if t.ndim != 1:
            raise InputError(f"{name}: expected a mean vector [D], got shape {tuple(t.shape)}")
        return t

    def mat(x: Any, name: str, d: int) -> Tensor:
        t = torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x).detach().to("cpu", torch.float64)
        if t.shape != (d, d):
            raise InputError(f"{name}: expected a covariance [{d}, {d}], got shape {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise InputError(f"{name}: contains NaN or inf")
        return t

    ma, mb = vec(mu_a, "mu_a"), vec(mu_b, "mu_b")
    if ma.shape != mb.shape:
        raise InputError(f"mu_a and mu_b: dimensions differ ({ma.shape[0]} vs {mb.shape[0]})")
    d = ma.shape[0]
    ca, cb = mat(cov_a, "cov_a", d), mat(cov_b, "cov_b", d)
    root_a = _sqrt_psd(ca)
    middle = root_a @ cb @ root_a
    vals = torch.linalg.eigvalsh(0.5 * (middle + middle.T))
    tr_sqrt = vals.clamp_min(0.0).sqrt().sum()
    fd = (ma - mb).square().sum() + torch.trace(ca) + torch.trace(cb) - 2.0 * tr_sqrt
    # Round-off can make a distance of (near) zero slightly negative; it is a squared distance.
    return max(float(fd), 0.0)


def frechet_distance(feats_a: ArrayLike, feats_b: ArrayLike) -> float:
    """Fréchet distance (FID when the features are Inception's) between two feature sets.

    Gaussians are fitted to ``feats_a [N, D]`` and ``feats_b [M, D]`` (mean, unbiased covariance)
    and compared with :func:`frechet_distance_from_statistics`. Both need at least 2 rows; with
    ``N`` or ``M`` not much larger than ``D`` the covariances are rank deficient and the distance
    is strongly biased upwards (compare only at equal set sizes, beside :func:`split_half_floor`).

    Raises:
        InputError: a set is not ``[N, D]``, has fewer than 2 rows, holds NaN/inf, or the two
            feature dimensions differ.

    >>> import torch
    >>> a = torch.randn(500, 4, generator=torch.Generator().manual_seed(0))
    >>> frechet_distance(a, a) < 1e-9, round(frechet_distance(a, a + 2.0), 6)  # shift by 2 in 4 dims
    (True, 16.0)
    """
    a = _features(feats_a, "feats_a", min_rows=2)
    b = _features(feats_b, "feats_b", min_rows=2)
    _same_dim(a, b, "feats_a", "feats_b")
    mu_a, cov_a = gaussian_statistics(a)
    mu_b, cov_b = gaussian_statistics(b)
    return frechet_distance_from_statistics(mu_a, cov_a, mu_b, cov_b)


# ----------------------------------------------------------------------------- KID


def _cubic_kernel(x: Tensor, y: Tensor) -> Tensor:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(feats_a: ArrayLike, feats_b: ArrayLike) -> float:
    """Unbiased squared MMD with the cubic polynomial kernel ``(x.y / D + 1)^3`` (float64).

    ``1/(m(m-1)) sum_{i!=j} k(a_i, a_j) + 1/(n(n-1)) sum_{i!=j} k(b_i, b_j) - 2/(mn) sum k(a_i, b_j)``
    (Binkowski et al. 2018, eq. 3 with their kernel). It can be slightly negative when the two
    distributions are equal. Each set needs at least 2 rows.

    >>> import torch
    >>> a = torch.tensor([[0.0], [1.0]]); b = torch.tensor([[0.0], [2.0]])
    >>> mmd2_unbiased(a, b)  # k(0,1)=1, k(0,2)=1, k(0,0)=1, k(1,0)=1, k(1,2)=27 -> 1 + 1 - 2*(1+1+1+27)/4
    -13.0
    """
    a = _features(feats_a, "feats_a", min_rows=2)
    b = _features(feats_b, "feats_b", min_rows=2)
    _same_dim(a, b, "feats_a", "feats_b")
    m, n = a.shape[0], b.shape[0]
    k_aa, k_bb, k_ab = _cubic_kernel(a, a), _cubic_kernel(b, b), _cubic_kernel(a, b)
    term_aa = (k_aa.sum() - torch.diagonal(k_aa).sum()) / (m * (m - 1))
    term_bb = (k_bb.sum() - torch.diagonal(k_bb).sum()) / (n * (n - 1))
    return float(term_aa + term_bb - 2.0 * k_ab.mean())


def kernel_inception_distance(
    feats_a: ArrayLike,
    feats_b: ArrayLike,
    subsets: int = 100,
    subset_size: Optional[int] = None,
    seed: int = 0,
) -> MeanStd:
    """KID: the unbiased cubic-kernel MMD^2 (:func:`mmd2_unbiased`) over random subsets.

    Each of ``subsets`` repetitions draws ``subset_size`` rows of each set without replacement
    (a generator seeded by ``seed``) and computes the unbiased MMD^2; the result is the mean and
    standard deviation over the repetitions (Binkowski et al. 2018, App. D; their code uses 100
    subsets of 1000). ``subset_size=None`` uses ``min(1000, N, M)``.

    Raises:
        InputError: bad shapes, feature dimensions that differ, ``subsets < 1``, or a
            ``subset_size`` below 2 or above the size of either set.

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> a, b = torch.randn(400, 8, generator=g), torch.randn(400, 8, generator=g)
    >>> same = kernel_inception_distance(a, b, subsets=10, subset_size=200)
    >>> shifted = kernel_inception_distance(a, b + 1.0, subsets=10, subset_size=200)
    >>> abs(same.mean) < 0.05, shifted.mean > 1.0
    (True, True)
    """
    a = _features(feats_a, "feats_a", min_rows=2)
    b = _features(feats_b, "feats_b", min_rows=2)
    _same_dim(a, b, "feats_a", "feats_b")
    subsets = check_int_range(subsets, "subsets", lo=1)
    largest = min(a.shape[0], b.shape[0])
    if subset_size is None:
        subset_size = min(1000, largest)
    subset_size = check_int_range(subset_size, "subset_size", lo=2)
    if subset_size > largest:
        raise InputError(
            f"subset_size: {subset_size} is larger than the smaller set ({a.shape[0]} and {b.shape[0]} rows); "
            f"use subset_size <= {largest}"
        )
    gen = torch.Generator().manual_seed(int(seed))
    values: List[float] = []
    for _ in range(subsets):
        ia = torch.randperm(a.shape[0], generator=gen)[:subset_size]
        ib = torch.randperm(b.shape[0], generator=gen)[:subset_size]
        values.append(mmd2_unbiased(a[ia], b[ib]))
    return MeanStd.of(values)


# ----------------------------------------------------------------------------- floor


def split_half_floor(
    metric_fn: Callable[[Tensor, Tensor], Any],
    feats: ArrayLike,
    seeds: Sequence[int] = (0, 1, 2),
) -> MeanStd:
    """The metric between two random halves of ONE (real) set, mean and std over ``seeds``.

    For each seed the rows of ``feats`` (``[N, ...]``: features ``[N, D]`` or images
    ``[N, C, H, W]``) are shuffled by a generator seeded with it and split into two disjoint
    halves of ``N // 2`` rows (a last odd row is left out); ``metric_fn(half_a, half_b)`` is
    recorded (a result with a ``mean``, e.g. KID's :class:`MeanStd` or an :class:`SWDResult`,
    contributes its ``mean``).

    This is the real-vs-real floor: a generated set whose metric to the real set is at the floor
    is indistinguishable from real data *at this sample size* by this metric. Biased metrics (FD,
    SWD) depend on the size, so compare against a generated-vs-real figure computed on sets of
    ``N // 2`` rows each.

    Raises:
        InputError: ``feats`` has fewer than 4 rows, or ``seeds`` is empty.

    >>> import torch
    >>> x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
    >>> floor = split_half_floor(frechet_distance, x, seeds=[0, 1, 2])
    >>> len(floor.values), 0.0 < floor.mean < 0.2
    (3, True)
    """
    if isinstance(feats, np.ndarray):
        feats = torch.from_numpy(feats)
    if not isinstance(feats, Tensor) or feats.ndim < 2:
        shape = tuple(feats.shape) if isinstance(feats, Tensor) else type(feats).__name__
        raise InputError(f"feats: expected a [N, ...] tensor (features [N, D] or images [N, C, H, W]), got {shape}")
    n = feats.shape[0]
    if n < 4:
        raise InputError(f"feats: needs at least 4 rows to split in two halves of >= 2, got {n}")
    seeds = list(seeds)
    if not seeds:
        raise InputError("seeds: needs at least one seed")
    half = n // 2
    values = []
    for s in seeds:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(s)))
        result = metric_fn(feats[perm[:half]], feats[perm[half : 2 * half]])
        values.append(float(getattr(result, "mean", result)))
    return MeanStd.of(values)


# ----------------------------------------------------------------------------- Laplacian pyramid

# The 5-tap binomial filter of cv2.pyrDown / pyrUp (Burt & Adelson 1983), as ProGAN's SWD uses.
_BINOMIAL = (1.0, 4.0, 6.0, 4.0, 1.0)


def _images(x: Any, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise InputError(f"{name}: expected a [N, C, H, W] tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise InputError(f"{name}: expected images of shape [N, C, H, W], got shape {tuple(x.shape)}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise InputError(f"{name}: empty image batch (shape {tuple(x.shape)})")
    if not x.is_floating_point():
        raise InputError(f"{name}: expected floating-point images in [0, 1] (convert uint8 with x / 255), got {x.dtype}")
    if not torch.isfinite(x).all():
        raise InputError(f"{name}: contains NaN or inf")
    return x


def _blur(x: Tensor, gain: float = 1.0) -> Tensor:
    """Separable 5x5 binomial blur with reflect-101 borders (OpenCV's BORDER_DEFAULT), any channels."""
    n, c, h, w = x.shape
    k = torch.tensor(_BINOMIAL, dtype=x.dtype, device=x.device) / 16.0
    flat = F.pad(x.reshape(n * c, 1, h, w), (2, 2, 2, 2), mode="reflect")
    return separable_filter(flat, gain * k, k).reshape(n, c, h, w)


def _pyr_down(x: Tensor) -> Tensor:
    return _blur(x)[:, :, ::2, ::2]


def _pyr_up(x: Tensor, size: Tuple[int, int]) -> Tensor:
    """Zero insertion to ``2x`` (cropped to ``size``), then the binomial blur times 4 (cv2.pyrUp)."""
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x
    return _blur(up[:, :, : size[0], : size[1]], gain=4.0)


def _level_sizes(h: int, w: int, levels: int) -> List[Tuple[int, int]]:
    sizes = [(h, w)]
    for _ in range(levels - 1):
        sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
    return sizes


def laplacian_pyramid(images: Tensor, levels: int) -> List[Tensor]:
    """Laplacian pyramid of ``images [N, C, H, W]``: ``levels`` tensors, finest first.

    ``G_0 = images``, ``G_{i+1} = pyrDown(G_i)`` (5x5 binomial blur, every second pixel);
    ``L_i = G_i - pyrUp(G_{i+1})`` for ``i < levels - 1`` and the last level is the low-pass
    ``G_{levels-1}`` (Burt & Adelson 1983; OpenCV's pyrDown/pyrUp with reflect-101 borders, as in
    ProGAN's SWD). Level ``i`` is ``ceil(H / 2^i) x ceil(W / 2^i)``. The pyramid is exactly
    invertible: :func:`reconstruct_from_laplacian_pyramid`.

    Raises:
        InputError: not ``[N, C, H, W]`` floats, or ``levels`` so deep that a level that is
            blurred (every level but the last) is smaller than 3x3.

    >>> import torch
    >>> x = torch.rand(2, 3, 16, 12, generator=torch.Generator().manual_seed(0))
    >>> pyr = laplacian_pyramid(x, 3)
    >>> [tuple(p.shape[-2:]) for p in pyr]
    [(16, 12), (8, 6), (4, 3)]
    >>> torch.allclose(reconstruct_from_laplacian_pyramid(pyr), x, atol=1e-6)
    True
    """
    x = _images(images, "images")
    levels = check_int_range(levels, "levels", lo=1)
    sizes = _level_sizes(x.shape[2], x.shape[3], levels)
    if levels > 1 and min(sizes[-2]) < 3:
        raise InputError(
            f"levels: {levels} levels of a {x.shape[2]}x{x.shape[3]} image make level {levels - 2} "
            f"{sizes[-2][0]}x{sizes[-2][1]}, below the 3x3 the 5-tap filter needs; use fewer levels"
        )
    pyramid: List[Tensor] = []
    current = x
    for i in range(levels - 1):
        lower = _pyr_down(current)
        pyramid.append(current - _pyr_up(lower, sizes[i]))
        current = lower
    pyramid.append(current)
    return pyramid


def reconstruct_from_laplacian_pyramid(pyramid: Sequence[Tensor]) -> Tensor:
    """Invert :func:`laplacian_pyramid`: ``G_i = L_i + pyrUp(G_{i+1})`` from the coarsest level up."""
    if len(pyramid) < 1:
        raise InputError("pyramid: needs at least one level")
    current = pyramid[-1]
    for level in reversed(pyramid[:-1]):
        current = level + _pyr_up(current, (level.shape[2], level.shape[3]))
    return current


# ----------------------------------------------------------------------------- SWD


@dataclass(frozen=True)
class SWDResult:
    """Sliced Wasserstein distances per pyramid level (finest first) and their mean.

    ProGAN's tables print these numbers times 1e3."""

    per_level: Tuple[float, ...]
    mean: float

    def as_dict(self) -> dict:
        return {"per_level": list(self.per_level), "mean": self.mean}


def _default_levels(h: int, w: int, patch_size: int) -> int:
    """As many levels as keep the coarsest at least ``max(16, patch_size)`` pixels (ProGAN stops at 16x16)."""
    levels, side = 1, min(h, w)
    while (side + 1) // 2 >= max(16, patch_size):
        levels += 1
        side = (side + 1) // 2
    return levels


def _patch_descriptors(level: Tensor, image_index: Tensor, patch_size: int, gen: torch.Generator) -> Tensor:
    """``[K, C, p, p]`` neighbourhoods of ``level`` at uniformly random fully-inside positions."""
    n, c, h, w = level.shape
    k = image_index.shape[0]
    ys = torch.randint(0, h - patch_size + 1, (k,), generator=gen)
    xs = torch.randint(0, w - patch_size + 1, (k,), generator=gen)
    offs = torch.arange(patch_size)
    rows = (ys[:, None] + offs[None, :])[:, :, None].expand(k, patch_size, patch_size)
    cols = (xs[:, None] + offs[None, :])[:, None, :].expand(k, patch_size, patch_size)
    # [K, p, p, C] gathered by advanced indexing, then channel-first.
    patches = level.permute(0, 2, 3, 1)[image_index[:, None, None], rows, cols]
    return patches.permute(0, 3, 1, 2)


def _per_channel_stats(desc: Tensor) -> Tuple[Tensor, Tensor]:
    mean = desc.mean(dim=(0, 2, 3), keepdim=True)
    std = desc.std(dim=(0, 2, 3), keepdim=True, unbiased=False).clamp_min(1e-8)
    return mean, std


def _sliced_w1(a: Tensor, b: Tensor, num_projections: int, gen: torch.Generator, chunk: int = 128) -> float:
    """Mean over random unit directions of the 1D W1 distance between equal-size projected sets."""
    d = a.shape[1]
    total = 0.0
    done = 0
    while done < num_projections:
        m = min(chunk, num_projections - done)
        dirs = torch.randn(d, m, generator=gen, dtype=a.dtype)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        # [m, K] rows: sorting along the last, contiguous dimension is the fast path on the CPU
        pa, _ = torch.sort((a @ dirs).T.contiguous(), dim=1)
        pb, _ = torch.sort((b @ dirs).T.contiguous(), dim=1)
        total += float((pa - pb).abs().mean(1).sum())
        done += m
    return total / num_projections


def sliced_wasserstein_distance(
    images_a: Tensor,
    images_b: Tensor,
    *,
    levels: Optional[int] = None,
    patch_size: int = 7,
    patches_per_image: int = 32,
    num_projections: int = 256,
    seed: int = 0,
    normalize: str = "joint",
) -> SWDResult:
    """SWD between two image sets on Laplacian-pyramid neighbourhoods (Karras et al. 2018, Sec. 5).

    Steps, per pyramid level (finest first, :func:`laplacian_pyramid`):

    1. ``K = patches_per_image * min(N, M)`` neighbourhoods of ``patch_size x patch_size`` pixels
       (all channels) at uniformly random positions that lie fully inside the level are drawn from
       each set; patch ``j`` of a set with ``n`` images comes from image ``perm[j % n]`` (a random
       permutation), so every image contributes equally and both sets give ``K`` descriptors.
    2. The descriptors are normalised per channel to zero mean and unit variance (over all
       neighbourhoods and pixels). ``normalize="joint"`` (default) uses the statistics of both sets
       pooled, so a change of a band's energy or of the mean colour counts.
       ``normalize="separate"`` reproduces ProGAN's code (``finalize_descriptors`` applied to each
       set on its own), which makes every level blind to a per-channel offset or contrast change
       and nearly blind to added noise (measured on 24 smooth 32-px images: noise of std 0.2 moves
       the finest level from 0.063 to 0.109 separate, from 0.065 to 0.95 joint). The default departs
       from ProGAN for that reason; pass ``"separate"`` for numbers comparable with the paper's.
    3. The descriptors (``C * patch_size^2`` numbers) are projected on ``num_projections`` random
       unit directions; per direction both projected sets are sorted and the mean absolute
       difference of the sorted values (the 1D Wasserstein-1 distance) is taken; the level's SWD
       is the mean over directions.

    Positions, permutations and directions come from generators seeded with ``seed`` (the same
    draws for both sets when they have equal shapes, so identical sets give exactly 0). The
    result is biased upwards for small ``K``; compare at equal sizes and beside the real-vs-real
    floor (:func:`split_half_floor` with a lambda over this function).

    Args:
        images_a: ``[N, C, H, W]`` float images in ``[0, 1]`` (any channel count).
        images_b: ``[M, C, H, W]`` with the same ``C, H, W``.
        levels: pyramid levels; ``None``: as many as keep the coarsest level at least
            ``max(16, patch_size)`` pixels (ProGAN's 16x16 floor), at least 1.
        patch_size: neighbourhood side (odd or even, ``>= 1``; ProGAN: 7).
        patches_per_image: neighbourhoods per image of the smaller set (ProGAN: 128).
        num_projections: random directions per level (ProGAN: 4 x 128 = 512).

    Cost: per level, ``2 * num_projections`` sorts of ``K`` numbers. With the defaults, 1000
    32-px images per set (``K = 32,000``, 2 levels) take a few seconds on 2 CPU cores; most of it
    is sorting, so ``num_projections`` and ``patches_per_image`` trade time for variance.
        seed: seeds positions, image permutations and directions.
        normalize: ``"joint"`` (pooled statistics) or ``"separate"`` (ProGAN; see step 2).

    Returns:
        :class:`SWDResult` with the per-level distances and their mean.

    Raises:
        InputError: bad image shapes, shapes that differ between the sets, a level smaller than
            ``patch_size``, non-positive counts, or an unknown ``normalize``.

    >>> import torch
    >>> x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> sliced_wasserstein_distance(x, x, patches_per_image=16, num_projections=32).per_level
    (0.0, 0.0)
    """
    a = _images(images_a, "images_a")
    b = _images(images_b, "images_b")
    if a.shape[1:] != b.shape[1:]:
        raise InputError(
            f"images_a and images_b: image shapes differ ({tuple(a.shape[1:])} vs {tuple(b.shape[1:])}); "
            f"both sets must be [*, C, H, W] with the same C, H, W"
        )
    patch_size = check_int_range(patch_size, "patch_size", lo=1)
    patches_per_image = check_int_range(patches_per_image, "patches_per_image", lo=1)
    num_projections = check_int_range(num_projections, "num_projections", lo=1)
    if normalize not in ("separate", "joint"):
        raise InputError(f"normalize: {normalize!r} is not one of 'joint', 'separate'")
    h, w = a.shape[2], a.shape[3]
    if levels is None:
        levels = _default_levels(h, w, patch_size)
    levels = check_int_range(levels, "levels", lo=1)
    sizes = _level_sizes(h, w, levels)
    if min(sizes[-1]) < patch_size:
        raise InputError(
            f"levels: with {levels} levels the coarsest level of a {h}x{w} image is {sizes[-1][0]}x{sizes[-1][1]}, "
            f"smaller than patch_size={patch_size}; use fewer levels or a smaller patch_size"
        )
    a, b = a.detach().cpu().float(), b.detach().cpu().float()
    pyr_a, pyr_b = laplacian_pyramid(a, levels), laplacian_pyramid(b, levels)
    k = patches_per_image * min(a.shape[0], b.shape[0])

    def image_index(n: int, gen: torch.Generator) -> Tensor:
        perm = torch.randperm(n, generator=gen)
        return perm[torch.arange(k) % n]

    per_level = []
    for i in range(levels):
        gen_a = torch.Generator().manual_seed(int(seed) * 1_000_003 + 2 * i)
        gen_b = torch.Generator().manual_seed(int(seed) * 1_000_003 + 2 * i)
        desc_a = _patch_descriptors(pyr_a[i], image_index(a.shape[0], gen_a), patch_size, gen_a)
        desc_b = _patch_descriptors(pyr_b[i], image_index(b.shape[0], gen_b), patch_size, gen_b)
        if normalize == "separate":
            (ma, sa), (mb, sb) = _per_channel_stats(desc_a), _per_channel_stats(desc_b)
        else:
            ma, sa = _per_channel_stats(torch.cat([desc_a, desc_b]))
            mb, sb = ma, sa
        desc_a = ((desc_a - ma) / sa).reshape(k, -1)
        desc_b = ((desc_b - mb) / sb).reshape(k, -1)
        gen_dirs = torch.Generator().manual_seed(int(seed) * 1_000_003 + 2 * i + 1)
        per_level.append(_sliced_w1(desc_a, desc_b, num_projections, gen_dirs))
    return SWDResult(tuple(per_level), float(np.mean(per_level)))
