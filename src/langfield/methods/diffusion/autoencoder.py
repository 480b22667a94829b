"""The first-stage autoencoder of latent diffusion as a :class:`~langfield.methods.base.Method`.

:class:`VAEMethod` trains a diffusers ``AutoencoderKL`` on preloaded images through the one
:class:`~langfield.training.trainer.Trainer`, with batches from an
:class:`~langfield.data.samplers.IndexSampler` (random image indices of step ``s``, a pure function
of the sampler's seed and ``s``). The images are a frozen, plain attribute (never in the
checkpoint); the posterior sample's noise comes from ``torch.Generator().manual_seed(batch.seed)``,
so a step is a pure function of its index and resuming from a checkpoint is bitwise exact.

Loss: :func:`langfield.generation.objectives.vae_loss` (per-element L1 or MSE + ``kl_weight`` x
per-element KL; no perceptual or adversarial term). After training, measure the latent scale with
:func:`~langfield.generation.objectives.latent_scaling_factor` (stored in ``vae.config``) and
save with ``vae.save_pretrained(dir)``.

Example::

    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64, 64),
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3)
    method = VAEMethod(vae, images)                         # images [N, 3, 32, 32] in [-1, 1] (or uint8)
    Trainer(method, TrainerConfig(max_steps=2000, output_dir=None),
            sampler=IndexSampler(len(images), 32, seed=0)).train()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import torch
from torch import Tensor

from langfield._checks import InputError, check_choice, check_fields
from langfield.configs import check_field_types
from langfield.generation.objectives import RECONSTRUCTION_LOSSES, VAELoss, check_vae_images, vae_loss
from langfield.methods.base import Method
from langfield.methods.diffusion.optim import LR_SCHEDULES, GradClip, adamw_with_schedule
from langfield.types import IndexBatch

__all__ = ["VAEConfig", "VAEMethod"]


@dataclass(frozen=True)
class VAEConfig:
    """Training options of :class:`VAEMethod` (the architecture is the diffusers model's own config).

    Attributes:
        lr: peak AdamW learning rate.
        kl_weight: weight of the per-element KL. The default 1e-5 is about LDM's ``1e-6`` on per-image
            sums for a 4-channel latent at factor 4 (``1e-6 x 12``); see
            :func:`~langfield.generation.objectives.vae_loss`.
        reconstruction: ``"l1"`` or ``"mse"``.
        weight_decay: AdamW's decoupled weight decay.
        adam_betas: AdamW's ``(beta1, beta2)``.
        lr_schedule: ``"cosine"`` (to 0 at the end) or ``"constant"``, after the warm-up.
        warmup: fraction of training spent warming the rate up linearly.
        grad_clip: clip the global gradient norm to this (0 = no clipping).
    """

    lr: float = 1e-3
    kl_weight: float = 1e-5
    reconstruction: str = "l1"
    weight_decay: float = 0.0
    adam_betas: Tuple[float, float] = (0.9, 0.999)
    lr_schedule: str = "cosine"
    warmup: float = 0.02
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        check_field_types(self)
        check_fields(self, positive=("lr",), non_negative=("kl_weight", "weight_decay", "grad_clip"), fraction=("warmup",))
        if not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise InputError(f"VAEConfig.adam_betas: each must lie in [0, 1), got {self.adam_betas}")
        check_choice(self.reconstruction, "VAEConfig.reconstruction", RECONSTRUCTION_LOSSES)
        check_choice(self.lr_schedule, "VAEConfig.lr_schedule", LR_SCHEDULES)


class VAEMethod(Method):
    """Train ``vae`` (a diffusers ``AutoencoderKL``) to reconstruct ``images``.

    Args:
        vae: the autoencoder; its parameters are the only ones optimised (and checkpointed).
        images: ``[N, 3, H, W]`` float in ``[-1, 1]``, or ``uint8`` in ``[0, 255]`` (converted per
            batch, a quarter of the memory); kept where they are (CPU), indexed per step.
        config: :class:`VAEConfig`.

    Batches are :class:`~langfield.types.IndexBatch` (``IndexSampler(len(images), batch_size, seed=...)``).
    Not for DDP (``IndexSampler`` draws the same indices on every rank).
    """

    supports_ddp = False

    def __init__(self, vae: Any, images: Tensor, config: VAEConfig = VAEConfig()) -> None:
        super().__init__()
        if not isinstance(config, VAEConfig):
            raise TypeError(f"VAEMethod: config must be a VAEConfig, got {type(config).__name__}")
        if not isinstance(vae, torch.nn.Module) or not hasattr(getattr(vae, "config", None), "block_out_channels"):
            raise InputError(f"VAEMethod: vae must be a diffusers AutoencoderKL, got {type(vae).__name__}")
        self.config = config
        self.vae = vae
        self.images = check_vae_images(vae, images, "VAEMethod", allow_uint8=True)
        self.clip = GradClip(self.vae.parameters(), config.grad_clip) if config.grad_clip > 0 else None

    def _batch_images(self, batch: IndexBatch) -> Tensor:
        rows = self.images[batch.indices.cpu()]
        device = batch.indices.device
        if rows.dtype == torch.uint8:
            return rows.to(device).float() / 127.5 - 1.0
        return rows.to(device=device, dtype=torch.float32)

    def outputs(self, batch: IndexBatch) -> VAELoss:
        generator = torch.Generator().manual_seed(batch.seed)
        return vae_loss(self.vae, self._batch_images(batch), self.config.kl_weight, generator=generator,
                        reconstruction=self.config.reconstruction)  # fmt: skip

    def losses(self, outputs: VAELoss, batch: IndexBatch) -> Dict[str, Tensor]:
        return {"loss": outputs.loss, "reconstruction": outputs.reconstruction, "kl": outputs.kl}

    def metrics(self, outputs: VAELoss, batch: IndexBatch) -> Dict[str, Tensor]:
        """PSNR of the reconstructions in ``[0, 1]`` units and the last pre-clip gradient norm."""
        target = self._batch_images(batch)
        mse = ((outputs.decoded.detach().float().clamp(-1, 1) - target) / 2).square().mean()
        out = {"psnr": -10.0 * torch.log10(mse)}
        if self.clip is not None and self.clip.last_norm is not None:
            out["grad_norm"] = self.clip.last_norm
        return out

    def optimizers(self, max_steps: int) -> Tuple[List[torch.optim.Optimizer], List[Any]]:
        cfg = self.config
        opt, sched = adamw_with_schedule(
            self.vae.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.adam_betas,
            schedule=cfg.lr_schedule, warmup=cfg.warmup, max_steps=max_steps,
        )  # fmt: skip
        if self.clip is not None:
            self.clip.attach(opt)
        return [opt], [sched]
