"""Bad inputs for the COLMAP reader: cameras / images / points3D in text and binary, and the image folder.

Model-level mutations (a NaN focal length, a zero quaternion, a translation of 1e300, ...) run for
both formats; text syntax errors and binary header corruptions each have their own cases. The
text files written by :func:`langfield.io.colmap.write_model` put the camera on line 4 of
``cameras.txt``, image ``k`` (1-based) on line ``3 + 2k`` of ``images.txt`` (its points on the next
line) and point ``k`` on line ``3 + k`` of ``points3D.txt``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, List, Optional

import numpy as np

from langfield._checks import InputError
from langfield.data import load_dataset
from langfield.io.colmap import ColmapCamera, ColmapModel, ColmapPoints
from tests.robustness import reader_scenes as rs
from tests.robustness.framework import Case

NAN, INF = float("nan"), float("inf")
W, H, F = rs.W, rs.H, rs.FOCAL
EXTS = {".txt": "text", ".bin": "binary"}

CASES: List[Case] = []


def _add(name: str, build: Callable[[Path], Path], error=InputError, match: str = ".", **load_kw: Any) -> None:
    def run(tmp: Path) -> None:
        load_dataset(build(tmp), **load_kw)

    CASES.append(Case(f"readers/colmap/{name}", run, error, match))


def scene(ext: str, model: Optional[ColmapModel] = None, mutate: Optional[Callable[[Path, Path], Any]] = None):
    def build(tmp: Path) -> Path:
        root = rs.colmap_scene(tmp / "scene", ext, model)
        if mutate is not None:
            mutate(root, tmp)
        return root

    return build


def cam(model: str = "PINHOLE", params=(F, F, W / 2, H / 2), width: int = W, height: int = H) -> ColmapModel:
    return rs.colmap_model(camera=ColmapCamera(1, model, width, height, tuple(params)))


def where(ext: str, stem: str, text_line: int, binary_record: str) -> str:
    """Regex of the location a message names: ``file, line N`` (text) or ``file: record`` (binary)."""
    f = rf"sparse/0/{stem}\{ext}"
    return rf"{f}, line {text_line}: " if ext == ".txt" else rf"{f}: {binary_record}"


def _points(**overrides: Any) -> ColmapModel:
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(5, 3))
    ids = np.arange(1, 6)
    if "xyz" in overrides:
        xyz[overrides["xyz"][0], 0] = overrides["xyz"][1]
    if "ids" in overrides:
        ids = np.asarray(overrides["ids"])
    return rs.colmap_model(points=ColmapPoints.create(xyz, ids=ids))


# ----------------------------------------------------------------------------- model-level, both formats

for ext, kind in EXTS.items():
    CAM = where(ext, "cameras", 4, r"camera #0 at byte 8: ")
    IMG1 = where(ext, "images", 5, r"image #0 \(id 1\) at byte 8: ") + ("image 1: " if ext == ".txt" else "")
    PTS = rf"sparse/0/points3D\{ext}"

    _add(f"{kind}/focal-nan", scene(ext, cam(params=(NAN, F, 4, 3))), match=CAM + r"camera 1 params: 1 non-finite")
    _add(f"{kind}/focal-zero", scene(ext, cam(params=(0.0, F, 4, 3))), match=CAM + r"camera 1 \(PINHOLE\): focal length fx: must be > 0")
    _add(f"{kind}/focal-negative", scene(ext, cam(params=(F, -F, 4, 3))), match=CAM + r"camera 1 \(PINHOLE\): focal length fy: must be > 0")
    _add(f"{kind}/focal-1e300", scene(ext, cam(params=(1e300, F, 4, 3))), match=CAM + r"camera 1 params: 1 value\(s\) beyond \+-1e\+07")
    _add(f"{kind}/simple-focal-nan", scene(ext, cam("SIMPLE_PINHOLE", (NAN, 4, 3))), match=CAM + r"camera 1 params: 1 non-finite")
    _add(f"{kind}/principal-x-far", scene(ext, cam(params=(F, F, 1000.0, 3))), match=CAM + r"camera 1 \(PINHOLE\): principal point cx \(image width 8\): must be <= 16")
    _add(f"{kind}/principal-y-nan", scene(ext, cam(params=(F, F, 4, NAN))), match=CAM + r"camera 1 params: 1 non-finite")
    _add(f"{kind}/width-huge", scene(ext, cam(width=10**12)), match=CAM + r"camera 1: width: must be <= 131072")
    _add(f"{kind}/height-huge", scene(ext, cam(height=2**40)), match=CAM + r"camera 1: height: must be <= 131072")
    _add(
        f"{kind}/distortion-infinity",
        scene(ext, cam("OPENCV", (F, F, 4, 3, INF, 0, 0, 0))),
        match=CAM + r"camera 1 params: 1 non-finite",
    )
    _add(
        f"{kind}/distortion-1e9",
        scene(ext, cam("OPENCV", (F, F, 4, 3, 1e9, 0, 0, 0))),
        match=CAM + r"camera 1 params: 1 value\(s\) beyond",
    )
    _add(
        f"{kind}/fisheye-model",
        scene(ext, cam("OPENCV_FISHEYE", (F, F, 4, 3, 0.1, 0, 0, 0))),
        match=rf"sparse/0/cameras\{ext}: camera 1 uses unsupported COLMAP camera model 'OPENCV_FISHEYE'",
    )
    _add(
        f"{kind}/full-opencv-rational",
        scene(ext, cam("FULL_OPENCV", (F, F, 4, 3, 0, 0, 0, 0, 0, 0.2, 0, 0))),
        match=rf"sparse/0/cameras\{ext}: camera 1 uses COLMAP model FULL_OPENCV with rational terms",
    )
    _add(f"{kind}/quaternion-nan", scene(ext, rs.colmap_model(qvecs={0: (NAN, 0, 0, 1)})), match=IMG1 + r"quaternion \(QW QX QY QZ\): 1 non-finite")
    _add(f"{kind}/quaternion-zero", scene(ext, rs.colmap_model(qvecs={0: (0, 0, 0, 0)})), match=IMG1 + r"quaternion \(QW QX QY QZ\) is zero")
    _add(f"{kind}/quaternion-1e300", scene(ext, rs.colmap_model(qvecs={0: (1e300, 0, 0, 0)})), match=IMG1 + r"quaternion .*beyond \+-1e\+06")
    _add(f"{kind}/translation-1e300", scene(ext, rs.colmap_model(tvecs={0: (0, 1e300, 5)})), match=IMG1 + r"translation \(TX TY TZ\): 1 value\(s\) beyond \+-1e\+06")
    _add(f"{kind}/translation-1e7", scene(ext, rs.colmap_model(tvecs={0: (0, 0, 1e7)})), match=IMG1 + r"translation \(TX TY TZ\): 1 value\(s\) beyond")
    _add(f"{kind}/translation-infinity", scene(ext, rs.colmap_model(tvecs={0: (0, -INF, 5)})), match=IMG1 + r"translation \(TX TY TZ\): 1 non-finite")
    _add(
        f"{kind}/unknown-camera-id",
        scene(ext, rs.colmap_model(camera_ids={1: 2})),
        match=rf"sparse/0/images\{ext}: image 2 \(view_1\.png\) refers to camera 2, not in .*cameras\{ext}",
    )
    _add(
        f"{kind}/duplicate-image-names",
        scene(ext, rs.colmap_model(names={1: "view_0.png"})),
        match=rf"sparse/0/images\{ext}: images: image name 'view_0\.png' appears twice",
    )
    _add(
        f"{kind}/no-registered-images",
        scene(ext, ColmapModel(cam().cameras, {}, None)),
        match=rf"sparse/0/images\{ext}: the model has no registered images",
    )

    def _outside(name_of: Callable[[Path], str], ext=ext):
        def build(tmp: Path) -> Path:
            rs.outside_image(tmp)
            return rs.colmap_scene(tmp / "scene", ext, rs.colmap_model(names={0: name_of(tmp)}))

        return build

    OUT = rf"sparse/0/images\{ext}: image 1 name: .*outside the dataset folder .*allow_outside_paths"
    _add(f"{kind}/name-dotdot", _outside(lambda tmp: "../../elsewhere/secret.png"), match=OUT)
    _add(f"{kind}/name-absolute", _outside(lambda tmp: str(tmp / "elsewhere" / "secret.png")), match=OUT)

    def _symlink(root: Path, tmp: Path) -> None:
        target = rs.outside_image(tmp)
        (root / "images" / "view_0.png").unlink()
        os.symlink(target, root / "images" / "view_0.png")

    _add(f"{kind}/name-symlink-escape", scene(ext, mutate=_symlink), match=OUT)
    _add(
        f"{kind}/name-is-directory",
        scene(ext, rs.colmap_model(names={2: "sub"}), lambda root, tmp: (root / "images" / "sub").mkdir()),
        match=rf"sparse/0/images\{ext}: image 3 'sub': .*is a directory",
    )
    _add(
        f"{kind}/image-missing",
        scene(ext, mutate=lambda root, tmp: (root / "images" / "view_2.png").unlink()),
        error=FileNotFoundError,
        match=rf"sparse/0/images\{ext}: image 3 'view_2\.png' not found in .*scene/images",
    )
    _add(
        f"{kind}/image-aspect-mismatch",
        scene(ext, mutate=lambda root, tmp: rs.png(root / "images" / "view_1.png", size=(H, W))),
        match=rf"view_1\.png vs camera 1 in .*cameras\{ext}: image size 6x8 does not match the camera size 8x6",
    )
    _add(
        f"{kind}/image-truncated",
        scene(ext, mutate=lambda root, tmp: (root / "images" / "view_1.png").write_bytes((root / "images" / "view_1.png").read_bytes()[:60])),
        match=r"view_1\.png: cannot decode image",
    )
    _add(f"{kind}/point-nan", scene(ext, _points(xyz=(2, NAN))), match=PTS + r"(, line 6: point 3|: point 3 \(#2\)): position .* is not finite")
    _add(f"{kind}/point-1e300", scene(ext, _points(xyz=(0, -1e300))), match=PTS + r"(, line 4: point 1|: point 1 \(#0\)): position .*beyond \+-1e\+06")
    _add(f"{kind}/duplicate-point-ids", scene(ext, _points(ids=[1, 2, 3, 2, 5])), match=PTS + r": point id 2 appears 2 times")
    _add(f"{kind}/downscale-zero", scene(ext), match=r"^downscale: must be >= 1", downscale=0)


# ----------------------------------------------------------------------------- text syntax

CT, IT, PT = (rf"sparse/0/{s}\.txt" for s in ("cameras", "images", "points3D"))


def text(stem: str, fn: Callable[[Path], Any]):
    return scene(".txt", mutate=lambda root, tmp: fn(rs.model_path(root, stem, ".txt")))


def token(stem: str, line: int, tok: int, value: str):
    return text(stem, lambda p: rs.replace_token(p, line, tok, value))


def sub(stem: str, old: str, new: str):
    return text(stem, lambda p: rs.edit_text(p, old, new))


def append(stem: str, line: str):
    return text(stem, lambda p: p.write_text(p.read_text() + line + "\n"))


def raw(stem: str, data: bytes):
    return text(stem, lambda p: p.write_bytes(data))


def non_utf8(stem: str):
    return text(stem, lambda p: p.write_bytes(p.read_bytes().replace(b"#", b"#\xe9", 1)))


_add("text/camera-height-word", token("cameras", 0, 3, "six"), match=CT + r", line 4: cannot parse camera: HEIGHT: expected an integer, got 'six'")
_add("text/camera-id-word", token("cameras", 0, 0, "one"), match=CT + r", line 4: cannot parse camera: CAMERA_ID: expected an integer, got 'one'")
_add("text/camera-width-negative", token("cameras", 0, 2, "-8"), match=CT + r", line 4: camera WIDTH must be in \[1, ")
_add("text/camera-model-unknown", token("cameras", 0, 1, "FISHEYE_X"), match=CT + r", line 4: unknown COLMAP camera model 'FISHEYE_X'")
_add("text/camera-param-word", token("cameras", 0, 5, "seven"), match=CT + r", line 4: cannot parse camera: PARAMS\[\]: could not convert")
_add("text/camera-too-few-params", text("cameras", lambda p: rs.edit_text(p, rs.data_line(p), rs.data_line(p).rsplit(" ", 1)[0])), match=CT + r", line 4: camera model PINHOLE needs 4 params, got 3")
_add("text/camera-too-few-fields", text("cameras", lambda p: rs.edit_text(p, rs.data_line(p), "1 PINHOLE 8")), match=CT + r", line 4: cannot parse camera: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS\[\]'")
_add("text/camera-duplicate-id", append("cameras", "1 PINHOLE 8 6 7.0 7.0 4.0 3.0"), match=CT + r", line 5: camera id 1 appears twice")
_add("text/camera-focal-word-nan", token("cameras", 0, 4, "NaN"), match=CT + r", line 4: camera 1 params: 1 non-finite")
_add("text/cameras-not-utf8", non_utf8("cameras"), match=CT + r": line 1: not valid UTF-8 text \(byte 0xe9")
_add("text/cameras-empty", raw("cameras", b""), match=IT + r": image 1 \(view_0\.png\) refers to camera 1, not in .*cameras\.txt")
_add("text/image-quaternion-word", token("images", 0, 1, "one"), match=IT + r", line 5: cannot parse image: QW QX QY QZ: could not convert")
_add("text/image-quaternion-nan-literal", token("images", 1, 2, "nan"), match=IT + r", line 7: image 2: quaternion \(QW QX QY QZ\): 1 non-finite")
_add("text/image-translation-inf-literal", token("images", 2, 7, "-inf"), match=IT + r", line 9: image 3: translation \(TX TY TZ\): 1 non-finite")
_add("text/image-id-word", token("images", 0, 0, "x1"), match=IT + r", line 5: cannot parse image: IMAGE_ID: expected an integer, got 'x1'")
_add("text/image-camera-id-float", token("images", 0, 8, "1.5"), match=IT + r", line 5: cannot parse image: CAMERA_ID: expected an integer, got '1\.5'")
_add("text/image-too-few-fields", text("images", lambda p: rs.edit_text(p, rs.data_line(p), "1 1 0 0 0 0 0 0")), match=IT + r", line 5: cannot parse image: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME'")
_add("text/image-duplicate-id", token("images", 1, 0, "1"), match=IT + r", line 7: image id 1 appears twice")
_add("text/image-points-not-triples", sub("images", "view_0.png\n\n", "view_0.png\n1.0 2.0\n"), match=IT + r", line 6: cannot parse the points of image 1: 2 values, not a multiple of 3")
_add("text/image-points-bad-id", sub("images", "view_0.png\n\n", "view_0.png\n1.0 2.0 x\n"), match=IT + r", line 6: cannot parse the points of image 1: invalid literal")
_add("text/images-not-utf8", non_utf8("images"), match=IT + r": line 1: not valid UTF-8 text")
_add("text/images-empty", raw("images", b""), match=IT + r": the model has no registered images")
_add("text/images-binary-garbage", raw("images", bytes(range(128, 256))), match=IT + r": line 1: not valid UTF-8 text \(byte 0x80 at offset 0\)")
_add("text/point-colour-300", token("points3D", 0, 4, "300"), match=PT + r", line 4: point colour R must be in \[0, 255\], got 300")
_add("text/point-colour-negative", token("points3D", 2, 6, "-1"), match=PT + r", line 6: point colour B must be in \[0, 255\], got -1")
_add("text/point-colour-word", token("points3D", 1, 5, "red"), match=PT + r", line 5: cannot parse point: colour G: expected an integer, got 'red'")
_add("text/point-colour-fraction", token("points3D", 0, 4, "12.5"), match=PT + r", line 4: cannot parse point: colour R: expected an integer, got '12\.5'")
_add("text/point-xyz-word", token("points3D", 3, 2, "y"), match=PT + r", line 7: cannot parse point: X Y Z: could not convert")
_add("text/point-id-negative", token("points3D", 0, 0, "-4"), match=PT + r", line 4: point POINT3D_ID must be in \[0, ")
_add("text/point-too-few-fields", text("points3D", lambda p: rs.edit_text(p, rs.data_line(p), "1 0.5 0.5")), match=PT + r", line 4: cannot parse point: expected 'POINT3D_ID X Y Z R G B ERROR TRACK\[\]'")
_add("text/point-odd-track", text("points3D", lambda p: rs.edit_text(p, rs.data_line(p), rs.data_line(p) + " 1")), match=PT + r", line 4: cannot parse point")
_add("text/point-track-overflow", text("points3D", lambda p: rs.edit_text(p, rs.data_line(p), rs.data_line(p) + " 1 99999999999")), match=PT + r", line 4: track entries must be 32-bit integers")
_add("text/points-not-utf8", non_utf8("points3D"), match=PT + r": line 1: not valid UTF-8 text")

# ----------------------------------------------------------------------------- binary headers and records

CB, IB, PB = (rf"sparse/0/{s}\.bin" for s in ("cameras", "images", "points3D"))


def binary(stem: str, fn: Callable[[Path], Any]):
    return scene(".bin", mutate=lambda root, tmp: fn(rs.model_path(root, stem, ".bin")))


def patch(stem: str, offset: int, fmt: str, *values: Any):
    return binary(stem, lambda p: rs.patch_bytes(p, offset, fmt, *values))


def cut(stem: str, keep: Callable[[int], int]):
    return binary(stem, lambda p: p.write_bytes(p.read_bytes()[: keep(p.stat().st_size)]))


def extra(stem: str, data: bytes):
    return binary(stem, lambda p: p.write_bytes(p.read_bytes() + data))


HUGE = 2**40
_add("binary/cameras-count-2^40", patch("cameras", 0, "Q", HUGE), match=CB + r": declares 1099511627776 cameras .* only \d+ bytes follow: the file is truncated or corrupt")
_add("binary/cameras-truncated", cut("cameras", lambda n: n - 5), match=CB + r": file truncated at byte \d+ while reading the params of camera 1")
_add("binary/cameras-trailing-bytes", extra("cameras", b"abc"), match=CB + r": 3 unexpected trailing bytes")
_add("binary/cameras-model-id-99", patch("cameras", 12, "i", 99), match=CB + r": camera #0 at byte 8: camera 1 has unknown COLMAP camera model id 99")
_add("binary/cameras-zero-bytes", cut("cameras", lambda n: 0), match=CB + r": file truncated at byte 0 while reading the camera count")
_add("binary/cameras-width-2^63", patch("cameras", 16, "Q", 2**63), match=CB + r": camera #0 at byte 8: camera 1: width: must be <= 131072")
_add("binary/cameras-count-2", patch("cameras", 0, "Q", 2), match=CB + r": file truncated at byte 64 while reading camera #1")
_add("binary/images-count-2^40", patch("images", 0, "Q", HUGE), match=IB + r": declares 1099511627776 images .* truncated or corrupt")
_add("binary/images-points2d-2^40", patch("images", rs.image_num_points_at(), "Q", HUGE), match=IB + r": declares 1099511627776 2D points of image 1 .* truncated or corrupt")
_add("binary/images-cut-in-first-name", cut("images", lambda n: rs.image_num_points_at() - 3), match=IB + r": declares 3 images \(at least \d+ bytes\) at byte 8, but only 72 bytes follow")
_add("binary/images-last-name-unterminated", cut("images", lambda n: n - 10), match=IB + r": file truncated at byte \d+ while reading the name of image 3")
_add("binary/images-name-not-utf8", patch("images", rs.image_num_points_at() - 4, "B", 0xFF), match=IB + r": the name of image 1 at byte \d+ is not valid UTF-8")
_add("binary/images-name-control-char", patch("images", rs.image_num_points_at() - 4, "B", 0x01), match=IB + r": image #0 \(id 1\) at byte 8: image name .* has control characters")
_add("binary/images-name-empty", patch("images", rs.IMAGE_T_AT + 24 + 4, "B", 0x00), match=IB + r": image #0 \(id 1\) at byte 8: image name '' is empty")
_add("binary/images-qw-nan", patch("images", rs.IMAGE_Q_AT, "d", NAN), match=IB + r": image #0 \(id 1\) at byte 8: quaternion \(QW QX QY QZ\): 1 non-finite")
_add("binary/images-zero-bytes", cut("images", lambda n: 0), match=IB + r": file truncated at byte 0 while reading the image count")
_add("binary/images-duplicate-id", patch("images", rs.image_num_points_at() + 8, "i", 1), match=IB + r": image #1 \(id 1\) at byte \d+: image id 1 appears twice")
_add("binary/points-count-2^40", patch("points3D", 0, "Q", HUGE), match=PB + r": declares 1099511627776 points .* truncated or corrupt")
_add("binary/points-track-2^40", patch("points3D", rs.POINT_TRACK_LEN_AT, "Q", HUGE), match=PB + r": point 1 \(#0\) declares a track of 1099511627776 observations at byte 59, but only \d+ bytes follow")
_add("binary/points-truncated", cut("points3D", lambda n: n - 10), match=PB + r": declares 5 points \(at least 255 bytes\) at byte 8, but only 245 bytes follow")
_add("binary/points-trailing-bytes", extra("points3D", b"\x00" * 7), match=PB + r": 7 unexpected trailing bytes")
_add("binary/points-id-2^64-1", patch("points3D", 8, "Q", 2**64 - 1), match=PB + r": point #0 at byte 8: id 18446744073709551615 does not fit in int64")
_add("binary/points-x-nan", patch("points3D", rs.POINT_XYZ_AT, "d", NAN), match=PB + r": point 1 \(#0\): position .* is not finite")
_add("binary/points-zero-bytes", cut("points3D", lambda n: 0), match=PB + r": file truncated at byte 0 while reading the point count")
