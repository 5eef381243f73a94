"""The fused SSD scan compiled for the GPU against the torch scan, at the geometries models use.

On an H100 (Triton 3.6) the compiled `_scan_kernel` with 32-channel heads faulted at batch 8 and
was wrong at batch 1 while the interpreter was clean (benchmarks/ssd_fault_repro.py); the CPU tests
only run the interpreter, so this is the check that compiled code computes the scan. Heads of 32
channels must now take the torch scan; 64-channel heads (the seeds', the 1B benchmark's) the
fused one, on every layout the mixers hand over and at batch 1 and 8."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)

from spanlab import kernels  # noqa: E402
from spanlab.models import ssd, ssd_triton  # noqa: E402

if not ssd_triton.available():
    pytest.skip("needs triton", allow_module_level=True)


def _inputs(b, L, h, p, n, layout, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    d = h * p + 2 * n
    if layout == "channel-first":  # transformers' conv output, read through a transpose
        xbc = torch.randn(b, d, L, device="cuda", dtype=torch.bfloat16, generator=gen).transpose(1, 2)
    else:  # spanlab's conv kernel: row-major (b, L, d); the mixer splits it into views
        xbc = torch.randn(b, L, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    x, B, C = torch.split(xbc, [h * p, n, n], dim=-1)
    x, B, C = x.reshape(b, L, h, p), B.reshape(b, L, 1, n), C.reshape(b, L, 1, n)
    if layout == "contiguous":
        x, B, C = x.contiguous(), B.contiguous(), C.contiguous()
    dt = torch.rand(b, L, h, device="cuda", generator=gen) * 0.1
    A = -torch.rand(h, device="cuda", generator=gen)
    D = torch.randn(h, device="cuda", generator=gen)
    init = torch.randn(b, h, p, n, device="cuda", generator=gen) * 0.1
    return x, dt, A, B, C, D, init


def _rel(a, b):
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-6))


# (heads, head size, state, chunk): the 1B benchmark's / Mamba2-2.7B's, and a 64-channel head at
# the tiny models' state and chunk.
GEOMETRIES = [(64, 64, 128, 256), (80, 64, 128, 256), (12, 64, 64, 64)]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "h{}p{}n{}c{}".format(*g))
@pytest.mark.parametrize("layout", ["rowmajor", "channel-first", "contiguous"])
@pytest.mark.parametrize("batch", [1, 8])
def test_fused_scan_matches_the_torch_scan(geometry, layout, batch):
    h, p, n, cs = geometry
    L = 1931 if batch == 8 else 4000  # not a whole number of chunks: the last one is partial
    x, dt, A, B, C, D, init = _inputs(batch, L, h, p, n, layout)
    assert ssd_triton.supports(x, B, cs)
    with torch.inference_mode():
        y, final = ssd_triton.chunk_scan(x, dt, A, B, C, cs, D=D, initial_states=init)
        torch.cuda.synchronize()
        with kernels.use("ssd=torch"):
            ref, ref_final = ssd.ssd_chunk_scan(x, dt, A, B, C, cs, D=D, initial_states=init,
                                                return_final_states=True)
    # bf16 operands with float32 sums on both sides (the torch scan's CUDA path); a wrong tile
    # or a misread row is off by O(1).
    assert _rel(y, ref) < 2e-2
    assert _rel(final, ref_final) < 2e-2


def test_small_heads_take_the_torch_scan():
    x, dt, A, B, C, D, init = _inputs(8, 1931, 12, 32, 64, "rowmajor")
    assert not ssd_triton.supports(x, B, 64)
    with torch.inference_mode():
        out, final = ssd.ssd_chunk_scan(x, dt, A, B, C, 64, D=D, initial_states=init, return_final_states=True)
        with kernels.use("ssd=torch"):
            ref, ref_final = ssd.ssd_chunk_scan(x, dt, A, B, C, 64, D=D, initial_states=init,
                                                return_final_states=True)
    torch.cuda.synchronize()
    assert torch.equal(out, ref) and torch.equal(final, ref_final)
