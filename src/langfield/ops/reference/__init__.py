"""Slow, readable twins of the ops (same names), used by tests for value and gradient parity."""

from langfield.ops.reference.ray_regularizers import distortion_loss
from langfield.ops.reference.volume_rendering import (
    accumulate_along_rays,
    render_weights_from_density,
)

__all__ = ["accumulate_along_rays", "distortion_loss", "render_weights_from_density"]
