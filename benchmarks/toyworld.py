"""Throughput of the toy world (images per second) at 32 and 64 px.

Measures, for each image size:

* ``render``: :func:`render_toyworld` alone on pre-sampled scenes and cameras, batched
  (``--batch`` images per call), for supersample 1 and 2, with and without shadows;
* ``stream``: the whole pipeline of :func:`iter_toyworld` (scene sampling, camera sampling with
  its visibility checks, rendering with the default config, captions and attribute labels);
* ``write`` (``--write``): :func:`write_toyworld` into a temporary folder with 1 and 2 worker
  processes (includes quantisation, ``.npz``/``.jsonl`` writing and process start-up).

Each figure is the best of ``--repeats`` runs, as wall-clock images/s; the CPU time of this process
is reported beside it (on a shared machine the wall clock includes time lost to other processes).
The load average before and after is recorded so a reader can tell a busy machine from a slow one.

    python benchmarks/toyworld.py --out bench_out/toyworld.json
    python benchmarks/toyworld.py --out F.json --num-images 2048 --write
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from langfield.data.toyworld import ToyWorldConfig, iter_toyworld, render_toyworld, sample_cameras_batch, sample_scene, write_toyworld


def _best(fn, repeats: int) -> dict:
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return {"wall_s": min(walls), "cpu_s": min(cpus), "runs": repeats}


def _rate(result: dict, num: int) -> dict:
    result["images"] = num
    result["images_per_s"] = num / result["wall_s"]
    result["images_per_cpu_s"] = num / max(result["cpu_s"], 1e-9)
    return result


def benchmark(num_images: int, batch: int, repeats: int, write: bool) -> list:
    rows = []
    for size in (32, 64):
        n = num_images if size == 32 else max(batch, num_images // 4)
        base = ToyWorldConfig(image_size=size)
        scenes = [sample_scene(s, base) for s in range(n)]
        cameras = sample_cameras_batch(scenes, 1, base)
        for ss in (1, 2):
            for shadows in (False, True):
                cfg = ToyWorldConfig(image_size=size, supersample=ss, shadows=shadows)

                def run():
                    for start in range(0, n, batch):
                        render_toyworld(scenes[start : start + batch], cameras[start : start + batch], cfg)

                r = _rate(_best(run, repeats), n)
                rows.append({"phase": "render", "image_size": size, "supersample": ss, "shadows": shadows, "batch": batch, **r})
                print(f"render  {size:3d}px ss={ss} shadows={shadows!s:5}: {r['images_per_s']:8.0f} img/s "
                      f"({r['images_per_cpu_s']:.0f} per CPU-s)")

        def stream():
            for _ in iter_toyworld(base, count=n, batch_size=batch):
                pass

        r = _rate(_best(stream, repeats), n)
        rows.append({"phase": "stream", "image_size": size, "supersample": base.supersample, "shadows": base.shadows, "batch": batch, **r})
        print(f"stream  {size:3d}px (default config): {r['images_per_s']:8.0f} img/s ({r['images_per_cpu_s']:.0f} per CPU-s)")

        if write:
            for workers in (1, 2):
                with tempfile.TemporaryDirectory() as tmp:
                    w0 = time.perf_counter()
                    write_toyworld(Path(tmp) / "w", base, num_scenes=n, views_per_scene=1, seed=0,
                                   scenes_per_shard=max(1, n // 4), batch_size=batch, num_workers=workers, progress=False)
                    wall = time.perf_counter() - w0
                rows.append({"phase": "write", "image_size": size, "num_workers": workers, "images": n, "wall_s": wall,
                             "images_per_s": n / wall})
                print(f"write   {size:3d}px workers={workers}: {n / wall:8.0f} img/s (wall, incl. process start-up)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--num-images", type=int, default=1024, help="images per measurement at 32 px (a quarter at 64 px)")
    parser.add_argument("--batch", type=int, default=256, help="images per render call")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads of this process")
    parser.add_argument("--write", action="store_true", help="also time write_toyworld with 1 and 2 workers")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    rows = benchmark(args.num_images, args.batch, args.repeats, args.write)
    result = {
        "benchmark": "toyworld",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "results": rows,
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
