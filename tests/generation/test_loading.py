"""Loading pipelines through the pretrained resolver: toy models round-trip in diffusers' format,
missing models say how to get them, directories that are not pipelines are named."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

pytest.importorskip("diffusers")

from langfield._checks import InputError  # noqa: E402
from langfield.generation.loading import (  # noqa: E402
    TEXT_CONDITIONING_FILE,
    TextConditioningSpec,
    build_pipeline,
    load_pipeline,
)
from langfield.pretrained import PretrainedUnavailableError  # noqa: E402

from ..pretrained.tiny_models import place_in_hub_cache  # noqa: E402
from .tiny import DIT, UNET, VAE, tiny_clip_sd_pipeline, write_json  # noqa: E402


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_import_generation_imports_neither_diffusers_nor_transformers():
    code = (
        "import sys, langfield.generation as g; "
        "import langfield.generation.models, langfield.generation.loading, langfield.generation.sampling, "
        "langfield.generation.text_conditioning; "
        "heavy = [m for m in ('diffusers', 'transformers', 'huggingface_hub') if m in sys.modules]; "
        "assert not heavy, heavy; print(g.ToyVAEConfig.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ToyVAEConfig"]


def test_sd_toy_pipeline_round_trips(sd_pipe, sd_dir):
    index = (sd_dir / "model_index.json").read_text()
    assert '"StableDiffusionPipeline"' in index and (sd_dir / "unet" / "config.json").is_file()
    loaded = load_pipeline(sd_dir, device="cpu")
    assert loaded.kind == "sd" and loaded.source == "local" and loaded.name == str(sd_dir)
    assert loaded.text == TextConditioningSpec() and not loaded.has_text_encoder
    assert loaded.dtype == torch.float32 and loaded.vae_scale_factor == 4
    assert _same_weights(loaded.pipeline.unet, sd_pipe.pipeline.unet)
    assert _same_weights(loaded.pipeline.vae, sd_pipe.pipeline.vae)
    assert type(loaded.pipeline.scheduler).__name__ == "DDIMScheduler"


def test_sd3_toy_pipeline_round_trips(sd3_pipe, sd3_dir):
    loaded = load_pipeline(str(sd3_dir), device="cpu")
    assert loaded.kind == "sd3" and type(loaded.pipeline).__name__ == "StableDiffusion3Pipeline"
    assert loaded.pipeline.text_encoder_3 is None and loaded.text is not None
    assert _same_weights(loaded.pipeline.transformer, sd3_pipe.pipeline.transformer)
    assert type(loaded.pipeline.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"


def test_dtype_can_be_chosen(sd_dir):
    loaded = load_pipeline(sd_dir, device="cpu", dtype=torch.float64)
    assert loaded.dtype == torch.float64 and loaded.pipeline.vae.dtype == torch.float64
    with pytest.raises(InputError, match="dtype: expected a floating torch.dtype"):
        load_pipeline(sd_dir, device="cpu", dtype=torch.int32)


def test_a_pipeline_with_its_own_text_encoder_loads_without_a_spec(tmp_path):
    pipeline = tiny_clip_sd_pipeline(tmp_path / "tok")
    pipeline.save_pretrained(tmp_path / "clip_sd")
    loaded = load_pipeline(tmp_path / "clip_sd", device="cpu")
    assert loaded.has_text_encoder and loaded.text is None
    assert type(loaded.pipeline.tokenizer).__name__.startswith("CLIPTokenizer")


def test_unknown_hub_id_offline_says_how_to_get_it(hub_cache, monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedUnavailableError) as info:
        load_pipeline("nobody-here/no-such-diffusion-model", device="cpu")
    message = str(info.value)
    assert "'nobody-here/no-such-diffusion-model'" in message and "diffusion pipeline" in message
    assert "HF_HUB_OFFLINE=1" in message and "hf download nobody-here/no-such-diffusion-model" in message
    assert str(hub_cache) in message


def test_a_hub_id_in_the_local_cache_loads_offline(hub_cache, monkeypatch, no_network, sd_dir, sd_pipe):
    snapshot = place_in_hub_cache(hub_cache, "toy-org/toy-sd", sd_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_pipeline("toy-org/toy-sd", device="cpu")
    assert loaded.source == "cache" and loaded.name == "toy-org/toy-sd" and loaded.kind == "sd"
    assert loaded.text == TextConditioningSpec()  # the record beside model_index.json is found in the snapshot
    assert _same_weights(loaded.pipeline.unet, sd_pipe.pipeline.unet) and snapshot.is_dir()


def test_download_not_allowed_is_refused_without_network(hub_cache, no_network):
    with pytest.raises(PretrainedUnavailableError, match="never downloaded"):
        load_pipeline("nobody-here/no-such-diffusion-model", device="cpu", allow_download=False)


def test_a_missing_directory_is_unavailable(tmp_path):
    with pytest.raises(PretrainedUnavailableError, match="does not exist"):
        load_pipeline(tmp_path / "nothing-here", device="cpu")


def test_a_directory_that_is_not_a_pipeline_is_named(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError) as info:
        load_pipeline(empty, device="cpu")
    assert str(empty) in str(info.value) and "no model_index.json" in str(info.value)

    component = tmp_path / "unet_only"
    write_json(component / "config.json", {"_class_name": "UNet2DConditionModel"})
    with pytest.raises(InputError, match=r"single diffusers model \(UNet2DConditionModel"):
        load_pipeline(component, device="cpu")

    bert = tmp_path / "bert"
    write_json(bert / "config.json", {"model_type": "bert"})
    with pytest.raises(InputError, match="transformers model \\(model_type 'bert'\\)"):
        load_pipeline(bert, device="cpu")

    single = tmp_path / "single"
    single.mkdir()
    (single / "v1-5-pruned.safetensors").write_bytes(b"x")
    with pytest.raises(InputError, match="from_single_file"):
        load_pipeline(single, device="cpu")


def test_unsupported_or_malformed_model_index(tmp_path):
    other = tmp_path / "flux"
    write_json(other / "model_index.json", {"_class_name": "FluxPipeline"})
    with pytest.raises(InputError) as info:
        load_pipeline(other, device="cpu")
    assert "'FluxPipeline'" in str(info.value) and "StableDiffusion3Pipeline" in str(info.value)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match="not a readable model_index.json"):
        load_pipeline(broken, device="cpu")

    nameless = tmp_path / "nameless"
    write_json(nameless / "model_index.json", {"vae": ["diffusers", "AutoencoderKL"]})
    with pytest.raises(InputError, match="has no _class_name"):
        load_pipeline(nameless, device="cpu")


def test_missing_component_files_are_unavailable(tmp_path, sd_dir):
    import shutil

    copy = tmp_path / "partial"
    shutil.copytree(sd_dir, copy)
    (copy / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(PretrainedUnavailableError) as info:
        load_pipeline(copy, device="cpu")
    assert str(copy) in str(info.value)


def test_a_malformed_text_conditioning_record_is_named(tmp_path, sd_dir):
    import shutil

    copy = tmp_path / "bad_text"
    shutil.copytree(sd_dir, copy)
    write_json(copy / TEXT_CONDITIONING_FILE, {"format": 1, "text_model": "x", "max_length": 1})
    with pytest.raises(InputError) as info:
        load_pipeline(copy, device="cpu")
    assert TEXT_CONDITIONING_FILE in str(info.value) and "max_length" in str(info.value)
    write_json(copy / TEXT_CONDITIONING_FILE, {"format": 7})
    with pytest.raises(InputError, match="unknown format 7"):
        load_pipeline(copy, device="cpu")


def test_latent_channel_mismatch_is_refused_naming_both_sides():
    import dataclasses

    vae = dataclasses.replace(VAE, latent_channels=8).build()
    with pytest.raises(InputError) as info:
        build_pipeline(vae=vae, unet=UNET.build())
    message = str(info.value)
    assert "8-channel latents" in message and "unet's in_channels is 4" in message
    with pytest.raises(InputError, match="transformer's in_channels is 4"):
        build_pipeline(vae=vae, transformer=DIT.build())


def test_text_width_mismatch_is_refused():
    import dataclasses

    unet = dataclasses.replace(UNET, cross_attention_dim=64).build()
    with pytest.raises(InputError, match="384-d embeddings but the unet's cross_attention_dim is 64"):
        build_pipeline(vae=VAE.build(), unet=unet)
    # without a text conditioning spec (embeddings only) the width is the caller's business
    assert build_pipeline(vae=VAE.build(), unet=unet, text=None).text is None


def test_build_pipeline_needs_exactly_one_denoiser():
    with pytest.raises(InputError, match="exactly one of unet="):
        build_pipeline(vae=VAE.build())
    with pytest.raises(InputError, match="exactly one of unet="):
        build_pipeline(vae=VAE.build(), unet=UNET.build(), transformer=DIT.build())
