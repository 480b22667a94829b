"""Diffusion training objectives as :class:`~langfield.methods.base.Method` subclasses for the one Trainer
(not registered as scene methods): the first-stage autoencoder (:class:`VAEMethod`) and text-to-image
latent diffusion with a UNet or an SD3 transformer (:class:`LatentDiffusionMethod`)."""

from langfield.methods.diffusion.autoencoder import VAEConfig, VAEMethod
from langfield.methods.diffusion.latent_diffusion import LatentDiffusionConfig, LatentDiffusionMethod, PromptEmbeds

__all__ = ["LatentDiffusionConfig", "LatentDiffusionMethod", "PromptEmbeds", "VAEConfig", "VAEMethod"]
