"""Training masks of transforms scenes (nerfstudio's per-frame ``mask_path``: 0 = ignore the pixel,
non-zero = use it) read into ``ImageSet.masks``, shrunk conservatively when downscaled, refused with
the file's name when partial, missing, of the wrong size or mode, or outside the folder; and the
:class:`PixelSampler` drawing usable pixels only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from langfield._checks import InputError
from langfield.data import load_dataset
from langfield.data.dataset import ImageSet
from langfield.data.loading import resize_mask
from langfield.data.readers.transforms_json import load_transforms
from langfield.data.samplers import PixelSampler, stream_seed
from langfield.geometry.rays import rays_from_pixels
from langfield.io.images import read_mask_image
from langfield.types import Cameras
from tests.data.readers.test_transforms_json import H, W, rewrite, write_blender_scene, write_single_scene


def random_mask(seed: int, size=(W, H)) -> np.ndarray:
    """``bool [h, w]`` with both values present."""
    mask = np.random.default_rng(seed).random((size[1], size[0])) > 0.4
    mask[0, 0], mask[-1, -1] = False, True
    return mask


def save_mask(path: Path, mask: np.ndarray, mode: str = "L") -> Path:
    """Write ``mask [h, w]`` bool as a PNG: ``"L"`` 0/255, ``"1"`` bilevel, ``"I;16"`` 0/1000."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "L":
        Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    elif mode == "1":
        Image.fromarray(mask).save(path)
    elif mode == "I;16":
        Image.fromarray(mask.astype(np.uint16) * 1000).save(path)
    else:
        raise ValueError(mode)
    assert Image.open(path).mode == mode
    return path


def masked_blender_scene(root: Path, modes=("L", "1", "L")) -> list:
    """A Blender scene (3 train, 2 test views) whose train frames have ``mask_path`` s; returns the masks."""
    write_blender_scene(root)
    masks = [random_mask(i) for i in range(3)]
    for i, (mask, mode) in enumerate(zip(masks, modes)):
        save_mask(root / "masks" / f"m_{i}.png", mask, mode)

    def add(data):
        for i, frame in enumerate(data["frames"]):
            frame["mask_path"] = f"masks/m_{i}.png"

    rewrite(root / "transforms_train.json", add)
    return masks


# ----------------------------------------------------------------------------- reading


def test_masks_read_back_exactly(tmp_path):
    masks = masked_blender_scene(tmp_path / "scene", modes=("L", "1", "I;16"))
    ds = load_dataset(tmp_path / "scene", progress=False)
    train = ds.split("train")
    assert train.masks.dtype == torch.bool and train.masks.shape == (3, H, W, 1)
    assert torch.equal(train.masks[..., 0], torch.from_numpy(np.stack(masks)))
    assert ds.split("test").masks is None  # all-or-none is per split: the test frames have none
    assert torch.equal(train.subset([2, 0]).masks, train.masks[[2, 0]])  # subsets carry the masks
    assert torch.equal(load_dataset(tmp_path / "scene", max_images=2, progress=False).split("train").masks, train.masks[:2])


def test_nerfstudio_single_file_masks_follow_their_frames(tmp_path):
    root = write_single_scene(tmp_path / "scene", n=10, frame_extra=lambda i: {"mask_path": f"masks/frame_{i:05d}.png"})
    for i in range(10):
        save_mask(root / "masks" / f"frame_{i:05d}.png", random_mask(100 + i))
    ds = load_dataset(root, progress=False)
    for split in ("train", "test"):
        image_set = ds.split(split)
        assert image_set.masks.shape == (len(image_set), H, W, 1)
        for k, path in enumerate(image_set.paths):  # frames are sorted by file_path: masks must follow
            i = int(Path(path).stem.split("_")[1])
            assert np.array_equal(image_set.masks[k, ..., 0].numpy(), random_mask(100 + i)), path


def test_read_mask_image_accepts_single_channel_modes_only(tmp_path):
    mask = random_mask(7)
    for mode in ("L", "1", "I;16"):
        assert np.array_equal(read_mask_image(save_mask(tmp_path / f"{mode}.png", mask, mode)), mask), mode
    Image.fromarray(mask.astype(np.int32) * 70000, mode="I").save(tmp_path / "i32.tif")
    assert np.array_equal(read_mask_image(tmp_path / "i32.tif"), mask)
    grey = (mask.astype(np.uint8) * 255)
    for mode in ("RGB", "RGBA", "LA", "P"):
        path = tmp_path / f"bad_{mode}.png"
        Image.fromarray(grey).convert(mode).save(path)
        with pytest.raises(InputError, match=rf"bad_{mode}\.png: a mask must be a single-channel image .*got mode '{mode}'"):
            read_mask_image(path)
    Image.fromarray(mask.astype(np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(InputError, match=r"float\.tif: a mask must be .*got mode 'F'"):
        read_mask_image(tmp_path / "float.tif")


def test_a_split_with_masks_on_some_frames_only_is_refused(tmp_path):
    masked_blender_scene(tmp_path / "scene")
    rewrite(tmp_path / "scene" / "transforms_train.json", lambda d: d["frames"][1].pop("mask_path"))
    with pytest.raises(InputError, match=r"transforms_train\.json: frame 1 .*no field 'mask_path', but other frames "
                                         r"of this split have one \(e\.g\. .*m_0\.png\); masks are read for every frame"):  # fmt: skip
        load_dataset(tmp_path / "scene", progress=False)


def test_a_missing_mask_file_is_refused_naming_the_frame_and_the_file(tmp_path):
    masked_blender_scene(tmp_path / "scene")
    (tmp_path / "scene" / "masks" / "m_2.png").unlink()
    with pytest.raises(InputError, match=r"transforms_train\.json: frame 2 .*'mask_path' = 'masks/m_2\.png': mask .*m_2\.png not found"):
        load_dataset(tmp_path / "scene", progress=False)
    rewrite(tmp_path / "scene" / "transforms_train.json", lambda d: d["frames"][0].update(mask_path=""))
    with pytest.raises(InputError, match=r"frame 0 .*'mask_path' must be a non-empty path string"):
        load_dataset(tmp_path / "scene", progress=False)


def test_a_mask_of_the_wrong_size_or_mode_is_refused_naming_the_file(tmp_path):
    masked_blender_scene(tmp_path / "scene")
    save_mask(tmp_path / "scene" / "masks" / "m_1.png", random_mask(1, size=(4, 3)))
    with pytest.raises(InputError, match=rf"transforms_train\.json \[train\]: mask .*m_1\.png is 4x3 but its image is {W}x{H}"):
        load_dataset(tmp_path / "scene", progress=False)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "scene" / "masks" / "m_1.png")
    with pytest.raises(InputError, match=r"m_1\.png: a mask must be a single-channel image .*got mode 'RGB'"):
        load_dataset(tmp_path / "scene", progress=False)


def test_a_mask_outside_the_folder_is_refused_unless_allowed(tmp_path):
    masks = masked_blender_scene(tmp_path / "scene")
    save_mask(tmp_path / "outside.png", masks[0])
    rewrite(tmp_path / "scene" / "transforms_train.json", lambda d: d["frames"][0].update(mask_path="../outside.png"))
    with pytest.raises(InputError, match=r"frame 0 .*field 'mask_path'.*outside the dataset folder"):
        load_transforms(tmp_path / "scene", progress=False)
    allowed = load_transforms(tmp_path / "scene", progress=False, allow_outside_paths=True)
    assert np.array_equal(allowed.split("train").masks[0, ..., 0].numpy(), masks[0])


def covered_all_usable(mask: np.ndarray, w: int, h: int) -> np.ndarray:
    """Brute force: output pixel (j, i) is usable iff every input pixel overlapping its area
    ``[i s_x, (i + 1) s_x) x [j s_y, (j + 1) s_y)`` (``s = in / out``) is usable."""
    h0, w0 = mask.shape
    sy, sx = h0 / h, w0 / w
    out = np.zeros((h, w), bool)
    for j in range(h):
        for i in range(w):
            rows = [r for r in range(h0) if min(r + 1, (j + 1) * sy) - max(r, j * sy) > 1e-9]
            cols = [c for c in range(w0) if min(c + 1, (i + 1) * sx) - max(c, i * sx) > 1e-9]
            out[j, i] = mask[np.ix_(rows, cols)].all()
    return out


def test_downscaled_masks_keep_a_pixel_only_if_every_covered_pixel_is_usable(tmp_path):
    root = tmp_path / "scene"
    masked_blender_scene(root)
    hand = np.ones((H, W), bool)  # 8x6 -> 4x3 at downscale 2: blocks of 2x2
    hand[0, 1] = False  # block (0, 0) loses one pixel of four
    hand[2:4, 2:4] = False  # block (1, 1) loses all four
    hand[5, 7] = False  # block (2, 3) loses one
    save_mask(root / "masks" / "m_0.png", hand)
    ds = load_dataset(root, downscale=2, progress=False)
    assert ds.split("train").images.shape[1:3] == ds.split("train").masks.shape[1:3] == (3, 4)
    expected = np.ones((3, 4), bool)
    expected[0, 0] = expected[1, 1] = expected[2, 3] = False
    assert np.array_equal(ds.split("train").masks[0, ..., 0].numpy(), expected)
    # a factor that does not divide the size (8x6 -> 2x2 at 3): partial overlaps count as covered
    ds3 = load_dataset(root, downscale=3, progress=False)
    for k in range(3):
        full = read_mask_image(root / "masks" / f"m_{k}.png")
        small = ds3.split("train").masks[k, ..., 0].numpy()
        assert np.array_equal(small, covered_all_usable(full, 2, 2)) and np.array_equal(small, resize_mask(full, 2, 2))
    assert not covered_all_usable(hand, 2, 2).all() and covered_all_usable(np.ones((6, 8), bool), 2, 2).all()


# ----------------------------------------------------------------------------- PixelSampler


def coded_set(masks=None, num_cams: int = 2, size: int = 4) -> ImageSet:
    """``num_cams`` images of ``size x size`` whose red channel is ``7 * flat index`` (flat over C*H*W)."""
    flat = torch.arange(num_cams * size * size).reshape(num_cams, size, size)
    images = torch.stack([7 * flat, torch.full_like(flat, 3), 255 - 7 * flat], -1).to(torch.uint8)
    poses = torch.eye(4).repeat(num_cams, 1, 1)
    poses[:, 0, 3] = torch.arange(num_cams, dtype=torch.float32)
    K = torch.tensor([[4.0, 0.0, 2.0], [0.0, 4.0, 2.0], [0.0, 0.0, 1.0]])
    return ImageSet(cameras=Cameras.create(poses, K, size, size), images=images, masks=masks)


def decode_index(rgb: torch.Tensor) -> torch.Tensor:
    return torch.round(rgb[:, 0] * 255 / 7).long()


def test_pixel_sampler_draws_usable_pixels_only_and_all_of_them():
    usable = torch.zeros(2, 4, 4, 1, dtype=torch.bool)
    usable[0, 1:3, 0:2] = True
    usable[1, 3, :] = True
    usable[1, 0, 3] = True
    allowed = set(torch.nonzero(usable.reshape(-1)).squeeze(1).tolist())
    assert len(allowed) == 9
    image_set = coded_set(usable)
    sampler = PixelSampler(image_set, num_rays=64, near=0.5, far=4.0, seed=5, background="random")
    assert sampler.num_usable_pixels == 9
    seen = set()
    for step in range(6):
        batch = sampler.sample(step)
        idx = decode_index(batch.rgb)
        assert set(idx.tolist()) <= allowed, step
        seen |= set(idx.tolist())
        # the rays are those of the drawn pixels
        cam, rem = idx // 16, idx % 16
        assert torch.equal(batch.rays.camera_indices, cam)
        pixels = torch.stack([rem % 4, rem // 4], -1).float() + 0.5
        expected = rays_from_pixels(image_set.cameras, cam, pixels, 0.5, 4.0)
        torch.testing.assert_close(batch.rays.directions, expected.directions)
        torch.testing.assert_close(batch.rays.origins, expected.origins)
    assert seen == allowed  # every usable pixel comes up (384 draws over 9 pixels)
    # uniform among the usable pixels: each of the 9 gets a fair share of 9 * 400 draws
    counts = torch.bincount(torch.cat([decode_index(sampler.sample(s).rgb) for s in range(100, 150)]), minlength=32)
    assert int(counts.sum()) == 50 * 64 and all(200 < int(counts[i]) < 520 for i in allowed)
    assert sampler._usable.dtype == torch.int32  # the table is compact


def test_without_masks_the_batches_are_unchanged():
    """No masks: the draws are exactly ``randint(0, C*H*W)`` of the (seed, step, stream) generator, as before
    masks existed; an all-usable mask gives bit-identical batches (its table is the identity)."""
    plain = PixelSampler(coded_set(), num_rays=32, near=0.5, far=4.0, seed=3, background="random", num_streams=2)
    full = PixelSampler(coded_set(torch.ones(2, 4, 4, 1, dtype=torch.bool)), num_rays=32, near=0.5, far=4.0, seed=3,
                        background="random", num_streams=2)  # fmt: skip
    for step in (0, 1, 17):
        a, b = plain.sample(step), full.sample(step)
        for name in ("origins", "directions", "radii", "near", "far", "camera_indices"):
            assert torch.equal(getattr(a.rays, name), getattr(b.rays, name)), name
        assert torch.equal(a.rgb, b.rgb) and torch.equal(a.background, b.background)
        expected = []
        for stream in range(2):
            gen = torch.Generator().manual_seed(stream_seed(3, step, stream))
            expected.append(torch.randint(0, 32, (16,), generator=gen, dtype=torch.int64))
        assert torch.equal(decode_index(a.rgb), torch.cat(expected))
    assert plain._usable is None and plain.num_usable_pixels == 32


def test_masked_streams_still_split_across_ranks():
    usable = torch.rand(2, 4, 4, 1, generator=torch.Generator().manual_seed(0)) > 0.5
    kw = dict(num_rays=32, near=0.5, far=4.0, seed=9, num_streams=2)
    single = PixelSampler(coded_set(usable), **kw).sample(4)
    ranks = [PixelSampler(coded_set(usable), rank=r, world_size=2, **kw).sample(4) for r in range(2)]
    assert torch.equal(single.rgb, torch.cat([b.rgb for b in ranks]))


def test_bad_masks_are_refused_by_the_pixel_sampler():
    with pytest.raises(ValueError, match=r"PixelSampler: ImageSet\.masks marks no pixel of the 2 training image\(s\) as usable"):
        PixelSampler(coded_set(torch.zeros(2, 4, 4, 1, dtype=torch.bool)), num_rays=8, near=0.5, far=4.0)
    with pytest.raises(ValueError, match=r"PixelSampler: ImageSet\.masks must be bool \[2, 4, 4, 1\], got torch\.uint8"):
        PixelSampler(coded_set(torch.ones(2, 4, 4, 1, dtype=torch.uint8)), num_rays=8, near=0.5, far=4.0)
    with pytest.raises(ValueError, match=r"must be bool \[2, 4, 4, 1\], got torch\.bool \(2, 4, 4\)"):
        PixelSampler(coded_set(torch.ones(2, 4, 4, dtype=torch.bool)), num_rays=8, near=0.5, far=4.0)


def test_a_masked_scene_trains_rays_from_usable_pixels_end_to_end(tmp_path):
    """Reader to sampler: every ray's colour is that of a usable pixel of the file."""
    root = tmp_path / "scene"
    write_blender_scene(root, counts={"train": 2, "test": 1}, rgba=False)
    masks = [random_mask(20 + i) for i in range(2)]
    for i, mask in enumerate(masks):
        save_mask(root / "masks" / f"m_{i}.png", mask)
    rewrite(root / "transforms_train.json", lambda d: [f.update(mask_path=f"masks/m_{i}.png") for i, f in enumerate(d["frames"])])
    train = load_dataset(root, progress=False).split("train")
    batch = PixelSampler(train, num_rays=256, near=2.0, far=6.0, seed=1).sample(0)
    colours = train.images  # [C, H, W, 3] uint8: random, so nearly every pixel has its own colour
    usable = {(k, tuple(c.tolist())) for k in range(2) for c in colours[k][train.masks[k, ..., 0]]}
    ignored_only = {(k, tuple(c.tolist())) for k in range(2) for c in colours[k][~train.masks[k, ..., 0]]} - usable
    assert len(ignored_only) > 10  # the check below can fail
    got = {(int(k), tuple(c.tolist())) for k, c in zip(batch.rays.camera_indices, (batch.rgb * 255).round().long())}
    assert got <= usable and not (got & ignored_only)
    assert json.loads((root / "transforms_train.json").read_text())["frames"][0]["mask_path"] == "masks/m_0.png"
