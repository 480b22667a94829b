"""Depth maps of transforms scenes: ``<image>_depth.npy`` / ``depth_path`` read into ``ImageSet.depths``
(ray distances, 0 = none), area-averaged over valid pixels when downscaled, scaled into the normalised
frame, and refused with the file's name when missing for some frames or of the wrong size or type."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from langfield._checks import InputError
from langfield.data import load_dataset
from langfield.data.loading import resize_depth
from langfield.data.procedural import ProceduralSceneConfig, make_procedural_dataset, write_procedural_dataset
from langfield.data.readers.transforms_json import load_transforms
from langfield.geometry.normalize import apply_transform_to_points, similarity_scale
from langfield.geometry.rays import rays_from_camera
from tests.data.readers.test_transforms_json import H, W, write_blender_scene, write_single_scene

CONFIG = ProceduralSceneConfig(width=12, height=12, num_train=3, num_test=1, supersample=1)


@pytest.fixture(scope="module")
def procedural_folder(tmp_path_factory):
    """The procedural scene written at 12x12 (frames with ``depth_path``); treat as read-only."""
    return write_procedural_dataset(tmp_path_factory.mktemp("procedural"), CONFIG)


def raw_depths(folder, split: str = "train") -> torch.Tensor:
    """``[C, H, W, 1]`` the written ``.npy`` maps of ``split``, in file order."""
    frames = json.loads((folder / f"transforms_{split}.json").read_text())["frames"]
    return torch.stack([torch.from_numpy(np.load(folder / f["depth_path"])) for f in frames])[..., None]


def test_written_depth_reads_back_exactly(procedural_folder):
    ds = load_dataset(procedural_folder, progress=False)
    truth = make_procedural_dataset(CONFIG)
    assert torch.equal(ds.world_transform, torch.eye(4))  # the file states its bounds: frame kept
    for split in ("train", "test"):
        depths = ds.split(split).depths
        assert depths.shape == (len(ds.split(split)), 12, 12, 1) and depths.dtype == torch.float32
        assert torch.equal(depths, truth.split(split).depths)
    gt = ds.split("train").depths
    assert bool((gt == 0).any()) and bool((gt > 1.0).any())  # background holes and surfaces both present
    sub = load_dataset(procedural_folder, max_images=2, progress=False).split("train")
    assert torch.equal(sub.depths, gt[:2])  # subsetting keeps depths with their images
    assert torch.equal(ds.split("train").subset([2, 0]).depths, gt[[2, 0]])


def test_depth_scales_with_the_world_transform(procedural_folder):
    """A re-normalised scene: depths scale by the transform's uniform scale, and the surface point a
    pixel's ray reaches in the normalised frame is the original point mapped by ``world_transform``."""
    orig = load_dataset(procedural_folder, progress=False)
    norm = load_transforms(procedural_folder, normalize="cameras", progress=False)
    T = norm.world_transform.double()
    s = float(similarity_scale(T))
    assert abs(s - 1.0) > 0.1  # the test needs a real rescale (1.28 here)
    d0, d1 = orig.split("train").depths, norm.split("train").depths
    torch.testing.assert_close(d1, d0 * s)
    for i in range(len(d0)):
        r0 = rays_from_camera(orig.split("train").cameras, i, 0.0, 1.0)
        r1 = rays_from_camera(norm.split("train").cameras, i, 0.0, 1.0)
        hit = d0[i, ..., 0] > 0
        p0 = (r0.origins + d0[i] * r0.directions)[hit].double()
        p1 = (r1.origins + d1[i] * r1.directions)[hit].double()
        torch.testing.assert_close(p1, apply_transform_to_points(T, p0), atol=1e-4, rtol=0)


def test_downscaled_depth_averages_valid_pixels_only(procedural_folder):
    ds = load_dataset(procedural_folder, downscale=2, progress=False)
    train, raw = ds.split("train"), raw_depths(procedural_folder)
    assert train.images.shape[1:3] == train.depths.shape[1:3] == (6, 6)
    for i in range(len(raw)):
        expected = resize_depth(raw[i, ..., 0].numpy(), 6, 6)
        assert np.array_equal(train.depths[i, ..., 0].numpy(), expected)
    # every 2x2 block: 0 unless at least half of it is surface, else inside the range of its surface depths
    blocks = raw[..., 0].reshape(-1, 6, 2, 6, 2).permute(0, 1, 3, 2, 4).reshape(-1, 6, 6, 4)
    valid = blocks > 0
    out = train.depths[..., 0]
    assert torch.equal(out > 0, valid.sum(-1) >= 2)
    lo = torch.where(valid, blocks, torch.inf).min(-1).values
    hi = torch.where(valid, blocks, -torch.inf).max(-1).values
    assert bool(((out >= lo - 1e-5) & (out <= hi + 1e-5))[out > 0].all())
    assert bool(((out > 0) & (valid.sum(-1) < 4)).any())  # the rule was exercised on partial blocks


def test_resize_depth_never_blends_holes():
    depth = np.array([[2.0, 0.0, 5.0, 5.0], [4.0, np.nan, 5.0, -1.0]], dtype=np.float32)
    # left block: 2 of 4 valid (2, 4) -> 3; right block: 3 of 4 valid -> 5 (never pulled toward 0)
    assert resize_depth(depth, 2, 1).tolist() == [[3.0, 5.0]]
    assert resize_depth(np.array([[7.0, 0.0], [0.0, 0.0]]), 1, 1).tolist() == [[0.0]]  # a quarter: no depth
    same = resize_depth(depth, 4, 2)  # no resize: invalid values become 0, valid ones stay
    assert same.tolist() == [[2.0, 0.0, 5.0, 5.0], [4.0, 0.0, 5.0, 0.0]] and same.dtype == np.float32


def test_depth_beside_the_image_without_a_depth_path(tmp_path):
    """Blender layout, no ``depth_path`` fields: ``r_i_depth.npy`` beside ``r_i.png`` is found; non-finite
    and negative values read as 0; a scene without any depth map has ``depths = None``."""
    root = write_blender_scene(tmp_path / "scene")
    assert load_transforms(root, progress=False).split("train").depths is None
    rng = np.random.default_rng(0)
    maps = [rng.uniform(1.0, 3.0, size=(H, W)).astype(np.float32) for _ in range(3)]
    maps[1][0, :3] = [np.inf, np.nan, -2.0]
    for i, m in enumerate(maps):
        np.save(root / "train" / f"r_{i}_depth.npy", m)
    ds = load_transforms(root, progress=False)
    got = ds.split("train").depths
    expected = torch.from_numpy(np.stack(maps))[..., None]
    expected[1, 0, :3] = 0.0
    assert torch.equal(got, expected)
    assert ds.split("test").depths is None  # all or nothing per split: the test split has none


def test_a_missing_depth_map_is_named(tmp_path, procedural_folder):
    root = write_blender_scene(tmp_path / "scene")
    for i in (0, 2):
        np.save(root / "train" / f"r_{i}_depth.npy", np.ones((H, W), np.float32))
    with pytest.raises(InputError, match=r"frame 1 .*r_1_depth\.npy not found.*other frames of this split"):
        load_transforms(root, progress=False)
    # a depth_path that names a missing file
    meta = json.loads((procedural_folder / "transforms_train.json").read_text())
    meta["frames"][1]["depth_path"] = "./train/nowhere_depth.npy"
    copy = shutil.copytree(procedural_folder, tmp_path / "copy")
    (copy / "transforms_train.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"frame 1.*'depth_path'.*nowhere_depth\.npy not found"):
        load_transforms(copy, progress=False)


def test_depth_maps_of_the_wrong_size_or_type_are_refused(tmp_path):
    root = write_blender_scene(tmp_path / "scene", counts={"train": 2})
    np.save(root / "train" / "r_0_depth.npy", np.ones((H, W, 1), np.float32))  # [H, W, 1] is accepted
    np.save(root / "train" / "r_1_depth.npy", np.ones((H, W + 1), np.float32))
    with pytest.raises(InputError, match=rf"r_1_depth\.npy has shape \({H}, {W + 1}\) but its image is {H}x{W}"):
        load_transforms(root, progress=False)
    np.save(root / "train" / "r_1_depth.npy", np.full((H, W), 1500, np.uint16))
    with pytest.raises(InputError, match=r"r_1_depth\.npy: depth map has dtype uint16"):
        load_transforms(root, progress=False)
    np.save(root / "train" / "r_1_depth.npy", np.ones((H, W), np.float16))
    assert load_transforms(root, progress=False).split("train").depths.shape == (2, H, W, 1)


# ----------------------------------------------------------------------------- sensor z-depth (nerfstudio)


def write_uint16_png(path, values) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(values, dtype=np.uint16)).save(path)  # mode I;16


def test_millimetre_z_depth_png_reads_as_the_ray_distances(tmp_path, procedural_folder):
    """nerfstudio's form: ``depth_file_path`` 16-bit PNGs of camera z-depth in millimetres (the default
    ``depth_unit_scale_factor`` 0.001). Made here from the procedural scene's exact ray distances by
    projecting each surface point on the camera's viewing axis; read back, they give those ray
    distances again, up to the half-millimetre rounding."""
    copy = shutil.copytree(procedural_folder, tmp_path / "copy")
    truth = load_dataset(procedural_folder, progress=False)
    for split in ("train", "test"):
        meta = json.loads((copy / f"transforms_{split}.json").read_text())
        cams = truth.split(split).cameras
        for i, fr in enumerate(meta["frames"]):
            ray = truth.split(split).depths[i, ..., 0].double()
            rays = rays_from_camera(cams, i, 0.0, 1.0)
            axis = cams.c2w[i, :3, 2].double()  # OpenCV: the camera looks along its +z
            z = ray * (rays.directions.double() @ axis)  # the surface point's camera-frame z
            assert float((z[ray > 0] - ray[ray > 0]).abs().max()) > 0.05  # z and ray distance really differ
            write_uint16_png(copy / split / f"z_{i}.png", torch.round(z * 1000).numpy())
            del fr["depth_path"]
            fr["depth_file_path"] = f"./{split}/z_{i}.png"
        (copy / f"transforms_{split}.json").write_text(json.dumps(meta))
    ds = load_dataset(copy, progress=False)
    for split in ("train", "test"):
        got, want = ds.split(split).depths, truth.split(split).depths
        assert torch.equal(got > 0, want > 0)  # holes stay holes
        assert float((got - want).abs().max()) < 6e-4  # 0.5 mm rounding, stretched by at most |d| < 1.2
    # The unit factor is the file's: the same PNGs in centimetres read 10x larger.
    for split in ("train", "test"):
        meta = json.loads((copy / f"transforms_{split}.json").read_text())
        meta["depth_unit_scale_factor"] = 0.01
        (copy / f"transforms_{split}.json").write_text(json.dumps(meta))
    torch.testing.assert_close(load_dataset(copy, progress=False).split("train").depths, ds.split("train").depths * 10)


def test_z_depth_through_a_distorted_camera_lands_on_its_plane(tmp_path):
    """A fronto-parallel plane at camera z = 1.5 m (constant z-depth image) seen by the distorted
    cameras of a nerfstudio transforms.json: each pixel's ray (undistorted by the ray generator),
    walked the loaded distance, ends on that plane, in the original units."""
    root = write_single_scene(tmp_path / "scene", n=4, frame_extra=lambda i: {"depth_file_path": f"depth/{i}.png"})
    for i in range(4):
        write_uint16_png(root / "depth" / f"{i}.png", np.full((H, W), 1500))
    ds = load_transforms(root, progress=False)
    s = float(similarity_scale(ds.world_transform.double()))
    for split in ds.splits:
        image_set = ds.split(split)
        assert image_set.cameras.has_distortion
        for i in range(len(image_set)):
            rays = rays_from_camera(image_set.cameras, i, 0.0, 1.0)
            axis = image_set.cameras.c2w[i, :3, 2].double()  # the viewing axis (a similarity keeps it a unit axis)
            z = image_set.depths[i, ..., 0].double() * (rays.directions.double() @ axis) / s  # camera z, original units
            torch.testing.assert_close(z, torch.full_like(z, 1.5), atol=2e-4, rtol=0)
            corner, centre = image_set.depths[i, 0, 0, 0], image_set.depths[i, H // 2, W // 2, 0]
            assert float(corner) > float(centre) * 1.05  # ray distances grow off-axis: converted, not copied


def test_low_resolution_z_depth_is_upsampled_before_it_becomes_ray_distances(tmp_path):
    """A phone's LiDAR depth is smaller than its colour image: a half-size constant-z plane (4x3 beside
    8x6 images, distorted cameras) is upsampled nearest-neighbour and only then turned into ray distances
    through each *image* pixel, so every pixel lands on the plane (converting at the map's pixel
    centres and upsampling the distances would miss by centimetres). A hole stays a 2x2 hole."""
    root = write_single_scene(tmp_path / "scene", n=4, frame_extra=lambda i: {"depth_file_path": f"depth/{i}.png"})
    for i in range(4):
        low = np.full((H // 2, W // 2), 1500)
        low[0, 1] = 0  # no return: covers image pixels rows 0-1, columns 2-3
        write_uint16_png(root / "depth" / f"{i}.png", low)
    ds = load_transforms(root, progress=False)
    s = float(similarity_scale(ds.world_transform.double()))
    for split in ds.splits:
        image_set = ds.split(split)
        assert image_set.depths.shape == (len(image_set), H, W, 1)
        for i in range(len(image_set)):
            depth = image_set.depths[i, ..., 0].double()
            hole = torch.zeros(H, W, dtype=torch.bool)
            hole[0:2, 2:4] = True
            assert torch.equal(depth == 0, hole)
            rays = rays_from_camera(image_set.cameras, i, 0.0, 1.0)
            z = depth * (rays.directions.double() @ image_set.cameras.c2w[i, :3, 2].double()) / s
            torch.testing.assert_close(z[~hole], torch.full_like(z[~hole], 1.5), atol=2e-4, rtol=0)


def test_depth_maps_of_another_aspect_ratio_are_refused(tmp_path):
    root = write_single_scene(tmp_path / "scene", n=3, frame_extra=lambda i: {"depth_file_path": f"depth/{i}.png"})
    for i in range(3):
        write_uint16_png(root / "depth" / f"{i}.png", np.full((H // 2, W // 2 + 1), 1500))
    with pytest.raises(InputError, match=rf"depth/\d\.png has shape \({H // 2}, {W // 2 + 1}\) but its image is {H}x{W} .*same aspect ratio"):
        load_transforms(root, progress=False)


def test_sensor_depth_refusals(tmp_path):
    root = write_single_scene(tmp_path / "scene", n=3, frame_extra=lambda i: {"depth_file_path": f"depth/{i}.png"})
    for i in range(3):
        write_uint16_png(root / "depth" / f"{i}.png", np.full((H, W), 1000))
    assert load_transforms(root, progress=False).split("train").depths is not None
    data = json.loads((root / "transforms.json").read_text())

    def rewrite(**top):
        (root / "transforms.json").write_text(json.dumps({**data, **top}))

    for bad in (0, -1e-3, "mm", float("inf")):
        rewrite(depth_unit_scale_factor=bad)
        with pytest.raises(InputError, match=r"transforms\.json: field 'depth_unit_scale_factor'"):
            load_transforms(root, progress=False)
    frames = [dict(f) for f in data["frames"]]
    frames[1]["depth_path"] = "depth/1.npy"
    rewrite(frames=frames)
    with pytest.raises(InputError, match=r"both 'depth_path' .* and 'depth_file_path' .* keep one"):
        load_transforms(root, progress=False)
    rewrite()
    from PIL import Image

    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "depth" / "2.png")  # a coloured visualisation
    with pytest.raises(InputError, match=r"2\.png: a depth image must be a single-channel image.*mode 'RGB'.*not depth"):
        load_transforms(root, progress=False)
    np.save(root / "depth" / "2.npy", np.full((H, W), 1000, np.uint16))  # integer .npy: read like the PNGs
    frames = [dict(f, depth_file_path="depth/2.npy") if f["depth_file_path"] == "depth/2.png" else f for f in data["frames"]]
    rewrite(frames=frames)
    ds = load_transforms(root, progress=False)
    assert all(bool((ds.split(s).depths > 0).all()) for s in ds.splits)
    write_uint16_png(root / "depth" / "0.png", np.full((H + 1, W), 1000))
    with pytest.raises(InputError, match=rf"0\.png has shape \({H + 1}, {W}\) but its image is {H}x{W}"):
        load_transforms(root, progress=False)
