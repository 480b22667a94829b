"""read_image / read_image_size / read_label_map: every Pillow mode, written here with Pillow."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from langfield._checks import InputError
from langfield.io.images import read_image, read_image_size, read_label_map


def _ramp(h: int = 4, w: int = 6) -> np.ndarray:
    """``uint8 [h, w]`` with distinct values."""
    return (np.arange(h * w, dtype=np.uint8) * 7).reshape(h, w)


def _write_png16(path, values: np.ndarray) -> None:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit colour): grey, grey+alpha, RGB or RGBA."""
    h, w = values.shape[:2]
    channels = 1 if values.ndim == 2 else values.shape[2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# ----------------------------------------------------------------------------- read_image: modes


def test_rgb_and_rgba_are_read_as_stored(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    for name, expected in (("rgb.png", rgb), ("rgba.png", rgba)):
        got = read_image(tmp_path / name)
        assert got.dtype == np.uint8 and got.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(got, expected)


def test_grey_is_replicated_to_rgb(tmp_path):
    grey = _ramp()
    Image.fromarray(grey, "L").save(tmp_path / "l.png")
    got = read_image(tmp_path / "l.png")
    assert got.shape == (4, 6, 3)
    np.testing.assert_array_equal(got, np.repeat(grey[:, :, None], 3, -1))


def test_grey_alpha_becomes_rgba(tmp_path):
    grey, alpha = _ramp(), 255 - _ramp()
    Image.fromarray(np.stack([grey, alpha], -1), "LA").save(tmp_path / "la.png")
    got = read_image(tmp_path / "la.png")
    assert got.shape == (4, 6, 4)
    np.testing.assert_array_equal(got[..., :3], np.repeat(grey[:, :, None], 3, -1))
    np.testing.assert_array_equal(got[..., 3], alpha)


def test_bilevel_is_black_and_white_rgb(tmp_path):
    bits = np.zeros((4, 6), bool)
    bits[1, 2] = True
    Image.fromarray(bits).save(tmp_path / "b.png")
    got = read_image(tmp_path / "b.png")
    assert got.shape == (4, 6, 3)
    assert got[1, 2].tolist() == [255, 255, 255] and int(got.sum()) == 3 * 255


def _palette_image(indices: np.ndarray, colours) -> Image.Image:
    image = Image.fromarray(indices, "P")
    image.putpalette([c for rgb in colours for c in rgb])
    return image


def test_palette_without_transparency_is_looked_up_to_rgb(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    indices = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    _palette_image(indices, colours).save(tmp_path / "p.png")
    got = read_image(tmp_path / "p.png")
    assert got.shape == (2, 3, 3)
    np.testing.assert_array_equal(got, np.array(colours, np.uint8)[indices])


def test_palette_with_transparency_becomes_rgba(tmp_path):
    """A palette PNG whose index 1 is transparent (tRNS chunk) keeps that transparency."""
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    indices = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    _palette_image(indices, colours).save(tmp_path / "p.png", transparency=1)
    got = read_image(tmp_path / "p.png")
    assert got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got[..., 3], np.where(indices == 1, 0, 255))
    opaque = indices != 1
    np.testing.assert_array_equal(got[..., :3][opaque], np.array(colours, np.uint8)[indices][opaque])


def test_palette_with_partial_alpha(tmp_path):
    """Per-entry palette alpha (tRNS with one value per entry) is read, not just on/off."""
    indices = np.array([[0, 1], [1, 0]], np.uint8)
    _palette_image(indices, [(10, 20, 30), (200, 100, 50)]).save(tmp_path / "p.png", transparency=bytes([255, 128]))
    got = read_image(tmp_path / "p.png")
    assert got.shape == (2, 2, 4)
    assert got[0, 1].tolist() == [200, 100, 50, 128] and got[0, 0].tolist() == [10, 20, 30, 255]


def test_rgb_with_transparent_colour_becomes_rgba(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (1, 2, 3)
    rgb[1, 1] = (9, 9, 9)
    Image.fromarray(rgb).save(tmp_path / "t.png", transparency=(1, 2, 3))
    got = read_image(tmp_path / "t.png")
    assert got.shape == (2, 2, 4)
    assert got[0, 0, 3] == 0 and got[1, 1].tolist() == [9, 9, 9, 255]


def test_cmyk_jpeg_reads_as_rgb(tmp_path):
    """A CMYK JPEG of a red image reads back red RGB (not 4 channels with K as alpha)."""
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    got = read_image(tmp_path / "cmyk.jpg")
    assert got.shape == (16, 16, 3)
    r, g, b = (got[..., c].astype(int) for c in range(3))
    assert r.min() > 230 and g.max() < 25 and b.max() < 25


def test_sixteen_bit_grey_is_scaled_to_eight_bits(tmp_path):
    values = np.array([[0, 257 * 100, 65535], [40000, 128, 129]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    got = read_image(tmp_path / "g16.png")
    assert got.shape == (2, 3, 3)
    expected = np.round(values / 257.0).astype(np.uint8)  # 40000 -> 156, 128 -> 0, 129 -> 1
    np.testing.assert_array_equal(got[..., 0], expected)
    np.testing.assert_array_equal(got[..., 2], expected)


def test_sixteen_bit_colour_png_is_within_one_of_rounding(tmp_path):
    values = np.zeros((2, 3, 3), np.uint16)
    values[..., 0], values[..., 1], values[..., 2] = 40000, 300, 65535
    _write_png16(tmp_path / "rgb16.png", values)
    got = read_image(tmp_path / "rgb16.png")
    assert got.shape == (2, 3, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - np.round(values / 257.0)).max() <= 1


def test_int32_and_float_images(tmp_path):
    Image.fromarray(np.array([[0, 257, 65535]], np.int32)).save(tmp_path / "i.tif")
    assert read_image(tmp_path / "i.tif")[0, :, 0].tolist() == [0, 1, 255]
    Image.fromarray(np.array([[0, 70000]], np.int32)).save(tmp_path / "big.tif")
    with pytest.raises(ValueError, match=r"big\.tif.*\[0, 70000\]"):
        read_image(tmp_path / "big.tif")
    Image.fromarray(np.array([[0.0, 0.5, 1.0, 2.0, -1.0]], np.float32)).save(tmp_path / "f.tif")
    got = read_image(tmp_path / "f.tif")
    assert got.shape == (1, 5, 3) and got[0, :, 1].tolist() == [0, 128, 255, 255, 0]


# ----------------------------------------------------------------------------- read_image: errors


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="adir: is a directory"):
        (tmp_path / "adir").mkdir()
        read_image(tmp_path / "adir")
    (tmp_path / "notes.png").write_text("this is not an image")
    with pytest.raises(ValueError, match=r"notes\.png: cannot decode image"):
        read_image(tmp_path / "notes.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.png: cannot decode image"):
        read_image(tmp_path / "cut.png")


def test_read_image_size_reads_headers(tmp_path):
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((9, 4, 3), np.uint8)).save(tmp_path / "b.jpg")
    assert read_image_size(tmp_path / "a.png") == (7, 5)
    assert read_image_size(tmp_path / "b.jpg") == (4, 9)
    (tmp_path / "junk.jpg").write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"junk\.jpg"):
        read_image_size(tmp_path / "junk.jpg")
    with pytest.raises(FileNotFoundError, match="none.png"):
        read_image_size(tmp_path / "none.png")


# ----------------------------------------------------------------------------- read_label_map


def test_label_maps_keep_ids(tmp_path):
    ids8 = np.array([[0, 3], [7, 255]], np.uint8)
    Image.fromarray(ids8, "L").save(tmp_path / "l.png")
    ids16 = np.array([[0, 300], [1000, 65535]], np.uint16)
    Image.fromarray(ids16).save(tmp_path / "i16.png")
    got8, got16 = read_label_map(tmp_path / "l.png"), read_label_map(tmp_path / "i16.png")
    assert got8.dtype == np.int64 and got8.tolist() == ids8.tolist()
    assert got16.tolist() == ids16.tolist()  # never scaled like read_image's 16-bit path


def test_palette_label_map_reads_indices_not_colours(tmp_path):
    indices = np.array([[0, 1, 2], [2, 2, 0]], np.uint8)
    _palette_image(indices, [(0, 0, 0), (128, 0, 0), (0, 128, 0)]).save(tmp_path / "voc.png")
    assert read_label_map(tmp_path / "voc.png").tolist() == indices.tolist()


def test_label_map_rejects_colour_images(tmp_path):
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match=r"rgb\.png: a label map must be a single-channel .* mode 'RGB'"):
        read_label_map(tmp_path / "rgb.png")
    with pytest.raises(FileNotFoundError, match="label map not found"):
        read_label_map(tmp_path / "nothing.png")


# ----------------------------------------------------------------------------- read_image: colour modes keep colours


def _red_orange() -> np.ndarray:
    """``[8, 8, 3]``: top half orange (255, 128, 0), bottom half pure red."""
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 0] = 255
    img[:4, :, 1] = 128
    return img


@pytest.mark.parametrize(
    "mode, suffix, tol",
    [
        ("CMYK", ".jpg", 8),
        ("CMYK", ".tif", 1),
        ("YCbCr", ".tif", 4),
        ("LAB", ".tif", 10),
        ("P", ".png", 0),
        ("P", ".gif", 0),
        ("P", ".bmp", 0),
    ],
)
def test_colour_modes_keep_their_colours(tmp_path, mode, suffix, tol):
    """Pure red stays red and orange stays orange whatever mode the file stores (CMYK is not RGBA)."""
    src = Image.fromarray(_red_orange())
    img = src.convert("P", palette=Image.Palette.ADAPTIVE, colors=4) if mode == "P" else src.convert(mode)
    img.save(tmp_path / f"c{suffix}")
    assert Image.open(tmp_path / f"c{suffix}").mode == mode
    got = read_image(tmp_path / f"c{suffix}")
    assert got.shape == (8, 8, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - _red_orange()).max() <= tol


def test_float_image_with_nan_is_refused(tmp_path):
    Image.fromarray(np.array([[0.25, np.nan]], np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match=r"f\.tif: float image \(mode 'F'\) has 1 NaN/inf pixel"):
        read_image(tmp_path / "f.tif")


def test_read_depth_image_keeps_the_raw_values(tmp_path):
    """Depth images come back as float32 values as stored: 16-bit millimetres stay millimetres (never
    scaled to 8 bits like read_image does), float TIFFs keep their fraction; colour is refused."""
    from langfield.io.images import read_depth_image

    mm = np.array([[0, 1, 1500], [65535, 300, 7]], dtype=np.uint16)
    Image.fromarray(mm).save(tmp_path / "mm.png")
    got = read_depth_image(tmp_path / "mm.png")
    assert got.dtype == np.float32 and got.tolist() == mm.astype(np.float32).tolist()
    metres = np.array([[0.0, 1.25], [3.5, 0.001]], dtype=np.float32)
    Image.fromarray(metres, mode="F").save(tmp_path / "m.tif")
    assert read_depth_image(tmp_path / "m.tif").tolist() == metres.tolist()
    Image.fromarray(np.array([[0, 200]], dtype=np.uint8)).save(tmp_path / "grey.png")
    assert read_depth_image(tmp_path / "grey.png").tolist() == [[0.0, 200.0]]
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(InputError, match=r"rgb\.png: a depth image must be a single-channel.*'RGB'"):
        read_depth_image(tmp_path / "rgb.png")
    with pytest.raises(FileNotFoundError, match=r"depth image not found: .*nowhere\.png"):
        read_depth_image(tmp_path / "nowhere.png")
