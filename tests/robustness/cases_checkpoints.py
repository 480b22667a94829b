"""Damaged run files through the Python API: checkpoints, ``run.json``, ``language/field.pt``, ``targets.pt``.

Every case copies a tiny trained run (:mod:`tests.robustness.fixtures`), damages one file the way a
crash, a disk error, a hand edit or a hostile user would, and loads it the way a user does
(``load_run``, ``prepare_run(resume=True)``, ``export_run``, ``load_language_scene``,
``train_language``). A clean refusal names the damaged file (and the bad entry where there is one);
nothing must be loaded silently (NaN weights that "evaluate"), and no code in a file may run.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch

from tests.robustness import fixtures as fx
from tests.robustness.framework import Case

TIMEOUT = fx.BUILD_TIMEOUT_S
NAN, INF = float("nan"), float("inf")


def _load_run(run_dir: Path, **kwargs: Any) -> None:
    from langfield.runs.loading import load_run

    load_run(run_dir, "cpu", **kwargs)


def _case(area: str, name: str, kind: str, damage: Callable[[Path], Any], action: Callable[[Path], Any], match: str,
          error: type = ValueError) -> Case:  # fmt: skip
    def run(tmp: Path) -> None:
        run_dir = fx.copy_run(kind, tmp)
        damage(run_dir)
        action(run_dir)

    return Case(f"checkpoints/{area}/{name}", run, error, match, timeout_s=TIMEOUT)


def ckpt(name: str, damage: Callable[[Path], Any], match: str, kind: str = "ngp", error: type = ValueError) -> Case:
    """``load_run`` of a run whose ``latest.ckpt`` went through ``damage(path)``."""
    return _case("load", name, kind, lambda run: damage(fx.latest(run)), _load_run, match, error)


def spec(name: str, damage: Callable[[Path], Any], match: str, kind: str = "ngp", error: type = ValueError) -> Case:
    """``load_run`` of a run whose ``run.json`` went through ``damage(path)``."""
    return _case("run-json", name, kind, lambda run: damage(run / "run.json"), _load_run, match, error)


# --------------------------------------------------------------------------- ways to damage a file


def _model(edit: Callable[[Dict[str, torch.Tensor]], Any]) -> Callable[[Path], None]:
    return lambda path: fx.edit_checkpoint(path, lambda state: edit(state["model"]))


def _set(key_part: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Path], None]:
    """Replace the first model tensor whose name contains ``key_part`` by ``fn(tensor)``."""

    def edit(model: Dict[str, torch.Tensor]) -> None:
        key = next(k for k in model if key_part in k)
        model[key] = fn(model[key])

    return _model(edit)


def _poke(key_part: str, value: float) -> Callable[[Path], None]:
    """One entry of the first floating-point tensor whose name contains ``key_part`` set to ``value``."""
    return lambda path: fx.fill_model(path, value, key_part)


def _zip_garbage(path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", os.urandom(300))
        zf.writestr("archive/version", "3\n")
    fx.write_bytes(path, buf.getvalue())


class _Exploit:
    """A pickle that would create a marker file when unpickled without ``weights_only``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _exploit_then_check(run_dir: Path) -> None:
    marker = run_dir / "PWNED"
    fx.write_bytes(fx.latest(run_dir), pickle.dumps({"format": 1, "model": _Exploit(marker)}))
    try:
        _load_run(run_dir)
    finally:
        if marker.exists():
            raise AssertionError("loading the checkpoint executed code from it")


def _replace_with(kind: str, rel: str) -> Callable[[Path], None]:
    """Put the cached run ``kind``'s file ``rel`` (relative to the run) in place of the damaged one."""
    return lambda path: fx.replace_file(fx.built_run(kind) / rel, path)


# --------------------------------------------------------------------------- checkpoints through load_run
CASES: List[Case] = [
    ckpt("nan-in-hash-table", _poke("embeddings", NAN), r"latest\.ckpt.*encoding\.embeddings.*non-finite"),
    ckpt("nan-everywhere", _set("embeddings", lambda t: torch.full_like(t, NAN)), r"latest\.ckpt.*non-finite"),
    ckpt("inf-in-mlp", _poke("density_net", INF), r"latest\.ckpt.*density_net.*non-finite"),
    ckpt("minus-inf-in-grid-buffer", _poke("grid.density", -INF), r"latest\.ckpt.*grid\.density.*non-finite"),
    ckpt("truncated-half", lambda p: fx.truncate(p, 0.5), r"latest\.ckpt.*could not load"),
    ckpt("truncated-to-ten-bytes", lambda p: fx.truncate(p, 10 / p.stat().st_size), r"latest\.ckpt.*could not load"),
    ckpt("empty-file", lambda p: fx.write_bytes(p, b""), r"latest\.ckpt.*could not load"),
    ckpt("random-bytes", lambda p: fx.write_bytes(p, os.urandom(4096)), r"latest\.ckpt.*could not load"),
    ckpt("zip-garbage", _zip_garbage, r"latest\.ckpt.*could not load"),
    ckpt("text-file", lambda p: fx.write_bytes(p, b"this is not a checkpoint\n"), r"latest\.ckpt.*could not load"),
    ckpt("json-file", lambda p: fx.write_bytes(p, json.dumps({"format": 1, "model": {}}).encode()), r"latest\.ckpt.*could not load"),
    ckpt("plain-pickle", lambda p: fx.write_bytes(p, pickle.dumps({"format": 1, "model": {}})), r"latest\.ckpt"),
    ckpt("a-tensor-not-a-dict", lambda p: fx.save(p, torch.zeros(3)), r"latest\.ckpt.*not a langfield checkpoint"),
    ckpt("no-format-key", lambda p: fx.edit_checkpoint(p, lambda s: s.pop("format")), r"latest\.ckpt.*format"),
    ckpt("future-format", lambda p: fx.edit_checkpoint(p, lambda s: s.update(format=99)), r"latest\.ckpt.*format 99"),
    ckpt("no-model-key", lambda p: fx.edit_checkpoint(p, lambda s: s.pop("model")), r"latest\.ckpt.*missing 'model'"),
    ckpt("model-is-a-list", lambda p: fx.edit_checkpoint(p, lambda s: s.update(model=[1, 2])), r"latest\.ckpt.*state dict"),
    ckpt("model-entry-is-a-string", _model(lambda m: m.update({"aabb": "0 0 0 1 1 1"})), r"latest\.ckpt.*'aabb'.*str"),
    ckpt("model-entry-missing", _model(lambda m: m.pop("field.encoding.embeddings")), r"latest\.ckpt.*missing.*embeddings"),
    ckpt("model-entry-unexpected", _model(lambda m: m.update({"field.extra_head.weight": torch.zeros(2)})),
         r"latest\.ckpt.*unexpected.*extra_head"),  # fmt: skip
    ckpt("integer-weights", _set("density_net", lambda t: t.long()), r"latest\.ckpt.*density_net.*int64.*float32"),
    ckpt("half-precision-weights", _set("embeddings", lambda t: t.half()), r"latest\.ckpt.*embeddings.*float16"),
    ckpt("transposed-table", _set("embeddings", lambda t: t.t().contiguous()), r"latest\.ckpt.*does not fit NGP.*embeddings"),
    ckpt("latest-is-a-folder", lambda p: (p.unlink(), p.mkdir()), r"latest\.ckpt.*folder"),
    ckpt("checkpoints-folder-missing", lambda p: [q.unlink() for q in p.parent.iterdir()] and p.parent.rmdir(),
         r"latest\.ckpt.*not found", error=FileNotFoundError),  # fmt: skip
    ckpt("checkpoint-of-a-gaussians-run", _replace_with("gaussians", "checkpoints/latest.ckpt"), r"latest\.ckpt.*NGP weights"),
    ckpt("gaussians-means-2d", _set("means", lambda t: t[:, :2].contiguous()), r"latest\.ckpt.*means.*\(200, 2\)", kind="gaussians"),
    ckpt("gaussians-rows-disagree", _set("opacities", lambda t: t[:50].clone()), r"latest\.ckpt.*opacities", kind="gaussians"),
    ckpt("gaussians-nan-color", _poke("sh0", NAN), r"latest\.ckpt.*sh0.*non-finite", kind="gaussians"),
    ckpt("gaussians-inf-quats", _poke("quats", INF), r"latest\.ckpt.*quats.*non-finite", kind="gaussians"),
    ckpt("gaussians-checkpoint-of-ngp-run", _replace_with("ngp", "checkpoints/latest.ckpt"), r"latest\.ckpt.*Gaussians weights",
         kind="gaussians"),  # fmt: skip
    Case("checkpoints/load/pickled-code-is-not-run", lambda tmp: _exploit_then_check(fx.copy_run("ngp", tmp)), ValueError,
         r"latest\.ckpt.*could not load", timeout_s=TIMEOUT),  # fmt: skip
    _case("load", "explicit-checkpoint-missing", "ngp", lambda run: None,
          lambda run: _load_run(run, checkpoint=run / "nope.ckpt"), r"nope\.ckpt.*not found", FileNotFoundError),  # fmt: skip
    _case("load", "explicit-checkpoint-is-run-json", "ngp", lambda run: None,
          lambda run: _load_run(run, checkpoint=run / "run.json"), r"run\.json.*could not load"),  # fmt: skip
]

def _huge_table(path: Path) -> None:
    grid = dict(log2_hashmap_size=28, num_levels=16, features_per_level=8, max_resolution=8192)
    fx.edit_json(path, lambda d: d["method_config"]["field"]["hash_grid"].update(grid))


# --------------------------------------------------------------------------- run.json through load_run
CASES += [
    spec("malformed", lambda p: p.write_text('{"method": "ngp", '), r"run\.json.*malformed JSON"),
    spec("empty", lambda p: p.write_text(""), r"run\.json.*malformed JSON"),
    spec("a-list", lambda p: p.write_text("[1, 2, 3]"), r"run\.json.*JSON object"),
    spec("not-utf8", lambda p: p.write_bytes(b'{"method": "\xff\xfe"}'), r"run\.json.*UTF-8"),
    spec("nested-too-deep", lambda p: p.write_text("[" * 200_000 + "]" * 200_000), r"run\.json"),
    spec("is-a-folder", lambda p: (p.unlink(), p.mkdir()), r"run\.json.*not found", error=FileNotFoundError),
    spec("method-missing", lambda p: fx.edit_json(p, lambda d: d.pop("method")), r"run\.json.*missing field 'method'"),
    spec("method-not-a-string", lambda p: fx.edit_json(p, lambda d: d.update(method=5)), r"run\.json.*method.*5"),
    spec("method-unknown", lambda p: fx.edit_json(p, lambda d: d.update(method="instant-ngp")), r"run\.json.*instant-ngp"),
    spec("method-says-gaussians", lambda p: fx.edit_json(p, lambda d: d.update(method="gaussians", method_config={})),
         r"latest\.ckpt.*Gaussians weights"),  # fmt: skip
    spec("method-config-a-list", lambda p: fx.edit_json(p, lambda d: d.update(method_config=[])), r"run\.json.*method_config"),
    spec("method-config-unknown-field", lambda p: fx.edit_json(p, lambda d: d["method_config"].update(turbo=True)),
         r"run\.json.*method_config.*turbo"),  # fmt: skip
    spec("method-config-wrong-type", lambda p: fx.edit_json(p, lambda d: d["method_config"]["grid"].update(resolution="big")),
         r"method_config\.grid\.resolution.*integer"),  # fmt: skip
    spec("method-config-nan-lr", lambda p: p.write_text(p.read_text().replace('"lr": 0.01', '"lr": NaN')),
         r"method_config\.lr.*finite"),  # fmt: skip
    fx.under_memory_limit(fx.LIMIT_4GIB, spec("method-config-huge-table", _huge_table, r"log2_hashmap_size=28.*needs about")),
    spec("data-missing", lambda p: fx.edit_json(p, lambda d: d.pop("data")), r"run\.json.*missing field 'data'"),
    spec("data-path-a-number", lambda p: fx.edit_json(p, lambda d: d["data"].update(path=7)), r"run\.json:data\.path.*string"),
    spec("data-downscale-zero", lambda p: fx.edit_json(p, lambda d: d["data"].update(downscale=0)), r"downscale"),
    spec("data-unknown-field", lambda p: fx.edit_json(p, lambda d: d["data"].update(colour="red")), r"run\.json:data.*colour"),
    spec("data-in-memory", lambda p: fx.edit_json(p, lambda d: d["data"].update(path="<in-memory:x>")), r"run\.json.*in-memory"),
    spec("data-procedural-size-huge", lambda p: fx.edit_json(p, lambda d: d["data"].update(procedural_size=10**7)),
         r"procedural_size"),  # fmt: skip
    spec("trainer-max-steps-text", lambda p: fx.edit_json(p, lambda d: d["trainer"].update(max_steps="many")),
         r"run\.json:trainer\.max_steps.*integer"),  # fmt: skip
    spec("trainer-unknown-field", lambda p: fx.edit_json(p, lambda d: d["trainer"].update(warp=9)), r"run\.json:trainer.*warp"),
    spec("trainer-device-banana", lambda p: fx.edit_json(p, lambda d: d["trainer"].update(device="banana")), r"device.*banana"),
]


# --------------------------------------------------------------------------- resuming training (prepare_run)


def _resume(run_dir: Path) -> None:
    from langfield.runs.spec import PROCEDURAL, DataConfig
    from langfield.runs.train import prepare_run
    from langfield.training.trainer import TrainerConfig

    cfg = TrainerConfig(max_steps=6, num_rays=64, eval_every=0, checkpoint_every=0, output_dir=str(run_dir), device="cpu",
                        progress=False)  # fmt: skip
    method = json.loads((run_dir / "run.json").read_text())["method"]
    data = DataConfig(PROCEDURAL, procedural_size=16, procedural_views=4)
    prepare_run(data, method, cfg, resume=True, preset="cpu", overrides=fx.overrides(method)).trainer.train()


def resume(name: str, damage: Callable[[Path], Any], match: str, kind: str = "ngp") -> Case:
    return _case("resume", name, kind, lambda run: damage(fx.latest(run)), _resume, match)


CASES += [
    resume("nan-weights", _poke("embeddings", NAN), r"latest\.ckpt.*non-finite"),
    resume("no-rng", lambda p: fx.edit_checkpoint(p, lambda s: s.pop("rng")), r"latest\.ckpt.*missing 'rng'"),
    resume("no-sampler", lambda p: fx.edit_checkpoint(p, lambda s: s.pop("sampler")), r"latest\.ckpt.*missing 'sampler'"),
    resume("no-step", lambda p: fx.edit_checkpoint(p, lambda s: s.pop("step")), r"latest\.ckpt.*missing 'step'"),
    resume("truncated", lambda p: fx.truncate(p, 0.3), r"latest\.ckpt.*could not load"),
    resume("other-method", _replace_with("gaussians", "checkpoints/latest.ckpt"), r"latest\.ckpt.*NGP weights"),
    resume("gaussians-nan-scales", _poke("scales", NAN), r"latest\.ckpt.*scales.*non-finite", kind="gaussians"),
]


# --------------------------------------------------------------------------- export


def _export(run_dir: Path, **kwargs: Any) -> None:
    from langfield.runs.export import export_run

    export_run(run_dir, **kwargs)


def export(name: str, damage: Callable[[Path], Any], match: str, error: type = ValueError, **kwargs: Any) -> Case:
    return _case("export", name, "gaussians", damage, lambda run: _export(run, **kwargs), match, error)


CASES += [
    export("nan-opacity", lambda run: fx.fill_model(fx.latest(run), NAN, "opacities"), r"latest\.ckpt.*opacities.*non-finite"),
    export("no-sh-rest", lambda run: fx.edit_checkpoint(fx.latest(run), lambda s: s["model"].pop("cloud.params.shN")),
           r"latest\.ckpt.*shN"),  # fmt: skip
    export("checkpoint-of-ngp-run", lambda run: _replace_with("ngp", "checkpoints/latest.ckpt")(fx.latest(run)),
           r"latest\.ckpt.*written by.*NGP"),  # fmt: skip
    export("format-obj", lambda run: None, r"format.*'obj'", fmt="obj"),
    _case("export", "output-is-a-folder", "gaussians", lambda run: (run / "out.ply").mkdir(),
          lambda run: _export(run, output=run / "out.ply"), r"out\.ply.*existing folder"),  # fmt: skip
    _case("export", "output-under-a-file", "gaussians", lambda run: None,
          lambda run: _export(run, output=run / "run.json" / "cloud.ply"), r"cloud\.ply.*run\.json is a file"),  # fmt: skip
]


# --------------------------------------------------------------------------- language/field.pt


def _scene(run_dir: Path) -> None:
    from langfield.runs.language import load_language_scene

    load_language_scene(run_dir, "cpu")


def field(name: str, damage: Callable[[Path], Any], match: str, kind: str = "ngp+language", error: type = ValueError) -> Case:
    """``load_language_scene`` of a run whose ``language/field.pt`` went through ``damage(path)``."""
    return _case("field", name, kind, lambda run: damage(run / "language" / "field.pt"), _scene, match, error)


def _state(edit: Callable[[Dict[str, Any]], Any]) -> Callable[[Path], None]:
    return lambda path: fx.edit_field(path, edit)


def _field_tensor(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Path], None]:
    def edit(state: Dict[str, Any]) -> None:
        key = next(k for k, v in state["field"].items() if v.is_floating_point() and v.ndim >= 2)
        state["field"][key] = fn(state["field"][key])

    return _state(edit)


CASES += [
    field("truncated", lambda p: fx.truncate(p, 0.5), r"field\.pt.*could not|field\.pt.*not a readable"),
    field("empty", lambda p: fx.write_bytes(p, b""), r"field\.pt.*not a readable"),
    field("random-bytes", lambda p: fx.write_bytes(p, os.urandom(2048)), r"field\.pt.*not a readable"),
    field("zip-garbage", _zip_garbage, r"field\.pt.*not a readable"),
    field("a-list", lambda p: fx.save(p, [1, 2, 3]), r"field\.pt.*list"),
    field("is-a-folder", lambda p: (p.unlink(), p.mkdir()), r"field\.pt.*folder"),
    field("missing", lambda p: p.unlink(), r"no language field.*field\.pt", error=FileNotFoundError),
    field("no-field-key", _state(lambda s: s.pop("field")), r"field\.pt.*missing 'field'"),
    field("no-config", _state(lambda s: s.pop("config")), r"field\.pt.*missing 'config'"),
    field("no-teacher", _state(lambda s: s.pop("teacher")), r"field\.pt.*missing 'teacher'"),
    field("future-format", _state(lambda s: s.update(format=2)), r"field\.pt.*format 2"),
    field("kind-unknown", _state(lambda s: s.update(kind="mesh")), r"field\.pt.*kind 'mesh'"),
    field("embedding-dim-text", _state(lambda s: s.update(embedding_dim="384")), r"field\.pt.*embedding_dim.*str"),
    field("embedding-dim-zero", _state(lambda s: s.update(embedding_dim=0)), r"field\.pt.*embedding_dim"),
    field("latent-dim-zero", _state(lambda s: s.update(latent_dim=0)), r"field\.pt.*latent_dim"),
    field("nan-weights", _field_tensor(lambda t: torch.full_like(t, NAN)), r"field\.pt.*non-finite"),
    field("inf-weight", _field_tensor(lambda t: t.index_fill(0, torch.tensor([0]), INF)), r"field\.pt.*non-finite"),
    field("integer-weights", _field_tensor(lambda t: t.long()), r"field\.pt.*int64"),
    field("wrong-shape", _field_tensor(lambda t: t[:, :1].contiguous()), r"field\.pt.*does not fit"),
    field("entry-not-a-tensor", _state(lambda s: s["field"].update({next(iter(s["field"])): [0.0]})), r"field\.pt.*list"),
    field("entry-missing", _state(lambda s: s["field"].pop(next(iter(s["field"])))), r"field\.pt.*does not fit"),
    field("config-unknown-field", _state(lambda s: s["config"].update(warp=1)), r"field\.pt.*config.*warp"),
    field("config-wrong-type", _state(lambda s: s["config"].update(steps="long")), r"field\.pt.*config\.steps.*integer"),
    field("teacher-kind-unknown", _state(lambda s: s.update(teacher={"kind": "oracle"})), r"field\.pt.*teacher.*oracle"),
    field("teacher-config-bad", _state(lambda s: s["teacher"].update(config={"strength": -1})), r"field\.pt.*teacher.*strength"),
    field("field-of-gaussians-run", _replace_with("gaussians+language", "language/field.pt"), r"field\.pt.*gaussians.*NGP"),
    field("gaussian-count-differs", _state(lambda s: s.update(num_gaussians=s["num_gaussians"] + 1)),
          r"field\.pt.*201 Gaussians", kind="gaussians+language"),  # fmt: skip
    field("gaussians-no-latent", _state(lambda s: s.update(latent_dim=None)), r"field\.pt.*latent_dim",
          kind="gaussians+language"),  # fmt: skip
    field("gaussians-nan-codes", _field_tensor(lambda t: torch.full_like(t, NAN)), r"field\.pt.*non-finite",
          kind="gaussians+language"),  # fmt: skip
    _case("field", "language-is-a-file", "ngp+language",
          lambda run: (shutil.rmtree(run / "language"), (run / "language").write_text("x")), _scene,
          r"no language field", FileNotFoundError),  # fmt: skip
]


# --------------------------------------------------------------------------- targets.pt (resuming a language job)


def _rerun_language(run_dir: Path) -> None:
    from langfield.runs.language import train_language

    train_language(run_dir, "simulated", fx.language_config(), device="cpu", progress=False)


def targets(name: str, damage: Callable[[Path], Any], match: str) -> Case:
    return _case("targets", name, "ngp+language", lambda run: damage(run / "language" / "targets.pt"), _rerun_language, match)


CASES += [
    targets("truncated", lambda p: fx.truncate(p, 0.5), r"targets\.pt.*not a readable"),
    targets("random-bytes", lambda p: fx.write_bytes(p, os.urandom(1000)), r"targets\.pt.*not a readable"),
    targets("a-tensor", lambda p: fx.save(p, torch.zeros(2)), r"targets\.pt.*Tensor"),
    targets("targets-wrong-shape", _state(lambda s: s.update(targets=s["targets"][..., :3].clone())), r"targets\.pt.*'targets'"),
    targets("targets-missing", _state(lambda s: s.pop("targets")), r"targets\.pt.*'targets'"),
    targets("targets-nan", _state(lambda s: s["targets"].view(-1)[:10].fill_(NAN)), r"targets\.pt.*finite"),
    _case("targets", "field-nan-on-resume", "ngp+language", lambda run: _field_tensor(lambda t: torch.full_like(t, NAN))(
        run / "language" / "field.pt"), _rerun_language, r"field\.pt.*non-finite"),
]
