"""Bad command lines: every ``langfield`` command with options a hostile user would pass.

Each case runs the CLI in-process (:func:`~tests.robustness.framework.cli`) and must be refused with
exit status 2 and one line naming the option, file or field. Cases of ``train`` and ``demo`` also
check that the refused command created no output folder. Options that would not be refused still
describe a tiny job (a 16x16 procedural scene, 2 steps), so a missing check shows up as a fast
``silent`` outcome, never as a long run.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, List, Sequence

from tests.robustness import fixtures as fx
from tests.robustness.framework import Case, CliRefused, cli

TIMEOUT = fx.BUILD_TIMEOUT_S
GIB4 = fx.LIMIT_4GIB
_memory = fx.under_memory_limit

# A tiny NGP job: what runs if a bad option slipped through.
TINY = ["--data", "procedural", "--procedural-size", "16", "--procedural-views", "4", "--max-steps", "2",
        "--num-rays", "64", "--eval-every", "0", "--checkpoint-every", "0", "--device", "cpu"]  # fmt: skip
TINY_NGP = ["--set", "field.hash_grid.num_levels=2", "--set", "field.hash_grid.log2_hashmap_size=10",
            "--set", "grid.resolution=16", "--set", "steps_per_diagonal=32"]  # fmt: skip
TINY_GS = ["--method", "gaussians", "--set", "init_num_random=100"]


def refused_leaving_nothing(argv: Sequence[str], *paths: Path) -> None:
    """Run the CLI; on a refusal, also require that none of ``paths`` was created (else a traceback-class failure)."""
    try:
        cli(list(argv))
    except CliRefused:
        left = [str(p) for p in paths if p.exists()]
        if left:
            raise AssertionError(f"the refused command left {left} behind") from None
        raise


def train(name: str, extra: Sequence[str], match: str, *, base: Sequence[str] = TINY_NGP, skip_eval: bool = True) -> Case:
    def run(tmp: Path) -> None:
        out = tmp / "out" / "run"
        argv = ["train", *TINY, *base, *(["--skip-eval"] if skip_eval else []), "--output-dir", str(out), *extra]
        refused_leaving_nothing(argv, tmp / "out")

    return Case(f"cli/train/{name}", run, CliRefused, match)


def on_run(command: str, name: str, kind: str, args: Callable[[Path, Path], List[str]], match: str,
           damage: Callable[[Path], None] = lambda run: None) -> Case:  # fmt: skip
    """``langfield <command> RUN_DIR <args(tmp, run)>`` on a private copy of a tiny trained run (damaged first)."""

    def run(tmp: Path) -> None:
        run_dir = fx.copy_run(kind, tmp)
        damage(run_dir)
        cli([command, str(run_dir), *args(tmp, run_dir)])

    return Case(f"cli/{command}/{name}", run, CliRefused, match, timeout_s=TIMEOUT)


def plain(command: str, name: str, args: Callable[[Path], List[str]], match: str) -> Case:
    """A command that needs no trained run (it is refused before one would be read)."""

    def run(tmp: Path) -> None:
        refused_leaving_nothing(args(tmp), tmp / "out")

    return Case(f"cli/{command}/{name}", run, CliRefused, match)


def _file(tmp: Path, name: str = "afile", text: str = "not a folder") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def _bytes(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


CASES: List[Case] = [
    # ------------------------------------------------------------------ train: trainer options
    train("num-rays-zero", ["--num-rays", "0"], r"num_rays"),
    train("num-rays-negative", ["--num-rays", "-64"], r"num_rays"),
    train("num-rays-float", ["--num-rays", "1e9"], r"--num-rays"),
    _memory(GIB4, train("num-rays-huge", ["--num-rays", str(10**12)], r"num_rays.*needs about")),
    train("max-steps-zero", ["--max-steps", "0"], r"max_steps"),
    train("max-steps-negative", ["--max-steps", "-1"], r"max_steps"),
    train("max-seconds-negative", ["--max-seconds", "-5"], r"max_seconds"),
    train("max-seconds-zero", ["--max-seconds", "0"], r"max_seconds"),
    train("max-seconds-nan", ["--max-seconds", "nan"], r"max_seconds"),
    train("max-seconds-inf", ["--max-seconds", "inf"], r"max_seconds"),
    train("eval-every-negative", ["--eval-every", "-1"], r"eval_every"),
    train("checkpoint-every-negative", ["--checkpoint-every", "-10"], r"checkpoint_every"),
    train("log-every-zero", ["--log-every", "0"], r"log_every"),
    train("keep-last-zero", ["--keep-last-checkpoints", "0"], r"keep_last_checkpoints"),
    train("eval-chunk-zero", ["--eval-chunk", "0"], r"eval_chunk"),
    train("eval-num-images-zero", ["--eval-num-images", "0"], r"eval_num_images"),
    train("seed-negative", ["--seed", "-3"], r"seed"),
    train("amp-dtype-unknown", ["--amp-dtype", "float8"], r"amp_dtype"),
    train("sampler-streams-not-dividing", ["--sampler-streams", "3"], r"sampler_streams"),
    train("sampler-streams-zero", ["--sampler-streams", "0"], r"sampler_streams"),
    train("device-banana", ["--device", "banana"], r"device.*banana"),
    train("device-cuda-99", ["--device", "cuda:99"], r"device.*cuda:99"),
    train("device-meta", ["--device", "meta"], r"device.*meta"),
    train("device-empty", ["--device", ""], r"device"),
    train("eval-split-unknown", ["--eval-split", "nonsense"], r"--eval-split.*train", skip_eval=False),
    # ------------------------------------------------------------------ train: data options
    train("downscale-zero", ["--downscale", "0"], r"downscale"),
    train("downscale-negative", ["--downscale", "-2"], r"downscale"),
    train("downscale-nan", ["--downscale", "nan"], r"downscale"),
    train("procedural-size-zero", ["--procedural-size", "0"], r"procedural_size"),
    train("procedural-size-huge", ["--procedural-size", str(10**9)], r"procedural_size"),
    train("procedural-views-zero", ["--procedural-views", "0"], r"procedural_views"),
    _memory(1 << 20, train("procedural-scene-too-big", ["--procedural-size", "4096"], r"procedural.*needs about")),
    train("data-missing", ["--data", "/nonexistent/scene"], r"nonexistent"),
    train("data-empty", ["--data", ""], r"path.*empty"),
    train("method-unknown", ["--method", "nerfstudio"], r"--method"),
    train("preset-unknown", ["--preset", "fast"], r"--preset"),
    # ------------------------------------------------------------------ train: --set overrides (NGP)
    train("set-unknown-key", ["--set", "no_such_field=3"], r"no_such_field"),
    train("set-unknown-nested-key", ["--set", "grid.no_such=3"], r"no_such"),
    train("set-no-equals", ["--set", "lr"], r"--set.*KEY=VALUE"),
    train("set-empty-key", ["--set", "=3"], r"--set.*KEY=VALUE"),
    train("set-wrong-type-int", ["--set", "grid.resolution=abc"], r"grid\.resolution.*integer"),
    train("set-wrong-type-float", ["--set", "lr=fast"], r"\blr\b.*number"),
    train("set-float-for-int", ["--set", "steps_per_diagonal=1.5"], r"steps_per_diagonal.*integer"),
    train("set-bool-for-int", ["--set", "min_rays=true"], r"min_rays"),
    train("set-list-for-float", ["--set", "lr=[1,2]"], r"\blr\b"),
    train("set-scalar-for-subconfig", ["--set", "field=3"], r"field"),
    train("set-into-scalar", ["--set", "lr.value=1"], r"lr.*not a nested config"),
    train("set-lr-nan", ["--set", "lr=NaN"], r"\blr\b.*finite"),
    train("set-lr-inf", ["--set", "lr=Infinity"], r"\blr\b.*finite"),
    train("set-lr-negative", ["--set", "lr=-0.01"], r"\blr\b"),
    train("set-lr-zero", ["--set", "lr=0"], r"\blr\b"),
    train("set-early-stop-above-one", ["--set", "early_stop_eps=2"], r"early_stop_eps"),
    train("set-min-rays-above-max", ["--set", "min_rays=4096", "--set", "max_rays=16"], r"min_rays"),
    train("set-hash-levels-zero", ["--set", "field.hash_grid.num_levels=0"], r"num_levels"),
    _memory(GIB4, train("set-hash-table-huge", ["--set", "field.hash_grid.log2_hashmap_size=26",
                                                "--set", "field.hash_grid.num_levels=16",
                                                "--set", "field.hash_grid.features_per_level=8",
                                                "--set", "field.hash_grid.max_resolution=4096"],
                        r"log2_hashmap_size=26.*needs about")),  # fmt: skip
    train("set-hash-table-over-limit", ["--set", "field.hash_grid.log2_hashmap_size=40"], r"log2_hashmap_size"),
    _memory(GIB4, train("set-occupancy-grid-huge", ["--set", "grid.resolution=8192"], r"grid\.resolution=8192.*needs about")),
    train("set-grid-ema-above-one", ["--set", "grid.ema_decay=1.5"], r"ema_decay"),
    train("set-sh-degree-ngp", ["--set", "field.sh_degree=9"], r"sh_degree"),
    # ------------------------------------------------------------------ train: --set overrides (Gaussians, NeRF)
    _memory(GIB4, train("gs-init-num-random-huge", ["--set", "init_num_random=1e9"], r"init_num_random=1000000000.*needs about",
                        base=TINY_GS)),  # fmt: skip
    train("gs-init-num-random-zero", ["--set", "init_num_random=0"], r"init_num_random", base=TINY_GS),
    train("gs-init-num-random-fraction", ["--set", "init_num_random=10.5"], r"init_num_random.*integer", base=TINY_GS),
    train("gs-sh-degree", ["--set", "sh_degree=7"], r"sh_degree", base=TINY_GS),
    train("gs-init-unknown", ["--set", "init=mesh"], r"init", base=TINY_GS),
    train("gs-init-opacity", ["--set", "init_opacity=1.5"], r"init_opacity", base=TINY_GS),
    train("gs-lr-means-nan", ["--set", "lr_means=NaN"], r"lr_means", base=TINY_GS),
    train("gs-ssim-lambda", ["--set", "ssim_lambda=2"], r"ssim_lambda", base=TINY_GS),
    train("gs-strategy-unknown", ["--set", "strategy=adc"], r"strategy.*adc", base=TINY_GS),
    train("gs-strategy-refine-every-zero", ["--set", "strategy.refine_every=0"], r"refine_every", base=TINY_GS),
    _memory(GIB4, train("gs-mcmc-cap-huge", ["--set", "strategy=mcmc", "--set", "strategy.cap_max=1e12"], r"cap_max.*needs about",
                        base=TINY_GS)),  # fmt: skip
    train("gs-mcmc-min-opacity", ["--set", "strategy=mcmc", "--set", "strategy.min_opacity=3"], r"min_opacity", base=TINY_GS),
    train("gs-splat-tile-zero", ["--set", "splat.tile_size=0"], r"tile_size", base=TINY_GS),
    train("nerf-num-coarse-zero", ["--set", "num_coarse=0"], r"num_coarse", base=["--method", "nerf"]),
    train("nerf-lr-negative", ["--set", "lr=-1"], r"\blr\b", base=["--method", "nerf"]),
    train("mipnerf-degrees-reversed", ["--set", "min_deg=12", "--set", "max_deg=2"], r"min_deg", base=["--method", "mipnerf"]),
    # ------------------------------------------------------------------ train: output folder
    Case("cli/train/output-dir-is-a-file",
         lambda tmp: cli(["train", *TINY, *TINY_NGP, "--skip-eval", "--output-dir", str(_file(tmp))]),
         CliRefused, r"output.dir.*afile.*not a folder"),  # fmt: skip
    Case("cli/train/output-dir-under-a-file",
         lambda tmp: cli(["train", *TINY, *TINY_NGP, "--skip-eval", "--output-dir", str(_file(tmp) / "run")]),
         CliRefused, r"output.dir.*afile is a file"),  # fmt: skip
]


def _resume(name: str, damage: Callable[[Path], None], match: str, kind: str = "ngp") -> Case:
    def run(tmp: Path) -> None:
        run_dir = fx.copy_run(kind, tmp)
        damage(run_dir)
        method = ["--method", kind.split("+")[0]]
        cli(["train", *TINY, *method, *fx.set_args(kind), "--skip-eval", "--max-steps", "5", "--resume",
             "--output-dir", str(run_dir)])  # fmt: skip

    return Case(f"cli/train/{name}", run, CliRefused, match, timeout_s=TIMEOUT)


CASES += [
    _resume("resume-nan-checkpoint", lambda run: fx.fill_model(fx.latest(run), float("nan")), r"latest\.ckpt.*non-finite"),
    _resume("resume-truncated-checkpoint", lambda run: fx.truncate(fx.latest(run)), r"latest\.ckpt.*could not load"),
    _resume("resume-checkpoint-without-optimizers", lambda run: fx.edit_checkpoint(fx.latest(run), lambda s: s.pop("optimizers")),
            r"latest\.ckpt.*missing 'optimizers'"),  # fmt: skip
    _resume("resume-checkpoint-of-other-method", lambda run: fx.replace_file(fx.latest(fx.built_run("gaussians")), fx.latest(run)),
            r"latest\.ckpt.*does not hold NGP weights"),  # fmt: skip
    _resume("resume-gaussians-inf-means", lambda run: fx.fill_model(fx.latest(run), float("inf"), "means"),
            r"latest\.ckpt.*means.*non-finite", kind="gaussians"),  # fmt: skip
]

# ---------------------------------------------------------------------- render
CASES += [
    plain("render", "run-dir-missing", lambda tmp: ["render", str(tmp / "nope")], r"run directory.*nope.*not found"),
    plain("render", "run-dir-is-a-file", lambda tmp: ["render", str(_file(tmp))], r"afile.*is a file"),
    plain("render", "run-dir-without-run-json", lambda tmp: ["render", str(tmp)], r"run\.json.*not found"),
    plain("render", "chunk-zero", lambda tmp: ["render", str(tmp), "--chunk", "0"], r"--chunk"),
    plain("render", "chunk-negative", lambda tmp: ["render", str(tmp), "--chunk", "-8"], r"--chunk"),
    plain("render", "num-frames-zero", lambda tmp: ["render", str(tmp), "--path", "orbit", "--num-frames", "0"], r"--num-frames"),
    plain("render", "num-frames-huge", lambda tmp: ["render", str(tmp), "--path", "orbit", "--num-frames", str(10**9)], r"--num-frames"),
    plain("render", "fps-zero", lambda tmp: ["render", str(tmp), "--path", "spiral", "--fps", "0"], r"--fps"),
    plain("render", "fps-negative", lambda tmp: ["render", str(tmp), "--path", "orbit", "--fps", "-30"], r"--fps"),
    plain("render", "path-unknown", lambda tmp: ["render", str(tmp), "--path", "zigzag"], r"--path"),
    plain("render", "output-unknown", lambda tmp: ["render", str(tmp), "--outputs", "semantics"], r"--outputs"),
    plain("render", "out-dir-is-a-file", lambda tmp: ["render", str(tmp), "--out-dir", str(_file(tmp))], r"out.dir.*afile"),
    plain("render", "device-banana", lambda tmp: ["render", str(tmp), "--device", "banana"], r"device.*banana"),
    plain("render", "device-cuda-99", lambda tmp: ["render", str(tmp), "--device", "cuda:99"], r"device.*cuda:99"),
    on_run("render", "no-checkpoint", "ngp", lambda tmp, run: [], r"checkpoint.*latest\.ckpt.*not found",
           damage=lambda run: shutil.rmtree(run / "checkpoints")),  # fmt: skip
    on_run("render", "nan-checkpoint", "ngp", lambda tmp, run: ["--path", "test"], r"latest\.ckpt.*non-finite",
           damage=lambda run: fx.fill_model(fx.latest(run), float("nan"), "embeddings")),  # fmt: skip
    on_run("render", "split-not-in-dataset", "ngp", lambda tmp, run: ["--path", "val"], r"split 'val'.*test.*train"),
    on_run("render", "normals-of-gaussians", "gaussians", lambda tmp, run: ["--path", "test", "--outputs", "normals"],
           r"normals"),  # fmt: skip
    _memory(1 << 20, on_run("render", "num-frames-too-many-for-memory", "ngp",
                            lambda tmp, run: ["--path", "orbit", "--num-frames", "900000"], r"num_frames=900000.*needs about")),
]

# ---------------------------------------------------------------------- render --camera-path, view
CASES += [
    plain("render", "camera-path-missing", lambda tmp: ["render", str(tmp), "--camera-path", str(tmp / "none.json")],
          r"camera path .*none\.json: file not found"),  # fmt: skip
    plain("render", "camera-path-not-json", lambda tmp: ["render", str(tmp), "--camera-path", str(_file(tmp, "p.json", "{"))],
          r"p\.json: not valid JSON"),  # fmt: skip
    plain("render", "camera-path-no-height", lambda tmp: ["render", str(tmp), "--camera-path",
          str(_file(tmp, "p.json", '{"render_width": 8, "camera_path": []}'))], r"p\.json: missing field 'render_height'"),  # fmt: skip
    plain("view", "run-dir-missing", lambda tmp: ["view", str(tmp / "nope")], r"run directory.*nope.*not found"),
    plain("view", "run-dir-without-run-json", lambda tmp: ["view", str(tmp)], r"run\.json.*not found"),
    plain("view", "port-out-of-range", lambda tmp: ["view", str(tmp), "--port", "70000"], r"--port"),
    plain("view", "resolution-zero", lambda tmp: ["view", str(tmp), "--max-resolution", "0"], r"--max-resolution"),
]

# ---------------------------------------------------------------------- eval
CASES += [
    plain("eval", "run-dir-missing", lambda tmp: ["eval", str(tmp / "nope")], r"run directory.*nope"),
    plain("eval", "chunk-zero", lambda tmp: ["eval", str(tmp), "--chunk", "0"], r"--chunk"),
    plain("eval", "lpips-weights-missing", lambda tmp: ["eval", str(tmp), "--lpips-weights", str(tmp / "lpips.pth")],
          r"lpips.weights.*lpips\.pth.*not found"),  # fmt: skip
    plain("eval", "device-banana", lambda tmp: ["eval", str(tmp), "--device", "banana"], r"device.*banana"),
    on_run("eval", "nan-checkpoint", "ngp", lambda tmp, run: [], r"latest\.ckpt.*non-finite",
           damage=lambda run: fx.fill_model(fx.latest(run), float("nan"))),  # fmt: skip
    on_run("eval", "inf-checkpoint", "gaussians", lambda tmp, run: [], r"latest\.ckpt.*non-finite",
           damage=lambda run: fx.fill_model(fx.latest(run), float("-inf"), "opacities")),  # fmt: skip
    on_run("eval", "split-unknown", "ngp", lambda tmp, run: ["--split", "validation"], r"split 'validation'"),
    on_run("eval", "run-json-malformed", "ngp", lambda tmp, run: [], r"run\.json.*malformed JSON",
           damage=lambda run: (run / "run.json").write_text("{\"method\": \"ngp\",")),  # fmt: skip
    on_run("eval", "run-json-method-unknown", "ngp", lambda tmp, run: [], r"run\.json.*method.*'ngp2'",
           damage=lambda run: fx.edit_json(run / "run.json", lambda d: d.update(method="ngp2"))),  # fmt: skip
    on_run("eval", "checkpoint-from-gaussians-run", "ngp", lambda tmp, run: [], r"latest\.ckpt.*does not hold NGP weights",
           damage=lambda run: fx.replace_file(fx.latest(fx.built_run("gaussians")), fx.latest(run))),
]

# ---------------------------------------------------------------------- export
CASES += [
    plain("export", "run-dir-missing", lambda tmp: ["export", str(tmp / "nope")], r"run directory.*nope"),
    on_run("export", "ngp-run", "ngp", lambda tmp, run: [], r"method 'ngp'.*no Gaussian cloud"),
    on_run("export", "output-is-a-folder", "gaussians", lambda tmp, run: ["--output", str(tmp)], r"output.*existing folder"),
    on_run("export", "checkpoint-missing", "gaussians", lambda tmp, run: ["--checkpoint", str(tmp / "x.ckpt")],
           r"checkpoint.*x\.ckpt.*not found"),  # fmt: skip
    on_run("export", "checkpoint-is-a-folder", "gaussians", lambda tmp, run: ["--checkpoint", str(run / "checkpoints")],
           r"checkpoint.*checkpoints.*folder"),  # fmt: skip
    on_run("export", "checkpoint-of-ngp-run", "gaussians", lambda tmp, run: ["--checkpoint", str(fx.latest(fx.built_run("ngp")))],
           r"latest\.ckpt.*written by .*NGP"),  # fmt: skip
    on_run("export", "nan-means", "gaussians", lambda tmp, run: [], r"latest\.ckpt.*means.*non-finite",
           damage=lambda run: fx.fill_model(fx.latest(run), float("nan"), "means")),  # fmt: skip
]

# ---------------------------------------------------------------------- language
CASES += [
    plain("language", "run-dir-missing", lambda tmp: ["language", str(tmp / "nope"), "--teacher", "simulated"], r"run directory.*nope"),
    plain("language", "teacher-empty", lambda tmp: ["language", str(tmp), "--teacher", " "], r"--teacher"),
    plain("language", "dense-unknown", lambda tmp: ["language", str(tmp), "--dense", "sliding"], r"--dense"),
    plain("language", "strength-negative", lambda tmp: ["language", str(tmp), "--teacher", "simulated", "--strength", "-1"],
          r"--strength"),  # fmt: skip
    plain("language", "strength-nan", lambda tmp: ["language", str(tmp), "--teacher", "simulated", "--strength", "nan"], r"--strength"),
    plain("language", "steps-zero", lambda tmp: ["language", str(tmp), "--steps", "0"], r"steps"),
    plain("language", "lr-nan", lambda tmp: ["language", str(tmp), "--lr", "nan"], r"\blr\b"),
    plain("language", "rays-per-step-zero", lambda tmp: ["language", str(tmp), "--rays-per-step", "0"], r"rays_per_step"),
    plain("language", "top-k-zero", lambda tmp: ["language", str(tmp), "--top-k", "0"], r"top_k"),
    plain("language", "device-banana", lambda tmp: ["language", str(tmp), "--teacher", "simulated", "--device", "banana"],
          r"device.*banana"),  # fmt: skip
    on_run("language", "cache-dir-is-a-file", "ngp", lambda tmp, run: ["--teacher", "simulated", "--cache-dir", str(_file(tmp))],
           r"cache.dir.*afile"),  # fmt: skip
    on_run("language", "nan-checkpoint", "gaussians", lambda tmp, run: ["--teacher", "simulated"], r"latest\.ckpt.*non-finite",
           damage=lambda run: fx.fill_model(fx.latest(run), float("nan"), "scales")),  # fmt: skip
    _memory(64 << 20, on_run("language", "hash-grid-too-big", "ngp",
                             lambda tmp, run: ["--teacher", "simulated", "--field.hash-grid.log2-hashmap-size", "24"],
                             r"log2_hashmap_size=24.*needs about")),  # fmt: skip
    on_run("language", "corrupt-field-on-rerun", "ngp+language", lambda tmp, run: ["--teacher", "simulated"],
           r"field\.pt.*could not|field\.pt.*not a readable", damage=lambda run: fx.truncate(run / "language" / "field.pt")),
]

def _no_leftover_outputs(case: Case, *names: str) -> Case:
    """``case``, also requiring that the refused query wrote none of ``names`` under ``run/queries``."""

    def run(tmp: Path) -> None:
        try:
            case.run(tmp)
        except CliRefused:
            written = [n for n in names if (tmp / "run" / "queries" / n).exists()]
            if written:
                raise AssertionError(f"refused query wrote {written}") from None
            raise

    return Case(case.name, run, case.error, case.match, case.timeout_s)


# ---------------------------------------------------------------------- query
_Q = "ngp+language"
CASES += [
    plain("query", "run-dir-missing", lambda tmp: ["query", str(tmp / "nope"), "--text", "sphere"], r"run directory.*nope"),
    plain("query", "nothing-asked", lambda tmp: ["query", str(tmp)], r"nothing to ask"),
    plain("query", "text-empty", lambda tmp: ["query", str(tmp), "--text", ""], r"--text.*empty"),
    plain("query", "text-blank", lambda tmp: ["query", str(tmp), "--text", "   "], r"--text.*empty"),
    plain("query", "localize-without-text", lambda tmp: ["query", str(tmp), "--labels", "box", "--localize"], r"--localize"),
    plain("query", "threshold-above-one", lambda tmp: ["query", str(tmp), "--text", "box", "--threshold", "1.5"], r"--threshold"),
    plain("query", "threshold-negative", lambda tmp: ["query", str(tmp), "--text", "box", "--threshold", "-0.1"], r"--threshold"),
    plain("query", "threshold-nan", lambda tmp: ["query", str(tmp), "--text", "box", "--threshold", "nan"], r"--threshold"),
    plain("query", "min-relevancy-above-one", lambda tmp: ["query", str(tmp), "--text", "box", "--min-relevancy", "1.2"],
          r"--min-relevancy"),  # fmt: skip
    plain("query", "unknown-threshold-above-one",
          lambda tmp: ["query", str(tmp), "--labels", "box", "sphere", "--unknown-threshold", "2"], r"--unknown-threshold"),
    plain("query", "view-negative", lambda tmp: ["query", str(tmp), "--text", "box", "--view", "-1"], r"--view"),
    plain("query", "duplicate-labels", lambda tmp: ["query", str(tmp), "--labels", "box", "Box"], r"labels\[1\].*duplicates"),
    plain("query", "blank-label", lambda tmp: ["query", str(tmp), "--labels", "box", " "], r"labels\[1\]"),
    plain("query", "labels-file-missing", lambda tmp: ["query", str(tmp), "--labels", f"@{tmp / 'labels.txt'}"],
          r"--labels @.*labels\.txt.*not found"),  # fmt: skip
    plain("query", "labels-file-is-a-folder", lambda tmp: ["query", str(tmp), "--labels", f"@{tmp}"], r"--labels @.*folder"),
    plain("query", "labels-file-empty", lambda tmp: ["query", str(tmp), "--labels", f"@{_file(tmp, 'l.txt', '# none')}"],
          r"--labels @.*l\.txt.*no labels"),  # fmt: skip
    plain("query", "labels-file-not-utf8",
          lambda tmp: ["query", str(tmp), "--labels", "@" + str(_bytes(tmp, "l.txt", b"chair\n\xff\xfe"))], r"--labels @.*UTF-8"),
    plain("query", "labels-file-duplicates", lambda tmp: ["query", str(tmp), "--labels", "box", f"@{_file(tmp, 'l.txt', 'box')}"],
          r"labels\[1\].*duplicates"),  # fmt: skip
    plain("query", "device-banana", lambda tmp: ["query", str(tmp), "--text", "box", "--device", "banana"], r"device.*banana"),
    on_run("query", "no-language-field", "ngp", lambda tmp, run: ["--text", "sphere"], r"no language field.*field\.pt"),
    on_run("query", "out-dir-is-a-file", _Q, lambda tmp, run: ["--text", "box", "--out-dir", str(_file(tmp))], r"out.dir.*afile"),
    on_run("query", "view-out-of-range", _Q, lambda tmp, run: ["--text", "box", "--view", "99"], r"view 99"),
    on_run("query", "split-unknown", _Q, lambda tmp, run: ["--text", "box", "--split", "val"], r"split 'val'"),
    _no_leftover_outputs(on_run("query", "localize-absent-object", _Q, lambda tmp, run: ["--text", "giraffe", "--localize"],
                                r"giraffe.*not found"), "giraffe_test0_relevancy.png", "giraffe_localization.json"),
    plain("query", "ask-unparsable", lambda tmp: ["query", str(tmp), "--ask", "how big is the box?"], r"--ask|not understood"),
    plain("query", "ask-same-object", lambda tmp: ["query", str(tmp), "--ask", "is the box left of the Box?"], r"itself"),
    _no_leftover_outputs(on_run("query", "ask-absent-object", _Q, lambda tmp, run: ["--ask", "is the giraffe left of the box?"],
                                r"giraffe.*not found"), "is_the_giraffe_left_of_the_box_-8a9263e4_answer.json"),  # fmt: skip
    on_run("query", "field-truncated", _Q, lambda tmp, run: ["--text", "box"], r"field\.pt.*could not|field\.pt.*not a readable",
           damage=lambda run: fx.truncate(run / "language" / "field.pt")),  # fmt: skip
    on_run("query", "field-random-bytes", _Q, lambda tmp, run: ["--text", "box"], r"field\.pt",
           damage=lambda run: fx.write_bytes(run / "language" / "field.pt", bytes(range(256)) * 64)),  # fmt: skip
    on_run("query", "field-nan", _Q, lambda tmp, run: ["--text", "box"], r"field\.pt.*non-finite",
           damage=lambda run: fx.edit_field(run / "language" / "field.pt",
                                            lambda s: next(v for v in s["field"].values() if v.is_floating_point()).fill_(float("nan")))),
    on_run("query", "field-is-a-folder", _Q, lambda tmp, run: ["--text", "box"], r"field\.pt.*folder",
           damage=lambda run: ((run / "language" / "field.pt").unlink(), (run / "language" / "field.pt").mkdir())),
    on_run("query", "field-nan-checkpoint", _Q, lambda tmp, run: ["--text", "box"], r"latest\.ckpt.*non-finite",
           damage=lambda run: fx.fill_model(fx.latest(run), float("nan"))),  # fmt: skip
]


# ---------------------------------------------------------------------- demo
CASES += [
    plain("demo", "size-zero", lambda tmp: ["demo", "--output-dir", str(tmp / "out"), "--size", "0"], r"--size"),
    plain("demo", "size-huge", lambda tmp: ["demo", "--output-dir", str(tmp / "out"), "--size", str(10**9)], r"--size"),
    plain("demo", "budget-negative", lambda tmp: ["demo", "--output-dir", str(tmp / "out"), "--budget-s", "-5"], r"--budget-s"),
    plain("demo", "budget-nan", lambda tmp: ["demo", "--output-dir", str(tmp / "out"), "--budget-s", "nan"], r"--budget-s"),
    plain("demo", "budget-inf", lambda tmp: ["demo", "--output-dir", str(tmp / "out"), "--budget-s", "inf"], r"--budget-s"),
    plain("demo", "seed-negative", lambda tmp: ["demo", "--output-dir", str(tmp / "out"), "--seed", "-1"], r"--seed"),
    plain("demo", "device-banana", lambda tmp: ["demo", "--output-dir", str(tmp / "out"), "--device", "banana"], r"device.*banana"),
    plain("demo", "method-banana", lambda tmp: ["demo", "--output-dir", str(tmp / "out"), "--method", "banana"], r"--method"),
    plain("demo", "output-dir-is-a-file", lambda tmp: ["demo", "--output-dir", str(_file(tmp))], r"output.dir.*afile"),
    _memory(1 << 20, plain("demo", "size-too-big-for-memory", lambda tmp: ["demo", "--output-dir", str(tmp / "out"),
                                                                          "--size", "2048"], r"procedural.*needs about")),
]

