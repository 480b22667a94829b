"""Evaluation: image metrics (PSNR, SSIM, LPIPS).

LPIPS only needs torch and never downloads weights; see :mod:`langfield.eval.lpips`.
"""

from langfield.eval.lpips import LPIPS, load_lpips
from langfield.eval.metrics import ImageMetrics, evaluate_images, mse_to_psnr, psnr, ssim

__all__ = ["ImageMetrics", "LPIPS", "evaluate_images", "load_lpips", "mse_to_psnr", "psnr", "ssim"]
