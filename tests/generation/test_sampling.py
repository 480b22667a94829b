"""Sampling through the diffusers pipelines: shapes, seeds, guidance, samplers, bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("diffusers")

from langfield._checks import InputError  # noqa: E402
from langfield.generation.loading import build_pipeline, load_pipeline  # noqa: E402
from langfield.generation.sampling import MAX_GUIDANCE, generate, make_scheduler, prediction_type  # noqa: E402
from langfield.generation.text_conditioning import PromptEmbeddings  # noqa: E402

from .tiny import UNET, VAE, make_sd3, make_sdxl, tiny_clip_sd_pipeline  # noqa: E402

PROMPTS = ["a red sphere", "a blue box"]


def _run(pipe, prompts=PROMPTS, **kwargs):
    options = dict(steps=2, guidance=3.0, seed=0)
    options.update(kwargs)
    return generate(pipe, prompts, **options)


@pytest.mark.parametrize("fixture", ["sd_pipe", "sd3_pipe"])
def test_images_shape_range_and_record(fixture, request):
    pipe = request.getfixturevalue(fixture)
    out = _run(pipe, num_images=2, seed=5)
    assert out.images.shape == (4, 16, 16, 3) and out.images.dtype == torch.float32
    assert out.images.device.type == "cpu" and 0 <= out.images.min() and out.images.max() <= 1
    assert out.images.std() > 1e-3  # not a blank image
    record = out.record
    assert record.seeds == (5, 6, 7, 8) and record.prompts == ("a red sphere",) * 2 + ("a blue box",) * 2
    assert (record.steps, record.guidance, record.height, record.width) == (2, 3.0, 16, 16)
    if fixture == "sd_pipe":
        expected = ("sd", "DDIMScheduler", "epsilon")
    else:
        expected = ("sd3", "FlowMatchEulerDiscreteScheduler", "flow")
    assert (record.kind, record.scheduler_class, record.prediction) == expected
    assert record.to_dict()["seeds"] == [5, 6, 7, 8]


@pytest.mark.parametrize("fixture", ["sd_pipe", "sd3_pipe"])
def test_deterministic_by_seed_and_seeds_differ(fixture, request):
    pipe = request.getfixturevalue(fixture)
    a = _run(pipe, seed=1).images
    assert torch.equal(a, _run(pipe, seed=1).images)
    b = _run(pipe, seed=2).images
    assert (a - b).abs().mean() > 1e-3


def test_an_image_depends_on_its_seed_only_not_on_its_batch(sd_pipe):
    """Image i of a call with seed s is the image of seed s + i made alone."""
    both = _run(sd_pipe, ["a red sphere"], num_images=2, seed=10).images
    alone = _run(sd_pipe, ["a red sphere"], num_images=1, seed=11).images
    torch.testing.assert_close(both[1:], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("fixture", ["sd_pipe", "sd3_pipe"])
def test_guidance_changes_the_output(fixture, request):
    pipe = request.getfixturevalue(fixture)
    g1, g3, g6 = (_run(pipe, guidance=g, seed=3).images for g in (1.0, 3.0, 6.0))
    assert (g1 - g3).abs().mean() > 1e-4 and (g3 - g6).abs().mean() > 1e-4


def test_a_different_negative_prompt_changes_the_output(sd_pipe):
    plain = _run(sd_pipe, seed=4).images
    negative = _run(sd_pipe, seed=4, negative="a green cone").images
    assert (plain - negative).abs().mean() > 1e-4
    # the default negative is the empty prompt
    explicit = _run(sd_pipe, seed=4, negative="").images
    torch.testing.assert_close(plain, explicit)


def test_prompt_embeddings_give_the_same_images_as_strings(sd_pipe, sd3_pipe, prompt_encoder):
    for pipe in (sd_pipe, sd3_pipe):
        from_text = _run(pipe, seed=7).images
        emb = prompt_encoder.encode(PROMPTS)
        from_emb = _run(pipe, emb, seed=7).images
        torch.testing.assert_close(from_text, from_emb)
        explicit_negative = _run(pipe, emb, seed=7, negative=prompt_encoder.empty(1)).images
        torch.testing.assert_close(from_text, explicit_negative)


def test_bare_tensors_work_for_sd_but_need_a_negative_without_text_spec(prompt_encoder):
    pipe = build_pipeline(vae=VAE.build(), unet=UNET.build(seed=1), text=None)
    emb = prompt_encoder.encode(PROMPTS)
    out = generate(pipe, emb.embeds, steps=2, guidance=1.0, seed=0)  # no guidance: no negative needed
    assert out.images.shape == (2, 16, 16, 3) and out.record.prompts == ("", "")
    with pytest.raises(InputError, match="negative: guidance > 1 with prompt embeddings needs"):
        generate(pipe, emb.embeds, steps=2, guidance=2.0)
    with_neg = generate(pipe, emb.embeds, negative=prompt_encoder.empty(1).embeds, steps=2, guidance=2.0)
    assert with_neg.images.shape == (2, 16, 16, 3)
    with pytest.raises(InputError, match="has no text encoder and no"):
        generate(pipe, PROMPTS, steps=2)


def test_sd3_needs_pooled_embeddings(sd3_pipe, prompt_encoder):
    with pytest.raises(InputError, match="SD3 pipeline needs pooled embeddings"):
        _run(sd3_pipe, prompt_encoder.encode(PROMPTS).embeds)


def test_embedding_width_must_match_the_model(sd_pipe):
    wrong = PromptEmbeddings(torch.randn(1, 8, 64), torch.ones(1, 8, dtype=torch.long), torch.randn(1, 64))
    with pytest.raises(InputError, match="token embeddings are 64-d but the model's cross_attention_dim is 384"):
        _run(sd_pipe, wrong)


@pytest.mark.parametrize("fixture", ["sd_pipe", "sd3_pipe"])
@pytest.mark.parametrize("steps", [1, 3])
def test_dpmpp_runs_for_both_objectives_and_differs_from_the_default(fixture, steps, request):
    pipe = request.getfixturevalue(fixture)
    default = _run(pipe, steps=steps, seed=2)
    dpm = _run(pipe, steps=steps, seed=2, scheduler="dpmpp")
    assert dpm.record.scheduler_class == "DPMSolverMultistepScheduler" and dpm.record.scheduler == "dpmpp"
    assert dpm.images.shape == default.images.shape
    if steps > 1:  # one step of either sampler jumps straight to the x0 prediction
        assert (dpm.images - default.images).abs().mean() > 1e-5


def test_sampler_family_must_match_the_objective(sd_pipe, sd3_pipe):
    with pytest.raises(InputError, match="'flow_euler' samples rectified-flow models, but this model predicts 'eps"):
        _run(sd_pipe, scheduler="flow_euler")
    with pytest.raises(InputError, match="'ddim' samples ε/v-prediction models, but this model was trained with flow"):
        _run(sd3_pipe, scheduler="ddim")
    with pytest.raises(InputError, match="scheduler: 'euler' is not one of"):
        _run(sd_pipe, scheduler="euler")


def test_an_eps_prediction_sd3_transformer_samples_with_ddim(prompt_encoder):
    """The DDPM control arm of E2: the same MMDiT saved with a DDPM scheduler samples with DDIM/DPM++."""
    from diffusers import DDPMScheduler

    pipe = make_sd3(scheduler=DDPMScheduler(num_train_timesteps=1000, clip_sample=False))
    assert prediction_type(pipe.pipeline.scheduler) == "epsilon"
    ddim = _run(pipe, scheduler="ddim", seed=1)
    dpm = _run(pipe, scheduler="dpmpp", seed=1)
    assert ddim.record.prediction == "epsilon" and ddim.images.shape == (2, 16, 16, 3)
    assert (ddim.images - dpm.images).abs().mean() > 1e-5


def test_make_scheduler_carries_the_models_config(sd3_pipe):
    from diffusers import FlowMatchEulerDiscreteScheduler

    base = FlowMatchEulerDiscreteScheduler(shift=3.0)
    dpm = make_scheduler("dpmpp", base)
    assert dpm.config.use_flow_sigmas and dpm.config.flow_shift == 3.0
    assert dpm.config.prediction_type == "flow_prediction"
    assert make_scheduler(None, base) is base
    assert make_scheduler("flow_euler", base).config.shift == 3.0


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"guidance": 0.5}, "guidance: must be >= 1"),
        ({"guidance": float("nan")}, "guidance: must be finite"),
        ({"guidance": MAX_GUIDANCE + 1}, "guidance: must be <= 50"),
        ({"guidance": "3"}, "guidance: expected a number"),
        ({"steps": 0}, "steps: must be >= 1"),
        ({"steps": 1001}, "steps: must be <= 1000"),
        ({"steps": 2.5}, "steps: expected an integer"),
        ({"num_images": 0}, "num_images: must be >= 1"),
        ({"seed": -1}, "seed: must be >= 0"),
        ({"height": 20}, "height: 20 is not a multiple of 8 (VAE factor 4); use 16 or 24"),
        ({"width": 12}, "width: 12 is not a multiple of 8"),
        ({"truncate": "yes"}, "truncate: expected True or False"),
    ],
)
def test_bad_sampling_arguments_name_the_argument(sd_pipe, kwargs, needle):
    with pytest.raises(InputError) as info:
        _run(sd_pipe, **kwargs)
    assert needle in str(info.value)


def test_sd3_sizes_follow_vae_factor_times_patch_and_the_position_grid(sd3_pipe):
    with pytest.raises(InputError, match=r"height: 12 is not a multiple of 8 \(VAE factor 4 x patch size 2\)"):
        _run(sd3_pipe, height=12)
    with pytest.raises(InputError, match="width: 24 px is 3 patches but the transformer's position embedding covers"):
        _run(sd3_pipe, width=24)


def test_a_prompt_over_the_text_length_is_refused(sd_pipe):
    long = " ".join(["a red sphere left of a blue box"] * 5)
    with pytest.raises(InputError, match=r"prompts\[1\] 'a red sphere left of .*' is 42 tokens long"):
        _run(sd_pipe, ["a box", long])
    assert _run(sd_pipe, [long], truncate=True).images.shape == (1, 16, 16, 3)


def test_a_swapped_component_with_other_latent_channels_is_refused(prompt_encoder):
    pipe = build_pipeline(vae=VAE.build(), unet=UNET.build(seed=1))
    pipe.pipeline.vae = dataclasses.replace(VAE, latent_channels=3).build()
    with pytest.raises(InputError, match="the VAE makes 3-channel latents but the unet's in_channels is 4"):
        _run(pipe)


def test_generate_restores_the_scheduler_and_module_modes(prompt_encoder):
    pipe = make_sd3()
    pipe.pipeline.transformer.train()
    pipe.pipeline.vae.eval()
    base = pipe.pipeline.scheduler
    _run(pipe, scheduler="dpmpp")
    assert pipe.pipeline.scheduler is base
    assert pipe.pipeline.transformer.training and not pipe.pipeline.vae.training


def test_saved_and_loaded_pipelines_sample_the_same_images(sd_pipe, sd_dir, sd3_pipe, sd3_dir):
    for pipe, folder in ((sd_pipe, sd_dir), (sd3_pipe, sd3_dir)):
        loaded = load_pipeline(folder, device="cpu")
        torch.testing.assert_close(_run(pipe, seed=9).images, _run(loaded, seed=9).images, atol=1e-6, rtol=0)


def test_components_mapping_and_raw_diffusers_pipelines_are_accepted(sd_pipe, prompt_encoder):
    out = generate({"vae": VAE.build(), "unet": UNET.build(seed=1)}, "a red sphere", steps=2, guidance=2.0)
    assert out.images.shape == (1, 16, 16, 3) and out.record.model == "<memory>"
    raw = sd_pipe.pipeline  # a bare diffusers pipeline: no text spec, so embeddings and a negative
    emb = prompt_encoder.encode("a red sphere")
    assert generate(raw, emb, negative=prompt_encoder.empty(1), steps=2, guidance=2.0).images.shape == (1, 16, 16, 3)
    with pytest.raises(InputError, match="components mapping needs 'vae'"):
        generate({"unet": UNET.build()}, "a box", steps=2)
    with pytest.raises(InputError, match="expected a GenerationPipeline"):
        generate(object(), "a box", steps=2)


def test_a_pipeline_with_its_own_text_encoder_embeds_strings_and_checks_their_length(tmp_path):
    """The real-SD path: the pipeline's own CLIP tokenizer/encoder (tiny, random, local)."""
    pipeline = tiny_clip_sd_pipeline(tmp_path, max_tokens=16)
    out = generate(pipeline, PROMPTS, steps=2, guidance=2.0, seed=0, num_images=2)
    assert out.images.shape == (4, 16, 16, 3) and out.record.prompts[2] == "a blue box"
    assert not torch.equal(out.images[0], out.images[2])
    with pytest.raises(InputError, match=r"prompts\[0\] .* tokens long but the pipeline's text encoder \(tokenizer\)"):
        generate(pipeline, ["a very red sphere left of a box"], steps=2)
    with pytest.raises(InputError, match=r"negative\[0\]"):
        generate(pipeline, "a box", negative="a very red sphere left of a box", steps=2)
    with pytest.raises(InputError, match="pass negative prompts as strings"):
        generate(pipeline, "a box", negative=torch.zeros(1, 4, 32), steps=2)


def test_sdxl_style_pipeline_samples_with_pooled_embeddings_and_round_trips(prompt_encoder, tmp_path):
    """SDXL: a UNet with pooled-text + size micro-conditioning; the pooled MiniLM vector goes in."""
    pipe = make_sdxl()
    assert pipe.kind == "sdxl" and type(pipe.pipeline).__name__ == "StableDiffusionXLPipeline"
    out = _run(pipe, num_images=2, seed=3)
    assert out.images.shape == (4, 16, 16, 3) and out.record.kind == "sdxl"
    assert torch.equal(out.images, _run(pipe, num_images=2, seed=3).images)
    assert (out.images - _run(pipe, num_images=2, seed=3, guidance=1.0).images).abs().mean() > 1e-4
    loaded = load_pipeline(pipe.save(tmp_path / "sdxl"), device="cpu")
    assert loaded.kind == "sdxl" and loaded.text is not None
    torch.testing.assert_close(_run(loaded, num_images=2, seed=3).images, out.images, atol=1e-6, rtol=0)
    wrong = PromptEmbeddings(torch.randn(1, 8, 384), torch.ones(1, 8, dtype=torch.long), torch.randn(1, 64))
    with pytest.raises(InputError, match="pooled embeddings are 64-d but the model's pooled_width is 384"):
        _run(pipe, wrong)


@pytest.mark.requires_cuda
@pytest.mark.parametrize("fixture", ["sd_dir", "sd3_dir"])
def test_cuda_loads_in_float16_and_samples_like_the_cpu(fixture, request):
    """fp16 on CUDA by default; the same seeds give nearly the same images as float32 on the CPU
    (the noise is drawn on the CPU in both cases)."""
    folder = request.getfixturevalue(fixture)
    gpu_pipe = load_pipeline(folder, device="cuda")
    assert gpu_pipe.dtype == torch.float16 and gpu_pipe.device.type == "cuda"
    gpu = _run(gpu_pipe, seed=0)
    cpu = _run(load_pipeline(folder, device="cpu"), seed=0)
    assert gpu.record.dtype == "float16" and gpu.images.dtype == torch.float32 and gpu.images.device.type == "cpu"
    assert torch.isfinite(gpu.images).all() and (gpu.images - cpu.images).abs().mean() < 0.02
