"""SE-Attn (Span-Expanded Attention) fast path: retrieval by index and fused attention kernels.

Each chunk of M queries attends jointly to its own causal prefix and to the k·S tokens of its
retrieved blocks. Chunks become heads — (B, H, L, D) viewed as (B·H, nc, M, D), free for MHA when
L % M == 0, also for strided views such as a fused QKV projection's when B = 1 — and the
attention is two pieces merged by their log-sum-exps: causal over the chunk (one cuDNN call) and
dense over the retrieved rows, only for the chunks that own a block (chunk 0 at least owns none).
The backward runs each piece's backward with the merged output and log-sum-exp, which gives each
piece's exact share of dQ and its full dK, dV (FlashAttention's split-KV identity). No L×L tensor
exists, the only data-dependent step (which blocks) is an index read, and nothing synchronises
with the host.

The memory piece, by default on CUDA (`memory_impl`): Triton kernels (`se_memory_triton.py`)
that read the retrieved rows of k and v by block index, merge into the causal piece's output in
place, and in the backward add their dQ share into the causal piece's dQ and their dK, dV into
dK, dV at the blocks' rows. Per step that is the causal cuDNN call each way, two selection kernels,
one memory kernel forward and two backward. The alternative (kernel choice `se_memory=backend`, also the
CPU path) gathers the rows into (B·H, nc − i0, k·S, D), runs the causal piece's own kernel on them
(cuDNN / FlashAttention / plain PyTorch), merges with a Triton kernel (`se_triton.py`) and runs the
memory backward in two slices of the batch·heads axis so that its dQ never sits next to the causal
piece's; on CUDA it pays cuDNN's per-call dO·O preprocessing and dQ conversion for each slice.

Order of work in one call (CUDA): the block-statistics kernel of the selection (`selection.py`),
the causal piece's forward, then the top-k and the memory piece; the GPU runs the causal kernel
while the host issues the rest. Measurements and the alternatives that lost: docs/benchmarks.md.

`backend="sdpa"` (used for float32 on CUDA) instead lays each chunk's keys out as
[k·S retrieved | M own] and runs one `scaled_dot_product_attention` with `causal_lower_right`
(FlashAttention-2 / memory-efficient kernels); it is ~2× slower in bf16 on an H100.

Gradients flow to q, k and v through both pieces; block choice is discrete and carries none. On CUDA
the retrieved rows' dK/dV are added with atomics, so those sums are not bit-reproducible.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

from spanlab import kernels
from spanlab.attention import lse_kernels, se_memory_triton, se_triton
from spanlab.attention._checks import check_qkv
from spanlab.attention.grouped import grouped_causal
from spanlab.attention.selection import (
    check_selection,
    resolve_chunk_size,
    select_blocks,
    select_blocks_deferred,
    valid_counts,
)
from spanlab.errors import SpanlabError


def se_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    chunk_size: int | Sequence[int],
    block_size: int = 32,
    top_k: int = 8,
    selection: str = "relevance",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Span-Expanded Attention, causal. q (B, H, L, D); k, v (B, H_kv, L, D), H_kv | H.

    Args:
        chunk_size: queries per chunk M; a tuple draws one size per call with `generator`.
        block_size: tokens per memory block S (a trailing partial block is never retrieved).
        top_k: blocks retrieved per (batch, query head, chunk), at most the eligible ones
            (blocks ending at or before the chunk's start).
        selection: "relevance" (SE-Attn: R_ij = Σ_t q_t·c_j with c_j the block's mean in-block
            attention output), "landmark" (SE-Attn-LM, the paper's App. F: c_j = the cross-attention
            of a non-learnable landmark token's fixed query over block j, `selection.landmark_query`;
            its selection runs in torch on every device), "meanq" (c_j from the mean of the block's
            queries as the landmark query), "random" (SE-Attn-Random: uniform with `generator`), "none"
            (SE-Attn-NoMem: chunked causal attention only). Ties go to the more recent block.
        generator: drives the chunk-size draw and random selection (in that order).
    """
    check_qkv(q, k, v)
    check_selection(selection, block_size, top_k)
    M = resolve_chunk_size(chunk_size, generator)
    L = q.shape[2]
    kk = 0 if selection == "none" else min(top_k, L // block_size)
    if kk == 0 or valid_counts(L, M, block_size, kk)[-1] == 0:
        if selection == "random":  # nothing to retrieve, but the draw still advances `generator` as always
            select_blocks(q, k, v, chunk_size=M, block_size=block_size, top_k=top_k, selection=selection,
                          generator=generator)
        return grouped_causal(q, k, v, M)
    # Launch order on CUDA: the block-statistics kernel first (cheap to issue, so the GPU starts
    # early), then the causal piece's cuDNN call (the costliest to issue), then the top-k and the
    # memory piece, which the host issues while the GPU computes the causal kernel.
    blocks = select_blocks_deferred(q, k, v, chunk_size=M, block_size=block_size, top_k=top_k,
                                    selection=selection, generator=generator)
    return _se_attend(q, k, v, blocks, kk, chunk_size=M, block_size=block_size, backend=None)


def _se_attend_lower_right(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, blocks: torch.Tensor, *, chunk_size: int, block_size: int,
    counts: list[int],
) -> torch.Tensor:
    """backend="sdpa": [memory | chunk] key tiles through one bottom-right-causal SDPA call.

    Chunks become batch entries (chunk-major, so slices over chunks stay contiguous); chunks that own
    all k blocks share one `causal_lower_right` call, the leading chunks with fewer take a boolean mask.
    `counts` (valid blocks per chunk) comes from `se_attend`, which has already handled the case
    where no chunk retrieves anything.
    """
    B, H, L, D = q.shape
    Hk = k.shape[1]
    G = H // Hk
    M, S = chunk_size, block_size
    kk = blocks.shape[-1]
    nc = len(counts)
    i0 = sum(c < kk for c in counts)  # leading chunks short of k eligible blocks
    pad = nc * M - L
    T = kk * S

    # Queries, chunk-major: (nc·B, H, M, D).
    qc = F.pad(q, (0, 0, 0, pad)).reshape(B, H, nc, M, D).permute(2, 0, 1, 3, 4).reshape(nc * B, H, M, D)

    # Token ids of the retrieved blocks, grouped by KV head so the gather reads k/v without expanding them.
    tok = (blocks.unsqueeze(-1) * S + torch.arange(S, device=q.device)).reshape(B, Hk, G * nc * T, 1)

    def keys(x: torch.Tensor) -> torch.Tensor:
        mem = torch.gather(x, 2, tok.expand(B, Hk, G * nc * T, D)).reshape(B, Hk, G, nc, T, D)
        own = F.pad(x, (0, 0, 0, pad)).reshape(B, Hk, 1, nc, M, D).expand(B, Hk, G, nc, M, D)
        # One copy builds the (nc, B, H, T + M, D) tiles straight from strided views.
        cat = torch.cat([mem.permute(3, 0, 1, 2, 4, 5), own.permute(3, 0, 1, 2, 4, 5)], dim=4)
        return cat.reshape(nc * B, H, T + M, D)

    kc, vc = keys(k), keys(v)
    outs = []
    if i0:
        a = i0 * B
        m = torch.arange(T + M, device=q.device)
        p = torch.arange(M, device=q.device)[:, None]
        n_valid = torch.tensor(counts[:i0], device=q.device)[:, None, None]
        allowed = torch.where(m < T, m < n_valid * S, m - T <= p)  # (i0, M, T + M)
        allowed = allowed.repeat_interleave(B, dim=0).unsqueeze(1)
        outs.append(F.scaled_dot_product_attention(qc[:a], kc[:a], vc[:a], attn_mask=allowed))
    if i0 < nc:
        a = i0 * B
        outs.append(F.scaled_dot_product_attention(qc[a:], kc[a:], vc[a:], attn_mask=causal_lower_right(M, T + M)))
    out = torch.cat(outs, dim=0) if len(outs) > 1 else outs[0]
    return out.reshape(nc, B, H, M, D).permute(1, 2, 0, 3, 4).reshape(B, H, nc * M, D)[:, :, :L]


BACKENDS = ("cudnn", "flash", "math", "sdpa")


def default_backends(q: torch.Tensor) -> tuple[str, ...]:
    """Kernel preference: the `se_backend` kernel choice (spanlab.kernels) overrides; CUDA half
    precision tries cuDNN then FlashAttention (both need fp16/bf16); CUDA float32 takes the SDPA
    tile path; CPU the math merge."""
    forced = kernels.current().se_backend
    if forced != "auto":
        return (forced,)
    if q.device.type != "cuda":
        return ("math",)
    return ("cudnn", "flash") if q.dtype in (torch.float16, torch.bfloat16) else ("sdpa",)


def se_attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    blocks: torch.Tensor,
    *,
    chunk_size: int,
    block_size: int,
    backend: str | None = None,
) -> torch.Tensor:
    """Attention of each chunk over its causal prefix plus the given blocks (B, H, n_chunks, k).

    Each chunk's attention is two pieces merged by log-sum-exp: causal over the chunk's own M keys
    (all chunks in one fused call) and dense over its retrieved k·S keys (one fused call for all
    chunks with the same number of valid blocks). See `lse_kernels` for why the backward is exact.
    """
    return _se_attend(q, k, v, blocks, blocks.shape[-1], chunk_size=chunk_size, block_size=block_size, backend=backend)


def _se_attend(q, k, v, blocks, kk: int, *, chunk_size: int, block_size: int, backend: str | None) -> torch.Tensor:
    """`se_attend` with `blocks` either the (B, H, nc, kk) tensor or a function returning it (called
    once, after the causal piece's forward kernel has been queued)."""
    B, H, L, D = q.shape
    Hk = k.shape[1]
    G = H // Hk
    M, S = chunk_size, block_size
    counts = valid_counts(L, M, S, kk)
    if kk == 0 or counts[-1] == 0:  # nothing retrievable anywhere: chunked causal attention
        return grouped_causal(q, k, v, M)
    backends = (backend,) if backend else default_backends(q)
    if backends[0] == "sdpa":
        blocks = blocks() if callable(blocks) else blocks
        return _se_attend_lower_right(q, k, v, blocks, chunk_size=M, block_size=S, counts=counts)
    nc = len(counts)
    pad = nc * M - L
    if G > 1:  # the kernels take one K/V head per query head; only GQA pays this copy
        k, v = k.repeat_interleave(G, dim=1), v.repeat_interleave(G, dim=1)

    def chunk_rows(x: torch.Tensor) -> torch.Tensor:
        # (B, H, L, D) -> (B·H, nc, M, D): chunks become heads of a batch of B·H; a free view when L % M == 0.
        return (F.pad(x, (0, 0, 0, pad)) if pad else x).reshape(B * H, nc, M, D)

    qc, kc, vc = chunk_rows(q), chunk_rows(k), chunk_rows(v)
    out = _ChunkAndMemory.apply(qc, kc, vc, blocks, tuple(counts), S, backends, memory_impl(qc, backends[0]))
    return out.reshape(B, H, nc * M, D)[:, :, :L]


def _tokens(blocks: torch.Tensor, i0: int, S: int) -> torch.Tensor:
    """Key rows (N, (nc - i0)·k·S, 1) of the retrieved blocks of chunks i0.., slot-major.

    Leading chunks with no eligible block (chunk 0 at least) get no memory piece at all. A chunk's
    valid slots come first (best first), so one owning n < k blocks uses its first n·S memory rows."""
    B, H, nc, kk = blocks.shape
    rows = blocks[:, :, i0:].reshape(B * H, (nc - i0) * kk, 1) * S + _arange(S, blocks.device)
    return rows.reshape(B * H, (nc - i0) * kk * S, 1)


@functools.lru_cache(maxsize=16)
def _arange(n: int, device: torch.device) -> torch.Tensor:
    return torch.arange(n, device=device)


def _merge_eager(o1, l1, o2, l2, i0: int):
    """(o1, l1) merged with the memory piece (o2, l2) of chunks i0.. (the first i0 have none)."""
    o2 = F.pad(o2, (0, 0, 0, 0, i0, 0))
    l2 = F.pad(l2, (0, 0, i0, 0), value=float("-inf"))
    lse = torch.logaddexp(l1, l2)
    o = o1.to(lse.dtype) * torch.exp(l1 - lse).unsqueeze(-1) + o2.to(lse.dtype) * torch.exp(l2 - lse).unsqueeze(-1)
    return o.to(o1.dtype), lse


def _use_triton(x: torch.Tensor) -> bool:
    return x.is_cuda and se_triton.available()


def _merge(o1, l1, o2, l2, i0):
    """Merged (out, lse); on CUDA in place in (o1, l1) by one Triton kernel."""
    # The kernel writes in place, so it needs (o1, l1) contiguous; attention backends return a
    # strided o1 for some inputs (e.g. head_dim 64 from a fused QKV projection): merge eagerly then.
    if _use_triton(o1) and o1.is_contiguous() and l1.is_contiguous():
        se_triton.merge_(o1, l1, o2.contiguous(), l2.contiguous(), i0)
        return o1, l1
    return _merge_eager(o1, l1, o2, l2, i0)


def _add_chunks_(dst: torch.Tensor, src: torch.Tensor, i0: int) -> None:
    """dst (n, nc, M, D)[:, i0:] += src."""
    if _use_triton(dst) and dst.is_contiguous():
        se_triton.add_chunks_(dst, src.contiguous(), i0)
    else:
        dst[:, i0:].add_(src)


# Kernels known to read and write strided (N, nc - i0, ·, D) views correctly. FlashAttention-2's
# backward in PyTorch allocates dQ contiguous but writes it with q's strides (wrong dQ, seen on an
# H100), so every other backend gets contiguous copies of the memory piece's query-side inputs.
_STRIDED_OK = ("cudnn", "math")


def _strided_or_copied(backend, fn, *xs):
    """Run a kernel on strided views (the memory piece skips leading chunks by slicing the
    (N, nc, M, D) view, no copy); copies for kernels that do not take them, or that reject them."""
    if backend not in _STRIDED_OK:
        return fn(*(x.contiguous() for x in xs))
    try:
        return fn(*xs)
    except RuntimeError:  # pragma: no cover - depends on the GPU's kernels
        if all(x.is_contiguous() for x in xs):
            raise
        return fn(*(x.contiguous() for x in xs))


def memory_impl(q: torch.Tensor, backend: str) -> str:
    """How the memory piece runs: "triton" (`se_memory_triton`: blocks read by index, merge and
    gradient adds fused) or "backend" (gather + the causal piece's attention kernel + merge).
    The `se_memory` kernel choice (spanlab.kernels) forces one. Default: Triton with the CUDA causal kernels (cuDNN, flash)
    wherever its kernels run (Triton installed, head_dim <= 128); the CPU `math` backend keeps the
    plain-PyTorch memory piece (the Triton kernels run there only in the interpreter, for tests)."""
    forced = kernels.current().se_memory
    if forced != "auto":
        if forced == "triton" and not se_memory_triton.supports(q):
            raise SpanlabError("kernels se_memory=triton needs Triton and CUDA tensors (or TRITON_INTERPRET=1), "
                               f"float16/bfloat16/float32, head_dim <= {se_memory_triton.MAX_HEAD_DIM}")
        return forced
    return "triton" if backend in ("cudnn", "flash") and se_memory_triton.supports(q) else "backend"


MEMORY_IMPLS = ("triton", "backend")


def _rows_ok(x: torch.Tensor) -> torch.Tensor:
    """x (N, nc, M, D) as is when its chunks are consecutive token rows with unit stride on D (what
    the Triton memory kernels index, in place), else a contiguous copy."""
    nc, M = x.shape[1:3]
    if x.stride(-1) == 1 and (nc == 1 or x.stride(1) == M * x.stride(2)):
        return x
    return x.contiguous()


class _ChunkAndMemory(torch.autograd.Function):
    """q, k, v, out: (N, nc, M, D), N = batch·heads, chunks as heads. The memory piece covers
    chunks i0.. (those that own at least one block).

    memory "triton": the kernels of `se_memory_triton` read the retrieved rows by block index and
    fold the merge, the dQ add and the dK/dV scatter into their passes; nothing but the causal
    piece's tensors is saved. memory "backend": keys/values gathered into (N, nc - i0, T, D),
    T = k·S, slot-major, one more call of the causal piece's kernel on a strided view of q, a
    Triton merge, and a backward in slices (see `backward`)."""

    @staticmethod
    def forward(ctx, q, k, v, blocks, counts, S, backends, memory):
        N, nc, M, D = q.shape
        i0 = sum(n == 0 for n in counts)
        ncm = nc - i0
        tok = None
        last_err: Exception | None = None
        for backend in backends:  # cuDNN rejects some shapes; fall back to the next kernel
            try:
                o1, l1, st1 = lse_kernels.forward(backend, q, k, v, True)
                if memory == "triton":
                    break
                if tok is None:  # selection (if deferred) runs once, behind the causal kernel
                    tok = _tokens(blocks() if callable(blocks) else blocks, i0, S)
                    T = tok.shape[1] // ncm
                    kk = T // S
                    # The gather lives inside the Function so the backward can scatter straight into dK, dV.
                    idx = tok.expand(N, ncm * T, D)
                    km = torch.gather(k.reshape(N, nc * M, D), 1, idx).view(N, ncm, T, D)
                    vm = torch.gather(v.reshape(N, nc * M, D), 1, idx).view(N, ncm, T, D)
                # Every chunk against its full k·S memory rows in one call, then recompute the few
                # chunks that own fewer than k blocks (only when M < k·S) on their valid rows.
                o2, l2, st2 = _strided_or_copied(
                    backend, lambda *x, be=backend: lse_kernels.forward(be, *x, False), q[:, i0:], km, vm
                )
                partial = []
                for i, n in enumerate(counts):
                    if 0 < n < kk:
                        mi = i - i0
                        oi, li, sti = lse_kernels.forward(backend, *_partial(q, km, vm, i, mi, n * S), False)
                        o2[:, mi : mi + 1], l2[:, mi : mi + 1] = oi, li
                        partial.append((i, n, sti))
                break
            except RuntimeError as e:  # pragma: no cover - depends on the GPU's kernels
                last_err = e
        else:
            raise last_err  # type: ignore[misc]
        if memory == "triton":
            # Selection (if deferred) runs here, behind the causal kernel; then one kernel computes the
            # memory piece and merges it into (o1, l1) in place.
            blk = (blocks() if callable(blocks) else blocks).reshape(N, nc, -1).contiguous()
            out, lse = _rows_ok(o1), l1.reshape(N, nc, M).contiguous()
            se_memory_triton.forward_merge_(q, k, v, blk, out, lse, i0=i0, block_size=S)
            ctx.save_for_backward(q, k, v, blk, out, lse)
            ctx.meta = (counts, S, backend, st1, memory)
            return out
        out, lse = _merge(o1, l1.view(N, nc, M), o2, l2.view(N, ncm, M), i0)
        ctx.save_for_backward(q, k, v, km, vm, tok, out, lse)
        ctx.meta = (counts, S, backend, st1, memory, st2, partial)
        return out

    @staticmethod
    def backward(ctx, dout):
        if ctx.meta[4] == "triton":
            return _ChunkAndMemory._backward_triton(ctx, dout)
        q, k, v, km, vm, tok, out, lse = ctx.saved_tensors
        counts, S, backend, st1, _, st2, partial = ctx.meta
        N, nc, M, D = q.shape
        i0 = sum(n == 0 for n in counts)
        ncm, T = nc - i0, km.shape[2]
        dout = dout.contiguous()
        dq, dk, dv = lse_kernels.backward(backend, dout, q, k, v, out, lse, st1, True)
        dq, dk, dv = dq.contiguous(), dk.contiguous(), dv.contiguous()
        dk3, dv3 = dk.view(N, nc * M, D), dv.view(N, nc * M, D)
        qm, om, lm, dom = q[:, i0:], out[:, i0:], lse[:, i0:], dout[:, i0:]
        # The memory piece runs in slices of the N = batch·heads axis, and each slice's dQ share
        # is added into dq in place: a full-size second dQ (plus the kernel's float32 dQ workspace,
        # twice its size) never sits next to the causal piece's, which keeps the backward's peak
        # at about full attention's. Same kernels and total work; one more launch per slice.
        for n0, n1 in _slices(N):
            dq2, dkm, dvm = _strided_or_copied(
                backend,
                lambda do_, q_, km_, vm_, o_, l_: lse_kernels.backward(backend, do_, q_, km_, vm_, o_, l_, st2, False),
                dom[n0:n1], qm[n0:n1], km[n0:n1], vm[n0:n1], om[n0:n1], lm[n0:n1],
            )
            # With the merged lse each memory row's gradient is exact; chunks owning fewer than k
            # blocks are recomputed on their valid rows (the first n·S).
            for i, n, sti in partial:
                mi = i - i0
                qi, kmi, vmi = _partial(q[n0:n1], km[n0:n1], vm[n0:n1], i, mi, n * S)
                oi, li, doi = (x[n0:n1, i : i + 1].contiguous() for x in (out, lse, dout))
                dqi, dkmi, dvmi = lse_kernels.backward(backend, doi, qi, kmi, vmi, oi, li, sti, False)
                dq2[:, mi : mi + 1] = dqi
                dkm[:, mi : mi + 1] = 0
                dvm[:, mi : mi + 1] = 0
                dkm[:, mi : mi + 1, : n * S] = dkmi
                dvm[:, mi : mi + 1, : n * S] = dvmi
            _add_chunks_(dq[n0:n1], dq2, i0)
            del dq2
            idx = tok[n0:n1].expand(n1 - n0, ncm * T, D)
            dk3[n0:n1].scatter_add_(1, idx, dkm.view(n1 - n0, ncm * T, D))
            dv3[n0:n1].scatter_add_(1, idx, dvm.view(n1 - n0, ncm * T, D))
            del dkm, dvm
        return dq, dk, dv, None, None, None, None, None

    @staticmethod
    def _backward_triton(ctx, dout):
        q, k, v, blk, out, lse = ctx.saved_tensors
        counts, S, backend, st1, _ = ctx.meta
        i0 = sum(n == 0 for n in counts)
        # The causal kernel and the memory kernels read dO with out's strides: copy only if it
        # arrives with others (e.g. from a transpose the forward's caller did not mirror).
        if dout.stride() != out.stride():
            dout = torch.empty_like(out).copy_(dout)
        dq, dk, dv = (_rows_ok(g) for g in lse_kernels.backward(backend, dout, q, k, v, out, lse, st1, True))
        se_memory_triton.backward_(dout, q, k, v, out, lse, blk, dq, dk, dv, i0=i0, block_size=S)
        return dq, dk, dv, None, None, None, None, None


MEMORY_BACKWARD_SLICES = 2


def _slices(N: int) -> list[tuple[int, int]]:
    """Contiguous ranges of the N = batch·heads axis for the memory piece's backward."""
    n = min(MEMORY_BACKWARD_SLICES, N)
    cuts = [N * i // n for i in range(n + 1)]
    return [(cuts[i], cuts[i + 1]) for i in range(n)]


def _partial(q, km, vm, i, mi, rows):
    """Chunk i's queries (N, 1, M, D) and the first `rows` rows of its memory slot mi = i - i0,
    as contiguous tensors."""
    return q[:, i : i + 1].contiguous(), km[:, mi : mi + 1, :rows].contiguous(), vm[:, mi : mi + 1, :rows].contiguous()
