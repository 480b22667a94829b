"""Viewer pieces that need no browser: keyframes -> camera path -> camera_path.json, and the language
render modes of a real (tiny) run drawn band by band."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from langfield._checks import InputError
from langfield.data.camera_path_json import read_camera_path
from langfield.viewer.scene_view import SceneView, ViewSettings
from langfield.viewer.server import Viewer, open_scene_view

from ..training.toy_method import build

pytestmark = pytest.mark.usefixtures("single_thread")


def test_keyframes_make_a_camera_path_that_saves_as_camera_path_json(tmp_path):
    method, dataset = build()
    viewer = Viewer(SceneView(method, dataset))  # not started: no viser needed for the path logic
    cams = dataset.split("train").cameras
    with pytest.raises(InputError, match="two keyframes"):
        viewer.camera_path(10, 24.0, 1.5)
    viewer.keyframes = [(cams.c2w[0], 40.0), (cams.c2w[2], 60.0), (cams.c2w[4], 50.0)]
    path = viewer.camera_path(9, 12.0, aspect=1.5, max_side=60)
    assert len(path) == 9 and (path.width, path.height, path.fps) == (60, 40, 12.0)
    for frame, key in ((0, 0), (4, 2), (8, 4)):  # (F - 1) a multiple of (K - 1): keyframes are hit exactly
        assert torch.allclose(path.c2w[frame], cams.c2w[key], atol=1e-5)
    assert path.fov_y_deg.tolist() == pytest.approx([40, 45, 50, 55, 60, 57.5, 55, 52.5, 50])
    out = viewer.save_camera_path(tmp_path / "camera_path.json", 9, 12.0)
    back = read_camera_path(out)
    assert torch.allclose(back.c2w, viewer.camera_path(9, 12.0, 4 / 3).c2w, atol=1e-5) and back.fps == 12.0


def test_language_modes_draw_band_by_band_like_one_band(tiny_ngp_language_run):
    view = open_scene_view(tiny_ngp_language_run, "cpu")
    assert view.language is not None and view.modes[-2:] == ("relevancy", "segmentation")
    cams = view.dataset.split("test").cameras[0]
    one = {m: view.render(cams, s) for m, s in (("rel", ViewSettings("relevancy", query="sphere")),
                                                 ("seg", ViewSettings("segmentation", labels=("ground", "sphere"))))}  # fmt: skip
    view.band_pixels = 24 * 5  # 5 rows per band: 5 bands
    banded = {m: view.render(cams, s) for m, s in (("rel", ViewSettings("relevancy", query="sphere")),
                                                    ("seg", ViewSettings("segmentation", labels=("ground", "sphere"))))}  # fmt: skip
    for key in one:
        assert one[key].shape == (24, 24, 3)
        assert np.abs(one[key].astype(int) - banded[key].astype(int)).max() <= 2, key
    rgb = view.render(cams, ViewSettings("rgb")).astype(int)
    assert np.abs(one["rel"].astype(int) - rgb).mean() > 5 and np.abs(one["seg"].astype(int) - rgb).mean() > 5
    assert view.legend(["ground", "sphere"]) == [("ground", "#800000"), ("sphere", "#008000")]
    assert math.isclose(float(view.initial_camera().c2w[0, 0, 0]), float(view.dataset.split("train").cameras.c2w[0, 0, 0]))


def test_splat_arrays_of_a_gaussian_run(gaussians_run):
    from langfield.geometry.rotations import quaternion_to_matrix
    from langfield.viewer.scene_view import splat_arrays

    view = open_scene_view(gaussians_run, "cpu")
    assert view.has_splats and view.language is None
    centers, cov, rgbs, opacities = view.splats()
    cloud = view.method.gaussian_cloud()
    n = cloud.num_gaussians
    assert centers.shape == (n, 3) and cov.shape == (n, 3, 3) and rgbs.shape == (n, 3) and opacities.shape == (n, 1)
    assert np.allclose(cov, cov.transpose(0, 2, 1), atol=1e-7)
    # the covariance's eigenvalues are the squared scales, its eigenvectors the rotation's columns
    i = int(torch.argmax(cloud.scales.max(-1).values / cloud.scales.min(-1).values))  # the most anisotropic one
    R = quaternion_to_matrix(cloud.quats[i].detach().float()).numpy()
    s2 = (cloud.scales[i].detach().float() ** 2).numpy()
    assert np.allclose(cov[i] @ R, R * s2, rtol=1e-3, atol=1e-9)
    assert rgbs.min() >= 0 and rgbs.max() <= 1 and 0 < opacities.min() and opacities.max() < 1
    assert np.allclose(opacities[:, 0], torch.sigmoid(cloud.params["opacities"].detach()).reshape(-1).numpy(), atol=1e-6)
    _, toy = build()
    with pytest.raises(InputError, match="not a Gaussian cloud"):
        SceneView(build()[0], toy).splats()
    assert splat_arrays(view.method)[0].dtype == np.float32
