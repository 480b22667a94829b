"""The contract every densification strategy follows (gsplat's ``strategy/base.py`` shape).

A strategy is a frozen dataclass of settings. Everything it accumulates lives in a plain
``state`` dict returned by :meth:`Strategy.initialize_state` (tensors, numbers and ``None`` only,
so it goes into a checkpoint as is). It never owns the parameters or the optimisers: the method
passes them to every hook, and the hooks edit them in place through :mod:`.ops`.

Call order in a training step::

    info = render(...)                       # info["means2d"] [N,2] or [C,N,2], info["radii"], ...
    strategy.step_pre_backward(params, optimizers, state, step, info)
    loss = photometric + (strategy.regularization(params) or 0)
    loss.backward()
    for opt in optimizers.values(): opt.step(); opt.zero_grad(set_to_none=True)
    strategy.step_post_backward(params, optimizers, state, step, info)

(``step_post_backward`` runs after the optimiser step, as in gsplat's trainer and, for the MCMC
noise, the reference ``3dgs-mcmc`` code; ``info["means2d"].grad`` survives ``zero_grad`` because
``means2d`` is not a parameter.)
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Iterable, Mapping, Optional

from torch import Tensor

from langfield.methods.gaussians.strategy.ops import Optimizers, Params, State, num_gaussians

__all__ = ["REQUIRED_PARAMS", "Strategy", "check_params_and_optimizers"]

REQUIRED_PARAMS = ("means", "scales", "quats", "opacities")
"""The parameters every strategy reads; all have first dimension ``N``."""


def check_params_and_optimizers(
    params: Params, optimizers: Optimizers, required: Iterable[str] = REQUIRED_PARAMS
) -> None:
    """Raise ``ValueError`` unless ``params`` / ``optimizers`` follow the layout the ops assume.

    Checks: the ``required`` keys exist with first dimension ``N``; every optimiser is keyed by a
    parameter name and has a single param group holding exactly ``params[name]``.
    """
    n = num_gaussians(params)
    for key in required:
        if key not in params:
            raise ValueError(f"params is missing {key!r}")
        if params[key].shape[0] != n:
            raise ValueError(f"params[{key!r}] has {params[key].shape[0]} rows, means has {n}")
    for name, opt in optimizers.items():
        if name not in params:
            raise ValueError(f"optimizer {name!r} has no parameter of that name")
        groups = opt.param_groups
        if len(groups) != 1 or len(groups[0]["params"]) != 1 or groups[0]["params"][0] is not params[name]:
            raise ValueError(
                f"optimizers[{name!r}] must have one param group holding exactly params[{name!r}]"
            )


class Strategy(abc.ABC):
    """Base class of the densification strategies (see the module docstring for the call order).

    Subclasses are frozen dataclasses and set ``config_type``, the name under which a config
    stores them (``{"type": "mcmc", ...}``, see :mod:`langfield.configs`) and that
    ``--set strategy=NAME`` selects.
    """

    config_type: ClassVar[str]

    @abc.abstractmethod
    def initialize_state(self, scene_scale: float = 1.0) -> State:
        """A fresh state dict; ``scene_scale`` is the scene extent that world-space thresholds scale with."""

    def check_sanity(self, params: Params, optimizers: Optimizers) -> None:
        """Raise ``ValueError`` when ``params`` / ``optimizers`` do not follow the expected layout."""
        check_params_and_optimizers(params, optimizers)

    def step_pre_backward(
        self, params: Params, optimizers: Optimizers, state: State, step: int, info: Mapping[str, Any]
    ) -> None:
        """Called after the render, before ``loss.backward()`` (default: nothing)."""

    @abc.abstractmethod
    def step_post_backward(
        self, params: Params, optimizers: Optimizers, state: State, step: int, info: Mapping[str, Any]
    ) -> None:
        """Called after the optimiser step: densify / prune / move Gaussians (edits in place)."""

    def regularization(self, params: Params) -> Optional[Tensor]:
        """A differentiable scalar the method adds to its loss, or ``None`` (the default: none)."""
        return None
