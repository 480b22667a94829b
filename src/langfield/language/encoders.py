"""Vision-language encoders (CLIP, SigLIP, OpenCLIP) with one small interface and a disk cache.

A language field (LERF, OV-NeRF, LangSplat, ...) needs two things from a CLIP-family model:
L2-normalised embeddings of image crops, and L2-normalised embeddings of text queries, in
the same space. :class:`VisionLanguageEncoder` is that interface:

- ``embed_images(images)``: ``images`` ``[B, H, W, 3]`` (``uint8``, or float in ``[0, 1]``)
  to ``[B, E]`` float32, unit norm.
- ``embed_texts(texts)``: ``T`` strings to ``[T, E]`` float32, unit norm.

Both run batched (``EncoderConfig.batch_size``) under :func:`torch.inference_mode`, and both
return *ordinary* tensors (not inference tensors), so the embeddings can be used as targets
in a loss that autograd saves for backward (e.g. a cosine similarity).

Images are preprocessed in torch (resize, centre crop, normalise with the checkpoint's own
mean/std), never through PIL, so batches of rendered or loaded images go straight to the
device. The resize is bicubic with antialiasing, as the reference PIL pipeline, so values
match the Hugging Face processors closely but not bit-for-bit.

Backends, chosen by :func:`load_encoder` through the plain registry :data:`ENCODER_BACKENDS`:

- ``"transformers"``: :class:`TransformersCLIPEncoder`, CLIP and SigLIP checkpoints by hub id
  (``"openai/clip-vit-base-patch16"``, ``"google/siglip-base-patch16-224"``,
  ``"wkcn/TinyCLIP-ViT-8M-16-Text-3M-YFCC15M"``) or a local directory.
- ``"open_clip"``: :class:`OpenCLIPEncoder`, needs ``pip install open_clip_torch``. Model
  strings: ``"open_clip:ViT-B-16/laion2b_s34b_b88k"`` (architecture/pretrained tag) or
  ``"hf-hub:timm/ViT-B-16-SigLIP"``.
- ``"auto"``: ``open_clip`` for strings starting with ``open_clip:`` or ``hf-hub:``,
  ``transformers`` otherwise.

A model that is neither a local directory nor in the local Hugging Face cache (offline
machine, ``HF_HUB_OFFLINE=1``) raises :class:`FileNotFoundError` with a message that says how
to fetch it, never a traceback from inside ``transformers``.

:class:`EmbeddingCache` stores one ``.pt`` file per (image content, encoder, extra key), written
atomically, and :func:`cached_embed_images` uses it so re-training does not re-encode.

Example::

    encoder = load_encoder(EncoderConfig(model="openai/clip-vit-base-patch16"))
    img = encoder.embed_images(images)          # [B, E]
    txt = encoder.embed_texts(["a red mug"])    # [1, E]
    relevancy = img @ txt.T                     # cosine similarities
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from langfield.io.atomic import atomic_save_torch

PathLike = Union[str, os.PathLike]

__all__ = [
    "ENCODER_BACKENDS",
    "EmbeddingCache",
    "EncoderConfig",
    "OpenCLIPEncoder",
    "TransformersCLIPEncoder",
    "VisionLanguageEncoder",
    "cached_embed_images",
    "load_encoder",
]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class EncoderConfig:
    """Which vision-language model to load and how to run it.

    Attributes:
        model: hub id (``"openai/clip-vit-base-patch16"``, ``"google/siglip-base-patch16-224"``),
            a local directory holding a ``save_pretrained`` checkpoint, or an OpenCLIP string
            (``"open_clip:ViT-B-16/laion2b_s34b_b88k"``, ``"hf-hub:timm/..."``).
        backend: ``"transformers"``, ``"open_clip"`` or ``"auto"`` (see the module docstring).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None`` picks CUDA when available.
        dtype: ``"auto"`` (float16 on CUDA, float32 on CPU), ``"float32"``, ``"float16"`` or
            ``"bfloat16"``. Preprocessing and the final normalisation always run in float32.
        batch_size: images or texts per forward pass.
        cache_dir: directory for the per-image embedding cache used by
            :func:`cached_embed_images`; ``None`` disables caching.
    """

    model: str = "openai/clip-vit-base-patch16"
    backend: str = "auto"
    device: str | None = None
    dtype: str = "auto"
    batch_size: int = 64
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"model must be a non-empty string, got {self.model!r}")
        backends = ("auto", *ENCODER_BACKENDS)
        if self.backend not in backends:
            raise ValueError(f"backend must be one of {backends}, got {self.backend!r}")
        if self.dtype != "auto" and self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'auto' or one of {tuple(_DTYPES)}, got {self.dtype!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")

    def resolved_device(self) -> torch.device:
        """``device`` as a :class:`torch.device`, CUDA when available if ``device`` is ``None``."""
        if self.device is None:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def resolved_dtype(self) -> torch.dtype:
        """``dtype`` as a :class:`torch.dtype`; ``"auto"`` is float16 on CUDA, float32 elsewhere."""
        if self.dtype == "auto":
            return torch.float16 if self.resolved_device().type == "cuda" else torch.float32
        return _DTYPES[self.dtype]


# --------------------------------------------------------------------------------------------
# Input checks and torch preprocessing
# --------------------------------------------------------------------------------------------


def _check_images(images: Any) -> Tensor:
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor [B, H, W, 3], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must have shape [B, H, W, 3], got {tuple(images.shape)}")
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise ValueError(f"images must hold at least one non-empty image, got shape {tuple(images.shape)}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}")
    return images


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str):  # one query, not a sequence of characters
        texts = [texts]
    if not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a sequence of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError("texts must hold at least one string, got an empty sequence")
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts must hold only strings, got elements of type {sorted(set(bad))}")
    return list(texts)


def _size_entry(size: Any, key: str) -> int | None:
    """Read ``key`` from a processor size (int, dict or ``SizeDict``)."""
    if size is None:
        return None
    if isinstance(size, int):
        return size
    value = size.get(key) if hasattr(size, "get") else getattr(size, key, None)
    return None if value is None else int(value)


@dataclass(frozen=True)
class _ImageSpec:
    """How a checkpoint expects its pixels: resize, optional centre crop, normalisation."""

    shortest_edge: int | None  # resize the short side to this (aspect kept), else...
    resize_hw: tuple[int, int] | None  # ...resize to exactly (H, W)
    crop_hw: tuple[int, int] | None  # centre crop after resizing
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mode: str = "bicubic"

    @property
    def output_hw(self) -> tuple[int, int]:
        if self.crop_hw is not None:
            return self.crop_hw
        if self.resize_hw is not None:
            return self.resize_hw
        assert self.shortest_edge is not None
        return (self.shortest_edge, self.shortest_edge)


def _preprocess(images: Tensor, spec: _ImageSpec, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``[B, H, W, 3]`` uint8 / float in [0, 1] to normalised ``[B, 3, h, w]`` in ``dtype``."""
    x = images.to(device)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    x = x.permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    if spec.shortest_edge is not None:
        # Same rounding as transformers' get_resize_output_image_size(default_to_square=False).
        short, long = (h, w) if h <= w else (w, h)
        new_short, new_long = spec.shortest_edge, int(spec.shortest_edge * long / short)
        target = (new_short, new_long) if h <= w else (new_long, new_short)
    else:
        assert spec.resize_hw is not None
        target = spec.resize_hw
    if tuple(target) != (h, w):
        antialias = spec.mode in ("bilinear", "bicubic")
        align = False if spec.mode in ("bilinear", "bicubic") else None
        x = F.interpolate(x, size=target, mode=spec.mode, align_corners=align, antialias=antialias)
        x = x.clamp(0.0, 1.0)  # bicubic overshoots; PIL clamps to the uint8 range
    if spec.crop_hw is not None:
        ch, cw = spec.crop_hw
        h, w = x.shape[-2:]
        if ch > h or cw > w:  # pad symmetrically with zeros, as the HF centre crop does
            pad_h, pad_w = max(ch - h, 0), max(cw - w, 0)
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
            h, w = x.shape[-2:]
        top, left = (h - ch) // 2, (w - cw) // 2
        x = x[..., top : top + ch, left : left + cw]
    mean = torch.tensor(spec.mean, device=device, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - mean) / std).to(dtype).contiguous()


def _features(output: Any) -> Tensor:
    """``get_*_features`` returns a tensor (transformers 4) or a ``BaseModelOutputWithPooling``
    whose ``pooler_output`` holds the projected features (transformers 5)."""
    if isinstance(output, Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if isinstance(pooled, Tensor):
        return pooled
    raise TypeError(f"cannot read features from a {type(output).__name__}")


# --------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------


class VisionLanguageEncoder:
    """Base class: batching, input checks, normalisation. Subclasses implement three hooks.

    Subclasses set ``self.model``, ``self._spec`` (an :class:`_ImageSpec`: resize, crop,
    mean/std) and ``self._embedding_dim``, and implement :meth:`_image_features`
    (``[b, 3, h, w]`` to ``[b, E]``) and :meth:`_text_features` (``t`` strings to ``[t, E]``).

    Attributes:
        config: the :class:`EncoderConfig` it was built from.
        name: a stable identifier (``"<backend>:<model>"``), used as the cache namespace.
        device, dtype: where and in which precision the model runs.
    """

    config: EncoderConfig
    name: str
    device: torch.device
    dtype: torch.dtype

    def __init__(self, config: EncoderConfig, name: str) -> None:
        self.config = config
        self.name = name
        self.device = config.resolved_device()
        self.dtype = config.resolved_dtype()

    _spec: "_ImageSpec"
    _embedding_dim: int

    @property
    def embedding_dim(self) -> int:
        """``E``, the size of the joint embedding space."""
        return self._embedding_dim

    @property
    def image_size(self) -> tuple[int, int]:
        """``(h, w)`` the model sees after preprocessing."""
        return self._spec.output_hw

    def preprocess_images(self, images: Tensor) -> Tensor:
        """``[B, H, W, 3]`` to the model's normalised ``[B, 3, h, w]`` on ``device`` in ``dtype``."""
        return _preprocess(_check_images(images), self._spec, self.device, self.dtype)

    def _image_features(self, pixels: Tensor) -> Tensor:
        raise NotImplementedError

    def _text_features(self, texts: list[str]) -> Tensor:
        raise NotImplementedError

    def embed_images(self, images: Tensor) -> Tensor:
        """Embed images.

        Args:
            images: ``[B, H, W, 3]``, ``uint8`` or float in ``[0, 1]``, any device, any size
                (resized and centre-cropped as the checkpoint expects).

        Returns:
            ``[B, E]`` float32 on ``self.device``, each row of unit L2 norm.
        """
        images = _check_images(images)
        step = self.config.batch_size
        chunks = []
        with torch.inference_mode():
            for start in range(0, images.shape[0], step):
                pixels = self.preprocess_images(images[start : start + step])
                chunks.append(self._image_features(pixels).float())
        # Outside inference mode: the result is an ordinary tensor autograd may save.
        return F.normalize(torch.cat(chunks), dim=-1)

    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """Embed text queries.

        Args:
            texts: ``T`` strings (a single ``str`` counts as one query).

        Returns:
            ``[T, E]`` float32 on ``self.device``, each row of unit L2 norm.
        """
        texts = _check_texts(texts)
        step = self.config.batch_size
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), step):
                chunks.append(self._text_features(texts[start : start + step]).float())
        return F.normalize(torch.cat(chunks), dim=-1)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, embedding_dim={self.embedding_dim}, "
            f"image_size={self.image_size}, device={str(self.device)!r}, dtype={self.dtype})"
        )


# --------------------------------------------------------------------------------------------
# transformers backend
# --------------------------------------------------------------------------------------------


def _hf_offline() -> bool:
    return any(os.environ.get(k, "").upper() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _short(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


def _missing_model_message(model: str, err: BaseException) -> str:
    local_name = model.rstrip("/").split("/")[-1] or "model"
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface (default)"
    offline = "HF_HUB_OFFLINE=1 is set" if _hf_offline() else "the hub could not be reached or has no such repository"
    return (
        f"vision-language model {model!r} is not a local directory and is not in the local Hugging Face "
        f"cache ({cache}); {offline}.\n"
        f"To use it on this machine:\n"
        f"  1. on a machine with internet access run\n"
        f"       hf download {model} --local-dir ./{local_name}\n"
        f"     (older huggingface_hub: huggingface-cli download {model} --local-dir ./{local_name})\n"
        f"  2. copy that directory here and pass EncoderConfig(model='/path/to/{local_name}'),\n"
        f"or set HF_HOME (or HF_HUB_CACHE) to a Hugging Face cache that already holds {model!r}.\n"
        f"(underlying error: {_short(err)})"
    )


def _bad_local_model_message(path: Path, err: BaseException) -> str:
    return (
        f"could not load a vision-language model from the local directory {str(path)!r}: it must hold a "
        f"transformers checkpoint (config.json, model weights, tokenizer files and preprocessor_config.json), "
        f"e.g. as written by `hf download <model-id> --local-dir {path}`.\n(underlying error: {_short(err)})"
    )


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~", "\\")) or model.count("/") > 1 or os.sep != "/" and os.sep in model


class TransformersCLIPEncoder(VisionLanguageEncoder):
    """CLIP / SigLIP through Hugging Face ``transformers`` (``AutoModel`` + tokenizer + image config).

    Supported ``config.model_type``: ``"clip"`` (OpenAI CLIP, TinyCLIP, ...) and ``"siglip"``.
    SigLIP text is padded to ``max_length`` without an attention mask, as it was trained.

    Attributes:
        model: the ``CLIPModel`` / ``SiglipModel``, in eval mode, frozen.
        tokenizer: the checkpoint's tokenizer.
        model_type: ``"clip"`` or ``"siglip"``.
    """

    SUPPORTED_MODEL_TYPES = ("clip", "siglip")

    def __init__(self, config: EncoderConfig) -> None:
        source, name = config.model, config.model
        expanded = Path(os.path.expanduser(config.model))
        is_local = expanded.is_dir()
        if is_local:
            source, name = str(expanded), str(expanded.resolve())
        elif expanded.exists():
            raise ValueError(f"model {config.model!r} is a file; pass a checkpoint directory or a hub id")
        elif _looks_like_path(config.model):
            raise FileNotFoundError(
                f"vision-language model directory {config.model!r} does not exist. Fetch a checkpoint with "
                f"`hf download <model-id> --local-dir {config.model}` on a machine with internet access."
            )
        super().__init__(config, name=f"transformers:{name}")
        model, tokenizer, processor = self._load(source, is_local)

        self.model_type = str(getattr(model.config, "model_type", ""))
        if self.model_type not in self.SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"model {config.model!r} has model_type {self.model_type!r}; TransformersCLIPEncoder supports "
                f"{self.SUPPORTED_MODEL_TYPES}"
            )
        self.model = model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self._max_text_length = int(model.config.text_config.max_position_embeddings)
        text_config = model.config.text_config
        self._embedding_dim = int(  # CLIP: projection_dim; SigLIP: the text head's projection_size
            getattr(model.config, "projection_dim", None)
            or getattr(text_config, "projection_size", None)
            or text_config.hidden_size
        )
        self._spec = self._image_spec(processor, model)

    def _load(self, source: str, is_local: bool) -> tuple[Any, Any, Any]:
        try:
            import transformers
            from transformers import AutoImageProcessor, AutoModel, AutoTokenizer
        except ImportError as err:  # pragma: no cover - transformers is a dependency
            raise ImportError("TransformersCLIPEncoder needs transformers: pip install transformers") from err
        try:
            from huggingface_hub.errors import HFValidationError
        except ImportError:  # pragma: no cover - very old huggingface_hub
            HFValidationError = ValueError  # type: ignore[misc,assignment]

        if is_local and not (Path(source) / "config.json").is_file():
            err = FileNotFoundError(f"no config.json in {source}")
            raise FileNotFoundError(_bad_local_model_message(Path(source), err))
        kwargs = {"local_files_only": True} if (is_local or _hf_offline()) else {}
        verbosity = transformers.logging.get_verbosity()
        try:
            model = AutoModel.from_pretrained(source, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            # Only sizes / mean / std are read from the processor; silence the torchvision notice.
            transformers.logging.set_verbosity_error()
            processor = AutoImageProcessor.from_pretrained(source, **kwargs)
        except (OSError, HFValidationError) as err:
            message = _bad_local_model_message(Path(source), err) if is_local else _missing_model_message(source, err)
            raise FileNotFoundError(message) from None
        except ValueError as err:  # e.g. a local config.json without a model_type
            if not is_local:
                raise
            raise FileNotFoundError(_bad_local_model_message(Path(source), err)) from None
        finally:
            transformers.logging.set_verbosity(verbosity)
        return model, tokenizer, processor

    @staticmethod
    def _image_spec(processor: Any, model: Any) -> _ImageSpec:
        size = getattr(processor, "size", None)
        do_resize = getattr(processor, "do_resize", True)
        shortest = _size_entry(size, "shortest_edge")
        height, width = _size_entry(size, "height"), _size_entry(size, "width")
        native = int(model.config.vision_config.image_size)
        resize_hw: tuple[int, int] | None = None
        if not do_resize:
            shortest, resize_hw = None, (native, native)
        elif shortest is None:
            resize_hw = (height or native, width or native)
        crop_hw = None
        if getattr(processor, "do_center_crop", False):
            crop = getattr(processor, "crop_size", None)
            ch, cw = _size_entry(crop, "height"), _size_entry(crop, "width")
            crop_hw = (ch or native, cw or native)
        resample = int(getattr(processor, "resample", 3) or 3)
        mode = {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(resample, "bicubic")
        mean = tuple(float(v) for v in (getattr(processor, "image_mean", None) or (0.5, 0.5, 0.5)))
        std = tuple(float(v) for v in (getattr(processor, "image_std", None) or (0.5, 0.5, 0.5)))
        return _ImageSpec(shortest, resize_hw, crop_hw, mean, std, mode)  # type: ignore[arg-type]

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Tokens exactly as :meth:`embed_texts` feeds them to ``get_text_features``."""
        siglip = self.model_type == "siglip"
        tokens = self.tokenizer(
            _check_texts(texts),
            padding="max_length" if siglip else True,
            truncation=True,
            max_length=self._max_text_length,
            return_tensors="pt",
        )
        keys = ("input_ids",) if siglip else ("input_ids", "attention_mask")
        return {k: tokens[k].to(self.device) for k in keys if k in tokens}

    def _image_features(self, pixels: Tensor) -> Tensor:
        return _features(self.model.get_image_features(pixel_values=pixels))

    def _text_features(self, texts: list[str]) -> Tensor:
        return _features(self.model.get_text_features(**self.tokenize(texts)))


# --------------------------------------------------------------------------------------------
# open_clip backend
# --------------------------------------------------------------------------------------------


def _import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError as err:
        raise ImportError(
            "the 'open_clip' backend needs the open_clip package: pip install open_clip_torch"
        ) from err
    return open_clip


class OpenCLIPEncoder(VisionLanguageEncoder):
    """OpenCLIP models. ``config.model``: ``"open_clip:ARCH/PRETRAINED"``, ``"ARCH/PRETRAINED"``,
    ``"ARCH"`` (random weights) or ``"hf-hub:org/repo"``."""

    def __init__(self, config: EncoderConfig) -> None:
        open_clip = _import_open_clip()
        super().__init__(config, name=f"open_clip:{config.model.removeprefix('open_clip:')}")
        spec = config.model.removeprefix("open_clip:")
        arch, _, pretrained = spec.partition("/") if not spec.startswith("hf-hub:") else (spec, "", "")
        try:
            model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=pretrained or None)
        except (OSError, RuntimeError) as err:
            raise FileNotFoundError(
                f"could not load OpenCLIP model {config.model!r}; fetch its weights on a machine with internet "
                f"access (or set HF_HOME to a cache that has them). (underlying error: {_short(err)})"
            ) from None
        self.model = model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(arch)
        visual = model.visual
        size = getattr(visual, "image_size", 224)
        hw = (int(size[0]), int(size[1])) if isinstance(size, (tuple, list)) else (int(size), int(size))
        mean = tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
        std = tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
        self._spec = _ImageSpec(min(hw), None, hw, mean, std, "bicubic")  # type: ignore[arg-type]
        with torch.inference_mode():
            self._embedding_dim = int(self._text_features(["a"]).shape[-1])

    def _image_features(self, pixels: Tensor) -> Tensor:
        return self.model.encode_image(pixels)

    def _text_features(self, texts: list[str]) -> Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))


# --------------------------------------------------------------------------------------------
# Registry and dispatch
# --------------------------------------------------------------------------------------------

#: Backend name to encoder class; add an entry to plug in another backend.
ENCODER_BACKENDS: dict[str, type[VisionLanguageEncoder]] = {
    "transformers": TransformersCLIPEncoder,
    "open_clip": OpenCLIPEncoder,
}


def load_encoder(config: EncoderConfig) -> VisionLanguageEncoder:
    """Build the encoder ``config`` names.

    Raises:
        FileNotFoundError: the model is neither a local directory nor in the local cache; the
            message says how to download it.
        ImportError: the backend's package is missing (with the ``pip install`` line).
        ValueError: unsupported backend or model type.
    """
    backend = config.backend
    if backend == "auto":
        backend = "open_clip" if config.model.startswith(("open_clip:", "hf-hub:")) else "transformers"
    if backend not in ENCODER_BACKENDS:
        raise ValueError(f"backend must be one of {('auto', *ENCODER_BACKENDS)}, got {backend!r}")
    return ENCODER_BACKENDS[backend](config)


# --------------------------------------------------------------------------------------------
# Disk cache
# --------------------------------------------------------------------------------------------


def _image_uint8_cpu(image: Tensor) -> Tensor:
    if image.dtype == torch.uint8:
        return image.detach().to("cpu").contiguous()
    return (image.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).to("cpu").contiguous()


class EmbeddingCache:
    """Per-image embeddings on disk: one ``.pt`` file per key, written atomically.

    The key is the SHA-1 of the image's 8-bit content and shape, the encoder name and an extra
    key string (e.g. ``"crop:scale=0.25"`` for a crop pyramid, ``"region:mask=..."`` for region
    features). Float images are quantised to 8 bits for the key (lossless for images loaded
    from 8-bit files), so the same picture as uint8 or float in ``[0, 1]`` hits the same entry.

    Layout: ``directory/<encoder slug>/<key[:2]>/<key>.pt``. Any tensor can be stored; a
    missing, unreadable or corrupt file is a miss.
    """

    def __init__(self, directory: PathLike, encoder_name: str) -> None:
        if not encoder_name:
            raise ValueError("encoder_name must be a non-empty string")
        self.directory = Path(directory)
        self.encoder_name = encoder_name
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder_name)[-80:]
        self.root = self.directory / f"{slug}-{hashlib.sha1(encoder_name.encode()).hexdigest()[:8]}"

    def key(self, image: Tensor, extra_key: str = "") -> str:
        """Key of one image ``[H, W, 3]`` (uint8 or float in [0, 1])."""
        if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[-1] != 3:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"image must be a tensor [H, W, 3], got {shape}")
        pixels = _image_uint8_cpu(image)
        digest = hashlib.sha1()
        digest.update(f"langfield-embedding-v1\0{self.encoder_name}\0{extra_key}\0{tuple(pixels.shape)}\0".encode())
        digest.update(pixels.numpy().tobytes())
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pt"

    def load(self, key: str) -> Tensor | None:
        """The stored tensor (on CPU), or ``None`` when absent or unreadable."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            value = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # corrupt / truncated by an older non-atomic writer: treat as a miss
            return None
        return value if isinstance(value, Tensor) else None

    def save(self, key: str, value: Tensor) -> None:
        """Store ``value`` (copied to CPU, so a view never drags its whole storage along)."""
        atomic_save_torch(value.detach().to("cpu").clone().contiguous(), self.path(key))

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()


def cached_embed_images(
    encoder: VisionLanguageEncoder,
    images: Tensor,
    cache: EmbeddingCache | None = None,
    extra_key: str = "",
) -> Tensor:
    """:meth:`VisionLanguageEncoder.embed_images` that reads and fills an :class:`EmbeddingCache`.

    Only the images without a cache entry go through the model (in one batched call).

    Args:
        encoder: the encoder; its ``name`` must equal ``cache.encoder_name``.
        images: ``[B, H, W, 3]`` uint8 or float in ``[0, 1]``.
        cache: the cache; ``None`` uses ``encoder.config.cache_dir`` (no caching if that is
            ``None`` too).
        extra_key: distinguishes several cached products of the same image.

    Returns:
        ``[B, E]`` float32 on ``encoder.device``, unit rows.
    """
    images = _check_images(images)
    if cache is None:
        if encoder.config.cache_dir is None:
            return encoder.embed_images(images)
        cache = EmbeddingCache(encoder.config.cache_dir, encoder.name)
    if cache.encoder_name != encoder.name:
        raise ValueError(
            f"cache belongs to encoder {cache.encoder_name!r} but the encoder is {encoder.name!r}"
        )
    keys = [cache.key(image, extra_key) for image in images]
    found: list[Tensor | None] = []
    for key in keys:
        value = cache.load(key)
        found.append(value if value is not None and value.shape == (encoder.embedding_dim,) else None)
    missing = [i for i, value in enumerate(found) if value is None]
    if missing:
        index = torch.tensor(missing, device=images.device)
        fresh = encoder.embed_images(images.index_select(0, index))
        for i, embedding in zip(missing, fresh):
            cache.save(keys[i], embedding)
            found[i] = embedding
    return torch.stack([value.to(encoder.device, torch.float32) for value in found])  # type: ignore[union-attr]
