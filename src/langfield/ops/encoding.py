"""Frequency encodings of coordinates: NeRF's positional encoding and Mip-NeRF's integrated one.

Layout (shared by both so they can be compared directly): frequencies ``2^k`` for
``k = min .. max-1``; the output is ``[x (optional), sin(all), cos(all)]`` where each of the
``sin`` / ``cos`` blocks is frequency-major: ``[f_0 x_0 .. f_0 x_{C-1}, f_1 x_0, ...]``.
(NeRF's code interleaves ``sin``/``cos`` per frequency; an MLP does not care about the order.)

No factor ``pi``: NeRF's paper writes ``sin(2^k pi p)`` (Eq. 4) but the official code and
Mip-NeRF's use ``sin(2^k p)``; we follow the code, so inputs in ``[-pi, pi]`` (or scene
coordinates in roughly ``[-1, 1]``) cover the lowest frequency without aliasing.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "integrated_positional_encoding",
    "integrated_positional_encoding_dim",
    "positional_encoding",
    "positional_encoding_dim",
]


def _check_int(value: int, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def positional_encoding_dim(in_dim: int, num_freqs: int, include_input: bool = True) -> int:
    """Output width of :func:`positional_encoding`: ``in_dim * (2 * num_freqs + include_input)``.

    Example:
        >>> from langfield.ops import positional_encoding_dim
        >>> positional_encoding_dim(3, num_freqs=10)  # NeRF's position encoding
        63
    """
    _check_int(in_dim, "in_dim", 0)
    _check_int(num_freqs, "num_freqs", 0)
    return in_dim * (2 * num_freqs + int(bool(include_input)))


def integrated_positional_encoding_dim(min_deg: int, max_deg: int, in_dim: int = 3) -> int:
    """Output width of :func:`integrated_positional_encoding`: ``2 * in_dim * (max_deg - min_deg)``.

    Example:
        >>> from langfield.ops import integrated_positional_encoding_dim
        >>> integrated_positional_encoding_dim(0, 16)  # Mip-NeRF's position encoding
        96
    """
    _check_int(in_dim, "in_dim", 0)
    if isinstance(min_deg, bool) or not isinstance(min_deg, int):
        raise ValueError(f"min_deg must be an int, got {min_deg!r}")
    if isinstance(max_deg, bool) or not isinstance(max_deg, int) or max_deg < min_deg:
        raise ValueError(f"max_deg must be an int >= min_deg={min_deg}, got {max_deg!r}")
    return 2 * in_dim * (max_deg - min_deg)


def _scales(min_exp: int, num: int, like: Tensor) -> Tensor:
    return 2.0 ** torch.arange(min_exp, min_exp + num, dtype=like.dtype, device=like.device)


def positional_encoding(
    x: Tensor,
    num_freqs: int,
    min_freq_exp: int = 0,
    include_input: bool = True,
) -> Tensor:
    """NeRF positional encoding ``gamma(x)`` (NeRF Sec. 5.1, Eq. 4), without the ``pi`` factor
    (as NeRF's official code; see the module docstring).

    ``[x, sin(2^k x), cos(2^k x)]`` for ``k = min_freq_exp .. min_freq_exp + num_freqs - 1``.

    Args:
        x: ``[*B, C]`` coordinates.
        num_freqs: ``L >= 0`` frequencies.
        min_freq_exp: exponent of the lowest frequency.
        include_input: prepend ``x`` itself (NeRF does).

    Returns:
        ``[*B, C * (2L + include_input)]`` (see :func:`positional_encoding_dim`).

    Example:
        ``[x, sin(x), sin(2x), cos(x), cos(2x)]`` at ``x = pi / 6``:

        >>> import math, torch
        >>> from langfield.ops import positional_encoding
        >>> gamma = positional_encoding(torch.tensor([[math.pi / 6]]), num_freqs=2)
        >>> [round(v, 4) for v in gamma[0].tolist()]
        [0.5236, 0.5, 0.866, 0.866, 0.5]
    """
    if not isinstance(x, Tensor) or x.ndim < 1:
        raise ValueError("x must be a tensor [*B, C]")
    if not x.dtype.is_floating_point:
        raise ValueError(f"x must be floating point, got {x.dtype}")
    _check_int(num_freqs, "num_freqs", 0)
    if isinstance(min_freq_exp, bool) or not isinstance(min_freq_exp, int):
        raise ValueError(f"min_freq_exp must be an int, got {min_freq_exp!r}")
    if num_freqs == 0 and not include_input:
        raise ValueError("num_freqs must be >= 1 when include_input=False (the encoding would be empty)")
    scaled = (x[..., None, :] * _scales(min_freq_exp, num_freqs, x)[:, None]).flatten(-2)  # [*B, L*C]
    parts = [x] if include_input else []
    parts += [torch.sin(scaled), torch.cos(scaled)]
    return torch.cat(parts, dim=-1)


def integrated_positional_encoding(means: Tensor, cov_diag: Tensor, min_deg: int, max_deg: int) -> Tensor:
    """Mip-NeRF integrated positional encoding (Mip-NeRF Sec. 3.1, Eq. 14).

    For ``x ~ N(mu, diag(var))`` and frequency ``f = 2^k`` the expected features are
    ``E[sin(f x)] = sin(f mu) exp(-f^2 var / 2)`` and likewise for ``cos``, for
    ``k = min_deg .. max_deg - 1``. As ``var -> 0`` this is :func:`positional_encoding` with
    ``include_input=False`` and the same frequencies.

    Args:
        means: ``[*B, C]`` Gaussian means (``C = 3`` for positions).
        cov_diag: ``[*B, C]`` diagonal covariances (variances, ``>= 0``).
        min_deg, max_deg: frequency exponents, ``max_deg > min_deg``.

    Returns:
        ``[*B, 2 * C * (max_deg - min_deg)]``.

    Example:
        A variance of ``2 ln 2`` halves the lowest frequency (``exp(-var / 2) = 1/2``), so at
        ``mu = pi / 3`` the features are half of ``sin(pi / 3) = 0.866`` and ``cos(pi / 3) = 0.5``:

        >>> import math, torch
        >>> from langfield.ops import integrated_positional_encoding
        >>> ipe = integrated_positional_encoding(
        ...     torch.tensor([[math.pi / 3]]), torch.tensor([[2 * math.log(2)]]), min_deg=0, max_deg=1)
        >>> [round(v, 4) for v in ipe[0].tolist()]  # [E sin(x), E cos(x)]
        [0.433, 0.25]
    """
    if not isinstance(means, Tensor) or means.ndim < 1:
        raise ValueError("means must be a tensor [*B, C]")
    if not isinstance(cov_diag, Tensor) or cov_diag.shape != means.shape:
        shape = None if not isinstance(cov_diag, Tensor) else tuple(cov_diag.shape)
        raise ValueError(f"cov_diag must match means {tuple(means.shape)}, got {shape}")
    integrated_positional_encoding_dim(min_deg, max_deg, means.shape[-1])  # validates the degrees
    if max_deg <= min_deg:
        raise ValueError(f"max_deg must be > min_deg={min_deg}, got {max_deg}")
    scales = _scales(min_deg, max_deg - min_deg, means)[:, None]
    mu = (means[..., None, :] * scales).flatten(-2)
    var = (cov_diag[..., None, :] * scales.square()).flatten(-2)
    damp = torch.exp(-0.5 * var)
    return torch.cat([torch.sin(mu) * damp, torch.cos(mu) * damp], dim=-1)
