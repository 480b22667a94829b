import json

import pytest
import torch

from langfield.training import NonFiniteLossError, Trainer, TrainerConfig, load_checkpoint

from .toy_method import SimulatedCrash, build, make_toy_dataset, torch_test_state  # noqa: F401


def config(tmp_path, **kw):
    base = dict(
        max_steps=6, num_rays=32, log_every=2, eval_every=0, checkpoint_every=0, output_dir=str(tmp_path),
        seed=0, device="cpu", progress=False, deterministic=True,
    )
    base.update(kw)
    return TrainerConfig(**base)


def params(method):
    return {k: v.detach().clone() for k, v in method.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def read_metrics(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_training_improves_the_toy_scene(tmp_path):
    method, dataset = build(lr=2e-2, perturb=False)
    trainer = Trainer(method, config(tmp_path, max_steps=150, num_rays=128, log_every=50), dataset=dataset)
    before = trainer.evaluate()
    summary = trainer.train()
    after = trainer.evaluate(write_renders=True)
    assert trainer.step == 150 and summary["step"] == 150
    assert after["psnr"] > before["psnr"] + 3.0, (before["psnr"], after["psnr"])
    assert after["ssim"] > before["ssim"]
    assert after["num_images"] == 2 and len(after["per_image"]) == 2
    renders = {p.name for p in (tmp_path / "renders" / "test").iterdir()}
    assert {"view_006.png", "view_007.png"} <= renders
    saved = json.loads((tmp_path / "eval_test.json").read_text())
    assert saved["psnr"] == pytest.approx(after["psnr"])
    assert (tmp_path / "config.json").is_file()


def test_same_seed_same_parameters_different_seed_different(tmp_path):
    runs = []
    for i, seed in enumerate((0, 0, 1)):
        method, dataset = build(seed=seed, perturb=True)
        Trainer(method, config(tmp_path / str(i), seed=seed), dataset=dataset).train()
        runs.append(params(method))
    assert_same(runs[0], runs[1])
    assert not torch.equal(runs[0]["mlp.0.weight"], runs[2]["mlp.0.weight"])


def test_resume_after_crash_is_bitwise_identical(tmp_path):
    # perturb=True: stratified jitter uses the global torch RNG, so RNG restore is exercised too
    method, dataset = build(perturb=True)
    straight = Trainer(method, config(tmp_path / "straight", checkpoint_every=3, log_every=1), dataset=dataset)
    straight.train()
    reference = params(method)
    ref_opt = straight.optimizers[0].state_dict()

    crash_dir = tmp_path / "crash"
    method, dataset = build(perturb=True, crash_at_step=4)
    with pytest.raises(SimulatedCrash):
        Trainer(method, config(crash_dir, checkpoint_every=3, log_every=1), dataset=dataset).train()
    assert load_checkpoint(crash_dir / "checkpoints" / "latest.ckpt")["step"] == 3

    method, dataset = build(seed=123, perturb=True)  # a fresh process would rebuild from scratch
    resumed = Trainer(method, config(crash_dir, checkpoint_every=3, log_every=1), dataset=dataset, resume=True)
    assert resumed.step == 3 and resumed.elapsed_seconds > 0
    assert method.hook_calls == 3 and int(method.steps_seen) == 3  # extra_state and buffers restored
    resumed.train()
    assert resumed.step == 6
    assert_same(reference, params(method))
    opt = resumed.optimizers[0].state_dict()
    for key in ref_opt["state"]:
        for name, value in ref_opt["state"][key].items():
            assert torch.equal(value, opt["state"][key][name]), name
    assert resumed.schedulers[0].last_epoch == straight.schedulers[0].last_epoch == 6
    # metrics.jsonl: the crashed run's records past step 3 were dropped, so every train step appears once
    train_steps = [r["step"] for r in read_metrics(crash_dir) if r["event"] == "train"]
    assert train_steps == [1, 2, 3, 4, 5, 6]


def test_resume_without_checkpoint_starts_fresh_and_explicit_missing_path_fails(tmp_path):
    method, dataset = build()
    trainer = Trainer(method, config(tmp_path), dataset=dataset, resume=True)
    assert trainer.step == 0 and not trainer.resume()
    with pytest.raises(FileNotFoundError):
        Trainer(method, config(tmp_path), dataset=dataset, resume=tmp_path / "nope.ckpt")


def test_periodic_eval_does_not_change_training(tmp_path):
    results = []
    for i, eval_every in enumerate((0, 1)):
        method, dataset = build(perturb=True)
        Trainer(method, config(tmp_path / str(i), eval_every=eval_every, eval_num_images=1), dataset=dataset).train()
        results.append(params(method))
    assert_same(results[0], results[1])
    evals = [r for r in read_metrics(tmp_path / "1") if r["event"] == "eval"]
    assert [r["step"] for r in evals] == [1, 2, 3, 4, 5, 6]
    assert all(r["num_images"] == 1 and 0 < r["psnr"] < 60 and -1 <= r["ssim"] <= 1 for r in evals)


def test_metrics_log_and_checkpoint_policy(tmp_path):
    method, dataset = build()
    trainer = Trainer(method, config(tmp_path, max_steps=7, log_every=3, checkpoint_every=2, keep_last_checkpoints=2), dataset=dataset)
    last = trainer.train()
    records = read_metrics(tmp_path)
    train = [r for r in records if r["event"] == "train"]
    assert [r["step"] for r in train] == [3, 6, 7]  # log_every plus the final step
    for r in train:
        assert {"loss", "rgb", "reg", "psnr", "lr", "rays_per_s", "elapsed_s"} <= r.keys()
        assert r["loss"] == pytest.approx(r["rgb"] + 1e-3 * r["reg"], rel=1e-5)
    assert last == train[-1]
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["latest.ckpt", "step_00000006.ckpt", "step_00000007.ckpt"]
    state = load_checkpoint(tmp_path / "checkpoints" / "latest.ckpt")
    assert state["step"] == 7 and state["config"]["max_steps"] == 7 and state["method_extra"] == {"hook_calls": 7}
    assert set(state) >= {"model", "optimizers", "schedulers", "rng", "sampler", "elapsed_seconds", "grad_scaler"}
    # training past max_steps is a no-op
    assert Trainer(method, config(tmp_path, max_steps=7), dataset=dataset, resume=True).train() == {}


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    method, dataset = build(nan_at_step=5)
    trainer = Trainer(method, config(tmp_path, max_steps=20, checkpoint_every=2), dataset=dataset)
    with pytest.raises(NonFiniteLossError, match=r"step 5 \(loss=nan, rgb=.*reg=") as info:
        trainer.train()
    assert info.value.step == 5 and "step_00000004.ckpt" in str(info.value)
    assert trainer.step == 6  # the bad step ran, nothing after it
    state = load_checkpoint(tmp_path / "checkpoints" / "latest.ckpt")
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir())[-1] == "step_00000004.ckpt"
    assert read_metrics(tmp_path)[-1]["event"] == "nonfinite"


def test_time_budget_stops_early_and_checkpoints(tmp_path):
    method, dataset = build()
    trainer = Trainer(method, config(tmp_path, max_steps=100_000, max_seconds=0.4, log_every=10_000), dataset=dataset)
    trainer.train()
    assert 0 < trainer.step < 100_000 and trainer.elapsed_seconds >= 0.4
    assert load_checkpoint(tmp_path / "checkpoints" / "latest.ckpt")["step"] == trainer.step
    events = [r["event"] for r in read_metrics(tmp_path)]
    assert events[-2:] == ["train", "time_budget"]


def test_progress_bar_smoke(tmp_path, capsys):
    method, dataset = build()
    Trainer(method, config(tmp_path, max_steps=4, progress=True), dataset=dataset).train()
    out = capsys.readouterr().out
    assert "4/4" in out and "psnr" in out and "rays/s" in out


def test_eval_split_prefers_val_and_evenly_spaced_views(tmp_path):
    method, dataset = build()
    test = dataset.split("test")
    dataset = dataset.with_splits({**dataset.splits, "val": test})
    trainer = Trainer(method, config(tmp_path), dataset=dataset)
    assert trainer.eval_split == "val"
    assert trainer._eval_indices("train", 3) == [0, 2, 5]
    assert trainer.evaluate("train", num_images=2)["num_images"] == 2
    with pytest.raises(ValueError, match="no split"):
        trainer.evaluate("nope")


def test_bad_input(tmp_path):
    method, dataset = build()
    with pytest.raises(ValueError, match="max_steps"):
        TrainerConfig(max_steps=0)
    with pytest.raises(ValueError, match="max_seconds"):
        TrainerConfig(max_seconds=-1.0)
    with pytest.raises(ValueError, match="amp_dtype"):
        TrainerConfig(amp_dtype="float8")
    with pytest.raises(ValueError, match="sampler_streams"):
        TrainerConfig(num_rays=10, sampler_streams=3)
    with pytest.raises(TypeError, match="Method"):
        Trainer(torch.nn.Linear(2, 2), config(tmp_path), dataset=dataset)
    with pytest.raises(TypeError, match="SceneDataset"):
        Trainer(method, config(tmp_path), dataset={"train": None})
    with pytest.raises(TypeError, match="TrainerConfig"):
        Trainer(method, {"max_steps": 1}, dataset=dataset)
    # a checkpoint of a different architecture is refused with a clear message
    Trainer(method, config(tmp_path / "a", max_steps=1), dataset=dataset).train()
    other, _ = build(hidden=8)
    with pytest.raises(ValueError, match="does not fit ToyMethod"):
        Trainer(other, config(tmp_path / "a"), dataset=make_toy_dataset(), resume=True)
