"""The one pretrained-model resolver: local directories, the Hugging Face cache, hub ids, offline policy."""

from __future__ import annotations

import json
import time

import pytest
import torch

from langfield.pretrained import PretrainedUnavailableError, hub_offline, resolve_pretrained
from langfield.pretrained.hub import hub_cache_dir, looks_like_path
from langfield.pretrained.resolver import explain_load_errors, load_failure_error

from .tiny_models import place_in_hub_cache, save_tiny_bert


def _model_dir(path, marker="config.json"):
    path.mkdir(parents=True)
    (path / marker).write_text("{}")
    return path


# --- local directories ----------------------------------------------------------------------------


def test_local_directory(tmp_path, hub_cache, no_network):
    folder = _model_dir(tmp_path / "models" / "clip")
    resolved = resolve_pretrained(str(folder), what="vision-language model")
    assert resolved.source == "local" and resolved.local_files_only
    assert resolved.name_or_path == str(folder.resolve()) and resolved.path == folder.resolve()
    assert resolved.from_pretrained_kwargs == {"local_files_only": True}
    assert resolved.name == str(folder)


def test_relative_id_shaped_directory_wins_over_the_hub(tmp_path, hub_cache, monkeypatch, no_network):
    _model_dir(tmp_path / "org" / "name")
    monkeypatch.chdir(tmp_path)
    resolved = resolve_pretrained("org/name")
    assert resolved.source == "local" and resolved.path == (tmp_path / "org" / "name").resolve()


def test_missing_directory_names_it(tmp_path, hub_cache):
    missing = tmp_path / "models" / "no-such-sam"
    with pytest.raises(PretrainedUnavailableError) as info:
        resolve_pretrained(str(missing), what="SAM model", hint="Or pass --masks superpixels.")
    message = str(info.value)
    assert str(missing) in message and "does not exist" in message and "SAM model" in message
    assert message.rstrip().endswith("Or pass --masks superpixels.")
    assert isinstance(info.value, FileNotFoundError) and info.value.model_name == str(missing)


def test_directory_without_config_json(tmp_path, hub_cache):
    folder = tmp_path / "weights-only"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(PretrainedUnavailableError) as info:
        resolve_pretrained(str(folder))
    assert str(folder) in str(info.value) and "has no config.json" in str(info.value)


def test_a_file_is_not_a_model_directory(tmp_path, hub_cache):
    file = tmp_path / "config.json"
    file.write_text("{}")
    with pytest.raises(PretrainedUnavailableError, match="is a file, not a directory"):
        resolve_pretrained(str(file))


def test_required_files_say_what_kind_of_model(tmp_path, hub_cache):
    """A diffusers pipeline is marked by model_index.json, a transformers model by config.json."""
    pipeline = _model_dir(tmp_path / "sd", "model_index.json")
    controlnet = _model_dir(tmp_path / "controlnet", "config.json")
    assert resolve_pretrained(str(pipeline), required_files=("model_index.json",)).source == "local"
    with pytest.raises(PretrainedUnavailableError, match="has no model_index.json"):
        resolve_pretrained(str(controlnet), required_files=("model_index.json",), what="diffusion pipeline")
    either = ("model_index.json", "config.json")
    assert resolve_pretrained(str(controlnet), required_files=either).source == "local"
    with pytest.raises(PretrainedUnavailableError, match="has no config.json"):
        resolve_pretrained(str(pipeline))  # the default marker is config.json
    with pytest.raises(ValueError, match="required_files"):
        resolve_pretrained(str(pipeline), required_files=())


def test_bad_names(hub_cache):
    with pytest.raises(ValueError, match="non-empty"):
        resolve_pretrained("  ")
    with pytest.raises(PretrainedUnavailableError, match="valid Hugging Face hub id"):
        resolve_pretrained("not a repo id!", what="SAM model")


# --- the Hugging Face cache -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def test_cached_hub_id_resolves_to_its_snapshot_and_loads(tiny_bert_dir, hub_cache, monkeypatch, no_network):
    from transformers import AutoModel

    snapshot = place_in_hub_cache(hub_cache, "tiny-org/tiny-bert", tiny_bert_dir)
    for offline in ("", "1"):  # the cache is used whether or not the hub is switched off
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
        resolved = resolve_pretrained("tiny-org/tiny-bert", what="text model")
        assert resolved.source == "cache" and resolved.local_files_only
        assert resolved.path == snapshot and resolved.name == "tiny-org/tiny-bert"
        assert resolved.cache_dir == hub_cache
    with explain_load_errors(resolved):
        model = AutoModel.from_pretrained(resolved.name_or_path, **resolved.from_pretrained_kwargs)
    original = AutoModel.from_pretrained(str(tiny_bert_dir), local_files_only=True)
    name, weight = next(iter(original.state_dict().items()))
    assert torch.equal(model.state_dict()[name], weight)


def test_hf_home_locates_the_cache(tiny_bert_dir, hub_cache, tmp_path, monkeypatch, no_network):
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / "hub"
    snapshot = place_in_hub_cache(tmp_path / "home" / "hub", "org/bert", tiny_bert_dir)
    assert resolve_pretrained("org/bert").path == snapshot


def test_cached_snapshot_without_the_marker_is_not_a_model(tmp_path, hub_cache, monkeypatch):
    place_in_hub_cache(hub_cache, "org/pipeline", _model_dir(tmp_path / "src"))  # config.json only
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedUnavailableError, match="has no model_index.json"):
        resolve_pretrained("org/pipeline", required_files=("model_index.json",))


# --- hub ids that are not cached: the one offline policy -----------------------------------------


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_uncached_hub_id_offline_fails_fast_with_instructions(variable, hub_cache, monkeypatch, no_network):
    monkeypatch.setenv(variable, "1")
    start = time.perf_counter()
    with pytest.raises(PretrainedUnavailableError) as info:
        resolve_pretrained("nobody/no-such-model", what="vision-language model", hint="Or use --teacher simulated.")
    assert time.perf_counter() - start < 5.0
    message = str(info.value)
    assert "'nobody/no-such-model'" in message and "vision-language model" in message
    assert f"{variable}=1 is set" in message
    assert str(hub_cache) in message and "HF_HUB_CACHE" in message
    assert "hf download nobody/no-such-model" in message and "huggingface-cli download nobody/no-such-model" in message
    assert "hf download nobody/no-such-model --local-dir" in message and "pass its path" in message
    assert message.rstrip().endswith("Or use --teacher simulated.")
    assert isinstance(info.value, FileNotFoundError)


def test_uncached_hub_id_online_is_left_to_from_pretrained(hub_cache, no_network):
    """No probe: with the hub on, an uncached id is handed to from_pretrained to download."""
    resolved = resolve_pretrained("org/model", revision="v1")
    assert resolved.source == "hub" and resolved.name_or_path == "org/model" and resolved.path is None
    assert resolved.from_pretrained_kwargs == {"local_files_only": False, "cache_dir": str(hub_cache), "revision": "v1"}


def test_downloads_not_allowed(hub_cache, no_network):
    with pytest.raises(PretrainedUnavailableError) as info:
        resolve_pretrained("org/model", what="SAM model", allow_download=False)
    assert "never downloaded" in str(info.value) and "HF_HUB_OFFLINE is not set" in str(info.value)


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("YES", True), (" on ", True),
                                             ("0", False), ("", False), ("false", False)])  # fmt: skip
def test_hub_offline_values(value, expected, hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub_offline() is expected
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", value)
    assert hub_offline() is expected


def test_hub_cache_dir_precedence(tmp_path, hub_cache, monkeypatch):
    assert hub_cache_dir() == hub_cache
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "legacy"))
    assert hub_cache_dir() == tmp_path / "legacy"


def test_looks_like_path():
    assert not looks_like_path("openai/clip-vit-base-patch16") and not looks_like_path("gpt2")
    for name in ("./clip", "../clip", "/abs/clip", "~/clip", "a/b/c", "models\\clip", ".hidden"):
        assert looks_like_path(name), name


# --- from_pretrained failures ----------------------------------------------------------------------


def test_invalid_local_model_names_the_directory(tmp_path, hub_cache):
    pytest.importorskip("transformers")
    from transformers import AutoModel

    folder = _model_dir(tmp_path / "broken")  # config.json "{}": no model_type
    resolved = resolve_pretrained(str(folder), what="text model")
    with pytest.raises(PretrainedUnavailableError) as info:
        with explain_load_errors(resolved):
            AutoModel.from_pretrained(resolved.name_or_path, **resolved.from_pretrained_kwargs)
    message = str(info.value)
    assert str(folder) in message and "not a complete, valid text model" in message and "ValueError" in message
    assert info.value.__suppress_context__  # no chained traceback from inside transformers


def test_corrupt_weights_name_the_directory(tiny_bert_dir, tmp_path, hub_cache):
    import shutil

    from transformers import AutoModel

    folder = tmp_path / "damaged"
    shutil.copytree(tiny_bert_dir, folder)
    (folder / "model.safetensors").write_bytes(b"truncated")
    resolved = resolve_pretrained(str(folder))
    with pytest.raises(PretrainedUnavailableError) as info:
        with explain_load_errors(resolved):
            AutoModel.from_pretrained(resolved.name_or_path, **resolved.from_pretrained_kwargs)
    assert str(folder) in str(info.value) and "SafetensorError" in str(info.value)


def test_other_errors_are_not_disguised(tmp_path, hub_cache):
    resolved = resolve_pretrained(str(_model_dir(tmp_path / "m")))
    with pytest.raises(RuntimeError, match="a bug"):
        with explain_load_errors(resolved):
            raise RuntimeError("a bug")


def test_failure_messages_per_source(tiny_bert_dir, hub_cache, monkeypatch):
    place_in_hub_cache(hub_cache, "org/bert", tiny_bert_dir)
    cached = resolve_pretrained("org/bert", what="text model", hint="HINT")
    message = str(load_failure_error(cached, "OSError: missing tokenizer"))
    assert "org/bert" in message and str(cached.path) in message and "hf download org/bert" in message
    assert "OSError: missing tokenizer" in message and message.endswith("HINT")
    downloaded = resolve_pretrained("org/other", what="text model")
    message = str(load_failure_error(downloaded, "ConnectionError: no route"))
    assert "download failed" in message and "ConnectionError: no route" in message
    assert "hf download org/other" in message and "HF_HUB_OFFLINE=1" in message
