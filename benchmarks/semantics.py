"""Language-field benchmark: teacher alone, K-draw teacher average, 3D field and its region/refresh variants.

Default: the built-in labelled procedural scene and a SIMULATED teacher (ground-truth label text
embeddings from all-MiniLM-L6-v2, corrupted like CLIP's dense features): ``--teacher simulated``
draws every corruption per view (:mod:`langfield.language.teachers.simulated`);
``--teacher simulated-persistent`` adds mistakes that persist across views from a range of viewing
directions, small-object bleeding and a modality gap
(:mod:`langfield.language.teachers.persistent`). ``--data`` takes any labelled scene
(``transforms.json`` with ``labels`` and per-frame ``semantic_path``); ``--teacher MODEL`` runs a
real CLIP-family model instead (the same commands, unchanged).

Protocol: the reconstruction of each representation is trained once (``--recon-seconds``, first
seed); then for every seed (``--seeds 0,1,2``; a seed sets the teacher's draws -- per-view and
persistent -- and the language field's initialisation and batch order) the teacher's features of
the training views are computed, the variants distilled and every row scored on ``--split``
(``val`` to choose settings, ``test`` for the table; the procedural scene has ``--val-views``
validation views). Rows: ``teacher`` (the 2D teacher per view), ``teacher-kdraw`` (the normalised
mean of ``--kdraw`` independent draws of the teacher per view: what averaging without geometry
buys), ``field``, OV-NeRF's ``field+rsr`` and ``field+rsr+cse`` (``field+cse`` with ``--ablations
full`` or ``paper``), and langfield's own label-free ``field+mask-pool`` and ``field+mask-pool+render-refresh``
(``field+render-refresh`` with ``--ablations full``; ``--ablations paper`` fits OV-NeRF's variants only,
``--variants a,b`` exactly those); see :data:`VARIANTS`. Each row: the mean over seeds of mIoU, mAcc, boundary
F, localization (LERF's argmax protocol ``loc_acc``, and ``loc_balanced_acc`` with a 0.5 relevancy
threshold and distractor queries: absent labels and objects in no scene), ``miou_open_vocab`` (mIoU
when every label is queried by a paraphrase that was never a label string,
:mod:`langfield.language.vocabulary`; mean over the paraphrase sets), each with ``*_std`` and the
per-seed values. On a scene with true object boxes (the procedural scene's layouts; a transforms json's
``objects`` field), spatial questions (left/right, closer, larger, above)
answered by the last variant from the evaluation cameras against the true objects
(``spatial_accuracy``, mean over seeds: names placed on objects grouped from geometry and named
with the labels, :mod:`langfield.language.objects`; ``spatial_accuracy_relevancy``: placed by their
most relevant pixels instead, the baseline). ``teacher_train_recall``: per seed and label, the share of
the label's training pixels the teacher names correctly (:func:`teacher_label_recall`). Relevancy query time at 200x200: ``query_ms`` (the
distillation's own render path), ``query_ms_first`` (a first query on a view through
:class:`LanguageScene`: colour, geometry, features and relevancy) and ``query_ms_cached`` (a second
text on the same view: the render is cached, only the relevancy is computed).

Usage::

    python benchmarks/semantics.py --out semantics.json
    python benchmarks/semantics.py --teacher simulated-persistent --seeds 0,1,2 --split val --out val.json
    python benchmarks/semantics.py --data path/to/labelled_scene --teacher openai/clip-vit-base-patch16 --out clip.json
    # a second labelled scene with true object boxes: the procedural "tabletop" layout written to disk
    langfield procedural outputs/tabletop --layout tabletop --width 200 --height 200 --num-train 60 --num-val 8
    python benchmarks/semantics.py --data outputs/tabletop --teacher simulated-persistent --out tabletop.json
    # one process per seed side by side, then combine them (their query timings were taken on a shared machine):
    python benchmarks/semantics.py --teacher simulated-persistent --seeds 1 --variants field,field+rsr+cse --out s1.json
    python benchmarks/semantics.py --merge s0.json s1.json s2.json --out semantics.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from langfield.eval.semantic_metrics import SemanticScores, confusion_matrix
from langfield.io.atomic import atomic_write_json
from langfield.language.evaluation import evaluate_semantics
from langfield.language.queries import CANONICAL_NEGATIVES, relevancy
from langfield.language.scene import LanguageScene
from langfield.language.objects import ObjectMapConfig
from langfield.language.spatial import objects_from_boxes, score_spatial, spatial_questions
from langfield.language.teachers import load_teacher
from langfield.language.distillation import LanguageDistillation, LanguageFieldConfig
from langfield.language.targets import teacher_features, view_image_uint8, view_masks
from langfield.language.vocabulary import DISTRACTOR_QUERIES, NUM_PARAPHRASES, paraphrase_set
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


#: Variants: OV-NeRF's RSR and CSE (Liao et al. 2024; ``rsr_mode``/``cse_mode`` "ovnerf") under the
#: paper's names, and langfield's own label-free mechanisms ("mask-pool" region means, "render-refresh"
#: of disagreeing regions) under theirs. A variant with both a region and a refresh stage is also
#: scored after its first phase (region stage only): PHASE0_NAMES.
VARIANTS = {
    "field": dict(use_rsr=False, rsr_mode="off", use_cse=False, cse_mode="off"),
    "field+rsr": dict(use_rsr=True, rsr_mode="ovnerf", use_cse=False, cse_mode="off"),
    "field+cse": dict(use_rsr=False, rsr_mode="off", use_cse=True, cse_mode="ovnerf"),
    "field+rsr+cse": dict(use_rsr=True, rsr_mode="ovnerf", use_cse=True, cse_mode="ovnerf"),
    "field+mask-pool": dict(use_rsr=True, rsr_mode="mask-pool", use_cse=False, cse_mode="off"),
    "field+render-refresh": dict(use_rsr=False, rsr_mode="off", use_cse=True, cse_mode="render-refresh"),
    "field+mask-pool+render-refresh": dict(use_rsr=True, rsr_mode="mask-pool", use_cse=True, cse_mode="render-refresh"),
}
PHASE0_NAMES = {"field+rsr+cse": "field+rsr", "field+mask-pool+render-refresh": "field+mask-pool"}
BASIC_VARIANTS = ("field", "field+rsr+cse", "field+mask-pool+render-refresh")
FULL_VARIANTS = BASIC_VARIANTS + ("field+cse", "field+render-refresh")
PAPER_VARIANTS = ("field", "field+rsr+cse", "field+cse")  # field+rsr is field+rsr+cse's first phase
ABLATION_SETS = {"basic": BASIC_VARIANTS, "paper": PAPER_VARIANTS, "full": FULL_VARIANTS}
MEAN_KEYS = ("miou", "macc", "pixel_acc", "boundary_f", "loc_acc", "loc_present_acc", "loc_reject_acc",
             "loc_balanced_acc", "miou_open_vocab")  # fmt: skip


def _select_variants(ablations: str, variants: Optional[str]) -> tuple:
    """The variants to fit: ``--variants a,b`` exactly (in that order, duplicates dropped), else the
    ``--ablations`` set. Unknown or no names: ``SystemExit`` naming ``--variants``."""
    if variants is None:
        return ABLATION_SETS[ablations]
    names = tuple(dict.fromkeys(v.strip() for v in variants.split(",") if v.strip()))
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        raise SystemExit(f"--variants: {'unknown ' + ', '.join(unknown) if unknown else 'no variant given'}; "
                         f"known: {', '.join(VARIANTS)}")  # fmt: skip
    return names


def _parse_seeds(text: str):
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise SystemExit(f"--seeds: expected comma-separated integers such as 0,1,2, got {text!r}")
    return seeds


#: The reconstruction budget of the procedural default (100 views at 64x64), scaled with the
#: training pixels of other data so a larger scene is not judged on an unfinished reconstruction.
RECON_SECONDS = 150.0
RECON_PIXELS = 100 * 64 * 64
#: Test PSNR below which the benchmark warns that the reconstruction limits the language fields.
POOR_RECON_PSNR = 20.0


def default_recon_seconds(train_split) -> float:
    """``RECON_SECONDS`` per ``RECON_PIXELS`` training pixels of ``train_split``, at least ``RECON_SECONDS``."""
    cams = train_split.cameras
    pixels = int((torch.as_tensor(cams.widths) * torch.as_tensor(cams.heights)).sum())
    return RECON_SECONDS * max(1.0, pixels / RECON_PIXELS)


class _Scorer:
    """Scores features on the evaluation split: label queries (mIoU, boundary F, localization with
    distractors) and the open-vocabulary paraphrase sets (``miou_open_vocab``, their mean mIoU)."""

    def __init__(self, split, label_emb, neg_emb, distractor_emb, open_sets) -> None:
        self.split, self.label_emb, self.neg_emb = split, label_emb, neg_emb
        self.distractor_emb, self.open_sets = distractor_emb, open_sets

    def __call__(self, features_of_view) -> dict:
        cache = {}

        def cached(i: int) -> torch.Tensor:
            if i not in cache:
                cache[i] = features_of_view(i).float().cpu()
            return cache[i]

        out = evaluate_semantics(cached, self.split, self.label_emb, self.neg_emb, distractor_embeddings=self.distractor_emb)
        open_miou = [evaluate_semantics(cached, self.split, e, self.neg_emb)["miou"] for e in self.open_sets]
        out["miou_open_vocab"] = sum(open_miou) / len(open_miou)
        out["miou_open_vocab_sets"] = open_miou
        return out


def teacher_label_recall(features: torch.Tensor, semantics, label_emb: torch.Tensor, labels) -> dict:
    """``{label: recall or None}`` of the teacher on the training views: the share of each label's
    pixels whose teacher feature is closest (cosine) to that label's text among all label texts.
    What bounds a fitted field: a label the teacher gets wrong in most of its pixels cannot be recovered.

    Args:
        features: ``[V, H, W, E]`` teacher features (any float dtype).
        semantics: ``V`` ground-truth ``[H, W]`` label-id maps (a ``[V, H, W]`` tensor or a list).
        label_emb: ``[L, E]`` label text embeddings, row ``l`` for label id ``l``.
        labels: the ``L`` label names.
    """
    emb = label_emb.float()
    cm = torch.zeros(len(labels), len(labels), dtype=torch.long)
    for v in range(features.shape[0]):
        pred = (features[v].float() @ emb.T).argmax(-1).reshape(-1)
        gt = torch.as_tensor(semantics[v]).reshape(-1).long()
        valid = (gt >= 0) & (gt < len(labels))  # void ids are skipped
        cm += confusion_matrix(pred[valid], gt[valid], len(labels))
    return dict(zip(labels, SemanticScores.from_confusion(cm).per_class_acc))  # recall per label, None if absent


def _kdraw_features(teacher, split, bg, k: int, split_name: str):
    """``i -> [H, W, E]``: the normalised mean of ``k`` independent teacher draws of view ``i`` (no geometry)."""

    def fn(i: int) -> torch.Tensor:
        image = view_image_uint8(split, i, bg)
        draws = [teacher.dense_features(image, view_key=f"{split_name}/{i}", semantics=split.semantics[i],
                                        camera=split.cameras.c2w[i], draw=d) for d in range(k)]  # fmt: skip
        return torch.nn.functional.normalize(torch.stack(draws).mean(0), dim=-1)

    return fn


def _aggregate(representation: str, variant: str, per_seed) -> dict:
    """One results row: the mean over seeds of every score (``*_std``: sample std), per-seed values."""
    row = {"representation": representation, "variant": variant, "num_seeds": len(per_seed)}
    for key in MEAN_KEYS:
        values = [float(r[key]) for _, r in per_seed if key in r]
        if values:
            row[key] = statistics.fmean(values)
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    row["per_class_iou_first_seed"] = per_seed[0][1].get("per_class_iou")  # one seed's, not a mean over seeds
    row["per_seed"] = [{"seed": s, **{k: r[k] for k in MEAN_KEYS if k in r}} for s, r in per_seed]
    return row


def _spatial_summary(spatial: dict) -> dict:
    """``spatial_accuracy`` (mean over seeds) and ``spatial_accuracy_std`` (sample std) per
    representation from ``{rep: [one spatial score dict per seed]}``; ``None`` when empty."""
    acc = {rep: [x["accuracy"] for x in v] for rep, v in spatial.items()}
    rel = {rep: [x["relevancy_accuracy"] for x in v if "relevancy_accuracy" in x] for rep, v in spatial.items()}
    return {"spatial_accuracy": {rep: statistics.fmean(a) for rep, a in acc.items()} or None,
            "spatial_accuracy_std": {rep: statistics.stdev(a) if len(a) > 1 else 0.0 for rep, a in acc.items()} or None,
            "spatial_accuracy_relevancy": {rep: statistics.fmean(a) for rep, a in rel.items() if a} or None,
            "spatial_accuracy_relevancy_std": {rep: statistics.stdev(a) if len(a) > 1 else 0.0 for rep, a in rel.items() if a} or None}  # fmt: skip


#: Top-level fields that must agree between the runs ``--merge`` combines.
MERGE_SAME_KEYS = ("benchmark", "teacher", "data", "labels", "split", "resolution", "train_views", "eval_views",
                   "recon_seconds", "language_steps", "variants", "persistent_layout", "gaussian_latent_dim")  # fmt: skip


def _parse_latent_dim(text: str):
    """``--gaussian-latent-dim``: ``"auto"`` or a width >= 1 (else a clear exit)."""
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        width = int(text)
    except ValueError:
        raise SystemExit(f"--gaussian-latent-dim must be 'auto' or an integer >= 1, got {text!r}") from None
    if width < 1:
        raise SystemExit(f"--gaussian-latent-dim must be >= 1, got {width}")
    return width


def merge_runs(runs: list) -> dict:
    """One benchmark JSON from runs of the same setting over disjoint seeds (e.g. one process per
    seed, run side by side): rows re-aggregated over every seed (:func:`_aggregate`), spatial
    accuracy averaged over seeds, query timings and reconstruction of the first run (they were
    measured while the other runs shared the machine: ``timings_contended`` says so).

    Raises:
        SystemExit: fewer than two runs, a seed in two runs, or a setting that differs.
    """
    if len(runs) < 2:
        raise SystemExit("--merge needs at least two result files")
    first = runs[0]
    for key in MERGE_SAME_KEYS:
        for r in runs[1:]:
            if r.get(key) != first.get(key):
                raise SystemExit(f"--merge: the runs differ in '{key}' ({first.get(key)!r} vs {r.get(key)!r})")
    seeds = [s for r in runs for s in r["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"--merge: a seed appears in two runs ({seeds})")
    rows: dict = {}
    for r in runs:
        for row in r["results"]:
            key = (row["representation"], row["variant"])
            rows.setdefault(key, {"extra": {"draws": row["draws"]} if "draws" in row else {}, "per_seed": []})
            for ps in row["per_seed"]:
                scores = {k: v for k, v in ps.items() if k != "seed"}
                if not rows[key]["per_seed"]:
                    scores["per_class_iou"] = row.get("per_class_iou_first_seed")
                rows[key]["per_seed"].append((ps["seed"], scores))
    results = [{**_aggregate(rep, variant, v["per_seed"]), **v["extra"]} for (rep, variant), v in rows.items()]
    spatial: dict = {}
    for r in runs:
        if isinstance(r.get("spatial"), dict):  # a string when the data had no known objects
            for rep, entries in r["spatial"].items():
                spatial.setdefault(rep, []).extend(entries)
    out = dict(first)
    out.update({
        "seeds": sorted(seeds), "results": results, "merged_from": len(runs),
        "teacher_train_recall": {k: v for r in runs for k, v in (r.get("teacher_train_recall") or {}).items()},
        "gaussian_latent_widths": _merge_widths(runs),
        "spatial": spatial or first.get("spatial"),
        **_spatial_summary(spatial),
        "timings_s": {f"run{i}/{k}": v for i, r in enumerate(runs) for k, v in r.get("timings_s", {}).items()},
        "timings_contended": True,
    })  # fmt: skip
    return out


def _merge_widths(runs: list):
    """``{variant: {seed: {"width", "blend_shares"}}}`` of every run's Gaussian fields (``None`` when
    none recorded one)."""
    out: dict = {}
    for r in runs:
        for variant, per_seed in (r.get("gaussian_latent_widths") or {}).items():
            out.setdefault(variant, {}).update(per_seed)
    return out or None


def _query_ms_first_and_cached(scene: LanguageScene, cameras: Cameras, size: int, repeats: int) -> dict:
    """Median ms of a first relevancy query on a view (render + features + relevancy) and of a
    second query with another text on the same view (the render is cached: relevancy only)."""
    first, cached = [], []
    texts = list(scene.dataset.labels[1:3]) if scene.dataset.labels and len(scene.dataset.labels) > 2 else ["object a", "object b"]
    for r in range(repeats + 1):
        cam = _scaled_camera(cameras, r % len(cameras), size)
        scene.clear_render_cache()
        scene.embed_texts([*texts, *CANONICAL_NEGATIVES])  # text embeddings are cached per string either way
        t0 = time.perf_counter()
        scene.relevancy(texts[0], cam, 0)
        t1 = time.perf_counter()
        scene.relevancy(texts[1], cam, 0)
        t2 = time.perf_counter()
        if r > 0:  # the first round warms up
            first.append((t1 - t0) * 1000.0)
            cached.append((t2 - t1) * 1000.0)
    return {"first": statistics.median(first), "cached": statistics.median(cached)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="procedural", help="labelled scene folder, or 'procedural' (default)")
    p.add_argument("--teacher", default="simulated",
                   help="'simulated' (per-view corruptions), 'simulated-persistent' (mistakes that persist across views, "
                        "modality gap) or a CLIP model id / directory")  # fmt: skip
    p.add_argument("--strength", type=float, default=None, help="simulated teacher strength (default: its config's, 1.0)")
    p.add_argument("--persistent-layout", default=None, choices=("arc", "sectors"),
                   help="simulated-persistent teacher: the directions an object is mistaken from, one arc per object "
                        "(default) or independent sectors (the first version)")  # fmt: skip
    p.add_argument("--representations", default="ngp,gaussians")
    p.add_argument("--size", type=int, default=64, help="procedural image size")
    p.add_argument("--views", type=int, default=100, help="procedural training views")
    p.add_argument("--val-views", type=int, default=8, help="procedural validation views (choose settings with --split val)")
    p.add_argument("--split", default="test", choices=("test", "val"), help="the views scored: val for choosing settings, test for the table")
    p.add_argument("--downscale", type=float, default=1.0)
    p.add_argument("--recon-seconds", type=float, default=None,
                   help=f"reconstruction budget per representation (default: {RECON_SECONDS:.0f} s per "
                        f"{RECON_PIXELS:,} training pixels -- the procedural default's 100 views at 64x64 -- and never less)")  # fmt: skip
    p.add_argument("--steps", type=int, default=LanguageFieldConfig.steps, help="language-field steps of the first fit")
    p.add_argument("--cse-rounds", type=int, default=None)
    p.add_argument("--ablations", choices=tuple(ABLATION_SETS), default="basic",
                   help="'basic': field, field+rsr(+cse) (OV-NeRF), field+mask-pool(+render-refresh) (langfield's); "
                        "'paper': field and OV-NeRF's field+rsr, field+cse, field+rsr+cse only; "
                        "'full': every variant")  # fmt: skip
    p.add_argument("--variants", default=None,
                   help=f"comma-separated variants to fit (overrides --ablations): {', '.join(VARIANTS)}")
    p.add_argument("--masks", default="auto", choices=("auto", "sam", "superpixels"))
    p.add_argument("--gaussian-latent-dim", default="auto",
                   help="width d of the per-Gaussian codes (LanguageFieldConfig.gaussian_latent_dim; LangSplat: 3), or "
                        "'auto' (default): the blend test of langfield.language.latent_width picks it per seed and variant")
    p.add_argument("--kdraw", type=int, default=8, help="teacher draws averaged per view by the teacher-kdraw baseline (simulated teachers)")
    p.add_argument("--query-size", type=int, default=200)
    p.add_argument("--work-dir", default="outputs/bench_semantics")
    p.add_argument("--reuse-runs", action="store_true", help="load WORK_DIR/{ngp,gaussians} if already trained")
    p.add_argument("--seeds", default="0,1,2",
                   help="comma-separated seeds: each seeds the teacher's draws (per-view and persistent) and the language "
                        "field; the reconstruction is trained once, with the first seed")  # fmt: skip
    p.add_argument("--out", required=True)
    p.add_argument("--merge", nargs="+", default=None, metavar="RUN_JSON",
                   help="combine result files of the same setting over disjoint seeds into --out (nothing is trained)")
    args = p.parse_args(argv)
    if args.merge is not None:
        runs = []
        for path in args.merge:
            try:
                runs.append(json.loads(Path(path).read_text()))
            except (OSError, ValueError) as e:
                print(f"error: --merge: cannot read {path}: {e}", file=sys.stderr)
                return 2
        atomic_write_json(merge_runs(runs), args.out)
        return 0
    seeds = _parse_seeds(args.seeds)
    if args.kdraw < 1:
        raise SystemExit(f"--kdraw must be >= 1, got {args.kdraw}")
    args.gaussian_latent_dim = _parse_latent_dim(args.gaussian_latent_dim)

    torch.manual_seed(seeds[0])
    if args.data == "procedural":
        data = DataConfig(procedural_size=args.size, procedural_views=args.views, procedural_val_views=args.val_views)
    else:
        data = DataConfig(path=args.data, downscale=args.downscale)
    dataset = load_data(data)
    if dataset.labels is None or dataset.split("test").semantics is None:
        print(f"error: {args.data} is not a labelled scene (transforms.json needs 'labels' and frames 'semantic_path')", file=sys.stderr)
        return 2
    if args.split not in dataset.splits:
        print(f"error: {args.data} has no '{args.split}' split (procedural: --val-views N)", file=sys.stderr)
        return 2
    if args.recon_seconds is None:
        args.recon_seconds = default_recon_seconds(dataset.split("train"))
    teacher_spec = args.teacher
    if args.persistent_layout is not None:
        if args.teacher != "simulated-persistent":
            print("error: --persistent-layout needs --teacher simulated-persistent", file=sys.stderr)
            return 2
        teacher_spec = {"kind": args.teacher, "errors": {"layout": args.persistent_layout}}
    teachers = {s: load_teacher(teacher_spec, dataset.labels, strength=args.strength, seed=s) for s in seeds}
    teacher = teachers[seeds[0]]
    labels = list(dataset.labels)
    label_emb = teacher.embed_texts(labels)
    neg_emb = teacher.embed_texts(list(CANONICAL_NEGATIVES))
    distractor_emb = teacher.embed_texts(list(DISTRACTOR_QUERIES))
    open_sets = [teacher.embed_texts(paraphrase_set(labels, k)) for k in range(NUM_PARAPHRASES)]
    ev = dataset.split(args.split)
    score = _Scorer(ev, label_emb, neg_emb, distractor_emb, open_sets)
    bg = dataset.eval_background()
    train_split = dataset.split("train")
    base = LanguageFieldConfig(steps=args.steps, gaussian_latent_dim=None if args.gaussian_latent_dim == "auto" else args.gaussian_latent_dim)
    base = dataclasses.replace(base, masks=dataclasses.replace(base.masks, method=args.masks))
    if args.cse_rounds is not None:
        base = dataclasses.replace(base, cse=dataclasses.replace(base.cse, rounds=args.cse_rounds))
    variants = _select_variants(args.ablations, args.variants)

    # Reconstructions: trained once (first seed), shared by every seed's language fields.
    reps = [r.strip() for r in args.representations.split(",") if r.strip()]
    methods, recon = {}, {}
    for rep in reps:
        run_dir = os.path.join(args.work_dir, rep)
        if args.reuse_runs and os.path.isfile(os.path.join(run_dir, "checkpoints", "latest.ckpt")):
            run = load_run(run_dir)  # an earlier reconstruction of the same scene
            ev_json = Path(run_dir, "eval_test.json")
            recon[rep] = {k: json.loads(ev_json.read_text()).get(k) for k in ("psnr", "ssim")} if ev_json.is_file() else {}
            recon[rep]["reused"] = run_dir
        else:
            tr_cfg = TrainerConfig(
                max_steps=10**9, max_seconds=args.recon_seconds, output_dir=run_dir, eval_every=0,
                checkpoint_every=10**9, seed=seeds[0],
            )  # fmt: skip
            run = train(data, rep, tr_cfg)  # a DataConfig, so the run reloads with load_run
            recon[rep] = {k: run.trainer.evaluate("test").get(k) for k in ("psnr", "ssim")}
            recon[rep]["steps"] = run.trainer.step
        psnr = recon[rep].get("psnr")
        if psnr is not None and psnr < POOR_RECON_PSNR:
            print(f"warning: the {rep} reconstruction reaches {psnr:.1f} dB on the test views (< {POOR_RECON_PSNR:.0f}): "
                  f"its language fields inherit that geometry; raise --recon-seconds (was {args.recon_seconds:.0f})",
                  file=sys.stderr)  # fmt: skip
        methods[rep] = run.method.eval()

    t0 = time.perf_counter()
    masks = view_masks(train_split, bg, base.masks)
    per_seed, spatial, timings, query_ms = {}, {}, {"masks": time.perf_counter() - t0}, {}
    query_first, query_cached, recall, widths = {}, {}, {}, {}
    for s in seeds:
        tch = teachers[s]
        t0 = time.perf_counter()
        per_seed.setdefault("teacher", []).append((s, score(
            lambda i, tch=tch: tch.dense_features(view_image_uint8(ev, i, bg), view_key=f"{args.split}/{i}",
                                                  semantics=ev.semantics[i], camera=ev.cameras.c2w[i]))))  # fmt: skip
        if tch.simulated:
            per_seed.setdefault("teacher-kdraw", []).append((s, score(_kdraw_features(tch, ev, bg, args.kdraw, args.split))))
        cache = (teacher_features(tch, train_split, bg), masks)
        recall[str(s)] = teacher_label_recall(cache[0], train_split.semantics, label_emb, labels)
        timings[f"teacher/seed{s}"] = time.perf_counter() - t0
        for rep in reps:
            for name in variants:
                cfg = dataclasses.replace(base, **VARIANTS[name], seed=s)
                t1 = time.perf_counter()
                lt = LanguageDistillation(methods[rep], dataset, tch, cfg, output_dir=None, teacher_cache=cache)
                feats = _field_features(lt, ev.cameras)

                def on_phase(trainer, phase, feats=feats, name=name, rep=rep):
                    if name in PHASE0_NAMES and PHASE0_NAMES[name] not in variants and phase == 0:
                        per_seed.setdefault((rep, PHASE0_NAMES[name]), []).append((s, score(feats)))

                lt.run(on_phase_end=on_phase)
                if rep == "gaussians":
                    widths.setdefault(name, {})[str(s)] = {"width": lt.field.latent_dim,
                                                           "blend_shares": lt.history[0].get("blend_shares")}
                scores = score(feats)
                per_seed.setdefault((rep, name), []).append((s, scores))
                timings[f"{rep}/{name}/seed{s}"] = time.perf_counter() - t1
                print(json.dumps({"seed": s, "representation": rep, "variant": name,
                                  **{k: scores.get(k) for k in ("miou", "boundary_f", "loc_balanced_acc", "miou_open_vocab")}}),
                      flush=True)  # fmt: skip
            if dataset.object_boxes:
                t1 = time.perf_counter()
                sc = LanguageScene(methods[rep], dataset, lt.field, tch, top_k=lt.config.top_k)
                spatial.setdefault(rep, []).append(_spatial(sc, ev, name, args.split))
                timings[f"{rep}/spatial/seed{s}"] = time.perf_counter() - t1
            if rep not in query_ms:
                query_ms[rep] = _query_ms(lt, ev.cameras, torch.cat([label_emb[1:2], neg_emb]).to(lt.device), args.query_size, 5)
                q = _query_ms_first_and_cached(LanguageScene(methods[rep], dataset, lt.field, tch, top_k=lt.config.top_k),
                                               ev.cameras, args.query_size, 5)  # fmt: skip
                query_first[rep], query_cached[rep] = q["first"], q["cached"]
        del cache

    results = []
    for rep in reps:
        results.append(_aggregate(rep, "teacher", per_seed["teacher"]))
        if "teacher-kdraw" in per_seed:
            results.append({**_aggregate(rep, "teacher-kdraw", per_seed["teacher-kdraw"]), "draws": args.kdraw})
        for key, rows in per_seed.items():
            if isinstance(key, tuple) and key[0] == rep:
                results.append(_aggregate(rep, key[1], rows))
    out = {
        "benchmark": "semantics",
        "teacher": teacher.name,
        "simulated_teacher": bool(teacher.simulated),
        "teacher_spec": teacher.spec(),
        "persistent_layout": getattr(getattr(teacher, "errors", None), "layout", None),
        "data": args.data,
        "labels": labels,
        "split": args.split,
        "seeds": seeds,
        "resolution": [ev.width, ev.height],
        "train_views": len(train_split),
        "eval_views": len(ev),
        "recon_seconds": args.recon_seconds,
        "recon": recon,
        "language_steps": args.steps,
        "gaussian_latent_dim": args.gaussian_latent_dim,
        "gaussian_latent_widths": widths or None,
        "variants": {name: VARIANTS[name] for name in variants},
        "variant_names": "field+rsr / field+cse: OV-NeRF's RSR and CSE (following the authors' public code); "
                         "field+mask-pool / field+render-refresh: langfield's own label-free mechanisms",
        "open_vocab_queries": {k: paraphrase_set(labels, k) for k in range(NUM_PARAPHRASES)},
        "distractor_queries": list(DISTRACTOR_QUERIES),
        "results": results,
        "teacher_train_recall": recall,
        **_spatial_summary(spatial),
        "spatial": spatial or "not scored: the data has no true object boxes (transforms json field 'objects')",
        "query_ms": query_ms,
        "query_ms_first": query_first,
        "query_ms_cached": query_cached,
        "query_resolution": args.query_size,
        "timings_s": timings,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
    }  # fmt: skip
    atomic_write_json(out, args.out)
    keys = ("representation", "variant", "miou", "miou_std", "boundary_f", "loc_balanced_acc", "miou_open_vocab")
    print(json.dumps({"results": [{k: r.get(k) for k in keys} for r in results], "spatial_accuracy": out["spatial_accuracy"],
                      "spatial_accuracy_relevancy": out.get("spatial_accuracy_relevancy"),
                      "query_ms": query_ms}, indent=1))  # fmt: skip
    return 0


def _spatial(scene: LanguageScene, ev, variant: str, split: str = "test", max_views: int = 12) -> dict:
    """Spatial-question accuracy of ``scene`` on questions generated from the dataset's true object
    boxes (``object_boxes``: the procedural scene's, or a transforms json's ``objects``) and the cameras of ``ev`` (split ``split``; :func:`langfield.language.spatial.spatial_questions`).

    ``accuracy``: names placed as :meth:`LanguageScene.relation` does by default (objects grouped
    from ``max_views`` training views, named with the dataset's labels, exclusive assignment).
    ``relevancy_accuracy``: the same questions with names placed by their most relevant pixels
    (``locate_by="relevancy"``, relevancy >= 0.5, else "not found"), the earlier method, as a baseline.
    ``objects``: the object map (names, points, boxes, mean label probabilities)."""
    T = scene.dataset.world_transform.double()
    up = torch.nn.functional.normalize(T[:3, :3] @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), dim=0)  # boxes' frame: +z up
    questions = spatial_questions(objects_from_boxes(scene.dataset.object_boxes, T), ev.cameras, up)
    scores = score_spatial(questions, lambda q, view: scene.relation(q, split, view, max_views=max_views))
    by_relevancy = score_spatial(questions, lambda q, view: scene.relation(q, split, view, max_views=max_views, locate_by="relevancy"))
    omap = scene.objects(config=ObjectMapConfig(max_views=max_views))
    return {**scores, "variant": variant, "split": split, "answer_up": "mean training-camera up", "localization_views": max_views,
            "locate_by": "objects", "relevancy_accuracy": by_relevancy["accuracy"], "relevancy_not_found": by_relevancy["not_found"],
            "relevancy_by_kind": by_relevancy["by_kind"], "objects": [o.as_dict() for o in omap.objects]}  # fmt: skip



if __name__ == "__main__":
    raise SystemExit(main())
