"""Per-image embeddings on disk, so re-training does not re-encode the same pictures.

:class:`EmbeddingCache` stores one ``.pt`` file per (image content, encoder, extra key), written
atomically; :func:`cached_embed_images` reads and fills it around
:meth:`~langfield.pretrained.clip.VisionLanguageEncoder.embed_images`.

Example::

    cache = EmbeddingCache("outputs/run/language/cache", encoder.name)
    emb = cached_embed_images(encoder, images, cache)   # [B, E]; a second call runs no model
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Union

import torch
from torch import Tensor

from langfield.io.atomic import atomic_save_torch
from langfield.pretrained.clip import VisionLanguageEncoder
from langfield.pretrained.clip_preprocessing import check_images

PathLike = Union[str, os.PathLike]

__all__ = ["EmbeddingCache", "cached_embed_images"]


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
    images = check_images(images)
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
