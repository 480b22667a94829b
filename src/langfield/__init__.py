"""langfield: neural 3D scenes that meet vision-language and diffusion models."""

from langfield.types import Cameras, Rays, RenderOutput

__all__ = ["Cameras", "Rays", "RenderOutput"]
__version__ = "0.1.0"
