"""Bad inputs for the LLFF reader: ``poses_bounds.npy`` (shape, dtype, pickles, headers, values) and ``images/``.

``poses_bounds.npy`` rows are ``[3x5 pose | near far]`` row-major: column ``j`` of the pose row ``r``
is index ``5 r + j``; translation at indices 3, 8, 13; ``hwf = (H, W, focal)`` at 4, 9, 14;
``near, far`` at 15, 16.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, List

import numpy as np

from langfield._checks import InputError
from langfield.data import load_dataset
from langfield.io.colmap import ColmapPoints, write_points3d_binary, write_points3d_text
from tests.robustness import reader_scenes as rs
from tests.robustness.framework import Case

NAN, INF = float("nan"), float("inf")
PB = r"scene/poses_bounds\.npy"

CASES: List[Case] = []


def _add(name: str, mutate: Callable[[Path, Path], Any], error=InputError, match: str = ".", **load_kw: Any) -> None:
    def run(tmp: Path) -> None:
        root = rs.llff_scene(tmp / "scene")
        mutate(root, tmp)
        load_dataset(root, **load_kw)

    CASES.append(Case(f"readers/llff/{name}", run, error, match))


def npy(fn: Callable[[np.ndarray], Any]):
    return lambda root, tmp: rs.edit_npy(root, fn)


def value(row: int, index: int, v: float):
    def fn(a: np.ndarray) -> None:
        a[row, index] = v

    return npy(fn)


def write(data: bytes):
    return lambda root, tmp: (root / "poses_bounds.npy").write_bytes(data)


def _header_claims(rows: int):
    def mutate(root: Path, tmp: Path) -> None:
        with open(root / "poses_bounds.npy", "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (rows, 17)})
            f.write(rs.llff_rows(3).astype("<f8").tobytes())

    return mutate


def _pickle(root: Path, tmp: Path) -> None:
    arr = np.empty(3, dtype=object)
    arr[:] = [{"pose": 1}, [2], "three"]
    np.save(root / "poses_bounds.npy", arr, allow_pickle=True)


def _npz(root: Path, tmp: Path) -> None:
    with open(root / "poses_bounds.npy", "wb") as f:
        np.savez(f, poses=rs.llff_rows(3))


def _truncate(root: Path, tmp: Path) -> None:
    p = root / "poses_bounds.npy"
    p.write_bytes(p.read_bytes()[:-100])


def _as_dir(root: Path, tmp: Path) -> None:
    (root / "poses_bounds.npy").unlink()
    (root / "poses_bounds.npy").mkdir()


def _reflect(a: np.ndarray) -> None:
    a[0, [0, 5, 10]] *= -1.0


def _scale(a: np.ndarray) -> None:
    a[0, [0, 1, 2, 5, 6, 7, 10, 11, 12]] *= 2.0


# ----------------------------------------------------------------------------- the .npy file

_add("npy-wrong-columns", npy(lambda a: a[:, :15]), match=PB + r": expected an \[N, 17\] array .*got shape \(3, 15\)")
_add("npy-1d", npy(lambda a: a.reshape(-1)), match=PB + r": expected an \[N, 17\] array .*got shape \(51,\)")
_add("npy-3d", npy(lambda a: a.reshape(3, 17, 1)), match=PB + r": expected an \[N, 17\] array .*got shape \(3, 17, 1\)")
_add("npy-zero-rows", npy(lambda a: a[:0]), match=PB + r": expected an \[N, 17\] array .*got shape \(0, 17\)")
_add("npy-pickled-objects", _pickle, match=PB + r": holds Python objects \(a pickle\); only numeric arrays are read")
_add("npy-garbage", write(bytes(range(256))), match=PB + r": not a valid \.npy file")
_add("npy-zero-bytes", write(b""), match=PB + r": not a valid \.npy file")
_add("npy-text", write(b"1 2 3\n4 5 6\n"), match=PB + r": not a valid \.npy file")
_add("npy-is-npz", _npz, match=PB + r": not a valid \.npy file")
_add("npy-header-claims-2^40-rows", _header_claims(2**40), match=PB + r": header declares shape \(1099511627776, 17\) \(136\.0 TiB\) but the file holds only")
_add("npy-header-claims-4-rows", _header_claims(4), match=PB + r": header declares shape \(4, 17\).*\(truncated or corrupt\)")
_add("npy-truncated", _truncate, match=PB + r": header declares shape \(3, 17\).*\(truncated or corrupt\)")
_add("npy-complex", npy(lambda a: a.astype(np.complex128)), match=PB + r": expected a real-valued .* got dtype complex128")
_add("npy-strings", npy(lambda a: a.astype("U8")), match=PB + r": expected a numeric array, got dtype <U8")
_add("npy-bool", npy(lambda a: a.astype(bool)), match=PB + r": expected a real-valued .* got dtype bool")
_add(
    "npy-structured",
    npy(lambda a: np.zeros(3, dtype=[("pose", "<f8", (15,)), ("bounds", "<f8", (2,))])),
    match=PB + r": expected a numeric array, got dtype",
)
_add("npy-is-directory", _as_dir, match=PB + r": is a directory where a file is expected", format="llff")

# ----------------------------------------------------------------------------- values

_add("row-nan", value(1, 3, NAN), match=PB + r": row 1 has non-finite values")
_add("translation-1e300", value(0, 3, 1e300), match=PB + r": row 0: pose entries up to 1e\+300 are implausibly large")
_add("translation-1e7", value(2, 13, -1e7), match=PB + r": row 2: pose entries up to 1e\+07 are implausibly large")
_add("translation-infinity", value(0, 8, INF), match=PB + r": row 0 has non-finite values")
_add("rotation-scaled", npy(_scale), match=PB + r": row 0: pose rotation is not rigid")
_add("rotation-reflection", npy(_reflect), match=PB + r": row 0: pose rotation is not rigid")
_add("rotation-zero", npy(lambda a: a.__setitem__((1, [0, 1, 2, 5, 6, 7, 10, 11, 12]), 0.0)), match=PB + r": row 1: pose rotation is not rigid")
_add("hwf-height-zero", value(0, 4, 0.0), match=PB + r": row 0: hwf \(H, W\): height: must be >= 1, got 0")
_add("hwf-width-negative", value(1, 9, -8.0), match=PB + r": row 1: hwf \(H, W\): width: must be >= 1, got -8")
_add("hwf-height-fractional", value(0, 4, 6.5), match=PB + r": row 0: hwf H must be a whole number of pixels, got 6\.5")
_add("hwf-width-1e9", value(2, 9, 1e9), match=PB + r": row 2: hwf \(H, W\): width: must be <= 131072")
_add("hwf-focal-zero", value(0, 14, 0.0), match=PB + r": row 0: hwf focal must be in \(0, 1e\+07\] pixels, got 0")
_add("hwf-focal-negative", value(1, 14, -7.0), match=PB + r": row 1: hwf focal must be in \(0, 1e\+07\] pixels, got -7")
_add("hwf-focal-nan", value(0, 14, NAN), match=PB + r": row 0 has non-finite values")
_add("hwf-focal-1e300", value(0, 14, 1e300), match=PB + r": row 0: hwf focal must be in \(0, 1e\+07\] pixels, got 1e\+300")
_add("near-zero", value(0, 15, 0.0), match=PB + r": row 0: bounds must satisfy 0 < near < far")
_add("near-negative", value(2, 15, -1.0), match=PB + r": row 2: bounds must satisfy 0 < near < far")
_add("near-above-far", value(1, 15, 30.0), match=PB + r": row 1: bounds must satisfy 0 < near < far .*\[30\.0, 20\.0\]")
_add("far-1e300", value(0, 16, 1e300), match=PB + r": row 0: bounds must satisfy 0 < near < far <= 1e\+06")
_add("far-infinity", value(0, 16, INF), match=PB + r": row 0 has non-finite values")
_add("bd-factor-zero", lambda root, tmp: None, match=r"bd_factor must be > 0, got 0", bd_factor=0.0)
_add("bd-factor-nan", lambda root, tmp: None, match=r"bd_factor must be > 0, got nan", bd_factor=NAN)

# ----------------------------------------------------------------------------- images


def _symlink_image(root: Path, tmp: Path) -> None:
    target = rs.outside_image(tmp)
    (root / "images" / "img_1.png").unlink()
    os.symlink(target, root / "images" / "img_1.png")


def _symlink_folder(root: Path, tmp: Path) -> None:
    (root / "images").rename(tmp / "elsewhere")
    os.symlink(tmp / "elsewhere", root / "images")


def _images_file(root: Path, tmp: Path) -> None:
    for p in (root / "images").iterdir():
        p.unlink()
    (root / "images").rmdir()
    (root / "images").write_text("not a folder")


_add("extra-image", lambda root, tmp: rs.png(root / "images" / "img_3.png"), match=PB + r": 3 poses but 4 images in .*scene/images")
_add("missing-image", lambda root, tmp: (root / "images" / "img_2.png").unlink(), match=PB + r": 3 poses but 2 images in .*scene/images")
_add(
    "no-image-folder",
    lambda root, tmp: [p.unlink() for p in (root / "images").iterdir()] and (root / "images").rmdir(),
    error=FileNotFoundError,
    match=r"scene: no image folder usable for downscale 1: looked for 'images/'",
)
_add("images-is-a-file", _images_file, error=FileNotFoundError, match=r"scene: no image folder usable for downscale 1: .*\('images' is not a folder\)")
_add("image-symlink-escape", _symlink_image, match=r"scene/images: image: .*img_1\.png resolves to .*outside the dataset folder")
_add("image-folder-symlink-escape", _symlink_folder, match=r"scene/images: image: .*img_0\.png resolves to .*outside the dataset folder")
_add(
    "image-sizes-differ",
    lambda root, tmp: rs.png(root / "images" / "img_2.png", size=(10, 6)),
    match=r"scene/images \[train\]: images of one split must share a size, .*img_2\.png is 10x6",
)
_add("hwf-aspect-mismatch", value(0, 9, 16.0), match=r"scene/images vs .*poses_bounds\.npy hwf: image size 8x6 does not match the camera size 16x6")
_add("image-garbage", lambda root, tmp: (root / "images" / "img_1.png").write_bytes(b"\x89PNG garbage"), match=r"img_1\.png: cannot read image header")
_add("first-image-zero-bytes", lambda root, tmp: (root / "images" / "img_0.png").write_bytes(b""), match=r"img_0\.png: cannot read image header")
_add("downscale-half", lambda root, tmp: None, match=r"^downscale: must be >= 1", downscale=0.5)

# ----------------------------------------------------------------------------- sparse points beside the poses


def _points(text: bool, fn: Callable[[ColmapPoints], ColmapPoints]):
    def mutate(root: Path, tmp: Path) -> None:
        folder = root / "sparse" / "0"
        folder.mkdir(parents=True)
        pts = fn(ColmapPoints.create(np.random.default_rng(0).normal(size=(4, 3))))
        (write_points3d_text if text else write_points3d_binary)(pts, folder / ("points3D.txt" if text else "points3D.bin"))

    return mutate


def _with_xyz(row: int, v: float):
    def fn(p: ColmapPoints) -> ColmapPoints:
        p.xyz[row, 1] = v
        return p

    return fn


def _garbage_points(root: Path, tmp: Path) -> None:
    (root / "sparse" / "0").mkdir(parents=True)
    (root / "sparse" / "0" / "points3D.bin").write_bytes(b"\xff" * 20)


_add("sparse-points-nan", _points(False, _with_xyz(2, NAN)), match=r"sparse/0/points3D\.bin: point 3 \(#2\): position .* is not finite")
_add("sparse-points-1e300-text", _points(True, _with_xyz(1, 1e300)), match=r"sparse/0/points3D\.txt, line 5: point 2: position \(X Y Z\)")
_add("sparse-points-garbage", _garbage_points, match=r"sparse/0/points3D\.bin: declares \d+ points .*truncated or corrupt")
