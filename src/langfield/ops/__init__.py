"""Public differentiable primitives: volume rendering, sampling along rays, encodings.

Stateless functions on tensors (and per-sample callables), any number of channels. Slow,
readable twins for tests live in :mod:`langfield.ops.reference`.
"""

from langfield.ops.encoding import (
    integrated_positional_encoding,
    integrated_positional_encoding_dim,
    positional_encoding,
    positional_encoding_dim,
)
from langfield.ops.depth_supervision import DEPTH_MIN_ACCUMULATION, depth_l1
from langfield.ops.early_termination import densities_front_to_back
from langfield.ops.ray_regularizers import distortion_loss, piecewise_lin_disp
from langfield.ops.sampling import (
    conical_frustum_to_gaussian,
    mipnerf_blur_weights,
    sample_pdf,
    sample_pdf_edges,
    stratified_bins,
)
from langfield.ops.volume_rendering import (
    RenderAux,
    accumulate_along_rays,
    composite_over_background,
    mask_after_transmittance,
    normals_from_density,
    render_expected_depth,
    render_median_depth,
    render_rays,
    render_transmittance_from_density,
    render_weights_from_alpha,
    render_weights_from_density,
)

__all__ = [
    "DEPTH_MIN_ACCUMULATION",
    "RenderAux",
    "accumulate_along_rays",
    "composite_over_background",
    "conical_frustum_to_gaussian",
    "densities_front_to_back",
    "depth_l1",
    "distortion_loss",
    "integrated_positional_encoding",
    "integrated_positional_encoding_dim",
    "mask_after_transmittance",
    "mipnerf_blur_weights",
    "normals_from_density",
    "piecewise_lin_disp",
    "positional_encoding",
    "positional_encoding_dim",
    "render_expected_depth",
    "render_median_depth",
    "render_rays",
    "render_transmittance_from_density",
    "render_weights_from_alpha",
    "render_weights_from_density",
    "sample_pdf",
    "sample_pdf_edges",
    "stratified_bins",
]
