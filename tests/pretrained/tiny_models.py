"""Tiny, randomly initialised checkpoints written to disk for tests (no downloads).

- ``save_tiny_clip(directory)``: a ``CLIPModel`` (two-layer 32-wide towers, 30x30 images in
  6x6 patches, 16-dim projection), its ``CLIPImageProcessor`` and a word-level tokenizer over
  :data:`WORDS`, in the ``save_pretrained`` layout that ``load_encoder`` reads from a directory.
- ``save_tiny_sam(directory)``: a ``SamModel`` (64x64 input, 8x8 patches) and its ``SamProcessor``.
- ``save_tiny_bert(directory)``: a two-layer ``BertModel`` and the word-level tokenizer, a
  sentence-transformers-shaped directory (mean pooling) for the text encoder.
- ``place_in_hub_cache(cache, repo_id, directory)``: copies a saved model into the Hugging Face
  cache layout (``models--org--name/snapshots/<commit>/`` + ``refs/main``), as ``hf download``
  leaves it, so hub ids resolve from the cache without any network.

Random weights carry no semantics: use them for shapes, plumbing and determinism only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Union

import torch

WORDS = "a an the photo of red blue green mug cat dog chair table lamp plant book".split()
BOS, EOS, PAD, UNK = 97, 98, 0, 1
TOWER = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2)


def save_word_tokenizer(directory: Union[str, Path]) -> None:
    """A fast word-level tokenizer over :data:`WORDS` with ``<bos> ... <eos>`` templates."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": PAD, "[UNK]": UNK, "<bos>": BOS, "<eos>": EOS}
    vocab.update({w: i + 2 for i, w in enumerate(WORDS)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", BOS), ("<eos>", EOS)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="<bos>", eos_token="<eos>"
    )
    fast.save_pretrained(directory)


def save_tiny_clip(directory: Union[str, Path], seed: int = 0) -> Path:
    """Write a tiny random CLIP checkpoint (embedding dim 16, image size 30) into ``directory``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    directory = Path(directory)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(
            **TOWER, vocab_size=99, max_position_embeddings=16, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD
        ),
        vision_config=dict(**TOWER, image_size=30, patch_size=6),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}).save_pretrained(directory)
    save_word_tokenizer(directory)
    return directory


def save_tiny_sam(directory: Union[str, Path], seed: int = 0) -> Path:
    """Write a tiny random SAM (``SamModel`` + ``SamProcessor``, 64x64 input) into ``directory``."""
    import transformers

    directory = Path(directory)
    torch.manual_seed(seed)
    config = transformers.SamConfig(
        vision_config=dict(
            hidden_size=32,
            output_channels=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=64,
            patch_size=8,
            window_size=4,
            global_attn_indexes=[1],
            num_pos_feats=8,
            mlp_dim=32,
        ),
        prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4),
        mask_decoder_config=dict(
            hidden_size=16, mlp_dim=32, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=16
        ),
    )
    image_processor = transformers.SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})
    transformers.SamModel(config).save_pretrained(directory)
    transformers.SamProcessor(image_processor=image_processor).save_pretrained(directory)
    return directory


def save_tiny_bert(directory: Union[str, Path], seed: int = 0) -> Path:
    """Write a tiny random ``BertModel`` (hidden size 32) + word tokenizer + mean pooling config."""
    from transformers import BertConfig, BertModel

    directory = Path(directory)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        max_position_embeddings=32, pad_token_id=PAD,
    )  # fmt: skip
    BertModel(config).save_pretrained(directory)
    save_word_tokenizer(directory)
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    return directory


def place_in_hub_cache(
    cache: Union[str, Path], repo_id: str, directory: Union[str, Path], commit: str = "0" * 40
) -> Path:
    """Copy a saved model into ``cache`` as ``hf download repo_id`` would; return the snapshot path."""
    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(directory, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)  # no newline, as huggingface_hub writes it
    return snapshot
