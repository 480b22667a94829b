"""LPIPS perceptual distance (Zhang et al., "The Unreasonable Effectiveness of Deep
Features as a Perceptual Metric", CVPR 2018), in plain torch.

The network is re-implemented here (AlexNet or VGG16 feature stack, no torchvision)
and **never downloads anything**: weights come from a local file given by the user or
by the environment variable ``LANGFIELD_LPIPS_WEIGHTS``. When they are absent,
:func:`load_lpips` returns ``None`` and logs ``"LPIPS weights not found at ...; LPIPS
not reported"``, and evaluation reports PSNR/SSIM only.

Algorithm (official ``lpips`` package, version 0.1, ``lpips=True``):

1. inputs in ``[-1, 1]`` are standardised with the fixed ``ScalingLayer``:
   ``(x - shift) / scale``, ``shift = (-.030, -.088, -.188)``, ``scale = (.458, .448, .450)``;
2. five ReLU feature maps are taken from the backbone (AlexNet: ``relu1..relu5``;
   VGG16: ``relu1_2, relu2_2, relu3_3, relu4_3, relu5_3``);
3. each map is unit-normalised along channels, ``f / (||f||_2 + 1e-10)``;
4. the squared difference is weighted by a non-negative 1x1 conv (``lin_k``, no bias),
   averaged over space, and the five layers are summed.

Weight file layout (a flat ``torch.save``-d state dict, format "langfield-lpips v1"):

=========================  ==========================  ===================================
key                        shape                       meaning
=========================  ==========================  ===================================
``backbone.{i}.weight``    ``[C_out, C_in, k, k]``     i-th conv of the backbone, in order
``backbone.{i}.bias``      ``[C_out]``                 (AlexNet: 5 convs, VGG16: 13 convs)
``lin.{k}.weight``         ``[1, C_k, 1, 1]``          LPIPS linear weights, taps k = 0..4
=========================  ==========================  ===================================

The backbone is recognised from the number of convs. To build the file from the
official weights (on any machine that has ``torchvision`` and ``lpips``; langfield
itself needs neither)::

    import torch, torchvision, lpips, pathlib
    from langfield.eval.lpips import convert_official_lpips
    backbone = torchvision.models.alexnet(weights="IMAGENET1K_V1").state_dict()
    lin = torch.load(pathlib.Path(lpips.__file__).parent / "weights/v0.1/alex.pth",
                     map_location="cpu")
    torch.save(convert_official_lpips(backbone, lin), "lpips_alex.pth")

(For VGG use ``torchvision.models.vgg16(weights="IMAGENET1K_V1")``, ``vgg.pth`` and
``net="vgg"``; save as ``lpips_vgg.pth``.) A full ``lpips.LPIPS().state_dict()``
(keys ``net.slice{k}.{idx}.*`` and ``lin{k}.model.1.weight``) can be passed as both
arguments.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Literal, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = [
    "LPIPS",
    "LPIPS_WEIGHTS_ENV",
    "load_lpips",
    "try_load_lpips",
    "find_lpips_weights",
    "convert_official_lpips",
    "split_to_official",
    "infer_lpips_net",
]

LPIPS_WEIGHTS_ENV = "LANGFIELD_LPIPS_WEIGHTS"
Net = Literal["alex", "vgg"]
PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class _Backbone:
    """Conv stack description: ``convs[i] = (c_in, c_out, kernel, stride, padding)``.

    ``pool_after[i] = (kernel, stride)`` max-pools the ReLU output of conv ``i`` before
    conv ``i + 1``; ``taps`` are the conv indices whose ReLU output LPIPS compares;
    ``torchvision_idx[i]`` is conv ``i``'s index in torchvision's ``features``.
    """

    convs: Tuple[Tuple[int, int, int, int, int], ...]
    pool_after: Dict[int, Tuple[int, int]]
    taps: Tuple[int, ...]
    torchvision_idx: Tuple[int, ...]

    @property
    def tap_channels(self) -> Tuple[int, ...]:
        return tuple(self.convs[i][1] for i in self.taps)


_ALEX = _Backbone(
    convs=((3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1)),
    pool_after={0: (3, 2), 1: (3, 2)},
    taps=(0, 1, 2, 3, 4),
    torchvision_idx=(0, 3, 6, 8, 10),
)


def _vgg16() -> _Backbone:
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    convs, pools, tv_idx = [], {}, []
    c_in, idx = 3, 0
    for v in cfg:
        if v == "M":
            pools[len(convs) - 1] = (2, 2)
            idx += 1
        else:
            convs.append((c_in, v, 3, 1, 1))
            tv_idx.append(idx)
            c_in, idx = v, idx + 2  # conv + relu
    return _Backbone(tuple(convs), pools, taps=(1, 3, 6, 9, 12), torchvision_idx=tuple(tv_idx))


_VGG = _vgg16()
_BACKBONES: Dict[str, _Backbone] = {"alex": _ALEX, "vgg": _VGG}
_NUM_CONVS = {len(b.convs): name for name, b in _BACKBONES.items()}


class LPIPS(nn.Module):
    """LPIPS distance network; construct with :func:`load_lpips` to get real weights.

    ``LPIPS(net)`` alone has randomly initialised weights (useful for tests only).

    Args:
        net: ``"alex"`` (default in the paper's evaluations) or ``"vgg"``.
    """

    def __init__(self, net: Net = "alex") -> None:
        super().__init__()
        if net not in _BACKBONES:
            raise ValueError(f"net must be one of {sorted(_BACKBONES)}, got {net!r}")
        self.net = net
        self._arch = _BACKBONES[net]
        self.backbone = nn.ModuleList(
            nn.Conv2d(ci, co, k, stride=s, padding=p) for ci, co, k, s, p in self._arch.convs
        )
        self.lin = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self._arch.tap_channels)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def min_size(self) -> int:
        """Smallest square input side for which every feature map is non-empty."""
        n = 1
        while not self._sizes_ok(n):
            n += 1
        return n

    def _sizes_ok(self, n: int) -> bool:
        for i, (_, _, k, s, p) in enumerate(self._arch.convs):
            n = (n + 2 * p - k) // s + 1
            if n < 1:
                return False
            if i in self._arch.pool_after:
                pk, ps = self._arch.pool_after[i]
                n = (n - pk) // ps + 1
                if n < 1:
                    return False
        return True

    def features(self, x: Tensor) -> list[Tensor]:
        """Unit-normalised tap features of ``x [N, 3, H, W]`` (already in ``[-1, 1]``)."""
        x = (x - self.shift) / self.scale
        feats = []
        for i, conv in enumerate(self.backbone):
            x = F.relu(conv(x))
            if i in self._arch.taps:
                feats.append(x / (x.square().sum(dim=1, keepdim=True).sqrt() + 1e-10))
            if i in self._arch.pool_after:
                k, s = self._arch.pool_after[i]
                x = F.max_pool2d(x, kernel_size=k, stride=s)
        return feats

    def forward(self, pred: Tensor, target: Tensor, normalize: bool = True) -> Tensor:
        """LPIPS distance per image.

        Args:
            pred, target: ``[*B, H, W, 3]`` channel-last images, same shape.
            normalize: ``True`` (default) if inputs are in ``[0, 1]`` (mapped to
                ``[-1, 1]`` as ``2x - 1``); ``False`` if already in ``[-1, 1]``.

        Returns:
            ``[*B]`` distances (0-d for a single image); 0 for identical inputs.
        """
        for name, x in (("pred", pred), ("target", target)):
            if not isinstance(x, Tensor) or x.ndim < 3 or x.shape[-1] != 3:
                shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"{name} must be a [*B, H, W, 3] tensor, got {shape}")
        if pred.shape != target.shape:
            raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
        batch, (h, w) = pred.shape[:-3], pred.shape[-3:-1]
        if not (self._sizes_ok(h) and self._sizes_ok(w)):
            raise ValueError(f"images of {h}x{w} are too small for LPIPS-{self.net}; need at least {self.min_size()} px per side")
        dtype = self.shift.dtype

        def prep(x: Tensor) -> Tensor:
            x = x.reshape(-1, h, w, 3).permute(0, 3, 1, 2).to(dtype)
            return x * 2.0 - 1.0 if normalize else x

        f0, f1 = self.features(prep(pred)), self.features(prep(target))
        dist = sum(lin((a - b).square()).mean(dim=(1, 2, 3)) for lin, a, b in zip(self.lin, f0, f1))
        return dist.reshape(batch)


def infer_lpips_net(state_dict: Mapping[str, Tensor]) -> Net:
    """``"alex"`` or ``"vgg"`` from the number of ``backbone.{i}.weight`` keys."""
    n = sum(1 for k in state_dict if re.fullmatch(r"backbone\.\d+\.weight", k))
    if n not in _NUM_CONVS:
        raise ValueError(f"state dict has {n} backbone convs; expected 5 (alex) or 13 (vgg)")
    return _NUM_CONVS[n]  # type: ignore[return-value]


_BACKBONE_KEY = re.compile(r"^(?:module\.)?(?:features|net\.slice\d+)\.(\d+)\.(weight|bias)$")
_LIN_KEY = re.compile(r"^(?:module\.)?(?:lin(\d+)|lins\.(\d+))\.(?:model\.1\.)?weight$")


def convert_official_lpips(
    alexnet_state_dict: Mapping[str, Tensor],
    lpips_lin_state_dict: Mapping[str, Tensor],
    net: Net = "alex",
) -> Dict[str, Tensor]:
    """Map official weights to langfield's LPIPS layout (see module docstring).

    Args:
        alexnet_state_dict: torchvision ``alexnet().state_dict()`` (or ``vgg16()`` with
            ``net="vgg"``): keys ``features.{idx}.weight|bias`` (``classifier.*`` is
            ignored). An ``lpips.LPIPS`` state dict (``net.slice{k}.{idx}.*``) also works.
        lpips_lin_state_dict: the lpips package's ``weights/v0.1/{alex,vgg}.pth``:
            keys ``lin{k}.model.1.weight`` (``lins.{k}.model.1.weight`` also accepted).
        net: which backbone the weights are for.

    Returns:
        ``{"backbone.{i}.weight|bias", "lin.{k}.weight"}`` float32 tensors.
    """
    if net not in _BACKBONES:
        raise ValueError(f"net must be one of {sorted(_BACKBONES)}, got {net!r}")
    arch = _BACKBONES[net]
    tv_to_conv = {tv: i for i, tv in enumerate(arch.torchvision_idx)}
    out: Dict[str, Tensor] = {}
    for key, value in alexnet_state_dict.items():
        m = _BACKBONE_KEY.match(key)
        if m is None:
            continue
        idx, kind = int(m.group(1)), m.group(2)
        if idx not in tv_to_conv:
            raise ValueError(f"alexnet_state_dict key {key!r} is not a conv of torchvision's {net} features")
        out[f"backbone.{tv_to_conv[idx]}.{kind}"] = value.detach().to(torch.float32).clone()
    for key, value in lpips_lin_state_dict.items():
        m = _LIN_KEY.match(key)
        if m is None:
            continue
        k = int(m.group(1) if m.group(1) is not None else m.group(2))
        out[f"lin.{k}.weight"] = value.detach().to(torch.float32).clone()
    _validate(out, net, source="converted weights")
    return out


def split_to_official(state_dict: Mapping[str, Tensor], net: Optional[Net] = None) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
    """Inverse of :func:`convert_official_lpips`: ``(torchvision features dict, lpips lin dict)``."""
    net = infer_lpips_net(state_dict) if net is None else net
    arch = _BACKBONES[net]
    _validate(state_dict, net, source="state_dict")
    backbone = {}
    for i, tv in enumerate(arch.torchvision_idx):
        for kind in ("weight", "bias"):
            backbone[f"features.{tv}.{kind}"] = state_dict[f"backbone.{i}.{kind}"].clone()
    lin = {f"lin{k}.model.1.weight": state_dict[f"lin.{k}.weight"].clone() for k in range(len(arch.taps))}
    return backbone, lin


def _validate(state_dict: Mapping[str, Tensor], net: str, source: str) -> None:
    """Check keys and shapes against a freshly built ``LPIPS(net)``; ValueError naming ``source``."""
    expected = {k: tuple(v.shape) for k, v in LPIPS(net).state_dict().items()}  # type: ignore[arg-type]
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{source} does not match the LPIPS-{net} layout: missing {missing[:6]}, unexpected {unexpected[:6]}")
    for k, shape in expected.items():
        got = tuple(state_dict[k].shape)
        if got != shape:
            raise ValueError(f"{source}: {k} has shape {got}, expected {shape}")


def find_lpips_weights(path: Optional[PathLike] = None, net: Optional[Net] = None) -> Tuple[Optional[Path], Path | str]:
    """Locate the weight file.

    Looks at ``path``, else ``$LANGFIELD_LPIPS_WEIGHTS``. A directory is searched for
    ``lpips_alex.pth`` then ``lpips_vgg.pth`` (only ``lpips_{net}.pth`` if ``net`` is given).

    Returns:
        ``(file, where)``: ``file`` is the existing weight file or ``None``; ``where``
        is what was looked at (for messages).
    """
    if path is None:
        env = os.environ.get(LPIPS_WEIGHTS_ENV, "").strip()
        if not env:
            return None, f"<no path given and ${LPIPS_WEIGHTS_ENV} unset>"
        path = env
    p = Path(path).expanduser()
    if p.is_dir():
        names = [f"lpips_{net}.pth"] if net else ["lpips_alex.pth", "lpips_vgg.pth"]
        for name in names:
            if (p / name).is_file():
                return p / name, p / name
        return None, p / names[0]
    return (p if p.is_file() else None), p


def try_load_lpips(
    path: Optional[PathLike] = None,
    net: Optional[Net] = None,
    device: torch.device | str = "cpu",
) -> Tuple[Optional[LPIPS], str]:
    """Like :func:`load_lpips` but returns ``(model or None, message)`` and logs nothing."""
    file, where = find_lpips_weights(path, net)
    if file is None:
        return None, f"LPIPS weights not found at {where}; LPIPS not reported"
    try:
        sd = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"could not read LPIPS weights file {str(file)!r}: {e}") from e
    if not isinstance(sd, Mapping) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise ValueError(f"LPIPS weights file {str(file)!r} is not a flat state dict of tensors")
    try:
        file_net = infer_lpips_net(sd)
    except ValueError as e:
        raise ValueError(f"LPIPS weights file {str(file)!r}: {e}") from e
    if net is not None and net != file_net:
        raise ValueError(f"LPIPS weights file {str(file)!r} holds a {file_net} backbone, but net={net!r} was asked for")
    _validate(sd, file_net, source=f"LPIPS weights file {str(file)!r}")
    model = LPIPS(file_net)
    model.load_state_dict(sd)
    if any((lin.weight < 0).any() for lin in model.lin):
        logger.warning("LPIPS weights file %s has negative linear weights (official ones are >= 0)", file)
    return model.to(device), f"LPIPS-{file_net} loaded from {file}"


def load_lpips(
    path: Optional[PathLike] = None,
    net: Optional[Net] = None,
    device: torch.device | str = "cpu",
) -> Optional[LPIPS]:
    """Load LPIPS from a local weight file; ``None`` (with a logged warning) if absent.

    Args:
        path: weight file or a directory holding ``lpips_alex.pth``/``lpips_vgg.pth``;
            defaults to ``$LANGFIELD_LPIPS_WEIGHTS``.
        net: require a backbone (``"alex"``/``"vgg"``); inferred from the file if ``None``.
        device: device for the returned model.

    Returns:
        An eval-mode, frozen :class:`LPIPS`, or ``None`` when no file exists (the log
        says ``"LPIPS weights not found at ...; LPIPS not reported"``). A file that
        exists but is malformed raises ``ValueError`` naming it.
    """
    model, message = try_load_lpips(path, net, device)
    if model is None:
        logger.warning(message)
    else:
        logger.info(message)
    return model
