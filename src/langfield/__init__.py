"""langfield: neural 3D scenes that meet vision-language and diffusion models.

The main entry points are available from the top level and imported on first use (PEP 562), so
``import langfield`` never imports ``transformers`` or ``diffusers``::

    import langfield
    run = langfield.train(langfield.DataConfig("procedural"), "ngp", langfield.TrainerConfig(max_seconds=60))
    scene = langfield.load_language_scene("outputs/demo_gs")
"""

from __future__ import annotations

from langfield._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "Cameras": "langfield.types",
    "Rays": "langfield.types",
    "RenderOutput": "langfield.types",
    "TrainerConfig": "langfield.training.trainer",
    "Trainer": "langfield.training.trainer",
    "DataConfig": "langfield.runs.spec",
    "load_dataset": "langfield.data",
    "train": "langfield.runs.train",
    "load_run": "langfield.runs.loading",
    "render_path": "langfield.runs.render",
    "render_views": "langfield.runs.render",
    "evaluate_run": "langfield.runs.evaluate",
    "export_run": "langfield.runs.export",
    "train_language": "langfield.runs.language",
    "load_language_scene": "langfield.runs.language",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
