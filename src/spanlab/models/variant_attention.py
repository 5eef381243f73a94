"""Evaluation with a fine-tuning attention variant (SW-Attn, SE-Attn) over a KV cache (Fig. 11).

The training kernels (spanlab.attention) take whole sequences; generation sees the prompt once
(in one call, or in slices with a chunked prefill) and then one token at a time against cached
K/V. This module gives every query row the variant's visibility rule whatever slice it arrives
in, so generation with a cache equals recomputing the whole sequence without one.

Rules, for the query at absolute position t:
    sw:          keys s with t - window < s <= t (the training rule exactly).
    se / se-landmark / se-meanq / se-nomem (chunk M, blocks of S, top-k):
                 its chunk's keys i·M <= s <= t (i = t // M), plus the k blocks that end at or
                 before i·M ranked by R_j = (Σ_{i·M <= s <= t} q_s) · c_j / √D, ties to the more
                 recent block; c_j is the training summary of block j (`block_summaries`: mean
                 in-block attention output, or the landmark summary). se-nomem retrieves nothing.

Why the SE rule sums the chunk's queries only up to t: training ranks blocks by the sum over the
*whole* chunk, which includes queries after t; at generation time those do not exist yet. The
prefix sum is the causal version of the training score: it equals it exactly for the last query
of every chunk (so a prompt of whole chunks selects, at each chunk's end, what training would)
and stays a function of the past only, which is what makes cached and recomputed generation agree.
se-random has no such rule (its blocks are a fresh draw per call) and is refused.

Cost: each call builds the rule's mask over the keys it can see, in tiles of at most `TILE`
queries; this is a dense reference-speed path (O(new tokens · cached tokens) per layer), meant
for the small models and lengths of a replication study, not for serving. Batches are one prompt
(no padding): the rule is defined on absolute positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from spanlab.errors import SpanlabError
from spanlab.models.arch.base import registry_attention_modules
from spanlab.models.hf_compat import registry_qk

IMPL_NAME = "spanlab_eval_variant"
PREFIX = "spanlab-variant:"  # HFBackend's attn_implementation channel: "spanlab-variant:<spec>"
RULE_ATTR = "_spanlab_eval_rule"
QCACHE_ATTR = "_spanlab_eval_q"
EVAL_VARIANTS = ("sw", "se", "se-nomem", "se-landmark", "se-meanq")
TILE = 256

# Paper defaults (Expansion Span sec. 4): SW window 4096; SE blocks of 32, top-8. Evaluation uses
# one fixed chunk size (a per-call draw would make the answer depend on the draw); 2048 is the
# smaller of the paper's training pair {2048, 4096}.
DEFAULTS = {"window": 4096, "chunk_size": 2048, "block_size": 32, "top_k": 8}


@dataclass(frozen=True)
class EvalRule:
    variant: str
    window: int = DEFAULTS["window"]
    chunk_size: int = DEFAULTS["chunk_size"]
    block_size: int = DEFAULTS["block_size"]
    top_k: int = DEFAULTS["top_k"]

    @property
    def selection(self) -> str:
        return {"se": "relevance", "se-landmark": "landmark", "se-meanq": "meanq", "se-nomem": "none"}.get(self.variant, "none")

    def describe(self) -> str:
        if self.variant == "sw":
            return f"sw:window={self.window}"
        return f"{self.variant}:chunk_size={self.chunk_size},block_size={self.block_size},top_k={self.top_k}"


def parse_spec(text: str) -> EvalRule:
    """"sw", "sw:window=4096", "se:chunk_size=2048,block_size=32,top_k=8", "se-nomem:chunk_size=512"."""
    name, _, rest = text.strip().partition(":")
    if name == "se-random":
        raise SpanlabError("--attention se-random has no deterministic evaluation rule (its blocks are a new random "
                           "draw per call); evaluate se-random fine-tunes with full, se or se-nomem attention")
    if name not in EVAL_VARIANTS:
        raise SpanlabError(f"--attention {text!r}: choose full, {', '.join(EVAL_VARIANTS)}, optionally with "
                           "parameters, e.g. sw:window=4096 or se:chunk_size=2048,block_size=32,top_k=8")
    allowed = {"window"} if name == "sw" else {"chunk_size", "block_size", "top_k"}
    params: dict[str, int] = {}
    for item in filter(None, (x.strip() for x in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in allowed:
            raise SpanlabError(f"--attention {text!r}: {name} takes {', '.join(sorted(allowed))} as key=value, "
                               f"got {item!r}")
        try:
            params[key] = int(value)
        except ValueError:
            raise SpanlabError(f"--attention {text!r}: {key} must be an integer, got {value!r}") from None
        if params[key] < (0 if key == "top_k" else 1):
            raise SpanlabError(f"--attention {text!r}: {key} must be {'>= 0' if key == 'top_k' else 'positive'}")
    return EvalRule(variant=name, **params)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    G = q.shape[1] // k.shape[1]
    if G > 1:
        k, v = k.repeat_interleave(G, dim=1), v.repeat_interleave(G, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)


def rule_attention(q_all: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int, rule: EvalRule) -> torch.Tensor:
    """Outputs (B, H, T - start, D) of query rows start..T-1 under `rule`.

    q_all (B, H, T, D) holds every query so far (SE ranks blocks with past queries of the chunk and
    summarises blocks from their queries); k, v (B, H_kv, T, D) every key and value."""
    T = q_all.shape[2]
    if k.shape[2] != T or v.shape[2] != T:
        raise SpanlabError(f"variant attention: {T} queries for {k.shape[2]} keys; the cache lost track of positions")
    if rule.variant == "sw":
        return _sw_rows(q_all[:, :, start:], k, v, start, rule.window)
    return _se_rows(q_all, k, v, start, rule)


def _sw_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int, window: int) -> torch.Tensor:
    """SW outputs of query rows start..T-1 (q holds just those rows: SW needs no past queries)."""
    T = k.shape[2]
    outs = []
    for a in range(start, T, TILE):
        b = min(a + TILE, T)
        lo = max(0, a - window + 1)
        t = torch.arange(a, b, device=q.device)[:, None]
        s = torch.arange(lo, b, device=q.device)[None, :]
        outs.append(_sdpa(q[:, :, a - start : b - start], k[:, :, lo:b], v[:, :, lo:b], (s <= t) & (s > t - window)))
    return torch.cat(outs, dim=2)


def _se_rows(q_all, k, v, start: int, rule: EvalRule) -> torch.Tensor:
    from spanlab.attention.selection import block_summaries

    B, H, T, D = q_all.shape
    M, S = rule.chunk_size, rule.block_size
    kk = 0 if rule.selection == "none" else rule.top_k
    nb_all = (T // M) * M // S  # blocks any chunk up to T can retrieve: those ending by its start
    summaries = None
    if kk and nb_all:
        n = nb_all * S
        summaries = block_summaries(q_all[:, :, :n], k[:, :, :n], v[:, :, :n], S, rule.selection)
    outs = []
    dev = q_all.device
    for i in range(start // M, -(-T // M)):
        c0, c1 = i * M, min((i + 1) * M, T)
        a0 = max(start, c0)
        # Prefix sums of the chunk's queries, each row's own included (float32 like the selection).
        acc = torch.promote_types(q_all.dtype, torch.float32)
        prefix = q_all[:, :, c0:c1].to(acc).cumsum(dim=2)
        nb = min(i * M // S, nb_all)  # eligible blocks: (j + 1)·S <= i·M
        k_i = min(kk, nb)
        for a in range(a0, c1, TILE):
            b = min(a + TILE, c1)
            t = torch.arange(a, b, device=dev)[:, None]
            s = torch.arange(0, b, device=dev)[None, :]
            allowed = ((s >= c0) & (s <= t)).expand(B, H, b - a, b).clone()
            if k_i:
                rel = torch.matmul(prefix[:, :, a - c0 : b - c0], summaries[:, :, :nb].transpose(-1, -2)) / math.sqrt(D)
                # Ties go to the more recent block: sort the reversed block axis stably.
                order = torch.sort(rel.flip(-1), dim=-1, descending=True, stable=True).indices[..., :k_i]
                chosen = torch.zeros((B, H, b - a, nb), dtype=torch.bool, device=dev)
                chosen.scatter_(-1, (nb - 1) - order, True)
                allowed[..., : nb * S] |= chosen.repeat_interleave(S, dim=-1)
            outs.append(_sdpa(q_all[:, :, a:b], k[:, :, :b], v[:, :, :b], allowed))
    return torch.cat(outs, dim=2)


def _attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    rule: EvalRule | None = getattr(module, RULE_ATTR, None)
    if rule is None:
        raise SpanlabError(f"{type(module).__name__} runs with {IMPL_NAME!r} but has no rule installed; "
                           "use spanlab.models.variant_attention.install(model, rule)")
    n, T = query.shape[2], key.shape[2]
    past = T - n
    if past < 0:
        raise SpanlabError("variant attention: more queries than keys; it runs over a dynamic KV cache only")
    query, key = registry_qk(query, key, value, scaling)  # as in training: v's dtype, 1/sqrt(head_dim)
    if rule.variant == "sw":
        return _sw_rows(query, key, value, past, rule.window).transpose(1, 2).contiguous(), None
    # SE needs the chunk's past queries and the blocks' queries: keep this layer's queries next to
    # the model's K/V cache. A call without past starts a new sequence.
    cached = getattr(module, QCACHE_ATTR, None) if past else None
    have = 0 if cached is None else cached.shape[2]
    if have != past or (cached is not None and cached.shape[:2] != query.shape[:2]):
        raise SpanlabError(f"variant attention: the KV cache holds {past} positions but {have} queries were "
                           "kept; generate one sequence at a time, from its start")
    q_all = query if cached is None else torch.cat([cached, query], dim=2)
    setattr(module, QCACHE_ATTR, q_all)
    out = rule_attention(q_all, key, value, past, rule)
    return out.transpose(1, 2).contiguous(), None


def _no_mask(*args: Any, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> None:
    # The rule builds its own mask from absolute positions; padding would shift them.
    if attention_mask is not None and not bool((attention_mask != 0).all()):
        raise SpanlabError("variant attention evaluates one unpadded prompt at a time; padded batches are refused")


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(IMPL_NAME, _attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(IMPL_NAME, _no_mask)


def install(model: torch.nn.Module, rule: EvalRule) -> torch.nn.Module:
    """Run every attention layer of a transformers model under `rule` (in place; returns `model`).

    Generate with a dynamic cache (the default without `cache_implementation`): a static cache
    hands over its whole preallocated length as keys, and positions would be read wrong."""
    layers = registry_attention_modules(model)
    if not layers:
        raise SpanlabError(f"{type(model).__name__} has no attention layers that use transformers' attention "
                           "registry; --attention sw/se needs a Llama-family, Bamba or Zamba2 model")
    _register()
    for m in layers:
        setattr(m, RULE_ATTR, rule)
        if hasattr(m, QCACHE_ATTR):
            delattr(m, QCACHE_ATTR)
    model.set_attn_implementation(IMPL_NAME)
    return model
