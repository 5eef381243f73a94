"""Matmul FLOPs of one training step, counted from the model's linear layers (the roofline's numerator).

Per linear layer of `in -> out` features over `L` tokens, one forward matmul is `2·L·in·out`.
The backward pass computes the input gradient (another `2·L·in·out`) always, since something
upstream trains (LoRA factors, embeddings), and the weight gradient (a third) only for a trainable
weight: 2× forward for a frozen weight, 3× for a trainable one. Gradient checkpointing runs the
forward of every checkpointed block once more before its backward. A LoRA layer counts its frozen
base weight plus both factors (`in -> r`, `r -> out`, both trainable). The LM head counts like any
linear layer (outside the checkpointed blocks: recomputed only by the chunked loss).

Attention's own score/value matmuls (QKᵀ, PV) are not counted: their cost depends on the variant
(full, sliding window, SE's selected blocks), and the roofline asks what fraction of the peak the
fixed, variant-independent work reaches.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

# bf16 dense tensor-core peak of an H100 / H200 SXM (NVIDIA's datasheet, without sparsity).
H200_BF16_DENSE_TFLOPS = 989.0


@dataclass(frozen=True)
class LinearLayer:
    name: str
    in_features: int
    out_features: int
    weight_trainable: bool
    lora_rank: int  # 0 = no adapter
    recomputed: bool  # inside a gradient-checkpointed block


def _is_checkpointed_block(module: nn.Module) -> bool:
    # transformers' decoder layers derive from GradientCheckpointingLayer; checking the name keeps
    # this module free of a transformers import.
    return any(c.__name__ == "GradientCheckpointingLayer" for c in type(module).__mro__)


def _lora_rank(module: nn.Module) -> int:
    ranks = getattr(module, "r", None)
    adapters = getattr(module, "lora_A", None)
    if isinstance(ranks, dict) and isinstance(adapters, nn.ModuleDict) and len(adapters):
        return sum(int(ranks[k]) for k in adapters.keys())
    return 0


def linear_layers(model: nn.Module, *, recompute: bool = True, chunked_head: bool = False) -> list[LinearLayer]:
    """Every linear layer that runs once per token: plain `nn.Linear`s and peft LoRA layers
    (counted as their base layer + rank), with whether they are recomputed under checkpointing.
    `chunked_head`: the loss runs the LM head in checkpointed chunks (spanlab.train.loss), so the
    head's forward runs twice as well, with or without `recompute` (the blocks' checkpointing)."""
    from spanlab.train.loss import chunkable

    found: list[LinearLayer] = []
    parts = chunkable(model) if chunked_head else None
    head = parts[1] if parts else None

    def walk(module: nn.Module, prefix: str, in_block: bool, in_head: bool) -> None:
        in_block = in_block or _is_checkpointed_block(module)
        in_head = in_head or module is head
        # The chunked loss recomputes the head whatever the blocks' checkpointing does.
        again = (recompute and in_block) or in_head
        base = getattr(module, "base_layer", None)
        rank = _lora_rank(module)
        if rank and isinstance(base, nn.Linear):
            found.append(LinearLayer(prefix, base.in_features, base.out_features, base.weight.requires_grad,
                                     rank, again))
            return  # its children are the base layer and the factors, counted here
        if isinstance(module, nn.Linear):
            found.append(LinearLayer(prefix, module.in_features, module.out_features, module.weight.requires_grad,
                                     0, again))
            return
        for name, child in module.named_children():
            walk(child, f"{prefix}.{name}" if prefix else name, in_block, in_head)

    walk(model, "", False, False)
    return found


def _passes(trainable: bool, recomputed: bool) -> tuple[int, int]:
    """(forward passes including recompute, backward matmuls) per forward matmul."""
    return 1 + int(recomputed), 2 if trainable else 1


def step_matmul_flops(layers: list[LinearLayer], tokens: int) -> dict[str, float]:
    """FLOPs of one forward + recompute + backward over `tokens` tokens, split by phase.

    `lora` is the adapters' share of `total` (already included in the other entries)."""
    forward = recompute = backward = lora = 0.0
    for lay in layers:
        base = 2.0 * tokens * lay.in_features * lay.out_features
        parts = [(base, lay.weight_trainable)]
        if lay.lora_rank:
            parts += [(2.0 * tokens * lay.in_features * lay.lora_rank, True),
                      (2.0 * tokens * lay.lora_rank * lay.out_features, True)]
        for i, (f, trainable) in enumerate(parts):
            fwd, bwd = _passes(trainable, lay.recomputed)
            forward += f
            recompute += f * (fwd - 1)
            backward += f * bwd
            if i:
                lora += f * (fwd + bwd)
    return {"forward": forward, "recompute": recompute, "backward": backward,
            "total": forward + recompute + backward, "lora": lora}


def model_step_flops(model: nn.Module, tokens: int, *, recompute: bool = True,
                     chunked_head: bool = False) -> dict[str, float]:
    return step_matmul_flops(linear_layers(model, recompute=recompute, chunked_head=chunked_head), tokens)


def roofline_percent(flops: float, step_s: float, peak_tflops: float = H200_BF16_DENSE_TFLOPS) -> float:
    """Achieved matmul throughput as a percentage of the accelerator's peak."""
    if step_s <= 0 or peak_tflops <= 0:
        raise ValueError("step time and peak TFLOP/s must be positive")
    return 100.0 * flops / step_s / (peak_tflops * 1e12)
