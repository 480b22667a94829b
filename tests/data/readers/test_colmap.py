"""Scenes built from a COLMAP folder (sparse model + images)."""

from __future__ import annotations

import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from langfield.data import load_dataset
from langfield.data.readers.colmap import load_colmap
from langfield.geometry.conventions import check_rigid, invert_rigid
from langfield.geometry.normalize import apply_transform_to_points
from langfield.io.colmap import ColmapCamera, ColmapImage, ColmapModel, ColmapPoints, rotmat_to_qvec, write_model

W, H = 8, 6


def w2c_look_at(center, target=(0.0, 0.0, 0.0)):
    """OpenCV world-to-camera (R, t) for a camera at ``center`` looking at ``target``; world -y up."""
    c = np.asarray(center, float)
    z = np.asarray(target, float) - c
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, -1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R_c2w = np.stack([x, y, z], 1)
    R = R_c2w.T
    return R, -R @ c


def write_colmap_scene(root: Path, n: int = 9, ext: str = ".bin", model: str = "OPENCV", factor: int = 1, sizes=None):
    params = {
        "OPENCV": (7.0, 6.5, 4.1, 2.9, 0.01, -0.002, 0.001, 0.0005),
        "PINHOLE": (7.0, 6.5, 4.1, 2.9),
        "OPENCV_FISHEYE": (7.0, 6.5, 4.1, 2.9, 0.1, 0.0, 0.0, 0.0),
    }[model]
    cameras = {1: ColmapCamera(1, model, W, H, params)}
    images = {}
    rng = np.random.default_rng(0)
    folder = root / ("images" if factor == 1 else f"images_{factor}")
    folder.mkdir(parents=True)
    for k in range(n):
        a = 2 * math.pi * k / n
        R, t = w2c_look_at((5 * math.cos(a), -2.0, 5 * math.sin(a)))
        name = f"view_{k:02d}.png"
        images[k + 1] = ColmapImage(id=k + 1, qvec=rotmat_to_qvec(R), tvec=t, camera_id=1, name=name)
        size = sizes[k] if sizes else (W // factor, H // factor)
        iio.imwrite(folder / name, rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    points = ColmapPoints.create(rng.normal(size=(20, 3)), rgb=rng.integers(0, 256, (20, 3)))
    write_model(ColmapModel(cameras, images, points), root / "sparse" / "0", ext=ext)
    return ColmapModel(cameras, images, points)


@pytest.mark.parametrize("ext", [".bin", ".txt"])
def test_load_colmap_scene(tmp_path, ext):
    model = write_colmap_scene(tmp_path / "scene", n=9, ext=ext)
    ds = load_dataset(tmp_path / "scene", progress=False)
    tr, te = ds.split("train"), ds.split("test")
    assert [Path(p).name for p in te.paths] == ["view_00.png", "view_08.png"]
    assert len(tr) == 7 and ds.unbounded and tr.alphas is None
    assert torch.allclose(tr.cameras.dist[0], torch.tensor([0.01, -0.002, 0.001, 0.0005, 0.0]))
    assert torch.allclose(tr.cameras.Ks[0], torch.tensor([[7.0, 0, 4.1], [0, 6.5, 2.9], [0, 0, 1]]))
    c2w = torch.cat([tr.cameras.c2w, te.cameras.c2w])
    assert bool(check_rigid(c2w).all())
    assert float(c2w[:, :, 3].norm(dim=-1).max()) <= 1.0 + 1e-5
    up = -c2w[:, :, 1].sum(0)
    assert torch.allclose(up / up.norm(), torch.tensor([0.0, 0.0, 1.0]), atol=1e-5)  # align_up
    T = ds.world_transform.double()
    assert torch.allclose(ds.points3d.double(), apply_transform_to_points(T, torch.from_numpy(model.points.xyz)), atol=1e-5)
    assert torch.equal(ds.points3d_rgb, torch.from_numpy(model.points.rgb))
    orig_center = torch.from_numpy(model.images[9].c2w()[:, 3])
    assert torch.allclose(apply_transform_to_points(T, orig_center[None])[0].float(), te.cameras.c2w[1, :, 3], atol=1e-5)


def test_colmap_known_projection(tmp_path):
    model = write_colmap_scene(tmp_path / "s", n=3, model="PINHOLE")
    X = np.array([0.2, -0.3, 0.4])
    im = model.images[2]  # view_01 -> train index 0
    xc = im.w2c()[:, :3] @ X + im.w2c()[:, 3]
    u, v = 7.0 * xc[0] / xc[2] + 4.1, 6.5 * xc[1] / xc[2] + 2.9
    ds = load_colmap(tmp_path / "s", progress=False)
    cams = ds.split("train").cameras
    Xn = apply_transform_to_points(ds.world_transform.double(), torch.from_numpy(X)[None])[0]
    w2c = invert_rigid(cams.c2w[0].double())
    pc = w2c[:, :3] @ Xn + w2c[:, 3]
    uv = cams.Ks[0, :2, :2].double() @ (pc[:2] / pc[2]) + cams.Ks[0, :2, 2].double()
    assert torch.allclose(uv, torch.tensor([u, v], dtype=torch.float64), atol=1e-4)


def test_colmap_pre_shrunk_images(tmp_path):
    write_colmap_scene(tmp_path / "s", n=3, model="PINHOLE", factor=2)
    ds = load_colmap(tmp_path / "s", downscale=2, normalize="none", align_up=False, progress=False)
    cams = ds.split("train").cameras
    assert ds.split("train").images.shape == (2, 3, 4, 3)
    assert torch.allclose(cams.Ks[0], torch.tensor([[3.5, 0, 2.05], [0, 3.25, 1.45], [0, 0, 1]]))
    assert torch.equal(ds.world_transform, torch.eye(4))


def test_colmap_errors(tmp_path):
    write_colmap_scene(tmp_path / "fish", n=3, model="OPENCV_FISHEYE", ext=".txt")
    with pytest.raises(ValueError, match=r"cameras\.txt: camera 1 uses unsupported COLMAP camera model 'OPENCV_FISHEYE'"):
        load_colmap(tmp_path / "fish")
    write_colmap_scene(tmp_path / "miss", n=3)
    (tmp_path / "miss" / "images" / "view_01.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"images\.bin: image 2 'view_01\.png' not found"):
        load_colmap(tmp_path / "miss")
    write_colmap_scene(tmp_path / "aspect", n=3)
    iio.imwrite(tmp_path / "aspect" / "images" / "view_02.png", np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(ValueError, match=r"view_02\.png.*does not match the camera size 8x6"):
        load_colmap(tmp_path / "aspect")
    (tmp_path / "none").mkdir()
    with pytest.raises(FileNotFoundError, match="no COLMAP model"):
        load_colmap(tmp_path / "none")


def test_colmap_mixed_sizes_in_a_split(tmp_path):
    """Two cameras of different sizes in one split: the error names both files and sizes."""
    root = tmp_path / "mixed"
    model = write_colmap_scene(root, n=3, ext=".txt")
    cams = dict(model.cameras)
    cams[2] = ColmapCamera(2, "PINHOLE", 10, 6, (7.0, 7.0, 5.0, 3.0))
    images = dict(model.images)
    im = images[3]
    images[3] = ColmapImage(id=3, qvec=im.qvec, tvec=im.tvec, camera_id=2, name=im.name)
    iio.imwrite(root / "images" / im.name, np.zeros((6, 10, 3), np.uint8))
    write_model(ColmapModel(cams, images, model.points), root / "sparse" / "0", ext=".txt")
    with pytest.raises(ValueError, match=r"view_01\.png is 8x6 and .*view_02\.png is 10x6"):
        load_colmap(root)


def test_gaussians_initialise_from_colmap_points(tmp_path):
    """A COLMAP scene's points3D become the initial Gaussians (positions and colours)."""
    from langfield.methods.registry import make_method
    from langfield.methods.base import SceneInfo

    model = write_colmap_scene(tmp_path / "scene", n=9, model="PINHOLE")
    ds = load_dataset(tmp_path / "scene", progress=False)
    from langfield.methods.gaussians.method import GaussiansConfig

    # a COLMAP scene is unbounded: without the background shell the points are exactly the model's
    method = make_method("gaussians", SceneInfo.from_dataset(ds), GaussiansConfig(background_shell_points=0))
    assert method.num_gaussians == len(model.points.xyz) == 20
    assert torch.allclose(method.cloud.means.detach(), ds.points3d.float())
    colour = method.cloud.params["sh0"].detach()[:, 0] * 0.28209479177387814 + 0.5
    assert torch.allclose(colour, ds.points3d_rgb.float() / 255.0, atol=1e-5)
    out = method.render_camera(ds.split("train").cameras[0], torch.ones(3))
    assert out.rgb.shape == (H, W, 3)


# ----------------------------------------------------------------------------- MVS depth maps


def sphere_z_depth(model: ColmapModel, image: ColmapImage, radius: float = 1.0) -> np.ndarray:
    """``[H, W]`` camera z-depth of the unit sphere at the origin through each pixel centre of ``image``
    (0 where the ray misses): the exact depth map a perfect patch-match would write."""
    cam = model.cameras[image.camera_id]
    fx, fy, cx, cy = cam.params[:4]
    u, v = np.meshgrid(np.arange(cam.width) + 0.5, np.arange(cam.height) + 0.5)
    d_cam = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1)  # z = 1: the ray parameter is z
    c2w = image.c2w()
    d = d_cam @ c2w[:3, :3].T
    o = c2w[:3, 3]
    a, b, c = (d * d).sum(-1), 2 * (d @ o), o @ o - radius**2
    disc = b * b - 4 * a * c
    z = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    return np.where(disc > 0, z, 0.0).astype(np.float32)


def write_depth_maps(root: Path, model: ColmapModel, kind: str = "geometric") -> None:
    from langfield.io.colmap import write_dense_array

    folder = root / "stereo" / "depth_maps"
    folder.mkdir(parents=True, exist_ok=True)
    for im in model.images.values():
        write_dense_array(sphere_z_depth(model, im), folder / f"{im.name}.{kind}.bin")


def test_mvs_depth_maps_put_every_pixel_on_the_surface(tmp_path):
    """A dense workspace (PINHOLE cameras) with exact z-depth maps of a unit sphere: loaded with
    depth_maps="geometric", every pixel's ray walked its loaded distance lands on the sphere in the
    original frame (undoing the normalisation); misses stay 0. Downscaled by 2, each map is the
    valid-only area average of the full-size ray distances (converted first, then resized)."""
    from langfield.data.loading import resize_depth
    from langfield.geometry.normalize import similarity_scale
    from langfield.geometry.rays import rays_from_camera

    model = write_colmap_scene(tmp_path / "dense", n=9, model="PINHOLE")
    write_depth_maps(tmp_path / "dense", model)
    assert load_colmap(tmp_path / "dense", progress=False).split("train").depths is None  # off by default
    ds = load_colmap(tmp_path / "dense", depth_maps="geometric", progress=False)
    T_inv = torch.linalg.inv(ds.world_transform.double())
    assert abs(float(similarity_scale(ds.world_transform.double())) - 1.0) > 0.05  # a real rescale to undo
    hits = 0
    for split in ("train", "test"):
        image_set = ds.split(split)
        assert image_set.depths.shape == (len(image_set), H, W, 1)
        for i in range(len(image_set)):
            rays = rays_from_camera(image_set.cameras, i, 0.0, 1.0)
            depth = image_set.depths[i].double()
            valid = depth[..., 0] > 0
            ends = (rays.origins.double() + rays.directions.double() * depth)[valid]
            radius = apply_transform_to_points(T_inv, ends).norm(dim=-1)
            torch.testing.assert_close(radius, torch.ones_like(radius), atol=1e-4, rtol=0)
            hits += int(valid.sum())
    assert hits > 20 and bool((ds.split("train").depths == 0).any())  # surfaces and misses both present
    half = load_colmap(tmp_path / "dense", downscale=2, depth_maps="geometric", progress=False)
    for split in ("train", "test"):
        full, small = ds.split(split).depths, half.split(split).depths
        assert small.shape == (len(full), H // 2, W // 2, 1)
        for i in range(len(full)):
            expected = resize_depth(full[i, ..., 0].numpy(), W // 2, H // 2)
            np.testing.assert_allclose(small[i, ..., 0].numpy(), expected, rtol=1e-6, atol=1e-6)


def test_full_size_mvs_depth_beside_pre_shrunk_images(tmp_path):
    """A dense workspace's depth maps are at the undistorted images' full size; read beside a pre-shrunk
    ``images_2`` folder they are converted at their own resolution and area-averaged over valid pixels,
    giving exactly what the full-size images downscaled by 2 give."""
    root = tmp_path / "dense"
    model = write_colmap_scene(root, n=9, model="PINHOLE")
    write_depth_maps(root, model)
    shrunk = root / "images_2"
    shrunk.mkdir()
    for im in model.images.values():
        image = iio.imread(root / "images" / im.name)
        iio.imwrite(shrunk / im.name, image[::2, ::2])
    via_full = load_colmap(root, downscale=2, depth_maps="geometric", progress=False)
    (root / "images").rename(root / "images_full")  # only images_2 left: its files are read
    via_shrunk = load_colmap(root, downscale=2, depth_maps="geometric", progress=False)
    for split in ("train", "test"):
        assert via_shrunk.split(split).images.shape[1:3] == (H // 2, W // 2)
        torch.testing.assert_close(via_shrunk.split(split).depths, via_full.split(split).depths, rtol=1e-6, atol=1e-6)
    assert bool((via_shrunk.split("train").depths > 0).any())


def test_mvs_depth_map_refusals(tmp_path):
    from langfield._checks import InputError
    from langfield.io.colmap import write_dense_array

    root = tmp_path / "dense"
    model = write_colmap_scene(root, n=9, model="PINHOLE")
    with pytest.raises(InputError, match=r"depth_maps='geometric': .*stereo/depth_maps not found.*dense workspace"):
        load_colmap(root, depth_maps="geometric", progress=False)
    with pytest.raises(InputError, match=r"depth_maps: must be one of \('geometric', 'photometric'\)"):
        load_colmap(root, depth_maps="fused", progress=False)
    write_depth_maps(root, model, "photometric")
    assert load_colmap(root, depth_maps="photometric", progress=False).split("train").depths is not None
    with pytest.raises(InputError, match=r"image 1 'view_00\.png': depth map .*view_00\.png\.geometric\.bin not found"):
        load_colmap(root, depth_maps="geometric", progress=False)
    folder = root / "stereo" / "depth_maps"
    write_dense_array(np.ones((H, W, 3), np.float32), folder / "view_03.png.photometric.bin")  # a normal map
    with pytest.raises(InputError, match=r"view_03\.png\.photometric\.bin: a COLMAP depth map has 1 channel, this array has 3"):
        load_colmap(root, depth_maps="photometric", progress=False)
    write_dense_array(np.ones((H + 1, W), np.float32), folder / "view_03.png.photometric.bin")
    with pytest.raises(InputError, match=rf"view_03\.png\.photometric\.bin has shape \({H + 1}, {W}\) but its image is {H}x{W}"):
        load_colmap(root, depth_maps="photometric", progress=False)
    # through load_dataset (the CLI's path), the option reaches the reader
    write_dense_array(np.ones((H, W), np.float32), folder / "view_03.png.photometric.bin")
    assert load_dataset(root, depth_maps="photometric", progress=False).split("train").depths is not None
