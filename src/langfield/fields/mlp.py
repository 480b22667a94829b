"""A plain fully-connected network with optional skip connections (NeRF Fig. 7)."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn


class MLP(nn.Module):
    """``in_dim -> [hidden_dim] * num_hidden -> out_dim``.

    Args:
        in_dim: input width.
        hidden_dim: width of hidden layers.
        num_hidden: number of hidden layers (0 gives a single linear layer).
        out_dim: output width.
        skips: hidden-layer indices whose *input* is concatenated with the network input
            (NeRF feeds the encoded position again into the 5th layer: ``skips=(4,)``).
        activation: hidden activation (ReLU by default).
        out_activation: optional activation on the output.
        bias: use biases (Instant-NGP's tiny MLPs have none).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        num_hidden: int,
        out_dim: int,
        skips: Sequence[int] = (),
        activation: Optional[nn.Module] = None,
        out_activation: Optional[Callable[[Tensor], Tensor]] = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.skips = tuple(skips)
        self.activation = activation if activation is not None else nn.ReLU()
        self.out_activation = out_activation
        layers = []
        width = in_dim
        for i in range(num_hidden):
            if i in self.skips:
                width += in_dim
            layers.append(nn.Linear(width, hidden_dim, bias=bias))
            width = hidden_dim
        self.hidden = nn.ModuleList(layers)
        self.output = nn.Linear(width, out_dim, bias=bias)

    def activate(self, h: Tensor) -> Tensor:
        """The hidden activation of a fresh layer output ``h``. ReLU runs in place when ``h`` records
        no gradient (evaluation renders): the same values without a second ``[N, hidden]`` tensor."""
        if type(self.activation) is nn.ReLU and not h.requires_grad:
            return h.relu_()
        return self.activation(h)

    def forward(self, x: Tensor) -> Tensor:
        """``[*B, in_dim] -> [*B, out_dim]``."""
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"MLP expects last dim {self.in_dim}, got {tuple(x.shape)}")
        h = x
        for i, layer in enumerate(self.hidden):
            if i in self.skips:
                h = torch.cat([h, x], dim=-1)
            h = self.activate(layer(h))
        out = self.output(h)
        return self.out_activation(out) if self.out_activation is not None else out
