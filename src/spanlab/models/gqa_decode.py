"""Decode attention for GQA/MHA models with a padding mask over a static KV cache.

transformers' SDPA path has two costs at decode time with left-padded batches:

1. It calls `repeat_kv` whenever an attention mask is present, copying every KV head `n_rep`
   times at every step. For one query position the `n_rep` query heads that share a KV head can
   instead be folded into the query-length axis, (b, kv, n_rep, d) against (b, kv, T, d).
2. A masked SDPA call with 1-16 query rows gets no split-KV (flash-decoding) parallelism: one
   thread block per (batch, KV head) streams the whole cache, or, where the efficient kernels
   refuse the mask, torch's math kernel runs (which upcasts K and V to float32 first). Either
   way a step costs many times the one read of the cache it needs (docs/benchmarks.md).

Decode (one new token) therefore goes through one of these paths, picked by the kernel choice `decode_attn` (spanlab.kernels)
(default "auto": "triton" on CUDA when Triton is installed, else "sdpa"):

- "triton": split-KV kernel (`_decode_kernels`): each program takes one (batch, KV head) and one
  slice of the cache, computes its `n_rep` folded query rows against it with an online softmax in
  float32, and writes partial (max, sum, acc); a second kernel merges the slices. K and V are read
  once; masked-out blocks (left padding, the unfilled tail of the static cache) are not read.
- "matmul": the same folding as plain batched matmuls with the mask as -inf, float32 softmax.
- "sdpa": the folded query through `F.scaled_dot_product_attention` with the padding mask.

Prefill (many query positions) of a left-padded batch: transformers hands SDPA a (b, 1, q, T)
boolean mask, which rules out the flash kernels and their causal block skipping (measured: masked
cuDNN attention at batch 64 x 4K ran at ~140 TFLOP/s against ~400+ for causal flash), and copies
K/V `n_rep` times (`repeat_kv`). The mask function registered with "spanlab_sdpa" recognises a mask
that is exactly causal + left padding from position 0 and does not build it: it returns a stand-in
carrying each row's padding (and a way to build the real mask for any path that needs one). The
attention then runs, picked by the kernel choice `prefill_attn` (default "auto" = "rows"):

- "rows": unmasked causal SDPA on each row's real tokens, rows with equal padding together;
  padded query positions get zeros. On an H100 (torch 2.11) SDPA runs cuDNN's flash kernel here,
  at 363 TFLOP/s for a 64 x 4K batch of the 1B Llama's heads (head dim 64), within 16% of one
  unpadded call over the whole batch (benchmarks/prefill_attention.py, docs/benchmarks.md).
- "varlen": one flash-attention call over the batch read as a packed sequence, each row cut into
  its padding and its real tokens, each attended causally on its own (GQA native, no copies of
  Q, no per-row calls). torch's flash kernel is FlashAttention-2, which ran at 269 TFLOP/s on the
  same batch: kept for builds where it is the faster kernel, not the default. Needs CUDA half
  precision; falls back to "rows" otherwise.

What padded query positions hold is never read (the last position, whose logits are kept, is
real; decode masks padded keys). Any other mask (sliding windows, packed sequences, a cache
already holding tokens) keeps transformers' own path.

Every path computes transformers' masked SDPA result (tests compare them on fresh random inputs,
CPU and CUDA). Registered as attention implementation "spanlab_sdpa" (mask format: SDPA's
boolean mask).
"""

from __future__ import annotations

import functools
import math
from typing import Any

from spanlab import kernels
from spanlab.triton_support import available, interpreting, load

NAME = "spanlab_sdpa"
PATHS = ("auto", "triton", "matmul", "sdpa")
_registered = False


def choose_path(device_type: str, requested: str | None = None) -> str:
    path = (requested or kernels.current().decode_attn).strip().lower()
    if path not in PATHS:
        raise ValueError(f"decode attention path {path!r}: use one of {', '.join(PATHS)}")
    if path == "auto":
        return "triton" if device_type == "cuda" and available() else "sdpa"
    return path


@functools.cache
def _decode_kernels():
    """(split kernel, merge kernel), jitted on first use: under TRITON_INTERPRET=1 `triton.jit`
    must run after the variable is set, so the tests run the interpreter in a subprocess."""
    triton, tl = load()

    @triton.jit
    def split_kernel(
        Q, K, V, MASK, ACC, M, L,
        sqb, sqh, sqr, sqd,
        skb, skh, skt, skd,
        svb, svh, svt, svd,
        smb, smt,
        KVH, T, REP, keys_per_split, blocks_per_split, qk_scale,
        D: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, NSPLIT: tl.constexpr,
        HAS_MASK: tl.constexpr, ADDITIVE: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr,
        NBLK: tl.constexpr,
    ):
        split = tl.program_id(0)
        bh = tl.program_id(1)
        b = (bh // KVH).to(tl.int64)
        h = (bh % KVH).to(tl.int64)
        rows = tl.arange(0, BM)
        dd = tl.arange(0, BD)
        dmask = dd < D
        q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqr + dd[None, :] * sqd,
                    mask=(rows[:, None] < REP) & dmask[None, :], other=0.0)
        if UPCAST:  # the interpreter's low-precision dot is wrong; float32 products of bf16 are exact
            q = q.to(tl.float32)
        kbase = K + b * skb + h * skh
        vbase = V + b * svb + h * svh
        start = split * keys_per_split  # a multiple of BN; the last split may run past T
        m_i = tl.full([BM], float("-inf"), tl.float32)
        l_i = tl.zeros([BM], tl.float32)
        acc = tl.zeros([BM, BD], tl.float32)
        # The interpreter (with numpy 2) cannot loop to a run-time bound, so it gets the count as a
        # constant; compiled code loops to the argument (no recompilation per cache length).
        for i in range(NBLK if NBLK > 0 else blocks_per_split):
            cols = start + i * BN + tl.arange(0, BN)
            valid = cols < T
            if HAS_MASK:
                if ADDITIVE:
                    bias = tl.load(MASK + b * smb + cols * smt, mask=valid, other=float("-inf")).to(tl.float32)
                    valid = valid & (bias > float("-inf"))
                else:
                    keep = tl.load(MASK + b * smb + cols * smt, mask=valid, other=0)
                    valid = valid & (keep != 0)
            # Masked-out keys are never read: predicated-off loads move no bytes.
            k = tl.load(kbase + cols[:, None] * skt + dd[None, :] * skd, mask=valid[:, None] & dmask[None, :], other=0.0)
            if UPCAST:
                k = k.to(tl.float32)
            if IEEE:
                s = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                s = tl.dot(q, tl.trans(k))
            s = s * qk_scale  # log2 units: softmax through exp2
            if HAS_MASK and ADDITIVE:
                s = s + bias[None, :] * 1.4426950408889634
            s = tl.where(valid[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing valid yet
            p = tl.math.exp2(s - m_safe[:, None])
            alpha = tl.math.exp2(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(vbase + cols[:, None] * svt + dd[None, :] * svd, mask=valid[:, None] & dmask[None, :], other=0.0)
            if UPCAST:
                v = v.to(tl.float32)
                pv = p
            else:
                pv = p.to(v.dtype)
            if IEEE:
                acc = acc * alpha[:, None] + tl.dot(pv, v, input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(pv, v)
            m_i = m_new
        base = (bh * NSPLIT + split).to(tl.int64)
        tl.store(M + base * BM + rows, m_i)
        tl.store(L + base * BM + rows, l_i)
        tl.store(ACC + (base * BM + rows[:, None]) * BD + dd[None, :], acc)

    @triton.jit
    def merge_kernel(
        ACC, M, L, OUT, REP,
        BD: tl.constexpr, D: tl.constexpr, BM: tl.constexpr, NSPLIT: tl.constexpr, BS: tl.constexpr,
    ):
        bh = tl.program_id(0).to(tl.int64)
        row = tl.program_id(1)
        sp = tl.arange(0, BS)
        dd = tl.arange(0, BD)
        spv = sp < NSPLIT
        idx = (bh * NSPLIT + sp) * BM + row
        m = tl.load(M + idx, mask=spv, other=float("-inf"))
        ls = tl.load(L + idx, mask=spv, other=0.0)
        m_max = tl.max(m, 0)
        m_max = tl.where(m_max == float("-inf"), 0.0, m_max)
        w = tl.math.exp2(m - m_max)  # splits with nothing valid: exp2(-inf) = 0
        acc = tl.load(ACC + idx[:, None] * BD + dd[None, :], mask=spv[:, None], other=0.0)
        num = tl.sum(acc * w[:, None], 0)
        den = tl.sum(ls * w, 0)
        out = num / tl.where(den > 0, den, 1.0)  # a row with no valid key at all gives 0, not NaN
        tl.store(OUT + (bh * REP + row) * D + dd, out.to(OUT.dtype.element_ty), mask=dd < D)

    return split_kernel, merge_kernel


# Split-KV launch shape from the device micro-benchmark (benchmarks/decode_attention.py, H100, 2026-11-23):
# at B=32, H_kv=8, group 4, T=16.5K, D=128 the configurations within 10% of the best all read the
# cache at 2.6-2.75 TB/s (floor: one read at the 2.98 TB/s copy bandwidth); BN=64, 4 stages, ~4
# programs per SM is among them.
BLOCK_N = 64
MIN_KEYS_PER_SPLIT = 512
NUM_WARPS = 4
NUM_STAGES = 4


@functools.cache
def _sm_count(device_index: int) -> int:
    import torch

    return torch.cuda.get_device_properties(device_index).multi_processor_count


def num_splits(bh: int, T: int, sms: int, block_n: int = BLOCK_N, min_keys: int = MIN_KEYS_PER_SPLIT) -> int:
    """Enough (batch·KV head, split) programs to give every SM several, but no split shorter than
    `min_keys` (the merge and the partials' writes cost more than short splits save)."""
    want = max(1, -(-4 * sms // bh))
    return max(1, min(want, -(-T // min_keys), 64))


def triton_decode(query, key, value, mask, scale: float, *, splits: int | None = None, block_n: int = BLOCK_N,
                  num_warps: int = NUM_WARPS, num_stages: int = NUM_STAGES):
    """Attention of folded queries (b, kvh, rep, d) over (b, kvh, T, d) keys/values; `mask` is
    None, a boolean keep-mask or an additive float mask broadcastable to (b, T). Returns
    (b, kvh, rep, d) in the query's dtype (contiguous, so a reshape to (b, kvh·rep, d) is free)."""
    import torch

    triton, _ = load()
    if triton is None:
        raise RuntimeError("the split-KV decode kernel needs `triton` (pip install triton)")
    b, kvh, rep, d = query.shape
    T = key.shape[2]
    interpret = interpreting()
    if query.device.type != "cuda" and not interpret:
        raise RuntimeError("the Triton decode kernel runs CPU tensors only under TRITON_INTERPRET=1")
    BM = max(16, triton.next_power_of_2(rep))
    BD = max(16, triton.next_power_of_2(d))
    if splits is None:
        sms = 8 if interpret else _sm_count(query.device.index or 0)
        splits = num_splits(b * kvh, T, sms, block_n)
    keys_per_split = -(-T // splits)
    keys_per_split = -(-keys_per_split // block_n) * block_n
    splits = -(-T // keys_per_split)
    dev = query.device
    acc = torch.empty(b * kvh * splits * BM * BD, device=dev, dtype=torch.float32)
    m = torch.empty(b * kvh * splits * BM, device=dev, dtype=torch.float32)
    lsum = torch.empty_like(m)
    out = torch.empty(b, kvh, rep, d, device=dev, dtype=query.dtype)
    if mask is not None:
        mask = mask.expand(b, *mask.shape[1:]) if mask.shape[0] == 1 else mask
        row = mask.reshape(b, -1, mask.shape[-1])[:, -1, :T] if mask.dim() > 2 else mask[:, :T]
        additive = row.dtype != torch.bool
        mrow = row.view(torch.uint8) if not additive else row
        smb, smt = mrow.stride()
    else:
        mrow, additive, smb, smt = query, False, 0, 0  # dummy pointer, never read
    split_kernel, merge_kernel = _decode_kernels()
    split_kernel[(splits, b * kvh)](
        query, key, value, mrow, acc, m, lsum,
        *query.stride(), *key.stride(), *value.stride(), smb, smt,
        kvh, T, rep, keys_per_split, keys_per_split // block_n, scale * 1.4426950408889634,
        D=d, BD=BD, BM=BM, BN=block_n, NSPLIT=splits,
        HAS_MASK=mask is not None, ADDITIVE=additive, UPCAST=interpret, IEEE=query.dtype == torch.float32,
        NBLK=keys_per_split // block_n if interpret else 0, num_warps=num_warps, num_stages=num_stages,
    )
    merge_kernel[(b * kvh, rep)](
        acc, m, lsum, out, rep, BD=BD, D=d, BM=BM, NSPLIT=splits, BS=max(2, triton.next_power_of_2(splits)),
        num_warps=1 if BD <= 64 else 2,
    )
    return out


def matmul_decode(query, key, value, mask, scale: float):
    """The folded decode attention as two batched matmuls, float32 scores and softmax."""
    import torch

    T = key.shape[2]
    s = torch.matmul(query, key.transpose(-1, -2)).float() * scale  # (b, kvh, rep, T)
    if mask is not None:
        row = mask.reshape(mask.shape[0], -1, mask.shape[-1])[:, -1:, None, :T] if mask.dim() > 2 else mask[:, None, None, :T]
        s = s.masked_fill(~row, float("-inf")) if row.dtype == torch.bool else s + row.float()
    p = torch.softmax(s, dim=-1).to(value.dtype)
    return torch.matmul(p, value)


def sdpa_decode(query, key, value, mask, scale: float):
    import torch
    import torch.nn.functional as F

    if mask is not None:
        mask = mask[:, :, -1:, : key.shape[-2]]
        if mask.dtype != torch.bool:
            mask = mask.to(query.dtype)  # SDPA takes a float mask only in the query's dtype
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale, is_causal=False)


TAG = "_spanlab_left_pads"  # attribute on a prefill's stand-in mask: (q, each row's left padding)
BUILD = "_spanlab_build"  # attribute on the stand-in: builds transformers' own mask when a path needs it
PREFILL_PATHS = ("auto", "varlen", "rows")


def _left_pads(kwargs: dict) -> tuple[int, ...] | None:
    """Each row's left padding when `sdpa_mask(**kwargs)` would be exactly causal attention over a
    left-padded prompt that starts the cache (what a prefill sees); None for any other mask."""
    import torch
    from transformers.masking_utils import causal_mask_function

    q = kwargs.get("q_length")
    pad2d = kwargs.get("attention_mask")
    if (not isinstance(q, int) or q < 2 or kwargs.get("mask_function") is not causal_mask_function
            or kwargs.get("local_size") is not None or pad2d is None or pad2d.dim() != 2 or pad2d.shape[-1] < q
            or kwargs.get("kv_length", q) < q):
        return None
    # A static cache passes its offsets as tensors; this runs once per forward with q >= 2 (never in decode).
    if int(kwargs.get("q_offset", 0)) != 0 or int(kwargs.get("kv_offset", 0)) != 0:
        return None
    head = pad2d[:, :q].bool()
    # Left padding only: every row is False... then True..., ending in a real token. Anything after
    # q (a static cache's unwritten slots) must be masked out, as generate's mask has it.
    left = (head[:, 1:] >= head[:, :-1]).all(dim=-1) & head[:, -1]
    if pad2d.shape[-1] > q:
        left = left & ~pad2d[:, q:].bool().any(dim=-1)
    stats = torch.cat([left.long()[None], (~head).sum(-1)[None]]).tolist()  # one device sync per forward
    return tuple(stats[1]) if all(stats[0]) else None


def spanlab_mask(*args: Any, **kwargs: Any):
    """transformers' `sdpa_mask`, except for a prefill of a left-padded batch (causal attention over
    prompts that start the cache): there the (b, 1, q, T) boolean mask, 8.5 GB at 16K x 32 with a
    static cache, is not built. The attention reads only each row's padding, so a stand-in goes in
    its place: the 2D padding mask as a (b, 1, 1, L) view, tagged with the paddings and with a
    function that builds transformers' mask for any path that needs the real thing."""
    import functools

    from transformers.masking_utils import sdpa_mask

    pads = None if args else _left_pads(kwargs)
    if pads is None or not any(pads):
        # No padding: sdpa_mask returns None (SDPA's is_causal), or a mask this function does not
        # know how to stand in for.
        return sdpa_mask(*args, **kwargs)
    pad2d = kwargs["attention_mask"]
    stand_in = pad2d[:, None, None, :].bool()
    setattr(stand_in, TAG, (kwargs["q_length"], pads))
    setattr(stand_in, BUILD, functools.partial(sdpa_mask, **kwargs))
    return stand_in


def full_mask(mask):
    """The mask transformers would have built: the stand-in's own build, anything else unchanged."""
    build = getattr(mask, BUILD, None) if mask is not None else None
    if build is None:
        return mask
    built = build()
    setattr(mask, BUILD, lambda: built)  # several layers may ask; build once
    return built


def choose_prefill(query, requested: str | None = None) -> str:
    """"rows" (SDPA per run of equal padding), or "varlen" (one flash-attention call over the packed
    batch) when asked for and flash attention can run these tensors (CUDA, half precision, head dim
    a multiple of 8 up to 256)."""
    path = (requested or kernels.current().prefill_attn).strip().lower()
    if path not in PREFILL_PATHS:
        raise ValueError(f"prefill attention path {path!r}: use one of {', '.join(PREFILL_PATHS)}")
    import torch

    ok = (query.device.type == "cuda" and query.dtype in (torch.float16, torch.bfloat16)
          and query.shape[-1] % 8 == 0 and query.shape[-1] <= 256 and hasattr(torch.ops.aten, "_flash_attention_forward"))
    if path == "varlen" and ok:
        return "varlen"
    return "rows"  # auto, rows, or varlen where flash attention cannot run these tensors


def prefill_rows(query, key, value, pads, scale: float):
    """Causal attention of each row's real (unpadded) tokens, unmasked: (b, q, h, d), zeros at padded
    query positions. `key`/`value` may be a static cache longer than q: only [pad, q) is read."""
    import torch.nn.functional as F

    b, h, q, d = query.shape
    gqa = {"enable_gqa": True} if h != key.shape[1] else {}
    if not any(pads):
        out = F.scaled_dot_product_attention(query, key[:, :, :q], value[:, :, :q], is_causal=True, scale=scale, **gqa)
        return out.transpose(1, 2).contiguous()
    out = query.new_zeros(b, q, h, d)
    # Runs of consecutive rows with the same padding share one call, through views (no copies);
    # the engine's batches are sorted by length, so equal lengths sit together.
    start = 0
    for r in range(1, b + 1):
        if r < b and pads[r] == pads[start]:
            continue
        p = pads[start]
        if p < q:
            o = F.scaled_dot_product_attention(query[start:r, :, p:], key[start:r, :, p:q], value[start:r, :, p:q],
                                               is_causal=True, scale=scale, **gqa)
            out[start:r, p:] = o.transpose(1, 2)
        start = r
    return out


def segments(pads, q: int) -> list[int]:
    """Boundaries of the packed batch's sequences: each row of width q is two, its padding and its
    real tokens (empty ones dropped), so causal attention never crosses from one to the other."""
    bounds = {0}
    for r, p in enumerate(pads):
        bounds.add(r * q + min(p, q))
        bounds.add((r + 1) * q)
    return sorted(bounds)


def prefill_varlen(query, key, value, pads, scale: float):
    """The same attention as `prefill_rows` in one flash-attention call: the (b, q) batch is read as
    one packed sequence of b·q tokens cut into segments (`segments`), each attended causally on its
    own. Padded positions attend among themselves (finite values nobody reads) instead of being
    skipped, which costs their share of the batch (0.3% at 4K in the benchmark) and saves the
    zero-filled output and the per-row copies. (b, q, h, d) out, as the model expects."""
    import torch

    b, h, q, d = query.shape
    kvh = key.shape[1]
    # The projections are (b, q, heads, d) in memory and transposed, so these are views; a static
    # cache (b, kvh, T, d) is copied once into the packed layout.
    qp = query.transpose(1, 2).reshape(b * q, h, d)
    kp = key[:, :, :q].transpose(1, 2).reshape(b * q, kvh, d)
    vp = value[:, :, :q].transpose(1, 2).reshape(b * q, kvh, d)
    cu = torch.tensor(segments(pads, q), dtype=torch.int32, device=query.device)
    out = torch.ops.aten._flash_attention_forward(qp, kp, vp, cu, cu, q, q, 0.0, True, False, scale=scale)[0]
    return out.view(b, q, h, d)


def sdpa_gqa_decode(module: Any, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                    is_causal=None, **kwargs: Any):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, h, q, d = query.shape
    kvh = key.shape[1]
    plain = not dropout and kwargs.get("position_bias") is None and h % kvh == 0
    tag = getattr(attention_mask, TAG, None) if attention_mask is not None else None
    if tag is not None:
        if plain and q > 1 and tag[0] == q and key.shape[2] >= q and len(tag[1]) == b:
            scale = scaling if scaling is not None else 1.0 / math.sqrt(d)
            if choose_prefill(query) == "varlen":
                return prefill_varlen(query, key, value, tag[1], scale), None
            return prefill_rows(query, key, value, tag[1], scale), None
        attention_mask = full_mask(attention_mask)
    if q != 1 or not plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    n_rep = h // kvh
    scale = scaling if scaling is not None else 1.0 / math.sqrt(d)
    # Head i uses KV head i // n_rep (repeat_kv's order), so a plain reshape groups them.
    qf = query.reshape(b, kvh, n_rep, d)
    path = choose_path(query.device.type)
    if path == "triton" and d <= 256 and n_rep <= 64:
        out = triton_decode(qf, key, value, attention_mask, scale)
    elif path == "matmul":
        out = matmul_decode(qf, key, value, attention_mask, scale)
    else:
        out = sdpa_decode(qf, key, value, attention_mask, scale)
    return out.reshape(b, h, 1, d).transpose(1, 2).contiguous(), None


def register() -> str:
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        AttentionInterface.register(NAME, sdpa_gqa_decode)
        AttentionMaskInterface.register(NAME, spanlab_mask)
        _registered = True
    return NAME
