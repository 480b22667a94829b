"""Multi-view consistency by warping: warp-PSNR between two views of one scene with known depth and poses.

View ``i``'s pixels are lifted to 3D with its depth, projected into view ``j``, and image ``j`` is
sampled there (bilinearly); the PSNR between image ``i`` and that warped image ``j`` is taken over
the **co-visible** pixels only. Two images that agree with one 3D scene score high (identical
renders of a scene: limited by the resampling blur only, > 35 dB on the procedural scene at 32 px);
independent generations score like two unrelated images. This is the consistency measure used for
generated novel views (e.g. the "warping error" / "flow warping error" of video and multi-view
generation papers: Lai et al. 2018, "Learning Blind Video Temporal Consistency", Sec. 4.1, with
optical flow replaced by the exact depth-and-pose warp).

Conventions (``docs/conventions.md``): cameras are :class:`~langfield.types.Cameras` (OpenCV
camera-to-world, x right, y down, z forward; pixel ``(u, v)`` has its centre at
``(u + 0.5, v + 0.5)``); **depth is the ray distance** along the unit pixel-centre ray (what
langfield renders as ``RenderOutput.depth``), not the z-depth. Pixels with a depth that is not
finite or ``<= 0`` (the renderers' "no hit") are never co-visible. Distorted cameras are refused.

A pixel ``p`` of view ``i`` is co-visible in view ``j`` when

1. its point ``X = o_i + depth_i(p) * d_i(p)`` lies in front of camera ``j`` (z > 0),
2. its projection ``q`` lies inside image ``j`` with all four bilinear neighbours in the frame
   (pixel-centre coordinates in ``[0, W - 1] x [0, H - 1]``), and
3. (occlusion test) ``| |X - o_j| - depth_j(n) | <= depth_tolerance * depth_j(n)`` at each of the
   four pixels ``n`` the bilinear sample reads: the surface view ``j`` sees there is that same
   point (relative tolerance), so neither occluded points nor silhouette pixels (whose sample
   would blend in the background or another surface) count.

With no co-visible pixel the PSNR is ``nan`` and ``covisible_fraction`` is 0 (no error: e.g. two
cameras that look away from each other simply share nothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import torch
from torch import Tensor

from langfield._checks import InputError, check_finite_number
from langfield.geometry.rays import project_points
from langfield.types import Cameras

__all__ = ["WarpResult", "warp_image", "warp_psnr", "warp_psnr_reference"]


@dataclass(frozen=True)
class WarpResult:
    """What :func:`warp_psnr` measured.

    Attributes:
        psnr: dB over the co-visible pixels and channels (``nan`` when none is co-visible;
            ``inf`` when they agree exactly).
        covisible_fraction: co-visible pixels / all pixels of view ``i``, in ``[0, 1]``.
        warped: ``[H_i, W_i, C]`` image ``j`` sampled at the projections of view ``i``'s pixels
            (0 where not co-visible).
        mask: ``[H_i, W_i]`` bool, the co-visible pixels.
    """

    psnr: float
    covisible_fraction: float
    warped: Tensor
    mask: Tensor


def _camera(cam: Cameras, where: str) -> Tuple[Tensor, Tensor, int, int]:
    if not isinstance(cam, Cameras):
        raise InputError(f"{where}: expected a langfield Cameras of one camera, got {type(cam).__name__}")
    if len(cam) != 1:
        raise InputError(f"{where}: expected one camera, got {len(cam)} (index it: cameras[i])")
    if cam.has_distortion:
        raise InputError(f"{where}: distorted cameras are not supported (undistort the images first)")
    return cam.c2w[0].double(), cam.Ks[0].double(), int(cam.widths[0]), int(cam.heights[0])


def _image(image: Tensor, h: int, w: int, where: str) -> Tensor:
    if not isinstance(image, Tensor) or image.ndim != 3 or not image.is_floating_point():
        got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise InputError(f"{where}: expected a float tensor [H, W, C], got {got}")
    if tuple(image.shape[:2]) != (h, w):
        raise InputError(f"{where}: is {tuple(image.shape[:2])} (H, W) but its camera is {h}x{w} (H x W)")
    return image


def _depth(depth: Tensor, h: int, w: int, where: str) -> Tensor:
    if not isinstance(depth, Tensor) or not depth.is_floating_point():
        raise InputError(f"{where}: expected a float tensor [H, W] or [H, W, 1], got {type(depth).__name__}")
    if depth.ndim == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if tuple(depth.shape) != (h, w):
        raise InputError(f"{where}: expected [{h}, {w}] (or [{h}, {w}, 1]) for its camera, got {tuple(depth.shape)}")
    return depth.detach().double()


def _check(image_i, depth_i, cam_i, image_j, depth_j, cam_j, depth_tolerance):
    c2w_i, K_i, w_i, h_i = _camera(cam_i, "cam_i")
    c2w_j, K_j, w_j, h_j = _camera(cam_j, "cam_j")
    image_j = _image(image_j, h_j, w_j, "image_j")
    if image_i is not None:
        image_i = _image(image_i, h_i, w_i, "image_i")
    if image_i is not None and image_i.shape[-1] != image_j.shape[-1]:
        raise InputError(f"image_j: has {image_j.shape[-1]} channels, image_i {image_i.shape[-1]}")
    d_i = _depth(depth_i, h_i, w_i, "depth_i")
    d_j = _depth(depth_j, h_j, w_j, "depth_j")
    tol = check_finite_number(depth_tolerance, "depth_tolerance", lo=0.0, lo_inclusive=False)
    return image_i, d_i, c2w_i, K_i, image_j, d_j, c2w_j, K_j, tol


def _result(image_i: Tensor, warped: Tensor, mask: Tensor) -> WarpResult:
    n = int(mask.sum())
    frac = n / mask.numel()
    if n == 0:
        return WarpResult(float("nan"), 0.0, warped, mask)
    mse = float(((image_i[mask] - warped[mask]) ** 2).mean())
    value = float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)
    return WarpResult(value, frac, warped, mask)


def warp_image(
    depth_i: Tensor, cam_i: Cameras, image_j: Tensor, depth_j: Tensor, cam_j: Cameras, *, depth_tolerance: float = 0.05
) -> Tuple[Tensor, Tensor]:
    """Image ``j`` warped into view ``i``: ``(warped [H_i, W_i, C], covisible mask [H_i, W_i])``.

    Differentiable in ``image_j`` (bilinear sampling); depths and cameras are constants. See the
    module docstring for the conventions and the co-visibility test.
    """
    _, d_i, c2w_i, K_i, image_j, d_j, c2w_j, K_j, tol = _check(None, depth_i, cam_i, image_j, depth_j, cam_j, depth_tolerance)
    h_i, w_i = d_i.shape
    h_j, w_j = d_j.shape
    # 1. Lift view i: unit pixel-centre rays (OpenCV) scaled by the ray distance, to world.
    v, u = torch.meshgrid(torch.arange(h_i, dtype=torch.float64), torch.arange(w_i, dtype=torch.float64), indexing="ij")
    pix = torch.stack([u + 0.5, v + 0.5, torch.ones_like(u)], dim=-1)
    dirs = pix @ torch.linalg.inv(K_i).T
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    valid_i = torch.isfinite(d_i) & (d_i > 0)
    points = (dirs * torch.where(valid_i, d_i, 0.0)[..., None]) @ c2w_i[:, :3].T + c2w_i[:, 3]
    # 2. Into camera j, project (pixel-centre coordinates: x - 0.5 indexes the pixel grid).
    o_j = c2w_j[:, 3]
    pixels, z = project_points(points.reshape(-1, 3), c2w_j, K_j)
    front = (z > 1e-9).reshape(h_i, w_i)
    x, y = (pixels[:, 0] - 0.5).reshape(h_i, w_i), (pixels[:, 1] - 0.5).reshape(h_i, w_i)
    inside = front & (x >= 0) & (x <= w_j - 1) & (y >= 0) & (y <= h_j - 1)
    # 3. Occlusion test against view j's depth at the four bilinear neighbours.
    xc = torch.where(inside, x, 0.0)
    yc = torch.where(inside, y, 0.0)
    x0 = xc.floor().long().clamp(0, max(w_j - 2, 0))
    y0 = yc.floor().long().clamp(0, max(h_j - 2, 0))
    x1, y1 = (x0 + 1).clamp(max=w_j - 1), (y0 + 1).clamp(max=h_j - 1)
    dist = (points - o_j).norm(dim=-1)
    agree = torch.ones_like(inside)
    for yy, xx in ((y0, x0), (y0, x1), (y1, x0), (y1, x1)):
        seen = d_j[yy, xx]
        agree &= torch.isfinite(seen) & (seen > 0) & ((dist - seen).abs() <= tol * seen)
    mask = valid_i & inside & agree
    # 4. Bilinear sample of image j (the only differentiable step).
    fx = (xc - x0).to(image_j.dtype)[..., None]
    fy = (yc - y0).to(image_j.dtype)[..., None]
    top = image_j[y0, x0] * (1 - fx) + image_j[y0, x1] * fx
    bottom = image_j[y1, x0] * (1 - fx) + image_j[y1, x1] * fx
    warped = (top * (1 - fy) + bottom * fy) * mask[..., None].to(image_j.dtype)
    return warped, mask


def warp_psnr(
    image_i: Tensor,
    depth_i: Tensor,
    cam_i: Cameras,
    image_j: Tensor,
    depth_j: Tensor,
    cam_j: Cameras,
    *,
    depth_tolerance: float = 0.05,
) -> WarpResult:
    """PSNR of image ``i`` against image ``j`` warped into view ``i``, over the co-visible pixels.

    Args:
        image_i, image_j: ``[H, W, C]`` float in ``[0, 1]`` (each its camera's size).
        depth_i, depth_j: ``[H, W]`` or ``[H, W, 1]`` ray distances (``<= 0`` or non-finite: no surface).
        cam_i, cam_j: one camera each (``cameras[k]``), OpenCV c2w, no distortion.
        depth_tolerance: relative depth agreement for the occlusion test (``> 0``; 0.05 = 5 %).

    Returns:
        :class:`WarpResult` (``psnr`` is ``nan`` and ``covisible_fraction`` 0 when the views share
        no pixel).

    Raises:
        InputError: a size that does not match its camera, unlike channel counts, a distorted or
            batched camera, a tolerance ``<= 0``; each names the argument.

    >>> import torch
    >>> from langfield.types import Cameras
    >>> K = torch.tensor([[8.0, 0, 4], [0, 8.0, 4], [0, 0, 1]])
    >>> cams = Cameras.create(torch.eye(4)[None].repeat(2, 1, 1), K, 8, 8)
    >>> img = torch.rand(8, 8, 3, generator=torch.Generator().manual_seed(0))
    >>> res = warp_psnr(img, torch.full((8, 8), 2.0), cams[0], img, torch.full((8, 8), 2.0), cams[1])
    >>> res.psnr, res.covisible_fraction
    (inf, 1.0)
    """
    image_i = _check(image_i, depth_i, cam_i, image_j, depth_j, cam_j, depth_tolerance)[0]
    warped, mask = warp_image(depth_i, cam_i, image_j, depth_j, cam_j, depth_tolerance=depth_tolerance)
    return _result(image_i, warped.to(image_i.dtype), mask)


def warp_psnr_reference(
    image_i: Tensor, depth_i: Tensor, cam_i: Cameras, image_j: Tensor, depth_j: Tensor, cam_j: Cameras, *, depth_tolerance: float = 0.05
) -> WarpResult:
    """Slow twin of :func:`warp_psnr`: one pixel at a time, in plain Python arithmetic on floats
    (tiny images only). Independent of the vectorised path except for the input checks."""
    image_i, d_i, c2w_i, K_i, image_j, d_j, c2w_j, K_j, tol = _check(image_i, depth_i, cam_i, image_j, depth_j, cam_j, depth_tolerance)
    h_i, w_i = d_i.shape
    h_j, w_j = d_j.shape
    R_i, t_i = c2w_i[:, :3].tolist(), c2w_i[:, 3].tolist()
    R_j, t_j = c2w_j[:, :3].tolist(), c2w_j[:, 3].tolist()
    fx_i, fy_i, cx_i, cy_i, s_i = float(K_i[0, 0]), float(K_i[1, 1]), float(K_i[0, 2]), float(K_i[1, 2]), float(K_i[0, 1])
    fx_j, fy_j, cx_j, cy_j, s_j = float(K_j[0, 0]), float(K_j[1, 1]), float(K_j[0, 2]), float(K_j[1, 2]), float(K_j[0, 1])
    warped = torch.zeros(h_i, w_i, image_j.shape[-1], dtype=image_j.dtype)
    mask = torch.zeros(h_i, w_i, dtype=torch.bool)
    for v in range(h_i):
        for u in range(w_i):
            d = float(d_i[v, u])
            if not math.isfinite(d) or d <= 0:
                continue
            # K^-1 for an upper-triangular K with skew s.
            yc = (v + 0.5 - cy_i) / fy_i
            xc = (u + 0.5 - cx_i - s_i * yc) / fx_i
            n = math.sqrt(xc * xc + yc * yc + 1.0)
            pc = [xc / n * d, yc / n * d, 1.0 / n * d]
            X = [sum(R_i[r][c] * pc[c] for c in range(3)) + t_i[r] for r in range(3)]
            rel = [X[r] - t_j[r] for r in range(3)]
            q = [sum(R_j[r][c] * rel[r] for r in range(3)) for c in range(3)]  # R_j^T (X - o_j)
            if q[2] <= 1e-9:
                continue
            x = fx_j * q[0] / q[2] + s_j * q[1] / q[2] + cx_j - 0.5
            y = fy_j * q[1] / q[2] + cy_j - 0.5
            if not (0 <= x <= w_j - 1 and 0 <= y <= h_j - 1):
                continue
            x0, y0 = min(int(math.floor(x)), max(w_j - 2, 0)), min(int(math.floor(y)), max(h_j - 2, 0))
            x1, y1 = min(x0 + 1, w_j - 1), min(y0 + 1, h_j - 1)
            dist = math.sqrt(sum(c * c for c in rel))
            seen = [float(d_j[yy, xx]) for yy, xx in ((y0, x0), (y0, x1), (y1, x0), (y1, x1))]
            if not all(math.isfinite(s) and s > 0 and abs(dist - s) <= tol * s for s in seen):
                continue
            ax, ay = x - x0, y - y0
            warped[v, u] = (
                (1 - ay) * ((1 - ax) * image_j[y0, x0] + ax * image_j[y0, x1])
                + ay * ((1 - ax) * image_j[y1, x0] + ax * image_j[y1, x1])
            )  # fmt: skip
            mask[v, u] = True
    return _result(image_i, warped.to(image_i.dtype), mask)
