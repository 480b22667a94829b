"""Tiny random components for the generation tests (built here; nothing is downloaded).

Sizes: 16 px RGB <-> 4x4x4 latents (VAE factor 4, channels (4, 8, 8)); a two-level UNet
(8, 16) with 2 layers per block and 384-d cross-attention; a one-layer SD3 transformer with
2x2 patches. A pipeline call with 2-3 steps takes well under a second on one CPU core.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from langfield.generation.loading import GenerationPipeline, build_pipeline
from langfield.generation.models import ToyDiTConfig, ToyUNetConfig, ToyVAEConfig

VAE = ToyVAEConfig(image_size=16, factor=4, block_out_channels=(4, 8, 8))
UNET = ToyUNetConfig(latent_size=4, block_out_channels=(8, 16), attention_heads=2)
DIT = ToyDiTConfig(latent_size=4, patch_size=2, num_layers=1, attention_head_dim=8, num_attention_heads=2)


def make_sd(seed: int = 0, **unet_overrides) -> GenerationPipeline:
    """An in-memory SD-style pipeline (tiny VAE + UNet, DDIM, MiniLM text conditioning)."""
    unet = dataclasses.replace(UNET, **unet_overrides)
    return build_pipeline(vae=VAE.build(seed=seed), unet=unet.build(seed=seed + 1))


def make_sd3(seed: int = 0, scheduler=None) -> GenerationPipeline:
    """An in-memory SD3-style pipeline (tiny VAE + MMDiT, flow-matching Euler by default)."""
    return build_pipeline(vae=VAE.build(seed=seed), transformer=DIT.build(seed=seed + 1), scheduler=scheduler)


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def tiny_clip_sd_pipeline(folder: Path, max_tokens: int = 16):
    """A real-style ``StableDiffusionPipeline`` with its own (tiny, random) CLIP text encoder and a
    character-level CLIP tokenizer written to ``folder`` (string prompts go through them)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(letters)}
    vocab.update({c + "</w>": len(letters) + i for i, c in enumerate(letters)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "vocab.json", vocab)
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(
        vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"), model_max_length=max_tokens
    )
    config = CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=1,
        max_position_embeddings=max_tokens, bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"], projection_dim=32,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        text_encoder = CLIPTextModel(config).eval()
    unet = dataclasses.replace(UNET, cross_attention_dim=32).build(seed=1)
    scheduler = DDIMScheduler(clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipeline = StableDiffusionPipeline(
        vae=VAE.build(seed=0), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def make_sdxl(seed: int = 0) -> GenerationPipeline:
    """An in-memory SDXL-style pipeline: the tiny UNet with SDXL's pooled-text + size conditioning
    (``addition_embed_type="text_time"``; 6 size numbers x 8 + the 384-d pooled MiniLM vector)."""
    from diffusers import UNet2DConditionModel

    kwargs = UNET.diffusers_kwargs()
    kwargs.update(
        addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 384
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        unet = UNet2DConditionModel(**kwargs)
    return build_pipeline(vae=VAE.build(seed=seed), unet=unet)
