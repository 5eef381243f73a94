"""The attention-variant registry: one entry per variant, read by everything that names one.

A `VariantSpec` says what a variant is called, what it takes (name, kind, default, required),
where its fast path and its dense reference live, whether it can be patched into a Hugging Face
model, whether it decodes with a KV cache, its display label, its default fine-tuning learning
rate and how many keys a query sees (the profile's FLOP count). `get_attention`, the fine-tuning
config, `patch_attention`, `spanlab profile`, the study config and the CLI help all read
`VARIANTS`; adding a variant is one `register_variant(VariantSpec(...))` (docs/architecture.md).

Importing this module does not import torch: callables are named as "module:attribute" strings
and imported on first use, so the CLI can list the variants in its help and the configs can
validate names while `spanlab --help` stays fast.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from spanlab.errors import SpanlabError

if TYPE_CHECKING:
    import torch

    AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
else:
    AttentionFn = Callable[..., Any]

ParamKind = Literal["int", "ints", "float", "str", "generator"]
Family = Literal["full", "sw", "s2", "se", "other"]


@dataclass(frozen=True)
class Param:
    """One parameter of a variant. `kind` "ints" is an int or a tuple of ints (a per-call draw);
    `context_fraction` is the default `spanlab finetune` uses as a share of the training context;
    `context_default(context)`, when given, computes that default instead (the paper's chunk draw)."""

    name: str
    kind: ParamKind = "int"
    default: Any = None
    required: bool = False
    help: str = ""
    context_fraction: float | None = None
    context_default: Callable[[int], Any] | None = None

    def default_for(self, context: int) -> Any:
        """The default at a training context of `context` tokens (None: no context rule)."""
        if self.context_default is not None:
            return self.context_default(context)
        if self.context_fraction is not None:
            return max(1, int(context * self.context_fraction))
        return None

    def describe(self) -> str:
        if self.required:
            return f"{self.name} ({self.kind}, required)"
        return f"{self.name}={self.default!r}"


@dataclass(frozen=True)
class VariantSpec:
    """What a variant is; `fast` and `reference` are `fn(q, k, v, **bound, **params)` callables
    or "module:attribute" strings, resolved on first use."""

    name: str
    description: str
    fast: Callable[..., Any] | str
    reference: Callable[..., Any] | str
    params: tuple[Param, ...] = ()
    bound: Mapping[str, Any] = field(default_factory=dict)  # fixed keyword arguments, e.g. selection="none"
    family: Family = "other"
    label: str = ""  # display name in reports and plots; defaults to `name`
    patchable: bool = True  # can run inside HF attention modules (spanlab.finetune.patch_attention)
    kv_cache: bool = False  # decodes token by token with a KV cache (only the model's own attention does)
    # Patching a model with it restores the model's own attention implementation (sdpa / eager /
    # flash) instead of installing `fast`: the same function, with the model's caches and masks.
    native: bool = False
    default_lr: float | None = None  # spanlab finetune's learning rate when --lr is not given
    # Mean number of keys one query attends to at length L with these parameters (FLOP counts).
    keys_per_query: Callable[[int, Mapping[str, Any]], float] | None = None

    def __post_init__(self) -> None:
        # Names are typed on command lines and in comma-separated --variants lists.
        if not self.name or any(c in self.name for c in ", \t\n"):
            raise SpanlabError(f"attention variant name {self.name!r} must be non-empty, without commas or spaces")
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise SpanlabError(f"attention variant {self.name!r} lists a parameter twice: {names}")

    @property
    def display(self) -> str:
        return self.label or self.name

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def signature(self) -> str:
        """`name(p1, p2=default)` for help texts and error messages."""
        return f"{self.name}({', '.join(p.describe() for p in self.params)})" if self.params else self.name

    def check_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """`params` with defaults filled in; clear errors for unknown or missing ones."""
        unknown = set(params) - set(self.param_names)
        if unknown:
            allowed = ", ".join(sorted(self.param_names)) or "no parameters"
            raise SpanlabError(
                f"attention variant {self.name!r} got unknown parameter(s) {sorted(unknown)}; it takes {allowed}")
        out: dict[str, Any] = {}
        for p in self.params:
            val = params.get(p.name, p.default)
            if p.required and val is None:
                raise SpanlabError(f"attention variant {self.name!r} needs {p.name}=...")
            if p.kind == "ints" and isinstance(val, Sequence) and not isinstance(val, str):
                val = tuple(val)
            out[p.name] = val
        return out

    def build(self, *, reference: bool = False, **params: Any) -> AttentionFn:
        fn = _resolve(self.reference if reference else self.fast)
        full = {**self.bound, **self.check_params(params)}
        return functools.partial(fn, **full) if full else fn

    def flops_keys(self, length: int, params: Mapping[str, Any]) -> float:
        if self.keys_per_query is None:
            return float("nan")
        return float(self.keys_per_query(length, params))


def _resolve(target: Callable[..., Any] | str) -> Callable[..., Any]:
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


class VariantRegistry(Mapping[str, VariantSpec]):
    """name -> VariantSpec, in registration order. Iterating gives the names, so `x in VARIANTS`,
    `", ".join(VARIANTS)` and `tuple(VARIANTS)` work as they did when this was a tuple of names;
    comparing with a tuple or list compares the names."""

    def __init__(self) -> None:
        self._specs: dict[str, VariantSpec] = {}

    def __getitem__(self, name: str) -> VariantSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (tuple, list)):
            return tuple(self._specs) == tuple(other)
        if isinstance(other, Mapping):
            return dict(self._specs) == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"VariantRegistry({', '.join(self._specs)})"

    def names(self, *, patchable: bool | None = None, family: str | None = None) -> tuple[str, ...]:
        return tuple(n for n, s in self._specs.items()
                     if (patchable is None or s.patchable == patchable) and (family is None or s.family == family))

    def get_spec(self, name: str, *, patchable: bool = False) -> VariantSpec:
        """The spec of `name`; a one-line error naming the choices when there is none."""
        spec = self._specs.get(name)
        choices = self.names(patchable=True) if patchable else tuple(self._specs)
        if spec is None or name not in choices:
            why = "" if spec is None else " that can be patched into a model"
            raise SpanlabError(f"unknown attention variant{why} {name!r}; choose one of {', '.join(choices)}")
        return spec

    def help(self, *, patchable: bool = False) -> str:
        """`full | sw | ...` for CLI help texts."""
        return " | ".join(self.names(patchable=True) if patchable else self._specs)


VARIANTS = VariantRegistry()


def register_variant(spec: VariantSpec, *, replace: bool = False) -> VariantSpec:
    """Add `spec` to `VARIANTS` (every reader sees it at once). Registering a name twice is an
    error unless `replace`, so two plug-ins cannot silently shadow each other."""
    if spec.name in VARIANTS._specs and not replace:
        raise SpanlabError(f"attention variant {spec.name!r} is already registered")
    VARIANTS._specs[spec.name] = spec
    return spec


def unregister_variant(name: str) -> None:
    """Remove a variant (tests that register toy variants clean up with this)."""
    VARIANTS._specs.pop(name, None)


def get_variant(name: str) -> VariantSpec:
    return VARIANTS.get_spec(name)


def get_attention(variant: str, **params: Any) -> AttentionFn:
    """Return `fn(q, k, v) -> out` for a variant, with its parameters bound.

    q is (B, H, L, D); k and v are (B, H_kv, L, D) with H_kv dividing H (GQA); any float dtype; the
    output is (B, H, L, D) and differentiable w.r.t. q, k, v. On CUDA the fast path runs (SDPA /
    FlashAttention / FlexAttention); on CPU the same code runs on CPU kernels, with autograd.

    Built-in variants and parameters (`VARIANTS[name].signature()` for any registered one):
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
    return VARIANTS.get_spec(variant).build(**params)


def get_reference(variant: str, **params: Any) -> AttentionFn:
    """The dense reference of `variant` (spanlab.attention.naive; small L only), parameters bound
    and checked exactly as `get_attention` does."""
    return VARIANTS.get_spec(variant).build(reference=True, **params)


# -- the built-in variants ----------------------------------------------------------------------

def _causal_keys(n: int) -> float:
    return (n + 1) / 2


def _sw_keys(L: int, p: Mapping[str, Any]) -> float:
    W = min(int(p["window"]), L)
    return (W * (W + 1) / 2 + (L - W) * W) / L


def _chunk(p: Mapping[str, Any]) -> int:
    M = p["chunk_size"]
    # A random draw of chunk sizes costs, on average, its mean chunk.
    return int(sum(M) / len(M)) if isinstance(M, tuple) else int(M)


def _se_keys(L: int, p: Mapping[str, Any]) -> float:
    return _causal_keys(min(_chunk(p), L)) + int(p["top_k"]) * int(p["block_size"])


_QUARTER = 0.25  # LongLoRA's S² group: a quarter of the training context

# Expansion Span, sec. 4 and App. B: SE-Attn draws each layer call's chunk size from {2048, 4096}
# at context 8192 (fixed chunks do worse, Fig. 3b); SW-Attn uses a 4096 window at 8192.
PAPER_CHUNK_SIZES = (2048, 4096)


def default_chunk_sizes(context: int) -> tuple[int, ...]:
    """The paper's {2048, 4096} when the context holds at least two chunks of the larger size
    (context >= 8192); shorter contexts keep the paper's proportions at 8192, {context/4, context/2},
    so the random draw (the regulariser of Fig. 3b) survives at small scale."""
    if context >= 2 * PAPER_CHUNK_SIZES[-1]:
        return PAPER_CHUNK_SIZES
    return tuple(sorted({max(1, context // 4), max(1, context // 2)}))


def default_window(context: int) -> int:
    """SW window: the paper's 4096 at 8192 is context/2; the same ratio at other contexts."""
    return max(1, context // 2)

_SE_PARAMS = (
    Param("chunk_size", "ints", required=True, help="chunk size M (several: drawn per layer call)",
          context_default=default_chunk_sizes),
    Param("block_size", "int", 32, help="memory block size S"),
    Param("top_k", "int", 8, help="retrieved blocks per chunk k"),
    Param("generator", "generator", None, help="torch.Generator for the random draws"),
)
_SE = {
    "se": ("relevance", "SE-Attn", "SE-Attn: chunked causal attention plus top-k blocks retrieved by relevance"),
    "se-nomem": ("none", "SE-Attn-NoMem", "SE-Attn without retrieval (chunked causal attention)"),
    "se-random": ("random", "SE-Attn-Random", "SE-Attn with top-k eligible blocks drawn uniformly"),
    "se-landmark": ("landmark", "SE-Attn-LM", "SE-Attn with block summaries from a non-learnable landmark token "
                    "per block (the paper's App. F)"),
    "se-meanq": ("meanq", "SE-Attn-MeanQ", "SE-Attn with block summaries from the mean of the block's queries"),
}

register_variant(VariantSpec(
    "full", "causal softmax attention (SDPA); the model's own implementation when patched",
    fast="spanlab.attention.full:full_attention", reference="spanlab.attention.naive:full_attention_reference",
    family="full", label="Full", kv_cache=True, native=True, keys_per_query=lambda L, p: _causal_keys(L),
))
register_variant(VariantSpec(
    "sw", "sliding-window causal attention: query t sees keys t - window < s <= t",
    fast="spanlab.attention.sliding_window:sliding_window_attention",
    reference="spanlab.attention.naive:sliding_window_attention_reference",
    params=(Param("window", "int", required=True, help="window size", context_default=default_window),),
    family="sw", label="SW", keys_per_query=_sw_keys,
))
register_variant(VariantSpec(
    "s2", "LongLoRA S²-Attn: causal groups, half the heads shifted by group_size // 2",
    fast="spanlab.attention.shifted_sparse:shifted_sparse_attention",
    reference="spanlab.attention.naive:shifted_sparse_attention_reference",
    params=(Param("group_size", "int", required=True, help="group size", context_fraction=_QUARTER),),
    # The paper's recipe: S² needs a 10x smaller lr than the others.
    family="s2", label="S²-Attn", default_lr=2e-5,
    keys_per_query=lambda L, p: _causal_keys(min(int(p["group_size"]), L)),
))
for _name, (_selection, _label, _desc) in _SE.items():
    register_variant(VariantSpec(
        _name, _desc, fast="spanlab.attention.se:se_attention", reference="spanlab.attention.naive:se_attention_reference",
        params=_SE_PARAMS, bound={"selection": _selection}, family="se", label=_label,
        keys_per_query=(lambda L, p: _causal_keys(min(_chunk(p), L))) if _selection == "none" else _se_keys,
    ))

__all__ = [
    "VARIANTS",
    "Param",
    "VariantRegistry",
    "VariantSpec",
    "get_attention",
    "get_reference",
    "get_variant",
    "register_variant",
    "unregister_variant",
]
