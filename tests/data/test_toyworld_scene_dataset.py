"""langfield.data.toyworld.scene_dataset: one toy-world scene from many cameras, as a dataset langfield reads back exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from langfield._checks import InputError
from langfield.data.readers.registry import load_dataset
from langfield.data.toyworld import ToyWorldConfig, render_toyworld, sample_cameras, sample_scene
from langfield.data.toyworld.scene import SEMANTIC_LABELS
from langfield.data.toyworld.scene_dataset import write_toyworld_scene


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return write_toyworld_scene(tmp_path_factory.mktemp("toyscene"), 3, train_views=4, val_views=1, test_views=2, image_size=16)


def test_the_folder_reads_back_as_the_scene_the_toy_world_renders(written):
    ds = load_dataset(written)
    assert list(ds.labels) == list(SEMANTIC_LABELS)
    config = ToyWorldConfig(image_size=16)
    cams = sample_cameras(3, 7, config)  # the writer's cameras: train 0-3, val 4, test 5-6
    truth = render_toyworld([sample_scene(3, config)], cams, config)
    for split, rows in (("train", range(0, 4)), ("val", range(4, 5)), ("test", range(5, 7))):
        s = ds.split(split)
        assert len(s) == len(rows)
        # the reader keeps the world frame (the file has its scene_box): same OpenCV poses, intrinsics
        torch.testing.assert_close(s.cameras.c2w.float(), cams.c2w[list(rows)].float(), rtol=0, atol=1e-5)
        torch.testing.assert_close(s.cameras.Ks[0].float(), cams.Ks[0].float())
        assert torch.equal(s.semantics, truth.semantic[list(rows)].long())
        meta = json.loads((written / f"transforms_{split}.json").read_text())
        for j, frame in enumerate(meta["frames"]):  # depth is written beside the images ...
            assert np.array_equal(np.load(written / frame["depth_path"]), truth.depth[rows[j]].numpy())
        assert torch.equal(s.depths[..., 0], truth.depth[list(rows)].float())  # ... and read back (frame kept: no scale)
        sky = truth.depth[list(rows)] == 0
        assert torch.equal(s.alphas[..., 0] == 0, sky)  # transparent exactly on the sky
    meta = json.loads((written / "transforms_train.json").read_text())
    assert meta["caption"].endswith("floor") and meta["toyworld_scene_seed"] == 3
    # every object's box holds its centre, and the named objects are the scene's
    scene = sample_scene(3, config)
    assert sorted(ds.object_boxes) == sorted(f"{o.color} {o.shape}" for o in scene.objects)
    for o in scene.objects:
        box = ds.object_boxes[f"{o.color} {o.shape}"]
        centre = torch.tensor([o.position[0], o.position[1], box[:, 2].mean().item()])
        assert bool(((box[0] <= centre) & (centre <= box[1])).all())
    assert meta["near"] < float(truth.depth[truth.depth > 0].min()) and meta["far"] > float(truth.depth.max())


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(InputError, match="scene"):
        write_toyworld_scene(tmp_path, -1)
    with pytest.raises(InputError, match="train_views"):
        write_toyworld_scene(tmp_path, 0, train_views=1)
    with pytest.raises(InputError, match="image_size"):
        write_toyworld_scene(tmp_path, 0, image_size=4)


def test_cli_writes_a_scene_and_prints_its_caption(tmp_path, capsys):
    from langfield.cli.main import main as cli_main

    out = tmp_path / "s"
    assert cli_main(["toyworld", "scene", "--output", str(out), "--scene", "2", "--train-views", "2",
                     "--val-views", "1", "--test-views", "1", "--image-size", "16"]) == 0  # fmt: skip
    assert (out / "transforms_test.json").is_file() and np.load(out / "train" / "r_001_depth.npy").shape == (16, 16)
    captured = capsys.readouterr()
    assert "floor" in captured.out + captured.err


def test_scene_captions_follow_the_camera(written, tmp_path):
    """The caption of the written scene from any camera: the writer's own caption at its first training
    camera, the stored scene is the sampled one, and an old folder (seed only) rebuilds the same scene."""
    from langfield.data.toyworld.captions import descriptive_caption
    from langfield.data.toyworld.scene_dataset import read_toyworld_scene, scene_captions

    config = ToyWorldConfig(image_size=16)
    scene = sample_scene(3, config)
    assert read_toyworld_scene(written) == scene
    train = load_dataset(written).split("train").cameras
    meta = json.loads((written / "transforms_train.json").read_text())
    assert scene_captions(written, train[0:1]) == [meta["caption"]]
    # cameras around the scene: each caption is the scene's from that camera, and the order does change
    ring = sample_cameras(3, 12, config)
    caps = scene_captions(written, ring)
    assert caps == [descriptive_caption(scene, ring[i : i + 1]) for i in range(12)] and len(set(caps)) > 1
    assert scene_captions(scene, ring) == caps  # a scene in hand: no folder read
    old = tmp_path / "old"
    old.mkdir()
    del meta["toyworld_scene"]
    (old / "transforms_train.json").write_text(json.dumps(meta))
    assert read_toyworld_scene(old) == scene
    meta["objects"] = meta["objects"][:1]
    (old / "transforms_train.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="another toy-world configuration"):
        read_toyworld_scene(old)
    with pytest.raises(InputError, match="no transforms_train.json"):
        read_toyworld_scene(tmp_path / "missing")
    with pytest.raises(InputError, match="cameras"):
        scene_captions(written, "test:0")
