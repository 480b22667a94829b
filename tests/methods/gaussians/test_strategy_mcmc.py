"""MCMCStrategy (Kheradmand et al. 2024): growth to the cap with relocation, the SGLD position
noise, and the regularisers returned through the strategy's ``regularization`` hook."""

from __future__ import annotations

import math

import torch

from langfield.methods.gaussians.strategy.mcmc import MCMCStrategy, mcmc_regularization
from langfield.methods.gaussians.strategy.ops import inject_position_noise

from .strategy_helpers import adam_step, assert_consistent, logit, make_params


def test_mcmc_strategy_growth_cap_and_relocation():
    torch.manual_seed(0)
    params, optimizers = make_params(100, extra=False)
    params["opacities"].data[:10] = logit(0.001)  # dead
    adam_step(params, optimizers)
    refs = dict(params.items())
    strategy = MCMCStrategy(cap_max=110, refine_start_iter=0, refine_every=1, refine_stop_iter=100)
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state()
    sizes = []
    for step in (1, 2, 3, 4):
        strategy.step_post_backward(params, optimizers, state, step, info={})
        sizes.append(params["means"].shape[0])
        assert sizes[-1] <= 110
        if step == 1:
            assert state["n_relocated"] == 10
            assert bool((torch.sigmoid(params["opacities"].data) > 0.005).all())
    assert sizes == [105, 110, 110, 110]  # +5 % per refine, then capped
    assert state["n_added"] == 0
    # after refine_stop_iter: no more refinement
    params["opacities"].data[:3] = logit(0.001)
    strategy.step_post_backward(params, optimizers, state, 100, info={})
    assert params["means"].shape[0] == 110 and torch.sigmoid(params["opacities"].data[:3]).max() < 0.005
    assert_consistent(params, optimizers, refs)


def test_noise_moves_transparent_gaussians_more():
    n = 400
    params, optimizers = make_params(2 * n, extra=False)
    s = 0.1
    params["scales"].data[:] = math.log(s)
    params["opacities"].data[:n] = logit(0.001)
    params["opacities"].data[n:] = logit(0.9)
    before = params["means"].data.clone()
    lr = 1.6e-4
    optimizers["means"].param_groups[0]["lr"] = lr
    MCMCStrategy().step_post_backward(params, optimizers, MCMCStrategy().initialize_state(), 10, info={})
    d = params["means"].data - before
    low, high = d[:n], d[n:]
    assert high.abs().max() < 1e-12
    # isotropic Sigma = s^2 I: per-axis std = s^2 * sigmoid(-100 (0.001 - 0.005)) * noise_lr * lr
    expected_std = s**2 * torch.sigmoid(torch.tensor(0.4)).item() * 5e5 * lr
    assert abs(low.std().item() / expected_std - 1) < 0.1
    # an explicit lr wins over info["lr"], which wins over the optimiser's
    before = params["means"].data.clone()
    MCMCStrategy().step_post_backward(params, optimizers, {}, 10, info={"lr": 1.0}, lr=0.0)
    assert torch.equal(params["means"].data, before)
    MCMCStrategy().step_post_backward(params, optimizers, {}, 10, info={"lr": 0.0})
    assert torch.equal(params["means"].data, before)
    noise = inject_position_noise(params, scale=1e-2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(params["means"].data, before + noise)


def test_mcmc_regularization_value_and_grad():
    params, _ = make_params(5, extra=False)
    params["opacities"].data = torch.logit(torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5]))
    params["scales"].data[:] = math.log(2.0)
    loss = mcmc_regularization(params, opacity_reg=0.01, scale_reg=0.1)
    torch.testing.assert_close(loss, torch.tensor(0.01 * 0.3 + 0.1 * 2.0))
    loss.backward()
    assert params["opacities"].grad is not None and bool((params["opacities"].grad > 0).all())
    assert params["scales"].grad is not None and bool((params["scales"].grad > 0).all())


def test_regularization_hook_uses_the_configured_weights():
    params, _ = make_params(5, extra=False)
    params["opacities"].data = torch.logit(torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5]))
    params["scales"].data[:] = math.log(2.0)
    torch.testing.assert_close(MCMCStrategy().regularization(params), torch.tensor(0.01 * 0.3 + 0.01 * 2.0))
    torch.testing.assert_close(
        MCMCStrategy(opacity_reg=0.5, scale_reg=0.0).regularization(params), torch.tensor(0.5 * 0.3)
    )
