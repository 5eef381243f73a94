"""The fused Triton SSD scan (spanlab.models.ssd_triton): the float64 recurrence's output and final
state (float32 to 1e-5, bf16 to bf16 rounding) on CPU through Triton's interpreter and on CUDA;
`ssd_chunk_scan` routes only half-precision, gradient-free calls to it (`ssd=torch` keeps the torch
scan); a tiny Mamba2 gives the torch scan's logits through it."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from spanlab.models import ssd_triton  # noqa: E402

HERE = pathlib.Path(__file__).parent


@pytest.mark.slow
def test_kernels_in_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, str(HERE / "ssd_triton_checks.py"), "cpu"], env=env, capture_output=True, text=True,
                       timeout=900, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "ssd triton checks passed" in r.stdout


def test_cpu_tensors_without_the_interpreter_are_not_taken():
    # Without the interpreter the kernels run only on CUDA: a CPU call keeps the torch scan.
    x = torch.zeros(1, 32, 2, 16, dtype=torch.bfloat16)
    assert not ssd_triton.supports(x, torch.zeros(1, 32, 1, 16), 16) or ssd_triton.interpreting()


@pytest.mark.parametrize(("chunk", "blk"), [(256, 64), (48, 16), (96, 32), (64, 64), (8, None), (100, None)])
def test_row_tiles_never_straddle_chunks(chunk, blk):
    assert ssd_triton.row_block(chunk) == blk


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_kernels_cuda():
    pytest.importorskip("triton")
    sys.path.insert(0, str(HERE))
    import ssd_triton_checks

    ssd_triton_checks.run("cuda", ("kernel", "dispatch", "model", "real"))
