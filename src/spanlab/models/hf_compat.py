"""What spanlab needs to know about the installed transformers' calling conventions, in one place.

The tested range is pinned in pyproject.toml; these adapters cover the changes inside it, each
detected from the installed code rather than from version numbers (a backport or a patch
release then needs no edit here):

- The cache keyword. Up to 5.23 a model's cache is `past_key_values` (attention and hybrid
  models) or `cache_params` (Mamba2) in `forward`, `generate` and the outputs. From 5.24/5.25 it
  is `cache` everywhere (forward arguments, `generate` model kwargs, `ModelOutput.cache`); the old
  names are still accepted by a `deprecate_kwarg` shim until 5.40, but `generate` forwards only
  `cache=` to the model, and `inspect.signature` shows only the new name.
- The attention registry's call (`ALL_ATTENTION_FUNCTIONS[...]`): q, k, v after the model's
  projections and RoPE, with the model's own `scaling`; `registry_qk` brings q and k to the
  convention of spanlab's variants.
- Kernel-hub wrappers. Up to 5.23 `use_kernel_func_from_hub_with_fallback` returns a plain
  closure; from 5.25 (with the `kernels` package, now a transformers dependency) that closure is
  wrapped once more in a `kernels` `Func` nn.Module whose `forward` calls it. spanlab reads the
  closure to tell transformers' torch fallback from a real mamba-ssm kernel.

Nothing here imports torch at module import time.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

# The one name every post-rename transformers uses for a model's cache.
NEW_CACHE = "cache"



# transformers >= 5.25 loads with `use_kernels=True` unless told otherwise: on CUDA, and on every
# `model.train()`, it replaces layers with "hub kernels" fetched from the Hugging Face hub at run
# time (liger kernels, Mamba kernels). Offline that is an error at the first training step; online
# it would swap code that spanlab did not choose or record under measured numbers. spanlab picks
# its own kernels (spanlab.kernels), so every model it loads is loaded without them.
NO_HUB_KERNELS: dict[str, Any] = {"use_kernels": False}

def _parameters(fn: Any) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return {}


def cache_kwarg(model: Any, legacy: str) -> str | None:
    """The keyword `model.forward` takes its cache by: `cache` where the model was renamed,
    else `legacy` (`past_key_values`, `cache_params`, `state`) if forward takes it, else None."""
    params = _parameters(model.forward)
    if NEW_CACHE in params:
        return NEW_CACHE
    if legacy in params:
        return legacy
    return None


def output_cache(output: Any, name: str) -> Any:
    """The cache a forward returned, under `name` or, after the rename, under `cache`."""
    for key in (name, NEW_CACHE):
        value = getattr(output, key, None)
        if value is not None:
            return value
    return None


def generate_skips_cached_prompt(cache_arg: str | None) -> bool:
    """Whether `generate`, handed a cache by `cache_arg`, expects the whole prompt and skips the
    tokens the cache has already seen. True for the unified `cache` (>= 5.24: every cache, Mamba2's
    included, counts its tokens); before, Mamba2's `cache_params` and RWKV's `state` kept no count,
    so generate had to be given only the prompt's unseen tail."""
    return cache_arg == NEW_CACHE


def generate_cache_kwarg(model: Any) -> str:
    """The keyword `generate` hands a user-made cache to the model by (what decode steps receive)."""
    return NEW_CACHE if NEW_CACHE in _parameters(model.forward) else "past_key_values"


def is_recurrent(model: Any) -> bool:
    """Whether a model carries recurrent state (SSM, linear attention, RWKV) from token to token.

    Up to 5.23 transformers marked such classes `_is_stateful` (Mamba2, Bamba, Zamba2, FalconH1,
    Jamba, RecurrentGemma, RWKV, ...); 5.25 dropped the flag. There the cache built from the config
    says it (its SSM layers are linear-attention layers, hybrid ones included), and RWKV, which
    keeps its own `state` outside the cache API, says it by that argument."""
    if hasattr(model, "_is_stateful"):
        return bool(model._is_stateful)
    if "state" in _parameters(model.forward) or "cache_params" in _parameters(model.forward):
        return True
    try:
        from transformers.cache_utils import DynamicCache, LinearAttentionCacheLayerMixin

        cache = DynamicCache(config=model.config)
    except Exception:  # noqa: BLE001 - no cache for this config: nothing says it is recurrent
        return False
    return any(isinstance(layer, LinearAttentionCacheLayerMixin) for layer in getattr(cache, "layers", []))


def kernel_closure(fn: Any) -> Any:
    """The function behind a `kernels` `Func` module (transformers >= 5.25 wraps hub-kernel
    functions in one); `fn` itself when it is not such a wrapper."""
    for _ in range(4):  # Func(Func(...)) does not occur today; bounded all the same
        forward = getattr(type(fn), "forward", None)
        if forward is None or not _is_module(fn):
            return fn
        try:
            inner = inspect.getclosurevars(forward).nonlocals.get("func")
        except (TypeError, ValueError):
            return fn
        if inner is None:
            return fn
        fn = inner
    return fn


def is_torch_fallback(fn: Any, name: str) -> bool:
    """True when `fn` is transformers' own pure-torch `name` (e.g. `mamba2_chunk_scan`), not a
    mamba-ssm / causal-conv1d / hub kernel behind transformers' wrapper: spanlab replaces only the
    former, so a real kernel is never displaced."""
    fn = kernel_closure(fn)  # transformers >= 5.25 wraps the closure in a `kernels` Func module
    try:
        nonlocals = inspect.getclosurevars(fn).nonlocals
    except (TypeError, ValueError):
        nonlocals = {}
    if "is_new_implementation" in nonlocals:  # use_kernel_func_from_hub_with_fallback's wrapper
        return not nonlocals["is_new_implementation"]
    # Unwrapped function (older/newer transformers): its own module's torch code.
    return getattr(fn, "__module__", "").startswith("transformers.models.") and getattr(fn, "__name__", "") == name


def _is_module(obj: Any) -> bool:
    try:
        import torch
    except ImportError:
        return False
    return isinstance(obj, torch.nn.Module)


def seen_tokens(cache: Any) -> int:
    """Tokens a cache holds. transformers >= 5.24 gives recurrent layers cache layers of their own
    that hold no tokens, and `get_seq_length()` reads layer 0: in a hybrid whose first layer is
    recurrent (RecurrentGemma, Mamba2-Attn) that is 0 however long the prompt. Take the largest."""
    best = int(cache.get_seq_length())
    for i in range(1, len(getattr(cache, "layers", None) or ())):
        try:
            best = max(best, int(cache.get_seq_length(i)))
        except ValueError:  # 5.23's linear-attention layers refuse the question: they hold no tokens
            continue
    return best



def registry_qk(query: Any, key: Any, value: Any, scaling: float | None) -> tuple[Any, Any]:
    """q and k of an attention-registry call in the convention of spanlab's variants, the same for
    training (spanlab.finetune.patching) and evaluation over a cache (spanlab.models.variant_attention):
    the variants scale by 1/sqrt(head_dim), so a model with another `scaling` (Zamba2:
    1/sqrt(head_dim/2)) gets it by pre-scaling q, which is exactly equivalent; and q, k come in v's
    dtype (under autocast RoPE's fp32 cos/sin promote q and k, while v keeps the dtype the
    projections produced)."""
    head_dim = query.shape[-1]
    if scaling is not None and not math.isclose(scaling * math.sqrt(head_dim), 1.0, rel_tol=1e-9):
        query = query * (scaling * math.sqrt(head_dim))
    return query.to(value.dtype), key.to(value.dtype)
