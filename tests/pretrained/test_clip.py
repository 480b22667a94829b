"""Vision-language encoders on tiny, randomly initialised CLIP / SigLIP checkpoints (no downloads)."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from langfield.pretrained import PretrainedUnavailableError  # noqa: E402
from langfield.pretrained.clip import EncoderConfig, TransformersCLIPEncoder, load_encoder  # noqa: E402

from .tiny_models import BOS, EOS, PAD, TOWER, place_in_hub_cache, save_tiny_bert, save_word_tokenizer  # noqa: E402

TEXTS = ["a photo of a cat", "red mug", "the green plant", "a dog", "blue chair table"]


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory):
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    directory = tmp_path_factory.mktemp("tiny-siglip")
    torch.manual_seed(1)
    config = SiglipConfig(
        text_config=dict(
            **TOWER, vocab_size=99, max_position_embeddings=16, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD
        ),
        vision_config=dict(**TOWER, image_size=30, patch_size=6),
    )
    SiglipModel(config).save_pretrained(directory)
    SiglipImageProcessor(size={"height": 30, "width": 30}).save_pretrained(directory)
    save_word_tokenizer(directory)
    return directory


@pytest.fixture(scope="module")
def siglip(siglip_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return load_encoder(EncoderConfig(model=str(siglip_dir), device="cpu", batch_size=4))


def _images(n=5, h=40, w=52, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, h, w, 3), generator=g, dtype=torch.uint8)


# --- loading, shapes, norms ---------------------------------------------------------------------


@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_shapes_and_unit_norms(which, request):
    encoder = request.getfixturevalue(which)
    assert isinstance(encoder, TransformersCLIPEncoder)
    assert encoder.model_type == which
    assert encoder.embedding_dim == (16 if which == "clip" else 32)
    assert encoder.image_size == (30, 30)
    assert encoder.dtype == torch.float32 and encoder.device.type == "cpu"

    img = encoder.embed_images(_images())
    txt = encoder.embed_texts(TEXTS)
    assert img.shape == (5, encoder.embedding_dim) and img.dtype == torch.float32
    assert txt.shape == (len(TEXTS), encoder.embedding_dim)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(len(TEXTS)))
    # Ordinary tensors: usable as a target that autograd saves for backward.
    assert not img.is_inference() and not txt.is_inference()
    pred = torch.randn(5, encoder.embedding_dim, requires_grad=True)
    F.cosine_similarity(pred, img, dim=-1).sum().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_single_string_is_one_query(clip):
    torch.testing.assert_close(clip.embed_texts("red mug"), clip.embed_texts(["red mug"]))


# --- parity with calling the model directly ------------------------------------------------------


@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_matches_model_directly(which, request):
    encoder = request.getfixturevalue(which)
    images = _images(3)
    pixels = encoder.preprocess_images(images)
    assert pixels.shape == (3, 3, 30, 30)
    with torch.no_grad():
        out = encoder.model.get_image_features(pixel_values=pixels)
        direct = getattr(out, "pooler_output", out)
        tokens = encoder.tokenize(TEXTS)
        out = encoder.model.get_text_features(**tokens)
        direct_txt = getattr(out, "pooler_output", out)
    torch.testing.assert_close(encoder.embed_images(images), F.normalize(direct, dim=-1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(encoder.embed_texts(TEXTS), F.normalize(direct_txt, dim=-1), atol=1e-6, rtol=1e-5)
    if which == "siglip":  # trained with max-length padding and no attention mask
        assert set(tokens) == {"input_ids"} and tokens["input_ids"].shape == (len(TEXTS), 16)
    else:
        assert set(tokens) == {"input_ids", "attention_mask"}
        assert tokens["input_ids"][0, 0] == BOS and (tokens["input_ids"] == EOS).sum() == len(TEXTS)


@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_preprocessing_matches_hf_processor(which, request):
    encoder = request.getfixturevalue(which)
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(encoder.name.removeprefix("transformers:"))
    # At the model's size no resampling happens: rescale + normalise must agree exactly.
    same = _images(2, 30, 30)
    ref = processor(images=list(same.numpy()), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(encoder.preprocess_images(same), ref, atol=1e-5, rtol=1e-5)
    # With resizing (bicubic, antialiased) torch and PIL agree closely but not bit-for-bit.
    smooth = F.interpolate(torch.rand(2, 3, 6, 8), size=(45, 60), mode="bilinear").permute(0, 2, 3, 1)
    smooth = (smooth * 255).round().to(torch.uint8)
    ref = processor(images=list(smooth.numpy()), return_tensors="pt")["pixel_values"]
    assert (encoder.preprocess_images(smooth) - ref).abs().mean() < 0.03


def test_float_and_uint8_inputs_agree_and_known_value(clip):
    images = _images(2)
    torch.testing.assert_close(clip.embed_images(images.float() / 255), clip.embed_images(images))
    # A constant image equal to the normalisation mean becomes exactly zero pixels.
    mean = torch.tensor(clip._spec.mean).view(1, 1, 1, 3).expand(1, 30, 30, 3)
    assert clip.preprocess_images(mean).abs().max() < 1e-6


# --- batching and determinism --------------------------------------------------------------------


@pytest.mark.parametrize("which", ["clip_dir", "siglip_dir"])
def test_batching_invariance_and_determinism(which, request, monkeypatch):
    directory = request.getfixturevalue(which)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    one = load_encoder(EncoderConfig(model=str(directory), device="cpu", batch_size=1))
    four = load_encoder(EncoderConfig(model=str(directory), device="cpu", batch_size=4))
    images = _images(6)
    torch.testing.assert_close(one.embed_images(images), four.embed_images(images), atol=1e-5, rtol=0)
    torch.testing.assert_close(one.embed_texts(TEXTS), four.embed_texts(TEXTS), atol=1e-5, rtol=0)
    assert torch.equal(four.embed_images(images), four.embed_images(images))
    assert torch.equal(four.embed_texts(TEXTS), four.embed_texts(TEXTS))
    # Different images give different embeddings (the model is really being run).
    assert not torch.allclose(four.embed_images(images)[0], four.embed_images(images)[1])


# --- errors ----------------------------------------------------------------------------------------


def test_missing_hub_model_message(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    with pytest.raises(FileNotFoundError) as info:
        load_encoder(EncoderConfig(model="nobody/no-such-clip-model", device="cpu"), hint="Or: --teacher simulated")
    assert isinstance(info.value, PretrainedUnavailableError)
    message = str(info.value)
    assert "vision-language model 'nobody/no-such-clip-model'" in message
    assert "hf download nobody/no-such-clip-model --local-dir" in message
    assert "HF_HOME" in message and str(tmp_path / "empty-hf-home" / "hub") in message
    assert "HF_HUB_OFFLINE=1" in message and message.endswith("Or: --teacher simulated")
    assert info.value.__suppress_context__ or info.value.__context__ is None  # no traceback from transformers


def test_missing_local_directory_and_bad_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = tmp_path / "models" / "clip"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_encoder(EncoderConfig(model=str(missing), device="cpu"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="local directory") as info:
        load_encoder(EncoderConfig(model=str(empty), device="cpu"))
    assert str(empty) in str(info.value) and "config.json" in str(info.value)
    weights_missing = tmp_path / "config-only"
    weights_missing.mkdir()
    (weights_missing / "config.json").write_text('{"model_type": "clip"}')
    with pytest.raises(PretrainedUnavailableError, match="not a complete, valid vision-language model") as info:
        load_encoder(EncoderConfig(model=str(weights_missing), device="cpu"))
    assert str(weights_missing) in str(info.value)


def test_a_text_model_is_not_a_clip_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bert = save_tiny_bert(tmp_path / "bert")
    with pytest.raises(PretrainedUnavailableError, match="model_type is 'bert'") as info:
        load_encoder(EncoderConfig(model=str(bert), device="cpu"))
    assert str(bert) in str(info.value)


def test_cached_hub_id_loads_offline(clip_dir, clip, tmp_path, monkeypatch):
    """A hub id in the local cache loads with HF_HUB_OFFLINE=1 and equals the same checkpoint from a directory."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    place_in_hub_cache(tmp_path / "hub", "tiny-org/tiny-clip", clip_dir)
    cached = load_encoder(EncoderConfig(model="tiny-org/tiny-clip", device="cpu", batch_size=4))
    assert cached.name == "transformers:tiny-org/tiny-clip"  # the embedding-cache namespace is the id
    images = _images(2)
    torch.testing.assert_close(cached.embed_images(images), clip.embed_images(images))
    torch.testing.assert_close(cached.embed_texts(TEXTS), clip.embed_texts(TEXTS))


def test_open_clip_import_guard(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # makes `import open_clip` raise ImportError
    with pytest.raises(ImportError, match="pip install open_clip_torch"):
        load_encoder(EncoderConfig(model="open_clip:ViT-B-32/openai", device="cpu"))


def test_bad_inputs(clip):
    with pytest.raises(ValueError, match="texts"):
        clip.embed_texts([])
    with pytest.raises(TypeError, match="texts"):
        clip.embed_texts(["ok", 3])
    with pytest.raises(ValueError, match="images"):
        clip.embed_images(torch.rand(8, 8, 3))
    with pytest.raises(ValueError, match="images"):
        clip.embed_images(torch.rand(1, 8, 8, 4))
    with pytest.raises(ValueError, match="images"):
        clip.embed_images(torch.rand(0, 8, 8, 3))
    with pytest.raises(ValueError, match="images"):
        clip.embed_images(torch.zeros(1, 8, 8, 3, dtype=torch.int32))
    with pytest.raises(TypeError, match="images"):
        clip.embed_images([[0.0]])


def test_config_validation():
    with pytest.raises(ValueError, match="batch_size"):
        EncoderConfig(batch_size=0)
    with pytest.raises(ValueError, match="backend"):
        EncoderConfig(backend="onnx")
    with pytest.raises(ValueError, match="dtype"):
        EncoderConfig(dtype="float64")
    with pytest.raises(ValueError, match="model"):
        EncoderConfig(model="")
    assert EncoderConfig(device="cpu").resolved_dtype() == torch.float32
    assert EncoderConfig(device="cpu", dtype="bfloat16").resolved_dtype() == torch.bfloat16
