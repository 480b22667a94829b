"""keep_freed_memory: after it, the memory of a step's freed temporaries is reused without page faults."""

import subprocess
import sys
import textwrap

import pytest

# A child process runs "steps" that each allocate and touch ten 8 MiB tensors and free them, as a
# training step does with its activations, and counts the minor page faults of a later step. With
# glibc's defaults the 80 MiB freed at the top of the heap exceeds the (dynamic) trim threshold and is
# returned to the kernel, so every step faults its pages in again (one fault per 4 KiB page: ~20k).
_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from langfield.kernels.cpu_allocator import keep_freed_memory
    applied = keep_freed_memory() if sys.argv[1] == "tuned" else False
    def faults_of_round():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        xs = [torch.empty(2 * 1024 * 1024) for _ in range(10)]  # ten 8 MiB float32 tensors
        for x in xs:
            x.fill_(1.0)
        del xs, x
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    faults_of_round()
    faults_of_round()
    print(json.dumps({"applied": applied, "faults": min(faults_of_round() for _ in range(3))}))
    """
)


def _faults(mode: str, env=None) -> dict:
    import json
    import os

    out = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **(env or {})}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_freed_block_is_reused_without_page_faults():
    default = _faults("default")
    tuned = _faults("tuned")
    if not tuned["applied"]:
        pytest.skip("this C library is not glibc (mallopt unavailable)")
    assert default["faults"] > 1000, default  # glibc's default maps a fresh block: one fault per page
    assert tuned["faults"] < 100, tuned


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_environment_variable_turns_it_off():
    assert _faults("tuned", env={"LANGFIELD_KEEP_FREED_MEMORY": "0"})["applied"] is False
