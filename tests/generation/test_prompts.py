"""Scene-aware prompt rewriting: the caption grammar, mentions, camera relations, the LLM path."""

from __future__ import annotations

import math

import pytest
import torch

from langfield._checks import InputError
from langfield.generation.prompts import (
    SceneDescription,
    SceneObject,
    descriptive_caption,
    objects_left_to_right,
    rewrite_prompt,
    scene_facts,
    short_caption,
)
from langfield.geometry.rotations import look_at
from langfield.pretrained.errors import PretrainedUnavailableError


def orbit_camera(azimuth_deg: float, distance: float = 4.0, height: float = 1.5) -> torch.Tensor:
    """OpenCV c2w on a circle around the origin (world +z up), looking at the origin."""
    a = math.radians(azimuth_deg)
    eye = torch.tensor([distance * math.cos(a), distance * math.sin(a), height], dtype=torch.float64)
    return look_at(eye, torch.zeros(3, dtype=torch.float64), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))


@pytest.fixture
def scene() -> SceneDescription:
    # Seen from azimuth -90 deg (camera at y = -4 looking along +y, x to the right): x order.
    return SceneDescription(
        (
            SceneObject("box", "blue", (0.0, 0.0, 0.3), size=0.3),
            SceneObject("sphere", "red", (-1.0, 0.2, 0.3)),
            SceneObject("cone", "orange", (1.0, -0.3, 0.4)),
        ),
        floor="checkered",
    )


def test_caption_grammar_exact_strings():
    assert descriptive_caption([("red", "sphere")], "checkered") == "a red sphere on a checkered floor"
    assert (
        descriptive_caption([("red", "sphere"), ("blue", "box")], "checkered")
        == "a red sphere left of a blue box on a checkered floor"
    )
    assert (
        descriptive_caption([("orange", "cone"), ("red", "sphere"), ("white", "cylinder")], "plain")
        == "an orange cone left of a red sphere left of a white cylinder on a plain floor"
    )
    assert descriptive_caption([("green", "cylinder")]) == "a green cylinder"
    assert short_caption(["sphere"]) == "a sphere"
    assert short_caption(["sphere", "box"]) == "a sphere and a box"
    assert short_caption(["cone", "sphere", "box"]) == "a cone, a sphere and a box"
    assert short_caption(["box", "sphere", "box"]) == "two boxes and a sphere"
    with pytest.raises(InputError, match="objects"):
        descriptive_caption([])


def test_rewrite_names_mentioned_objects_left_to_right(scene):
    cam = orbit_camera(-90)
    assert [o.name for o, _, _ in objects_left_to_right(scene, cam)] == ["sphere", "box", "cone"]
    assert rewrite_prompt("a sphere", scene, cam) == "a red sphere on a checkered floor"
    assert rewrite_prompt("a cone and a sphere", scene, cam) == "a red sphere left of an orange cone on a checkered floor"
    assert rewrite_prompt("the blue one", scene, cam) == "a blue box on a checkered floor"
    assert rewrite_prompt("A Cube next to a BALL.", scene, cam) == "a red sphere left of a blue box on a checkered floor"
    everything = "a red sphere left of a blue box left of an orange cone on a checkered floor"
    assert rewrite_prompt("a scene", scene, cam) == everything
    assert rewrite_prompt("", scene, cam) == everything
    assert rewrite_prompt("objects on the floor", scene, cam) == everything


def test_relations_flip_when_the_camera_turns_around(scene):
    front = rewrite_prompt("a sphere and a box", scene, orbit_camera(-90))
    back = rewrite_prompt("a sphere and a box", scene, orbit_camera(90))
    assert front == "a red sphere left of a blue box on a checkered floor"
    assert back == "a blue box left of a red sphere on a checkered floor"
    # [3, 4] poses and numpy arrays are accepted and give the same answer
    assert rewrite_prompt("a sphere and a box", scene, orbit_camera(90)[:3].numpy()) == back


def test_objects_behind_the_camera(scene):
    # camera at x = 0.5 looking along +x: only the cone (x = 1) is in front
    cam = look_at(torch.tensor([0.5, -0.3, 0.4]), torch.tensor([5.0, -0.3, 0.4]), torch.tensor([0.0, 0.0, 1.0]))
    assert rewrite_prompt("a scene", scene, cam) == "an orange cone on a checkered floor"
    with pytest.raises(InputError, match="red sphere is behind the camera"):
        rewrite_prompt("a sphere", scene, cam)
    away = look_at(torch.tensor([5.0, 0.0, 0.4]), torch.tensor([10.0, 0.0, 0.4]), torch.tensor([0.0, 0.0, 1.0]))
    with pytest.raises(InputError, match="no object of the scene is in front of the camera"):
        rewrite_prompt("a scene", scene, away)


def test_unknown_and_absent_objects_are_clear_errors(scene):
    cam = orbit_camera(-90)
    with pytest.raises(InputError, match=r"unknown word\(s\) 'chair'.*blue box, red sphere, orange cone"):
        rewrite_prompt("a chair and a sphere", scene, cam)
    with pytest.raises(InputError, match="mentions 'cylinder', but the scene holds"):
        rewrite_prompt("a cylinder", scene, cam)
    with pytest.raises(InputError, match="mentions 'red box'"):
        rewrite_prompt("a red box", scene, cam)  # the box is blue
    with pytest.raises(InputError, match="mentions 'green'"):
        rewrite_prompt("something green", scene, cam)
    # the documented fallback: unknown words dropped; nothing left -> the whole scene
    assert rewrite_prompt("a chair and a sphere", scene, cam, unknown="ignore") == "a red sphere on a checkered floor"
    assert rewrite_prompt("a chair", scene, cam, unknown="ignore").startswith("a red sphere left of a blue box")


def test_multi_word_names_plurals_and_counts():
    scene = SceneDescription(
        (
            SceneObject("coffee mug", "white", (0.5, 0.0, 0.0)),
            SceneObject("box", "red", (-0.5, 0.0, 0.0)),
            SceneObject("box", "green", (1.5, 0.0, 0.0)),
        )
    )
    cam = orbit_camera(-90)
    assert rewrite_prompt("a coffee mug", scene, cam) == "a white coffee mug"
    assert rewrite_prompt("two boxes", scene, cam) == "a red box left of a green box"
    assert rewrite_prompt("coffee mugs and a green box", scene, cam) == "a white coffee mug left of a green box"


def test_bad_inputs(scene):
    with pytest.raises(InputError, match=r"c2w: expected a \[3, 4\] or \[4, 4\]"):
        rewrite_prompt("a scene", scene, torch.eye(3))
    with pytest.raises(InputError, match="c2w: its rotation part is not a rotation"):
        rewrite_prompt("a scene", scene, 2 * torch.eye(4))
    with pytest.raises(InputError, match="style"):
        rewrite_prompt("a scene", scene, orbit_camera(0), style="fancy")
    with pytest.raises(InputError, match="llm_dir"):
        rewrite_prompt("a scene", scene, orbit_camera(0), style="llm")
    with pytest.raises(InputError, match="SceneObject.position"):
        SceneObject("box", "red", (0.0, 1.0))
    with pytest.raises(InputError, match="SceneDescription.objects"):
        SceneDescription(())
    with pytest.raises(InputError, match="SceneObject.color: expected one colour word"):
        SceneObject("box", "light blue", (0.0, 0.0, 0.0))


def test_scene_facts_list_objects_relations_and_hidden_ones(scene):
    facts = scene_facts(scene, orbit_camera(-90))
    lines = facts.splitlines()
    assert lines[1].startswith("1. a red sphere at world position (-1.00, 0.20, 0.30)")
    assert "size 0.30" in lines[2] and lines[3].startswith("3. an orange cone")
    assert "Relations: the red sphere is left of the blue box; the blue box is left of the orange cone." in facts
    assert facts.endswith("Floor: a checkered floor.")


# ----------------------------------------------------------------------------- LLM path


def _tiny_causal_lm(path, *, n_positions=512):
    """A random 1-layer GPT-2 with a word-level tokenizer built here (nothing downloaded)."""
    pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = ["[EOS]", "[UNK]", "[PAD]"] + "a an red blue orange sphere box cone left of on checkered floor".split()
    vocab = {w: i for i, w in enumerate(words)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(words), n_embd=16, n_layer=1, n_head=2, n_positions=n_positions,
        bos_token_id=0, eos_token_id=0, pad_token_id=2,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    fast.save_pretrained(path)
    return model, vocab


def test_llm_rewrite_runs_offline_on_a_local_model(tmp_path, scene):
    model, vocab = _tiny_causal_lm(tmp_path)
    # Make greedy decoding predictable: the final layer norm outputs a constant vector that the
    # (tied) output embedding scores highest for "sphere".
    with torch.no_grad():
        target = torch.zeros(16)
        target[0] = 10.0
        model.transformer.wte.weight[vocab["sphere"]] = target
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(target)
    model.save_pretrained(tmp_path)
    out = rewrite_prompt("a sphere", scene, orbit_camera(-90), style="llm", llm_dir=tmp_path, max_new_tokens=4)
    assert out == "sphere sphere sphere sphere"


def test_llm_rewrite_falls_back_to_the_template_and_checks_its_inputs(tmp_path, scene):
    model, vocab = _tiny_causal_lm(tmp_path / "eos")
    with torch.no_grad():  # every logit 0: greedy picks token 0, [EOS], at once -> no text
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
    model.save_pretrained(tmp_path / "eos")
    with pytest.warns(UserWarning, match="returned no text"):
        out = rewrite_prompt("a sphere", scene, orbit_camera(-90), style="llm", llm_dir=tmp_path / "eos")
    assert out == "a red sphere left of a blue box left of an orange cone on a checkered floor"
    short, _ = _tiny_causal_lm(tmp_path / "short", n_positions=32)
    short.save_pretrained(tmp_path / "short")
    with pytest.raises(InputError, match="more than the model's 32 positions"):
        rewrite_prompt("a sphere", scene, orbit_camera(-90), style="llm", llm_dir=tmp_path / "short")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PretrainedUnavailableError, match="config.json"):
        rewrite_prompt("a sphere", scene, orbit_camera(-90), style="llm", llm_dir=tmp_path / "empty")
