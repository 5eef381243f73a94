"""SE-Attn's Triton memory piece (`se_memory_triton`): same outputs and gradients as the float64
reference, on CPU through Triton's interpreter and on CUDA; at a realistic size the same result as
the cuDNN route it replaced; safe to capture in a CUDA graph."""

import pytest
import torch
from attn_helpers import rand_qkv, rel_err, run_triton_checks

from spanlab.attention import get_attention


@pytest.mark.slow
def test_memory_kernels_in_interpreter():
    pytest.importorskip("triton")
    assert "triton memory-piece checks passed" in run_triton_checks("cpu", "memory")


@pytest.mark.gpu
def test_memory_kernels_cuda():
    pytest.importorskip("triton")
    import triton_checks

    triton_checks.run_memory("cuda")


def _step(fn, q, k, v, dout):
    out = fn(q, k, v)
    return (out, *torch.autograd.grad(out, (q, k, v), dout))


@pytest.mark.gpu
def test_memory_triton_matches_cudnn_route_at_scale(kernel_choices):
    # 16 chunks of 512 with 8 blocks each: the grid sizes and strides of a real step, against the
    # memory piece through cuDNN (gather + cuDNN + merge; the previous design) on the same blocks.
    pytest.importorskip("triton")
    q, k, v = rand_qkv(1, 4, 4, 8192, 128, dtype=torch.bfloat16, device="cuda", grad=True)
    dout = torch.randn_like(q)
    fn = get_attention("se", chunk_size=512, block_size=32, top_k=8)
    kernel_choices("se_memory=triton")
    fast = _step(fn, q, k, v, dout)
    kernel_choices("se_memory=backend")
    ref = _step(fn, q, k, v, dout)
    for name, a, b in zip(("out", "dq", "dk", "dv"), fast, ref):
        assert rel_err(a, b) < 1e-2, name


@pytest.mark.gpu
def test_se_cuda_graph_capture():
    # Fixed shapes and chunk size: the documented make_graphed_callables route captures forward and
    # backward (no host synchronisation inside se_attention) and replays them on new inputs.
    pytest.importorskip("triton")
    fn = get_attention("se", chunk_size=256, block_size=32, top_k=3)
    q, k, v = rand_qkv(1, 4, 2, 1024, 64, dtype=torch.bfloat16, device="cuda", grad=True)
    graphed = torch.cuda.make_graphed_callables(fn, (q, k, v))
    for _ in range(2):
        q2, k2, v2 = rand_qkv(1, 4, 2, 1024, 64, dtype=torch.bfloat16, device="cuda", grad=True)
        dout = torch.randn_like(q2)
        got = [t.clone() for t in _step(graphed, q2, k2, v2, dout)]
        want = _step(fn, q2, k2, v2, dout)
        for name, a, b in zip(("out", "dq", "dk", "dv"), got, want):
            assert rel_err(a, b) < 1e-2, name
