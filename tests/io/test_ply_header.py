"""check_ply_header: element counts trusted only when the file can hold them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from langfield._checks import InputError
from langfield.io.ply_header import check_ply_header
from langfield.io.points_ply import read_points_ply, write_points_ply


def _ply(tmp_path, lines, body: bytes, name="a.ply"):
    path = tmp_path / name
    path.write_bytes(("\n".join(["ply", *lines, "end_header"]) + "\n").encode() + body)
    return path


def test_counts_of_valid_files(tmp_path):
    p = write_points_ply(tmp_path / "pts.ply", torch.arange(12.0).reshape(4, 3), torch.zeros(4, 3, dtype=torch.uint8))
    assert check_ply_header(p) == {"vertex": 4}
    np.testing.assert_array_equal(read_points_ply(p).numpy(), np.arange(12.0).reshape(4, 3))
    ascii_ply = _ply(tmp_path, ["format ascii 1.0", "comment hi", "element vertex 2", "property float x",
                                "element face 1", "property list uchar int vertex_indices"], b"1\n2\n3 0 1 1\n")  # fmt: skip
    assert check_ply_header(ascii_ply) == {"vertex": 2, "face": 1}


def test_binary_row_size_is_exact(tmp_path):
    """3 float32 per vertex: 2 vertices need 24 bytes; 23 are refused, 24 accepted."""
    lines = ["format binary_little_endian 1.0", "element vertex 2", "property float x", "property float y", "property float z"]
    assert check_ply_header(_ply(tmp_path, lines, bytes(24))) == {"vertex": 2}
    with pytest.raises(InputError, match=r"a\.ply: .*'vertex' declares 2 rows \(at least 24 bytes\) but only 23 bytes"):
        check_ply_header(_ply(tmp_path, lines, bytes(23)))


def test_list_properties_count_their_length_field(tmp_path):
    lines = ["format binary_little_endian 1.0", "element face 3", "property list uint int vertex_indices"]
    with pytest.raises(InputError, match=r"'face' declares 3 rows \(at least 12 bytes\) but only 8 bytes"):
        check_ply_header(_ply(tmp_path, lines, bytes(8)))


@pytest.mark.parametrize(
    "lines, message",
    [
        (["format ascii 1.0", "element vertex -1"], r"line 3: cannot parse 'element vertex -1'"),
        (["format json 1.0"], r"line 2: cannot parse 'format json 1.0'"),
        (["format ascii 1.0", "property float x"], r"line 3: cannot parse 'property float x'"),
        (["format ascii 1.0", "element vertex 1", "property list float x"], r"line 4: cannot parse"),
        (["element vertex 0"], r"has no 'format' line"),
    ],
)
def test_malformed_headers_name_the_line(tmp_path, lines, message):
    with pytest.raises(InputError, match=r"a\.ply: (PLY header )?" + message):
        check_ply_header(_ply(tmp_path, lines, b""))
