"""The 2D distillation targets of a language field: teacher features and mask proposals per view.

Both are computed once per training view and kept on the CPU: ``[V, H, W, E]`` float16 unit
teacher features, and per view a ``[K_v, H, W]`` bool stack of mask proposals (split where the
reconstruction's rendered depth jumps, when asked).
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor

from langfield.data.dataset import ImageSet
from langfield.language.masks import MaskProposalConfig, propose_masks, split_masks_at_depth_edges
from langfield.language.teachers.base import DenseTeacher
from langfield.methods.base import SceneMethod

__all__ = ["depth_split_masks", "teacher_features", "view_image_uint8", "view_masks"]


def view_image_uint8(split: ImageSet, index: int, background: Tensor) -> Tensor:
    """``[H, W, 3]`` uint8 training image ``index`` composited over ``background [3]``."""
    return (split.image_float(index, background) * 255.0 + 0.5).clamp(0, 255).to(torch.uint8)


def _bar(description: str, enabled: bool) -> Progress:
    return Progress(
        TextColumn(f"[bold blue]{description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        disable=not enabled,
    )  # fmt: skip


def teacher_features(
    teacher: DenseTeacher, split: ImageSet, background: Tensor, split_name: str = "train", progress: bool = True
) -> Tensor:
    """``[V, H, W, E]`` float16 unit dense teacher features of every image of ``split``."""
    out = None
    with _bar(f"teacher ({teacher.name})", progress) as bar:
        task = bar.add_task("teacher", total=len(split))
        for i in range(len(split)):
            sem = split.semantics[i] if split.semantics is not None else None
            f = teacher.dense_features(
                view_image_uint8(split, i, background), view_key=f"{split_name}/{i}", semantics=sem, camera=split.cameras.c2w[i]
            )
            if f.shape[:2] != (split.height, split.width):
                raise ValueError(f"teacher {teacher.name} returned {tuple(f.shape)} for a {split.height}x{split.width} image")
            if out is None:
                out = torch.empty(len(split), split.height, split.width, f.shape[-1], dtype=torch.float16)
            out[i] = F.normalize(f.float(), dim=-1).to(torch.float16)
            bar.advance(task)
    return out


def view_masks(split: ImageSet, background: Tensor, config: MaskProposalConfig, progress: bool = True) -> List[Tensor]:
    """``[K_v, H, W]`` bool mask proposals of every image of ``split``."""
    out = []
    with _bar(f"masks ({config.method})", progress) as bar:
        task = bar.add_task("masks", total=len(split))
        for i in range(len(split)):
            out.append(propose_masks(view_image_uint8(split, i, background), config).masks.cpu())
            bar.advance(task)
    return out


@torch.no_grad()
def depth_split_masks(
    masks: List[Tensor], method: SceneMethod, split: ImageSet, background: Tensor, threshold: float
) -> List[Tensor]:
    """Every view's proposals cut where ``method``'s rendered depth jumps by more than ``threshold``
    (relative), see :func:`~langfield.language.masks.split_masks_at_depth_edges`."""
    out = []
    for v, m in enumerate(masks):
        r = method.render_camera(split.cameras[v], background, output_device="cpu")
        out.append(split_masks_at_depth_edges(m, r.depth, r.accumulation, threshold))
    return out
