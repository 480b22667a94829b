"""One toy-world scene seen from many cameras, written as a dataset langfield reconstructs (``--data DIR``).

The toy world's images are one view per scene; the 3D-aware control experiments (issue 14, E4) need
a *scene* in the same domain -- the ControlNets and the fidelity instruments were trained on toy-world
renders, so a scene of plain-coloured primitives on a toy floor, rendered by the same ray caster,
is the one on which an E3 instrument can read back control fidelity across views.

:func:`write_toyworld_scene` samples one scene (:func:`~langfield.data.toyworld.scene.sample_scene`),
``train + val + test`` cameras with the toy world's own camera sampler (every object framed and mostly
visible, azimuth uniform on the circle; :mod:`~langfield.data.toyworld.cameras`) at ``image_size``
pixels, renders them exactly (:func:`~langfield.data.toyworld.render.render_toyworld`) and writes the
NeRF-synthetic-style layout of :func:`~langfield.data.procedural.write_procedural_dataset`::

    out_dir/transforms_{train,val,test}.json     OpenGL c2w transform_matrix, camera_angle_x, fl_x ... h
    out_dir/{split}/r_{i:03d}.png                RGBA, straight alpha: 0 on the sky, 1 on the floor and objects
    out_dir/{split}/r_{i:03d}_semantic.png       uint8 ids into "labels" (SEMANTIC_LABELS: sky, floor, shapes)
    out_dir/{split}/r_{i:03d}_depth.npy          float32 [H, W] ray distance, 0 on the sky

Each json also holds ``near`` / ``far`` (the rendered depths' range, padded), ``scene_box`` (the
floor square up to the tallest object), ``world_up`` ``[0, 0, 1]``, ``objects`` (name, e.g.
``"red sphere"``, and world box), ``caption`` (the scene's descriptive caption from the first
training camera, in the toy world's caption vocabulary: a prompt the toy models know),
``toyworld_scene_seed`` and ``toyworld_scene`` (the scene itself, :meth:`ToyScene.to_dict`).

Descriptive captions are view-dependent ("a red sphere left of a blue box"): from another camera the
order can flip. :func:`scene_captions` gives the caption of a written scene as seen from any cameras
(e.g. the cameras of a path rendered from its reconstruction).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Dict, List, Union

import numpy as np
import torch

from langfield._checks import InputError, check_int_range
from langfield.data.toyworld.cameras import sample_cameras
from langfield.data.toyworld.captions import descriptive_caption
from langfield.data.toyworld.render import render_toyworld, scene_tensors
from langfield.data.toyworld.scene import SEMANTIC_LABELS, ToyScene, ToyWorldConfig, sample_scene
from langfield.types import Cameras
from langfield.geometry.conventions import opencv_to_opengl, to_homogeneous
from langfield.io.atomic import atomic_write_json

__all__ = ["read_toyworld_scene", "scene_captions", "write_toyworld_scene"]

SPLITS = ("train", "val", "test")


def _object_boxes(scene) -> List[Dict[str, object]]:
    """Each object's name (``"<colour> <shape>"``) and world axis-aligned box of its yawed extents."""
    st = scene_tensors([scene])
    out = []
    for k, obj in enumerate(scene.objects):
        c, s = st.center[0, k], st.size[0, k]
        cy, sy = abs(float(st.cos_yaw[0, k])), abs(float(st.sin_yaw[0, k]))
        half = torch.tensor([cy * float(s[0]) + sy * float(s[1]), sy * float(s[0]) + cy * float(s[1]), float(s[2])])
        out.append({"name": f"{obj.color} {obj.shape}", "aabb": [(c - half).tolist(), (c + half).tolist()]})
    return out


def write_toyworld_scene(
    out_dir: Union[str, Path],
    scene: int = 0,
    *,
    train_views: int = 32,
    val_views: int = 4,
    test_views: int = 4,
    image_size: int = 64,
    config: ToyWorldConfig = ToyWorldConfig(),
) -> Path:
    """Write toy-world scene ``scene`` (its seed) seen from ``train + val + test`` cameras (module docstring).

    Returns:
        ``out_dir``.

    Raises:
        InputError: a negative seed, fewer than 2 training views or 1 val/test view, or an image size
            the toy world refuses.
    """
    seed = check_int_range(scene, "scene", lo=0)
    counts = {"train": check_int_range(train_views, "train_views", lo=2), "val": check_int_range(val_views, "val_views", lo=1),
              "test": check_int_range(test_views, "test_views", lo=1)}  # fmt: skip
    if not isinstance(config, ToyWorldConfig):
        raise InputError(f"config: expected a ToyWorldConfig, got {type(config).__name__}")
    config = dataclasses.replace(config, image_size=check_int_range(image_size, "image_size", lo=8, hi=512))
    toy = sample_scene(seed, config)
    cams = sample_cameras(toy, sum(counts.values()), config)
    render = render_toyworld([toy], cams, config)
    depth = render.depth
    hit = depth[depth > 0]
    if hit.numel() == 0:
        raise InputError(f"scene {seed}: no camera sees the floor or an object")
    near, far = 0.5 * float(hit.min()), 1.5 * float(hit.max())
    objects = _object_boxes(toy)
    top = max(b["aabb"][1][2] for b in objects)
    extent = float(config.floor_extent)
    scene_box = [[-extent, -extent, -0.05], [extent, extent, top + 0.1]]
    caption = descriptive_caption(toy, cams[0:1])
    K = cams.Ks[0]
    fx, fy, cx, cy = (float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))
    c2w_gl = to_homogeneous(opencv_to_opengl(cams.c2w))
    out = Path(out_dir)
    start = 0
    import imageio.v3 as iio

    for split in SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for j in range(counts[split]):
            i = start + j
            stem = f"{split}/r_{j:03d}"
            rgb = np.round(render.rgb[i].clamp(0, 1).numpy() * 255.0).astype(np.uint8)
            alpha = ((depth[i] > 0).numpy() * 255).astype(np.uint8)[..., None]
            iio.imwrite(out / f"{stem}.png", np.concatenate([rgb, alpha], -1))
            iio.imwrite(out / f"{stem}_semantic.png", render.semantic[i].to(torch.uint8).numpy())
            np.save(out / f"{stem}_depth.npy", depth[i].numpy().astype(np.float32))
            frames.append({"file_path": f"./{stem}", "transform_matrix": c2w_gl[i].tolist(),
                           "semantic_path": f"./{stem}_semantic.png", "depth_path": f"./{stem}_depth.npy"})  # fmt: skip
        start += counts[split]
        meta = {
            "camera_angle_x": 2.0 * math.atan(0.5 * config.image_size / fx),
            "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": config.image_size, "h": config.image_size,
            "labels": list(SEMANTIC_LABELS), "near": near, "far": far, "scene_box": scene_box, "world_up": [0.0, 0.0, 1.0],
            "objects": objects, "caption": caption, "toyworld_scene_seed": seed, "toyworld_scene": toy.to_dict(), "frames": frames,
        }  # fmt: skip
        atomic_write_json(meta, out / f"transforms_{split}.json")
    return out


def read_toyworld_scene(folder: Union[str, Path]) -> ToyScene:
    """The toy-world scene a :func:`write_toyworld_scene` folder shows (its ``transforms_train.json``).

    Folders written before the scene itself was stored are rebuilt from ``toyworld_scene_seed`` at
    the file's image size and checked against the file's object names.

    Raises:
        InputError: no ``transforms_train.json``, or a file that no toy-world scene wrote.
    """
    path = Path(folder) / "transforms_train.json"
    if not path.is_file():
        raise InputError(f"folder: {folder} has no transforms_train.json (not a dataset folder)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not readable JSON ({err})") from None
    if isinstance(meta.get("toyworld_scene"), dict):
        return ToyScene.from_dict(meta["toyworld_scene"], where=f"{path}: toyworld_scene")
    seed = meta.get("toyworld_scene_seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError(f"{path}: no toyworld_scene / toyworld_scene_seed field (not written by 'langfield toyworld scene')")
    size = meta.get("w")
    config = ToyWorldConfig() if not isinstance(size, int) else dataclasses.replace(ToyWorldConfig(), image_size=size)
    scene = sample_scene(seed, config)
    names = sorted(f"{o.color} {o.shape}" for o in scene.objects)
    written = sorted(str(o.get("name")) for o in meta.get("objects", []) if isinstance(o, dict))
    if names != written:
        raise InputError(f"{path}: scene seed {seed} rebuilds objects {names}, the file lists {written} "
                         "(written with another toy-world configuration)")  # fmt: skip
    return scene


def scene_captions(scene: Union[str, Path, ToyScene], cameras: Cameras) -> List[str]:
    """The descriptive caption of ``scene`` (a :class:`ToyScene`, or a folder :func:`write_toyworld_scene`
    wrote, read with :func:`read_toyworld_scene`) seen from each of ``cameras`` (OpenCV c2w in the
    scene's world frame, as a reconstruction of the folder reads its cameras)."""
    if not isinstance(cameras, Cameras):
        raise InputError(f"cameras: expected Cameras, got {type(cameras).__name__}")
    if not isinstance(scene, ToyScene):
        scene = read_toyworld_scene(scene)
    return [descriptive_caption(scene, cameras[i : i + 1]) for i in range(len(cameras))]
