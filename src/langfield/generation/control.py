"""The ControlNet family on diffusers: ControlNet, Multi-ControlNet, ControlNet-XS, ControlNeXt, SD3 ControlNet.

Four ways to steer a frozen text-to-image denoiser with a spatial condition (an edge map, depth,
normals, a segmentation...), behind one interface, :class:`ControlAdapter`, so one training
loop (:class:`~langfield.methods.diffusion.controlnet.ControlNetMethod`) and one sampler
(:func:`generate_controlled`) serve all of them:

=========================  ==========================================================  ===================
adapter                    what is trained (the base stays frozen)                      built by
=========================  ==========================================================  ===================
:class:`ControlNetAdapter` a trainable copy of the UNet encoder + mid block, joined to  :func:`build_controlnet`
                           the base's skips by zero-initialised 1x1 convs, and a hint
                           encoder whose last conv is zero (Zhang et al. 2023, "Adding
                           Conditional Control to Text-to-Image Diffusion Models",
                           Sec. 3.1-3.2, Eq. 2)
:class:`XSControlAdapter`  a small control UNet encoder that exchanges features with   :func:`build_controlnet_xs`
                           the base at every block, both ways (Zavadski et al. 2023,
                           "ControlNet-XS", Sec. 3); diffusers' deprecated
                           ``UNetControlNetXSModel``
:class:`ControlNeXtAdapter` a light encoder of the condition (timestep-conditioned     :func:`build_controlnext`
                           ResNet blocks), added once after the base's first down
                           block through *cross normalisation*, plus a small named
                           subset of the base (Peng et al. 2024, "ControlNeXt",
                           arXiv:2408.06070, Sec. 3.1-3.2)
:class:`SD3ControlNetAdapter` the first ``num_layers`` joint blocks of an SD3 MMDiT,     :func:`build_sd3_controlnet`
                           copied, their outputs added to the base's blocks through
                           zero-initialised linear layers (diffusers'
                           ``SD3ControlNetModel``)
=========================  ==========================================================  ===================

Conventions
-----------
* A **condition** is ``[B, Cc, H, W]`` float in ``[0, 1]`` at the *image* resolution
  ``H = h * f`` (``f`` the VAE factor, ``h`` the latent side): what diffusers'
  ``StableDiffusionControlNetPipeline`` feeds its control image processor (no normalisation to
  ``[-1, 1]``). The hint encoders downsample by exactly ``f``; :func:`build_controlnet` and
  :func:`build_controlnet_xs` choose their depth from ``vae_factor`` and refuse a mismatch.
  For SD3 the pipeline VAE-encodes the control image; :meth:`SD3ControlNetAdapter.predict` takes
  the condition already encoded (``[B, C, h, w]`` latents, scaled like the training latents).
* :meth:`ControlAdapter.predict` ``(noisy [B, C, h, w], timesteps [B], prompt, condition,
  scale) -> [B, C, h, w]`` is the base's output (noise for an epsilon model) with the control
  added at strength ``scale``; ``scale = 0`` is the base exactly (ControlNet-XS: its own copy
  of the base, see :class:`XSControlAdapter`).
* Fresh ControlNet, ControlNet-XS and SD3 adapters change nothing: their connections into the
  base are zero-initialised (1x1 convs, linears). ControlNeXt does *not* start at zero (cross
  normalisation replaces the zero convolutions, Sec. 3.2); its ``scale`` is the knob.

Sampling (:func:`generate_controlled`): ControlNet and Multi-ControlNet run diffusers'
``StableDiffusionControlNetPipeline`` (per-net ``controlnet_conditioning_scale``,
``control_guidance_start/end``), ControlNet-XS its ``StableDiffusionControlNetXSPipeline``,
SD3 its ``StableDiffusion3ControlNetPipeline``, and ControlNeXt the plain
``StableDiffusionPipeline`` of the base with the adapter's forward hook active (a
``callback_on_step_end`` switches it on and off for the guidance window, with diffusers'
rule: step ``i`` of ``n`` is controlled unless ``i / n < start`` or ``(i + 1) / n > end``).
Prompts are always passed as embeddings (no tokenizer is downloaded). ``guess_mode`` for ControlNet
and Multi-ControlNet is diffusers' guess mode: with classifier-free guidance the ControlNets run on
the conditional half of the batch only (the unconditional prediction is the bare base) and their
residuals are scaled by ``logspace(-1, 0)`` from the finest block to the middle block -- diffusers'
version of the ControlNet paper's "CFG resolution weighting" (Zhang et al. 2023, Sec. 3.4, there
``w_i = 64 / h_i``), meant for sampling without a prompt, where control on both halves cancels in
the guidance. For ControlNet-XS and ControlNeXt ``guess_mode`` applies the branch rule alone (our
extension, not in diffusers nor in their papers): XS's control-to-base additions are scaled by 0 on
the unconditional half (a per-sample ``conditioning_scale``); ControlNeXt's unconditional half runs on
the bare base -- no injection, and the base subset it trains put back to the base's own values, since
that subset is part of its control (until 2026-12-07 only the injection was skipped there, so that half
ran on the trained subset: docs/controlnet_results.md). Neither has per-resolution weights (XS couples
at every block both ways, ControlNeXt injects once).

Saving: :meth:`ControlAdapter.save` writes diffusers' ``save_pretrained`` folders (ControlNet,
ControlNet-XS, SD3) or ``controlnext.safetensors`` + ``controlnext.json`` (ControlNeXt), beside
``langfield_control.json`` saying which; :func:`load_control_adapter` reads them back onto a base.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from langfield._checks import InputError, check_choice, check_finite_number, check_int_range
from langfield.configs import check_field_types
from langfield.generation.sampling import (
    GenerationRecord,
    as_generation_pipeline,
    check_image_size,
    embedding_inputs,
    make_scheduler,
    own_encoder_inputs,
    prediction_type,
)
from langfield.generation.text_conditioning import PromptEmbeddings

if TYPE_CHECKING:  # pragma: no cover
    from diffusers import ControlNetModel, SD3ControlNetModel, UNetControlNetXSModel

__all__ = [
    "CONTROL_FILE",
    "ControlAdapter",
    "ControlNeXtAdapter",
    "ControlNeXtConfig",
    "ControlNeXtEncoder",
    "ControlNetAdapter",
    "ControlRecord",
    "ControlledGenerationResult",
    "SD3ControlNetAdapter",
    "XSControlAdapter",
    "build_controlnet",
    "build_controlnet_xs",
    "build_controlnext",
    "build_sd3_controlnet",
    "cross_normalize",
    "cross_normalize_reference",
    "generate_controlled",
    "hint_encoder_channels",
    "load_control_adapter",
]

#: Written beside every saved adapter: ``{"format": 1, "kind": ..., ...}``.
CONTROL_FILE = "langfield_control.json"
_FORMAT = 1
NORMALIZATIONS = ("channel", "sample")
#: Where ControlNeXt adds its control in the UNet's first down block (:class:`ControlNeXtConfig`).
INJECTIONS = ("after_block", "before_downsample")


# --------------------------------------------------------------------------- helpers


def _seeded(seed: int, make: Any) -> Any:
    """``make()`` under ``torch.manual_seed(seed)`` without touching the caller's CPU RNG."""
    seed = check_int_range(seed, "seed", lo=0, hi=2**63 - 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def _levels(vae_factor: int) -> int:
    vae_factor = check_int_range(vae_factor, "vae_factor", lo=1)
    if vae_factor & (vae_factor - 1):
        raise InputError(f"vae_factor: must be a power of two (the VAE halves the image log2(f) times), got {vae_factor}")
    return vae_factor.bit_length() - 1


def _check_unet(unet: Any, where: str) -> None:
    from diffusers import UNet2DConditionModel

    if not isinstance(unet, UNet2DConditionModel):
        raise InputError(f"{where}: expected a diffusers UNet2DConditionModel, got {type(unet).__name__}")
    cfg = unet.config
    if cfg.addition_embed_type is not None or cfg.class_embed_type is not None:
        raise InputError(
            f"{where}: UNets with addition_embed_type={cfg.addition_embed_type!r} / class_embed_type={cfg.class_embed_type!r} "
            "(SDXL-style micro-conditioning) are not supported by the SD 1.x/2.x control adapters"
        )


def hint_encoder_channels(vae_factor: int, channels: Optional[Sequence[int]] = None, *, where: str = "conditioning_embedding_out_channels") -> Tuple[int, ...]:
    """Channels of a ControlNet hint encoder that downsamples by exactly ``vae_factor``.

    The hint encoder (Zhang et al. 2023, Sec. 3.2: "a tiny network of four convolution layers")
    halves the condition ``len(channels) - 1`` times, so it needs ``log2(vae_factor) + 1`` entries.
    ``None`` takes the prefix of Stable Diffusion's ``(16, 32, 96, 256)`` (doubling beyond it).

    >>> hint_encoder_channels(8), hint_encoder_channels(4)
    ((16, 32, 96, 256), (16, 32, 96))
    """
    need = _levels(vae_factor) + 1
    if channels is None:
        base = [16, 32, 96, 256]
        while len(base) < need:
            base.append(base[-1] * 2)
        return tuple(base[:need])
    channels = tuple(int(check_int_range(c, f"{where}[{i}]", lo=1)) for i, c in enumerate(channels))
    if len(channels) != need:
        raise InputError(
            f"{where}: {len(channels)} entries downsample the condition by 2 ** {len(channels) - 1} = "
            f"{2 ** (len(channels) - 1)}, but the VAE factor is {vae_factor}; give {need} entries"
        )
    return channels


def _embeds(prompt: Union[PromptEmbeddings, Tensor], where: str = "prompt") -> Tensor:
    value = prompt.embeds if isinstance(prompt, PromptEmbeddings) else prompt
    if not isinstance(value, Tensor) or value.ndim != 3 or not value.is_floating_point():
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise InputError(f"{where}: expected prompt embeddings [B, T, D] (a tensor or PromptEmbeddings), got {got}")
    return value


# --------------------------------------------------------------------------- the common interface


class ControlAdapter(nn.Module):
    """A frozen base denoiser plus a trainable control; see the module docstring.

    Attributes:
        kind: ``"controlnet"``, ``"controlnet_xs"``, ``"controlnext"`` or ``"sd3_controlnet"``.
        vae_factor: pixels per latent pixel the condition is given at.
        condition_channels: ``Cc``.
        condition_space: ``"image"`` (``[B, Cc, h*f, w*f]`` in ``[0, 1]``) or ``"latent"`` (SD3).
    """

    kind: str = ""
    condition_space: str = "image"

    def __init__(self, vae_factor: int, condition_channels: int) -> None:
        super().__init__()
        _levels(vae_factor)
        self.vae_factor = int(vae_factor)
        self.condition_channels = int(check_int_range(condition_channels, "condition_channels", lo=1))

    # -- what is trained
    def trainable_parameter_names(self) -> List[str]:
        """Names (in ``self.named_parameters()``) of the parameters a training run updates."""
        return [name for name, p in self.named_parameters() if p.requires_grad]

    def trainable_parameters(self) -> List[nn.Parameter]:
        """The parameters a training run updates (everything else has ``requires_grad=False``)."""
        return [p for p in self.parameters() if p.requires_grad]

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    # -- the network
    def check_condition(self, condition: Any, noisy: Tensor, where: str = "condition") -> Tensor:
        """``condition`` as a float tensor ``[B, Cc, H, W]`` matching ``noisy`` ``[B, C, h, w]``."""
        if not isinstance(condition, Tensor) or condition.ndim != 4 or not condition.is_floating_point():
            got = tuple(condition.shape) if isinstance(condition, Tensor) else type(condition).__name__
            raise InputError(f"{where}: expected a float tensor [B, {self.condition_channels}, H, W], got {got}")
        b, c, hh, ww = condition.shape
        if c != self.condition_channels:
            raise InputError(f"{where}: has {c} channels, the {self.kind} adapter was built for {self.condition_channels}")
        if b != noisy.shape[0]:
            raise InputError(f"{where}: {b} conditions for a batch of {noisy.shape[0]} latents")
        factor = 1 if self.condition_space == "latent" else self.vae_factor
        want = (noisy.shape[2] * factor, noisy.shape[3] * factor)
        if (hh, ww) != want:
            space = "latents" if factor == 1 else f"images (latents {noisy.shape[2]}x{noisy.shape[3]} x VAE factor {factor})"
            raise InputError(f"{where}: is {hh}x{ww}, the {space} are {want[0]}x{want[1]}")
        return condition.to(device=noisy.device, dtype=noisy.dtype)

    def predict(self, noisy: Tensor, timesteps: Tensor, prompt: Union[PromptEmbeddings, Tensor], condition: Tensor, scale: float = 1.0) -> Tensor:
        """The base's prediction ``[B, C, h, w]`` for ``noisy`` at ``timesteps`` ``[B]`` with the
        control of ``condition`` added at strength ``scale``."""
        raise NotImplementedError

    @property
    def base(self) -> nn.Module:
        """The frozen base denoiser (the one a pipeline samples with)."""
        raise NotImplementedError

    # -- files
    def save(self, directory: Union[str, Path]) -> Path:
        """Write the adapter to ``directory`` (see the module docstring); returns it."""
        raise NotImplementedError

    def _write_record(self, directory: Path, **extra: Any) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        data = {"format": _FORMAT, "kind": self.kind, "vae_factor": self.vae_factor,
                "condition_channels": self.condition_channels, **extra}  # fmt: skip
        (directory / CONTROL_FILE).write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")


def _freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


# --------------------------------------------------------------------------- ControlNet


def build_controlnet(
    unet: Any,
    *,
    vae_factor: int,
    conditioning_channels: int = 3,
    conditioning_embedding_out_channels: Optional[Sequence[int]] = None,
    seed: int = 0,
) -> "ControlNetModel":
    """ControlNet's trainable copy of ``unet`` (diffusers' ``ControlNetModel.from_unet``).

    Copies ``conv_in``, the time embedding, every down block and the mid block with their
    weights (Zhang et al. 2023, Sec. 3.1: "a trainable copy"); new are the hint encoder (its
    last conv zero) and one zero-initialised 1x1 conv per skip and for the mid block (Eq. 2), so
    the fresh net adds exactly zero. The new layers are initialised under ``seed``.

    Args:
        unet: the base ``UNet2DConditionModel``.
        vae_factor: the VAE's downsampling ``f``; the hint encoder halves the condition
            ``log2(f)`` times to reach the latent resolution.
        conditioning_channels: ``Cc`` of the condition.
        conditioning_embedding_out_channels: hint encoder widths (``log2(f) + 1`` entries);
            ``None``: :func:`hint_encoder_channels`.

    Raises:
        InputError: not a UNet, or hint encoder channels that do not downsample by ``vae_factor``.
    """
    _check_unet(unet, "unet")
    channels = hint_encoder_channels(vae_factor, conditioning_embedding_out_channels)
    check_int_range(conditioning_channels, "conditioning_channels", lo=1)
    from diffusers import ControlNetModel

    net = _seeded(seed, lambda: ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=channels, conditioning_channels=int(conditioning_channels)))  # fmt: skip
    return net.to(device=unet.device, dtype=unet.dtype)


class ControlNetAdapter(ControlAdapter):
    """The frozen ``unet`` plus a trainable ``controlnet`` (diffusers ``ControlNetModel``)."""

    kind = "controlnet"

    def __init__(self, unet: Any, controlnet: Any, *, vae_factor: int) -> None:
        from diffusers import ControlNetModel

        _check_unet(unet, "unet")
        if not isinstance(controlnet, ControlNetModel):
            raise InputError(f"controlnet: expected a diffusers ControlNetModel, got {type(controlnet).__name__}")
        ucfg, ccfg = unet.config, controlnet.config
        for key in ("in_channels", "block_out_channels", "cross_attention_dim", "layers_per_block"):
            if tuple(_as_tuple(ucfg[key])) != tuple(_as_tuple(ccfg[key])):
                raise InputError(f"controlnet: its {key} {ccfg[key]} does not match the base UNet's {ucfg[key]} (built for another base)")
        hint = len(ccfg.conditioning_embedding_out_channels) - 1
        if 2**hint != vae_factor:
            raise InputError(
                f"controlnet: its hint encoder downsamples by {2 ** hint} but vae_factor is {vae_factor}; rebuild it with "
                f"build_controlnet(unet, vae_factor={vae_factor})"
            )
        super().__init__(vae_factor, int(ccfg.conditioning_channels))
        self.unet, self.controlnet = unet, controlnet
        _freeze(unet)
        controlnet.requires_grad_(True)

    @property
    def base(self) -> nn.Module:
        return self.unet

    def residuals(self, noisy: Tensor, timesteps: Tensor, embeds: Tensor, condition: Tensor, scale: float) -> Tuple[Tuple[Tensor, ...], Tensor]:
        """The controlnet's ``(down-block residuals, mid-block residual)``, already multiplied by ``scale``."""
        return self.controlnet(noisy, timesteps, encoder_hidden_states=embeds, controlnet_cond=condition,
                               conditioning_scale=float(scale), return_dict=False)  # fmt: skip

    def predict(self, noisy, timesteps, prompt, condition, scale=1.0):
        embeds = _embeds(prompt)
        condition = self.check_condition(condition, noisy)
        down, mid = self.residuals(noisy, timesteps, embeds, condition, scale)
        return self.unet(noisy, timesteps, encoder_hidden_states=embeds, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid).sample  # fmt: skip

    def save(self, directory):
        out = Path(directory)
        self.controlnet.save_pretrained(str(out / "controlnet"), safe_serialization=True)
        self._write_record(out)
        return out


def _as_tuple(value: Any) -> Tuple[Any, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


# --------------------------------------------------------------------------- ControlNet-XS


def build_controlnet_xs(
    unet: Any,
    size_ratio: float,
    *,
    vae_factor: int,
    conditioning_channels: int = 3,
    conditioning_embedding_out_channels: Optional[Sequence[int]] = None,
    seed: int = 0,
) -> "UNetControlNetXSModel":
    """ControlNet-XS around ``unet``: diffusers' ``UNetControlNetXSModel`` (base weights copied in).

    The control encoder has ``size_ratio`` times the base's channels per block (the paper's
    "XS" sizes: 0.0125-0.25 of the base; Zavadski et al. 2023, Sec. 3-4). diffusers' implementation
    (in its deprecated folder, but working) hard-codes 4 latent channels in and out and 2 layers per
    block, so only such a base is accepted.

    Raises:
        InputError: a UNet with other latent channels or layers per block, a ratio that gives
            channels the attention heads or GroupNorm cannot split, or a hint encoder that does
            not downsample by ``vae_factor``.
    """
    _check_unet(unet, "unet")
    cfg = unet.config
    if int(cfg.in_channels) != 4 or int(cfg.out_channels) != 4 or int(cfg.layers_per_block) != 2:
        raise InputError(
            f"unet: ControlNet-XS (diffusers' UNetControlNetXSModel) needs a 4-channel latent UNet with layers_per_block=2; "
            f"this one has in_channels={cfg.in_channels}, out_channels={cfg.out_channels}, layers_per_block={cfg.layers_per_block}"
        )
    size_ratio = check_finite_number(size_ratio, "size_ratio", lo=0.0, hi=1.0, lo_inclusive=False)
    channels = hint_encoder_channels(vae_factor, conditioning_embedding_out_channels)
    ctrl = [int(b * size_ratio) for b in cfg.block_out_channels]
    heads = _as_tuple(cfg.attention_head_dim)
    heads = heads * len(ctrl) if len(heads) == 1 else heads
    bad = [c for c, h in zip(ctrl, heads) if c < 1 or c % int(h)]
    if bad:
        raise InputError(
            f"size_ratio: {size_ratio} gives control channels {ctrl}; each must be a positive multiple of the base's "
            f"attention heads {list(heads)}"
        )
    from diffusers import ControlNetXSAdapter, UNetControlNetXSModel

    def make():
        adapter = ControlNetXSAdapter.from_unet(unet, size_ratio=size_ratio, conditioning_channels=int(conditioning_channels),
                                                conditioning_embedding_out_channels=channels)  # fmt: skip
        built = UNetControlNetXSModel.from_unet(unet, adapter)
        # diffusers 0.42's from_unet gives the control mid block other GroupNorm groups than its own
        # saved config rebuilds (8 vs 2 on the tiny test UNet), so a saved model would not reload to
        # the same function. Rebuild from the config now: what trains is what from_pretrained loads.
        model = UNetControlNetXSModel.from_config(built.config)
        model.load_state_dict(built.state_dict())
        return model

    try:
        model = _seeded(seed, make)
    except ValueError as err:  # e.g. GroupNorm groups that do not divide the control channels
        raise InputError(f"size_ratio: diffusers cannot build ControlNet-XS with ratio {size_ratio}: {err}") from None
    return model.to(device=unet.device, dtype=unet.dtype)


class XSControlAdapter(ControlAdapter):
    """ControlNet-XS: a ``UNetControlNetXSModel`` (base parts frozen with ``freeze_unet_params``).

    Holds its own copy of the base weights (diffusers copies them in ``from_unet``). Its base path
    is not bit-identical to the ``UNet2DConditionModel`` it was copied from: on the tiny test UNet
    the outputs differ by ~7e-5 (1e-4 of their scale; the same in float64, so a layer option of
    diffusers' re-implementation, not rounding). ``scale = 0`` is exactly that base path.
    """

    kind = "controlnet_xs"

    def __init__(self, model: Any, *, vae_factor: int) -> None:
        from diffusers import UNetControlNetXSModel

        if not isinstance(model, UNetControlNetXSModel):
            raise InputError(f"model: expected a diffusers UNetControlNetXSModel (build_controlnet_xs), got {type(model).__name__}")
        hint = len(model.config.ctrl_conditioning_embedding_out_channels) - 1
        if 2**hint != vae_factor:
            raise InputError(f"model: its hint encoder downsamples by {2 ** hint} but vae_factor is {vae_factor}")
        super().__init__(vae_factor, int(model.config.ctrl_conditioning_channels))
        self.model = model
        model.requires_grad_(True)
        model.freeze_unet_params()

    @property
    def base(self) -> nn.Module:
        return self.model

    def predict(self, noisy, timesteps, prompt, condition, scale=1.0):
        embeds = _embeds(prompt)
        condition = self.check_condition(condition, noisy)
        return self.model(noisy, timesteps, encoder_hidden_states=embeds, controlnet_cond=condition,
                          conditioning_scale=float(scale)).sample  # fmt: skip

    def save(self, directory):
        out = Path(directory)
        self.model.save_pretrained(str(out / "unet_controlnet_xs"), safe_serialization=True)
        self._write_record(out)
        return out


# --------------------------------------------------------------------------- ControlNeXt


def cross_normalize(control: Tensor, main: Tensor, *, mode: str = "channel", eps: float = 1e-5) -> Tensor:
    """ControlNeXt's cross normalisation (Peng et al. 2024, Sec. 3.2): ``control`` rescaled to ``main``'s statistics.

    ``out = (c - mean(c)) * sqrt(var(m) + eps) / sqrt(var(c) + eps) + mean(m)``, with means and
    (biased) variances per sample and channel over ``H, W`` (``mode="channel"``) or per sample over
    ``C, H, W`` (``mode="sample"``, the authors' SD 1.5 code). The control features then have the
    main branch's mean and scale, so adding them neither explodes nor vanishes, which is what
    lets ControlNeXt drop the zero convolutions. Gradients flow into both arguments.

    Args:
        control: ``[B, C, H, W]`` the control features.
        main: ``[B, C, H, W]`` the base's hidden state at the injection point.

    >>> c, m = torch.randn(2, 3, 4, 4), 5 + 2 * torch.randn(2, 3, 4, 4)
    >>> out = cross_normalize(c, m)
    >>> torch.allclose(out.mean((2, 3)), m.mean((2, 3)), atol=1e-5)
    True
    """
    check_choice(mode, "mode", NORMALIZATIONS)
    if control.shape != main.shape:
        raise InputError(f"control: shape {tuple(control.shape)} must equal the main features' {tuple(main.shape)}")
    dims = (2, 3) if mode == "channel" else (1, 2, 3)
    mean_c, var_c = control.mean(dims, keepdim=True), control.var(dims, keepdim=True, unbiased=False)
    mean_m, var_m = main.mean(dims, keepdim=True), main.var(dims, keepdim=True, unbiased=False)
    return (control - mean_c) * torch.sqrt((var_m + eps) / (var_c + eps)) + mean_m


def cross_normalize_reference(control: Tensor, main: Tensor, *, mode: str = "channel", eps: float = 1e-5) -> Tensor:
    """Slow, readable twin of :func:`cross_normalize`: explicit loops over samples (and channels)."""
    out = torch.empty_like(control)
    b, c = control.shape[:2]
    groups = [(i, slice(j, j + 1)) for i in range(b) for j in range(c)] if mode == "channel" else [(i, slice(0, c)) for i in range(b)]
    for i, ch in groups:
        x, y = control[i, ch].reshape(-1), main[i, ch].reshape(-1)
        n = x.numel()
        mx, my = x.sum() / n, y.sum() / n
        vx, vy = ((x - mx) ** 2).sum() / n, ((y - my) ** 2).sum() / n
        out[i, ch] = (control[i, ch] - mx) / torch.sqrt(vx + eps) * torch.sqrt(vy + eps) + my
    return out


@dataclass(frozen=True)
class ControlNeXtConfig:
    """Architecture of a :class:`ControlNeXtAdapter`.

    Attributes:
        condition_channels: ``Cc`` of the condition.
        widths: channels of the encoder's stages: a 3x3 conv to ``widths[0]``, then one stride-2 3x3
            conv per halving (stage ``i`` to ``widths[min(i, -1)]``), then a 1x1 conv to the
            injection point's channels ``D``. ``None``: ``(D/2, D, 2D, 2D, ...)`` as deep as needed.
        normalization: the statistics of :func:`cross_normalize`: ``"sample"`` (per sample over
            ``C, H, W``, the authors' released code; the default since it scored higher on every
            validation and test setting measured, README) or ``"channel"`` (per sample and channel
            over ``H, W``; the default of langfield before 2026-12-06).
        eps: :func:`cross_normalize`'s ``eps``.
        train_base: substrings of the base UNet's parameter names that are trained too (Sec. 3.1:
            "a small subset of the pretrained model"); default the attention output projections.
            ``()``: train only the encoder.
        time_conditioned: each halving stage is a ResNet block (diffusers' ``ResnetBlock2D``:
            GroupNorm, SiLU, two 3x3 convs, the timestep embedding added between them) followed by
            the stride-2 conv, fed the base's own timestep embedding at the injection point -- the
            module of the authors' released code (a timestep-conditioned stack of ResNet blocks).
            ``False``: plain conv + SiLU stages that see the condition only (the layout saved by
            earlier langfield versions, which :func:`load_control_adapter` still reads).
        groups: GroupNorm groups of the ResNet blocks (every stage width must be a multiple).
        injection: the one place the control is added (the paper adds it once, at a single block of
            the denoising branch, and leaves which block a choice): ``"after_block"``, the
            output of the UNet's first down block, after its downsampler (the authors' released SD
            1.5 / SDXL code: 1 / 16 of the image's width there, a 32 x 32 grid at 512 px), or
            ``"before_downsample"``, the same block's output at the latent's own resolution, just
            before that downsampler (twice as fine: on the toy world's 32 px images the first point
            is an 8 x 8 grid). Both control the matching skip tensor too.
    """

    condition_channels: int = 3
    widths: Optional[Tuple[int, ...]] = None
    normalization: str = "sample"
    eps: float = 1e-5
    train_base: Tuple[str, ...] = ("attn1.to_out", "attn2.to_out")
    time_conditioned: bool = True
    groups: int = 4
    injection: str = "after_block"

    def __post_init__(self) -> None:
        check_field_types(self)
        check_int_range(self.condition_channels, "ControlNeXtConfig.condition_channels", lo=1)
        check_choice(self.normalization, "ControlNeXtConfig.normalization", NORMALIZATIONS)
        check_choice(self.injection, "ControlNeXtConfig.injection", INJECTIONS)
        check_finite_number(self.eps, "ControlNeXtConfig.eps", lo=0.0, lo_inclusive=False)
        check_int_range(self.groups, "ControlNeXtConfig.groups", lo=1)
        if self.widths is not None:
            if not self.widths:
                raise InputError("ControlNeXtConfig.widths: need at least one entry (or None)")
            for i, w in enumerate(self.widths):
                check_int_range(w, f"ControlNeXtConfig.widths[{i}]", lo=1)
                if self.time_conditioned and w % self.groups:
                    raise InputError(f"ControlNeXtConfig.widths[{i}]: {w} is not a multiple of groups={self.groups} (GroupNorm)")


class ControlNeXtEncoder(nn.Module):
    """The light condition encoder: ``[B, Cc, H, W]`` (+ timestep embedding ``[B, T]``) -> ``[B, D, H / 2**k, W / 2**k]``.

    A 3x3 conv + SiLU stem, then ``k`` halving stages, then a 1x1 conv to ``D`` (the base's
    channels at the injection point). A stage is a timestep-conditioned ResNet block followed by a
    stride-2 3x3 conv (``time_channels > 0``), or a stride-2 3x3 conv + SiLU (``time_channels = 0``,
    no timestep). Default init (not zero: cross normalisation sets the scale, Sec. 3.2)."""

    def __init__(self, in_channels: int, out_channels: int, halvings: int, widths: Sequence[int], *,
                 time_channels: int = 0, groups: int = 4) -> None:  # fmt: skip
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1), nn.SiLU())
        self.time_channels = int(time_channels)
        self.blocks = nn.ModuleList()
        self.downs = nn.ModuleList()
        prev = widths[0]
        for i in range(halvings):
            w = widths[min(i + 1, len(widths) - 1)]
            if self.time_channels:
                from diffusers.models.resnet import ResnetBlock2D

                self.blocks.append(ResnetBlock2D(in_channels=prev, out_channels=w, temb_channels=self.time_channels, groups=groups))
                self.downs.append(nn.Conv2d(w, w, 3, stride=2, padding=1))
            else:
                self.downs.append(nn.Sequential(nn.Conv2d(prev, w, 3, stride=2, padding=1), nn.SiLU()))
            prev = w
        self.head = nn.Conv2d(prev, out_channels, 1)
        self.halvings = halvings

    def forward(self, condition: Tensor, temb: Optional[Tensor] = None) -> Tensor:
        x = self.stem(condition)
        if self.time_channels:
            if temb is None or temb.ndim != 2 or temb.shape[0] != x.shape[0] or temb.shape[1] != self.time_channels:
                raise InputError(f"temb: expected a [{x.shape[0]}, {self.time_channels}] timestep embedding, "
                                 f"got {getattr(temb, 'shape', temb)}")  # fmt: skip
            for block, down in zip(self.blocks, self.downs):
                x = down(block(x, temb))
        else:
            for down in self.downs:
                x = down(x)
        return self.head(x)


def _default_widths(halvings: int, channels: int) -> Tuple[int, ...]:
    """``(D/2, D, 2D, 2D, ...)`` for injection channels ``D`` (toy UNet, ``D = 32``: 16, 32, 64, 64)."""
    return tuple(max(4, min(channels * 2**i // 2, 2 * channels)) for i in range(halvings + 1))


def _legacy_encoder_keys(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """An encoder state saved as one ``net`` Sequential (conv, SiLU, [stride-2 conv, SiLU] x k, 1x1 conv:
    ``net.0``, ``net.2``, ..., ``net.2k+2``) renamed to ``stem.0`` / ``downs.i.0`` / ``head``; others unchanged."""
    convs = sorted({int(k.split(".")[1]) for k in state if k.startswith("net.")})
    if not convs:
        return state
    names = {convs[0]: "stem.0", convs[-1]: "head", **{c: f"downs.{i}.0" for i, c in enumerate(convs[1:-1])}}
    return {f"{names[int(k.split('.')[1])]}.{k.split('.', 2)[2]}": v for k, v in state.items()}


def _time_channels(unet: Any) -> int:
    """Width of the base's timestep embedding (what its ResNet blocks receive as ``temb``)."""
    return int(unet.time_embedding.linear_2.out_features)


class ControlNeXtAdapter(ControlAdapter):
    """ControlNeXt on a UNet: encoder + cross normalisation, injected by a forward hook.

    Hooks on ``unet.down_blocks[0]``: while :meth:`injecting` is active they replace the block's
    hidden state ``h`` at ``config.injection`` -- its output (``"after_block"``) or the input of its
    downsampler (``"before_downsample"``) -- and the skip tensor that is that same ``h`` by
    ``h + scale * cross_normalize(encode(condition, temb), h)``, ``temb`` being the timestep
    embedding the block itself received (so the encoder sees the noise level of every UNet call);
    otherwise they do nothing, so the UNet is unchanged for every other caller. (The authors'
    released SD 1.5 code adds the control after the block's skip tensors were taken, so there the
    up path's matching skip stays uncontrolled; here it carries the control too. The paper's text
    fixes neither.) The trainable parameters are the encoder and the base's parameters whose names
    contain one of ``config.train_base``; the rest of the base is frozen.
    Training therefore changes that subset *of the given UNet in place*; :meth:`save` stores it
    and :func:`load_control_adapter` writes it back into a base.

    Size (the toy world's UNet, ``block_out_channels=(32, 64, 128)``, VAE factor 4, 3-channel
    condition): the timestep-conditioned encoder has 252,640 parameters, the 44 attention
    ``to_out`` tensors 85,184, so 337,824 are trained against ControlNet's 2,368,464 (14.3 %) and
    ControlNet-XS's 475,128 at ``size_ratio=0.25``; the base has 4,862,692. (Without timestep
    conditioning: encoder 62,592, 147,776 in all, 6.2 %.)
    """

    kind = "controlnext"

    def __init__(self, unet: Any, config: ControlNeXtConfig = ControlNeXtConfig(), *, vae_factor: int, seed: int = 0) -> None:
        _check_unet(unet, "unet")
        if not isinstance(config, ControlNeXtConfig):
            raise InputError(f"config: expected a ControlNeXtConfig, got {type(config).__name__}")
        super().__init__(vae_factor, config.condition_channels)
        block = unet.down_blocks[0]
        downsamplers = getattr(block, "downsamplers", None)
        if config.injection == "before_downsample" and not downsamplers:
            raise InputError("config.injection: 'before_downsample' needs a first down block with a downsampler; this UNet's "
                             "first block keeps the latent's resolution, so 'after_block' is already there")  # fmt: skip
        extra = 1 if downsamplers and config.injection == "after_block" else 0
        halvings = _levels(vae_factor) + extra
        widths = config.widths if config.widths is not None else _default_widths(halvings, int(unet.config.block_out_channels[0]))
        self.config = config
        self.unet = unet
        self.injection_channels = int(unet.config.block_out_channels[0])
        self.injection_factor = 2 ** halvings  # image pixels per pixel at the injection point
        time_channels = _time_channels(unet) if config.time_conditioned else 0
        if time_channels and any(w % config.groups for w in widths):
            raise InputError(f"config.groups: {config.groups} does not divide the encoder widths {list(widths)} (GroupNorm); "
                             "set widths or groups")  # fmt: skip
        self.encoder = _seeded(seed, lambda: ControlNeXtEncoder(config.condition_channels, self.injection_channels, halvings, widths,
                                                                time_channels=time_channels, groups=config.groups))  # fmt: skip
        self.encoder.to(device=unet.device, dtype=unet.dtype)
        _freeze(unet)
        self.base_names: List[str] = []
        # the subset's values in the base as given (before training or loading change them): guess mode's bare base
        self._given: Dict[str, Tensor] = {}
        for name, p in unet.named_parameters():
            if any(pattern in name for pattern in config.train_base):
                p.requires_grad_(True)
                self.base_names.append(name)
                self._given[name] = p.detach().clone()
        if config.train_base and not self.base_names:
            raise InputError(f"config.train_base: no parameter of the UNet matches {list(config.train_base)}")
        self._condition: Optional[Tensor] = None
        self._scale = 0.0
        self._temb: Optional[Tensor] = None  # the block's timestep embedding in the current call (before_downsample)
        self._replaced: Optional[Tuple[Tensor, Tensor]] = None  # (h, controlled h) at the downsampler's input
        self._hooks = [block.register_forward_hook(self._inject, with_kwargs=True)]
        if config.injection == "before_downsample":
            self._hooks.append(block.register_forward_pre_hook(self._remember_temb, with_kwargs=True))
            self._hooks.append(downsamplers[0].register_forward_pre_hook(self._inject_before_downsample, with_kwargs=True))

    @property
    def base(self) -> nn.Module:
        return self.unet

    def remove_hook(self) -> None:
        """Detach the hooks from the UNet (the adapter stops working)."""
        for hook in self._hooks:
            hook.remove()

    def _active(self) -> bool:
        return self._condition is not None and self._scale != 0.0

    @staticmethod
    def _block_temb(args: Any, kwargs: Dict[str, Any]) -> Optional[Tensor]:
        """The timestep embedding a down block's call received (``block(hidden, temb, ...)`` or ``temb=``)."""
        return kwargs.get("temb", args[1] if len(args) > 1 else None)

    def _remember_temb(self, module: nn.Module, args: Any, kwargs: Dict[str, Any]) -> None:
        self._temb = self._block_temb(args, kwargs)
        self._replaced = None

    def _inject_before_downsample(self, module: nn.Module, args: Any, kwargs: Dict[str, Any]) -> Any:
        if not self._active():
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        new = self._controlled(hidden, self._temb)
        self._replaced = (hidden, new)
        if args:
            return (new, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": new}

    def _inject(self, module: nn.Module, args: Any, kwargs: Dict[str, Any], output: Any) -> Any:
        if not self._active():
            return None
        hidden, skips = output
        if self.config.injection == "before_downsample":
            replaced, self._replaced, self._temb = self._replaced, None, None
            if replaced is None:
                raise InputError("unet.down_blocks[0]: its downsampler was not called, so ControlNeXt's control was not added")
            old, new = replaced
            return hidden, tuple(new if skip is old else skip for skip in skips)
        new = self._controlled(hidden, self._block_temb(args, kwargs))
        skips = tuple(skips)
        if skips and skips[-1] is hidden:
            skips = skips[:-1] + (new,)
        return new, skips

    def _controlled(self, hidden: Tensor, temb: Optional[Tensor]) -> Tensor:
        """``hidden + scale * cross_normalize(encode(condition, temb), hidden)`` for the UNet batch ``hidden``."""
        cond = self._condition
        if cond.shape[0] != hidden.shape[0]:
            if hidden.shape[0] % cond.shape[0]:
                raise InputError(f"condition: {cond.shape[0]} conditions for a UNet batch of {hidden.shape[0]}")
            cond = cond.repeat(hidden.shape[0] // cond.shape[0], 1, 1, 1)  # classifier-free guidance doubles the batch
        feats = self.encode(cond, temb)
        if feats.shape[1:] != hidden.shape[1:]:
            raise InputError(f"condition: encoded to {tuple(feats.shape[1:])}, the UNet's first block gives {tuple(hidden.shape[1:])}")
        # statistics in float32 (a float16 variance over a feature map loses most of its digits)
        normed = cross_normalize(feats.float(), hidden.float(), mode=self.config.normalization, eps=self.config.eps)
        return hidden + self._scale * normed.to(hidden.dtype)

    @contextlib.contextmanager
    def injecting(self, condition: Tensor, scale: float = 1.0) -> Iterator[None]:
        """Inside the block every UNet call adds the encoded ``condition`` (``[B, Cc, H, W]``, checked
        by :meth:`~ControlAdapter.check_condition`) at ``scale``; it is encoded in each call, with that
        call's timestep embedding."""
        self._condition, self._scale = condition, float(scale)
        try:
            yield
        finally:
            self._condition, self._scale = None, 0.0

    @contextlib.contextmanager
    def bare_base(self) -> Iterator[None]:
        """Inside the block the UNet is the base as given: no injection, and the trained subset back at the
        values it held when this adapter was built (before :func:`~langfield.runs.controlnet.train_control`
        or :func:`load_control_adapter` wrote the trained ones); both restored on exit. For sampling (no
        autograd through the swap): guess mode's unconditional branch (:func:`generate_controlled`)."""
        params = dict(self.unet.named_parameters())
        with torch.no_grad():
            trained = {n: params[n].detach().clone() for n in self.base_names}
            for n in self.base_names:
                params[n].copy_(self._given[n])
        scale, self._scale = self._scale, 0.0
        try:
            yield
        finally:
            self._scale = scale
            with torch.no_grad():
                for n in self.base_names:
                    params[n].copy_(trained[n])

    def encode(self, condition: Tensor, temb: Optional[Tensor] = None) -> Tensor:
        """``[B, Cc, H, W]`` (+ the base's timestep embedding ``[B, T]`` when time-conditioned) ->
        features ``[B, D, H / k, W / k]`` at the injection point."""
        if temb is not None:
            temb = temb.to(condition.dtype)
        return self.encoder(condition, temb if self.config.time_conditioned else None)

    def predict(self, noisy, timesteps, prompt, condition, scale=1.0):
        embeds = _embeds(prompt)
        condition = self.check_condition(condition, noisy)
        with self.injecting(condition, scale):
            return self.unet(noisy, timesteps, encoder_hidden_states=embeds).sample

    def adapter_state(self) -> Dict[str, Tensor]:
        """What :meth:`save` writes: ``encoder.*`` and the trained base subset as ``base.*``."""
        state = {f"encoder.{k}": v.detach().cpu().contiguous() for k, v in self.encoder.state_dict().items()}
        params = dict(self.unet.named_parameters())
        state.update({f"base.{k}": params[k].detach().cpu().contiguous() for k in self.base_names})
        return state

    def save(self, directory):
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        save_file(self.adapter_state(), str(out / "controlnext.safetensors"))
        cfg = asdict(self.config)
        cfg["widths"] = None if cfg["widths"] is None else list(cfg["widths"])
        cfg["train_base"] = list(cfg["train_base"])
        (out / "controlnext.json").write_text(json.dumps(cfg, indent=2, sort_keys=True), encoding="utf-8")
        self._write_record(out)
        return out


def build_controlnext(unet: Any, *, vae_factor: int, config: ControlNeXtConfig = ControlNeXtConfig(), seed: int = 0) -> ControlNeXtAdapter:
    """A :class:`ControlNeXtAdapter` on ``unet`` (its encoder initialised under ``seed``)."""
    return ControlNeXtAdapter(unet, config, vae_factor=vae_factor, seed=seed)


# --------------------------------------------------------------------------- SD3


def build_sd3_controlnet(transformer: Any, num_layers: int, *, condition_channels: Optional[int] = None, seed: int = 0) -> "SD3ControlNetModel":
    """SD3 ControlNet: diffusers' ``SD3ControlNetModel.from_transformer``.

    Copies the patch/time/text embeddings and the first ``num_layers`` joint blocks of
    ``transformer``; the VAE-encoded control image enters through a zero-initialised patch
    embedding and every block's output through a zero-initialised linear layer.

    Args:
        transformer: the base ``SD3Transformer2DModel``.
        num_layers: joint blocks copied, ``1 .. transformer.num_layers - 1`` (the base's last block
            is "context pre-only" and has another shape).
        condition_channels: latent channels of the encoded condition; ``None``: the transformer's
            ``in_channels`` (a condition image encoded by the same VAE).
    """
    from diffusers import SD3ControlNetModel, SD3Transformer2DModel

    if not isinstance(transformer, SD3Transformer2DModel):
        raise InputError(f"transformer: expected a diffusers SD3Transformer2DModel, got {type(transformer).__name__}")
    total = int(transformer.config.num_layers)
    num_layers = check_int_range(num_layers, "num_layers", lo=1, hi=max(1, total - 1))
    if total < 2:
        raise InputError(f"transformer: has {total} joint block(s); SD3 ControlNet copies up to num_layers - 1, so the base needs >= 2")
    in_ch = int(transformer.config.in_channels)
    extra = 0 if condition_channels is None else int(check_int_range(condition_channels, "condition_channels", lo=1)) - in_ch
    if extra < 0:
        raise InputError(f"condition_channels: at least the transformer's in_channels {in_ch}, got {condition_channels}")
    net = _seeded(seed, lambda: SD3ControlNetModel.from_transformer(transformer, num_layers=num_layers, num_extra_conditioning_channels=extra))
    return net.to(device=transformer.device, dtype=transformer.dtype)


class SD3ControlNetAdapter(ControlAdapter):
    """The frozen SD3 ``transformer`` plus a trainable ``controlnet`` (``SD3ControlNetModel``).

    :meth:`predict` takes the condition VAE-encoded (``[B, C, h, w]``, scaled and shifted like the
    training latents) and ``prompt`` as :class:`PromptEmbeddings` (tokens + pooled)."""

    kind = "sd3_controlnet"
    condition_space = "latent"

    def __init__(self, transformer: Any, controlnet: Any, *, vae_factor: int) -> None:
        from diffusers import SD3ControlNetModel, SD3Transformer2DModel

        if not isinstance(transformer, SD3Transformer2DModel):
            raise InputError(f"transformer: expected a diffusers SD3Transformer2DModel, got {type(transformer).__name__}")
        if not isinstance(controlnet, SD3ControlNetModel):
            raise InputError(f"controlnet: expected a diffusers SD3ControlNetModel, got {type(controlnet).__name__}")
        for key in ("in_channels", "patch_size", "attention_head_dim", "num_attention_heads", "joint_attention_dim"):
            if transformer.config[key] != controlnet.config[key]:
                raise InputError(f"controlnet: its {key} {controlnet.config[key]} does not match the transformer's {transformer.config[key]}")
        super().__init__(vae_factor, int(controlnet.config.in_channels) + int(controlnet.config.extra_conditioning_channels))
        self.transformer, self.controlnet = transformer, controlnet
        _freeze(transformer)
        controlnet.requires_grad_(True)

    @property
    def base(self) -> nn.Module:
        return self.transformer

    def predict(self, noisy, timesteps, prompt, condition, scale=1.0):
        if not isinstance(prompt, PromptEmbeddings):
            raise InputError("prompt: SD3 needs PromptEmbeddings (token embeddings and the pooled vector)")
        condition = self.check_condition(condition, noisy)
        blocks = self.controlnet(hidden_states=noisy, controlnet_cond=condition, conditioning_scale=float(scale),
                                 encoder_hidden_states=prompt.embeds, pooled_projections=prompt.pooled, timestep=timesteps,
                                 return_dict=False)[0]  # fmt: skip
        return self.transformer(hidden_states=noisy, encoder_hidden_states=prompt.embeds, pooled_projections=prompt.pooled,
                                timestep=timesteps, block_controlnet_hidden_states=blocks).sample  # fmt: skip

    def save(self, directory):
        out = Path(directory)
        self.controlnet.save_pretrained(str(out / "controlnet"), safe_serialization=True)
        self._write_record(out)
        return out


# --------------------------------------------------------------------------- loading


def load_control_adapter(directory: Union[str, Path], base: Any) -> ControlAdapter:
    """An adapter saved by :meth:`ControlAdapter.save`, attached to ``base``.

    Args:
        directory: the folder :meth:`ControlAdapter.save` wrote.
        base: the base denoiser: a ``UNet2DConditionModel`` (ControlNet, ControlNeXt — the saved
            base subset is written *into it*), an ``SD3Transformer2DModel`` (SD3), or ``None`` for
            ControlNet-XS (which saved its own copy of the base).

    Raises:
        InputError: a folder without :data:`CONTROL_FILE`, an unknown format or kind, or a base that
            does not match.
    """
    path = Path(directory)
    record_file = path / CONTROL_FILE
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"directory: {record_file} cannot be read as a control adapter record ({err})") from None
    if not isinstance(record, dict) or record.get("format") != _FORMAT:
        raise InputError(f"directory: {record_file} has an unknown format (this langfield reads format {_FORMAT})")
    kind, factor = record.get("kind"), int(record.get("vae_factor", 0))
    if kind == "controlnet":
        from diffusers import ControlNetModel

        net = ControlNetModel.from_pretrained(str(path / "controlnet"))
        return ControlNetAdapter(base, net.to(device=base.device, dtype=base.dtype), vae_factor=factor)
    if kind == "controlnet_xs":
        from diffusers import UNetControlNetXSModel

        return XSControlAdapter(UNetControlNetXSModel.from_pretrained(str(path / "unet_controlnet_xs")), vae_factor=factor)
    if kind == "sd3_controlnet":
        from diffusers import SD3ControlNetModel

        net = SD3ControlNetModel.from_pretrained(str(path / "controlnet"))
        return SD3ControlNetAdapter(base, net.to(device=base.device, dtype=base.dtype), vae_factor=factor)
    if kind == "controlnext":
        from safetensors.torch import load_file

        cfg = json.loads((path / "controlnext.json").read_text(encoding="utf-8"))
        cfg["widths"] = None if cfg.get("widths") is None else tuple(cfg["widths"])
        cfg["train_base"] = tuple(cfg.get("train_base", ()))
        cfg.setdefault("time_conditioned", False)  # saved before the encoder took the timestep
        cfg.setdefault("normalization", "channel")  # the default before "sample"
        adapter = ControlNeXtAdapter(base, ControlNeXtConfig(**cfg), vae_factor=factor)
        state = load_file(str(path / "controlnext.safetensors"))
        encoder = _legacy_encoder_keys({k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")})
        adapter.encoder.load_state_dict(encoder)
        params = dict(base.named_parameters())
        subset = {k[len("base."):]: v for k, v in state.items() if k.startswith("base.")}
        if sorted(subset) != sorted(adapter.base_names):
            raise InputError(f"base: its trainable subset {len(adapter.base_names)} tensors does not match the saved {len(subset)}")
        with torch.no_grad():
            for k, v in subset.items():
                if params[k].shape != v.shape:
                    raise InputError(f"base: parameter {k} is {tuple(params[k].shape)}, the saved one {tuple(v.shape)}")
                params[k].copy_(v)
        return adapter
    raise InputError(f"directory: {record_file} names an unknown adapter kind {kind!r}")


# --------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class ControlRecord:
    """How the control was applied in :func:`generate_controlled` (JSON-able with :meth:`to_dict`).

    Attributes:
        kinds: per adapter, its :attr:`ControlAdapter.kind`.
        weights: per adapter, ``controlnet_conditioning_scale``.
        guidance_start, guidance_end: per adapter, the fraction of the steps where control starts/ends.
        pipeline: the diffusers pipeline class that ran.
        condition_shapes: per adapter, ``[B, Cc, H, W]``.
        guess_mode: diffusers' guess mode was on (module docstring).
    """

    kinds: Tuple[str, ...]
    weights: Tuple[float, ...]
    guidance_start: Tuple[float, ...]
    guidance_end: Tuple[float, ...]
    pipeline: str
    condition_shapes: Tuple[Tuple[int, ...], ...]
    guess_mode: bool = False

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        for key in ("kinds", "weights", "guidance_start", "guidance_end"):
            data[key] = list(data[key])
        data["condition_shapes"] = [list(shape) for shape in data["condition_shapes"]]
        return data


@dataclass(frozen=True)
class ControlledGenerationResult:
    """Images ``[N, H, W, 3]`` float32 CPU in ``[0, 1]``, the :class:`~langfield.generation.sampling.GenerationRecord`
    of the sampling and the :class:`ControlRecord` of the control."""

    images: Tensor
    record: Any
    control: ControlRecord


def _per_adapter(value: Any, n: int, where: str, lo: float, hi: float) -> Tuple[float, ...]:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n:
        raise InputError(f"{where}: {len(values)} values for {n} adapters; give one or {n}")
    return tuple(check_finite_number(v, f"{where}[{i}]", lo=lo, hi=hi) for i, v in enumerate(values))


def _same_base(adapter: ControlAdapter, denoiser: nn.Module, where: str) -> None:
    if adapter.kind == "controlnext":
        if adapter.base is not denoiser:
            raise InputError(f"{where}: a ControlNeXt adapter hooks its own UNet; build the pipeline with adapter.unet as its unet")
        return
    base_cfg = adapter.base.config
    if adapter.kind == "sd3_controlnet":
        keys: Tuple[str, ...] = ("in_channels", "patch_size", "num_attention_heads", "attention_head_dim", "joint_attention_dim")
    else:
        keys = ("block_out_channels", "cross_attention_dim", "in_channels")
    for key in keys:
        mine, theirs = base_cfg.get(key), denoiser.config.get(key)
        if mine is not None and theirs is not None and _as_tuple(mine) != _as_tuple(theirs):
            raise InputError(f"{where}: built for a base with {key}={mine}, the pipeline's has {theirs}")


def generate_controlled(
    model: Any,
    prompts: Any,
    conditions: Union[Tensor, Sequence[Tensor]],
    *,
    adapters: Union[ControlAdapter, Sequence[ControlAdapter]],
    weights: Union[float, Sequence[float]] = 1.0,
    guidance_start: Union[float, Sequence[float]] = 0.0,
    guidance_end: Union[float, Sequence[float]] = 1.0,
    negative: Any = None,
    steps: int = 30,
    guidance: float = 5.0,
    seed: int = 0,
    scheduler: Optional[str] = None,
    latents: Optional[Tensor] = None,
    guess_mode: bool = False,
) -> ControlledGenerationResult:
    """One image per prompt, steered by one or several adapters (see the module docstring).

    Args:
        model: the base :class:`~langfield.generation.loading.GenerationPipeline` (or what
            :func:`~langfield.generation.sampling.as_generation_pipeline` takes).
        prompts: ``B`` strings (embedded by the pipeline's own text encoders when it has them, as
            real SD does, else by its MiniLM spec) or embeddings.
        conditions: ``[B, Cc, H, W]`` in ``[0, 1]`` (one adapter) or one such tensor per adapter;
            ``H, W`` set the image size (multiples of the pipeline's size multiple). For SD3 they
            are images too (the pipeline VAE-encodes them).
        adapters: one adapter, or several ControlNets (Multi-ControlNet; also SD3 ControlNets).
            ControlNet-XS and ControlNeXt run alone.
        weights: per adapter, the conditioning scale (``0..10``); 0 is the same as leaving it out.
        guidance_start, guidance_end: per adapter, the fraction of the sampling steps over which
            it acts, ``0 <= start < end <= 1`` (``end = 0``: never, the base's own images).
        negative, steps, guidance, seed, scheduler: as in :func:`~langfield.generation.sampling.generate`
            (image ``i`` starts from noise seeded ``seed + i``).
        latents: the initial noise ``[B, C, h, w]`` (unit variance; the pipeline scales it by its
            scheduler's ``init_noise_sigma``) instead of the seeded noise, e.g. noise shared
            through a scene (:func:`~langfield.generation.scene_noise.scene_latent_noise`).
        guess_mode: with classifier-free guidance, control on the conditional branch only (the
            unconditional prediction is the bare base, so guidance amplifies the control; meant for
            the empty prompt). ControlNets: diffusers' guess mode, residuals also scaled per
            resolution; ControlNet-XS and ControlNeXt: the branch rule alone (module docstring).
            Not for SD3 ControlNets.

    Raises:
        InputError: mismatched counts, a condition of the wrong size or channel count, an adapter
            built for another base, mixing kinds that cannot run together; each names the argument.
    """

    # 1. Validate the pipeline, adapters and per-adapter options.
    pipe = as_generation_pipeline(model)
    adapters = list(adapters) if isinstance(adapters, (list, tuple)) else [adapters]
    if not adapters:
        raise InputError("adapters: give at least one ControlAdapter")
    for i, a in enumerate(adapters):
        if not isinstance(a, ControlAdapter):
            raise InputError(f"adapters[{i}]: expected a ControlAdapter, got {type(a).__name__}")
    kinds = tuple(a.kind for a in adapters)
    if len(adapters) > 1 and not (set(kinds) <= {"controlnet"} or set(kinds) <= {"sd3_controlnet"}):
        raise InputError(f"adapters: several adapters must all be ControlNets (Multi-ControlNet) or all SD3 ControlNets, got {list(kinds)}")
    want_kind = "sd3" if kinds[0] == "sd3_controlnet" else "sd"
    if pipe.kind != want_kind:
        raise InputError(f"adapters: a {kinds[0]} adapter needs an {want_kind.upper()} pipeline, this one is {pipe.kind!r}")
    for i, a in enumerate(adapters):
        _same_base(a, pipe.denoiser, f"adapters[{i}]")
    n = len(adapters)
    weights_t = _per_adapter(weights, n, "weights", 0.0, 10.0)
    start_t = _per_adapter(guidance_start, n, "guidance_start", 0.0, 1.0)
    end_t = _per_adapter(guidance_end, n, "guidance_end", 0.0, 1.0)
    for i, (s, e) in enumerate(zip(start_t, end_t)):
        if s > e:
            raise InputError(f"guidance_start[{i}]: {s} is after guidance_end[{i}] {e}")
    steps = check_int_range(steps, "steps", lo=1, hi=1000)
    guidance = check_finite_number(guidance, "guidance", lo=1.0, hi=50.0)
    seed = check_int_range(seed, "seed", lo=0, hi=2**62)
    if not isinstance(guess_mode, bool):
        raise InputError(f"guess_mode: expected True or False, got {guess_mode!r}")
    if guess_mode and kinds[0] == "sd3_controlnet":
        raise InputError("guess_mode: SD3 ControlNets have no guess mode (diffusers' SD3 pipeline has none); use a ControlNet, "
                         "ControlNet-XS or ControlNeXt")

    # 2. Conditions: one [B, Cc, H, W] per adapter, in [0, 1], all the same size.
    conds = list(conditions) if isinstance(conditions, (list, tuple)) else [conditions]
    if len(conds) != n:
        raise InputError(f"conditions: {len(conds)} condition tensors for {n} adapters")
    for i, (c, a) in enumerate(zip(conds, adapters)):
        where = "conditions" if n == 1 else f"conditions[{i}]"
        if not isinstance(c, Tensor) or c.ndim != 4 or not c.is_floating_point():
            got = tuple(c.shape) if isinstance(c, Tensor) else type(c).__name__
            raise InputError(f"{where}: expected a float tensor [B, Cc, H, W] in [0, 1], got {got}")
        want_c = 3 if a.kind == "sd3_controlnet" else a.condition_channels
        if c.shape[1] != want_c:
            raise InputError(f"{where}: has {c.shape[1]} channels, the {a.kind} adapter takes {want_c}")
        if c.shape[2:] != conds[0].shape[2:] or c.shape[0] != conds[0].shape[0]:
            raise InputError(f"{where}: shape {tuple(c.shape)} differs from conditions[0] {tuple(conds[0].shape)}")
        if bool((c < 0).any()) or bool((c > 1).any()) or not bool(torch.isfinite(c).all()):
            raise InputError(f"{where}: values must lie in [0, 1]")
    height, width = check_image_size(pipe, int(conds[0].shape[2]), int(conds[0].shape[3]))
    for i, c in enumerate(conds):
        if pipe.kind == "sd" and c.shape[2] % adapters[i].vae_factor:
            raise InputError(f"conditions: height {c.shape[2]} is not a multiple of the adapter's VAE factor")
    if adapters[0].vae_factor != pipe.vae_scale_factor:
        raise InputError(f"adapters: built for VAE factor {adapters[0].vae_factor}, the pipeline's VAE has {pipe.vae_scale_factor}")

    # 3. Text: strings through the pipeline's own text encoders (real SD), else embeddings for B
    #    prompts (+ the unconditional ones when guidance > 1).
    own_text = isinstance(prompts, (str, list, tuple)) and pipe.has_text_encoder
    if own_text:
        kwargs, record_prompts = own_encoder_inputs(pipe, prompts, negative, 1, False)
    else:
        kwargs, record_prompts = embedding_inputs(pipe, prompts, negative, guidance > 1.0, 1, False)
    batch = len(record_prompts)
    if conds[0].shape[0] != batch:
        raise InputError(f"conditions: {conds[0].shape[0]} conditions for {batch} prompts")
    device, dtype = pipe.device, pipe.dtype
    conds = [c.to(device=device, dtype=dtype) for c in conds]
    extra_latents: Dict[str, Any] = {}
    if latents is not None:
        f = pipe.vae_scale_factor
        want = (batch, int(getattr(pipe.denoiser.config, "in_channels", 4)), height // f, width // f)
        if not isinstance(latents, Tensor) or tuple(latents.shape) != want or not bool(torch.isfinite(latents).all()):
            got = tuple(latents.shape) if isinstance(latents, Tensor) else type(latents).__name__
            raise InputError(f"latents: expected finite noise of shape {list(want)}, got {got}")
        extra_latents["latents"] = latents.to(device=device, dtype=dtype)

    # 4. The diffusers pipeline for these adapters, sharing the base pipeline's modules.
    p = pipe.pipeline
    sampler = make_scheduler(scheduler, p.scheduler)
    text_keys = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "text_encoder_3", "tokenizer_3")
    text = {k: (getattr(p, k, None) if own_text else None) for k in text_keys}
    runner, extra = _control_pipeline(p, sampler, text, adapters, conds, weights_t, start_t, end_t)
    if guess_mode and kinds[0] == "controlnet":
        extra["guess_mode"] = True

    # 5. Denoise: per-image CPU generators, the networks in eval mode.
    seeds = tuple(seed + i for i in range(batch))
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    modules = [p.vae, pipe.denoiser] + [a for a in adapters]
    was_training = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        call = dict(num_inference_steps=steps, guidance_scale=guidance, height=height, width=width, num_images_per_prompt=1,
                    generator=generators, output_type="pt", return_dict=True, **kwargs, **extra, **extra_latents)  # fmt: skip
        branch = _conditional_branch_only(runner, adapters[0]) if guess_mode else contextlib.nullcontext()
        with torch.no_grad(), branch:
            if kinds[0] == "controlnext":
                out = _run_controlnext(runner, adapters[0], conds[0], weights_t[0], start_t[0], end_t[0], steps, call)
            else:
                out = runner(**call)
    finally:
        for m, t in zip(modules, was_training):
            m.train(t)
    images = out.images.detach().float().permute(0, 2, 3, 1).cpu().contiguous()
    record = GenerationRecord(
        model=pipe.name, kind=pipe.kind, scheduler=scheduler if scheduler is not None else "default",
        scheduler_class=type(sampler).__name__, prediction=prediction_type(p.scheduler), steps=steps, guidance=guidance,
        seed=seed, seeds=seeds, num_images=1, height=height, width=width, prompts=record_prompts,
        dtype=str(dtype).replace("torch.", ""), device=str(device),
    )  # fmt: skip
    control = ControlRecord(kinds=kinds, weights=weights_t, guidance_start=start_t, guidance_end=end_t,
                            pipeline=type(runner).__name__, condition_shapes=tuple(tuple(c.shape) for c in conds),
                            guess_mode=guess_mode)  # fmt: skip
    return ControlledGenerationResult(images, record, control)


def _control_pipeline(p: Any, sampler: Any, text: Dict[str, Any], adapters: List[ControlAdapter], conds: List[Tensor],
                      weights: Tuple[float, ...], starts: Tuple[float, ...], ends: Tuple[float, ...]) -> Tuple[Any, Dict[str, Any]]:  # fmt: skip
    """The diffusers pipeline that runs ``adapters`` on the base pipeline ``p``'s modules, and its control arguments.

    diffusers refuses an empty guidance window (``start == end``); that window keeps no step, which
    is the same as weight 0 over the whole run, so it is passed that way."""
    n, kind = len(adapters), adapters[0].kind
    weights, starts, ends = list(weights), list(starts), list(ends)
    for i in range(n):
        if starts[i] == ends[i]:
            weights[i], starts[i], ends[i] = 0.0, 0.0, 1.0

    def one_or_list(values: List[Any]) -> Any:
        return values if n > 1 else values[0]

    control = dict(controlnet_conditioning_scale=one_or_list(weights), control_guidance_start=one_or_list(starts),
                   control_guidance_end=one_or_list(ends))  # fmt: skip
    common: Dict[str, Any] = dict(vae=p.vae, scheduler=sampler)
    sd = dict(text_encoder=text["text_encoder"], tokenizer=text["tokenizer"], safety_checker=None, feature_extractor=None,
              requires_safety_checker=False, **common)  # fmt: skip
    if kind == "controlnet":
        from diffusers import StableDiffusionControlNetPipeline

        nets = [a.controlnet for a in adapters]
        runner = StableDiffusionControlNetPipeline(unet=p.unet, controlnet=one_or_list(nets), **sd)
        extra = dict(image=one_or_list(conds), **control)
    elif kind == "controlnet_xs":
        from diffusers import StableDiffusionControlNetXSPipeline

        runner = StableDiffusionControlNetXSPipeline(unet=adapters[0].model, controlnet=None, **sd)
        extra = dict(image=conds[0], **control)
    elif kind == "sd3_controlnet":
        from diffusers import StableDiffusion3ControlNetPipeline

        nets = [a.controlnet for a in adapters]
        runner = StableDiffusion3ControlNetPipeline(transformer=p.transformer, controlnet=one_or_list(nets), **text, **common)
        extra = dict(control_image=one_or_list(conds), **control)
    else:  # ControlNeXt: the base pipeline; _run_controlnext switches the hook on inside the guidance window
        from diffusers import StableDiffusionPipeline

        runner = StableDiffusionPipeline(unet=p.unet, **sd)
        extra = {}
    runner.set_progress_bar_config(disable=True)
    return runner, extra


def _conditional_half_scale(batch: Tensor, scale: float) -> Tensor:
    """``[2B, 1, 1, 1]`` per-sample scales for a guidance batch ``[unconditional, conditional]`` shaped
    like ``batch``: 0 on the first half, ``scale`` on the second (in ``batch``'s device and dtype)."""
    half = batch.shape[0] // 2
    return torch.cat([torch.zeros(half), torch.full((half,), float(scale))]).to(batch.device, batch.dtype).view(-1, 1, 1, 1)


@contextlib.contextmanager
def _instance_forward(model: nn.Module, forward: Any) -> Iterator[None]:
    """``model.forward`` replaced by ``forward`` inside the block; an instance-level forward already there
    (hooks) is put back on exit, else the class's own."""
    own = model.__dict__.get("forward")
    model.forward = forward
    try:
        yield
    finally:
        if own is None:
            del model.forward
        else:
            model.forward = own


def _halves(value: Any, n: int) -> Tuple[Any, Any]:
    """A guidance batch's ``[unconditional, conditional]`` halves of ``value`` (a tensor whose first axis is
    ``2 n``); anything else (a scalar timestep, ``None``, a flag) goes to both halves unchanged."""
    if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == 2 * n:
        return value[:n], value[n:]
    return value, value


@contextlib.contextmanager
def _conditional_branch_only(runner: Any, adapter: ControlAdapter) -> Iterator[None]:
    """Guess mode's branch rule for ControlNet-XS and ControlNeXt: with classifier-free guidance (the
    pipeline's batch is ``[unconditional, conditional]``) the adapter acts on the conditional half only,
    so the unconditional prediction is the bare base. XS: its control-to-base additions scaled by 0 on
    the first half. ControlNeXt: the batch split in two UNet calls, the first on
    :meth:`ControlNeXtAdapter.bare_base` (no injection, the trained base subset at the base's own
    values -- that subset is part of the control), the second as trained, with the control.
    ControlNets get diffusers' own guess mode instead."""
    if adapter.kind not in ("controlnet_xs", "controlnext"):
        yield
        return
    model = runner.unet
    plain = model.forward

    def xs_forward(*args: Any, **kwargs: Any) -> Any:
        scale = kwargs.get("conditioning_scale", 1.0)
        sample = kwargs.get("sample", args[0] if args else None)
        if runner.do_classifier_free_guidance and isinstance(sample, Tensor) and sample.shape[0] % 2 == 0:
            # every control -> base addition is zero on the unconditional half
            kwargs["conditioning_scale"] = _conditional_half_scale(sample, float(scale))
        return plain(*args, **kwargs)

    def controlnext_forward(sample: Tensor, timestep: Any, encoder_hidden_states: Tensor, *args: Any, **kwargs: Any) -> Any:
        if not (runner.do_classifier_free_guidance and sample.shape[0] % 2 == 0):
            return plain(sample, timestep, encoder_hidden_states, *args, **kwargs)
        n = sample.shape[0] // 2
        return_dict = kwargs.pop("return_dict", True)
        split = [_halves(v, n) for v in (sample, timestep, encoder_hidden_states, *args)]
        split_kw = {k: _halves(v, n) for k, v in kwargs.items()}
        with adapter.bare_base():
            bare = plain(*(v[0] for v in split), **{k: v[0] for k, v in split_kw.items()}, return_dict=False)[0]
        controlled = plain(*(v[1] for v in split), **{k: v[1] for k, v in split_kw.items()}, return_dict=False)[0]
        out = torch.cat([bare, controlled])
        if not return_dict:
            return (out,)
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        return UNet2DConditionOutput(sample=out)

    with _instance_forward(model, xs_forward if adapter.kind == "controlnet_xs" else controlnext_forward):
        yield


def _controlled_at(i: int, n: int, start: float, end: float) -> bool:
    """diffusers' guidance window: step ``i`` of ``n`` is controlled unless ``i / n < start`` or ``(i + 1) / n > end``."""
    return not (i / n < start or (i + 1) / n > end)


def _run_controlnext(runner: Any, adapter: ControlNeXtAdapter, condition: Tensor, weight: float, start: float, end: float,
                     steps: int, call: Dict[str, Any]) -> Any:  # fmt: skip
    state = {"n": None}

    def on_step_end(pipeline: Any, i: int, t: Any, kwargs: Dict[str, Any]) -> Dict[str, Any]:
        n = state["n"] or len(pipeline.scheduler.timesteps)
        adapter._scale = weight if _controlled_at(i + 1, n, start, end) else 0.0
        return kwargs

    with adapter.injecting(condition, weight):
        runner.scheduler.set_timesteps(steps)
        state["n"] = len(runner.scheduler.timesteps)
        adapter._scale = weight if _controlled_at(0, state["n"], start, end) else 0.0
        return runner(**call, callback_on_step_end=on_step_end)
