"""Training masks of COLMAP scenes (``load_colmap(masks=DIR)`` / ``--colmap-masks``): COLMAP's mask
convention (``<image name>.png``) and nerfstudio's (``<image stem>.png``) read into ``ImageSet.masks`` in
view order, following a downscale and the pre-shrunk ``images_K`` folders, and refused with the file's name
when missing, mis-sized or outside the folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from langfield._checks import InputError
from langfield.cli.main import main
from langfield.data.loading import resize_mask
from langfield.data.readers.colmap import load_colmap
from tests.data.readers.test_colmap import H, W, write_colmap_scene
from tests.data.readers.test_transforms_json import write_blender_scene
from tests.data.readers.test_transforms_masks import random_mask, save_mask


def write_masks(root: Path, model, folder: str = "masks", style: str = "colmap", size=(W, H)) -> dict:
    """One random mask per registered image, named in ``style``; ``{image name: bool [h, w]}``."""
    masks = {}
    for im in model.images.values():
        mask = random_mask(im.id, size)
        name = f"{im.name}.png" if style == "colmap" else f"{Path(im.name).stem}.png"
        save_mask(root / folder / name, mask)
        masks[im.name] = mask
    return masks


@pytest.mark.parametrize("style", ["colmap", "nerfstudio"])
def test_masks_are_read_per_view_in_split_order(tmp_path, style):
    root = tmp_path / "scene"
    model = write_colmap_scene(root, n=9)
    truth = write_masks(root, model, style=style)
    ds = load_colmap(root, masks="masks", progress=False)
    for split in ("train", "test"):
        s = ds.split(split)
        assert s.masks is not None and s.masks.dtype == torch.bool and s.masks.shape == (len(s), H, W, 1)
        for k, path in enumerate(s.paths):
            assert torch.equal(s.masks[k, ..., 0], torch.from_numpy(truth[Path(path).name]))
    assert load_colmap(root, progress=False).split("train").masks is None  # opt-in
    absolute = load_colmap(root, masks=root / "masks", progress=False).split("test").masks
    assert torch.equal(absolute, ds.split("test").masks)


def test_masks_follow_the_downscale_and_pre_shrunk_folders(tmp_path):
    root = tmp_path / "scene"
    model = write_colmap_scene(root, n=9)
    truth = write_masks(root, model)
    ds = load_colmap(root, downscale=2, masks="masks", progress=False)
    s = ds.split("train")
    assert s.masks.shape == (len(s), H // 2, W // 2, 1)
    for k, path in enumerate(s.paths):
        expected = resize_mask(truth[Path(path).name], W // 2, H // 2)
        assert np.array_equal(s.masks[k, ..., 0].numpy(), expected)
    assert 0 < int(s.masks.sum()) < s.masks.numel()  # conservative shrink keeps some, drops some
    shrunk = tmp_path / "shrunk"
    model = write_colmap_scene(shrunk, n=3, model="PINHOLE", factor=2)
    small = write_masks(shrunk, model, size=(W // 2, H // 2))  # the size of the image files read
    t = load_colmap(shrunk, downscale=2, masks="masks", progress=False).split("train")
    assert torch.equal(t.masks[0, ..., 0], torch.from_numpy(small[Path(t.paths[0]).name]))


def test_mask_refusals_name_the_file(tmp_path):
    root = tmp_path / "scene"
    model = write_colmap_scene(root, n=3)
    with pytest.raises(InputError, match=r"masks: folder .*nowhere not found .*inside the scene folder"):
        load_colmap(root, masks="nowhere", progress=False)
    write_masks(root, model)
    (root / "masks" / "view_01.png.png").unlink()
    with pytest.raises(InputError, match=r"image 2 'view_01\.png': no training mask in .*masks \(looked for .*view_01\.png\.png or .*view_01\.png\)"):
        load_colmap(root, masks="masks", progress=False)
    save_mask(root / "masks" / "view_01.png.png", random_mask(0, (W + 1, H)))
    with pytest.raises(InputError, match=r"mask .*view_01\.png\.png is 9x6 but its image is 8x6"):
        load_colmap(root, masks="masks", progress=False)
    save_mask(root / "masks" / "view_01.png.png", random_mask(0))
    outside = tmp_path / "elsewhere.png"
    save_mask(outside, random_mask(1))
    (root / "masks" / "view_02.png.png").unlink()
    (root / "masks" / "view_02.png.png").symlink_to(outside)
    with pytest.raises(InputError, match=r"image 3 mask: .*outside the dataset folder"):
        load_colmap(root, masks="masks", progress=False)
    assert load_colmap(root, masks="masks", progress=False, allow_outside_paths=True).split("train").masks is not None


def test_cli_trains_with_colmap_masks_and_refuses_them_elsewhere(tmp_path, capsys):
    root = tmp_path / "scene"
    write_masks(root, write_colmap_scene(root, n=9, model="PINHOLE"))
    common = ["train", "--method", "gaussians", "--max-steps", "2", "--eval-every", "0", "--checkpoint-every", "0",
              "--device", "cpu", "--set", "init_num_random=200", "--set", "ssim_lambda=0", "--colmap-masks", "masks"]  # fmt: skip
    assert main([*common, "--data", str(root), "--output-dir", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["data"]["colmap_masks"] == "masks"
    blender = tmp_path / "blender"
    write_blender_scene(blender)
    assert main([*common, "--data", str(blender), "--output-dir", str(tmp_path / "run2")]) == 2
    err = capsys.readouterr().err
    assert "DataConfig.colmap_masks (--colmap-masks masks)" in err and "'mask_path'" in err and "Traceback" not in err
