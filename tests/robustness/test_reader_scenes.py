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
