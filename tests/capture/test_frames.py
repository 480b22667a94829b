"""Capture inputs (langfield.capture.frames): sharpness, per-window selection on a real (tiny) video
written with imageio-ffmpeg, photo folders, and the errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from langfield._checks import InputError
from langfield.capture.frames import extract_video_frames, laplacian_variance, list_photos, select_sharpest
from langfield.io.images import read_image, write_image


def _texture(seed=0, h=96, w=128):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(h // 8, w // 8, 3)).astype(np.float64)
    return np.kron(small, np.ones((8, 8, 1)))  # 8x8 blocks: strong edges


def _blur(img, k=9):
    out = img.copy()
    for axis in (0, 1):
        out = sum(np.roll(out, s, axis=axis) for s in range(-(k // 2), k // 2 + 1)) / k
    return out


def test_laplacian_variance_orders_sharp_above_blurred():
    sharp = _texture()
    assert laplacian_variance(sharp) > 5 * laplacian_variance(_blur(sharp))
    assert laplacian_variance(np.full((10, 10), 7.0)) == 0.0
    with pytest.raises(InputError, match="H, W >= 3"):
        laplacian_variance(np.zeros((2, 5)))


def test_select_sharpest_takes_one_frame_per_window():
    scores = [1, 9, 2, 3, 3, 8, 7, 0, 1, 2]
    assert select_sharpest(scores, 5) == [1, 3, 5, 6, 9]  # windows of 2; a tie keeps the earlier frame
    assert select_sharpest(scores, 2) == [1, 5]
    assert select_sharpest(scores, 20) == list(range(10))
    with pytest.raises(InputError, match="num_frames"):
        select_sharpest(scores, 0)


def test_video_frames_skip_the_blurred_ones(tmp_path):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    sharp_at = [1, 3, 8, 10]  # one sharp frame in each window of 3 frames
    frames = []
    for i in range(12):
        img = _texture(seed=i)
        frames.append(img if i in sharp_at else _blur(img))
    path = tmp_path / "walk.mp4"
    writer = imageio_ffmpeg.write_frames(str(path), (128, 96), quality=10, macro_block_size=16)
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f.astype(np.uint8)))
    writer.close()
    seen = []
    vf = extract_video_frames(path, tmp_path / "images", 4, on_frame=lambda phase, i: seen.append(phase))
    assert vf.num_decoded == 12
    assert vf.frame_indices == sharp_at
    assert [p.name for p in vf.paths] == [f"frame_{i:06d}.png" for i in sharp_at]
    assert read_image(vf.paths[0]).shape == (96, 128, 3)
    assert seen.count("score") == 12 and seen.count("write") == 4


def test_unreadable_video_and_photo_folders_give_clear_errors(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 10)
    with pytest.raises(InputError, match="broken.mp4: ffmpeg cannot read this video"):
        extract_video_frames(bad, tmp_path / "out", 5)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"empty: no images .* \(it is empty\)"):
        list_photos(empty)
    (empty / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="holds e.g. notes.txt"):
        list_photos(empty)
    photos = tmp_path / "photos"
    write_image(photos / "b.JPG", np.zeros((8, 10, 3), np.uint8))
    write_image(photos / "a.png", np.zeros((8, 10, 3), np.uint8))
    assert [p.name for p in list_photos(photos)] == ["a.png", "b.JPG"]
    write_image(photos / "c.png", np.zeros((9, 10, 3), np.uint8))
    with pytest.raises(InputError, match="different sizes.*c.png is 10x9"):
        list_photos(photos)
