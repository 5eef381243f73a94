"""What gradient checkpointing recomputes in the backward pass.

`all` (the default) recomputes each checkpointed layer's whole forward: the least memory, and one
more forward's worth of matmuls and attention. `elementwise` keeps the outputs of the layer's
matmuls and attention kernels (torch's selective activation checkpointing) and recomputes only the
cheap ops between them (norms, activations, RoPE, casts, and matmuls with an inner dimension of at
most 64: LoRA's up-projection): the backward no longer repeats the
forward's GEMMs (a quarter of a step's linear-layer FLOPs) nor full attention's forward kernel, at
the cost of keeping those outputs, about 2 GB per layer of a 2.7B model at 32K tokens
(docs/finetune.md "Memory and recompute").

Attention written as a custom autograd function (spanlab's SE-Attn, FlexAttention's SW) is not one
of the saved ops and is recomputed either way; it is the cheap part of those variants' step.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import torch

Recompute = Literal["all", "elementwise"]
CHOICES: tuple[str, ...] = ("all", "elementwise")

# Matmuls and fused attention kernels: the ops whose recompute costs compute rather than bandwidth.
# Names that an older or CPU-only torch lacks are skipped.
_SAVED_NAMES = (
    "mm", "addmm", "bmm", "baddbmm",
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu",
    "_flash_attention_forward", "_efficient_attention_forward",
)


@functools.cache
def saved_ops() -> frozenset[Any]:
    """The aten overloads whose outputs `elementwise` keeps for the backward."""
    ops = []
    for name in _SAVED_NAMES:
        packet = getattr(torch.ops.aten, name, None)
        if packet is not None and hasattr(packet, "default"):
            ops.append(packet.default)
    return frozenset(ops)


# A matmul whose inner dimension is at most this is cheap to run again and is recomputed: LoRA's
# up-projection B (inner dimension = the rank, <= 64 in every recipe here) would otherwise keep a
# full-width output per adapted projection (4 x 2560 values a token at the 2.7B geometry) for a
# GEMM of 2·r FLOPs per output value.
CHEAP_INNER = 64
_MATMULS = ("mm", "addmm", "bmm", "baddbmm")


def _inner_dim(op: Any, args: tuple[Any, ...]) -> int | None:
    """K of a matmul overload's (M, K) @ (K, N) (its second matrix's rows), else None."""
    name = op.overloadpacket.__name__
    if name not in _MATMULS:
        return None
    mat2 = args[1] if name in ("mm", "bmm") else args[2]  # addmm / baddbmm lead with the added input
    return int(mat2.shape[-2])


def _policy(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> Any:
    from torch.utils.checkpoint import CheckpointPolicy

    if op not in saved_ops():
        return CheckpointPolicy.PREFER_RECOMPUTE
    inner = _inner_dim(op, args)
    if inner is not None and inner <= CHEAP_INNER:
        return CheckpointPolicy.PREFER_RECOMPUTE
    return CheckpointPolicy.MUST_SAVE


def checkpoint_kwargs(recompute: Recompute = "all") -> dict[str, Any]:
    """Keyword arguments for `torch.utils.checkpoint.checkpoint` (transformers passes them on)."""
    if recompute not in CHOICES:
        raise ValueError(f"recompute must be one of {', '.join(CHOICES)}, not {recompute!r}")
    kwargs: dict[str, Any] = {"use_reentrant": False}  # non-reentrant: frozen embeddings + LoRA need no input grads
    if recompute == "elementwise":
        from torch.utils.checkpoint import create_selective_checkpoint_contexts

        kwargs["context_fn"] = functools.partial(create_selective_checkpoint_contexts, _policy)
    return kwargs
