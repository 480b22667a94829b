"""3D Gaussian Splatting as a langfield method (``--method gaussians``).

* :mod:`.method` -- :class:`Gaussians` and :class:`GaussiansConfig` (initialisation, losses,
  optimisers, checkpoint state);
* :mod:`.strategy` -- adaptive density control: :class:`DefaultStrategy` (Kerbl et al. 2023) and
  :class:`MCMCStrategy` (Kheradmand et al. 2024), chosen by ``GaussiansConfig.strategy``.
"""

from langfield.methods.gaussians.method import Gaussians, GaussiansConfig, GaussiansOutputs, scene_extent
from langfield.methods.gaussians.strategy import DefaultStrategy, MCMCStrategy, Strategy

__all__ = [
    "Gaussians",
    "GaussiansConfig",
    "GaussiansOutputs",
    "scene_extent",
    "Strategy",
    "DefaultStrategy",
    "MCMCStrategy",
]
