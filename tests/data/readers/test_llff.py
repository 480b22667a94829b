"""LLFF reader: poses_bounds.npy axis permutation, NeRF normalisation, splits, sparse points."""

from __future__ import annotations

import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from langfield.data import load_dataset
from langfield.data.readers.llff import llff_to_opencv, load_llff, opencv_to_llff, read_poses_bounds
from langfield.geometry.conventions import check_rigid, invert_rigid
from langfield.geometry.normalize import apply_transform_to_points, transform_poses
from langfield.io.colmap import ColmapPoints, write_points3d_binary

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
FERN = SHARED / "llff" / "fern"
FULL_W, FULL_H, FOCAL = 16, 12, 14.0


def look_at_opencv(center, target):
    c = np.asarray(center, float)
    z = np.asarray(target, float) - c
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, -1.0, 0.0])  # world -y is "up" (COLMAP-like)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.concatenate([np.stack([x, y, z], 1), c[:, None]], 1)


def forward_facing(n: int):
    return [look_at_opencv((0.3 * math.cos(k), 0.2 * math.sin(k), -0.1 * k / n), (0.0, 0.0, 10.0)) for k in range(n)]


def write_llff(root: Path, n: int = 10, factor: int = 2, bounds=(4.0, 20.0)) -> np.ndarray:
    """Write poses_bounds.npy (LLFF [down, right, back] columns, written out by hand) and images_{factor}."""
    c2w = np.stack(forward_facing(n))
    rows = []
    for k in range(n):
        R, t = c2w[k, :, :3], c2w[k, :, 3]
        llff = np.stack([R[:, 1], R[:, 0], -R[:, 2], t, [FULL_H, FULL_W, FOCAL]], 1)  # [3, 5]
        rows.append(np.concatenate([llff.reshape(-1), [bounds[0] + 0.1 * k, bounds[1] - 0.1 * k]]))
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "poses_bounds.npy", np.array(rows))
    folder = root / f"images_{factor}"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(n):
        iio.imwrite(folder / f"img{k:03d}.png", rng.integers(0, 256, (FULL_H // factor, FULL_W // factor, 3), dtype=np.uint8))
    return c2w


def test_permutation_on_hand_written_row():
    # LLFF columns [down, right, back]: a camera looking along world +z with image-down = world +y.
    llff = torch.tensor([[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 2.0], [0.0, 0.0, -1.0, 3.0]], dtype=torch.float64)
    c2w = llff_to_opencv(llff)
    assert torch.equal(c2w, torch.tensor([[1.0, 0, 0, 1], [0, 1.0, 0, 2], [0, 0, 1.0, 3]], dtype=torch.float64))
    assert torch.equal(opencv_to_llff(c2w), llff)


def test_read_poses_bounds(tmp_path):
    c2w = write_llff(tmp_path / "s")
    got, hwf, bounds = read_poses_bounds(tmp_path / "s" / "poses_bounds.npy")
    assert torch.allclose(got, torch.from_numpy(c2w), atol=1e-12)
    assert hwf[0].tolist() == [FULL_H, FULL_W, FOCAL]
    assert bounds[0].tolist() == [4.0, 20.0]


def test_load_synthetic_llff(tmp_path):
    root = tmp_path / "s"
    c2w = write_llff(root, n=10, factor=2)
    pts = np.array([[0.1, 0.2, 8.0], [-0.5, 0.3, 12.0]])
    (root / "sparse" / "0").mkdir(parents=True)
    write_points3d_binary(ColmapPoints.create(pts, rgb=np.array([[1, 2, 3], [4, 5, 6]])), root / "sparse" / "0" / "points3D.bin")
    ds = load_dataset(root, downscale=2, progress=False)
    tr, te = ds.split("train"), ds.split("test")
    assert len(tr) == 8 and len(te) == 2 and ds.unbounded
    assert [Path(p).name for p in te.paths] == ["img000.png", "img008.png"]
    assert tr.images.shape == (8, 6, 8, 3) and tr.alphas is None
    assert torch.allclose(tr.cameras.Ks[0], torch.tensor([[7.0, 0, 4], [0, 7.0, 3], [0, 0, 1]]))
    T = ds.world_transform.double()
    # poses = T applied to the original OpenCV poses; order of views preserved
    moved = transform_poses(T, torch.from_numpy(c2w))
    assert torch.allclose(te.cameras.c2w.double(), moved[[0, 8]], atol=1e-5)
    assert bool(check_rigid(tr.cameras.c2w).all())
    # NeRF normalisation: min near bound -> 1/0.75, average pose -> identity
    s = float(torch.linalg.det(T[:3, :3])) ** (1 / 3)
    assert math.isclose(s * 4.0, 1 / 0.75, rel_tol=1e-5)
    assert math.isclose(ds.near, 0.9 / 0.75, rel_tol=1e-5)
    assert torch.allclose(moved[:, :, 3].mean(0), torch.zeros(3, dtype=moved.dtype), atol=1e-6)
    assert torch.allclose(moved[:, :, 2].mean(0) / moved[:, :, 2].mean(0).norm(), torch.tensor([0, 0, 1.0], dtype=moved.dtype), atol=1e-6)
    assert ds.far > s * 20.0
    # sparse points share the normalised frame; colours kept
    assert torch.allclose(ds.points3d.double(), apply_transform_to_points(T, torch.from_numpy(pts)), atol=1e-5)
    assert ds.points3d_rgb.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert bool((ds.scene_box[0] <= ds.points3d.min(0).values).all())


def test_known_projection(tmp_path):
    """A point on camera 0's optical axis lands on the principal point; off-axis as computed."""
    root = tmp_path / "s"
    c2w = write_llff(root, n=3, factor=2)
    X = c2w[0, :, 3] + 9.0 * c2w[0, :, 2] + 1.0 * c2w[0, :, 0] + 0.5 * c2w[0, :, 1]  # 1 right, 0.5 down at depth 9
    ds = load_llff(root, downscale=2, progress=False)
    cams = ds.split("test").cameras  # view 0
    Xn = apply_transform_to_points(ds.world_transform.double(), torch.from_numpy(X)[None])[0]
    w2c = invert_rigid(cams.c2w[0].double())
    pc = w2c[:, :3] @ Xn + w2c[:, 3]
    uv = cams.Ks[0, :2, :2].double() @ (pc[:2] / pc[2]) + cams.Ks[0, :2, 2].double()
    f = FOCAL / 2
    assert torch.allclose(uv, torch.tensor([4 + f * 1 / 9, 3 + f * 0.5 / 9], dtype=torch.float64), atol=1e-4)


def test_resize_from_pre_shrunk_folder(tmp_path):
    root = tmp_path / "s"
    write_llff(root, n=3, factor=2)
    ds = load_llff(root, downscale=4, progress=False)
    assert ds.split("train").images.shape == (2, 3, 4, 3)
    assert math.isclose(float(ds.split("train").cameras.Ks[0, 0, 0]), 3.5, rel_tol=1e-6)
    with pytest.raises(FileNotFoundError, match=r"no image folder usable for downscale 1.*images_2"):
        load_llff(root, downscale=1)


def test_errors(tmp_path):
    root = tmp_path / "s"
    write_llff(root, n=3)
    pb = root / "poses_bounds.npy"
    good = np.load(pb)
    np.save(pb, good[:, :15])
    with pytest.raises(ValueError, match=r"poses_bounds\.npy: expected an \[N, 17\] array"):
        load_llff(root, downscale=2)
    bad = good.copy()
    bad[1, :3] *= 3.0  # scale the first row of row 1's 3x5 matrix -> not a rotation
    np.save(pb, bad)
    with pytest.raises(ValueError, match=r"poses_bounds\.npy: row 1: pose rotation is not rigid"):
        load_llff(root, downscale=2)
    bad = good.copy()
    bad[2, 15:] = [5.0, 1.0]
    np.save(pb, bad)
    with pytest.raises(ValueError, match=r"row 2: bounds must satisfy 0 < near < far"):
        load_llff(root, downscale=2)
    np.save(pb, good[:2])
    with pytest.raises(ValueError, match=r"2 poses but 3 images in .*images_2"):
        load_llff(root, downscale=2)
    np.save(pb, good[:1])
    (root / "images_2" / "img001.png").unlink()
    (root / "images_2" / "img002.png").unlink()
    with pytest.raises(ValueError, match="'train' split empty"):
        load_llff(root, downscale=2)


@pytest.mark.skipif(not (FERN / "poses_bounds.npy").is_file(), reason="shared fern data not available")
def test_fern_real_data():
    ds = load_dataset(FERN, downscale=8, progress=False)
    tr, te = ds.split("train"), ds.split("test")
    assert len(tr) + len(te) == 20 and len(te) == 3
    assert [Path(p).name for p in te.paths] == ["image000.png", "image008.png", "image016.png"]
    assert tr.images.shape[1:] == (378, 504, 3)
    assert math.isclose(float(tr.cameras.Ks[0, 0, 0]), 3260.52633288 * 504 / 4032, rel_tol=1e-5)
    assert ds.unbounded and ds.near > 0 and ds.far > ds.near
    assert ds.points3d is not None and ds.points3d.shape == (10091, 3)
    # The COLMAP points, moved into the normalised frame, project into the views (pins the
    # LLFF axis permutation and the shared world frame).
    for cams in (tr.cameras, te.cameras):
        w2c = invert_rigid(cams.c2w)
        for i in range(len(cams)):
            pc = ds.points3d @ w2c[i, :, :3].T + w2c[i, :, 3]
            uv = pc[:, :2] / pc[:, 2:] * cams.Ks[i, 0, 0] + cams.Ks[i, :2, 2]
            inside = (pc[:, 2] > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < 504) & (uv[:, 1] >= 0) & (uv[:, 1] < 378)
            assert float(inside.float().mean()) > 0.9
    with pytest.raises(FileNotFoundError, match="images_4, images_8"):
        load_llff(FERN, downscale=1)
