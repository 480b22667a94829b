"""Toy-world streaming and the on-disk format: determinism, roundtrip, resume, and bad files."""

from __future__ import annotations

import doctest
import importlib
import io
import json
import os
import shutil

import numpy as np
import pytest
import torch

from langfield._checks import InputError
from langfield.data.toyworld import (
    FORMAT,
    ToyWorldConfig,
    ToyWorldSampler,
    iter_toyworld,
    read_toyworld,
    render_scenes,
    sample_scene,
    scene_seed,
    write_toyworld,
)


pytestmark = pytest.mark.usefixtures("single_thread")


CFG = ToyWorldConfig()


def _write(path, **kw):
    args = dict(config=CFG, num_scenes=5, views_per_scene=2, seed=3, scenes_per_shard=2, batch_size=4, progress=False)
    args.update(kw)
    return write_toyworld(path, **args)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("toy") / "world")


# --------------------------------------------------------------------------- streaming


def test_stream_is_deterministic_and_independent_of_batching():
    a = list(iter_toyworld(CFG, count=5, seed=2, views_per_scene=2, batch_size=4))
    b = list(iter_toyworld(CFG, count=5, seed=2, views_per_scene=2, batch_size=10))
    assert [len(x) for x in a] == [4, 4, 2] and [len(x) for x in b] == [10]
    cat = lambda batches, f: torch.cat([getattr(x.render, f) for x in batches])  # noqa: E731
    for field in ("rgb", "depth", "normals", "instance", "contours"):
        assert torch.equal(cat(a, field), cat(b, field)), field
    assert sum((x.descriptive_captions for x in a), ()) == b[0].descriptive_captions
    assert b[0].scene_index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert b[0].view.tolist() == [0, 1] * 5
    # views of a scene are different cameras of the same scene
    assert not torch.equal(b[0].cameras.c2w[0], b[0].cameras.c2w[1])
    assert b[0].scenes[0] is b[0].scenes[1]


def test_explicit_seeds_and_start_count_name_the_same_scenes():
    by_index = next(iter_toyworld(CFG, start=7, count=3, seed=4))
    by_seed = next(iter_toyworld(CFG, seeds=[scene_seed(4, i) for i in (7, 8, 9)]))
    assert torch.equal(by_index.render.rgb, by_seed.render.rgb)
    assert by_index.scene_index.tolist() == [7, 8, 9] and by_seed.scene_index.tolist() == [0, 1, 2]
    other = next(iter_toyworld(CFG, start=7, count=3, seed=5))
    assert not torch.equal(other.render.rgb, by_index.render.rgb)


def test_endless_stream_keeps_going():
    stream = iter_toyworld(CFG, batch_size=2)
    first = [next(stream) for _ in range(3)]
    assert [x.scene_index.tolist() for x in first] == [[0, 1], [2, 3], [4, 5]]


def test_batch_labels_match_the_caption_functions():
    batch = render_scenes([sample_scene(s) for s in range(6)], 1, CFG)
    for b, rec in enumerate(batch.records()):
        slots = [j for j in batch.slot_objects[b].tolist() if j >= 0]
        assert rec["attributes"]["order"] == slots
        assert batch.count[b] == len(batch.scenes[b].objects)
        assert (batch.slot_shapes[b] >= 0).sum() == batch.count[b]
        assert rec["descriptive_caption"].endswith(f"on a {batch.scenes[b].floor} floor")


def test_stream_arguments_are_checked():
    with pytest.raises(InputError, match="views_per_scene"):
        next(iter_toyworld(CFG, count=1, views_per_scene=0))
    with pytest.raises(InputError, match="batch_size"):
        next(iter_toyworld(CFG, count=1, batch_size=0))
    with pytest.raises(InputError, match=r"seeds\[1\]"):
        next(iter_toyworld(CFG, seeds=[1, -2]))


def test_sampler_steps_are_pure_and_walk_the_stream():
    sampler = ToyWorldSampler(CFG, batch_size=6, views_per_scene=2, seed=9)
    assert sampler.num_rays == 6
    b2 = sampler.sample(2)
    assert torch.equal(b2.render.rgb, ToyWorldSampler(CFG, batch_size=6, views_per_scene=2, seed=9).sample(2).render.rgb)
    stream = next(iter_toyworld(CFG, start=6, count=3, seed=9, views_per_scene=2, batch_size=6))
    assert torch.equal(b2.render.rgb, stream.render.rgb) and b2.scene_index.tolist() == [6, 6, 7, 7, 8, 8]
    assert b2.model_inputs() == (b2,)
    assert sampler.state_dict()["seed"] == 9
    with pytest.raises(InputError, match="step"):
        sampler.sample(-1)


# --------------------------------------------------------------------------- on disk


def test_write_then_read_roundtrips_against_the_stream(written):
    data = read_toyworld(written)
    assert len(data) == 10 and data.config == CFG
    meta = json.loads((written / "meta.json").read_text())
    assert meta["format"] == FORMAT and meta["num_shards"] == 3 and meta["num_images"] == 10
    assert sorted(p.name for p in written.iterdir()) == ["meta.json"] + [f"shard-0000{k}.{e}" for k in range(3) for e in ("jsonl", "npz")]
    stream = next(iter_toyworld(CFG, count=5, seed=3, views_per_scene=2, batch_size=10))
    r = stream.render
    assert torch.equal(data.rgb, (r.rgb * 255).round().to(torch.uint8))
    torch.testing.assert_close(data.depth.float(), r.depth, atol=4e-3, rtol=1e-3)  # float16
    torch.testing.assert_close(data.normals.float(), r.normals, atol=1e-3, rtol=0)
    assert torch.equal(data.instance.long(), r.instance) and torch.equal(data.semantic.long(), r.semantic)
    assert torch.equal(data.silhouette, r.silhouette) and torch.equal(data.contours, r.contours)
    torch.testing.assert_close(data.cameras.c2w, stream.cameras.c2w, atol=0, rtol=0)
    assert torch.equal(data.slot_shapes, stream.slot_shapes) and torch.equal(data.count, stream.count)
    assert [rec["image"] for rec in data.records] == list(range(10))
    assert [rec["descriptive_caption"] for rec in data.records] == list(stream.descriptive_captions)
    assert data.scene(3) == stream.scenes[3]


def test_resume_keeps_complete_shards_and_finishes_the_rest(tmp_path):
    out = _write(tmp_path / "w")
    (out / "shard-00001.jsonl").unlink()  # shard 1 interrupted before its records were written
    (out / "shard-00002.npz").unlink()
    stat0 = os.stat(out / "shard-00000.npz")
    with pytest.raises(InputError, match="shard-00001.jsonl"):
        read_toyworld(out)
    _write(out)
    assert os.stat(out / "shard-00000.npz").st_mtime_ns == stat0.st_mtime_ns  # kept, not re-rendered
    assert os.stat(out / "shard-00000.npz").st_ino == stat0.st_ino
    again = read_toyworld(out)
    fresh = read_toyworld(_write(tmp_path / "fresh", compress=False))  # plain .npz reads the same
    assert torch.equal(again.rgb, fresh.rgb) and again.records == fresh.records


def test_writing_another_world_into_a_folder_is_refused(written):
    with pytest.raises(InputError, match="differs in seed"):
        _write(written, seed=4)
    with pytest.raises(InputError, match="config"):
        _write(written, config=ToyWorldConfig(shadows=False))


def test_write_arguments_are_checked(tmp_path):
    with pytest.raises(InputError, match="num_scenes"):
        _write(tmp_path / "a", num_scenes=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="directory"):
        _write(tmp_path / "file")
    with pytest.raises(InputError, match="config"):
        _write(tmp_path / "b", config={"image_size": 32})


@pytest.fixture
def copy(written, tmp_path):
    return shutil.copytree(written, tmp_path / "copy")


def test_missing_or_bad_meta_is_named(copy, tmp_path):
    with pytest.raises(InputError, match="not a folder"):
        read_toyworld(tmp_path / "nowhere")
    (copy / "meta.json").write_text("{ not json")
    with pytest.raises(InputError, match="meta.json: not valid JSON"):
        read_toyworld(copy)
    (copy / "meta.json").unlink()
    with pytest.raises(InputError, match="meta.json: missing"):
        read_toyworld(copy)


def test_wrong_format_version_or_config_in_meta_is_named(copy):
    meta = json.loads((copy / "meta.json").read_text())
    for change, message in (
        ({"format": "other"}, "format"),
        ({"version": 99}, "version 99"),
        ({"num_shards": 7}, "num_shards"),
        ({"config": {**meta["config"], "image_size": 3}}, "image_size"),
    ):
        (copy / "meta.json").write_text(json.dumps({**meta, **change}))
        with pytest.raises(InputError, match=message):
            read_toyworld(copy)


def test_bad_shards_are_named(copy):
    npz = copy / "shard-00001.npz"
    good = npz.read_bytes()
    npz.write_bytes(b"garbage")
    with pytest.raises(InputError, match=r"shard-00001\.npz: cannot be read"):
        read_toyworld(copy)
    with np.load(io.BytesIO(good)) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["depth"] = arrays["depth"].astype(np.float32)
    with open(npz, "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(InputError, match=r"shard-00001\.npz: array 'depth' is float32"):
        read_toyworld(copy)
    del arrays["depth"]
    with open(npz, "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(InputError, match=r"array 'depth' is missing"):
        read_toyworld(copy)
    npz.write_bytes(good)
    lines = (copy / "shard-00002.jsonl").read_text().splitlines()
    (copy / "shard-00002.jsonl").write_text(lines[0] + "\n{oops\n")
    with pytest.raises(InputError, match=r"shard-00002\.jsonl:2: not valid JSON"):
        read_toyworld(copy)
    (copy / "shard-00002.jsonl").write_text(lines[0] + "\n")
    with pytest.raises(InputError, match=r"shard-00002\.jsonl: holds 1 records, expected 2"):
        read_toyworld(copy)
    (copy / "shard-00002.npz").unlink()
    with pytest.raises(InputError, match=r"shard-00002\.npz: missing shard"):
        read_toyworld(copy)


@pytest.mark.slow
def test_parallel_workers_write_the_same_data(tmp_path, written):
    out = _write(tmp_path / "par", num_workers=2)
    a, b = read_toyworld(out), read_toyworld(written)
    assert torch.equal(a.rgb, b.rgb) and a.records == b.records


# --------------------------------------------------------------------------- docstring examples


@pytest.mark.parametrize(
    "name",
    [
        "langfield.data.raycast",
        "langfield.data.toyworld",
        "langfield.data.toyworld.scene",
        "langfield.data.toyworld.cameras",
        "langfield.data.toyworld.render",
        "langfield.data.toyworld.captions",
        "langfield.data.toyworld.dataset",
        "langfield.data.toyworld.sampler",
    ],
)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder(exclude_empty=True).find(module) if t.examples]
    assert tests, f"{name} has no >>> examples"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    assert runner.failures == 0
