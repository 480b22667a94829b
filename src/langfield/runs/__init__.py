"""The Python API over run directories: train, load, render, evaluate, export, demo, language,
and the toy-world generation models (train_toyworld, generate_to_folder).

Everything the CLI does is one call here::

    from langfield.runs import DataConfig, train, render_path
    from langfield.training import TrainerConfig
    run = train(DataConfig("../shared/data/nerf_synthetic/lego", downscale=4), "ngp",
                TrainerConfig(max_seconds=600, output_dir="outputs/lego"))
    render_path(run, "orbit", "outputs/lego/videos", num_frames=120)

Submodules are imported on first use (PEP 562), so ``import langfield.runs`` stays light.
"""

from __future__ import annotations

from langfield._lazy import lazy_exports

_EXPORTS = {
    "DataConfig": "spec",
    "RunSpec": "spec",
    "Run": "loading",
    "load_data": "loading",
    "load_run": "loading",
    "prepare_run": "train",
    "train": "train",
    "render_path": "render",
    "render_camera_path": "render",
    "render_views": "render",
    "make_path": "render",
    "evaluate_run": "evaluate",
    "export_run": "export",
    "run_demo": "demo",
    "train_language": "language",
    "load_language_scene": "language",
    "run_queries": "language",
    "ToyWorldExperimentConfig": "toyworld",
    "ToyWorldModels": "toyworld",
    "toyworld_preset": "toyworld",
    "train_toyworld": "toyworld",
    "GenerateOptions": "generate",
    "generate_to_folder": "generate",
    "render_conditions": "scene_control",
    "generate_from_scene": "scene_control",
    "generate_scene_to_folder": "scene_control",
    "dataset_update": "scene_control",
    "measure_e4": "scene_control",
    "ControlTrainConfig": "controlnet_config",
    "train_control": "controlnet",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
