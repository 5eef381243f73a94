"""Which implementation each kernel choice runs: the one home of spanlab's kernel A/B switches.

Every choice computes the same function (up to floating-point rounding); the defaults pick the
fastest path the device runs, and forcing one is for benchmarks and debugging. The settings come
from, later ones winning:

1. the defaults of `KernelSettings` below;
2. the environment variable `SPANLAB_KERNELS="se_backend=cudnn,fused=off"`, read once per process
   (the per-switch variables of earlier releases, `SPANLAB_FUSED=0` etc., still count for one
   release, with a warning naming the new spelling);
3. a run's own `--kernels KEY=VALUE,...` option, or the `kernels:` mapping of its YAML config,
   applied by `use()` for the duration of that run (and recorded in its manifest).

The kernel modules (`spanlab.attention.se`, `spanlab.models.fused`, ...) ask `current()` when they
choose a path. This module sits below every layer: it imports nothing of spanlab but `errors`,
so both `attention` and `models` may read it (tests/structure/test_layering.py).
"""

from __future__ import annotations

import contextlib
import os
import typing
import warnings
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from spanlab.errors import SpanlabError

ENV = "SPANLAB_KERNELS"


class KernelSettings(BaseModel):
    """One field per kernel choice; the field's description is its line in docs/eval.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    se_backend: Literal["auto", "cudnn", "flash", "math", "sdpa"] = Field(
        "auto", description="SE-Attn causal piece: auto = cuDNN then FlashAttention in half precision on CUDA, "
        "the SDPA tile path in float32 on CUDA, math on CPU")
    se_memory: Literal["auto", "triton", "backend"] = Field(
        "auto", description="SE-Attn memory piece: triton (blocks read by index, fused merge) or backend "
        "(gather + the causal kernel); auto = triton with cudnn/flash where its kernels run")
    se_selection: Literal["auto", "torch", "triton"] = Field(
        "auto", description="SE-Attn block statistics: auto = Triton on CUDA for 16/32-bit floats, else torch")
    decode_attn: Literal["auto", "triton", "matmul", "sdpa"] = Field(
        "auto", description="attention of a one-token decode step (`spanlab_sdpa`): auto = triton on CUDA, else sdpa")
    prefill_attn: Literal["auto", "rows", "varlen"] = Field(
        "auto", description="prefill of a left-padded batch: rows (SDPA per run of equal padding) or varlen "
        "(one flash-attention call over the packed batch); auto = rows")
    decode_graphs: Literal["auto", "off"] = Field(
        "auto", description="decode steps as CUDA graphs over static caches where the model allows; off = eager")
    decode_loop: Literal["auto", "generate"] = Field(
        "auto", description="greedy decode over graphed steps: auto = spanlab's loop (next token, EOS and "
        "positions on the device, a host check every 8 steps) where generate would apply no logits processor "
        "and no stop strings are given; generate = transformers' loop for every step")
    fused: Literal["auto", "off"] = Field(
        "auto", description="fused RMSNorm / SwiGLU / rotary Triton kernels of Llama-family models on CUDA")
    ssd: Literal["auto", "torch", "off"] = Field(
        "auto", description="Mamba2-family SSD scan in place of transformers' torch fallback: auto = spanlab's "
        "fused Triton chunk scan for CUDA half-precision inputs that need no gradient, its linear-memory "
        "torch scan otherwise; torch = the torch scan always; off = transformers' own")
    ssd_matmul: Literal["auto", "float32"] = Field(
        "auto", description="operands of the SSD scan's large products: auto = the input's half dtype on CUDA "
        "(float32 accumulation), float32 elsewhere; float32 = float32 everywhere")
    mamba2_decode: Literal["auto", "torch"] = Field(
        "auto", description="Mamba2-family decode step (conv and SSM state updates): auto = spanlab's Triton "
        "kernels for CUDA tensors, transformers' functions otherwise; torch = transformers' functions always")
    mamba2_prefill: Literal["auto", "torch"] = Field(
        "auto", description="Mamba2-family prefill glue (causal conv1d + SiLU over xBC with the padding mask and "
        "conv-state write; gated RMSNorm): auto = spanlab's Triton kernels for CUDA tensors outside autograd, "
        "transformers' code otherwise; torch = transformers' code always")
    rglru_scan: Literal["auto", "torch"] = Field(
        "auto", description="RecurrentGemma RG-LRU recurrence over a multi-token forward: auto = spanlab's chunked "
        "Triton scan for CUDA tensors outside autograd, transformers' per-token loop otherwise; torch = the loop always")

    def changed(self) -> dict[str, str]:
        """The choices that differ from the defaults (what a run forced)."""
        return {k: v for k, v in self.model_dump().items() if v != type(self).model_fields[k].default}

    def spec(self) -> str:
        """The `SPANLAB_KERNELS` / `--kernels` spelling of the forced choices ("" for the defaults)."""
        return ",".join(f"{k}={v}" for k, v in self.changed().items())


NAMES: tuple[str, ...] = tuple(KernelSettings.model_fields)


def choices(name: str) -> tuple[str, ...]:
    """The values a field takes, in the order docs and errors list them."""
    return typing.get_args(KernelSettings.model_fields[name].annotation)


def _known() -> str:
    return "; ".join(f"{n}={'|'.join(choices(n))}" for n in NAMES)


def parse(value: str | Mapping[str, Any] | None, source: str = "--kernels") -> dict[str, str]:
    """Kernel choices from `"se_backend=cudnn,fused=off"` or a mapping, checked: an unknown key or
    value is a SpanlabError that names `source` and lists the valid ones. Empty -> {}."""
    if value is None:
        return {}
    if isinstance(value, KernelSettings):
        return value.changed()
    items: list[tuple[str, Any]]
    if isinstance(value, str):
        items = []
        for part in value.split(","):
            if not part.strip():
                continue  # "a=b," : a trailing comma is harmless
            key, eq, val = part.partition("=")
            if not eq or not key.strip() or not val.strip():
                raise SpanlabError(f"{source}: {part.strip()!r} is not KEY=VALUE; write e.g. se_backend=cudnn,fused=off")
            items.append((key.strip(), val.strip()))
    elif isinstance(value, Mapping):
        items = list(value.items())
    else:
        raise SpanlabError(f"{source}: expected KEY=VALUE pairs or a mapping, got {type(value).__name__}")
    out: dict[str, str] = {}
    for key, val in items:
        key = str(key)
        if key not in KernelSettings.model_fields:
            raise SpanlabError(f"{source}: unknown kernel choice {key!r}; the choices are {_known()}")
        text = str(val).strip().lower()
        if text not in choices(key):
            raise SpanlabError(f"{source}: {key}={val!r} is not one of {', '.join(choices(key))}")
        out[key] = text
    return out


# The per-switch variables of earlier releases: old value -> field value (anything else is an
# error, as it was). Kept one release, then removed.
_ON_OFF = {"auto": "auto", "1": "auto", "on": "auto", "0": "off", "off": "off"}
LEGACY: dict[str, tuple[str, dict[str, str] | None]] = {
    "SPANLAB_SE_BACKEND": ("se_backend", None),
    "SPANLAB_SE_MEMORY": ("se_memory", None),
    "SPANLAB_SE_SELECTION": ("se_selection", None),
    "SPANLAB_DECODE_ATTN": ("decode_attn", None),
    "SPANLAB_PREFILL_ATTN": ("prefill_attn", None),
    "SPANLAB_DECODE_GRAPHS": ("decode_graphs", _ON_OFF),
    "SPANLAB_FUSED": ("fused", _ON_OFF),
    # It was "off unless 0/false/no/off"; any other value meant on.
    "SPANLAB_SSD": ("ssd", {"0": "off", "false": "off", "no": "off", "off": "off"}),
}


def from_env(environ: Mapping[str, str] | None = None) -> KernelSettings:
    """The settings the environment asks for: `SPANLAB_KERNELS`, over any legacy per-switch
    variable (each one set gives a FutureWarning with its new spelling)."""
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for var, (field, mapping) in LEGACY.items():
        raw = env.get(var)
        if raw is None or not raw.strip():
            continue
        text = raw.strip().lower()
        if mapping is not None:
            text = mapping.get(text, "auto" if var == "SPANLAB_SSD" else text)
        values.update(parse({field: text}, source=var))
        warnings.warn(f"{var}={raw} is deprecated and will stop working in the next release; "
                      f"use {ENV}={field}={values[field]} (or --kernels {field}={values[field]})",
                      FutureWarning, stacklevel=3)
    values.update(parse(env.get(ENV), source=ENV))
    return KernelSettings(**values)


_env_settings: KernelSettings | None = None
_active: KernelSettings | None = None


def reload() -> KernelSettings:
    """Read the environment again (it is otherwise read once, at the first `current()`)."""
    global _env_settings
    _env_settings = from_env()
    return _env_settings


def current() -> KernelSettings:
    """The settings in force: the running `use()` block's, else the environment's."""
    if _active is not None:
        return _active
    return _env_settings if _env_settings is not None else reload()


@contextlib.contextmanager
def use(overrides: str | Mapping[str, Any] | None = None, source: str = "--kernels") -> Iterator[KernelSettings]:
    """Within this block the given choices hold on top of those already in force (the
    environment's, or an enclosing block's: a study's `kernels:` under one run's own)."""
    global _active
    base = current()
    changed = parse(overrides, source)
    new = base.model_copy(update=changed) if changed else base  # parse() checked every value
    previous, _active = _active, new
    try:
        yield new
    finally:
        _active = previous


def configure(overrides: str | Mapping[str, Any] | None = None, source: str = "--kernels") -> KernelSettings:
    """Set the choices for the rest of the process, on top of the environment's (benchmarks that
    compare paths in one process, notebooks); None goes back to the environment's."""
    global _active
    base = _env_settings if _env_settings is not None else reload()
    changed = parse(overrides, source)
    _active = base.model_copy(update=changed) if changed else None
    return current()


def docs_table() -> list[str]:
    """The Markdown table of docs/eval.md (a test checks the page lists exactly these fields)."""
    rows = ["| choice | values (default first) | what it picks |", "|---|---|---|"]
    for name in NAMES:
        field = KernelSettings.model_fields[name]
        values = " \\| ".join(f"`{c}`" for c in choices(name))  # a bare | would end the cell
        rows.append(f"| `{name}` | {values} | {field.description} |")
    return rows


def _check_field(value: Any) -> dict[str, str]:
    """`parse` for a pydantic field validator: a ValueError, which pydantic reports under the
    field's name (the CLI names it `--kernels`, a YAML loader `kernels`)."""
    try:
        return parse(value, source="kernels")
    except SpanlabError as e:
        raise ValueError(str(e).removeprefix("kernels: ")) from None


# A config field of kernel choices (`kernels:` in YAML, `--kernels` on the command line): checked
# like the environment variable, stored as the forced choices only.
KernelChoices = Annotated[dict[str, str], BeforeValidator(_check_field)]


__all__ = ["ENV", "NAMES", "KernelChoices", "KernelSettings", "choices", "configure", "current", "docs_table", "from_env",
           "parse", "reload", "use"]
