"""Train a method on a scene: data + method (preset) + trainer, writing ``run.json`` first.

Example::

    from langfield.runs import DataConfig, train
    from langfield.training import TrainerConfig
    run = train(DataConfig("../shared/data/nerf_synthetic/lego", downscale=4), "ngp",
                TrainerConfig(max_seconds=600, output_dir="outputs/lego"))
    print(run.trainer.evaluate("test"))
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from langfield._checks import InputError, check_output_dir
from langfield.configs import apply_overrides, config_to_dict
from langfield.data.dataset import SceneDataset
from langfield.io.atomic import atomic_write_json
from langfield.methods.base import SceneInfo
from langfield.methods.presets import default_preset_name
from langfield.methods.registry import get_preset, make_method, uses_rays
from langfield.runs.loading import Run, load_data, resolve_device
from langfield.runs.spec import RUN_FILE, DataConfig, RunSpec
from langfield.training.callbacks import TrainerCallback
from langfield.training.trainer import Trainer, TrainerConfig, check_batch_memory, seed_everything

__all__ = ["prepare_run", "train"]


def prepare_run(
    data: Union[DataConfig, SceneDataset],
    method: str,
    trainer: TrainerConfig,
    method_config: Any = None,
    *,
    resume: bool = False,
    preset: Optional[str] = None,
    overrides: Optional[Dict[str, Any]] = None,
    callbacks: Sequence[TrainerCallback] = (),
    require_splits: Sequence[str] = (),
) -> Run:
    """Build dataset, method and trainer; write ``run.json``. Call ``run.trainer.train()`` next.

    Args:
        data: a :class:`DataConfig` (the run can be reloaded from disk) or an in-memory dataset.
        method: a registered method name (``langfield.methods.registry.METHODS``).
        trainer: the trainer config; ``num_rays=None`` takes the preset's.
        method_config: the method's typed config; default: the ``preset``'s.
        resume: continue from ``trainer.output_dir/checkpoints/latest.ckpt`` when it exists.
        preset: ``"paper"`` or ``"cpu"`` (default: ``"cpu"`` on a CPU, see :mod:`langfield.methods.presets`).
        overrides: dotted ``--set`` overrides applied on top (``{"field.hash_grid.log2_hashmap_size": 17}``).
        callbacks: trainer callbacks (e.g. a live viewer).
        require_splits: splits the caller will use afterwards (e.g. the final evaluation's); a
            dataset without one of them is refused before anything is built or written.

    Bad options (device, output folder, batch size, overrides, missing splits) are refused before
    the output folder is created; the method's own config checks its sizes against memory.

    The global RNGs are seeded from ``trainer.seed`` *before* the method is built, so two runs
    with the same settings start from the same parameters.
    """
    device = resolve_device(trainer.device, "TrainerConfig.device (--device)")
    if trainer.output_dir is not None:
        check_output_dir(trainer.output_dir, "TrainerConfig.output_dir (--output-dir)")
    chosen = get_preset(method, preset or default_preset_name(device))
    if method_config is None:
        method_config = chosen.method_config
    if overrides:
        method_config = apply_overrides(method_config, overrides)
    if trainer.num_rays is None:
        trainer = dataclasses.replace(trainer, num_rays=chosen.num_rays)
    check_batch_memory(trainer.resolved_num_rays, device)
    if isinstance(data, SceneDataset):
        dataset, data_cfg = data, DataConfig(path=f"<in-memory:{data.name}>", ray_space=data.ray_space)
    else:
        dataset, data_cfg = load_data(data, allow_ndc=uses_rays(method)), data
    for split in require_splits:
        if split not in dataset.splits:
            raise InputError(f"split {split!r} (--eval-split): the dataset has {sorted(dataset.splits)}")
    seed_everything(trainer.seed)
    model = make_method(method, SceneInfo.from_dataset(dataset), method_config)
    spec = RunSpec(method, config_to_dict(method_config), data_cfg, trainer)
    tr = Trainer(model, trainer, dataset=dataset, callbacks=callbacks, resume=resume)
    if tr.is_main and trainer.output_dir is not None:
        atomic_write_json(spec.to_dict(), Path(trainer.output_dir) / RUN_FILE)
    return Run(model, dataset, spec, tr)


def train(
    data: Union[DataConfig, SceneDataset],
    method: str,
    trainer: TrainerConfig,
    method_config: Any = None,
    **kwargs: Any,
) -> Run:
    """Build and train a method (see :func:`prepare_run` for the arguments); returns the :class:`Run`."""
    run = prepare_run(data, method, trainer, method_config, **kwargs)
    run.trainer.train()
    return run
