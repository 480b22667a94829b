"""Adaptive density control for 3D Gaussian Splatting, as explicit strategy objects.

gsplat's ``strategy`` shape (STYLE.md principle 5), one concept per file:

* :mod:`.base` -- :class:`Strategy`, the contract (``initialize_state``, ``step_pre_backward``,
  ``step_post_backward``, ``regularization``) and the layout check of params / optimisers;
* :mod:`.ops` -- stateless parameter surgery that keeps the optimiser moments row-aligned
  (clone, split, remove, opacity reset, MCMC relocation, sample addition, position noise);
* :mod:`.default` -- :class:`DefaultStrategy`, Kerbl et al. 2023 Sec. 5.2;
* :mod:`.mcmc` -- :class:`MCMCStrategy`, Kheradmand et al. 2024, with its regularisers.

A strategy is a frozen dataclass of settings with its accumulators in an explicit ``state`` dict;
it never owns the parameters or the optimisers.
"""

from langfield.methods.gaussians.strategy.base import REQUIRED_PARAMS, Strategy, check_params_and_optimizers
from langfield.methods.gaussians.strategy.default import DefaultStrategy
from langfield.methods.gaussians.strategy.mcmc import MCMCStrategy, mcmc_regularization
from langfield.methods.gaussians.strategy.ops import (
    Optimizers,
    Params,
    State,
    add_samples,
    duplicate,
    edit_params,
    inject_position_noise,
    num_gaussians,
    opacity_probs,
    relocate,
    relocation_correction,
    remove,
    reset_opacity,
    split,
)

__all__ = [
    "REQUIRED_PARAMS",
    "Strategy",
    "check_params_and_optimizers",
    "DefaultStrategy",
    "MCMCStrategy",
    "mcmc_regularization",
    "Optimizers",
    "Params",
    "State",
    "add_samples",
    "duplicate",
    "edit_params",
    "inject_position_noise",
    "num_gaussians",
    "opacity_probs",
    "relocate",
    "relocation_correction",
    "remove",
    "reset_opacity",
    "split",
]
