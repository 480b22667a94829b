"""The ``langfield`` command line: help texts, errors, and a train -> eval -> render round trip."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from langfield.cli.main import main


def test_help_lists_commands_and_explains_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for cmd in ("train", "render", "eval", "demo"):
        assert cmd in text
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for opt in ("--data", "--method", "--max-seconds", "--downscale", "--resume", "--set", "--preset", "ngp", "gaussians"):
        assert opt in text
    assert "wall-clock training budget" in text.lower()


def test_bad_data_path_gives_clear_error(tmp_path, capsys):
    rc = main(["train", "--data", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "run")])
    assert rc == 2
    assert "missing" in capsys.readouterr().err


def test_bad_override_gives_clear_error(tmp_path, capsys):
    rc = main(["train", "--set", "field.no_such_field=3", "--output-dir", str(tmp_path / "run")])
    assert rc == 2
    assert "no_such_field" in capsys.readouterr().err


def test_render_of_missing_run_gives_clear_error(tmp_path, capsys):
    rc = main(["render", str(tmp_path)])
    assert rc == 2
    assert "run.json" in capsys.readouterr().err


def test_train_eval_render_round_trip(tmp_path):
    run_dir = tmp_path / "run"
    common = ["--set", "field.hash_grid.num_levels=4", "--set", "field.hash_grid.log2_hashmap_size=12",
              "--set", "steps_per_diagonal=128", "--set", "grid.resolution=32"]
    rc = main(["train", "--data", "procedural", "--max-steps", "3", "--num-rays", "128", "--output-dir", str(run_dir),
               "--eval-every", "0", "--checkpoint-every", "0", "--device", "cpu", *common])
    assert rc == 0
    spec = json.loads((run_dir / "run.json").read_text())
    assert spec["method"] == "ngp" and spec["method_config"]["field"]["hash_grid"]["num_levels"] == 4
    result = json.loads((run_dir / "eval_test.json").read_text())
    assert result["num_images"] == 8 and result["psnr"] > 5.0
    assert list((run_dir / "renders" / "test").glob("*_compare.png"))

    assert main(["eval", str(run_dir), "--device", "cpu"]) == 0
    assert main(["render", str(run_dir), "--path", "orbit", "--num-frames", "4", "--device", "cpu",
                 "--outputs", "rgb", "depth"]) == 0
    videos = sorted(p.name for p in (run_dir / "renders" / "orbit").glob("*.mp4"))
    assert videos == ["orbit_depth.mp4", "orbit_rgb.mp4"]
    assert main(["render", str(run_dir), "--path", "test", "--device", "cpu", "--outputs", "rgb", "normals"]) == 0
    assert list((run_dir / "renders" / "test").glob("*_normals.png"))


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "langfield.cli.main", "demo", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--budget-s" in out.stdout


def test_gaussians_train_render_export_round_trip(tmp_path):
    from plyfile import PlyData

    run_dir = tmp_path / "gs"
    rc = main(["train", "--method", "gaussians", "--data", "procedural", "--max-steps", "3", "--output-dir",
               str(run_dir), "--eval-every", "0", "--checkpoint-every", "0", "--device", "cpu",
               "--set", "init_num_random=500", "--set", "strategy.refine_start_iter=1"])
    assert rc == 0
    strategy = json.loads((run_dir / "run.json").read_text())["method_config"]["strategy"]
    assert strategy["type"] == "default" and strategy["refine_start_iter"] == 1
    assert strategy["refine_stop_iter"] == 2500  # the cpu preset's, applied before --set
    result = json.loads((run_dir / "eval_test.json").read_text())
    assert result["num_images"] == 8 and result["psnr"] > 5.0
    assert main(["render", str(run_dir), "--path", "orbit", "--num-frames", "4", "--device", "cpu"]) == 0
    assert list((run_dir / "renders" / "orbit").glob("*.mp4"))
    assert main(["export", str(run_dir), "--format", "ply"]) == 0
    ply = PlyData.read(str(run_dir / "export" / "point_cloud.ply"))
    names = [p.name for p in ply["vertex"].properties]
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[-8:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert ply["vertex"].count == 500


def test_export_of_a_nerf_run_is_refused(tmp_path, capsys):
    (tmp_path / "run.json").write_text(json.dumps({"method": "ngp"}))
    assert main(["export", str(tmp_path)]) == 2
    assert "only 'gaussians' runs export" in capsys.readouterr().err


def test_programming_errors_show_their_traceback(monkeypatch):
    from langfield.cli import main as cli

    def broken(args):
        raise KeyError("a bug, not bad input")

    monkeypatch.setitem(cli.COMMANDS, "eval", (cli.Eval, broken))
    with pytest.raises(KeyError, match="a bug"):
        cli.main(["eval", "somewhere"])


def test_debug_env_shows_the_traceback_of_input_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("LANGFIELD_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="run.json"):
        main(["render", str(tmp_path)])


def test_error_message_keeps_long_paths_whole(tmp_path):
    """rich wraps at the terminal width (80 without a TTY); an error naming a file must not break its path."""
    from tests.robustness.framework import CliRefused, cli

    deep = tmp_path.joinpath(*(["a_rather_long_folder_name"] * 6)) / "run_that_does_not_exist"
    with pytest.raises(CliRefused) as info:
        cli(["eval", str(deep)])
    assert str(deep) in str(info.value)


def test_procedural_writes_a_labelled_scene_with_its_object_boxes(tmp_path, capsys):
    from langfield.data import load_dataset

    out = tmp_path / "tabletop"
    rc = main(["procedural", str(out), "--layout", "tabletop", "--width", "16", "--height", "12", "--num-train", "3",
               "--num-test", "1", "--num-val", "1"])  # fmt: skip
    assert rc == 0
    assert "'tabletop' layout (3/1/1" in capsys.readouterr().err
    ds = load_dataset(out)
    assert ds.labels[1:] == list(ds.object_boxes) and ds.split("val").semantics.shape == (1, 12, 16)
    with pytest.raises(SystemExit) as exc:
        main(["procedural", str(tmp_path / "x"), "--layout", "kitchen"])
    assert exc.value.code == 2 and "kitchen" in capsys.readouterr().err and not (tmp_path / "x").exists()
