"""The tiny scenes the reader cases mutate load cleanly, so each case's error comes from its one mutation."""

from __future__ import annotations

import pytest

from langfield.data import load_dataset
from tests.robustness import reader_scenes as rs


@pytest.mark.parametrize(
    "build, fmt",
    [
        (rs.blender_scene, "transforms"),
        (rs.single_scene, "transforms"),
        (rs.llff_scene, "llff"),
        (lambda root: rs.colmap_scene(root, ".txt"), "colmap"),
        (lambda root: rs.colmap_scene(root, ".bin"), "colmap"),
    ],
    ids=["blender", "single", "llff", "colmap-txt", "colmap-bin"],
)
def test_valid_scene_loads(tmp_path, build, fmt):
    root = build(tmp_path / "scene")
    ds = load_dataset(root)
    train = ds.split("train")
    assert ds.name == "scene" and len(train.cameras) >= 1
    assert tuple(train.images.shape[1:]) == (rs.H, rs.W, 3)
    assert bool(train.cameras.c2w.isfinite().all())


def test_outside_paths_load_when_allowed(tmp_path):
    """The opt-in reads a file outside the folder (the cases prove it is refused by default)."""
    root = rs.blender_scene(tmp_path / "scene")
    rs.outside_image(tmp_path)
    rs.set_frame(root / "transforms_train.json", 0, "file_path", "../elsewhere/secret.png")
    with pytest.raises(ValueError, match="outside the dataset folder"):
        load_dataset(root)
    ds = load_dataset(root, allow_outside_paths=True)
    assert ds.split("train").paths[0].endswith("secret.png")


@pytest.mark.parametrize("fmt", ["llff", "colmap"])
def test_symlinked_images_load_only_when_allowed(tmp_path, fmt):
    root = rs.llff_scene(tmp_path / "scene") if fmt == "llff" else rs.colmap_scene(tmp_path / "scene", ".bin")
    (root / "images").rename(tmp_path / "elsewhere")
    (root / "images").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="outside the dataset folder"):
        load_dataset(root)
    ds = load_dataset(root, allow_outside_paths=True)
    assert tuple(ds.split("train").images.shape[1:]) == (rs.H, rs.W, 3)


def test_data_config_plumbs_allow_outside_paths(tmp_path):
    from langfield.runs.loading import load_data
    from langfield.runs.spec import DataConfig

    root = rs.blender_scene(tmp_path / "scene")
    rs.outside_image(tmp_path)
    rs.set_frame(root / "transforms_train.json", 0, "file_path", "../elsewhere/secret.png")
    with pytest.raises(ValueError, match="outside the dataset folder"):
        load_data(DataConfig(str(root)))
    assert load_data(DataConfig(str(root), allow_outside_paths=True)).split("train").paths[0].endswith("secret.png")


def test_cmyk_jpeg_scene_loads_red(tmp_path):
    """CMYK JPEGs in a dataset decode to the same RGB as their source, not RGBA (the probe's silent failure)."""
    from PIL import Image

    root = rs.blender_scene(tmp_path / "scene")
    red = Image.new("RGB", (rs.W, rs.H), (255, 0, 0)).convert("CMYK")
    for split, n in (("train", 2), ("test", 1)):
        for i in range(n):
            (root / split / f"r_{i}.png").unlink()
            red.save(root / split / f"r_{i}.jpg", quality=95)
    ds = load_dataset(root)
    images = ds.split("train").images
    assert ds.split("train").alphas is None and images.shape[-1] == 3
    assert int(images[..., 0].min()) > 240 and int(images[..., 1:].max()) < 15
