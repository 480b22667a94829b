"""Bad files handed straight to the file readers of the Python API: images, label maps, point and
Gaussian PLYs, and image batches too large for memory. Each must be refused naming the file.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any, Callable, List

import numpy as np
import torch
from PIL import Image

from langfield._checks import InputError, TooLargeError
from langfield.data.loading import load_images
from langfield.io.colmap import read_cameras, read_images, read_model, read_points3d
from langfield.io.gaussian_ply import read_gaussian_ply, write_gaussian_ply
from langfield.io.images import read_image, read_image_size, read_label_map
from langfield.io.points_ply import read_points_ply
from tests.robustness import reader_scenes as rs
from tests.robustness.framework import Case, with_memory_limit

CASES: List[Case] = []


def _add(area: str, name: str, run: Callable[[Path], Any], error=InputError, match: str = ".") -> None:
    CASES.append(Case(f"readers/{area}/{name}", run, error, match))


def _file(name: str, data: bytes, reader: Callable[[Path], Any]):
    def run(tmp: Path) -> None:
        (tmp / name).write_bytes(data)
        reader(tmp / name)

    return run


def _pil(name: str, make: Callable[[], Image.Image], reader: Callable[[Path], Any] = read_image, **save: Any):
    def run(tmp: Path) -> None:
        make().save(tmp / name, **save)
        reader(tmp / name)

    return run


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header(width: int, height: int, extra: bytes = b"") -> bytes:
    """A PNG signature and IHDR declaring ``width x height`` RGB, then ``extra`` (no pixel data)."""
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + extra


#: Well-formed chunks after the header: an IDAT with a few compressed zero bytes, and IEND.
_TAIL = _chunk(b"IDAT", zlib.compress(bytes(64))) + _chunk(b"IEND", b"")


def _valid_png(tmp: Path) -> bytes:
    return rs.png(tmp / "valid.png", size=(32, 24)).read_bytes()


# ----------------------------------------------------------------------------- images

_add("image", "zero-bytes", _file("a.png", b"", read_image), match=r"a\.png: cannot decode image")
_add("image", "missing", lambda tmp: read_image(tmp / "nope.png"), error=FileNotFoundError, match=r"image not found: .*nope\.png")
_add("image", "directory", lambda tmp: (tmp / "d.png").mkdir() or read_image(tmp / "d.png"), match=r"d\.png: is a directory where a file is expected")
_add("image", "garbage", _file("g.jpg", bytes(range(256)), read_image), match=r"g\.jpg: cannot decode image")
_add("image", "html-saved-as-png", _file("page.png", b"<html><body>404</body></html>", read_image), match=r"page\.png: cannot decode image")


def _truncated(suffix: str, keep: float):
    def run(tmp: Path) -> None:
        p = rs.png(tmp / f"full{suffix}", size=(64, 48))
        data = p.read_bytes()
        (tmp / f"cut{suffix}").write_bytes(data[: int(len(data) * keep)])
        read_image(tmp / f"cut{suffix}")

    return run


_add("image", "truncated-png", _truncated(".png", 0.5), match=r"cut\.png: cannot decode image")
_add("image", "truncated-jpeg", _truncated(".jpg", 0.5), match=r"cut\.jpg: cannot decode image")
_add("image", "truncated-bmp", _truncated(".bmp", 0.5), match=r"cut\.bmp: cannot decode image")
_add("image", "png-header-only", _file("h.png", _png_header(8, 6), read_image), match=r"h\.png: cannot decode image")
def _bad_crc(tmp: Path) -> None:
    data = bytearray(_valid_png(tmp))
    data[29:33] = b"\x00\x00\x00\x00"  # the IHDR chunk's CRC
    (tmp / "c.png").write_bytes(bytes(data))
    read_image(tmp / "c.png")


_add("image", "png-bad-crc", _bad_crc, match=r"c\.png: cannot decode image")
_add(
    "image",
    "decompression-bomb-header",
    _file("bomb.png", _png_header(50_000, 50_000, _TAIL), read_image),
    match=r"bomb\.png: cannot decode image \(DecompressionBombError",
)
_add(
    "image",
    "int32-negative",
    _pil("neg.tif", lambda: Image.fromarray(np.full((4, 4), -5, np.int32))),
    match=r"neg\.tif: integer image \(mode 'I'\) has values in \[-5, -5\]",
)
_add(
    "image",
    "int32-above-16-bit",
    _pil("big.tif", lambda: Image.fromarray(np.full((4, 4), 70_000, np.int32))),
    match=r"big\.tif: integer image \(mode 'I'\) has values in \[70000, 70000\]",
)
_add(
    "image",
    "float-nan-pixels",
    _pil("nan.tif", lambda: Image.fromarray(np.array([[0.5, np.nan], [np.inf, 0.1]], np.float32))),
    match=r"nan\.tif: float image \(mode 'F'\) has 2 NaN/inf pixel\(s\)",
)
_add("image", "size-of-text-file", _file("t.png", b"hello", read_image_size), match=r"t\.png: cannot read image header")
_add(
    "label-map",
    "rgb",
    _pil("lab.png", lambda: Image.new("RGB", (4, 4), (1, 2, 3)), read_label_map),
    match=r"lab\.png: a label map must be a single-channel image .*got mode 'RGB'",
)
_add(
    "label-map",
    "float",
    _pil("lab.tif", lambda: Image.fromarray(np.ones((4, 4), np.float32)), read_label_map),
    match=r"lab\.tif: a label map must be a single-channel image .*got mode 'F'",
)
_add(
    "label-map",
    "grey-alpha",
    _pil("lab.png", lambda: Image.new("LA", (4, 4), (1, 255)), read_label_map),
    match=r"lab\.png: a label map must be .*got mode 'LA'",
)

# ----------------------------------------------------------------------------- load_images (a batch)


def _batch(tmp: Path, n: int = 4, size=(32, 24)) -> list:
    return [rs.png(tmp / f"im_{i}.png", size=size, seed=i) for i in range(n)]


_add(
    "load-images",
    "exceeds-memory",
    with_memory_limit(10_000, lambda tmp: load_images(_batch(tmp), 1.0, source="batch")),
    error=TooLargeError,
    match=r"batch: 4 images of 32x24 \(stored at 32x24\): needs about .* KiB, more than the .* of RAM available",
)
def _huge_headers(tmp: Path) -> None:
    for name in ("a.png", "b.png"):
        (tmp / name).write_bytes(_png_header(120_000, 120_000))
    load_images([tmp / "a.png", tmp / "b.png"], 1.0, source="batch")


_add("load-images", "headers-exceed-memory", _huge_headers, error=TooLargeError, match=r"batch: 2 images of 120000x120000 .*needs about .* GiB")
_add("load-images", "empty-list", lambda tmp: load_images([], 1.0, source="batch"), match=r"batch: no images to load")
_add("load-images", "downscale-below-one", lambda tmp: load_images(_batch(tmp, 1), 0.25, source="batch"), match=r"^downscale: must be >= 1")
_add(
    "load-images",
    "directory-in-list",
    lambda tmp: (tmp / "d").mkdir() or load_images([*_batch(tmp, 1), tmp / "d"], 1.0, source="batch"),
    match=r"batch: .*/d is a directory, expected an image file",
)
_add(
    "load-images",
    "label-count-mismatch",
    lambda tmp: load_images(_batch(tmp, 2), 1.0, semantic_paths=[tmp / "x.png"], source="batch"),
    match=r"batch: 1 label maps for 2 images",
)

# ----------------------------------------------------------------------------- point PLY


def _ply(header_lines: List[str], body: bytes) -> bytes:
    return ("\n".join(["ply", *header_lines, "end_header"]) + "\n").encode() + body


XYZ_BINARY = ["format binary_little_endian 1.0", "element vertex {n}", "property float x", "property float y", "property float z"]


def _xyz(n: int, body: bytes, fmt: str = "binary_little_endian") -> bytes:
    lines = [ln.format(n=n) for ln in XYZ_BINARY]
    lines[0] = f"format {fmt} 1.0"
    return _ply(lines, body)


def _points_ply(values: np.ndarray):
    def run(tmp: Path) -> None:
        (tmp / "pts.ply").write_bytes(_xyz(len(values), values.astype("<f4").tobytes()))
        read_points_ply(tmp / "pts.ply")

    return run


_add("points-ply", "vertex-count-10^12", _file("pts.ply", _xyz(10**12, bytes(12)), read_points_ply), match=r"pts\.ply: not a readable PLY file: element 'vertex' declares 1000000000000 rows")
_add("points-ply", "ascii-vertex-count-10^12", _file("pts.ply", _xyz(10**12, b"0 0 0\n", "ascii"), read_points_ply), match=r"pts\.ply: .*element 'vertex' declares 1000000000000 rows")
_add("points-ply", "vertex-count-off-by-one", _file("pts.ply", _xyz(3, bytes(24)), read_points_ply), match=r"pts\.ply: .*element 'vertex' declares 3 rows \(at least 36 bytes\) but only 24 bytes follow")
_add("points-ply", "garbage", _file("pts.ply", bytes(range(256)), read_points_ply), match=r"pts\.ply: not a readable PLY file \(it does not start with 'ply'\)")
_add("points-ply", "zero-bytes", _file("pts.ply", b"", read_points_ply), match=r"pts\.ply: not a readable PLY file")
_add("points-ply", "no-end-header", _file("pts.ply", b"ply\nformat ascii 1.0\nelement vertex 1\n", read_points_ply), match=r"pts\.ply: PLY header has no 'end_header' line")
_add("points-ply", "bad-header-line", _file("pts.ply", _ply(["format ascii 1.0", "element vertex many"], b""), read_points_ply), match=r"pts\.ply: PLY header line 3: cannot parse 'element vertex many'")
_add("points-ply", "unknown-property-type", _file("pts.ply", _ply(["format ascii 1.0", "element vertex 1", "property float128 x"], b"0\n"), read_points_ply), match=r"pts\.ply: PLY header line 4: cannot parse 'property float128 x'")
_add("points-ply", "no-format-line", _file("pts.ply", _ply(["element vertex 0"], b""), read_points_ply), match=r"pts\.ply: PLY header has no 'format' line")
_add("points-ply", "no-vertex-element", _file("pts.ply", _ply(["format ascii 1.0", "element face 0", "property list uchar int vertex_indices"], b""), read_points_ply), match=r"pts\.ply: no 'vertex' element")
_add("points-ply", "missing-z", _file("pts.ply", _ply(["format ascii 1.0", "element vertex 1", "property float x", "property float y"], b"1 2\n"), read_points_ply), match=r"pts\.ply: vertex properties \['z'\] missing")
_add("points-ply", "nan-position", _points_ply(np.array([[0, 0, 0], [np.nan, 1, 2]])), match=r"pts\.ply: vertex positions \(x, y, z\): 1 non-finite")
_add("points-ply", "position-1e30", _points_ply(np.array([[0, 0, 1e30]])), match=r"pts\.ply: vertex positions \(x, y, z\): 1 value\(s\) beyond \+-1e\+06")
_add("points-ply", "directory", lambda tmp: (tmp / "d.ply").mkdir() or read_points_ply(tmp / "d.ply"), match=r"d\.ply: is a directory where a file is expected")
_add("points-ply", "missing", lambda tmp: read_points_ply(tmp / "nope.ply"), error=FileNotFoundError, match=r"PLY file not found: .*nope\.ply")
_add("points-ply", "ascii-text-values", _file("pts.ply", _ply(["format ascii 1.0", "element vertex 1", "property float x", "property float y", "property float z"], b"a b c\n"), read_points_ply), match=r"pts\.ply: not a readable PLY file")


def _gaussian_ply(mutate: Callable[[bytes], bytes], n: int = 4, **tensors: Any):
    def run(tmp: Path) -> None:
        cloud = {
            "means": torch.zeros(n, 3),
            "scales": torch.zeros(n, 3),
            "quats": torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
            "opacities": torch.zeros(n),
            "sh0": torch.zeros(n, 1, 3),
            "shN": torch.zeros(n, 0, 3),
        }
        cloud.update(tensors)
        path = write_gaussian_ply(tmp / "splat.ply", cloud)
        path.write_bytes(mutate(path.read_bytes()))
        read_gaussian_ply(path)

    return run


def _count(n: int) -> Callable[[bytes], bytes]:
    return lambda data: data.replace(b"element vertex 4\n", f"element vertex {n}\n".encode(), 1)


_add("gaussian-ply", "vertex-count-2^40", _gaussian_ply(_count(2**40)), error=ValueError, match=r"splat\.ply: not a readable PLY file: element 'vertex' declares 1099511627776 rows")
_add("gaussian-ply", "vertex-count-5", _gaussian_ply(_count(5)), error=ValueError, match=r"splat\.ply: .*element 'vertex' declares 5 rows")
_add(
    "gaussian-ply",
    "means-1e30",
    _gaussian_ply(lambda d: d, means=torch.tensor([[0.0, 0.0, 1e30]] + [[0.0, 0.0, 0.0]] * 3)),
    match=r"splat\.ply: vertex positions \(x, y, z\): 1 value\(s\) beyond",
)

# ----------------------------------------------------------------------------- COLMAP files read on their own


def _colmap_file(stem: str, ext: str, data: bytes, reader: Callable[[Path], Any]):
    def run(tmp: Path) -> None:
        (tmp / f"{stem}{ext}").write_bytes(data)
        reader(tmp / f"{stem}{ext}")

    return run


_add("colmap-file", "cameras-directory", lambda tmp: (tmp / "cameras.bin").mkdir() or read_cameras(tmp / "cameras.bin"), match=r"cameras\.bin: is a directory where a file is expected")
_add("colmap-file", "images-missing", lambda tmp: read_images(tmp / "images.txt"), error=FileNotFoundError, match=r"COLMAP file not found: .*images\.txt")
_add("colmap-file", "points-count-only", _colmap_file("points3D", ".bin", struct.pack("<Q", 7), read_points3d), match=r"points3D\.bin: declares 7 points \(at least 357 bytes\) at byte 8, but only 0 bytes follow")
_add("colmap-file", "model-without-images", lambda tmp: (tmp / "cameras.txt").write_text("") or read_model(tmp), error=FileNotFoundError, match=r"not a COLMAP model: no images\.bin or images\.txt")
_add("colmap-file", "cameras-text-tab-garbage", _colmap_file("cameras", ".txt", b"1\tPINHOLE\t8\t6\t7\t7\t4\n", read_cameras), match=r"cameras\.txt, line 1: camera model PINHOLE needs 4 params, got 3")
_add("colmap-file", "points-text-huge-id", _colmap_file("points3D", ".txt", b"99999999999999999999 0 0 0 1 2 3 0.5\n", read_points3d), match=r"points3D\.txt, line 1: point POINT3D_ID must be in \[0, ")

