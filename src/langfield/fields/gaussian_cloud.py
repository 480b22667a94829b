"""The Gaussian cloud of 3D Gaussian Splatting (Kerbl et al. 2023, Sec. 4) as an ``nn.Module``.

Parameters are stored raw, as the reference stores them (and as its PLY files hold them):

==============  ==========  ===================================================
name            shape       activation
==============  ==========  ===================================================
``means``       ``[N, 3]``  none (world position)
``scales``      ``[N, 3]``  ``exp`` (standard deviations along the local axes)
``quats``       ``[N, 4]``  normalised (w, x, y, z)
``opacities``   ``[N]``     ``sigmoid``
``sh0``         ``[N,1,3]`` DC spherical-harmonic coefficient (colour = SH + 0.5)
``shN``         ``[N,K,3]`` higher SH coefficients, ``K = (degree + 1)^2 - 1``
``features``    ``[N, F]``  none; optional extra channels (e.g. language features)
==============  ==========  ===================================================

The number of Gaussians changes during training (densification edits the parameters in place,
keeping the same ``nn.Parameter`` objects), so :meth:`_load_from_state_dict` resizes every
parameter to the checkpoint's shape before copying.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np
import torch
from torch import Tensor, nn

from langfield.geometry.spherical_harmonics import num_sh_coeffs, rgb_to_sh_dc
from langfield.io.gaussian_ply import read_gaussian_ply

__all__ = ["GaussianCloud", "nearest_neighbour_distances", "PARAM_NAMES"]

PARAM_NAMES = ("means", "scales", "quats", "opacities", "sh0", "shN", "features")


def nearest_neighbour_distances(points: Tensor, k: int = 3) -> Tensor:
    """``[N]`` mean distance of every point to its ``k`` nearest other points (scipy KD-tree).

    The reference initialises each Gaussian's scale from this (3 neighbours)."""
    n = points.shape[0]
    if n < 2:
        return torch.ones(n, dtype=points.dtype)
    from scipy.spatial import cKDTree

    pts = points.detach().cpu().double().numpy()
    kk = min(k + 1, n)
    dist, _ = cKDTree(pts).query(pts, k=kk)
    return torch.from_numpy(np.asarray(dist)[:, 1:].mean(axis=1)).to(points.dtype)


class GaussianCloud(nn.Module):
    """``N`` anisotropic 3D Gaussians with SH colour (and optional feature channels).

    Args:
        params: initial raw tensors keyed by :data:`PARAM_NAMES` (``features`` optional).
        sh_degree: maximum SH degree (``shN`` must have ``(sh_degree + 1)^2 - 1`` coefficients).
    """

    def __init__(self, params: Dict[str, Tensor], sh_degree: int) -> None:
        super().__init__()
        missing = [k for k in PARAM_NAMES[:-1] if k not in params]
        if missing:
            raise ValueError(f"GaussianCloud needs parameters {missing}")
        unknown = sorted(set(params) - set(PARAM_NAMES))
        if unknown:
            raise ValueError(f"GaussianCloud: unknown parameters {unknown}; known: {list(PARAM_NAMES)}")
        n = params["means"].shape[0]
        expected = {
            "means": (n, 3), "scales": (n, 3), "quats": (n, 4), "opacities": (n,), "sh0": (n, 1, 3),
            "shN": (n, num_sh_coeffs(sh_degree) - 1, 3),
        }  # fmt: skip
        for name, shape in expected.items():
            if tuple(params[name].shape) != shape:
                raise ValueError(f"GaussianCloud.{name} must be {list(shape)}, got {tuple(params[name].shape)}")
        if "features" in params and (params["features"].ndim != 2 or params["features"].shape[0] != n):
            raise ValueError(f"GaussianCloud.features must be [{n}, F], got {tuple(params['features'].shape)}")
        self.sh_degree = int(sh_degree)
        self.params = nn.ParameterDict(
            {k: nn.Parameter(params[k].detach().float().clone()) for k in PARAM_NAMES if k in params}
        )
        self.check_finite()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_points(
        cls,
        points: Tensor,
        colors: Tensor,
        sh_degree: int = 3,
        init_opacity: float = 0.1,
        init_scale: float = 1.0,
        num_features: int = 0,
    ) -> "GaussianCloud":
        """One isotropic Gaussian per point (the reference initialisation, Sec. 5.1): scale =
        ``init_scale`` x mean distance to the 3 nearest neighbours, identity rotation, opacity
        ``init_opacity``, DC colour from ``colors [N, 3]`` in [0, 1], higher SH zero."""
        points = torch.as_tensor(points, dtype=torch.float32)
        colors = torch.as_tensor(colors, dtype=torch.float32)
        if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] == 0:
            raise ValueError(f"points must be a non-empty [N, 3] array, got {tuple(points.shape)}")
        if colors.shape != points.shape:
            raise ValueError(f"colors must be {list(points.shape)} in [0, 1], got {tuple(colors.shape)}")
        if not bool(torch.isfinite(points).all()):
            raise ValueError("points contain NaN/inf")
        if not 0 < init_opacity < 1:
            raise ValueError(f"init_opacity must be in (0, 1), got {init_opacity}")
        n = points.shape[0]
        dist = nearest_neighbour_distances(points).clamp_min(1e-7)
        params = {
            "means": points,
            "scales": torch.log(dist * init_scale)[:, None].repeat(1, 3),
            "quats": torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
            "opacities": torch.full((n,), math.log(init_opacity / (1 - init_opacity))),
            "sh0": rgb_to_sh_dc(colors.clamp(0, 1))[:, None, :],
            "shN": torch.zeros(n, num_sh_coeffs(sh_degree) - 1, 3),
        }
        if num_features:
            params["features"] = torch.zeros(n, num_features)
        return cls(params, sh_degree)

    @classmethod
    def random_in_box(
        cls, num: int, box: Tensor, sh_degree: int = 3, seed: int = 0, **kwargs
    ) -> "GaussianCloud":
        """``num`` points uniform in ``box [2, 3]`` with random colours (used when the data has
        no sparse points, e.g. NeRF-synthetic; the reference draws 100k in a cube)."""
        if num < 1:
            raise ValueError(f"number of random Gaussians must be >= 1, got {num}")
        box = torch.as_tensor(box, dtype=torch.float32)
        g = torch.Generator().manual_seed(seed)
        points = box[0] + torch.rand(num, 3, generator=g) * (box[1] - box[0])
        colors = torch.rand(num, 3, generator=g)
        return cls.from_points(points, colors, sh_degree, **kwargs)

    @classmethod
    def from_ply(cls, path) -> "GaussianCloud":
        """Load a cloud from a PLY in the reference 3DGS layout (ours, the reference's, gsplat's)."""
        ply = read_gaussian_ply(path)
        params = {k: v for k, v in ply.as_dict().items() if v is not None}
        return cls(params, ply.sh_degree)

    @classmethod
    def from_state_dict(cls, state_dict: Dict[str, Tensor], prefix: str = "") -> "GaussianCloud":
        """Rebuild a cloud from a (method) state dict holding ``{prefix}params.<name>`` tensors."""
        params = {k: state_dict[f"{prefix}params.{k}"] for k in PARAM_NAMES if f"{prefix}params.{k}" in state_dict}
        if "shN" not in params:
            raise ValueError(f"state dict has no '{prefix}params.shN': not a Gaussian cloud")
        degree = int(round(math.sqrt(params["shN"].shape[1] + 1))) - 1
        return cls(params, degree)

    # ------------------------------------------------------------------ activated views

    @property
    def num_gaussians(self) -> int:
        return int(self.params["means"].shape[0])

    @property
    def means(self) -> Tensor:
        return self.params["means"]

    @property
    def scales(self) -> Tensor:
        return torch.exp(self.params["scales"])

    @property
    def quats(self) -> Tensor:
        return self.params["quats"]

    @property
    def opacities(self) -> Tensor:
        return torch.sigmoid(self.params["opacities"])

    @property
    def sh(self) -> Tensor:
        """``[N, (degree + 1)^2, 3]`` all SH coefficients."""
        return torch.cat([self.params["sh0"], self.params["shN"]], dim=1)

    @property
    def features(self) -> Optional[Tensor]:
        return self.params["features"] if "features" in self.params else None

    def raw(self) -> Dict[str, Tensor]:
        """Detached raw tensors by name (for export)."""
        return {k: v.detach() for k, v in self.params.items()}

    def check_finite(self) -> None:
        """Raise ``ValueError`` naming every parameter with NaN/inf rows."""
        bad = []
        for name, value in self.params.items():
            if value.shape[0] == 0:
                continue
            rows = ~torch.isfinite(value.detach().reshape(value.shape[0], -1)).all(-1)
            if bool(rows.any()):
                bad.append(f"{name} ({int(rows.sum())} rows)")
        if bad:
            raise ValueError(f"Gaussian parameters contain NaN/inf: {', '.join(bad)} of {self.num_gaussians}")

    # ------------------------------------------------------------------ checkpoints

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # Densification changes N: resize every parameter to the checkpoint's shape first, keeping
        # the same Parameter objects so optimisers built on them stay valid. Only the row count may
        # differ, and it must be the same for every parameter.
        means = state_dict.get(f"{prefix}params.means")
        rows = means.shape[0] if isinstance(means, Tensor) and means.ndim >= 1 else None
        bad = [
            f"{prefix}params.{name}: {tuple(state_dict[key].shape)}, expected [{rows}, {', '.join(map(str, param.shape[1:]))}]"
            for name, param in self.params.items()
            for key in [f"{prefix}params.{name}"]
            if key in state_dict and (state_dict[key].ndim != param.ndim or state_dict[key].shape[1:] != param.shape[1:]
                                      or state_dict[key].shape[0] != rows)
        ]  # fmt: skip
        if bad:
            error_msgs.append("Gaussian parameters of inconsistent shapes: " + "; ".join(bad[:3]))
            return
        for name, param in self.params.items():
            key = f"{prefix}params.{name}"
            if key in state_dict and state_dict[key].shape != param.shape:
                param.data = torch.empty(state_dict[key].shape, dtype=param.dtype, device=param.device)
                param.grad = None
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
