"""Every Triton kernel of the shipped Mamba2-family models' CUDA eval path stays inside its tensors.

A study on a lent GPU (2026-12-06) died with an illegal memory access at the tiny hybrid's first
eval batch under the default kernels. These run that path on CPU through Triton's interpreter
with each load and store checked against the kernel's tensor arguments (tests/triton_bounds.py,
kernel_bounds_checks.py): a left-padded batch, prefilled in chunks (a stored conv and SSM state
read by the next chunk), then decode steps, at the shipped geometry."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("spanlab_cache")]
HERE = pathlib.Path(__file__).parent


def _run(*args: str) -> str:
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, str(HERE / "kernel_bounds_checks.py"), *args], env=env, capture_output=True,
                       text=True, timeout=900, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def test_triton_bounds_checker_catches_a_read_past_a_view():
    """The checker itself: a kernel reading one element past a slice is reported, the same kernel in bounds is not."""
    code = (
        "import torch, triton, triton.language as tl\n"
        "from triton_bounds import bounds_checked\n"
        "@triton.jit\n"
        "def k(X, Y, n, BLOCK: tl.constexpr, OFF: tl.constexpr):\n"
        "    o = tl.arange(0, BLOCK)\n"
        "    tl.store(Y + o, tl.load(X + o + OFF, mask=o < n), mask=o < n)\n"
        "x = torch.arange(100, dtype=torch.float32)[10:20]\n"
        "for off in (0, 1):\n"
        "    with bounds_checked() as r:\n"
        "        k[(1,)](x, torch.empty(10), 10, BLOCK=16, OFF=off)\n"
        "    print(off, len(r.violations), r.violations)\n")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                       text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert lines[0].startswith("0 0 "), lines
    assert lines[1].startswith("1 1 ") and "byte +40 from X" in lines[1], lines


@pytest.mark.parametrize("model", ["hybrid-tiny-c512", "mamba2-tiny-c512"])
def test_shipped_recurrent_models_kernels_stay_in_bounds(model):
    # Rows of 3 lengths (~340, 260, 160 tokens: left padding), chunks of 128 (the later ones read the stored states).
    out = _run(model, "128", "260,200,120", "4")
    assert "violations: 0" in out, out[-3000:]
    launches = json.loads(out.split("launches:", 1)[1].splitlines()[0])
    # Each kernel of the path ran (a check of nothing would pass too).
    names = ["conv_kernel", "norm_kernel", "_state_kernel", "_scan_kernel", "ssm_kernel"]
    if model.startswith("hybrid"):  # its attention layer's decode steps: the split-KV kernel and its merge
        names += ["split_kernel", "merge_kernel"]
    for name in names:
        assert launches.get(name, 0) > 0, (name, launches)
