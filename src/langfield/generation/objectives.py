"""Diffusion training objectives as pure functions: modules and tensors in, a loss out.

Nothing here owns an optimiser, a data set or a training loop (those are the Trainer's and the
``methods.diffusion`` objectives'); every random draw comes from the ``generator`` the caller
passes, so one training step is a pure function of its seed (``torch.Generator().manual_seed(s)``).
The functions only rely on the documented interfaces of diffusers objects (``scheduler.add_noise``
and ``scheduler.config``; ``vae.encode(x).latent_dist`` with ``mean`` / ``logvar``,
``vae.decode(z).sample``, ``vae.config``), so this module imports torch alone.

Conventions
-----------
* Latents ``x0`` are ``[B, C, h, w]`` (already scaled, see :func:`encode_latents`); images for the
  autoencoder are ``[B, 3, H, W]`` in ``[-1, 1]``.
* ``model_fn(noisy [B, C, h, w], timesteps [B], cond) -> prediction [B, C, h, w]``: the network
  with its conditioning bound (``cond`` is passed through untouched: text embeddings, a mask...).
* Random draws happen on the generator's device in float32 and are then moved to the latents'
  device and dtype, so a CPU generator gives the same step on the CPU and on CUDA. Order within
  one call: first the noise ``eps`` (same shape as ``x0``), then the timesteps. Hence
  :func:`epsilon_loss` and :func:`rectified_flow_loss` called with equally seeded generators see
  the *same* noise (a paired comparison of the two objectives).

Objectives
----------
* :func:`epsilon_loss` — DDPM's simplified objective (Ho et al. 2020, "Denoising Diffusion
  Probabilistic Models", Eq. 14): ``t ~ U{0, ..., T-1}``, ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``
  (``scheduler.add_noise``), loss ``|| eps - eps_theta(x_t, t) ||^2``.
* :func:`rectified_flow_loss` — flow matching on the straight path (Liu et al. 2022, "Flow Straight
  and Fast"; Lipman et al. 2022) as trained for Stable Diffusion 3 (Esser et al. 2024, "Scaling
  Rectified Flow Transformers", Sec. 2 and 3.1): ``x_t = (1 - sigma) x0 + sigma eps``, the network
  predicts the velocity ``v = eps - x0``, with ``sigma`` drawn logit-normal (``sigma = sigmoid(n)``,
  ``n ~ N(m, s^2)``; SD3 uses ``m = 0, s = 1``). The network receives ``timestep = sigma *
  num_train_timesteps``, which is what diffusers' ``FlowMatchEulerDiscreteScheduler`` passes at
  sampling time (its ``timesteps = sigmas * num_train_timesteps``; its Euler step
  ``x <- x + (sigma_next - sigma) * v`` integrates exactly this velocity from ``sigma = 1`` to 0).
* :func:`classifier_free_dropout` — replace a random fraction of the prompts by the empty prompt
  (Ho & Salimans 2022, "Classifier-Free Diffusion Guidance", Sec. 3.2; 10 % in Stable Diffusion).
* :func:`vae_loss` — the first-stage autoencoder of latent diffusion (Rombach et al. 2022, Sec. 3.1
  and App. G): reconstruction + a small KL towards ``N(0, I)``; no perceptual or GAN term.
* :func:`latent_scaling_factor` — ``1 / std`` of the latents (Rombach et al. 2022, Sec. 4.3.2
  "rescale the latent space to unit variance"; SD's 0.18215 was measured this way), stored in
  ``vae.config.scaling_factor`` where the diffusers pipelines read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from langfield._checks import InputError, check_choice, check_finite_number, check_int_range

__all__ = [
    "CFGDropout",
    "DiffusionLoss",
    "ModelFn",
    "RECONSTRUCTION_LOSSES",
    "VAELoss",
    "check_vae_images",
    "classifier_free_dropout",
    "encode_latents",
    "epsilon_loss",
    "latent_scaling_factor",
    "rectified_flow_loss",
    "sample_logit_normal_sigmas",
    "shift_sigmas",
    "vae_downsampling_factor",
    "vae_loss",
]

#: ``model_fn(noisy [B, C, h, w], timesteps [B], cond) -> prediction [B, C, h, w]``.
ModelFn = Callable[[Tensor, Tensor, Any], Tensor]

RECONSTRUCTION_LOSSES = ("l1", "mse")


@dataclass
class DiffusionLoss:
    """One evaluation of a diffusion objective.

    Attributes:
        loss: ``[]`` mean squared error between ``prediction`` and ``target`` (float32).
        prediction: ``[B, C, h, w]`` the network output.
        target: ``[B, C, h, w]`` ``eps`` (epsilon objective) or ``eps - x0`` (rectified flow).
        noisy: ``[B, C, h, w]`` the network input ``x_t``.
        noise: ``[B, C, h, w]`` the drawn ``eps``.
        timesteps: ``[B]`` what the network received as its timestep (int64 ``t`` for epsilon,
            float32 ``sigma * num_train_timesteps`` for rectified flow).
        sigmas: ``[B]`` the flow's noise level ``sigma`` in ``(0, 1)``; ``None`` for epsilon.
    """

    loss: Tensor
    prediction: Tensor
    target: Tensor
    noisy: Tensor
    noise: Tensor
    timesteps: Tensor
    sigmas: Optional[Tensor] = None


@dataclass
class CFGDropout:
    """Conditioning after :func:`classifier_free_dropout`.

    Attributes:
        embeds: ``[B, T, D]`` token embeddings, dropped rows replaced by the empty prompt's.
        mask: ``[B, T]`` attention mask (same dtype as given) or ``None``.
        pooled: ``[B, P]`` pooled embedding or ``None``.
        dropped: ``[B]`` bool, ``True`` where the empty prompt was put in.
    """

    embeds: Tensor
    mask: Optional[Tensor]
    pooled: Optional[Tensor]
    dropped: Tensor


@dataclass
class VAELoss:
    """One evaluation of :func:`vae_loss`.

    Attributes:
        loss: ``[]`` ``reconstruction + kl_weight * kl``.
        reconstruction: ``[]`` mean absolute (``"l1"``) or squared (``"mse"``) error per pixel
            channel, images in ``[-1, 1]``.
        kl: ``[]`` KL divergence of the posterior from ``N(0, I)``, mean per latent element.
        decoded: ``[B, 3, H, W]`` reconstruction.
        latents: ``[B, C, h, w]`` the posterior sample that was decoded (unscaled).
    """

    loss: Tensor
    reconstruction: Tensor
    kl: Tensor
    decoded: Tensor
    latents: Tensor


# --------------------------------------------------------------------------- helpers


def _check_generator(generator: Any, where: str) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise InputError(
            f"{where}: generator must be a seeded torch.Generator (e.g. torch.Generator().manual_seed(seed)), "
            f"got {type(generator).__name__}"
        )
    return generator


def _check_latents(x: Any, where: str) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"{where}: expected a float tensor [B, C, h, w], got {shape}")
    if x.shape[0] < 1:
        raise InputError(f"{where}: empty batch")
    return x


def _randn_like(x: Tensor, generator: torch.Generator) -> Tensor:
    eps = torch.randn(x.shape, generator=generator, device=generator.device, dtype=torch.float32)
    return eps.to(device=x.device, dtype=x.dtype)


def _mse(prediction: Any, target: Tensor, where: str) -> Tensor:
    if not isinstance(prediction, Tensor) or prediction.shape != target.shape:
        got = tuple(prediction.shape) if isinstance(prediction, Tensor) else type(prediction).__name__
        raise InputError(f"{where}: model_fn must return a tensor shaped like the latents {tuple(target.shape)}, got {got}")
    return F.mse_loss(prediction.float(), target.float())


# --------------------------------------------------------------------------- epsilon prediction


def epsilon_loss(
    model_fn: ModelFn,
    latents: Tensor,
    cond: Any,
    *,
    scheduler: Any,
    generator: torch.Generator,
    noise: Optional[Tensor] = None,
    timesteps: Optional[Tensor] = None,
    snr_gamma: float = 0.0,
) -> DiffusionLoss:
    """DDPM epsilon-prediction loss (Ho et al. 2020, Eq. 14, the "simple" objective).

    With ``snr_gamma > 0`` each sample's squared error is weighted by Min-SNR-gamma (Hang et al.,
    "Efficient Diffusion Training via Min-SNR Weighting Strategy", ICCV 2023, Sec. 3.4: for
    epsilon prediction the weight is ``min(SNR(t), gamma) / SNR(t)`` with
    ``SNR(t) = abar_t / (1 - abar_t)``; the paper's default ``gamma = 5``): the loss is
    ``mean_i w_i * mean(|eps_hat_i - eps_i|^2)``. It stops the many low-noise steps, where
    predicting ``eps`` is easy and its gradient large, from dominating; the paper reports about
    3.4x faster convergence. ``0`` (default) is the plain objective.

    Args:
        model_fn: ``(x_t [B, C, h, w], t [B] int64, cond) -> eps_hat [B, C, h, w]``.
        latents: ``[B, C, h, w]`` clean (scaled) latents ``x0``.
        cond: passed to ``model_fn`` unchanged.
        scheduler: a diffusers ``DDPMScheduler`` (any scheduler with ``add_noise`` and
            ``config.num_train_timesteps``) with ``prediction_type="epsilon"``; its betas define
            ``abar_t``. Sample with the same config (e.g. ``DDIMScheduler.from_config(...)``).
        generator: the source of every random draw (first ``eps``, then ``t``).
        noise, timesteps: fix ``eps`` ``[B, C, h, w]`` and/or ``t`` ``[B]`` instead of drawing them
            (tests; the remaining draws still come from ``generator`` in the same order).
        snr_gamma: Min-SNR-gamma weighting (``0`` = none, see above).

    Returns:
        :class:`DiffusionLoss` with ``target = eps`` and ``noisy = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``.

    Example (an ideal denoiser, which knows ``x0``, has zero loss):

    >>> from diffusers import DDPMScheduler
    >>> sched = DDPMScheduler(num_train_timesteps=1000)
    >>> x0 = torch.full((2, 4, 8, 8), 0.5)
    >>> abar = sched.alphas_cumprod
    >>> def ideal(x, t, cond):
    ...     a = abar[t].view(-1, 1, 1, 1)
    ...     return (x - a.sqrt() * x0) / (1 - a).sqrt()
    >>> out = epsilon_loss(ideal, x0, None, scheduler=sched, generator=torch.Generator().manual_seed(0))
    >>> round(float(out.loss), 6), out.timesteps.dtype
    (0.0, torch.int64)
    """
    latents = _check_latents(latents, "epsilon_loss: latents")
    generator = _check_generator(generator, "epsilon_loss")
    config = getattr(scheduler, "config", None)
    if config is None or not callable(getattr(scheduler, "add_noise", None)):
        raise InputError(f"epsilon_loss: scheduler must be a diffusers DDPMScheduler, got {type(scheduler).__name__}")
    if not isinstance(snr_gamma, (int, float)) or isinstance(snr_gamma, bool) or not math.isfinite(snr_gamma) or snr_gamma < 0:
        raise InputError(f"epsilon_loss: snr_gamma must be a finite number >= 0 (0 = no Min-SNR weighting), got {snr_gamma!r}")
    prediction_type = getattr(config, "prediction_type", "epsilon")
    if prediction_type != "epsilon":
        raise InputError(
            f"epsilon_loss: the scheduler's prediction_type is {prediction_type!r}; this objective trains "
            "epsilon prediction (build the scheduler with prediction_type='epsilon')"
        )
    num_train_timesteps = int(config.num_train_timesteps)
    batch = latents.shape[0]
    eps = _randn_like(latents, generator) if noise is None else noise.to(device=latents.device, dtype=latents.dtype)
    if eps.shape != latents.shape:
        raise InputError(f"epsilon_loss: noise must have the latents' shape {tuple(latents.shape)}, got {tuple(eps.shape)}")
    if timesteps is None:
        t = torch.randint(0, num_train_timesteps, (batch,), generator=generator, device=generator.device)
    else:
        t = torch.as_tensor(timesteps)
        if t.shape != (batch,) or t.is_floating_point() or int(t.min()) < 0 or int(t.max()) >= num_train_timesteps:
            raise InputError(f"epsilon_loss: timesteps must be [{batch}] integers in [0, {num_train_timesteps}), got {t}")
    t = t.to(device=latents.device, dtype=torch.int64)
    noisy = scheduler.add_noise(latents, eps, t)
    prediction = model_fn(noisy, t, cond)
    if snr_gamma > 0:
        _mse(prediction, eps, "epsilon_loss")  # the shape check and its error
        abar = scheduler.alphas_cumprod.to(device=latents.device, dtype=torch.float32)[t]
        snr = abar / (1.0 - abar)
        weight = torch.clamp(snr, max=float(snr_gamma)) / snr
        per_sample = (prediction.float() - eps.float()).pow(2).flatten(1).mean(dim=1)
        loss = (weight * per_sample).mean()
    else:
        loss = _mse(prediction, eps, "epsilon_loss")
    return DiffusionLoss(loss=loss, prediction=prediction, target=eps, noisy=noisy, noise=eps, timesteps=t)


# --------------------------------------------------------------------------- rectified flow


def shift_sigmas(sigmas: Tensor, shift: float) -> Tensor:
    """SD3's resolution shift of noise levels (Esser et al. 2024, Sec. 5.3.2, Eq. 23):
    ``shift * sigma / (1 + (shift - 1) * sigma)`` — the formula of diffusers'
    ``FlowMatchEulerDiscreteScheduler(shift=...)``. ``shift = 1`` is the identity.

    >>> shift_sigmas(torch.tensor([0.0, 0.5, 1.0]), 3.0).tolist()
    [0.0, 0.75, 1.0]
    """
    if shift == 1.0:
        return sigmas
    return shift * sigmas / (1.0 + (shift - 1.0) * sigmas)


def sample_logit_normal_sigmas(
    batch: int, *, generator: torch.Generator, mean: float = 0.0, std: float = 1.0, shift: float = 1.0
) -> Tensor:
    """``[batch]`` float32 noise levels ``sigma = sigmoid(n)``, ``n ~ N(mean, std^2)``, then :func:`shift_sigmas`.

    SD3's "logit-normal sampling" (Esser et al. 2024, Sec. 3.1, Eq. 19): it puts more training
    weight on the middle of the path, where the velocity is hardest to predict. ``logit(sigma)``
    is exactly ``N(mean, std^2)`` before the shift. Drawn on the generator's device.
    """
    check_int_range(batch, "sample_logit_normal_sigmas: batch", lo=1)
    check_finite_number(mean, "rectified flow logit_normal mean")
    check_finite_number(std, "rectified flow logit_normal std", lo=0, lo_inclusive=False)
    check_finite_number(shift, "rectified flow shift", lo=0, lo_inclusive=False)
    n = torch.randn(batch, generator=_check_generator(generator, "sample_logit_normal_sigmas"), device=generator.device)
    return shift_sigmas(torch.sigmoid(mean + std * n), shift)


def rectified_flow_loss(
    model_fn: ModelFn,
    latents: Tensor,
    cond: Any,
    *,
    generator: torch.Generator,
    logit_normal: Tuple[float, float] = (0.0, 1.0),
    shift: float = 1.0,
    num_train_timesteps: int = 1000,
    noise: Optional[Tensor] = None,
    sigmas: Optional[Tensor] = None,
) -> DiffusionLoss:
    """Rectified-flow (flow-matching) loss with logit-normal noise levels, as trained for SD3.

    ``x_t = (1 - sigma) x0 + sigma eps``, ``target v = eps - x0`` (``dx_t / dsigma``), loss
    ``|| v - v_theta(x_t, sigma * T) ||^2`` (Esser et al. 2024, Sec. 2, Eqs. 1-3 with the
    ``b_t = t``, ``a_t = 1 - t`` path of Sec. 3.1 "Rectified Flow"; Liu et al. 2022).

    Sampling with diffusers' ``FlowMatchEulerDiscreteScheduler(num_train_timesteps=T, shift=...)``
    (e.g. in ``StableDiffusion3Pipeline``) is consistent with this: it calls the network at
    ``timestep = sigma * T`` and steps ``x <- x + (sigma_next - sigma) * v`` from ``sigma = 1``
    (pure noise) to 0. The network sees every ``sigma`` in ``(0, 1)`` while training, so any
    sampling ``shift`` works; ``shift`` here shifts the *training* distribution the same way.

    Args:
        model_fn: ``(x_t [B, C, h, w], timestep [B] float32, cond) -> v_hat [B, C, h, w]``.
        latents: ``[B, C, h, w]`` clean (scaled) latents ``x0``.
        cond: passed to ``model_fn`` unchanged.
        generator: the source of every random draw (first ``eps``, then the logit-normal ``n``).
        logit_normal: ``(mean, std)`` of ``logit(sigma)`` (SD3: ``(0, 1)``).
        shift: :func:`shift_sigmas` applied to the drawn ``sigma`` (1 = none).
        num_train_timesteps: ``T``; the network's timestep is ``sigma * T`` (diffusers: 1000).
        noise, sigmas: fix ``eps`` and/or ``sigma`` ``[B]`` instead of drawing them (tests).

    Example (the ideal velocity of a single image ``x0`` is ``(x_t - x0) / sigma``):

    >>> x0 = torch.full((2, 4, 8, 8), 0.5)
    >>> ideal = lambda x, t, cond: (x - x0) / (t / 1000).view(-1, 1, 1, 1)
    >>> out = rectified_flow_loss(ideal, x0, None, generator=torch.Generator().manual_seed(0))
    >>> round(float(out.loss), 6), bool(torch.allclose(out.timesteps, 1000 * out.sigmas))
    (0.0, True)
    """
    latents = _check_latents(latents, "rectified_flow_loss: latents")
    generator = _check_generator(generator, "rectified_flow_loss")
    if not (isinstance(logit_normal, (tuple, list)) and len(logit_normal) == 2):
        raise InputError(f"rectified_flow_loss: logit_normal must be (mean, std), got {logit_normal!r}")
    num_train_timesteps = check_int_range(num_train_timesteps, "rectified_flow_loss: num_train_timesteps", lo=1)
    batch = latents.shape[0]
    eps = _randn_like(latents, generator) if noise is None else noise.to(device=latents.device, dtype=latents.dtype)
    if eps.shape != latents.shape:
        raise InputError(f"rectified_flow_loss: noise must be shaped like the latents {tuple(latents.shape)}, not {tuple(eps.shape)}")
    if sigmas is None:
        sigma = sample_logit_normal_sigmas(batch, generator=generator, mean=logit_normal[0], std=logit_normal[1], shift=shift)
    else:
        sigma = torch.as_tensor(sigmas, dtype=torch.float32)
        if sigma.shape != (batch,) or not bool(((sigma >= 0) & (sigma <= 1)).all()):
            raise InputError(f"rectified_flow_loss: sigmas must be [{batch}] values in [0, 1], got {sigma}")
    sigma = sigma.to(device=latents.device, dtype=torch.float32)
    s = sigma.view(-1, 1, 1, 1).to(latents.dtype)
    noisy = (1.0 - s) * latents + s * eps
    target = eps - latents
    timesteps = sigma * num_train_timesteps
    prediction = model_fn(noisy, timesteps, cond)
    loss = _mse(prediction, target, "rectified_flow_loss")
    return DiffusionLoss(
        loss=loss, prediction=prediction, target=target, noisy=noisy, noise=eps, timesteps=timesteps, sigmas=sigma
    )


# --------------------------------------------------------------------------- classifier-free guidance


def _expand_row(empty: Tensor, like: Tensor, name: str) -> Tensor:
    """``empty`` (``like.shape[1:]`` or ``[1, *like.shape[1:]]``) broadcast to ``like``'s shape."""
    if empty.ndim == like.ndim - 1:
        empty = empty.unsqueeze(0)
    if empty.ndim != like.ndim or empty.shape[0] != 1 or empty.shape[1:] != like.shape[1:]:
        raise InputError(
            f"classifier_free_dropout: {name} must be shaped {list(like.shape[1:])} (or [1, ...]) to replace rows of "
            f"{list(like.shape)}, got {list(empty.shape)}"
        )
    return empty.to(device=like.device, dtype=like.dtype).expand_as(like)


def classifier_free_dropout(
    cond_embeds: Tensor,
    empty_embeds: Tensor,
    p: float = 0.1,
    *,
    generator: torch.Generator,
    mask: Optional[Tensor] = None,
    empty_mask: Optional[Tensor] = None,
    pooled: Optional[Tensor] = None,
    empty_pooled: Optional[Tensor] = None,
) -> CFGDropout:
    """Replace each prompt by the empty prompt with probability ``p`` (Ho & Salimans 2022, Sec. 3.2).

    Training the conditional and the unconditional model in one network this way is what
    classifier-free guidance needs at sampling time. Each row is dropped independently
    (``rand(B) < p`` from ``generator``, one draw per row), so the dropped *fraction* of a batch is
    ``p`` on average; the token embeddings, the attention mask and the pooled embedding of a
    dropped row are all replaced together.

    Args:
        cond_embeds: ``[B, T, D]`` token embeddings of the prompts.
        empty_embeds: ``[T, D]`` or ``[1, T, D]`` those of the empty prompt ``""``.
        p: drop probability in ``[0, 1]`` (Stable Diffusion: 0.1).
        generator: source of the ``B`` uniform draws.
        mask, empty_mask: ``[B, T]`` and ``[T]``/``[1, T]`` attention masks (both or neither).
        pooled, empty_pooled: ``[B, P]`` and ``[P]``/``[1, P]`` pooled embeddings (both or neither).

    >>> emb, empty = torch.ones(4, 2, 3), torch.zeros(2, 3)
    >>> out = classifier_free_dropout(emb, empty, 0.5, generator=torch.Generator().manual_seed(0))
    >>> out.dropped.tolist(), out.embeds[:, 0, 0].tolist()
    ([True, False, True, True], [0.0, 1.0, 0.0, 0.0])
    """
    if not isinstance(cond_embeds, Tensor) or cond_embeds.ndim != 3:
        got = getattr(cond_embeds, "shape", cond_embeds)
        raise InputError(f"classifier_free_dropout: cond_embeds must be [B, T, D], got {got}")
    p = check_finite_number(p, "classifier_free_dropout: p", lo=0.0, hi=1.0)
    generator = _check_generator(generator, "classifier_free_dropout")
    for a, b, names in ((mask, empty_mask, "mask/empty_mask"), (pooled, empty_pooled, "pooled/empty_pooled")):
        if (a is None) != (b is None):
            raise InputError(f"classifier_free_dropout: give both or neither of {names}")
    batch = cond_embeds.shape[0]
    if mask is not None and mask.shape != cond_embeds.shape[:2]:
        raise InputError(f"classifier_free_dropout: mask must be {list(cond_embeds.shape[:2])}, got {list(mask.shape)}")
    if pooled is not None and (pooled.ndim != 2 or pooled.shape[0] != batch):
        raise InputError(f"classifier_free_dropout: pooled must be [{batch}, P], got {list(pooled.shape)}")
    dropped = torch.rand(batch, generator=generator, device=generator.device) < p
    dropped = dropped.to(cond_embeds.device)

    def replace(rows: Tensor, empty: Tensor, name: str) -> Tensor:
        keep = dropped.view(-1, *([1] * (rows.ndim - 1)))
        return torch.where(keep, _expand_row(empty, rows, name), rows)

    return CFGDropout(
        embeds=replace(cond_embeds, empty_embeds, "empty_embeds"),
        mask=None if mask is None else replace(mask, empty_mask, "empty_mask"),
        pooled=None if pooled is None else replace(pooled, empty_pooled, "empty_pooled"),
        dropped=dropped,
    )


# --------------------------------------------------------------------------- the autoencoder


def vae_downsampling_factor(vae: Any) -> int:
    """Pixels per latent cell of a diffusers ``AutoencoderKL``: ``2 ** (len(block_out_channels) - 1)``."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def check_vae_images(vae: Any, images: Any, where: str, *, check_range: bool = True, allow_uint8: bool = False) -> Tensor:
    """``images`` ``[B, C, H, W]`` as the autoencoder takes them, or an :class:`InputError` naming ``where``.

    ``C`` must be ``vae.config.in_channels`` and ``H, W`` multiples of :func:`vae_downsampling_factor`;
    float images must lie in ``[-1, 1]`` (checked when ``check_range``: one device sync);
    ``uint8`` (``[0, 255]``) is accepted only with ``allow_uint8``.
    """
    ok_dtype = isinstance(images, Tensor) and (images.is_floating_point() or (allow_uint8 and images.dtype == torch.uint8))
    if not ok_dtype or images.ndim != 4 or images.shape[0] < 1:
        kind = "float in [-1, 1]" + (" or uint8" if allow_uint8 else "")
        got = (tuple(images.shape), images.dtype) if isinstance(images, Tensor) else type(images).__name__
        raise InputError(f"{where}: images must be a non-empty tensor [B, 3, H, W], {kind}; got {got}")
    channels = int(getattr(vae.config, "in_channels", 3))
    factor = vae_downsampling_factor(vae)
    if images.shape[1] != channels:
        raise InputError(f"{where}: images have {images.shape[1]} channels, the autoencoder takes {channels} (layout [B, C, H, W])")
    if images.shape[2] % factor or images.shape[3] % factor:
        raise InputError(f"{where}: image size {tuple(images.shape[2:])} is not divisible by the autoencoder's factor {factor}")
    if check_range and images.is_floating_point():
        lo, hi = float(images.min()), float(images.max())
        if not (lo >= -1.0 - 1e-3 and hi <= 1.0 + 1e-3):
            raise InputError(f"{where}: float images must lie in [-1, 1] (uint8 x -> x / 127.5 - 1), got [{lo:g}, {hi:g}]")
    return images


def vae_loss(
    vae: Any, images: Tensor, kl_weight: float, *, generator: torch.Generator, reconstruction: str = "l1"
) -> VAELoss:
    """Reconstruction + ``kl_weight`` x KL of a diffusers ``AutoencoderKL`` (latent diffusion's first stage).

    The posterior ``q(z | x) = N(mean, exp(logvar))`` (diffusers clamps ``logvar`` to
    ``[-30, 20]``) is sampled by reparameterisation, ``z = mean + exp(logvar / 2) * eps`` with
    ``eps`` from ``generator``, and decoded. Both terms are *means per element* (per pixel channel
    and per latent element), so the weight does not depend on the image size:

    * ``reconstruction``: ``"l1"`` (default; LDM's autoencoders use L1 + a perceptual and a GAN
      loss, Rombach et al. 2022 App. G / Esser et al. 2021 — neither is used here, so small
      models blur a little) or ``"mse"``.
    * ``kl = mean(0.5 * (mean^2 + var - 1 - logvar))``. LDM's ``kl_weight = 1e-6`` is applied to
      per-image *sums*; the same balance here is ``1e-6 * (pixel elements / latent elements)``
      (x12 for 4 latent channels at factor 4, x48 at factor 8). A weight of ~1e-4..1e-6 keeps the
      latents close to their means (a near-deterministic code) without collapsing them;
      :func:`latent_scaling_factor` then brings them to unit variance.

    Args:
        vae: a diffusers ``AutoencoderKL`` (``encode(x).latent_dist`` with ``mean``/``logvar``,
            ``decode(z).sample``).
        images: ``[B, 3, H, W]`` in ``[-1, 1]`` (H, W divisible by the downsampling factor; the
            range is not re-checked here, see :class:`~langfield.methods.diffusion.VAEMethod`).
        kl_weight: ``>= 0``.
        generator: source of the posterior sample's ``eps``.
        reconstruction: ``"l1"`` or ``"mse"``.
    """
    images = check_vae_images(vae, images, "vae_loss", check_range=False)
    kl_weight = check_finite_number(kl_weight, "vae_loss: kl_weight", lo=0.0)
    check_choice(reconstruction, "vae_loss: reconstruction", RECONSTRUCTION_LOSSES)
    generator = _check_generator(generator, "vae_loss")
    posterior = vae.encode(images).latent_dist
    mean, logvar = posterior.mean, posterior.logvar
    std = torch.exp(0.5 * logvar)
    z = mean + std * _randn_like(mean, generator)
    decoded = vae.decode(z).sample
    diff = decoded.float() - images.float()
    rec = diff.abs().mean() if reconstruction == "l1" else diff.square().mean()
    kl = 0.5 * (mean.float().square() + logvar.float().exp() - 1.0 - logvar.float()).mean()
    return VAELoss(loss=rec + kl_weight * kl, reconstruction=rec, kl=kl, decoded=decoded, latents=z)


def _raw_latents(vae: Any, images: Tensor, generator: Optional[torch.Generator], batch_size: int) -> Tensor:
    """Unscaled latents of ``images`` (posterior samples, or means without a generator), in eval mode, no grad."""
    parts = []
    device = next(vae.parameters()).device
    was_training = vae.training
    vae.eval()
    try:
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                chunk = images[start : start + batch_size].to(device=device, dtype=next(vae.parameters()).dtype)
                dist = vae.encode(chunk).latent_dist
                z = dist.mean
                if generator is not None:
                    z = z + torch.exp(0.5 * dist.logvar) * _randn_like(z, generator)
                parts.append(z.float().cpu())
    finally:
        vae.train(was_training)
    return torch.cat(parts)


def encode_latents(
    vae: Any, images: Tensor, *, generator: Optional[torch.Generator] = None, batch_size: int = 64
) -> Tensor:
    """``[N, C, h, w]`` float32 CPU latents scaled as the diffusers pipelines expect them.

    ``(z - shift_factor) * scaling_factor`` from ``vae.config`` (``shift_factor`` ``None`` = 0;
    SD 1.x/2.x decode ``latents / scaling_factor``, SD3 ``latents / scaling_factor + shift_factor``),
    where ``z`` is a posterior sample drawn from ``generator`` (the mean when it is ``None``).
    The autoencoder runs in eval mode without gradients, ``batch_size`` images at a time, on its own
    device. Call :func:`latent_scaling_factor` first for a freshly trained autoencoder.
    """
    images = check_vae_images(vae, images, "encode_latents")
    batch_size = check_int_range(batch_size, "encode_latents: batch_size", lo=1)
    if generator is not None:
        _check_generator(generator, "encode_latents")
    z = _raw_latents(vae, images, generator, batch_size)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (z - float(shift)) * float(vae.config.scaling_factor)


def latent_scaling_factor(
    vae: Any, images: Tensor, *, generator: Optional[torch.Generator] = None, batch_size: int = 64, store: bool = True
) -> float:
    """``1 / std`` of the autoencoder's latents over ``images``; stored in ``vae.config.scaling_factor``.

    Rombach et al. 2022 (Sec. 4.3.2 and App. G) rescale the latents "by the component-wise standard
    deviation" so the diffusion model sees unit variance (SD's 0.18215 = 1 / std of its KL-f8 latents
    over a batch of training images). The std is over every element of every latent (posterior
    samples from ``generator``, or the means when it is ``None``), around their mean.

    With ``store`` the value is written with ``vae.register_to_config(scaling_factor=...)`` (so
    ``save_pretrained`` keeps it and the pipelines divide by it), and a ``shift_factor`` of ``None``
    becomes ``0.0`` (SD3's pipeline adds ``shift_factor`` when decoding; 0 keeps the SD 1.x/2.x
    convention, which has none, valid for the same autoencoder).

    Returns:
        the factor (a Python float).
    """
    images = check_vae_images(vae, images, "latent_scaling_factor")
    batch_size = check_int_range(batch_size, "latent_scaling_factor: batch_size", lo=1)
    if generator is not None:
        _check_generator(generator, "latent_scaling_factor")
    z = _raw_latents(vae, images, generator, batch_size)
    if z.numel() < 2:
        raise InputError("latent_scaling_factor: need at least two latent elements to measure a spread")
    std = float(z.double().std())
    if not math.isfinite(std) or std <= 0:
        raise InputError(f"latent_scaling_factor: the latents have no spread (std {std:g}); is the autoencoder trained?")
    factor = 1.0 / std
    if store:
        update = {"scaling_factor": factor}
        if getattr(vae.config, "shift_factor", None) is None:
            update["shift_factor"] = 0.0
        vae.register_to_config(**update)
    return factor
