"""``langfield view`` / ``train --viewer`` / ``render --camera-path`` on the command line."""

from __future__ import annotations

import importlib.util
import json

import pytest

from langfield.cli.main import main
from langfield.data.camera_path_json import write_camera_path
from langfield.geometry.camera_paths import orbit_path
from langfield.viewer.server import host_warning

needs_viser = pytest.mark.skipif(importlib.util.find_spec("viser") is None, reason="viser not installed: pip install -e '.[viewer]'")


def test_view_of_a_folder_that_is_not_a_run_says_so(tmp_path, capsys):
    assert main(["view", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "run.json not found" in err and "langfield run directory" in err
    assert main(["view", str(tmp_path), "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err


def test_host_warning_only_when_exposed():
    assert host_warning("127.0.0.1") is None and host_warning("localhost") is None and host_warning("::1") is None
    assert "0.0.0.0" in host_warning("0.0.0.0") and "SSH tunnel" in host_warning("192.168.1.5")


def test_render_camera_path_to_mp4_and_bad_files_named(gaussians_run, tmp_path, capsys):
    c2w = orbit_path((0.0, 0.0, 0.0), 3.0, 25.0, num_frames=3)
    path = write_camera_path(tmp_path / "path.json", c2w, 50.0, 24, 16, fps=6)
    out = tmp_path / "videos"
    assert main(["render", str(gaussians_run), "--camera-path", str(path), "--out-dir", str(out), "--device", "cpu",
                 "--outputs", "rgb", "depth"]) == 0  # fmt: skip
    assert sorted(p.name for p in out.glob("*.mp4")) == ["path_depth.mp4", "path_rgb.mp4"]
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(out / "path_rgb.mp4"))
    meta = next(reader)
    assert tuple(meta["size"]) == (24, 16) and meta["fps"] == pytest.approx(6.0)  # the file's size and frame rate
    assert sum(1 for _ in reader) == 3
    bad = json.loads(path.read_text())
    bad["camera_path"][2]["fov"] = 200
    path.write_text(json.dumps(bad))
    assert main(["render", str(gaussians_run), "--camera-path", str(path), "--out-dir", str(out)]) == 2
    assert "camera_path[2].fov" in capsys.readouterr().err


@needs_viser
def test_train_with_viewer_attaches_the_callback(tmp_path, monkeypatch):
    from langfield.viewer.server import Viewer

    seen = {}

    def fake_wait(self):  # instead of blocking until Ctrl+C
        seen.update(url=self.url, state=self.callback.status.state, step=self.callback.status.step,
                    logged=list(self.callback.status.steps), modes=self.view.modes)  # fmt: skip

    monkeypatch.setattr(Viewer, "wait", fake_wait)
    rc = main(["train", "--method", "gaussians", "--data", "procedural", "--procedural-size", "16", "--procedural-views", "6",
               "--max-steps", "4", "--log-every", "2", "--output-dir", str(tmp_path / "run"), "--eval-every", "0",
               "--checkpoint-every", "0", "--device", "cpu", "--skip-eval", "--viewer"])  # fmt: skip
    assert rc == 0
    assert seen["url"].startswith("http://127.0.0.1:") and seen["state"] == "done" and seen["step"] == 4
    assert seen["logged"] == [2, 4] and seen["modes"][0] == "rgb"
