"""Checks of the Triton selection kernel, shared by the CUDA test and the CPU-interpreter test.

Run as a script (`TRITON_INTERPRET=1 python triton_checks.py cpu`) it executes every check on CPU
through Triton's interpreter; the interpreter must be switched on before triton is imported, which
is why the CPU test runs this file in a subprocess.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F

from spanlab.attention import naive
from spanlab.attention.selection import block_summaries, select_blocks, valid_counts
from spanlab.attention.selection_triton import block_stats

# B, H, H_kv, L, D, S: GQA, L not a multiple of S, S not a power of two, S < 16 (padded tile).
STATS_SHAPES = [(2, 4, 2, 203, 32, 8), (1, 3, 1, 131, 64, 5), (1, 2, 2, 100, 128, 32), (1, 2, 1, 96, 16, 24)]
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-5, torch.float16: 1e-5}  # all math is float32 in the kernel


def _interpreter_loop_bounds_fix() -> None:
    """Triton 3.6's interpreter turns a scalar kernel argument used as a `range` bound into Python
    with int() of a 1-element array, which NumPy >= 2.4 refuses; kernels with runtime loop bounds
    (every attention kernel) then fail in the interpreter only. Take the single element instead."""
    from triton.runtime import interpreter

    patch = interpreter._patch_lang_tensor
    if getattr(patch, "_spanlab_fixed", False):
        return

    def patched(tensor, scope):
        patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._spanlab_fixed = True
    interpreter._patch_lang_tensor = patched


if os.environ.get("TRITON_INTERPRET") == "1":
    _interpreter_loop_bounds_fix()


def _lists(blocks: torch.Tensor, L: int, M: int, S: int):
    counts = valid_counts(L, M, S, blocks.shape[-1])
    return [[[row[i][: counts[i]] for i in range(len(row))] for row in head] for head in blocks.tolist()]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
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
            for kind in ("relevance", "landmark"):  # the kernel's "landmark" is torch's "meanq"
                c, qs = block_stats(q, k, v, S, kind)
                ref = block_summaries(q.double(), k.double(), v.double(), S, "meanq" if kind == "landmark" else kind)
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
    for selection in ("relevance", "meanq", "landmark"):  # landmark: the torch path on CUDA
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


# B, H, H_kv, L, D, (M, S, k): GQA; L not a multiple of M or S; chunks owning fewer than k blocks
# (M < k·S) and more eligible blocks than k; S not a power of two; D not a power of two.
MEMORY_CASES = [
    (2, 4, 2, 203, 32, (40, 8, 3)),
    (1, 3, 1, 150, 24, (37, 5, 9)),
    (1, 2, 2, 256, 64, (64, 16, 2)),
]


def check_se_memory(device: str, dtypes, cases=MEMORY_CASES, strided: bool = True) -> None:
    """se_attention with the Triton memory piece (kernel choice se_memory=triton): output and q, k, v
    gradients equal the float64 dense reference evaluated on the same blocks, for contiguous
    inputs and for q, k, v that are strided views of one fused QKV projection."""
    from attn_helpers import blocks_as_lists, reference

    tol = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}
    if device == "cpu":
        tol[torch.float32] = 2e-5
    g = torch.Generator().manual_seed(3)
    from spanlab import kernels

    with kernels.use("se_memory=triton"):
        for B, H, Hk, L, D, (M, S, k) in cases:
            for dtype in dtypes:
                for layout in ("contiguous", "qkv-views") if strided else ("contiguous",):
                    if layout == "contiguous":
                        q, kk, v = (torch.randn(B, h, L, D, generator=g).to(device=device, dtype=dtype)
                                    for h in (H, Hk, Hk))
                    else:
                        qkv = torch.randn(B, L, H + 2 * Hk, D, generator=g).to(device=device, dtype=dtype)
                        q, kk, v = qkv.transpose(1, 2).split([H, Hk, Hk], dim=1)
                    q, kk, v = (t.detach().requires_grad_() for t in (q, kk, v))
                    params = {"chunk_size": M, "block_size": S, "top_k": k}
                    out = se_attention_fn(q, kk, v, **params)
                    dout = torch.randn(out.shape, generator=g).to(device=device, dtype=dtype)
                    grads = torch.autograd.grad(out, (q, kk, v), dout)
                    idx = select_blocks(q.detach(), kk.detach(), v.detach(), selection="relevance", generator=None,
                                        **params)
                    q64, k64, v64 = (t.detach().double().cpu().requires_grad_() for t in (q, kk, v))
                    ref = reference("se", q64, k64, v64, params, blocks=blocks_as_lists(idx.cpu(), L, M, S))
                    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), dout.double().cpu())
                    what = (B, H, Hk, L, D, M, S, k, dtype, layout)
                    assert _rel(out, ref) < tol[dtype], what
                    for name, gr, rg in zip("qkv", grads, ref_grads):
                        assert _rel(gr, rg) < 2 * tol[dtype], (name, *what)


def se_attention_fn(q, k, v, **params):
    from spanlab.attention import se_attention

    return se_attention(q, k, v, **params)


def run_memory(device: str) -> None:
    if device == "cpu":  # the interpreter computes in float32 (see UPCAST in the kernels)
        check_se_memory(device, (torch.float32,), MEMORY_CASES[:2])
    else:
        check_se_memory(device, (torch.bfloat16, torch.float16))


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
    dev = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    if sys.argv[2:] == ["memory"]:
        run_memory(dev)
        print("triton memory-piece checks passed")
    else:
        run_all(dev)
        print("triton selection checks passed")
