"""Sample images from a Stable Diffusion-style pipeline: one call, validated inputs, a record.

:func:`generate` runs the diffusers pipeline itself (``StableDiffusionPipeline``,
``StableDiffusionXLPipeline``, ``StableDiffusion3Pipeline``: their denoising loops are not
re-implemented here) with

- **prompts**: strings, embedded by the pipeline's own text encoders (real SD) or by the
  MiniLM prompt encoder its :class:`~langfield.generation.loading.TextConditioningSpec` names
  (toy models); or prompt embeddings (:class:`~langfield.generation.text_conditioning.PromptEmbeddings`,
  or a ``[B, T, D]`` tensor for SD-style UNets), passed as ``prompt_embeds`` /
  ``negative_prompt_embeds`` (+ ``pooled_prompt_embeds`` for SDXL and SD3);
- **classifier-free guidance** (Ho & Salimans 2022): ``ε = ε_uncond + w (ε_cond - ε_uncond)``
  with ``w = guidance``; ``guidance = 1`` is the plain conditional model (one network pass per
  step); the unconditional input is the empty prompt unless ``negative`` is given;
- **a sampler** by name, built from the pipeline's own scheduler config (its betas, timestep
  spacing, prediction type or flow shift carry over):

  ================  ==============================================  =====================
  ``scheduler``     diffusers class                                 for models trained as
  ================  ==============================================  =====================
  ``"ddim"``        ``DDIMScheduler`` (Song et al. 2021, η = 0)     ε / v prediction
  ``"dpmpp"``       ``DPMSolverMultistepScheduler``, dpmsolver++,   ε / v prediction or
                    order 2 (Lu et al. 2022); flow sigmas for flow  rectified flow
  ``"flow_euler"``  ``FlowMatchEulerDiscreteScheduler`` (Euler on   rectified flow
                    the flow ODE; Liu et al. 2022, Esser et al.
                    2024)
  ``None``          the pipeline's own scheduler                    either
  ================  ==============================================  =====================

  The training objective is read from the pipeline's scheduler: a ``FlowMatch*`` scheduler (or
  ``prediction_type="flow_prediction"``) means rectified flow; anything else ε/v prediction. A
  sampler of the other family is refused.
- **seeds**: image ``i`` starts from noise drawn by its own CPU ``torch.Generator`` seeded
  ``seed + i``, so a result depends only on ``seed`` (not on the batch it was made in, nor
  the device the noise lands on).

Images come back as ``[N, H, W, 3]`` float32 on the CPU in ``[0, 1]``, ``N = B * num_images``
ordered prompt-major (``[p0 s0, p0 s1, p1 s0, ...]``), with a :class:`GenerationRecord`::

    pipe = load_pipeline("models/toy_sd")
    out = generate(pipe, ["a red sphere", "a blue box"], steps=20, guidance=3.0, seed=0, num_images=4)
    out.images.shape        # [8, 32, 32, 3]
    out.record.to_dict()    # scheduler, steps, guidance, seeds, prompts, size, ...
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from langfield._checks import InputError, check_choice, check_finite_array, check_finite_number, check_int_range
from langfield.generation.loading import (
    PIPELINE_KINDS,
    GenerationPipeline,
    build_pipeline,
    check_pipeline_components,
    text_widths,
)
from langfield.generation.text_conditioning import PromptEmbeddings, check_prompts

if TYPE_CHECKING:  # pragma: no cover
    from diffusers import DiffusionPipeline

__all__ = [
    "MAX_GUIDANCE",
    "MAX_STEPS",
    "SCHEDULERS",
    "GenerationRecord",
    "GenerationResult",
    "as_generation_pipeline",
    "check_image_size",
    "embedding_inputs",
    "own_encoder_inputs",
    "generate",
    "make_scheduler",
    "prediction_type",
    "size_multiple",
]

#: Sampler names accepted by :func:`generate` (``None`` keeps the pipeline's own).
SCHEDULERS = ("ddim", "dpmpp", "flow_euler")
#: Largest classifier-free guidance scale accepted (score distillation, which uses ~100, does not
#: go through :func:`generate`).
MAX_GUIDANCE = 50.0
#: Most sampling steps accepted (the number of training timesteps of every SD scheduler).
MAX_STEPS = 1000
#: Largest image side accepted, in pixels.
MAX_SIDE = 16384

PromptsLike = Union[str, Sequence[str], PromptEmbeddings, Tensor]


@dataclass(frozen=True)
class GenerationRecord:
    """What produced a batch of images (JSON-able with :meth:`to_dict`).

    Attributes:
        model: hub id or directory (``"<memory>"`` for an in-memory pipeline).
        kind: ``"sd"``, ``"sdxl"`` or ``"sd3"``.
        scheduler: the name asked for (``"ddim"``, ``"dpmpp"``, ``"flow_euler"``) or ``"default"``.
        scheduler_class: the diffusers class that ran.
        prediction: ``"epsilon"``, ``"v_prediction"`` or ``"flow"`` (from the pipeline's scheduler).
        steps, guidance, seed: as given.
        seeds: per image, ``seed + i``.
        num_images: images per prompt.
        height, width: image size in pixels.
        prompts: per image; ``""`` where only embeddings were given.
        dtype, device: where the denoiser ran.
        nsfw: per image, what the pipeline's safety checker flagged; ``None`` without one.
    """

    model: str
    kind: str
    scheduler: str
    scheduler_class: str
    prediction: str
    steps: int
    guidance: float
    seed: int
    seeds: Tuple[int, ...]
    num_images: int
    height: int
    width: int
    prompts: Tuple[str, ...]
    dtype: str
    device: str
    nsfw: Optional[Tuple[bool, ...]] = None

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        for key in ("seeds", "prompts", "nsfw"):
            if data[key] is not None:
                data[key] = list(data[key])
        return data


@dataclass(frozen=True)
class GenerationResult:
    """Images ``[N, H, W, 3]`` float32 CPU in ``[0, 1]`` and their :class:`GenerationRecord`."""

    images: Tensor
    record: GenerationRecord


def as_generation_pipeline(model: Any) -> GenerationPipeline:
    """A :class:`GenerationPipeline` from one, from a diffusers pipeline, or from components.

    Args:
        model: a :class:`GenerationPipeline`; a diffusers ``StableDiffusionPipeline`` /
            ``StableDiffusionXLPipeline`` / ``StableDiffusion3Pipeline``; or a mapping with
            ``vae`` and ``unet`` or ``transformer`` (optional ``scheduler``, ``text``), given to
            :func:`~langfield.generation.loading.build_pipeline`.
    """
    if isinstance(model, GenerationPipeline):
        return model
    if isinstance(model, Mapping):
        unknown = sorted(set(model) - {"vae", "unet", "transformer", "scheduler", "text"})
        if unknown or "vae" not in model:
            raise InputError(
                f"model: a components mapping needs 'vae' and 'unet' or 'transformer' (optional 'scheduler', "
                f"'text'); got keys {sorted(model)}"
            )
        return build_pipeline(**model)
    name = type(model).__name__
    for class_name, kind in PIPELINE_KINDS.items():
        if any(cls.__name__ == class_name for cls in type(model).__mro__):
            return GenerationPipeline(model, kind)
    raise InputError(
        f"model: expected a GenerationPipeline (load_pipeline / build_pipeline), a diffusers "
        f"{' / '.join(PIPELINE_KINDS)} or a mapping of components, got {name}"
    )


def prediction_type(scheduler: Any) -> str:
    """``"flow"`` for a flow-matching scheduler, else its ``prediction_type`` (``"epsilon"`` by default)."""
    config = scheduler.config
    if type(scheduler).__name__.startswith("FlowMatch") or config.get("use_flow_sigmas", False):
        return "flow"
    value = config.get("prediction_type", "epsilon") or "epsilon"
    return "flow" if value == "flow_prediction" else str(value)


def make_scheduler(name: Optional[str], base: Any) -> Any:
    """The sampler ``name`` built from the scheduler ``base`` a model was saved with.

    Args:
        name: ``"ddim"``, ``"dpmpp"``, ``"flow_euler"``, or ``None`` (``base`` itself).
        base: the pipeline's scheduler (its config: betas, spacing, prediction type, shift).

    Raises:
        InputError: an unknown name, or a sampler of the wrong family for the model (``"ddim"``
            on a rectified-flow model, ``"flow_euler"`` on an ε/v-prediction model).
    """
    if name is None:
        return base
    check_choice(name, "scheduler", SCHEDULERS)
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

    prediction = prediction_type(base)
    config = base.config
    if prediction == "flow":
        if name == "ddim":
            raise InputError(
                f"scheduler: 'ddim' samples ε/v-prediction models, but this model was trained with flow matching "
                f"(its scheduler is {type(base).__name__}); use 'flow_euler' or 'dpmpp'"
            )
        if name == "flow_euler":
            return FlowMatchEulerDiscreteScheduler.from_config(config)
        shift = float(config.get("shift", config.get("flow_shift", 1.0)) or 1.0)
        return DPMSolverMultistepScheduler(
            num_train_timesteps=int(config.get("num_train_timesteps", 1000)), algorithm_type="dpmsolver++",
            solver_order=2, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift,
        )  # fmt: skip
    if name == "flow_euler":
        raise InputError(
            f"scheduler: 'flow_euler' samples rectified-flow models, but this model predicts {prediction!r} "
            f"(its scheduler is {type(base).__name__}); use 'ddim' or 'dpmpp'"
        )
    if name == "ddim":
        return DDIMScheduler.from_config(config)
    return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)


def size_multiple(pipe: GenerationPipeline) -> int:
    """Image sides must be multiples of this: the VAE factor times the SD3 patch size, and a
    multiple of 8 for UNet pipelines (diffusers checks ``height % 8``)."""
    f = pipe.vae_scale_factor
    if pipe.kind == "sd3":
        return f * int(pipe.denoiser.config.patch_size)
    return f * 8 // math.gcd(f, 8)


def check_image_size(pipe: GenerationPipeline, height: Optional[int], width: Optional[int]) -> Tuple[int, int]:
    native = int(pipe.denoiser.config.sample_size) * pipe.vae_scale_factor
    multiple = size_multiple(pipe)
    sides = []
    for key, value in (("height", height), ("width", width)):
        value = native if value is None else check_int_range(value, key, lo=1, hi=MAX_SIDE)
        if value % multiple:
            lower = max(multiple, value - value % multiple)
            raise InputError(
                f"{key}: {value} is not a multiple of {multiple} (VAE factor {pipe.vae_scale_factor}"
                f"{' x patch size ' + str(pipe.denoiser.config.patch_size) if pipe.kind == 'sd3' else ''}); "
                f"use {lower} or {lower + multiple}"
            )
        if pipe.kind == "sd3":
            patches = value // multiple
            limit = pipe.denoiser.config.pos_embed_max_size
            if limit is not None and patches > int(limit):
                raise InputError(
                    f"{key}: {value} px is {patches} patches but the transformer's position embedding covers at "
                    f"most {limit} (pos_embed_max_size); use at most {int(limit) * multiple}"
                )
        sides.append(value)
    return sides[0], sides[1]


def _text_limits(pipe: GenerationPipeline) -> Sequence[Tuple[str, Any, int]]:
    """(name, tokenizer, max tokens) of the pipeline's own tokenizers that bound a prompt."""
    p = pipe.pipeline
    has_t5 = getattr(p, "tokenizer_3", None) is not None and getattr(p, "text_encoder_3", None) is not None
    if pipe.kind == "sd3" and has_t5:
        return [("T5 tokenizer_3", p.tokenizer_3, 256)]  # the pipeline's max_sequence_length
    out = []
    for key in ("tokenizer", "tokenizer_2"):
        tok = getattr(p, key, None)
        if tok is not None:
            out.append((key, tok, int(getattr(tok, "model_max_length", 77))))
    return out[:1]


def _check_own_prompt_lengths(pipe: GenerationPipeline, prompts: Sequence[str], where: str) -> None:
    for label, tokenizer, limit in _text_limits(pipe):
        for i, prompt in enumerate(prompts):
            count = len(tokenizer(prompt, truncation=False, verbose=False)["input_ids"])
            if count > limit:
                shown = prompt if len(prompt) <= 120 else prompt[:120] + "..."
                raise InputError(
                    f"{where}[{i}] {shown!r} is {count} tokens long but the pipeline's text encoder ({label}) "
                    f"takes at most {limit}; shorten it, or pass truncate=True to let the pipeline cut it"
                )


def _as_embeddings(value: Union[PromptEmbeddings, Tensor], pipe: GenerationPipeline, where: str) -> PromptEmbeddings:
    if isinstance(value, PromptEmbeddings):
        return value
    if pipe.kind != "sd":
        raise InputError(
            f"{where}: a {pipe.kind.upper()} pipeline needs pooled embeddings too; pass a PromptEmbeddings "
            f"(embeds, attention_mask, pooled) instead of a bare tensor"
        )
    if value.ndim != 3:
        raise InputError(f"{where}: expected prompt embeddings [B, T, D], got shape {tuple(value.shape)}")
    b, t, _ = value.shape
    mask = torch.ones(b, t, dtype=torch.long, device=value.device)
    pooled = torch.nn.functional.normalize(value.float().mean(dim=1), dim=-1).to(value.dtype)
    return PromptEmbeddings(value, mask, pooled)


def _check_embedding_widths(emb: PromptEmbeddings, pipe: GenerationPipeline, where: str) -> None:
    tokens, pooled = int(emb.embeds.shape[-1]), int(emb.pooled.shape[-1])
    for key, value in text_widths(pipe).items():
        if value is None:
            continue
        if key in ("pooled_projection_dim", "pooled_width"):
            if pooled != int(value):
                raise InputError(f"{where}: pooled embeddings are {pooled}-d but the model's {key} is {value}")
        elif tokens != int(value):
            raise InputError(f"{where}: token embeddings are {tokens}-d but the model's {key} is {value}")
    check_finite_array(emb.embeds, f"{where}: embeds")
    check_finite_array(emb.pooled, f"{where}: pooled")


def _expand_negative(neg: PromptEmbeddings, batch: int, per_prompt: int, where: str) -> PromptEmbeddings:
    """``neg`` for ``batch * per_prompt`` images: one row for all, or one row per prompt."""
    if len(neg) == 1:
        return neg.repeat_interleave(batch * per_prompt)
    if len(neg) == batch:
        return neg.repeat_interleave(per_prompt)
    raise InputError(f"{where}: {len(neg)} negative embeddings for {batch} prompts; give 1 or {batch}")


def _is_text(value: Any) -> bool:
    return isinstance(value, (str, list, tuple))


def own_encoder_inputs(
    pipe: GenerationPipeline, prompts: Any, negative: Any, num_images: int, truncate: bool
) -> Tuple[Dict[str, Any], Tuple[str, ...]]:
    """``prompt`` / ``negative_prompt`` for a pipeline that embeds strings itself (real SD)."""
    texts = check_prompts(prompts, "prompts")
    if not truncate:
        _check_own_prompt_lengths(pipe, texts, "prompts")
    record = tuple(t for t in texts for _ in range(num_images))
    kwargs: Dict[str, Any] = {"prompt": list(record)}
    if negative is not None:
        if not _is_text(negative):
            raise InputError("negative: this pipeline embeds strings itself; pass negative prompts as strings")
        neg_texts = check_prompts(negative, "negative")
        if len(neg_texts) not in (1, len(texts)):
            count = len(texts)
            raise InputError(f"negative: {len(neg_texts)} negative prompts for {count} prompts; give 1 or {count}")
        if not truncate:
            _check_own_prompt_lengths(pipe, neg_texts, "negative")
        per_prompt = neg_texts * len(texts) if len(neg_texts) == 1 else neg_texts
        kwargs["negative_prompt"] = [n for n in per_prompt for _ in range(num_images)]
    return kwargs, record


def embedding_inputs(
    pipe: GenerationPipeline, prompts: Any, negative: Any, guided: bool, num_images: int, truncate: bool
) -> Tuple[Dict[str, Any], Tuple[str, ...]]:
    """``prompt_embeds`` / ``negative_prompt_embeds`` (+ pooled for SDXL / SD3), on the pipeline's
    device and dtype, one row per image."""
    if _is_text(prompts):
        emb = pipe.prompt_encoder().encode(prompts, truncate=truncate, where="prompts")
    elif isinstance(prompts, (PromptEmbeddings, Tensor)):
        emb = _as_embeddings(prompts, pipe, "prompts")
    else:
        kind = type(prompts).__name__
        raise InputError(f"prompts: expected strings, PromptEmbeddings or a [B, T, D] tensor, got {kind}")
    _check_embedding_widths(emb, pipe, "prompts")
    batch = len(emb)
    names = emb.prompts if emb.prompts else ("",) * batch
    record = tuple(name for name in names for _ in range(num_images))
    device, dtype = pipe.device, pipe.dtype
    pooled = pipe.kind != "sd"  # SDXL and SD3 take a pooled text vector too

    cond = emb.repeat_interleave(num_images).to(device, dtype)
    kwargs: Dict[str, Any] = {"prompt_embeds": cond.embeds}
    if pooled:
        kwargs["pooled_prompt_embeds"] = cond.pooled
    if not guided and negative is None:
        return kwargs, record
    if negative is None:
        if pipe.text is None:
            raise InputError(
                "negative: guidance > 1 with prompt embeddings needs the unconditional embeddings (the empty "
                "prompt's); pass negative=, or use a pipeline with a text conditioning spec"
            )
        neg = pipe.prompt_encoder().empty(1)
    elif _is_text(negative):
        neg = pipe.prompt_encoder().encode(negative, truncate=truncate, where="negative")
    else:
        neg = _as_embeddings(negative, pipe, "negative")
    _check_embedding_widths(neg, pipe, "negative")
    if neg.embeds.shape[1] != emb.embeds.shape[1]:
        raise InputError(
            f"negative: {neg.embeds.shape[1]} tokens but the prompts have {emb.embeds.shape[1]}; "
            f"embed both with the same max_length"
        )
    neg = _expand_negative(neg, batch, num_images, "negative").to(device, dtype)
    kwargs["negative_prompt_embeds"] = neg.embeds
    if pooled:
        kwargs["negative_pooled_prompt_embeds"] = neg.pooled
    return kwargs, record


def generate(
    model: Union[GenerationPipeline, "DiffusionPipeline", Mapping[str, Any]],
    prompts: PromptsLike,
    *,
    negative: Optional[PromptsLike] = None,
    steps: int = 30,
    guidance: float = 5.0,
    seed: int = 0,
    num_images: int = 1,
    scheduler: Optional[str] = None,
    height: Optional[int] = None,
    width: Optional[int] = None,
    truncate: bool = False,
) -> GenerationResult:
    """Sample ``num_images`` images per prompt.

    Args:
        model: a :class:`~langfield.generation.loading.GenerationPipeline` (from ``load_pipeline``
            / ``build_pipeline``), a diffusers SD / SDXL / SD3 pipeline, or a mapping of components
            (``vae`` and ``unet`` or ``transformer``).
        prompts: ``B`` prompts (strings), or their embeddings (:class:`PromptEmbeddings`; a bare
            ``[B, T, D]`` tensor for SD-style UNets).
        negative: the unconditional input of guidance: strings or embeddings, one for all prompts
            or one per prompt. ``None``: the empty prompt.
        steps: sampling steps, ``1..1000``.
        guidance: classifier-free guidance scale, ``1..50`` (1: no guidance).
        seed: image ``i`` uses noise from a generator seeded ``seed + i``.
        num_images: images per prompt.
        scheduler: ``"ddim"``, ``"dpmpp"``, ``"flow_euler"`` or ``None`` (the pipeline's own).
        height, width: image size in pixels, multiples of :func:`size_multiple`; ``None``: the
            size the model was built for.
        truncate: cut prompts longer than the text encoder takes instead of refusing them.

    Returns:
        :class:`GenerationResult`: ``images`` ``[B * num_images, H, W, 3]`` float32 CPU in
        ``[0, 1]`` (prompt-major) and its :class:`GenerationRecord`.

    Raises:
        InputError: out-of-range ``steps`` / ``guidance`` / ``num_images`` / ``seed``, a size that
            is not a multiple of the VAE factor (x patch size), a sampler of the wrong family, a
            prompt longer than the text encoder takes, embeddings of the wrong width, or
            components that do not fit together (latent channels); each names the argument.
    """
    # 1. Validate the arguments and choose the sampler.
    pipe = as_generation_pipeline(model)
    check_pipeline_components(pipe)
    steps = check_int_range(steps, "steps", lo=1, hi=MAX_STEPS)
    guidance = check_finite_number(guidance, "guidance", lo=1.0, hi=MAX_GUIDANCE)
    num_images = check_int_range(num_images, "num_images", lo=1, hi=4096)
    seed = check_int_range(seed, "seed", lo=0, hi=2**63 - 1 - 2**20)
    if not isinstance(truncate, bool):
        raise InputError(f"truncate: expected True or False, got {truncate!r}")
    height, width = check_image_size(pipe, height, width)
    p = pipe.pipeline
    base_scheduler = p.scheduler
    sampler = make_scheduler(scheduler, base_scheduler)
    train_steps = int(sampler.config.get("num_train_timesteps", MAX_STEPS) or MAX_STEPS)
    if steps > train_steps:
        raise InputError(f"steps: {steps} is more than the {train_steps} timesteps the model was trained with")

    # 2. Text conditioning: the pipeline's own encoders, or embeddings (from MiniLM or given).
    if _is_text(prompts) and pipe.has_text_encoder:
        kwargs, record_prompts = own_encoder_inputs(pipe, prompts, negative, num_images, truncate)
    else:
        kwargs, record_prompts = embedding_inputs(pipe, prompts, negative, guidance > 1.0, num_images, truncate)

    # 3. One CPU generator per image, then the pipeline's own denoising loop and VAE decode.
    seeds = tuple(seed + i for i in range(len(record_prompts)))
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    modules = [m for m in (p.vae, pipe.denoiser) if isinstance(m, torch.nn.Module)]
    was_training = [m.training for m in modules]
    p.scheduler = sampler
    try:
        for m in modules:  # sampling runs the networks in eval mode; the caller's modes come back after
            m.eval()
        out = p(
            **kwargs,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=height,
            width=width,
            num_images_per_prompt=1,
            generator=generators,
            output_type="pt",
            return_dict=True,
        )
    finally:
        p.scheduler = base_scheduler
        for m, training in zip(modules, was_training):
            m.train(training)
    images = out.images.detach().float().permute(0, 2, 3, 1).cpu().contiguous()
    nsfw = getattr(out, "nsfw_content_detected", None)
    record = GenerationRecord(
        model=pipe.name,
        kind=pipe.kind,
        scheduler=scheduler if scheduler is not None else "default",
        scheduler_class=type(sampler).__name__,
        prediction=prediction_type(base_scheduler),
        steps=steps,
        guidance=guidance,
        seed=seed,
        seeds=seeds,
        num_images=num_images,
        height=height,
        width=width,
        prompts=record_prompts,
        dtype=str(pipe.dtype).replace("torch.", ""),
        device=str(pipe.device),
        nsfw=None if nsfw is None else tuple(bool(x) for x in nsfw),
    )
    return GenerationResult(images, record)
