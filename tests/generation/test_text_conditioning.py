"""MiniLM token embeddings for the toy diffusion models (the real shipped all-MiniLM-L6-v2)."""

from __future__ import annotations

import pytest
import torch

from langfield._checks import InputError
from langfield.generation.text_conditioning import PromptEmbeddings, PromptEncoder, check_prompts, load_prompt_encoder

PROMPTS = ["a red sphere", "a blue box left of a green cone on a checkered floor"]


def test_shapes_mask_and_zero_padding(prompt_encoder):
    emb = prompt_encoder.encode(PROMPTS)
    assert emb.embeds.shape == (2, 32, 384) and emb.pooled.shape == (2, 384)
    assert emb.embeds.dtype == torch.float32 and emb.attention_mask.dtype == torch.int64
    counts = [prompt_encoder.token_count(p) for p in PROMPTS]
    assert emb.token_counts == counts and counts[0] == 5  # [CLS] a red sphere [SEP]
    for row, n in enumerate(counts):
        assert emb.attention_mask[row, :n].eq(1).all() and emb.attention_mask[row, n:].eq(0).all()
        assert emb.embeds[row, n:].abs().max() == 0  # padded positions are zero
        assert emb.embeds[row, :n].norm(dim=-1).min() > 1.0  # real tokens are not
    assert emb.prompts == tuple(PROMPTS)
    assert not emb.embeds.is_inference()  # usable as a training input


def test_pooled_is_the_minilm_sentence_embedding(prompt_encoder):
    """pooled = masked mean of the token states, L2-normalised: exactly what embed_texts returns."""
    emb = prompt_encoder.encode(PROMPTS)
    sentence = prompt_encoder.text_encoder.embed_texts(PROMPTS)
    torch.testing.assert_close(emb.pooled, sentence, atol=1e-5, rtol=0)
    torch.testing.assert_close(emb.pooled.norm(dim=-1), torch.ones(2))


def test_a_prompt_does_not_depend_on_its_batch(prompt_encoder):
    alone = prompt_encoder.encode(PROMPTS[0])
    together = prompt_encoder.encode([PROMPTS[1], PROMPTS[0]])
    torch.testing.assert_close(together.embeds[1:], alone.embeds, atol=1e-5, rtol=0)
    # and different prompts give different embeddings
    assert (together.embeds[0] - together.embeds[1]).abs().max() > 0.1


def test_empty_prompt_is_cls_sep(prompt_encoder):
    empty = prompt_encoder.empty(3)
    assert len(empty) == 3 and empty.token_counts == [2, 2, 2] and empty.prompts == ("", "", "")
    torch.testing.assert_close(empty.embeds[0], empty.embeds[2])
    assert (empty.embeds[0] - prompt_encoder.encode("a red sphere").embeds[0]).abs().max() > 0.1


def test_a_prompt_over_the_limit_is_refused_naming_it(prompt_encoder):
    long = " ".join(["a red sphere left of a blue box"] * 5)  # 8 words x 5 + 2 = 42 tokens
    count = prompt_encoder.token_count(long)
    assert count == 42
    with pytest.raises(InputError) as info:
        prompt_encoder.encode(["a box", long])
    message = str(info.value)
    assert "prompts[1]" in message and "42 tokens" in message and "at most 32" in message
    assert "truncate=True" in message and "'a red sphere left of" in message


def test_truncate_cuts_explicitly(prompt_encoder):
    long = " ".join(["a red sphere left of a blue box"] * 5)
    emb = prompt_encoder.encode(long, truncate=True)
    assert emb.token_counts == [32] and emb.embeds.shape == (1, 32, 384)
    assert emb.embeds[0].norm(dim=-1).min() > 1.0  # every position is a real token


def test_bad_prompts_and_lengths(prompt_encoder):
    with pytest.raises(InputError, match=r"prompts\[1\]: expected a string, got int"):
        prompt_encoder.encode(["a box", 3])
    with pytest.raises(InputError, match="need at least one prompt"):
        prompt_encoder.encode([])
    with pytest.raises(InputError, match="max_length: must be <= 256"):
        PromptEncoder(prompt_encoder.text_encoder, max_length=1000)
    with pytest.raises(InputError, match="max_length: must be >= 2"):
        load_prompt_encoder(max_length=1)
    assert check_prompts(" a box ") == ["a box"]


def test_the_text_model_is_loaded_once_per_directory_and_device(prompt_encoder):
    other = load_prompt_encoder(max_length=16)
    assert other.text_encoder is prompt_encoder.text_encoder
    assert other.encode("a box").embeds.shape == (1, 16, 384)
    assert prompt_encoder.spec() == {
        "text_model": "all-MiniLM-L6-v2", "text_model_dir": None, "max_length": 32, "embedding_dim": 384,
    }  # fmt: skip


def test_prompt_embeddings_check_their_shapes():
    with pytest.raises(InputError, match=r"pooled: expected shape \(2, P\)"):
        PromptEmbeddings(torch.zeros(2, 4, 8), torch.ones(2, 4, dtype=torch.long), torch.zeros(3, 8))
    other_width = PromptEmbeddings(torch.zeros(2, 4, 8), torch.ones(2, 4, dtype=torch.long), torch.zeros(2, 5))
    assert other_width.pooled.shape == (2, 5)  # real SD3 / SDXL pool at another width than their tokens
    with pytest.raises(InputError, match="attention_mask: expected shape"):
        PromptEmbeddings(torch.zeros(2, 4, 8), torch.ones(2, 5, dtype=torch.long), torch.zeros(2, 8))
    ones = torch.ones(2, 1, dtype=torch.long)
    emb = PromptEmbeddings(torch.arange(2.0).view(2, 1, 1), ones, torch.zeros(2, 1), ("a", "b"))
    rep = emb.repeat_interleave(2)
    assert rep.embeds.flatten().tolist() == [0.0, 0.0, 1.0, 1.0] and rep.prompts == ("a", "a", "b", "b")
