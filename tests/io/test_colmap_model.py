"""COLMAP model reader/writer (text + binary) and camera-model conversion."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from langfield._checks import InputError

from langfield.io.colmap import (
    ColmapCamera,
    ColmapImage,
    ColmapModel,
    ColmapPoints,
    camera_intrinsics,
    find_model_dir,
    qvec_to_rotmat,
    read_cameras,
    read_cameras_binary,
    read_images,
    read_images_binary,
    read_model,
    read_points3d,
    rotmat_to_qvec,
    write_cameras_binary,
    write_cameras_text,
    write_model,
)

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
FERN_SPARSE = SHARED / "llff" / "fern" / "sparse" / "0"


def random_model(seed: int = 0) -> ColmapModel:
    rng = np.random.default_rng(seed)
    cameras = {
        1: ColmapCamera(1, "SIMPLE_PINHOLE", 640, 480, (500.25, 320.0, 240.0)),
        2: ColmapCamera(2, "PINHOLE", 800, 600, (700.1, 701.3, 399.5, 300.25)),
        3: ColmapCamera(3, "SIMPLE_RADIAL", 8, 6, (7.0, 4.0, 3.0, 0.0123)),
        4: ColmapCamera(4, "RADIAL", 8, 6, (7.0, 4.0, 3.0, 0.01, -0.002)),
        5: ColmapCamera(5, "OPENCV", 8, 6, (7.5, 7.25, 4.0, 3.0, *(0.1 * rng.normal(size=4)).tolist())),
        7: ColmapCamera(7, "OPENCV_FISHEYE", 8, 6, (6.5, 6.75, 4.5, 2.5, *(0.1 * rng.normal(size=4)).tolist())),
    }
    images = {}
    for k, cam_id in enumerate([1, 2, 3, 5, 7]):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        n = int(rng.integers(0, 5))
        images[10 + k] = ColmapImage(
            id=10 + k,
            qvec=q,
            tvec=rng.normal(size=3),
            camera_id=cam_id,
            name=f"sub/img_{k:03d}.png",
            xys=rng.random((n, 2)) * 100,
            point3d_ids=rng.integers(-1, 50, size=n).astype(np.int64),
        )
    lengths = rng.integers(0, 4, size=6).astype(np.int64)
    total = int(lengths.sum())
    points = ColmapPoints(
        ids=np.array([3, 5, 8, 13, 21, 34], dtype=np.int64),
        xyz=rng.normal(size=(6, 3)),
        rgb=rng.integers(0, 256, size=(6, 3)).astype(np.uint8),
        errors=rng.random(6),
        track_lengths=lengths,
        track_image_ids=rng.integers(10, 15, size=total).astype(np.int64),
        track_point2d_idx=rng.integers(0, 5, size=total).astype(np.int64),
    )
    return ColmapModel(cameras=cameras, images=images, points=points)


@pytest.mark.parametrize("ext", [".txt", ".bin"])
def test_round_trip_is_identical(tmp_path, ext):
    model = random_model()
    write_model(model, tmp_path, ext=ext)
    assert (tmp_path / f"cameras{ext}").is_file() and (tmp_path / f"points3D{ext}").is_file()
    back = read_model(tmp_path)
    assert back.cameras == model.cameras
    assert back.images == model.images
    assert back.points == model.points
    assert back.images[10].name == "sub/img_000.png"


def test_text_and_binary_agree(tmp_path):
    model = random_model(1)
    write_model(model, tmp_path / "t", ext=".txt")
    write_model(model, tmp_path / "b", ext=".bin")
    t, b = read_model(tmp_path / "t"), read_model(tmp_path / "b")
    assert t.cameras == b.cameras and t.images == b.images and t.points == b.points


def test_binary_layout_matches_documented_format(tmp_path):
    """Hand-pack cameras.bin/images.bin byte by byte and read them back."""
    cam = struct.pack("<Q", 1) + struct.pack("<iiQQ", 7, 1, 640, 480) + struct.pack("<4d", 500, 510, 320, 240)
    (tmp_path / "cameras.bin").write_bytes(cam)
    cams = read_cameras_binary(tmp_path / "cameras.bin")
    assert cams == {7: ColmapCamera(7, "PINHOLE", 640, 480, (500.0, 510.0, 320.0, 240.0))}
    img = struct.pack("<Q", 1) + struct.pack("<i4d3di", 3, 1, 0, 0, 0, 1, 2, 3, 7) + b"a.png\x00"
    img += struct.pack("<Q", 2) + struct.pack("<ddq", 1.5, 2.5, -1) + struct.pack("<ddq", 3.5, 4.5, 42)
    (tmp_path / "images.bin").write_bytes(img)
    ims = read_images_binary(tmp_path / "images.bin")
    assert ims[3].name == "a.png" and ims[3].camera_id == 7
    assert ims[3].point3d_ids.tolist() == [-1, 42]
    np.testing.assert_array_equal(ims[3].xys, [[1.5, 2.5], [3.5, 4.5]])
    np.testing.assert_array_equal(ims[3].c2w(), [[1, 0, 0, -1], [0, 1, 0, -2], [0, 0, 1, -3]])


def test_quaternion_conventions():
    # 90 degrees about +z: (qw, qx, qy, qz) = (cos45, 0, 0, sin45) maps x -> y.
    q = np.array([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)])
    R = qvec_to_rotmat(q)
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    rng = np.random.default_rng(3)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        q = q if q[0] >= 0 else -q
        np.testing.assert_allclose(rotmat_to_qvec(qvec_to_rotmat(q)), q, atol=1e-9)
    # 180-degree rotation (trace -1) is handled.
    np.testing.assert_allclose(np.abs(rotmat_to_qvec(np.diag([1.0, -1.0, -1.0]))), [0, 1, 0, 0], atol=1e-12)


def test_image_pose_is_world_to_camera():
    q = rotmat_to_qvec(qvec_to_rotmat([0.9, 0.1, -0.3, 0.2]))
    im = ColmapImage(id=1, qvec=q, tvec=np.array([0.5, -1.0, 2.0]), camera_id=1, name="x")
    X = np.array([0.3, 0.2, 5.0])
    x_cam = im.w2c()[:, :3] @ X + im.w2c()[:, 3]
    c2w = im.c2w()
    np.testing.assert_allclose(c2w[:, :3] @ x_cam + c2w[:, 3], X, atol=1e-12)


def test_camera_intrinsics_models():
    K, d = camera_intrinsics(ColmapCamera(1, "OPENCV", 8, 6, (7, 6.5, 4, 3, 0.1, 0.2, 0.01, 0.02)))
    np.testing.assert_allclose(K, [[7, 0, 4], [0, 6.5, 3], [0, 0, 1]])
    np.testing.assert_allclose(d, [0.1, 0.2, 0.01, 0.02, 0.0])
    _, d = camera_intrinsics(ColmapCamera(1, "RADIAL", 8, 6, (7, 4, 3, 0.1, 0.2)))
    np.testing.assert_allclose(d, [0.1, 0.2, 0, 0, 0])
    _, d = camera_intrinsics(ColmapCamera(1, "SIMPLE_RADIAL", 8, 6, (7, 4, 3, 0.1)))
    np.testing.assert_allclose(d, [0.1, 0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"cameras\.txt: camera 9 uses unsupported COLMAP camera model 'OPENCV_FISHEYE'"):
        camera_intrinsics(ColmapCamera(9, "OPENCV_FISHEYE", 8, 6, (1,) * 8), source="cameras.txt")
    with pytest.raises(ValueError, match="FULL_OPENCV"):
        camera_intrinsics(ColmapCamera(9, "FULL_OPENCV", 8, 6, (1,) * 12))


def test_text_errors_name_file_and_line(tmp_path):
    p = tmp_path / "cameras.txt"
    p.write_text("# comment\n1 PINHOLE 8 6 7 7 4\n")
    with pytest.raises(ValueError, match=r"cameras\.txt, line 2: camera model PINHOLE needs 4 params"):
        read_cameras(p)
    p.write_text("1 FISHEYE_X 8 6 1 2 3\n")
    with pytest.raises(ValueError, match=r"line 1: unknown COLMAP camera model 'FISHEYE_X'"):
        read_cameras(p)
    p.write_text("1 PINHOLE 8 six 7 7 4 3\n")
    with pytest.raises(ValueError, match=r"line 1: cannot parse camera"):
        read_cameras(p)


def test_truncated_binary_names_file(tmp_path):
    write_cameras_binary({1: ColmapCamera(1, "PINHOLE", 8, 6, (7.0, 7.0, 4.0, 3.0))}, tmp_path / "cameras.bin")
    data = (tmp_path / "cameras.bin").read_bytes()
    (tmp_path / "cameras.bin").write_bytes(data[:-5])
    with pytest.raises(ValueError, match=r"cameras\.bin: file truncated .* params of camera 1"):
        read_cameras(tmp_path / "cameras.bin")
    bad = struct.pack("<Q", 1) + struct.pack("<iiQQ", 1, 99, 8, 6)
    (tmp_path / "cameras.bin").write_bytes(bad)
    with pytest.raises(ValueError, match="unknown COLMAP camera model id 99"):
        read_cameras(tmp_path / "cameras.bin")


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a COLMAP model"):
        read_model(tmp_path)
    assert find_model_dir(tmp_path) is None
    write_cameras_text({}, tmp_path / "cameras.txt")
    (tmp_path / "sparse" / "0").mkdir(parents=True)
    write_model(ColmapModel({}, {}, None), tmp_path / "sparse" / "0", ext=".txt")
    assert find_model_dir(tmp_path) == tmp_path / "sparse" / "0"


@pytest.mark.skipif(not FERN_SPARSE.is_dir(), reason="shared fern data not available")
def test_fern_sparse_model():
    cams = read_cameras(FERN_SPARSE / "cameras.bin")
    assert list(cams) == [1]
    cam = cams[1]
    assert (cam.model, cam.width, cam.height) == ("SIMPLE_RADIAL", 4032, 3024)
    K, dist = camera_intrinsics(cam)
    assert K[0, 2] == 2016.0 and K[1, 2] == 1512.0 and dist[0] != 0
    pts = read_points3d(FERN_SPARSE / "points3D.bin")
    assert len(pts) == 10091
    assert pts.xyz.shape == (10091, 3) and pts.rgb.dtype == np.uint8
    assert int(pts.track_lengths.sum()) == pts.track_image_ids.shape[0]
    assert pts.track_lengths.min() >= 2  # every triangulated point is seen at least twice
    assert set(np.unique(pts.track_image_ids).tolist()) <= set(range(1, 21))  # 20 images


# ----------------------------------------------------------------------------- validation on read


def test_implausible_cameras_are_refused_with_file_and_line(tmp_path):
    p = tmp_path / "cameras.txt"
    for line, message in [
        ("1 PINHOLE 8 6 nan 7 4 3", r"cameras\.txt, line 1: camera 1 params: 1 non-finite"),
        ("1 PINHOLE 8 6 -7 7 4 3", r"cameras\.txt, line 1: camera 1 \(PINHOLE\): focal length fx: must be > 0"),
        ("1 SIMPLE_RADIAL 8 6 7 400 3 0", r"line 1: camera 1 \(SIMPLE_RADIAL\): principal point cx \(image width 8\): must be <= 16"),
        ("1 PINHOLE 0 6 7 7 4 3", r"line 1: camera WIDTH must be in \[1, "),
        ("1 PINHOLE 8 6 7 7 4 3\n1 PINHOLE 8 6 7 7 4 3", r"line 2: camera id 1 appears twice"),
    ]:
        p.write_text(line + "\n")
        with pytest.raises(ValueError, match=message):
            read_cameras(p)


def test_images_text_refuses_bad_poses(tmp_path):
    p = tmp_path / "images.txt"
    for pose, message in [
        ("0 0 0 0 0 0 1", r"line 2: image 7: quaternion \(QW QX QY QZ\) is zero"),
        ("1 0 0 nan 0 0 1", r"line 2: image 7: quaternion \(QW QX QY QZ\): 1 non-finite"),
        ("1 0 0 0 0 1e300 1", r"line 2: image 7: translation \(TX TY TZ\): 1 value\(s\) beyond \+-1e\+06"),
    ]:
        p.write_text(f"# header\n7 {pose} 1 a.png\n\n")
        with pytest.raises(ValueError, match=r"images\.txt, " + message):
            read_images(p)


def test_binary_counts_are_checked_against_the_file_size(tmp_path):
    """A header declaring 2^40 records is refused before anything of that size is allocated."""
    write_model(random_model(), tmp_path, ext=".bin")
    for stem, what in (("cameras", "cameras"), ("images", "images"), ("points3D", "points")):
        path = tmp_path / f"{stem}.bin"
        data = path.read_bytes()
        path.write_bytes(struct.pack("<Q", 2**40) + data[8:])
        with pytest.raises(ValueError, match=rf"{stem}\.bin: declares 1099511627776 {what} .*truncated or corrupt"):
            read_model(tmp_path) if stem != "points3D" else read_points3d(path)
        path.write_bytes(data)
    assert read_model(tmp_path) == random_model()


def test_dense_array_round_trip_and_layout(tmp_path):
    """COLMAP's dense array: header 'W&H&C&', then float32 channel by channel, row by row."""
    from langfield.io.colmap import read_dense_array, write_dense_array

    depth = np.arange(12, dtype=np.float32).reshape(3, 4)  # H=3, W=4
    write_dense_array(depth, tmp_path / "d.bin")
    raw = (tmp_path / "d.bin").read_bytes()
    assert raw.startswith(b"4&3&1&") and np.frombuffer(raw[6:], "<f4").tolist() == list(range(12))
    got = read_dense_array(tmp_path / "d.bin")
    assert got.shape == (3, 4, 1) and got.dtype == np.float32 and np.array_equal(got[..., 0], depth)
    normals = np.random.default_rng(0).normal(size=(5, 2, 3)).astype(np.float32)
    write_dense_array(normals, tmp_path / "n.bin")
    assert np.array_equal(read_dense_array(tmp_path / "n.bin"), normals)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"4&3&1&" + b"\0" * 44, r"needs 48 bytes after its 6-byte header, the file has 44"),
        (b"4&3&1&" + b"\0" * 52, r"needs 48 bytes .* the file has 52"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, r"not a COLMAP dense array"),
        (b"4&x&1&" + b"\0" * 48, r"not a COLMAP dense array \(header"),
        (b"0&3&1&", r"dense array header"),
        (b"4&3&7&" + b"\0" * 336, r"7 channels; expected 1 \(depth\) to 4"),
    ],
    ids=["truncated", "extra-bytes", "png", "header-text", "zero-width", "channels"],
)
def test_dense_array_refusals(tmp_path, content, match):
    from langfield.io.colmap import read_dense_array

    (tmp_path / "bad.bin").write_bytes(content)
    with pytest.raises(InputError, match=match):
        read_dense_array(tmp_path / "bad.bin")
