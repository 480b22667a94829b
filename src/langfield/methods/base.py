"""The contract between a method and the generic trainer/renderer.

A method is an ``nn.Module`` that turns a batch of rays into outputs and outputs into losses.
It never owns the data pipeline or the training loop (STYLE.md principles 1 and 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from langfield.types import Batch, Cameras, ImageBatch, Rays, RenderOutput


@dataclass(frozen=True)
class SceneInfo:
    """What a method may know about the scene when it is built.

    Attributes:
        scene_box: ``[2, 3]`` axis-aligned content bounds (normalised world frame).
        near, far: ray distance bounds.
        num_train_images: number of training images (for per-image embeddings).
        unbounded: the scene extends to infinity (real 360/forward-facing captures).
        points3d, points3d_rgb: optional sparse points ``[P, 3]`` for initialisation.
        camera_centers: optional ``[C, 3]`` training camera positions (Gaussian splatting
            scales its learning rates and densification thresholds by their spread).
    """

    scene_box: Tensor
    near: float
    far: float
    num_train_images: int
    unbounded: bool = False
    points3d: Optional[Tensor] = None
    points3d_rgb: Optional[Tensor] = None
    camera_centers: Optional[Tensor] = None


class Method(nn.Module):
    """Base class every reconstruction method derives from.

    Subclasses implement :meth:`outputs`, :meth:`losses`, :meth:`optimizers` and may override
    :meth:`before_train_step` (e.g. occupancy-grid updates) and :meth:`render_rays`.
    """

    config: Any
    #: ``"rays"``: trained on random pixels (:class:`Batch`), rendered with :meth:`render_rays`.
    #: ``"images"``: trained on whole images (:class:`ImageBatch`), ``outputs(cameras, background)``,
    #: rendered with :meth:`render_camera`.
    batch_kind: str = "rays"
    #: Whether the method can be wrapped in ``DistributedDataParallel`` (fixed parameter shapes).
    supports_ddp: bool = True

    def outputs(self, rays: Rays, background: Tensor) -> Any:
        """Differentiable forward pass for ``[R]`` rays; returns a method-specific object."""
        raise NotImplementedError

    def forward(self, rays: Rays, background: Tensor) -> Any:
        """Same as :meth:`outputs`; lets ``DistributedDataParallel(method)(rays, background)`` sync gradients."""
        return self.outputs(rays, background)

    def losses(self, outputs: Any, batch: Batch) -> Dict[str, Tensor]:
        """Loss terms; must contain ``"loss"`` (the total that is back-propagated)."""
        raise NotImplementedError

    def rgb_of(self, outputs: Any) -> Tensor:
        """``[R, 3]`` final colour inside ``outputs`` (for PSNR logging)."""
        return outputs.render.rgb

    def optimizers(self, max_steps: int) -> Tuple[List[torch.optim.Optimizer], List[Any]]:
        """Optimisers and LR schedulers (stepped once per training step) following the paper."""
        raise NotImplementedError

    def num_rays_hint(self) -> Optional[int]:
        """Rays the next training step should use, or ``None`` to keep the trainer's batch size.

        Called after every step; Instant-NGP uses it to keep the number of *samples* per step
        roughly constant as empty space is skipped (Müller et al. 2022, Sec. 5.1)."""
        return None

    def before_train_step(self, step: int) -> None:
        """Hook called before each training step (no gradients); default does nothing."""

    def after_train_step(self, step: int, outputs: Any) -> None:
        """Hook called after the optimisers stepped (gradients still readable; no graph
        building), e.g. Gaussian densification. ``step`` is the index of the step just taken."""

    @torch.no_grad()
    def render_camera(self, cameras: Cameras, background: Tensor) -> RenderOutput:
        """Evaluation render of a whole length-1 camera batch (``batch_kind == "images"`` methods)."""
        raise NotImplementedError(f"{type(self).__name__} renders rays; use render_rays")

    @torch.no_grad()
    def render_rays(self, rays: Rays, background: Tensor, with_normals: bool = False) -> RenderOutput:
        """Evaluation render of ``[R]`` rays (no gradients). Default: :meth:`outputs` + ``.render``.

        ``with_normals`` asks for density-gradient normals; methods that cannot provide them raise."""
        if with_normals:
            raise ValueError(f"{type(self).__name__} does not render normals")
        return self.outputs(rays, background).render

    def extra_state(self) -> Dict[str, Any]:
        """Non-parameter state to checkpoint (buffers are already in ``state_dict``).

        Only tensors and plain Python containers (checkpoints load with ``weights_only=True``)."""
        return {}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""
