"""Checks of the Triton selection kernel, shared by the CUDA test and the CPU-interpreter test.

Run as a script (`TRITON_INTERPRET=1 python triton_checks.py cpu`) it executes every check on CPU
through Triton's interpreter; the interpreter must be switched on before triton is imported, which
is why the CPU test runs this file in a subprocess.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from spanlab.attention import naive
from spanlab.attention.selection import block_summaries, select_blocks, valid_counts
from spanlab.attention.selection_triton import block_stats

# B, H, H_kv, L, D, S: GQA, L not a multiple of S, S not a power of two, S < 16 (padded tile).
STATS_SHAPES = [(2, 4, 2, 203, 32, 8), (1, 3, 1, 131, 64, 5), (1, 2, 2, 100, 128, 32), (1, 2, 1, 96, 16, 24)]
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-5, torch.float16: 1e-5}  # all math is float32 in the kernel


def _lists(blocks: torch.Tensor, L: int, M: int, S: int):
    counts = valid_counts(L, M, S, blocks.shape[-1])
    return [[[row[i][: counts[i]] for i in range(len(row))] for row in head] for head in blocks.tolist()]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    assert torch.isfinite(a).all()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def check_block_stats(device: str, dtypes=(torch.float32, torch.bfloat16, torch.float16), shapes=STATS_SHAPES) -> None:
    """Summaries and block query sums equal float64 torch math on the same (rounded) inputs,
    including q, k, v that are strided views of one fused QKV projection."""
    g = torch.Generator().manual_seed(0)
    for B, H, Hk, L, D, S in shapes:
        for dtype in dtypes:
            qkv = torch.randn(B, L, H + 2 * Hk, D, generator=g).to(device=device, dtype=dtype)
            q, k, v = qkv.transpose(1, 2).split([H, Hk, Hk], dim=1)  # non-contiguous, like a layer's views
            for kind in ("relevance", "landmark"):
                c, qs = block_stats(q, k, v, S, kind)
                ref = block_summaries(q.double(), k.double(), v.double(), S, kind)
                assert c.shape == ref.shape and c.dtype == torch.float32
                assert _rel(c, ref) < TOL[dtype], (B, H, Hk, L, D, S, dtype, kind)
                nbq = -(-L // S)
                qref = F.pad(q.double(), (0, 0, 0, nbq * S - L)).reshape(B, H, nbq, S, D).sum(3)
                assert qs.shape == qref.shape and _rel(qs, qref) < TOL[dtype]


SELECT_CASES = [(203, 40, 8, 3), (150, 37, 5, 100), (300, 64, 16, 4)]  # L, M, S, top_k
SMALL_SELECT_CASES = [(123, 40, 8, 3), (80, 37, 5, 100), (200, 64, 16, 4)]


def check_selection(device: str, cases=SELECT_CASES, batch: int = 2) -> None:
    """select_blocks through the kernel picks exactly the float64 loop reference's blocks (float32
    inputs), for chunks made of whole blocks (block query sums reused) and not (q re-read)."""
    g = torch.Generator().manual_seed(1)
    for selection in ("relevance", "landmark"):
        for L, M, S, k in cases:
            q, kk, v = (torch.randn(batch, h, L, 16, generator=g).to(device) for h in (4, 2, 2))
            fast = select_blocks(q, kk, v, chunk_size=M, block_size=S, top_k=k, selection=selection,
                                 generator=None, impl="triton")
            ref = naive.se_select_reference(q.double(), kk.double(), v.double(), chunk_size=M, block_size=S,
                                            top_k=k, selection=selection)
            assert _lists(fast, L, M, S) == ref, (selection, L, M, S, k)
    # Ties go to the more recent block: zero queries make every relevance equal.
    q, kk, v = (torch.randn(1, 2, 96, 16, generator=g).to(device) for _ in range(3))
    q.zero_()
    blocks = select_blocks(q, kk, v, chunk_size=32, block_size=8, top_k=2, selection="relevance",
                           generator=None, impl="triton")
    assert blocks[0, :, 2].tolist() == [[7, 6], [7, 6]]


def check_planted(device: str, dtype=torch.float32) -> None:
    """The retrieval test through the kernel: the planted block is chosen, the distractor is not."""
    from test_selection import _planted

    q, k, v, _, S, M, _ = _planted()
    q, k, v = (t.to(device=device, dtype=dtype) for t in (q, k, v))
    blocks = select_blocks(q, k, v, chunk_size=M, block_size=S, top_k=1, selection="relevance", generator=None,
                           impl="triton")
    assert blocks[0, 0, 7].tolist() == [3]
    blocks = select_blocks(q, k, v, chunk_size=M, block_size=S, top_k=4, selection="relevance", generator=None,
                           impl="triton")
    assert 3 in blocks[0, 0, 7].tolist() and 20 not in blocks[0, 0, 7].tolist()


def check_se_kernels(device: str) -> None:
    """The attention step's merge and chunk add equal their eager torch definitions; chunks before
    i0 stay untouched, every other element is written."""
    from spanlab.attention import se, se_triton

    g = torch.Generator().manual_seed(2)
    for N, nc, M, D, i0 in [(3, 4, 40, 32, 1), (2, 3, 70, 64, 2), (1, 2, 16, 128, 0)]:
        for dtype in (torch.bfloat16, torch.float16, torch.float32):
            o1, o2 = (torch.randn(N, n, M, D, generator=g).to(device=device, dtype=dtype) for n in (nc, nc - i0))
            l1, l2 = (3 * torch.randn(N, n, M, generator=g).to(device) for n in (nc, nc - i0))
            ref_o, ref_l = se._merge_eager(o1.double(), l1.double(), o2.double(), l2.double(), i0)
            se_triton.merge_(o1, l1, o2, l2, i0)
            tol = 1e-6 if dtype == torch.float32 else 1e-2
            assert _rel(o1, ref_o) < tol and _rel(l1, ref_l) < 1e-6, (N, nc, M, D, i0, dtype)
            dst = torch.randn(N, nc, M, D, generator=g).to(device=device, dtype=dtype)
            src = torch.randn(N, nc - i0, M, D, generator=g).to(device=device, dtype=dtype)
            ref = dst.double()
            ref[:, i0:] += src.double()
            se_triton.add_chunks_(dst, src, i0)
            assert _rel(dst, ref) < (1e-7 if dtype == torch.float32 else 1e-2)
            assert torch.equal(dst[:, :i0].double(), ref[:, :i0])


def run_all(device: str) -> None:
    check_se_kernels(device)
    if device == "cpu":  # the interpreter runs each program in Python: fewer, smaller cases
        small = [(1, 4, 2, 75, 32, 8), (1, 3, 1, 43, 64, 5), STATS_SHAPES[3]]
        check_block_stats(device, (torch.float32, torch.bfloat16), small)
        check_selection(device, SMALL_SELECT_CASES, batch=1)
    else:
        check_block_stats(device)
        check_selection(device)
    check_planted(device)


if __name__ == "__main__":
    run_all(sys.argv[1] if len(sys.argv) > 1 else "cpu")
    print("triton selection checks passed")
