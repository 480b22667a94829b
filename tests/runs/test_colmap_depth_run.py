"""``--colmap-depth-maps``: a COLMAP dense workspace's MVS depth maps supervise a run end to end."""

from __future__ import annotations

import json

from langfield.cli.main import main
from langfield.data.procedural import ProceduralSceneConfig, write_procedural_dataset
from tests.data.readers.test_colmap import write_colmap_scene, write_depth_maps


def test_cli_trains_on_colmap_depth_maps_and_refuses_them_elsewhere(tmp_path, capsys):
    root = tmp_path / "dense"
    write_depth_maps(root, write_colmap_scene(root, n=9, model="PINHOLE"))
    common = ["train", "--method", "gaussians", "--max-steps", "2", "--eval-every", "0", "--checkpoint-every", "0",
              "--device", "cpu", "--set", "init_num_random=200", "--set", "ssim_lambda=0", "--set", "depth_loss_weight=0.5",
              "--colmap-depth-maps", "geometric"]  # fmt: skip
    assert main([*common, "--data", str(root), "--output-dir", str(tmp_path / "run")]) == 0
    spec = json.loads((tmp_path / "run" / "run.json").read_text())
    assert spec["data"]["colmap_depth_maps"] == "geometric"
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(r["event"] == "train" and "depth_l1" in r for r in records)
    other = write_procedural_dataset(tmp_path / "procedural", ProceduralSceneConfig(width=8, height=8, num_train=2, num_test=1))
    assert main([*common, "--data", str(other), "--output-dir", str(tmp_path / "run2")]) == 2
    err = capsys.readouterr().err
    assert "DataConfig.colmap_depth_maps (--colmap-depth-maps geometric)" in err and "'transforms' scene" in err
    assert "Traceback" not in err
