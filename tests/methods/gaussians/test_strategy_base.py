"""The strategy contract: the base class's defaults, the layout check, and that strategies are
frozen configs that never hold parameters."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from langfield.methods.gaussians.strategy import (
    DefaultStrategy,
    MCMCStrategy,
    Strategy,
    check_params_and_optimizers,
)

from .strategy_helpers import make_params


def test_base_is_abstract_and_has_no_regulariser_by_default():
    with pytest.raises(TypeError):
        Strategy()  # initialize_state / step_post_backward are abstract
    params, _ = make_params(4, extra=False)
    assert DefaultStrategy().regularization(params) is None
    assert isinstance(MCMCStrategy().regularization(params), torch.Tensor)
    assert {DefaultStrategy.config_type, MCMCStrategy.config_type} == {"default", "mcmc"}


def test_strategies_are_frozen_settings_without_tensors():
    strategy = DefaultStrategy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        strategy.refine_every = 1  # type: ignore[misc]
    for cls in (DefaultStrategy, MCMCStrategy):
        values = dataclasses.asdict(cls())
        assert all(isinstance(v, (int, float, bool)) for v in values.values()), cls
    assert hash(DefaultStrategy()) == hash(DefaultStrategy())


def test_layout_check_names_the_problem():
    params, optimizers = make_params(4, extra=False)
    check_params_and_optimizers(params, optimizers)
    params["scales"] = torch.nn.Parameter(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="scales"):
        check_params_and_optimizers(params, optimizers)
    params, optimizers = make_params(4, extra=False)
    optimizers["sh0"] = torch.optim.Adam([params["sh0"], params["shN"]])
    with pytest.raises(ValueError, match="sh0"):
        check_params_and_optimizers(params, optimizers)
    del params["quats"]
    with pytest.raises(ValueError, match="quats"):
        check_params_and_optimizers(params, {})
