"""SE-Attn's block statistics in one fused Triton kernel (CUDA; the Triton interpreter on CPU).

One program per (block j, batch·query head) reads the block's S query, key and value rows once and
writes, in the same pass,
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
"""

from __future__ import annotations

import functools
import math

import torch

try:  # Triton is optional: CI (CPU) runs without it and selection falls back to torch.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the environment
    triton = None
    tl = None

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
NUM_WARPS: int | None = None  # override of the per-tile choice below (benchmarks)


def available() -> bool:
    return triton is not None


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
        # All three loads are issued before any use, so their latencies overlap.
        q = tl.load(Q + b * sqb + h * sqh + pos[:, None] * sql + d[None, :] * sqd, mask=m2, other=0.0)
        k = tl.load(K + b * skb + hk * skh + pos[:, None] * skl + d[None, :] * skd, mask=m2 & full, other=0.0)
        v = tl.load(V + b * svb + hk * svh + pos[:, None] * svl + d[None, :] * svd, mask=m2 & full, other=0.0)
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


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1 before import)."""
    return triton is not None and bool(triton.knobs.runtime.interpret)


@functools.cache
def _kernel():
    # Under TRITON_INTERPRET=1 triton.jit returns the interpreted function; the variable must be
    # set before triton is imported (its language functions are bound then), hence tests run the
    # interpreter in a subprocess.
    return triton.jit(_block_stats_kernel)


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
    if q.device.type != "cuda" and not interpret:
        raise RuntimeError("the Triton selection kernel runs CPU tensors only under TRITON_INTERPRET=1")
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
