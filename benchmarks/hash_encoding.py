"""Time the multiresolution hash encoding (Müller et al. 2022, Sec. 3) per backend.

For ``N`` points (default 2^17) and the default :class:`HashGridConfig` (16 levels, T = 2^19,
F = 2), measures per available backend:

* ``forward``: the training-mode forward (table requires grad, so the graph is built);
* ``forward_backward``: forward + backward to the table under a random upstream gradient;
* ``forward_backward_x``: the same, also differentiating w.r.t. ``x`` (normals from density).

Reports the best and the median of ``--repeats`` runs in milliseconds, prints a table, and
writes JSON with ``--out FILE.json``.

    python benchmarks/hash_encoding.py --out bench_out/hash_encoding.json
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

from langfield.ops.hash_encoding import HashGridConfig, HashGridEncoding, available_backends, hash_encode


def _time(fn, repeats: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return {"best_ms": min(times), "median_ms": statistics.median(times), "runs": len(times)}


def benchmark(num_points: int, config: HashGridConfig, backends: list[str], repeats: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(num_points, 3, generator=gen)
    # allocated as in training (the module backs its table with huge pages where it can)
    embeddings = HashGridEncoding(config, init_scale=1e-2).embeddings
    grad_out = torch.randn(num_points, config.output_dim, generator=gen)
    results = {}
    for backend in backends:
        # the reference twin is ~100x slower; a couple of runs suffice
        reps, warmup = (max(1, min(repeats, 2)), 0) if backend == "reference" else (repeats, 2)

        def forward():
            return hash_encode(x, embeddings, config, backend=backend)

        def forward_backward():
            out = hash_encode(x, embeddings, config, backend=backend)
            torch.autograd.grad(out, embeddings, grad_out)

        def forward_backward_x():
            xg = x.detach().requires_grad_(True)
            out = hash_encode(xg, embeddings, config, backend=backend)
            torch.autograd.grad(out, (embeddings, xg), grad_out)

        results[backend] = {
            "forward": _time(forward, reps, warmup),
            "forward_backward": _time(forward_backward, reps, warmup),
            "forward_backward_x": _time(forward_backward_x, reps, warmup),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-points", type=int, default=2**17)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--backends", nargs="*", default=None, help="default: all available")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: unchanged)")
    parser.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = HashGridConfig()
    backends = args.backends or available_backends()
    results = benchmark(args.num_points, config, backends, args.repeats)

    print(f"hash encoding, N = {args.num_points}, {config}, threads = {torch.get_num_threads()}")
    print(f"{'backend':<10} {'forward ms':>12} {'fwd+bwd ms':>12} {'fwd+bwd(+x) ms':>16}   (best / median)")
    for backend, r in results.items():
        cells = [f"{r[k]['best_ms']:.1f}/{r[k]['median_ms']:.1f}" for k in ("forward", "forward_backward", "forward_backward_x")]
        print(f"{backend:<10} {cells[0]:>12} {cells[1]:>12} {cells[2]:>16}")

    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "benchmark": "hash_encoding",
            "num_points": args.num_points,
            "config": config.__dict__,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "results": results,
        }
        args.out.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
