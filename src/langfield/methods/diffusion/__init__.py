"""Trainer objectives of the generation stack (:class:`~langfield.methods.base.Method` subclasses,
not registered as scene methods): the first-stage autoencoder (:class:`VAEMethod`), text-to-image
latent diffusion with a UNet or an SD3 transformer (:class:`LatentDiffusionMethod`), control
adapters (:class:`ControlNetMethod`) and the
measurement instruments (:class:`AttributeClassifierObjective`, :class:`PixelInstrumentObjective`)."""

from langfield.methods.diffusion.autoencoder import VAEConfig, VAEMethod
from langfield.methods.diffusion.controlnet import ControlNetMethod, ControlTrainingConfig
from langfield.methods.diffusion.instrument import AttributeClassifierObjective
from langfield.methods.diffusion.pixel_instrument import PixelInstrumentObjective
from langfield.methods.diffusion.latent_diffusion import LatentDiffusionConfig, LatentDiffusionMethod

__all__ = [
    "AttributeClassifierObjective",
    "ControlNetMethod",
    "ControlTrainingConfig",
    "LatentDiffusionConfig",
    "LatentDiffusionMethod",
    "PixelInstrumentObjective",
    "VAEConfig",
    "VAEMethod",
]
