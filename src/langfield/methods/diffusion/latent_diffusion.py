"""Text-to-image latent diffusion as a :class:`~langfield.methods.base.Method` for the one Trainer.

:class:`LatentDiffusionMethod` trains a diffusers backbone on pre-encoded latents and their
prompts' token embeddings:

* ``UNet2DConditionModel`` (SD 1.x/2.x layout): ``unet(x_t, t, encoder_hidden_states=...)``;
* ``SD3Transformer2DModel`` (MMDiT): ``transformer(hidden_states=x_t, encoder_hidden_states=...,
  pooled_projections=..., timestep=t)``,

with either objective of :mod:`langfield.generation.objectives`: ``"epsilon"`` (DDPM
epsilon-prediction, Ho et al. 2020 Eq. 14) or ``"rectified_flow"`` (SD3's flow matching with
logit-normal noise levels, Esser et al. 2024 Sec. 2-3.1), and classifier-free dropout of the
prompt (Ho & Salimans 2022). Either backbone trains with either objective: the issue's E2
compares the SD3 transformer under both with the same network, steps, data order and seeds.

Determinism
-----------
Batches are :class:`~langfield.types.IndexBatch` from an
:class:`~langfield.data.samplers.IndexSampler`: which latents a step sees depends only on the
sampler's seed and the step, never on the objective. All further randomness of a step comes from
one ``torch.Generator().manual_seed(batch.seed)``, in this order: the CFG drop draw (``B``
uniforms), the noise ``eps`` (shaped like the latents), then the timesteps / noise levels. So two
runs that differ only in the objective drop the same prompts and add the same ``eps`` at every step
(a paired comparison), and a resumed run continues bitwise exactly (everything else — parameters,
the EMA copy, AdamW moments, the schedule — is in the Trainer's checkpoint).

Conditioning conventions (what sampling must reproduce)
-------------------------------------------------------
* Prompts are given as embeddings (:class:`PromptEmbeddings`), ``[U, T, D]`` for ``U`` distinct prompts,
  and ``caption_ids`` ``[N]`` says which prompt each latent has (default: row ``i`` for latent ``i``),
  so 50k images with a few thousand distinct captions store each caption once.
* ``StableDiffusionPipeline`` and ``StableDiffusion3Pipeline`` never pass an attention mask to the
  backbone, so by default neither is used here either (``use_attention_mask=False``): padded
  tokens are part of the conditioning, as with CLIP in Stable Diffusion, and sampling must pad
  prompts to the same length ``T``. SD3's transformer takes no mask at all.
* The empty prompt (its embeddings padded the same way) replaces ``cfg_dropout`` of the prompts,
  and is what the pipelines use as ``negative_prompt_embeds`` for guidance.
* Latents are scaled as :func:`~langfield.generation.objectives.encode_latents` returns them.
* Sampling schedule: :meth:`LatentDiffusionMethod.sampling_scheduler` (the training
  ``DDPMScheduler``'s config, from which DDIM or DPM-Solver++ are built with ``from_config``; or a
  ``FlowMatchEulerDiscreteScheduler`` with the training ``shift``). Save it beside the backbone.

Optimisation: AdamW (decoupled weight decay), a linear warm-up over ``warmup`` of training then a
cosine decay to 0 (``lr_schedule="cosine"``, the usual choice for training from scratch) or a
constant rate (``"constant"``, as in Stable Diffusion's fine-tuning scripts), the global gradient
norm clipped to ``grad_clip`` (diffusers' training scripts: 1.0). Optional EMA of the weights
(``ema_decay > 0``): ``ema <- d * ema + (1 - d) * w`` after every step with the warm-up
``d = min(ema_decay, (1 + k) / (10 + k))`` at step ``k`` (diffusers' ``EMAModel`` default); the
copy is a submodule (``ema_backbone``), so it is checkpointed, and is the model to sample from.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, UNet2DConditionModel
from torch import Tensor, nn

from langfield._checks import InputError, check_choice, check_fields
from langfield.configs import check_field_types
from langfield.generation.text_conditioning import PromptEmbeddings
from langfield.generation.objectives import DiffusionLoss, classifier_free_dropout, epsilon_loss, rectified_flow_loss
from langfield.methods.base import Method
from langfield.methods.diffusion.optim import LR_SCHEDULES, GradClip, adamw_with_schedule
from langfield.types import IndexBatch

__all__ = ["OBJECTIVES", "LatentDiffusionConfig", "LatentDiffusionMethod", "default_noise_scheduler"]

OBJECTIVES = ("epsilon", "rectified_flow")
Backbone = Union[UNet2DConditionModel, SD3Transformer2DModel]


def default_noise_scheduler(num_train_timesteps: int = 1000) -> DDPMScheduler:
    """Stable Diffusion's training noise schedule: ``scaled_linear`` betas 0.00085..0.012 over 1000
    steps, epsilon prediction, no sample clipping (latents are not confined to ``[-1, 1]``)."""
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="epsilon", clip_sample=False,
    )  # fmt: skip


@dataclass(frozen=True)
class LatentDiffusionConfig:
    """Training options of :class:`LatentDiffusionMethod` (the architecture is the diffusers model's config).

    Attributes:
        objective: ``"epsilon"`` (DDPM) or ``"rectified_flow"`` (SD3).
        lr: peak AdamW learning rate.
        weight_decay: AdamW's decoupled weight decay.
        adam_betas: AdamW's ``(beta1, beta2)``.
        lr_schedule: ``"cosine"`` (to 0 at the end) or ``"constant"``, after the warm-up.
        warmup: fraction of training spent warming the rate up linearly (0 = none).
        grad_clip: clip the global gradient norm to this (0 = no clipping).
        cfg_dropout: probability of replacing a prompt by the empty prompt (Stable Diffusion: 0.1).
        logit_mean, logit_std: rectified flow's logit-normal noise levels (SD3: 0, 1).
        flow_shift: rectified flow's shift of the noise levels (1 = none; SD3 at 1024 px: 3).
        num_train_timesteps: rectified flow's timestep scale (the network sees ``sigma * T``);
            epsilon uses the noise scheduler's own.
        use_attention_mask: pass the prompts' mask to a UNet as ``encoder_attention_mask``. Off by
            default because the diffusers pipelines do not pass one when sampling.
        ema_decay: keep an exponential moving average of the backbone with this decay (0 = none).
        snr_gamma: Min-SNR-gamma loss weighting of the epsilon objective (Hang et al. 2023; see
            :func:`~langfield.generation.objectives.epsilon_loss`; 0 = none, the paper's choice 5).
            Rectified flow refuses it (its logit-normal timesteps already reweight the levels).
    """

    objective: str = "epsilon"
    lr: float = 1e-4
    weight_decay: float = 1e-2
    adam_betas: Tuple[float, float] = (0.9, 0.999)
    lr_schedule: str = "cosine"
    warmup: float = 0.05
    grad_clip: float = 1.0
    cfg_dropout: float = 0.1
    logit_mean: float = 0.0
    logit_std: float = 1.0
    flow_shift: float = 1.0
    num_train_timesteps: int = 1000
    use_attention_mask: bool = False
    ema_decay: float = 0.0
    snr_gamma: float = 0.0

    def __post_init__(self) -> None:
        check_field_types(self)
        check_choice(self.objective, "LatentDiffusionConfig.objective", OBJECTIVES)
        check_choice(self.lr_schedule, "LatentDiffusionConfig.lr_schedule", LR_SCHEDULES)
        check_fields(self, positive=("lr", "logit_std", "flow_shift"), non_negative=("weight_decay", "grad_clip"),
                     fraction=("warmup", "cfg_dropout"), int_min_1=("num_train_timesteps",))  # fmt: skip
        check_fields(self, non_negative=("ema_decay", "snr_gamma"))
        if self.snr_gamma > 0 and self.objective != "epsilon":
            raise InputError(f"LatentDiffusionConfig.snr_gamma: Min-SNR weighting is for the epsilon objective, not {self.objective!r}; set it to 0")
        if self.ema_decay >= 1.0:
            raise InputError(f"LatentDiffusionConfig.ema_decay: must be in [0, 1) (0 = no EMA), got {self.ema_decay}")
        if not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise InputError(f"LatentDiffusionConfig.adam_betas: each must lie in [0, 1), got {self.adam_betas}")


def _check_finite(x: Tensor, where: str, rows: int = 4096) -> None:
    """Refuse NaN/inf in ``x`` (checked ``rows`` leading rows at a time: no full-size copy)."""
    for start in range(0, x.shape[0], rows):
        bad = ~torch.isfinite(x[start : start + rows])
        if bool(bad.any()):
            first = start + int(bad.reshape(bad.shape[0], -1).any(1).nonzero()[0])
            raise InputError(f"{where}: non-finite values (NaN/inf), first in row {first}")


def _text_width(backbone: Backbone) -> int:
    cfg = backbone.config
    if isinstance(backbone, SD3Transformer2DModel):
        return int(cfg.joint_attention_dim)
    if getattr(cfg, "encoder_hid_dim_type", None) is not None and cfg.encoder_hid_dim is not None:
        return int(cfg.encoder_hid_dim)
    width = cfg.cross_attention_dim
    if isinstance(width, (tuple, list)):
        if len(set(width)) != 1:
            raise InputError(f"LatentDiffusionMethod: a UNet with per-block cross_attention_dim {tuple(width)} is not supported")
        width = width[0]
    return int(width)


def _check_backbone(backbone: Any, latents: Tensor) -> None:
    if not isinstance(backbone, (UNet2DConditionModel, SD3Transformer2DModel)):
        raise InputError(
            "LatentDiffusionMethod: backbone must be a diffusers UNet2DConditionModel or SD3Transformer2DModel, "
            f"got {type(backbone).__name__}"
        )
    cfg = backbone.config
    name = type(backbone).__name__
    channels, (h, w) = latents.shape[1], latents.shape[2:]
    out_channels = cfg.out_channels if cfg.out_channels is not None else cfg.in_channels
    if channels != cfg.in_channels or out_channels != cfg.in_channels:
        raise InputError(
            f"LatentDiffusionMethod: latents have {channels} channels; the {name} takes {cfg.in_channels} and returns "
            f"{out_channels} "
            "(they must all agree: encode with the autoencoder whose latent_channels the backbone was built for)"
        )
    if isinstance(backbone, UNet2DConditionModel):
        if cfg.addition_embed_type is not None or cfg.class_embed_type is not None:
            raise InputError(
                f"LatentDiffusionMethod: UNets with addition_embed_type={cfg.addition_embed_type!r} / class_embed_type="
                f"{cfg.class_embed_type!r} (SDXL-style micro-conditioning) need extra inputs this method does not provide"
            )
        factor = 2 ** (len(cfg.block_out_channels) - 1)
        if h % factor or w % factor:
            raise InputError(f"LatentDiffusionMethod: latent size {h}x{w} must be divisible by the UNet's downsampling {factor}")
    else:
        patch = int(cfg.patch_size)
        if h % patch or w % patch:
            raise InputError(f"LatentDiffusionMethod: latent size {h}x{w} must be divisible by the patch_size {patch}")
        limit = cfg.pos_embed_max_size
        if limit is not None and max(h, w) // patch > limit:
            raise InputError(
                f"LatentDiffusionMethod: latents {h}x{w} give {max(h, w) // patch} patches per side, over the transformer's "
                f"pos_embed_max_size {limit}"
            )


def _check_prompts(prompts: Any, backbone: Backbone, where: str, *, num: Optional[int]) -> PromptEmbeddings:
    if not isinstance(prompts, PromptEmbeddings):
        raise InputError(f"LatentDiffusionMethod: {where} must be a PromptEmbeddings, got {type(prompts).__name__}")
    emb = prompts.embeds
    if not isinstance(emb, Tensor) or emb.ndim != 3 or not emb.is_floating_point():
        got = getattr(emb, "shape", emb)
        raise InputError(f"LatentDiffusionMethod: {where}.embeds must be a float tensor [U, T, D], got {got}")
    width = _text_width(backbone)
    if emb.shape[2] != width:
        name = type(backbone).__name__
        raise InputError(f"LatentDiffusionMethod: {where}.embeds have width {emb.shape[2]}, the {name} expects {width}")
    if num is not None and emb.shape[0] != num:
        raise InputError(f"LatentDiffusionMethod: {where}.embeds hold {emb.shape[0]} prompts, expected {num}")
    if isinstance(backbone, SD3Transformer2DModel):
        pooled, dim = prompts.pooled, int(backbone.config.pooled_projection_dim)
        if tuple(pooled.shape) != (emb.shape[0], dim):
            got = list(pooled.shape)
            raise InputError(f"LatentDiffusionMethod: {where}.pooled must be [{emb.shape[0]}, {dim}] for SD3, got {got}")
    _check_finite(emb, f"LatentDiffusionMethod: {where}.embeds")
    return prompts


def check_latents(latents: Any, where: str) -> None:
    """Refuse anything but a finite float tensor ``[N, C, h, w]`` with ``N >= 1`` (``where`` names the
    caller in errors)."""
    if not isinstance(latents, Tensor) or latents.ndim != 4 or not latents.is_floating_point() or latents.shape[0] < 1:
        raise InputError(f"{where}: latents must be a float tensor [N, C, h, w], got {getattr(latents, 'shape', latents)}")
    _check_finite(latents, f"{where}: latents")


def check_noise_scheduler(noise_scheduler: Optional[DDPMScheduler], where: str) -> DDPMScheduler:
    """The epsilon objective's training scheduler: ``noise_scheduler`` checked (a ``DDPMScheduler`` with
    ``prediction_type="epsilon"``), or :func:`default_noise_scheduler` when ``None``."""
    if noise_scheduler is None:
        return default_noise_scheduler()
    if not isinstance(noise_scheduler, DDPMScheduler) or noise_scheduler.config.prediction_type != "epsilon":
        raise InputError(f"{where}: noise_scheduler must be a DDPMScheduler with prediction_type='epsilon'")
    return noise_scheduler


def check_caption_ids(caption_ids: Optional[Tensor], num_latents: int, num_prompts: int, where: str) -> Tensor:
    """``[N]`` integer prompt index of every latent: ``caption_ids`` checked, or ``arange(N)`` when
    ``None`` (then there must be one prompt per latent). ``where`` names the caller in errors."""
    if caption_ids is None:
        if num_prompts != num_latents:
            raise InputError(
                f"{where}: {num_latents} latents but {num_prompts} prompts; pass caption_ids [N] "
                "to say which prompt each latent has"
            )
        return torch.arange(num_latents)
    if not isinstance(caption_ids, Tensor) or caption_ids.shape != (num_latents,) or caption_ids.is_floating_point():
        got = getattr(caption_ids, "shape", caption_ids)
        raise InputError(f"{where}: caption_ids must be [{num_latents}] integers, got {got}")
    lo, hi = int(caption_ids.min()), int(caption_ids.max())
    if lo < 0 or hi >= num_prompts:
        raise InputError(f"{where}: caption_ids must lie in [0, {num_prompts}), got [{lo}, {hi}]")
    return caption_ids


class LatentDiffusionMethod(Method):
    """Train ``backbone`` to denoise ``latents`` given their prompts (see the module docstring).

    Args:
        backbone: a diffusers ``UNet2DConditionModel`` or ``SD3Transformer2DModel``; its
            parameters are the ones optimised.
        latents: ``[N, C, h, w]`` pre-encoded, scaled latents
            (:func:`~langfield.generation.objectives.encode_latents`); kept where they are (CPU).
        prompts: :class:`~langfield.generation.text_conditioning.PromptEmbeddings` of ``U`` prompts.
        empty: :class:`PromptEmbeddings` of the empty prompt ``""`` (``[1, T, D]``, padded
            like the prompts); may be ``None`` only when ``cfg_dropout == 0``.
        caption_ids: ``[N]`` int64, the prompt row of each latent (default ``arange(N)``, ``U == N``).
        config: :class:`LatentDiffusionConfig`.
        noise_scheduler: the ``DDPMScheduler`` of the epsilon objective (default
            :func:`default_noise_scheduler`); ignored by rectified flow.

    Batches are :class:`~langfield.types.IndexBatch` over the ``N`` latents. Not for DDP
    (``IndexSampler`` draws the same indices on every rank).
    """

    supports_ddp = False

    def __init__(
        self,
        backbone: Backbone,
        latents: Tensor,
        prompts: PromptEmbeddings,
        empty: Optional[PromptEmbeddings],
        *,
        caption_ids: Optional[Tensor] = None,
        config: LatentDiffusionConfig = LatentDiffusionConfig(),
        noise_scheduler: Optional[DDPMScheduler] = None,
    ) -> None:
        super().__init__()
        if not isinstance(config, LatentDiffusionConfig):
            raise TypeError(f"LatentDiffusionMethod: config must be a LatentDiffusionConfig, got {type(config).__name__}")
        check_latents(latents, "LatentDiffusionMethod")
        _check_backbone(backbone, latents)
        prompts = _check_prompts(prompts, backbone, "prompts", num=None)
        caption_ids = check_caption_ids(caption_ids, latents.shape[0], prompts.embeds.shape[0], "LatentDiffusionMethod")
        if empty is None:
            if config.cfg_dropout > 0:
                raise InputError("LatentDiffusionMethod: cfg_dropout > 0 needs the empty prompt's embeddings (empty=...)")
        else:
            empty = _check_prompts(empty, backbone, "empty", num=1)
            if empty.embeds.shape[1] != prompts.embeds.shape[1]:
                raise InputError(
                    f"LatentDiffusionMethod: the empty prompt has {empty.embeds.shape[1]} tokens, the prompts "
                    f"{prompts.embeds.shape[1]}; pad both to the same length"
                )
        if config.use_attention_mask and isinstance(backbone, SD3Transformer2DModel):
            raise InputError("LatentDiffusionConfig.use_attention_mask needs a UNet backbone")
        noise_scheduler = check_noise_scheduler(noise_scheduler, "LatentDiffusionMethod")

        self.config = config
        self.backbone = backbone
        self.ema_backbone: Optional[nn.Module] = None
        if config.ema_decay > 0:
            self.ema_backbone = copy.deepcopy(backbone).requires_grad_(False)
        # Frozen inputs: plain attributes (not buffers), so checkpoints hold only parameters.
        self.latents, self.prompts, self.empty, self.caption_ids = latents, prompts, empty, caption_ids.long().cpu()
        self.noise_scheduler = noise_scheduler
        self.is_transformer = isinstance(backbone, SD3Transformer2DModel)
        self.clip = GradClip(self.backbone.parameters(), config.grad_clip) if config.grad_clip > 0 else None

    # ------------------------------------------------------------------ the network

    def predict(self, noisy: Tensor, timesteps: Tensor, cond: PromptEmbeddings, *, backbone: Optional[nn.Module] = None) -> Tensor:
        """The backbone's output for ``noisy`` ``[B, C, h, w]`` at ``timesteps`` ``[B]`` under ``cond`` (batched)."""
        net = self.backbone if backbone is None else backbone
        if self.is_transformer:
            return net(hidden_states=noisy, encoder_hidden_states=cond.embeds, pooled_projections=cond.pooled,
                       timestep=timesteps).sample  # fmt: skip
        mask = cond.attention_mask if self.config.use_attention_mask else None
        return net(noisy, timesteps, encoder_hidden_states=cond.embeds, encoder_attention_mask=mask).sample

    def sampling_scheduler(self) -> Union[DDPMScheduler, FlowMatchEulerDiscreteScheduler]:
        """A fresh scheduler matching training: the epsilon objective's ``DDPMScheduler`` (build DDIM /
        DPM-Solver++ from its config) or ``FlowMatchEulerDiscreteScheduler(num_train_timesteps, shift)``."""
        if self.config.objective == "epsilon":
            return DDPMScheduler.from_config(self.noise_scheduler.config)
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=self.config.num_train_timesteps, shift=self.config.flow_shift)

    # ------------------------------------------------------------------ Method

    def _conditioning(self, batch: IndexBatch, generator: torch.Generator) -> PromptEmbeddings:
        rows = self.caption_ids[batch.indices.cpu()]
        device = batch.indices.device

        def take(x: Tensor) -> Tensor:
            return x[rows].to(device)

        emb, mask, pooled = take(self.prompts.embeds).float(), take(self.prompts.attention_mask), take(self.prompts.pooled).float()
        if self.config.cfg_dropout > 0:
            e = self.empty
            out = classifier_free_dropout(
                emb, e.embeds[0].float(), self.config.cfg_dropout, generator=generator,
                mask=mask, empty_mask=e.attention_mask[0], pooled=pooled, empty_pooled=e.pooled[0].float(),
            )  # fmt: skip
            emb, mask, pooled = out.embeds, out.mask, out.pooled
        return PromptEmbeddings(emb, mask, pooled)

    def outputs(self, batch: IndexBatch) -> DiffusionLoss:
        generator = torch.Generator().manual_seed(batch.seed)
        cond = self._conditioning(batch, generator)
        x0 = self.latents[batch.indices.cpu()].to(device=batch.indices.device, dtype=torch.float32)
        cfg = self.config
        if cfg.objective == "epsilon":
            return epsilon_loss(self.predict, x0, cond, scheduler=self.noise_scheduler, generator=generator, snr_gamma=cfg.snr_gamma)
        return rectified_flow_loss(self.predict, x0, cond, generator=generator, logit_normal=(cfg.logit_mean, cfg.logit_std),
                                   shift=cfg.flow_shift, num_train_timesteps=cfg.num_train_timesteps)  # fmt: skip

    def losses(self, outputs: DiffusionLoss, batch: IndexBatch) -> Dict[str, Tensor]:
        return {"loss": outputs.loss}

    def metrics(self, outputs: DiffusionLoss, batch: IndexBatch) -> Dict[str, Tensor]:
        """The last pre-clip gradient norm (when clipping is on)."""
        if self.clip is not None and self.clip.last_norm is not None:
            return {"grad_norm": self.clip.last_norm}
        return {}

    def optimizers(self, max_steps: int) -> Tuple[List[torch.optim.Optimizer], List[Any]]:
        cfg = self.config
        opt, sched = adamw_with_schedule(
            self.backbone.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.adam_betas,
            schedule=cfg.lr_schedule, warmup=cfg.warmup, max_steps=max_steps,
        )  # fmt: skip
        if self.clip is not None:
            self.clip.attach(opt)
        return [opt], [sched]

    @torch.no_grad()
    def after_train_step(self, step: int, outputs: Any) -> None:
        """Update the EMA copy (when ``ema_decay > 0``) with the warm-up ``min(decay, (1 + step) / (10 + step))``."""
        if self.ema_backbone is None:
            return
        decay = min(self.config.ema_decay, (1.0 + step) / (10.0 + step))
        for p_ema, p in zip(self.ema_backbone.parameters(), self.backbone.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - decay)
        for b_ema, b in zip(self.ema_backbone.buffers(), self.backbone.buffers()):
            b_ema.copy_(b)
