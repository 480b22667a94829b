"""Initial diffusion noise attached to a 3D scene, so views that see the same surface start from the same noise.

Per-view generation from independent noise gives views that disagree wherever the condition
leaves freedom (texture, colour, lighting). Here the initial latent noise of every view is read
from **one** noise field defined in 3D: each latent pixel looks up the surface point its ray hits
(the rendered depth), and the noise is a function of that world point. Co-visible latent pixels
of two views hit the same points and so start from (nearly) the same noise.

The field (:func:`lattice_noise`): i.i.d. standard normal values on an integer lattice of cell
``cell_size`` (world units), one per lattice vertex and channel, drawn from a stateless integer
hash of ``(vertex, channel, seed)`` (no table to store, as the spatial hash of Müller et al. 2022,
"Instant Neural Graphics Primitives", Sec. 3, stores none for unbounded grids), interpolated
trilinearly. Trilinear interpolation with weights ``w_k`` of i.i.d. unit normals has variance
``sum_k w_k^2 < 1``, so the value is divided by ``sqrt(sum_k w_k^2)``: **each latent pixel is
exactly N(0, 1)** again, the distribution the sampler expects, while the field stays continuous
in the point. ``cell_size`` defaults to the footprint of one latent pixel at the median depth
(:func:`default_cell_size`), so neighbouring latent pixels of one view read nearly independent
values (they are about one cell apart). Latent pixels whose ray hits nothing get noise that is
independent per view (hashed from the view and pixel index).

Inspired by the noise-warping line of work for consistent video diffusion: Chang et al. 2024,
"How I Warped Your Noise: a Temporally-Correlated Noise Prior for Diffusion Models" (ICLR 2024,
Sec. 3: noise transported with the content while kept Gaussian per pixel), here transported
through the scene's geometry instead of optical flow, and the 3D-anchored noise of
multi-view texturing work (e.g. TexFusion / SyncMVD, which share latents through a texture).
This is a simple variant (no integral-noise area weighting): distant views of a surface read the
same lattice at different densities, so their noise agrees point-wise, not in its spectrum.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from langfield._checks import InputError, check_finite_number, check_int_range
from langfield.types import Cameras

__all__ = ["default_cell_size", "lattice_noise", "latent_points", "scene_latent_noise"]

_MASK31 = 0x7FFFFFFF
_PRIMES = (73244475, 1274126177, 1597334677, 2246822519 & _MASK31, 3266489917 & _MASK31)


def _hash(*keys: Tensor, seed: int) -> Tensor:
    """A 31-bit integer hash of int64 tensors (broadcast), every product kept below 2^62 (no overflow)."""
    h = torch.full_like(torch.broadcast_tensors(*keys)[0], (seed * 2654435761 + 12345) & _MASK31)
    for i, k in enumerate(keys):
        h = h ^ (k & _MASK31)
        h = (h * _PRIMES[i % len(_PRIMES)]) & _MASK31
        h = h ^ (h >> 15)
        h = (h * 73244475) & _MASK31
        h = h ^ (h >> 13)
    return h


def _normal(*keys: Tensor, seed: int) -> Tensor:
    """Standard normal values, a deterministic function of the integer ``keys`` (Box-Muller)."""
    u1 = (_hash(*keys, seed=2 * seed).double() + 0.5) / 2**31
    u2 = (_hash(*keys, seed=2 * seed + 1).double() + 0.5) / 2**31
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)


def lattice_noise(points: Tensor, channels: int, cell_size: float, seed: int = 0) -> Tensor:
    """Unit-variance noise at world ``points [..., 3]``: ``[..., channels]`` float64 (module docstring).

    >>> p = torch.tensor([[0.3, 0.1, -0.2], [0.3, 0.1, -0.2]])
    >>> n = lattice_noise(p, 4, 0.5, seed=1)
    >>> n.shape, bool(torch.equal(n[0], n[1]))
    (torch.Size([2, 4]), True)
    """
    channels = check_int_range(channels, "channels", lo=1)
    cell_size = check_finite_number(cell_size, "cell_size", lo=0.0, lo_inclusive=False)
    g = points.double() / cell_size
    base = g.floor()
    frac = g - base
    base = base.long()
    ch = torch.arange(channels)
    total = torch.zeros(*points.shape[:-1], channels, dtype=torch.float64)
    norm = torch.zeros(*points.shape[:-1], 1, dtype=torch.float64)
    for corner in range(8):
        offs = [(corner >> a) & 1 for a in range(3)]
        w = torch.ones_like(frac[..., 0])
        for a in range(3):
            w = w * (frac[..., a] if offs[a] else 1.0 - frac[..., a])
        v = base + torch.tensor(offs)
        val = _normal(v[..., 0:1], v[..., 1:2], v[..., 2:3], ch, seed=seed)
        total = total + w[..., None] * val
        norm = norm + (w * w)[..., None]
    return total / norm.clamp_min(1e-24).sqrt()


def _check_depth(depth: Tensor, cameras: Cameras) -> Tensor:
    if not isinstance(cameras, Cameras):
        raise InputError(f"cameras: expected langfield Cameras, got {type(cameras).__name__}")
    if not isinstance(depth, Tensor) or depth.ndim != 3 or not depth.is_floating_point():
        raise InputError(f"depth: expected a float tensor [C, H, W] of ray distances, got {getattr(depth, 'shape', type(depth).__name__)}")
    c, h, w = depth.shape
    if c != len(cameras) or bool((cameras.heights != h).any()) or bool((cameras.widths != w).any()):
        raise InputError(f"depth: [C, H, W] = {list(depth.shape)} does not match the {len(cameras)} cameras' sizes")
    if cameras.has_distortion:
        raise InputError("cameras: distorted cameras are not supported")
    return depth


def latent_points(depth: Tensor, cameras: Cameras, factor: int) -> Tuple[Tensor, Tensor]:
    """World points hit at the centres of the latent pixels: ``(points [C, h, w, 3], valid [C, h, w])``.

    Latent pixel ``(a, b)`` covers image pixels ``[a f, (a + 1) f) x [b f, (b + 1) f)``; its ray
    goes through the block's centre and its depth is the median of the block's valid depths
    (``> 0`` and finite); it is valid when at least half the block is. ``depth`` is ``[C, H, W]``
    ray distance (OpenCV cameras, ``H, W`` multiples of ``factor``).
    """
    depth = _check_depth(depth, cameras)
    factor = check_int_range(factor, "factor", lo=1)
    c, h_img, w_img = depth.shape
    if h_img % factor or w_img % factor:
        raise InputError(f"depth: size {h_img}x{w_img} is not a multiple of the latent factor {factor}")
    h, w = h_img // factor, w_img // factor
    blocks = depth.double().reshape(c, h, factor, w, factor).permute(0, 1, 3, 2, 4).reshape(c, h, w, factor * factor)
    ok = torch.isfinite(blocks) & (blocks > 0)
    valid = ok.sum(-1) * 2 >= factor * factor
    med = torch.where(ok, blocks, torch.nan).nanmedian(dim=-1).values
    med = torch.where(valid, med, 0.0)
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    pix = torch.stack([(u + 0.5) * factor, (v + 0.5) * factor, torch.ones_like(u)], -1)
    points = torch.empty(c, h, w, 3, dtype=torch.float64)
    for k in range(c):
        dirs = pix @ torch.linalg.inv(cameras.Ks[k].double()).T
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        c2w = cameras.c2w[k].double()
        points[k] = (dirs * med[k][..., None]) @ c2w[:, :3].T + c2w[:, 3]
    return points, valid


def default_cell_size(depth: Tensor, cameras: Cameras, factor: int) -> float:
    """The world footprint of one latent pixel at the median valid depth over all views:
    ``median(depth) * factor / median(fx)`` (1.0 when no pixel is valid)."""
    depth = _check_depth(depth, cameras)
    d = depth[torch.isfinite(depth) & (depth > 0)]
    if d.numel() == 0:
        return 1.0
    return float(d.double().median()) * factor / float(cameras.Ks[:, 0, 0].double().median())


def scene_latent_noise(
    depth: Tensor, cameras: Cameras, *, channels: int, factor: int, seed: int = 0, cell_size: Optional[float] = None
) -> Tensor:
    """Initial latents ``[C, channels, H / factor, W / factor]`` float32, N(0, 1) per entry, shared through the scene.

    Args:
        depth: ``[C, H, W]`` rendered ray distances of the ``C`` views (0 where nothing is hit).
        cameras: the ``C`` cameras (OpenCV c2w, no distortion), sizes ``H x W``.
        channels: latent channels (4 for SD's VAE).
        factor: the VAE's downsampling factor.
        seed: the noise field's seed (the same seed: the same field).
        cell_size: lattice cell in world units; default :func:`default_cell_size`.

    See the module docstring for the method and what inspired it.
    """
    channels = check_int_range(channels, "channels", lo=1)
    seed = check_int_range(seed, "seed", lo=0, hi=2**62)
    points, valid = latent_points(depth, cameras, factor)
    size = default_cell_size(depth, cameras, factor) if cell_size is None else cell_size
    shared = lattice_noise(points, channels, size, seed=seed)
    c, h, w = valid.shape
    view = torch.arange(c).view(c, 1, 1, 1)
    pixel = torch.arange(h * w).view(1, h, w, 1)
    own = _normal(view, pixel, torch.arange(channels), seed=seed + 7919)
    out = torch.where(valid[..., None], shared, own)
    return out.permute(0, 3, 1, 2).float().contiguous()
