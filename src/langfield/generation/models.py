"""Tiny diffusers models for the toy world: configs, hashes, seeded builders.

Three frozen config dataclasses describe small versions of the networks Stable Diffusion is made
of, and three builders turn them into randomly initialised ``diffusers`` modules, so the models
trained here are saved with ``save_pretrained`` in diffusers' own format and load through the
same pipeline code as real Stable Diffusion weights (:mod:`~langfield.generation.loading`):

- :class:`ToyVAEConfig` -> ``AutoencoderKL`` (Kingma & Welling 2014; the KL-regularised
  autoencoder of latent diffusion, Rombach et al. 2022 Sec. 3.1): RGB ``[B, 3, H, W]`` in
  ``[-1, 1]`` <-> latents ``[B, C, H/f, W/f]`` with ``f = 2 ** (len(block_out_channels) - 1)``.
- :class:`ToyUNetConfig` -> ``UNet2DConditionModel`` (the SD 1.x/2.x denoiser): latents
  ``[B, C, h, w]``, timestep, text tokens ``[B, T, cross_attention_dim]`` -> ``[B, C, h, w]``.
  ``layers_per_block=2`` and 4 latent channels by default, the layout ControlNet-XS requires.
- :class:`ToyDiTConfig` -> ``SD3Transformer2DModel`` (MMDiT, Esser et al. 2024 Sec. 4): latents,
  timestep, text tokens ``[B, T, joint_attention_dim]`` and a pooled text vector
  ``[B, pooled_projection_dim]`` -> ``[B, C, h, w]``.

The text width defaults to 384, the width of the shipped all-MiniLM-L6-v2 token embeddings
(:mod:`~langfield.generation.text_conditioning`).

Each config has :meth:`config_hash` (sha256 of its sorted JSON, with the class name), the key a
cache of trained models uses, and :meth:`build` / the ``tiny_*`` shortcuts build the module with
a seeded initialisation that leaves the global RNG untouched::

    vae = tiny_autoencoder_kl(32, factor=4, seed=0)          # 32 px RGB <-> 8x8x4 latents
    unet = tiny_unet(8, block_out_channels=(32, 64, 128))    # eps-prediction UNet, 384-d text
    dit = tiny_sd3_transformer(8, num_layers=6)              # MMDiT with 2x2 patches

``import langfield.generation.models`` does not import diffusers; the builders do.

>>> cfg = ToyVAEConfig(image_size=32, factor=4)
>>> cfg.block_out_channels, cfg.latent_size
((32, 64, 64), 8)
>>> len(cfg.config_hash()), cfg.config_hash() == ToyVAEConfig(image_size=32, factor=4).config_hash()
(64, True)
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import torch

from langfield._checks import InputError, check_fields, check_int_range
from langfield.configs import check_field_types, config_to_dict

if TYPE_CHECKING:  # pragma: no cover - typing only; diffusers is imported by the builders
    from diffusers import AutoencoderKL, SD3Transformer2DModel, UNet2DConditionModel

__all__ = [
    "ToyDiTConfig",
    "ToyUNetConfig",
    "ToyVAEConfig",
    "build_autoencoder_kl",
    "build_sd3_transformer",
    "build_unet",
    "tiny_autoencoder_kl",
    "tiny_sd3_transformer",
    "tiny_unet",
]

#: Bumped when the meaning of a config field changes, so old cache entries stop matching.
CONFIG_HASH_VERSION = 1


def _hash_config(cfg: Any) -> str:
    """sha256 hex digest of ``{"class", "version", "config"}`` as sorted, compact JSON."""
    payload = {"class": type(cfg).__name__, "version": CONFIG_HASH_VERSION, "config": config_to_dict(cfg)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _power_of_two(value: int, where: str) -> int:
    if value < 1 or value & (value - 1):
        raise InputError(f"{where}: must be a power of two (1, 2, 4, 8, ...), got {value}")
    return value.bit_length() - 1


def _check_channels(channels: Tuple[int, ...], where: str) -> None:
    if not channels:
        raise InputError(f"{where}: need at least one entry, got ()")
    for i, c in enumerate(channels):
        check_int_range(c, f"{where}[{i}]", lo=1)


#: Fewest channels per GroupNorm group a default leaves (Stable Diffusion: 32 groups of >= 4).
MIN_CHANNELS_PER_GROUP = 4


def _default_groups(channels: Tuple[int, ...]) -> int:
    """GroupNorm groups: the largest of 32, 16, 8, 4, 2, 1 that divides every channel count and
    leaves at least :data:`MIN_CHANNELS_PER_GROUP` channels per group in the narrowest stage (32
    groups on a 32-channel stage would normalise every channel alone, i.e. instance norm, which
    removes each channel's mean); 1 when nothing else fits."""
    narrowest = min(channels)
    for groups in (32, 16, 8, 4, 2):
        if all(c % groups == 0 for c in channels) and narrowest // groups >= MIN_CHANNELS_PER_GROUP:
            return groups
    return 1


def _check_groups(groups: int, channels: Tuple[int, ...], where: str) -> None:
    check_int_range(groups, where, lo=1)
    bad = [c for c in channels if c % groups]
    if bad:
        raise InputError(f"{where}: {groups} GroupNorm groups must divide every channel count; {bad} are not divisible")


def _seeded_build(seed: int, make: Any) -> Any:
    """``make()`` under ``torch.manual_seed(seed)`` inside :func:`torch.random.fork_rng` (CPU RNG
    only), so the caller's global RNG state is the same afterwards."""
    seed = check_int_range(seed, "seed", lo=0, hi=2**63 - 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


@dataclass(frozen=True)
class ToyVAEConfig:
    """A small ``AutoencoderKL``: RGB ``[B, 3, S, S]`` in ``[-1, 1]`` <-> ``[B, C, S/f, S/f]``.

    Attributes:
        image_size: ``S``, the image side in pixels it is built for (``sample_size``); a multiple
            of ``factor``.
        latent_channels: ``C``, 4 like Stable Diffusion 1.x/2.x.
        factor: ``f``, the spatial downsampling, a power of two (4 or 8 in practice); the encoder
            has ``log2(f) + 1`` blocks.
        block_out_channels: channels per block, ``log2(f) + 1`` entries; ``None``:
            ``(32, 64, 64)`` for ``f=4``, ``(32, 64, 64, 64)`` for ``f=8``.
        layers_per_block: ResNet layers per block.
        norm_num_groups: GroupNorm groups; ``None``: the largest of 32/16/8/4/2 that divides
            every block's channels with >= 4 channels per group (else 1).
        scaling_factor: latents are multiplied by it before diffusion (SD 1.x: 0.18215). A
            trainer measures it on data after the autoencoder is trained (1 / latent std).
        shift_factor: subtracted from latents before scaling (SD3 convention; 0 here).
    """

    image_size: int = 32
    latent_channels: int = 4
    factor: int = 4
    block_out_channels: Optional[Tuple[int, ...]] = None
    layers_per_block: int = 1
    norm_num_groups: Optional[int] = None
    scaling_factor: float = 1.0
    shift_factor: float = 0.0

    def __post_init__(self) -> None:
        check_field_types(self)
        check_fields(self, int_min_1=("image_size", "latent_channels", "factor", "layers_per_block"))
        check_fields(self, positive=("scaling_factor",))
        levels = _power_of_two(self.factor, "ToyVAEConfig.factor")
        if self.block_out_channels is None:
            object.__setattr__(self, "block_out_channels", (32,) + (64,) * levels)
        channels = tuple(self.block_out_channels)
        _check_channels(channels, "ToyVAEConfig.block_out_channels")
        if len(channels) != levels + 1:
            raise InputError(
                f"ToyVAEConfig.block_out_channels: factor {self.factor} needs {levels + 1} blocks "
                f"(f = 2 ** (blocks - 1)), got {len(channels)}: {channels}"
            )
        if self.image_size % self.factor:
            raise InputError(
                f"ToyVAEConfig.image_size: {self.image_size} is not divisible by the factor {self.factor}"
            )
        if self.norm_num_groups is None:
            object.__setattr__(self, "norm_num_groups", _default_groups(channels))
        _check_groups(self.norm_num_groups, channels, "ToyVAEConfig.norm_num_groups")
        if not math.isfinite(self.shift_factor):
            raise InputError(f"ToyVAEConfig.shift_factor: must be finite, got {self.shift_factor!r}")

    @property
    def latent_size(self) -> int:
        """Latent side ``S / f``."""
        return self.image_size // self.factor

    def config_hash(self) -> str:
        """sha256 hex digest of this config (stable across processes and Python versions)."""
        return _hash_config(self)

    def diffusers_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments for ``diffusers.AutoencoderKL``."""
        n = len(self.block_out_channels)
        return dict(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=tuple(self.block_out_channels),
            layers_per_block=self.layers_per_block,
            latent_channels=self.latent_channels,
            norm_num_groups=self.norm_num_groups,
            sample_size=self.image_size,
            scaling_factor=float(self.scaling_factor),
            shift_factor=float(self.shift_factor),
        )

    def build(self, *, seed: int = 0) -> "AutoencoderKL":
        """A randomly initialised ``AutoencoderKL`` (same ``seed`` -> same weights)."""
        return build_autoencoder_kl(self, seed=seed)


@dataclass(frozen=True)
class ToyUNetConfig:
    """A small ``UNet2DConditionModel`` (ε- or v-prediction denoiser of SD 1.x/2.x).

    Attributes:
        latent_size: latent side ``h = w`` it is built for (``sample_size``); a multiple of
            ``2 ** (len(block_out_channels) - 1)`` (each block but the last halves it).
        latent_channels: input and output channels (4: what ControlNet-XS hard-codes).
        block_out_channels: channels per resolution; every block but the last has cross-attention.
        layers_per_block: ResNet (+ attention) layers per block; 2 as in SD and as ControlNet-XS
            requires.
        cross_attention_dim: width of the text tokens (384: all-MiniLM-L6-v2).
        attention_heads: heads of every attention layer; divides every block's channels. (Passed
            to diffusers as ``attention_head_dim``, which the UNet reads as the head count.)
        norm_num_groups: GroupNorm groups; ``None``: the largest of 32/16/8/4/2 that divides
            every block's channels with >= 4 channels per group (else 1).
    """

    latent_size: int = 8
    latent_channels: int = 4
    block_out_channels: Tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = 2
    cross_attention_dim: int = 384
    attention_heads: int = 4
    norm_num_groups: Optional[int] = None

    def __post_init__(self) -> None:
        check_field_types(self)
        check_fields(
            self,
            int_min_1=("latent_size", "latent_channels", "layers_per_block", "cross_attention_dim", "attention_heads"),
        )
        channels = tuple(self.block_out_channels)
        _check_channels(channels, "ToyUNetConfig.block_out_channels")
        down = 2 ** (len(channels) - 1)
        if self.latent_size % down:
            raise InputError(
                f"ToyUNetConfig.latent_size: {self.latent_size} is not divisible by {down} "
                f"(the UNet halves it {len(channels) - 1} time(s) with {len(channels)} blocks)"
            )
        bad = [c for c in channels if c % self.attention_heads]
        if bad:
            raise InputError(
                f"ToyUNetConfig.attention_heads: {self.attention_heads} must divide every block's channels; "
                f"{bad} are not divisible"
            )
        if self.norm_num_groups is None:
            object.__setattr__(self, "norm_num_groups", _default_groups(channels))
        _check_groups(self.norm_num_groups, channels, "ToyUNetConfig.norm_num_groups")

    def config_hash(self) -> str:
        """sha256 hex digest of this config (stable across processes and Python versions)."""
        return _hash_config(self)

    def diffusers_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments for ``diffusers.UNet2DConditionModel``."""
        n = len(self.block_out_channels)
        if n == 1:
            down, up = ("CrossAttnDownBlock2D",), ("CrossAttnUpBlock2D",)
        else:  # SD's layout: cross-attention at every resolution but the lowest
            down = ("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",)
            up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1)
        return dict(
            sample_size=self.latent_size,
            in_channels=self.latent_channels,
            out_channels=self.latent_channels,
            down_block_types=down,
            up_block_types=up,
            block_out_channels=tuple(self.block_out_channels),
            layers_per_block=self.layers_per_block,
            cross_attention_dim=self.cross_attention_dim,
            attention_head_dim=self.attention_heads,  # diffusers' legacy name: it is the head count
            norm_num_groups=self.norm_num_groups,
        )

    def build(self, *, seed: int = 0) -> "UNet2DConditionModel":
        """A randomly initialised ``UNet2DConditionModel`` (same ``seed`` -> same weights)."""
        return build_unet(self, seed=seed)


@dataclass(frozen=True)
class ToyDiTConfig:
    """A small ``SD3Transformer2DModel`` (MMDiT: joint attention over image patches and text tokens).

    Attributes:
        latent_size: latent side it is built for (``sample_size``); a multiple of ``patch_size``.
        latent_channels: input and output channels.
        patch_size: latent pixels per patch side (SD3: 2).
        num_layers: joint transformer blocks.
        attention_head_dim, num_attention_heads: the width is their product.
        joint_attention_dim: width of the text tokens (384: all-MiniLM-L6-v2).
        pooled_projection_dim: width of the pooled text vector (384: the mean MiniLM embedding).
        pos_embed_max_size: side, in patches, of the learned position-embedding grid; larger
            latents cannot be sampled. ``None``: ``latent_size // patch_size``.
    """

    latent_size: int = 8
    latent_channels: int = 4
    patch_size: int = 2
    num_layers: int = 6
    attention_head_dim: int = 32
    num_attention_heads: int = 4
    joint_attention_dim: int = 384
    pooled_projection_dim: int = 384
    pos_embed_max_size: Optional[int] = None

    def __post_init__(self) -> None:
        check_field_types(self)
        check_fields(
            self,
            int_min_1=(
                "latent_size", "latent_channels", "patch_size", "num_layers", "attention_head_dim",
                "num_attention_heads", "joint_attention_dim", "pooled_projection_dim",
            ),
        )  # fmt: skip
        if self.latent_size % self.patch_size:
            raise InputError(
                f"ToyDiTConfig.latent_size: {self.latent_size} is not divisible by patch_size {self.patch_size}"
            )
        if self.pos_embed_max_size is None:
            object.__setattr__(self, "pos_embed_max_size", self.latent_size // self.patch_size)
        patches = self.latent_size // self.patch_size
        check_int_range(self.pos_embed_max_size, "ToyDiTConfig.pos_embed_max_size", lo=patches)

    @property
    def width(self) -> int:
        """Transformer width ``num_attention_heads * attention_head_dim``."""
        return self.num_attention_heads * self.attention_head_dim

    def config_hash(self) -> str:
        """sha256 hex digest of this config (stable across processes and Python versions)."""
        return _hash_config(self)

    def diffusers_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments for ``diffusers.SD3Transformer2DModel``."""
        return dict(
            sample_size=self.latent_size,
            patch_size=self.patch_size,
            in_channels=self.latent_channels,
            out_channels=self.latent_channels,
            num_layers=self.num_layers,
            attention_head_dim=self.attention_head_dim,
            num_attention_heads=self.num_attention_heads,
            joint_attention_dim=self.joint_attention_dim,
            caption_projection_dim=self.width,  # the joint blocks run text tokens at the image width
            pooled_projection_dim=self.pooled_projection_dim,
            pos_embed_max_size=self.pos_embed_max_size,
        )

    def build(self, *, seed: int = 0) -> "SD3Transformer2DModel":
        """A randomly initialised ``SD3Transformer2DModel`` (same ``seed`` -> same weights)."""
        return build_sd3_transformer(self, seed=seed)


def build_autoencoder_kl(config: ToyVAEConfig, *, seed: int = 0) -> "AutoencoderKL":
    """``diffusers.AutoencoderKL(**config.diffusers_kwargs())`` initialised under ``seed``."""
    from diffusers import AutoencoderKL

    return _seeded_build(seed, lambda: AutoencoderKL(**config.diffusers_kwargs()))


def build_unet(config: ToyUNetConfig, *, seed: int = 0) -> "UNet2DConditionModel":
    """``diffusers.UNet2DConditionModel(**config.diffusers_kwargs())`` initialised under ``seed``."""
    from diffusers import UNet2DConditionModel

    return _seeded_build(seed, lambda: UNet2DConditionModel(**config.diffusers_kwargs()))


def build_sd3_transformer(config: ToyDiTConfig, *, seed: int = 0) -> "SD3Transformer2DModel":
    """``diffusers.SD3Transformer2DModel(**config.diffusers_kwargs())`` initialised under ``seed``."""
    from diffusers import SD3Transformer2DModel

    return _seeded_build(seed, lambda: SD3Transformer2DModel(**config.diffusers_kwargs()))


def tiny_autoencoder_kl(
    image_size: int = 32,
    *,
    latent_channels: int = 4,
    factor: int = 4,
    block_out_channels: Optional[Tuple[int, ...]] = None,
    layers_per_block: int = 1,
    seed: int = 0,
) -> "AutoencoderKL":
    """A randomly initialised small ``AutoencoderKL`` (see :class:`ToyVAEConfig` for the arguments)."""
    config = ToyVAEConfig(
        image_size=image_size,
        latent_channels=latent_channels,
        factor=factor,
        block_out_channels=None if block_out_channels is None else tuple(block_out_channels),
        layers_per_block=layers_per_block,
    )
    return config.build(seed=seed)


def tiny_unet(
    latent_size: int = 8,
    *,
    latent_channels: int = 4,
    cross_attention_dim: int = 384,
    block_out_channels: Tuple[int, ...] = (32, 64, 128),
    layers_per_block: int = 2,
    attention_heads: int = 4,
    seed: int = 0,
) -> "UNet2DConditionModel":
    """A randomly initialised small ``UNet2DConditionModel`` (see :class:`ToyUNetConfig`)."""
    config = ToyUNetConfig(
        latent_size=latent_size,
        latent_channels=latent_channels,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        cross_attention_dim=cross_attention_dim,
        attention_heads=attention_heads,
    )
    return config.build(seed=seed)


def tiny_sd3_transformer(
    latent_size: int = 8,
    *,
    latent_channels: int = 4,
    patch_size: int = 2,
    num_layers: int = 6,
    attention_head_dim: int = 32,
    num_attention_heads: int = 4,
    joint_attention_dim: int = 384,
    pooled_projection_dim: int = 384,
    seed: int = 0,
) -> "SD3Transformer2DModel":
    """A randomly initialised small ``SD3Transformer2DModel`` (see :class:`ToyDiTConfig`)."""
    config = ToyDiTConfig(
        latent_size=latent_size,
        latent_channels=latent_channels,
        patch_size=patch_size,
        num_layers=num_layers,
        attention_head_dim=attention_head_dim,
        num_attention_heads=num_attention_heads,
        joint_attention_dim=joint_attention_dim,
        pooled_projection_dim=pooled_projection_dim,
    )
    return config.build(seed=seed)
