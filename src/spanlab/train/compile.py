"""Regional `torch.compile` of a training step: each decoder layer's MLP and norms.

Why: at long context the step of a 2.7B Llama with LoRA spends about as long in memory-bound
elementwise work as in its matmuls (docs/benchmarks.md, "Fine-tuning"): every RMSNorm is five float32
passes over the residual stream forwards and as many backwards, and SwiGLU's silu and product are
whole passes over the (tokens, intermediate) activations, each done once more in the checkpoint
recompute. Inductor fuses each of these into one kernel, forwards and backwards.

What is compiled: the modules whose class name ends in "MLP" or "RMSNorm" (Llama, Mistral, Qwen2,
GLM, Bamba, Zamba2, ...), each through `nn.Module.compile`, so gradient checkpointing, PEFT and
accelerate wrap them as before. What is not: attention (spanlab's variants draw a chunk size per layer
call in Python, which a compiled graph would freeze), SSM mixers (their own kernels), embeddings and
the loss. Modules of one class share one compiled graph (parameters are graph inputs), so a model
compiles once per class and input shape.
"""

from __future__ import annotations

from typing import Any

SUFFIXES = ("MLP", "RMSNorm")


def compile_regions(model: Any, *, suffixes: tuple[str, ...] = SUFFIXES, **compile_kwargs: Any) -> dict[str, int]:
    """Compile every module of `model` whose class name ends in one of `suffixes` (outermost only:
    a norm inside a compiled MLP is part of the MLP's graph). Returns {class name: modules compiled}."""
    import torch

    done: dict[str, int] = {}
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        cls = type(module).__name__
        if cls.endswith(suffixes) and isinstance(module, torch.nn.Module):
            module.compile(**compile_kwargs)
            inside.append(name)
            done[cls] = done.get(cls, 0) + 1
    return done


__all__ = ["SUFFIXES", "compile_regions"]
