"""LoRA / LoRA+ / HyLoRA recipes on top of `peft`, with target modules resolved per architecture.

- lora:   LoRA on the attention projections (q, k, v, o) of every attention layer.
- lora+:  lora + trainable input embeddings and every normalisation layer (LongLoRA's LoRA+).
- hylora: lora+ + trainable 1-D causal convolutions of the SSM (Mamba2) mixers, and of the
          attention layers that have one (the q/k/v conv of mamba_ssm's MHA in Mamba2-Attn).

Targets are full module paths found by walking the model as its architecture profile says
(spanlab.models.arch), so an MLP or Mamba `in_proj`/`out_proj` never gets LoRA by accident of
its name.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import nn

from spanlab.errors import SpanlabError

METHODS = ("lora", "lora+", "hylora")


def _is_norm(module: nn.Module) -> bool:
    name = type(module).__name__.lower()
    return "norm" in name and not isinstance(module, (nn.Linear, nn.Embedding))


def attention_projection_names(model: nn.Module) -> list[str]:
    """Full paths of the q/k/v/o linear layers of every attention module, found by the model's
    architecture profile (spanlab.models.arch: attention class names and projection sets)."""
    from spanlab.models.arch import profile_for

    return profile_for(model).attention_projection_names(model)


def norm_module_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if n and _is_norm(m) and not any(True for _ in m.children())]


def embedding_module_names(model: nn.Module) -> list[str]:
    emb = model.get_input_embeddings()
    return [n for n, m in model.named_modules() if m is emb]


def ssm_conv_names(model: nn.Module) -> list[str]:
    """Paths of the depthwise causal conv1d inside Mamba2-style mixers and conv-QKV attention
    layers (the profile's `ssm_conv` group, `conv_markers`; none for families without one)."""
    from spanlab.models.arch import profile_for

    return profile_for(model).conv_names(model)


def resolve_targets(model: nn.Module, method: str) -> tuple[list[str], list[str]]:
    """(LoRA target module paths, fully trainable module paths) of a recipe on this model."""
    if method not in METHODS:
        raise SpanlabError(f"unknown PEFT method {method!r}; choose one of {', '.join(METHODS)}")
    lora_targets = attention_projection_names(model)
    if not lora_targets:
        raise SpanlabError(
            f"found no attention q/k/v/o projections in {type(model).__name__}; "
            "pure-SSM models have no attention to adapt: use --peft hylora on a hybrid, or a Transformer"
        )
    trainable: list[str] = []
    if method in ("lora+", "hylora"):
        trainable += embedding_module_names(model) + norm_module_names(model)
    if method == "hylora":
        convs = ssm_conv_names(model)
        if not convs:
            raise SpanlabError(
                f"{type(model).__name__} has no Mamba2 conv1d layers for hylora; use --peft lora+ for a Transformer"
            )
        trainable += convs
    return lora_targets, trainable


def apply_peft(
    model: nn.Module,
    method: str,
    rank: int = 32,
    alpha: int = 64,
    dropout: float = 0.0,
    *,
    verbose: bool = True,
) -> nn.Module:
    """Wrap `model` in a peft `PeftModel` for the given recipe; only the recipe's groups train.

    Embeddings, norms and convs are handled by peft's `modules_to_save`, so `save_pretrained`
    stores them with the adapters and `merge_and_unload` returns a plain model with them in place.
    """
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise SpanlabError(f"LoRA rank must be >= 1, got {rank}")
    lora_targets, trainable = resolve_targets(model, method)
    tied = bool(getattr(getattr(model, "config", None), "tie_word_embeddings", False))
    cfg = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        bias="none",
        task_type="CAUSAL_LM",
        target_modules=lora_targets,
        modules_to_save=trainable or None,
        # A tied lm_head must follow the trained embedding, or the merged model changes on reload.
        ensure_weight_tying=tied and method != "lora",
    )
    peft_model = get_peft_model(model, cfg)
    if verbose:
        print_trainable_summary(peft_model, method)
    return peft_model


def trainable_groups(model: nn.Module) -> OrderedDict[str, dict[str, Any]]:
    """Trainable parameter names and counts grouped as lora / embeddings / norms / ssm_conv / other."""
    groups: OrderedDict[str, dict[str, Any]] = OrderedDict(
        (g, {"names": [], "params": 0}) for g in ("lora", "embeddings", "norms", "ssm_conv", "other")
    )
    module_of = {}
    for mname, module in model.named_modules():
        for pname, _ in module.named_parameters(recurse=False):
            module_of[f"{mname}.{pname}" if mname else pname] = module
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mod = module_of.get(name)
        if "lora_" in name:
            g = "lora"
        elif isinstance(mod, nn.Embedding):
            g = "embeddings"
        elif mod is not None and _is_norm(mod):
            g = "norms"
        elif isinstance(mod, nn.Conv1d):
            g = "ssm_conv"
        else:
            g = "other"
        groups[g]["names"].append(name)
        groups[g]["params"] += p.numel()
    return groups


def print_trainable_summary(model: nn.Module, method: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    total = sum(p.numel() for p in model.parameters())
    table = Table(title=f"trainable parameters ({method})" if method else "trainable parameters")
    for col in ("group", "tensors", "params", "% of model"):
        table.add_column(col, justify="right" if col != "group" else "left")
    n_train = 0
    for group, info in trainable_groups(model).items():
        if info["params"]:
            n_train += info["params"]
            table.add_row(group, str(len(info["names"])), f"{info['params']:,}", f"{100 * info['params'] / total:.3f}")
    table.add_row("total", "", f"{n_train:,}", f"{100 * n_train / total:.3f}")
    Console(stderr=True).print(table)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def merge_peft(model: nn.Module) -> nn.Module:
    """A plain transformers model with LoRA folded in and saved modules in place."""
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    for p in merged.parameters():
        p.requires_grad_(False)
    return merged


__all__ = [
    "METHODS",
    "apply_peft",
    "attention_projection_names",
    "count_parameters",
    "merge_peft",
    "print_trainable_summary",
    "resolve_targets",
    "trainable_groups",
]
