"""Generate images from text into a folder: an image grid, one PNG per image and a JSON record.

What ``langfield generate`` runs::

    from langfield.runs.generate import GenerateOptions, generate_to_folder
    record = generate_to_folder("~/.cache/langfield/toyworld/unet-0123456789abcdef/pipeline",
                                ["a red sphere left of a blue box on a checkered floor"], "outputs/gen",
                                GenerateOptions(steps=20, guidance=3.0, num_images=4))

The model is anything :func:`~langfield.generation.loading.load_pipeline` loads: a hub id (from
the local Hugging Face cache, or downloaded unless ``HF_HUB_OFFLINE=1``) or a diffusers folder
(Stable Diffusion 1.x/2.x, SDXL, SD3, or a toy model saved by
:func:`~langfield.runs.toyworld.train_toyworld`).

Written into the output folder (each file atomically):

* ``grid.png``: one row per prompt, ``num_images`` columns (image ``i``, counted over all prompts
  prompt-major, has the noise seed ``seed + i``);
* ``images/p<prompt>_s<seed>.png``: every image;
* ``generation.json``: the model, the prompts as given and as sampled (after rewriting), the
  :class:`~langfield.generation.sampling.GenerationRecord` (scheduler, steps, guidance, seeds,
  size, dtype, device), the files and the seconds spent.

**Scene-aware rewriting** (``rewrite=RewriteScene(...)``): each prompt is expanded by
:func:`~langfield.generation.prompts.rewrite_prompt` with what a scene holds, seen from a camera.
The scene is read from a JSON file ``{"objects": [{"name", "color", "position": [x, y, z],
"size"?}], "floor"?: "checkered", "c2w": [[...], [...], [...]]}`` (OpenCV camera-to-world, 3x4 or
4x4), from a toy-world folder (:func:`~langfield.data.toyworld.write_toyworld`; image ``view``:
its scene graph and its camera) or from a run directory with a trained language field (``langfield
language RUN``; camera ``view`` of ``split``): its objects, colours and positions are read from the
field and its renders (:func:`~langfield.runs.scene_description.describe_language_run`; the object
names are ``objects``, or the dataset's labels).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np

from langfield._checks import InputError, check_choice, check_finite_number, check_int_range, check_output_dir
from langfield.data.toyworld import read_toyworld
from langfield.generation.loading import load_pipeline
from langfield.generation.prompts import SceneDescription, SceneObject, rewrite_prompt
from langfield.generation.sampling import MAX_GUIDANCE, MAX_STEPS, SCHEDULERS, generate
from langfield.io.atomic import atomic_write_json
from langfield.io.images import image_grid, write_image
from langfield.runs.scene_description import describe_language_run
from langfield.runs.spec import RUN_FILE

__all__ = ["GenerateOptions", "RewriteScene", "check_generate_options", "generate_to_folder", "load_rewrite_scene"]

PathLike = Union[str, "os.PathLike[str]"]
RECORD_FILE = "generation.json"
GRID_FILE = "grid.png"


@dataclass(frozen=True)
class GenerateOptions:
    """Sampling options of :func:`generate_to_folder` (checked by :func:`check_generate_options`)."""

    steps: int = 30
    """Sampling steps (1-1000)."""
    guidance: float = 5.0
    """Classifier-free guidance scale (1-50; 1 = no guidance)."""
    seed: int = 0
    """Image i (counted over all prompts, prompt by prompt) starts from the noise of seed SEED + i."""
    num_images: int = 4
    """Images per prompt."""
    scheduler: Optional[Literal["ddim", "dpmpp", "flow_euler"]] = None
    """Sampler: ddim, dpmpp (DPM-Solver++) or flow_euler (rectified-flow models, e.g. SD3); default:
    the scheduler the model was saved with."""
    height: Optional[int] = None
    """Image height in pixels (default: the model's)."""
    width: Optional[int] = None
    """Image width in pixels (default: the model's)."""
    truncate: bool = False
    """Cut prompts longer than the text encoder takes instead of refusing them."""
    device: Optional[str] = None
    """'cpu' or 'cuda' (default CUDA when available, in float16)."""


def check_generate_options(options: GenerateOptions) -> GenerateOptions:
    """Refuse out-of-range options before any model is loaded (:class:`InputError` naming the option)."""
    if not isinstance(options, GenerateOptions):
        raise InputError(f"options: expected GenerateOptions, got {type(options).__name__}")
    check_int_range(options.steps, "steps", lo=1, hi=MAX_STEPS)
    check_finite_number(options.guidance, "guidance", lo=1.0, hi=MAX_GUIDANCE)
    check_int_range(options.seed, "seed", lo=0, hi=2**62)
    check_int_range(options.num_images, "num_images", lo=1, hi=4096)
    if options.scheduler is not None:
        check_choice(options.scheduler, "scheduler", SCHEDULERS)
    for key in ("height", "width"):
        if getattr(options, key) is not None:
            check_int_range(getattr(options, key), key, lo=8, hi=16384)
    return options


@dataclass(frozen=True)
class RewriteScene:
    """A scene to rewrite prompts with (see the module docstring).

    Attributes:
        source: a scene JSON file, a toy-world folder or a run directory with a language field.
        view: the toy-world image, or the run's camera (of ``split``), whose scene and camera are
            used (ignored for a JSON file).
        llm_dir: a local causal-LM directory for ``style="llm"`` rewriting; ``None``: the template.
        objects: a run's object names to describe (``None``: the dataset's labels); only for runs.
        split: the run's split ``view`` counts in.
    """

    source: PathLike
    view: int = 0
    llm_dir: Optional[PathLike] = None
    objects: Optional[Tuple[str, ...]] = None
    split: str = "test"


def _scene_from_json(path: Path) -> Tuple[SceneDescription, np.ndarray]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"rewrite scene {path}: not a readable JSON file ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("objects"), list) or "c2w" not in data:
        raise InputError(
            f"rewrite scene {path}: expected {{\"objects\": [{{\"name\", \"color\", \"position\": [x, y, z]}}, ...], "
            f"\"floor\": ... (optional), \"c2w\": 3x4 camera-to-world (OpenCV)}}"
        )
    objects = []
    for i, obj in enumerate(data["objects"]):
        if not isinstance(obj, dict) or not {"name", "color", "position"} <= set(obj):
            raise InputError(f"rewrite scene {path}: objects[{i}] needs name, color and position")
        try:
            objects.append(SceneObject(obj["name"], obj["color"], tuple(obj["position"]), obj.get("size")))
        except (InputError, TypeError, ValueError) as err:
            raise InputError(f"rewrite scene {path}: objects[{i}]: {err}") from None
    try:
        scene = SceneDescription(tuple(objects), floor=data.get("floor"))
        c2w = np.asarray(data["c2w"], dtype=np.float64)
    except (InputError, TypeError, ValueError) as err:
        raise InputError(f"rewrite scene {path}: {err}") from None
    return scene, c2w


def load_rewrite_scene(
    source: PathLike, view: int = 0, *, objects: Optional[Sequence[str]] = None, split: str = "test", device: Optional[str] = None
) -> Tuple[SceneDescription, np.ndarray]:
    """``(SceneDescription, c2w [3, 4])`` from a scene JSON file, image ``view`` of a toy-world
    folder, or camera ``view`` of ``split`` of a run with a language field (``objects``: the
    names to describe; see :func:`~langfield.runs.scene_description.describe_language_run`)."""
    path = Path(os.path.expanduser(os.fspath(source)))
    if path.is_file():
        return _scene_from_json(path)
    if not path.is_dir():
        raise InputError(f"rewrite scene {path}: not found (a scene .json file, a toy-world folder or a run directory)")
    if (path / RUN_FILE).is_file():
        return describe_language_run(path, objects, split=split, view=view, device=device)
    if objects is not None:
        raise InputError(f"rewrite objects: only a run directory's objects can be chosen; {path} is not a run (no {RUN_FILE})")
    if not (path / "meta.json").is_file():
        raise InputError(
            f"rewrite scene {path}: a folder but neither a toy world (no meta.json) nor a run directory (no {RUN_FILE})"
        )
    data = read_toyworld(path)
    view = check_int_range(view, "rewrite view", lo=0, hi=len(data) - 1)
    toy = data.scene(view)
    objects = tuple(SceneObject(o.shape, o.color, o.center, size=float(max(o.size))) for o in toy.objects)
    return SceneDescription(objects, floor=toy.floor), data.cameras.c2w[view].double().numpy()


def generate_to_folder(
    model: PathLike,
    prompts: Sequence[str],
    output: PathLike,
    options: GenerateOptions = GenerateOptions(),
    *,
    rewrite: Optional[RewriteScene] = None,
) -> Dict[str, Any]:
    """Sample ``options.num_images`` images per prompt with ``model`` and write them to ``output``.

    Returns the record written to ``generation.json``.

    Raises:
        InputError: out-of-range options, no prompt, a prompt longer than the text encoder takes,
            a folder that is not a diffusers pipeline, a bad rewrite scene, an output that is a file.
        PretrainedUnavailableError: a hub id that is not cached while offline (or downloads are
            off), or a folder that does not exist; the message says how to get the model.
    """
    check_generate_options(options)
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = [str(p) for p in prompts]
    if not prompts:
        raise InputError("prompt: give at least one prompt (--prompt 'a red sphere left of a blue box')")
    out = check_output_dir(output, "output")
    given = list(prompts)
    if rewrite is not None:
        scene, c2w = load_rewrite_scene(rewrite.source, rewrite.view, objects=rewrite.objects, split=rewrite.split, device=options.device)
        style = "template" if rewrite.llm_dir is None else "llm"
        prompts = [rewrite_prompt(p, scene, c2w, style=style, llm_dir=rewrite.llm_dir) for p in prompts]
    start = time.perf_counter()
    pipe = load_pipeline(model, device=options.device)
    loaded = time.perf_counter()
    result = generate(
        pipe, prompts, steps=options.steps, guidance=options.guidance, seed=options.seed, num_images=options.num_images,
        scheduler=options.scheduler, height=options.height, width=options.width, truncate=options.truncate,
    )  # fmt: skip
    sampled = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    images: List[str] = []
    k = options.num_images
    for i, image in enumerate(result.images):
        name = f"images/p{i // k:03d}_s{result.record.seeds[i]}.png"
        write_image(out / name, image)
        images.append(name)
    write_image(out / GRID_FILE, image_grid(result.images, columns=k))
    record = {
        "model": str(model),
        "prompts": given,
        "sampled_prompts": prompts,
        "rewrite": None if rewrite is None else {
            "source": str(rewrite.source), "view": rewrite.view, "split": rewrite.split,
            "style": "template" if rewrite.llm_dir is None else "llm",
            "objects": [{"name": o.name, "color": o.color, "position": list(o.position)} for o in scene.objects],
        },  # fmt: skip
        "generation": result.record.to_dict(),
        "grid": GRID_FILE,
        "grid_layout": f"{len(prompts)} row(s) (one per prompt) x {k} column(s) (seeds)",
        "images": images,
        "seconds": {"load": loaded - start, "sample": sampled - loaded},
    }
    atomic_write_json(record, out / RECORD_FILE)
    return record
