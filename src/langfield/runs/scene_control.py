"""3D-aware control: conditions rendered from a trained langfield scene, generation that agrees across views.

What ``langfield generate RUN --camera test:3 --control depth,edges --adapter DIR ...`` runs::

    from langfield.runs.loading import load_run
    from langfield.runs.scene_control import generate_from_scene, select_cameras
    run = load_run("outputs/run")
    cams = select_cameras(run, "test:0,1,2")
    out = generate_from_scene(run, pipe, adapters, cams, "a red sphere", kinds=("depth",), shared_noise=True)

Pieces (numbered as a reader follows them):

1. :func:`render_conditions`: per camera the render (colour, depth, accumulation) and the
   condition images ControlNets take, ``[C, H, W, 3]`` in ``[0, 1]``:

   * ``depth``: inverse depth, near bright (:func:`~langfield.generation.conditions.depth_condition`)
     over the dataset's fixed ``[near, far]``, so every view uses one scale;
   * ``normals``: camera-frame normals as a normal map (:func:`~langfield.generation.conditions.normal_condition`)
     of the rendered depth (cross product of the back-projected neighbours: :func:`normals_from_depth`),
     the same for every method (Gaussians render no normals; density-gradient normals of NeRFs are
     noisier than their depth), so the normal map always agrees with the depth condition;
   * ``segmentation``: the run's language field segmenting the dataset's labels (or ``labels``),
     label ``k`` painted with :func:`~langfield.generation.conditions.default_palette` colour
     ``k + 1``, unknown black; a run without a language field is refused (naming ``segmentation``);
   * ``edges``: Canny on the rendered colour (``channels="rgb"``) OR-ed with the depth
     discontinuities (relative depth jump > 10 % between neighbours), white on black.

   Pixels with accumulation below ``min_accumulation`` count as "no surface" (depth 0).
2. :func:`generate_from_scene`: one controlled image per view (:func:`~langfield.generation.control.generate_controlled`;
   several adapters = Multi-ControlNet, adapter ``i`` takes condition ``kinds[i]``), either from
   independent noise (view ``i`` seeded ``seed + i``) or, with ``shared_noise=True``, from one
   noise field attached to the scene (:mod:`langfield.generation.scene_noise`).
3. :func:`dataset_update`: the Iterative Dataset Update of Instruct-NeRF2NeRF (Haque et al.
   2023, "Instruct-NeRF2NeRF: Editing 3D Scenes with Instructions", Sec. 4): edit training views
   one at a time with a generator conditioned on the *current render*, replace them in the
   dataset, keep training the scene, repeat. The generator is a callable, so tests use a cheap
   deterministic editor and the benchmark a ControlNet.
4. :func:`measure_e4`: the E4 ladder (uncontrolled / controlled / shared_noise / dataset_update),
   each scored by warp-PSNR among the views (:func:`langfield.eval.warp.warp_psnr` with the
   run's rendered depth, pooled over ordered pairs: :func:`multiview_warp_psnr`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from langfield._checks import InputError, check_choice, check_finite_number, check_int_range, check_output_dir
from langfield.data.dataset import ImageSet
from langfield.eval.metrics import mse_to_psnr
from langfield.eval.warp import warp_image
from langfield.generation.conditions import canny, default_palette, depth_condition, normal_condition, segmentation_condition
from langfield.generation.control import ControlAdapter, generate_controlled, load_control_adapter
from langfield.generation.loading import load_pipeline
from langfield.generation.sampling import as_generation_pipeline, check_image_size
from langfield.generation.scene_noise import scene_latent_noise
from langfield.io.atomic import atomic_write_json
from langfield.io.images import write_image
from langfield.io.video import write_video
from langfield.language.scene import LanguageFieldMissingError
from langfield.runs.language import load_language_scene
from langfield.runs.loading import Run, load_run
from langfield.runs.render import CAMERA_PATHS, make_path
from langfield.training.trainer import Trainer, TrainerConfig
from langfield.types import Cameras

__all__ = [
    "CONTROL_KINDS",
    "E4_SETTINGS",
    "PER_VIEW",
    "DatasetUpdateConfig",
    "EditRequest",
    "SceneGenerateOptions",
    "check_scene_generate_options",
    "generate_scene_to_folder",
    "DatasetUpdateResult",
    "SceneConditions",
    "SceneGeneration",
    "check_control_kinds",
    "dataset_update",
    "generate_from_scene",
    "measure_e4",
    "multiview_warp_psnr",
    "normals_from_depth",
    "path_cameras_for",
    "render_conditions",
    "resize_cameras",
    "select_cameras",
    "write_conditions",
]

PathLike = Union[str, Path]
CONTROL_KINDS = ("depth", "normals", "segmentation", "edges")
E4_SETTINGS = ("uncontrolled", "controlled", "shared_noise", "dataset_update")
#: Relative depth jump between neighbouring pixels that counts as an edge in the ``edges`` condition.
DEPTH_EDGE_JUMP = 0.1


# --------------------------------------------------------------------------- cameras


def check_control_kinds(kinds: Union[str, Sequence[str]], where: str = "control (--control)") -> Tuple[str, ...]:
    """``kinds`` as a tuple of :data:`CONTROL_KINDS` (a comma-separated string allowed); refuses unknown or repeated kinds."""
    if isinstance(kinds, str):
        kinds = [k.strip() for k in kinds.split(",") if k.strip()]
    kinds = tuple(kinds)
    if not kinds:
        raise InputError(f"{where}: give one or more of {', '.join(CONTROL_KINDS)}")
    for k in kinds:
        if k not in CONTROL_KINDS:
            raise InputError(f"{where}: unknown control kind {k!r}; choose from {', '.join(CONTROL_KINDS)}")
    return kinds


def select_cameras(run: Run, spec: str, where: str = "camera (--camera)") -> Cameras:
    """Cameras of ``run``'s dataset named by ``spec``: ``"SPLIT"`` (all of it), ``"SPLIT:I"`` or
    ``"SPLIT:I,J,..."`` (indices into the split), e.g. ``"test:3"``."""
    m = re.fullmatch(r"\s*([A-Za-z_]\w*)\s*(?::\s*([0-9][0-9,\s]*))?\s*", str(spec))
    if m is None:
        raise InputError(f"{where}: expected SPLIT or SPLIT:I[,J...] (e.g. test:3), got {spec!r}")
    split, idx = m.group(1), m.group(2)
    if split not in run.dataset.splits:
        raise InputError(f"{where}: split {split!r} not in the dataset (it has {sorted(run.dataset.splits)})")
    cams = run.dataset.split(split).cameras
    if idx is None:
        return cams
    indices = [int(t) for t in idx.replace(" ", "").split(",") if t]
    for i in indices:
        if i >= len(cams):
            raise InputError(f"{where}: view {i} of split {split!r} is out of range (it has {len(cams)} views: 0..{len(cams) - 1})")
    return cams[indices]


def path_cameras_for(run: Run, kind: str, num_frames: int) -> Cameras:
    """Cameras along a path of :data:`~langfield.runs.render.CAMERA_PATHS` (``orbit``, ``spiral``, ``interpolate``)."""
    check_choice(kind, "path (--path)", CAMERA_PATHS)
    check_int_range(num_frames, "num_frames (--num-frames)", lo=1, hi=100_000)
    return make_path(run.dataset, kind, num_frames)


def resize_cameras(cameras: Cameras, height: int, width: int) -> Cameras:
    """The same cameras rendering ``height x width`` images (intrinsics scaled per axis)."""
    height = check_int_range(height, "height", lo=1)
    width = check_int_range(width, "width", lo=1)
    sx = width / cameras.widths.double()
    sy = height / cameras.heights.double()
    Ks = cameras.Ks.double().clone()
    Ks[:, 0, :] *= sx[:, None]
    Ks[:, 1, :] *= sy[:, None]
    return Cameras.create(cameras.c2w, Ks.float(), width, height, cameras.dist)


# --------------------------------------------------------------------------- conditions


@dataclass(frozen=True)
class SceneConditions:
    """What :func:`render_conditions` rendered for ``C`` cameras of size ``H x W``.

    Attributes:
        cameras: the cameras (OpenCV c2w).
        rgb: ``[C, H, W, 3]`` rendered colour (background included).
        depth: ``[C, H, W]`` ray distance, 0 where accumulation < the threshold.
        accumulation: ``[C, H, W]``.
        images: kind -> ``[C, H, W, 3]`` float32 condition images in ``[0, 1]``.
    """

    cameras: Cameras
    rgb: Tensor
    depth: Tensor
    accumulation: Tensor
    images: Dict[str, Tensor] = field(default_factory=dict)

    def stacked(self, kind: str, channels: int = 3) -> Tensor:
        """Condition ``kind`` as ``[C, channels, H, W]`` (1 channel: the first, grey for depth)."""
        img = self.images[kind].permute(0, 3, 1, 2)
        return img[:, :channels].contiguous()


def normals_from_depth(depth: Tensor, camera: Cameras) -> Tensor:
    """Camera-frame (OpenCV) unit normals of a ray-distance map ``[H, W]`` -> ``[H, W, 3]``.

    Back-projects every pixel, takes central differences (one-sided at the border and next to
    pixels without depth) and the cross product, oriented towards the camera; pixels without
    depth, or whose neighbours all lack it, get 0.
    """
    h, w = depth.shape
    K = camera.Ks[0].double()
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5, indexing="ij")
    dirs = torch.stack([u, v, torch.ones_like(u)], -1) @ torch.linalg.inv(K).T
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    d = depth.double()
    ok = torch.isfinite(d) & (d > 0)
    pts = dirs * torch.where(ok, d, 0.0)[..., None]

    def diff(axis: int) -> Tensor:
        fwd = torch.zeros_like(pts)
        bwd = torch.zeros_like(pts)
        okf = torch.zeros_like(ok)
        okb = torch.zeros_like(ok)
        if axis == 1:
            fwd[:, :-1], okf[:, :-1] = pts[:, 1:] - pts[:, :-1], ok[:, 1:] & ok[:, :-1]
            bwd[:, 1:], okb[:, 1:] = pts[:, 1:] - pts[:, :-1], ok[:, 1:] & ok[:, :-1]
        else:
            fwd[:-1], okf[:-1] = pts[1:] - pts[:-1], ok[1:] & ok[:-1]
            bwd[1:], okb[1:] = pts[1:] - pts[:-1], ok[1:] & ok[:-1]
        # prefer the smaller step (stays on one surface at depth edges)
        use_f = okf & (~okb | (fwd.norm(dim=-1) <= bwd.norm(dim=-1)))
        return torch.where(use_f[..., None], fwd, torch.where(okb[..., None], bwd, 0.0))

    n = torch.cross(diff(1), diff(0), dim=-1)
    n = n * torch.where((n * dirs).sum(-1, keepdim=True) > 0, -1.0, 1.0)
    length = n.norm(dim=-1, keepdim=True)
    return torch.where(ok[..., None] & (length > 1e-12), n / length.clamp_min(1e-12), 0.0).float()


def _depth_edges(depth: Tensor) -> Tensor:
    d = depth
    ok = d > 0
    edge = torch.zeros_like(ok)
    for a, b in ((d[:, 1:], d[:, :-1]), (d[1:], d[:-1])):
        oka = a > 0
        okb = b > 0
        jump = (oka != okb) | (oka & okb & ((a - b).abs() > DEPTH_EDGE_JUMP * torch.minimum(a, b).clamp_min(1e-12)))
        if a.shape[1] != d.shape[1]:
            edge[:, 1:] |= jump
        else:
            edge[1:] |= jump
    return edge


def _segmenter(run: Run, language: Any) -> Any:
    if language is not None:
        return language
    if run.directory is None:
        raise InputError("control 'segmentation': the run has no directory to read a language field from; pass language=")
    try:
        return load_language_scene(run.directory, device=str(next(run.method.parameters()).device))
    except LanguageFieldMissingError as err:
        raise InputError(f"control 'segmentation' needs a language field: {err}") from None


#: ``depth_range`` value for a depth condition scaled per view from its own range (as the toy world's
#: training conditions are), instead of one scale for every view.
PER_VIEW = "per_view"


def _check_depth_range(depth_range: Any) -> Union[None, str, Tuple[float, float]]:
    if depth_range is None or depth_range == PER_VIEW:
        return depth_range
    try:
        near, far = (float(v) for v in depth_range)
    except (TypeError, ValueError):
        raise InputError(f"depth_range: expected (near, far) numbers, got {depth_range!r}") from None
    if not (math.isfinite(near) and math.isfinite(far) and 0 < near < far):
        raise InputError(f"depth_range: need 0 < near < far (finite), got ({near}, {far})")
    return near, far


def render_conditions(
    run: Run,
    cameras: Cameras,
    kinds: Union[str, Sequence[str]] = CONTROL_KINDS,
    labels: Optional[Sequence[str]] = None,
    *,
    language: Any = None,
    min_accumulation: float = 0.5,
    depth_range: Union[None, str, Tuple[float, float]] = None,
) -> SceneConditions:
    """Render ``cameras`` with ``run``'s scene and build the condition images ``kinds`` (module docstring).

    Args:
        run: a loaded run (:func:`~langfield.runs.loading.load_run`, or one just trained).
        cameras: ``C`` cameras (OpenCV c2w) of one size.
        kinds: of :data:`CONTROL_KINDS` (or ``"depth,edges"``).
        labels: the segmentation's label names (default: the dataset's labels).
        language: for ``segmentation``, an object with ``segment(labels, cameras, index)`` returning
            ``(Segmentation, render)`` (a :class:`~langfield.language.scene.LanguageScene`); default:
            the run directory's language field.
        min_accumulation: pixels below this opacity have no surface (depth 0, black conditions).
        depth_range: ``(near, far)`` of the ``depth`` condition's inverse-depth scale (default: the
            dataset's ``near``/``far``); e.g. the range the scene's content spans at the cameras used,
            closer to what a ControlNet trained on per-image ranges saw, still one scale for every view;
            or ``"per_view"`` (:data:`PER_VIEW`): each view from its own range, exactly as a ControlNet
            trained on per-image ranges saw its conditions, at the price of a scale that changes between views.

    Raises:
        InputError: an unknown kind, cameras of several sizes, ``segmentation`` on a run without a
            language field or without labels.
    """
    kinds = check_control_kinds(kinds)
    if not isinstance(cameras, Cameras) or len(cameras) == 0:
        raise InputError(f"cameras: expected langfield Cameras (at least one), got {type(cameras).__name__}")
    if bool((cameras.heights != cameras.heights[0]).any()) or bool((cameras.widths != cameras.widths[0]).any()):
        raise InputError("cameras: all cameras must have one size")
    check_finite_number(min_accumulation, "min_accumulation", lo=0.0, hi=1.0)
    depth_range = _check_depth_range(depth_range)
    seg = None
    if "segmentation" in kinds:
        labels = list(labels) if labels is not None else run.dataset.labels
        if not labels:
            raise InputError("control 'segmentation': the dataset has no labels; pass labels (--labels)")
        seg = _segmenter(run, language)
    bg = run.dataset.eval_background()
    rgbs, depths, accs, normals, seg_ids = [], [], [], [], []
    for i in range(len(cameras)):
        out = run.method.render_camera(cameras[i], bg, output_device="cpu")
        acc = out.accumulation[..., 0].float()
        depth = torch.where(acc >= min_accumulation, out.depth[..., 0].float(), 0.0)
        rgbs.append(out.rgb.float().clamp(0, 1))
        depths.append(depth)
        accs.append(acc)
        if "normals" in kinds:
            normals.append(normals_from_depth(depth, cameras[i]))
        if seg is not None:
            result = seg.segment(labels, cameras, i)
            ids = result[0].labels if isinstance(result, tuple) else result.labels
            seg_ids.append(torch.where(ids >= 0, ids + 1, -1).cpu())
    rgb, depth, acc = torch.stack(rgbs), torch.stack(depths), torch.stack(accs)
    mask = (depth > 0).numpy()
    images: Dict[str, Tensor] = {}
    for kind in kinds:
        if kind == "depth" and depth_range == PER_VIEW:
            arr = depth_condition(depth.numpy(), mask)
        elif kind == "depth":
            near, far = depth_range if depth_range is not None else (float(run.dataset.near), float(run.dataset.far))
            arr = depth_condition(depth.numpy(), mask, near=near, far=far) if far > near > 0 else depth_condition(depth.numpy(), mask)
        elif kind == "normals":
            arr = normal_condition(torch.stack(normals).numpy(), mask)
        elif kind == "segmentation":
            ids = torch.stack(seg_ids).numpy()
            arr = segmentation_condition(ids, palette=default_palette(max(256, int(ids.max()) + 1)))
        else:
            edges = canny(rgb.numpy(), channels="rgb")[..., 0] > 0.5
            edges |= torch.stack([_depth_edges(d) for d in depth]).numpy()
            arr = np.repeat(edges[..., None].astype(np.float32), 3, axis=-1)
        images[kind] = torch.as_tensor(np.ascontiguousarray(arr), dtype=torch.float32)
    return SceneConditions(cameras, rgb, depth, acc, images)


def write_conditions(conditions: SceneConditions, out_dir: PathLike, stem: str = "view") -> Dict[str, List[Path]]:
    """Write ``out_dir/conditions/<kind>/<stem>_<i>.png`` for every kind; returns the paths per kind."""
    out = check_output_dir(out_dir, "out_dir") / "conditions"
    written: Dict[str, List[Path]] = {}
    for kind, imgs in conditions.images.items():
        written[kind] = [write_image(out / kind / f"{stem}_{i:03d}.png", imgs[i]) for i in range(imgs.shape[0])]
    return written


# --------------------------------------------------------------------------- consistency


def multiview_warp_psnr(images: Tensor, depth: Tensor, cameras: Cameras, *, depth_tolerance: float = 0.05) -> Tuple[float, float]:
    """``(warp-PSNR, mean co-visible fraction)`` among ``C >= 2`` views: every ordered pair ``(i, j)``
    warps image ``j`` into view ``i`` with the rendered ``depth [C, H, W]``; the squared errors of all
    pairs' co-visible pixels are pooled into one PSNR (``nan`` when no pair shares a pixel)."""
    c = images.shape[0]
    if c < 2:
        raise InputError(f"images: warp-PSNR needs at least 2 views, got {c}")
    sq, count, fractions = 0.0, 0, []
    for i in range(c):
        for j in range(c):
            if i == j:
                continue
            warped, mask = warp_image(depth[i], cameras[i], images[j].double(), depth[j], cameras[j], depth_tolerance=depth_tolerance)
            fractions.append(float(mask.float().mean()))
            if bool(mask.any()):
                sq += float(((images[i].double()[mask] - warped[mask]) ** 2).sum())
                count += int(mask.sum()) * images.shape[-1]
    if count == 0:
        return float("nan"), 0.0
    return float(mse_to_psnr(sq / count)), float(np.mean(fractions))


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class SceneGeneration:
    """What :func:`generate_from_scene` made: ``images [C, H, W, 3]`` in ``[0, 1]``, the conditions
    they were steered by, and a JSON-able record."""

    images: Tensor
    conditions: SceneConditions
    record: Dict[str, Any]


def _as_adapters(adapters: Any) -> List[ControlAdapter]:
    items = list(adapters) if isinstance(adapters, (list, tuple)) else [adapters]
    if not items:
        raise InputError("adapters: give at least one ControlAdapter (--adapter DIR)")
    return items


def generate_from_scene(
    run: Run,
    pipeline: Any,
    adapters: Union[ControlAdapter, Sequence[ControlAdapter]],
    cameras: Cameras,
    prompt: Any,
    *,
    kinds: Union[str, Sequence[str]] = ("depth",),
    weights: Union[float, Sequence[float]] = 1.0,
    negative: Any = None,
    steps: int = 20,
    guidance: float = 3.0,
    seed: int = 0,
    shared_noise: bool = False,
    cell_size: Optional[float] = None,
    labels: Optional[Sequence[str]] = None,
    language: Any = None,
    conditions: Optional[SceneConditions] = None,
    depth_range: Union[None, str, Tuple[float, float]] = None,
    guess_mode: bool = False,
) -> SceneGeneration:
    """One image per camera, steered by conditions rendered from ``run`` (module docstring, step 2).

    Args:
        pipeline: the base generation pipeline; ``adapters``: one per kind (Multi-ControlNet when
            several), adapter ``i`` fed condition ``kinds[i]`` (its first channel for one-channel adapters).
        cameras: ``C`` cameras of the pipeline's image size (see :func:`resize_cameras`).
        prompt: one prompt for every view (a string, or ``[1, T, D]`` embeddings).
        weights: per adapter conditioning scale (0: that adapter is off; all 0 = uncontrolled).
        seed: independent noise: view ``i`` seeded ``seed + i``; shared: the scene noise field's seed.
        shared_noise: start every view from one noise field attached to the scene
            (:func:`~langfield.generation.scene_noise.scene_latent_noise`; ``cell_size`` its lattice).
        conditions: already rendered conditions for these cameras (skips rendering).
        depth_range: the depth condition's ``(near, far)`` or ``"per_view"`` (:func:`render_conditions`).
        guess_mode: guess mode (see :func:`~langfield.generation.control.generate_controlled`):
            the control acts on the conditional half of the guidance batch only, e.g. for an empty
            prompt (ControlNets: diffusers' guess mode; XS and ControlNeXt: that branch rule alone).
    """
    kinds = check_control_kinds(kinds)
    adapters = _as_adapters(adapters)
    if len(adapters) != len(kinds):
        raise InputError(f"adapters: {len(adapters)} adapter(s) for {len(kinds)} control kind(s) {list(kinds)}; give one per kind")
    if conditions is None:
        conditions = render_conditions(run, cameras, kinds, labels, language=language, depth_range=depth_range)
    missing = [k for k in kinds if k not in conditions.images]
    if missing:
        raise InputError(f"conditions: rendered without {missing}")
    n = len(conditions.cameras)
    # SD3 ControlNets take RGB images (the pipeline VAE-encodes them); the others their own channel count
    conds = [conditions.stacked(k, 3 if a.kind == "sd3_controlnet" else a.condition_channels) for k, a in zip(kinds, adapters)]
    if isinstance(prompt, Tensor):
        prompts: Any = prompt.expand(n, *prompt.shape[1:]) if prompt.shape[0] == 1 else prompt
    else:
        prompts = [str(prompt)] * n
    latents = None
    if shared_noise:
        pipe = as_generation_pipeline(pipeline)
        factor, channels = int(pipe.vae_scale_factor), int(pipe.denoiser.config.in_channels)
        latents = scene_latent_noise(conditions.depth, conditions.cameras, channels=channels, factor=factor, seed=seed,
                                     cell_size=cell_size)  # fmt: skip
    result = generate_controlled(pipeline, prompts, conds, adapters=adapters, weights=weights, negative=negative, steps=steps,
                                 guidance=guidance, seed=seed, latents=latents, guess_mode=guess_mode)  # fmt: skip
    record = {
        "kinds": list(kinds), "num_views": n, "shared_noise": bool(shared_noise), "seed": seed,
        "generation": result.record.to_dict(), "control": result.control.to_dict(),
    }  # fmt: skip
    return SceneGeneration(result.images, conditions, record)


# --------------------------------------------------------------------------- iterative dataset update

@dataclass(frozen=True)
class EditRequest:
    """What an editor of :func:`dataset_update` gets for one view.

    Attributes:
        view: index into the training split; ``round``: the update round, from 0.
        render: ``[H, W, 3]`` the current scene's render at that camera, in ``[0, 1]``.
        original: ``[H, W, 3]`` the view's original training image, in ``[0, 1]``.
        scene: the current scene as a :class:`~langfield.runs.loading.Run` (its method is the one
            being trained), e.g. to render conditions from (:func:`render_conditions`).
        camera: the training camera (one).
    """

    view: int
    round: int
    render: Tensor
    original: Tensor
    scene: Run
    camera: Cameras


#: ``editor(request) -> edited [H, W, 3]`` float in ``[0, 1]`` (resized to the training size if it is not).
Editor = Callable[[EditRequest], Tensor]


@dataclass(frozen=True)
class DatasetUpdateConfig:
    """Options of :func:`dataset_update`.

    Attributes:
        rounds: update rounds; each edits ``edits_per_round`` views then trains ``steps_per_round`` steps.
        edits_per_round: views edited per round (``None``: every view in ``views``); IN2N edits one
            view every ``d`` steps, which is ``edits_per_round = 1`` with ``steps_per_round = d``.
        steps_per_round: training steps of the scene after each round's edits.
        views: training-split indices to edit (``None``: all), visited in order, cyclically.
        seed: the trainer's seed (offset by the round).
        device: the trainer's device (``None``: the method's).
        in_place: train ``run.method`` itself (``False``: a deep copy; the run is left as it was).
    """

    rounds: int = 3
    edits_per_round: Optional[int] = None
    steps_per_round: int = 100
    views: Optional[Tuple[int, ...]] = None
    seed: int = 0
    device: Optional[str] = None
    in_place: bool = False


@dataclass
class DatasetUpdateResult:
    """``rounds``: per round ``{"round", "edited_views", "edited_warp_psnr", "render_warp_psnr", "covisible"}``
    (warp-PSNR among the round's edited dataset images, and among the updated scene's renders at
    the edited views, both warped with the scene's rendered depth); ``method``: the trained scene;
    ``dataset``: the updated dataset."""

    rounds: List[Dict[str, Any]]
    method: Any
    dataset: Any


def _composited_train(run: Run) -> ImageSet:
    train = run.dataset.split("train")
    bg = run.dataset.eval_background()
    images = torch.stack([train.image_float(i, bg) for i in range(len(train))])
    return dataclasses.replace(train, images=(images.clamp(0, 1) * 255).round().to(torch.uint8), alphas=None)


def _render_views(method: Any, cams: Cameras, bg: Tensor, indices: Sequence[int]) -> Tuple[Tensor, Tensor]:
    rgbs, depths = [], []
    for i in indices:
        out = method.render_camera(cams[i], bg, output_device="cpu")
        acc = out.accumulation[..., 0]
        rgbs.append(out.rgb.float().clamp(0, 1))
        depths.append(torch.where(acc >= 0.5, out.depth[..., 0].float(), 0.0))
    return torch.stack(rgbs), torch.stack(depths)


def dataset_update(run: Run, editor: Editor, config: DatasetUpdateConfig = DatasetUpdateConfig()) -> DatasetUpdateResult:
    """Instruct-NeRF2NeRF's Iterative Dataset Update (Haque et al. 2023, Sec. 4) with any editor.

    Each round: for the next ``edits_per_round`` views of ``config.views``, render the current scene
    at the training camera, call ``editor(EditRequest(...))``, and replace that
    training image by the edit; then train the scene ``steps_per_round`` steps on the updated
    dataset (a fresh :class:`~langfield.training.trainer.Trainer` per round, nothing written to
    disk). The original images stay what the editor sees as ``original`` (IN2N conditions its
    editor on them too).

    Raises:
        InputError: bad options, view indices out of range, an edit of the wrong shape.
    """
    if not isinstance(config, DatasetUpdateConfig):
        raise InputError(f"config: expected DatasetUpdateConfig, got {type(config).__name__}")
    if not callable(editor):
        raise InputError("editor: expected a callable editor(EditRequest) -> [H, W, 3] image")
    check_int_range(config.rounds, "rounds", lo=1, hi=10_000)
    check_int_range(config.steps_per_round, "steps_per_round", lo=0, hi=10_000_000)
    train = _composited_train(run)
    views = list(range(len(train))) if config.views is None else [int(v) for v in config.views]
    if not views:
        raise InputError("views: give at least one training view to edit")
    for v in views:
        if not 0 <= v < len(train):
            raise InputError(f"views: training view {v} out of range (the train split has {len(train)} views)")
    per_round = len(views) if config.edits_per_round is None else check_int_range(config.edits_per_round, "edits_per_round", lo=1)
    method = run.method if config.in_place else copy.deepcopy(run.method)
    scene = Run(method, run.dataset, run.spec, directory=run.directory)
    bg = run.dataset.eval_background()
    originals = train.images.float() / 255.0
    images = train.images.clone()
    h, w = images.shape[1:3]
    device = config.device or str(next(method.parameters()).device)
    rounds: List[Dict[str, Any]] = []
    cursor = 0
    dataset = run.dataset
    for r in range(config.rounds):
        # 1. Edit the next views, each conditioned on the current render.
        method.eval()
        edited: List[int] = []
        for _ in range(per_round):
            v = views[cursor % len(views)]
            cursor += 1
            with torch.no_grad():
                render = method.render_camera(train.cameras[v], bg, output_device="cpu").rgb.float().clamp(0, 1)
            out = editor(EditRequest(v, r, render, originals[v], scene, train.cameras[v]))
            if not isinstance(out, Tensor) or out.ndim != 3 or out.shape[-1] != 3:
                raise InputError(f"editor: must return a float [H, W, 3] image, got {getattr(out, 'shape', type(out).__name__)}")
            if tuple(out.shape[:2]) != (h, w):
                out = F.interpolate(out.permute(2, 0, 1)[None].float(), size=(h, w), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
            images[v] = (out.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
            edited.append(v)
        # 2. Keep training the scene on the updated dataset.
        splits = dict(dataset.splits)
        splits["train"] = dataclasses.replace(train, images=images.clone())
        dataset = dataset.with_splits(splits)
        # warp-PSNR among the edited images (with the scene's geometry before this round's training)
        uniq = sorted(set(edited))
        edited_psnr = float("nan")
        with torch.no_grad():
            _, geo = _render_views(method, train.cameras, bg, uniq)
        if len(uniq) >= 2:
            edited_psnr = multiview_warp_psnr(images[uniq].float() / 255.0, geo, train.cameras[uniq])[0]
        if config.steps_per_round:
            tcfg = TrainerConfig(max_steps=config.steps_per_round, output_dir=None, progress=False, checkpoint_every=0,
                                 eval_every=0, log_every=max(1, config.steps_per_round), seed=config.seed + r, device=device)  # fmt: skip
            Trainer(method, tcfg, dataset=dataset).train()
        method.eval()
        with torch.no_grad():
            rgb, geo = _render_views(method, train.cameras, bg, uniq)
        render_psnr, cov = multiview_warp_psnr(rgb, geo, train.cameras[uniq]) if len(uniq) >= 2 else (float("nan"), 0.0)
        rounds.append({"round": r, "edited_views": uniq, "edited_warp_psnr": edited_psnr, "render_warp_psnr": render_psnr,
                       "covisible": cov})  # fmt: skip
    if hasattr(method, "prepare_for_render"):
        method.prepare_for_render()
    return DatasetUpdateResult(rounds, method, dataset)


# --------------------------------------------------------------------------- E4


def measure_e4(
    run: Run,
    pipeline: Any,
    adapters: Union[ControlAdapter, Sequence[ControlAdapter]],
    cameras: Cameras,
    prompt: Any,
    seeds: Sequence[int],
    *,
    kinds: Union[str, Sequence[str]] = ("depth",),
    settings: Sequence[str] = E4_SETTINGS,
    fidelity: Optional[Callable[[Tensor, SceneConditions], float]] = None,
    update: DatasetUpdateConfig = DatasetUpdateConfig(rounds=2, steps_per_round=50),
    depth_range: Union[None, str, Tuple[float, float]] = None,
    negative: Any = None,
    steps: int = 20,
    guidance: float = 3.0,
    language: Any = None,
    edit_prompts: Optional[Mapping[int, Any]] = None,
) -> List[Dict[str, Any]]:
    """The E4 ladder on ``cameras`` (``C >= 2`` views of the pipeline's size): one row per setting and seed,
    ``{"experiment": "E4", "setting", "seed", "warp_psnr", "covisible", "fidelity"}``.

    Settings:

    * ``uncontrolled``: the same pipeline with every adapter at weight 0, independent noise;
    * ``controlled``: the rendered conditions, independent noise per view;
    * ``shared_noise``: the conditions + one noise field through the scene;
    * ``dataset_update``: :func:`dataset_update` with the ControlNet as the editor (each training
      view regenerated from the conditions of the *current* render, with scene-shared noise),
      then the updated scene rendered at ``cameras``.

    ``warp_psnr`` uses the run's rendered depth (:func:`multiview_warp_psnr`); ``fidelity`` is
    ``fidelity(images, conditions)`` when given (e.g. the benchmark's instrument), else ``None``.
    ``depth_range``: the depth condition's ``(near, far)`` for every render, or ``"per_view"`` (:func:`render_conditions`).
    ``edit_prompts``: training view -> the prompt its dataset-update edits use (e.g. the scene's
    caption from that camera, when captions depend on the view); views left out use ``prompt``.
    """
    kinds = check_control_kinds(kinds)
    if edit_prompts is not None and not isinstance(edit_prompts, Mapping):
        raise InputError(f"edit_prompts: expected a mapping of training view -> prompt, got {type(edit_prompts).__name__}")
    for s in settings:
        check_choice(s, "settings", E4_SETTINGS)
    adapters = _as_adapters(adapters)
    seeds = [check_int_range(s, "seeds", lo=0, hi=2**62) for s in seeds]
    if not seeds:
        raise InputError("seeds: give at least one seed")
    if len(cameras) < 2:
        raise InputError(f"cameras: warp-PSNR needs at least 2 views, got {len(cameras)}")
    conds = render_conditions(run, cameras, kinds, language=language, depth_range=depth_range)
    off = [0.0] * len(adapters)
    common = dict(kinds=kinds, negative=negative, steps=steps, guidance=guidance, conditions=conds)
    rows: List[Dict[str, Any]] = []

    def row(setting: str, seed: int, images: Tensor, depth: Tensor, cams: Cameras, c: SceneConditions, extra: Dict[str, Any]) -> None:
        value, cov = multiview_warp_psnr(images, depth, cams)
        fid = None if fidelity is None else float(fidelity(images, c))
        rows.append({"experiment": "E4", "setting": setting, "seed": seed, "warp_psnr": value, "covisible": cov,
                     "fidelity": fid, **extra})  # fmt: skip

    for seed in seeds:
        for setting in settings:
            if setting == "dataset_update":
                edit = _controlnet_editor(run, pipeline, adapters, prompt, kinds, seed, negative, steps, guidance, language, depth_range,
                                          edit_prompts)  # fmt: skip
                result = dataset_update(run, edit, dataclasses.replace(update, seed=seed, in_place=False))
                updated = Run(result.method, run.dataset, run.spec, directory=run.directory)
                after = render_conditions(updated, cameras, kinds, language=language, depth_range=depth_range)
                row(setting, seed, after.rgb, after.depth, cameras, after, {"rounds": result.rounds})
                continue
            weights = off if setting == "uncontrolled" else 1.0
            out = generate_from_scene(run, pipeline, adapters, cameras, prompt, weights=weights, seed=seed,
                                      shared_noise=setting == "shared_noise", **common)  # fmt: skip
            row(setting, seed, out.images, conds.depth, cameras, conds, {})
    return rows


def _controlnet_editor(run: Run, pipeline: Any, adapters: List[ControlAdapter], prompt: Any, kinds: Tuple[str, ...], seed: int,
                       negative: Any, steps: int, guidance: float, language: Any,
                       depth_range: Union[None, str, Tuple[float, float]] = None,
                       prompts_by_view: Optional[Mapping[int, Any]] = None) -> Editor:  # fmt: skip
    """An editor for :func:`dataset_update`: the controlled generator at the training camera, from the
    conditions of the current scene, with the scene-shared noise, at the pipeline's own size;
    ``prompts_by_view[view]`` when given for that view, else ``prompt``."""
    train = run.dataset.split("train").cameras
    size = _pipeline_size(pipeline)

    def edit(request: EditRequest) -> Tensor:
        cams = resize_cameras(train[request.view], *size)
        text = prompt if prompts_by_view is None else prompts_by_view.get(request.view, prompt)
        out = generate_from_scene(request.scene, pipeline, adapters, cams, text, kinds=kinds, negative=negative, steps=steps,
                                  guidance=guidance, seed=seed, shared_noise=True, language=language,
                                  depth_range=depth_range)  # fmt: skip
        return out.images[0]

    return edit


def _pipeline_size(pipeline: Any) -> Tuple[int, int]:
    """The pipeline's native ``(height, width)`` in pixels."""
    return check_image_size(as_generation_pipeline(pipeline), None, None)


# --------------------------------------------------------------------------- the command


@dataclass(frozen=True)
class SceneGenerateOptions:
    """Options of :func:`generate_scene_to_folder` (``langfield generate RUN ...``).

    Attributes:
        camera: ``SPLIT``, ``SPLIT:I`` or ``SPLIT:I,J,...`` (see :func:`select_cameras`); or
        path: a camera path (``orbit``, ``spiral``, ``interpolate``) of ``num_frames`` frames at ``fps``.
        control: the condition kinds, one per adapter (see :data:`CONTROL_KINDS`).
        weights: per adapter conditioning scale (``None``: 1 each).
        labels: segmentation labels (default: the dataset's).
        shared_noise: start every view from the scene-shared noise field.
        guess_mode: guess mode, control on the conditional branch only (:func:`generate_from_scene`).
        steps, guidance, seed: sampling (view ``i`` seeded ``seed + i`` unless ``shared_noise``).
        height, width: rendered/generated size in pixels (default: the pipeline's native size).
        device: ``cpu`` / ``cuda`` (default CUDA when available).
    """

    camera: Optional[str] = None
    path: Optional[str] = None
    num_frames: int = 24
    fps: float = 12.0
    control: Tuple[str, ...] = ("depth",)
    weights: Optional[Tuple[float, ...]] = None
    labels: Optional[Tuple[str, ...]] = None
    shared_noise: bool = False
    guess_mode: bool = False
    steps: int = 20
    guidance: float = 3.0
    seed: int = 0
    height: Optional[int] = None
    width: Optional[int] = None
    device: Optional[str] = None


def check_scene_generate_options(options: SceneGenerateOptions, num_adapters: int) -> Tuple[str, ...]:
    """Refuse bad options before anything is loaded; returns the control kinds."""
    kinds = check_control_kinds(options.control)
    if (options.camera is None) == (options.path is None):
        raise InputError("camera (--camera) / path (--path): give exactly one (e.g. --camera test:3 or --path orbit)")
    if options.path is not None:
        check_choice(options.path, "path (--path)", CAMERA_PATHS)
        check_int_range(options.num_frames, "num_frames (--num-frames)", lo=1, hi=100_000)
        check_finite_number(options.fps, "fps (--fps)", lo=0.0, lo_inclusive=False, hi=1000.0)
    if num_adapters != len(kinds):
        raise InputError(f"adapter (--adapter): {num_adapters} adapter folder(s) for {len(kinds)} control kind(s) {list(kinds)}; give one per kind")
    if options.weights is not None and len(options.weights) != len(kinds):
        raise InputError(f"weights (--weights): {len(options.weights)} weight(s) for {len(kinds)} control kind(s)")
    for key in ("height", "width"):
        if getattr(options, key) is not None:
            check_int_range(getattr(options, key), f"{key} (--{key})", lo=8, hi=16384)
    return kinds


def generate_scene_to_folder(
    run_dir: PathLike, base: PathLike, adapter_dirs: Sequence[PathLike], prompt: str, output: PathLike,
    options: SceneGenerateOptions = SceneGenerateOptions(),
) -> Dict[str, Any]:
    """``langfield generate RUN``: render the conditions of ``options.control`` at the cameras, run the
    (Multi-)ControlNet of ``adapter_dirs`` on the ``base`` pipeline, write into ``output``:
    ``images/view_<i>.png``, ``conditions/<kind>/view_<i>.png``, for a path also ``generated.mp4``
    and ``conditions_<kind>.mp4``, and ``generation.json`` (with the warp-PSNR among the views).
    """
    kinds = check_scene_generate_options(options, len(adapter_dirs))
    out = check_output_dir(output, "output (--output)")
    if not str(prompt).strip():
        raise InputError("prompt (--prompt): give a prompt")
    run = load_run(run_dir, options.device)
    if options.camera is not None:
        cams = select_cameras(run, options.camera)
    else:
        cams = path_cameras_for(run, options.path, options.num_frames)
    pipe = load_pipeline(base, device=options.device)
    native = _pipeline_size(pipe)
    height, width = options.height or native[0], options.width or native[1]
    cams = resize_cameras(cams, height, width)
    adapters = [load_control_adapter(d, pipe.denoiser) for d in adapter_dirs]
    labels = None if options.labels is None else list(options.labels)
    weights = 1.0 if options.weights is None else list(options.weights)
    result = generate_from_scene(run, pipe, adapters, cams, prompt, kinds=kinds, weights=weights, steps=options.steps,
                                 guidance=options.guidance, seed=options.seed, shared_noise=options.shared_noise,
                                 labels=labels, guess_mode=options.guess_mode)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    images = [str(write_image(out / "images" / f"view_{i:03d}.png", result.images[i]).relative_to(out)) for i in range(len(cams))]
    conds = {k: [str(p.relative_to(out)) for p in v] for k, v in write_conditions(result.conditions, out).items()}
    videos: List[str] = []
    if options.path is not None:
        write_video(out / "generated.mp4", [result.images[i] for i in range(len(cams))], fps=options.fps)
        videos.append("generated.mp4")
        for k, imgs in result.conditions.images.items():
            write_video(out / f"conditions_{k}.mp4", [imgs[i] for i in range(len(cams))], fps=options.fps)
            videos.append(f"conditions_{k}.mp4")
    consistency = None
    if len(cams) >= 2:
        value, cov = multiview_warp_psnr(result.images, result.conditions.depth, cams)
        consistency = {"warp_psnr": None if math.isnan(value) else value, "covisible": cov}
    record = {
        "run": str(run_dir), "base": str(base), "adapters": [str(d) for d in adapter_dirs], "prompt": str(prompt),
        "cameras": options.camera if options.camera is not None else f"path:{options.path}:{options.num_frames}",
        "size": [height, width], "images": images, "conditions": conds, "videos": videos, "consistency": consistency,
        **result.record,
    }  # fmt: skip
    atomic_write_json(record, out / "generation.json")
    return record
