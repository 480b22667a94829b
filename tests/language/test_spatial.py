"""Spatial questions: the grammar, the geometry on exact objects, ground-truth scoring on the
procedural scene and asking an exact fake scene (frames: original vs normalised)."""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from langfield._checks import InputError
from langfield.data.procedural import (
    ProceduralSceneConfig,
    procedural_cameras,
    procedural_labels,
    procedural_object_boxes,
    render_procedural_view,
)
from langfield.language.queries import Localization, QueryNotFoundError
from langfield.language.spatial import (
    SpatialAnswer,
    SpatialObject,
    SpatialQuestion,
    answer_spatial,
    ask_scene,
    mean_camera_up,
    objects_from_boxes,
    parse_question,
    procedural_objects,
    score_spatial,
    spatial_questions,
)
from langfield.types import Cameras

pytestmark = pytest.mark.usefixtures("single_thread")

# --------------------------------------------------------------------------- grammar


@pytest.mark.parametrize(
    "text, kind, objects",
    [
        ("is the sphere left of the box?", "left_of", ("sphere", "box")),
        ("Is the red mug to the left of the laptop", "left_of", ("red mug", "laptop")),
        ("is a chair on the right of an old table?", "right_of", ("chair", "old table")),
        ("is the cup on top of the table?", "is_above", ("cup", "table")),
        ("is the lamp above the desk", "is_above", ("lamp", "desk")),
        ("which is closer, the sphere or the box?", "closer", ("sphere", "box")),
        ("Which one is closer to the camera: sphere or box", "closer", ("sphere", "box")),
        ("which is nearer to me, the cup, or the orange mug?", "closer", ("cup", "orange mug")),
        ("which object is farther from the camera, the box or the cylinder?", "farther", ("box", "cylinder")),
        ("which is bigger, the ellipsoid or the sphere?", "larger", ("ellipsoid", "sphere")),
        ("which is larger, ground or sphere", "larger", ("ground", "sphere")),
        ("which is smaller, the box or the sphere?", "smaller", ("box", "sphere")),
        ("what is above the ground?", "above", ("ground",)),
        ("What's on top of the table?", "above", ("table",)),
        ("what is on the shelf", "above", ("shelf",)),
    ],
)
def test_grammar_parses_every_form(text, kind, objects):
    q = parse_question(text)
    assert (q.kind, q.objects, q.text) == (kind, objects, text)
    # The canonical text parses back to the same question.
    back = parse_question(q.to_text())
    assert (back.kind, back.objects) == (kind, objects)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "give a question"),
        ("   ", "give a question"),
        (42, "give a question"),
        ("where is the sphere?", "not understood"),
        ("is the sphere left the box?", "not understood"),
        ("which is closer, the sphere?", "not understood"),
        ("which is heavier, the sphere or the box?", "not understood"),
        ("what is above?", "not understood"),
        ("is the box left of the box?", "itself"),
        ("which is larger, the Box or the  box?", "itself"),
        ("is the left of the box?", "missing"),
    ],
)
def test_malformed_questions_are_refused_with_the_grammar(text, message):
    with pytest.raises(InputError, match=message) as err:
        parse_question(text)
    if message == "not understood":
        assert "which is closer, A or B?" in str(err.value)


# --------------------------------------------------------------------------- exact geometry

K = torch.tensor([[10.0, 0.0, 16.0], [0.0, 10.0, 16.0], [0.0, 0.0, 1.0]])
C2W = torch.eye(4)[:3]  # at the origin looking down +z (OpenCV: x right, y down)
UP = torch.tensor([0.0, -1.0, 0.0])  # in this frame "up" is -y


def _obj(name, centre, half):
    c = torch.tensor(centre, dtype=torch.float64)
    h = torch.as_tensor(half, dtype=torch.float64).expand(3)
    return SpatialObject.from_aabb(name, c, torch.stack([c - h, c + h]))


def _scene_objects():
    return {
        "mug": _obj("mug", (-1.0, 0.0, 5.0), 0.25),  # left, near
        "laptop": _obj("laptop", (1.0, 0.0, 8.0), 0.5),  # right, far, twice the diagonal
        "book": _obj("book", (-1.0, -0.6, 5.0), 0.2),  # on the mug (higher: smaller y)
        "shelf": _obj("shelf", (-1.0, -3.0, 9.0), 0.3),  # high up, elsewhere
    }


def test_left_right_closer_larger_and_above_on_exact_objects():
    objs = _scene_objects()

    def ask(text, **kw):
        return answer_spatial(parse_question(text), objs, C2W, K, UP, **kw)

    a = ask("is the mug left of the laptop?")
    assert a.answer == "yes" and a.objects == () and 0.5 <= a.confidence <= 1.0
    assert a.evidence["objects"]["mug"]["image_xy"] == pytest.approx([10 * -1 / 5 + 16, 16.0])
    assert a.evidence["objects"]["laptop"]["image_xy"] == pytest.approx([10 * 1 / 8 + 16, 16.0])
    assert ask("is the mug right of the laptop?").answer == "no"
    assert ask("is the laptop right of the mug?").answer == "yes"
    c = ask("which is closer, the laptop or the mug?")
    assert c.answer == "mug" and c.objects == ("mug",)
    assert c.evidence["compared"]["depth"] == {"laptop": 8.0, "mug": 5.0}
    # depth margin: |8 - 5| / (0.25 + 0.5) >= 1 -> fully confident
    assert c.confidence == 1.0
    assert ask("which is farther, the laptop or the mug?").answer == "laptop"
    big = ask("which is larger, the mug or the laptop?")
    assert big.answer == "laptop" and big.evidence["compared"]["ratio"] == pytest.approx(2.0) and big.confidence == 1.0
    assert ask("which is smaller, the mug or the laptop?").answer == "mug"
    up = ask("what is on top of the mug?")
    assert up.answer == "book" and up.objects == ("book",)
    assert up.evidence["candidates"]["book"]["footprint_overlap"] == pytest.approx(1.0)
    assert up.evidence["candidates"]["shelf"]["above"] is False  # higher, but not over the mug
    assert ask("what is above the book?").answer == "nothing"
    assert ask("is the book on top of the mug?").answer == "yes"
    assert ask("is the mug above the book?").answer == "no"
    # Candidates restrict the search.
    assert ask("what is above the mug?", candidates=["shelf"]).answer == "nothing"


def test_confidence_follows_the_documented_margins():
    base = _obj("a", (0.0, 0.0, 5.0), 0.4)
    objs = {"a": base, "b": _obj("b", (2.0, 0.0, 5.0), 0.5)}  # diagonal ratio 1.25: margin 0.5
    ans = answer_spatial(parse_question("which is larger, a or b?"), objs, C2W, K, UP)
    assert ans.answer == "b" and ans.confidence == pytest.approx(0.75)
    # Azimuth margin: centres 2 apart at depth 5 vs the boxes' azimuth half-spans.
    ans = answer_spatial(parse_question("is a left of b?"), objs, C2W, K, UP)
    az = [math.atan2(0.0, 5.0), math.atan2(2.0, 5.0)]
    half_a = math.atan2(0.4, 4.6) - math.atan2(-0.4, 4.6)  # widest corners are the near ones
    half_b = math.atan2(2.5, 4.5) - math.atan2(1.5, 5.5)
    expected = 0.5 + 0.5 * min(1.0, (az[1] - az[0]) / (half_a / 2 + half_b / 2))
    assert ans.answer == "yes" and ans.confidence == pytest.approx(expected)


def test_geometry_errors():
    objs = _scene_objects()
    q = parse_question("is the mug left of the laptop?")
    with pytest.raises(QueryNotFoundError, match="'cat'"):
        answer_spatial(parse_question("is the cat left of the mug?"), objs, C2W, K, UP)
    with pytest.raises(InputError, match="c2w"):
        answer_spatial(q, objs, torch.eye(3), K, UP)
    with pytest.raises(InputError, match="up"):
        answer_spatial(q, objs, C2W, K, torch.zeros(3))
    with pytest.raises(InputError, match="kind"):
        SpatialQuestion("behind", ("a", "b"))
    with pytest.raises(InputError, match="cancel"):
        mean_camera_up(torch.stack([C2W, torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))[:3]]))


# --------------------------------------------------------------------------- procedural ground truth


def _test_cameras(num=3, size=40):
    return procedural_cameras(ProceduralSceneConfig(width=size, height=size, num_test=num), "test")


def test_ground_truth_questions_score_one_from_the_truth_and_half_for_always_yes():
    cams = _test_cameras()
    objs = {o.name: o for o in procedural_objects()}
    up = torch.tensor([0.0, 0.0, 1.0])
    qs = spatial_questions(list(objs.values()), cams, up)
    kinds = {g.question.kind for g in qs}
    assert kinds == {"left_of", "right_of", "closer", "larger", "above"}
    above = {g.question.objects[0]: g.objects for g in qs if g.question.kind == "above"}
    assert set(above["ground"]) == {"sphere", "box", "cylinder", "ellipsoid"} and above["sphere"] == ()
    # the floor spans the image: never asked whether it is left of something
    assert not any("ground" in g.question.objects for g in qs if g.question.kind in ("left_of", "right_of"))
    truth = score_spatial(qs, lambda q, v: answer_spatial(q, objs, cams.c2w[v], cams.Ks[v], up))
    assert truth["accuracy"] == 1.0 and truth["num_questions"] == len(qs) and truth["not_found"] == 0

    def always_yes(q, v):
        return SpatialAnswer(q, "yes", (), 0.5)

    side = [g for g in qs if g.question.kind in ("left_of", "right_of")]
    assert score_spatial(side, always_yes)["accuracy"] == 0.5  # both orders of every pair are asked

    def nowhere(q, v):
        raise QueryNotFoundError("not here")

    assert score_spatial(qs[:4], nowhere) == {**score_spatial(qs[:4], nowhere), "accuracy": 0.0, "not_found": 4}


def test_tabletop_questions_from_its_boxes_follow_the_stack_and_the_world_transform():
    """The second layout's boxes (as a dataset carries them) ask "what is above the crate" with the
    book as the answer, and answering from the same boxes mapped by a similarity scores 1."""
    cams = procedural_cameras(ProceduralSceneConfig(width=40, height=40, num_test=3, layout="tabletop"), "test")
    boxes = procedural_object_boxes("tabletop")
    objs = objects_from_boxes(boxes)
    assert [o.name for o in objs] == procedural_labels("tabletop")[1:]
    assert [o.name for o in objs] == [o.name for o in procedural_objects(layout="tabletop")]
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    qs = spatial_questions(objs, cams, up)
    above = {g.question.objects[0]: g.objects for g in qs if g.question.kind == "above"}
    assert above["crate"] == ("book",) and above["ball"] == ()
    # A dataset whose world_transform rotates, scales and shifts the frame: the same questions
    # (generated from the mapped boxes and the mapped cameras) keep their answers.
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = 0.5 * torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    T[:3, 3] = torch.tensor([0.2, -0.1, 0.3], dtype=torch.float64)
    mapped = {o.name: o for o in objects_from_boxes(boxes, T)}
    c2w = cams.c2w.double()
    rot = T[:3, :3] / 0.5  # the similarity's rotation acts on the camera axes, all of it on the centres
    centres = c2w[:, :, 3] @ T[:3, :3].T + T[:3, 3]
    cams_t = replace(cams, c2w=torch.cat([rot @ c2w[:, :, :3], centres[..., None]], -1).float())
    up_t = torch.nn.functional.normalize(T[:3, :3] @ up, dim=0)
    truth = score_spatial(qs, lambda q, v: answer_spatial(q, mapped, cams_t.c2w[v], cams_t.Ks[v], up_t))
    assert truth["accuracy"] == 1.0 and truth["num_questions"] == len(qs)


def test_ground_truth_agrees_with_the_rendered_label_maps():
    """Independent check of the camera conventions: in the exact render, the label pixels of the
    object said to be left have the smaller mean column, and the one said to be closer the smaller
    mean depth."""
    cams = _test_cameras(num=2, size=48)
    objs = procedural_objects()
    qs = spatial_questions(objs, cams, torch.tensor([0.0, 0.0, 1.0]), min_confidence=0.9)
    names = procedural_labels()
    checked = 0
    for view in range(len(cams)):
        _, _, depth, labels = render_procedural_view(cams, view)
        cols = torch.arange(labels.shape[1]).expand_as(labels).double()
        stats = {}
        for lab, name in enumerate(names):
            m = labels == lab
            if int(m.sum()) >= 20:
                stats[name] = (float(cols[m].mean()), float(depth[..., 0][m].mean()))
        for g in qs:
            a, b = g.question.objects[0], g.question.objects[-1]
            if g.view != view or a not in stats or b not in stats:
                continue
            if g.question.kind == "left_of":
                assert (stats[a][0] < stats[b][0]) == (g.answer == "yes"), g
                checked += 1
            elif g.question.kind == "closer":
                assert (stats[g.answer][1] < stats[b if g.answer == a else a][1]), g
                checked += 1
    assert checked >= 10


# --------------------------------------------------------------------------- asking an exact fake scene


class ExactScene:
    """Localisations from a known layout, returned in the dataset's ORIGINAL frame; the cameras
    live in the normalised frame ``x_norm = T @ x_orig`` with T = scale 2 and a half turn about z
    (so an answer that forgot T would swap left and right and up and down)."""

    def __init__(self, layout):
        T = torch.diag(torch.tensor([-2.0, -2.0, 2.0, 1.0]))
        T[:3, 3] = torch.tensor([0.5, 0.0, 1.0])
        self.T = T
        cams = Cameras(c2w=C2W[None], Ks=K[None], widths=torch.tensor([32]), heights=torch.tensor([32]), dist=torch.zeros(1, 5))
        split = SimpleNamespace(cameras=cams)
        self.cameras = cams
        self.dataset = SimpleNamespace(
            splits={"train": split, "test": split}, split=lambda name: split, world_transform=T,
            labels=["background", *layout, "cone"],
        )  # fmt: skip
        self.layout = layout  # name -> SpatialObject in the normalised frame
        self.calls = []

    def localize(self, query, **kwargs):
        self.calls.append(query)
        if query not in self.layout:
            raise QueryNotFoundError(f"query {query!r}: no pixel reaches relevancy 0.5")
        o = self.layout[query]
        inv = torch.linalg.inv(self.T.double())
        pts = torch.cat([o.point[None], o.corners]) @ inv[:3, :3].T + inv[:3, 3]
        return Localization(pts[0].float(), torch.stack([pts[1:].min(0).values, pts[1:].max(0).values]).float(), 100, 0.8)


def test_asking_a_scene_maps_original_frame_localisations_into_the_cameras_frame():
    scene = ExactScene(_scene_objects())
    cams = scene.cameras
    ans = ask_scene(scene, "is the mug left of the laptop?", cams, 0)
    assert ans.answer == "yes"
    assert ans.evidence["objects"]["mug"]["point_normalised"] == pytest.approx([-1.0, 0.0, 5.0], abs=1e-5)
    # Lengths are reported in original units (normalised / 2).
    assert ans.evidence["objects"]["mug"]["depth"] == pytest.approx(2.5, abs=1e-5)
    assert ans.evidence["objects"]["laptop"]["size"] == pytest.approx(math.sqrt(3) * 0.5, abs=1e-5)
    assert ans.evidence["objects"]["laptop"]["volume"] == pytest.approx(0.5**3, abs=1e-5)  # 1x1x1 normalised
    assert ans.evidence["objects"]["mug"]["relevancy"] == pytest.approx(0.8)
    assert ask_scene(scene, "which is closer, the laptop or the mug?", cams, 0).answer == "mug"
    # "up" defaults to the training cameras' mean up: -y of the normalised frame here.
    top = ask_scene(scene, "what is on top of the mug?", cams, 0)
    assert top.answer == "book" and top.evidence["up"] == pytest.approx([0.0, -1.0, 0.0])
    assert top.evidence["not_found"] == ["cone"]  # a label the scene does not hold is skipped
    assert "background" not in scene.calls
    with pytest.raises(QueryNotFoundError, match="'unicorn' was not found"):
        ask_scene(scene, "is the unicorn left of the mug?", cams, 0)
    with pytest.raises(InputError, match="not understood"):
        ask_scene(scene, "how far is the mug?", cams, 0)
    with pytest.raises(InputError, match="out of range"):
        ask_scene(scene, "is the mug left of the laptop?", cams, 3)


def test_asking_a_scene_takes_normalised_objects_as_they_are():
    """A ``locate`` that returns :class:`SpatialObject` (already in the cameras' frame, as the
    object map's placements) is not mapped through ``world_transform`` again."""
    layout = _scene_objects()
    scene = ExactScene(layout)
    ans = ask_scene(scene, "is the mug left of the laptop?", scene.cameras, 0, locate=lambda name: layout[name])
    assert ans.answer == "yes"
    assert ans.evidence["objects"]["mug"]["point_normalised"] == pytest.approx([-1.0, 0.0, 5.0], abs=1e-6)
    assert scene.calls == []  # the scene's own localize was not used
    # Lengths are reported in original units through the object's scale.
    scaled = ask_scene(scene, "is the mug left of the laptop?", scene.cameras, 0, locate=lambda name: layout[name].with_scale(2.0))
    assert scaled.evidence["objects"]["mug"]["depth"] == pytest.approx(2.5, abs=1e-6) and ans.evidence["objects"]["mug"]["depth"] == pytest.approx(5.0, abs=1e-6)
