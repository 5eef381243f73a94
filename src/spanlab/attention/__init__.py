"""Attention variants for long-context fine-tuning: Full, Sliding-Window, S², SE-Attn (+ NoMem,
Random, Landmark). Each fast path has a dense reference in `spanlab.attention.naive`; the variant
registry (`VARIANTS`, `register_variant`) is in `spanlab.attention.registry`.

All functions take q (B, H, L, D) and k, v (B, H_kv, L, D) with H_kv | H (GQA) and return
(B, H, L, D), causal, scale 1/√D.

The names below are imported on first use, so `spanlab.attention.registry` (what the CLI and the
configs read to list and validate variant names) loads without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "SELECTIONS": "spanlab.attention.selection",
    "VARIANTS": "spanlab.attention.registry",
    "VariantSpec": "spanlab.attention.registry",
    "Param": "spanlab.attention.registry",
    "get_attention": "spanlab.attention.registry",
    "get_reference": "spanlab.attention.registry",
    "register_variant": "spanlab.attention.registry",
    "full_attention": "spanlab.attention.full",
    "se_attention": "spanlab.attention.se",
    "shifted_sparse_attention": "spanlab.attention.shifted_sparse",
    "sliding_window_attention": "spanlab.attention.sliding_window",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [*sorted(_LAZY)]
