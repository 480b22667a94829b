"""langfield.generation.control: ControlNet, Multi-ControlNet, ControlNet-XS, ControlNeXt, SD3 ControlNet
on tiny random diffusers models (built here; nothing is downloaded)."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch

pytest.importorskip("diffusers")

from langfield._checks import InputError  # noqa: E402
from langfield.generation.control import (  # noqa: E402
    ControlNetAdapter,
    ControlNeXtConfig,
    SD3ControlNetAdapter,
    XSControlAdapter,
    build_controlnet,
    build_controlnet_xs,
    build_controlnext,
    build_sd3_controlnet,
    cross_normalize,
    cross_normalize_reference,
    generate_controlled,
    load_control_adapter,
)
from langfield.generation.loading import build_pipeline  # noqa: E402
from langfield.generation.sampling import generate  # noqa: E402
from langfield.generation.text_conditioning import PromptEmbeddings  # noqa: E402

from .tiny import DIT, UNET, VAE  # noqa: E402

F = 4  # the tiny VAE's factor: 16 px images <-> 4x4x4 latents
HINT = (8, 16, 16)  # a small hint encoder that downsamples by 4


def unet(seed: int = 1, **overrides):
    return dataclasses.replace(UNET, **overrides).build(seed=seed)


def inputs(seed: int = 0, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    noisy = torch.randn(batch, 4, 4, 4, generator=g)
    t = torch.tensor([50, 700][:batch])
    emb = torch.randn(batch, 6, 384, generator=g)
    cond = torch.rand(batch, 3, 16, 16, generator=g)
    return noisy, t, emb, cond


def base_out(u, noisy, t, emb):
    with torch.no_grad():
        return u(noisy, t, encoder_hidden_states=emb).sample


def wake_zero_convs(controlnet, seed: int = 0):
    """Give ControlNet's zero convs (and its hint encoder's last conv) random weights, as diffusers' tests do."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in list(controlnet.controlnet_down_blocks) + [controlnet.controlnet_mid_block, controlnet.controlnet_cond_embedding.conv_out]:
            m.weight.copy_(0.3 * torch.randn(m.weight.shape, generator=g))
            m.bias.fill_(0.1)


def wake_xs(model, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and "to_base" in name or name.startswith("controlnet_cond_embedding.conv_out"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


def perturb_subset(adapter, amount: float = 0.05):
    """Shift the base subset a ControlNeXt trains, as training would."""
    with torch.no_grad():
        for n, p in adapter.unet.named_parameters():
            if n in adapter.base_names:
                p.add_(amount)


def make_adapter(kind: str, u=None, seed: int = 0):
    u = unet() if u is None else u
    if kind == "controlnet":
        cn = build_controlnet(u, vae_factor=F, conditioning_embedding_out_channels=HINT, seed=seed)
        return ControlNetAdapter(u, cn, vae_factor=F)
    if kind == "controlnet_xs":
        return XSControlAdapter(build_controlnet_xs(u, 0.5, vae_factor=F, conditioning_embedding_out_channels=HINT, seed=seed), vae_factor=F)
    return build_controlnext(u, vae_factor=F, seed=seed)


KINDS = ("controlnet", "controlnet_xs", "controlnext")


# --------------------------------------------------------------------------- base unchanged / control matters


@pytest.mark.parametrize("kind", ["controlnet", "controlnet_xs"])
def test_fresh_zero_initialised_adapter_leaves_the_base_unchanged_and_awake_it_follows_the_condition(kind):
    u = unet()
    a = make_adapter(kind, u)
    noisy, t, emb, cond = inputs()
    ref = base_out(u, noisy, t, emb)
    with torch.no_grad():
        fresh = a.predict(noisy, t, emb, cond)
    if kind == "controlnet":
        assert torch.equal(fresh, ref)  # zero convs add exact zeros
        wake_zero_convs(a.controlnet)
    else:
        # diffusers' UNetControlNetXSModel rebuilds the base block by block; on this UNet its base path
        # differs from UNet2DConditionModel by ~7e-5 (1e-4 of the output's scale; the same in float64,
        # so a layer option, not rounding). The fresh control itself adds exact zeros:
        with torch.no_grad():
            assert torch.equal(fresh, a.predict(noisy, t, emb, cond, scale=0.0))
        torch.testing.assert_close(fresh, ref, rtol=0, atol=3e-4)
        wake_xs(a.model)
    with torch.no_grad():
        on = a.predict(noisy, t, emb, cond)
        other = a.predict(noisy, t, emb, torch.rand(cond.shape, generator=torch.Generator().manual_seed(9)))
        off = a.predict(noisy, t, emb, cond, scale=0.0)
    assert (on - ref).abs().max() > 1e-2
    assert (on - other).abs().max() > 1e-3  # the output depends on the condition
    torch.testing.assert_close(off, ref, rtol=0, atol=3e-4 if kind == "controlnet_xs" else 0.0)


def test_controlnext_scale_zero_is_the_base_and_scale_one_follows_the_condition():
    u = unet()
    a = make_adapter("controlnext", u)
    noisy, t, emb, cond = inputs()
    ref = base_out(u, noisy, t, emb)
    with torch.no_grad():
        assert torch.equal(a.predict(noisy, t, emb, cond, scale=0.0), ref)
        on = a.predict(noisy, t, emb, cond, scale=1.0)
        other = a.predict(noisy, t, emb, torch.rand(cond.shape, generator=torch.Generator().manual_seed(9)))
    assert (on - ref).abs().max() > 1e-2 and (on - other).abs().max() > 1e-3
    # outside predict the hook is inert: the UNet alone is the base again
    assert torch.equal(base_out(u, noisy, t, emb), ref)


# --------------------------------------------------------------------------- cross normalisation


@pytest.mark.parametrize("mode", ["channel", "sample"])
def test_cross_normalisation_takes_the_main_statistics_and_matches_its_twin(mode):
    g = torch.Generator().manual_seed(0)
    c = 3.0 * torch.randn(2, 5, 6, 6, generator=g) - 1.0
    m = 0.5 * torch.randn(2, 5, 6, 6, generator=g) + torch.arange(5.0).view(1, 5, 1, 1)
    out = cross_normalize(c, m, mode=mode)
    dims = (2, 3) if mode == "channel" else (1, 2, 3)
    torch.testing.assert_close(out.mean(dims), m.mean(dims), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.std(dims, unbiased=False), m.std(dims, unbiased=False), rtol=1e-4, atol=1e-5)
    # the shape of the control survives (a positive affine map of it per group)
    corr = torch.corrcoef(torch.stack([out[0, 1].flatten(), c[0, 1].flatten()]))[0, 1]
    assert corr > 0.9999
    torch.testing.assert_close(out, cross_normalize_reference(c, m, mode=mode), rtol=1e-5, atol=1e-5)
    if mode == "channel":  # per-channel statistics differ from the per-sample ones
        assert (out - cross_normalize(c, m, mode="sample")).abs().max() > 0.1


@pytest.mark.parametrize("mode", ["channel", "sample"])
def test_cross_normalisation_gradients(mode):
    g = torch.Generator().manual_seed(1)
    c = torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    m = torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: cross_normalize(a, b, mode=mode), (c, m))
    assert torch.autograd.gradcheck(lambda a, b: cross_normalize_reference(a, b, mode=mode), (c, m))
    up = torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64)
    fast = torch.autograd.grad((cross_normalize(c, m, mode=mode) * up).sum(), (c, m))
    slow = torch.autograd.grad((cross_normalize_reference(c, m, mode=mode) * up).sum(), (c, m))
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b)


# --------------------------------------------------------------------------- what is trained


@pytest.mark.parametrize("kind", KINDS)
def test_only_the_declared_parameters_are_trained(kind):
    a = make_adapter(kind)
    names = a.trainable_parameter_names()
    if kind == "controlnet":
        expected = {n for n, _ in a.named_parameters() if n.startswith("controlnet.")}
    elif kind == "controlnet_xs":
        expected = {n for n, _ in a.named_parameters() if "ctrl" in n or "to_base" in n or "to_ctrl" in n or "controlnet_cond" in n}
    else:
        expected = {n for n, _ in a.named_parameters() if n.startswith("encoder.") or ("to_out" in n and ("attn1" in n or "attn2" in n))}
        assert all(("unet." + n) in names for n in a.base_names) and a.base_names
    assert set(names) == expected
    if kind == "controlnet":
        wake_zero_convs(a.controlnet)  # so gradients reach the copied encoder too
    noisy, t, emb, cond = inputs()
    a.predict(noisy, t, emb, cond).square().mean().backward()
    trained = set(names)
    for n, p in a.named_parameters():
        if n not in trained:
            assert p.grad is None, n
    with_grad = [n for n in names if dict(a.named_parameters())[n].grad is not None]
    assert len(with_grad) >= 0.9 * len(names)


def test_controlnext_is_far_lighter_than_controlnet():
    u = unet()
    cn = make_adapter("controlnet", u).num_trainable_parameters()
    nx = make_adapter("controlnext", unet()).num_trainable_parameters()
    xs = make_adapter("controlnet_xs", unet()).num_trainable_parameters()
    assert nx < cn and xs < cn, (cn, xs, nx)
    only_encoder = build_controlnext(unet(), vae_factor=F, config=ControlNeXtConfig(train_base=())).num_trainable_parameters()
    assert only_encoder < nx
    # at the toy world's UNet (the benchmark's base): the documented counts, ControlNeXt under 20 % of ControlNet
    from langfield.runs.toyworld import toyworld_preset

    toy = toyworld_preset("default").unet
    cn_toy = build_controlnet(toy.build(seed=0), vae_factor=4)
    cn_toy = sum(p.numel() for p in cn_toy.parameters())
    nx_toy = build_controlnext(toy.build(seed=0), vae_factor=4).num_trainable_parameters()
    plain = build_controlnext(toy.build(seed=0), vae_factor=4, config=ControlNeXtConfig(time_conditioned=False)).num_trainable_parameters()
    assert (cn_toy, nx_toy, plain) == (2_368_464, 337_824, 147_776)
    assert nx_toy <= 0.2 * cn_toy


# --------------------------------------------------------------------------- sampling


def sd_pipe(u, seed: int = 0):
    return build_pipeline(vae=VAE.build(seed=seed), unet=u, text=None)


def prompts(batch: int = 2, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 6, 384, generator=g), torch.zeros(1, 6, 384)


def test_multi_controlnet_weight_zero_is_the_net_left_out_and_end_zero_is_no_control():
    u = unet()
    pipe = sd_pipe(u)
    a1, a2 = make_adapter("controlnet", u, seed=1), make_adapter("controlnet", u, seed=2)
    wake_zero_convs(a1.controlnet, 1)
    wake_zero_convs(a2.controlnet, 2)
    emb, neg = prompts()
    g = torch.Generator().manual_seed(5)
    c1, c2 = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
    kw = dict(negative=neg, steps=3, guidance=2.0, seed=7)
    both = generate_controlled(pipe, emb, [c1, c2], adapters=[a1, a2], weights=[1.0, 0.0], **kw)
    alone = generate_controlled(pipe, emb, c1, adapters=a1, weights=1.0, **kw)
    full = generate_controlled(pipe, emb, [c1, c2], adapters=[a1, a2], weights=[1.0, 1.0], **kw)
    torch.testing.assert_close(both.images, alone.images, rtol=0, atol=1e-6)
    assert (full.images - alone.images).abs().max() > 1e-3  # the second net does act at weight 1
    assert both.images.shape == (2, 16, 16, 3) and both.control.kinds == ("controlnet", "controlnet")
    assert both.control.to_dict()["weights"] == [1.0, 0.0]
    base = generate(pipe, emb, **kw)
    never = generate_controlled(pipe, emb, c1, adapters=a1, guidance_end=0.0, **kw)
    torch.testing.assert_close(never.images, base.images, rtol=0, atol=1e-6)
    assert (alone.images - base.images).abs().max() > 1e-3


def test_guess_mode_runs_the_controlnet_on_the_conditional_half_only():
    u = unet()
    pipe = sd_pipe(u)
    a = make_adapter("controlnet", u, seed=1)
    wake_zero_convs(a.controlnet, 1)
    emb, neg = prompts()
    cond = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    kw = dict(negative=neg, steps=3, guidance=2.0, seed=7)
    seen = []
    def count(module, args, kwargs):
        seen.append((args[0] if args else kwargs["sample"]).shape[0])

    hook = a.controlnet.register_forward_pre_hook(count, with_kwargs=True)
    try:
        plain = generate_controlled(pipe, emb, cond, adapters=a, **kw)
        n_plain = list(seen)
        seen.clear()
        guess = generate_controlled(pipe, emb, cond, adapters=a, guess_mode=True, **kw)
    finally:
        hook.remove()
    assert n_plain == [4] * 3 and seen == [2] * 3  # both halves of the CFG batch / the conditional half only
    assert (guess.images - plain.images).abs().max() > 1e-3
    assert guess.control.guess_mode and not plain.control.guess_mode and guess.control.to_dict()["guess_mode"] is True
    base = generate(pipe, emb, **kw)
    off = generate_controlled(pipe, emb, cond, adapters=a, weights=0.0, guess_mode=True, **kw)
    torch.testing.assert_close(off.images, base.images, rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="guess_mode"):
        generate_controlled(pipe, emb, cond, adapters=a, guess_mode="yes", **kw)
    transformer, pipe3, emb3, neg3 = sd3_setup()
    sd3 = SD3ControlNetAdapter(transformer, build_sd3_controlnet(transformer, 1), vae_factor=F)
    with pytest.raises(InputError, match="guess_mode: SD3"):
        generate_controlled(pipe3, emb3, cond, adapters=sd3, negative=neg3, steps=2, guidance=2.0, guess_mode=True)


@pytest.mark.parametrize("kind", ["controlnet_xs", "controlnext"])
def test_guess_mode_of_xs_and_controlnext_leaves_the_unconditional_half_to_the_base(kind):
    """Every denoiser call of a guess-mode run is checked against its twin computed half by half: the
    unconditional half is the bare base, the conditional half the adapter at the run's scale. For
    ControlNeXt the bare base is the UNet as given, before its trained subset changed."""
    u = unet()
    given = copy.deepcopy(u)
    adapter = make_adapter(kind, u, seed=1)
    if kind == "controlnet_xs":
        wake_xs(adapter.model)
        net = adapter.model  # the XS pipeline's UNet (base and control in one model)
        pipe = sd_pipe(unet())
    else:
        net, pipe = u, sd_pipe(u)
        perturb_subset(adapter)  # as training would
        trained = copy.deepcopy(u)
    emb, neg = prompts()
    cond = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    kw = dict(negative=neg, steps=3, guidance=2.0, seed=7, weights=1.5)
    calls = []

    def record(module, args, kwargs, output):
        out = output.sample if hasattr(output, "sample") else output[0]
        calls.append(([x.clone() if torch.is_tensor(x) else x for x in args], dict(kwargs), out.clone()))

    hook = net.register_forward_hook(record, with_kwargs=True)
    try:
        guess = generate_controlled(pipe, emb, cond, adapters=adapter, guess_mode=True, **kw)
        n_guess = len(calls)
        plain = generate_controlled(pipe, emb, cond, adapters=adapter, **kw)
    finally:
        hook.remove()
    assert n_guess == 3 and guess.control.guess_mode and (guess.images - plain.images).abs().max() > 1e-3
    with torch.no_grad():
        for args, kwargs, out in calls[:n_guess]:
            assert out.shape[0] == 4  # [unconditional, conditional] x 2 images
            if kind == "controlnet_xs":
                x, t, e, c = kwargs["sample"], kwargs["timestep"], kwargs["encoder_hidden_states"], kwargs["controlnet_cond"]
                assert kwargs["conditioning_scale"] == 1.5  # the pipeline's scale; the per-sample one is ours
                bare = net(sample=x[:2], timestep=t, encoder_hidden_states=e[:2], controlnet_cond=c[:2], apply_control=False).sample
                ctrl = net(sample=x[2:], timestep=t, encoder_hidden_states=e[2:], controlnet_cond=c[2:], conditioning_scale=1.5).sample
            else:
                x, t, e = args[0], args[1], kwargs["encoder_hidden_states"]
                bare = given(x[:2], t, encoder_hidden_states=e[:2], return_dict=False)[0]
                trained_alone = net(x[:2], t, encoder_hidden_states=e[:2], return_dict=False)[0]
                assert (bare - trained_alone).abs().max() > 1e-3  # the trained subset alone is not the bare base
                with adapter.injecting(cond, 1.5):
                    ctrl = net(x[2:], t, encoder_hidden_states=e[2:], return_dict=False)[0]
            torch.testing.assert_close(out[:2], bare, rtol=0, atol=1e-5)
            torch.testing.assert_close(out[2:], ctrl, rtol=0, atol=1e-5)
            assert (bare - ctrl).abs().max() > 1e-3  # the control does act on the conditional half
    assert "forward" not in net.__dict__  # nothing left patched
    if kind == "controlnext":  # and the trained subset is back
        assert all(torch.equal(p, q) for p, q in zip(net.parameters(), trained.parameters()))


def test_controlnext_and_xs_sample_through_their_pipelines():
    u = unet()
    pipe = sd_pipe(u)
    nx = make_adapter("controlnext", u)
    emb, neg = prompts()
    cond = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    kw = dict(negative=neg, steps=3, guidance=2.0, seed=7)
    base = generate(pipe, emb, **kw)
    never = generate_controlled(pipe, emb, cond, adapters=nx, guidance_end=0.0, **kw)
    torch.testing.assert_close(never.images, base.images, rtol=0, atol=1e-6)
    on = generate_controlled(pipe, emb, cond, adapters=nx, **kw)
    half = generate_controlled(pipe, emb, cond, adapters=nx, guidance_start=0.5, **kw)
    assert (on.images - base.images).abs().max() > 1e-3 and (half.images - on.images).abs().max() > 1e-4
    assert on.control.pipeline == "StableDiffusionPipeline"
    xs = make_adapter("controlnet_xs", unet())
    wake_xs(xs.model)
    out = generate_controlled(sd_pipe(unet()), emb, cond, adapters=xs, **kw)
    assert out.images.shape == (2, 16, 16, 3) and float(out.images.min()) >= 0 and float(out.images.max()) <= 1
    assert out.control.pipeline == "StableDiffusionControlNetXSPipeline"


def test_one_channel_conditions_sample_and_matter():
    u = unet()
    pipe = sd_pipe(u)
    cn = ControlNetAdapter(u, build_controlnet(u, vae_factor=F, conditioning_channels=1, conditioning_embedding_out_channels=HINT), vae_factor=F)
    wake_zero_convs(cn.controlnet)
    emb, neg = prompts()
    depth = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(2, 1, 16, 16).contiguous()
    kw = dict(negative=neg, steps=2, guidance=2.0, seed=1)
    a = generate_controlled(pipe, emb, depth, adapters=cn, **kw).images
    b = generate_controlled(pipe, emb, depth.flip(-1), adapters=cn, **kw).images
    # the tiny random VAE decoder damps latent changes: measured 5e-4 for the mirrored ramp (float noise ~1e-7)
    assert a.shape == (2, 16, 16, 3) and (a - b).abs().max() > 1e-4


def test_string_prompts_go_through_the_pipelines_own_text_encoder(tmp_path):
    from diffusers import StableDiffusionControlNetPipeline

    from .tiny import tiny_clip_sd_pipeline

    sd = tiny_clip_sd_pipeline(tmp_path / "tok")
    cn = ControlNetAdapter(sd.unet, build_controlnet(sd.unet, vae_factor=F, conditioning_embedding_out_channels=HINT), vae_factor=F)
    wake_zero_convs(cn.controlnet)
    cond = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ours = generate_controlled(sd, ["red ball"], cond, adapters=cn, steps=2, guidance=2.0, seed=3)
    theirs = StableDiffusionControlNetPipeline(
        vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=sd.unet, controlnet=cn.controlnet,
        scheduler=sd.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )(["red ball"], image=cond, num_inference_steps=2, guidance_scale=2.0, generator=[torch.Generator().manual_seed(3)],
      output_type="pt", height=16, width=16).images  # fmt: skip
    assert ours.record.prompts == ("red ball",)
    torch.testing.assert_close(ours.images, theirs.permute(0, 2, 3, 1), rtol=0, atol=1e-6)


def test_controlnext_guidance_window_follows_the_diffusers_rule():
    from langfield.generation.control import _controlled_at

    assert [_controlled_at(i, 4, 0.25, 0.75) for i in range(4)] == [False, True, True, False]
    assert [_controlled_at(i, 3, 0.0, 1.0) for i in range(3)] == [True] * 3
    assert not any(_controlled_at(i, 3, 0.0, 0.0) for i in range(3))


def sd3_setup():
    transformer = dataclasses.replace(DIT, num_layers=2).build(seed=1)
    pipe = build_pipeline(vae=VAE.build(seed=0), transformer=transformer, text=None)
    g = torch.Generator().manual_seed(2)
    emb = PromptEmbeddings(torch.randn(2, 6, 384, generator=g), torch.ones(2, 6, dtype=torch.long), torch.randn(2, 384, generator=g))
    neg = PromptEmbeddings(torch.zeros(1, 6, 384), torch.ones(1, 6, dtype=torch.long), torch.zeros(1, 384))
    return transformer, pipe, emb, neg


def test_sd3_controlnet_pipeline_runs_and_a_fresh_net_changes_nothing():
    transformer, pipe, emb, neg = sd3_setup()
    a = SD3ControlNetAdapter(transformer, build_sd3_controlnet(transformer, 1), vae_factor=F)
    cond = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    kw = dict(negative=neg, steps=3, guidance=2.0, seed=7)
    base = generate(pipe, emb, **kw)
    fresh = generate_controlled(pipe, emb, cond, adapters=a, **kw)
    assert fresh.control.pipeline == "StableDiffusion3ControlNetPipeline"
    torch.testing.assert_close(fresh.images, base.images, rtol=0, atol=1e-5)
    with torch.no_grad():
        for block in a.controlnet.controlnet_blocks:
            block.weight.normal_(0, 0.3)
        a.controlnet.pos_embed_input.proj.weight.normal_(0, 0.3)
    awake = generate_controlled(pipe, emb, cond, adapters=a, **kw)
    assert (awake.images - base.images).abs().max() > 1e-3
    with pytest.raises(InputError, match="num_layers"):
        build_sd3_controlnet(transformer, 2)  # the base's last block is context-pre-only


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("kind", KINDS + ("sd3_controlnet",))
def test_save_and_load_give_identical_predictions(tmp_path, kind):
    noisy, t, emb, cond = inputs()
    if kind == "sd3_controlnet":
        transformer, _, prompt, _ = sd3_setup()
        a = SD3ControlNetAdapter(transformer, build_sd3_controlnet(transformer, 1), vae_factor=F)
        with torch.no_grad():
            for block in a.controlnet.controlnet_blocks:
                block.weight.normal_(0, 0.3)
        cond = torch.randn(2, 4, 4, 4)  # SD3 adapters take the VAE-encoded condition
        emb, base = prompt, transformer
    else:
        u = unet()
        a = make_adapter(kind, u)
        if kind == "controlnet":
            wake_zero_convs(a.controlnet)
        elif kind == "controlnet_xs":
            wake_xs(a.model)
        else:
            perturb_subset(a)  # a "trained" base subset, which the file must carry
        base = None if kind == "controlnet_xs" else u
    with torch.no_grad():
        before = a.predict(noisy, t, emb, cond)
    a.save(tmp_path / kind)
    if kind == "controlnext":
        a.remove_hook()
        base = unet()  # a fresh base: the saved subset is written into it
    b = load_control_adapter(tmp_path / kind, base)
    assert type(b) is type(a)
    with torch.no_grad():
        after = b.predict(noisy, t, emb, cond)
    assert torch.equal(before, after)
    if kind == "controlnext":  # the bare base (guess mode's unconditional branch) is the base as it came
        fresh = unet()
        with torch.no_grad(), b.injecting(cond), b.bare_base():
            bare = base(noisy, t, encoder_hidden_states=emb, return_dict=False)[0]
        with torch.no_grad():
            want = fresh(noisy, t, encoder_hidden_states=emb, return_dict=False)[0]
            again = b.predict(noisy, t, emb, cond)
        assert torch.equal(bare, want) and torch.equal(again, before)  # ... and everything is back on exit


def test_controlnext_encoder_takes_the_blocks_timestep_embedding():
    u = unet()
    a = make_adapter("controlnext", u)
    _, _, _, cond = inputs()
    width = u.time_embedding.linear_2.out_features
    g = torch.Generator().manual_seed(4)
    t1, t2 = torch.randn(2, width, generator=g), torch.randn(2, width, generator=g)
    with torch.no_grad():
        assert not torch.allclose(a.encode(cond, t1), a.encode(cond, t2))  # the control changes with the noise level
    with pytest.raises(InputError, match="temb"):
        a.encode(cond)
    # what the hook encodes is the embedding the first block received: capture it and compare
    seen = {}
    hook = u.down_blocks[0].register_forward_pre_hook(lambda m, args, kw: seen.update(temb=kw["temb"]), with_kwargs=True)
    noisy, t, emb, cond = inputs()
    with torch.no_grad(), a.injecting(cond, 1.0):
        out = u(noisy, t, encoder_hidden_states=emb).sample
    hook.remove()
    with torch.no_grad():
        hidden, _ = u.down_blocks[0](u.conv_in(noisy), temb=seen["temb"], encoder_hidden_states=emb)  # the hook is off outside injecting
        expected = hidden + cross_normalize(a.encode(cond, seen["temb"]), hidden, mode=a.config.normalization)
        a.remove_hook()
        rest = _unet_after_first_block(u, noisy, seen["temb"], emb, expected)
    torch.testing.assert_close(out, rest, rtol=1e-5, atol=1e-6)
    # the plain encoder (earlier layout) ignores the timestep
    plain = build_controlnext(unet(), vae_factor=F, config=ControlNeXtConfig(time_conditioned=False))
    with torch.no_grad():
        assert torch.equal(plain.encode(cond, t1), plain.encode(cond, t2)) and torch.equal(plain.encode(cond), plain.encode(cond, t1))


def _first_block_layers(u, noisy, temb, emb):
    """``[conv_in's output, then each ResNet + attention layer's of the first down block]``: the skip tensors that
    block takes before its downsampler (the last is the downsampler's input), written out."""
    skips = [u.conv_in(noisy)]
    for r, at in zip(u.down_blocks[0].resnets, u.down_blocks[0].attentions):
        skips.append(at(r(skips[-1], temb), encoder_hidden_states=emb).sample)
    return skips


def _unet_after_first_block(u, noisy, temb, emb, first, block_skips=None):
    """The rest of a UNet2DConditionModel's forward after its first down block gave ``first`` (the same
    tensor as that block's last skip; its earlier skips ``block_skips``, default the plain ones), written out:
    the reference for the hook's effect."""
    skips = list(_first_block_layers(u, noisy, temb, emb) if block_skips is None else block_skips)
    skips.append(first)
    h = first
    for block in u.down_blocks[1:]:
        if getattr(block, "has_cross_attention", False):
            h, res = block(h, temb=temb, encoder_hidden_states=emb)
        else:
            h, res = block(h, temb=temb)
        skips.extend(res)
    h = u.mid_block(h, temb, encoder_hidden_states=emb)
    for block in u.up_blocks:
        res, skips = tuple(skips[-len(block.resnets):]), skips[:-len(block.resnets)]
        if getattr(block, "has_cross_attention", False):
            h = block(h, res_hidden_states_tuple=res, temb=temb, encoder_hidden_states=emb)
        else:
            h = block(h, res_hidden_states_tuple=res, temb=temb)
    return u.conv_out(u.conv_act(u.conv_norm_out(h)))


def test_controlnext_before_downsample_adds_the_control_at_the_latent_resolution_and_to_its_skip(tmp_path):
    """``injection="before_downsample"``: the encoder stops one halving earlier (the latent's own grid) and the
    block's last layer output ``h`` -- the downsampler's input and the skip the up path reads -- becomes
    ``h + cross_normalize(encode(c, temb), h)``; the UNet's whole output matches that written out."""
    u = unet()
    a = build_controlnext(u, vae_factor=F, config=ControlNeXtConfig(injection="before_downsample"))
    after = build_controlnext(unet(), vae_factor=F)
    assert (a.injection_factor, after.injection_factor) == (F, 2 * F)
    assert len(a.encoder.downs) == len(after.encoder.downs) - 1
    noisy, t, emb, cond = inputs()
    ref = base_out(u, noisy, t, emb)
    seen = {}
    hook = u.down_blocks[0].register_forward_pre_hook(lambda m, args, kw: seen.update(temb=kw["temb"]), with_kwargs=True)
    with torch.no_grad(), a.injecting(cond, 1.0):
        out = u(noisy, t, encoder_hidden_states=emb).sample
    hook.remove()
    with torch.no_grad():
        assert torch.equal(base_out(u, noisy, t, emb), ref)  # inert outside injecting
        skips = _first_block_layers(u, noisy, seen["temb"], emb)
        skips[-1] = skips[-1] + cross_normalize(a.encode(cond, seen["temb"]), skips[-1], mode=a.config.normalization)
        expected = _unet_after_first_block(u, noisy, seen["temb"], emb, u.down_blocks[0].downsamplers[0](skips[-1]), skips)
        plain_skip = _unet_after_first_block(u, noisy, seen["temb"], emb, u.down_blocks[0].downsamplers[0](skips[-1]))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert (out - ref).abs().max() > 1e-2 and (out - plain_skip).abs().max() > 1e-4  # the skip carries the control too
    # the guidance-doubled batch and the save / load round trip keep the injection point
    with torch.no_grad():
        before = a.predict(noisy, t, emb, cond)
    a.save(tmp_path / "nx")
    a.remove_hook()
    b = load_control_adapter(tmp_path / "nx", unet())
    assert b.config.injection == "before_downsample"
    with torch.no_grad():
        assert torch.equal(b.predict(noisy, t, emb, cond), before)


def test_controlnext_injection_is_checked():
    with pytest.raises(InputError, match="ControlNeXtConfig.injection"):
        ControlNeXtConfig(injection="mid_block")
    with pytest.raises(InputError, match="config.injection: 'before_downsample' needs a first down block with a downsampler"):
        build_controlnext(unet(block_out_channels=(8,)), vae_factor=F, config=ControlNeXtConfig(injection="before_downsample"))


def _reloaded_as_written_earlier(a, folder, rewrite):
    """Save ControlNeXt ``a`` to ``folder``, let ``rewrite(folder)`` turn the files into an earlier version's, load
    them back and check the loaded adapter predicts exactly what ``a`` did; returns it."""
    noisy, t, emb, cond = inputs()
    with torch.no_grad():
        before = a.predict(noisy, t, emb, cond)
    a.save(folder)
    a.remove_hook()
    rewrite(folder)
    b = load_control_adapter(folder, unet())
    with torch.no_grad():
        assert torch.equal(b.predict(noisy, t, emb, cond), before)
    return b


def _drop_config_fields(folder, *names):
    cfg_path = folder / "controlnext.json"
    cfg = json.loads(cfg_path.read_text())
    for name in names:
        del cfg[name]
    cfg_path.write_text(json.dumps(cfg))


def test_controlnext_saved_in_the_earlier_layout_still_loads(tmp_path):
    from safetensors.torch import load_file, save_file

    a = build_controlnext(unet(), vae_factor=F, config=ControlNeXtConfig(time_conditioned=False))

    def rewrite(folder):
        # the files as the earlier version wrote them: one ``net`` Sequential, no time_conditioned field
        path = folder / "controlnext.safetensors"
        state = load_file(str(path))
        convs = ["stem.0"] + [f"downs.{i}.0" for i in range(len(a.encoder.downs))] + ["head"]
        legacy = {f"net.{2 * j}": name for j, name in enumerate(convs)}
        renamed = {}
        for k, v in state.items():
            for old, new in legacy.items():
                if k.startswith(f"encoder.{new}."):
                    k = f"encoder.{old}." + k[len(f"encoder.{new}."):]
                    break
            renamed[k] = v
        assert any(k.startswith("encoder.net.") for k in renamed)
        save_file(renamed, str(path))
        _drop_config_fields(folder, "time_conditioned", "groups")

    b = _reloaded_as_written_earlier(a, tmp_path / "nx", rewrite)
    assert b.config.time_conditioned is False


def test_a_controlnext_saved_without_its_normalization_loads_with_the_channel_statistics_it_used(tmp_path):
    """Files written while ``"channel"`` was the default and before the field existed read back as ``"channel"``,
    not as today's default ``"sample"``."""
    assert ControlNeXtConfig().normalization == "sample"
    a = build_controlnext(unet(), vae_factor=F, config=ControlNeXtConfig(normalization="channel"))
    b = _reloaded_as_written_earlier(a, tmp_path / "nx", lambda folder: _drop_config_fields(folder, "normalization"))
    assert b.config.normalization == "channel"


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_are_refused_with_the_argument_named():
    u = unet()
    noisy, t, emb, cond = inputs()
    cn = make_adapter("controlnet", u)
    with pytest.raises(InputError, match="condition: is 8x8"):
        cn.predict(noisy, t, emb, cond[:, :, :8, :8])
    with pytest.raises(InputError, match="condition: has 1 channels"):
        cn.predict(noisy, t, emb, cond[:, :1])
    nx = build_controlnext(unet(), vae_factor=F)
    with pytest.raises(InputError, match="condition: has 4 channels"):
        nx.predict(noisy, t, emb, torch.rand(2, 4, 16, 16))
    with pytest.raises(InputError, match="conditioning_embedding_out_channels.*VAE factor is 4"):
        build_controlnet(u, vae_factor=4, conditioning_embedding_out_channels=(16, 32, 96, 256))
    with pytest.raises(InputError, match="vae_factor"):
        build_controlnet(u, vae_factor=3)
    with pytest.raises(InputError, match="layers_per_block=2"):
        build_controlnet_xs(unet(layers_per_block=1), 0.5, vae_factor=F)
    with pytest.raises(InputError, match="4-channel latent"):
        build_controlnet_xs(unet(latent_channels=3), 0.5, vae_factor=F)
    with pytest.raises(InputError, match="size_ratio"):
        build_controlnet_xs(u, 0.1, vae_factor=F)  # 0 control channels
    with pytest.raises(InputError, match="controlnet: its block_out_channels"):
        ControlNetAdapter(unet(block_out_channels=(8, 24)), cn.controlnet, vae_factor=F)
    with pytest.raises(InputError, match="train_base"):
        build_controlnext(unet(), vae_factor=F, config=ControlNeXtConfig(train_base=("no_such_layer",)))
    with pytest.raises(InputError, match="groups"):
        build_controlnext(unet(), vae_factor=F, config=ControlNeXtConfig(groups=3))  # GroupNorm over widths 4, 8, ...
    with pytest.raises(InputError, match="groups"):
        ControlNeXtConfig(widths=(6, 8))
    pipe = sd_pipe(u)
    e, neg = prompts()
    with pytest.raises(InputError, match="conditions: 3 conditions for 2 prompts"):
        generate_controlled(pipe, e, torch.rand(3, 3, 16, 16), adapters=cn, negative=neg, steps=1)
    with pytest.raises(InputError, match=r"conditions: values must lie in \[0, 1\]"):
        generate_controlled(pipe, e, 2 * torch.ones(2, 3, 16, 16), adapters=cn, negative=neg, steps=1)
    with pytest.raises(InputError, match="weights: 1 values for 2 adapters"):
        generate_controlled(pipe, e, [cond, cond], adapters=[cn, cn], weights=[1.0], negative=neg, steps=1)
    with pytest.raises(InputError, match="guidance_start"):
        generate_controlled(pipe, e, cond, adapters=cn, guidance_start=0.8, guidance_end=0.2, negative=neg, steps=1)
    with pytest.raises(InputError, match="adapters: several adapters"):
        generate_controlled(pipe, e, [cond, cond], adapters=[cn, nx], negative=neg, steps=1)
    with pytest.raises(InputError, match="adapters\\[0\\]: a ControlNeXt adapter hooks its own UNet"):
        generate_controlled(pipe, e, cond, adapters=nx, negative=neg, steps=1)
    other = sd_pipe(unet(block_out_channels=(8, 24)))
    with pytest.raises(InputError, match="adapters\\[0\\]: built for a base with block_out_channels"):
        generate_controlled(other, e, cond, adapters=cn, negative=neg, steps=1)
