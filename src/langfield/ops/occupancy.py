"""Occupancy grid for empty-space skipping and the ray marcher that uses it.

Instant-NGP (Müller et al. 2022, Sec. 5.1 "Accelerated ray marching" and App. E.2):
a coarse binary grid marks cells that may hold density. Rays are marched with a fixed
step (optionally growing with distance: the "cone angle" for unbounded scenes) and only
samples in occupied cells are evaluated. The grid keeps an exponential moving average
of the density per cell (decay 0.95); every ``update_every`` steps a set of cells is
re-evaluated at a random point inside the cell — all cells during warm-up, afterwards a
uniform random subset plus a subset of the currently occupied cells — and a cell is
occupied when its density-derived opacity exceeds ``min(threshold, mean)``.

The grid is a small ``nn.Module`` holding buffers (so it is checkpointed with the model);
all functions take tensors/functions, never a field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor, nn

from langfield._checks import check_choice
from langfield.kernels import march_cpu
from langfield.ops.contraction import CONTRACTIONS, contract_from_box

#: ``march_rays(backend=...)``: ``"auto"`` takes the C++ kernel where it applies (CPU, float32,
#: constant steps, no contraction) and the torch path elsewhere.
MARCH_BACKENDS = ("auto", "torch", "cpp")


@dataclass(frozen=True)
class OccupancyGridConfig:
    """Hyper-parameters of the occupancy grid (defaults follow Instant-NGP / nerfacc).

    Attributes:
        resolution: cells per axis (NGP: 128).
        update_every: update period in training steps (NGP: 16).
        warmup_steps: steps during which every cell is updated (NGP: 256).
        ema_decay: per-update decay of the stored density (NGP: 0.95).
        threshold: opacity ``1 - exp(-sigma * step_size)`` above which a cell is occupied (NGP: 0.01).
        update_fraction: after warm-up, each update re-evaluates this fraction of all cells drawn
            uniformly plus as many drawn from the occupied ones (nerfacc: 1/4 + 1/4).
    """

    resolution: int = 128
    update_every: int = 16
    warmup_steps: int = 256
    ema_decay: float = 0.95
    threshold: float = 0.01
    update_fraction: float = 0.25


class OccupancyGrid(nn.Module):
    """A ``resolution^3`` grid over ``aabb [2, 3]`` (min, max) with EMA densities and a binary mask.

    Buffers:
        density: ``[G]`` float EMA of the density (``G = resolution^3``, x-major index).
        binary: ``[G]`` bool occupancy.

    Example:
        A ``4^3`` grid over ``[-1, 1]^3`` learns that only the central cube ``[-0.5, 0.5]^3`` (its
        8 middle cells) holds density:

        >>> import torch
        >>> from langfield.ops.occupancy import OccupancyGrid, OccupancyGridConfig
        >>> grid = OccupancyGrid(torch.tensor([[-1.0] * 3, [1.0] * 3]), OccupancyGridConfig(resolution=4))
        >>> cube = lambda points: 100.0 * (points.abs() < 0.5).all(dim=-1).float()
        >>> grid.update(step=0, density_fn=cube, step_size=0.1, generator=torch.Generator().manual_seed(0))
        True
        >>> grid.occupancy_fraction(), grid.occupied(torch.tensor([[0.1, 0.2, -0.3], [0.9, 0.0, 0.0]])).tolist()
        (0.125, [True, False])
        >>> sorted(set(grid.occupied_cell_centers().flatten().tolist()))
        [-0.25, 0.25]
    """

    def __init__(self, aabb: Tensor, config: OccupancyGridConfig = OccupancyGridConfig()) -> None:
        super().__init__()
        aabb = torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3)
        if not bool(torch.all(aabb[1] > aabb[0])):
            raise ValueError(f"aabb must be [[min], [max]] with max > min, got {aabb.tolist()}")
        self.config = config
        res = config.resolution
        self.register_buffer("aabb", aabb)
        self.register_buffer("density", torch.zeros(res**3))
        self.register_buffer("binary", torch.ones(res**3, dtype=torch.bool))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.int64))

    @property
    def resolution(self) -> int:
        return self.config.resolution

    def cell_indices(self, points: Tensor) -> Tuple[Tensor, Tensor]:
        """Flat cell index ``[*B]`` of ``points [*B, 3]`` and whether they are inside the aabb."""
        res = self.resolution
        scaled = (points - self.aabb[0]) * (res / (self.aabb[1] - self.aabb[0]))
        inside = ((scaled >= 0) & (scaled < res)).all(-1)
        ijk = scaled.long().clamp_(0, res - 1)
        flat = ijk @ torch.tensor([res * res, res, 1], device=ijk.device)
        return flat, inside

    def occupied(self, points: Tensor) -> Tensor:
        """Boolean ``[*B]``: the point lies inside the aabb in an occupied cell."""
        flat, inside = self.cell_indices(points)
        return self.binary[flat] & inside

    def occupied_cell_centers(self) -> Tensor:
        """``[M, 3]`` world centres of the occupied cells (e.g. to export a density region)."""
        res = self.resolution
        cells = self.binary.nonzero(as_tuple=True)[0]
        ijk = torch.stack([cells // (res * res), (cells // res) % res, cells % res], -1).to(self.aabb.dtype)
        return self.aabb[0] + (ijk + 0.5) / res * (self.aabb[1] - self.aabb[0])

    def _cell_points(self, cells: Tensor, generator: Optional[torch.Generator]) -> Tensor:
        res = self.resolution
        i = cells // (res * res)
        j = (cells // res) % res
        k = cells % res
        ijk = torch.stack([i, j, k], -1).float()
        jitter = torch.rand(ijk.shape, generator=generator, device=ijk.device)
        rel = (ijk + jitter) / res
        return self.aabb[0] + rel * (self.aabb[1] - self.aabb[0])

    @torch.no_grad()
    def update(
        self,
        step: int,
        density_fn: Callable[[Tensor], Tensor],
        step_size: float,
        generator: Optional[torch.Generator] = None,
        force: bool = False,
        chunk: int = 1 << 18,
    ) -> bool:
        """Refresh the grid if ``step`` is an update step (or ``force``); returns whether it did.

        ``density_fn(points [P, 3]) -> [P]`` or ``[P, 1]`` densities (world units).
        """
        cfg = self.config
        if not force and step % cfg.update_every != 0:
            return False
        num_cells = self.density.numel()
        device = self.density.device
        if force or step < cfg.warmup_steps:
            cells = torch.arange(num_cells, device=device)
        else:
            n = max(1, int(num_cells * cfg.update_fraction))
            uniform = torch.randint(0, num_cells, (n,), generator=generator, device=device)
            occ = torch.nonzero(self.binary).flatten()
            if occ.numel() > 0:
                pick = torch.randint(0, occ.numel(), (n,), generator=generator, device=device)
                cells = torch.cat([uniform, occ[pick]])
            else:
                cells = uniform
        points = self._cell_points(cells, generator)
        sigmas = torch.cat([density_fn(points[i : i + chunk]).reshape(-1) for i in range(0, len(points), chunk)])
        opacity = 1.0 - torch.exp(-sigmas.float().clamp_min(0) * step_size)
        decayed = self.density * cfg.ema_decay
        # A cell sampled twice keeps the max of both samples (scatter_reduce "amax").
        new = decayed.clone().scatter_reduce_(0, cells, opacity, reduce="amax", include_self=False)
        touched = torch.zeros_like(self.binary).index_fill_(0, cells, True)
        self.density.copy_(torch.where(touched, torch.maximum(decayed, new), decayed))
        thresh = min(cfg.threshold, float(self.density.clamp_min(0).mean()))
        self.binary.copy_(self.density > thresh)
        self.num_updates += 1
        return True

    def occupancy_fraction(self) -> float:
        return float(self.binary.float().mean())


def ray_aabb_intersect(origins: Tensor, directions: Tensor, aabb: Tensor) -> Tuple[Tensor, Tensor]:
    """Slab test: entry/exit distances ``[R]`` of rays ``[R, 3]`` with ``aabb [2, 3]``.

    Rays that miss get ``t_min > t_max``.

    Example:
        >>> import torch
        >>> from langfield.ops.occupancy import ray_aabb_intersect
        >>> origins = torch.tensor([[0.0, 0.0, -3.0], [5.0, 0.0, -3.0]])
        >>> directions = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
        >>> t_min, t_max = ray_aabb_intersect(origins, directions, torch.tensor([[-1.0] * 3, [1.0] * 3]))
        >>> t_min[0].item(), t_max[0].item(), bool(t_min[1] > t_max[1])  # the second ray misses
        (2.0, 4.0, True)
    """
    inv = 1.0 / torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    t0 = (aabb[0] - origins) * inv
    t1 = (aabb[1] - origins) * inv
    t_min = torch.minimum(t0, t1).amax(-1)
    t_max = torch.maximum(t0, t1).amin(-1)
    return t_min, t_max


@dataclass(frozen=True)
class PackedSamples:
    """Ragged samples along rays: ``N`` intervals ``[t_starts, t_ends)`` of rays ``ray_indices``.

    ``ray_indices`` is sorted ascending and intervals of one ray are in increasing ``t``.
    """

    t_starts: Tensor
    t_ends: Tensor
    ray_indices: Tensor
    num_rays: int

    def __len__(self) -> int:
        return self.t_starts.shape[0]

    def positions(self, origins: Tensor, directions: Tensor) -> Tensor:
        """``[N, 3]`` midpoints of the intervals."""
        t_mid = 0.5 * (self.t_starts + self.t_ends)
        return origins[self.ray_indices] + directions[self.ray_indices] * t_mid[:, None]

    def select(self, mask: Tensor) -> "PackedSamples":
        return PackedSamples(self.t_starts[mask], self.t_ends[mask], self.ray_indices[mask], self.num_rays)


#: Candidate samples built at once by the CPU cone-step marcher (larger groups fall out of cache).
_CPU_CANDIDATES_PER_GROUP = 1 << 20


def _cone_step_index(t: Tensor, step_size: float, cone_angle: float, max_step_size: float) -> Tensor:
    """Continuous step index ``u(t)`` (float64) of exponential stepping: ``du/dt = 1 / dt(t)`` with
    ``dt(t) = clamp(cone_angle * t, step_size, max_step_size)``.

    Three pieces: constant steps ``s`` up to ``a = s / c``; between ``a`` and ``b = M / c`` every
    step multiplies ``t`` by ``1 + c`` (so ``t_{k+1} - t_k = c t_k`` exactly, NGP's rule),
    ``u = a / s + log(t / a) / log(1 + c)``; constant steps ``M`` beyond ``b``.
    """
    s, c, m = step_size, cone_angle, max(max_step_size, step_size)
    a, b, ln = s / c, m / c, math.log1p(c)
    u_a, u_b = 1.0 / c, 1.0 / c + math.log(b / a) / ln
    t = t.double()
    geometric = u_a + torch.log(t.clamp_min(a) / a) / ln
    return torch.where(t <= a, t / s, torch.where(t <= b, geometric, u_b + (t - b) / m))


def _cone_step_distance(u: Tensor, step_size: float, cone_angle: float, max_step_size: float) -> Tensor:
    """Inverse of :func:`_cone_step_index`: ``t(u)`` (float64)."""
    s, c, m = step_size, cone_angle, max(max_step_size, step_size)
    a, b, ln = s / c, m / c, math.log1p(c)
    u_a, u_b = 1.0 / c, 1.0 / c + math.log(b / a) / ln
    geometric = a * torch.exp((u.clamp(u_a, u_b) - u_a) * ln)
    return torch.where(u <= u_a, u * s, torch.where(u <= u_b, geometric, b + (u - u_b) * m))


def _occupied_samples(
    grid: OccupancyGrid, points: Tensor, aabb: Tensor, contraction: Optional[str]
) -> Tensor:
    """Occupancy of world ``points [..., 3]``: looked up directly, or at their contracted position."""
    if contraction is not None:
        points = contract_from_box(points, aabb, norm=contraction)
    return grid.occupied(points)


def _use_march_kernel(
    backend: str, origins: Tensor, directions: Tensor, t_min: Tensor, t_max: Tensor, contraction: Optional[str]
) -> bool:
    """Whether the constant-step march runs the C++ kernel (see :func:`march_rays`)."""
    if backend == "torch":
        return False
    applies = (
        contraction is None
        and origins.device.type == "cpu"
        and origins.dtype == directions.dtype == t_min.dtype == t_max.dtype == torch.float32
    )
    if backend == "cpp":
        if not applies:
            raise ValueError("march_rays(backend='cpp') needs float32 CPU rays, constant steps and no contraction")
        if not march_cpu.cpp_available():
            raise ValueError("march_rays(backend='cpp'): the C++ kernel is unavailable (LANGFIELD_NO_CPP or a failed build)")
        return True
    return applies and march_cpu.cpp_available()


@torch.no_grad()
def march_rays(
    origins: Tensor,
    directions: Tensor,
    near: Tensor,
    far: Tensor,
    grid: Optional[OccupancyGrid],
    aabb: Tensor,
    step_size: float,
    cone_angle: float = 0.0,
    max_step_size: float = 1e10,
    jitter: bool = False,
    generator: Optional[torch.Generator] = None,
    max_samples_per_ray: int = 1024,
    contraction: Optional[str] = None,
    backend: str = "auto",
) -> PackedSamples:
    """March rays ``[R, 3]`` through ``aabb`` and keep the samples in occupied cells.

    Steps are ``clamp(cone_angle * t, step_size, max_step_size)`` (Instant-NGP's exponential
    stepping when ``cone_angle > 0``, Sec. 5.1 / App. E.2; constant steps otherwise). With
    ``jitter`` the first sample of every ray is offset by a uniform fraction of a step (training).
    ``near``/``far`` are ``[R, 1]`` or ``[R]`` and clip the aabb interval. Returns packed intervals.

    ``backend``: constant steps on the CPU in float32 without contraction run the C++ kernel
    (:mod:`langfield.kernels.march_cpu`, the same samples bit for bit, several times faster) when
    it is available (``"auto"``); ``"torch"`` forces the torch path below (the reference),
    ``"cpp"`` the kernel (an error where it does not apply or cannot be built).

    Exponential steps are laid out in closed form: uniformly in the continuous step index
    ``u(t)`` with ``du/dt = 1 / dt(t)``, which gives exactly ``t_{k+1} = (1 + cone_angle) t_k``
    where the cone term is between the bounds (no per-step Python loop).

    Unbounded scenes (``contraction="l2"`` or ``"linf"``, Mip-NeRF 360 eq. 10): the rays are not
    clipped to ``aabb`` but march over ``[near, far]``; ``aabb`` is the foreground box that
    :func:`~langfield.ops.contraction.contract_from_box` maps to ``[-1, 1]^3``, and ``grid`` lives
    in contracted space (its aabb is ``[-2, 2]^3``) and is asked about the contracted sample
    positions.

    Example:
        A ray along ``+z`` crosses the box ``[-1, 1]^3`` for ``t in [2, 4]``; steps of 0.5 start
        half a step in. With a grid in which only ``z in [-0.5, 0.5)`` is occupied, the two
        samples whose midpoints lie there survive:

        >>> import torch
        >>> from langfield.ops.occupancy import OccupancyGrid, OccupancyGridConfig, march_rays
        >>> aabb = torch.tensor([[-1.0] * 3, [1.0] * 3])
        >>> origins, directions = torch.tensor([[0.0, 0.0, -3.0]]), torch.tensor([[0.0, 0.0, 1.0]])
        >>> near, far = torch.zeros(1, 1), torch.full((1, 1), 10.0)
        >>> samples = march_rays(origins, directions, near, far, None, aabb, step_size=0.5)
        >>> samples.t_starts.tolist(), samples.t_ends.tolist()
        ([2.0, 2.25, 2.75, 3.25, 3.75], [2.25, 2.75, 3.25, 3.75, 4.0])
        >>> grid = OccupancyGrid(aabb, OccupancyGridConfig(resolution=4))
        >>> grid.binary.view(4, 4, 4)[:] = torch.tensor([False, True, True, False])  # by the z index
        >>> samples = march_rays(origins, directions, near, far, grid, aabb, step_size=0.5)
        >>> samples.t_starts.tolist(), samples.t_ends.tolist(), samples.ray_indices.tolist()
        ([2.25, 2.75], [2.75, 3.25], [0, 0])

        Exponential steps (cone angle 0.5, minimum step 0.5) from inside the box of an unbounded
        scene (``contraction``: not clipped to the box): constant up to ``t = 1``, then each step
        is half the distance travelled (``1.2247 -> 1.8371 -> 2.7557``):

        >>> samples = march_rays(torch.zeros(1, 3), directions, near, torch.full((1, 1), 3.4), None, aabb,
        ...                      step_size=0.5, cone_angle=0.5, contraction="linf")
        >>> [round(t, 4) for t in samples.t_ends.tolist()]
        [0.25, 0.75, 1.2247, 1.8371, 2.7557, 3.4]
    """
    if origins.ndim != 2 or origins.shape[-1] != 3 or directions.shape != origins.shape:
        raise ValueError(f"origins/directions must be [R, 3], got {tuple(origins.shape)}, {tuple(directions.shape)}")
    if step_size <= 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    if contraction is not None:
        check_choice(contraction, "contraction", CONTRACTIONS)
    check_choice(backend, "backend", MARCH_BACKENDS)
    if backend == "cpp" and cone_angle > 0:
        raise ValueError("march_rays(backend='cpp') needs constant steps (cone_angle 0); the kernel does not do cone steps")
    num_rays = origins.shape[0]
    device = origins.device
    if contraction is None:
        t_min, t_max = ray_aabb_intersect(origins, directions, aabb)
        t_min = torch.maximum(t_min, near.reshape(-1))
        t_max = torch.minimum(t_max, far.reshape(-1))
    else:
        t_min = near.reshape(-1).to(origins.dtype).expand(num_rays).clone()
        t_max = far.reshape(-1).to(origins.dtype).expand(num_rays).clone()
    hit = t_max > t_min
    if jitter:
        offset = torch.rand(num_rays, generator=generator, device=device)
    else:
        offset = torch.full((num_rays,), 0.5, device=device)
    empty = PackedSamples(
        torch.zeros(0, device=device), torch.zeros(0, device=device), torch.zeros(0, dtype=torch.long, device=device), num_rays
    )
    if not bool(hit.any()):
        return empty
    if cone_angle <= 0:
        # Constant steps, built ragged: ray r gets n_r = ceil((t_max - t_min) / step + 1 - offset)
        # intervals [t_min + (k - 1 + offset) * step, t_min + (k + offset) * step] clipped to the
        # ray's [t_min, t_max], so rays that miss the box or cross a corner cost nothing extra.
        length = torch.where(hit, t_max - t_min, torch.zeros_like(t_min))
        counts = torch.ceil(length / step_size + (1.0 - offset)).clamp_(min=0, max=max_samples_per_ray).long()
        counts = torch.where(hit, counts, torch.zeros_like(counts))
        if _use_march_kernel(backend, origins, directions, t_min, t_max, contraction):
            res = grid.resolution if grid is not None else 0
            t_starts, t_ends, ray_idx = march_cpu.march_constant_cpp(
                origins, directions, t_min, t_max, offset, counts, step_size,
                grid.binary if grid is not None else None, grid.aabb if grid is not None else aabb, res,
            )  # fmt: skip
            return empty if ray_idx.numel() == 0 else PackedSamples(t_starts, t_ends, ray_idx, num_rays)
        total = int(counts.sum())
        if total == 0:
            return empty
        ray_idx = torch.repeat_interleave(torch.arange(num_rays, device=device), counts)
        first = torch.cumsum(counts, 0) - counts
        k = (torch.arange(total, device=device) - first[ray_idx]).float()
        t0 = t_min[ray_idx]
        t_ends = t0 + (k + offset[ray_idx]) * step_size
        t_starts = (t_ends - step_size).clamp_min(t0)
        t_ends = torch.minimum(t_ends, t_max[ray_idx])
        keep = t_ends > t_starts
        if grid is not None:
            t_mid = 0.5 * (t_starts + t_ends)
            pts = origins[ray_idx] + directions[ray_idx] * t_mid[:, None]  # multiply, then add: as the C++ kernel
            keep &= _occupied_samples(grid, pts, aabb, contraction)
        ray_idx = ray_idx[keep]
        if ray_idx.numel() == 0:
            return empty
        return PackedSamples(t_starts[keep], t_ends[keep], ray_idx, num_rays)
    # Exponential steps: the same ragged layout, uniform in the step index u(t) instead of t. A ray
    # of an unbounded scene has up to max_samples_per_ray candidates; on CPU they are built and
    # tested a group of rays at a time (~1M candidates) so the temporaries stay in cache.
    steps = (step_size, cone_angle, max_step_size)
    u_min = _cone_step_index(t_min.clamp_min(0), *steps)
    u_max = _cone_step_index(t_max.clamp_min(0), *steps)
    length = torch.where(hit, u_max - u_min, torch.zeros_like(u_min))
    counts = torch.ceil(length + (1.0 - offset.double())).clamp_(min=0, max=max_samples_per_ray).long()
    counts = torch.where(hit, counts, torch.zeros_like(counts))
    group = num_rays if device.type != "cpu" else max(1, _CPU_CANDIDATES_PER_GROUP // max_samples_per_ray)
    parts = []
    for lo in range(0, num_rays, group):
        rays = slice(lo, min(lo + group, num_rays))
        total = int(counts[rays].sum())
        if total == 0:
            continue
        local = torch.repeat_interleave(torch.arange(counts[rays].numel(), device=device), counts[rays])
        first = torch.cumsum(counts[rays], 0) - counts[rays]
        k = (torch.arange(total, device=device) - first[local]).double()
        ray_idx = local + lo
        u_lo, u_hi = u_min[ray_idx], u_max[ray_idx]
        u_end = u_lo + k + offset[ray_idx].double()
        u_start = u_end - 1.0
        t_starts = torch.where(u_start <= u_lo, t_min[ray_idx], _cone_step_distance(u_start, *steps).to(t_min.dtype))
        t_ends = torch.where(u_end >= u_hi, t_max[ray_idx], _cone_step_distance(u_end, *steps).to(t_min.dtype))
        keep = t_ends > t_starts
        if grid is not None:
            t_mid = 0.5 * (t_starts + t_ends)
            pts = torch.addcmul(origins[ray_idx], directions[ray_idx], t_mid[:, None])
            keep &= _occupied_samples(grid, pts, aabb, contraction)
        parts.append((t_starts[keep], t_ends[keep], ray_idx[keep]))
    if not parts or sum(len(p[2]) for p in parts) == 0:
        return empty
    return PackedSamples(*(torch.cat(list(x)) for x in zip(*parts)), num_rays)
