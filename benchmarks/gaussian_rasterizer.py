"""Time the Gaussian rasteriser (binning + blending, forward and backward) per backend.

A random screen-space scene (default 200x200, 20k anisotropic Gaussians with 3-sigma radii of
2-8 px, opacities 0.05-0.95) is rasterised with :func:`langfield.ops.splatting.rasterize_gaussians`
for each available backend and channel count. Reports best and median milliseconds of
``--repeats`` runs for the forward and for the backward under a random upstream gradient, prints a
table and writes JSON with ``--out``.

    python benchmarks/gaussian_rasterizer.py --out bench_out/gaussian_rasterizer.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from langfield.io.atomic import atomic_write_json
from langfield.kernels.gaussian_rasterize_cpu import cpp_available
from langfield.ops.splatting import bin_gaussians, rasterize_gaussians


def random_scene(width: int, height: int, num: int, channels: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    means2d = torch.rand(num, 2, generator=gen) * torch.tensor([float(width), float(height)])
    radius = 2.0 + 6.0 * torch.rand(num, generator=gen)
    sigma = radius / 3.0
    aniso = 0.5 + torch.rand(num, generator=gen)
    sx, sy = sigma * aniso.sqrt(), sigma / aniso.sqrt()
    theta = torch.rand(num, generator=gen) * torch.pi
    c, s = theta.cos(), theta.sin()
    cxx, cyy, cxy = c * c * sx * sx + s * s * sy * sy, s * s * sx * sx + c * c * sy * sy, c * s * (sx * sx - sy * sy)
    det = cxx * cyy - cxy * cxy
    conics = torch.stack([cyy / det, -cxy / det, cxx / det], -1)
    radii = torch.ceil(radius).to(torch.int32)
    opacities = 0.05 + 0.9 * torch.rand(num, generator=gen)
    features = torch.rand(num, channels, generator=gen)
    depths = torch.rand(num, generator=gen)
    return means2d, conics, opacities, features, depths, radii


def time_backend(scene, width, height, backend, repeats):
    means2d, conics, opacities, features, depths, radii = scene
    fwd, bwd = [], []
    for i in range(repeats + 1):
        inputs = [t.clone().requires_grad_(True) for t in (means2d, conics, opacities, features)]
        t0 = time.perf_counter()
        image, alpha = rasterize_gaussians(inputs[0], inputs[1], inputs[2], inputs[3], depths, radii, width, height,
                                           backend=backend)
        t1 = time.perf_counter()
        (image * torch.ones_like(image)).sum().add(alpha.sum()).backward()
        t2 = time.perf_counter()
        if i:  # the first run warms up (and builds the kernel)
            fwd.append((t1 - t0) * 1e3)
            bwd.append((t2 - t1) * 1e3)
    return {"forward_best_ms": min(fwd), "forward_median_ms": statistics.median(fwd),
            "backward_best_ms": min(bwd), "backward_median_ms": statistics.median(bwd), "runs": repeats}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=200)
    p.add_argument("--height", type=int, default=200)
    p.add_argument("--num", type=int, default=20_000)
    p.add_argument("--channels", type=int, nargs="+", default=[3, 16])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--backends", nargs="+", default=["cpp", "torch"])
    p.add_argument("--out", default=None, help="JSON file to write")
    args = p.parse_args(argv)
    backends = [b for b in args.backends if b != "cpp" or cpp_available()]
    results = []
    for channels in args.channels:
        scene = random_scene(args.width, args.height, args.num, channels)
        bins = bin_gaussians(scene[0], scene[5], scene[4], args.width, args.height)
        for backend in backends:
            repeats = args.repeats if backend == "cpp" else max(2, args.repeats // 5)
            r = time_backend(scene, args.width, args.height, backend, repeats)
            r.update(backend=backend, channels=channels, tile_entries=bins.num_instances)
            results.append(r)
            print(f"{backend:>6} D={channels:<3} forward {r['forward_best_ms']:8.1f} ms  backward {r['backward_best_ms']:8.1f} ms")
    record = {
        "width": args.width, "height": args.height, "num_gaussians": args.num, "results": results,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpu_count": os.cpu_count()},
    }
    if args.out:
        atomic_write_json(record, Path(args.out))
    return record


if __name__ == "__main__":
    main()
