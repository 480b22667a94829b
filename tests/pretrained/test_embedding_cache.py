"""The per-image embedding cache on disk, around a tiny random CLIP (no downloads)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from langfield.pretrained.clip import EncoderConfig, load_encoder  # noqa: E402
from langfield.pretrained.embedding_cache import EmbeddingCache, cached_embed_images  # noqa: E402


def _images(n=5, h=40, w=52, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, h, w, 3), generator=g, dtype=torch.uint8)


def _count_forwards(monkeypatch, encoder):
    calls = {"forwards": 0, "images": 0}
    original = encoder._image_features

    def counting(pixels):
        calls["forwards"] += 1
        calls["images"] += pixels.shape[0]
        return original(pixels)

    monkeypatch.setattr(encoder, "_image_features", counting)
    return calls


def test_cache_second_call_does_not_run_the_model(clip, monkeypatch, tmp_path):
    calls = _count_forwards(monkeypatch, clip)
    cache = EmbeddingCache(tmp_path / "cache", clip.name)
    images = _images(3)

    first = cached_embed_images(clip, images, cache)
    assert calls == {"forwards": 1, "images": 3}
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == 3
    assert not list((tmp_path / "cache").rglob("*.tmp*"))  # atomic writes leave no temporaries
    torch.testing.assert_close(first, clip.embed_images(images))
    calls.update(forwards=0, images=0)

    second = cached_embed_images(clip, images, cache)
    assert calls == {"forwards": 0, "images": 0}
    assert torch.equal(first, second)
    # The same pictures as float in [0, 1] hit the same entries.
    cached_embed_images(clip, images.float() / 255, cache)
    assert calls["forwards"] == 0

    # Only the new image is encoded; order is preserved.
    mixed = torch.cat([images[2:], _images(1, seed=7), images[:1]])
    out = cached_embed_images(clip, mixed, cache)
    assert calls == {"forwards": 1, "images": 1}
    torch.testing.assert_close(out[0], first[2])
    torch.testing.assert_close(out[2], first[0])

    # Another extra key is another entry.
    calls.update(forwards=0, images=0)
    cached_embed_images(clip, images[:2], cache, extra_key="crop:0.5")
    assert calls == {"forwards": 1, "images": 2}


def test_cache_keys_and_corruption(clip, monkeypatch, tmp_path):
    cache = EmbeddingCache(tmp_path, clip.name)
    image = _images(1)[0]
    key = cache.key(image)
    assert key == cache.key(image.clone()) and len(key) == 40
    assert key != cache.key(image, extra_key="region")
    assert key != EmbeddingCache(tmp_path, "transformers:other").key(image)
    assert key != cache.key(image.reshape(52, 40, 3))  # same bytes, other shape
    flipped = image.clone()
    flipped[0, 0, 0] ^= 1
    assert key != cache.key(flipped)

    cached_embed_images(clip, image[None], cache)
    assert key in cache
    cache.path(key).write_bytes(b"truncated")  # a corrupt entry is a miss, then rewritten
    calls = _count_forwards(monkeypatch, clip)
    cached_embed_images(clip, image[None], cache)
    assert calls["forwards"] == 1 and cache.load(key).shape == (clip.embedding_dim,)

    with pytest.raises(ValueError, match="cache belongs to encoder"):
        cached_embed_images(clip, image[None], EmbeddingCache(tmp_path, "transformers:other"))


def test_cache_from_config_cache_dir(clip_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = load_encoder(EncoderConfig(model=str(clip_dir), device="cpu", cache_dir=str(tmp_path / "c")))
    calls = _count_forwards(monkeypatch, encoder)
    images = _images(2)
    cached_embed_images(encoder, images)
    cached_embed_images(encoder, images)
    assert calls["forwards"] == 1
    assert len(list((tmp_path / "c").rglob("*.pt"))) == 2
