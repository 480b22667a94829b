"""The trainer's seams: samplers without a dataset, per-method metrics, callbacks, stop requests."""

import math
import os

import pytest
import torch
from torch import nn

from langfield.data.samplers import CameraSampler, CameraSamplerConfig
from langfield.methods.base import Method
from langfield.training import Trainer, TrainerCallback, TrainerConfig, load_checkpoint

from .test_trainer import config, read_metrics
from .toy_method import build, torch_test_state  # noqa: F401


class Recorder(TrainerCallback):
    def __init__(self, stop_at=None):
        self.events, self.stop_at = [], stop_at

    def on_train_start(self, trainer):
        self.events.append(("start", trainer.step))

    def on_sync(self, trainer):
        self.events.append(("sync", trainer.step))
        if self.stop_at is not None and trainer.step == self.stop_at:
            trainer.request_stop()

    def on_log(self, trainer, record):
        self.events.append(("log", record["step"], sorted(k for k in ("loss", "psnr", "rgb") if k in record)))

    def on_checkpoint(self, trainer, path):
        assert path.is_file()
        self.events.append(("checkpoint", load_checkpoint(path)["step"]))

    def on_train_end(self, trainer, record):
        self.events.append(("end", record["step"]))


def test_callbacks_fire_at_sync_points_with_the_method_metrics(tmp_path):
    method, dataset = build()
    rec = Recorder()
    Trainer(method, config(tmp_path, max_steps=6, log_every=2, checkpoint_every=3), dataset=dataset, callbacks=[rec]).train()
    kinds = [e[0] for e in rec.events]
    assert kinds[0] == "start" and kinds[-1] == "end" and rec.events[-1] == ("end", 6)
    assert [e[1] for e in rec.events if e[0] == "sync"] == [1, 2, 3, 4, 5, 6]  # every step on CPU
    assert [e[1] for e in rec.events if e[0] == "log"] == [2, 4, 6]
    assert all(e[2] == ["loss", "psnr", "rgb"] for e in rec.events if e[0] == "log")  # psnr: SceneMethod.metrics
    assert [e[1] for e in rec.events if e[0] == "checkpoint"] == [3, 6]
    logged = [r for r in read_metrics(tmp_path) if r["event"] == "train"]
    assert all(math.isfinite(r["psnr"]) and r["metric_names"] == ["psnr"] for r in logged)


def test_request_stop_checkpoints_and_a_later_train_call_continues(tmp_path):
    method, dataset = build()
    rec = Recorder(stop_at=4)
    trainer = Trainer(method, config(tmp_path, max_steps=10, log_every=100), dataset=dataset, callbacks=[rec])
    trainer.train()
    assert trainer.step == 4 and load_checkpoint(tmp_path / "checkpoints" / "latest.ckpt")["step"] == 4
    assert any(r["event"] == "stop_requested" for r in read_metrics(tmp_path))
    rec.stop_at = None
    trainer.train()
    assert trainer.step == 10


def test_callbacks_must_be_trainer_callbacks(tmp_path):
    method, dataset = build()
    with pytest.raises(TypeError, match="TrainerCallback"):
        Trainer(method, config(tmp_path), dataset=dataset, callbacks=[lambda t: None])


class CameraCentroid(Method):
    """Learns the centroid of the cameras it is shown: no images, only a camera sampler."""

    supports_ddp = False

    def __init__(self):
        super().__init__()
        self.center = nn.Parameter(torch.tensor([1.0, -1.0, -2.0]))

    def outputs(self, cameras, background):
        return cameras.c2w[:, :, 3]

    def losses(self, outputs, batch):
        loss = (self.center - outputs).square().sum(-1).mean()
        return {"loss": loss}

    def metrics(self, outputs, batch):
        return {"distance": (self.center - outputs.mean(0)).norm()}

    def optimizers(self, max_steps):
        opt = torch.optim.Adam(self.parameters(), lr=0.05)
        return [opt], [torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.2 ** (s / max_steps))]


def test_trains_from_cameras_without_a_dataset_and_resumes_exactly(tmp_path):
    cams = CameraSamplerConfig(radius=(2.0, 2.0), elevation_deg=(20.0, 40.0), num_cameras=16, background="white")
    cfg = config(tmp_path / "a", max_steps=300, log_every=50, checkpoint_every=100)
    method = CameraCentroid()
    trainer = Trainer(method, cfg, sampler=CameraSampler(cams, seed=1))
    record = trainer.train()
    # cameras on a ring around the z axis at elevation 20-40 deg: centroid (0, 0, ~2 sin 30 deg)
    c = method.center.detach()
    assert c[:2].abs().max() < 0.15 and 0.8 < float(c[2]) < 1.2, c
    assert "distance" in record and record["metric_names"] == ["distance"] and "psnr" not in record
    assert trainer.eval_split is None
    with pytest.raises(ValueError, match="dataset"):
        trainer.evaluate()

    class Crash(TrainerCallback):
        def on_sync(self, trainer):
            if trainer.step == 150:
                raise KeyboardInterrupt

    cfg_b = config(tmp_path / "b", max_steps=300, log_every=50, checkpoint_every=100)
    with pytest.raises(KeyboardInterrupt):
        Trainer(CameraCentroid(), cfg_b, sampler=CameraSampler(cams, seed=1), callbacks=[Crash()]).train()
    resumed = CameraCentroid()
    again = Trainer(resumed, cfg_b, sampler=CameraSampler(cams, seed=1), resume=True)
    assert again.step == 100
    again.train()
    assert torch.equal(resumed.center, method.center)


def test_needs_a_dataset_or_a_sampler_and_methods_without_a_default_sampler_say_so(tmp_path):
    with pytest.raises(ValueError, match="dataset .*or a sampler"):
        Trainer(CameraCentroid(), config(tmp_path))
    _, dataset = build()
    with pytest.raises(TypeError, match="no default sampler"):
        Trainer(CameraCentroid(), config(tmp_path), dataset=dataset)
    with pytest.raises(TypeError, match="Sampler"):
        Trainer(CameraCentroid(), config(tmp_path), sampler=[1, 2, 3])


def test_output_dir_none_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    method, dataset = build()
    trainer = Trainer(method, config(tmp_path, output_dir=None, checkpoint_every=2), dataset=dataset)
    trainer.train()
    assert trainer.step == 6 and trainer.save_checkpoint() is None
    assert os.listdir(tmp_path) == []
    assert trainer.evaluate("test")["num_images"] == 2
    with pytest.raises(ValueError, match="output_dir"):
        Trainer(method, config(tmp_path, output_dir=None), dataset=dataset, resume=True)
