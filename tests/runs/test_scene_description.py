"""What a language field knows, as a caption's scene: colour names, object placement, the run path."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from langfield._checks import InputError
from langfield.data.toyworld.scene import PALETTE
from langfield.generation.prompts import BASIC_COLORS, color_name, color_name_of_pixels, rewrite_prompt
from langfield.language.queries import Localization, QueryNotFoundError, Segmentation
from langfield.language.scene import LanguageRender
from langfield.runs.generate import load_rewrite_scene
from langfield.runs.scene_description import describe_language_scene
from langfield.types import Cameras, RenderOutput

# --------------------------------------------------------------------------- colour names


def test_every_reference_and_toy_palette_colour_is_named_by_its_own_name():
    for name, rgb in BASIC_COLORS.items():
        assert color_name(rgb) == name
    for name, rgb in PALETTE.items():
        assert color_name(rgb) == name
        if name != "white":  # a shaded white is a gray
            assert color_name(tuple(0.8 * c for c in rgb)) == name, name
    assert color_name((0.6, 0.6, 0.6)) == "gray" and color_name((0.02, 0.02, 0.03)) == "black"
    assert color_name((0.9, 0.1, 0.1), names=["blue", "green"]) in {"blue", "green"}


def test_pixels_are_read_on_the_lit_side():
    blue = torch.tensor(PALETTE["blue"])
    pixels = torch.cat([blue.expand(30, 3), 0.25 * blue.expand(50, 3)])  # mostly in shadow
    assert color_name(0.25 * blue) != "blue"  # the shadow alone reads as another colour
    assert color_name_of_pixels(pixels) == "blue"
    assert color_name_of_pixels(pixels.numpy()) == "blue"


def test_colour_naming_refuses_bad_input():
    with pytest.raises(InputError, match="three finite"):
        color_name((0.1, 0.2))
    with pytest.raises(InputError, match="three finite"):
        color_name((0.1, float("nan"), 0.2))
    with pytest.raises(InputError, match="names"):
        color_name((0.1, 0.2, 0.3), names=["mauve"])
    with pytest.raises(InputError, match="K >= 1"):
        color_name_of_pixels(torch.zeros(0, 3))


# --------------------------------------------------------------------------- placement logic

H = W = 16
LEFT, RIGHT = (0.78, 0.22, 0.12), (0.14, 0.28, 0.92)  # a red box on the left, a blue sphere on the right


class ExactLanguageScene:
    """A language scene whose queries are answered from a known layout (tests the description
    logic exactly; the real queries are tested in tests/language). One camera at the origin looking
    down +z (OpenCV); "box" fills the left columns, "sphere" the right ones, "cone" is in the scene
    but hidden from this camera, anything else is not in the scene. World frame: original ->
    normalised by ``world_transform`` (scale 2, shift)."""

    def __init__(self):
        cams = Cameras(
            c2w=torch.eye(4)[:3].unsqueeze(0), Ks=torch.tensor([[[8.0, 0, 8], [0, 8.0, 8], [0, 0, 1]]]),
            widths=torch.tensor([W]), heights=torch.tensor([H]), dist=torch.zeros(1, 5),
        )  # fmt: skip
        T = torch.eye(4)
        T[:3, :3] *= 2.0
        T[:3, 3] = torch.tensor([0.5, -1.0, 0.25])
        split = SimpleNamespace(cameras=cams)
        self.dataset = SimpleNamespace(
            splits={"train": split, "test": split}, split=lambda name: split, world_transform=T,
            labels=["background", "ground", "box", "sphere", "cone"],
        )  # fmt: skip
        self.cols = {"box": slice(1, 6), "sphere": slice(10, 15)}
        # object centres in the ORIGINAL frame (their normalised positions are T @ these)
        self.centres = {"box": (-0.5, 0.5, 1.0), "sphere": (0.25, 0.5, 1.0), "cone": (0.0, 0.5, 3.0)}
        rgb = torch.full((H, W, 3), 0.5)
        rgb[4:12, self.cols["box"]] = torch.tensor(LEFT)
        rgb[4:12, self.cols["sphere"]] = torch.tensor(RIGHT)
        rgb[4:8, self.cols["sphere"]] *= 0.3  # its upper half in shadow
        self.rgb = rgb

    def _mask(self, name):
        m = torch.zeros(H, W, dtype=torch.bool)
        if name in self.cols:
            m[4:12, self.cols[name]] = True
        return m

    def relevancy(self, query, cameras, index):
        return torch.where(self._mask(query), 0.9, 0.2), None

    def segment(self, labels, cameras, index, unknown_threshold=None):
        out = torch.full((H, W), -1, dtype=torch.int64)
        for k, lab in enumerate(labels):
            out[self._mask(lab)] = k
        view = LanguageRender(RenderOutput(rgb=self.rgb, depth=torch.ones(H, W, 1), accumulation=torch.ones(H, W, 1)), torch.zeros(H, W, 4))
        return Segmentation(out, torch.ones(H, W)), view

    def localize(self, query, split="train", min_relevancy=0.5):
        if query not in self.centres:
            raise QueryNotFoundError(f"query {query!r}: no pixel reaches relevancy {min_relevancy}")
        c = torch.tensor(self.centres[query])
        return Localization(point=c, aabb=torch.stack([c - 0.1, c + 0.1]), num_points=40, score=0.9)


def test_objects_are_placed_coloured_and_related_from_the_camera():
    scene = ExactLanguageScene()
    desc, c2w = describe_language_scene(scene, ["sphere", "box"])
    assert [o.name for o in desc.objects] == ["sphere", "box"]
    sphere, box = desc.objects
    assert (sphere.color, box.color) == ("blue", "red")  # the sphere read on its lit half
    T = scene.dataset.world_transform.double()
    for obj in desc.objects:  # positions in the normalised frame, sizes scaled with it
        expected = (T @ torch.tensor([*scene.centres[obj.name], 1.0], dtype=torch.float64))[:3]
        np.testing.assert_allclose(obj.position, expected.numpy(), atol=1e-6)
        assert obj.size == pytest.approx(0.4, rel=1e-5)
    np.testing.assert_array_equal(c2w, np.eye(4)[:3])
    assert rewrite_prompt("a sphere and a box", desc, c2w) == "a red box left of a blue sphere"


def test_default_names_are_the_labels_and_hidden_or_unknown_objects_are_left_out(caplog):
    scene = ExactLanguageScene()
    with caplog.at_level("WARNING", logger="langfield.runs.scene_description"):
        desc, _ = describe_language_scene(scene)  # labels minus background/ground: box, sphere, cone
    assert [o.name for o in desc.objects] == ["box", "sphere"]
    assert "'cone': 0 pixel(s)" in caplog.text
    desc, _ = describe_language_scene(scene, "box, dragon")  # a comma-separated string works too
    assert [o.name for o in desc.objects] == ["box"]
    with pytest.raises(InputError, match="'dragon': not found.*'cone': 0 pixel"):
        describe_language_scene(scene, ["dragon", "cone"])
    with pytest.raises(InputError, match="at least one object"):
        describe_language_scene(scene, [])
    with pytest.raises(InputError, match="rewrite objects"):
        describe_language_scene(scene, ["box", "Box"])  # duplicates
    with pytest.raises(InputError, match="rewrite view"):
        describe_language_scene(scene, view=3)
    with pytest.raises(InputError, match="rewrite split 'val'"):
        describe_language_scene(scene, split="val")
    scene.dataset.labels = ["background", "ground"]
    with pytest.raises(InputError, match="--rewrite-objects"):
        describe_language_scene(scene)


# --------------------------------------------------------------------------- a real run


def test_a_trained_language_run_is_read_as_a_rewrite_scene(tiny_ngp_language_run, tmp_path):
    """The whole path on a real (tiny, 40-step) run: load, localise, segment, colour. The field is
    too undertrained for its answers to be right, so this checks the contract, not the content."""
    desc, c2w = load_rewrite_scene(tiny_ngp_language_run, 0, objects=["sphere", "box"], device="cpu")
    assert 1 <= len(desc.objects) <= 2 and {o.name for o in desc.objects} <= {"sphere", "box"}
    for obj in desc.objects:
        assert obj.color in BASIC_COLORS and np.all(np.isfinite(obj.position))
    assert c2w.shape == (3, 4) and np.all(np.isfinite(c2w))
    assert rewrite_prompt("a scene", desc, c2w)  # a caption comes out
    with pytest.raises(InputError, match="only a run directory"):
        load_rewrite_scene(tmp_path, objects=["sphere"])
    with pytest.raises(InputError, match="neither a toy world"):
        load_rewrite_scene(tmp_path)
    (tmp_path / "scene.json").write_text(json.dumps({"objects": []}))
    with pytest.raises(InputError, match="expected"):
        load_rewrite_scene(tmp_path / "scene.json")


def test_few_pixels_still_get_a_name():
    assert color_name_of_pixels([[0.1, 0.1, 0.1], [0.86, 0.13, 0.11]]) == "red"  # the band falls between them
    assert color_name_of_pixels([[0.14, 0.28, 0.92]]) == "blue"
