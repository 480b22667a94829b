"""Dense CLIP features: crop pyramid, region pooling and the CLIPDenseTeacher.

Random CLIP weights carry no semantics, so the geometry is tested with a *fake* encoder whose
embedding of an image is its mean colour lifted to ``E`` dimensions; one smoke test runs the
tiny random CLIP end to end.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from langfield.language.teachers import clip as dense_module
from langfield.language.teachers.clip import (
    CLIPDenseTeacher,
    CropPyramid,
    CropPyramidConfig,
    CropPyramidLevel,
    DenseFeatureConfig,
    RegionPoolingConfig,
    crop_pyramid_features,
    crop_pyramid_layout,
    load_clip_teacher,
    region_features,
)
from langfield.language.masks import MaskProposals
from langfield.pretrained.clip import EncoderConfig, VisionLanguageEncoder, load_encoder

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0), "grey": (0.5, 0.5, 0.5)}


class ColourEncoder(VisionLanguageEncoder):
    """Embeds an image as ``normalize([mean r, mean g, mean b, 0.05, 0, ...])``; texts are colour names."""

    def __init__(self, dim: int = 8, size: int = 16) -> None:
        super().__init__(EncoderConfig(model="fake-colour", device="cpu"), name="fake:colour")
        self._embedding_dim = dim
        self._size = size
        self.calls = 0
        self.crops: list[torch.Tensor] = []

    @property
    def image_size(self) -> tuple[int, int]:
        return (self._size, self._size)

    def _lift(self, rgb: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(rgb.shape[0], self._embedding_dim)
        out[:, :3] = rgb
        out[:, 3] = 0.05
        return F.normalize(out, dim=-1)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        assert images.ndim == 4 and images.shape[-1] == 3
        self.calls += 1
        self.crops.extend(images.clone())
        pixels = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return self._lift(pixels.mean(dim=(1, 2)))

    def embed_texts(self, texts):
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("texts must hold at least one string")
        return self._lift(torch.tensor([COLOURS[t] for t in texts]))


def _halves(height=40, width=60) -> torch.Tensor:
    image = torch.zeros(height, width, 3, dtype=torch.uint8)
    image[:, : width // 2] = torch.tensor(RED, dtype=torch.uint8)
    image[:, width // 2 :] = torch.tensor(BLUE, dtype=torch.uint8)
    return image


def _blocks(height=20, width=30) -> torch.Tensor:
    """Left half red, right-top blue, right-bottom green."""
    image = torch.zeros(height, width, 3, dtype=torch.uint8)
    image[:, : width // 2] = torch.tensor(RED, dtype=torch.uint8)
    image[: height // 2, width // 2 :] = torch.tensor(BLUE, dtype=torch.uint8)
    image[height // 2 :, width // 2 :] = torch.tensor(GREEN, dtype=torch.uint8)
    return image


SMALL_PYRAMID = CropPyramidConfig(min_scale=0.25, max_scale=0.5, num_scales=2, overlap=0.5)


# --- crop pyramid: layout ----------------------------------------------------------------------


def test_layout_counts_for_known_sizes():
    layout = crop_pyramid_layout(40, 60, SMALL_PYRAMID)
    (s0, k0, y0, x0), (s1, k1, y1, x1) = layout
    assert (s0, k0, s1, k1) == (0.25, 10, 0.5, 20)
    assert y0.tolist() == [0, 5, 10, 15, 20, 25, 30] and x0.tolist() == list(range(0, 51, 5))
    assert y1.tolist() == [0, 10, 20] and x1.tolist() == [0, 10, 20, 30, 40]

    # LERF's defaults on a 480 x 640 image: 7 scales from 24 px (stride 12) to 240 px (stride 120).
    default = crop_pyramid_layout(480, 640, CropPyramidConfig())
    assert len(default) == 7
    assert [k for _, k, _, _ in default] == [round(s * 480) for s in torch.linspace(0.05, 0.5, 7).tolist()]
    _, k, ys, xs = default[0]
    assert k == 24 and (ys.numel(), xs.numel()) == (math.ceil(456 / 12) + 1, math.ceil(616 / 12) + 1) == (39, 53)
    _, k, ys, xs = default[-1]
    assert k == 240 and (ys.numel(), xs.numel()) == (3, 5)
    for _, k, ys, xs in default:  # windows inside the image, touching both edges, stride <= k / 2
        for starts, length in ((ys, 480), (xs, 640)):
            assert starts[0] == 0 and starts[-1] == length - k
            assert (starts.diff() >= 1).all() and (starts.diff() <= round(k / 2)).all()
    # A crop larger than the shorter side is clamped to it; a 1-pixel-high image still works.
    assert crop_pyramid_layout(5, 9, CropPyramidConfig(min_scale=1.0, max_scale=1.0, num_scales=1))[0][1] == 5
    assert crop_pyramid_layout(1, 9, CropPyramidConfig())[0][1] == 1


def test_pyramid_crops_are_the_image_windows():
    image = torch.randint(0, 256, (40, 60, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    encoder = ColourEncoder()
    pyramid = crop_pyramid_features(encoder, image, CropPyramidConfig(0.25, 0.5, 2, 0.5, batch_size=16))
    assert [level.grid_shape for level in pyramid.levels] == [(7, 11), (3, 5)]
    assert [level.embeddings.shape for level in pyramid.levels] == [(7, 11, 8), (3, 5, 8)]
    assert len(encoder.crops) == 7 * 11 + 3 * 5
    assert encoder.calls == math.ceil(77 / 16) + math.ceil(15 / 16)  # batched per scale
    # Crop (i, j) of a level is exactly the window at (starts_y[i], starts_x[j]), row-major.
    level = pyramid.levels[0]
    for i, j in ((0, 0), (3, 7), (6, 10)):
        y, x = int(level.starts_y[i]), int(level.starts_x[j])
        assert torch.equal(encoder.crops[i * 11 + j], image[y : y + 10, x : x + 10])
    y, x = int(pyramid.levels[1].starts_y[2]), int(pyramid.levels[1].starts_x[4])
    assert torch.equal(encoder.crops[77 + 2 * 5 + 4], image[y : y + 20, x : x + 20])


# --- crop pyramid: interpolation ---------------------------------------------------------------


def test_interpolation_known_values():
    a, b, c = torch.eye(3)
    level = CropPyramidLevel(  # two crops of 2 px with centres at x = 1 and x = 5, one row
        scale=0.5,
        crop_size=2,
        starts_y=torch.tensor([0]),
        starts_x=torch.tensor([0, 4]),
        embeddings=torch.stack([a, b])[None],
    )
    pyramid = CropPyramid((level,), image_size=(3, 10))
    out = pyramid.at_pixels(0)
    assert out.shape == (3, 10, 3)
    torch.testing.assert_close(out[:, 0], a.expand(3, 3))  # left of the first centre: clamped
    torch.testing.assert_close(out[:, 9], b.expand(3, 3))  # right of the last centre: clamped
    t = (2.5 - 1.0) / 4.0  # pixel 2 has its centre at 2.5
    torch.testing.assert_close(out[1, 2], F.normalize(torch.lerp(a, b, t), dim=0))
    torch.testing.assert_close(out[0, 3], F.normalize(torch.lerp(a, b, 0.625), dim=0))
    torch.testing.assert_close(pyramid.at_pixels(), out)  # one level: fused == that level

    # Two levels fuse to the normalised mean of the normalised per-level maps.
    constant = CropPyramidLevel(1.0, 3, torch.tensor([0]), torch.tensor([0]), c[None, None])
    fused = CropPyramid((level, constant), image_size=(3, 10)).at_pixels()
    torch.testing.assert_close(fused, F.normalize(out + c, dim=-1))
    with pytest.raises(ValueError, match="scale_index"):
        pyramid.at_pixels(3)


def test_red_left_blue_right():
    image = _halves()
    encoder = ColourEncoder()
    pyramid = crop_pyramid_features(encoder, image)  # LERF defaults: 7 scales, 5% .. 50%
    red, blue = encoder.embed_texts(["red", "blue"])
    for scale_index in [None, *range(7)]:
        features = pyramid.at_pixels(scale_index)
        assert features.shape == (40, 60, 8) and features.dtype == torch.float32
        torch.testing.assert_close(features.norm(dim=-1), torch.ones(40, 60))
        score = features @ red - features @ blue
        assert (score[:, :3] > 0).all() and (score[:, -3:] < 0).all()
    # The finest scale (2 px crops) is pure colour away from the boundary.
    finest = pyramid.at_pixels(0)
    torch.testing.assert_close(finest[:, :25], encoder.embed_images(image[None, :1, :1]).expand(40, 25, 8))


def test_ramp_is_monotonic():
    width = 48
    ramp = (torch.arange(width) + 0.5) / width
    image = torch.zeros(24, width, 3)
    image[..., 0], image[..., 2] = ramp, 1.0 - ramp
    image = (image * 255).round().to(torch.uint8)
    encoder = ColourEncoder()
    pyramid = crop_pyramid_features(encoder, image, CropPyramidConfig(0.25, 0.75, 3, 0.5))
    red, blue = encoder.embed_texts(["red", "blue"])
    for scale_index in (None, 0, 1, 2):
        score = pyramid.at_pixels(scale_index) @ (red - blue)
        assert (score.diff(dim=1) >= -1e-6).all()  # more red to the right, never less
        assert score[0, -1] - score[0, 0] > 0.5
        torch.testing.assert_close(score, score[:1].expand_as(score))  # constant along y


# --- region pooling ----------------------------------------------------------------------------


def _block_proposals(height=20, width=30) -> MaskProposals:
    masks = torch.zeros(4, height, width, dtype=torch.bool)
    masks[0, :, : width // 2] = True  # A: the red left half
    masks[1, : height // 2, width // 2 :] = True  # B: the blue top right
    masks[2, 5:10, 5:10] = True  # C: a small square inside A (overlaps A)
    # masks[3] stays empty; the green bottom right is covered by no mask
    return MaskProposals(masks=masks, scores=torch.ones(4))


def test_region_pooling_assignment():
    image, proposals = _blocks(), _block_proposals()
    encoder = ColourEncoder(size=16)
    result = region_features(encoder, image, proposals)
    red, green, blue = encoder.embed_texts(["red", "green", "blue"])

    assert result.pixel_features.shape == (20, 30, 8) and result.region_embeddings.shape == (4, 8)
    torch.testing.assert_close(result.pixel_features.norm(dim=-1), torch.ones(20, 30))
    # Three non-empty masks + the whole image, each one crop at the encoder's input size.
    assert len(encoder.crops) == 4 and all(c.shape == (16, 16, 3) for c in encoder.crops)

    labels = result.labels
    assert (labels[5:10, 5:10] == 2).all()  # the smallest covering mask wins the overlap
    in_a = proposals.masks[0] & ~proposals.masks[2]
    assert (labels[in_a] == 0).all() and (labels[proposals.masks[1]] == 1).all()
    assert (labels[10:, 15:] == -1).all() and (labels >= -1).all() and (labels != 3).all()
    torch.testing.assert_close(result.pixel_features[7, 7], result.region_embeddings[2])
    torch.testing.assert_close(result.pixel_features[15, 2], result.region_embeddings[0])
    torch.testing.assert_close(result.pixel_features[2, 20], result.region_embeddings[1])
    torch.testing.assert_close(result.pixel_features[15, 25], result.global_embedding)
    torch.testing.assert_close(result.region_embeddings[3], result.global_embedding)  # empty mask
    # With the surroundings painted grey, each region's embedding is dominated by its own colour.
    a, b = result.region_embeddings[0], result.region_embeddings[1]
    assert a @ red > a @ blue and a @ red > a @ green and b @ blue > b @ red and b @ blue > b @ green


def test_region_background_modes():
    image, proposals = _blocks(), _block_proposals()
    grey_crops = region_features(ColourEncoder(), image, proposals, RegionPoolingConfig(mask_background="gray"))
    plain = region_features(ColourEncoder(), image, proposals, RegionPoolingConfig(mask_background="none"))
    red = ColourEncoder().embed_texts(["red"])[0]
    # C is a red square well inside red: without grey its crop is pure red, with grey it is not.
    pure_red = torch.tensor([1, 0, 0, 0.05, 0, 0, 0, 0]) / math.hypot(1, 0.05)
    torch.testing.assert_close(plain.region_embeddings[2], pure_red)
    torch.testing.assert_close(red, F.normalize(pure_red, dim=0))
    assert grey_crops.region_embeddings[2][1] > 0.05  # grey (0.5, 0.5, 0.5) leaks into green
    assert not torch.allclose(grey_crops.region_embeddings[2], plain.region_embeddings[2])


def test_region_square_window_and_padding():
    encoder = ColourEncoder(size=40)
    image = _blocks()
    masks = torch.zeros(1, 20, 30, dtype=torch.bool)
    masks[0, 2:4, :] = True  # a wide, thin strip: 30 px square window, centred on the 20 px high image
    region_features(encoder, image, MaskProposals(masks, torch.ones(1)), RegionPoolingConfig(bbox_margin=0.0))
    crop = encoder.crops[0]
    assert crop.shape == (40, 40, 3) and crop.is_floating_point()
    grey = torch.full((3,), 128 / 255)
    torch.testing.assert_close(crop[0, 0], grey)  # outside the image
    torch.testing.assert_close(crop[-1, -1], grey)
    # Image rows [-5, 25) fill the 30 px window, resized to 40: the strip (rows 2, 3) lands on 9..12.
    assert crop[10, 5, 0] > 0.9 and crop[10, 35, 2] > 0.9  # red on the left, blue on the right
    torch.testing.assert_close(crop[20, 5], grey)  # inside the image but outside the mask
    assert dense_module._square_window(0, 10, 0, 40, 0.0, 20, 60) == (-10, 0, 40)
    # An 8 px wide box, 50% margin on each side: 16 px, shifted inside the image at top and right.
    assert dense_module._square_window(2, 6, 50, 58, 0.5, 20, 60) == (0, 44, 16)


def test_region_bad_inputs():
    encoder = ColourEncoder()
    image = _blocks()
    with pytest.raises(ValueError, match="proposals"):
        region_features(encoder, image, MaskProposals(torch.zeros(2, 10, 30, dtype=torch.bool), torch.ones(2)))
    with pytest.raises(ValueError, match="proposals"):
        region_features(encoder, image, torch.zeros(2, 20, 30, dtype=torch.bool))
    with pytest.raises(ValueError, match="image"):
        region_features(encoder, image[..., :2], _block_proposals())
    # No proposals at all: every pixel takes the whole-image embedding.
    empty = region_features(encoder, image, MaskProposals(torch.zeros(0, 20, 30, dtype=torch.bool), torch.ones(0)))
    assert empty.region_embeddings.shape == (0, 8)
    torch.testing.assert_close(empty.pixel_features, empty.global_embedding.expand(20, 30, 8))


# --- the teacher ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["pyramid", "regions", "both"])
def test_teacher_outputs(method):
    encoder = ColourEncoder()
    teacher = CLIPDenseTeacher(encoder, DenseFeatureConfig(method=method, pyramid=SMALL_PYRAMID))
    assert teacher.name == f"fake:colour/{method}" and teacher.simulated is False and teacher.embedding_dim == 8
    image = _blocks()
    features = teacher.dense_features(image, view_key="train/0")
    assert features.shape == (20, 30, 8) and features.dtype == torch.float32 and features.device.type == "cpu"
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(20, 30))
    red, green, blue = teacher.embed_texts(["red", "green", "blue"])
    assert features[10, 0] @ red > features[10, 0] @ blue  # far left is red
    assert features[0, -1] @ blue > features[0, -1] @ red  # top right is blue
    assert features[-1, -1] @ green > features[-1, -1] @ red  # bottom right is green
    semantics = torch.zeros(20, 30, dtype=torch.long)
    assert torch.equal(teacher.dense_features(image, view_key="x", semantics=semantics), features)  # ignored
    if method == "both":
        pyramid = teacher.pyramid(image).at_pixels()
        regions = teacher.regions(image).pixel_features
        torch.testing.assert_close(features, F.normalize(pyramid + regions, dim=-1))
    with pytest.raises(ValueError, match="texts"):
        teacher.embed_texts([])


def test_teacher_cache_skips_the_encoder(tmp_path, monkeypatch):
    image = _blocks()
    config = DenseFeatureConfig(method="both", pyramid=SMALL_PYRAMID, cache_dir=str(tmp_path / "cache"))
    first_encoder = ColourEncoder()
    first = CLIPDenseTeacher(first_encoder, config).dense_features(image, view_key="train/0")
    assert first_encoder.calls > 0
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == 3  # pyramid + region table + labels

    def no_masks(*args, **kwargs):
        raise AssertionError("mask proposals recomputed despite the cache")

    monkeypatch.setattr(dense_module, "propose_masks", no_masks)
    encoder = ColourEncoder()
    teacher = CLIPDenseTeacher(encoder, config)
    again = teacher.dense_features(image, view_key="train/0")
    assert encoder.calls == 0
    torch.testing.assert_close(again, first, atol=0, rtol=0)
    assert teacher.regions(image).proposals is None and encoder.calls == 0

    # Other settings or another image are other entries; no cache means encoding every time.
    other_pyramid = CropPyramidConfig(0.25, 0.5, 2, overlap=0.25)
    other = DenseFeatureConfig(method="pyramid", pyramid=other_pyramid, cache_dir=config.cache_dir)
    CLIPDenseTeacher(encoder, other).dense_features(image, view_key="train/0")
    assert encoder.calls > 0
    encoder.calls = 0
    CLIPDenseTeacher(encoder, other).dense_features(image.flip(1), view_key="train/0")
    assert encoder.calls > 0
    encoder.calls = 0
    uncached = CLIPDenseTeacher(encoder, DenseFeatureConfig(method="pyramid", pyramid=SMALL_PYRAMID))
    uncached.dense_features(image, view_key="a")
    uncached.dense_features(image, view_key="a")
    assert encoder.calls == 2 * 2  # two scales, one batch each, twice


def test_bad_images_and_configs():
    teacher = CLIPDenseTeacher(ColourEncoder(), DenseFeatureConfig(pyramid=SMALL_PYRAMID))
    for bad in (torch.zeros(8, 8, dtype=torch.uint8), torch.zeros(8, 8, 4, dtype=torch.uint8),
                torch.zeros(8, 8, 3, dtype=torch.int32), torch.zeros(0, 8, 3, dtype=torch.uint8), [[0, 0, 0]]):
        with pytest.raises(ValueError, match="image"):
            teacher.dense_features(bad, view_key="v")
        with pytest.raises(ValueError, match="image"):
            crop_pyramid_features(ColourEncoder(), bad)
    # Float images in [0, 1] are accepted and agree with their uint8 originals.
    image = _halves(12, 16)
    torch.testing.assert_close(
        teacher.dense_features(image.float() / 255, view_key="v"), teacher.dense_features(image, view_key="v")
    )

    for kwargs, name in [
        (dict(min_scale=0.0), "min_scale"), (dict(min_scale=1.5), "min_scale"),
        (dict(min_scale=0.3, max_scale=0.2), "max_scale"), (dict(max_scale=1.2), "max_scale"),
        (dict(num_scales=0), "num_scales"), (dict(num_scales=2.0), "num_scales"),
        (dict(overlap=1.0), "overlap"), (dict(overlap=-0.1), "overlap"), (dict(batch_size=0), "batch_size"),
    ]:
        with pytest.raises(ValueError, match=name):
            CropPyramidConfig(**kwargs)
    with pytest.raises(ValueError, match="mask_background"):
        RegionPoolingConfig(mask_background="black")
    with pytest.raises(ValueError, match="bbox_margin"):
        RegionPoolingConfig(bbox_margin=-0.1)
    with pytest.raises(ValueError, match="crop_resolution"):
        RegionPoolingConfig(crop_resolution=0)
    with pytest.raises(ValueError, match="method"):
        DenseFeatureConfig(method="patches")
    with pytest.raises(ValueError, match="pyramid"):
        DenseFeatureConfig(pyramid=RegionPoolingConfig())
    assert CropPyramidConfig(min_scale=0.2, max_scale=0.9, num_scales=1).scales() == [0.2]


# --- tiny random CLIP, end to end ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from ...pretrained.tiny_models import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.mark.parametrize("method", ["pyramid", "regions"])
def test_tiny_clip_teacher_end_to_end(tiny_clip_dir, method, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    teacher = load_clip_teacher(str(tiny_clip_dir), method=method, device="cpu")
    teacher = CLIPDenseTeacher(teacher.encoder, DenseFeatureConfig(method=method, pyramid=SMALL_PYRAMID))
    assert teacher.name == f"transformers:{tiny_clip_dir.resolve()}/{method}" and teacher.embedding_dim == 16
    image = _blocks(24, 32)
    features = teacher.dense_features(image, view_key="train/0")
    assert features.shape == (24, 32, 16) and features.dtype == torch.float32 and features.device.type == "cpu"
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(24, 32))
    text = teacher.embed_texts(["red mug", "a blue chair"])
    assert text.shape == (2, 16) and text.device.type == "cpu"
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(2))
    distinct = torch.unique(features.reshape(-1, 16).round(decimals=5), dim=0).shape[0]
    if method == "pyramid":
        expected = crop_pyramid_features(teacher.encoder, image, SMALL_PYRAMID).at_pixels()
        torch.testing.assert_close(features, expected)
        assert distinct > 20  # interpolation varies smoothly across the image
    else:
        regions = teacher.regions(image)
        # Superpixels find the three colour blocks; features are constant on each.
        assert regions.region_embeddings.shape[0] == 3 and distinct == 3
        assert (regions.labels >= 0).all()


def test_load_clip_teacher_missing_model(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    with pytest.raises(FileNotFoundError, match="hf download nobody/no-such-clip-model"):
        load_clip_teacher("nobody/no-such-clip-model", device="cpu")
    with pytest.raises(ValueError, match="method"):  # checked before any weights are looked for
        load_clip_teacher("nobody/no-such-clip-model", method="patches", device="cpu")


def test_load_encoder_roundtrip_matches_teacher(tiny_clip_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = load_encoder(EncoderConfig(model=str(tiny_clip_dir), device="cpu"))
    teacher = CLIPDenseTeacher(encoder, DenseFeatureConfig(method="regions"))
    torch.testing.assert_close(teacher.embed_texts(["red mug"]), encoder.embed_texts(["red mug"]))
