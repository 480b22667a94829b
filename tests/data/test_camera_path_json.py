"""nerfstudio camera_path.json: OpenGL <-> OpenCV at the boundary, vertical FOV, schema errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from langfield._checks import InputError
from langfield.data.camera_path_json import camera_path_from_dict, focal_from_fov, read_camera_path, write_camera_path
from langfield.geometry.camera_paths import orbit_path


def gl_matrix(c2w_cv: torch.Tensor) -> list:
    """What nerfstudio stores: OpenGL c2w, row-major 16 numbers."""
    m = torch.eye(4, dtype=torch.float64)
    m[:3, :4] = c2w_cv.double()
    m[:3, 1:3] *= -1
    return m.reshape(-1).tolist()


def nerfstudio_file(**overrides):
    """A camera_path.json as nerfstudio's viewer writes it (extra fields included)."""
    c2w = orbit_path((0.0, 0.0, 0.0), 3.0, 20.0, num_frames=3)
    obj = {
        "keyframes": [{"matrix": "[...]", "fov": 50, "aspect": 1.5, "override_transition_enabled": False}],
        "camera_type": "perspective",
        "render_height": 40,
        "render_width": 60,
        "camera_path": [{"camera_to_world": gl_matrix(c2w[i]), "fov": 50.0 + i, "aspect": 1.5} for i in range(3)],
        "fps": 12,
        "seconds": 0.25,
        "smoothness_value": 0.5,
        "is_cycle": False,
        "crop": None,
    }
    obj.update(overrides)
    return obj, c2w


def test_reads_a_nerfstudio_file_converting_opengl_to_opencv():
    obj, c2w = nerfstudio_file()
    path = camera_path_from_dict(obj)
    assert len(path) == 3 and (path.width, path.height, path.fps) == (60, 40, 12.0)
    assert torch.allclose(path.c2w, c2w, atol=1e-6)  # back in OpenCV axes
    assert path.fov_y_deg.tolist() == [50.0, 51.0, 52.0]
    cams = path.cameras()
    assert torch.allclose(cams.Ks[1, 1, 1], torch.tensor(20.0 / math.tan(math.radians(51.0 / 2))), atol=1e-4)
    assert cams.Ks[0, 0, 0] == cams.Ks[0, 1, 1] and cams.Ks[0, 0, 2] == 30.0 and cams.Ks[0, 1, 2] == 20.0
    # every frame looks at the orbit centre: the OpenCV optical axis (+z) points to the origin
    to_centre = torch.nn.functional.normalize(-path.c2w[:, :, 3], dim=-1)
    assert torch.allclose(path.c2w[:, :, 2], to_centre, atol=1e-5)


def test_write_read_round_trip_and_the_file_holds_opengl(tmp_path):
    c2w = orbit_path((0.0, 0.0, 0.0), 2.0, 30.0, num_frames=5)
    out = write_camera_path(tmp_path / "sub" / "camera_path.json", c2w, [40.0, 45.0, 50.0, 55.0, 60.0], 64, 48, fps=30)
    raw = json.loads(out.read_text())
    assert raw["camera_type"] == "perspective" and raw["render_width"] == 64 and raw["seconds"] == 5 / 30
    assert raw["camera_path"][2]["camera_to_world"] == pytest.approx(gl_matrix(c2w[2]), abs=1e-6)
    assert raw["camera_path"][0]["aspect"] == pytest.approx(64 / 48)
    back = read_camera_path(out)
    assert torch.allclose(back.c2w, c2w, atol=1e-6)
    assert back.fov_y_deg.tolist() == [40.0, 45.0, 50.0, 55.0, 60.0] and back.fps == 30.0
    assert abs(focal_from_fov(90.0, 100) - 50.0) < 1e-9


BAD = [
    ({"render_width": None}, "render_width"),
    ({"camera_type": "fisheye"}, "camera_type: only 'perspective'"),
    ({"camera_path": {}}, "camera_path: expected a list"),
    ({"camera_path": []}, "no frames"),
    ({"fps": 0}, "fps"),
    ({"keyframes": 3}, "keyframes"),
]
BAD_FRAME = [
    ({"camera_to_world": [1.0] * 15}, r"camera_path\[1\]\.camera_to_world: expected 16 numbers"),
    ({"camera_to_world": [1.0] * 15 + ["x"]}, r"camera_path\[1\]\.camera_to_world\[15\]: expected a number"),
    ({"camera_to_world": [2.0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1]}, r"camera_path\[1\].camera_to_world: the rotation"),
    ({"camera_to_world": [1.0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1]}, r"camera_path\[1\].camera_to_world: the last row"),
    ({"camera_to_world": [float("nan")] + [0.0] * 15}, r"camera_path\[1\]\.camera_to_world\[0\]: must be finite"),
    ({"fov": 190.0}, r"camera_path\[1\]\.fov .*must be < 180"),
    ({"fov": None}, r"camera_path\[1\]\.fov"),
    ({"aspect": 1.0}, r"camera_path\[1\]\.aspect: 1 does not match"),
]


@pytest.mark.parametrize("change,match", BAD)
def test_bad_top_level_fields_are_named(change, match):
    obj, _ = nerfstudio_file()
    obj.update(change)
    if change.get("render_width", 0) is None:
        del obj["render_width"]
        match = "missing field 'render_width'"
    with pytest.raises(InputError, match=match):
        camera_path_from_dict(obj, "cp.json")


@pytest.mark.parametrize("change,match", BAD_FRAME)
def test_bad_frames_are_named(change, match):
    obj, _ = nerfstudio_file()
    obj["camera_path"][1].update(change)
    if change.get("fov", 0) is None:
        del obj["camera_path"][1]["fov"]
        match = r"camera_path\[1\]: missing field 'fov'"
    with pytest.raises(InputError, match="cp.json: " + match):
        camera_path_from_dict(obj, "cp.json")


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_camera_path(tmp_path / "missing.json")
    with pytest.raises(InputError, match="is a folder"):
        read_camera_path(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{\"render_width\": 3,")
    with pytest.raises(InputError, match=r"bad.json: not valid JSON .*line 1"):
        read_camera_path(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(InputError, match="top level"):
        read_camera_path(bad)
    with pytest.raises(InputError, match="fov_y_deg"):
        write_camera_path(tmp_path / "x.json", torch.eye(4)[:3][None], 0.0, 8, 8)
