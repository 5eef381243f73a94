"""Swap the attention computation of a Hugging Face model for a spanlab variant, and back.

Hooked through transformers' attention registry: every attention module of Llama-family,
Bamba and Zamba2 models (found through their architecture profile, spanlab.models.arch) calls `ALL_ATTENTION_FUNCTIONS[config._attn_implementation]` with q, k, v
*after* its own projections and RoPE, and k/v still at their GQA head count. We register one
function, `"spanlab"`, that reads the variant installed on each attention module and runs it, so
the model's projections, RoPE, GQA layout and LoRA adapters stay exactly as they are.

`patch_attention(model, "full")` restores the model's own implementation (sdpa/eager), which also
handles KV caches and padding: that is what evaluation after SE-Attn fine-tuning uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from spanlab.attention.registry import VARIANTS
from spanlab.errors import SpanlabError
from spanlab.models.hf_compat import registry_qk

IMPL_NAME = "spanlab"
_ORIGINAL_ATTR = "_spanlab_original_attn_implementation"
_FN_ATTR = "_spanlab_attention"

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _spanlab_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    fn = getattr(module, _FN_ATTR, None)
    if fn is None:
        raise SpanlabError(
            f"{type(module).__name__} runs with attn_implementation='spanlab' but has no variant installed; "
            "call spanlab.finetune.patch_attention(model, variant) on the whole model"
        )
    if query.shape[2] != key.shape[2]:
        raise SpanlabError(
            "span-limited attention variants work on whole sequences, not with a KV cache; "
            "switch back with patch_attention(model, 'full') before generating"
        )
    if dropout and module.training:
        raise SpanlabError("attention dropout is not supported by spanlab variants; set attention_dropout=0")
    query, key = registry_qk(query, key, value, scaling)  # v's dtype, the variants' 1/sqrt(head_dim)
    out = fn(query, key, value)
    return out.transpose(1, 2).contiguous(), None


def _no_padding_mask(*args: Any, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> None:
    # Training packs unpadded sequences, so no mask is needed; a padded batch would silently
    # attend to pad tokens, so refuse it instead.
    if attention_mask is not None and attention_mask.dtype == torch.bool and not bool(attention_mask.all()):
        raise SpanlabError(
            "padded batches are not supported with span-limited attention; pack sequences without padding "
            "or switch back with patch_attention(model, 'full')"
        )
    if attention_mask is not None and attention_mask.dtype != torch.bool and not bool((attention_mask != 0).all()):
        raise SpanlabError(
            "padded batches are not supported with span-limited attention; pack sequences without padding "
            "or switch back with patch_attention(model, 'full')"
        )


def _register() -> None:
    from transformers import AttentionInterface

    try:
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    except ImportError:  # pragma: no cover - very old transformers
        ALL_MASK_ATTENTION_FUNCTIONS = None
    AttentionInterface.register(IMPL_NAME, _spanlab_attention_forward)
    if ALL_MASK_ATTENTION_FUNCTIONS is not None:
        ALL_MASK_ATTENTION_FUNCTIONS.register(IMPL_NAME, _no_padding_mask)


def _hf_model(model: nn.Module) -> nn.Module:
    """The transformers PreTrainedModel under a peft / accelerate wrapper."""
    seen = model
    for attr in ("module", "get_base_model"):
        inner = getattr(seen, attr, None)
        if attr == "get_base_model" and callable(inner):
            seen = inner()
        elif isinstance(inner, nn.Module):
            seen = inner
    return seen


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """Modules a variant runs in (one per attention layer), as the model's architecture profile
    finds them (spanlab.models.arch; by default those dispatching through transformers' attention
    registry). Empty for families without attention (Mamba2, RWKV)."""
    from spanlab.models.arch import profile_for

    hf = _hf_model(model)
    return profile_for(hf).find_attention(hf)


def _set_implementation(hf: nn.Module, name: str) -> None:
    setter = getattr(hf, "set_attn_implementation", None)
    if callable(setter):
        try:
            setter(name)
            return
        except (ValueError, KeyError, ImportError):
            pass
    # Fallback: every config object the attention modules read.
    for module in hf.modules():
        cfg = getattr(module, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            cfg._attn_implementation = name


def _current_implementation(hf: nn.Module) -> str:
    return getattr(hf.config, "_attn_implementation", None) or "eager"


def install_attention(model: nn.Module, fn: AttentionFn) -> nn.Module:
    """Run every attention layer of `model` through `fn(q, k, v) -> out` ((B,H,L,D), causal).

    Lower-level than `patch_attention`: any callable works, e.g. a dense reference in tests.
    """
    from spanlab.models.arch import profile_for

    hf = _hf_model(model)
    modules = attention_modules(hf)
    if not modules:
        arch = profile_for(hf)
        why = (f"{arch.label} models have no attention layers to patch" if not arch.patchable else
               "it has no attention layers that use transformers' attention registry")
        raise SpanlabError(
            f"{type(hf).__name__}: {why}; spanlab can patch Llama-family, Bamba, Zamba2 and other registry-based models"
        )
    _register()
    if not hasattr(hf, _ORIGINAL_ATTR):
        setattr(hf, _ORIGINAL_ATTR, _current_implementation(hf))
    for module in modules:
        setattr(module, _FN_ATTR, fn)
    _set_implementation(hf, IMPL_NAME)
    return model


def restore_attention(model: nn.Module) -> nn.Module:
    """Back to the model's own attention implementation (sdpa / eager / flash)."""
    hf = _hf_model(model)
    original = getattr(hf, _ORIGINAL_ATTR, None)
    if original is None:
        return model
    for module in attention_modules(hf):
        if hasattr(module, _FN_ATTR):
            delattr(module, _FN_ATTR)
    _set_implementation(hf, original)
    delattr(hf, _ORIGINAL_ATTR)
    return model


def patch_attention(model: nn.Module, variant: str, **params: Any) -> nn.Module:
    """Use attention `variant` in every attention layer of `model` (in place; returns `model`).

    variant: any patchable entry of `spanlab.attention.VARIANTS` — built in: full | sw (window=) |
    s2 (group_size=) | se (chunk_size=, block_size=32, top_k=8) | se-nomem | se-random |
    se-landmark | se-meanq. A `native` variant (full) restores the model's own implementation, which also
    handles KV caches and padding; the others need unpadded sequences and no KV cache.
    """
    spec = VARIANTS.get_spec(variant, patchable=True)
    hf = _hf_model(model)
    if spec.native:
        if params:
            raise SpanlabError(f"{variant} attention takes no parameters, got {sorted(params)}")
        restore_attention(model)
        hf._spanlab_variant = variant
        return model
    try:
        fn = spec.build(**params)
    except TypeError as e:
        raise SpanlabError(f"bad parameters for attention variant {variant!r}: {e}") from None
    install_attention(model, fn)
    hf._spanlab_variant = variant
    return model


__all__ = [
    "IMPL_NAME",
    "VARIANTS",
    "attention_modules",
    "install_attention",
    "patch_attention",
    "restore_attention",
]
