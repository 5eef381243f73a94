"""Fused Triton forward of the chunked SSD scan: the decay matrix lives in registers, never in memory.

`spanlab.models.ssd.ssd_chunk_scan` computes the scan with batched matmuls, and at 16K tokens
its (batch, chunks, heads, l, l) float32 decay matrix is 1 GB per layer, written and re-read by
about six elementwise passes (segment sums, masks, exp, times C·Bᵀ, cast): ~10 GB of traffic per
layer, which kept a 0.95B Mamba2's prefill at ~55 TFLOP/s-equivalent on an H100 with the matmuls
in bf16 or float32 alike (docs/benchmarks.md). Here the same four steps are:

1. `_state_kernel`: each chunk's own end state, sum_l exp(a_end - a_l)·dt_l·x_lᵀB_l, one program
   per (batch, chunk, head, p tile, n tile), written into slot c+1 of a (b, h, c+1, p, n) buffer
   whose slot 0 holds the initial state;
2. torch: the chunk-to-chunk recurrence as one (c+1)×(c+1) float32 matmul per (batch, head), as
   in the torch scan (small: c = L / chunk);
3. `_scan_kernel`: per (batch, chunk, head, l tile, p tile) the output rows
   y_l = Σ_{s≤l in chunk} (C_l·B_s)·exp(a_l - a_s)·dt_s·x_s + exp(a_l)·C_l·S_start + D·x_l,
   where C·Bᵀ and the decays are built tile by tile in registers (like a flash-attention tile
   without the softmax), so nothing (l, l)-sized reaches memory.

Bytes per layer at 16K (0.95B geometry): x read twice (2 × 134 MB bf16), B/C (16 MB), the chunk
states written, multiplied and read back (4 × 134 MB float32), the float32 output (268 MB): ~1.1 GB,
~0.35 ms at 3.3 TB/s, against ~10 GB before. Arithmetic: C·Bᵀ and the (scores·x) products over
the causal half of each chunk, ~1.5 TFLOP per 16K-token prompt for the whole model — under a
millisecond per layer on the tensor cores.

Semantics and precision are those of the torch scan's half-precision path: operands of the
products in the input dtype (bf16/fp16) with float32 accumulation, cumulative decays, states
and output in float32. Within a chunk the decay is exp(a_l - a_s) of float32 cumulative sums,
as mamba-ssm's kernels compute it (the torch path's masked segment sums are more careful when a
chunk's total decay is huge; float32 keeps ~1e-4 absolute on a log-decay of 1e3, and exp of it
then underflows to 0 anyway). Forward only: the torch scan keeps autograd for training, and
`ssd.ssd_chunk_scan` routes here only for CUDA half-precision inputs that need no gradient
(`spanlab.kernels`: `ssd=torch` keeps the torch scan).
"""

from __future__ import annotations

from typing import Any

from spanlab.triton_support import available, interpreting, load, next_pow2

triton, tl = load()


# Launch settings per kernel, from `benchmarks/ssd_speed.py --parts scan --sweep` (a 1B layer at 16K
# tokens, H100, 2026-12-06; docs/benchmarks.md), GB/s-equivalent: 4 warps / 1 stage 313 (1.32 ms),
# 4/3 307, 4/2 (the first guess) 288 (1.43 ms), 2/2 256, 8/3 186, 8/2 178.
CONFIG = {"state": {"num_warps": 4, "num_stages": 1}, "scan": {"num_warps": 4, "num_stages": 1}}


def row_block(chunk_size: int) -> int | None:
    """The row/column tile of a chunk: the largest of 64, 32, 16 dividing it (tl.dot needs ≥ 16),
    so tiles never straddle two chunks; None when no tile fits (the torch scan runs instead)."""
    for blk in (64, 32, 16):
        if chunk_size % blk == 0:
            return blk
    return None


def head_supported(head_dim: int) -> bool:
    """Whether compiled kernels take heads of this size (see `supports`: not 32 channels or fewer)."""
    return next_pow2(int(head_dim)) >= 64


def supports(x: Any, B: Any, chunk_size: int) -> bool:
    """Shapes and devices the kernels take: CUDA (or the interpreter), a chunk a tile divides, a
    state size up to 256 (one tile holds a row of B or C), and on CUDA a head of at least 33
    channels (a p tile of 64).

    Why the head size: compiled for an H100 by Triton 3.6, `_scan_kernel` with a 32-wide p tile
    (the shipped tiny models' 32-channel heads) reads outside its tensors at batch 8 ("illegal
    memory access") and returns wrong numbers at batch 1 (41% max relative error), whatever the
    inputs' layout, while the interpreter's bounds-checked run of the same code is clean and
    correct (benchmarks/ssd_fault_repro.py, docs/benchmarks.md). That matches Triton's open
    Hopper reports of kernels with several `tl.dot`s and a 32-wide tile (triton-lang/triton
    #10486, #10573, #11366). 64-channel heads (every seed model) compute right; smaller heads
    take the torch scan, which is exact and costs nothing at their size."""
    if not available() or not (x.is_cuda or interpreting()):
        return False
    if not interpreting() and not head_supported(x.shape[-1]):
        return False
    return row_block(int(chunk_size)) is not None and B.shape[-1] <= 256


if triton is not None:

    @triton.jit
    def _dot(a, b, UPCAST: tl.constexpr, PREC: tl.constexpr):
        if UPCAST:  # interpreter: its bf16 dot is wrong (Triton 3.9); float32 products of half inputs are exact
            return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
        return tl.dot(a, b, input_precision=PREC)

    @triton.jit
    def _state_kernel(
        x_ptr, dt_ptr, a_ptr, b_ptr, out_ptr,
        L, H, R, NC, CS,
        sx_b, sx_l, sx_h, sx_p,
        sdt_b, sdt_l, sdt_h,
        sa_b, sa_h,
        sb_b, sb_l, sb_g, sb_n,
        so_b, so_h, so_c, so_p,
        P, N,
        BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr,
    ):
        pid = tl.program_id(0)
        c = pid % NC
        bh = pid // NC
        h = bh % H
        b = bh // H
        g = h // R
        offs_p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
        offs_n = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_p = offs_p < P
        mask_n = offs_n < N
        a_base = a_ptr + b * sa_b + h * sa_h
        # The cumulative log-decay buffer is padded to whole chunks (zeros after L: no decay).
        a_end = tl.load(a_base + c * CS + CS - 1)
        acc = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
        for l0 in range(0, CS, BLOCK_L):
            offs_l = c * CS + l0 + tl.arange(0, BLOCK_L)
            mask_l = offs_l < L
            a = tl.load(a_base + offs_l)
            dt = tl.load(dt_ptr + b * sdt_b + offs_l * sdt_l + h * sdt_h, mask=mask_l, other=0.0)
            w = tl.exp(a_end - a) * dt
            xt = tl.load(x_ptr + b * sx_b + offs_l[None, :] * sx_l + h * sx_h + offs_p[:, None] * sx_p,
                         mask=mask_p[:, None] & mask_l[None, :], other=0.0)
            bb = tl.load(b_ptr + b * sb_b + offs_l[:, None] * sb_l + g * sb_g + offs_n[None, :] * sb_n,
                         mask=mask_l[:, None] & mask_n[None, :], other=0.0)
            xw = (xt.to(tl.float32) * w[None, :]).to(bb.dtype)
            acc += _dot(xw, bb, UPCAST, PREC)
        # Slot c + 1: slot 0 of the buffer is the initial state (the recurrence's chunk "-1").
        out = out_ptr + b * so_b + h * so_h + (c + 1) * so_c + offs_p[:, None] * so_p + offs_n[None, :]
        tl.store(out, acc, mask=mask_p[:, None] & mask_n[None, :])

    @triton.jit
    def _scan_kernel(
        x_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, s_ptr, d_ptr, y_ptr,
        L, H, R, NC, CS,
        sx_b, sx_l, sx_h, sx_p,
        sdt_b, sdt_l, sdt_h,
        sa_b, sa_h,
        sb_b, sb_l, sb_g, sb_n,
        sc_b, sc_l, sc_g, sc_n,
        ss_b, ss_h, ss_c, ss_p,
        sy_b, sy_l, sy_h,
        P, N,
        HAS_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
        UPCAST: tl.constexpr, PREC: tl.constexpr,
    ):
        pid = tl.program_id(0)
        c = pid % NC
        bh = pid // NC
        h = bh % H
        b = bh // H
        g = h // R
        m0 = tl.program_id(1) * BLOCK_M  # the row tile's offset inside the chunk
        offs_m = c * CS + m0 + tl.arange(0, BLOCK_M)
        offs_p = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)
        offs_n = tl.arange(0, BLOCK_N)
        mask_m = offs_m < L
        mask_p = offs_p < P
        mask_n = offs_n < N
        a_base = a_ptr + b * sa_b + h * sa_h
        a_m = tl.load(a_base + offs_m)
        cm = tl.load(c_ptr + b * sc_b + offs_m[:, None] * sc_l + g * sc_g + offs_n[None, :] * sc_n,
                     mask=mask_m[:, None] & mask_n[None, :], other=0.0)
        # Off-diagonal part: the state at the chunk's start, read back through C, decayed to row l.
        st = tl.load(s_ptr + b * ss_b + h * ss_h + c * ss_c + offs_p[None, :] * ss_p + offs_n[:, None],
                     mask=mask_n[:, None] & mask_p[None, :], other=0.0)
        acc = _dot(cm, st.to(cm.dtype), UPCAST, PREC) * tl.exp(a_m)[:, None]
        # Diagonal part: source tiles of this chunk up to and including the row tile.
        for k0 in range(0, m0 + BLOCK_M, BLOCK_M):
            offs_k = c * CS + k0 + tl.arange(0, BLOCK_M)
            mask_k = offs_k < L
            bk = tl.load(b_ptr + b * sb_b + offs_k[None, :] * sb_l + g * sb_g + offs_n[:, None] * sb_n,
                         mask=mask_n[:, None] & mask_k[None, :], other=0.0)
            scores = _dot(cm, bk, UPCAST, PREC)
            a_k = tl.load(a_base + offs_k)
            dt_k = tl.load(dt_ptr + b * sdt_b + offs_k * sdt_l + h * sdt_h, mask=mask_k, other=0.0)
            causal = offs_m[:, None] >= offs_k[None, :]
            # exp of -inf above the diagonal: a_l - a_s > 0 there and would overflow.
            decay = tl.exp(tl.where(causal, a_m[:, None] - a_k[None, :], float("-inf")))
            xk = tl.load(x_ptr + b * sx_b + offs_k[:, None] * sx_l + h * sx_h + offs_p[None, :] * sx_p,
                         mask=mask_k[:, None] & mask_p[None, :], other=0.0)
            w = scores * decay * dt_k[None, :]
            acc += _dot(w.to(xk.dtype), xk, UPCAST, PREC)
        if HAS_D:
            xm = tl.load(x_ptr + b * sx_b + offs_m[:, None] * sx_l + h * sx_h + offs_p[None, :] * sx_p,
                         mask=mask_m[:, None] & mask_p[None, :], other=0.0)
            acc += tl.load(d_ptr + h).to(tl.float32) * xm.to(tl.float32)
        y = y_ptr + b * sy_b + offs_m[:, None] * sy_l + h * sy_h + offs_p[None, :]
        tl.store(y, acc, mask=mask_m[:, None] & mask_p[None, :])


def chunk_scan(x, dt, A, B, C, chunk_size: int, D=None, initial_states=None):
    """The SSD scan after dt processing: x (b, L, h, p) in its own dtype (any strides), dt (b, L, h)
    float32 (bias, softplus and clamp applied), A (h,), B, C (b, L, g, n), D (h,) or None,
    initial_states (b, h, p, n) or None. Returns the float32 output (b, L, h, p), contiguous,
    and the float32 state after position L (b, h, p, n)."""
    import torch
    import torch.nn.functional as F

    b, L, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    r = h // g
    cs = int(chunk_size)
    blk = row_block(cs)
    nc = -(-L // cs)
    # Cumulative log-decay within each chunk, padded to whole chunks with zeros (no decay, no input):
    # (b, h, nc·cs) float32, a few MB.
    a = (A.float() * dt).transpose(1, 2)
    a = F.pad(a, (0, nc * cs - L)).view(b, h, nc, cs).cumsum(-1).view(b, h, nc * cs).contiguous()
    # The operands of every product take x's dtype (B and C usually have it already).
    B = B.to(x.dtype)
    C = C.to(x.dtype)
    # Float32 operands keep float32 products (no tf32); tl.dot ignores the choice for half dtypes.
    prec = "ieee" if x.dtype == torch.float32 else "tf32"

    states = torch.empty(b, h, nc + 1, p, n, device=x.device, dtype=torch.float32)
    if initial_states is not None:
        states[:, :, 0] = initial_states.to(device=x.device, dtype=torch.float32)
    else:
        states[:, :, 0].zero_()
    block_p = min(64, max(16, next_pow2(p)))
    block_n = min(64, max(16, next_pow2(n)))
    grid = (b * h * nc, triton_cdiv(p, block_p), triton_cdiv(n, block_n))
    _state_kernel[grid](
        x, dt, a, B, states,
        L, h, r, nc, cs,
        *x.stride(), *dt.stride(), a.stride(0), a.stride(1), *B.stride(),
        states.stride(0), states.stride(1), states.stride(2), states.stride(3),
        p, n,
        BLOCK_P=block_p, BLOCK_N=block_n, BLOCK_L=blk, UPCAST=interpreting(), PREC=prec, **CONFIG["state"],
    )
    # Chunk-to-chunk recurrence: start state of chunk k = Σ_{j≤k} decay(j → k)·state_j, the initial
    # state as chunk "-1"; float32, one (nc+1, nc+1) matrix per (batch, head).
    from spanlab.models.ssd import segsum_exp

    chunk_decay = F.pad(a.view(b, h, nc, cs)[..., -1], (1, 0))  # (b, h, nc + 1)
    prop = torch.matmul(segsum_exp(chunk_decay), states.view(b, h, nc + 1, p * n)).view(b, h, nc + 1, p, n)
    start, final = prop[:, :, :-1], prop[:, :, -1]

    y = torch.empty(b, L, h, p, device=x.device, dtype=torch.float32)
    d = D if D is not None else y  # a placeholder pointer the kernel never reads without HAS_D
    grid = (b * h * nc, cs // blk, triton_cdiv(p, block_p))
    _scan_kernel[grid](
        x, dt, a, B, C, start, d, y,
        L, h, r, nc, cs,
        *x.stride(), *dt.stride(), a.stride(0), a.stride(1), *B.stride(), *C.stride(),
        start.stride(0), start.stride(1), start.stride(2), start.stride(3),
        y.stride(0), y.stride(1), y.stride(2),
        p, n,
        HAS_D=D is not None, BLOCK_M=blk, BLOCK_P=block_p, BLOCK_N=max(16, next_pow2(n)), UPCAST=interpreting(), PREC=prec,
        **CONFIG["scan"],
    )
    return y, final.contiguous()


def triton_cdiv(a: int, b: int) -> int:
    return -(-int(a) // int(b))
