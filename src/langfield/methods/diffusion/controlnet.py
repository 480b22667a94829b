"""Training a control adapter (ControlNet, ControlNet-XS, ControlNeXt) as a Method for the one Trainer.

:class:`ControlNetMethod` trains the :meth:`~langfield.generation.control.ControlAdapter.trainable_parameters`
of any adapter of :mod:`langfield.generation.control` on pre-encoded latents, their
conditions and their prompts' embeddings; the VAE (latents are given), the base denoiser and the
text model (embeddings are given) stay frozen. The objective is the base's own, with the
adapter's prediction ``adapter.predict(x_t, t, prompt, condition, scale)`` as the network
(ControlNet paper, Zhang et al. 2023, Eq. 5: the same objective as the base, conditioned on the
task condition ``c_f``):

* UNet adapters (ControlNet, ControlNet-XS, ControlNeXt): DDPM epsilon prediction (Ho et al.
  2020, Eq. 14) through :func:`~langfield.generation.objectives.epsilon_loss`; conditions are
  images ``[N, Cc, H, W]``.
* SD3 ControlNet: rectified flow with logit-normal noise levels (Esser et al. 2024, Sec. 2-3.1)
  through :func:`~langfield.generation.objectives.rectified_flow_loss`; conditions are the
  VAE-encoded control images ``[N, C, h, w]`` (scaled and shifted like the latents), which is
  what ``StableDiffusion3ControlNetPipeline`` feeds the net at sampling time.

* **Empty prompts**: ``empty_prompt_rate`` of the prompts (paper Sec. 3.3 and 4: 50 %) are
  replaced by the empty prompt, so the control learns to carry the semantics of the condition
  itself (and classifier-free guidance still has an unconditional branch).
* **Optimiser**: AdamW, constant rate after an optional warm-up, global gradient norm clipped to
  ``grad_clip`` (1.0, as diffusers' ``train_controlnet.py``). ``lr``: the default 1e-5 is the
  rate for fine-tuning a ControlNet on Stable Diffusion (diffusers' README; its script's default
  is 5e-6); the toy world's small models train from a random hint encoder in a few thousand steps
  and use ~1e-4 .. 1e-3 (the tests: 2e-3 for 20 steps).
* **Determinism**: like :class:`~langfield.methods.diffusion.latent_diffusion.LatentDiffusionMethod`,
  every random draw of a step comes from ``torch.Generator().manual_seed(batch.seed)`` in the
  order: the empty-prompt draw (``B`` uniforms), the noise ``eps``, the timesteps (noise levels). A resumed run
  (the Trainer checkpoints the parameters and AdamW's moments) continues bitwise exactly.

Batches are :class:`~langfield.types.IndexBatch` over the ``N`` training examples (an
:class:`~langfield.data.samplers.IndexSampler`). Not for DDP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
from diffusers import DDPMScheduler
from torch import Tensor

from langfield._checks import InputError, check_choice, check_fields
from langfield.configs import check_field_types
from langfield.generation.control import ControlAdapter
from langfield.generation.objectives import DiffusionLoss, classifier_free_dropout, epsilon_loss, rectified_flow_loss
from langfield.generation.text_conditioning import PromptEmbeddings
from langfield.methods.base import Method
from langfield.methods.diffusion.latent_diffusion import check_caption_ids, check_latents, check_noise_scheduler
from langfield.methods.diffusion.optim import LR_SCHEDULES, GradClip, adamw_with_schedule
from langfield.types import IndexBatch

__all__ = ["ControlNetMethod", "ControlTrainingConfig"]


@dataclass(frozen=True)
class ControlTrainingConfig:
    """Training options of :class:`ControlNetMethod` (the architecture is the adapter's).

    Attributes:
        lr: AdamW learning rate (1e-5: Stable Diffusion fine-tuning; toy models ~1e-4 .. 1e-3).
        weight_decay: AdamW's decoupled weight decay.
        adam_betas: AdamW's ``(beta1, beta2)``.
        lr_schedule: ``"constant"`` (ControlNet's scripts) or ``"cosine"``, after the warm-up.
        warmup: fraction of training spent warming the rate up linearly.
        grad_clip: clip the global gradient norm of the trainable parameters (0 = no clipping).
        empty_prompt_rate: probability of replacing a prompt by the empty prompt (paper: 0.5).
        conditioning_scale: the control strength used while training.
        logit_mean, logit_std, flow_shift, num_train_timesteps: rectified flow's noise levels
            (SD3 adapters only; see :class:`~langfield.methods.diffusion.latent_diffusion.LatentDiffusionConfig`).
    """

    lr: float = 1e-5
    weight_decay: float = 1e-2
    adam_betas: Tuple[float, float] = (0.9, 0.999)
    lr_schedule: str = "constant"
    warmup: float = 0.0
    grad_clip: float = 1.0
    empty_prompt_rate: float = 0.5
    conditioning_scale: float = 1.0
    logit_mean: float = 0.0
    logit_std: float = 1.0
    flow_shift: float = 1.0
    num_train_timesteps: int = 1000

    def __post_init__(self) -> None:
        check_field_types(self)
        check_choice(self.lr_schedule, "ControlTrainingConfig.lr_schedule", LR_SCHEDULES)
        check_fields(self, positive=("lr", "conditioning_scale"), non_negative=("weight_decay", "grad_clip"),
                     fraction=("warmup", "empty_prompt_rate"))  # fmt: skip
        check_fields(self, positive=("logit_std", "flow_shift"), int_min_1=("num_train_timesteps",))
        if not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise InputError(f"ControlTrainingConfig.adam_betas: each must lie in [0, 1), got {self.adam_betas}")


def _check_prompts(prompts: Any, width: int, pooled: Optional[int], where: str) -> PromptEmbeddings:
    if not isinstance(prompts, PromptEmbeddings):
        raise InputError(f"ControlNetMethod: {where} must be a PromptEmbeddings, got {type(prompts).__name__}")
    emb = prompts.embeds
    if emb.ndim != 3 or emb.shape[2] != width:
        raise InputError(f"ControlNetMethod: {where}.embeds must be [U, T, {width}] (the base's text width: cross_attention_dim / joint_attention_dim), got {tuple(emb.shape)}")
    if pooled is not None and tuple(prompts.pooled.shape) != (emb.shape[0], pooled):
        raise InputError(f"ControlNetMethod: {where}.pooled must be [{emb.shape[0]}, {pooled}] for SD3, got {list(prompts.pooled.shape)}")
    if not bool(torch.isfinite(emb).all()):
        raise InputError(f"ControlNetMethod: {where}.embeds hold non-finite values")
    return prompts


class ControlNetMethod(Method):
    """Train ``adapter``'s control on ``(latents, conditions, prompts)`` (see the module docstring).

    Args:
        adapter: a :class:`~langfield.generation.control.ControlAdapter` (ControlNet,
            ControlNet-XS, ControlNeXt, SD3 ControlNet); its trainable parameters are the ones optimised.
        latents: ``[N, C, h, w]`` pre-encoded, scaled latents (kept where they are).
        conditions: UNet adapters: images ``[N, Cc, h * f, w * f]``, uint8 (``/ 255``) or float in
            ``[0, 1]``; SD3: encoded control images ``[N, C', h, w]`` (float).
        prompts: :class:`PromptEmbeddings` of ``U`` prompts; ``caption_ids`` ``[N]`` picks each
            example's row (default ``arange(N)``).
        empty: the empty prompt's embeddings ``[1, T, D]``; may be ``None`` only with
            ``empty_prompt_rate == 0``.
        config: :class:`ControlTrainingConfig`.
        noise_scheduler: the base's training ``DDPMScheduler`` (default: Stable Diffusion's); unused by SD3.
    """

    supports_ddp = False

    def __init__(
        self,
        adapter: ControlAdapter,
        latents: Tensor,
        conditions: Tensor,
        prompts: PromptEmbeddings,
        empty: Optional[PromptEmbeddings],
        *,
        caption_ids: Optional[Tensor] = None,
        config: ControlTrainingConfig = ControlTrainingConfig(),
        noise_scheduler: Optional[DDPMScheduler] = None,
    ) -> None:
        super().__init__()
        if not isinstance(config, ControlTrainingConfig):
            raise InputError(f"ControlNetMethod: config must be a ControlTrainingConfig, got {type(config).__name__}")
        if not isinstance(adapter, ControlAdapter):
            raise InputError(f"ControlNetMethod: adapter must be a ControlAdapter (controlnet, controlnet_xs, controlnext, sd3_controlnet), got {type(adapter).__name__}")
        check_latents(latents, "ControlNetMethod")
        n = latents.shape[0]
        if not isinstance(conditions, Tensor) or conditions.ndim != 4 or conditions.shape[0] != n:
            raise InputError(f"ControlNetMethod: conditions must be [{n}, Cc, H, W] (one per latent), got {getattr(conditions, 'shape', conditions)}")
        self.is_flow = adapter.condition_space == "latent"
        if self.is_flow:
            if not conditions.is_floating_point() or not bool(torch.isfinite(conditions).all()):
                raise InputError("ControlNetMethod: conditions of an SD3 adapter are encoded latents: a finite float tensor")
        elif conditions.dtype != torch.uint8:
            if not conditions.is_floating_point() or bool((conditions < 0).any()) or bool((conditions > 1).any()):
                raise InputError("ControlNetMethod: conditions must be uint8 or float in [0, 1]")
        adapter.check_condition(conditions[:1].float(), latents[:1], "ControlNetMethod: conditions")
        cfg = adapter.base.config
        width = int(cfg.joint_attention_dim if self.is_flow else cfg.cross_attention_dim)
        pooled = int(cfg.pooled_projection_dim) if self.is_flow else None
        prompts = _check_prompts(prompts, width, pooled, "prompts")
        caption_ids = check_caption_ids(caption_ids, n, prompts.embeds.shape[0], "ControlNetMethod")
        if empty is None:
            if config.empty_prompt_rate > 0:
                raise InputError("ControlNetMethod: empty_prompt_rate > 0 needs the empty prompt's embeddings (empty=...)")
        else:
            empty = _check_prompts(empty, width, pooled, "empty")
            if empty.embeds.shape[:2] != (1, prompts.embeds.shape[1]):
                raise InputError(f"ControlNetMethod: empty must be [1, {prompts.embeds.shape[1]}, D], got {tuple(empty.embeds.shape)}")
        noise_scheduler = check_noise_scheduler(noise_scheduler, "ControlNetMethod")
        self.config = config
        self.adapter = adapter
        # Frozen inputs: plain attributes (not buffers), so checkpoints hold only parameters.
        self.latents, self.conditions, self.prompts, self.empty = latents, conditions, prompts, empty
        self.caption_ids = caption_ids.long().cpu()
        self.noise_scheduler = noise_scheduler
        self.clip = GradClip(adapter.trainable_parameters(), config.grad_clip) if config.grad_clip > 0 else None

    def _condition(self, rows: Tensor, device: torch.device) -> Tensor:
        c = self.conditions[rows].to(device)
        return c.float() / 255.0 if c.dtype == torch.uint8 else c.float()

    def _prompts(self, rows: Tensor, device: torch.device, generator: torch.Generator) -> PromptEmbeddings:
        ids = self.caption_ids[rows]
        emb = self.prompts.embeds[ids].to(device).float()
        mask = self.prompts.attention_mask[ids].to(device)
        pooled = self.prompts.pooled[ids].to(device).float()
        if self.config.empty_prompt_rate > 0:
            e = self.empty
            out = classifier_free_dropout(emb, e.embeds[0].float(), self.config.empty_prompt_rate, generator=generator, mask=mask,
                                          empty_mask=e.attention_mask[0], pooled=pooled, empty_pooled=e.pooled[0].float())  # fmt: skip
            emb, mask, pooled = out.embeds, out.mask, out.pooled
        return PromptEmbeddings(emb, mask, pooled)

    def outputs(self, batch: IndexBatch) -> DiffusionLoss:
        generator = torch.Generator().manual_seed(batch.seed)
        rows = batch.indices.cpu()
        device = batch.indices.device
        cond = self._prompts(rows, device, generator)
        condition = self._condition(rows, device)
        x0 = self.latents[rows].to(device=device, dtype=torch.float32)
        scale = self.config.conditioning_scale

        def model_fn(x: Tensor, t: Tensor, prompt: PromptEmbeddings) -> Tensor:
            return self.adapter.predict(x, t, prompt, condition, scale)

        if self.is_flow:
            cfg = self.config
            return rectified_flow_loss(model_fn, x0, cond, generator=generator, logit_normal=(cfg.logit_mean, cfg.logit_std),
                                       shift=cfg.flow_shift, num_train_timesteps=cfg.num_train_timesteps)  # fmt: skip
        return epsilon_loss(model_fn, x0, cond, scheduler=self.noise_scheduler, generator=generator)

    def losses(self, outputs: DiffusionLoss, batch: IndexBatch) -> Dict[str, Tensor]:
        return {"loss": outputs.loss}

    def metrics(self, outputs: DiffusionLoss, batch: IndexBatch) -> Dict[str, Tensor]:
        if self.clip is not None and self.clip.last_norm is not None:
            return {"grad_norm": self.clip.last_norm}
        return {}

    def optimizers(self, max_steps: int) -> Tuple[List[torch.optim.Optimizer], List[Any]]:
        cfg = self.config
        opt, sched = adamw_with_schedule(self.adapter.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                         betas=cfg.adam_betas, schedule=cfg.lr_schedule, warmup=cfg.warmup, max_steps=max_steps)  # fmt: skip
        if self.clip is not None:
            self.clip.attach(opt)
        return [opt], [sched]
