"""Tile-based front-to-back alpha blending of projected Gaussians, any channel count.

Kerbl et al. 2023, Sec. 6 and the reference CUDA rasteriser: each tile blends its depth-sorted
Gaussians; per pixel ``alpha = min(0.99, o * exp(-0.5 d^T conic d))``, Gaussians with
``alpha < 1/255`` (or ``power > 0``) are skipped, and blending stops before the Gaussian that
would take transmittance below ``1e-4``. Outputs ``image = sum_i f_i alpha_i T_i + T * bg`` and
``alpha = 1 - T``. Gradients are the exact derivatives of that forward (where ``o * G > 0.99``
the clamp makes the alpha gradient zero).

Backends (``backend=``):

* ``"cpp"`` - the C++/OpenMP CPU kernel (:mod:`langfield.kernels.gaussian_rasterize_cpu`).
* ``"torch"`` - tiles processed in chunks with plain tensor ops and autograd; runs on any
  device (the CUDA fallback) with memory bounded by ``chunk_elements``.
* ``"auto"`` - ``cpp`` for CPU tensors when the kernel builds, else ``torch``.

The slow twin is :func:`langfield.ops.reference.splatting.rasterize_gaussians_reference`.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from langfield.kernels import gaussian_rasterize_cpu as kernel
from langfield.ops.splatting.binning import TileBins, bin_gaussians

__all__ = ["rasterize_gaussians", "BACKENDS"]

BACKENDS = ("auto", "cpp", "torch")
ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4


def _check_inputs(means2d, conics, opacities, features, depths, radii, background) -> None:
    n = means2d.shape[0] if means2d.ndim == 2 else -1
    checks = (
        ("means2d", means2d, (n, 2)),
        ("conics", conics, (n, 3)),
        ("opacities", opacities, (n,)),
        ("depths", depths, (n,)),
        ("radii", radii, (n,)),
    )
    for name, value, shape in checks:
        if not isinstance(value, Tensor) or tuple(value.shape) != shape:
            raise ValueError(f"{name} must be a tensor of shape {list(shape)}, got {tuple(getattr(value, 'shape', ()))}")
    if not isinstance(features, Tensor) or features.ndim != 2 or features.shape[0] != n or features.shape[1] < 1:
        raise ValueError(f"features must be [N={n}, D>=1], got {tuple(getattr(features, 'shape', ()))}")
    if background is not None and tuple(background.shape) != (features.shape[1],):
        raise ValueError(f"background must be [D={features.shape[1]}], got {tuple(background.shape)}")


def _blend_tiles_torch(
    means2d: Tensor, conics: Tensor, opacities: Tensor, features: Tensor, bins: TileBins,
    width: int, height: int, chunk_elements: int,
) -> Tuple[Tensor, Tensor]:
    """Blend with tensor ops, a chunk of tiles at a time; returns ``(color [H, W, D], T [H, W])``."""
    s = bins.tile_size
    device, dtype = means2d.device, means2d.dtype
    d = features.shape[1]
    num_tiles = bins.tiles_x * bins.tiles_y
    counts = (bins.tile_ranges[:, 1] - bins.tile_ranges[:, 0]).tolist()
    starts = bins.tile_ranges[:, 0].tolist()
    local = torch.arange(s * s, device=device)
    off_x, off_y = (local % s).to(dtype) + 0.5, (local // s).to(dtype) + 0.5
    colors, transmittances = [], []
    t = 0
    while t < num_tiles:
        # Grow the chunk while the padded [tiles, s*s, K] problem fits the element budget.
        t_end, k_max = t + 1, max(counts[t], 1)
        while t_end < num_tiles:
            k_new = max(k_max, counts[t_end])
            if (t_end + 1 - t) * s * s * k_new > chunk_elements:
                break
            k_max, t_end = k_new, t_end + 1
        tiles = torch.arange(t, t_end, device=device)
        nt = t_end - t
        k = torch.arange(k_max, device=device)
        valid = k[None] < torch.as_tensor(counts[t:t_end], device=device)[:, None]  # [nt, K]
        slot = torch.as_tensor(starts[t:t_end], device=device)[:, None] + k[None]
        slot = torch.where(valid, slot, torch.zeros_like(slot))
        ids = bins.gaussian_ids[slot] if bins.gaussian_ids.numel() else torch.zeros_like(slot)
        px = (tiles % bins.tiles_x * s).to(dtype)[:, None] + off_x[None]  # [nt, s*s]
        py = (tiles // bins.tiles_x * s).to(dtype)[:, None] + off_y[None]
        m = means2d[ids]  # [nt, K, 2]
        con = conics[ids]
        dx = m[:, None, :, 0] - px[:, :, None]  # [nt, P, K]
        dy = m[:, None, :, 1] - py[:, :, None]
        power = -0.5 * (con[:, None, :, 0] * dx * dx + con[:, None, :, 2] * dy * dy) - con[:, None, :, 1] * dx * dy
        alpha = torch.clamp(opacities[ids][:, None, :] * torch.exp(power), max=ALPHA_MAX)
        used = valid[:, None, :] & (power <= 0) & (alpha >= ALPHA_MIN)
        alpha = torch.where(used, alpha, torch.zeros_like(alpha))
        used = used & (torch.cumprod(1.0 - alpha, dim=-1) >= T_MIN)
        alpha = torch.where(used, alpha, torch.zeros_like(alpha))
        t_after = torch.cumprod(1.0 - alpha, dim=-1)
        t_before = torch.cat([torch.ones_like(t_after[..., :1]), t_after[..., :-1]], dim=-1)
        weights = alpha * t_before  # [nt, P, K]
        colors.append(torch.einsum("tpk,tkd->tpd", weights, features[ids]))
        transmittances.append(t_after[..., -1])
        t = t_end
    color = torch.cat(colors).reshape(bins.tiles_y, bins.tiles_x, s, s, d)
    color = color.permute(0, 2, 1, 3, 4).reshape(bins.tiles_y * s, bins.tiles_x * s, d)[:height, :width]
    trans = torch.cat(transmittances).reshape(bins.tiles_y, bins.tiles_x, s, s)
    trans = trans.permute(0, 2, 1, 3).reshape(bins.tiles_y * s, bins.tiles_x * s)[:height, :width]
    return color, trans


class _RasterizeCpp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, background, bins: TileBins, width: int, height: int):
        args = (
            means2d.detach().float().contiguous(), conics.detach().float().contiguous(),
            opacities.detach().float().contiguous(), features.detach().float().contiguous(),
            background.detach().float().contiguous(), bins.gaussian_ids, bins.tile_ranges,
        )
        image, alpha, final_t, last = kernel.rasterize_forward_cpp(*args, width, height, bins.tile_size)
        ctx.save_for_backward(*args, final_t, last)
        ctx.geometry = (width, height, bins.tile_size)
        ctx.mark_non_differentiable(final_t)
        return image, alpha, final_t

    @staticmethod
    def backward(ctx, grad_image, grad_alpha, _grad_t):
        *args, final_t, last = ctx.saved_tensors
        width, height, tile_size = ctx.geometry
        grad_image = grad_image.float().contiguous()
        grad_alpha = grad_alpha.float().contiguous()
        g_means, g_conics, g_opac, g_feat = kernel.rasterize_backward_cpp(
            *args, width, height, tile_size, final_t, last, grad_image, grad_alpha
        )
        g_bg = (grad_image * final_t[..., None]).reshape(-1, grad_image.shape[-1]).sum(0)
        return g_means, g_conics, g_opac, g_feat, g_bg, None, None, None


def _cpp_ok() -> bool:
    return kernel.cpp_available()


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend ``"cpp"`` or ``"torch"`` for ``backend`` on ``device``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "cpp" if device.type == "cpu" and _cpp_ok() else "torch"
    if backend == "cpp":
        if device.type != "cpu":
            raise ValueError("backend='cpp' is the CPU kernel; tensors are on " + str(device))
        if not _cpp_ok():
            raise RuntimeError("the C++ Gaussian rasteriser is unavailable (LANGFIELD_NO_CPP set or build failed)")
    return backend


def rasterize_gaussians(
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    features: Tensor,
    depths: Tensor,
    radii: Tensor,
    width: int,
    height: int,
    background: Optional[Tensor] = None,
    tile_size: int = 16,
    backend: str = "auto",
    chunk_elements: int = 1 << 22,
) -> Tuple[Tensor, Tensor]:
    """Rasterise ``N`` screen-space Gaussians into a ``height x width`` image of ``D`` channels.

    Args:
        means2d: ``[N, 2]`` pixel centres (pixel ``(i, j)`` centre at ``(j + .5, i + .5)``).
        conics: ``[N, 3]`` inverse 2D covariances ``(a, b, c)``.
        opacities: ``[N]`` activated opacities in (0, 1).
        features: ``[N, D]`` colours or any per-Gaussian channels.
        depths: ``[N]`` sort key (camera z), not differentiated.
        radii: ``[N]`` integer footprint radii; 0 culls.
        width, height, tile_size: image and tile size in pixels.
        background: ``[D]`` colour behind everything (``None`` = zeros).
        backend: ``"auto" | "cpp" | "torch"``.
        chunk_elements: memory bound of the torch backend (tiles x pixels x Gaussians per chunk).

    Returns:
        ``(image [H, W, D], alpha [H, W, 1])``, differentiable w.r.t. means2d, conics, opacities,
        features and background.

    Example:
        Two Gaussians of opacity 0.5 centred on a 1 x 1 image, given back to front: the nearer red one
        takes half of the light, the green one half of the rest, the background what remains:

        >>> import torch
        >>> from langfield.ops.splatting import rasterize_gaussians
        >>> means2d = torch.tensor([[0.5, 0.5], [0.5, 0.5]])  # the centre of pixel (0, 0)
        >>> conics, opacities = torch.tensor([[1.0, 0.0, 1.0]] * 2), torch.tensor([0.5, 0.5])
        >>> colors = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
        >>> image, alpha = rasterize_gaussians(
        ...     means2d, conics, opacities, colors, depths=torch.tensor([2.0, 1.0]), radii=torch.tensor([1, 1]),
        ...     width=1, height=1, background=torch.tensor([0.0, 0.0, 1.0]), backend="torch")
        >>> image[0, 0].tolist(), alpha[0, 0].tolist()
        ([0.5, 0.25, 0.25], [0.75])
    """
    _check_inputs(means2d, conics, opacities, features, depths, radii, background)
    backend = resolve_backend(backend, means2d.device)
    bins = bin_gaussians(means2d, radii, depths, width, height, tile_size)
    if backend == "cpp":
        bg = background if background is not None else features.new_zeros(features.shape[1])
        image, alpha, _ = _RasterizeCpp.apply(means2d, conics, opacities, features, bg, bins, width, height)
        dtype = features.dtype
        return image.to(dtype), alpha.to(dtype)
    color, trans = _blend_tiles_torch(means2d, conics, opacities, features, bins, width, height, chunk_elements)
    if background is not None:
        color = color + trans[..., None] * background
    return color, (1.0 - trans)[..., None]
