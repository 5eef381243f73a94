"""Dense, obviously-correct references for every variant (small L only: they build L×L masks).

They run in the input dtype, so float64 inputs give float64 references. SE-Attn's reference
recomputes summaries, relevance and the top-k choice with explicit Python loops over blocks and
chunks, sharing no arithmetic with the fast path; only the random draw (`random_scores`) and the
chunk-size draw are shared, because they *define* the random variants, and so is the landmark
token's fixed query (`landmark_query`), which defines SE-Attn-LM.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from spanlab.attention import masks
from spanlab.attention._checks import check_qkv, positive_int
from spanlab.attention.selection import check_selection, landmark_query, random_scores, resolve_chunk_size


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ/√D + log allowed) v with GQA; `allowed` broadcasts to (B, H, L, L)."""
    B, H, L, D = q.shape
    G = H // k.shape[1]
    k = k.repeat_interleave(G, dim=1)
    v = v.repeat_interleave(G, dim=1)
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(D)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.matmul(scores.softmax(dim=-1), v)


def full_attention_reference(q, k, v):
    check_qkv(q, k, v)
    return dense_attention(q, k, v, masks.dense_mask(masks.causal, q.shape[2], q.device))


def sliding_window_attention_reference(q, k, v, window: int):
    check_qkv(q, k, v)
    positive_int("window", window)
    return dense_attention(q, k, v, masks.dense_mask(masks.sliding_window, q.shape[2], q.device, window=window))


def shifted_sparse_attention_reference(q, k, v, group_size: int):
    _, H, _, L, _ = check_qkv(q, k, v)
    positive_int("group_size", group_size)
    t = torch.arange(L, device=q.device)
    shifted = (torch.arange(H, device=q.device) >= H // 2)[:, None, None]
    allowed = masks.shifted_sparse(t[None, :, None], t[None, None, :], shifted, group_size)  # (H, L, L)
    return dense_attention(q, k, v, allowed)


def se_select_reference(
    q, k, v, *, chunk_size: int, block_size: int, top_k: int, selection: str, rand: torch.Tensor | None = None
) -> list[list[list[list[int]]]]:
    """Retrieved block ids as nested lists [b][h][chunk] -> [j, ...] (best first), by explicit loops."""
    B, H, Hk, L, D = check_qkv(q, k, v)
    G = H // Hk
    S, M = block_size, chunk_size
    nb, nc = L // S, -(-L // M)
    lq = landmark_query(H, D, q.device, q.dtype)
    out: list[list[list[list[int]]]] = []
    for b in range(B):
        per_head = []
        for h in range(H):
            kh = h // G
            summaries = []
            for j in range(nb):
                Qj, Kj, Vj = (x[b, hh, j * S : (j + 1) * S] for x, hh in ((q, h), (k, kh), (v, kh)))
                if selection == "landmark":  # the landmark token's cross-attention over the block
                    w = torch.softmax(lq[h] @ Kj.T / math.sqrt(D), dim=-1)
                elif selection == "meanq":
                    w = torch.softmax(Qj.mean(0) @ Kj.T / math.sqrt(D), dim=-1)
                else:
                    w = torch.softmax(Qj @ Kj.T / math.sqrt(D), dim=-1).mean(0)
                summaries.append(w @ Vj)
            per_chunk = []
            for i in range(nc):
                eligible = [j for j in range(nb) if (j + 1) * S <= i * M]
                if selection == "none" or top_k == 0 or not eligible:
                    per_chunk.append([])
                    continue
                if selection == "random":
                    score = {j: float(rand[b, h, i, j]) for j in eligible}
                else:
                    rows = q[b, h, i * M : min((i + 1) * M, L)]
                    score = {j: float((rows @ summaries[j]).sum() / math.sqrt(D)) for j in eligible}
                    # softmax over eligible blocks is monotone: ranking by it equals ranking by R.
                ranked = sorted(eligible, key=lambda j: (-score[j], -j))
                per_chunk.append(ranked[:top_k])
            per_head.append(per_chunk)
        out.append(per_head)
    return out


def se_mask_reference(blocks, L: int, chunk_size: int, block_size: int, device) -> torch.Tensor:
    """Dense (B, H, L, L) visibility: causal inside the chunk, plus every retrieved block's keys."""
    B, H = len(blocks), len(blocks[0])
    M, S = chunk_size, block_size
    allowed = torch.zeros((B, H, L, L), dtype=torch.bool, device=device)
    for i in range(-(-L // M)):
        lo, hi = i * M, min((i + 1) * M, L)
        allowed[:, :, lo:hi, lo:hi] = torch.ones(hi - lo, hi - lo, dtype=torch.bool, device=device).tril()
        for b in range(B):
            for h in range(H):
                for j in blocks[b][h][i]:
                    allowed[b, h, lo:hi, j * S : (j + 1) * S] = True
    return allowed


def se_attention_reference(
    q,
    k,
    v,
    *,
    chunk_size: int | Sequence[int],
    block_size: int = 32,
    top_k: int = 8,
    selection: str = "relevance",
    generator: torch.Generator | None = None,
    blocks=None,
):
    """SE-Attn by the definition. `blocks` ([b][h][chunk] -> ids, or a (B, H, nc, k) tensor with
    `counts`) overrides the selection, to check low-precision fast paths against their own choice."""
    B, H, Hk, L, D = check_qkv(q, k, v)
    check_selection(selection, block_size, top_k)
    M = resolve_chunk_size(chunk_size, generator)
    if blocks is None:
        rand = None
        if selection == "random":
            rand = random_scores((B, H, -(-L // M), L // block_size), generator, q.device)
        blocks = se_select_reference(
            q, k, v, chunk_size=M, block_size=block_size, top_k=top_k, selection=selection, rand=rand
        )
    return dense_attention(q, k, v, se_mask_reference(blocks, L, M, block_size, q.device))
