"""SE-Attn's selection in two Triton kernels (CUDA; the Triton interpreter on CPU): the block
statistics (`block_stats`, below) and relevance + top-k (`top_blocks_from_stats`, at the end).

Block statistics: one program per (block j, batch·query head) reads the block's S query, key and
value rows once and writes, in the same pass,
  * the block summary  c_j = mean over rows of softmax(Q_j K_jᵀ/√D) V_j   (relevance), or
                       c_j = softmax(q̄_j K_jᵀ/√D) V_j, q̄_j = mean of Q_j  (landmark),
    only for complete blocks (a trailing partial block is never retrieved), and
  * the block's query sum Σ_{t in block} q_t, for every block including a trailing partial one,
    from which the per-chunk query sums of the relevance step follow by a tiny reduction.

The torch path in `selection.py` needs ~6 passes over (B, H, L, ·) tensors (two batched 32×32
products with a float32 score tensor in between, softmax, mean, the chunk query sums); this is one
read of q, k, v: 0.14 ms inside an SE step for 32K tokens × 16 heads × 128 dims on an H100 (402 MB
at 2.8 TB/s; the floor at the measured 3.0 TB/s copy rate is 0.13 ms).

Math: the Q·Kᵀ product runs on tensor cores in the input dtype with float32 accumulation (float32
inputs: exact IEEE float32 products, no TF32); softmax, means, sums and the summary are float32.
No atomics: every output element is written by exactly one program, so results are deterministic.

Relevance + top-k: one program per (chunk, batch·query head) sums the chunk's block query sums,
scores its eligible blocks against their summaries (float32) and takes k rounds of argmax; 0.05 ms
at 32K tokens on an H100, where the torch path (sum, matmul, scale, flip, mask, sort, slice, index
arithmetic) issued ~8 launches.
"""

from __future__ import annotations

import functools
import math

import torch

from spanlab.triton_support import available as available  # available: selection.py asks here
from spanlab.triton_support import interpreting, load

triton, tl = load()

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
NUM_WARPS: int | None = None  # override of the per-tile choice below (benchmarks)


if triton is not None:

    def _block_stats_kernel(
        Q, K, V, C, QS,
        sqb, sqh, sql, sqd,
        skb, skh, skl, skd,
        svb, svh, svl, svd,
        H, G, L, NB, NBQ, scale,
        S: tl.constexpr, D: tl.constexpr, BS: tl.constexpr, BD: tl.constexpr,
        LANDMARK: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr,
    ):
        j = tl.program_id(0)
        bh = tl.program_id(1)
        b = (bh // H).to(tl.int64)
        h = bh % H
        hk = (h // G).to(tl.int64)
        h = h.to(tl.int64)
        r = tl.arange(0, BS)
        d = tl.arange(0, BD)
        pos = (j * S + r).to(tl.int64)
        in_block = r < S  # BS is S rounded up to a power of two (>= 16 for tl.dot)
        rmask = in_block & (pos < L)
        dmask = d < D
        m2 = rmask[:, None] & dmask[None, :]
        full = j < NB  # a complete block gets a summary; a trailing partial one only its query sum
        # The same condition per row (pos < NB·S ⟺ j < NB), as a tensor mask: Triton 3.9's interpreter
        # rejects a tensor mask combined with a scalar bool.
        kmask = m2 & (pos < NB * S)[:, None]
        # All three loads are issued before any use, so their latencies overlap.
        q = tl.load(Q + b * sqb + h * sqh + pos[:, None] * sql + d[None, :] * sqd, mask=m2, other=0.0)
        k = tl.load(K + b * skb + hk * skh + pos[:, None] * skl + d[None, :] * skd, mask=kmask, other=0.0)
        v = tl.load(V + b * svb + hk * svh + pos[:, None] * svl + d[None, :] * svd, mask=kmask, other=0.0)
        qf = q.to(tl.float32)
        qsum = tl.sum(qf, axis=0)  # masked rows are zeros: a partial block sums its real rows only
        tl.store(QS + (bh.to(tl.int64) * NBQ + j) * D + d, qsum, mask=dmask)
        if full:
            kf = k.to(tl.float32)
            if LANDMARK:
                qbar = qsum / S
                s = tl.sum(qbar[None, :] * kf, axis=1) * scale  # (BS,) scores of the landmark query
                s = tl.where(in_block, s, float("-inf"))
                p = tl.exp(s - tl.max(s, axis=0))
                w = p / tl.sum(p, axis=0)
            else:
                if UPCAST:  # interpreter: its bf16 dot is wrong; float32 products of bf16 are exact anyway
                    s = tl.dot(qf, tl.trans(kf), input_precision="ieee")
                elif IEEE:
                    s = tl.dot(q, tl.trans(k), input_precision="ieee")
                else:
                    s = tl.dot(q, tl.trans(k))  # tensor cores, float32 accumulation
                s = tl.where(in_block[None, :], s * scale, float("-inf"))
                p = tl.exp(s - tl.max(s, axis=1)[:, None])
                p = p / tl.sum(p, axis=1)[:, None]
                p = tl.where(in_block[:, None], p, 0.0)
                w = tl.sum(p, axis=0) / S  # mean over the block's rows of the softmax weights
            c = tl.sum(w[:, None] * v.to(tl.float32), axis=0)
            tl.store(C + (bh.to(tl.int64) * NB + j) * D + d, c, mask=dmask)


    def _topk_kernel(
        QS, C, R, OUT,
        nbq, nb, M, S, per, KK,
        D: tl.constexpr, BD: tl.constexpr, BJ: tl.constexpr, NBP: tl.constexpr, RB: tl.constexpr,
        FROM_BLOCKS: tl.constexpr,
    ):
        i = tl.program_id(0)  # chunk
        bh = tl.program_id(1).to(tl.int64)
        nc = tl.num_programs(0)
        d = tl.arange(0, BD)
        dm = d < D
        if FROM_BLOCKS:  # the chunk's query sum from its M / S block query sums
            qsum = tl.zeros([BD], tl.float32)
            for r0 in range(0, per, RB):
                rr = r0 + tl.arange(0, RB)
                rows = i * per + rr
                m = (rr < per) & (rows < nbq)
                x = tl.load(QS + (bh * nbq + rows)[:, None] * D + d[None, :], mask=m[:, None] & dm[None, :], other=0.0)
                qsum += tl.sum(x, 0)
        else:
            qsum = tl.load(QS + (bh * nc + i) * D + d, mask=dm, other=0.0)
        ne = tl.minimum((i * M) // S, nb)  # eligible blocks: (j + 1)·S <= i·M
        row = (bh * nc + i) * nb
        # Relevance of every eligible block (the 1/sqrt(D) scale does not change the ranking), staged
        # in a scratch row so the top-k below sees the whole row at once.
        for j0 in range(0, ne, BJ):
            j = j0 + tl.arange(0, BJ)
            jm = j < ne
            cc = tl.load(C + (bh * nb + j)[:, None] * D + d[None, :], mask=jm[:, None] & dm[None, :], other=0.0)
            tl.store(R + row + j, tl.sum(cc * qsum[None, :], 1), mask=jm)
        tl.debug_barrier()  # the row was written by other threads of this program
        j = tl.arange(0, NBP)
        r = tl.load(R + row + j, mask=j < ne, other=float("-inf"))
        # k rounds of argmax over the blocks not taken yet; among equal scores the highest index
        # (the more recent block) wins. Past the eligible count every score left is -inf, so those
        # slots get the highest untaken indices, as the stable sort of `selection.top_blocks` does
        # (`valid_counts` marks them unused either way).
        taken = j < 0
        for s in range(KK):
            live = tl.where(taken, float("-inf"), r)
            mx = tl.max(live, 0)
            pick = tl.maximum(tl.max(tl.where((live == mx) & (j < nb) & ~taken, j, -1), 0), 0)
            tl.store(OUT + (bh * nc + i) * KK + s, pick.to(tl.int64))
            taken = taken | (j == pick)


def _check_device(x: torch.Tensor) -> None:
    if x.device.type != "cuda" and not interpreting():
        raise RuntimeError("the Triton selection kernels run CPU tensors only under TRITON_INTERPRET=1")


@functools.cache
def _kernel():
    # Under TRITON_INTERPRET=1 triton.jit returns the interpreted function; the variable must be
    # set before triton is imported (its language functions are bound then), hence tests run the
    # interpreter in a subprocess.
    return triton.jit(_block_stats_kernel)


@functools.cache
def _topk():
    return triton.jit(_topk_kernel)


@torch.no_grad()
def block_stats(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int, kind: str = "relevance"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summaries (B, H, L//S, D) float32, block query sums (B, H, ceil(L/S), D) float32).

    q (B, H, L, D) and k, v (B, H_kv, L, D) in float16 / bfloat16 / float32, any strides (e.g.
    views of a fused QKV projection). CUDA tensors run the compiled kernel; CPU tensors need
    Triton's interpreter (TRITON_INTERPRET=1; slow, for tests).
    """
    if triton is None:
        raise RuntimeError("the Triton selection kernel needs `triton` (pip install triton)")
    if q.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"Triton block statistics support {SUPPORTED_DTYPES}; got {q.dtype}")
    B, H, L, D = q.shape
    Hk = k.shape[1]
    S = block_size
    nb, nbq = L // S, -(-L // S)
    c = torch.empty((B, H, nb, D), device=q.device, dtype=torch.float32)
    qs = torch.empty((B, H, nbq, D), device=q.device, dtype=torch.float32)
    interpret = interpreting()
    _check_device(q)
    BS = max(16, triton.next_power_of_2(S))
    BD = max(16, triton.next_power_of_2(D))
    # Warps by tile size. For a 32×128 bf16 block (3 × 8 KB of loads) on an H100, 2 warps beat 4 and 8
    # (0.22 / 0.31 / 0.47 ms at 32K tokens, 16 heads; 0.33 / 0.59 / 1.01 ms at 64K): smaller programs,
    # more of them resident per SM, more loads in flight.
    num_warps = NUM_WARPS or (2 if BS * BD <= 4096 else 4)
    _kernel()[(nbq, B * H)](
        q, k, v, c, qs,
        *q.stride(), *k.stride(), *v.stride(),
        H, H // Hk, L, nb, nbq, 1.0 / math.sqrt(D),
        S=S, D=D, BS=BS, BD=BD, LANDMARK=kind == "landmark", UPCAST=interpret,
        IEEE=q.dtype == torch.float32, num_warps=num_warps,
    )
    return c, qs


@torch.no_grad()
def top_blocks_from_stats(
    c: torch.Tensor, block_sums: torch.Tensor, L: int, *, chunk_size: int, block_size: int, top_k: int,
    qsum: torch.Tensor | None = None,
) -> torch.Tensor:
    """Relevance and top-k in one kernel: (B, H, nc, min(top_k, nb)) int64 block indices, best first.

    c (B, H, nb, D) and block_sums (B, H, ceil(L/S), D) float32 from `block_stats`. Chunk query
    sums are summed from the block sums when chunks are made of whole blocks (M % S == 0);
    otherwise pass `qsum` (B, H, nc, D) float32. Same choice as `selection.top_blocks` on the
    relevance matrix: eligible blocks only, ties to the more recent block. Replaces ~8 small torch
    launches (sum, matmul, scale, flip, mask, sort, slice, index arithmetic) by one.
    """
    if triton is None:
        raise RuntimeError("the Triton selection kernel needs `triton` (pip install triton)")
    _check_device(c)
    B, H, nb, D = c.shape
    M, S = chunk_size, block_size
    nc = -(-L // M)
    kk = min(top_k, nb)
    out = torch.empty((B, H, nc, kk), device=c.device, dtype=torch.long)
    if kk == 0 or B * H * nc == 0:
        return out.zero_()
    from_blocks = qsum is None
    if from_blocks and M % S:
        raise ValueError("chunks are not made of whole blocks (chunk_size % block_size != 0): pass qsum")
    src = block_sums if from_blocks else qsum.contiguous()
    scratch = torch.empty((B, H, nc, nb), device=c.device, dtype=torch.float32)
    nbp = triton.next_power_of_2(nb)
    _topk()[(nc, B * H)](
        src, c.contiguous(), scratch, out,
        block_sums.shape[2], nb, M, S, M // S if from_blocks else 0, kk,
        D=D, BD=max(16, triton.next_power_of_2(D)), BJ=64, NBP=nbp, RB=16, FROM_BLOCKS=from_blocks,
        num_warps=4 if nbp <= 4096 else 8,
    )
    return out
