"""Model zoo: small reference architectures with matched parameter counts for controlled studies.

    >>> from spanlab.zoo import zoo_config, build_model
    >>> model = build_model("hybrid", "tiny", vocab_size=8192, seed=0)

Architectures: `transformer` (Transformer++: the Llama recipe with RoPE on half of each head), `mamba2`, `hybrid` (Mamba2 + 1:4 attention,
Bamba), `griffin` (RecurrentGemma), `rwkv` (RWKV-4). Sizes: `tiny`, `small`, `base`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spanlab.errors import SpanlabError
from spanlab.models.arch import zoo_profiles
from spanlab.zoo.architectures import BUILDERS
from spanlab.zoo.sizes import SIZES, WIDTHS

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel

ARCHS: tuple[str, ...] = tuple(BUILDERS)
# Alternative spellings and report names of the zoo architectures, from their profiles.
ALIASES = {alias: name for name, p in zoo_profiles().items() for alias in p.zoo_aliases}
DISPLAY_NAMES = {name: p.label for name, p in zoo_profiles().items()}


def canonical_arch(arch: str) -> str:
    # Read from the registry at call time, so a profile registered after import (a plug-in) counts.
    profiles = zoo_profiles()
    a = arch.strip().lower()
    a = {alias: name for name, p in profiles.items() for alias in p.zoo_aliases}.get(a, a)
    if a not in profiles:
        raise SpanlabError(f"unknown architecture {arch!r}; choose one of {', '.join(profiles)}")
    return a


def zoo_config(
    arch: str,
    size: str,
    *,
    vocab_size: int,
    pad_token_id: int | None = None,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    **overrides: Any,
) -> PretrainedConfig:
    """The transformers config of zoo model `arch` at `size`; `overrides` set any config field."""
    a = canonical_arch(arch)
    if size not in SIZES:
        raise SpanlabError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    if vocab_size < 2:
        raise SpanlabError(f"vocab_size must be at least 2, got {vocab_size}")
    profile = zoo_profiles()[a]
    shape = profile.zoo_shapes.get(size)
    if shape is None:
        raise SpanlabError(f"architecture {a!r} has no {size!r} shape (its profile's zoo_shapes); "
                           f"choose one of {', '.join(profile.zoo_shapes) or 'none'}")
    cfg = profile.build_zoo_config(WIDTHS[size], shape.layers, vocab_size)
    # Special tokens follow the tokenizer, not the upstream model's defaults (which may exceed our vocab).
    for name, value in (("pad_token_id", pad_token_id), ("bos_token_id", bos_token_id), ("eos_token_id", eos_token_id)):
        setattr(cfg, name, value)
    for key, value in {**shape.overrides, **overrides}.items():
        if key == "partial_rotary_factor" and isinstance(getattr(cfg, "rope_parameters", None), dict):
            # transformers 5 reads the fraction from rope_parameters; a plain attribute is ignored.
            cfg.rope_parameters["partial_rotary_factor"] = float(value)
            continue
        setattr(cfg, key, value)
    # Tags so a saved checkpoint says what it is.
    cfg.spanlab_arch = a
    cfg.spanlab_size = size
    return cfg


# Zoo architectures whose layers run transformers' Mamba2 chunk scan.
SSD_ARCHS = frozenset(name for name, p in zoo_profiles().items() if p.ssd_scan)


def use_fast_ssd() -> list[str]:
    """Route transformers' Mamba2-family layers through spanlab's SSD scan (`spanlab.models.ssd`):
    the same results as transformers' pure-torch fallback without its 6-D intermediates, which
    bound Mamba2 training without mamba-ssm at ~24K tokens/s on an H100 (docs/benchmarks.md).
    Idempotent; a real mamba-ssm kernel is never displaced; the kernel choice `ssd=off` keeps transformers' own.
    Returns the modules now using spanlab's scan."""
    from spanlab.models import ssd

    if not ssd.enabled():
        return []
    return ssd.install()


def build_model(
    arch: str,
    size: str,
    *,
    vocab_size: int,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    **config_kwargs: Any,
) -> PreTrainedModel:
    """A freshly initialised causal LM from the zoo (deterministic for a given seed)."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = zoo_config(arch, size, vocab_size=vocab_size, **config_kwargs)
    if cfg.spanlab_arch in SSD_ARCHS:
        use_fast_ssd()  # a module-level swap: covers this model's training and later loads in-process
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    if dtype is not None:
        model = model.to(dtype)
    return model


def count_parameters(model: torch.nn.Module, *, non_embedding: bool = False) -> int:
    """Unique parameters (tied weights counted once); `non_embedding` drops the token embedding."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():  # parameters() already yields a tied tensor once
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    if non_embedding:
        total -= model.get_input_embeddings().weight.numel()
    return total


def zoo_table(vocab_size: int) -> list[dict[str, Any]]:
    """One row per (size, arch) with layer count and parameter counts, built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    rows = []
    for size, (width, shapes) in SIZES.items():
        for a in ARCHS:
            cfg = zoo_config(a, size, vocab_size=vocab_size)
            with torch.device("meta"):
                m = AutoModelForCausalLM.from_config(cfg)
            rows.append(
                {
                    "size": size,
                    "arch": a,
                    "name": DISPLAY_NAMES[a],
                    "width": width,
                    "layers": shapes[a].layers,
                    "params": count_parameters(m),
                    "non_embedding_params": count_parameters(m, non_embedding=True),
                }
            )
    return rows


__all__ = [
    "ARCHS",
    "DISPLAY_NAMES",
    "SIZES",
    "build_model",
    "canonical_arch",
    "count_parameters",
    "use_fast_ssd",
    "zoo_config",
    "zoo_table",
]
