"""Tiny diffusers model configs: defaults, validation, stable hashes, seeded builds, shapes."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
import torch

pytest.importorskip("diffusers")

from langfield._checks import InputError  # noqa: E402
from langfield.generation.models import (  # noqa: E402
    ToyDiTConfig,
    ToyUNetConfig,
    ToyVAEConfig,
    tiny_autoencoder_kl,
    tiny_sd3_transformer,
    tiny_unet,
)

from .tiny import DIT, UNET, VAE  # noqa: E402


def test_vae_defaults_follow_the_factor():
    assert ToyVAEConfig(factor=4).block_out_channels == (32, 64, 64)
    assert ToyVAEConfig(factor=8).block_out_channels == (32, 64, 64, 64)
    assert ToyVAEConfig(image_size=64, factor=8).latent_size == 8
    # groups: the largest of 32/16/8/4/2 dividing every stage with >= 4 channels per group in the narrowest
    assert ToyVAEConfig(block_out_channels=(16, 32, 48)).norm_num_groups == 4
    assert ToyVAEConfig(block_out_channels=(32, 32, 32)).norm_num_groups == 8  # not 32: that is instance norm
    assert ToyUNetConfig(latent_size=8, block_out_channels=(32, 64, 128)).norm_num_groups == 8
    assert ToyUNetConfig(latent_size=8, block_out_channels=(128, 256)).norm_num_groups == 32
    assert ToyVAEConfig(block_out_channels=(4, 8, 12)).norm_num_groups == 1  # no split leaves 4 per group


def test_config_hash_is_sha256_of_the_sorted_json():
    """The hash is documented as sha256 of {"class", "version", "config"} as sorted compact JSON:
    recompute it by hand so a silent change of the format fails here."""
    cfg = ToyDiTConfig(latent_size=8, num_layers=2)
    config = {
        "latent_size": 8, "latent_channels": 4, "patch_size": 2, "num_layers": 2, "attention_head_dim": 32,
        "num_attention_heads": 4, "joint_attention_dim": 384, "pooled_projection_dim": 384, "pos_embed_max_size": 4,
    }  # fmt: skip
    text = json.dumps({"class": "ToyDiTConfig", "version": 1, "config": config}, sort_keys=True, separators=(",", ":"))
    assert cfg.config_hash() == hashlib.sha256(text.encode()).hexdigest()


def test_config_hash_is_canonical_and_tells_configs_apart():
    # Filled-in defaults hash like the explicit values; any field change, or another class, changes it.
    explicit = ToyVAEConfig(block_out_channels=(32, 64, 64), norm_num_groups=8)
    assert ToyVAEConfig().config_hash() == explicit.config_hash()
    hashes = {
        ToyVAEConfig().config_hash(),
        ToyVAEConfig(scaling_factor=0.5).config_hash(),
        ToyVAEConfig(factor=8).config_hash(),
        ToyUNetConfig().config_hash(),
        ToyUNetConfig(layers_per_block=1).config_hash(),
        ToyDiTConfig().config_hash(),
        ToyDiTConfig(num_layers=7).config_hash(),
    }
    assert len(hashes) == 7


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda: ToyVAEConfig(factor=6), "factor: must be a power of two"),
        (lambda: ToyVAEConfig(image_size=30, factor=4), "image_size: 30 is not divisible by the factor 4"),
        (lambda: ToyVAEConfig(factor=8, block_out_channels=(8, 8, 8)), "factor 8 needs 4 blocks"),
        (lambda: ToyVAEConfig(block_out_channels=(8, 8, 12), norm_num_groups=8), "[12] are not divisible"),
        (lambda: ToyVAEConfig(scaling_factor=0.0), "scaling_factor"),
        (lambda: ToyUNetConfig(latent_size=6, block_out_channels=(8, 16, 32)), "latent_size: 6 is not divisible by 4"),
        (lambda: ToyUNetConfig(block_out_channels=(8, 12), attention_heads=8), "attention_heads: 8 must divide"),
        (lambda: ToyUNetConfig(block_out_channels=()), "block_out_channels: need at least one entry"),
        (lambda: ToyDiTConfig(latent_size=5), "latent_size: 5 is not divisible by patch_size 2"),
        (lambda: ToyDiTConfig(latent_size=8, pos_embed_max_size=3), "pos_embed_max_size: must be >= 4"),
        (lambda: ToyDiTConfig(num_layers=0), "num_layers"),
    ],
)
def test_bad_configs_are_refused_naming_the_field(make, needle):
    with pytest.raises((InputError, ValueError)) as info:
        make()
    assert needle in str(info.value)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_builders_are_seeded_and_leave_the_global_rng_alone():
    state = torch.get_rng_state()
    first, again, other = VAE.build(seed=3), VAE.build(seed=3), VAE.build(seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert _same_weights(first, again) and not _same_weights(first, other)
    assert _same_weights(DIT.build(seed=1), DIT.build(seed=1))
    assert not _same_weights(UNET.build(seed=1), UNET.build(seed=2))


@pytest.mark.parametrize("factor, channels", [(4, (4, 8, 8)), (8, (4, 8, 8, 8))])
def test_vae_maps_images_to_latents_of_the_factor(factor, channels):
    vae = tiny_autoencoder_kl(32, factor=factor, block_out_channels=channels, latent_channels=4)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
        y = vae.decode(z).sample
    assert z.shape == (2, 4, 32 // factor, 32 // factor)
    assert y.shape == x.shape
    assert vae.config.shift_factor == 0.0 and vae.config.scaling_factor == 1.0  # the SD3 pipeline needs a shift


def test_unet_and_transformer_predict_latent_shaped_outputs():
    unet = tiny_unet(4, block_out_channels=(8, 16), attention_heads=2)
    dit = tiny_sd3_transformer(4, num_layers=1, attention_head_dim=8, num_attention_heads=2)
    z = torch.randn(3, 4, 4, 4)
    text = torch.randn(3, 7, 384)
    with torch.no_grad():
        eps = unet(z, torch.tensor([10, 500, 999]), encoder_hidden_states=text).sample
        v = dit(hidden_states=z, timestep=torch.tensor([10.0, 500.0, 999.0]), encoder_hidden_states=text,
                pooled_projections=torch.randn(3, 384)).sample  # fmt: skip
    assert eps.shape == z.shape and v.shape == z.shape
    # The text enters: other tokens, other prediction (cross-attention ignores token order, so not a flip).
    with torch.no_grad():
        eps2 = unet(z, torch.tensor([10, 500, 999]), encoder_hidden_states=torch.randn_like(text)).sample
    assert (eps - eps2).abs().max() > 1e-6
    assert unet.config.layers_per_block == 2 and unet.config.in_channels == 4
    assert dit.config.caption_projection_dim == 16  # text tokens run at the image width (2 heads x 8)


def test_the_default_unet_fits_controlnet_xs():
    """layers_per_block=2 and 4 latent channels: what ControlNet-XS (next issue) requires."""
    from diffusers import ControlNetXSAdapter, UNetControlNetXSModel

    unet = tiny_unet(4, block_out_channels=(8, 16), attention_heads=2)
    adapter = ControlNetXSAdapter.from_unet(unet, size_ratio=0.5, conditioning_embedding_out_channels=(4, 8))
    model = UNetControlNetXSModel.from_unet(unet, adapter)
    assert sum(p.numel() for p in adapter.parameters()) > 0 and model.config.time_embedding_mix == 1.0


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        VAE.factor = 8  # type: ignore[misc]
