"""Bad inputs for the transforms*.json reader (Blender and nerfstudio layouts) and the loader options.

Each case builds a valid tiny scene (:mod:`tests.robustness.reader_scenes`), breaks one thing and
loads it through ``langfield.data.load_dataset`` as the Python API does. Expected: an error naming
the json file, the frame and the field (or the option).
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any, Callable, List

import numpy as np
from PIL import Image

from langfield._checks import InputError, TooLargeError
from langfield.data import load_dataset
from tests.robustness import reader_scenes as rs
from tests.robustness.framework import Case, with_memory_limit

NAN, INF = float("nan"), float("inf")
TRAIN = "transforms_train.json"
TJ = r"transforms_train\.json"

CASES: List[Case] = []


def _add(name: str, build: Callable[[Path], Path], error=InputError, match: str = ".", **load_kw: Any) -> None:
    def run(tmp: Path) -> None:
        load_dataset(build(tmp), **load_kw)

    CASES.append(Case(f"readers/transforms/{name}", run, error, match))


def blender(mutate: Callable[[Path, Path], Any]) -> Callable[[Path], Path]:
    """Builder: a valid Blender scene at ``tmp/scene``, then ``mutate(root, tmp)``."""

    def build(tmp: Path) -> Path:
        root = rs.blender_scene(tmp / "scene")
        mutate(root, tmp)
        return root

    return build


def single(mutate: Callable[[Path, Path], Any]) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        root = rs.single_scene(tmp / "scene")
        mutate(root, tmp)
        return root

    return build


def top(key: str, value: Any):
    return blender(lambda root, tmp: rs.set_top(root / TRAIN, key, value))


def frame(index: int, key: str, value: Any):
    return blender(lambda root, tmp: rs.set_frame(root / TRAIN, index, key, value))


def matrix(fn: Callable[[list], Any]):
    """Mutate frame 0's transform_matrix (a list of lists) in place, or replace it with fn's result."""

    def mutate(root: Path, tmp: Path) -> None:
        def edit(d):
            m = d["frames"][0]["transform_matrix"]
            out = fn(m)
            if out is not None:
                d["frames"][0]["transform_matrix"] = out

        rs.edit_json(root / TRAIN, edit)

    return blender(mutate)


def _set(m: list, r: int, c: int, v: Any) -> None:
    m[r][c] = v


def _png_header(width: int, height: int) -> bytes:
    """A PNG that is only a signature and an IHDR chunk declaring ``width x height`` RGB (no pixel data)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def _write(rel: str, data: bytes):
    def mutate(root: Path, tmp: Path) -> None:
        (root / rel).write_bytes(data)

    return mutate


def _truncate(rel: str):
    def mutate(root: Path, tmp: Path) -> None:
        p = root / rel
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])

    return mutate


# ----------------------------------------------------------------------------- intrinsics

_add("camera-angle-nan", top("camera_angle_x", NAN), match=TJ + r": frame 0.*'camera_angle_x' must be a finite number")
_add("camera-angle-infinity", top("camera_angle_x", INF), match=TJ + r".*'camera_angle_x' must be a finite number")
_add("camera-angle-zero", top("camera_angle_x", 0), match=TJ + r".*'camera_angle_x' must be in \(0, pi\)")
_add("camera-angle-negative", top("camera_angle_x", -0.5), match=TJ + r".*'camera_angle_x' must be in \(0, pi\)")
_add("camera-angle-above-pi", top("camera_angle_x", 3.5), match=TJ + r".*'camera_angle_x' must be in \(0, pi\)")
_add("camera-angle-string", top("camera_angle_x", "0.9"), match=TJ + r".*'camera_angle_x' must be a finite number, got '0\.9'")
_add("camera-angle-bool", top("camera_angle_x", True), match=TJ + r".*'camera_angle_x' must be a finite number, got True")
_add("camera-angle-null", top("camera_angle_x", None), match=TJ + r".*'camera_angle_x' must be a finite number, got None")
_add("camera-angle-1e300", top("camera_angle_x", 1e300), match=TJ + r".*'camera_angle_x' = 1e\+300 is implausibly large")
_add("camera-angle-y-zero", top("camera_angle_y", 0.0), match=TJ + r".*'camera_angle_y' must be in \(0, pi\)")
_add(
    "no-intrinsics",
    blender(lambda root, tmp: rs.edit_json(root / TRAIN, lambda d: d.pop("camera_angle_x"))),
    match=TJ + r": frame 0.*no intrinsics: need 'fl_x'",
)
_add("fl-x-zero", top("fl_x", 0), match=TJ + r".*focal lengths must be > 0, got fl_x=0")
_add("fl-x-negative", top("fl_x", -7.0), match=TJ + r".*focal lengths must be > 0, got fl_x=-7")
_add("fl-x-nan", top("fl_x", NAN), match=TJ + r".*'fl_x' must be a finite number, got nan")
_add("fl-x-1e300", top("fl_x", 1e300), match=TJ + r".*'fl_x' = 1e\+300 is implausibly large")
_add("fl-x-string", top("fl_x", "7"), match=TJ + r".*'fl_x' must be a finite number, got '7'")
_add("fl-y-negative", top("fl_y", -3.0), match=TJ + r".*focal lengths must be > 0, got fl_x=.*fl_y=-3")
_add("fl-x-per-frame-nan", frame(1, "fl_x", NAN), match=TJ + r": frame 1 .*'fl_x' must be a finite number")
_add("cx-far-outside", top("cx", 1000.0), match=TJ + r".*principal point cx \(image width 8\): must be <= 16, got 1000")
_add("cy-far-negative", top("cy", -100.0), match=TJ + r".*principal point cy \(image height 6\): must be >= -6, got -100")
_add("cx-nan", top("cx", NAN), match=TJ + r".*'cx' must be a finite number")
_add("cy-infinity", top("cy", INF), match=TJ + r".*'cy' must be a finite number")
_add("w-mismatch", top("w", 16), match=TJ + r".*field 'w' is 16 but image .*r_0\.png is 8x6")
_add("h-zero", top("h", 0), match=TJ + r".*field 'h' must be a whole number of pixels >= 1, got 0")
_add("h-negative", top("h", -6), match=TJ + r".*field 'h' must be a whole number of pixels >= 1, got -6")
_add("w-fractional", top("w", 8.5), match=TJ + r".*field 'w' must be a whole number of pixels >= 1, got 8\.5")
_add("w-string", top("w", "8"), match=TJ + r".*field 'w' must be a finite number, got '8'")
_add("w-1e300", top("w", 1e300), match=TJ + r".*field 'w' = 1e\+300 is implausibly large")
_add("camera-model-fisheye", top("camera_model", "OPENCV_FISHEYE"), match=TJ + r".*'camera_model' is 'OPENCV_FISHEYE'")
_add("camera-model-number", top("camera_model", 3), match=TJ + r".*'camera_model' must be a string, got 3")
_add("k4-nonzero", top("k4", 0.1), match=TJ + r".*field 'k4' = 0\.1 is not supported")
_add("k1-nan", top("k1", NAN), match=TJ + r".*'k1' must be a finite number")
_add("k1-1e300", top("k1", 1e300), match=TJ + r".*'k1' = 1e\+300 is implausibly large")
_add("p1-string", top("p1", "0.01"), match=TJ + r".*'p1' must be a finite number")

# ----------------------------------------------------------------------------- poses

_add("translation-1e300", matrix(lambda m: _set(m, 0, 3, 1e300)), match=TJ + r": frame 0.*'transform_matrix': 1 value\(s\) beyond")
_add("translation-1e7", matrix(lambda m: _set(m, 2, 3, 1e7)), match=TJ + r": frame 0.*'transform_matrix': 1 value\(s\) beyond")
_add("translation-nan", matrix(lambda m: _set(m, 1, 3, NAN)), match=TJ + r": frame 0.*'transform_matrix': 1 non-finite")
_add("translation-infinity", matrix(lambda m: _set(m, 1, 3, -INF)), match=TJ + r": frame 0.*'transform_matrix': 1 non-finite")
_add("rotation-nan", matrix(lambda m: _set(m, 0, 0, NAN)), match=TJ + r": frame 0.*'transform_matrix': 1 non-finite")
_add("matrix-string-entry", matrix(lambda m: _set(m, 0, 0, "1")), match=TJ + r".*'transform_matrix' \[0\]\[0\] must be a number, got '1'")
_add("matrix-bool-entry", matrix(lambda m: _set(m, 1, 1, True)), match=TJ + r".*'transform_matrix' \[1\]\[1\] must be a number, got True")
_add("matrix-null-entry", matrix(lambda m: _set(m, 2, 3, None)), match=TJ + r".*'transform_matrix' \[2\]\[3\] must be a number, got None")
_add("matrix-3x3", matrix(lambda m: [row[:3] for row in m[:3]]), match=TJ + r".*'transform_matrix' must be 4x4 \(or 3x4\)")
_add("matrix-flat", matrix(lambda m: [v for row in m for v in row]), match=TJ + r".*'transform_matrix' must be 4x4 \(or 3x4\)")
_add("matrix-ragged", matrix(lambda m: [m[0], m[1][:3], m[2], m[3]]), match=TJ + r".*'transform_matrix' must be 4x4")
_add("matrix-string", matrix(lambda m: "identity"), match=TJ + r".*'transform_matrix' must be 4x4 .*'identity'")
_add("matrix-empty", matrix(lambda m: []), match=TJ + r".*'transform_matrix' must be 4x4")


def _scale(m: list) -> None:
    for r in range(3):
        for c in range(3):
            m[r][c] *= 2.0


def _reflect(m: list) -> None:
    for r in range(3):
        m[r][0] = -m[r][0]


_add("matrix-scaled", matrix(_scale), match=TJ + r": frame 0.*'transform_matrix' is not a rigid transform")
_add("matrix-reflection", matrix(_reflect), match=TJ + r": frame 0.*'transform_matrix' is not a rigid transform")
_add("matrix-shear", matrix(lambda m: _set(m, 0, 1, m[0][1] + 0.5)), match=TJ + r": frame 0.*not a rigid transform")
_add("matrix-last-row", matrix(lambda m: _set(m, 3, 0, 0.5)), match=TJ + r": frame 0.*last row must be \(0, 0, 0, 1\)")
_add(
    "matrix-missing",
    blender(lambda root, tmp: rs.edit_json(root / TRAIN, lambda d: d["frames"][1].pop("transform_matrix"))),
    match=TJ + r": frame 1 .*missing field 'transform_matrix'",
)

# ----------------------------------------------------------------------------- file paths


def _outside(value: Callable[[Path], str]):
    def mutate(root: Path, tmp: Path) -> None:
        rs.outside_image(tmp)
        rs.set_frame(root / TRAIN, 0, "file_path", value(tmp))

    return blender(mutate)


OUTSIDE = TJ + r": frame 0 .*'file_path'.*outside the dataset folder.*allow_outside_paths"
_add("file-path-dotdot", _outside(lambda tmp: "../elsewhere/secret.png"), match=OUTSIDE)
_add("file-path-dotdot-no-extension", _outside(lambda tmp: "../elsewhere/secret"), match=OUTSIDE)
_add("file-path-absolute", _outside(lambda tmp: str(tmp / "elsewhere" / "secret.png")), match=OUTSIDE)
_add("file-path-inner-dotdot", _outside(lambda tmp: "./train/../../elsewhere/secret.png"), match=OUTSIDE)


def _symlink_file(root: Path, tmp: Path) -> None:
    target = rs.outside_image(tmp)
    (root / "train" / "r_0.png").unlink()
    os.symlink(target, root / "train" / "r_0.png")


def _symlink_folder(root: Path, tmp: Path) -> None:
    elsewhere = tmp / "elsewhere"
    (root / "train").rename(elsewhere)
    os.symlink(elsewhere, root / "train")


def _symlink_loop(root: Path, tmp: Path) -> None:
    (root / "train" / "r_0.png").unlink()
    os.symlink(root / "train" / "r_0.png", root / "train" / "r_0.png")


_add("symlink-file-escape", blender(_symlink_file), match=OUTSIDE)
_add("symlink-folder-escape", blender(_symlink_folder), match=OUTSIDE)
_add("symlink-loop", blender(_symlink_loop), error=FileNotFoundError, match=TJ + r": frame 0 .*file_path '\./train/r_0' not found")
_add(
    "file-path-missing",
    blender(lambda root, tmp: rs.edit_json(root / TRAIN, lambda d: d["frames"][0].pop("file_path"))),
    match=TJ + r": frame 0: missing field 'file_path'",
)
_add("file-path-int", frame(0, "file_path", 5), match=TJ + r": frame 0: field 'file_path' must be a string, got 5")
_add("file-path-null", frame(1, "file_path", None), match=TJ + r": frame 1: field 'file_path' must be a string, got None")
_add("file-path-empty", frame(0, "file_path", ""), match=TJ + r": frame 0.*field 'file_path' is empty")
_add("file-path-nul", frame(0, "file_path", "./train/r_0\x00.png"), match=TJ + r": frame 0.*'file_path' contains a NUL")
_add("file-path-directory", frame(0, "file_path", "./train"), match=TJ + r": frame 0 .*'file_path' = '\./train' is a directory")
_add(
    "image-missing",
    blender(lambda root, tmp: (root / "train" / "r_1.png").unlink()),
    error=FileNotFoundError,
    match=TJ + r": frame 1 .*image for file_path '\./train/r_1' not found",
)
_add(
    "duplicate-file-path",
    frame(1, "file_path", "./train/r_0"),
    match=TJ + r": frames: file_path 'train/r_0' appears twice \(entries 0 and 1\)",
)
_add(
    "duplicate-file-path-spelled-differently",
    frame(1, "file_path", "train//r_0"),
    match=TJ + r": frames: file_path 'train/r_0' appears twice",
)

_add(
    "duplicate-image-with-and-without-extension",
    frame(1, "file_path", "./train/r_0.png"),
    match=TJ + r": frame 1 \(\./train/r_0\.png\): field 'file_path' names the same image file as frame 0",
)


def _same_image_via_symlink(root: Path, tmp: Path) -> None:
    (root / "train" / "r_1.png").unlink()
    os.symlink(root / "train" / "r_0.png", root / "train" / "r_1.png")


_add(
    "duplicate-image-via-symlink",
    blender(_same_image_via_symlink),
    match=TJ + r": frame 1 .*names the same image file as frame 0",
)

# ----------------------------------------------------------------------------- image files

_add("image-zero-bytes", blender(_write("train/r_0.png", b"")), match=r"r_0\.png: cannot read image header")
_add("image-truncated", blender(_truncate("train/r_1.png")), match=r"r_1\.png: cannot decode image")
_add("image-garbage", blender(_write("train/r_0.png", bytes(range(256)) * 4)), match=r"r_0\.png: cannot read image header")
_add("image-is-text", blender(_write("train/r_0.png", b"this is not an image\n")), match=r"r_0\.png: cannot read image header")
_add("image-header-only", blender(_write("train/r_0.png", _png_header(8, 6))), match=r"r_0\.png: cannot decode image")
_add(
    "image-zero-width-header",
    blender(_write("train/r_0.png", _png_header(0, 6))),
    match=r"r_0\.png: width: must be >= 1, got 0",
)
_add(
    "image-huge-side-header",
    blender(_write("train/r_0.png", _png_header(2**31 - 1, 6))),
    match=r"r_0\.png: width: must be <= 131072",
)


def _bombs(root: Path, tmp: Path) -> None:
    for i in range(2):
        (root / "train" / f"r_{i}.png").write_bytes(_png_header(100_000, 100_000))
    rs.set_top(root / TRAIN, "camera_angle_x", 0.9)


_add(
    "image-bomb-header",
    blender(_bombs),
    error=TooLargeError,
    match=TJ + r" \[train\]: 2 images of 100000x100000 .*needs about .*GiB, more than the",
)
_add(
    "image-sizes-differ",
    blender(lambda root, tmp: rs.png(root / "train" / "r_1.png", size=(10, 6))),
    match=TJ + r": images of one split must share a size, .*r_1\.png \(frame 1\) is 10x6",
)


def _big_images(tmp: Path) -> Path:
    root = rs.blender_scene(tmp / "scene")
    for i in range(2):
        rs.png(root / "train" / f"r_{i}.png", size=(64, 48))
    return root


CASES.append(
    Case(
        "readers/transforms/images-exceed-memory",
        with_memory_limit(20_000, lambda tmp: load_dataset(_big_images(tmp))),
        TooLargeError,
        TJ + r" \[train\]: 2 images of 64x48 \(stored at 64x48\): needs about .* of RAM available; load fewer or smaller",
    )
)

# ----------------------------------------------------------------------------- json structure

_add("frames-empty", top("frames", []), match=TJ + r": field 'frames' is empty")
_add("frames-object", top("frames", {"0": {}}), match=TJ + r": field 'frames' must be a list, got dict")
_add("frames-missing", blender(lambda root, tmp: rs.edit_json(root / TRAIN, lambda d: d.pop("frames"))), match=TJ + r": missing field 'frames'")
_add("frame-not-object", blender(lambda root, tmp: rs.edit_json(root / TRAIN, lambda d: d["frames"].__setitem__(1, 5))), match=TJ + r": frame 1 must be an object, got int")
_add("top-level-list", blender(_write(TRAIN, b"[]")), match=TJ + r": expected a JSON object at the top level, got list")
_add("malformed-json", blender(_write(TRAIN, b'{"frames": [\n  {"file_path": "a",}\n]}')), match=TJ + r": malformed JSON at line 2, column")
_add("empty-json", blender(_write(TRAIN, b"")), match=TJ + r": malformed JSON at line 1, column 1")
_add("json-truncated", blender(_truncate(TRAIN)), match=TJ + r": malformed JSON at line 1")
_add(
    "json-not-utf8",
    blender(lambda root, tmp: (root / TRAIN).write_bytes((root / TRAIN).read_bytes().replace(b"./train/r_1", b"./train/r_\xff1"))),
    match=TJ + r": line 1: not valid UTF-8 text \(byte 0xff at offset",
)
_add(
    "json-utf16",
    blender(lambda root, tmp: (root / TRAIN).write_bytes((root / TRAIN).read_text().encode("utf-16"))),
    match=TJ + r": line 1: not valid UTF-8 text",
)
_add("json-deeply-nested", blender(_write(TRAIN, b"[" * 200_000)), match=TJ + r": (JSON nested too deeply|malformed JSON)")


def _json_dir(root: Path, tmp: Path) -> None:
    (root / "transforms_test.json").unlink()
    (root / "transforms_test.json").mkdir()


_add("json-is-directory", blender(_json_dir), match=r"transforms_test\.json: is a directory")
_add(
    "no-train-json",
    blender(lambda root, tmp: (root / TRAIN).unlink()),
    error=FileNotFoundError,
    match=r"scene: Blender layout without transforms_train\.json",
)

# ----------------------------------------------------------------------------- semantics


def _label_map(root: Path, rel: str, mode: str = "L", size=(rs.W, rs.H)) -> str:
    rs.png(root / rel, size=size, mode=mode)
    return rel


def _semantics(mutate_last: Callable[[Path, dict], Any]):
    def mutate(root: Path, tmp: Path) -> None:
        def edit(d):
            for i, fr in enumerate(d["frames"]):
                fr["semantic_path"] = _label_map(root, f"train/sem_{i}.png")
            mutate_last(root, d)

        rs.edit_json(root / TRAIN, edit)

    return blender(mutate)


_add("semantic-path-partial", _semantics(lambda root, d: d["frames"][1].pop("semantic_path")), match=TJ + r": frame 1 .*missing field 'semantic_path'")
_add("semantic-path-int", _semantics(lambda root, d: d["frames"][0].__setitem__("semantic_path", 3)), match=TJ + r": frame 0 .*'semantic_path' must be a string")


def _semantic_outside(root: Path, d: dict) -> None:
    rs.png(root.parent / "labels" / "sem.png", mode="L")
    d["frames"][0]["semantic_path"] = "../labels/sem.png"


_add("semantic-path-outside", _semantics(_semantic_outside), match=TJ + r": frame 0 .*'semantic_path'.*outside the dataset folder")
_add(
    "semantic-label-is-rgb",
    _semantics(lambda root, d: _label_map(root, "train/sem_0.png", mode="RGB")),
    match=r"sem_0\.png: a label map must be a single-channel image .*mode 'RGB'",
)
_add(
    "semantic-label-size",
    _semantics(lambda root, d: _label_map(root, "train/sem_1.png", size=(4, 3))),
    match=TJ + r" \[train\]: label map .*sem_1\.png is 4x3 but its image .*r_1\.png is 8x6",
)

# ----------------------------------------------------------------------------- depth maps


def _depth_maps(mutate_last: Callable[[Path], Any]):
    """Builder: a float depth map beside each of the two training images (``train/r_i_depth.npy``), then
    ``mutate_last(root)`` breaks one."""

    def mutate(root: Path, tmp: Path) -> None:
        for i in range(2):
            np.save(root / "train" / f"r_{i}_depth.npy", np.full((rs.H, rs.W), 2.0, np.float32))
        mutate_last(root)

    return blender(mutate)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-20])


_add("depth-partial", _depth_maps(lambda root: (root / "train" / "r_1_depth.npy").unlink()),
     match=TJ + r": frame 1 .*r_1_depth\.npy not found, but other frames of this split have one")  # fmt: skip
_add("depth-size", _depth_maps(lambda root: np.save(root / "train" / "r_0_depth.npy", np.ones((3, 5), np.float32))),
     match=TJ + r" \[train\]: depth map .*r_0_depth\.npy has shape \(3, 5\) but its image is 6x8")  # fmt: skip
_add("depth-integer", _depth_maps(lambda root: np.save(root / "train" / "r_1_depth.npy", np.ones((rs.H, rs.W), np.uint16))),
     match=r"r_1_depth\.npy: depth map has dtype uint16")  # fmt: skip
_add("depth-pickle", _depth_maps(lambda root: np.save(root / "train" / "r_0_depth.npy", np.array([{}], dtype=object))),
     match=r"r_0_depth\.npy: holds Python objects")  # fmt: skip
_add("depth-truncated", _depth_maps(lambda root: _truncate(root / "train" / "r_1_depth.npy")), match=r"r_1_depth\.npy: .*truncated")
_add("depth-path-missing", frame(0, "depth_path", "./train/none.npy"),
     match=TJ + r": frame 0 .*'depth_path' = './train/none\.npy': depth map .*none\.npy not found")  # fmt: skip
_add("depth-path-int", frame(0, "depth_path", 3), match=TJ + r": frame 0 .*'depth_path' must be a non-empty path string")
_add("depth-path-outside", frame(0, "depth_path", "../d.npy"), match=TJ + r": frame 0 .*'depth_path'.*outside the dataset folder")

def _png(path: Path, values: np.ndarray) -> None:
    Image.fromarray(values).save(path)  # uint16 [H, W] -> mode I;16, uint8 [H, W, 3] -> RGB


def _frame_files(field: str, stem: str, values: np.ndarray, mutate: Callable[[Path], Any]):
    """Builder: a PNG of ``values`` per training frame (``train/<stem>_i.png``) named by the frame's ``field``,
    then ``mutate(root)`` breaks one."""

    def build(root: Path, tmp: Path) -> None:
        for i in range(2):
            _png(root / "train" / f"{stem}_{i}.png", values)
            rs.set_frame(root / TRAIN, i, field, f"./train/{stem}_{i}.png")
        mutate(root)

    return blender(build)


def _sensor_depth(mutate: Callable[[Path], Any]):
    """nerfstudio-style ``depth_file_path`` 16-bit z-depth PNGs ``train/z_i.png``, one broken by ``mutate``."""
    return _frame_files("depth_file_path", "z", np.full((rs.H, rs.W), 1500, np.uint16), mutate)


_add("depth-file-colour", _sensor_depth(lambda root: _png(root / "train" / "z_1.png", np.zeros((rs.H, rs.W, 3), np.uint8))),
     match=r"z_1\.png: a depth image must be a single-channel image .*got mode 'RGB'")  # fmt: skip
_add("depth-file-size", _sensor_depth(lambda root: _png(root / "train" / "z_0.png", np.full((3, 5), 1500, np.uint16))),
     match=TJ + r" \[train\]: depth map .*z_0\.png has shape \(3, 5\) but its image is 6x8")  # fmt: skip
_add("depth-file-and-path", _sensor_depth(lambda root: rs.set_frame(root / TRAIN, 1, "depth_path", "./train/z_1.npy")),
     match=TJ + r": frame 1 .*both 'depth_path' .* and 'depth_file_path' .* keep one")  # fmt: skip
_add("depth-file-missing", frame(0, "depth_file_path", "./train/none.png"),
     match=TJ + r": frame 0 .*'depth_file_path' = './train/none\.png': depth map .*none\.png not found")  # fmt: skip
_add("depth-unit-zero", top("depth_unit_scale_factor", 0), match=TJ + r": field 'depth_unit_scale_factor': must be > 0")
_add("depth-unit-text", top("depth_unit_scale_factor", "mm"), match=TJ + r": field 'depth_unit_scale_factor': expected a number")

# ----------------------------------------------------------------------------- training masks


def _masks(mutate: Callable[[Path], Any]):
    """nerfstudio-style ``mask_path`` all-255 grey PNGs ``train/mask_i.png``, one broken by ``mutate``."""
    return _frame_files("mask_path", "mask", np.full((rs.H, rs.W), 255, np.uint8), mutate)


_add("mask-partial", _masks(lambda root: rs.edit_json(root / TRAIN, lambda d: d["frames"][1].pop("mask_path"))),
     match=TJ + r": frame 1 .*no field 'mask_path', but other frames of this split have one .*mask_0\.png")  # fmt: skip
_add("mask-missing", _masks(lambda root: (root / "train" / "mask_0.png").unlink()),
     match=TJ + r": frame 0 .*'mask_path' = './train/mask_0\.png': mask .*mask_0\.png not found")  # fmt: skip
_add("mask-size", _masks(lambda root: _png(root / "train" / "mask_1.png", np.full((3, 4), 255, np.uint8))),
     match=TJ + r" \[train\]: mask .*mask_1\.png is 4x3 but its image is 8x6")  # fmt: skip
_add("mask-colour", _masks(lambda root: _png(root / "train" / "mask_0.png", np.zeros((rs.H, rs.W, 3), np.uint8))),
     match=r"mask_0\.png: a mask must be a single-channel image .*got mode 'RGB'")  # fmt: skip
_add("mask-outside", frame(0, "mask_path", "../m.png"), match=TJ + r": frame 0 .*'mask_path'.*outside the dataset folder")
_add("mask-path-int", frame(0, "mask_path", 3), match=TJ + r": frame 0 .*'mask_path' must be a non-empty path string")

_add("labels-not-a-list", top("labels", "chair"), match=TJ + r": field 'labels' must be a list of strings")
_add("labels-numbers", top("labels", [1, 2]), match=TJ + r": field 'labels' must be a list of strings")
_BOX = [[0, 0, 0], [1, 1, 1]]
_add("scene-box-shape", top("scene_box", [1, 1, 1]), match=TJ + r": field 'scene_box' must be \[\[xmin")
_add("scene-box-flat", top("scene_box", [[0, 0, 0], [1, 0, 1]]), match=TJ + r": field 'scene_box' needs min < max")
_add("scene-box-inf", top("scene_box", [[0, 0, 0], [1, INF, 1]]), match=TJ + r": field 'scene_box'")
_add("near-text", blender(lambda root, tmp: rs.edit_json(root / TRAIN, lambda d: d.update(scene_box=_BOX, near="close"))),
     match=TJ + r": field 'near' must be a finite number >= 0")  # fmt: skip
_add("near-above-far", blender(lambda root, tmp: rs.edit_json(root / TRAIN, lambda d: d.update(scene_box=_BOX, near=5, far=4))),
     match=TJ + r": field 'near' \(5.0\) must be below 'far' \(4.0\)")  # fmt: skip
_add("objects-not-a-list", top("objects", {"name": "ball"}), match=TJ + r": field 'objects' must be a list")
_add("objects-no-name", top("objects", [{"aabb": _BOX}]), match=TJ + r": objects\[0\]: needs a non-empty string 'name'")
_add("objects-twice", top("objects", [{"name": "ball", "aabb": _BOX}] * 2), match=TJ + r": objects\[1\]: object name 'ball' appears twice")
_add("objects-aabb-shape", top("objects", [{"name": "ball", "aabb": [0, 0, 0, 1, 1, 1]}]),
     match=TJ + r": objects\[0\] \('ball'\): field 'aabb' must be \[\[xmin")  # fmt: skip
_add("objects-aabb-text", top("objects", [{"name": "ball", "aabb": "big"}]), match=r"field 'aabb' must be \[\[xmin")
_add("objects-aabb-nan", top("objects", [{"name": "ball", "aabb": [[0, 0, NAN], [1, 1, 1]]}]),
     match=TJ + r": objects\[0\] \('ball'\): field 'aabb'")  # fmt: skip
_add("objects-aabb-inverted", top("objects", [{"name": "ball", "aabb": [[0, 2, 0], [1, 1, 1]]}]),
     match=r"objects\[0\] \('ball'\): field 'aabb' has a min above its max")  # fmt: skip

# ----------------------------------------------------------------------------- single-file (nerfstudio) layout

SJ = r"scene/transforms\.json"


def _single_set(key: str, value: Any, index=None):
    def mutate(root: Path, tmp: Path) -> None:
        if index is None:
            rs.set_top(root / "transforms.json", key, value)
        else:
            rs.set_frame(root / "transforms.json", index, key, value)

    return single(mutate)


_add("single/train-filenames-unknown", _single_set("train_filenames", ["images/nope.png"]), match=SJ + r": field 'train_filenames': 'images/nope\.png' matches no frame")
_add("single/train-filenames-string", _single_set("train_filenames", "images/frame_1.png"), match=SJ + r": field 'train_filenames' must be a list of strings")
_add("single/test-filenames-numbers", _single_set("test_filenames", [0]), match=SJ + r": field 'test_filenames' must be a list of strings")
_add(
    "single/one-frame",
    single(lambda root, tmp: rs.edit_json(root / "transforms.json", lambda d: d.__setitem__("frames", d["frames"][:1]))),
    match=SJ + r": split 'train' is empty \(1 frames in the file\)",
)
_add("single/cx-nan-per-frame", _single_set("cx", NAN, index=2), match=SJ + r": frame 2 .*'cx' must be a finite number")
_add("single/fl-y-negative-per-frame", _single_set("fl_y", -7.0, index=1), match=SJ + r": frame 1 .*focal lengths must be > 0")
_add("single/w-mismatch", _single_set("w", 10), match=SJ + r": frame \d .*field 'w' is 10 but image")
_add("single/cy-outside", _single_set("cy", 50.0), match=SJ + r".*principal point cy \(image height 6\): must be <= 12")
_add("single/fl-x-1e8", _single_set("fl_x", 1e8), match=SJ + r".*'fl_x' = 1e\+08 is implausibly large \(limit \+-1e\+07\)")
_add(
    "single/sizes-differ",
    single(lambda root, tmp: rs.png(root / "images" / "frame_2.png", size=(10, 6))),
    match=SJ + r": images of one split must share a size",
)
_add(
    "single/duplicate-name-dot-slash",
    _single_set("file_path", "./images/frame_0.png", index=1),
    match=SJ + r": frames: file_path 'images/frame_0\.png' appears twice \(entries 0 and 1\)",
)
_add(
    "single/translation-1e300",
    single(lambda root, tmp: rs.edit_json(root / "transforms.json", lambda d: d["frames"][2]["transform_matrix"][0].__setitem__(3, 1e300))),
    match=SJ + r": frame 2 .*'transform_matrix': 1 value\(s\) beyond \+-1e\+06",
)


def _single_dotdot(root: Path, tmp: Path) -> None:
    rs.outside_image(tmp)
    rs.set_frame(root / "transforms.json", 1, "file_path", "../elsewhere/secret.png")


_add("single/file-path-dotdot", single(_single_dotdot), match=SJ + r": frame 1 .*'file_path'.*outside the dataset folder")

# ----------------------------------------------------------------------------- loader options (Python API)

_ok = blender(lambda root, tmp: None)
_add("option/downscale-zero", _ok, match=r"^downscale: must be >= 1 .*got 0", downscale=0)
_add("option/downscale-half", _ok, match=r"^downscale: must be >= 1 .*got 0\.5; a factor below 1 would upsample", downscale=0.5)
_add("option/downscale-negative", _ok, match=r"^downscale: must be >= 1", downscale=-2)
_add("option/downscale-nan", _ok, match=r"^downscale: must be finite, got nan", downscale=NAN)
_add("option/downscale-infinity", _ok, match=r"^downscale: must be finite, got inf", downscale=INF)
_add("option/downscale-word", _ok, match=r"^downscale: expected a number >= 1, got 'two'", downscale="two")
_add("option/downscale-bool", _ok, match=r"^downscale: expected a number, got True", downscale=True)
_add("option/downscale-none", _ok, match=r"^downscale: expected a number, got None", downscale=None)
_add("option/background-pink", _ok, match=r"background must be one of .* got 'pink'", background="pink")
_add("option/splits-unknown", _ok, match=r"scene: no split 'nonsense'; available", splits=["nonsense"])
_add("option/splits-string", _ok, match=r"scene: splits: expected a list of split names", splits="train")
_add("option/max-images-zero", _ok, match=r"^max_images: must be >= 1, got 0", max_images=0)
_add("option/max-images-fraction", _ok, match=r"^max_images: expected an integer, got 1\.5", max_images=1.5)
_add("option/max-images-string", _ok, match=r"^max_images: expected an integer, got '2'", max_images="2")
_add("option/normalize-banana", _ok, match=r"^normalize: must be one of .* got 'banana'", normalize="banana")
_add("option/unknown-option", _ok, error=TypeError, match=r"dataset format 'transforms' .*options \['num_frames'\] do not fit", num_frames=3)
_add("option/format-unknown", _ok, error=ValueError, match=r"unknown dataset format 'nerf'; registered formats", format="nerf")
_add("option/format-mismatch", _ok, error=FileNotFoundError, match=r"LLFF poses file not found: .*scene/poses_bounds\.npy", format="llff")
_add("option/path-missing", lambda tmp: tmp / "nope", error=FileNotFoundError, match=r"nope: dataset path does not exist; the dataset formats")


def _text_file(tmp: Path) -> Path:
    (tmp / "notes.txt").write_text("hello")
    return tmp / "notes.txt"


def _empty_dir(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


_add("option/path-is-text-file", _text_file, error=FileNotFoundError, match=r"notes\.txt: not a known dataset file")
_add("option/path-empty-folder", _empty_dir, error=FileNotFoundError, match=r"empty: not a known dataset;")
