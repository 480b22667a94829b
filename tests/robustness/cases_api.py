"""Bad arguments through the Python API: config objects, ``langfield.runs`` functions, queries.

A config object refuses a bad value when it is built (``TrainerConfig(num_rays=0)``), and the run
functions refuse bad options before they load, allocate or write anything. Messages name the
field (``TrainerConfig.num_rays``) or the argument (``num_frames``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List

import torch

from tests.robustness import fixtures as fx
from tests.robustness.framework import Case

TIMEOUT = fx.BUILD_TIMEOUT_S
NAN, INF = float("nan"), float("inf")


def api(name: str, fn: Callable[[Path], Any], match: str, error: type = ValueError, timeout_s: float = 60.0) -> Case:
    return Case(f"api/{name}", fn, error, match, timeout_s)


def with_run(name: str, kind: str, fn: Callable[[Path, Path], Any], match: str, error: type = ValueError) -> Case:
    """``fn(tmp, run_dir)`` on a private copy of a tiny trained run."""
    return api(name, lambda tmp: fn(tmp, fx.copy_run(kind, tmp)), match, error, TIMEOUT)


# --------------------------------------------------------------------------- config objects


def trainer_config(**kwargs: Any) -> Callable[[Path], Any]:
    def run(tmp: Path) -> Any:
        from langfield.training.trainer import TrainerConfig

        return TrainerConfig(**kwargs)

    return run


def config(module: str, cls: str, **kwargs: Any) -> Callable[[Path], Any]:
    def run(tmp: Path) -> Any:
        import importlib

        return getattr(importlib.import_module(module), cls)(**kwargs)

    return run


NGP, GS, STRAT = "langfield.methods.ngp", "langfield.methods.gaussians.method", "langfield.methods.gaussians.strategy"

CASES: List[Case] = [
    api("trainer-config/max-steps-float", trainer_config(max_steps=1.5), r"TrainerConfig\.max_steps"),
    api("trainer-config/max-steps-bool", trainer_config(max_steps=True), r"TrainerConfig\.max_steps"),
    api("trainer-config/num-rays-zero", trainer_config(num_rays=0), r"TrainerConfig\.num_rays"),
    api("trainer-config/num-rays-string", trainer_config(num_rays="4096"), r"TrainerConfig\.num_rays"),
    api("trainer-config/max-seconds-inf", trainer_config(max_seconds=INF), r"TrainerConfig\.max_seconds"),
    api("trainer-config/max-seconds-negative", trainer_config(max_seconds=-5.0), r"TrainerConfig\.max_seconds"),
    api("trainer-config/device-banana", trainer_config(device="banana"), r"TrainerConfig\.device.*banana"),
    api("trainer-config/device-number", trainer_config(device=0), r"TrainerConfig\.device"),
    api("trainer-config/output-dir-empty", trainer_config(output_dir=" "), r"TrainerConfig\.output_dir"),
    api("trainer-config/seed-negative", trainer_config(seed=-1), r"TrainerConfig\.seed"),
    api("trainer-config/amp-dtype", trainer_config(amp_dtype="int8"), r"TrainerConfig\.amp_dtype"),
    api("trainer-config/streams-not-dividing", trainer_config(num_rays=100, sampler_streams=3), r"sampler_streams"),
    api("trainer-config/mixed-precision-string", trainer_config(mixed_precision="yes"), r"TrainerConfig\.mixed_precision"),
    api("data-config/downscale-nan", config("langfield.runs.spec", "DataConfig", downscale=NAN), r"DataConfig\.downscale"),
    api("data-config/path-empty", config("langfield.runs.spec", "DataConfig", path=""), r"DataConfig\.path"),
    api("data-config/views-zero", config("langfield.runs.spec", "DataConfig", procedural_views=0), r"procedural_views"),
    api("data-config/background-unknown", config("langfield.runs.spec", "DataConfig", background="grey"), r"DataConfig\.background"),
    api("ngp-config/lr-nan", config(NGP, "NGPConfig", lr=NAN), r"NGPConfig\.lr"),
    api("ngp-config/steps-per-diagonal-zero", config(NGP, "NGPConfig", steps_per_diagonal=0), r"NGPConfig\.steps_per_diagonal"),
    api("ngp-config/cone-angle-negative", config(NGP, "NGPConfig", cone_angle=-0.1), r"NGPConfig\.cone_angle"),
    api("ngp-config/alpha-threshold-inf", config(NGP, "NGPConfig", alpha_threshold=INF), r"NGPConfig\.alpha_threshold"),
    api("ngp-config/max-samples-zero", config(NGP, "NGPConfig", max_samples_per_ray=0), r"NGPConfig\.max_samples_per_ray"),
    api("ngp-config/grid-resolution-zero",
        lambda tmp: config(NGP, "NGPConfig", grid=_occupancy(resolution=0))(tmp), r"NGPConfig\.grid\.resolution"),
    api("ngp-config/field-hidden-zero",
        lambda tmp: config(NGP, "NGPConfig", field=_ngp_field(hidden_dim=0))(tmp), r"NGPConfig\.field\.hidden_dim"),
    api("ngp-config/field-is-a-dict", config(NGP, "NGPConfig", field={"hidden_dim": 64}), r"NGPConfig\.field"),
    api("gaussians-config/init-num-random-float", config(GS, "GaussiansConfig", init_num_random=1e9), r"init_num_random.*integer"),
    api("gaussians-config/init-scale-zero", config(GS, "GaussiansConfig", init_scale=0.0), r"GaussiansConfig\.init_scale"),
    api("gaussians-config/lr-scales-nan", config(GS, "GaussiansConfig", lr_scales=NAN), r"GaussiansConfig\.lr_scales"),
    api("gaussians-config/num-features-negative", config(GS, "GaussiansConfig", num_features=-1), r"num_features"),
    api("gaussians-config/strategy-a-string", config(GS, "GaussiansConfig", strategy="mcmc"), r"GaussiansConfig\.strategy"),
    api("strategy/default-prune-opa", config(STRAT, "DefaultStrategy", prune_opa=1.5), r"DefaultStrategy\.prune_opa"),
    api("strategy/default-split-factor-zero", config(STRAT, "DefaultStrategy", split_factor=0.0), r"DefaultStrategy\.split_factor"),
    api("strategy/default-grow-grad-nan", config(STRAT, "DefaultStrategy", grow_grad2d=NAN), r"DefaultStrategy\.grow_grad2d"),
    api("strategy/mcmc-cap-zero", config(STRAT, "MCMCStrategy", cap_max=0), r"MCMCStrategy\.cap_max"),
    api("strategy/mcmc-noise-inf", config(STRAT, "MCMCStrategy", noise_lr=INF), r"MCMCStrategy\.noise_lr"),
    api("nerf-config/lr-final-zero", config("langfield.methods.nerf", "NeRFConfig", lr_final=0.0), r"NeRFConfig\.lr_final"),
    api("mipnerf-config/warmup-above-one", config("langfield.methods.mipnerf", "MipNeRFConfig", warmup_fraction=2.0),
        r"MipNeRFConfig\.warmup_fraction"),  # fmt: skip
    api("language-config/lr-nan", config("langfield.language.distillation", "LanguageFieldConfig", lr=NAN),
        r"LanguageFieldConfig\.lr"),  # fmt: skip
    api("language-config/steps-float", config("langfield.language.distillation", "LanguageFieldConfig", steps=10.5),
        r"LanguageFieldConfig\.steps"),  # fmt: skip
    api("language-config/jitter-negative", config("langfield.language.distillation", "LanguageFieldConfig", footprint_jitter=-1.0),
        r"LanguageFieldConfig\.footprint_jitter"),  # fmt: skip
    api("language-config/rsr-mode-unknown", config("langfield.language.distillation", "LanguageFieldConfig", rsr_mode="pool"),
        r"LanguageFieldConfig\.rsr_mode.*'ovnerf'"),  # fmt: skip
    api("language-config/cse-mode-contradicts-flag",
        config("langfield.language.distillation", "LanguageFieldConfig", use_cse=False, cse_mode="ovnerf"),
        r"use_cse=False contradicts cse_mode='ovnerf'"),  # fmt: skip
]


def _occupancy(**kwargs: Any) -> Any:
    from langfield.ops.occupancy import OccupancyGridConfig

    return OccupancyGridConfig(**kwargs)


def _ngp_field(**kwargs: Any) -> Any:
    from langfield.fields.ngp_field import NGPFieldConfig

    return NGPFieldConfig(**kwargs)


# --------------------------------------------------------------------------- stored configs and overrides


def _overrides(method: str, overrides: dict) -> Callable[[Path], Any]:
    def run(tmp: Path) -> Any:
        from langfield.configs import apply_overrides
        from langfield.methods.registry import get_preset

        return apply_overrides(get_preset(method, "cpu").method_config, overrides)

    return run


def _from_dict(cls_path: str, data: dict) -> Callable[[Path], Any]:
    def run(tmp: Path) -> Any:
        import importlib

        from langfield.configs import config_from_dict

        module, cls = cls_path.rsplit(".", 1)
        return config_from_dict(getattr(importlib.import_module(module), cls), data, "stored.json")

    return run


CASES += [
    api("overrides/variant-unknown", _overrides("gaussians", {"strategy": "adc"}), r"strategy.*'adc'"),
    api("overrides/variant-field-before-select", _overrides("gaussians", {"strategy.cap_max": 10}), r"cap_max"),
    api("overrides/tuple-wrong-length", _from_dict("langfield.data.procedural.ProceduralSceneConfig", {"target": [0, 0]}),
        r"stored\.json\.target.*3 values"),  # fmt: skip
    api("overrides/nested-not-object", _from_dict("langfield.methods.ngp.NGPConfig", {"grid": [16]}), r"stored\.json\.grid"),
    api("overrides/literal-unknown", _from_dict("langfield.runs.spec.DataConfig", {"background": "transparent"}),
        r"stored\.json\.background.*transparent"),  # fmt: skip
    api("overrides/bool-as-number", _from_dict("langfield.training.trainer.TrainerConfig", {"progress": 1}),
        r"stored\.json\.progress.*true or false"),  # fmt: skip
    api("overrides/int-overflowing-float", _from_dict("langfield.methods.ngp.NGPConfig", {"min_rays": 1e400}),
        r"stored\.json\.min_rays.*integer"),  # fmt: skip
]


# --------------------------------------------------------------------------- langfield.runs functions


def _prepare(tmp: Path, method: str = "ngp", **kwargs: Any) -> Any:
    from langfield.runs.spec import PROCEDURAL, DataConfig
    from langfield.runs.train import prepare_run
    from langfield.training.trainer import TrainerConfig

    trainer = kwargs.pop("trainer", {})
    cfg = TrainerConfig(**{"max_steps": 2, "num_rays": 64, "eval_every": 0, "checkpoint_every": 0, "device": "cpu",
                           "progress": False, "output_dir": str(tmp / "out" / "run"), **trainer})  # fmt: skip
    data = DataConfig(PROCEDURAL, procedural_size=16, procedural_views=4)
    kwargs.setdefault("overrides", fx.overrides(method))
    return prepare_run(data, method, cfg, preset="cpu", **kwargs)


def prepare(name: str, match: str, error: type = ValueError, method: str = "ngp", **kwargs: Any) -> Case:
    def run(tmp: Path) -> None:
        try:
            _prepare(tmp, method, **kwargs)
        except error:
            if (tmp / "out").exists():
                raise AssertionError("the refused prepare_run created its output folder") from None
            raise

    return api(f"prepare-run/{name}", run, match, error)


def _huge(case: Case) -> Case:
    """A case about an absurd size, run as if 4 GiB were free (the same verdict on any machine)."""
    return fx.under_memory_limit(fx.LIMIT_4GIB, case)


def _file(tmp: Path) -> Path:
    path = tmp / "afile"
    path.write_text("x")
    return path


CASES += [
    prepare("missing-split", r"split 'val'", require_splits=("val",)),
    prepare("override-unknown", r"override.*warp", overrides={"warp": 9}),
    _huge(prepare("override-huge-table", r"log2_hashmap_size=27.*needs about",
                  overrides={"field.hash_grid.log2_hashmap_size": 27, "field.hash_grid.num_levels": 16,
                             "field.hash_grid.features_per_level": 8, "field.hash_grid.max_resolution": 8192})),
    _huge(prepare("gaussians-init-huge", r"init_num_random=2000000000.*needs about", method="gaussians",
                  overrides={"init_num_random": 2_000_000_000})),
    prepare("device-cuda-99", r"device.*cuda:99", trainer={"device": "cuda:99"}),
    _huge(prepare("num-rays-huge", r"num_rays=100000000000.*needs about", trainer={"num_rays": 10**11})),
    api("prepare-run/output-dir-is-a-file", lambda tmp: _prepare(tmp, trainer={"output_dir": str(_file(tmp))}),
        r"output_dir.*afile.*not a folder"),  # fmt: skip
    api("prepare-run/preset-unknown", lambda tmp: _preset(tmp), r"preset 'turbo'"),
    api("prepare-run/method-unknown", lambda tmp: _prepare(tmp, method="nerf++", overrides={}), r"nerf\+\+"),
]


def _preset(tmp: Path) -> None:
    from langfield.runs.spec import PROCEDURAL, DataConfig
    from langfield.runs.train import prepare_run
    from langfield.training.trainer import TrainerConfig

    prepare_run(DataConfig(PROCEDURAL, procedural_size=16), "ngp", TrainerConfig(output_dir=str(tmp / "o"), device="cpu"),
                preset="turbo")  # fmt: skip


def _load(run_dir: Path, device: str = "cpu") -> Any:
    from langfield.runs.loading import load_run

    return load_run(run_dir, device)


def _render_path(tmp: Path, run_dir: Path, **kwargs: Any) -> Any:
    from langfield.runs.render import render_path

    args = {"kind": "orbit", "out_dir": tmp / "videos", "num_frames": 4, "fps": 10, "what": ("rgb",), "progress": False}
    args.update(kwargs)
    return render_path(_load(run_dir), **args)


def _render_views(tmp: Path, run_dir: Path, **kwargs: Any) -> Any:
    from langfield.runs.render import render_views

    args = {"split": "test", "out_dir": tmp / "views", "what": ("rgb",), "progress": False, "indices": [0]}
    args.update(kwargs)
    return render_views(_load(run_dir), **args)


def _evaluate(tmp: Path, run_dir: Path, **kwargs: Any) -> Any:
    from langfield.runs.evaluate import evaluate_run

    return evaluate_run(_load(run_dir), **kwargs)


def _limited(num_bytes: int, fn: Callable[[Path, Path], Any]) -> Callable[[Path, Path], Any]:
    def run(tmp: Path, run_dir: Path) -> Any:
        with fx.memory_limit(num_bytes):
            return fn(tmp, run_dir)

    return run


CASES += [
    api("load-run/device-banana", lambda tmp: _load(tmp, "banana"), r"device.*banana"),
    api("load-run/device-cuda-99", lambda tmp: _load(tmp, "cuda:99"), r"device.*cuda:99"),
    api("load-run/run-dir-empty-string", lambda tmp: _load(""), r"run_dir.*empty"),
    api("load-run/run-dir-missing", lambda tmp: _load(tmp / "nope"), r"run directory.*nope", FileNotFoundError),
    with_run("render-path/kind-unknown", "ngp", lambda tmp, run: _render_path(tmp, run, kind="zigzag"), r"camera path.*zigzag"),
    with_run("render-path/num-frames-zero", "ngp", lambda tmp, run: _render_path(tmp, run, num_frames=0), r"num_frames"),
    with_run("render-path/num-frames-float", "ngp", lambda tmp, run: _render_path(tmp, run, num_frames=2.5), r"num_frames"),
    with_run("render-path/fps-inf", "ngp", lambda tmp, run: _render_path(tmp, run, fps=INF), r"fps"),
    with_run("render-path/what-empty", "ngp", lambda tmp, run: _render_path(tmp, run, what=()), r"outputs"),
    with_run("render-path/what-a-string", "ngp", lambda tmp, run: _render_path(tmp, run, what="rgb"), r"outputs"),
    with_run("render-path/chunk-zero", "ngp", lambda tmp, run: _render_path(tmp, run, chunk=0), r"chunk"),
    with_run("render-path/frames-beyond-memory", "ngp",
             _limited(1 << 20, lambda tmp, run: _render_path(tmp, run, num_frames=500_000)), r"num_frames=500000.*needs about"),
    with_run("render-path/out-dir-is-a-file", "ngp", lambda tmp, run: _render_path(tmp, run, out_dir=_file(tmp)),
             r"out_dir.*afile"),  # fmt: skip
    with_run("render-views/split-unknown", "ngp", lambda tmp, run: _render_views(tmp, run, split="val"), r"split 'val'"),
    with_run("render-views/output-unknown", "ngp", lambda tmp, run: _render_views(tmp, run, what=("rgb", "semantics")),
             r"outputs.*semantics"),  # fmt: skip
    with_run("render-views/chunk-negative", "ngp", lambda tmp, run: _render_views(tmp, run, chunk=-1), r"chunk"),
    with_run("evaluate/split-unknown", "ngp", lambda tmp, run: _evaluate(tmp, run, split="val"), r"split 'val'"),
    with_run("evaluate/chunk-zero", "ngp", lambda tmp, run: _evaluate(tmp, run, chunk=0), r"chunk"),
    with_run("evaluate/lpips-missing", "ngp", lambda tmp, run: _evaluate(tmp, run, lpips_weights=tmp / "vgg.pth"),
             r"lpips_weights.*vgg\.pth", FileNotFoundError),  # fmt: skip
]


# --------------------------------------------------------------------------- demo


def _demo(tmp: Path, **kwargs: Any) -> None:
    from langfield.runs.demo import run_demo

    args = {"output_dir": tmp / "out", "budget_s": 1.0, "size": 16, "device": "cpu", "say": lambda *a: None}
    args.update(kwargs)
    try:
        run_demo(**args)
    except ValueError:
        if (tmp / "out").exists():
            raise AssertionError("the refused demo created its output folder") from None
        raise


CASES += [
    api("demo/size-float", lambda tmp: _demo(tmp, size=16.5), r"size"),
    api("demo/size-negative", lambda tmp: _demo(tmp, size=-16), r"size"),
    api("demo/budget-zero", lambda tmp: _demo(tmp, budget_s=0.0), r"budget_s"),
    api("demo/budget-string", lambda tmp: _demo(tmp, budget_s="10"), r"budget_s"),
    api("demo/device-banana", lambda tmp: _demo(tmp, device="banana"), r"device.*banana"),
    api("demo/method-banana", lambda tmp: _demo(tmp, method="banana"), r"method.*banana"),
    api("demo/views-one", lambda tmp: _demo(tmp, views=1), r"views"),
    api("demo/orbit-frames-zero", lambda tmp: _demo(tmp, orbit_frames=0), r"orbit_frames"),
    api("demo/language-not-a-config", lambda tmp: _demo(tmp, language={"steps": 5}), r"LanguageFieldConfig"),
]


# --------------------------------------------------------------------------- language: training and queries


def _train_language(tmp: Path, run_dir: Path, **kwargs: Any) -> Any:
    from langfield.runs.language import train_language

    args = {"teacher": "simulated", "config": fx.language_config(), "device": "cpu", "progress": False}
    args.update(kwargs)
    return train_language(run_dir, **args)


def _queries(tmp: Path, run_dir: Path, **kwargs: Any) -> Any:
    from langfield.runs.language import run_queries

    args = {"text": "ground", "device": "cpu"}
    args.update(kwargs)
    return run_queries(run_dir, **args)


def _scene(run_dir: Path) -> Any:
    from langfield.runs.language import load_language_scene

    return load_language_scene(run_dir, "cpu")


def _localize_absent(tmp: Path, run_dir: Path) -> Any:
    return _scene(run_dir).localize("saxophone")


def _localize_flat(tmp: Path) -> Any:
    """A relevancy map that never exceeds 0.3 ("closer to the negatives everywhere"): not found."""
    from langfield.language.queries import localize_3d
    from langfield.types import Cameras

    eye = torch.eye(4)[:3].unsqueeze(0)
    Ks = torch.tensor([[[8.0, 0.0, 4.0], [0.0, 8.0, 4.0], [0.0, 0.0, 1.0]]])
    cams = Cameras(c2w=eye, Ks=Ks, widths=torch.tensor([8]), heights=torch.tensor([8]), dist=torch.zeros(1, 5))
    rel = torch.linspace(0.0, 0.3, 64).reshape(1, 8, 8)
    return localize_3d(rel, torch.ones(1, 8, 8, 1), cams, min_relevancy=0.5)


_L = "ngp+language"
CASES += [
    with_run("language/teacher-not-a-string", "ngp", lambda tmp, run: _train_language(tmp, run, teacher=None), r"teacher"),
    with_run("language/dense-unknown", "ngp", lambda tmp, run: _train_language(tmp, run, dense="grid"), r"dense.*grid"),
    with_run("language/strength-inf", "ngp", lambda tmp, run: _train_language(tmp, run, strength=INF), r"strength"),
    with_run("language/config-a-dict", "ngp", lambda tmp, run: _train_language(tmp, run, config={"steps": 5}), r"config"),
    with_run("language/language-dir-is-a-file", "ngp",
             lambda tmp, run: ((run / "language").write_text("x"), _train_language(tmp, run)), r"language.*not a folder"),
    with_run("language/targets-beyond-memory", "ngp",
             _limited(1 << 20, lambda tmp, run: _train_language(tmp, run)), r"language targets.*needs about"),  # fmt: skip
    with_run("query/threshold-above-one", _L, lambda tmp, run: _queries(tmp, run, threshold=1.01), r"threshold"),
    with_run("query/unknown-threshold-nan", _L, lambda tmp, run: _queries(tmp, run, labels=["box"], unknown_threshold=NAN),
             r"unknown_threshold"),  # fmt: skip
    with_run("query/view-float", _L, lambda tmp, run: _queries(tmp, run, view=0.5), r"view"),
    with_run("query/text-not-a-string", _L, lambda tmp, run: _queries(tmp, run, text=42), r"query|text"),
    with_run("query/labels-a-string", _L, lambda tmp, run: _queries(tmp, run, text=None, labels=[""]), r"labels\[0\]"),
    with_run("query/extract-without-text", _L, lambda tmp, run: _queries(tmp, run, text=None, labels=["box"], extract=True),
             r"--extract"),  # fmt: skip
    with_run("query/out-dir-under-a-file", _L, lambda tmp, run: _queries(tmp, run, out_dir=_file(tmp) / "q"),
             r"out_dir.*afile is a file"),  # fmt: skip
    with_run("query/localize-absent", _L, _localize_absent, r"'saxophone'.*not found"),
    with_run("query/localize-empty-text", _L, lambda tmp, run: _scene(run).localize("  "), r"query.*empty"),
    with_run("query/localize-unknown-split", _L, lambda tmp, run: _scene(run).localize("ground", split="val"), r"split 'val'"),
    with_run("query/localize-max-views-zero", _L, lambda tmp, run: _scene(run).localize("ground", max_views=0), r"max_views"),
    with_run("query/segment-duplicate-labels", _L,
             lambda tmp, run: _scene(run).segment(["box", " box"], _scene(run).dataset.split("test").cameras, 0),
             r"labels\[1\].*duplicates"),  # fmt: skip
    api("query/localize-below-min-relevancy", _localize_flat, r"not found.*0\.300.*min_relevancy"),
]
