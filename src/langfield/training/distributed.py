"""Process-group helpers for ``torchrun --nproc_per_node=N`` data-parallel training.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.
:func:`init_distributed` reads them, picks ``nccl`` for CUDA and ``gloo`` for CPU, and is a
no-op (world size 1) when the variables are absent. Gradients are synchronised by PyTorch's
:class:`~torch.nn.parallel.DistributedDataParallel`; methods are called through
``Method.forward`` (= ``Method.outputs``) so DDP's hooks fire.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, List, Optional

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistributedInfo",
    "env_distributed_info",
    "init_distributed",
    "cleanup_distributed",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "barrier",
    "all_gather_object",
    "broadcast_object",
    "wrap_ddp",
]


@dataclass(frozen=True)
class DistributedInfo:
    """Where this process sits. ``backend`` is ``None`` when not distributed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str) -> Optional[int]:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def env_distributed_info() -> DistributedInfo:
    """Rank/world size/local rank from the ``torchrun`` environment (defaults: single process)."""
    world = _env_int("WORLD_SIZE")
    if world is None or world <= 1:
        return DistributedInfo()
    rank = _env_int("RANK")
    if rank is None:
        raise RuntimeError("WORLD_SIZE is set but RANK is not; launch with torchrun")
    local = _env_int("LOCAL_RANK")
    local = rank if local is None else local
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is out of range for WORLD_SIZE={world}")
    return DistributedInfo(rank=rank, world_size=world, local_rank=local)


def init_distributed(backend: Optional[str] = None, timeout_s: Optional[float] = None) -> DistributedInfo:
    """Join the process group described by the environment (idempotent).

    Args:
        backend: ``"nccl"``, ``"gloo"`` or ``None`` (NCCL when CUDA is available, else gloo).
        timeout_s: collective timeout (PyTorch's default if ``None``).

    Returns:
        :class:`DistributedInfo`; ``world_size == 1`` and nothing initialised when the
        ``torchrun`` variables are absent. With NCCL the current CUDA device is set to
        ``cuda:LOCAL_RANK``.
    """
    if dist.is_available() and dist.is_initialized():
        return DistributedInfo(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=_env_int("LOCAL_RANK") or 0,
            backend=dist.get_backend(),
        )
    info = env_distributed_info()
    if not info.enabled:
        return info
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this PyTorch build")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise RuntimeError(f"{name} is not set; launch with torchrun or set it for the env:// rendezvous")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"backend must be 'nccl' or 'gloo', got {backend!r}")
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise RuntimeError("backend 'nccl' needs CUDA; use 'gloo' on CPU")
        if info.local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK={info.local_rank} but only {torch.cuda.device_count()} CUDA devices")
        torch.cuda.set_device(info.local_rank)
    kwargs = {} if timeout_s is None else {"timeout": timedelta(seconds=timeout_s)}
    dist.init_process_group(backend=backend, init_method="env://", rank=info.rank, world_size=info.world_size, **kwargs)
    return DistributedInfo(info.rank, info.world_size, info.local_rank, backend)


def cleanup_distributed() -> None:
    """Destroy the process group if one exists."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    """``dist.barrier()`` when distributed, otherwise nothing."""
    if is_distributed():
        dist.barrier()


def all_gather_object(obj: Any) -> List[Any]:
    """Picklable ``obj`` from every rank, in rank order (``[obj]`` when not distributed)."""
    if not is_distributed():
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself when not distributed)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def wrap_ddp(module: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """Wrap ``module`` (already on ``device``) in DDP; returns it unchanged when not distributed.

    The module is called as ``ddp(rays, background)``, i.e. through ``Method.forward``, which is
    what lets DDP all-reduce (average) gradients during ``backward``. Parameters and buffers are
    broadcast from rank 0 at construction, and buffers again before every forward.
    """
    if not is_distributed():
        return module
    if not any(p.requires_grad for p in module.parameters()):
        raise ValueError("cannot wrap a module without trainable parameters in DistributedDataParallel")
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        module, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )
