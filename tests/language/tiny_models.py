"""Tiny, randomly initialised vision-language checkpoints written to disk for tests (no downloads).

``save_tiny_clip(directory)`` writes a ``CLIPModel`` (two-layer 32-wide towers, 30x30 images in
6x6 patches, 16-dim projection), its ``CLIPImageProcessor`` and a word-level tokenizer over
:data:`WORDS`, in the ``save_pretrained`` layout that ``load_encoder`` reads from a directory.
Random weights carry no semantics: use them for shapes, plumbing and determinism only.
"""

from __future__ import annotations

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
