"""Variant names -> attention callables, for code that picks a variant from a config string."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch

from spanlab.errors import SpanlabError

VARIANTS: tuple[str, ...] = ("full", "sw", "s2", "se", "se-nomem", "se-random", "se-landmark", "se-meanq")

_SE_SELECTION = {"se": "relevance", "se-nomem": "none", "se-random": "random", "se-landmark": "landmark",
                 "se-meanq": "meanq"}
_ALLOWED = {
    "full": set(),
    "sw": {"window"},
    "s2": {"group_size"},
    **{name: {"chunk_size", "block_size", "top_k", "generator"} for name in _SE_SELECTION},
}
_REQUIRED = {"sw": "window", "s2": "group_size", **{name: "chunk_size" for name in _SE_SELECTION}}

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def get_attention(variant: str, **params) -> AttentionFn:
    """Return `fn(q, k, v) -> out` for a variant, with its parameters bound.

    q is (B, H, L, D); k and v are (B, H_kv, L, D) with H_kv dividing H (GQA); any float dtype; the
    output is (B, H, L, D) and differentiable w.r.t. q, k, v. On CUDA the fast path runs (SDPA /
    FlashAttention / FlexAttention); on CPU the same code runs on CPU kernels, with autograd.

    Variants and parameters:
        full:        none (causal SDPA).
        sw:          window (int): query t sees keys t - window < s <= t.
        s2:          group_size (int): LongLoRA S²-Attn, half the heads shifted by group_size // 2.
        se:          chunk_size (int or tuple of ints, drawn per call with `generator`),
                     block_size=32, top_k=8, generator=None: SE-Attn with relevance retrieval.
        se-nomem:    as se, no retrieval (chunked causal attention).
        se-random:   as se, top_k eligible blocks drawn uniformly with `generator`.
        se-landmark: as se, block summaries from a non-learnable landmark token per block (SE-Attn-LM,
                     App. F): its fixed query's cross-attention over the block (selection in torch).
        se-meanq:    as se, block summaries from the mean of the block's queries as landmark query.
    """
    if variant not in VARIANTS:
        raise SpanlabError(f"unknown attention variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    unknown = set(params) - _ALLOWED[variant]
    if unknown:
        allowed = ", ".join(sorted(_ALLOWED[variant])) or "no parameters"
        raise SpanlabError(f"attention variant {variant!r} got unknown parameter(s) {sorted(unknown)}; it takes {allowed}")
    need = _REQUIRED.get(variant)
    if need and params.get(need) is None:
        raise SpanlabError(f"attention variant {variant!r} needs {need}=...")

    from spanlab.attention.full import full_attention
    from spanlab.attention.se import se_attention
    from spanlab.attention.shifted_sparse import shifted_sparse_attention
    from spanlab.attention.sliding_window import sliding_window_attention

    if variant == "full":
        return full_attention
    if variant == "sw":
        return functools.partial(sliding_window_attention, window=params["window"])
    if variant == "s2":
        return functools.partial(shifted_sparse_attention, group_size=params["group_size"])
    chunk = params["chunk_size"]
    if isinstance(chunk, Sequence) and not isinstance(chunk, str):
        chunk = tuple(chunk)
    return functools.partial(
        se_attention,
        chunk_size=chunk,
        block_size=params.get("block_size", 32),
        top_k=params.get("top_k", 8),
        selection=_SE_SELECTION[variant],
        generator=params.get("generator"),
    )
