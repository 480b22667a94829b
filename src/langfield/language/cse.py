"""Render refresh (``cse_mode="render-refresh"``): correct view-inconsistent 2D features with the 3D field.

langfield's own feature-level variant of OV-NeRF's Cross-view Self-enhancement (the paper's CSE,
on relevancy labels at training and novel views, is :mod:`langfield.language.ovnerf_cse`).
OV-NeRF (Liao et al. 2024, arXiv:2402.04648, Sec. III-C): CLIP labels the same object differently
from different viewpoints. Once a semantic field has been fitted to all views, its renders are
consistent across views by construction (one 3D field), and where most views agreed they carry the
majority's semantics. CSE renders the learned field back into every training view and uses those
renders to correct the 2D targets, then the field is trained further on the corrected targets;
rounds can be iterated.

Per view and per region (mask proposal; pixels outside every mask are treated one by one), the
region's current target feature is compared with the region's rendered feature. Where they agree
(cosine >= ``agree_threshold``) the 2D target is kept: it still carries view-specific detail.
Where they disagree the region is *view-inconsistent* and its target is replaced by the rendered
region feature (the RSR-style trimmed mean of the render over the mask), optionally blended.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from langfield.language.rsr import region_features_and_consistency

__all__ = ["CSEConfig", "CSECorrection", "cross_view_correction"]


@dataclass(frozen=True)
class CSEConfig:
    """Cross-view Self-enhancement settings.

    Attributes:
        rounds: render-correct-retrain rounds after the first fit.
        agree_threshold: a region whose target and rendered features have a cosine below this is
            replaced by the render.
        blend: weight of the rendered feature in a replaced region (1 = full replacement).
        trim_fraction: trimming of the rendered region mean (as RSR).
        steps_fraction: training steps of each CSE round relative to the first fit.
    """

    rounds: int = 2
    agree_threshold: float = 0.9
    blend: float = 1.0
    trim_fraction: float = 0.2
    steps_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ValueError(f"CSEConfig.rounds must be >= 0, got {self.rounds}")
        if not -1.0 <= self.agree_threshold <= 1.0:
            raise ValueError(f"CSEConfig.agree_threshold must be in [-1, 1], got {self.agree_threshold}")
        if not 0.0 <= self.blend <= 1.0:
            raise ValueError(f"CSEConfig.blend must be in [0, 1], got {self.blend}")
        if not 0.0 <= self.trim_fraction < 1.0:
            raise ValueError(f"CSEConfig.trim_fraction must be in [0, 1), got {self.trim_fraction}")
        if self.steps_fraction <= 0:
            raise ValueError(f"CSEConfig.steps_fraction must be > 0, got {self.steps_fraction}")


@dataclass(frozen=True)
class CSECorrection:
    """Result for one view.

    Attributes:
        features: ``[H, W, E]`` corrected unit-norm targets.
        replaced: ``[H, W]`` bool, pixels whose target came from the render.
    """

    features: Tensor
    replaced: Tensor


def cross_view_correction(
    targets: Tensor, rendered: Tensor, masks: Optional[Tensor] = None, config: CSEConfig = CSEConfig()
) -> CSECorrection:
    """Correct one view's targets with the field's render of that view (see module docstring).

    Args:
        targets: ``[H, W, E]`` current training targets of the view.
        rendered: ``[H, W, E]`` the semantic field rendered at the view's camera.
        masks: ``[K, H, W]`` bool mask proposals of the view, or ``None`` (pixel-wise decisions).
        config: :class:`CSEConfig`.

    Returns:
        :class:`CSECorrection`.
    """
    if targets.ndim != 3 or rendered.shape != targets.shape:
        raise ValueError(
            f"targets and rendered must both be [H, W, E] of the same shape, got {tuple(targets.shape)} "
            f"and {tuple(rendered.shape)}"
        )
    h, w, _ = targets.shape
    tgt = F.normalize(targets.float(), dim=-1)
    ren = F.normalize(rendered.float().to(tgt.device), dim=-1)
    replacement = ren.clone()
    replaced = (tgt * ren).sum(-1) < config.agree_threshold  # pixel-wise default
    if masks is not None and masks.shape[0] > 0:
        if masks.shape[1:] != (h, w):
            raise ValueError(f"masks are {tuple(masks.shape[1:])} but targets are {(h, w)} (H, W)")
        t_reg, _ = region_features_and_consistency(tgt, masks, config.trim_fraction)
        r_reg, _ = region_features_and_consistency(ren, masks, config.trim_fraction)
        disagree = (t_reg * r_reg).sum(-1) < config.agree_threshold  # [K]
        # Larger masks first, smaller ones overwrite (finer regions win where masks overlap).
        areas = masks.reshape(masks.shape[0], -1).sum(1)
        covered = masks.any(0)
        replaced = replaced & ~covered
        for i in torch.argsort(areas, descending=True).tolist():
            m = masks[i]
            replaced[m] = bool(disagree[i])
            if bool(disagree[i]):
                replacement[m] = r_reg[i]
    out = tgt.clone()
    if bool(replaced.any()):
        new = replacement[replaced]
        if config.blend < 1.0:
            new = config.blend * new + (1.0 - config.blend) * tgt[replaced]
        out[replaced] = F.normalize(new, dim=-1)
    return CSECorrection(out, replaced)
