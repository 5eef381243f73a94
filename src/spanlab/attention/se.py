"""SE-Attn (Span-Expanded Attention) fast path: retrieval, a gather, and fused attention kernels.

Each chunk of M queries attends jointly to its own causal prefix and to the k·S tokens of its
retrieved blocks. Chunks become extra heads — (B, H, L, D) viewed as (B, H·nc, M, D), free for MHA
when L % M == 0 — and the attention is computed as two fused calls merged by their log-sum-exps:
causal over the chunk (cuDNN) and dense over the retrieved rows (cuDNN). The backward runs each
call's fused backward with the merged output and log-sum-exp, which gives each piece's exact share
of dQ and its full dK, dV (FlashAttention's split-KV identity); the retrieved rows' gradients are
scattered straight into dK, dV. No L×L tensor exists, the only data-dependent step (which blocks)
is a gather, and nothing synchronises with the host.

`backend="sdpa"` (used for float32 on CUDA) instead lays each chunk's keys out as
[k·S retrieved | M own] and runs one `scaled_dot_product_attention` with `causal_lower_right`
(FlashAttention-2 / memory-efficient kernels); it is ~2× slower in bf16 on an H100.

Gradients flow to q, k and v through both pieces; block choice is discrete and carries none. On CUDA
the scatter of retrieved-row gradients uses atomics, so dK/dV sums are not bit-reproducible.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

from spanlab.attention import lse_kernels
from spanlab.attention._checks import check_qkv
from spanlab.attention.grouped import grouped_causal
from spanlab.attention.selection import (
    check_selection,
    resolve_chunk_size,
    select_blocks,
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
            attention output), "landmark" (SE-Attn-LM: c_j from the landmark query = mean of the
            block's queries), "random" (SE-Attn-Random: uniform with `generator`), "none"
            (SE-Attn-NoMem: chunked causal attention only). Ties go to the more recent block.
        generator: drives the chunk-size draw and random selection (in that order).
    """
    check_qkv(q, k, v)
    check_selection(selection, block_size, top_k)
    M = resolve_chunk_size(chunk_size, generator)
    blocks = select_blocks(
        q, k, v, chunk_size=M, block_size=block_size, top_k=top_k, selection=selection, generator=generator
    )
    return se_attend(q, k, v, blocks, chunk_size=M, block_size=block_size)


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
    """Kernel preference: SPANLAB_SE_BACKEND overrides; CUDA half precision tries cuDNN then
    FlashAttention (both need fp16/bf16); CUDA float32 takes the SDPA tile path; CPU the math merge."""
    forced = os.environ.get("SPANLAB_SE_BACKEND")
    if forced:
        if forced not in BACKENDS:
            raise SpanlabError(f"SPANLAB_SE_BACKEND={forced!r} is not one of {', '.join(BACKENDS)}")
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
    B, H, L, D = q.shape
    Hk = k.shape[1]
    G = H // Hk
    M, S = chunk_size, block_size
    kk = blocks.shape[-1]
    counts = valid_counts(L, M, S, kk)
    if kk == 0 or counts[-1] == 0:  # nothing retrievable anywhere: chunked causal attention
        return grouped_causal(q, k, v, M)
    backends = (backend,) if backend else default_backends(q)
    if backends[0] == "sdpa":
        return _se_attend_lower_right(q, k, v, blocks, chunk_size=M, block_size=S, counts=counts)
    nc = len(counts)
    pad = nc * M - L
    T = kk * S
    if G > 1:  # the kernels take one K/V head per query head; only GQA pays this copy
        k, v = k.repeat_interleave(G, dim=1), v.repeat_interleave(G, dim=1)

    def head_major(x: torch.Tensor) -> torch.Tensor:
        # (B, H, L, D) -> (B, H·nc, M, D): chunks become extra heads; a free view when L % M == 0.
        return (F.pad(x, (0, 0, 0, pad)) if pad else x).reshape(B, H * nc, M, D)

    # Slots reversed (worst first) so a chunk's valid slots are always its LAST n·S memory rows.
    # Leading chunks with no eligible block (chunk 0 at least) get no memory piece at all.
    i0 = sum(n == 0 for n in counts)
    tok = (blocks[:, :, i0:].flip(-1).unsqueeze(-1) * S + torch.arange(S, device=q.device)).reshape(B, H, (nc - i0) * T, 1)
    out = _ChunkAndMemory.apply(head_major(q), head_major(k), head_major(v), tok, (B, H, nc, tuple(counts)), S, backends)
    return out.view(B, H, nc * M, D)[:, :, :L]


def _merge_eager(o1, l1, o2, l2, i0: int):
    # o1 (N, nc, M, D), l1 (N, nc, M): causal piece of every chunk; o2, l2: memory piece of chunks
    # i0.. only. The pads (memory of the first i0 chunks: weight exp(-inf) = 0) fuse into the
    # pointwise kernel when compiled, so the skipped chunks cost no extra pass.
    o2 = F.pad(o2, (0, 0, 0, 0, i0, 0))
    l2 = F.pad(l2, (0, 0, i0, 0), value=float("-inf"))
    lse = torch.logaddexp(l1, l2)
    o = o1.to(lse.dtype) * torch.exp(l1 - lse).unsqueeze(-1) + o2.to(lse.dtype) * torch.exp(l2 - lse).unsqueeze(-1)
    return o.to(o1.dtype), lse


@functools.cache
def _merge_compiled():
    # One fused pointwise kernel instead of ~8 passes over (B, H, L, D) float32 temporaries.
    return torch.compile(_merge_eager, dynamic=True)


def _merge(o1, l1, o2, l2, i0):
    if o1.is_cuda:
        return _merge_compiled()(o1, l1, o2, l2, i0)
    return _merge_eager(o1, l1, o2, l2, i0)


def _strided_or_copied(fn, *xs):
    """Run a kernel on strided views (the memory piece skips leading chunks by slicing the
    (B·H, nc, M, D) view, no copy); should a kernel reject those strides, retry on contiguous copies."""
    try:
        return fn(*xs)
    except RuntimeError:
        if all(x.is_contiguous() for x in xs):
            raise
        return fn(*(x.contiguous() for x in xs))


class _ChunkAndMemory(torch.autograd.Function):
    """q, k, v, out: (B, H·nc, M, D), rows (batch, head·chunk, position). The memory piece works on
    the (B·H, nc, M, D) view restricted to chunks i0.. (those that own at least one block); a
    chunk's memory rows are (B·H, chunk - i0, slot·S, D)."""

    @staticmethod
    def forward(ctx, q, k, v, tok, layout, S, backends):
        B, H, nc, counts = layout
        M, D = q.shape[2], q.shape[3]
        i0 = sum(n == 0 for n in counts)
        ncm, N = nc - i0, B * H
        T = tok.shape[2] // ncm
        kk = T // S
        # The gather lives inside the Function so the backward can scatter straight into dK, dV.
        idx = tok.expand(B, H, ncm * T, D)
        km = torch.gather(k.view(B, H, nc * M, D), 2, idx).view(N, ncm, T, D)
        vm = torch.gather(v.view(B, H, nc * M, D), 2, idx).view(N, ncm, T, D)
        qm = q.view(N, nc, M, D)[:, i0:]
        last_err: Exception | None = None
        for backend in backends:  # cuDNN rejects some shapes; fall back to the next kernel
            try:
                o1, l1, st1 = lse_kernels.forward(backend, q, k, v, True)
                # Every chunk against its full k·S memory rows in one call, then recompute the few
                # chunks that own fewer than k blocks (only when M < k·S) on their valid rows.
                o2, l2, st2 = _strided_or_copied(lambda *x, be=backend: lse_kernels.forward(be, *x, False), qm, km, vm)
                partial = []
                for i, n in enumerate(counts):
                    if 0 < n < kk:
                        qi, kmi, vmi = _partial(q.view(N, nc, M, D), km, vm, i, i - i0, n * S)
                        oi, li, sti = lse_kernels.forward(backend, qi, kmi, vmi, False)
                        o2[:, i - i0 : i - i0 + 1], l2[:, i - i0 : i - i0 + 1] = oi, li
                        partial.append((i, n, sti))
                break
            except RuntimeError as e:  # pragma: no cover - depends on the GPU's kernels
                last_err = e
        else:
            raise last_err  # type: ignore[misc]
        out, lse = _merge(o1.view(N, nc, M, D), l1.view(N, nc, M), o2, l2, i0)
        out, lse = out.view(B, H * nc, M, D), lse.view(B, H * nc, M)
        ctx.save_for_backward(q, k, v, km, vm, tok, out, lse)
        ctx.meta = (layout, S, backend, st1, st2, partial)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, km, vm, tok, out, lse = ctx.saved_tensors
        (B, H, nc, counts), S, backend, st1, st2, partial = ctx.meta
        M, D = q.shape[2], q.shape[3]
        i0 = sum(n == 0 for n in counts)
        ncm, T = nc - i0, km.shape[2]
        dout = dout.contiguous()
        dq, dk, dv = lse_kernels.backward(backend, dout, q, k, v, out, lse, st1, True)
        dk = dk.contiguous()
        dv = dv.contiguous()
        # The memory piece runs in slices of whole (batch, head)s and each slice's dQ share is added
        # into dq in place: a full-size second dQ (plus the kernel's float32 dQ workspace, twice its
        # size) never sits next to the causal piece's, which keeps the backward's peak at about full
        # attention's. Same kernels, same total work; only the launches double.
        for b0, b1, h0, h1 in _slices(B, H):
            Bs, Hs = b1 - b0, h1 - h0

            def part(x: torch.Tensor, b0=b0, b1=b1, h0=h0, h1=h1) -> torch.Tensor:
                # (N, n, R[, D]) view -> this slice's (Bs·Hs, n, R[, D]); contiguous by construction of _slices.
                return x.view(B, H, *x.shape[1:])[b0:b1, h0:h1].reshape(-1, *x.shape[1:])

            def chunks(x: torch.Tensor, b0=b0, b1=b1, h0=h0, h1=h1) -> torch.Tensor:
                # (B, H·nc, M[, D]) -> the slice's (Bs·Hs, nc, M[, D]) view
                return part(x.view(B * H, nc, *x.shape[2:]), b0, b1, h0, h1)

            qs, outs, lses, douts, dqs = chunks(q), chunks(out), chunks(lse), chunks(dout), chunks(dq)
            kms, vms = part(km), part(vm)
            dq2, dkm, dvm = _strided_or_copied(
                lambda do_, q_, km_, vm_, o_, l_: lse_kernels.backward(backend, do_, q_, km_, vm_, o_, l_, st2, False),
                douts[:, i0:], qs[:, i0:], kms, vms, outs[:, i0:], lses[:, i0:],
            )
            # With the merged lse each memory row's gradient is exact; chunks owning fewer than k
            # blocks are recomputed on their valid rows.
            for i, n, sti in partial:
                mi = i - i0
                qi, kmi, vmi = _partial(qs, kms, vms, i, mi, n * S)
                oi, li, doi = (x[:, i : i + 1].contiguous() for x in (outs, lses, douts))
                dqi, dkmi, dvmi = lse_kernels.backward(backend, doi, qi, kmi, vmi, oi, li, sti, False)
                dq2[:, mi : mi + 1] = dqi
                dkm[:, mi : mi + 1] = 0
                dvm[:, mi : mi + 1] = 0
                dkm[:, mi : mi + 1, T - n * S :] = dkmi
                dvm[:, mi : mi + 1, T - n * S :] = dvmi
            dqs[:, i0:].add_(dq2)
            del dq2
            idx = tok[b0:b1, h0:h1].expand(Bs, Hs, ncm * T, D)
            dk.view(B, H, nc * M, D)[b0:b1, h0:h1].scatter_add_(2, idx, dkm.view(Bs, Hs, ncm * T, D))
            dv.view(B, H, nc * M, D)[b0:b1, h0:h1].scatter_add_(2, idx, dvm.view(Bs, Hs, ncm * T, D))
            del dkm, dvm
        return dq, dk, dv, None, None, None, None


MEMORY_BACKWARD_SLICES = 2


def _slices(B: int, H: int) -> list[tuple[int, int, int, int]]:
    """(b0, b1, h0, h1) ranges for the memory piece's backward, each a contiguous slice of the
    (B, H·nc, ·, D) head-major tensors: halves of the batch when B > 1, else halves of the heads."""
    n = MEMORY_BACKWARD_SLICES
    if B >= n:
        cuts = [B * i // n for i in range(n + 1)]
        return [(cuts[i], cuts[i + 1], 0, H) for i in range(n)]
    if B == 1 and H >= n:
        cuts = [H * i // n for i in range(n + 1)]
        return [(0, 1, cuts[i], cuts[i + 1]) for i in range(n)]
    return [(0, B, 0, H)]


def _partial(q4, km, vm, i, mi, rows):
    """Chunk i's queries (from the (N, nc, M, D) view) and the last `rows` memory rows of its
    memory slot mi = i - i0, as contiguous (N, 1, ·, D) tensors."""
    T = km.shape[2]
    return q4[:, i : i + 1].contiguous(), km[:, mi : mi + 1, T - rows :].contiguous(), vm[:, mi : mi + 1, T - rows :].contiguous()
