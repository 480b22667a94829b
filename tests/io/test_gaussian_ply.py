"""Tests for langfield.io.gaussian_ply: 3DGS PLY export/import in the reference layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

plyfile = pytest.importorskip("plyfile")
from plyfile import PlyData, PlyElement  # noqa: E402

from langfield.io.gaussian_ply import (  # noqa: E402
    GaussianPly,
    ply_property_names,
    read_gaussian_ply,
    write_gaussian_ply,
)

PARAMS = ("means", "scales", "quats", "opacities", "sh0", "shN")


def _cloud(n: int = 7, degree: int = 3, num_features: int = 0, seed: int = 0) -> GaussianPly:
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2 - 1
    return GaussianPly(
        means=torch.randn(n, 3, generator=g),
        scales=torch.randn(n, 3, generator=g) - 3.0,
        quats=torch.randn(n, 4, generator=g) * 2.0,  # deliberately not normalised
        opacities=torch.randn(n, generator=g),
        sh0=torch.randn(n, 1, 3, generator=g),
        shN=torch.randn(n, k, 3, generator=g),
        features=torch.randn(n, num_features, generator=g) if num_features else None,
    )


def _subset(data: np.ndarray, names: list[str]) -> np.ndarray:
    """A packed copy of the structured array ``data`` with only the fields ``names``."""
    out = np.empty(len(data), dtype=[(name, data.dtype[name]) for name in names])
    for name in names:
        out[name] = data[name]
    return out


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if ".tmp" in p.name)


def _reference_ply(n: int, k: int, text: bool, rng: np.random.Generator, dtype: str = "f4"):
    """A PLY built the way the reference ``GaussianModel.save_ply`` builds it (plus text / dtype knobs)."""
    xyz = rng.standard_normal((n, 3)).astype(np.float32)
    f_dc = rng.standard_normal((n, 3)).astype(np.float32)
    f_rest = rng.standard_normal((n, 3 * k)).astype(np.float32)
    opacity = rng.standard_normal((n, 1)).astype(np.float32)
    scale = rng.standard_normal((n, 3)).astype(np.float32)
    rot = rng.standard_normal((n, 4)).astype(np.float32)
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * k)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    elements = np.empty(n, dtype=[(name, dtype) for name in names])
    attributes = np.concatenate((xyz, np.zeros_like(xyz), f_dc, f_rest, opacity, scale, rot), axis=1)
    elements[:] = list(map(tuple, attributes))
    ply = PlyData([PlyElement.describe(elements, "vertex")], text=text)
    return ply, dict(xyz=xyz, f_dc=f_dc, f_rest=f_rest, opacity=opacity, scale=scale, rot=rot)


# ------------------------------------------------------------------------------ round trip


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
@pytest.mark.parametrize("num_features", [0, 5])
def test_round_trip_bitwise(tmp_path, degree, num_features):
    cloud = _cloud(n=11, degree=degree, num_features=num_features, seed=degree)
    out = write_gaussian_ply(tmp_path / "sub" / "cloud.ply", cloud)
    assert out == tmp_path / "sub" / "cloud.ply" and out.is_file()
    back = read_gaussian_ply(out)
    assert back.sh_degree == degree
    for name in PARAMS:
        a, b = getattr(cloud, name), getattr(back, name)
        assert b.dtype == torch.float32 and b.shape == a.shape, name
        assert torch.equal(a.view(torch.int32), b.view(torch.int32)), name  # bitwise
    if num_features:
        assert back.features is not None
        assert torch.equal(cloud.features.view(torch.int32), back.features.view(torch.int32))
    else:
        assert back.features is None
    assert _leftovers(out.parent) == []


def test_write_accepts_mapping_and_grad_tensors(tmp_path):
    cloud = _cloud(n=4, degree=1)
    params = {name: torch.nn.Parameter(getattr(cloud, name).clone()) for name in PARAMS}
    path = write_gaussian_ply(tmp_path / "m.ply", params)
    back = read_gaussian_ply(path)
    for name in PARAMS:
        assert torch.equal(getattr(back, name), getattr(cloud, name)), name


def test_empty_cloud_round_trips(tmp_path):
    cloud = _cloud(n=0, degree=2)
    back = read_gaussian_ply(write_gaussian_ply(tmp_path / "e.ply", cloud))
    assert back.num_gaussians == 0 and back.sh_degree == 2 and back.shN.shape == (0, 8, 3)


# --------------------------------------------------------------------------- on-disk layout


def test_on_disk_layout_matches_reference(tmp_path):
    n, degree, num_features = 3, 2, 2
    k = (degree + 1) ** 2 - 1
    # Every entry distinct and identifiable: value = 1000*row + 100*param + 10*coef + channel.
    rows = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1) * 1000
    coef = torch.arange(k, dtype=torch.float32).reshape(1, k, 1) * 10
    chan = torch.arange(3, dtype=torch.float32).reshape(1, 1, 3)
    shN = rows + coef + chan + 0.5
    cloud = GaussianPly(
        means=torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]),
        scales=torch.tensor([[-1.0, -2.0, -3.0]] * n),
        quats=torch.tensor([[0.5, 1.5, 2.5, 3.5]] * n),  # w, x, y, z, unnormalised
        opacities=torch.tensor([-0.25, 0.0, 4.0]),
        sh0=torch.tensor([[[0.1, 0.2, 0.3]], [[0.4, 0.5, 0.6]], [[0.7, 0.8, 0.9]]]),
        shN=shN,
        features=torch.tensor([[11.0, 12.0], [21.0, 22.0], [31.0, 32.0]]),
    )
    path = write_gaussian_ply(tmp_path / "layout.ply", cloud)

    ply = PlyData.read(str(path))
    assert ply.text is False and ply.byte_order == "<"
    assert [el.name for el in ply.elements] == ["vertex"]
    v = ply["vertex"]
    names = [p.name for p in v.properties]
    expected_names = (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(3 * k)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
        + ["f_feat_0", "f_feat_1"]
    )
    assert names == expected_names == ply_property_names(degree, num_features)
    assert all(v.data.dtype[name] == np.dtype("<f4") for name in names)
    assert b"property float x\n" in path.read_bytes()[:200]

    d = v.data
    np.testing.assert_array_equal(d["y"], [2.0, 5.0, 8.0])
    for normal in ("nx", "ny", "nz"):
        np.testing.assert_array_equal(d[normal], 0.0)
    np.testing.assert_array_equal(d["f_dc_1"], np.float32([0.2, 0.5, 0.8]))
    # Channel-major f_rest: f_rest_{c*K + j} is coefficient j (1-based SH index j+1) of channel c.
    assert d["f_rest_0"][1] == 1000 + 0 + 0 + 0.5  # row 1, coef 0, red
    assert d["f_rest_1"][1] == 1000 + 10 + 0 + 0.5  # row 1, coef 1, red
    assert d[f"f_rest_{k - 1}"][2] == 2000 + 10 * (k - 1) + 0 + 0.5  # last red coef
    assert d[f"f_rest_{k}"][0] == 0 + 0 + 1 + 0.5  # first green coef
    assert d[f"f_rest_{2 * k + 3}"][2] == 2000 + 30 + 2 + 0.5  # blue, coef 3
    for c in range(3):
        for j in range(k):
            np.testing.assert_array_equal(d[f"f_rest_{c * k + j}"], shN[:, j, c].numpy())
    # Raw parameters, not activations.
    np.testing.assert_array_equal(d["opacity"], np.float32([-0.25, 0.0, 4.0]))
    np.testing.assert_array_equal(
        np.stack([d[f"scale_{i}"] for i in range(3)], 1), np.float32([[-1, -2, -3]] * n)
    )
    np.testing.assert_array_equal(
        np.stack([d[f"rot_{i}"] for i in range(4)], 1), np.float32([[0.5, 1.5, 2.5, 3.5]] * n)
    )
    np.testing.assert_array_equal(d["f_feat_1"], np.float32([12, 22, 32]))


# ------------------------------------------------------------------------ reading others' files


def test_reads_reference_ascii_ply(tmp_path):
    rng = np.random.default_rng(3)
    n, k = 6, 15
    ply, ref = _reference_ply(n, k, text=True, rng=rng)
    path = tmp_path / "ascii.ply"
    ply.write(str(path))
    assert path.read_bytes().startswith(b"ply\nformat ascii 1.0\n")
    cloud = read_gaussian_ply(path)
    assert cloud.sh_degree == 3 and cloud.features is None
    np.testing.assert_array_equal(cloud.means.numpy(), ref["xyz"])
    np.testing.assert_array_equal(cloud.sh0.numpy(), ref["f_dc"].reshape(n, 1, 3))
    # The reference loader: f_rest.reshape(N, 3, K) then transpose -> [N, K, 3].
    np.testing.assert_array_equal(cloud.shN.numpy(), ref["f_rest"].reshape(n, 3, k).transpose(0, 2, 1))
    np.testing.assert_array_equal(cloud.opacities.numpy(), ref["opacity"][:, 0])
    np.testing.assert_array_equal(cloud.scales.numpy(), ref["scale"])
    np.testing.assert_array_equal(cloud.quats.numpy(), ref["rot"])


def test_reads_double_properties_and_any_order(tmp_path):
    rng = np.random.default_rng(4)
    n, k = 5, 3
    ply, ref = _reference_ply(n, k, text=False, rng=rng, dtype="f8")
    # Shuffle the property order and drop the normals: lookup is by name.
    data = ply["vertex"].data
    names = [name for name in data.dtype.names if name not in ("nx", "ny", "nz")][::-1]
    shuffled = np.empty(n, dtype=[(name, "f8") for name in names])
    for name in names:
        shuffled[name] = data[name]
    path = tmp_path / "double.ply"
    PlyData([PlyElement.describe(shuffled, "vertex")], byte_order=">").write(str(path))
    cloud = read_gaussian_ply(path)
    assert cloud.means.dtype == torch.float32 and cloud.sh_degree == 1
    np.testing.assert_array_equal(cloud.means.numpy(), ref["xyz"])
    np.testing.assert_array_equal(cloud.shN.numpy(), ref["f_rest"].reshape(n, 3, k).transpose(0, 2, 1))
    np.testing.assert_array_equal(cloud.quats.numpy(), ref["rot"])


# ----------------------------------------------------------------------------------- errors


def test_missing_property_is_named(tmp_path):
    rng = np.random.default_rng(5)
    ply, _ = _reference_ply(4, 0, text=False, rng=rng)
    data = ply["vertex"].data
    keep = [name for name in data.dtype.names if name not in ("opacity", "rot_2")]
    path = tmp_path / "missing.ply"
    PlyData([PlyElement.describe(_subset(data, keep), "vertex")]).write(str(path))
    with pytest.raises(ValueError, match=r"missing.ply.*missing required vertex properties") as info:
        read_gaussian_ply(path)
    assert "'opacity'" in str(info.value) and "'rot_2'" in str(info.value)
    assert "'rot_1'" not in str(info.value)


def test_wrong_f_rest_count(tmp_path):
    rng = np.random.default_rng(6)
    ply, _ = _reference_ply(3, 3, text=False, rng=rng)  # 9 f_rest_*
    data = ply["vertex"].data
    keep = [name for name in data.dtype.names if name != "f_rest_8"]  # 8 left: not 3*K
    path = tmp_path / "rest.ply"
    PlyData([PlyElement.describe(_subset(data, keep), "vertex")]).write(str(path))
    with pytest.raises(ValueError, match=r"rest.ply.*\b8 f_rest_\* properties"):
        read_gaussian_ply(path)

    # 12 f_rest_* (K=4) is a multiple of 3 but no SH degree.
    names = list(data.dtype.names) + ["f_rest_9", "f_rest_10", "f_rest_11"]
    wider = np.zeros(3, dtype=[(name, "f4") for name in names])
    path2 = tmp_path / "rest12.ply"
    PlyData([PlyElement.describe(wider, "vertex")]).write(str(path2))
    with pytest.raises(ValueError, match=r"rest12.ply.*\b12 f_rest_\* properties"):
        read_gaussian_ply(path2)


def test_nan_refused_on_write(tmp_path):
    cloud = _cloud(n=6, degree=1)
    cloud.shN[1, 2, 0] = float("nan")
    cloud.shN[4, 0, 1] = float("inf")
    with pytest.raises(ValueError, match=r"shN has 2 of 6 rows with non-finite"):
        write_gaussian_ply(tmp_path / "nan.ply", cloud)
    assert not (tmp_path / "nan.ply").exists() and _leftovers(tmp_path) == []

    cloud = _cloud(n=6, degree=0)
    cloud.opacities[3] = float("nan")
    with pytest.raises(ValueError, match=r"opacities has 1 of 6 rows"):
        write_gaussian_ply(tmp_path / "nan.ply", cloud)


def test_nan_refused_on_read(tmp_path):
    rng = np.random.default_rng(7)
    ply, _ = _reference_ply(4, 0, text=False, rng=rng)
    ply["vertex"].data["scale_1"][2] = np.nan
    path = tmp_path / "nanread.ply"
    ply.write(str(path))
    with pytest.raises(ValueError, match=r"nanread.ply.*'scale_1': 1"):
        read_gaussian_ply(path)


def test_shape_mismatch_names_argument(tmp_path):
    good = _cloud(n=3, degree=1).as_dict()
    with pytest.raises(ValueError, match=r"quats must have shape \[3, 4\]"):
        write_gaussian_ply(tmp_path / "s.ply", {**good, "quats": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match=r"sh0 must have shape"):
        write_gaussian_ply(tmp_path / "s.ply", {**good, "sh0": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match=r"shN has K=4"):
        write_gaussian_ply(tmp_path / "s.ply", {**good, "shN": torch.zeros(3, 4, 3)})
    with pytest.raises(ValueError, match=r"features must have shape"):
        write_gaussian_ply(tmp_path / "s.ply", {**good, "features": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match=r"missing required parameter.*'opacities'"):
        write_gaussian_ply(tmp_path / "s.ply", {k: v for k, v in good.items() if k != "opacities"})
    with pytest.raises(ValueError, match=r"unknown parameter.*'colors'"):
        write_gaussian_ply(tmp_path / "s.ply", {**good, "colors": torch.zeros(3, 3)})
    assert not (tmp_path / "s.ply").exists()


def test_unreadable_and_non_vertex_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ply"):
        read_gaussian_ply(tmp_path / "nope.ply")

    garbage = tmp_path / "garbage.ply"
    garbage.write_bytes(b"this is not a ply file\n")
    with pytest.raises(ValueError, match=r"garbage.ply.*not a readable PLY"):
        read_gaussian_ply(garbage)

    truncated = tmp_path / "truncated.ply"
    data = write_gaussian_ply(tmp_path / "full.ply", _cloud(n=5, degree=1)).read_bytes()
    truncated.write_bytes(data[:-10])
    with pytest.raises(ValueError, match=r"truncated.ply.*not a readable PLY"):
        read_gaussian_ply(truncated)

    faces = tmp_path / "faces.ply"
    face = np.zeros(2, dtype=[("vertex_indices", "i4", (3,))])
    PlyData([PlyElement.describe(face, "face")]).write(str(faces))
    with pytest.raises(ValueError, match=r"faces.ply.*no 'vertex' element"):
        read_gaussian_ply(faces)


# --------------------------------------------------------------------------------- atomicity


def test_failing_write_leaves_existing_target_untouched(tmp_path, monkeypatch):
    target = tmp_path / "scene.ply"
    write_gaussian_ply(target, _cloud(n=5, degree=1, seed=1))
    before = target.read_bytes()

    # A crash half-way through writing the new file.
    def exploding_write(self, stream):
        stream.write(b"ply\nformat binary_little_endian 1.0\nelement vertex 999\n")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(PlyData, "write", exploding_write)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_gaussian_ply(target, _cloud(n=9, degree=3, seed=2))
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert _leftovers(tmp_path) == []

    # Refused parameters: same guarantee.
    bad = _cloud(n=9, degree=3, seed=2)
    bad.means[0, 0] = float("nan")
    with pytest.raises(ValueError, match="means"):
        write_gaussian_ply(target, bad)
    assert target.read_bytes() == before
    assert _leftovers(tmp_path) == []
    assert read_gaussian_ply(target).num_gaussians == 5
