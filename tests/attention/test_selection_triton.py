"""The fused Triton selection kernel: same summaries, query sums and block choice as the float64
references, on CPU through Triton's interpreter (when triton is installed) and on CUDA."""

import pytest
import torch
from attn_helpers import run_triton_checks


@pytest.mark.slow
def test_triton_selection_kernel_in_interpreter():
    pytest.importorskip("triton")
    assert "triton selection checks passed" in run_triton_checks("cpu")


@pytest.mark.gpu
def test_triton_selection_kernel_cuda():
    pytest.importorskip("triton")
    import triton_checks

    triton_checks.run_all("cuda")


@pytest.mark.gpu
def test_cuda_selection_defaults_to_triton_and_matches_torch():
    # The default CUDA path is the kernel; on float32 inputs it ranks exactly like the torch path.
    pytest.importorskip("triton")
    from spanlab.attention.selection import _stats_impl, select_blocks

    g = torch.Generator("cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 4, 1000, 64, device="cuda", generator=g) for _ in range(3))
    assert _stats_impl(q, None) == "triton"
    kw = {"chunk_size": 256, "block_size": 32, "top_k": 4, "selection": "relevance", "generator": None}
    assert torch.equal(select_blocks(q, k, v, impl="triton", **kw), select_blocks(q, k, v, impl="torch", **kw))
