"""Synthetic COLMAP models for the capture tests: cameras on a circle around a point cloud, every
observation the exact (distorted) projection of its point, so each statistic has a known value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from langfield.geometry.distortion import distort_points
from langfield.io.colmap import ColmapCamera, ColmapImage, ColmapModel, ColmapPoints, rotmat_to_qvec

WIDTH, HEIGHT = 200, 150
PARAMS = (180.0, 182.0, 100.0, 75.0, 0.05, -0.01, 0.001, -0.002)  # OPENCV fx fy cx cy k1 k2 p1 p2


def look_at_w2c(centre, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)):
    """OpenCV world-to-camera rotation of a camera at ``centre`` looking at ``target``."""
    f = np.asarray(target, float) - centre
    f /= np.linalg.norm(f)
    r = np.cross(f, up)
    r /= np.linalg.norm(r)
    d = np.cross(f, r)
    return np.stack([r, d, f])  # rows: camera x (right), y (down), z (forward) in world coordinates


def project(R, t, xyz):
    cam = xyz @ R.T + t
    norm = cam[:, :2] / cam[:, 2:3]
    d = distort_points(torch.from_numpy(norm), torch.tensor(PARAMS[4:] + (0.0,), dtype=torch.float64)).numpy()
    return d * PARAMS[:2] + PARAMS[2:4]


def build_model(num_images=8, num_points=80, seed=0, radius=5.0, arc_deg=360.0, names=None):
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-1.0, 1.0, size=(num_points, 3))
    ids = np.arange(1, num_points + 1, dtype=np.int64) * 10  # ids need not be 1..P
    images = {}
    tracks = {int(i): [] for i in ids}
    for k in range(num_images):
        a = np.radians(arc_deg * k / num_images)
        c = np.array([radius * np.cos(a), radius * np.sin(a), 0.5])
        R = look_at_w2c(c)
        t = -R @ c
        xy = project(R, t, xyz)
        name = names[k] if names else f"img_{k:03d}.png"
        image_id = k + 1
        images[image_id] = ColmapImage(image_id, rotmat_to_qvec(R), t, 1, name, xy, ids.copy())
        for j, pid in enumerate(ids):
            tracks[int(pid)].append((image_id, j))
    lengths = np.array([len(tracks[int(p)]) for p in ids], np.int64)
    flat = [obs for p in ids for obs in tracks[int(p)]]
    points = ColmapPoints(
        ids=ids, xyz=xyz, rgb=rng.integers(0, 255, size=(num_points, 3)).astype(np.uint8), errors=np.zeros(num_points),
        track_lengths=lengths, track_image_ids=np.array([o[0] for o in flat], np.int64),
        track_point2d_idx=np.array([o[1] for o in flat], np.int64),
    )
    return ColmapModel({1: ColmapCamera(1, "OPENCV", WIDTH, HEIGHT, PARAMS)}, images, points)


@pytest.fixture
def make_model():
    return build_model
