"""A tiny test-only method and a synthetic scene, independent of other modules in progress.

``ToyMethod``: an MLP on positional-encoded sample positions -> (density, rgb), ``S`` samples per
ray between near and far (optionally stratified-jittered with the *global* torch RNG, so RNG
checkpointing is exercised), plain alpha compositing over the per-ray background. Its losses are
means over rays, so DDP's gradient averaging equals one process on the union of the batches.

``make_toy_dataset``: a sphere of radius 1 at the origin, coloured by its normal, seen by
cameras on a circle; RGBA images (alpha = coverage), OpenCV poses.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from langfield.data.dataset import ImageSet, SceneDataset
from langfield.geometry.rays import rays_from_camera
from langfield.methods.base import Method, SceneInfo
from langfield.types import Batch, Cameras, Rays, RenderOutput


@dataclass(frozen=True)
class ToyConfig:
    hidden: int = 16
    num_samples: int = 8
    num_freqs: int = 2
    lr: float = 1e-2
    optimizer: str = "adam"  # "adam" | "sgd"
    perturb: bool = True
    reg_weight: float = 1e-3
    crash_at_step: Optional[int] = None  # before_train_step raises (simulated crash)
    nan_at_step: Optional[int] = None  # the loss is NaN from this step on
    eval_draws_rng: bool = True  # render_rays consumes the global RNG, like stochastic eval samplers


@dataclass
class ToyOutputs:
    render: RenderOutput

    @property
    def rgb(self) -> Tensor:
        return self.render.rgb


class SimulatedCrash(RuntimeError):
    pass


def positional_encoding(x: Tensor, num_freqs: int) -> Tensor:
    """``[..., 3] -> [..., 3 (1 + 2 F)]``: identity plus sin/cos at frequencies ``2^k``."""
    feats = [x]
    for k in range(num_freqs):
        feats += [torch.sin((2.0**k) * x), torch.cos((2.0**k) * x)]
    return torch.cat(feats, dim=-1)


class ToyMethod(Method):
    def __init__(self, config: ToyConfig, scene: SceneInfo) -> None:
        super().__init__()
        self.config = config
        self.scene = scene
        in_dim = 3 * (1 + 2 * config.num_freqs)
        self.mlp = nn.Sequential(nn.Linear(in_dim, config.hidden), nn.ReLU(), nn.Linear(config.hidden, 4))
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.int64))
        self.hook_calls = 0  # plain attribute: checkpointed through extra_state()
        self.current_step = 0

    def before_train_step(self, step: int) -> None:
        if self.config.crash_at_step is not None and step == self.config.crash_at_step:
            raise SimulatedCrash(f"simulated crash at step {step}")
        self.steps_seen += 1
        self.hook_calls += 1
        self.current_step = step

    def outputs(self, rays: Rays, background: Tensor) -> ToyOutputs:
        num_rays, num_samples = rays.origins.shape[0], self.config.num_samples
        u = torch.linspace(0.0, 1.0, num_samples + 1, device=rays.origins.device)
        edges = rays.near + (rays.far - rays.near) * u  # [R, S+1]
        lo, hi = edges[:, :-1], edges[:, 1:]
        if self.training and self.config.perturb:
            t = lo + (hi - lo) * torch.rand(num_rays, num_samples, device=lo.device)
        else:
            t = 0.5 * (lo + hi)
        pts = rays.origins[:, None, :] + t[..., None] * rays.directions[:, None, :]  # [R, S, 3]
        raw = self.mlp(positional_encoding(pts, self.config.num_freqs))
        sigma = nn.functional.softplus(raw[..., 0])
        rgb = torch.sigmoid(raw[..., 1:])
        alpha = 1.0 - torch.exp(-sigma * (hi - lo))
        trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1] + 1e-10], dim=-1), dim=-1)
        weights = alpha * trans  # [R, S]
        acc = weights.sum(-1, keepdim=True)
        color = (weights[..., None] * rgb).sum(-2) + (1.0 - acc) * background
        depth = (weights * t).sum(-1, keepdim=True) / acc.clamp_min(1e-6)
        return ToyOutputs(RenderOutput(rgb=color, depth=depth, accumulation=acc))

    @torch.no_grad()
    def render_rays(self, rays: Rays, background: Tensor) -> RenderOutput:
        if self.config.eval_draws_rng:
            torch.rand(1)  # the trainer must isolate eval from the training RNG stream
        return self.outputs(rays, background).render

    def losses(self, outputs: ToyOutputs, batch: Batch) -> Dict[str, Tensor]:
        rgb_loss = (outputs.rgb - batch.rgb).square().mean()
        acc = outputs.render.accumulation
        reg = (acc * (1.0 - acc)).mean()
        loss = rgb_loss + self.config.reg_weight * reg
        if self.config.nan_at_step is not None and self.current_step >= self.config.nan_at_step:
            loss = loss * float("nan")
        return {"loss": loss, "rgb": rgb_loss, "reg": reg}

    def optimizers(self, max_steps: int) -> Tuple[List[torch.optim.Optimizer], List[Any]]:
        params = list(self.parameters())
        if self.config.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=self.config.lr)
        elif self.config.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=self.config.lr, momentum=0.9)
        else:
            raise ValueError(f"unknown optimizer {self.config.optimizer!r}")
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 ** min(s / max_steps, 1.0))
        return [opt], [sched]

    def extra_state(self) -> Dict[str, Any]:
        return {"hook_calls": self.hook_calls}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        self.hook_calls = int(state["hook_calls"])


def look_at_opencv(eye: Tensor, target: Tensor, up: Tensor) -> Tensor:
    """``[3, 4]`` OpenCV camera-to-world (x right, y down, z forward) at ``eye`` looking at ``target``."""
    forward = torch.nn.functional.normalize(target - eye, dim=0)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up), dim=0)
    down = torch.linalg.cross(forward, right)
    return torch.stack([right, down, forward, eye], dim=1)


def _render_sphere(cameras: Cameras, index: int, near: float, far: float) -> Tuple[Tensor, Tensor]:
    rays = rays_from_camera(cameras, index, near, far)
    o, d = rays.origins, rays.directions
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - 1.0
    disc = b * b - c
    hit = disc > 0
    t = -b - torch.sqrt(disc.clamp_min(0.0))
    normal = torch.nn.functional.normalize(o + t[..., None] * d, dim=-1)
    rgb = torch.where(hit[..., None], 0.5 + 0.5 * normal, torch.zeros_like(normal))
    return (rgb * 255).round().to(torch.uint8), (hit[..., None].float() * 255).to(torch.uint8)


def make_toy_dataset(
    num_train: int = 6, num_test: int = 2, size: int = 12, background: str = "white", with_alpha: bool = True
) -> SceneDataset:
    """A ``size x size`` RGBA sphere scene: cameras at radius 3 on a tilted circle, near 1, far 5."""
    near, far = 1.0, 5.0
    total = num_train + num_test
    poses = []
    for i in range(total):
        angle = 2 * math.pi * i / total
        eye = torch.tensor([3.0 * math.cos(angle), 3.0 * math.sin(angle), 1.0])
        poses.append(look_at_opencv(eye, torch.zeros(3), torch.tensor([0.0, 0.0, 1.0])))
    K = torch.tensor([[float(size), 0.0, size / 2], [0.0, float(size), size / 2], [0.0, 0.0, 1.0]])
    cams = Cameras.create(torch.stack(poses), K, size, size)
    rgbs, alphas = zip(*(_render_sphere(cams, i, near, far) for i in range(total)))
    images, alpha = torch.stack(rgbs), torch.stack(alphas)
    if not with_alpha:
        bg = 255 if background == "white" else 0
        a = alpha.float() / 255
        images = (images.float() * a + bg * (1 - a)).round().to(torch.uint8)

    def split(idx: List[int]) -> ImageSet:
        return ImageSet(
            cameras=cams[idx],
            images=images[idx].contiguous(),
            alphas=alpha[idx].contiguous() if with_alpha else None,
            paths=[f"view_{i:03d}.png" for i in idx],
        )

    return SceneDataset(
        name="toy_sphere",
        splits={"train": split(list(range(num_train))), "test": split(list(range(num_train, total)))},
        scene_box=torch.tensor([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]]),
        near=near,
        far=far,
        background=background,
    )


def scene_info(dataset: SceneDataset) -> SceneInfo:
    return SceneInfo(
        scene_box=dataset.scene_box, near=dataset.near, far=dataset.far, num_train_images=len(dataset.split("train"))
    )


def build(seed: int = 0, **config) -> Tuple[ToyMethod, SceneDataset]:
    """Seed, build the dataset and a freshly initialised ``ToyMethod``."""
    from langfield.training import seed_everything

    seed_everything(seed)
    dataset = make_toy_dataset()
    return ToyMethod(ToyConfig(**config), scene_info(dataset)), dataset


def ddp_worker(rank: int, world_size: int, port: int, out_dir: str, trainer_kwargs: Dict[str, Any], toy_kwargs: Dict[str, Any]) -> None:
    """``torch.multiprocessing.spawn`` target: set the torchrun environment, train, save parameters."""
    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
         "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )
    torch.set_num_threads(1)
    from langfield.training import Trainer, TrainerConfig, cleanup_distributed

    try:
        method, dataset = build(**toy_kwargs)
        trainer = Trainer(method, dataset, TrainerConfig(**trainer_kwargs))
        assert trainer.dist.world_size == world_size and trainer.dist.rank == rank
        assert trainer.sampler.num_local_rays == trainer_kwargs["num_rays"] // world_size
        assert isinstance(trainer.model, torch.nn.parallel.DistributedDataParallel)
        trainer.train()
        torch.save({k: v.detach().clone() for k, v in method.state_dict().items()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        cleanup_distributed()


try:  # an autouse fixture the test modules import
    import pytest

    @pytest.fixture(autouse=True)
    def torch_test_state():
        """One intra-op thread (the test machine is shared); undo the trainer's process-wide
        deterministic mode afterwards so other test modules are unaffected."""
        threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
        warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(threads)
        if (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) != (
            deterministic, warn_only
        ):
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)

except ImportError:  # pragma: no cover - only when imported outside pytest
    pass
