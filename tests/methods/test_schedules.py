"""Progress-driven learning-rate schedules."""

from __future__ import annotations

import math

import torch

from langfield.methods.schedules import ProgressLR, exponential_decay, log_linear, warmup_multistep


def _opt(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_warmup_multistep_values():
    fn = warmup_multistep(0.1, (0.5, 0.75), 0.33)
    assert abs(fn(0.0) - 0.01) < 1e-9
    assert abs(fn(0.1) - 1.0) < 1e-9
    assert abs(fn(0.6) - 0.33) < 1e-9
    assert abs(fn(0.8) - 0.33**2) < 1e-9


def test_nerf_and_mipnerf_endpoints():
    assert abs(exponential_decay(5e-4, 5e-5)(1.0) - 0.1) < 1e-9
    fn = log_linear(5e-4, 5e-6, warmup=0.0)
    assert abs(fn(0.0) - 1.0) < 1e-9 and abs(fn(1.0) - 0.01) < 1e-9
    assert abs(fn(0.5) - math.sqrt(0.01)) < 1e-9  # log-linear: geometric mean halfway


def test_progress_lr_steps_and_state():
    opt = _opt(2.0)
    sched = ProgressLR(opt, exponential_decay(1.0, 0.1), max_steps=10)
    for _ in range(5):
        sched.step()
    assert abs(opt.param_groups[0]["lr"] - 2.0 * 0.1**0.5) < 1e-9
    sched.step(progress=1.0)  # time budget exhausted: progress given by the trainer wins
    assert abs(opt.param_groups[0]["lr"] - 0.2) < 1e-9
    opt2 = _opt(2.0)
    s2 = ProgressLR(opt2, exponential_decay(1.0, 0.1), max_steps=10)
    s2.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
