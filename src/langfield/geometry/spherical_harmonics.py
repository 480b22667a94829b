"""Real spherical harmonics up to degree 4, in the layout and sign convention of 3D Gaussian splatting.

Basis: orthonormal real SH on the unit sphere (``integral Y_i Y_j dOmega = delta_ij``), index
``k = l^2 + l + m`` for degree ``l`` and order ``m = -l..l``; ``(degree + 1)^2`` functions. The
polynomials and constants are those of 3DGS ``utils/sh_utils.py`` (Kerbl et al. 2023, taken from
Plenoxels / PlenOctrees, Yu et al. 2021), **including their signs**; the Condon-Shortley phase
makes the odd-``m`` terms negative, e.g. degree 1 is ``(-C1 y, C1 z, -C1 x)``. A 3DGS PLY
(``f_dc_*``, ``f_rest_*``) therefore evaluates to the reference colours with :func:`eval_sh`.

PLY layout note: 3DGS stores ``f_rest_*`` channel-major (all ``K - 1`` coefficients of red,
then green, then blue). ``coeffs [N, K, 3]`` here is
``cat([f_dc.reshape(N, 1, 3), f_rest.reshape(N, 3, K - 1).transpose(1, 2)], 1)``.

Colour convention: :func:`eval_sh` returns ``sum_k coeffs_k Y_k(d)`` **without** the ``+0.5``
that 3DGS adds afterwards (``rgb = clamp_min(eval_sh(...) + 0.5, 0)``); add it in the renderer.
:func:`rgb_to_sh_dc` / :func:`sh_dc_to_rgb` include it, as 3DGS' ``RGB2SH`` / ``SH2RGB``.

``dirs`` are viewing directions (camera centre -> point in 3DGS); they are normalised inside,
so gradients flow to unnormalised directions as in the 3DGS CUDA backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "SH_C0",
    "SH_C1",
    "SH_C2",
    "SH_C3",
    "SH_C4",
    "MAX_SH_DEGREE",
    "num_sh_coeffs",
    "sh_basis",
    "eval_sh",
    "rgb_to_sh_dc",
    "sh_dc_to_rgb",
]

MAX_SH_DEGREE = 4

# Constants of 3DGS utils/sh_utils.py, signs included: each makes its polynomial unit-norm on
# the sphere (e.g. SH_C0 = 1 / (2 sqrt(pi)), SH_C1 = sqrt(3 / (4 pi))).
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (
    1.0925484305920792,
    -1.0925484305920792,
    0.31539156525252005,
    -1.0925484305920792,
    0.5462742152960396,
)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)
SH_C4 = (
    2.5033429417967046,
    -1.7701307697799304,
    0.9461746957575601,
    -0.6690465435572892,
    0.10578554691520431,
    -0.6690465435572892,
    0.47308734787878004,
    -1.7701307697799304,
    0.6258357354491761,
)


def num_sh_coeffs(degree: int) -> int:
    """``(degree + 1)^2``, the number of basis functions up to ``degree``.

    Example:
        >>> from langfield.geometry.spherical_harmonics import num_sh_coeffs
        >>> [num_sh_coeffs(d) for d in range(4)]
        [1, 4, 9, 16]
    """
    _check_degree(degree)
    return (degree + 1) ** 2


def _check_degree(degree: int) -> None:
    if isinstance(degree, bool) or not isinstance(degree, int) or not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"degree must be an int in [0, {MAX_SH_DEGREE}], got {degree!r}")


def sh_basis(dirs: Tensor, degree: int) -> Tensor:
    """Real SH basis ``[*B, (degree + 1)^2]`` at directions ``dirs [*B, 3]`` (normalised inside).

    Column ``k`` is the function 3DGS multiplies with ``sh[..., k]``, signs included.

    Example:
        Degree 1 is ``(-C1 y, C1 z, -C1 x)`` (3DGS' signs), ``C0 = 0.2821``, ``C1 = 0.4886``:

        >>> import torch
        >>> from langfield.geometry.spherical_harmonics import sh_basis
        >>> [round(v, 4) for v in sh_basis(torch.tensor([1.0, 2.0, 2.0]), degree=1).tolist()]  # d = (1, 2, 2) / 3
        [0.2821, -0.3257, 0.3257, -0.1629]
    """
    _check_degree(degree)
    if not isinstance(dirs, Tensor) or dirs.ndim < 1 or dirs.shape[-1] != 3:
        raise ValueError(f"dirs must have shape [..., 3], got {tuple(getattr(dirs, 'shape', ()))}")
    if not dirs.is_floating_point():
        raise ValueError(f"dirs must be a floating-point tensor, got {dirs.dtype}")
    d = F.normalize(dirs, dim=-1)
    x, y, z = d.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        xy, yz, xz = x * y, y * z, x * z
        out += [
            SH_C2[0] * xy,
            SH_C2[1] * yz,
            SH_C2[2] * (2.0 * zz - xx - yy),
            SH_C2[3] * xz,
            SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            SH_C3[0] * y * (3.0 * xx - yy),
            SH_C3[1] * xy * z,
            SH_C3[2] * y * (4.0 * zz - xx - yy),
            SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            SH_C3[4] * x * (4.0 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3.0 * yy),
        ]
    if degree >= 4:
        # These use x^2 + y^2 + z^2 = 1 (as 3DGS does), hence the normalisation above.
        out += [
            SH_C4[0] * xy * (xx - yy),
            SH_C4[1] * yz * (3.0 * xx - yy),
            SH_C4[2] * xy * (7.0 * zz - 1.0),
            SH_C4[3] * yz * (7.0 * zz - 3.0),
            SH_C4[4] * (zz * (35.0 * zz - 30.0) + 3.0),
            SH_C4[5] * xz * (7.0 * zz - 3.0),
            SH_C4[6] * (xx - yy) * (7.0 * zz - 1.0),
            SH_C4[7] * xz * (xx - 3.0 * yy),
            SH_C4[8] * (xx * (xx - 3.0 * yy) - yy * (3.0 * xx - yy)),
        ]
    return torch.stack(out, dim=-1)


def eval_sh(coeffs: Tensor, dirs: Tensor, degree: int) -> Tensor:
    """``sum_k coeffs[..., k, :] Y_k(dirs)``: SH colours/features ``[*B, D]`` (no ``+0.5`` offset).

    Args:
        coeffs: ``[*B, K, D]`` coefficients, ``K >= (degree + 1)^2``; only the first
            ``(degree + 1)^2`` are used, so a model can raise its active degree during training
            (as 3DGS does). Any channel count ``D``.
        dirs: ``[*B, 3]`` directions (broadcast against ``coeffs``' batch dims; normalised inside).
        degree: active SH degree, 0..4.

    Example:
        A DC-only colour is the same from every direction; a degree-1 ``z`` term brightens the view along ``+z``:

        >>> import torch
        >>> from langfield.geometry.spherical_harmonics import SH_C1, eval_sh, rgb_to_sh_dc
        >>> coeffs = torch.zeros(4, 3)
        >>> coeffs[0] = rgb_to_sh_dc(torch.tensor([0.8, 0.5, 0.2]))
        >>> dirs = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
        >>> [[round(v, 4) for v in rgb] for rgb in (eval_sh(coeffs, dirs, degree=1) + 0.5).tolist()]
        [[0.8, 0.5, 0.2], [0.8, 0.5, 0.2]]
        >>> coeffs[2] = 0.1 / SH_C1  # Y_2 = C1 z
        >>> [[round(v, 4) for v in rgb] for rgb in (eval_sh(coeffs, dirs, degree=1) + 0.5).tolist()]
        [[0.9, 0.6, 0.3], [0.8, 0.5, 0.2]]
    """
    _check_degree(degree)
    n = (degree + 1) ** 2
    if not isinstance(coeffs, Tensor) or coeffs.ndim < 2:
        raise ValueError(f"coeffs must have shape [..., K, D], got {tuple(getattr(coeffs, 'shape', ()))}")
    if coeffs.shape[-2] < n:
        raise ValueError(f"coeffs has K={coeffs.shape[-2]} coefficients; degree {degree} needs at least {n}")
    basis = sh_basis(dirs, degree).to(coeffs.dtype)
    return (basis[..., :, None] * coeffs[..., :n, :]).sum(-2)


def rgb_to_sh_dc(rgb: Tensor) -> Tensor:
    """DC coefficient whose colour (after the renderer's ``+0.5``) is ``rgb``: ``(rgb - 0.5) / SH_C0``.

    Example:
        >>> import torch
        >>> from langfield.geometry.spherical_harmonics import rgb_to_sh_dc, sh_dc_to_rgb
        >>> dc = rgb_to_sh_dc(torch.tensor([0.5, 1.0]))
        >>> [round(v, 4) for v in dc.tolist()], [round(v, 4) for v in sh_dc_to_rgb(dc).tolist()]
        ([0.0, 1.7725], [0.5, 1.0])
    """
    return (rgb - 0.5) / SH_C0


def sh_dc_to_rgb(dc: Tensor) -> Tensor:
    """Colour of a DC-only SH, ``dc * SH_C0 + 0.5`` (inverse of :func:`rgb_to_sh_dc`).

    Example:
        >>> import torch
        >>> from langfield.geometry.spherical_harmonics import sh_dc_to_rgb
        >>> sh_dc_to_rgb(torch.tensor([0.0])).tolist()  # a zero DC term is mid grey
        [0.5]
    """
    return dc * SH_C0 + 0.5
