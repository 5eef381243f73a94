"""Causal-LM loss without the (tokens, vocab) logits: the LM head and cross-entropy in row chunks.

The dense path (`model(labels=...)`) materialises the logits of every position, in fp32 for the
loss: at 128K tokens and a 32K vocabulary that is 16 GiB, plus the softmax's copy saved for the
backward. Here the model runs with `logits_to_keep=1` (the LM head sees one row), a hook on its
base model catches the final (normalised) hidden states, and the loss is a sum over checkpointed
chunks of rows: each chunk's logits exist only while that chunk's loss (forward) or gradient
(backward, recomputed) is being computed, so the peak is `chunk x vocab`, not `tokens x vocab`.
Only positions with a label take part, so an answers-only loss (`labels = -100` elsewhere) also
skips the LM head for every masked row.

The result is the dense loss (the same mean over labelled positions, the same gradients for the
hidden states, the LM head and any adapters on it) up to summation order. It goes through the
model's own forward, so DDP's gradient hooks see the step as usual.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100

# Config switches under which a model's logits or loss are more than `lm_head(hidden)` + CE
# (Gemma-style soft caps, Cohere/Granite scales, Bamba's z-loss, MoE router losses).
_LOGIT_CHANGING = ("final_logit_softcapping", "logits_soft_cap", "logit_scale", "logits_scaling",
                   "z_loss_coefficient", "output_router_logits")


def _inner_causal_lm(model: nn.Module) -> nn.Module:
    """The transformers CausalLM under DDP / accelerate / peft wrappers."""
    m: Any = model
    while True:
        if hasattr(m, "module") and isinstance(m.module, nn.Module):  # DDP
            m = m.module
        elif hasattr(m, "get_base_model") and callable(m.get_base_model):  # peft
            m = m.get_base_model()
        else:
            return m


def chunkable(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """(base model, LM head) if the chunked loss equals this model's own loss, else None."""
    inner = _inner_causal_lm(model)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    base = getattr(inner, "base_model", None)
    if not isinstance(head, nn.Module) or not isinstance(base, nn.Module) or base is inner:
        return None
    weight = getattr(head, "weight", None)
    if weight is None or type(weight).__name__ == "DTensor":  # FSDP shards: gathered only inside its forward
        return None
    config = getattr(inner, "config", None)
    if any(getattr(config, k, None) for k in _LOGIT_CHANGING):
        return None
    try:
        if "logits_to_keep" not in inspect.signature(inner.forward).parameters:
            return None
    except (TypeError, ValueError):
        return None
    return base, head


def _chunk_loss_sum(head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()  # fp32 for the softmax, as transformers' loss does
    return F.cross_entropy(logits, labels, reduction="sum")


def chunked_lm_loss(head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor, chunk: int) -> torch.Tensor:
    """Mean next-token cross-entropy of `head(hidden)` against `labels` (both (batch, seq, ...)),
    ignoring `-100`, computed over `chunk`-row pieces that are recomputed in the backward."""
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    # Next-token targets: position t predicts labels[t + 1]; the last position has none.
    targets = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].reshape(-1)
    rows = hidden.reshape(-1, hidden.shape[-1])
    keep = (targets != IGNORE_INDEX).nonzero().squeeze(1)
    rows, targets = rows.index_select(0, keep), targets.index_select(0, keep)
    total = rows.new_zeros((), dtype=torch.float32)
    for start in range(0, rows.shape[0], chunk):
        piece = slice(start, start + chunk)
        total = total + checkpoint(_chunk_loss_sum, head, rows[piece], targets[piece], use_reentrant=False)
    # No labelled position: nan, as the dense mean over nothing is.
    return total / keep.numel() if keep.numel() else total * float("nan")


def chunked_causal_lm_loss(model: nn.Module, batch: dict[str, torch.Tensor], chunk: int) -> torch.Tensor:
    """`default_loss` without the full logits; falls back to it where `chunkable` says no."""
    from spanlab.train.loop import default_loss

    parts = chunkable(model)
    if parts is None:
        return default_loss(model, batch)
    base, head = parts
    caught: list[torch.Tensor] = []

    def catch(_module: nn.Module, _args: Any, out: Any) -> None:
        caught.append(out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0])

    handle = base.register_forward_hook(catch)
    try:
        model(input_ids=batch["input_ids"], use_cache=False, logits_to_keep=1)
    finally:
        handle.remove()
    if len(caught) != 1:
        return default_loss(model, batch)
    return chunked_lm_loss(head, caught[0], batch.get("labels", batch["input_ids"]), chunk)
