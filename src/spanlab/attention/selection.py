"""SE-Attn's retrieval step: block summaries, chunk-to-block relevance, top-k choice.

Everything here is O(L·S·D + (L/M)·(L/S)·D): summaries attend inside each block of S tokens, and
relevance compares one summed query per chunk with one summary per block, so no L×L tensor is
ever built. Selection is discrete, so it runs under `no_grad`; softmax, summaries and relevance are kept in
float32 (float64 for float64 inputs) whatever the input dtype, while the block-local products use
the input dtype's tensor cores.

Two implementations: on CUDA, two Triton kernels (`selection_triton`): one fused pass over q, k, v
for the block statistics (summaries + block query sums), one for relevance and the top-k on the
small (B, H, n_chunks, n_blocks) problem; elsewhere, or without Triton, or for float64, batched
torch products (`block_summaries`) and a stable sort (`top_blocks`). Timings in docs/benchmarks.md.
The kernel choice `se_selection=torch|triton` (spanlab.kernels) forces one. Random selection always ranks in torch, and so
does the landmark-token summary (the Triton kernel computes the mean-query one, "meanq").

Summaries (`block_summaries`), per selection:
    relevance: SE-Attn (sec. 3.3): mean over the block's rows of its non-causal in-block attention.
    landmark:  SE-Attn-LM (App. F): a non-learnable landmark token per block, whose query is the
               fixed vector `landmark_query` (one per head, drawn once from a seeded generator,
               never trained), summarises the block by its cross-attention over the block's keys.
    meanq:     the previous spanlab landmark: the landmark query is the mean of the block's queries.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from spanlab import kernels
from spanlab.errors import SpanlabError

SELECTIONS = ("relevance", "random", "none", "landmark", "meanq")
_SUMMARISED = ("relevance", "landmark", "meanq")
# The landmark token's query: fixed by this seed so every run, rank and reference sees the same one.
LANDMARK_SEED = 1414



def resolve_chunk_size(chunk_size: int | Sequence[int], generator: torch.Generator | None = None) -> int:
    """An int is used as is; a tuple/list yields one size drawn uniformly with `generator`.

    The paper draws the chunk size per layer and forward pass from {2048, 4096} during fine-tuning.
    The draw happens on the generator's device (CPU when none is given), before any other draw.
    """
    if isinstance(chunk_size, bool):
        raise SpanlabError(f"chunk_size must be a positive int or a tuple of them; got {chunk_size!r}")
    if isinstance(chunk_size, int):
        sizes: tuple[int, ...] = (chunk_size,)
    else:
        try:
            sizes = tuple(chunk_size)
        except TypeError:
            raise SpanlabError(f"chunk_size must be a positive int or a tuple of them; got {chunk_size!r}") from None
    if not sizes or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in sizes):
        raise SpanlabError(f"chunk_size must be a positive int or a non-empty tuple of them; got {chunk_size!r}")
    if len(sizes) == 1:
        return sizes[0]
    device = generator.device if generator is not None else "cpu"
    pick = torch.randint(len(sizes), (1,), generator=generator, device=device)
    return sizes[int(pick.item())]


def check_selection(selection: str, block_size: int, top_k: int) -> None:
    if selection not in SELECTIONS:
        raise SpanlabError(f"unknown SE-Attn selection {selection!r}; choose one of {', '.join(SELECTIONS)}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise SpanlabError(f"block_size must be a positive integer; got {block_size!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise SpanlabError(f"top_k must be a non-negative integer; got {top_k!r}")


def num_eligible(chunk: int, chunk_size: int, block_size: int) -> int:
    """Blocks that end at or before chunk `chunk` starts: (j+1)·S <= i·M."""
    return (chunk * chunk_size) // block_size


def valid_counts(L: int, chunk_size: int, block_size: int, top_k: int) -> list[int]:
    """Retrieved blocks per chunk, min(top_k, #eligible): plain ints, so no device sync is needed."""
    nc = -(-L // chunk_size)
    return [min(top_k, num_eligible(i, chunk_size, block_size)) for i in range(nc)]


def random_scores(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """I.i.d. uniform scores; the top-k eligible of them is a uniform random k-subset."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


@functools.lru_cache(maxsize=32)
def _landmark_query_cpu(H: int, D: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(LANDMARK_SEED)
    return torch.randn(H, D, generator=g, dtype=torch.float64)


def landmark_query(H: int, D: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The landmark token's query (H, D): one fixed N(0, 1) vector per query head.

    The paper's SE-Attn-LM inserts a non-learnable landmark token into each memory block and takes
    its cross-attention over the block as the block's summary. At the attention layer that token
    is its query: a constant (non-learnable, the same for every block and every layer of one head
    count), so c_j depends on the block's keys and values only. Entries ~ N(0, 1) give scores
    ℓ·k/√D of the same scale as those of the model's own queries against unit-variance keys. It
    carries no rotary position (q, k arrive already rotated; a constant query has no position),
    and what fine-tuning learns is to shape the keys so that this probe summarises each block."""
    return _landmark_query_cpu(H, D).to(device=device, dtype=dtype)


def _gqa_blocks(x: torch.Tensor, Hk: int, nb: int, S: int) -> torch.Tensor:
    """(B, H, >=nb·S, D) -> (B, Hk, G, nb, S, D) view over the complete blocks."""
    B, H, _, D = x.shape
    return x[:, :, : nb * S].reshape(B, Hk, H // Hk, nb, S, D)


@torch.no_grad()
def block_summaries(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int, kind: str = "relevance"
) -> torch.Tensor:
    """One D-vector per (batch, query head, complete block), float32 (float64 for float64 inputs).

    relevance: mean over the block's rows of softmax(Q_j K_jᵀ/√D) V_j (non-causal in the block).
    landmark:  softmax(ℓ K_jᵀ/√D) V_j with ℓ the landmark token's fixed query (`landmark_query`).
    meanq:     softmax(q̄_j K_jᵀ/√D) V_j with q̄_j the mean of the block's queries.
    """
    B, H, L, D = q.shape
    Hk = k.shape[1]
    S = block_size
    nb = L // S
    if nb == 0:
        return q.new_zeros((B, H, 0, D), dtype=torch.promote_types(q.dtype, torch.float32))
    acc = torch.promote_types(q.dtype, torch.float32)
    qb = _gqa_blocks(q, Hk, nb, S)  # (B, Hk, G, nb, S, D)
    kb = k[:, :, : nb * S].reshape(B, Hk, 1, nb, S, D)
    vb = v[:, :, : nb * S].reshape(B, Hk, 1, nb, S, D)
    scale = 1.0 / math.sqrt(D)
    if kind not in _SUMMARISED:
        raise SpanlabError(f"unknown block summary {kind!r}; choose one of {', '.join(_SUMMARISED)}")
    if kind == "meanq":
        qb = qb.mean(dim=4, keepdim=True, dtype=acc).to(q.dtype)  # (B, Hk, G, nb, 1, D)
    elif kind == "landmark":
        lq = landmark_query(H, D, q.device, q.dtype).reshape(1, Hk, H // Hk, 1, 1, D)
        qb = lq.expand(B, Hk, H // Hk, nb, 1, D)
    # Products in the input dtype (tensor cores, fp32 accumulation), softmax in >= float32: at most
    # S scores per query, so this is L·S·H numbers, never L×L.
    scores = torch.matmul(qb, kb.transpose(-1, -2)).to(acc) * scale  # (B, Hk, G, nb, S|1, S)
    weights = scores.softmax(dim=-1).mean(dim=-2)  # (B, Hk, G, nb, S)
    c = torch.matmul(weights.to(v.dtype).unsqueeze(-2), vb).squeeze(-2).to(acc)
    return c.reshape(B, H, nb, D)


def chunk_query_sums(
    q: torch.Tensor, chunk_size: int, dtype: torch.dtype, block_sums: torch.Tensor | None = None, block_size: int = 0
) -> torch.Tensor:
    """Σ_{t in chunk i} q_t as (B, H, n_chunks, D) in `dtype`.

    With `block_sums` (B, H, ceil(L/S), D) (the Triton kernel's per-block query sums) and chunks made
    of whole blocks (M % S == 0) this only adds M/S block sums per chunk instead of re-reading q.
    """
    B, H, L, D = q.shape
    M = chunk_size
    nc = -(-L // M)
    if block_sums is not None and block_size and M % block_size == 0:
        per = M // block_size
        pad = nc * per - block_sums.shape[2]  # the last chunk may hold fewer (or partial) blocks
        bs = F.pad(block_sums, (0, 0, 0, pad)) if pad else block_sums
        return bs.reshape(B, H, nc, per, D).sum(dim=3, dtype=dtype)
    pad = nc * M - L
    qp = F.pad(q, (0, 0, 0, pad)) if pad else q  # zero rows add nothing to the sums
    return qp.reshape(B, H, nc, M, D).sum(dim=3, dtype=dtype)


@torch.no_grad()
def chunk_relevance(
    q: torch.Tensor, summaries: torch.Tensor, chunk_size: int, qsum: torch.Tensor | None = None
) -> torch.Tensor:
    """R[b, h, i, j] = Σ_{t in chunk i} q_t · c_j / √D, float32, shape (B, H, n_chunks, n_blocks).

    `qsum` (B, H, n_chunks, D) are the chunk query sums when already known (`chunk_query_sums`)."""
    D = q.shape[-1]
    if qsum is None:
        qsum = chunk_query_sums(q, chunk_size, summaries.dtype)
    return torch.matmul(qsum.to(summaries.dtype), summaries.transpose(-1, -2)) / math.sqrt(D)


SELECTION_IMPLS = ("torch", "triton")


def _kernel_kind(kind: str) -> str:
    # selection_triton names the mean-query summary "landmark" (its name before App. F's landmark
    # token was implemented); the kernel is unchanged.
    return "landmark" if kind == "meanq" else kind


def _stats_impl(q: torch.Tensor, impl: str | None) -> str:
    """Which block-statistics implementation runs: `impl`, else the `se_selection` kernel choice, else Triton
    on CUDA for 16/32-bit floats when Triton is installed, else torch."""
    from spanlab.attention import selection_triton

    if impl is None and kernels.current().se_selection != "auto":
        impl = kernels.current().se_selection
    if impl is not None:
        if impl not in SELECTION_IMPLS:
            raise SpanlabError(f"SE-Attn selection implementation must be one of {', '.join(SELECTION_IMPLS)}; got {impl!r}")
        if impl == "triton" and not selection_triton.available():
            raise SpanlabError("kernels se_selection=triton needs the `triton` package")
        return impl
    fast = q.is_cuda and q.dtype in selection_triton.SUPPORTED_DTYPES and selection_triton.available()
    return "triton" if fast else "torch"


@torch.no_grad()
def relevance_scores(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, chunk_size: int, block_size: int, kind: str = "relevance",
    impl: str | None = None,
) -> torch.Tensor:
    """R (B, H, n_chunks, L // S) float32 (float64 for float64 inputs), by either implementation
    (the landmark-token summary always in torch: the kernel computes relevance and meanq)."""
    if kind != "landmark" and _stats_impl(q, impl) == "triton":
        from spanlab.attention import selection_triton

        c, block_sums = selection_triton.block_stats(q, k, v, block_size, _kernel_kind(kind))
        qsum = chunk_query_sums(q, chunk_size, c.dtype, block_sums, block_size)
        return chunk_relevance(q, c, chunk_size, qsum)
    return chunk_relevance(q, block_summaries(q, k, v, block_size, kind), chunk_size)


@torch.no_grad()
def top_blocks(scores: torch.Tensor, chunk_size: int, block_size: int, top_k: int) -> torch.Tensor:
    """Indices (B, H, nc, min(top_k, nb)) of the best eligible blocks per chunk, best first.

    Ineligible blocks score -inf. Ties go to the more recent block: the block axis is reversed and
    sorted stably, so among equal scores the higher index comes first. Slots past a chunk's
    eligible count hold arbitrary indices; `valid_counts` says how many are real.
    """
    B, H, nc, nb = scores.shape
    kk = min(top_k, nb)
    if kk == 0:
        return torch.zeros((B, H, nc, 0), dtype=torch.long, device=scores.device)
    masked = scores.flip(-1).masked_fill(_ineligible_flipped(nc, nb, chunk_size, block_size, scores.device), float("-inf"))
    order = torch.sort(masked, dim=-1, descending=True, stable=True).indices[..., :kk]
    return (nb - 1) - order


@functools.lru_cache(maxsize=64)
def _ineligible_flipped(nc: int, nb: int, chunk_size: int, block_size: int, device: torch.device) -> torch.Tensor:
    """(nc, nb) bool, block axis reversed: True where block nb-1-j' does not end before chunk i starts.
    Cached: it depends on shapes only, and rebuilding it cost ~6 small launches per call."""
    chunk_start = torch.arange(nc, device=device) * chunk_size
    block_end = (torch.arange(nb, device=device) + 1) * block_size
    return (block_end[None, :] > chunk_start[:, None]).flip(-1)


def select_blocks(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    chunk_size: int,
    block_size: int,
    top_k: int,
    selection: str,
    generator: torch.Generator | None,
    impl: str | None = None,
) -> torch.Tensor:
    """The retrieved blocks for every (batch, query head, chunk): (B, H, nc, min(top_k, nb)) long.

    `impl` ("torch" / "triton") picks the block-statistics implementation; default: see `_stats_impl`."""
    return select_blocks_deferred(q, k, v, chunk_size=chunk_size, block_size=block_size, top_k=top_k,
                                  selection=selection, generator=generator, impl=impl)()


def select_blocks_deferred(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    chunk_size: int,
    block_size: int,
    top_k: int,
    selection: str,
    generator: torch.Generator | None,
    impl: str | None = None,
) -> Callable[[], torch.Tensor]:
    """`select_blocks` in two steps, for the attention call's launch order: this call launches
    what can run at once (the block-statistics kernel, on the Triton path), the returned function
    finishes the choice (relevance and top-k) and returns what `select_blocks` would."""
    L = q.shape[2]
    if selection in ("relevance", "meanq") and top_k > 0 and L // block_size > 0 and _stats_impl(q, impl) == "triton":
        from spanlab.attention import selection_triton

        c, block_sums = selection_triton.block_stats(q, k, v, block_size, _kernel_kind(selection))
        qsum = None if chunk_size % block_size == 0 else chunk_query_sums(q, chunk_size, c.dtype)
        return functools.partial(
            selection_triton.top_blocks_from_stats, c, block_sums, L, chunk_size=chunk_size, block_size=block_size,
            top_k=top_k, qsum=qsum,
        )
    return functools.partial(
        _select_blocks_torch, q, k, v, chunk_size=chunk_size, block_size=block_size, top_k=top_k,
        selection=selection, generator=generator, impl=impl,
    )


def _select_blocks_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    chunk_size: int,
    block_size: int,
    top_k: int,
    selection: str,
    generator: torch.Generator | None,
    impl: str | None,
) -> torch.Tensor:
    """Every case but relevance/meanq on the Triton block statistics (`select_blocks_deferred`)."""
    B, H, L, _ = q.shape
    nb = L // block_size
    nc = -(-L // chunk_size)
    if selection == "none" or top_k == 0 or nb == 0:
        return torch.zeros((B, H, nc, 0), dtype=torch.long, device=q.device)
    if selection == "random":
        scores = random_scores((B, H, nc, nb), generator, q.device)
        return top_blocks(scores, chunk_size, block_size, top_k)
    scores = relevance_scores(q, k, v, chunk_size=chunk_size, block_size=block_size, kind=selection, impl=impl)
    return top_blocks(scores, chunk_size, block_size, top_k)
