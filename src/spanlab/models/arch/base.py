"""`ArchProfile`: what spanlab needs to know about one architecture family, in one place.

A profile names the Hugging Face `model_type`s and model classes it covers and says how to find
its attention and convolution modules, whether left padding, chunked prefill, a static KV cache
and CUDA-graph decode apply, whether spanlab's SSD scan replaces transformers' Mamba2 fallback,
which HyLoRA groups exist, and how the zoo builds it. The HF backend, chunked prefill, the SSD
install, attention patching, the PEFT recipes and the zoo read these fields instead of keeping
their own tables (docs/architecture.md, "Architecture profiles").

Nothing here imports torch at module level: profiles are data, and the finders below import what
they need when called.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Projection names inside attention modules; the first set a module has all of wins.
DEFAULT_ATTENTION_PROJECTIONS: tuple[tuple[str, ...], ...] = (
    ("q_proj", "k_proj", "v_proj", "o_proj"),  # Llama, Mistral, Qwen, Bamba, Zamba2, Falcon-H1...
    ("q_proj", "k_proj", "v_proj", "out_proj"),
    ("query_key_value", "dense"),  # GPT-NeoX, Falcon
    ("Wqkv", "out_proj"),
    ("c_attn", "c_proj"),  # GPT-2
)

# The HyLoRA trainable groups (spanlab.finetune.peft_recipes.trainable_groups names them so).
GROUPS = ("lora", "embeddings", "norms", "ssm_conv")

# How `spanlab.models.prefill` feeds a class's prompt in chunks: (mode, cache argument of
# forward, attribute of the output holding the cache); mode "generate" or "state".
PrefillWay = tuple[str, str, str]


def registry_attention_modules(model: Any) -> list[Any]:
    """Modules that dispatch through transformers' attention registry (one per attention layer):
    the modules `spanlab.finetune.patch_attention` can run a variant in."""
    found = []
    seen_types: dict[type, bool] = {}
    for module in model.modules():
        t = type(module)
        if t not in seen_types:
            try:
                seen_types[t] = "ALL_ATTENTION_FUNCTIONS" in inspect.getsource(t.forward)
            except (OSError, TypeError):
                # No source (frozen / compiled install): fall back to transformers' naming.
                seen_types[t] = t.__name__.endswith("Attention") and hasattr(module, "o_proj")
        if seen_types[t]:
            found.append(module)
    return found


def named_attention_modules(model: Any, suffixes: tuple[str, ...] = ("Attention", "Attention2")) -> list[tuple[str, Any]]:
    """(path, module) of every module whose class name ends in one of `suffixes` (LoRA targets)."""
    return [(n, m) for n, m in model.named_modules() if type(m).__name__.endswith(suffixes)]


def mixer_convs(model: Any, markers: tuple[str, ...] = ("Mixer", "Mamba")) -> list[str]:
    """Paths of the depthwise causal conv1d inside SSM mixers (class name has one of `markers`)."""
    from torch import nn

    out = []
    for name, module in model.named_modules():
        if any(m in type(module).__name__ for m in markers):
            for child_name, child in module.named_children():
                if isinstance(child, nn.Conv1d):
                    out.append(f"{name}.{child_name}")
    return out


@dataclass(frozen=True)
class ZooShape:
    """A zoo size of one architecture: its depth, and the config fields (e.g. a narrower MLP) that
    bring its non-embedding parameters within a few percent of the Transformer++ of that size."""

    layers: int
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointLayout:
    """What decides which transformers class a mamba_ssm-format checkpoint converts to
    (spanlab.models.mamba_ssm): read from its config.json and tensor shapes."""

    layers: int
    attention_layers: int
    mlp: bool  # d_intermediate > 0
    full_rotary: bool  # every attention head dimension is rotated
    own_attention: bool  # q/k/v conv, MHA MLP branch, no rotary, split biases or a custom softmax scale


def resolve(target: Callable[..., Any] | str) -> Callable[..., Any]:
    """A callable, or one named "module:attribute" (imported on first use)."""
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class ArchProfile:
    """One architecture family. Only `name` is required: the defaults describe a generic
    registry-based transformers causal LM (what spanlab assumed before it had profiles)."""

    name: str
    display: str = ""
    description: str = ""
    model_types: frozenset[str] = frozenset()  # config.model_type values covered
    classes: frozenset[str] = frozenset()  # model class names covered (matched when model_type is not)

    # -- finding modules ----------------------------------------------------------------------
    # Attention modules a spanlab variant can be patched into; `patchable` False = none to patch.
    attention_modules: Callable[[Any], list[Any]] = registry_attention_modules
    patchable: bool = True
    attention_suffixes: tuple[str, ...] = ("Attention", "Attention2")
    attention_projections: tuple[tuple[str, ...], ...] = DEFAULT_ATTENTION_PROJECTIONS
    conv_markers: tuple[str, ...] = ("Mixer", "Mamba")  # class-name marks of modules whose Conv1d is the SSM conv

    # -- evaluation -----------------------------------------------------------------------------
    left_padding: bool = True  # batching with left padding is exact (else batch 1)
    static_cache: bool = False  # transformers' static KV cache works (preallocated, no concatenation)
    cuda_graphs: bool = False  # decode steps may run as CUDA graphs over the static cache
    chunked_prefill: Mapping[str, PrefillWay] = field(default_factory=dict)  # class name -> way
    prefill_not_exact: Mapping[str, str] = field(default_factory=dict)  # class name -> why one shot
    # class name -> module whose `install(model) -> bool` makes its chunked forward exact (in place)
    prefill_installers: Mapping[str, str] = field(default_factory=dict)
    ssd_scan: bool = False  # mixers call transformers' mamba2_chunk_scan (spanlab.models.ssd replaces it)
    ssd_modules: tuple[str, ...] = ()  # the transformers modules defining that global
    # spanlab.models.fused's Llama-formula kernels are searched for (they still patch only modules
    # whose source is Llama's); False where no module can match (pure SSMs, RWKV).
    fused_kernels: bool = True
    # mamba_ssm checkpoints: the conversion target this family's class receives ("mamba2", "llama",
    # "bamba", "mamba2attn": spanlab.models.mamba_ssm builds each), and which checkpoint layouts
    # convert to it by default (the profiles' predicates exclude each other).
    conversion_target: str | None = None
    converts: Callable[[CheckpointLayout], bool] | None = None
    # transformers modules whose decode steps call the module globals `causal_conv1d_update` and
    # `mamba2_selective_state_update` (spanlab.models.mamba2_kernels replaces their torch fallbacks)
    decode_kernels: tuple[str, ...] = ()
    # module whose `install(model) -> list[str]` swaps spanlab's prefill kernels into this family's
    # model (per instance; `uninstall_model(model)` undoes it), where `decode_kernels` does not apply
    prefill_kernels: str | None = None

    # -- fine-tuning ----------------------------------------------------------------------------
    # HyLoRA's trainable groups; unknown models are searched for all of them.
    hylora_groups: tuple[str, ...] = GROUPS

    # -- zoo ------------------------------------------------------------------------------------
    zoo: str | None = None  # zoo architecture name (spanlab.zoo.ARCHS)
    zoo_aliases: tuple[str, ...] = ()
    zoo_builder: Callable[..., Any] | str | None = None  # (d, layers, vocab_size) -> transformers config
    zoo_shapes: Mapping[str, ZooShape] = field(default_factory=dict)  # zoo size -> depth and config overrides

    @property
    def label(self) -> str:
        return self.display or self.name

    def covers(self, model_type: str | None, class_name: str | None = None) -> bool:
        return (model_type is not None and model_type in self.model_types) or (
            class_name is not None and class_name in self.classes)

    def find_attention(self, model: Any) -> list[Any]:
        return list(self.attention_modules(model)) if self.patchable else []

    def attention_projection_names(self, model: Any) -> list[str]:
        """Full paths of the q/k/v/o linear layers of every attention module (LoRA targets)."""
        found: list[str] = []
        for name, module in named_attention_modules(model, self.attention_suffixes):
            children = dict(module.named_children())
            for proj_set in self.attention_projections:
                if all(p in children for p in proj_set):
                    found.extend(f"{name}.{p}" for p in proj_set)
                    break
        return found

    def conv_names(self, model: Any) -> list[str]:
        """Paths of the SSM conv1d layers (HyLoRA's `ssm_conv` group)."""
        return mixer_convs(model, self.conv_markers) if "ssm_conv" in self.hylora_groups else []

    def build_zoo_config(self, d: int, layers: int, vocab_size: int, **kw: Any) -> Any:
        if self.zoo_builder is None:
            from spanlab.errors import SpanlabError

            raise SpanlabError(f"architecture {self.name!r} has no zoo builder")
        return resolve(self.zoo_builder)(d, layers, vocab_size, **kw)
