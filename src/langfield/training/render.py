"""Chunked evaluation rendering of whole cameras through ``Method.render_rays``.

Memory is bounded by ``chunk`` rays per call. The method is put in ``eval()`` mode for the
render and restored afterwards; everything runs under ``torch.no_grad()``.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from langfield.data.dataset import ImageSet
from langfield.geometry.rays import rays_from_camera
from langfield.types import Cameras, RenderOutput

__all__ = ["render_camera", "render_image_set", "unwrap_model", "evaluation_mode"]

Device = Union[str, torch.device]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare method inside a ``DistributedDataParallel`` (or ``DataParallel``) wrapper."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` inside the block, then restore the previous train/eval mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _check_background(background: Tensor) -> Tensor:
    background = torch.as_tensor(background, dtype=torch.float32)
    if background.shape != (3,):
        raise ValueError(f"background must be a [3] colour, got {tuple(background.shape)}")
    return background


@torch.no_grad()
def render_camera(
    method: nn.Module,
    cameras: Cameras,
    index: int,
    near: Union[float, Tensor],
    far: Union[float, Tensor],
    background: Tensor,
    chunk: int = 8192,
    output_device: Optional[Device] = None,
    with_normals: bool = False,
) -> RenderOutput:
    """Render every pixel of camera ``index`` (pixel centres, row-major) in chunks.

    Methods with ``batch_kind == "images"`` (Gaussian splatting) render the whole camera in one
    ``method.render_camera`` call; ``near``/``far``/``chunk`` do not apply to them.

    Args:
        method: a :class:`~langfield.methods.base.Method` (DDP wrappers are unwrapped).
        cameras: cameras (OpenCV c2w); rays are generated where the cameras live and moved to
            the method's device chunk by chunk.
        index: which camera.
        near, far: ray distance bounds (scalars or ``[H*W]`` tensors).
        background: ``[3]`` colour; the method receives it expanded to ``[R, 3]`` per chunk.
        chunk: rays per ``render_rays`` call (bounds peak memory).
        output_device: where the assembled image is kept (default: the method's device). Use
            ``"cpu"`` for large feature renders.
        with_normals: also render density-gradient normals (methods that cannot raise).

    Returns:
        :class:`RenderOutput` with ``[H, W, ...]`` tensors.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    method = unwrap_model(method)
    if not hasattr(method, "render_rays"):
        raise TypeError(f"{type(method).__name__} has no render_rays(rays, background); is it a Method?")
    background = _check_background(background)
    device = _model_device(method)
    if getattr(method, "batch_kind", "rays") == "images":
        if with_normals:
            raise ValueError(f"{type(method).__name__} does not render normals")
        with evaluation_mode(method):
            out = method.render_camera(cameras[index].to(device), background.to(device))
        if not isinstance(out, RenderOutput):
            raise TypeError(f"{type(method).__name__}.render_camera must return a RenderOutput, got {type(out).__name__}")
        return out if output_device is None else out.to(output_device)
    rays = rays_from_camera(cameras, index, near, far)
    height, width = (int(s) for s in rays.shape)
    rays = rays.flatten()
    bg = background.to(device)
    parts = []
    with evaluation_mode(method):
        for start in range(0, len(rays), chunk):
            sub = rays[start : start + chunk].to(device)
            if with_normals:
                out = method.render_rays(sub, bg.expand(len(sub), 3), with_normals=True)
            else:
                out = method.render_rays(sub, bg.expand(len(sub), 3))
            if not isinstance(out, RenderOutput):
                raise TypeError(f"{type(method).__name__}.render_rays must return a RenderOutput, got {type(out).__name__}")
            if output_device is not None:
                out = out.to(output_device)
            parts.append(out)
    return RenderOutput.cat(parts).reshape(height, width)


def render_image_set(
    method: nn.Module,
    image_set: ImageSet,
    near: Union[float, Tensor],
    far: Union[float, Tensor],
    background: Tensor,
    chunk: int = 8192,
    output_device: Optional[Device] = None,
) -> Iterator[Tuple[int, RenderOutput]]:
    """Lazily render every camera of ``image_set``; yields ``(index, RenderOutput [H, W, ...])``."""
    for index in range(len(image_set.cameras)):
        yield index, render_camera(method, image_set.cameras, index, near, far, background, chunk, output_device)
