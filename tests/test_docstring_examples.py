"""The ``>>>`` examples in the docstrings of the public ops run, and print what they say.

Each listed module must hold at least one example; every example must pass. Examples use
tiny CPU tensors and print values through ``tolist()`` / ``round`` so they do not depend on
``torch.set_printoptions``.
"""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch

MODULES = [
    "langfield.ops.volume_rendering",
    "langfield.ops.sampling",
    "langfield.ops.encoding",
    "langfield.ops.hash_encoding",
    "langfield.ops.occupancy",
    "langfield.ops.contraction",
    "langfield.ops.splatting.projection",
    "langfield.ops.splatting.binning",
    "langfield.ops.splatting.rasterize",
    "langfield.ops.splatting.render",
    "langfield.geometry.rays",
    "langfield.geometry.ndc",
    "langfield.data.ray_space",
    "langfield.data.loading",
    "langfield.data.samplers",
    "langfield.ops.depth_supervision",
    "langfield.geometry.conventions",
    "langfield.geometry.rotations",
    "langfield.geometry.camera_paths",
    "langfield.geometry.spherical_harmonics",
    "langfield.geometry.distortion",
    "langfield.geometry.normalize",
    "langfield.geometry.alignment",
    "langfield.capture.frames",
    "langfield.capture.model",
    "langfield.capture.sfm",
    "langfield.capture.pipeline",
    "langfield.eval.metrics",
    "langfield.eval.warp",
    "langfield.generation.scene_noise",
    "langfield.generation.models",
    "langfield.generation.text_conditioning",
    "langfield.eval.distribution",
    "langfield.generation.prompts",
    "langfield.generation.instruments",
    "langfield.generation.control",
    "langfield.io.images",
    "langfield.eval.semantic_metrics",
    "langfield.eval.condition_metrics",
    "langfield.language.spatial",
    "langfield.language.ovnerf_rsr",
    "langfield.language.ovnerf_cse",
    "langfield.data.camera_path_json",
    "langfield.viewer.cameras",
    "langfield.viewer.scene_view",
    "langfield.viewer.callback",
    "langfield.runs.demo_page",
]

OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = [t for t in finder.find(module, name) if t.examples]
    assert tests, f"{name} has no >>> examples in its docstrings"
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    report: list[str] = []
    state = torch.get_rng_state()
    try:
        for test in tests:
            runner.run(test, out=report.append)
    finally:
        torch.set_rng_state(state)
    assert runner.failures == 0, f"{runner.failures} failing examples in {name}:\n" + "".join(report)
