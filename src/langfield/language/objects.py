"""Objects of a language scene: class-agnostic 3D grouping of surface points, named with language.

:meth:`LanguageScene.localize <langfield.language.scene.LanguageScene.localize>` places one query
by its most relevant pixels, so an object the field partly mistakes for another (a teacher that
calls the ellipsoid "sphere" from many directions) drags the other's point and box with it. This
module instead finds the scene's objects *from geometry first* and names them afterwards, the
object-centric order of open-vocabulary 3D scene graphs (e.g. ConceptGraphs, Gu et al. 2024:
class-agnostic segments fused into 3D objects, each described by its mean language feature) with
the classical support-plane + Euclidean-clustering segmentation of tabletop point clouds
(Rusu et al., "Semantic 3D object maps", 2008) as the class-agnostic step:

1. **Surface points** (:meth:`LanguageScene.objects`): rendered views are back-projected with
   their depth (pixels with accumulation ``>= 0.5``), keeping each point's view index and its
   label probabilities ``softmax(temperature * cos(f, text_l))`` over the vocabulary.
   **Multi-view depth consistency** (:func:`depth_consistent`): a point is kept when at least
   ``min_agreeing_views`` other rendered views see a surface at its distance (relative tolerance
   ``depth_tolerance``) and at most ``max_see_through`` of the views that decide either way look
   *past* it (they see nothing there, or a surface behind it: the point lies in their free
   space). Expected depth puts "flying pixels" between a silhouette and what is behind it;
   other views see through them, so they are dropped here before they can bridge two objects
   (the agreement test of depth-map fusion, e.g. COLMAP's ``StereoFusion``, Schönberger et al.
   2016, Sec. 4.5, with the free-space violations of visibility-based fusion, Merrell et al.
   2007, Sec. 4). On the procedural scene's 150 s Instant-NGP reconstruction this is what keeps
   the ellipsoid apart from the cylinder (they joined through such points).
2. **Support surface** (:func:`fit_support_plane`): RANSAC over planes whose normal is within
   ``max_tilt_deg`` of ``up`` (a floor or a table top) and that have at most
   ``max_below_fraction`` (0.3) of the points below them (a support holds things up; without this
   test a plane through the tops of two objects could win; the procedural scene's floor, a slab
   whose sides the low cameras see, has 12 % below it), refined by least squares on its inliers
   (distance ``<= plane_tol * extent``; ``extent`` = the diagonal of the points' 1st-99th
   percentile box). Points more than the tolerance *below* it (a slab's sides, depth noise under
   the floor) are dropped. The support is the points from the tolerance below it to a noise band
   above it: ``max(tol, median + support_band_sigmas * sigma)`` of the inliers' heights, ``sigma``
   = 1.4826 x their median absolute deviation (a robust standard deviation), so that a noisy
   reconstructed floor (Instant-NGP's at short budgets) does not leave a carpet of points that
   joins every object to its neighbours. Objects lose their lowest band (their boxes start
   there). A scene without a floor (an object captured alone) may still offer a plane that passes
   these tests (a base, a flat top): raise ``min_support_fraction`` there.
3. **Grouping** (:func:`group_points`): the other points are binned in voxels of
   ``voxel * extent``; a voxel is occupied when points of at least ``min_views`` different views
   fall in it (the "flying pixels" that expected depth puts between an object and what is behind
   it move with the viewpoint, so they are dropped); occupied voxels are joined into 26-connected
   components; a component with fewer than ``min_fraction`` of all points is dropped. Objects
   closer than about two voxels (``extent / 24`` by default) can join: on the procedural scene
   the ellipsoid and the cylinder stand ~0.12 units apart and join in some reconstructions.
4. **Description**: each object's box is the per-axis 2nd-98th percentile of its points, its
   point the box centre, its label scores the mean label probabilities of its points, its
   feature the normalised mean of its points' features (for text that is not in the vocabulary).
5. **Naming** (:func:`assign_names`): ``"exclusive"`` (default) gives each vocabulary name to at
   most one object and each object at most one name so that the expected number of surface points
   whose label agrees with their object's name, ``sum_objects sum_points p(name | point)``, is
   largest (the Hungarian algorithm, :func:`scipy.optimize.linear_sum_assignment`, on the
   per-object sums of the probabilities). It encodes the prior that a name denotes one object
   ("*the* sphere"): an object the field partly takes for a bigger one keeps the name nobody else
   fits. ``"argmax"``: each object takes the name with its highest mean probability (names may
   repeat or be missing). The support takes part in the naming like any object, so the vocabulary
   should name it too ("ground", "table"); otherwise it takes the object name it fits best.

Everything here is pure tensor code on points already computed (CPU, float64 geometry); all
lengths are in the frame of the points given (the cameras' normalised frame in the scene).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from langfield._checks import InputError, check_finite_number
from langfield.geometry.rays import project_points
from langfield.language.queries import label_colors, name_key
from langfield.types import Cameras

__all__ = ["ObjectMapConfig", "SceneObject", "ObjectMap", "depth_consistent", "fit_support_plane", "group_points", "assign_names",
           "build_object_map", "draw_object_map"]  # fmt: skip

ASSIGNMENTS = ("exclusive", "argmax")


@dataclass(frozen=True)
class ObjectMapConfig:
    """Options of :func:`build_object_map` and :meth:`LanguageScene.objects`.

    Attributes:
        max_views: evenly spaced views of the split that are rendered and back-projected.
        max_points: most surface points kept over all views (a regular pixel stride per view).
        depth_tolerance: relative distance within which another view's rendered surface agrees
            with a point (:func:`depth_consistent`).
        min_agreeing_views: other views that must agree with a point for it to be kept (0: no
            depth-consistency filter).
        max_see_through: largest fraction of the deciding views (agreeing or looking past the
            point) that may look past it.
        plane_tol: support-plane inlier distance, as a fraction of the points' extent.
        max_tilt_deg: largest angle between a support plane's normal and ``up``.
        min_support_fraction: the support plane must hold this fraction of the points, else there is none.
        max_below_fraction: largest fraction of the points that may lie below the support plane.
        support_band_sigmas: the support's noise band above the plane, in robust standard
            deviations of the inliers' heights (0: the plane tolerance only).
        ransac_iters: plane hypotheses tried (seeded by ``seed``; deterministic).
        voxel: grouping voxel edge, as a fraction of the extent.
        min_views: distinct views that must see a voxel for it to count as occupied.
        min_fraction: smallest object, as a fraction of all surface points.
        percentiles: per-axis percentiles of an object's points that make its box.
        temperature: softmax scale of the label probabilities (as :func:`queries.segment`).
        assignment: ``"exclusive"`` or ``"argmax"`` naming (module docstring).
        seed: RANSAC seed.
    """

    max_views: int = 12
    max_points: int = 65536
    depth_tolerance: float = 0.03
    min_agreeing_views: int = 1
    max_see_through: float = 0.5
    plane_tol: float = 0.015
    max_tilt_deg: float = 20.0
    min_support_fraction: float = 0.1
    max_below_fraction: float = 0.3
    support_band_sigmas: float = 3.0
    ransac_iters: int = 256
    voxel: float = 1.0 / 48.0
    min_views: int = 2
    min_fraction: float = 0.003
    percentiles: Tuple[float, float] = (2.0, 98.0)
    temperature: float = 10.0
    assignment: str = "exclusive"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("max_views", "max_points", "ransac_iters", "min_views"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"ObjectMapConfig.{name} must be an integer >= 1, got {v!r}")
        if isinstance(self.min_agreeing_views, bool) or not isinstance(self.min_agreeing_views, int) or self.min_agreeing_views < 0:
            raise InputError(f"ObjectMapConfig.min_agreeing_views must be an integer >= 0, got {self.min_agreeing_views!r}")
        check_finite_number(self.depth_tolerance, "ObjectMapConfig.depth_tolerance", lo=0, hi=1, lo_inclusive=False)
        check_finite_number(self.max_see_through, "ObjectMapConfig.max_see_through", lo=0, hi=1)
        check_finite_number(self.plane_tol, "ObjectMapConfig.plane_tol", lo=0, hi=1)
        check_finite_number(self.max_tilt_deg, "ObjectMapConfig.max_tilt_deg", lo=0, hi=90)
        check_finite_number(self.min_support_fraction, "ObjectMapConfig.min_support_fraction", lo=0, hi=1)
        check_finite_number(self.max_below_fraction, "ObjectMapConfig.max_below_fraction", lo=0, hi=1)
        check_finite_number(self.support_band_sigmas, "ObjectMapConfig.support_band_sigmas", lo=0)
        check_finite_number(self.voxel, "ObjectMapConfig.voxel", lo=1e-4, hi=1)
        check_finite_number(self.min_fraction, "ObjectMapConfig.min_fraction", lo=0, hi=1)
        check_finite_number(self.temperature, "ObjectMapConfig.temperature", lo=1e-6)
        lo, hi = self.percentiles
        if not 0 <= lo <= hi <= 100:
            raise InputError(f"ObjectMapConfig.percentiles must satisfy 0 <= lo <= hi <= 100, got {self.percentiles}")
        if self.assignment not in ASSIGNMENTS:
            raise InputError(f"ObjectMapConfig.assignment must be one of {ASSIGNMENTS}, got {self.assignment!r}")


@dataclass
class SceneObject:
    """One grouped object (frame of the points it was built from).

    Attributes:
        index: its position in :attr:`ObjectMap.objects` (the support, when found, is 0).
        name: the vocabulary name it was given, or ``None``.
        point: ``[3]`` float64 centre of its box.
        aabb: ``[2, 3]`` float64 box (min, max): per-axis percentiles of its points.
        num_points: surface points in it.
        num_views: views that saw it.
        scores: ``{name: mean label probability}`` over the vocabulary.
        feature: ``[E]`` float32 unit mean language feature of its points.
        support: whether it is the support plane.
        best_name: the name with its highest mean probability; differs from ``name`` when the
            exclusive assignment named it by elimination (another object holds its best name).
    """

    index: int
    name: Optional[str]
    point: Tensor
    aabb: Tensor
    num_points: int
    num_views: int
    scores: Dict[str, float]
    feature: Tensor
    support: bool = False
    best_name: Optional[str] = None

    def as_dict(self) -> dict:
        """JSON-ready summary (no feature)."""
        return {"index": self.index, "name": self.name, "point": self.point.tolist(), "aabb": self.aabb.tolist(),
                "num_points": self.num_points, "num_views": self.num_views, "support": self.support, "best_name": self.best_name,
                "scores": {k: round(v, 4) for k, v in self.scores.items()}}  # fmt: skip


@dataclass
class ObjectMap:
    """The objects of a scene and how they were named.

    Attributes:
        objects: the grouped objects (support first when found).
        vocabulary: the names that were assigned.
        assignment: ``"exclusive"`` or ``"argmax"``.
        plane: ``[4]`` float64 support plane ``(n, d)`` with ``n . x + d = 0`` and ``n . up > 0``, or ``None``.
        num_points: surface points grouped.
        extras: ``plane_tol`` and ``support_band`` (heights above the plane that count as support;
            ``None`` without a plane), in the points' units.
    """

    objects: List[SceneObject]
    vocabulary: List[str]
    assignment: str
    plane: Optional[Tensor] = None
    num_points: int = 0
    extras: dict = field(default_factory=dict)

    def named(self, name: str) -> List[SceneObject]:
        """The objects called ``name`` (case- and space-insensitive; may be empty)."""
        key = name_key(name)
        return [o for o in self.objects if o.name is not None and name_key(o.name) == key]


def _extent(points: Tensor) -> float:
    q = torch.quantile(points, torch.tensor([0.01, 0.99], dtype=points.dtype), dim=0)
    return max(float((q[1] - q[0]).norm()), 1e-9)


def depth_consistent(
    points: Tensor, views: Tensor, depths: Tensor, accumulations: Tensor, cameras: Cameras, *, tolerance: float = 0.03,
    min_agreeing: int = 1, max_see_through: float = 0.5, min_accumulation: float = 0.5,
) -> Tensor:  # fmt: skip
    """Which back-projected points the other rendered views confirm (module docstring, step 1).

    Point ``X`` of view ``i`` is projected into every other view ``j``
    (:func:`langfield.geometry.rays.project_points`, with the cameras' distortion; nearest
    pixel). Where it lands inside image ``j`` in front of the camera, with ``r = |X - o_j|`` and
    ``d`` the depth (ray distance) view ``j`` rendered there:

    * **agrees** when the pixel is opaque (accumulation ``>= min_accumulation``) and
      ``|r - d| <= tolerance * d``;
    * **sees through** when the pixel is not opaque or ``r < (1 - tolerance) * d`` (view ``j``
      sees a surface behind ``X``);
    * otherwise ``X`` is hidden from view ``j`` (no vote).

    Args:
        points: ``[N, 3]`` points in the cameras' frame.
        views: ``[N]`` int index (into ``cameras``) of the view each point came from.
        depths: ``[V, H, W]`` rendered ray distances of the ``V`` views.
        accumulations: ``[V, H, W]`` their opacities.
        cameras: the ``V`` cameras (one image size).
        tolerance: relative depth tolerance; min_agreeing: agreeing views needed;
        max_see_through: largest see-through share of the deciding views.

    Returns:
        ``[N]`` bool: ``agree >= min_agreeing and see_through <= max_see_through * (agree + see_through)``.
    """
    num_views, h, w = depths.shape
    if accumulations.shape != depths.shape or len(cameras) != num_views or points.shape[0] != views.shape[0]:
        raise InputError(f"depth_consistent: depths {tuple(depths.shape)}, accumulations {tuple(accumulations.shape)}, "
                         f"{len(cameras)} cameras, {points.shape[0]} points and {views.shape[0]} view ids do not match")  # fmt: skip
    p = points.double()
    agree = torch.zeros(p.shape[0], dtype=torch.long)
    through = torch.zeros(p.shape[0], dtype=torch.long)
    for j in range(num_views):
        c2w = cameras.c2w[j].double()
        dist = cameras.dist[j].double() if cameras.has_distortion else None
        pixels, z = project_points(p, c2w, cameras.Ks[j].double(), dist)
        u, v = pixels[:, 0], pixels[:, 1]
        inside = (z > 1e-9) & (views != j) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        col = torch.where(inside, u, 0.0).floor().long().clamp(0, w - 1)
        row = torch.where(inside, v, 0.0).floor().long().clamp(0, h - 1)
        d = depths[j].double()[row, col]
        opaque = accumulations[j][row, col] >= min_accumulation
        r = (p - c2w[:3, 3]).norm(dim=1)
        agree += (inside & opaque & ((r - d).abs() <= tolerance * d)).long()
        through += (inside & (~opaque | (r < (1.0 - tolerance) * d))).long()
    return (agree >= min_agreeing) & (through <= max_see_through * (agree + through))


def fit_support_plane(
    points: Tensor, up: Tensor, *, tol: float, max_tilt_deg: float = 20.0, min_fraction: float = 0.1, max_below: float = 0.3,
    iters: int = 256, seed: int = 0,
) -> Optional[Tensor]:  # fmt: skip
    """RANSAC plane with a normal within ``max_tilt_deg`` of ``up`` (module docstring, step 2).

    Args:
        points: ``[N, 3]`` points.
        up: ``[3]`` up direction.
        tol: inlier distance (same units as the points).
        max_tilt_deg: largest angle between the normal and ``up``.
        min_fraction: the best plane must hold this fraction of the points, else ``None``.
        max_below: planes with more than this fraction of the points below them (signed distance
            ``< -tol`` along ``up``) are not candidates.
        iters: hypotheses (three points each), drawn with ``torch.Generator().manual_seed(seed)``.

    Returns:
        ``[4]`` float64 ``(n, d)``, ``|n| = 1``, ``n . up > 0``, ``n . x + d = 0`` on the plane; or ``None``.
    """
    p = points.double()
    n_pts = p.shape[0]
    if n_pts < 3:
        return None
    up = up.double().reshape(3) / up.double().norm()
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.randint(0, n_pts, (iters, 3), generator=gen)
    a, b, c = p[idx[:, 0]], p[idx[:, 1]], p[idx[:, 2]]
    n = torch.linalg.cross(b - a, c - a)
    norm = n.norm(dim=1, keepdim=True)
    ok = norm[:, 0] > 1e-12
    n = n / norm.clamp_min(1e-12)
    n = torch.where((n @ up)[:, None] < 0, -n, n)
    ok &= (n @ up) >= math.cos(math.radians(max_tilt_deg))
    if not bool(ok.any()):
        return None
    n, a = n[ok], a[ok]
    d = -(n * a).sum(dim=1)
    best_n, best_d, best_count = None, None, -1
    for start in range(0, n.shape[0], 32):  # [32, N] distances at a time
        signed = p @ n[start:start + 32].T + d[start:start + 32]
        counts = (signed.abs() <= tol).sum(dim=0)
        counts = torch.where((signed < -tol).sum(dim=0) > max_below * n_pts, -1, counts)
        k = int(counts.argmax())
        if int(counts[k]) > best_count:
            best_n, best_d, best_count = n[start + k], d[start + k], int(counts[k])
    if best_n is None or best_count < max(3, min_fraction * n_pts):
        return None
    inliers = (p @ best_n + best_d).abs() <= tol
    q = p[inliers]
    centre = q.mean(dim=0)
    normal = torch.linalg.svd(q - centre, full_matrices=False).Vh[-1]  # least-squares refinement
    if float(normal @ up) < 0:
        normal = -normal
    if float(normal @ up) < math.cos(math.radians(max_tilt_deg)):
        normal = best_n
    return torch.cat([normal, -(normal @ centre).reshape(1)])


def group_points(points: Tensor, views: Tensor, *, voxel: float, min_views: int = 2, min_points: int = 1) -> Tensor:
    """Class-agnostic components of a point cloud (module docstring, step 3).

    Args:
        points: ``[N, 3]`` points.
        views: ``[N]`` int view index of each point.
        voxel: voxel edge (units of the points).
        min_views: distinct views a voxel needs to be occupied.
        min_points: smallest component kept.

    Returns:
        ``[N]`` int64 component id (``0..K-1``, largest first) or ``-1`` (dropped).
    """
    from scipy import ndimage  # scipy is a dependency of scikit-image; used here for 3D labelling

    out = torch.full((points.shape[0],), -1, dtype=torch.long)
    if points.shape[0] == 0:
        return out
    p = points.double()
    lo = p.min(dim=0).values
    size = max(float(voxel), float((p.max(dim=0).values - lo).max()) / 256.0)  # at most 256 voxels a side
    ijk = ((p - lo) / size).floor().long()
    dims = (ijk.max(dim=0).values + 1).tolist()
    flat = (ijk[:, 0] * dims[1] + ijk[:, 1]) * dims[2] + ijk[:, 2]
    num_views = int(views.max()) + 1
    pairs = torch.unique(flat * num_views + views.long())  # distinct (voxel, view)
    vox, seen = torch.unique(pairs // num_views, return_counts=True)
    occupied = np.zeros(int(np.prod(dims)), dtype=bool)
    occupied[vox[seen >= min_views].numpy()] = True
    labels, num = ndimage.label(occupied.reshape(dims), structure=np.ones((3, 3, 3), dtype=bool))
    comp = torch.from_numpy(labels.reshape(-1).astype(np.int64))[flat] - 1  # -1 where unoccupied
    if num == 0:
        return out
    counts = torch.bincount(comp[comp >= 0], minlength=num)
    order = torch.argsort(counts, descending=True, stable=True)
    keep = order[counts[order] >= min_points]
    remap = torch.full((num,), -1, dtype=torch.long)
    remap[keep] = torch.arange(keep.numel())
    out[comp >= 0] = remap[comp[comp >= 0]]
    return out


def assign_names(scores: Tensor, assignment: str = "exclusive") -> List[Optional[int]]:
    """Name index per object from ``scores [O, L]`` (module docstring, step 5); ``None`` = unnamed."""
    if assignment not in ASSIGNMENTS:
        raise InputError(f"assignment must be one of {ASSIGNMENTS}, got {assignment!r}")
    num_obj, num_names = scores.shape
    if num_obj == 0 or num_names == 0:
        return [None] * num_obj
    if assignment == "argmax":
        return [int(i) for i in scores.argmax(dim=1)]
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(scores.double().numpy(), maximize=True)
    out: List[Optional[int]] = [None] * num_obj
    for r, c in zip(rows.tolist(), cols.tolist()):
        out[r] = c
    return out


def build_object_map(
    points: Tensor, views: Tensor, probs: Tensor, features: Tensor, vocabulary: Sequence[str], up: Tensor, config: ObjectMapConfig = ObjectMapConfig()
) -> ObjectMap:
    """Group surface points into objects and name them (module docstring, steps 2-5).

    Args:
        points: ``[N, 3]`` surface points.
        views: ``[N]`` int view index of each point.
        probs: ``[N, L]`` label probabilities of each point over ``vocabulary``.
        features: ``[N, E]`` language features of each point.
        vocabulary: the ``L`` names.
        up: ``[3]`` up direction of the frame.
        config: :class:`ObjectMapConfig`.
    """
    n = points.shape[0]
    if points.ndim != 2 or points.shape[1] != 3 or views.shape != (n,) or probs.shape != (n, len(vocabulary)) or features.shape[0] != n:
        raise InputError(f"build_object_map: points [N, 3], views [N], probs [N, {len(vocabulary)}], features [N, E] expected, got "
                         f"{tuple(points.shape)}, {tuple(views.shape)}, {tuple(probs.shape)}, {tuple(features.shape)}")  # fmt: skip
    if n < 3:
        raise InputError(f"build_object_map: only {n} surface point(s); nothing to group (is anything in view?)")
    p = points.double()
    extent = _extent(p)
    tol = config.plane_tol * extent
    plane = fit_support_plane(p, up, tol=tol, max_tilt_deg=config.max_tilt_deg, min_fraction=config.min_support_fraction,
                              max_below=config.max_below_fraction, iters=config.ransac_iters, seed=config.seed)  # fmt: skip
    groups: List[Tensor] = []
    band = None
    support = False
    rest = torch.ones(n, dtype=torch.bool)
    if plane is not None:
        height = p @ plane[:3] + plane[3]
        inl = height[height.abs() <= tol]
        med = inl.median()
        sigma = 1.4826 * (inl - med).abs().median()
        band = max(tol, float(med + config.support_band_sigmas * sigma))
        groups.append((height >= -tol) & (height <= band))
        support = True
        rest = height > band
    min_points = max(1, int(math.ceil(config.min_fraction * n)))
    comp = torch.full((n,), -1, dtype=torch.long)
    idx = rest.nonzero()[:, 0]
    comp[idx] = group_points(p[idx], views[idx], voxel=config.voxel * extent, min_views=config.min_views, min_points=min_points)
    for k in range(int(comp.max()) + 1 if bool((comp >= 0).any()) else 0):
        groups.append(comp == k)
    lo_q, hi_q = config.percentiles[0] / 100.0, config.percentiles[1] / 100.0
    objects: List[SceneObject] = []
    score_rows = []
    for g in groups:
        q = p[g]
        box = torch.quantile(q, torch.tensor([lo_q, hi_q], dtype=torch.float64), dim=0)
        mean_probs = probs[g].double().mean(dim=0)
        score_rows.append(mean_probs)
        feat = features[g].float().mean(dim=0)
        objects.append(SceneObject(
            index=len(objects), name=None, point=box.mean(dim=0), aabb=box, num_points=int(g.sum()),
            num_views=int(torch.unique(views[g]).numel()), scores=dict(zip(vocabulary, mean_probs.tolist())),
            feature=feat / feat.norm().clamp_min(1e-12), support=support and not objects,
        ))  # fmt: skip
    mean_scores = torch.stack(score_rows) if score_rows else torch.zeros(0, len(vocabulary), dtype=torch.float64)
    counts = torch.tensor([float(o.num_points) for o in objects], dtype=torch.float64)
    weighted = mean_scores * counts[:, None] if config.assignment == "exclusive" else mean_scores  # summed probabilities
    names = assign_names(weighted, config.assignment)
    for o, k, best in zip(objects, names, mean_scores.argmax(dim=1).tolist() if objects else []):
        o.name = vocabulary[k] if k is not None else None
        o.best_name = vocabulary[best]
    return ObjectMap(objects, list(vocabulary), config.assignment, plane, n, {"plane_tol": tol, "support_band": band})


# 12 edges of a box by corner index (bit 0: x, bit 1: y, bit 2: z; corner 0 = min, 7 = max).
_BOX_EDGES = [(a, a | bit) for a in range(8) for bit in (1, 2, 4) if not a & bit]


def draw_object_map(rgb: Tensor, object_map: ObjectMap, c2w: Tensor, K: Tensor) -> np.ndarray:
    """``uint8 [H, W + legend, 3]``: ``rgb [H, W, 3]`` (floats in ``[0, 1]``) of a camera with every
    object's box drawn as a wireframe in its colour (support: thin), and a legend panel (name,
    or ``object N`` when unnamed; ``*`` marks a name given by elimination; the number of points).

    ``c2w [3|4, 4]`` (OpenCV) and ``K [3, 3]`` are the camera's, in the frame of the map's points.
    Edges with an end behind the camera are left out.
    """
    from PIL import Image, ImageDraw, ImageFont

    img = (rgb.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    h, w = img.shape[:2]
    c2w = torch.as_tensor(c2w).double()[:3]
    K = torch.as_tensor(K).double()
    palette = label_colors(max(1, len(object_map.objects))).tolist()
    canvas = Image.fromarray(img).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    unit = torch.tensor([[(i >> b) & 1 for b in range(3)] for i in range(8)], dtype=torch.float64)
    entries = []
    for o, colour in zip(object_map.objects, palette):
        corners = o.aabb[0] + unit * (o.aabb[1] - o.aabb[0])
        uv, z = project_points(corners, c2w, K)
        for a, b in _BOX_EDGES:
            if z[a] > 1e-6 and z[b] > 1e-6:
                draw.line([tuple(uv[a].tolist()), tuple(uv[b].tolist())], fill=tuple(colour), width=1 if o.support else 2)
        label = o.name if o.name is not None else f"object {o.index}"
        mark = "*" if o.name is not None and o.name != o.best_name else ""
        entries.append((f"{label}{mark} ({o.num_points} pts){' support' if o.support else ''}", colour))
    if any(o.name is not None and o.name != o.best_name for o in object_map.objects):
        entries.append(("* named by elimination", None))
    row_h, swatch, pad = 14, 10, 4
    text_w = max([int(np.ceil(draw.textlength(t_, font=font))) for t_, _ in entries] or [0])
    panel = Image.new("RGB", (w + pad * 3 + swatch + text_w, max(h, pad + row_h * len(entries))), (32, 32, 32))
    panel.paste(canvas, (0, 0))
    pd = ImageDraw.Draw(panel)
    for i, (text, colour) in enumerate(entries):
        y = pad + i * row_h
        if colour is not None:
            pd.rectangle([w + pad, y + 1, w + pad + swatch - 1, y + swatch], fill=tuple(colour), outline=(255, 255, 255))
        pd.text((w + 2 * pad + swatch, y), text, fill=(255, 255, 255), font=font)
    return np.asarray(panel)
