"""Talk to a reconstructed scene: the query API over a scene method with a trained language field.

Example::

    from langfield.runs import load_language_scene
    scene = load_language_scene("outputs/demo")             # run + language/field.pt
    cams = scene.dataset.split("test").cameras
    rel, view = scene.relevancy("sphere", cams, 0)          # [H, W] in [0, 1], and the render
    seg = scene.segment(["ground", "sphere", "box"], cams, 0, unknown_threshold=0.5)
    loc = scene.localize("sphere")                          # point + AABB, dataset world frame
    paths = scene.extract("sphere", "outputs/demo/extract") # Gaussians: own PLY + render without
    ans = scene.relation("is the sphere left of the box?", "test", 0)  # "yes"/"no" + evidence

Relevancy follows LERF (Kerr et al. 2023, Sec. 3.4): the pairwise softmax of the query against
each canonical negative ("object", "things", "stuff", "texture"), minimum over negatives.
The scene talks to the method only through its declared capabilities
(:mod:`langfield.methods.capabilities`) and ``render_camera``.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from langfield._checks import InputError, check_choice
from langfield.data.dataset import SceneDataset
from langfield.fields.language_fields import LanguageField
from langfield.geometry.rays import pixel_centers, rays_from_pixels
from langfield.io.gaussian_ply import write_gaussian_ply
from langfield.io.images import write_image
from langfield.io.points_ply import write_points_ply
from langfield.kernels.cpu_allocator import keep_freed_memory
from langfield.language.queries import (
    CANONICAL_NEGATIVES,
    Localization,
    QueryNotFoundError,
    Segmentation,
    check_label_list,
    localize_3d,
    name_key,
    relevancy,
    segment,
)
from langfield.language.objects import ObjectMap, ObjectMapConfig, build_object_map, depth_consistent
from langfield.language.spatial import (
    SpatialAnswer,
    SpatialObject,
    SpatialQuestion,
    ask_scene,
    default_candidates,
    mean_camera_up,
    transform_scale,
)
from langfield.language.teachers.base import DenseTeacher, check_text_queries
from langfield.language.view_geometry import check_language_method, render_view, render_view_features
from langfield.methods.base import SceneMethod, device_of
from langfield.types import Cameras, RenderOutput

__all__ = ["LOCATE_BY", "LanguageFieldMissingError", "LanguageRender", "LanguageScene", "query_stem"]


def query_stem(text: str) -> str:
    """A file-name stem unique per query string: the text itself when it is at most 40 lower-case
    letters and digits ("sphere"), else its readable part (``_`` for every other character, 40
    characters at most) plus 8 hex digits of the exact text's hash, so "red chair" and "red-chair"
    never overwrite each other's outputs (nor "Sphere" and "sphere" on a case-insensitive disk)."""
    readable = "".join(c if c.isascii() and c.isalnum() else "_" for c in text)[:40]
    if readable == text and text == text.lower():
        return text
    return f"{readable or 'query'}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:8]}"


class LanguageFieldMissingError(FileNotFoundError):
    """The run has no trained language field."""


#: How :meth:`LanguageScene.relation` places the names of a question.
LOCATE_BY = ("objects", "relevancy")


@dataclass(frozen=True)
class LanguageRender:
    """One camera rendered with its language features.

    Attributes:
        render: colour/depth/accumulation (:class:`RenderOutput`, ``[H, W, *]``).
        features: ``[H, W, E]`` unit language features.
    """

    render: RenderOutput
    features: Tensor


class LanguageScene:
    """A trained scene method + its language field + the teacher's text side (see module docstring).

    Args:
        method: the scene method (eval mode) the field was distilled on.
        dataset: its dataset (cameras, backgrounds, world transform).
        field: the language field (:func:`langfield.language.distillation.build_language_field`).
        teacher: the teacher whose text side embeds the queries.
        top_k: samples kept per ray for NGP fields (as in training).
        render_cache_size: renders kept (colour, depth and language features, least recently used
            dropped first), keyed by the exact camera, so a second query on a view costs only the
            relevancy (about 61 MB per cached 200x200 view with 384-d features). The cache assumes
            the method and the field no longer change (as after distillation); call
            :meth:`clear_render_cache` if they do. 0 turns it off.

    On the CPU it calls :func:`langfield.kernels.cpu_allocator.keep_freed_memory` (as the Trainer
    and the command line do): a first Instant-NGP query at 200x200 then reuses freed memory instead
    of faulting in fresh pages for its temporaries (about 1.0-1.2 s against 1.25-1.4 s on 2 cores).
    """

    def __init__(
        self, method: SceneMethod, dataset: SceneDataset, field: LanguageField, teacher: DenseTeacher, top_k: int = 8,
        render_cache_size: int = 4,
    ) -> None:  # fmt: skip
        check_language_method(method)
        if device_of(method).type == "cpu":  # queries allocate large temporaries: reuse them (kernels.cpu_allocator)
            keep_freed_memory()
        if isinstance(render_cache_size, bool) or not isinstance(render_cache_size, int) or render_cache_size < 0:
            raise ValueError(f"render_cache_size must be an int >= 0, got {render_cache_size!r}")
        self.method, self.dataset, self.field, self.teacher = method, dataset, field, teacher
        self.top_k = top_k
        self.render_cache_size = render_cache_size
        self._renders: "OrderedDict[tuple, LanguageRender]" = OrderedDict()
        self._text_cache: Dict[str, Tensor] = {}
        self._localizations: Dict[tuple, Union[Localization, QueryNotFoundError]] = {}
        self._object_maps: Dict[tuple, ObjectMap] = {}

    # ------------------------------------------------------------------ text
    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """``[T, E]`` unit text embeddings (cached per string)."""
        texts = check_text_queries(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            for t, e in zip(missing, self.teacher.embed_texts(missing)):
                self._text_cache[t] = F.normalize(e.float(), dim=-1)
        return torch.stack([self._text_cache[t] for t in texts])

    # ------------------------------------------------------------------ rendering
    @staticmethod
    def _camera_key(cameras: Cameras, index: int) -> tuple:
        cam = cameras[index]
        return tuple(t.detach().cpu().numpy().tobytes() for t in (cam.c2w, cam.Ks, cam.widths, cam.heights, cam.dist))

    def clear_render_cache(self) -> None:
        """Forget every cached render (after the method or the field changed)."""
        self._renders.clear()

    @torch.no_grad()
    def render(self, cameras: Cameras, index: int) -> LanguageRender:
        """Colour, depth and language features of camera ``index`` (cached per exact camera)."""
        key = self._camera_key(cameras, index) if self.render_cache_size else None
        if key is not None and key in self._renders:
            self._renders.move_to_end(key)
            return self._renders[key]
        bg = self.dataset.eval_background()
        out, geometry = render_view(self.method, cameras, index, bg, self.top_k)
        h, w = int(cameras.heights[index]), int(cameras.widths[index])
        view = LanguageRender(out, render_view_features(self.field, geometry, h, w))
        if key is not None:
            self._renders[key] = view
            while len(self._renders) > self.render_cache_size:
                self._renders.popitem(last=False)
        return view

    # ------------------------------------------------------------------ queries
    def relevancy(
        self, query: str, cameras: Cameras, index: int, negatives: Sequence[str] = CANONICAL_NEGATIVES
    ) -> tuple[Tensor, LanguageRender]:
        """``([H, W] relevancy in [0, 1], the render)`` of ``query`` at camera ``index``."""
        (query,) = check_text_queries([query], "query")
        view = self.render(cameras, index)
        emb = self.embed_texts([query, *negatives])
        return relevancy(view.features, emb[0], emb[1:]), view

    def segment(
        self, labels: Sequence[str], cameras: Cameras, index: int, unknown_threshold: Optional[float] = None
    ) -> tuple[Segmentation, LanguageRender]:
        """Open-vocabulary segmentation of camera ``index`` over ``labels`` (``-1`` = unknown)."""
        labels = check_label_list(labels)
        view = self.render(cameras, index)
        return segment(view.features, self.embed_texts(labels), unknown_threshold=unknown_threshold), view

    def localize(
        self, query: str, split: str = "train", max_views: int = 12, threshold: float = 0.5,
        negatives: Sequence[str] = CANONICAL_NEGATIVES, min_relevancy: float = 0.5,
    ) -> Localization:  # fmt: skip
        """3D point and axis-aligned box of the most relevant region, in the dataset's world frame.

        Relevancy maps of up to ``max_views`` evenly spaced views of ``split`` are back-projected
        with the rendered depth (see :func:`langfield.language.queries.localize_3d`). Only pixels
        whose relevancy reaches ``min_relevancy`` (0.5: closer to the query than to every
        negative) count, so a query that is not in the scene raises
        :class:`~langfield.language.queries.QueryNotFoundError` instead of returning a box."""
        (query,) = check_text_queries([query], "query")
        if split not in self.dataset.splits:
            raise ValueError(f"split {split!r}: the dataset has {sorted(self.dataset.splits)}")
        if isinstance(max_views, bool) or not isinstance(max_views, int) or max_views < 1:
            raise ValueError(f"max_views must be an integer >= 1, got {max_views!r}")
        cams = self.dataset.split(split).cameras
        picks = torch.linspace(0, len(cams) - 1, min(max_views, len(cams))).round().long().unique().tolist()
        rels, depths, accs = [], [], []
        for i in picks:
            rel, view = self.relevancy(query, cams, i, negatives)
            rels.append(rel)
            depths.append(view.render.depth)
            accs.append(view.render.accumulation)
        try:
            return localize_3d(
                torch.stack(rels), torch.stack(depths), cams[picks], threshold=threshold,
                accumulation=torch.stack(accs), world_transform=self.dataset.world_transform,
                min_relevancy=min_relevancy,
            )  # fmt: skip
        except QueryNotFoundError as err:
            raise QueryNotFoundError(str(err).replace("query", f"query {query!r}", 1)) from None

    @torch.no_grad()
    def objects(
        self, vocabulary: Optional[Sequence[str]] = None, split: str = "train", config: ObjectMapConfig = ObjectMapConfig()
    ) -> ObjectMap:
        """The scene's objects, grouped from geometry and named from ``vocabulary``
        (:mod:`langfield.language.objects`; cached per vocabulary, split and config).

        ``config.max_views`` evenly spaced views of ``split`` are rendered; their pixels with
        accumulation ``>= 0.5`` (at a regular stride keeping at most ``config.max_points`` in all)
        are back-projected with the rendered ray distance into the cameras' **normalised** frame,
        each with its language feature and its label probabilities over ``vocabulary`` (default:
        the dataset's labels without background-like ones, :func:`spatial.default_candidates`).
        ``up`` is the mean up of the training cameras (:func:`spatial.mean_camera_up`). Points the
        other rendered views do not confirm are dropped first (:func:`objects.depth_consistent`,
        ``config.min_agreeing_views``; skipped when the views differ in size); the map's
        ``extras`` record ``surface_points_rendered`` and whether that filter ran.
        """
        vocab = default_candidates(self.dataset.labels) if vocabulary is None else check_label_list(vocabulary)
        if not vocab:
            raise InputError("objects: empty vocabulary (the dataset has no object labels); pass vocabulary=[...]")
        if split not in self.dataset.splits:
            raise InputError(f"split {split!r}: the dataset has {sorted(self.dataset.splits)}")
        if not isinstance(config, ObjectMapConfig):
            raise InputError(f"config must be an ObjectMapConfig, got {type(config).__name__}")
        key = (tuple(vocab), split, config)
        if key in self._object_maps:
            return self._object_maps[key]
        cams = self.dataset.split(split).cameras
        picks = torch.linspace(0, len(cams) - 1, min(config.max_views, len(cams))).round().long().unique().tolist()
        text = self.embed_texts(vocab)
        per_view = max(1, config.max_points // len(picks))
        points, views, probs, feats, depths, accs = [], [], [], [], [], []
        for v, i in enumerate(picks):
            out = self.render(cams, i)
            h, w = int(cams.heights[i]), int(cams.widths[i])
            depths.append(out.render.depth[..., 0].float().cpu())
            accs.append(out.render.accumulation[..., 0].float().cpu())
            stride = max(1, math.ceil(math.sqrt(h * w / per_view)))
            rows = torch.arange(0, h, stride)[:, None].expand(-1, len(range(0, w, stride))).reshape(-1)
            cols = torch.arange(0, w, stride)[None, :].expand(len(range(0, h, stride)), -1).reshape(-1)
            depth = out.render.depth[..., 0].float().cpu()[rows, cols]
            acc = out.render.accumulation[..., 0].float().cpu()[rows, cols]
            keep = torch.isfinite(depth) & (depth > 0) & (acc >= 0.5)
            rows, cols, depth = rows[keep], cols[keep], depth[keep]
            f = out.features.float().cpu()[rows, cols]
            rays = rays_from_pixels(cams, torch.full((rows.numel(),), i, dtype=torch.long), pixel_centers(w, h)[rows, cols], 0.0, 1.0)
            points.append(rays.origins.double() + rays.directions.double() * depth.double()[:, None])
            views.append(torch.full((rows.numel(),), v, dtype=torch.long))
            probs.append(torch.softmax(config.temperature * F.normalize(f, dim=-1) @ text.float().cpu().T, dim=-1))
            feats.append(f)
        up = mean_camera_up(self.dataset.split("train").cameras.c2w)
        points, views, probs, feats = torch.cat(points), torch.cat(views), torch.cat(probs), torch.cat(feats)
        num_rendered = points.shape[0]
        filtered = config.min_agreeing_views > 0 and len({tuple(d.shape) for d in depths}) == 1
        if filtered:
            keep = depth_consistent(points, views, torch.stack(depths), torch.stack(accs), cams[torch.tensor(picks)],
                                    tolerance=config.depth_tolerance, min_agreeing=config.min_agreeing_views,
                                    max_see_through=config.max_see_through)  # fmt: skip
            points, views, probs, feats = points[keep], views[keep], probs[keep], feats[keep]
        found = build_object_map(points, views, probs, feats, vocab, up, config)
        found.extras["surface_points_rendered"] = num_rendered
        found.extras["depth_consistency"] = "on" if filtered else "off"
        self._object_maps[key] = found
        return found

    def relation(
        self, question: Union[str, SpatialQuestion], split: str = "test", view: int = 0, *,
        candidates: Optional[Sequence[str]] = None, up: Optional[Tensor] = None, min_relevancy: float = 0.5,
        max_views: int = 12, locate_by: str = "objects", vocabulary: Optional[Sequence[str]] = None,
    ) -> SpatialAnswer:  # fmt: skip
        """Answer a spatial question ("is the sphere left of the box?", "which is closer, A or B?",
        "which is larger, A or B?", "what is on top of X?") from camera ``view`` of ``split``.

        The grammar, frames and the meaning of each relation: :mod:`langfield.language.spatial`.
        How names are placed (``locate_by``):

        * ``"objects"`` (default): the scene's objects are grouped from geometry and named with
          ``vocabulary`` (:meth:`objects`, ``max_views`` training views; default vocabulary the
          dataset's object labels). A vocabulary name is the object given that name; a name no
          object was given (its geometry was merged with a neighbour's or missed) falls back to
          ``"relevancy"``; any other text is the object whose mean feature is most relevant to it
          (LERF relevancy against the canonical negatives, at least ``min_relevancy``). The
          evidence's ``placed_by`` says which way each name was placed. "What is on top of X"
          considers ``candidates``, else ``vocabulary`` when given, else the dataset's labels.
        * ``"relevancy"``: :meth:`localize` (the most relevant pixels of ``max_views`` training
          views, ``min_relevancy``), mapped into the normalised frame.

        Placements are cached per name on this scene. "up" is the mean up direction of the
        training cameras unless ``up`` (normalised frame) is given.

        Raises:
            InputError: an unparsable question, a bad split, view or ``locate_by``.
            QueryNotFoundError: a name of the question is not found in the scene.
        """
        if split not in self.dataset.splits:
            raise InputError(f"split {split!r}: the dataset has {sorted(self.dataset.splits)}")
        cams = self.dataset.split(split).cameras
        if isinstance(view, bool) or not isinstance(view, int) or not 0 <= view < len(cams):
            raise InputError(f"view {view!r} is out of range: split {split!r} has {len(cams)} cameras")
        check_choice(locate_by, "locate_by", LOCATE_BY)

        def locate(name: str) -> Localization:
            key = (name_key(name), max_views, float(min_relevancy))
            if key not in self._localizations:
                try:
                    self._localizations[key] = self.localize(name, max_views=max_views, min_relevancy=min_relevancy)
                except QueryNotFoundError as err:
                    self._localizations[key] = err
            found = self._localizations[key]
            if isinstance(found, QueryNotFoundError):
                raise QueryNotFoundError(str(found))
            return found

        if locate_by == "objects":
            omap = self.objects(vocabulary, config=ObjectMapConfig(max_views=max_views))
            scale = transform_scale(self.dataset.world_transform)

            def place(name: str) -> SpatialObject:
                o = max(omap.named(name), key=lambda o: o.scores[o.name], default=None)
                if o is not None:
                    obj = SpatialObject.from_aabb(name, o.point, o.aabb, score=o.scores[o.name]).with_scale(scale)
                    return obj.placed("object map" if o.name == o.best_name else "object map (by elimination)")
                if name_key(name) in {name_key(v) for v in omap.vocabulary}:
                    try:  # a name no grouped object was given (merged or missed geometry): its relevant pixels
                        found = locate(name)
                    except QueryNotFoundError as err:
                        raise QueryNotFoundError(f"{name!r}: no object of the scene was given this name ({len(omap.objects)} objects) "
                                                 f"and its relevancy does not place it ({err})") from None  # fmt: skip
                    return SpatialObject.from_localization(name, found, self.dataset.world_transform).placed("relevancy (no object was given this name)")
                if not omap.objects:
                    raise QueryNotFoundError(f"{name!r}: the scene has no objects")
                emb = self.embed_texts([name, *CANONICAL_NEGATIVES]).float().cpu()
                rel = relevancy(torch.stack([o.feature for o in omap.objects]), emb[0], emb[1:])
                best = int(rel.argmax())
                if float(rel[best]) < min_relevancy:
                    raise QueryNotFoundError(f"{name!r}: no object is relevant enough (best {float(rel[best]):.3f} < min_relevancy={min_relevancy:g})")
                o = omap.objects[best]
                return SpatialObject.from_aabb(name, o.point, o.aabb, score=float(rel[best])).with_scale(scale).placed("object map (most relevant object)")

            if candidates is None and vocabulary is not None:
                candidates = list(omap.vocabulary)  # "what is on top of X": the names asked for
            return ask_scene(self, question, cams, view, candidates=candidates, up=up, locate=place)

        return ask_scene(self, question, cams, view, candidates=candidates, up=up, locate=locate)

    # ------------------------------------------------------------------ extraction
    @torch.no_grad()
    def select_gaussians(self, query: str, threshold: float = 0.55, negatives: Sequence[str] = CANONICAL_NEGATIVES) -> Tensor:
        """``[N]`` bool: Gaussians whose decoded language feature has relevancy >= ``threshold``."""
        if check_language_method(self.method) != "gaussians":
            raise ValueError("select_gaussians needs a 'gaussians' run; use extract() for density fields")
        emb = self.embed_texts([query, *negatives]).to(self.field.codes.device)
        return (relevancy(self.field.gaussian_features(), emb[0], emb[1:]) >= threshold).cpu()

    @torch.no_grad()
    def extract(
        self, query: str, out_dir: Union[str, Path], threshold: float = 0.55, camera_index: int = 0,
        split: str = "test", negatives: Sequence[str] = CANONICAL_NEGATIVES, min_opacity: float = 0.5,
    ) -> Dict[str, Path]:  # fmt: skip
        """Export what ``query`` selects and render the scene without it.

        Gaussians: the selected Gaussians as their own 3DGS PLY (normalised frame, as
        ``langfield export``), the rest as a second PLY, and camera ``camera_index`` of ``split``
        rendered with and without the selection. NGP: the selected density region as a point
        PLY (centres of occupancy-grid cells whose opacity over one cell is ``>= min_opacity`` and
        whose feature matches) and the render with that density removed.
        """
        (query,) = check_text_queries([query], "query")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        cams = self.dataset.split(split).cameras
        if not 0 <= camera_index < len(cams):
            raise ValueError(f"camera {camera_index} is out of range: split {split!r} has {len(cams)} cameras")
        stem = query_stem(query)
        bg = self.dataset.eval_background()
        if check_language_method(self.method) == "gaussians":
            selected = self.select_gaussians(query, threshold, negatives)
            paths = self._extract_gaussians(query, selected, out, stem, threshold)
            keep = ~selected
        else:
            paths = self._extract_density(query, out, stem, threshold, negatives, min_opacity)

            def keep(points: Tensor) -> Tensor:
                return self._density_relevancy(points, query, negatives) < threshold

        without = self.method.render_camera(cams[camera_index], bg, keep=keep, output_device="cpu").rgb
        # Colour only: the language features of this camera are not needed here.
        full = self.method.render_camera(cams[camera_index], bg, output_device="cpu").rgb
        paths["render"] = write_image(out / f"{stem}_render.png", full.clamp(0, 1))
        paths["render_without"] = write_image(out / f"{stem}_without.png", without.clamp(0, 1))
        return paths

    def _extract_gaussians(self, query, keep: Tensor, out: Path, stem: str, threshold) -> Dict[str, Path]:
        if not bool(keep.any()):
            raise ValueError(f"query {query!r} selects no Gaussian at relevancy >= {threshold}; lower --threshold")
        raw = self.method.gaussian_cloud().raw()
        sel = {k: v[keep.to(v.device)] for k, v in raw.items()}
        rest = {k: v[~keep.to(v.device)] for k, v in raw.items()}
        return {
            "selected_ply": write_gaussian_ply(out / f"{stem}_selected.ply", sel),
            "remaining_ply": write_gaussian_ply(out / f"{stem}_remaining.ply", rest),
        }

    def _density_relevancy(self, points: Tensor, query: str, negatives) -> Tensor:
        emb = self.embed_texts([query, *negatives]).to(points.device)
        feats = torch.cat([self.field.point_features(p) for p in points.split(65536)]) if len(points) else points.new_zeros(0, emb.shape[1])
        return relevancy(feats, emb[0], emb[1:])

    def _extract_density(self, query, out: Path, stem: str, threshold, negatives, min_opacity: float) -> Dict[str, Path]:
        pts = self.method.solid_points(min_opacity)
        rel = self._density_relevancy(pts, query, negatives)
        sel = pts[rel >= threshold]
        if len(sel) == 0:
            raise ValueError(f"query {query!r} selects no occupied cell at relevancy >= {threshold}; lower --threshold")
        return {"selected_ply": write_points_ply(out / f"{stem}_selected_points.ply", sel.cpu())}
