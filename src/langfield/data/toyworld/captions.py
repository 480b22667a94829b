"""Captions and attribute targets of a toy-world image, from its scene graph and its camera.

Left and right are **as seen in the image**: objects are ordered by the image column ``u`` of their
projected centres (the centre of each object's bounding box, :attr:`ToyObject.center`), smallest
``u`` (leftmost) first. The camera sampler keeps those columns at least
``min_separation * W`` apart, so the order is never a coin flip.

* :func:`short_caption`: the shapes only, left to right, counted: ``"a sphere"``,
  ``"a sphere and a box"``, ``"two cones"``, ``"a box, a cone and a sphere"`` (shapes in order of
  their leftmost instance).
* :func:`descriptive_caption`: colour, shape, the left-to-right chain and the floor:
  ``"a red sphere on a checkered floor"``, ``"a red sphere left of a blue box on a striped floor"``,
  ``"a red sphere left of a blue box left of a green cone on a plain floor"``.
* :func:`attribute_labels`: integer targets for the attribute classifier: ``count`` (1-3) and,
  per **slot** (the objects sorted left to right, ``num_slots`` slots), the shape index into
  :data:`SHAPES` and the colour index into :data:`COLORS`, ``-1`` for empty slots. The slot order
  *is* the left/right relation: slot 0 is the leftmost object.

>>> from langfield.data.toyworld.scene import ToyObject, ToyScene
>>> from langfield.geometry.rotations import look_at
>>> import torch
>>> scene = ToyScene((ToyObject("sphere", "red", (0.0, 0.5), (0.3, 0.3, 0.3)),
...                   ToyObject("box", "blue", (0.0, -0.5), (0.3, 0.3, 0.3))), floor="striped")
>>> c2w = look_at(torch.tensor([-4.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 0.3]), torch.tensor([0.0, 0.0, 1.0]))
>>> camera = Cameras.create(c2w, camera_intrinsics(), 32, 32)  # looking along +x: +y is on the left
>>> short_caption(scene, camera), descriptive_caption(scene, camera)
('a sphere and a box', 'a red sphere left of a blue box on a striped floor')
>>> attribute_labels(scene, camera)
{'count': 2, 'shapes': [0, 1, -1], 'colors': [0, 5, -1], 'order': [0, 1]}
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

from langfield._checks import InputError
from langfield.data.toyworld.cameras import camera_intrinsics
from langfield.data.toyworld.scene import ToyObject, ToyScene
from langfield.generation.prompts import descriptive_caption as descriptive_caption_of
from langfield.generation.prompts import short_caption as short_caption_of
from langfield.geometry.rays import project_points
from langfield.types import Cameras

__all__ = [
    "attribute_labels",
    "describe_objects",
    "descriptive_caption",
    "left_to_right",
    "left_to_right_batch",
    "project_centers",
    "short_caption",
]

# The caption grammar is generation.prompts' (one grammar for training captions and prompt rewrites).


def _one_camera(camera: Cameras) -> Cameras:
    if not isinstance(camera, Cameras):
        raise InputError(f"camera: expected langfield.types.Cameras, got {type(camera).__name__}")
    if len(camera) != 1:
        raise InputError(f"camera: expected a single camera (index the batch: cameras[i]), got {len(camera)}")
    return camera


def project_centers(scene: ToyScene, camera: Cameras) -> Tensor:
    """``[n, 3]`` image ``(u, v)`` pixel coordinates and camera ``z`` of each object's centre (OpenCV camera)."""
    camera = _one_camera(camera)
    centres = torch.tensor([o.center for o in scene.objects], dtype=torch.float64)
    pixels, z = project_points(centres, camera.c2w[0].double(), camera.Ks[0].double())
    return torch.cat([pixels, z[:, None]], -1)


def left_to_right_batch(scenes: Sequence[ToyScene], cameras: Cameras) -> List[List[int]]:
    """:func:`left_to_right` of image ``b`` = ``scenes[b]`` seen by ``cameras[b]``, vectorised over the batch."""
    if not isinstance(cameras, Cameras) or len(cameras) != len(scenes):
        raise InputError(f"cameras: expected one camera per scene ({len(scenes)}), got {cameras!r:.80}")
    num_k = max(len(s.objects) for s in scenes)
    centres = torch.tensor(
        [[o.center for o in s.objects] + [(0.0, 0.0, 0.0)] * (num_k - len(s.objects)) for s in scenes], dtype=torch.float64
    )
    u = project_points(centres, cameras.c2w.double(), cameras.Ks.double())[0][..., 0].tolist()
    return [sorted(range(len(s.objects)), key=lambda i, ub=ub: (ub[i], i)) for s, ub in zip(scenes, u)]


def left_to_right(scene: ToyScene, camera: Cameras) -> List[int]:
    """Object indices sorted by the image column of their projected centres (leftmost first; ties by index)."""
    return left_to_right_batch([scene], _one_camera(camera))[0]


def _short(objects: Sequence[ToyObject]) -> str:
    return short_caption_of([o.shape for o in objects])


def describe_objects(objects: Sequence[ToyObject], floor: Optional[str] = None) -> str:
    """The descriptive caption of ``objects`` already sorted left to right: ``"a red sphere left of a blue box"``,
    plus ``" on a <floor> floor"`` when ``floor`` is given.

    >>> describe_objects([ToyObject("cone", "green", (0, 0), (0.3, 0.3, 0.4))], "plain")
    'a green cone on a plain floor'
    >>> describe_objects([ToyObject("box", "orange", (0, 0), (0.3, 0.3, 0.3))])
    'an orange box'
    """
    if not objects:
        raise InputError("objects: expected at least one object")
    return descriptive_caption_of([(o.color, o.shape) for o in objects], floor)


def _order(scene: ToyScene, camera: Optional[Cameras], order: Optional[Sequence[int]], need_camera: bool) -> List[int]:
    if order is not None:
        order = [int(i) for i in order]
        if sorted(order) != list(range(len(scene.objects))):
            raise InputError(f"order: {order} is not a permutation of the scene's {len(scene.objects)} object indices")
        return order
    if camera is None:
        if need_camera:
            raise InputError("camera: needed (left and right depend on it), or pass order=")
        return list(range(len(scene.objects)))
    return left_to_right(scene, camera)


def short_caption(scene: ToyScene, camera: Optional[Cameras] = None, *, order: Optional[Sequence[int]] = None) -> str:
    """Shapes only, counted, in left-to-right order of first appearance (scene order without a camera).

    ``order`` (a precomputed :func:`left_to_right`) replaces ``camera``.
    """
    return _short([scene.objects[i] for i in _order(scene, camera, order, need_camera=False)])


def descriptive_caption(scene: ToyScene, camera: Optional[Cameras] = None, *, order: Optional[Sequence[int]] = None) -> str:
    """Colour + shape of every object, chained left to right with "left of", and the floor texture.

    Needs ``camera`` or a precomputed ``order`` (:func:`left_to_right`).
    """
    return describe_objects([scene.objects[i] for i in _order(scene, camera, order, need_camera=True)], scene.floor)


def attribute_labels(
    scene: ToyScene, camera: Optional[Cameras] = None, num_slots: int = 3, *, order: Optional[Sequence[int]] = None
) -> Dict[str, object]:
    """Integer targets of one image: ``count``, per-slot ``shapes`` and ``colors`` (``-1`` = empty slot)
    and ``order`` (the object index in each filled slot).

    Slots hold the objects sorted left to right in the image, so slot order encodes left/right.
    Needs ``camera`` or a precomputed ``order`` (:func:`left_to_right`).
    """
    if num_slots < len(scene.objects):
        raise InputError(f"num_slots: {num_slots} slots cannot hold {len(scene.objects)} objects")
    order = _order(scene, camera, order, need_camera=True)
    pad = [-1] * (num_slots - len(order))
    return {
        "count": len(order),
        "shapes": [scene.objects[i].shape_index for i in order] + pad,
        "colors": [scene.objects[i].color_index for i in order] + pad,
        "order": order,
    }
