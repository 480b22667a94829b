"""PLY export/import of a 3D Gaussian cloud in the reference 3DGS layout.

The layout is the one ``GaussianModel.save_ply`` of graphdeco-inria/gaussian-splatting
(Kerbl et al. 2023) writes, which common splat viewers (SuperSplat, antimatter15/splat,
the SIBR viewer, gsplat's tools, ...) read: one ``vertex`` element, binary little-endian,
every property a ``float`` (float32), in this order::

    x y z  nx ny nz  f_dc_0 f_dc_1 f_dc_2  f_rest_0 .. f_rest_{3K-1}
    opacity  scale_0 scale_1 scale_2  rot_0 rot_1 rot_2 rot_3

* normals are zero (the reference writes zeros too);
* ``f_dc_*`` is the DC SH coefficient (r, g, b), ``f_rest_*`` the higher-order ones stored
  **channel-major**: the first ``K`` values are red for coefficients ``1..K``, then green,
  then blue, i.e. ``f_rest = shN.transpose(1, 2).reshape(N, 3 * K)``; see
  :mod:`langfield.geometry.spherical_harmonics` for the basis and sign convention;
* ``opacity`` is the raw logit, ``scale_*`` the log-scales, ``rot_*`` the raw (not
  necessarily normalised) quaternion ``w, x, y, z`` -- exactly the stored parameters, not
  their activations.

Our extension: optional per-Gaussian extra channels (e.g. language features) follow as
``f_feat_0 .. f_feat_{F-1}``. Viewers look properties up by name and ignore unknown ones.

Reading looks every property up **by name**, so files whose properties are in another
order, that lack the (unused) normals, carry extra properties, are ASCII, or store
``double`` values (cast to float32) also load.

All writes go through :func:`langfield.io.atomic.atomic_write`: a failed export never
leaves a truncated file or clobbers an existing one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np
import torch
from torch import Tensor

from langfield._checks import MAX_ABS_COORDINATE, check_finite_array
from langfield.io.atomic import atomic_write
from langfield.io.ply_header import check_ply_header

PathLike = Union[str, os.PathLike]

__all__ = [
    "GaussianPly",
    "MAX_PLY_SH_DEGREE",
    "ply_property_names",
    "read_gaussian_ply",
    "write_gaussian_ply",
]

#: Highest SH degree the reference layout (and the viewers reading it) supports.
MAX_PLY_SH_DEGREE = 3

_PARAM_NAMES = ("means", "scales", "quats", "opacities", "sh0", "shN")
_OPTIONAL_NAMES = ("features",)
_F_REST_RE = re.compile(r"^f_rest_(\d+)$")
_F_FEAT_RE = re.compile(r"^f_feat_(\d+)$")
# Number of higher-order SH coefficients K -> degree, for degrees 0..MAX_PLY_SH_DEGREE.
_K_TO_DEGREE = {(d + 1) ** 2 - 1: d for d in range(MAX_PLY_SH_DEGREE + 1)}


def _degree_from_rest(k: int) -> Optional[int]:
    return _K_TO_DEGREE.get(k)


@dataclass
class GaussianPly:
    """A Gaussian cloud's raw (un-activated) parameters, as stored in the model and the PLY.

    Attributes:
        means: ``[N, 3]`` centres.
        scales: ``[N, 3]`` log-scales.
        quats: ``[N, 4]`` raw quaternions ``(w, x, y, z)``, not necessarily normalised.
        opacities: ``[N]`` opacity logits.
        sh0: ``[N, 1, 3]`` DC SH coefficient.
        shN: ``[N, K, 3]`` higher-order SH coefficients, ``K = (degree + 1)^2 - 1`` with
            ``degree`` in ``0..3`` (``K`` in ``{0, 3, 8, 15}``).
        features: optional ``[N, F]`` extra per-Gaussian channels (``F >= 1``).

    Shapes are checked on construction (a mismatch raises ``ValueError`` naming the
    field); values are checked when written. :func:`read_gaussian_ply` returns float32
    CPU tensors.
    """

    means: Tensor
    scales: Tensor
    quats: Tensor
    opacities: Tensor
    sh0: Tensor
    shN: Tensor
    features: Optional[Tensor] = None

    def __post_init__(self) -> None:
        for name in _PARAM_NAMES + _OPTIONAL_NAMES:
            value = getattr(self, name)
            if value is None and name in _OPTIONAL_NAMES:
                continue
            if not isinstance(value, Tensor):
                try:
                    value = torch.as_tensor(np.asarray(value))
                except Exception as exc:  # noqa: BLE001 - re-raised with the field name
                    raise TypeError(f"{name} must be a tensor, got {type(value).__name__}") from exc
                setattr(self, name, value)
            if not (value.is_floating_point()):
                raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
        if self.means.ndim != 2 or self.means.shape[1] != 3:
            raise ValueError(f"means must have shape [N, 3], got {list(self.means.shape)}")
        n = self.means.shape[0]
        expected = {
            "scales": (n, 3),
            "quats": (n, 4),
            "opacities": (n,),
            "sh0": (n, 1, 3),
        }
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"{name} must have shape {list(shape)} (N={n} from means), got {list(got)}")
        shn = self.shN
        if shn.ndim != 3 or shn.shape[0] != n or shn.shape[2] != 3:
            raise ValueError(f"shN must have shape [N, K, 3] (N={n} from means), got {list(shn.shape)}")
        if _degree_from_rest(shn.shape[1]) is None:
            raise ValueError(
                f"shN has K={shn.shape[1]} higher-order coefficients; K must be (degree+1)^2 - 1 for "
                f"degree 0..{MAX_PLY_SH_DEGREE}, i.e. one of {sorted(_K_TO_DEGREE)}"
            )
        if self.features is not None:
            f = self.features
            if f.ndim != 2 or f.shape[0] != n or f.shape[1] < 1:
                raise ValueError(f"features must have shape [N, F] with F >= 1 (N={n} from means), got {list(f.shape)}")

    @property
    def sh_degree(self) -> int:
        """SH degree, from the number of higher-order coefficients ``K``."""
        degree = _degree_from_rest(self.shN.shape[1])
        assert degree is not None  # validated in __post_init__
        return degree

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[0])

    @property
    def num_features(self) -> int:
        """``F``, the number of extra channels (0 without features)."""
        return 0 if self.features is None else int(self.features.shape[1])

    def as_dict(self) -> dict[str, Tensor]:
        """The parameters as a dict (``features`` only when present)."""
        out = {name: getattr(self, name) for name in _PARAM_NAMES}
        if self.features is not None:
            out["features"] = self.features
        return out


def ply_property_names(sh_degree: int, num_features: int = 0) -> list[str]:
    """The vertex property names, in on-disk order, for ``sh_degree`` and ``num_features``."""
    if not 0 <= sh_degree <= MAX_PLY_SH_DEGREE:
        raise ValueError(f"sh_degree must be in 0..{MAX_PLY_SH_DEGREE}, got {sh_degree}")
    k = (sh_degree + 1) ** 2 - 1
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * k)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    names += [f"f_feat_{i}" for i in range(num_features)]
    return names


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------


def _as_cloud(cloud: Union[GaussianPly, Mapping[str, Any]]) -> GaussianPly:
    if isinstance(cloud, GaussianPly):
        return GaussianPly(**cloud.as_dict())  # re-validate: fields may have been reassigned
    if not hasattr(cloud, "keys") or not hasattr(cloud, "__getitem__"):
        raise TypeError(f"cloud must be a GaussianPly or a mapping of tensors, got {type(cloud).__name__}")
    params = {str(k): cloud[k] for k in cloud.keys()}
    missing = [name for name in _PARAM_NAMES if name not in params]
    if missing:
        raise ValueError(f"cloud is missing required parameter(s) {missing}; expected {list(_PARAM_NAMES)}")
    unknown = sorted(set(params) - set(_PARAM_NAMES) - set(_OPTIONAL_NAMES))
    if unknown:
        raise ValueError(
            f"cloud has unknown parameter(s) {unknown}; expected {list(_PARAM_NAMES)} and optionally 'features'"
        )
    return GaussianPly(**params)


def _to_float32_numpy(name: str, value: Tensor) -> np.ndarray:
    """Detached float32 CPU copy of ``value``, refusing non-finite entries (per row)."""
    t = value.detach()
    # Check before the cast (a float64 NaN) and after (a float64 that overflows float32).
    for stage, tensor in (("", t), (" after casting to float32", t.to(torch.float32))):
        bad = ~torch.isfinite(tensor)
        if bad.any():
            rows = int(bad.reshape(bad.shape[0], -1).any(dim=1).sum()) if bad.ndim > 1 else int(bad.sum())
            raise ValueError(
                f"{name} has {rows} of {tensor.shape[0]} rows with non-finite values (NaN/inf){stage}; "
                "refusing to write the PLY"
            )
    return t.to(device="cpu", dtype=torch.float32).contiguous().numpy()


def write_gaussian_ply(path: PathLike, cloud: Union[GaussianPly, Mapping[str, Any]]) -> Path:
    """Write ``cloud`` as a binary little-endian 3DGS PLY at ``path`` (atomically).

    Args:
        path: destination file; its parent directory is created if missing.
        cloud: a :class:`GaussianPly`, or a mapping with keys ``means, scales, quats,
            opacities, sh0, shN`` and optionally ``features`` (tensors or arrays in the
            shapes documented on :class:`GaussianPly`; any device/float dtype, cast to
            float32). Unknown keys are an error.

    Returns:
        ``Path(path)``.

    Raises:
        ValueError: a shape mismatch (naming the parameter), a missing/unknown key, or
            NaN/inf in a parameter (naming it and how many rows are bad). The target is
            left untouched in every error case.
    """
    from plyfile import PlyData, PlyElement

    target = Path(path)
    cloud = _as_cloud(cloud)
    n = cloud.num_gaussians
    k = cloud.shN.shape[1]

    arrays = {name: _to_float32_numpy(name, value) for name, value in cloud.as_dict().items()}
    columns = [
        arrays["means"],
        np.zeros((n, 3), dtype=np.float32),  # normals, zero as in the reference
        arrays["sh0"].reshape(n, 3),
        # channel-major: [N, K, 3] -> [N, 3, K] -> [N, 3K]
        arrays["shN"].transpose(0, 2, 1).reshape(n, 3 * k),
        arrays["opacities"].reshape(n, 1),
        arrays["scales"],
        arrays["quats"],
    ]
    if "features" in arrays:
        columns.append(arrays["features"])
    table = np.ascontiguousarray(np.concatenate(columns, axis=1), dtype="<f4")
    names = ply_property_names(cloud.sh_degree, cloud.num_features)
    assert table.shape == (n, len(names)), (table.shape, len(names))
    vertex = table.view(np.dtype([(name, "<f4") for name in names])).reshape(n)

    ply = PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<")
    with atomic_write(target, "wb") as f:
        ply.write(f)
    return target


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------


def _indexed(names: list[str], pattern: re.Pattern[str], what: str, path: Path) -> list[str]:
    """Property names matching ``pattern`` sorted by index; the indices must be 0..M-1."""
    found = {}
    for name in names:
        m = pattern.match(name)
        if m:
            found[int(m.group(1))] = name
    if found and sorted(found) != list(range(len(found))):
        missing = sorted(set(range(max(found) + 1)) - set(found))
        raise ValueError(
            f"{path}: {what} properties are not numbered 0..{len(found) - 1}: "
            f"missing {[what.replace('*', str(i)) for i in missing[:10]]}"
            + (" ..." if len(missing) > 10 else "")
        )
    return [found[i] for i in range(len(found))]


def read_gaussian_ply(path: PathLike) -> GaussianPly:
    """Read a 3DGS PLY written by the reference implementation, gsplat or :func:`write_gaussian_ply`.

    Properties are looked up by name; the normals and unknown properties are ignored.
    The SH degree is inferred from the number of ``f_rest_*`` properties, which must be
    ``3 * ((d + 1)^2 - 1)`` for ``d`` in ``0..3``. ``f_feat_*`` properties, if present,
    become ``features``. Binary (either endianness) and ASCII files are accepted; ``double``
    (and other numeric) properties are cast to float32.

    Returns:
        A :class:`GaussianPly` of float32 CPU tensors.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a readable PLY, has no ``vertex`` element, lacks
            required properties (all named), has a bad ``f_rest_*``/``f_feat_*`` count or
            numbering, has list-typed properties, holds NaN/inf values (naming the
            properties), positions beyond ``MAX_ABS_COORDINATE``, or element counts the
            file is too small to hold (checked before parsing). Every message names the file.
    """
    from plyfile import PlyData, PlyListProperty

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"Gaussian PLY not found: {p}")
    if p.is_dir():
        raise ValueError(f"{p}: is a directory, not a PLY file")
    check_ply_header(p)  # element counts vs file size, before plyfile allocates them
    try:
        with open(p, "rb") as f:
            ply = PlyData.read(f, mmap=False)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - plyfile raises several types on malformed files
        raise ValueError(f"{p}: not a readable PLY file ({type(exc).__name__}: {exc})") from exc

    element_names = [el.name for el in ply.elements]
    if "vertex" not in element_names:
        raise ValueError(f"{p}: no 'vertex' element in the PLY (elements: {element_names})")
    vertex = ply["vertex"]
    prop_names = [prop.name for prop in vertex.properties]

    list_props = [prop.name for prop in vertex.properties if isinstance(prop, PlyListProperty)]
    if list_props:
        raise ValueError(f"{p}: vertex properties {list_props} are lists; a 3DGS PLY has scalar properties only")

    f_rest = _indexed(prop_names, _F_REST_RE, "f_rest_*", p)
    f_feat = _indexed(prop_names, _F_FEAT_RE, "f_feat_*", p)
    if len(f_rest) % 3 != 0 or _degree_from_rest(len(f_rest) // 3) is None:
        valid = [3 * kk for kk in sorted(_K_TO_DEGREE)]
        raise ValueError(
            f"{p}: {len(f_rest)} f_rest_* properties; expected 3 * ((d+1)^2 - 1) for SH degree d in "
            f"0..{MAX_PLY_SH_DEGREE}, i.e. one of {valid}"
        )
    k = len(f_rest) // 3

    required = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
    required += ["scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    missing = [name for name in required if name not in prop_names]
    if missing:
        hint = ""
        if "chunk" in element_names or any(name.startswith("packed_") for name in prop_names):
            hint = " (this looks like a compressed splat PLY, which is not supported; export an uncompressed one)"
        raise ValueError(f"{p}: missing required vertex properties {missing}{hint}")

    data = vertex.data
    n = len(data)
    wanted = required + f_rest + f_feat
    for name in wanted:
        if data.dtype[name].kind not in "fiu":
            raise ValueError(f"{p}: vertex property {name!r} has non-numeric type {data.dtype[name]}")
    # [N, P] float32 table in `wanted` order (casts double/int properties).
    table = np.empty((n, len(wanted)), dtype=np.float32)
    for j, name in enumerate(wanted):
        table[:, j] = data[name]
    bad = ~np.isfinite(table)
    if bad.any():
        counts = bad.sum(axis=0)
        details = ", ".join(f"{wanted[j]!r}: {int(counts[j])}" for j in np.flatnonzero(counts)[:10])
        more = " ..." if np.count_nonzero(counts) > 10 else ""
        raise ValueError(f"{p}: non-finite (NaN/inf) values in vertex properties {{{details}{more}}}")

    col = {name: j for j, name in enumerate(wanted)}

    def cols(names: list[str]) -> Tensor:
        idx = [col[name] for name in names]
        return torch.from_numpy(np.ascontiguousarray(table[:, idx]))

    means = cols(["x", "y", "z"])
    check_finite_array(means, f"{p}: vertex positions (x, y, z)", max_abs=MAX_ABS_COORDINATE)
    sh0 = cols(["f_dc_0", "f_dc_1", "f_dc_2"]).reshape(n, 1, 3)
    # channel-major [N, 3K] -> [N, 3, K] -> [N, K, 3]
    shN = cols(f_rest).reshape(n, 3, k).transpose(1, 2).contiguous()
    opacities = cols(["opacity"]).reshape(n)
    scales = cols(["scale_0", "scale_1", "scale_2"])
    quats = cols(["rot_0", "rot_1", "rot_2", "rot_3"])
    features = cols(f_feat) if f_feat else None
    return GaussianPly(
        means=means, scales=scales, quats=quats, opacities=opacities, sh0=sh0, shN=shN, features=features
    )
