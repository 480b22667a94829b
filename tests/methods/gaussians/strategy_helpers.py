"""Shared builders for the strategy tests: parameters in the method's layout with one Adam each,
row tags that follow rows through edits (``features[:, 0]`` and the moments), a consistency check."""

from __future__ import annotations

import math

import torch

from langfield.methods.gaussians.strategy import check_params_and_optimizers

K_SH = 3  # shN rows per Gaussian
F = 4  # feature channels


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def make_params(n: int, seed: int = 0, extra: bool = True):
    """Params with the method's layout; ``features[:, 0]`` holds the row id for tracking."""
    g = torch.Generator().manual_seed(seed)
    data = {
        "means": torch.randn(n, 3, generator=g),
        "scales": torch.full((n, 3), math.log(0.005)),
        "quats": torch.randn(n, 4, generator=g),
        "opacities": torch.full((n,), logit(0.5)),
        "sh0": torch.randn(n, 1, 3, generator=g),
        "shN": torch.randn(n, K_SH, 3, generator=g),
        "features": torch.cat([torch.arange(n, dtype=torch.float32)[:, None], torch.randn(n, F - 1, generator=g)], 1),
    }
    if extra:
        data["background"] = torch.rand(3, generator=g)  # not per-Gaussian: never edited (unless N == 3)
    params = torch.nn.ParameterDict({k: torch.nn.Parameter(v) for k, v in data.items()})
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    return params, optimizers


def row_ids(params):
    """Original row ids carried in ``features[:, 0]`` (rounded: Adam steps nudge them by ~1e-3)."""
    return params["features"][:, 0].round().long().tolist()


def adam_step(params, optimizers, seed: int = 1):
    """One step with a random loss so every optimiser has exp_avg / exp_avg_sq."""
    g = torch.Generator().manual_seed(seed)
    loss = sum((p * torch.randn(p.shape, generator=g)).sum() for p in params.values())
    loss.backward()
    for opt in optimizers.values():
        opt.step()
        opt.zero_grad(set_to_none=True)


def tag_moments(params, optimizers):
    """exp_avg row i := i + 1000 (+ 0.5 for exp_avg_sq), so rows can be followed through edits."""
    for name, p in params.items():
        if name == "background":
            continue
        st = optimizers[name].state[p]
        rows = torch.arange(p.shape[0], dtype=p.dtype).reshape(-1, *([1] * (p.ndim - 1)))
        st["exp_avg"] = (rows + 1000.0).expand_as(p).clone()
        st["exp_avg_sq"] = (rows + 1000.5).expand_as(p).clone()


def row_ids_of_moments(optimizers, params, name, key="exp_avg"):
    v = optimizers[name].state[params[name]][key]
    first = v.reshape(v.shape[0], -1)[:, 0]
    off = 1000.0 if key == "exp_avg" else 1000.5
    return torch.where(first == 0, torch.full_like(first, -1), first - off)


def assert_consistent(params, optimizers, ref_objects):
    """Same Parameter objects, in the optimisers, moments shaped like their params, and a step works."""
    n = params["means"].shape[0]
    for name, p in params.items():
        assert p is ref_objects[name]
        assert optimizers[name].param_groups[0]["params"][0] is p
        st = optimizers[name].state[p]
        for key in ("exp_avg", "exp_avg_sq"):
            assert st[key].shape == p.shape, (name, key)
        if name != "background":
            assert p.shape[0] == n
    check_params_and_optimizers(params, optimizers)
    before = {k: p.detach().clone() for k, p in params.items()}
    adam_step(params, optimizers, seed=7)
    for k, p in params.items():
        assert p.shape == before[k].shape
        assert not torch.equal(p, before[k])  # the step really updated every parameter


def setup_tagged(n=6):
    params, optimizers = make_params(n)
    adam_step(params, optimizers)
    tag_moments(params, optimizers)
    refs = dict(params.items())
    before = {k: p.detach().clone() for k, p in params.items()}
    steps = {k: optimizers[k].state[p]["step"].clone() for k, p in params.items()}
    return params, optimizers, refs, before, steps
