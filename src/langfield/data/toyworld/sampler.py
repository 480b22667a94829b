"""A trainer :class:`~langfield.data.samplers.Sampler` that renders fresh toy-world images every step.

Step ``s`` holds scenes ``[start + s * S, start + (s + 1) * S)`` of the data set with seed ``seed``
(``S = max(1, batch_size // views_per_scene)`` scenes, all their views), so a batch is a pure
function of ``(config, seed, step)``: resuming needs only the step, and no two steps repeat a
scene. A held-out set is another ``seed`` (or :func:`~langfield.data.toyworld.dataset.write_toyworld`
with one). For many epochs over a fixed set, write it once and draw indices with
:class:`~langfield.data.samplers.IndexSampler` instead.

>>> sampler = ToyWorldSampler(batch_size=4, seed=1)
>>> batch = sampler.sample(3)
>>> len(batch), batch.scene_index.tolist()
(4, [12, 13, 14, 15])
"""

from __future__ import annotations

from typing import Any, Dict, Union

import torch

from langfield._checks import check_int_range
from langfield.data.samplers import Sampler
from langfield.data.toyworld.dataset import ToyBatch, render_scenes
from langfield.data.toyworld.scene import ToyWorldConfig, sample_scene, scene_seed

__all__ = ["ToyWorldSampler"]


class ToyWorldSampler(Sampler):
    """Rendered :class:`ToyBatch` es on demand (see the module docstring); ``num_rays`` counts images."""

    def __init__(
        self,
        config: ToyWorldConfig = ToyWorldConfig(),
        *,
        batch_size: int = 64,
        views_per_scene: int = 1,
        seed: int = 0,
        start: int = 0,
        device: Union[str, torch.device] = "cpu",
    ) -> None:
        self.config = config
        self.views = check_int_range(views_per_scene, "views_per_scene", lo=1)
        self.scenes_per_step = max(1, check_int_range(batch_size, "batch_size", lo=1) // self.views)
        self.num_rays = self.scenes_per_step * self.views
        self.seed = check_int_range(seed, "seed", lo=0)
        self.start = check_int_range(start, "start", lo=0)
        self.device = torch.device(device)

    def sample(self, step: int) -> ToyBatch:
        step = check_int_range(step, "step", lo=0)
        first = self.start + step * self.scenes_per_step
        indices = list(range(first, first + self.scenes_per_step))
        scenes = [sample_scene(scene_seed(self.seed, i), self.config) for i in indices]
        return render_scenes(scenes, self.views, self.config, scene_index=indices).to(self.device)

    def state_dict(self) -> Dict[str, Any]:
        return {"seed": self.seed, "start": self.start, "num_rays": self.num_rays, "views": self.views,
                "config": self.config.to_dict()}
