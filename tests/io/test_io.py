"""Tests for langfield.io: atomic writes, images, colormaps and video."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from langfield.io import (
    apply_colormap,
    atomic_save_torch,
    atomic_write,
    atomic_write_json,
    colorize_depth,
    colorize_normals,
    heatmap_overlay,
    read_image,
    side_by_side,
    to_uint8,
    write_image,
    write_video,
)


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if ".tmp" in p.name)


# ----------------------------------------------------------------------------- atomic


def test_atomic_write_replaces_and_cleans_up(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    with atomic_write(path, "w") as f:
        f.write("first")
    assert path.read_text() == "first"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(path, "w") as f:
            f.write("half-written")
            raise RuntimeError("boom")
    assert path.read_text() == "first"  # untouched
    assert _leftovers(path.parent) == []
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(path, "a"):
            pass


def test_atomic_write_json_nan_safe(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json({"psnr": float("nan"), "ssim": 0.5, "x": [float("inf"), 1], "t": torch.tensor(2.5),
                       "a": np.float32(-np.inf), "p": tmp_path}, path)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert text.startswith('{\n  "psnr": null')  # indent 2
    data = json.loads(text)
    assert data == {"psnr": None, "ssim": 0.5, "x": [None, 1], "t": 2.5, "a": None, "p": str(tmp_path)}
    with pytest.raises(TypeError, match="object"):
        atomic_write_json({"bad": object()}, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()


def test_atomic_save_torch(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save_torch({"w": torch.arange(5)}, path)
    assert torch.equal(torch.load(path)["w"], torch.arange(5))
    assert _leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- images


def test_to_uint8_rounding_and_clamping():
    x = torch.tensor([[[0.0], [1.0], [0.5], [-0.2], [1.7], [float("nan")], [2.0 / 255 - 0.001]]])
    out = to_uint8(x)
    assert out.dtype == np.uint8 and out.shape == (1, 7, 1)
    assert out[0, :, 0].tolist() == [0, 255, 128, 0, 255, 0, 2]
    u = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    assert np.array_equal(to_uint8(u), u)
    assert to_uint8(np.full((2, 3), 1.0)).shape == (2, 3, 1)
    with pytest.raises(ValueError, match="img"):
        to_uint8(torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="floating point"):
        to_uint8(torch.zeros(2, 2, 3, dtype=torch.int32))


def test_png_round_trip_is_exact(tmp_path):
    g = torch.Generator().manual_seed(0)
    img = torch.rand(9, 11, 3, generator=g)
    path = write_image(tmp_path / "a.png", img)
    back = read_image(path)
    assert back.shape == (9, 11, 3) and back.dtype == np.uint8
    assert np.array_equal(back, to_uint8(img))
    grey = torch.rand(5, 4, 1, generator=g)
    write_image(tmp_path / "g.png", grey)
    back = read_image(tmp_path / "g.png")
    assert back.shape == (5, 4, 3)  # written single-channel; read_image always returns RGB(A)
    assert np.array_equal(back, np.repeat(to_uint8(grey), 3, axis=-1))
    assert _leftovers(tmp_path) == []


def test_jpeg_round_trip_is_close(tmp_path):
    img = np.zeros((16, 16, 3), dtype=np.uint8)
    img[:, :8] = (200, 30, 60)
    write_image(tmp_path / "a.JPEG", img)
    back = read_image(tmp_path / "a.JPEG")
    assert back.shape == (16, 16, 3)
    assert np.abs(back[4, 3].astype(int) - [200, 30, 60]).max() <= 6
    with pytest.raises(ValueError, match="alpha"):
        write_image(tmp_path / "rgba.jpg", np.zeros((4, 4, 4), dtype=np.uint8))


def test_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="suffix|end in"):
        write_image(tmp_path / "x.bmp", torch.zeros(2, 2, 3))
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="junk.png"):
        read_image(tmp_path / "junk.png")


def test_side_by_side_layout():
    a = torch.full((4, 3, 3), 0.2)
    b = np.full((4, 5, 1), 255, dtype=np.uint8)  # grey uint8 -> RGB 1.0
    c = torch.zeros(4, 2, 4)  # alpha dropped
    out = side_by_side(a, b, c, separator=2, separator_value=0.5)
    assert out.shape == (4, 3 + 2 + 5 + 2 + 2, 3)
    assert torch.allclose(out[:, :3], torch.tensor(0.2))
    assert torch.allclose(out[:, 3:5], torch.tensor(0.5))
    assert torch.allclose(out[:, 5:10], torch.tensor(1.0))
    assert torch.allclose(out[:, 12:], torch.tensor(0.0))
    assert side_by_side(a, a, separator=0).shape == (4, 6, 3)
    labelled = side_by_side(torch.zeros(20, 40, 3), torch.zeros(20, 40, 3), labels=["render", "gt"])
    assert labelled.shape == (34, 82, 3)
    assert labelled[:14].max() > 0.9  # white text in the header strip
    assert torch.equal(labelled[14:, :40], torch.zeros(20, 40, 3))
    with pytest.raises(ValueError, match="height"):
        side_by_side(a, torch.zeros(5, 3, 3))
    with pytest.raises(ValueError, match="labels"):
        side_by_side(a, a, labels=["one"])


# ----------------------------------------------------------------------------- colormaps

# matplotlib's tables at t = 0, 128/255, 1 (values from matplotlib._cm_listed).
_MPL = {
    "viridis": [(0.267004, 0.004874, 0.329415), (0.127568, 0.566949, 0.550556), (0.993248, 0.906157, 0.143936)],
    "inferno": [(0.001462, 0.000466, 0.013866), (0.735683, 0.215906, 0.330245), (0.988362, 0.998364, 0.644924)],
}


@pytest.mark.parametrize("cmap", ["viridis", "inferno"])
def test_colormap_matches_matplotlib_tables(cmap):
    x = torch.tensor([[0.0, 128.0 / 255.0, 1.0]])
    out = apply_colormap(x, cmap=cmap, vmin=0.0, vmax=1.0)
    assert out.shape == (1, 3, 3)
    np.testing.assert_allclose(out[0].numpy(), np.array(_MPL[cmap]), atol=0.02)


def test_turbo_and_gray():
    x = torch.tensor([[0.0, 0.5, 1.0]])
    turbo = apply_colormap(x, "turbo", vmin=0.0, vmax=1.0)[0]
    # Turbo table ends: (0.190, 0.072, 0.232) and (0.480, 0.016, 0.011); the polynomial is darker there.
    np.testing.assert_allclose(turbo[0].numpy(), [0.190, 0.072, 0.232], atol=0.15)
    np.testing.assert_allclose(turbo[2].numpy(), [0.480, 0.016, 0.011], atol=0.1)
    assert turbo[1, 1] > 0.95 and turbo[1, 1] > turbo[1, 0] > turbo[1, 2]  # green in the middle
    gray = apply_colormap(torch.tensor([[2.0, 4.0, 6.0]]), "gray")  # auto range [2, 6]
    assert torch.allclose(gray[0, :, 0], torch.tensor([0.0, 0.5, 1.0]))
    assert torch.equal(gray[..., 0], gray[..., 2])


def test_apply_colormap_mask_and_errors():
    x = torch.tensor([[0.0, 100.0], [1.0, float("nan")]])
    mask = torch.tensor([[True, False], [True, True]])
    out = apply_colormap(x[..., None], "gray", mask=mask)
    # Range comes from unmasked finite pixels only: [0, 1].
    assert out[1, 0, 0].item() == pytest.approx(1.0)
    assert torch.equal(out[0, 1], torch.zeros(3)) and torch.equal(out[1, 1], torch.zeros(3))
    with pytest.raises(ValueError, match="cmap"):
        apply_colormap(x, "jet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="x must be"):
        apply_colormap(torch.zeros(2, 2, 3))
    with pytest.raises(ValueError, match="vmax"):
        apply_colormap(x, vmin=1.0, vmax=0.0)


def test_colorize_depth_robust_range_and_background():
    depth = torch.linspace(1.0, 2.0, 100).reshape(10, 10, 1).clone()
    depth[0, 0] = 1000.0  # a floater must not flatten the range
    acc = torch.ones(10, 10, 1)
    acc[9, 9] = 0.0
    out = colorize_depth(depth, acc, cmap="gray", background="white")
    assert out.shape == (10, 10, 3)
    assert torch.equal(out[9, 9], torch.ones(3))  # background
    assert out[5, 0, 0].item() == pytest.approx(0.5, abs=0.03)  # middle depth -> middle grey
    assert out[0, 0, 0].item() == 1.0  # floater clamped to far
    explicit = colorize_depth(depth, near=1.0, far=3.0, cmap="gray")
    assert explicit[5, 0, 0].item() == pytest.approx((depth[5, 0, 0].item() - 1.0) / 2.0, abs=1e-6)
    assert torch.equal(colorize_depth(depth, torch.zeros(10, 10, 1)), torch.zeros(10, 10, 3))
    with pytest.raises(ValueError, match="accumulation"):
        colorize_depth(depth, torch.ones(5, 5))


def test_colorize_normals_and_overlay():
    n = torch.tensor([[[1.0, 0.0, -1.0], [0.0, -1.0, 0.0]]])
    out = colorize_normals(n)
    assert torch.allclose(out, torch.tensor([[[1.0, 0.5, 0.0], [0.5, 0.0, 0.5]]]))
    out = colorize_normals(n, accumulation=torch.tensor([[1.0, 0.0]]))
    assert torch.equal(out[0, 1], torch.zeros(3))
    with pytest.raises(ValueError, match="normals"):
        colorize_normals(torch.zeros(2, 2, 2))
    img = torch.full((2, 2, 3), 0.5)
    score = torch.tensor([[0.0, 1.0], [0.5, 0.25]])
    over = heatmap_overlay(img, score, alpha=0.6, cmap="gray")
    assert torch.allclose(over[..., 0], 0.4 * 0.5 + 0.6 * score)
    assert torch.allclose(heatmap_overlay(img, score, alpha=0.0), img)
    with pytest.raises(ValueError, match="score"):
        heatmap_overlay(img, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="alpha"):
        heatmap_overlay(img, score, alpha=1.5)


# ----------------------------------------------------------------------------- video


def _frames(n, h, w):
    for i in range(n):
        yield torch.full((h, w, 3), i / max(n - 1, 1))


def _read_mp4(path):
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    frames = [np.frombuffer(f, dtype=np.uint8).reshape(meta["size"][1], meta["size"][0], 3) for f in reader]
    return meta, frames


def test_write_mp4_streams_pads_and_is_atomic(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    path = tmp_path / "vid" / "orbit.mp4"
    n = write_video(path, _frames(6, 15, 17), fps=12)
    assert n == 6
    assert _leftovers(path.parent) == []
    meta, frames = _read_mp4(path)
    assert tuple(meta["size"]) == (18, 16)  # odd 17x15 padded to even
    assert meta["fps"] == pytest.approx(12.0)
    assert len(frames) == 6
    assert abs(int(frames[0].mean()) - 0) <= 3 and abs(int(frames[-1].mean()) - 255) <= 3
    assert abs(float(frames[3].mean()) - 255 * 3 / 5) <= 4


def test_write_video_errors_leave_nothing(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    path = tmp_path / "bad.mp4"

    def mismatched():
        yield np.zeros((8, 8, 3), dtype=np.uint8)
        yield np.zeros((8, 10, 3), dtype=np.uint8)

    with pytest.raises(ValueError, match=r"frames\[1\]"):
        write_video(path, mismatched())
    with pytest.raises(ValueError, match="at least one frame"):
        write_video(path, [])
    with pytest.raises(ValueError, match="end in"):
        write_video(tmp_path / "x.avi", _frames(2, 4, 4))
    with pytest.raises(ValueError, match="fps"):
        write_video(path, _frames(2, 4, 4), fps=0)
    assert not path.exists() and _leftovers(tmp_path) == []


def test_missing_ffmpeg_message(tmp_path, monkeypatch):
    import imageio_ffmpeg

    def no_ffmpeg():
        raise RuntimeError("No ffmpeg exe could be found")

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", no_ffmpeg)
    with pytest.raises(RuntimeError, match="pip install imageio-ffmpeg"):
        write_video(tmp_path / "a.mp4", _frames(2, 4, 4))
    assert list(tmp_path.iterdir()) == []


def test_write_gif(tmp_path):
    from PIL import Image

    path = tmp_path / "anim.gif"
    assert write_video(path, _frames(4, 6, 7), fps=10) == 4
    with Image.open(path) as im:
        assert im.n_frames == 4
        assert im.size == (7, 6)  # GIF needs no even padding
        assert im.info["duration"] == 100
        im.seek(3)
        assert np.asarray(im.convert("RGB")).mean() == pytest.approx(255, abs=2)
    assert _leftovers(tmp_path) == []
