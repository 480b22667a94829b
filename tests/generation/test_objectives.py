"""langfield.generation.objectives: the exact algebra of each loss, its random draws, and its
consistency with the diffusers schedulers that sample from the trained models."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler  # noqa: E402

from langfield._checks import InputError  # noqa: E402
from langfield.generation import objectives  # noqa: E402
from langfield.generation.objectives import (  # noqa: E402
    classifier_free_dropout,
    encode_latents,
    epsilon_loss,
    latent_scaling_factor,
    rectified_flow_loss,
    sample_logit_normal_sigmas,
    shift_sigmas,
    vae_loss,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sd_scheduler(**kw) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         clip_sample=False, **kw)  # fmt: skip


def sd_alphas_cumprod() -> torch.Tensor:
    """SD's abar_t written out from its definition (scaled_linear betas), independent of diffusers."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0)


def zero_model(x, t, cond):
    return torch.zeros_like(x)


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         norm_num_groups=4)  # fmt: skip


def test_docstring_examples():
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(objectives, objectives.__name__) if t.examples]
    assert len(tests) >= 4
    report: list = []
    for t in tests:
        runner.run(t, out=report.append)
    assert runner.failures == 0, "".join(report)


# --------------------------------------------------------------------------- epsilon


def test_epsilon_noisy_latents_follow_ddpm_forward_process():
    x0 = torch.randn(3, 4, 8, 8, generator=gen(1))
    eps = torch.randn(3, 4, 8, 8, generator=gen(2))
    t = torch.tensor([0, 500, 999])
    calls = []

    def model(x, tt, cond):
        calls.append((x, tt, cond))
        return 2.0 * x

    out = epsilon_loss(model, x0, "cond", scheduler=sd_scheduler(), generator=gen(), noise=eps, timesteps=t)
    abar = sd_alphas_cumprod()[t].view(-1, 1, 1, 1)
    expected = (abar.sqrt() * x0.double() + (1 - abar).sqrt() * eps.double()).float()
    torch.testing.assert_close(out.noisy, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(out.target, eps) and torch.equal(out.timesteps, t)
    assert calls[0][2] == "cond" and torch.equal(calls[0][1], t)
    torch.testing.assert_close(out.loss, ((2.0 * out.noisy - eps) ** 2).mean())
    assert out.sigmas is None


def test_epsilon_draws_noise_then_uniform_timesteps_from_the_generator():
    x0 = torch.zeros(4096, 1, 1, 1)
    out = epsilon_loss(zero_model, x0, None, scheduler=sd_scheduler(), generator=gen(7))
    g = gen(7)
    assert torch.equal(out.noise, torch.randn(x0.shape, generator=g))  # noise first ...
    assert torch.equal(out.timesteps, torch.randint(0, 1000, (4096,), generator=g))  # ... then t
    t = out.timesteps.double()
    assert out.timesteps.dtype == torch.int64 and 0 <= int(t.min()) and int(t.max()) <= 999
    # U{0..999}: mean 499.5, std 288.7; 4096 draws -> standard error 4.5
    assert abs(float(t.mean()) - 499.5) < 20 and abs(float(t.std()) - 288.7) < 10
    # zero model: loss = mean(eps^2) ~ 1
    assert abs(float(out.loss) - 1.0) < 0.1


def test_epsilon_is_a_pure_function_of_the_seed():
    x0 = torch.randn(2, 4, 8, 8, generator=gen(3))
    a, b, c = (epsilon_loss(zero_model, x0, None, scheduler=sd_scheduler(), generator=gen(s)) for s in (5, 5, 6))
    assert torch.equal(a.noisy, b.noisy) and torch.equal(a.timesteps, b.timesteps) and torch.equal(a.loss, b.loss)
    assert not torch.equal(a.noise, c.noise)


def test_epsilon_refuses_bad_inputs():
    x0 = torch.randn(2, 4, 8, 8)
    with pytest.raises(InputError, match="prediction_type"):
        epsilon_loss(zero_model, x0, None, scheduler=sd_scheduler(prediction_type="v_prediction"), generator=gen())
    with pytest.raises(InputError, match="generator"):
        epsilon_loss(zero_model, x0, None, scheduler=sd_scheduler(), generator=0)
    with pytest.raises(InputError, match="shaped like the latents"):
        epsilon_loss(lambda x, t, c: x[:, :3], x0, None, scheduler=sd_scheduler(), generator=gen())
    with pytest.raises(InputError, match="latents"):
        epsilon_loss(zero_model, torch.randn(4, 8, 8), None, scheduler=sd_scheduler(), generator=gen())
    with pytest.raises(InputError, match="timesteps"):
        epsilon_loss(zero_model, x0, None, scheduler=sd_scheduler(), generator=gen(), timesteps=torch.tensor([0, 1000]))


def test_min_snr_weights_each_sample_by_min_snr_gamma_over_snr():
    """Hang et al. 2023 for epsilon prediction: w_t = min(SNR_t, gamma) / SNR_t, SNR_t = abar / (1 - abar)."""
    sched = sd_scheduler()
    x0 = torch.randn(3, 4, 8, 8, generator=gen(1))
    t = torch.tensor([5, 400, 990])  # high SNR (weight << 1), middle, low SNR (weight 1)
    plain = epsilon_loss(zero_model, x0, None, scheduler=sched, generator=gen(2), timesteps=t)
    weighted = epsilon_loss(zero_model, x0, None, scheduler=sched, generator=gen(2), timesteps=t, snr_gamma=5.0)
    abar = sched.alphas_cumprod[t].double()
    snr = abar / (1 - abar)
    w = torch.minimum(snr, torch.tensor(5.0, dtype=torch.float64)) / snr
    per_sample = plain.noise.double().pow(2).flatten(1).mean(1)  # zero model: error = eps
    assert torch.isclose(weighted.loss.double(), (w * per_sample).mean(), rtol=1e-5)
    assert torch.isclose(plain.loss.double(), per_sample.mean(), rtol=1e-5)
    assert w[0] < 0.05 and w[2] == 1.0  # the weighting really changes the loss
    assert torch.equal(plain.noisy, weighted.noisy)  # same draws
    # gradients flow through the weighting: d loss / d prediction = 2 w_i (pred - eps) / numel_i / B
    pred = torch.zeros(3, 4, 8, 8, requires_grad=True)
    out = epsilon_loss(lambda x, tt, c: pred, x0, None, scheduler=sched, generator=gen(2), timesteps=t, snr_gamma=5.0)
    out.loss.backward()
    expected = (2 * w.view(-1, 1, 1, 1) * (0 - plain.noise.double()) / (4 * 8 * 8) / 3).float()
    assert torch.allclose(pred.grad, expected, atol=1e-7)
    for bad in (-1.0, float("nan"), True):
        with pytest.raises(InputError, match="snr_gamma"):
            epsilon_loss(zero_model, x0, None, scheduler=sched, generator=gen(), snr_gamma=bad)


# --------------------------------------------------------------------------- rectified flow


def test_flow_interpolant_target_and_timestep():
    x0 = torch.randn(3, 4, 8, 8, generator=gen(1))
    eps = torch.randn(3, 4, 8, 8, generator=gen(2))
    sigmas = torch.tensor([0.0, 0.25, 1.0])
    out = rectified_flow_loss(lambda x, t, c: x, x0, None, generator=gen(), noise=eps, sigmas=sigmas)
    s = sigmas.view(-1, 1, 1, 1)
    torch.testing.assert_close(out.noisy, (1 - s) * x0 + s * eps)
    assert torch.equal(out.noisy[0], x0[0]) and torch.equal(out.noisy[2], eps[2])  # the path's two ends
    torch.testing.assert_close(out.target, eps - x0)
    torch.testing.assert_close(out.timesteps, torch.tensor([0.0, 250.0, 1000.0]))
    assert out.timesteps.dtype == torch.float32
    torch.testing.assert_close(out.loss, ((out.noisy - (eps - x0)) ** 2).mean())
    # the target is the path's derivative d x_t / d sigma
    h = 1e-3
    ahead = rectified_flow_loss(lambda x, t, c: x, x0, None, generator=gen(), noise=eps, sigmas=sigmas.clamp(max=1 - h) + h)
    torch.testing.assert_close((ahead.noisy[:2] - out.noisy[:2]) / h, out.target[:2], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("mean,std", [(0.0, 1.0), (0.5, 0.7)])
def test_logit_normal_sigmas_have_the_stated_distribution(mean, std):
    n = 20000
    sig = sample_logit_normal_sigmas(n, generator=gen(3), mean=mean, std=std).double()
    assert bool(((sig > 0) & (sig < 1)).all())
    logit = torch.log(sig) - torch.log1p(-sig)
    se = std / math.sqrt(n)
    assert abs(float(logit.mean()) - mean) < 4 * se
    assert abs(float(logit.std()) - std) < 4 * std / math.sqrt(2 * n)
    assert abs(float(sig.median()) - 1 / (1 + math.exp(-mean))) < 0.01
    if mean == 0.0:  # symmetric about 1/2, and more mass in the middle than uniform sampling
        assert abs(float(sig.mean()) - 0.5) < 0.01
        assert float(((sig > 0.25) & (sig < 0.75)).double().mean()) > 0.6


def test_flow_uses_the_generator_like_epsilon_noise_first():
    x0 = torch.randn(5, 4, 8, 8, generator=gen(1))
    flow = rectified_flow_loss(zero_model, x0, None, generator=gen(9), logit_normal=(0.3, 0.8))
    eps = epsilon_loss(zero_model, x0, None, scheduler=sd_scheduler(), generator=gen(9))
    assert torch.equal(flow.noise, eps.noise)  # paired comparison of the two objectives
    g = gen(9)
    torch.randn(x0.shape, generator=g)
    torch.testing.assert_close(flow.sigmas, torch.sigmoid(0.3 + 0.8 * torch.randn(5, generator=g)))


def test_shift_matches_the_flow_match_scheduler():
    plain = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0).sigmas
    shifted = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0).sigmas
    torch.testing.assert_close(shift_sigmas(plain, 3.0), shifted)
    # what the scheduler hands the network at sampling time is sigma * num_train_timesteps, as in training
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    sched.set_timesteps(7)
    torch.testing.assert_close(sched.timesteps, sched.sigmas[:-1] * 1000)
    assert float(sched.sigmas[0]) == 1.0 and float(sched.sigmas[-1]) == 0.0
    out = rectified_flow_loss(zero_model, torch.zeros(4, 1, 2, 2), None, generator=gen(2), shift=3.0)
    base = sample_logit_normal_sigmas(4, generator=(lambda g: (torch.randn(4, 1, 2, 2, generator=g), g)[1])(gen(2)))
    torch.testing.assert_close(out.sigmas, shift_sigmas(base, 3.0))


def test_flow_refuses_bad_inputs():
    x0 = torch.randn(2, 4, 8, 8)
    with pytest.raises(InputError, match="std"):
        rectified_flow_loss(zero_model, x0, None, generator=gen(), logit_normal=(0.0, 0.0))
    with pytest.raises(InputError, match="logit_normal"):
        rectified_flow_loss(zero_model, x0, None, generator=gen(), logit_normal=0.5)
    with pytest.raises(InputError, match="sigmas"):
        rectified_flow_loss(zero_model, x0, None, generator=gen(), sigmas=torch.tensor([0.5, 1.5]))


# --------------------------------------------------------------------------- training <-> sampling conventions


class IdealFlow(torch.nn.Module):
    """The exact velocity field of a one-image data set ``a``: ``v(x, sigma) = (x - a) / sigma``,
    reading ``sigma`` from the timestep as ``t / 1000``; ``a`` is learnt."""

    def __init__(self, shape):
        super().__init__()
        self.a = torch.nn.Parameter(torch.zeros(shape))

    def forward(self, x, t, cond=None):
        return (x - self.a) / (t.float() / 1000).view(-1, 1, 1, 1)


class IdealEpsilon(torch.nn.Module):
    """The exact noise predictor of a one-image data set ``a`` under SD's abar_t: ``(x - sqrt(abar) a) / sqrt(1 - abar)``."""

    def __init__(self, shape, alphas_cumprod):
        super().__init__()
        self.a = torch.nn.Parameter(torch.zeros(shape))
        self.abar = alphas_cumprod.float()

    def forward(self, x, t, cond=None):
        abar = self.abar[t.long()].view(-1, 1, 1, 1)
        return (x - abar.sqrt() * self.a) / (1 - abar).sqrt()


def constant_image():
    return torch.linspace(-1.5, 1.5, 4 * 8 * 8).reshape(1, 4, 8, 8)


def fit(model, loss_fn, steps=150, lr=0.05):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(steps):
        opt.zero_grad()
        loss = loss_fn(model, gen(step)).loss
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(loss_fn(model, gen(10_000)).loss)


@pytest.mark.parametrize("num_steps", [5, 20])
def test_flow_trained_model_reproduces_its_image_under_flow_match_euler_sampling(num_steps):
    target = constant_image()
    model = IdealFlow(target.shape[1:])
    final = fit(model, lambda m, g: rectified_flow_loss(m, target.expand(8, -1, -1, -1), None, generator=g))
    assert final < 1e-4  # the loss has its minimum (0) only where training's conventions hold
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    sched.set_timesteps(num_steps)
    x = torch.randn(2, 4, 8, 8, generator=gen(123))
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(model(x, t.expand(2)), t, x).prev_sample
    assert float((x - target).abs().max()) < 1e-2
    assert float((x - target).abs().max()) < 0.01 * float(target.abs().max() + 1)


def test_epsilon_trained_model_reproduces_its_image_under_ddim_sampling():
    target = constant_image()
    train_sched = sd_scheduler()
    model = IdealEpsilon(target.shape[1:], train_sched.alphas_cumprod)
    final = fit(model, lambda m, g: epsilon_loss(m, target.expand(8, -1, -1, -1), None, scheduler=train_sched, generator=g))
    assert final < 1e-4
    sched = DDIMScheduler.from_config(train_sched.config)
    sched.set_timesteps(20)
    x = torch.randn(2, 4, 8, 8, generator=gen(123))
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(model(x, t.expand(2)), t, x).prev_sample
    # DDIM's last step lands on abar of its final timestep, not on 1: x = sqrt(abar) a + sqrt(1-abar) eps_hat
    assert float((x - target).abs().max()) < 0.05


@pytest.mark.slow
def test_tiny_sd3_transformer_trained_on_one_image_reproduces_it_under_flow_match_euler():
    """A real network (no convention built in) trained with the flow loss, sampled by diffusers' scheduler.

    End to end only: with one training image a network can read the noise level off ``x_t`` itself,
    so this passes even with a wrong timestep mapping; the ``IdealFlow`` test above pins that."""
    torch.manual_seed(0)
    net = diffusers.SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=4,
        joint_attention_dim=8, caption_projection_dim=32, pooled_projection_dim=8, pos_embed_max_size=8,
    )  # fmt: skip
    target = constant_image()
    emb, pooled = torch.zeros(8, 2, 8), torch.zeros(8, 8)

    def model(x, t, cond=None):
        b = len(x)
        return net(hidden_states=x, encoder_hidden_states=emb[:b], pooled_projections=pooled[:b], timestep=t).sample

    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.0)
    for step in range(250):
        opt.zero_grad()
        rectified_flow_loss(model, target.expand(8, -1, -1, -1), None, generator=gen(step)).loss.backward()
        opt.step()
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    sched.set_timesteps(10)
    x = torch.randn(4, 4, 8, 8, generator=gen(1))
    start = float((x - target).square().mean())
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(model(x, t.expand(4)), t, x).prev_sample
    assert float((x - target).square().mean()) < 0.02 * start, (float((x - target).square().mean()), start)


# --------------------------------------------------------------------------- classifier-free dropout


def test_cfg_dropout_replaces_exactly_the_dropped_rows():
    b, t, d, p_dim = 64, 5, 6, 7
    emb = torch.randn(b, t, d, generator=gen(1))
    mask = torch.ones(b, t, dtype=torch.long)
    mask[:, 3:] = 0
    pooled = torch.randn(b, p_dim, generator=gen(2))
    e_emb, e_mask, e_pooled = torch.randn(t, d), torch.tensor([1, 1, 0, 0, 0]), torch.randn(1, p_dim)
    out = classifier_free_dropout(
        emb, e_emb, 0.3, generator=gen(4), mask=mask, empty_mask=e_mask, pooled=pooled, empty_pooled=e_pooled
    )
    assert torch.equal(out.dropped, torch.rand(b, generator=gen(4)) < 0.3)
    dropped = out.dropped
    assert 0 < int(dropped.sum()) < b
    assert torch.equal(out.embeds[dropped], e_emb.expand(int(dropped.sum()), t, d))
    assert torch.equal(out.embeds[~dropped], emb[~dropped])
    assert torch.equal(out.mask[dropped], e_mask.expand(int(dropped.sum()), t)) and out.mask.dtype == torch.long
    assert torch.equal(out.mask[~dropped], mask[~dropped])
    assert torch.equal(out.pooled[dropped], e_pooled.expand(int(dropped.sum()), p_dim))
    assert torch.equal(out.pooled[~dropped], pooled[~dropped])


def test_cfg_dropout_rate_and_extremes():
    n = 20000
    emb = torch.ones(n, 1, 1)
    out = classifier_free_dropout(emb, torch.zeros(1, 1), 0.1, generator=gen(0))
    rate = float(out.dropped.double().mean())
    assert abs(rate - 0.1) < 4 * math.sqrt(0.09 / n)
    assert float((out.embeds == 0).double().mean()) == rate
    assert not classifier_free_dropout(emb, torch.zeros(1, 1), 0.0, generator=gen(0)).dropped.any()
    assert classifier_free_dropout(emb, torch.zeros(1, 1), 1.0, generator=gen(0)).dropped.all()
    again = classifier_free_dropout(emb, torch.zeros(1, 1), 0.1, generator=gen(0))
    assert torch.equal(again.dropped, out.dropped)


def test_cfg_dropout_refuses_bad_inputs():
    emb = torch.randn(4, 3, 2)
    with pytest.raises(InputError, match="p"):
        classifier_free_dropout(emb, torch.zeros(3, 2), 1.5, generator=gen())
    with pytest.raises(InputError, match="empty_embeds"):
        classifier_free_dropout(emb, torch.zeros(4, 2), 0.1, generator=gen())
    with pytest.raises(InputError, match="both or neither"):
        classifier_free_dropout(emb, torch.zeros(3, 2), 0.1, generator=gen(), mask=torch.ones(4, 3))
    with pytest.raises(InputError, match="cond_embeds"):
        classifier_free_dropout(torch.randn(4, 2), torch.zeros(2), 0.1, generator=gen())


# --------------------------------------------------------------------------- the autoencoder


def test_vae_loss_terms():
    vae = tiny_vae()
    images = torch.rand(2, 3, 8, 8, generator=gen(1)) * 2 - 1
    out = vae_loss(vae, images, 0.5, generator=gen(3))
    post = vae.encode(images).latent_dist
    eps = torch.randn(post.mean.shape, generator=gen(3))
    torch.testing.assert_close(out.latents, post.mean + post.std * eps)  # reparameterised sample from the generator
    decoded = vae.decode(out.latents).sample
    torch.testing.assert_close(out.decoded, decoded)
    torch.testing.assert_close(out.reconstruction, (decoded - images).abs().mean())
    # diffusers' KL is a sum per image; ours is the mean per latent element
    torch.testing.assert_close(out.kl, post.kl().sum() / post.mean.numel())
    torch.testing.assert_close(out.loss, out.reconstruction + 0.5 * out.kl)
    mse = vae_loss(vae, images, 0.0, generator=gen(3), reconstruction="mse")
    torch.testing.assert_close(mse.loss, ((decoded - images) ** 2).mean())
    out.loss.backward()
    assert vae.encoder.conv_in.weight.grad.abs().sum() > 0 and vae.decoder.conv_out.weight.grad.abs().sum() > 0


def test_latent_scaling_factor_gives_unit_variance_and_is_stored():
    vae = tiny_vae()
    assert vae.config.shift_factor is None
    images = torch.rand(6, 3, 8, 8, generator=gen(1)) * 2 - 1
    raw = vae.encode(images).latent_dist.mean.detach()
    factor = latent_scaling_factor(vae, images, batch_size=4)
    assert factor == pytest.approx(1 / float(raw.double().std()), rel=1e-5)
    assert vae.config.scaling_factor == factor and vae.config.shift_factor == 0.0
    scaled = encode_latents(vae, images, batch_size=4)
    assert float(scaled.double().std()) == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(scaled, raw * factor)
    # posterior samples: another spread, still drawn from the generator only
    a = latent_scaling_factor(vae, images, generator=gen(5), store=False)
    assert a == latent_scaling_factor(vae, images, generator=gen(5), store=False) and a != factor
    assert vae.config.scaling_factor == factor


def test_vae_helpers_refuse_bad_images():
    vae = tiny_vae()
    with pytest.raises(InputError, match=r"\[-1, 1\]"):
        latent_scaling_factor(vae, torch.full((1, 3, 8, 8), 255.0))
    with pytest.raises(InputError, match="channels"):
        encode_latents(vae, torch.zeros(1, 4, 8, 8))
    with pytest.raises(InputError, match="divisible"):
        vae_loss(vae, torch.zeros(1, 3, 7, 8), 1e-6, generator=gen())
    with pytest.raises(InputError, match="reconstruction"):
        vae_loss(vae, torch.zeros(1, 3, 8, 8), 1e-6, generator=gen(), reconstruction="lpips")
