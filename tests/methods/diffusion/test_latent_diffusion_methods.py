"""langfield.methods.diffusion: the VAE and latent-diffusion objectives trained through the one Trainer
(tiny diffusers models built here: no downloads)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDPMScheduler,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    UNet2DConditionModel,
)

from langfield._checks import InputError  # noqa: E402
from langfield.data.samplers import IndexSampler  # noqa: E402
from langfield.generation.objectives import latent_scaling_factor  # noqa: E402
from langfield.generation.text_conditioning import PromptEmbeddings  # noqa: E402
from langfield.methods.diffusion import (  # noqa: E402
    LatentDiffusionConfig,
    LatentDiffusionMethod,
    VAEConfig,
    VAEMethod,
)
from langfield.methods.diffusion.latent_diffusion import OBJECTIVES  # noqa: E402
from langfield.methods.diffusion.optim import GradClip  # noqa: E402
from langfield.training import Trainer, TrainerConfig  # noqa: E402
from langfield.training.callbacks import TrainerCallback  # noqa: E402
from langfield.types import IndexBatch  # noqa: E402

N, T, D = 16, 6, 32


def tiny_unet(seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=D, attention_head_dim=4,
    )  # fmt: skip


def tiny_sd3(seed: int = 0) -> SD3Transformer2DModel:
    torch.manual_seed(seed)
    return SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=D, caption_projection_dim=16, pooled_projection_dim=D, pos_embed_max_size=8,
    )  # fmt: skip


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         norm_num_groups=4)  # fmt: skip


def toy_data():
    """Four captions, each with its own latent pattern (so conditioning helps), 16 latents."""
    g = torch.Generator().manual_seed(0)
    patterns = torch.randn(4, 4, 8, 8, generator=g)
    caption_ids = torch.arange(N) % 4
    latents = patterns[caption_ids] + 0.1 * torch.randn(N, 4, 8, 8, generator=g)
    prompts = PromptEmbeddings(torch.randn(4, T, D, generator=g), torch.ones(4, T, dtype=torch.long), torch.randn(4, D, generator=g))
    empty = PromptEmbeddings(torch.zeros(1, T, D), torch.ones(1, T, dtype=torch.long), torch.zeros(1, D))
    return latents, prompts, empty, caption_ids


def make_method(backbone, objective, **kw):
    latents, prompts, empty, ids = toy_data()
    config = LatentDiffusionConfig(objective=objective, **{"lr": 3e-3, "warmup": 0.1, **kw})
    return LatentDiffusionMethod(backbone, latents, prompts, empty, caption_ids=ids, config=config)


def trainer_config(output_dir=None, **kw):
    base = dict(max_steps=30, output_dir=None if output_dir is None else str(output_dir), progress=False, log_every=10,
                checkpoint_every=0, device="cpu", seed=0)  # fmt: skip
    base.update(kw)
    return TrainerConfig(**base)


def eval_loss(method, seeds=range(4)) -> float:
    """The objective on every latent at fixed seeds (no training randomness involved)."""
    with torch.no_grad():
        return sum(float(method.outputs(IndexBatch(torch.arange(N), 0, s)).loss) for s in seeds) / len(seeds)


def state(method):
    return {k: v.detach().clone() for k, v in method.state_dict().items()}


@pytest.mark.parametrize(
    "make_backbone,objective",
    [(tiny_unet, "epsilon"), (tiny_unet, "rectified_flow"), (tiny_sd3, "epsilon"), (tiny_sd3, "rectified_flow")],
    ids=["unet-eps", "unet-flow", "sd3-eps", "sd3-flow"],
)
def test_training_through_the_trainer_reduces_the_loss(make_backbone, objective):
    method = make_method(make_backbone(), objective, lr=1e-2)
    before = eval_loss(method)
    record = Trainer(method, trainer_config(), sampler=IndexSampler(N, 8, seed=0)).train()
    after = eval_loss(method)
    # measured drops after 30 steps: 35-45 % (epsilon), ~15 % (flow, whose target eps - x0 has variance ~2)
    assert after < (0.75 if objective == "epsilon" else 0.92) * before, (before, after)
    assert record["step"] == 30 and record["grad_norm"] > 0
    assert record["lr"][0] == pytest.approx(0.0, abs=1e-9)  # cosine decayed to 0 at the end


def test_objectives_share_data_order_prompt_drops_and_noise():
    """E2: the two objectives see the same latents, the same dropped prompts and the same eps at each step."""
    sampler = IndexSampler(N, 8, seed=3)
    eps = make_method(tiny_sd3(), "epsilon", cfg_dropout=0.5)
    flow = make_method(tiny_sd3(), "rectified_flow", cfg_dropout=0.5)
    seen = []
    for m in (eps, flow):
        conds, noises = [], []
        orig = m.predict

        def spy(x, t, cond, *, backbone=None, _orig=orig, _conds=conds):
            _conds.append(cond.embeds.clone())
            return _orig(x, t, cond, backbone=backbone)

        m.predict = spy
        with torch.no_grad():
            for step in range(3):
                noises.append(m.outputs(sampler.sample(step)).noise)
        seen.append((conds, noises))
    for a, b in zip(*(s[0] for s in seen)):
        assert torch.equal(a, b)
    for a, b in zip(*(s[1] for s in seen)):
        assert torch.equal(a, b)
    dropped = sum(int((c.abs().sum((1, 2)) == 0).sum()) for c in seen[0][0])
    assert 0 < dropped < 24  # some prompts (not all) were replaced by the (zero) empty prompt


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_sync(self, trainer):
        if trainer.step == self.step:
            trainer.request_stop()


@pytest.mark.parametrize(
    "make_backbone,objective", [(tiny_unet, "epsilon"), (tiny_sd3, "rectified_flow")], ids=["unet-eps", "sd3-flow"]
)
def test_resume_from_a_checkpoint_is_bitwise_identical(tmp_path, make_backbone, objective):
    kw = dict(ema_decay=0.9, cfg_dropout=0.25)
    straight = make_method(make_backbone(), objective, **kw)
    Trainer(straight, trainer_config(tmp_path / "straight", max_steps=8), sampler=IndexSampler(N, 4, seed=1)).train()

    first = make_method(make_backbone(), objective, **kw)
    cfg = trainer_config(tmp_path / "stopped", max_steps=8)
    stopped = Trainer(first, cfg, sampler=IndexSampler(N, 4, seed=1), callbacks=[StopAt(3)])
    stopped.train()
    assert stopped.step == 3

    resumed_method = make_method(make_backbone(seed=123), objective, **kw)  # a fresh process rebuilds from scratch
    resumed = Trainer(resumed_method, cfg, sampler=IndexSampler(N, 4, seed=1), resume=True)
    assert resumed.step == 3
    resumed.train()
    assert resumed.step == 8
    a, b = state(straight), state(resumed_method)
    assert a.keys() == b.keys() and any(k.startswith("ema_backbone.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the EMA copy moved, and differs from the live weights
    live = dict(straight.backbone.named_parameters())
    ema = dict(straight.ema_backbone.named_parameters())
    assert any(not torch.equal(live[k], ema[k]) for k in live)


def test_ema_update_follows_its_formula():
    method = make_method(tiny_sd3(), "rectified_flow", ema_decay=0.99)
    p = next(method.backbone.parameters())
    e = next(method.ema_backbone.parameters())
    with torch.no_grad():
        e.fill_(1.0)
        p.fill_(3.0)
    method.after_train_step(0, None)  # warm-up: decay = min(0.99, 1/10) = 0.1
    torch.testing.assert_close(e, torch.full_like(e, 0.1 * 1.0 + 0.9 * 3.0))
    method.after_train_step(1000, None)  # decay = min(0.99, 1001/1010) = 0.99
    torch.testing.assert_close(e, torch.full_like(e, 0.99 * 2.8 + 0.01 * 3.0))
    assert not e.requires_grad


@pytest.mark.parametrize("use_mask", [False, True])
def test_padding_tokens_matter_only_without_the_attention_mask(use_mask):
    """Default (no mask, as the diffusers pipelines call the UNet): padded tokens condition the model."""
    method = make_method(tiny_unet(), "epsilon", use_attention_mask=use_mask)
    emb = torch.randn(2, T, D, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, T, dtype=torch.long)
    mask[:, 4:] = 0
    changed = emb.clone()
    changed[:, 4:] += 1.0  # only the padded positions differ
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 500])
    with torch.no_grad():
        a = method.predict(x, t, PromptEmbeddings(emb, mask, torch.zeros(2, D)))
        b = method.predict(x, t, PromptEmbeddings(changed, mask, torch.zeros(2, D)))
    assert torch.allclose(a, b, atol=1e-6) == use_mask


def test_sampling_scheduler_matches_training():
    eps = make_method(tiny_unet(), "epsilon")
    sched = eps.sampling_scheduler()
    assert isinstance(sched, DDPMScheduler) and sched.config.beta_schedule == "scaled_linear" and not sched.config.clip_sample
    torch.testing.assert_close(sched.alphas_cumprod, eps.noise_scheduler.alphas_cumprod)
    flow = make_method(tiny_sd3(), "rectified_flow", flow_shift=3.0)
    sched = flow.sampling_scheduler()
    assert isinstance(sched, FlowMatchEulerDiscreteScheduler) and sched.config.shift == 3.0
    assert sched.config.num_train_timesteps == 1000


def test_vae_method_trains_and_its_scale_can_be_measured():
    g = torch.Generator().manual_seed(0)
    # smooth images (low-frequency blobs), uint8 storage
    base = torch.rand(32, 3, 2, 2, generator=g)
    smooth = torch.nn.functional.interpolate(base, size=(8, 8), mode="bilinear", align_corners=False)
    images = (smooth * 255).round().to(torch.uint8)
    vae = tiny_vae()
    method = VAEMethod(vae, images, VAEConfig(lr=1e-2, warmup=0.05))
    batch = IndexBatch(torch.arange(32), 0, 0)
    with torch.no_grad():
        before = float(method.outputs(batch).reconstruction)
    record = Trainer(method, trainer_config(max_steps=40), sampler=IndexSampler(32, 16, seed=0)).train()
    with torch.no_grad():
        after = float(method.outputs(batch).reconstruction)
    # measured 0.466 -> 0.332 (the posterior starts with std ~1, which the reconstruction must first shrink)
    assert after < 0.8 * before, (before, after)
    assert {"reconstruction", "kl", "psnr", "grad_norm"} <= record.keys()
    float_images = images.float() / 127.5 - 1
    factor = latent_scaling_factor(vae, float_images)
    assert vae.config.scaling_factor == factor > 0


def test_grad_clip_hook_clips_before_the_step():
    w = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([w], lr=1.0)
    clip = GradClip([w], max_norm=1.0)
    clip.attach(opt)
    (torch.tensor([3.0, 4.0, 0.0]) * w).sum().backward()  # gradient norm 5
    opt.step()
    assert float(clip.last_norm) == pytest.approx(5.0)
    torch.testing.assert_close(w.detach(), torch.tensor([-0.6, -0.8, 0.0]))


def test_bad_inputs_are_refused_with_the_argument_named():
    latents, prompts, empty, ids = toy_data()
    with pytest.raises(InputError, match="channels"):
        LatentDiffusionMethod(tiny_unet(), latents[:, :3], prompts, empty, caption_ids=ids)
    with pytest.raises(InputError, match="width"):
        LatentDiffusionMethod(tiny_unet(), latents, PromptEmbeddings(torch.zeros(4, T, D + 1), prompts.attention_mask, prompts.pooled), None, caption_ids=ids,
                              config=LatentDiffusionConfig(cfg_dropout=0.0))  # fmt: skip
    with pytest.raises(InputError, match="pooled"):
        LatentDiffusionMethod(tiny_sd3(), latents, PromptEmbeddings(prompts.embeds, prompts.attention_mask, torch.zeros(4, D + 1)), empty, caption_ids=ids)
    with pytest.raises(InputError, match="caption_ids"):
        LatentDiffusionMethod(tiny_unet(), latents, prompts, empty, caption_ids=ids + 1)
    with pytest.raises(InputError, match="caption_ids"):
        LatentDiffusionMethod(tiny_unet(), latents, prompts, empty)  # 16 latents, 4 prompts
    with pytest.raises(InputError, match="empty prompt"):
        LatentDiffusionMethod(tiny_unet(), latents, prompts, None, caption_ids=ids)
    with pytest.raises(InputError, match="tokens"):
        longer = PromptEmbeddings(torch.zeros(1, T + 1, D), torch.ones(1, T + 1, dtype=torch.long), torch.zeros(1, D))
        LatentDiffusionMethod(tiny_unet(), latents, prompts, longer, caption_ids=ids)
    with pytest.raises(InputError, match="patch_size"):
        LatentDiffusionMethod(tiny_sd3(), torch.zeros(N, 4, 7, 7), prompts, empty, caption_ids=ids)
    with pytest.raises(InputError, match="UNet2DConditionModel"):
        LatentDiffusionMethod(torch.nn.Linear(2, 2), latents, prompts, empty, caption_ids=ids)
    nan = latents.clone()
    nan[5, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="latents: non-finite values.*row 5"):
        LatentDiffusionMethod(tiny_unet(), nan, prompts, empty, caption_ids=ids)
    with pytest.raises(InputError, match="objective"):
        LatentDiffusionConfig(objective="v")
    with pytest.raises(InputError, match="ema_decay"):
        LatentDiffusionConfig(ema_decay=1.0)
    with pytest.raises(InputError, match=r"\[-1, 1\]"):
        VAEMethod(tiny_vae(), torch.full((2, 3, 8, 8), 2.0))
    with pytest.raises(InputError, match="divisible"):
        VAEMethod(tiny_vae(), torch.zeros(2, 3, 9, 8))


@pytest.mark.requires_cuda
def test_a_cuda_step_draws_exactly_what_a_cpu_step_draws():
    """Per-step randomness comes from a CPU generator, so the device changes nothing but rounding."""
    batch = IndexBatch(torch.arange(8), 5, 99)
    for objective in OBJECTIVES:
        cpu = make_method(tiny_sd3(), objective, cfg_dropout=0.5)
        gpu = make_method(tiny_sd3(), objective, cfg_dropout=0.5).to("cuda")
        with torch.no_grad():
            a, b = cpu.outputs(batch), gpu.outputs(batch.to("cuda"))
        assert b.loss.device.type == "cuda"
        assert torch.equal(a.noise, b.noise.cpu())
        torch.testing.assert_close(a.timesteps, b.timesteps.cpu())
        torch.testing.assert_close(a.noisy, b.noisy.cpu())
        torch.testing.assert_close(b.loss.cpu(), a.loss, rtol=2e-2, atol=1e-3)
