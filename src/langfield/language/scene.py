"""Talk to a reconstructed scene: the query API over a run with a trained language field.

Example::

    scene = LanguageScene.load("outputs/demo")            # run + language/field.pt
    cams = scene.dataset.split("test").cameras
    rel, view = scene.relevancy("sphere", cams, 0)          # [H, W] in [0, 1], and the render
    seg = scene.segment(["ground", "sphere", "box"], cams, 0, unknown_threshold=0.5)
    loc = scene.localize("sphere")                          # point + AABB, dataset world frame
    paths = scene.extract("sphere", "outputs/demo/extract") # Gaussians: own PLY + render without

Relevancy follows LERF (Kerr et al. 2023, Sec. 3.4): the pairwise softmax of the query against
each canonical negative ("object", "things", "stuff", "texture"), minimum over negatives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from langfield.language.fields import render_view_features, view_geometry
from langfield.language.queries import (
    CANONICAL_NEGATIVES,
    Localization,
    Segmentation,
    check_label_list,
    localize_3d,
    relevancy,
    segment,
)
from langfield.language.teacher import DenseTeacher, check_text_queries
from langfield.language.training import FIELD_FILE, LANGUAGE_DIR, build_language_field
from langfield.types import Cameras, RenderOutput

__all__ = ["LanguageFieldMissingError", "LanguageRender", "LanguageScene"]


class LanguageFieldMissingError(FileNotFoundError):
    """The run has no trained language field."""


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
    """A trained run + its language field + the teacher's text side (see module docstring)."""

    def __init__(self, run, field, teacher: DenseTeacher, run_dir: Optional[Path] = None, top_k: int = 8) -> None:
        self.run, self.field, self.teacher = run, field, teacher
        self.method, self.dataset = run.method, run.dataset
        self.run_dir = run_dir
        self.top_k = top_k
        self._text_cache: Dict[str, Tensor] = {}

    @classmethod
    def load(cls, run_dir: Union[str, Path], device: Optional[str] = None, language_dir: Optional[Union[str, Path]] = None):
        """Load ``run_dir`` and its language field (``run_dir/language/field.pt`` by default)."""
        from langfield.language.teachers import load_teacher
        from langfield.pipeline import load_run

        run_dir = Path(run_dir)
        path = Path(language_dir or run_dir / LANGUAGE_DIR) / FIELD_FILE
        if not path.is_file():
            raise LanguageFieldMissingError(
                f"{run_dir} has no language field ({path} not found): the scene was trained without one. "
                f"Train it with `langfield language {run_dir}` (add `--teacher simulated` on a labelled scene "
                "without CLIP weights)"
            )
        run = load_run(run_dir, device)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"could not read the language field {path}: {err}") from None
        field, cfg = build_language_field(state, run.method, str(path))
        teacher = load_teacher(state["teacher"], labels=run.dataset.labels)
        return cls(run, field, teacher, run_dir, cfg.top_k)

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
    @torch.no_grad()
    def render(self, cameras: Cameras, index: int) -> LanguageRender:
        """Colour, depth and language features of camera ``index``."""
        from langfield.training.render import render_camera

        bg = self.dataset.eval_background()
        out = render_camera(self.method, cameras, index, self.dataset.near, self.dataset.far, bg, output_device="cpu")
        h, w = int(cameras.heights[index]), int(cameras.widths[index])
        geometry = view_geometry(self.method, cameras, index, self.top_k)
        return LanguageRender(out, render_view_features(self.field, geometry, h, w))

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
        negatives: Sequence[str] = CANONICAL_NEGATIVES,
    ) -> Localization:  # fmt: skip
        """3D point and axis-aligned box of the most relevant region, in the dataset's world frame.

        Relevancy maps of up to ``max_views`` evenly spaced views of ``split`` are back-projected
        with the rendered depth (see :func:`langfield.language.queries.localize_3d`)."""
        cams = self.dataset.split(split).cameras
        picks = torch.linspace(0, len(cams) - 1, min(max_views, len(cams))).round().long().unique().tolist()
        rels, depths, accs = [], [], []
        for i in picks:
            rel, view = self.relevancy(query, cams, i, negatives)
            rels.append(rel)
            depths.append(view.render.depth)
            accs.append(view.render.accumulation)
        return localize_3d(
            torch.stack(rels), torch.stack(depths), cams[picks], threshold=threshold,
            accumulation=torch.stack(accs), world_transform=self.dataset.world_transform,
        )  # fmt: skip

    # ------------------------------------------------------------------ extraction
    @torch.no_grad()
    def select_gaussians(self, query: str, threshold: float = 0.55, negatives: Sequence[str] = CANONICAL_NEGATIVES) -> Tensor:
        """``[N]`` bool: Gaussians whose decoded language feature has relevancy >= ``threshold``."""
        if self.field.kind != "gaussians":
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
        from langfield.io.images import write_image
        from langfield.training.render import render_camera

        (query,) = check_text_queries([query], "query")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        cams = self.dataset.split(split).cameras
        stem = "".join(c if c.isalnum() else "_" for c in query)[:40] or "query"
        if self.field.kind == "gaussians":
            selected = self.select_gaussians(query, threshold, negatives)
            paths = self._extract_gaussians(query, selected, out, stem, threshold)
            without = self._render_gaussians_subset(~selected, cams, camera_index)
        else:
            paths = self._extract_density(query, out, stem, threshold, negatives, min_opacity)
            without = self._render_ngp_without(query, cams, camera_index, threshold, negatives)
        # Colour only: the language features of this camera are not needed here.
        full = render_camera(
            self.method, cams, camera_index, self.dataset.near, self.dataset.far, self.dataset.eval_background(),
            output_device="cpu",
        ).rgb  # fmt: skip
        paths["render"] = write_image(out / f"{stem}_render.png", full.clamp(0, 1))
        paths["render_without"] = write_image(out / f"{stem}_without.png", without.clamp(0, 1))
        return paths

    def _extract_gaussians(self, query, keep: Tensor, out: Path, stem: str, threshold) -> Dict[str, Path]:
        from langfield.io.gaussian_ply import write_gaussian_ply

        if not bool(keep.any()):
            raise ValueError(f"query {query!r} selects no Gaussian at relevancy >= {threshold}; lower --threshold")
        raw = self.method.cloud.raw()
        sel = {k: v[keep.to(v.device)] for k, v in raw.items()}
        rest = {k: v[~keep.to(v.device)] for k, v in raw.items()}
        return {
            "selected_ply": write_gaussian_ply(out / f"{stem}_selected.ply", sel),
            "remaining_ply": write_gaussian_ply(out / f"{stem}_remaining.ply", rest),
        }

    def _render_gaussians_subset(self, keep: Tensor, cameras: Cameras, index: int) -> Tensor:
        from langfield.ops.splatting.render import render_gaussians

        cloud, m = self.method.cloud, self.method
        k = keep.to(cloud.means.device)
        cam = cameras[index].to(cloud.means.device)
        res = render_gaussians(
            cloud.means[k], cloud.quats[k], cloud.scales[k], cloud.opacities[k], cloud.sh[k], cam.c2w[0], cam.Ks[0],
            int(cam.widths[0]), int(cam.heights[0]), background=self.dataset.eval_background().to(k.device),
            sh_degree=int(m.active_sh_degree), settings=m.config.splat,
        )  # fmt: skip
        return res.render.rgb.cpu()

    def _density_relevancy(self, points: Tensor, query: str, negatives) -> Tensor:
        emb = self.embed_texts([query, *negatives]).to(points.device)
        feats = torch.cat([self.field.point_features(p) for p in points.split(65536)]) if len(points) else points.new_zeros(0, emb.shape[1])
        return relevancy(feats, emb[0], emb[1:])

    def _extract_density(self, query, out: Path, stem: str, threshold, negatives, min_opacity: float) -> Dict[str, Path]:
        from langfield.io.points_ply import write_points_ply

        grid = self.method.grid
        pts = grid.occupied_cell_centers()
        # Solid cells only: opacity of one cell's width of the density at its centre >= min_opacity.
        cell = float((grid.aabb[1] - grid.aabb[0]).max()) / grid.resolution
        sigmas = torch.cat([self.method.field.density(p) for p in pts.split(65536)]) if len(pts) else pts[:, 0]
        pts = pts[1.0 - torch.exp(-sigmas * cell) >= min_opacity]
        rel = self._density_relevancy(pts, query, negatives)
        sel = pts[rel >= threshold]
        if len(sel) == 0:
            raise ValueError(f"query {query!r} selects no occupied cell at relevancy >= {threshold}; lower --threshold")
        return {"selected_ply": write_points_ply(out / f"{stem}_selected_points.ply", sel.cpu())}

    def _render_ngp_without(self, query, cameras: Cameras, index: int, threshold, negatives) -> Tensor:
        from langfield.geometry.rays import rays_from_camera
        from langfield.ops.volume_rendering import render_rays

        m = self.method
        bg = self.dataset.eval_background().to(m.aabb.device)
        rays = rays_from_camera(cameras, index, m.near, m.far).flatten()
        h, w = int(cameras.heights[index]), int(cameras.widths[index])
        parts = []
        for s in range(0, len(rays), 8192):
            sub = rays[s : s + 8192].to(m.aabb.device)
            samples = m._march(sub, jitter=False)
            pts = samples.positions(sub.origins, sub.directions)
            sigmas, feats = m.field.density_and_features(pts)
            # Only samples with some opacity can matter; the rest keep their (near-zero) density.
            dense = sigmas * (samples.t_ends - samples.t_starts) > 1e-4
            remove = torch.zeros_like(dense)
            remove[dense] = self._density_relevancy(pts[dense], query, negatives) >= threshold
            sigmas = sigmas * ~remove
            rgb = m.field.color(feats, sub.directions[samples.ray_indices])
            render, _ = render_rays(
                samples.t_starts, samples.t_ends, lambda *_: (rgb, sigmas), ray_indices=samples.ray_indices,
                num_rays=samples.num_rays, background=bg.expand(len(sub), 3),
            )  # fmt: skip
            parts.append(render.rgb.cpu())
        return torch.cat(parts).reshape(h, w, 3)


# ---------------------------------------------------------------------- application entry points


def train_language(
    run_dir: Union[str, Path], teacher: str = "simulated", *, rsr: bool = True, cse: bool = True, cse_rounds: int = 2,
    steps: int = 1000, masks: str = "auto", dense: str = "pyramid", strength: Optional[float] = None,
    cache_dir: Optional[Union[str, Path]] = None, device: Optional[str] = None, seed: int = 0, progress: bool = True,
    autoencoder_steps: Optional[int] = None, config=None,
) -> Dict[str, object]:  # fmt: skip
    """Train ``run_dir``'s language field (``langfield language``); writes ``run_dir/language/``.

    Returns a summary with the field path, the variant and the per-phase losses.
    """
    import dataclasses

    from langfield.io.atomic import atomic_write_json
    from langfield.language.teachers import load_teacher
    from langfield.language.training import LanguageFieldConfig, LanguageFieldTrainer
    from langfield.pipeline import load_run

    run_dir = Path(run_dir)
    run = load_run(run_dir, device)
    out = run_dir / LANGUAGE_DIR
    cache = str(cache_dir) if cache_dir is not None else str(out / "cache")
    t = load_teacher(teacher, run.dataset.labels, device=device, cache_dir=cache, method=dense, strength=strength)
    if config is None:
        config = LanguageFieldConfig(use_rsr=rsr, use_cse=cse, steps=steps, seed=seed)
        config = dataclasses.replace(
            config, cse=dataclasses.replace(config.cse, rounds=cse_rounds),
            masks=dataclasses.replace(config.masks, method=masks),
        )
        if autoencoder_steps is not None:
            config = dataclasses.replace(config, autoencoder_steps=autoencoder_steps)
    trainer = LanguageFieldTrainer(run.method, run.dataset, t, config, output_dir=out, progress=progress)
    summary = trainer.run()
    summary.update({"teacher": t.name, "simulated_teacher": bool(t.simulated), "path": str(out / FIELD_FILE)})
    atomic_write_json(summary, out / "summary.json")
    return summary


def run_queries(
    run_dir: Union[str, Path], *, text: Optional[str] = None, labels: Sequence[str] = (),
    unknown_threshold: Optional[float] = None, split: str = "test", view: int = 0, localize: bool = False,
    extract: bool = False, threshold: float = 0.55, out_dir: Optional[Union[str, Path]] = None,
    device: Optional[str] = None,
) -> Dict[str, object]:  # fmt: skip
    """``langfield query``: writes relevancy / segmentation images, localization JSON and extractions."""
    from langfield.io.atomic import atomic_write_json
    from langfield.language.queries import write_relevancy_image, write_segmentation

    if text is None and not labels:
        raise ValueError("nothing to ask: give a text query and/or --labels for segmentation")
    if text is not None:
        (text,) = check_text_queries([text], "query")
    if labels:
        labels = check_label_list(labels)
    if (localize or extract) and text is None:
        raise ValueError("--localize/--extract need a text query")
    scene = LanguageScene.load(run_dir, device)
    cams = scene.dataset.split(split).cameras
    if not 0 <= view < len(cams):
        raise ValueError(f"--view {view} is out of range: split {split!r} has {len(cams)} cameras")
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "queries"
    out.mkdir(parents=True, exist_ok=True)
    result: Dict[str, object] = {"teacher": scene.teacher.name, "simulated_teacher": bool(scene.teacher.simulated)}
    if text is not None:
        stem = "".join(c if c.isalnum() else "_" for c in text)[:40]
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
    if localize:
        loc = scene.localize(text)
        result["localization"] = {"point": loc.point.tolist(), "aabb": loc.aabb.tolist(), "num_points": loc.num_points,
                                  "frame": "dataset world"}  # fmt: skip
        atomic_write_json(result["localization"], out / f"{stem}_localization.json")
    if extract:
        result["extraction"] = {k: str(v) for k, v in scene.extract(text, out, threshold, view, split).items()}
    return result
