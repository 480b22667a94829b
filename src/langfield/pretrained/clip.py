"""Vision-language encoders (CLIP, SigLIP, OpenCLIP) behind one small interface.

A language field (LERF, OV-NeRF, LangSplat, ...) needs two things from a CLIP-family model:
L2-normalised embeddings of image crops, and L2-normalised embeddings of text queries, in
the same space. :class:`VisionLanguageEncoder` is that interface:

- ``embed_images(images)``: ``images`` ``[B, H, W, 3]`` (``uint8``, or float in ``[0, 1]``)
  to ``[B, E]`` float32, unit norm.
- ``embed_texts(texts)``: ``T`` strings to ``[T, E]`` float32, unit norm.

Both run batched (``EncoderConfig.batch_size``) under :func:`torch.inference_mode`, and both
return *ordinary* tensors (not inference tensors), so the embeddings can be used as targets
in a loss that autograd saves for backward (e.g. a cosine similarity). Images are
preprocessed in torch (:mod:`~langfield.pretrained.clip_preprocessing`).

Backends, chosen by :func:`load_encoder` through the plain registry :data:`ENCODER_BACKENDS`:

- ``"transformers"``: :class:`TransformersCLIPEncoder`, CLIP and SigLIP checkpoints by hub id
  (``"openai/clip-vit-base-patch16"``, ``"google/siglip-base-patch16-224"``,
  ``"wkcn/TinyCLIP-ViT-8M-16-Text-3M-YFCC15M"``) or a local directory, found by
  :func:`~langfield.pretrained.resolver.resolve_pretrained`.
- ``"open_clip"``: :class:`OpenCLIPEncoder`, needs ``pip install open_clip_torch``. Model
  strings: ``"open_clip:ViT-B-16/laion2b_s34b_b88k"`` (architecture/pretrained tag) or
  ``"hf-hub:timm/ViT-B-16-SigLIP"``.
- ``"auto"``: ``open_clip`` for strings starting with ``open_clip:`` or ``hf-hub:``,
  ``transformers`` otherwise.

A model that is neither a local directory nor in the local Hugging Face cache while the hub is
off (``HF_HUB_OFFLINE=1``), or whose download fails, raises
:class:`~langfield.pretrained.errors.PretrainedUnavailableError` (a ``FileNotFoundError``) with
a message that says how to fetch it, never a traceback from inside ``transformers``.
:mod:`~langfield.pretrained.embedding_cache` keeps image embeddings on disk.

Example::

    encoder = load_encoder(EncoderConfig(model="openai/clip-vit-base-patch16"))
    img = encoder.embed_images(images)          # [B, E]
    txt = encoder.embed_texts(["a red mug"])    # [1, E]
    relevancy = img @ txt.T                     # cosine similarities
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from langfield.pretrained.clip_preprocessing import ImageSpec, check_images, check_texts, preprocess_images
from langfield.pretrained.errors import PretrainedUnavailableError, short_error, with_hint
from langfield.pretrained.hub import hub_cache_dir
from langfield.pretrained.resolver import ResolvedModel, explain_load_errors, load_failure_error, resolve_pretrained

__all__ = [
    "ENCODER_BACKENDS",
    "EncoderConfig",
    "OpenCLIPEncoder",
    "TransformersCLIPEncoder",
    "VisionLanguageEncoder",
    "load_encoder",
]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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


def _size_entry(size: Any, key: str) -> int | None:
    """Read ``key`` from a processor size (int, dict or ``SizeDict``)."""
    if size is None:
        return None
    if isinstance(size, int):
        return size
    value = size.get(key) if hasattr(size, "get") else getattr(size, key, None)
    return None if value is None else int(value)


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

    Subclasses set ``self.model``, ``self._spec`` (an
    :class:`~langfield.pretrained.clip_preprocessing.ImageSpec`: resize, crop, mean/std) and ``self._embedding_dim``, and implement :meth:`_image_features`
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

    _spec: ImageSpec
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
        return preprocess_images(check_images(images), self._spec, self.device, self.dtype)

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
        images = check_images(images)
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
        texts = check_texts(texts)
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

    def __init__(self, config: EncoderConfig, *, hint: str = "") -> None:
        resolved = resolve_pretrained(config.model, what="vision-language model", hint=hint)
        # Cache namespace: the directory of a local model, else the hub id (so a cached snapshot
        # and a fresh download of the same id share embedding-cache entries).
        name = resolved.name_or_path if resolved.source == "local" else resolved.name
        super().__init__(config, name=f"transformers:{name}")
        model, tokenizer, processor = self._load(resolved)
        self.model_type = str(model.config.model_type)
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

    @classmethod
    def _load(cls, resolved: ResolvedModel) -> tuple[Any, Any, Any]:
        """``(model, tokenizer, image processor)`` of a resolved CLIP / SigLIP checkpoint."""
        import transformers
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        source, kwargs = resolved.name_or_path, resolved.from_pretrained_kwargs
        verbosity = transformers.logging.get_verbosity()
        try:
            with explain_load_errors(resolved):
                model = AutoModel.from_pretrained(source, **kwargs)
                model_type = getattr(model.config, "model_type", "")
                if model_type not in cls.SUPPORTED_MODEL_TYPES:
                    supported = cls.SUPPORTED_MODEL_TYPES
                    raise load_failure_error(resolved, f"its model_type is {model_type!r}; supported: {supported}")
                tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
                # Only sizes / mean / std are read from the processor; silence the torchvision notice.
                transformers.logging.set_verbosity_error()
                processor = AutoImageProcessor.from_pretrained(source, **kwargs)
        finally:
            transformers.logging.set_verbosity(verbosity)
        return model, tokenizer, processor

    @staticmethod
    def _image_spec(processor: Any, model: Any) -> ImageSpec:
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
        return ImageSpec(shortest, resize_hw, crop_hw, mean, std, mode)  # type: ignore[arg-type]

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Tokens exactly as :meth:`embed_texts` feeds them to ``get_text_features``."""
        siglip = self.model_type == "siglip"
        tokens = self.tokenizer(
            check_texts(texts),
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

    def __init__(self, config: EncoderConfig, *, hint: str = "") -> None:
        open_clip = _import_open_clip()
        super().__init__(config, name=f"open_clip:{config.model.removeprefix('open_clip:')}")
        spec = config.model.removeprefix("open_clip:")
        arch, _, pretrained = spec.partition("/") if not spec.startswith("hf-hub:") else (spec, "", "")
        if spec.startswith("hf-hub:"):  # a hub repository: the same offline policy and messages
            repo = spec.removeprefix("hf-hub:")
            resolve_pretrained(repo, required_files=("open_clip_config.json",), what="OpenCLIP model", hint=hint)
        try:
            model, _, _ = open_clip.create_model_and_transforms(
                arch, pretrained=pretrained or None, cache_dir=str(hub_cache_dir())
            )
        except (OSError, RuntimeError) as err:
            message = (
                f"could not load OpenCLIP model {config.model!r} ({short_error(err)}); fetch its weights on a "
                f"machine with network access and copy the Hugging Face cache it fills to {hub_cache_dir()} here."
            )
            raise PretrainedUnavailableError(with_hint(message, hint), model_name=config.model) from None
        self.model = model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(arch)
        visual = model.visual
        size = getattr(visual, "image_size", 224)
        hw = (int(size[0]), int(size[1])) if isinstance(size, (tuple, list)) else (int(size), int(size))
        mean = tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
        std = tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
        self._spec = ImageSpec(min(hw), None, hw, mean, std, "bicubic")  # type: ignore[arg-type]
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


def load_encoder(config: EncoderConfig, *, hint: str = "") -> VisionLanguageEncoder:
    """Build the encoder ``config`` names.

    Args:
        config: model, backend, device, dtype, batch size.
        hint: the caller's alternative, appended to a model-unavailable message (e.g. the
            CLI's ``--teacher simulated``).

    Raises:
        PretrainedUnavailableError: (a ``FileNotFoundError``) the model is neither a local
            directory nor in the local cache and cannot be downloaded, or is not a valid
            CLIP / SigLIP checkpoint; the message says how to get it.
        ImportError: the backend's package is missing (with the ``pip install`` line).
        ValueError: unsupported backend.
    """
    backend = config.backend
    if backend == "auto":
        backend = "open_clip" if config.model.startswith(("open_clip:", "hf-hub:")) else "transformers"
    if backend not in ENCODER_BACKENDS:
        raise ValueError(f"backend must be one of {('auto', *ENCODER_BACKENDS)}, got {backend!r}")
    return ENCODER_BACKENDS[backend](config, hint=hint)
