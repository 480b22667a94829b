"""Shared reader helpers (data/loading.py): resampling, splits, folders, JSON errors."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import langfield.data.loading as loading
from langfield._checks import InputError, TooLargeError
from langfield.data.loading import (
    check_downscale,
    check_unique,
    confine_path,
    downscaled_size,
    every_nth_split,
    image_memory_bytes,
    load_images,
    read_json,
    read_npy,
    resize_area,
    resize_image,
    resize_labels,
    resolve_image_folder,
)
from langfield.data.readers.transforms_json import load_transforms
from langfield.types import Cameras


def test_every_nth_split_llff_protocol():
    train, test = every_nth_split(20, 8)
    assert test == [0, 8, 16]
    assert len(train) == 17 and set(train).isdisjoint(test)
    assert sorted(train + test) == list(range(20))


@pytest.mark.parametrize("factor", [1, 2, 3, 2.5, 8, 0.5])
def test_downscaled_size_matches_cameras_rescaled(factor):
    cams = Cameras.create(torch.eye(4)[None], torch.tensor([[10.0, 0, 5], [0, 10, 4], [0, 0, 1]]), 37, 23)
    w, h = downscaled_size(37, 23, factor)
    r = cams.rescaled(factor)
    assert (w, h) == (int(r.widths[0]), int(r.heights[0]))


def test_resize_area_known_values():
    img = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    out = resize_area(img, 2, 2)  # integer factor: 2x2 block means
    np.testing.assert_allclose(out[..., 0], [[2.5, 4.5], [10.5, 12.5]])
    # non-integer factor 3 -> 2: output pixel 0 covers input [0, 1.5): weights 2/3, 1/3
    row = np.array([[0.0, 3.0, 6.0]], dtype=np.float32).reshape(1, 3, 1)
    out = resize_area(row, 2, 1)
    np.testing.assert_allclose(out[0, :, 0], [(0.0 * 1 + 3.0 * 0.5) / 1.5, (3.0 * 0.5 + 6.0 * 1) / 1.5], rtol=1e-6)


def test_resize_area_preserves_mean():
    rng = np.random.default_rng(0)
    img = rng.random((30, 50, 3)).astype(np.float32)
    out = resize_area(img, 20, 12)  # factor 2.5 both ways
    assert out.shape == (12, 20, 3)
    np.testing.assert_allclose(out.mean((0, 1)), img.mean((0, 1)), rtol=1e-5)


def test_resize_rgba_is_premultiplied():
    """Compositing the downscaled RGBA equals downscaling the composited image."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(8, 8, 4), dtype=np.uint8)
    img[:4, :, 3] = 0  # fully transparent half, with junk colour
    small = resize_image(img, 4, 4).astype(np.float64) / 255
    a = img[..., 3:] / 255.0
    comp = img[..., :3] / 255.0 * a + 1.0 * (1 - a)
    expected = comp.reshape(4, 2, 4, 2, 3).mean((1, 3))
    got = small[..., :3] * small[..., 3:] + (1 - small[..., 3:])
    np.testing.assert_allclose(got, expected, atol=2.5 / 255)


def test_resize_labels_nearest_keeps_ids():
    lab = np.array([[1, 1, 7, 7], [1, 1, 7, 7], [3, 3, 9, 9], [3, 3, 9, 9]])
    out = resize_labels(lab, 2, 2)
    assert out.tolist() == [[1, 7], [3, 9]]
    out = resize_labels(lab, 3, 3)
    assert set(np.unique(out)) <= {1, 3, 7, 9}


def test_load_images_sizes_and_mismatch(tmp_path):
    rng = np.random.default_rng(2)
    for i in range(3):
        iio.imwrite(tmp_path / f"{i}.png", rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    loaded = load_images([tmp_path / f"{i}.png" for i in range(3)], 2, progress=False)
    assert loaded.images.shape == (3, 3, 4, 3) and loaded.images.dtype == torch.uint8
    assert loaded.alphas is None
    assert loaded.source_sizes == [(8, 6)] * 3
    iio.imwrite(tmp_path / "odd.png", rng.integers(0, 256, (5, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"0\.png is 8x6 and .*odd\.png is 8x5"):
        load_images([tmp_path / "0.png", tmp_path / "odd.png"], source="split X")


def test_load_images_progress_bar_path(tmp_path):
    img = np.full((6, 8, 3), 17, np.uint8)
    paths = []
    for i in range(25):  # > 20: progress bar and thread pool
        paths.append(tmp_path / f"{i:02d}.png")
        iio.imwrite(paths[-1], img)
    loaded = load_images(paths, 1)
    assert loaded.images.shape == (25, 6, 8, 3)
    assert int(loaded.images.float().mean()) == 17


def test_resolve_image_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images_4").mkdir()
    assert resolve_image_folder(tmp_path, 4) == (tmp_path / "images_4", 1.0)
    assert resolve_image_folder(tmp_path, 8) == (tmp_path / "images_4", 2.0)
    assert resolve_image_folder(tmp_path, 2) == (tmp_path / "images", 2.0)
    only8 = tmp_path / "only8"
    (only8 / "images_8").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="images_8"):
        resolve_image_folder(only8, 1)


def test_read_json_malformed_names_file_and_line(tmp_path):
    p = tmp_path / "transforms.json"
    p.write_text('{\n  "frames": [\n    {"file_path": "a",}\n  ]\n}\n')
    with pytest.raises(ValueError, match=r"transforms\.json: malformed JSON at line 3"):
        read_json(p)
    p.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        read_json(p)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="downscale"):
        load_images([tmp_path / "x.png"], 0)
    (tmp_path / "a").mkdir()
    with pytest.raises(ValueError, match="background"):
        load_transforms(tmp_path / "a", background="pink")


# ----------------------------------------------------------------------------- boundary checks


@pytest.mark.parametrize("good", [1, 1.0, 2, 2.5, 8, "4"])
def test_check_downscale_accepts_factors_from_one(good):
    assert check_downscale(good) == float(good)


@pytest.mark.parametrize(
    "bad, message",
    [
        (0, r"must be >= 1 .*got 0;"),
        (0.5, r"must be >= 1 .*would upsample"),
        (-1, r"must be >= 1"),
        (float("nan"), r"must be finite"),
        (float("inf"), r"must be finite"),
        ("x", r"expected a number >= 1, got 'x'"),
        (True, r"expected a number, got True"),
        (None, r"expected a number, got None"),
    ],
)
def test_check_downscale_refuses(bad, message):
    with pytest.raises(InputError, match=r"^--downscale: " + message):
        check_downscale(bad, "--downscale")


def test_confine_path(tmp_path):
    root = tmp_path / "scene"
    (root / "images").mkdir(parents=True)
    inside = root / "images" / "a.png"
    inside.write_bytes(b"x")
    (tmp_path / "secret.png").write_bytes(b"x")
    assert confine_path(inside, root, "w") == inside
    assert confine_path(root / "images" / ".." / "images" / "a.png", root, "w").name == "a.png"
    for escape in (root / ".." / "secret.png", tmp_path / "secret.png"):
        with pytest.raises(InputError, match=r"^t\.json: frame 0: .*outside the dataset folder .*scene"):
            confine_path(escape, root, "t.json: frame 0")
        assert confine_path(escape, root, "w", allow_outside=True) == escape
    (root / "images" / "link.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(InputError, match=r"link\.png resolves to .*secret\.png, outside"):
        confine_path(root / "images" / "link.png", root, "w")
    (tmp_path / "alias").symlink_to(root)  # a dataset reached through a symlinked folder is fine
    assert confine_path(tmp_path / "alias" / "images" / "a.png", tmp_path / "alias", "w").name == "a.png"


def test_check_unique():
    check_unique(["a", "b"], "w")
    with pytest.raises(InputError, match=r"^w: file_path 'a' appears twice \(entries 0 and 2\)"):
        check_unique(["a", "b", "a"], "w")


def test_read_npy_checks_the_header_before_loading(tmp_path, monkeypatch):
    good = tmp_path / "good.npy"
    np.save(good, np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(read_npy(good), np.arange(6.0).reshape(2, 3))
    huge = tmp_path / "huge.npy"
    with open(huge, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (2**40, 17)})
        f.write(bytes(64))

    def no_load(*args, **kwargs):
        raise AssertionError("np.load called before the header was checked")

    monkeypatch.setattr(np, "load", no_load)
    with pytest.raises(InputError, match=r"huge\.npy: header declares shape \(1099511627776, 17\) \(136\.0 TiB\)"):
        read_npy(huge)
    monkeypatch.undo()
    obj = np.empty(2, dtype=object)
    np.save(tmp_path / "obj.npy", obj, allow_pickle=True)
    with pytest.raises(InputError, match=r"obj\.npy: holds Python objects \(a pickle\)"):
        read_npy(tmp_path / "obj.npy")


def test_image_memory_estimate_known_value():
    # stored: 2 images * 4 * 3 px * 8 B; in flight: 1 worker * 8 * 6 px * (4 + 16 resampling) B
    assert image_memory_bytes(2, (8, 6), (4, 3), workers=1) == 2 * 12 * 8 + 48 * 20
    # same size: no resampling buffers; semantics add 16 B/px stored and 8 B/px in flight
    assert image_memory_bytes(1, (8, 6), (8, 6), workers=2, semantics=True) == 48 * 24 + 2 * 48 * 12


def test_load_images_checks_memory_before_decoding(tmp_path, monkeypatch):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        iio.imwrite(paths[-1], np.zeros((24, 32, 3), np.uint8))
    def no_decode(path):
        raise AssertionError("decoded before the memory check")

    monkeypatch.setattr(loading, "read_image", no_decode)
    need = image_memory_bytes(3, (32, 24), (32, 24), workers=1)
    monkeypatch.setenv("LANGFIELD_MEMORY_LIMIT_BYTES", str(need))  # 90% of it is available: too little
    with pytest.raises(TooLargeError, match=r"^batch: 3 images of 32x24 \(stored at 32x24\): needs about"):
        load_images(paths, 1.0, source="batch", num_workers=1)
