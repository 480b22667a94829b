"""Evaluation: image metrics (PSNR, SSIM, LPIPS) and distribution metrics (FD, KID, SWD).

LPIPS only needs torch and never downloads weights; see :mod:`langfield.eval.lpips`.
:mod:`langfield.eval.distribution` compares *sets* of features or images (Fréchet distance, KID,
sliced Wasserstein distance on Laplacian-pyramid patches) and gives their real-vs-real floor.
"""

from langfield.eval.condition_metrics import EdgeScores, depth_abs_rel, edge_f1
from langfield.eval.distribution import (
    MeanStd,
    SWDResult,
    frechet_distance,
    kernel_inception_distance,
    laplacian_pyramid,
    sliced_wasserstein_distance,
    split_half_floor,
)
from langfield.eval.lpips import LPIPS, load_lpips
from langfield.eval.metrics import ImageMetrics, evaluate_images, mse_to_psnr, psnr, ssim
from langfield.eval.warp import WarpResult, warp_psnr

__all__ = [
    "EdgeScores",
    "depth_abs_rel",
    "edge_f1",
    "ImageMetrics",
    "LPIPS",
    "MeanStd",
    "SWDResult",
    "evaluate_images",
    "frechet_distance",
    "kernel_inception_distance",
    "laplacian_pyramid",
    "load_lpips",
    "mse_to_psnr",
    "psnr",
    "sliced_wasserstein_distance",
    "split_half_floor",
    "ssim",
    "warp_psnr",
    "WarpResult",
]
