"""The language entry points over run directories: distil a field, load it for queries, answer queries."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch

from langfield._checks import InputError, check_choice, check_finite_number, check_int_range, check_output_dir
from langfield.io.atomic import atomic_write_json
from langfield.io.images import write_image
from langfield.language.distillation import (
    FIELD_FILE,
    LANGUAGE_DIR,
    LanguageDistillation,
    LanguageFieldConfig,
    load_language_field,
    read_language_field,
)
from langfield.language.objects import draw_object_map
from langfield.language.queries import check_label_list, write_relevancy_image, write_segmentation
from langfield.language.scene import LOCATE_BY, LanguageFieldMissingError, LanguageScene, query_stem
from langfield.language.spatial import parse_question
from langfield.language.teachers.base import check_text_queries
from langfield.language.teachers import load_teacher
from langfield.pretrained.errors import PretrainedUnavailableError
from langfield.runs.loading import load_run, resolve_device
from langfield.runs.spec import check_run_dir

__all__ = ["load_language_scene", "run_queries", "train_language"]

PathLike = Union[str, Path]
#: Dense-feature methods of a CLIP teacher (``--dense``).
DENSE_METHODS = ("pyramid", "regions", "both")


def train_language(
    run_dir: PathLike,
    teacher: str = "simulated",
    config: LanguageFieldConfig = LanguageFieldConfig(),
    *,
    dense: str = "pyramid",
    strength: Optional[float] = None,
    cache_dir: Optional[PathLike] = None,
    device: Optional[str] = None,
    progress: bool = True,
) -> Dict[str, Any]:
    """Distil ``teacher`` into ``run_dir``'s language field (``langfield language``); writes ``run_dir/language/``.

    Args:
        run_dir: a trained ``ngp`` or ``gaussians`` run.
        teacher: ``"simulated"`` (labelled scenes) or a CLIP-family hub id / local directory.
        config: how the field is distilled (RSR, CSE, steps, ...).
        dense, strength, cache_dir: CLIP dense-feature method; simulated-teacher strength; CLIP
            embedding cache (default ``run_dir/language/cache``).

    Returns:
        A summary with the field path, the variant and the per-phase losses (also ``summary.json``).
    """
    if device is not None:
        resolve_device(device, "device (--device)")
    if not isinstance(teacher, str) or not teacher.strip():
        raise InputError(f"teacher (--teacher): give 'simulated' or a CLIP model id / folder, got {teacher!r}")
    check_choice(dense, "dense (--dense)", DENSE_METHODS)
    if strength is not None:
        check_finite_number(strength, "strength (--strength)", lo=0)
    if not isinstance(config, LanguageFieldConfig):
        raise InputError(f"config: expected a LanguageFieldConfig, got {type(config).__name__}")
    run_dir = check_run_dir(run_dir)
    out = run_dir / LANGUAGE_DIR
    check_output_dir(out, "language output folder")
    if cache_dir is not None:
        check_output_dir(cache_dir, "cache_dir (--cache-dir)")
    run = load_run(run_dir, device)
    cache = str(cache_dir) if cache_dir is not None else str(out / "cache")
    t = load_teacher(teacher, run.dataset.labels, device=device, cache_dir=cache, method=dense, strength=strength)
    job = LanguageDistillation(run.method, run.dataset, t, config, output_dir=out, progress=progress)
    summary = job.run()
    summary.update({"teacher": t.name, "simulated_teacher": bool(t.simulated), "path": str(out / FIELD_FILE)})
    atomic_write_json(summary, out / "summary.json")
    return summary


def load_language_scene(
    run_dir: PathLike, device: Optional[str] = None, language_dir: Optional[PathLike] = None
) -> LanguageScene:
    """``run_dir`` and its language field (``run_dir/language/field.pt`` by default) as a :class:`LanguageScene`."""
    if device is not None:
        resolve_device(device, "device (--device)")
    run_dir = check_run_dir(run_dir)
    path = Path(language_dir or run_dir / LANGUAGE_DIR) / FIELD_FILE
    if path.is_dir():
        raise InputError(f"language field {path}: is a folder, expected the file written by 'langfield language'")
    if not path.is_file():
        raise LanguageFieldMissingError(
            f"{run_dir} has no language field ({path} not found): the scene was trained without one. "
            f"Train it with `langfield language {run_dir}` (add `--teacher simulated` on a labelled scene "
            "without CLIP weights)"
        )
    state = read_language_field(path)  # a corrupt field.pt is refused before the run is loaded
    run = load_run(run_dir, device)
    field, cfg, teacher_spec = load_language_field(path, run.method, state=state)
    try:
        teacher = load_teacher(teacher_spec, labels=run.dataset.labels)
    except PretrainedUnavailableError:
        raise
    except (ValueError, TypeError, KeyError) as err:
        raise InputError(f"language field {path}: teacher: {err}") from None
    return LanguageScene(run.method, run.dataset, field, teacher, top_k=cfg.top_k)


def run_queries(
    run_dir: PathLike, *, text: Optional[str] = None, labels: Sequence[str] = (),
    unknown_threshold: Optional[float] = None, split: str = "test", view: int = 0, localize: bool = False,
    extract: bool = False, threshold: float = 0.55, out_dir: Optional[PathLike] = None,
    device: Optional[str] = None, min_relevancy: float = 0.5, ask: Optional[str] = None, locate_by: str = "objects",
    objects: bool = False,
) -> Dict[str, object]:  # fmt: skip
    """``langfield query``: writes relevancy / segmentation images, localization JSON and extractions
    under ``out_dir`` (default ``run_dir/queries``); returns what was written and found.

    Every option is checked before the run is loaded. ``localize`` runs first: a text that is not
    in the scene (relevancy below ``min_relevancy`` everywhere) raises
    :class:`~langfield.language.queries.QueryNotFoundError` before any file is written.

    ``ask`` is a spatial question (grammar: :mod:`langfield.language.spatial`), answered from
    camera ``view`` of ``split`` by :meth:`LanguageScene.relation` (names placed as ``locate_by``
    says: ``"objects"`` or ``"relevancy"``); the answer, its confidence and
    evidence go to ``result["answer"]`` and ``out_dir/<question stem>_answer.json``. It is parsed
    before the run is loaded and answered before any file is written (an object that is not
    found raises ``QueryNotFoundError``).

    ``objects`` writes the scene's object map (:meth:`LanguageScene.objects`: objects grouped from
    the geometry, named with the dataset's labels) as ``out_dir/objects.json`` (names, points and
    boxes in the cameras' normalised frame, mean label probabilities) and
    ``out_dir/objects_<split><view>.png`` (the view with every object's box and a legend)."""
    if device is not None:
        resolve_device(device, "device (--device)")
    if text is None and not labels and ask is None and not objects:
        raise InputError("nothing to ask: give a text query (--text), --labels for segmentation, a question (--ask) and/or --objects")
    question = parse_question(ask) if ask is not None else None
    check_choice(locate_by, "locate_by (--locate-by)", LOCATE_BY)
    if text is not None:
        (text,) = check_text_queries([text], "query (--text)")
    if labels:
        labels = check_label_list(labels)
    if (localize or extract) and text is None:
        raise InputError("--localize/--extract need a text query (--text)")
    if unknown_threshold is not None:
        check_finite_number(unknown_threshold, "unknown_threshold (--unknown-threshold)", lo=0, hi=1)
    check_finite_number(threshold, "threshold (--threshold)", lo=0, hi=1)
    check_finite_number(min_relevancy, "min_relevancy (--min-relevancy)", lo=0, hi=1)
    check_int_range(view, "view (--view)", lo=0)
    run_dir = check_run_dir(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "queries"
    check_output_dir(out, "out_dir (--out-dir)")
    scene = load_language_scene(run_dir, device)
    if split not in scene.dataset.splits:
        raise InputError(f"split {split!r} (--split): the dataset has {sorted(scene.dataset.splits)}")
    cams = scene.dataset.split(split).cameras
    if not 0 <= view < len(cams):
        raise InputError(f"view {view} (--view) is out of range: split {split!r} has {len(cams)} cameras")
    # Localize first: a query that is not in the scene is refused before any file is written.
    loc = scene.localize(text, min_relevancy=min_relevancy) if localize else None
    answer = scene.relation(question, split, view, min_relevancy=min_relevancy, locate_by=locate_by) if question is not None else None
    out.mkdir(parents=True, exist_ok=True)
    result: Dict[str, object] = {"teacher": scene.teacher.name, "simulated_teacher": bool(scene.teacher.simulated)}
    if text is not None:
        stem = query_stem(text)
        rel, rendered = scene.relevancy(text, cams, view)
        path = write_relevancy_image(out / f"{stem}_{split}{view}_relevancy.png", rendered.render.rgb.clamp(0, 1), rel)
        result["relevancy"] = {"image": str(path), "max": float(rel.max()), "argmax_pixel": divmod(int(rel.argmax()), rel.shape[1])}
    if labels:
        seg, _ = scene.segment(labels, cams, view, unknown_threshold)
        paths = write_segmentation(out / f"segmentation_{split}{view}", seg.labels, list(labels))
        counts = torch.bincount((seg.labels + 1).flatten(), minlength=len(labels) + 1)
        result["segmentation"] = {
            "files": {k: str(v) for k, v in paths.items()},
            "pixels": {"unknown": int(counts[0]), **{lab: int(c) for lab, c in zip(labels, counts[1:])}},
        }
    if loc is not None:
        result["localization"] = {"point": loc.point.tolist(), "aabb": loc.aabb.tolist(), "num_points": loc.num_points,
                                  "score": loc.score, "frame": "dataset world"}  # fmt: skip
        atomic_write_json(result["localization"], out / f"{query_stem(text)}_localization.json")
    if answer is not None:
        result["answer"] = {**answer.as_dict(), "split": split, "view": view}
        atomic_write_json(result["answer"], out / f"{query_stem(ask)}_answer.json")
        result["answer_file"] = str(out / f"{query_stem(ask)}_answer.json")
    if objects:
        omap = scene.objects()
        result["objects"] = {
            "frame": "normalised world (the cameras' frame)", "plane": None if omap.plane is None else omap.plane.tolist(),
            "vocabulary": omap.vocabulary, "assignment": omap.assignment, "num_points": omap.num_points,
            "objects": [o.as_dict() for o in omap.objects],
        }  # fmt: skip
        atomic_write_json(result["objects"], out / "objects.json")
        rendered = scene.render(cams, view)
        image = draw_object_map(rendered.render.rgb, omap, cams.c2w[view], cams.Ks[view])
        result["objects_image"] = str(write_image(out / f"objects_{split}{view}.png", image))
    if extract:
        result["extraction"] = {k: str(v) for k, v in scene.extract(text, out, threshold, view, split).items()}
    return result
