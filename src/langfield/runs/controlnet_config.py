"""What ``langfield controlnet-train`` trains (:class:`ControlTrainConfig`) and the names it takes.

Kept apart from :mod:`langfield.runs.controlnet` so that the command line can build its options
without importing diffusers (an optional extra).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, List, Tuple

from langfield._checks import InputError, check_choice, check_fields, check_int_range
from langfield.configs import check_field_types, config_to_dict
from langfield.generation.control import INJECTIONS, NORMALIZATIONS, ControlNeXtConfig
from langfield.methods.schedules import LR_SCHEDULES

__all__ = ["ADAPTERS", "CONDITIONS", "MEASURED_CONDITIONS", "ControlTrainConfig", "config_identity", "identity_field"]

#: Conditions computed from the toy world's exact renders (module docstring).
CONDITIONS = ("depth", "edges", "segmentation", "normals")
#: Conditions an instrument can read back from a generated image (no normal estimator is trained).
MEASURED_CONDITIONS = ("depth", "edges", "segmentation")
ADAPTERS = ("controlnet", "controlnet_xs", "controlnext")


@dataclass(frozen=True)
class ControlTrainConfig:
    """What ``langfield controlnet-train`` trains.

    Attributes:
        condition: one of ``CONDITIONS`` (``depth``, ``edges``, ``segmentation``, ``normals``).
        adapter: ``controlnet``, ``controlnet_xs`` or ``controlnext``.
        steps, batch_size: training steps and examples per step.
        lr, warmup: AdamW rate, reached by a linear warm-up over ``warmup`` of the steps.
        lr_schedule: after the warm-up, ``"constant"`` (the ControlNet paper's scripts) or
            ``"cosine"`` (decays towards 0 by the last step).
        empty_prompt_rate: prompts replaced by the empty prompt (the ControlNet paper: 0.5).
        xs_size_ratio: ControlNet-XS's control width relative to the base.
        controlnext_normalization: ControlNeXt's cross-normalisation statistics, ``"sample"`` (per
            sample over C, H, W, as in the authors' released code) or ``"channel"`` (per sample and
            channel over H, W); see :class:`~langfield.generation.control.ControlNeXtConfig`.
        controlnext_train_base: substrings of the base UNet's parameter names that ControlNeXt trains
            besides its encoder (ControlNeXtConfig.train_base; default the attention output
            projections; none: the encoder alone).
        controlnext_injection: where ControlNeXt adds its control in the first down block,
            ``"after_block"`` (after its downsampler, the authors' released code) or
            ``"before_downsample"`` (at the latent's own resolution); ControlNeXtConfig.injection.
        max_images: training images used (0 = the whole training split).
        seed: the new layers' initial weights and the batch order.
        init_from: a folder an earlier run wrote (``control_train.json`` and ``adapter/``): this run starts
            from its trained weights instead of a fresh adapter (a second stage: a learning-rate decay tail
            after a constant-rate run -- warmup-stable-decay -- or further training); its adapter kind,
            condition, base and architecture options must be this run's. Empty: a fresh adapter. The
            optimizer starts afresh (its moments are not carried over).
    """

    condition: str = "depth"
    adapter: str = "controlnet"
    steps: int = 1000
    batch_size: int = 32
    lr: float = 5e-4
    warmup: float = 0.02
    lr_schedule: str = "constant"
    empty_prompt_rate: float = 0.5
    xs_size_ratio: float = 0.25
    controlnext_normalization: str = ControlNeXtConfig.normalization
    controlnext_train_base: Tuple[str, ...] = ControlNeXtConfig.train_base
    controlnext_injection: str = ControlNeXtConfig.injection
    max_images: int = 0
    seed: int = 0
    init_from: str = ""

    def __post_init__(self) -> None:
        check_field_types(self)
        check_choice(self.condition, "condition", CONDITIONS)
        check_choice(self.adapter, "adapter", ADAPTERS)
        check_choice(self.lr_schedule, "lr_schedule", LR_SCHEDULES)
        check_choice(self.controlnext_normalization, "controlnext_normalization", NORMALIZATIONS)
        check_choice(self.controlnext_injection, "controlnext_injection", INJECTIONS)
        check_fields(self, "ControlTrainConfig", int_min_1=("steps", "batch_size"), positive=("lr", "xs_size_ratio"),
                     fraction=("warmup", "empty_prompt_rate"))  # fmt: skip
        check_int_range(self.max_images, "ControlTrainConfig.max_images", lo=0)
        check_int_range(self.seed, "ControlTrainConfig.seed", lo=0)
        for i, pattern in enumerate(self.controlnext_train_base):
            if not pattern.strip():
                raise InputError(f"controlnext_train_base[{i}]: an empty name pattern would match every parameter of the base")

    def controlnext_config(self) -> ControlNeXtConfig:
        """The :class:`ControlNeXtConfig` of a ControlNeXt this run trains (its ``controlnext_*`` options)."""
        return ControlNeXtConfig(normalization=self.controlnext_normalization, train_base=tuple(self.controlnext_train_base),
                                 injection=self.controlnext_injection)  # fmt: skip


#: Options that shape one adapter kind only, added after runs of the other kinds were written: they enter
#: :func:`config_identity` for that kind alone, so the identity of every other run is unchanged.
_ONE_KIND_OPTIONS = {"controlnext_normalization": "controlnext", "controlnext_train_base": "controlnext",
                     "controlnext_injection": "controlnext"}  # fmt: skip
#: Options added after runs were written that enter :func:`config_identity` only when set (not their default), so
#: the identity of every run that leaves them unset is unchanged.
_SET_ONLY_OPTIONS = {"init_from": "", "controlnext_injection": ControlNeXtConfig.injection}


def identity_field(identity: dict, name: str) -> Any:
    """Field ``name`` of a :func:`config_identity` dict, an option left out because it was unset read as its default
    (what a message comparing two identities shows); ``None`` for a field the identity does not have."""
    return identity.get(name, _SET_ONLY_OPTIONS.get(name))


def architecture_fields(adapter: str) -> List[str]:
    """The fields of a :class:`ControlTrainConfig` that shape a trained adapter of kind ``adapter`` (what a run
    starting from it, ``init_from``, must share): kind, condition and that kind's own architecture options."""
    extra = ["xs_size_ratio"] if adapter == "controlnet_xs" else []
    return ["adapter", "condition", *extra, *(name for name, kind in _ONE_KIND_OPTIONS.items() if kind == adapter)]


def config_identity(config: ControlTrainConfig) -> dict:
    """``config`` as the dict that identifies a training run (a resumed folder, a cached adapter): every field,
    except the options of another adapter kind (``controlnext_*`` for a ControlNet, ...) and ``init_from`` when
    unset, in its JSON form (tuples as lists), so that it compares equal to the same identity read back from a
    file."""
    out = config_to_dict(config)
    for name, kind in _ONE_KIND_OPTIONS.items():
        if config.adapter != kind:
            out.pop(name)
    for name, unset in _SET_ONLY_OPTIONS.items():
        if out.get(name, unset) == unset:
            out.pop(name, None)
    return json.loads(json.dumps(out))
