"""transforms*.json reader: Blender, nerfstudio and instant-ngp flavours."""

from __future__ import annotations

import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from langfield.data import load_dataset
from langfield.data.readers.transforms_json import load_transforms, read_transforms
from langfield.geometry.conventions import check_rigid, invert_rigid, opengl_to_opencv
from langfield.geometry.normalize import apply_transform_to_points
from langfield.geometry.rays import rays_from_pixels

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
LEGO = SHARED / "nerf_synthetic" / "lego"
W, H = 8, 6


# ----------------------------------------------------------------------------- scene writers


def write_png(path: Path, channels: int = 3, seed: int = 0, size=(W, H), dtype=np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if channels == 0 else (size[1], size[0], channels)
    img = rng.integers(0, 256 if dtype == np.uint8 else 20, size=shape).astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, img)
    return img


def look_at_opengl(center, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> list:
    """4x4 OpenGL/Blender camera-to-world (x right, y up, z back) as nested lists."""
    c = np.asarray(center, float)
    back = c - np.asarray(target, float)
    back /= np.linalg.norm(back)
    right = np.cross(np.asarray(up, float), back)
    right /= np.linalg.norm(right)
    upv = np.cross(back, right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, upv, back, c
    return m.tolist()


def orbit(n: int, radius: float, height: float = 1.0, target=(0.0, 0.0, 0.0)):
    return [
        look_at_opengl(
            (target[0] + radius * math.cos(2 * math.pi * k / n), target[1] + radius * math.sin(2 * math.pi * k / n), target[2] + height),
            target,
        )
        for k in range(n)
    ]


def write_blender_scene(root: Path, counts=None, radius: float = 4.0, rgba: bool = True, angle: float = 0.9) -> Path:
    """NeRF-synthetic layout: transforms_{split}.json with extension-less file paths."""
    counts = counts or {"train": 3, "test": 2}
    for split, n in counts.items():
        frames = []
        for i, m in enumerate(orbit(n, radius)):
            write_png(root / split / f"r_{i}.png", channels=4 if rgba else 3, seed=hash((split, i)) % 1000)
            frames.append({"file_path": f"./{split}/r_{i}", "rotation": 0.1, "transform_matrix": m})
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": angle, "frames": frames}))
    return root


def write_single_scene(root: Path, n: int = 10, extra=None, frame_extra=None, shuffle: bool = True) -> Path:
    """nerfstudio-style transforms.json (shared intrinsics, RGB images in images/)."""
    poses = orbit(n, radius=2.5, height=0.5, target=(3.0, -1.0, 2.0))
    order = list(range(n))
    if shuffle:
        order = order[::-1]
    frames = []
    for i in order:
        write_png(root / "images" / f"frame_{i:05d}.png", seed=i)
        fr = {"file_path": f"images/frame_{i:05d}.png", "transform_matrix": poses[i]}
        if frame_extra:
            fr.update(frame_extra(i))
        frames.append(fr)
    data = {"fl_x": 7.0, "fl_y": 6.5, "cx": 4.2, "cy": 2.9, "w": W, "h": H, "k1": 0.01, "p1": 0.002, "frames": frames}
    data.update(extra or {})
    (root / "transforms.json").write_text(json.dumps(data))
    return root


def rewrite(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


# ----------------------------------------------------------------------------- Blender layout


def test_blender_layout(tmp_path):
    root = write_blender_scene(tmp_path / "scene")
    ds = load_transforms(root, progress=False)
    assert set(ds.splits) == {"train", "test"}
    train = ds.split("train")
    assert len(train) == 3 and len(ds.split("test")) == 2
    assert train.images.shape == (3, H, W, 3) and train.images.dtype == torch.uint8
    assert train.alphas.shape == (3, H, W, 1)
    assert train.paths[0].endswith("r_0.png")
    # NeRF-synthetic protocol: original frame kept.
    assert torch.equal(ds.world_transform, torch.eye(4))
    assert (ds.near, ds.far, ds.unbounded, ds.background) == (2.0, 6.0, False, "white")
    assert torch.equal(ds.scene_box, torch.tensor([[-1.5] * 3, [1.5] * 3]))
    f = 0.5 * W / math.tan(0.5 * 0.9)
    assert torch.allclose(train.cameras.Ks[0], torch.tensor([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]]))
    data = json.loads((root / "transforms_train.json").read_text())
    expected = opengl_to_opencv(torch.tensor(data["frames"][1]["transform_matrix"]))[:3]
    assert torch.allclose(train.cameras.c2w[1], expected, atol=1e-6)
    # Stored colours are the un-composited file colours.
    raw = iio.imread(root / "train" / "r_0.png")
    assert torch.equal(train.images[0], torch.from_numpy(raw[..., :3]))
    assert torch.equal(train.alphas[0, ..., 0], torch.from_numpy(raw[..., 3]))


def test_blender_background_downscale_and_json_path(tmp_path):
    root = write_blender_scene(tmp_path / "scene", counts={"train": 2, "val": 1, "test": 1})
    ds = load_dataset(root / "transforms_train.json", downscale=2, background="random", progress=False)
    assert set(ds.splits) == {"train", "val", "test"} and ds.background == "random"
    tr = ds.split("train")
    assert tr.images.shape == (2, 3, 4, 3)
    f = 0.5 * W / math.tan(0.45) / 2
    assert math.isclose(float(tr.cameras.Ks[0, 0, 0]), f, rel_tol=1e-6)
    assert (int(tr.cameras.widths[0]), int(tr.cameras.heights[0])) == (4, 3)
    ds = load_transforms(root, background="black", splits=["test"], progress=False)
    assert set(ds.splits) == {"train", "test"} and ds.background == "black"


def test_blender_layout_far_cameras_are_rescaled(tmp_path):
    root = write_blender_scene(tmp_path / "big", radius=40.0)
    ds = load_transforms(root, progress=False)
    T = ds.world_transform
    assert not torch.allclose(T, torch.eye(4))
    c = ds.split("train").cameras.c2w[:, :, 3]
    d = c.norm(dim=-1)
    assert torch.allclose(d.mean(), torch.tensor(4.0), atol=1e-4)
    assert (ds.near, ds.far) == (2.0, 6.0)


# ----------------------------------------------------------------------------- single transforms.json


def test_single_json_every_eighth_and_normalisation(tmp_path):
    root = write_single_scene(tmp_path / "cap", n=10)
    ds = load_dataset(root, progress=False)
    tr, te = ds.split("train"), ds.split("test")
    # frames are sorted by file_path, then i % 8 == 0 is test
    assert [Path(p).name for p in te.paths] == ["frame_00000.png", "frame_00008.png"]
    assert len(tr) == 8 and "val" not in ds.splits
    assert ds.unbounded and tr.alphas is None
    c = torch.cat([tr.cameras.c2w, te.cameras.c2w])[:, :, 3]
    assert float(c.norm(dim=-1).max()) <= 1.0 + 1e-5
    assert torch.allclose(c.mean(0), torch.zeros(3), atol=1e-5)
    assert ds.scene_box[0, 0] < 0 < ds.scene_box[1, 0] and 0 < ds.near < 0.1 and ds.far > 2.0
    assert bool(check_rigid(tr.cameras.c2w).all())
    # world_transform maps the original camera centres onto the loaded ones
    data = json.loads((root / "transforms.json").read_text())
    orig = {fr["file_path"]: torch.tensor(fr["transform_matrix"])[:3, 3] for fr in data["frames"]}
    o = orig["images/frame_00008.png"]
    assert torch.allclose(apply_transform_to_points(ds.world_transform, o[None])[0], te.cameras.c2w[1, :, 3], atol=1e-5)
    assert torch.allclose(tr.cameras.dist[0], torch.tensor([0.01, 0.0, 0.002, 0.0, 0.0]))


def test_single_json_filename_lists(tmp_path):
    root = write_single_scene(
        tmp_path / "cap",
        n=6,
        extra={
            "train_filenames": ["images/frame_00000.png", "./images/frame_00002.png", "images/frame_00004"],
            "val_filenames": ["images/frame_00001.png"],
            "test_filenames": ["images/frame_00003.png", "images/frame_00005.png"],
        },
    )
    ds = load_transforms(root, progress=False)
    names = {k: [Path(p).name for p in v.paths] for k, v in ds.splits.items()}
    assert names == {
        "train": ["frame_00000.png", "frame_00002.png", "frame_00004.png"],
        "val": ["frame_00001.png"],
        "test": ["frame_00003.png", "frame_00005.png"],
    }
    rewrite(root / "transforms.json", lambda d: d.update(test_filenames=["images/nope.png"]))
    with pytest.raises(ValueError, match=r"transforms\.json: field 'test_filenames': 'images/nope.png' matches no frame"):
        load_transforms(root)


def test_per_frame_intrinsics_ngp_style(tmp_path):
    root = tmp_path / "ngp"
    poses = orbit(3, 2.0)
    frames = []
    for i in range(3):
        write_png(root / f"{i}.jpg", seed=i)
        frames.append({"file_path": f"{i}.jpg", "transform_matrix": poses[i], "fl_x": 5.0 + i, "cx": 4.0 + 0.1 * i})
    (root / "transforms.json").write_text(json.dumps({"camera_angle_y": 1.0, "h": H, "frames": frames}))
    scene = read_transforms(root / "transforms.json")
    cams = torch.cat([s.cameras.Ks for s in scene.splits.values()])
    fy = 0.5 * H / math.tan(0.5)
    # test split holds frame 0 (i % 8 == 0), train frames 1, 2
    assert [float(k) for k in scene.splits["test"].cameras.Ks[:, 0, 0]] == [5.0]
    assert [round(float(k), 4) for k in scene.splits["train"].cameras.Ks[:, 0, 2]] == [4.1, 4.2]
    assert torch.allclose(cams[:, 1, 1], torch.full((3,), fy))


def test_reader_reproduces_known_projection(tmp_path):
    """A known 3D point projects to the hand-computed pixel (pins OpenGL -> OpenCV)."""
    root = tmp_path / "proj"
    center = np.array([0.7, -2.0, 0.9])
    m = np.array(look_at_opengl(center, target=(0.2, 0.1, -0.1)))
    fx, fy, cx, cy = 7.0, 6.5, 4.2, 2.9
    X = np.array([0.3, 0.25, -0.05])
    # Hand projection in the OpenGL camera: looks along -z, y up; image v grows downwards.
    p = m[:3, :3].T @ (X - center)
    u = cx + fx * p[0] / -p[2]
    v = cy - fy * p[1] / -p[2]
    assert 0 < u < W and 0 < v < H
    frames = []
    for i in range(2):
        write_png(root / f"im{i}.png", seed=i)
        frames.append({"file_path": f"im{i}.png", "transform_matrix": m.tolist()})
    (root / "transforms.json").write_text(
        json.dumps({"fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": W, "h": H, "frames": frames})
    )
    for downscale in (1, 2):
        ds = load_transforms(root, downscale=downscale, progress=False)
        cams = ds.split("train").cameras
        Xn = apply_transform_to_points(ds.world_transform.double(), torch.tensor(X)[None])[0]
        w2c = invert_rigid(cams.c2w[0].double())
        pc = w2c[:, :3] @ Xn + w2c[:, 3]
        K = cams.Ks[0].double()
        uv = K[:2, :2] @ (pc[:2] / pc[2]) + K[:2, 2]
        assert pc[2] > 0
        assert torch.allclose(uv, torch.tensor([u, v], dtype=torch.float64) / downscale, atol=1e-4)
        ray = rays_from_pixels(cams, torch.tensor([0]), uv[None].float(), 0.0, 1.0)
        to_x = (Xn.float() - ray.origins[0]) / (Xn.float() - ray.origins[0]).norm()
        assert torch.allclose(ray.directions[0], to_x, atol=1e-4)


def test_semantics_and_labels(tmp_path):
    root = tmp_path / "sem"

    def sem(i):
        lab = np.zeros((H, W), np.uint16)
        lab[:, W // 2 :] = 300 + i  # uint16 ids
        lab[: H // 2, : W // 2] = 2
        iio.imwrite(root / "sem" / f"{i}.png", lab)
        return {"semantic_path": f"sem/{i}.png"}

    (root / "sem").mkdir(parents=True)
    write_single_scene(root, n=9, extra={"labels": ["a", "b", "c"]}, frame_extra=sem)
    ds = load_transforms(root, downscale=2, progress=False)
    tr = ds.split("train")
    assert ds.labels == ["a", "b", "c"]
    assert tr.semantics.shape == (7, 3, 4) and tr.semantics.dtype == torch.int64
    name = Path(tr.paths[0]).name  # frame_00001
    assert tr.semantics[0].tolist() == [[2, 2, 301, 301], [0, 0, 301, 301], [0, 0, 301, 301]], name
    # a frame without semantic_path while others have one
    rewrite(root / "transforms.json", lambda d: d["frames"][3].pop("semantic_path"))
    with pytest.raises(ValueError, match=r"frame 3 .*missing field 'semantic_path'"):
        load_transforms(root)


# ----------------------------------------------------------------------------- errors


def test_error_missing_image(tmp_path):
    root = write_blender_scene(tmp_path / "s")
    rewrite(root / "transforms_test.json", lambda d: d["frames"][1].update(file_path="./test/ghost"))
    with pytest.raises(FileNotFoundError, match=r"transforms_test\.json: frame 1 \(\./test/ghost\).*'\./test/ghost' not found"):
        load_transforms(root)


def test_error_malformed_json(tmp_path):
    root = write_blender_scene(tmp_path / "s")
    (root / "transforms_train.json").write_text('{"camera_angle_x": 0.5,\n "frames": [\n  {"file_path": }\n]}')
    with pytest.raises(ValueError, match=r"transforms_train\.json: malformed JSON at line 3"):
        load_transforms(root)


def test_error_missing_fields(tmp_path):
    root = write_blender_scene(tmp_path / "s")
    p = root / "transforms_train.json"
    good = p.read_text()
    rewrite(p, lambda d: d.pop("frames"))
    with pytest.raises(ValueError, match=r"transforms_train\.json: missing field 'frames'"):
        load_transforms(root)
    p.write_text(good)
    rewrite(p, lambda d: d["frames"][2].pop("transform_matrix"))
    with pytest.raises(ValueError, match=r"transforms_train\.json: frame 2 \(\./train/r_2\): missing field 'transform_matrix'"):
        load_transforms(root)
    p.write_text(good)
    rewrite(p, lambda d: d.pop("camera_angle_x"))
    with pytest.raises(ValueError, match=r"transforms_train\.json: frame 0 .*no intrinsics: need 'fl_x'"):
        load_transforms(root)
    p.write_text(good)
    rewrite(p, lambda d: d["frames"][0].pop("file_path"))
    with pytest.raises(ValueError, match=r"frame 0: missing field 'file_path'"):
        load_transforms(root)
    p.write_text(good)
    rewrite(p, lambda d: d["frames"][1].update(transform_matrix=[[1, 0, 0], [0, 1, 0]]))
    with pytest.raises(ValueError, match=r"frame 1 .*'transform_matrix' must be 4x4"):
        load_transforms(root)
    p.write_text(good)
    rewrite(p, lambda d: d.update(camera_angle_x="wide"))
    with pytest.raises(ValueError, match=r"field 'camera_angle_x' must be a finite number"):
        load_transforms(root)


def test_error_mismatched_sizes(tmp_path):
    root = write_blender_scene(tmp_path / "s")
    write_png(root / "train" / "r_1.png", channels=4, size=(10, 6))
    with pytest.raises(ValueError, match=r"r_0\.png is 8x6 and .*r_1\.png \(frame 1\) is 10x6"):
        load_transforms(root)


def test_error_size_differs_from_json(tmp_path):
    root = write_single_scene(tmp_path / "cap", n=3)
    rewrite(root / "transforms.json", lambda d: d.update(w=16))
    with pytest.raises(ValueError, match=r"transforms\.json: frame \d .*field 'w' is 16 but image .* is 8x6"):
        load_transforms(root)


def test_error_non_rigid_pose(tmp_path):
    root = write_blender_scene(tmp_path / "s")

    def scale(d):
        m = np.array(d["frames"][1]["transform_matrix"])
        m[:3, :3] *= 2.0
        d["frames"][1]["transform_matrix"] = m.tolist()

    rewrite(root / "transforms_test.json", scale)
    with pytest.raises(ValueError, match=r"transforms_test\.json: frame 1 .*not a rigid transform"):
        load_transforms(root)


def test_error_empty_split(tmp_path):
    root = write_blender_scene(tmp_path / "s")
    rewrite(root / "transforms_test.json", lambda d: d.update(frames=[]))
    with pytest.raises(ValueError, match=r"transforms_test\.json: field 'frames' is empty"):
        load_transforms(root)
    one = write_single_scene(tmp_path / "one", n=1)
    with pytest.raises(ValueError, match=r"transforms\.json: split 'train' is empty"):
        load_transforms(one)


def test_error_unsupported_camera(tmp_path):
    root = write_single_scene(tmp_path / "cap", n=3, extra={"camera_model": "OPENCV_FISHEYE"})
    with pytest.raises(ValueError, match=r"'camera_model' is 'OPENCV_FISHEYE'"):
        load_transforms(root)
    rewrite(root / "transforms.json", lambda d: d.update(camera_model="OPENCV", k4=0.1))
    with pytest.raises(ValueError, match=r"field 'k4'"):
        load_transforms(root)


# ----------------------------------------------------------------------------- real data


@pytest.mark.skipif(not (LEGO / "transforms_train.json").is_file(), reason="shared lego data not available")
def test_lego_real_data():
    meta = json.loads((LEGO / "transforms_train.json").read_text())
    angle = meta["camera_angle_x"]
    scene = read_transforms(LEGO)
    assert scene.layout == "blender"
    assert len(scene.splits["train"]) == 100 and len(scene.splits["test"]) == 200
    full = scene.splits["train"].cameras
    assert int(full.widths[0]) == 800 and int(full.heights[0]) == 800
    assert math.isclose(float(full.Ks[0, 0, 0]), 0.5 * 800 / math.tan(0.5 * angle), rel_tol=1e-6)
    # Load only two views per split, at 1/8 resolution, to stay fast.
    ds = load_dataset(LEGO, downscale=8, max_images=2, progress=False)
    tr = ds.split("train")
    assert tr.images.shape == (2, 100, 100, 3) and tr.alphas.shape == (2, 100, 100, 1)
    assert len(ds.split("test")) == 2
    assert math.isclose(float(tr.cameras.Ks[0, 0, 0]), 0.5 * 100 / math.tan(0.5 * angle), rel_tol=1e-6)
    assert float(tr.cameras.Ks[0, 0, 2]) == 50.0
    assert (ds.near, ds.far, ds.background, ds.unbounded) == (2.0, 6.0, "white", False)
    assert torch.equal(ds.world_transform, torch.eye(4))
    # Downscaled, composited over white == 8x8 block mean of the composited original.
    raw = iio.imread(LEGO / "train" / "r_0.png").astype(np.float64) / 255
    comp = raw[..., :3] * raw[..., 3:] + (1 - raw[..., 3:])
    expected = torch.from_numpy(comp.reshape(100, 8, 100, 8, 3).mean((1, 3))).float()
    got = tr.image_float(0, torch.ones(3))
    assert float((got - expected).abs().max()) < 3.0 / 255
