"""JIT kernel builds: cache key, atomic publication, lock fallback, ninja look-up, damaged caches.

Most tests replace :meth:`JitKernel._compile` with a stub (the cache and lock logic does not need a
compiler). A tiny real kernel, ``csrc/dummy_kernel.cpp`` (one op), is compiled once per module
(~10 s) for the end-to-end checks, which run in fresh processes so each can load it anew.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.utils.cpp_extension

import langfield
from langfield._checks import InputError
from langfield.kernels import jit
from langfield.kernels.build_lock import TIMEOUT_ENV, machine_tag
from langfield.kernels.jit import JitKernel, find_ninja

DUMMY_SOURCE = Path(__file__).parent / "csrc" / "dummy_kernel.cpp"
DUMMY_NAME, DUMMY_PROBE = "langfield_test_dummy", "plus_forty_two"
LOGGER = "langfield.kernels"
SRC_ROOT = Path(langfield.__file__).resolve().parents[1]


class StubCompile:
    """Stands in for the compiler: writes ``payload`` as the built library and counts the calls."""

    def __init__(self, payload: bytes = b"\x7fELF stub library", delay_s: float = 0.0) -> None:
        self.payload, self.delay_s, self.calls = payload, delay_s, 0

    def __call__(self, build_dir: Path, verbose: bool) -> Path:
        self.calls += 1
        time.sleep(self.delay_s)
        out = build_dir / "stub.so"
        out.write_bytes(self.payload)
        return out


def _stub_kernel(tmp_path, monkeypatch, name="langfield_test_never_built", cflags=(), **stub):
    """A kernel whose namespace is never registered, with a stub compiler, cached under tmp_path."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    kernel = JitKernel(name, DUMMY_SOURCE, list(cflags), "test kernel", probe="nothing")
    compile_stub = StubCompile(**stub)
    monkeypatch.setattr(kernel, "_compile", compile_stub)
    return kernel, compile_stub


def _leftovers(root: Path):
    return sorted(p.name for p in root.iterdir() if p.suffix == ".lock" or p.name.startswith(".build-"))


# ------------------------------------------------------------------------------ cache key


def test_cache_key_follows_source_flags_interpreter_and_torch(tmp_path, monkeypatch):
    source = tmp_path / "k.cpp"
    source.write_text("// v1\n")

    def key(cflags=(), src=source):
        return JitKernel("k", src, list(cflags), "k").cache_key()

    base = key()
    assert key() == base  # deterministic
    assert key(["-DFOO"]) != base
    source.write_text("// v2\n")
    changed_source = key()
    assert changed_source != base
    monkeypatch.setattr(sys, "executable", str(tmp_path / "other-env" / "python"))
    assert key() != changed_source
    monkeypatch.undo()
    monkeypatch.setattr(torch, "__version__", "0.0.1+other")
    assert key() != changed_source


def test_library_name_changes_with_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    a = JitKernel("k", DUMMY_SOURCE, [], "k").library_path()
    b = JitKernel("k", DUMMY_SOURCE, ["-DFOO"], "k").library_path()
    assert a.parent == b.parent == tmp_path
    assert a != b and a.name.startswith("k-py") and a.suffix == ".so"


# ------------------------------------------------------------------------------ build and publish


def test_build_is_published_once_and_reused(tmp_path, monkeypatch, caplog):
    kernel, stub = _stub_kernel(tmp_path, monkeypatch)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        path = kernel.ensure_built()
    assert stub.calls == 1
    assert path == kernel.library_path() and path.read_bytes() == stub.payload
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["size"] == len(stub.payload) and record["key"]["kernel"] == kernel.name
    assert _leftovers(path.parent) == []  # no lock, no private build folder
    compiling = [r.getMessage() for r in caplog.records if "compiling" in r.getMessage()]
    assert compiling == [f"langfield: compiling the test kernel into {path.parent} (about 30 s, once)"]

    before = path.stat()
    assert kernel.ensure_built() == path
    assert stub.calls == 1
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_other_flags_build_beside_never_over(tmp_path, monkeypatch):
    first, _ = _stub_kernel(tmp_path, monkeypatch)
    first_path = first.ensure_built()
    before = first_path.stat()
    second, stub = _stub_kernel(tmp_path, monkeypatch, cflags=["-DOTHER"], payload=b"other build")
    second_path = second.ensure_built()
    assert stub.calls == 1 and second_path != first_path
    after = first_path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    kernel, _ = _stub_kernel(tmp_path, monkeypatch)

    def broken(build_dir, verbose):
        (build_dir / "half.o").write_bytes(b"...")
        raise RuntimeError("simulated compiler failure")

    monkeypatch.setattr(kernel, "_compile", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        kernel.ensure_built()
    assert list((tmp_path / "cache").iterdir()) == []


def test_abandoned_build_folder_is_cleared(tmp_path, monkeypatch):
    kernel, stub = _stub_kernel(tmp_path, monkeypatch)
    final = kernel.library_path()
    abandoned = final.parent / f".build-{final.stem}-killed"
    abandoned.mkdir(parents=True)
    (abandoned / "build.ninja").write_text("")
    kernel.ensure_built()
    assert stub.calls == 1 and not abandoned.exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "no-record"])
def test_damaged_cached_library_is_rebuilt_not_loaded(tmp_path, monkeypatch, caplog, damage):
    kernel, stub = _stub_kernel(tmp_path, monkeypatch, payload=b"\x7fELF a good library" * 50)
    final = kernel.ensure_built()
    if damage == "garbage":
        final.unlink()
        final.write_bytes(b"\x00" * len(stub.payload))  # same size, wrong bytes
    elif damage == "truncated":
        final.unlink()
        final.write_bytes(stub.payload[:100])  # dlopen of this could die with SIGBUS
    else:
        final.with_suffix(".json").unlink()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert kernel.ensure_built() == final
    assert stub.calls == 2
    assert final.read_bytes() == stub.payload
    warnings = [r.getMessage() for r in caplog.records if "unusable" in r.getMessage()]
    assert len(warnings) == 1 and str(final) in warnings[0]


# ------------------------------------------------------------------------------ the lock, through load()


def test_stale_lock_of_a_dead_process_does_not_block_the_build(tmp_path, monkeypatch, caplog):
    kernel, stub = _stub_kernel(tmp_path, monkeypatch)
    child = subprocess.Popen(["true"])
    child.wait()
    lock = kernel.lock_path()
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": child.pid, "host": socket.gethostname(), "machine": machine_tag(),
                                "created": time.time(), "token": "killed-builder"}))  # fmt: skip
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        kernel.ensure_built()
    assert stub.calls == 1 and not lock.exists()
    assert any("removed the stale build lock" in r.getMessage() and str(lock) in r.getMessage() for r in caplog.records)


def test_held_lock_times_out_and_load_falls_back_with_one_warning(tmp_path, monkeypatch, caplog):
    kernel, stub = _stub_kernel(tmp_path, monkeypatch)
    monkeypatch.setenv(TIMEOUT_ENV, "1")
    holder = subprocess.Popen(["sleep", "60"])
    try:
        lock = kernel.lock_path()
        lock.parent.mkdir(parents=True)
        lock.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "machine": machine_tag(),
                                    "created": time.time(), "token": "busy-builder"}))  # fmt: skip
        start = time.monotonic()
        with caplog.at_level(logging.INFO, logger=LOGGER):
            assert kernel.load() is False
            assert kernel.load() is False  # remembered
        assert time.monotonic() - start < 10
    finally:
        holder.kill()
        holder.wait()
    assert stub.calls == 0 and lock.exists()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "unavailable, using the torch path" in warnings[0] and f"rm '{lock}'" in warnings[0]
    assert any(f"waiting for {lock} (held by pid {holder.pid}" in r.getMessage() for r in caplog.records)


def test_malformed_lock_timeout_is_refused_naming_the_variable(tmp_path, monkeypatch):
    kernel, stub = _stub_kernel(tmp_path, monkeypatch)
    monkeypatch.setenv(TIMEOUT_ENV, "banana")
    with pytest.raises(InputError, match=f"{TIMEOUT_ENV}.*banana"):
        kernel.load()
    assert stub.calls == 0 and not kernel.tried


def test_no_cpp_disables_without_building(tmp_path, monkeypatch):
    kernel, stub = _stub_kernel(tmp_path, monkeypatch)
    monkeypatch.setenv("LANGFIELD_NO_CPP", "1")
    assert kernel.available() is False
    assert stub.calls == 0 and not (tmp_path / "cache").exists()


def test_unusable_cache_folder_falls_back_naming_it(tmp_path, monkeypatch, caplog):
    kernel, stub = _stub_kernel(tmp_path, monkeypatch)
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert kernel.load() is False
    assert stub.calls == 0
    assert [str(not_a_folder) in r.getMessage() for r in caplog.records] == [True]


# ------------------------------------------------------------------------------ ninja


def test_ninja_is_found_beside_the_interpreter_without_path(tmp_path, monkeypatch):
    beside = Path(sys.executable).parent / "ninja"
    if not beside.is_file():
        pytest.skip(f"no ninja beside {sys.executable}")
    monkeypatch.setenv("PATH", str(tmp_path))  # the environment is not "activated"
    assert find_ninja() == beside


def test_build_runs_the_environments_ninja_first(tmp_path, monkeypatch):
    """torch runs ``ninja`` from PATH: the build must see this environment's, not a stranger's."""
    ninja = find_ninja()
    if ninja is None:
        pytest.skip("no ninja in this environment")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "ninja").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "ninja").chmod(0o755)
    path_before = f"{fake_bin}{os.pathsep}/usr/bin{os.pathsep}/bin"
    monkeypatch.setenv("PATH", path_before)
    monkeypatch.setattr(jit, "ninja_search_path", lambda: [ninja.parent, fake_bin])
    seen = {}

    def fake_load(name, build_directory, **kwargs):
        seen["ninja"] = shutil.which("ninja")
        (Path(build_directory) / f"{name}.so").write_bytes(b"lib")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", fake_load)
    kernel = JitKernel("k", DUMMY_SOURCE, [], "k")
    built = kernel._compile(tmp_path, verbose=False)
    assert built == tmp_path / "k.so"
    assert Path(seen["ninja"]) == ninja
    assert os.environ["PATH"] == path_before  # restored


def test_missing_ninja_says_where_it_looked(tmp_path, monkeypatch):
    folders = [tmp_path / "venv-bin", tmp_path / "usr-bin"]
    monkeypatch.setattr(jit, "ninja_search_path", lambda: folders)
    with pytest.raises(RuntimeError, match="ninja not found") as info:
        JitKernel("k", DUMMY_SOURCE, [], "k")._compile(tmp_path, verbose=False)
    assert all(str(f) in str(info.value) for f in folders) and "pip install ninja" in str(info.value)


# ------------------------------------------------------------------------------ a real build, end to end

CHILD = textwrap.dedent(
    """
    import json, logging, shutil, sys, time
    from pathlib import Path
    import torch
    from langfield.kernels.jit import JitKernel

    logging.basicConfig(level=logging.INFO)
    mode, source = sys.argv[1], sys.argv[2]
    kernel = JitKernel("langfield_test_dummy", Path(source), [], "test kernel", probe="plus_forty_two")
    if mode == "no-rebuild":
        def refuse(build_dir, verbose):
            raise AssertionError("rebuilt although a cached build exists")
        kernel._compile = refuse
    elif mode.startswith("copy-good"):  # a quick stand-in for the compiler: the module's real build
        good = Path(sys.argv[3])
        def copy(build_dir, verbose):
            time.sleep(2.0 if mode == "copy-good-slow" else 0.0)  # so that concurrent builders overlap
            shutil.copy(good, build_dir / "copied.so")
            return build_dir / "copied.so"
        kernel._compile = copy
    ok = kernel.load()
    value = torch.ops.langfield_test_dummy.plus_forty_two(1) if ok else None
    print(json.dumps({"ok": ok, "value": value, "error": str(kernel.error)}))
    """
)


def _child(mode, root, *extra, path=None):
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(root), PYTHONPATH=str(SRC_ROOT), OMP_NUM_THREADS="1")
    env.pop("LANGFIELD_NO_CPP", None)
    if path is not None:
        env["PATH"] = path
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(DUMMY_SOURCE), *map(str, extra)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(child):
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1]), err


@pytest.fixture(scope="module")
def dummy_build(tmp_path_factory):
    """Compile the dummy kernel once, in this process, into a fresh cache; return its library."""
    from langfield.kernels.jit import cpp_disabled

    if cpp_disabled():
        pytest.skip("LANGFIELD_NO_CPP is set")
    if find_ninja() is None or shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no ninja or C++ compiler")
    root = tmp_path_factory.mktemp("kernel_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_EXTENSIONS_DIR", str(root))
        patch.delenv(TIMEOUT_ENV, raising=False)
        kernel = JitKernel(DUMMY_NAME, DUMMY_SOURCE, [], "test kernel", probe=DUMMY_PROBE)
        assert kernel.load(), f"the dummy kernel did not build: {kernel.error}"
        library = kernel.library_path()
    return library


def test_real_build_is_published_and_works(dummy_build):
    assert torch.ops.langfield_test_dummy.plus_forty_two(1) == 43
    assert dummy_build.is_file() and dummy_build.with_suffix(".json").is_file()
    assert _leftovers(dummy_build.parent) == []


def test_new_process_loads_the_cached_build_without_compiler_or_lock(dummy_build, tmp_path):
    before = dummy_build.stat()
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result, err = _result(_child("no-rebuild", dummy_build.parent, path=str(empty)))  # no c++, no ninja
    assert result == {"ok": True, "value": 43, "error": "None"}, err
    after = dummy_build.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert _leftovers(dummy_build.parent) == []


def test_truncated_cached_build_is_rebuilt_in_a_new_process(dummy_build, tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    damaged = root / dummy_build.name
    damaged.write_bytes(dummy_build.read_bytes()[:4096])  # dlopen of this dies with SIGBUS
    shutil.copy(dummy_build.with_suffix(".json"), damaged.with_suffix(".json"))
    result, err = _result(_child("copy-good", root, dummy_build))
    assert result["ok"] and result["value"] == 43, err
    assert "unusable" in err and str(damaged) in err
    assert damaged.read_bytes() == dummy_build.read_bytes()


def test_concurrent_processes_build_once(dummy_build, tmp_path):
    root = tmp_path / "cache"
    children = [_child("copy-good-slow", root, dummy_build) for _ in range(3)]
    results = [_result(child) for child in children]
    assert all(r["ok"] and r["value"] == 43 for r, _ in results), results
    compiled = sum("compiling the test kernel" in err for _, err in results)
    assert compiled == 1  # the others waited for the lock, then loaded the published build
    assert sorted(p.name for p in root.iterdir()) == sorted([dummy_build.name, dummy_build.with_suffix(".json").name])


def test_builder_killed_mid_build_does_not_block_the_next_process(dummy_build, tmp_path):
    """The issue's scenario: ``kill -9`` during the first compile left a lock every later process hung on."""
    root = tmp_path / "cache"
    victim = _child("copy-good-slow", root, dummy_build)
    lock = root / dummy_build.with_suffix(".lock").name
    deadline = time.monotonic() + 60

    def building():
        return root.is_dir() and any(p.name.startswith(".build-") for p in root.iterdir())

    while not building() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert building(), "the builder never started"
    victim.kill()  # SIGKILL: no clean-up runs
    victim.communicate()
    assert lock.exists() and any(p.name.startswith(".build-") for p in root.iterdir())

    start = time.monotonic()
    result, err = _result(_child("copy-good", root, dummy_build))
    assert result["ok"] and result["value"] == 43, err
    assert time.monotonic() - start < 60
    assert "removed the stale build lock" in err and str(lock) in err
    assert _leftovers(root) == []
