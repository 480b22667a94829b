"""The plain MLP: its in-place ReLU in evaluation gives the same values and leaves training alone."""

from __future__ import annotations

import torch
from torch import nn

from langfield.fields.mlp import MLP


def test_evaluation_relu_runs_in_place_with_the_same_values():
    torch.manual_seed(0)
    net = MLP(5, 16, 2, 3)
    x = torch.randn(64, 5)
    want = net.output(torch.relu(net.hidden[1](torch.relu(net.hidden[0](x)))))
    with torch.no_grad():
        h = net.hidden[0](x)
        assert net.activate(h) is h  # no second tensor
        assert torch.equal(net(x), want.detach())


def test_training_relu_keeps_gradients_and_other_activations_are_untouched():
    torch.manual_seed(0)
    net = MLP(5, 16, 2, 3)
    x = torch.randn(8, 5, requires_grad=True)
    h = net.hidden[0](x)
    assert net.activate(h) is not h  # autograd's ReLU, not an in-place one
    net(x).sum().backward()
    ref = x.detach().clone().requires_grad_(True)
    net.output(torch.relu(net.hidden[1](torch.relu(net.hidden[0](ref))))).sum().backward()
    assert torch.equal(x.grad, ref.grad)
    soft = MLP(5, 16, 1, 3, activation=nn.Softplus())
    with torch.no_grad():
        h = soft.hidden[0](torch.randn(4, 5))
        out = soft.activate(h)
        assert out is not h and torch.equal(out, nn.functional.softplus(h))
