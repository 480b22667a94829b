"""The capture pipeline (langfield.capture.pipeline / sfm): the registration threshold, the matcher
choice, errors (pycolmap missing, a crashing worker, no images), the whole pipeline with a fake
pycolmap worker, and one real pycolmap run on 6 fern photos (skipped without pycolmap or the data)."""

from __future__ import annotations

import io
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from langfield._checks import InputError
from langfield.capture import CaptureConfig, CaptureError, capture, check_registration, choose_matcher
from langfield.capture import sfm as sfm_module
from langfield.capture.sfm import run_worker
from langfield.cli.main import main
from langfield.data.readers.llff import read_poses_bounds
from langfield.geometry.alignment import align_camera_poses
from langfield.io.colmap import qvec_to_rotmat, read_model, rotmat_to_qvec, write_model
from langfield.io.images import write_image

FERN = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "llff" / "fern"


def test_registration_threshold():
    given = [f"im{i}" for i in range(10)]
    assert check_registration(given, given[:8], 0.8) == ["im8", "im9"]
    with pytest.raises(CaptureError, match=r"only 7 of 10 images registered \(70 % < 80 %\); not registered: im0, im8, im9"):
        check_registration(given, given[1:8], 0.8)
    with pytest.raises(CaptureError, match="only 7 of 10"):
        check_registration(given, given[:8], 0.8, dropped=["im3"])  # a dropped camera is not registered
    with pytest.raises(CaptureError, match="only 0 of 3"):
        check_registration(["a", "b", "c"], [], 0.0)  # nothing registered always fails
    many = [f"p{i:03d}" for i in range(100)]
    with pytest.raises(CaptureError, match=r"\.\.\. and 60 more"):
        check_registration(many, many[:20], 0.8)


def test_matcher_choice(tmp_path):
    assert choose_matcher("auto", 500, is_video=True) == "sequential"
    assert choose_matcher("auto", 100, is_video=False) == "exhaustive"
    assert choose_matcher("auto", 101, is_video=False) == "sequential"  # no vocabulary: never downloaded
    vocab = tmp_path / "vocab.bin"
    vocab.write_bytes(b"x")
    assert choose_matcher("auto", 101, is_video=False, vocab_tree=vocab) == "vocab_tree"
    assert choose_matcher("auto", 100, is_video=False, vocab_tree=vocab) == "exhaustive"
    assert choose_matcher("sequential", 10, is_video=False) == "sequential"
    with pytest.raises(InputError, match="--vocab-tree FILE"):
        choose_matcher("vocab_tree", 10, is_video=False)
    with pytest.raises(InputError, match="missing.bin: no such file"):
        choose_matcher("auto", 10, is_video=False, vocab_tree=tmp_path / "missing.bin")
    with pytest.raises(InputError, match="--matcher"):
        choose_matcher("flann", 10, is_video=False)
    with pytest.raises(InputError, match="min_registered"):
        CaptureConfig(min_registered=1.5)
    with pytest.raises(InputError, match="num_threads"):
        CaptureConfig(num_threads=0)


def _photos(folder: Path, names, size=(150, 200)):
    for n in names:
        write_image(folder / n, np.full(size + (3,), 90, np.uint8))
    return folder


def test_missing_pycolmap_and_missing_images_give_clear_errors(tmp_path, monkeypatch, capsys):
    photos = _photos(tmp_path / "photos", ["a.png", "b.png", "c.png"])
    real_find_spec = sfm_module.importlib.util.find_spec
    monkeypatch.setattr(sfm_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "pycolmap" else real_find_spec(name, *a))  # fmt: skip
    with pytest.raises(CaptureError, match=r"needs pycolmap.*pip install -e '\.\[capture\]'"):
        capture(photos, tmp_path / "out")
    assert main(["capture", str(photos), "--output", str(tmp_path / "out")]) == 2
    assert "pip install -e '.[capture]'" in capsys.readouterr().err
    monkeypatch.undo()
    empty = tmp_path / "empty"
    empty.mkdir()
    fake = [sys.executable, "-c", "pass"]
    with pytest.raises(InputError, match="no images"):
        capture(empty, tmp_path / "out2", worker_command=fake)
    with pytest.raises(InputError, match="no such folder or video"):
        capture(tmp_path / "nowhere", tmp_path / "out3", worker_command=fake)
    with pytest.raises(InputError, match="a single photo"):
        capture(photos / "a.png", tmp_path / "out5", worker_command=fake)
    (tmp_path / "clip.mov").write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="clip.mov: ffmpeg cannot read"):
        capture(tmp_path / "clip.mov", tmp_path / "out4", worker_command=fake)


def test_a_crashing_worker_becomes_a_clear_error(tmp_path):
    script = ("import os, sys; print('@@stage matching', flush=True); "
              "sys.stderr.write('F20261202 12:00:00.0 1 matching.cc:12] Check failed: boom\\n'); sys.stderr.flush(); os.abort()")  # fmt: skip
    events = []
    with pytest.raises(CaptureError) as exc:
        run_worker({"task": "sfm"}, tmp_path / "work", tmp_path / "log.txt", command=[sys.executable, "-c", script],
                   on_event=lambda *e: events.append(e))  # fmt: skip
    msg = str(exc.value)
    assert "killed by SIGABRT" in msg and "stage 'matching'" in msg and "Check failed: boom" in msg
    assert str(tmp_path / "log.txt") in msg and "Check failed: boom" in (tmp_path / "log.txt").read_text()
    assert events == [("stage", "matching", None)]
    with pytest.raises(CaptureError, match="time limit of 1 s"):
        run_worker({"task": "sfm"}, tmp_path / "work", tmp_path / "log.txt",
                   command=[sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=1)  # fmt: skip
    photos = _photos(tmp_path / "photos", ["a.png", "b.png", "c.png"])
    with pytest.raises(CaptureError, match="killed by SIGABRT"):
        capture(photos, tmp_path / "scene", worker_command=[sys.executable, "-c", script], progress=False)
    report = json.loads((tmp_path / "scene" / "capture_report.json").read_text())
    assert report["status"] == "failed" and "SIGABRT" in report["error"] and report["images_given"] == 3
    with pytest.raises(CaptureError, match="exit status 3"):
        run_worker({"task": "sfm"}, tmp_path / "work", tmp_path / "log.txt", command=[sys.executable, "-c", "raise SystemExit(3)"])


FAKE_WORKER = """
import json, shutil, sys
from pathlib import Path
req = json.loads(Path(sys.argv[1]).read_text())
print("@@stage features", flush=True)
sys.stderr.write("Processed file [1/2]\\n")
if req["task"] == "sfm":
    shutil.copytree({staging!r}, Path(req["work_dir"]) / "sparse", ignore=shutil.ignore_patterns("*.json"))
    Path(req["result_path"]).write_text(json.dumps({{"seconds": {{}}, "pairs": [], "pycolmap_version": "fake"}}))
if req["task"] == "relocalize":
    staged = Path({staging!r}) / "relocalize.json"
    Path(req["result_path"]).write_text(staged.read_text() if staged.is_file() else '{{"images": []}}')
print("@@done features 0.25", flush=True)
"""


def test_whole_pipeline_with_a_fake_worker(tmp_path, make_model):
    names = [f"img_{k:03d}.png" for k in range(10)]
    photos = _photos(tmp_path / "photos", names)
    real = make_model(num_images=10, names=names)
    bad = real.images[5]  # repetitive structure: registered turned 180 degrees about its optical axis
    R = qvec_to_rotmat(bad.qvec)
    flipped = np.diag([-1.0, -1.0, 1.0]) @ R
    real.images[5] = replace(bad, qvec=rotmat_to_qvec(flipped), tvec=-flipped @ (-R.T @ bad.tvec))
    staging = tmp_path / "staging"
    write_model(make_model(num_images=2, names=names[:2], seed=3), staging / "0")  # a stray 2-image model
    write_model(real, staging / "1")
    worker = tmp_path / "fake_worker.py"
    worker.write_text(FAKE_WORKER.format(staging=str(staging)))
    out = tmp_path / "scene"
    (tmp_path / "other" / "sparse").mkdir(parents=True)  # someone else's scene is never overwritten
    with pytest.raises(InputError, match="already holds sparse that langfield capture did not write"):
        capture(photos, tmp_path / "other", worker_command=[sys.executable, str(worker)], progress=False)
    shown = io.StringIO()
    result = capture(photos, out, CaptureConfig(undistort=False), worker_command=[sys.executable, str(worker)],
                     progress=False, console=Console(file=shown, width=300))  # fmt: skip
    assert "1 suspicious camera(s), 0 re-localised and kept, 1 dropped: img_004.png: mean reprojection error" in shown.getvalue()
    report = json.loads((out / "capture_report.json").read_text())
    assert report == json.loads(json.dumps(result.report))
    assert report["status"] == "ok" and report["kind"] == "photos" and report["matcher"] == "exhaustive"
    assert report["models_found"] == {"0": {"images": 2, "points": 80}, "1": {"images": 10, "points": 80}}
    assert report["model_chosen"] == "1"
    assert [d["name"] for d in report["dropped"]] == ["img_004.png"]
    assert "reprojection" in report["dropped"][0]["reasons"][0]
    assert report["images_given"] == 10 and report["registered"] == 9 and report["unregistered"] == ["img_004.png"]
    assert report["registered_fraction"] == pytest.approx(0.9) and report["points"] == 80
    assert report["mean_reprojection_error_px"] < 1e-9 and report["mean_track_length"] == pytest.approx(9.0)
    assert report["seconds"]["features"] == 0.25 and report["seconds"]["total"] > 0
    assert sorted(p.name for p in (out / "sparse").iterdir()) == ["0"]
    final = read_model(out / "sparse" / "0")
    assert sorted(im.name for im in final.images.values()) == [n for n in names if n != "img_004.png"]
    frames = json.loads((out / "transforms.json").read_text())["frames"]
    assert len(frames) == 9 and frames[0]["file_path"] == "images/img_000.png"
    assert (out / "images" / "img_009.png").is_file() and (out / "sparse_points.ply").is_file()

    with pytest.raises(CaptureError, match=r"only 9 of 10 images registered .* not registered: img_004.png"):
        capture(photos, out, CaptureConfig(undistort=False, min_registered=0.95),
                worker_command=[sys.executable, str(worker)], progress=False)  # fmt: skip
    failed = json.loads((out / "capture_report.json").read_text())
    assert failed["status"] == "failed" and "only 9 of 10" in failed["error"] and failed["unregistered"] == ["img_004.png"]

    # re-localisation: a pose that passes every check keeps the camera, a still-wrong one is dropped
    def relocalized(image):
        return {"images": [{"name": image.name, "ok": True, "num_inliers": 80, "num_correspondences": 80,
                            "rotation": qvec_to_rotmat(image.qvec).tolist(), "translation": image.tvec.tolist(),
                            "xys": image.xys.tolist(), "point3d_ids": image.point3d_ids.tolist()}]}  # fmt: skip

    (staging / "relocalize.json").write_text(json.dumps(relocalized(bad)))  # the true pose
    report = capture(photos, out, CaptureConfig(undistort=False), worker_command=[sys.executable, str(worker)],
                     progress=False).report  # fmt: skip
    assert report["registered"] == 10 and report["dropped"] == [] and report["suspicious"][0]["name"] == "img_004.png"
    assert report["relocalized"][0]["name"] == "img_004.png"
    assert report["relocalized"][0]["rotation_change_deg"] == pytest.approx(180.0, abs=1e-6)
    final = read_model(out / "sparse" / "0")
    back = next(im for im in final.images.values() if im.name == "img_004.png")
    np.testing.assert_allclose(qvec_to_rotmat(back.qvec), qvec_to_rotmat(bad.qvec), atol=1e-9)
    assert final.points.track_lengths.tolist() == [10] * 80
    (staging / "relocalize.json").write_text(json.dumps(relocalized(real.images[5])))  # still flipped
    report = capture(photos, out, CaptureConfig(undistort=False), worker_command=[sys.executable, str(worker)],
                     progress=False).report  # fmt: skip
    assert report["relocalized"] == [] and [d["name"] for d in report["dropped"]] == ["img_004.png"]
    assert report["registered"] == 9

    (tmp_path / "empty_staging").mkdir()
    nothing = tmp_path / "nothing_worker.py"
    nothing.write_text(FAKE_WORKER.format(staging=str(tmp_path / "empty_staging")))
    with pytest.raises(CaptureError, match=r"reconstructed no model from the 10 images .*matcher exhaustive"):
        capture(photos, out, CaptureConfig(undistort=False), worker_command=[sys.executable, str(nothing)], progress=False)
    report = json.loads((out / "capture_report.json").read_text())
    assert report["status"] == "failed" and len(report["unregistered"]) == 10


INJECTING_WORKER = """
import json, runpy, sys
from pathlib import Path
worker = runpy.run_path({worker!r})  # the real worker script (imports no langfield: starts fast)
req = json.loads(Path(sys.argv[1]).read_text())
code = worker["main"](sys.argv[1:])
if req["task"] == "sfm":  # SfM registered image004 turned 180 degrees about its down axis
    from dataclasses import replace
    import numpy as np
    from langfield.io.colmap import qvec_to_rotmat, read_model, rotmat_to_qvec, write_model
    d = Path(req["work_dir"]) / "sparse" / "0"
    m = read_model(d)
    im = next(i for i in m.images.values() if i.name == "image004.png")
    R = qvec_to_rotmat(im.qvec)
    F = np.diag([-1.0, 1.0, -1.0]) @ R
    m.images[im.id] = replace(im, qvec=rotmat_to_qvec(F), tvec=-F @ (-R.T @ im.tvec))
    write_model(m, d)
sys.exit(code)
"""


@pytest.mark.slow  # ~8 s on 2 quiet cores (pycolmap on 6 photos of 504x378, three worker processes)
@pytest.mark.skipif(not (FERN / "images_8").is_dir(), reason=f"LLFF fern not found at {FERN}")
def test_real_pycolmap_run_on_six_fern_photos_repairs_a_flipped_camera(tmp_path):
    """pycolmap on 6 fern photos, with the model tampered after mapping (one camera turned 180 degrees):
    the checks flag it, the re-localisation worker repairs it, and every camera then matches
    poses_bounds.npy; the undistorted folder has PINHOLE cameras."""
    pytest.importorskip("pycolmap")
    photos = tmp_path / "photos"
    photos.mkdir()
    picked = [f"image{i:03d}.png" for i in range(0, 12, 2)]
    for n in picked:
        os.symlink(FERN / "images_8" / n, photos / n)
    worker = tmp_path / "injecting_worker.py"
    worker.write_text(INJECTING_WORKER.format(worker=str(Path(sfm_module.__file__).with_name("_worker.py"))))
    result = capture(photos, tmp_path / "scene", CaptureConfig(num_threads=1, max_num_features=2048), progress=False,
                     worker_command=[sys.executable, str(worker)])  # fmt: skip
    report = result.report
    assert [s["name"] for s in report["suspicious"]] == ["image004.png"]
    assert report["relocalized"][0]["name"] == "image004.png" and report["dropped"] == []
    assert report["relocalized"][0]["rotation_change_deg"] == pytest.approx(180.0, abs=2.0)
    assert report["registered"] == 6 and report["pairs_checked"] >= 6
    model = read_model(result.model_dir)
    ims = sorted(model.images.values(), key=lambda im: im.name)
    ref, _, _ = read_poses_bounds(FERN / "poses_bounds.npy")
    a = align_camera_poses(np.stack([im.c2w() for im in ims]), ref.numpy()[[int(im.name[5:8]) for im in ims]])
    assert a.centre_errors.max() < 0.05 and a.rotation_errors_deg.max() < 2.0
    und = read_model(tmp_path / "scene" / "undistorted" / "sparse")
    assert {c.model for c in und.cameras.values()} == {"PINHOLE"} and len(und.images) == 6


def test_cli_help_and_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["capture", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--output", "--num-frames", "--matcher", "--vocab-tree", "--num-threads", "--max-image-size",
                "--min-registered", "--camera-model", "--relocalize", "--max-pair-rotation-deg"):  # fmt: skip
        assert opt in text
    (tmp_path / "empty").mkdir()
    assert main(["capture", str(tmp_path / "empty"), "--output", str(tmp_path / "out")]) == 2
    assert "no images (.jpg, .jpeg, .png) found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written for an input that cannot work
