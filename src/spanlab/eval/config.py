"""Typed eval configuration: every `spanlab eval` flag maps to one field (YAML-loadable too).

This model is the one place the flags' defaults and limits live: `spanlab eval` builds it from
its arguments (a validation error becomes a one-line error naming the flag), the study runner
builds it from a study config. Lengths may be written `4096` or `4k` (spanlab.units).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from spanlab.configs import as_value_error
from spanlab.kernels import KernelChoices
from spanlab.models.prefill import DEFAULT_PREFILL_CHUNK
from spanlab.units import parse_depth, parse_length


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    backend: str = "hf"  # spanlab.models.BACKENDS
    tokenizer: str | None = None
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$")
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    prefill_chunk: int = Field(DEFAULT_PREFILL_CHUNK, ge=0)  # tokens per prefill chunk of recurrent/hybrid HF models; 0 = one shot
    # what to run: a suite / task list generated in-process, or sample files
    suite: str | None = None
    tasks: list[str] = Field(default_factory=list)
    lengths: list[int] = Field(default_factory=list)
    depths: list[float] | None = None  # needle depths in percent (spanlab.units)
    num_samples: int = Field(25, ge=1)
    template: str = "base"
    seed: int = Field(0, ge=0)
    samples: list[str] = Field(default_factory=list)
    out: str
    # decoding
    batch_size: int = Field(16, ge=1)
    max_batch_tokens: int = Field(262_144, ge=1)
    stop: list[str] = Field(default_factory=list)
    max_new_tokens: int | None = Field(None, ge=1)
    allow_extrapolation: bool = False
    train_length: int | None = None
    # HTTP backend
    base_url: str | None = None
    api_key: str | None = None
    concurrency: int = Field(8, ge=1)
    timeout: float = Field(600.0, gt=0)
    retries: int = Field(3, ge=0)
    progress: bool = True
    kernels: KernelChoices = Field(default_factory=dict)  # forced kernel choices (spanlab.kernels), recorded in the manifest

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        from spanlab.models import BACKENDS

        if v not in BACKENDS:
            raise ValueError(f"unknown backend {v!r}; use one of {', '.join(BACKENDS)}")
        return v

    @field_validator("lengths", mode="before")
    @classmethod
    def _lengths(cls, v: Any) -> Any:
        # "4k,8k" (a flag), ["4k", 8192] (YAML) and [4096] all mean the same lengths.
        if isinstance(v, str):
            v = v.split(",")
        return [as_value_error(parse_length, x) for x in v if str(x).strip()] if isinstance(v, (list, tuple)) else v

    @field_validator("train_length", mode="before")
    @classmethod
    def _train_length(cls, v: Any) -> Any:
        return None if v is None else as_value_error(parse_length, v)

    @field_validator("depths", mode="before")
    @classmethod
    def _depths(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [x for x in v.split(",") if x.strip()] or None
        return None if v is None else [as_value_error(parse_depth, x) for x in v]
