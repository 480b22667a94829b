"""The model a capture hands on: the largest of several, without dropped cameras, and the same
cameras in transforms.json (OpenGL, nerfstudio fields) -- loaded back through both readers."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from langfield._checks import InputError

from langfield.capture.model import (
    add_image,
    choose_largest_model,
    model_sizes,
    remove_images,
    transforms_dict,
    write_final_model,
    write_transforms_json,
)
from langfield.data import load_dataset
from langfield.io.colmap import read_model, write_model
from langfield.io.images import write_image


def test_the_largest_model_is_kept_and_written_as_sparse_0(tmp_path, make_model):
    sparse = tmp_path / "sparse"
    write_model(remove_images(make_model(num_images=8), range(3, 9)), sparse / "0")  # stray 2-image model
    real = make_model(num_images=8, seed=1)
    write_model(real, sparse / "1")
    write_model(make_model(num_images=8, num_points=20, seed=2), sparse / "2")  # as many images, fewer points
    (sparse / "notes.txt").write_text("x")
    assert model_sizes(sparse) == {"0": (2, 80), "1": (8, 80), "2": (8, 20)}
    assert choose_largest_model(sparse) == sparse / "1"
    assert choose_largest_model(tmp_path / "nothing") is None
    out = write_final_model(read_model(sparse / "1"), sparse)
    assert out == sparse / "0" and sorted(p.name for p in sparse.iterdir()) == ["0"]  # strays removed
    back = read_model(out)
    assert back.images == real.images and back.points == real.points


def test_removing_an_image_updates_tracks_and_points(make_model):
    model = make_model(num_images=3)
    # point 10 is seen by images 1 and 2 only: removing image 2 leaves it one observation
    pts = model.points
    keep = ~((pts.track_image_ids == 3) & (np.repeat(pts.ids, pts.track_lengths) == 10))
    lengths = pts.track_lengths.copy()
    lengths[0] = 2
    model.images[3].point3d_ids[0] = -1
    model = replace(model, points=replace(pts, track_lengths=lengths, track_image_ids=pts.track_image_ids[keep],
                                          track_point2d_idx=pts.track_point2d_idx[keep]))  # fmt: skip
    out = remove_images(model, [2])
    assert sorted(out.images) == [1, 3]
    assert 10 not in out.points.ids and len(out.points) == 79
    assert out.points.track_lengths.tolist() == [2] * 79
    assert 2 not in out.points.track_image_ids
    assert out.images[1].point3d_ids[0] == -1 and out.images[1].point3d_ids[1] == 20
    assert int(out.points.track_lengths.sum()) == len(out.points.track_image_ids)


def test_adding_an_image_back_restores_its_tracks(make_model):
    model = make_model(num_images=5)
    removed = remove_images(model, [3])
    assert removed.points.track_lengths.tolist() == [4] * 80
    back = add_image(removed, model.images[3])
    assert back.images[3] == model.images[3]
    assert back.points.track_lengths.tolist() == [5] * 80
    offsets = np.concatenate([[0], np.cumsum(back.points.track_lengths)])
    for k in (0, 41, 79):  # every point observed by each image, its own keypoint k
        a, b = offsets[k], offsets[k + 1]
        assert sorted(zip(back.points.track_image_ids[a:b], back.points.track_point2d_idx[a:b])) == [(i, k) for i in range(1, 6)]
    with pytest.raises(InputError, match="already in the model"):
        add_image(back, model.images[3])
    stray = replace(model.images[3], point3d_ids=np.full(80, 999, np.int64))
    with pytest.raises(InputError, match=r"observes points \[999"):
        add_image(removed, stray)


def test_transforms_json_conventions(make_model):
    model = make_model(num_images=4)
    data = transforms_dict(model)
    assert (data["fl_x"], data["fl_y"], data["cx"], data["cy"], data["w"], data["h"]) == (180.0, 182.0, 100.0, 75.0, 200, 150)
    assert (data["k1"], data["k2"], data["p1"], data["p2"], data["camera_model"]) == (0.05, -0.01, 0.001, -0.002, "OPENCV")
    assert "k3" not in data
    frame = data["frames"][1]
    im = next(i for i in model.images.values() if frame["file_path"] == f"images/{i.name}")
    gl = np.array(frame["transform_matrix"])
    cv = im.c2w()
    np.testing.assert_allclose(gl[:3, 0], cv[:, 0])
    np.testing.assert_allclose(gl[:3, 1:3], -cv[:, 1:3])  # OpenGL: y up, z back
    np.testing.assert_allclose(gl[:3, 3], cv[:, 3])
    np.testing.assert_allclose(gl[3], [0, 0, 0, 1])
    # camera looks at the origin: OpenGL -z axis points from the centre towards it
    towards = -cv[:, 3] / np.linalg.norm(cv[:, 3])
    assert float(-gl[:3, 2] @ towards) > 0.95


def test_both_readers_load_the_capture_folder_to_the_same_cameras(tmp_path, make_model):
    model = make_model(num_images=9)
    (tmp_path / "images").mkdir()
    for im in model.images.values():
        write_image(tmp_path / "images" / im.name, np.full((150, 200, 3), 100, np.uint8))
    write_final_model(model, tmp_path / "sparse")
    write_transforms_json(model, tmp_path / "transforms.json")
    json.loads((tmp_path / "transforms.json").read_text())
    a = load_dataset(tmp_path, format="colmap", progress=False)
    b = load_dataset(tmp_path, format="transforms", progress=False)
    for split in ("train", "test"):
        ca, cb = a.split(split).cameras, b.split(split).cameras
        assert len(ca.c2w) == len(cb.c2w) > 0
        torch.testing.assert_close(ca.c2w, cb.c2w, atol=1e-5, rtol=0)
        torch.testing.assert_close(ca.Ks, cb.Ks)
        torch.testing.assert_close(ca.dist, cb.dist)
    assert load_dataset(tmp_path, progress=False).split("train").cameras.c2w.shape == a.split("train").cameras.c2w.shape
