"""The reader registry: detection of every format, the errors, explicit formats, third-party readers."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from langfield.data import READERS, Reader, SceneDataset, detect_format, load_dataset, register_reader
from langfield.data.procedural import ProceduralSceneConfig, make_procedural_dataset
from langfield.data.readers import registry

from .test_colmap import write_colmap_scene
from .test_llff import write_llff
from .test_transforms_json import write_blender_scene, write_single_scene

BUILT_IN = ["procedural", "transforms", "llff", "colmap"]


@pytest.fixture
def restore_readers():
    """Restore the registry after the test, so third-party readers do not leak into other tests."""
    saved = dict(READERS)
    yield READERS
    READERS.clear()
    READERS.update(saved)


# ----------------------------------------------------------------------------- detection


def test_built_in_formats_in_detection_order():
    assert list(READERS)[:4] == BUILT_IN
    assert all(isinstance(r, Reader) and r.description for r in READERS.values())


def test_detects_each_format_on_tiny_scenes(tmp_path):
    blender = write_blender_scene(tmp_path / "blender")
    single = write_single_scene(tmp_path / "single", n=3)
    llff = tmp_path / "llff"
    write_llff(llff, n=3)
    colmap = tmp_path / "colmap"
    write_colmap_scene(colmap, n=3)
    assert detect_format(blender) == "transforms"
    assert detect_format(blender / "transforms_test.json") == "transforms"
    assert detect_format(single) == "transforms"
    assert detect_format(str(single / "transforms.json")) == "transforms"
    assert detect_format(llff) == "llff"
    assert detect_format(llff / "poses_bounds.npy") == "llff"
    assert detect_format(colmap) == "colmap"
    assert detect_format("procedural") == "procedural"
    # Detection only looks at names: a sparse/0 model with cameras + images files is enough.
    (tmp_path / "model" / "sparse" / "0").mkdir(parents=True)
    for stem in ("cameras", "images"):
        (tmp_path / "model" / "sparse" / "0" / f"{stem}.txt").write_text("")
    assert detect_format(tmp_path / "model") == "colmap"


def test_llff_file_path_loads_like_the_folder(tmp_path):
    write_llff(tmp_path / "s", n=9)
    by_folder = load_dataset(tmp_path / "s", downscale=2, progress=False)
    by_file = load_dataset(tmp_path / "s" / "poses_bounds.npy", downscale=2, progress=False)
    assert torch.equal(by_folder.split("train").images, by_file.split("train").images)
    assert torch.equal(by_folder.world_transform, by_file.world_transform)


def test_unknown_paths_name_the_problem_and_list_the_formats(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    cases = {"empty": "not a known dataset;", "nowhere": "dataset path does not exist", "notes.txt": "not a known dataset file"}
    for name, problem in cases.items():
        with pytest.raises(FileNotFoundError) as info:
            load_dataset(tmp_path / name)
        message = str(info.value)
        assert str(tmp_path / name) in message and problem in message
        for fmt in BUILT_IN:
            assert f"  {fmt}: {READERS[fmt].description}" in message
    # The formats are listed in the order they are tried.
    assert [message.index(f"  {fmt}:") for fmt in BUILT_IN] == sorted(message.index(f"  {fmt}:") for fmt in BUILT_IN)


# ----------------------------------------------------------------------------- explicit format


def test_explicit_format_overrides_detection(tmp_path):
    """A folder holding an LLFF capture (10 views) and a COLMAP model (9 views): detection picks
    LLFF (tried first); ``format="colmap"`` loads the COLMAP model instead."""
    root = tmp_path / "both"
    write_llff(root, n=10, factor=2)
    write_colmap_scene(root, n=9)
    assert detect_format(root) == "llff"
    as_llff = load_dataset(root, downscale=2, progress=False)
    as_colmap = load_dataset(root, format="colmap", progress=False)
    assert len(as_llff.split("train")) + len(as_llff.split("test")) == 10
    assert len(as_colmap.split("train")) + len(as_colmap.split("test")) == 9
    assert as_colmap.split("train").paths[0].endswith("view_01.png")


def test_unknown_format_name_and_wrong_options(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset format 'nerfbaker'; registered formats: procedural, transforms, llff, colmap"):
        load_dataset(tmp_path, format="nerfbaker")
    with pytest.raises(TypeError, match=r"dataset format 'procedural'.*\['splits'\]"):
        load_dataset("procedural", splits=["train"])


def test_procedural_reader_matches_the_scene(tmp_path):
    ds = load_dataset("procedural", downscale=2, background="black", size=16, num_train=3)
    direct = make_procedural_dataset(ProceduralSceneConfig(width=8, height=8, num_train=3))
    assert ds.background == "black" and ds.name == "procedural"
    assert torch.equal(ds.split("train").images, direct.split("train").images)
    assert torch.equal(ds.split("test").cameras.c2w, direct.split("test").cameras.c2w)
    with pytest.raises(ValueError, match="downscale"):
        load_dataset("procedural", downscale=0)


# ----------------------------------------------------------------------------- third-party readers


def _toy_reader(calls: list) -> Reader:
    """A format of folders holding ``scene.toy``: a tiny procedural scene, recording its options."""

    def detect(path) -> bool:
        return (Path(path) / "scene.toy").is_file()

    def load(path, *, downscale=1, background=None, views: int = 2) -> SceneDataset:
        calls.append((str(path), downscale, background, views))
        return load_dataset("procedural", downscale=downscale, background=background, size=8, num_train=views)

    return Reader(detect=detect, load=load, description="a folder with scene.toy (test format)")


def test_registered_reader_is_detected_and_loaded(tmp_path, restore_readers):
    calls: list = []
    register_reader("toy", _toy_reader(calls))
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "scene.toy").write_text("toy")
    assert detect_format(tmp_path / "t") == "toy"
    ds = load_dataset(tmp_path / "t", background="black", views=3)
    assert calls == [(str(tmp_path / "t"), 1, "black", 3)]
    assert len(ds.split("train")) == 3 and ds.background == "black"
    # It is listed when nothing matches, after the built-in formats.
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"(?s)colmap: .*toy: a folder with scene\.toy"):
        load_dataset(tmp_path / "empty")


def test_register_reader_rejects_bad_input(restore_readers):
    with pytest.raises(ValueError, match="'llff' is already registered"):
        register_reader("llff", READERS["llff"])
    with pytest.raises(TypeError, match="needs a langfield.data.readers.Reader"):
        register_reader("bad", lambda p: True)
    with pytest.raises(ValueError, match="non-empty string"):
        register_reader("", READERS["llff"])


def test_entry_point_readers_are_found(tmp_path, restore_readers, monkeypatch):
    calls: list = []
    entry = SimpleNamespace(name="toy", load=lambda: _toy_reader(calls))
    monkeypatch.setattr(registry, "entry_points", lambda group: [entry] if group == "langfield.readers" else [])
    (tmp_path / "scene.toy").write_text("toy")
    assert "toy" not in READERS
    assert detect_format(tmp_path) == "toy"
    assert registry.get_reader("toy") is READERS["toy"]
    assert len(load_dataset(tmp_path, format="toy").split("train")) == 2
    assert calls == [(str(tmp_path), 1, None, 2)]
