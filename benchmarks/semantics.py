"""Language-field benchmark: teacher alone vs 3D field vs + RSR vs + RSR + CSE, for NGP and Gaussians.

Default: the built-in labelled procedural scene and the SIMULATED teacher (ground-truth label
text embeddings from all-MiniLM-L6-v2, corrupted like CLIP's dense features; see
:mod:`langfield.language.teachers.simulated`). ``--data`` takes any labelled scene
(``transforms.json`` with ``labels`` and per-frame ``semantic_path``); ``--teacher MODEL`` runs a
real CLIP-family model instead (the same commands, unchanged).

Steps per representation: train the reconstruction for ``--recon-seconds``; compute the teacher's
dense features and mask proposals of the training views once; distil the variants
``field`` (no RSR, no CSE) and ``field+rsr+cse`` (its first phase is scored as ``field+rsr``), and
optionally ``field+cse`` (``--ablations full``); score every variant and the teacher alone on the
test views (mIoU, mAcc, boundary F, localization accuracy); time relevancy queries at 200x200;
on the procedural scene, score spatial questions (left/right, closer, larger, above) answered by
the last variant from the test cameras against the true objects (``spatial_accuracy``).

Usage::

    python benchmarks/semantics.py --out semantics.json
    python benchmarks/semantics.py --data path/to/labelled_scene --teacher openai/clip-vit-base-patch16 --out clip.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from langfield.io.atomic import atomic_write_json
from langfield.language.evaluation import evaluate_semantics
from langfield.language.queries import CANONICAL_NEGATIVES, relevancy
from langfield.language.scene import LanguageScene
from langfield.language.spatial import procedural_objects, score_spatial, spatial_questions
from langfield.language.teachers import load_teacher
from langfield.language.distillation import LanguageDistillation, LanguageFieldConfig
from langfield.language.targets import teacher_features, view_image_uint8, view_masks
from langfield.language.view_geometry import view_geometry
from langfield.runs.loading import load_data, load_run
from langfield.runs.spec import DataConfig
from langfield.runs.train import train
from langfield.training.trainer import TrainerConfig
from langfield.types import Cameras


def _field_features(trainer: LanguageDistillation, cameras: Cameras):
    """``i -> [H, W, E]`` render of the trainer's field at ``cameras[i]``."""

    def fn(i: int) -> torch.Tensor:
        geom = view_geometry(trainer.method, cameras, i, trainer.config.top_k)
        return trainer.render_view(geom, int(cameras.heights[i]), int(cameras.widths[i]))

    return fn


def _scaled_camera(cameras: Cameras, index: int, size: int) -> Cameras:
    cam = cameras[index]
    s = size / float(cam.widths[0])
    K = cam.Ks.clone()
    K[:, :2] *= s
    return Cameras.create(cam.c2w, K, size, int(round(float(cam.heights[0]) * s)))


def _query_ms(trainer: LanguageDistillation, cameras: Cameras, embeddings: torch.Tensor, size: int, repeats: int) -> float:
    """Median ms for one relevancy map at ``size`` px: geometry + feature render + relevancy."""
    cam = _scaled_camera(cameras, 0, size)
    times = []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        feats = _field_features(trainer, cam)(0)
        rel = relevancy(feats, embeddings[0], embeddings[1:])
        assert rel.shape == (int(cam.heights[0]), size)
        if r > 0:  # first call warms up
            times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    return times[len(times) // 2]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="procedural", help="labelled scene folder, or 'procedural' (default)")
    p.add_argument("--teacher", default="simulated", help="'simulated' (default) or a CLIP model id / directory")
    p.add_argument("--strength", type=float, default=None, help="simulated teacher strength (default: its config's, 1.0)")
    p.add_argument("--representations", default="ngp,gaussians")
    p.add_argument("--size", type=int, default=64, help="procedural image size")
    p.add_argument("--views", type=int, default=100, help="procedural training views")
    p.add_argument("--downscale", type=float, default=1.0)
    p.add_argument("--recon-seconds", type=float, default=150.0)
    p.add_argument("--steps", type=int, default=LanguageFieldConfig.steps, help="language-field steps of the first fit")
    p.add_argument("--cse-rounds", type=int, default=None)
    p.add_argument("--ablations", choices=("basic", "full"), default="basic", help="'full' adds field+cse")
    p.add_argument("--masks", default="auto", choices=("auto", "sam", "superpixels"))
    p.add_argument("--query-size", type=int, default=200)
    p.add_argument("--work-dir", default="outputs/bench_semantics")
    p.add_argument("--reuse-runs", action="store_true", help="load WORK_DIR/{ngp,gaussians} if already trained")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    if args.data == "procedural":
        data = DataConfig(procedural_size=args.size, procedural_views=args.views)
    else:
        data = DataConfig(path=args.data, downscale=args.downscale)
    dataset = load_data(data)
    if dataset.labels is None or dataset.split("test").semantics is None:
        print(f"error: {args.data} is not a labelled scene (transforms.json needs 'labels' and frames 'semantic_path')", file=sys.stderr)
        return 2
    teacher = load_teacher(args.teacher, dataset.labels, strength=args.strength)
    labels = list(dataset.labels)
    label_emb = teacher.embed_texts(labels)
    neg_emb = teacher.embed_texts(list(CANONICAL_NEGATIVES))
    test = dataset.split("test")
    bg = dataset.eval_background()
    t0 = time.perf_counter()
    teacher_row = evaluate_semantics(
        lambda i: teacher.dense_features(view_image_uint8(test, i, bg), view_key=f"test/{i}", semantics=test.semantics[i]),
        test, label_emb, neg_emb,
    )  # fmt: skip
    base = LanguageFieldConfig(steps=args.steps, seed=args.seed)
    base = dataclasses.replace(base, masks=dataclasses.replace(base.masks, method=args.masks))
    if args.cse_rounds is not None:
        base = dataclasses.replace(base, cse=dataclasses.replace(base.cse, rounds=args.cse_rounds))
    cache = (
        teacher_features(teacher, dataset.split("train"), bg),
        view_masks(dataset.split("train"), bg, base.masks),
    )
    teacher_seconds = time.perf_counter() - t0

    results, query_ms, recon, timings, spatial = [], {}, {}, {}, {}
    for rep in [r.strip() for r in args.representations.split(",") if r.strip()]:
        results.append({"representation": rep, "variant": "teacher", **_row(teacher_row)})
        tr_cfg = TrainerConfig(
            max_steps=10**9, max_seconds=args.recon_seconds, output_dir=os.path.join(args.work_dir, rep),
            eval_every=0, checkpoint_every=10**9, seed=args.seed,
        )  # fmt: skip
        run_dir = os.path.join(args.work_dir, rep)
        if args.reuse_runs and os.path.isfile(os.path.join(run_dir, "checkpoints", "latest.ckpt")):
            run = load_run(run_dir)  # an earlier reconstruction of the same scene
            ev = json.loads(Path(run_dir, "eval_test.json").read_text()) if Path(run_dir, "eval_test.json").is_file() else {}
            recon[rep] = {k: ev.get(k) for k in ("psnr", "ssim")}
            recon[rep]["reused"] = run_dir
        else:
            run = train(data, rep, tr_cfg)  # a DataConfig, so the run reloads with load_run
            recon[rep] = {k: run.trainer.evaluate("test").get(k) for k in ("psnr", "ssim")}
            recon[rep]["steps"] = run.trainer.step
        method = run.method.eval()
        variants = [("field", dict(use_rsr=False, use_cse=False)), ("field+rsr+cse", dict(use_rsr=True, use_cse=True))]
        if args.ablations == "full":
            variants.insert(1, ("field+cse", dict(use_rsr=False, use_cse=True)))
        for name, flags in variants:
            cfg = dataclasses.replace(base, **flags)
            t1 = time.perf_counter()
            lt = LanguageDistillation(method, dataset, teacher, cfg, output_dir=None, teacher_cache=cache)
            feats = _field_features(lt, test.cameras)

            def score(trainer, phase, name=name, feats=feats, cfg=cfg):
                if cfg.use_cse and phase == 0 and cfg.use_rsr:
                    results.append({"representation": rep, "variant": "field+rsr",
                                    **_row(evaluate_semantics(feats, test, label_emb, neg_emb))})  # fmt: skip

            summary = lt.run(on_phase_end=score)
            row = {"representation": rep, "variant": name, **_row(evaluate_semantics(feats, test, label_emb, neg_emb))}
            row["phases"] = summary["phases"]
            results.append(row)
            timings[f"{rep}/{name}"] = time.perf_counter() - t1
            print(json.dumps({k: row[k] for k in ("representation", "variant", "miou", "macc", "boundary_f", "loc_acc")}), flush=True)
        if args.data == "procedural":
            t1 = time.perf_counter()
            spatial[rep] = _spatial(LanguageScene(method, dataset, lt.field, teacher, top_k=lt.config.top_k), test, variants[-1][0])
            timings[f"{rep}/spatial"] = time.perf_counter() - t1
            print(json.dumps({"representation": rep, "spatial_accuracy": spatial[rep]["accuracy"]}), flush=True)
        query_ms[rep] = _query_ms(lt, test.cameras, torch.cat([label_emb[1:2], neg_emb]).to(lt.device), args.query_size, 5)

    out = {
        "benchmark": "semantics",
        "teacher": teacher.name,
        "simulated_teacher": bool(teacher.simulated),
        "teacher_spec": teacher.spec(),
        "data": args.data,
        "labels": labels,
        "resolution": [test.width, test.height],
        "train_views": len(dataset.split("train")),
        "test_views": len(test),
        "recon_seconds": args.recon_seconds,
        "recon": recon,
        "language_steps": args.steps,
        "results": results,
        "spatial_accuracy": {rep: s["accuracy"] for rep, s in spatial.items()} or None,
        "spatial": spatial or "not scored: ground-truth objects are known for the procedural scene only",
        "query_ms": query_ms,
        "query_resolution": args.query_size,
        "timings_s": {"teacher_and_masks": teacher_seconds, **timings},
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
    }  # fmt: skip
    atomic_write_json(out, args.out)
    print(json.dumps({"results": [{k: r[k] for k in ("representation", "variant", "miou", "macc", "boundary_f", "loc_acc")} for r in results], "query_ms": query_ms}, indent=1))
    return 0


def _spatial(scene: LanguageScene, test, variant: str, max_views: int = 12) -> dict:
    """Spatial-question accuracy of ``scene`` on questions generated from the true procedural
    objects and the test cameras (:func:`langfield.language.spatial.spatial_questions`); every
    name is localised from ``max_views`` training views (relevancy >= 0.5, else "not found")."""
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)  # the procedural scene's world up (identity world_transform)
    questions = spatial_questions(procedural_objects(scene.dataset.world_transform), test.cameras, up)
    scores = score_spatial(questions, lambda q, view: scene.relation(q, "test", view, max_views=max_views))
    return {**scores, "variant": variant, "answer_up": "mean training-camera up", "localization_views": max_views}


def _row(scores):
    return {k: scores[k] for k in ("miou", "macc", "boundary_f", "loc_acc", "pixel_acc", "per_class_iou", "per_class_boundary_f")}


if __name__ == "__main__":
    raise SystemExit(main())
