"""The toy world: random scenes of 1-3 coloured primitives on a textured floor, rendered exactly.

Every image comes with exact ground truth (depth, normals, semantic and instance segmentation,
silhouettes, contours), its camera, its scene graph, two captions and integer attribute targets,
so generated images can be measured against known truth. World +z is up, poses are OpenCV
camera-to-world, depth is the ray distance (docs/conventions.md); see docs/toyworld.md.

Modules: :mod:`~.scene` (config, scene graphs, :func:`sample_scene`), :mod:`~.cameras`
(:func:`sample_cameras`), :mod:`~.render` (the batched ray caster), :mod:`~.captions` (captions and
attribute labels), :mod:`~.dataset` (streaming and the on-disk format), :mod:`~.sampler` (a trainer sampler),
:mod:`~.scene_dataset` (one scene from many cameras as a reconstructable dataset folder).

>>> from langfield.data.toyworld import iter_toyworld
>>> batch = next(iter_toyworld(count=4, batch_size=4))
>>> tuple(batch.render.rgb.shape), len(batch.descriptive_captions)
((4, 32, 32, 3), 4)
"""

from langfield.data.toyworld.cameras import camera_intrinsics, sample_cameras, sample_cameras_batch, sweep_cameras
from langfield.data.toyworld.captions import (
    attribute_labels,
    describe_objects,
    descriptive_caption,
    left_to_right,
    left_to_right_batch,
    project_centers,
    short_caption,
)
from langfield.data.toyworld.dataset import (
    FORMAT,
    FORMAT_VERSION,
    ToyBatch,
    ToyWorldData,
    iter_toyworld,
    read_toyworld,
    render_scenes,
    write_toyworld,
)
from langfield.data.toyworld.render import ToyRender, render_toyworld
from langfield.data.toyworld.sampler import ToyWorldSampler
from langfield.data.toyworld.scene import (
    COLORS,
    FLOOR_PALETTES,
    FLOORS,
    PALETTE,
    SEMANTIC_LABELS,
    SHAPES,
    ToyObject,
    ToyScene,
    ToyWorldConfig,
    sample_scene,
    scene_seed,
)
from langfield.data.toyworld.scene_dataset import write_toyworld_scene

__all__ = [
    "COLORS",
    "FLOORS",
    "FLOOR_PALETTES",
    "FORMAT",
    "FORMAT_VERSION",
    "PALETTE",
    "SEMANTIC_LABELS",
    "SHAPES",
    "ToyBatch",
    "ToyObject",
    "ToyRender",
    "ToyScene",
    "ToyWorldConfig",
    "ToyWorldData",
    "ToyWorldSampler",
    "attribute_labels",
    "camera_intrinsics",
    "describe_objects",
    "descriptive_caption",
    "iter_toyworld",
    "left_to_right",
    "left_to_right_batch",
    "project_centers",
    "read_toyworld",
    "render_scenes",
    "render_toyworld",
    "sample_cameras",
    "sample_cameras_batch",
    "sweep_cameras",
    "sample_scene",
    "scene_seed",
    "short_caption",
    "write_toyworld",
    "write_toyworld_scene",
]
