"""SE-Attn's memory piece as Triton kernels that read the retrieved blocks by index (CUDA; the
Triton interpreter on CPU).

The memory piece is each chunk's dense attention over the k·S rows of its retrieved blocks; the
causal piece (cuDNN) is computed separately and the two are merged by log-sum-exp (`se.py`).
Layout: q, k, v, out (N, nc·M, D) as token rows per batch·head n (any row stride, unit stride on
D: views of a fused QKV projection work as they are); lse (N, nc·M) float32, natural log;
blocks (N, nc, kk) int64, best first. Chunk c owns min(kk, c·M // S) valid blocks and only chunks
i0.. (the ones that own at least one) are visited.

* `forward_merge_`: per (query tile, chunk) an online-softmax pass over the chunk's valid memory
  rows, gathered straight from k and v by block index, merged in place into the causal piece's
  output and log-sum-exp. Replaces: two gathers, the cuDNN memory call, the merge kernel.
* `backward_`: with the *merged* out and lse each piece's backward is exact (FlashAttention's
  split-KV identity). One kernel per (query tile, chunk) computes Δ = rowsum(dO∘O) and the memory
  piece's dQ share, added in place into the causal piece's dQ; one kernel per (memory-key tile,
  chunk) loops over the chunk's queries for dK, dV of its rows and adds them into dK, dV at the
  blocks' token rows (bf16/fp16 atomics: a block retrieved by several chunks receives several
  additions). Replaces: the cuDNN memory backward in two slices (each paying cuDNN's dO·O
  preprocessing and float32 dQ conversion), the two dQ adds and the two scatters.

Why Triton here and cuDNN for the causal piece: the causal piece is 70–80% of the FLOPs and
cuDNN's Hopper kernels run it near 500 TFLOP/s; the memory piece is small per call (256 keys per
chunk at k = 8, S = 32), which is where the per-call preprocessing, gathers and extra launches of
the cuDNN route cost the most (docs/benchmarks.md has the measurements).
"""

from __future__ import annotations

import functools
import math

import torch

from spanlab.triton_support import interpreting, load

triton, tl = load()

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 128  # larger heads take the cuDNN route: these tiles would exceed shared memory at D = 256

# Tile shapes (BM queries × BN memory rows), warps and pipeline stages per kernel for D > 64: the
# fastest of the shapes timed alone on an H100 at 32K tokens, M = 2048 and 4096, among those that
# compile for sm_90 without register spills (benchmarks/attention_se_breakdown.py --sweep,
# attention_kernel_report.py; numbers in docs/benchmarks.md). Against the first guess (128/64/8
# warps for fwd and dq, 64/64/8 for dkdv) they cut the memory piece's kernels from 1.40 to about
# 1.0 ms per step at 32K, M = 2048.
CONFIG = {
    "fwd": {"BM": 64, "BN": 64, "num_warps": 4, "num_stages": 2},
    "dq": {"BM": 64, "BN": 32, "num_warps": 4, "num_stages": 2},
    "dkdv": {"BM": 32, "BN": 64, "num_warps": 4, "num_stages": 2},
}
_SMALL_D = {"BM": 64, "BN": 64, "num_warps": 4, "num_stages": 2}


if triton is not None:

    @triton.jit
    def _mem_rows(BLK, blk_base, j, nkeys, S: tl.constexpr):
        """Token rows of memory positions j (slot-major: slot j // S, row j % S of that block)."""
        jm = j < nkeys
        slot = j // S
        blk = tl.load(BLK + blk_base + slot, mask=jm, other=0)
        return (blk * S + (j - slot * S)).to(tl.int64), jm

    @triton.jit
    def _dot(a, b, UPCAST: tl.constexpr, IEEE: tl.constexpr):
        if UPCAST:  # interpreter: its half-precision dot is unreliable; float32 products are exact
            return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
        elif IEEE:
            return tl.dot(a, b, input_precision="ieee")
        else:
            return tl.dot(a, b)

    def _fwd_kernel(
        Q, K, V, O, LSE, BLK,
        sqn, sql, skn, skl, svn, svl, son, sol, sln, sll,
        nc, ncm, i0, M, KK, scale_log2,
        S: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
        UPCAST: tl.constexpr, IEEE: tl.constexpr,
    ):
        pm = tl.program_id(0)
        p = tl.program_id(1)
        n = (p // ncm).to(tl.int64)
        c = p % ncm + i0
        nkeys = tl.minimum(KK, (c * M) // S) * S
        blk_base = (n * nc + c) * KK
        offs = pm * BM + tl.arange(0, BM)
        mm = offs < M
        tok = (c * M + offs).to(tl.int64)
        d = tl.arange(0, BD)
        dm = d < D
        q = tl.load(Q + n * sqn + tok[:, None] * sql + d[None, :], mask=mm[:, None] & dm[None, :], other=0.0)
        m_i = tl.full([BM], float("-inf"), tl.float32)
        l_i = tl.zeros([BM], tl.float32)
        acc = tl.zeros([BM, BD], tl.float32)
        for start in range(0, nkeys, BN):
            rows, jm = _mem_rows(BLK, blk_base, start + tl.arange(0, BN), nkeys, S)
            m2 = jm[:, None] & dm[None, :]
            kt = tl.load(K + n * skn + rows[:, None] * skl + d[None, :], mask=m2, other=0.0)
            s = _dot(q, tl.trans(kt), UPCAST, IEEE) * scale_log2
            s = tl.where(jm[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp2(m_i - m_new)
            pr = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(pr, 1)
            vt = tl.load(V + n * svn + rows[:, None] * svl + d[None, :], mask=m2, other=0.0)
            acc = acc * alpha[:, None] + _dot(pr.to(vt.dtype), vt, UPCAST, IEEE)
            m_i = m_new
        # Merge with the causal piece, natural-log lse; both pieces are non-empty for every row
        # (the causal one holds its diagonal, the memory one >= 1 block), so no -inf reaches here.
        lse2 = (m_i + tl.log2(l_i)) * 0.6931471805599453
        l1 = tl.load(LSE + n * sln + tok * sll, mask=mm, other=0.0)
        mx = tl.maximum(l1, lse2)
        e1 = tl.exp(l1 - mx)
        e2 = tl.exp(lse2 - mx)
        tot = e1 + e2
        optr = O + n * son + tok[:, None] * sol + d[None, :]
        om = mm[:, None] & dm[None, :]
        o1 = tl.load(optr, mask=om, other=0.0).to(tl.float32)
        o = o1 * (e1 / tot)[:, None] + acc * (e2 / (tot * l_i))[:, None]
        tl.store(optr, o.to(O.dtype.element_ty), mask=om)
        tl.store(LSE + n * sln + tok * sll, mx + tl.log(tot), mask=mm)

    def _dq_kernel(
        Q, K, V, O, DO, LSE, DQ, DELTA, BLK,
        sqn, sql, skn, skl, svn, svl, son, sol, sdon, sdol, sln, sll, sdqn, sdql,
        nc, ncm, i0, M, KK, scale, scale_log2,
        S: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
        UPCAST: tl.constexpr, IEEE: tl.constexpr,
    ):
        pm = tl.program_id(0)
        p = tl.program_id(1)
        n = (p // ncm).to(tl.int64)
        c = p % ncm + i0
        nkeys = tl.minimum(KK, (c * M) // S) * S
        blk_base = (n * nc + c) * KK
        offs = pm * BM + tl.arange(0, BM)
        mm = offs < M
        tok = (c * M + offs).to(tl.int64)
        d = tl.arange(0, BD)
        dm = d < D
        qm = mm[:, None] & dm[None, :]
        q = tl.load(Q + n * sqn + tok[:, None] * sql + d[None, :], mask=qm, other=0.0)
        do = tl.load(DO + n * sdon + tok[:, None] * sdol + d[None, :], mask=qm, other=0.0)
        o = tl.load(O + n * son + tok[:, None] * sol + d[None, :], mask=qm, other=0.0)
        delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
        tl.store(DELTA + p.to(tl.int64) * M + offs, delta, mask=mm)
        lse2 = tl.load(LSE + n * sln + tok * sll, mask=mm, other=0.0) * 1.4426950408889634
        dq = tl.zeros([BM, BD], tl.float32)
        for start in range(0, nkeys, BN):
            rows, jm = _mem_rows(BLK, blk_base, start + tl.arange(0, BN), nkeys, S)
            m2 = jm[:, None] & dm[None, :]
            kt = tl.load(K + n * skn + rows[:, None] * skl + d[None, :], mask=m2, other=0.0)
            vt = tl.load(V + n * svn + rows[:, None] * svl + d[None, :], mask=m2, other=0.0)
            s = _dot(q, tl.trans(kt), UPCAST, IEEE) * scale_log2
            pr = tl.where(jm[None, :], tl.exp2(s - lse2[:, None]), 0.0)
            dp = _dot(do, tl.trans(vt), UPCAST, IEEE)
            ds = pr * (dp - delta[:, None])
            dq += _dot(ds.to(kt.dtype), kt, UPCAST, IEEE)
        dptr = DQ + n * sdqn + tok[:, None] * sdql + d[None, :]
        prev = tl.load(dptr, mask=qm, other=0.0).to(tl.float32)
        tl.store(dptr, (prev + dq * scale).to(DQ.dtype.element_ty), mask=qm)

    def _dkdv_kernel(
        Q, K, V, DO, LSE, DELTA, DK, DV, BLK,
        sqn, sql, skn, skl, svn, svl, sdon, sdol, sln, sll, sdkn, sdkl, sdvn, sdvl,
        nc, ncm, i0, M, KK, scale, scale_log2,
        S: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
        UPCAST: tl.constexpr, IEEE: tl.constexpr,
    ):
        pn = tl.program_id(0)
        p = tl.program_id(1)
        n = (p // ncm).to(tl.int64)
        c = p % ncm + i0
        nkeys = tl.minimum(KK, (c * M) // S) * S
        if pn * BN < nkeys:  # tiles past a chunk's valid rows (it owns fewer than kk blocks) add nothing
            rows, jm = _mem_rows(BLK, (n * nc + c) * KK, pn * BN + tl.arange(0, BN), nkeys, S)
            d = tl.arange(0, BD)
            dm = d < D
            m2 = jm[:, None] & dm[None, :]
            kt = tl.load(K + n * skn + rows[:, None] * skl + d[None, :], mask=m2, other=0.0)
            vt = tl.load(V + n * svn + rows[:, None] * svl + d[None, :], mask=m2, other=0.0)
            dk = tl.zeros([BN, BD], tl.float32)
            dv = tl.zeros([BN, BD], tl.float32)
            for start in range(0, M, BM):
                offs = start + tl.arange(0, BM)
                mm = offs < M
                tok = (c * M + offs).to(tl.int64)
                qm = mm[:, None] & dm[None, :]
                q = tl.load(Q + n * sqn + tok[:, None] * sql + d[None, :], mask=qm, other=0.0)
                do = tl.load(DO + n * sdon + tok[:, None] * sdol + d[None, :], mask=qm, other=0.0)
                lse2 = tl.load(LSE + n * sln + tok * sll, mask=mm, other=0.0) * 1.4426950408889634
                delta = tl.load(DELTA + p.to(tl.int64) * M + offs, mask=mm, other=0.0)
                st = _dot(kt, tl.trans(q), UPCAST, IEEE) * scale_log2  # (BN, BM): scores transposed
                pt = tl.where(jm[:, None] & mm[None, :], tl.exp2(st - lse2[None, :]), 0.0)
                dv += _dot(pt.to(do.dtype), do, UPCAST, IEEE)
                dpt = _dot(vt, tl.trans(do), UPCAST, IEEE)
                dst = pt * (dpt - delta[None, :])
                dk += _dot(dst.to(q.dtype), q, UPCAST, IEEE)
            tl.atomic_add(DK + n * sdkn + rows[:, None] * sdkl + d[None, :], (dk * scale).to(DK.dtype.element_ty),
                          mask=m2, sem="relaxed")
            tl.atomic_add(DV + n * sdvn + rows[:, None] * sdvl + d[None, :], dv.to(DV.dtype.element_ty),
                          mask=m2, sem="relaxed")


@functools.cache
def _kernels():
    # Jitted lazily: under TRITON_INTERPRET=1 (set before triton is imported) this returns the
    # interpreted functions, which is how the CPU tests run them.
    return triton.jit(_fwd_kernel), triton.jit(_dq_kernel), triton.jit(_dkdv_kernel)


def supports(q: torch.Tensor) -> bool:
    """Whether these kernels can run the memory piece for inputs like q ((N, nc, M, D))."""
    if triton is None or q.dtype not in SUPPORTED_DTYPES or q.shape[-1] > MAX_HEAD_DIM:
        return False
    return q.is_cuda or interpreting()


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(N, nc, M, D) -> (N, nc·M, D) view (chunks come from splitting the token axis, so this is a
    view for any strides produced by `se.py`); a copy only if D is not unit-stride."""
    N, nc, M, D = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    return x.view(N, nc * M, D)


def _cfg(kind: str, D: int) -> dict:
    return CONFIG[kind] if D > 64 else _SMALL_D


def _common(q: torch.Tensor, blocks: torch.Tensor, S: int):
    N, nc, M, D = q.shape
    kk = blocks.shape[-1]
    interp = interpreting()
    meta = {"S": S, "D": D, "BD": max(16, triton.next_power_of_2(D)), "UPCAST": interp and q.dtype != torch.float32,
            "IEEE": q.dtype == torch.float32}
    return N, nc, M, D, kk, meta


def forward_merge_(q, k, v, blocks, out, lse, *, i0: int, block_size: int) -> None:
    """out, lse (the causal piece's (N, nc, M, D) output and (N, nc, M) float32 log-sum-exp) <-
    merged with the memory piece of chunks i0.. . q, k, v (N, nc, M, D); blocks (N, nc, kk)."""
    N, nc, M, D, kk, meta = _common(q, blocks, block_size)
    ncm = nc - i0
    if N * ncm == 0 or kk == 0:
        return
    qr, kr, vr, orr = _rows(q), _rows(k), _rows(v), out.view(N, nc * M, D)
    lr = lse.view(N, nc * M)
    cfg = _cfg("fwd", D)
    sc = 1.0 / math.sqrt(D)
    _kernels()[0][(triton.cdiv(M, cfg["BM"]), N * ncm)](
        qr, kr, vr, orr, lr, blocks,
        qr.stride(0), qr.stride(1), kr.stride(0), kr.stride(1), vr.stride(0), vr.stride(1),
        orr.stride(0), orr.stride(1), lr.stride(0), lr.stride(1),
        nc, ncm, i0, M, kk, sc * 1.4426950408889634,
        BM=cfg["BM"], BN=cfg["BN"], num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], **meta,
    )


def backward_(do, q, k, v, out, lse, blocks, dq, dk, dv, *, i0: int, block_size: int) -> None:
    """Adds the memory piece's gradients in place: its dQ share into dq (N, nc, M, D), and the
    retrieved rows' dK, dV into dk, dv at the blocks' token rows. out and lse are the merged ones."""
    N, nc, M, D, kk, meta = _common(q, blocks, block_size)
    ncm = nc - i0
    if N * ncm == 0 or kk == 0:
        return
    qr, kr, vr, orr, dor = _rows(q), _rows(k), _rows(v), _rows(out), _rows(do)
    dqr, dkr, dvr = dq.view(N, nc * M, D), dk.view(N, nc * M, D), dv.view(N, nc * M, D)
    lr = lse.view(N, nc * M)
    delta = torch.empty((N * ncm, M), device=q.device, dtype=torch.float32)
    sc = 1.0 / math.sqrt(D)
    fq, fkv = _kernels()[1:]
    cfg = _cfg("dq", D)
    fq[(triton.cdiv(M, cfg["BM"]), N * ncm)](
        qr, kr, vr, orr, dor, lr, dqr, delta, blocks,
        qr.stride(0), qr.stride(1), kr.stride(0), kr.stride(1), vr.stride(0), vr.stride(1),
        orr.stride(0), orr.stride(1), dor.stride(0), dor.stride(1), lr.stride(0), lr.stride(1),
        dqr.stride(0), dqr.stride(1),
        nc, ncm, i0, M, kk, sc, sc * 1.4426950408889634,
        BM=cfg["BM"], BN=cfg["BN"], num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], **meta,
    )
    cfg = _cfg("dkdv", D)
    fkv[(triton.cdiv(kk * block_size, cfg["BN"]), N * ncm)](
        qr, kr, vr, dor, lr, delta, dkr, dvr, blocks,
        qr.stride(0), qr.stride(1), kr.stride(0), kr.stride(1), vr.stride(0), vr.stride(1),
        dor.stride(0), dor.stride(1), lr.stride(0), lr.stride(1),
        dkr.stride(0), dkr.stride(1), dvr.stride(0), dvr.stride(1),
        nc, ncm, i0, M, kk, sc, sc * 1.4426950408889634,
        BM=cfg["BM"], BN=cfg["BN"], num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], **meta,
    )
