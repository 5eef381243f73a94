"""Model backends: load a model + tokenizer; batched greedy generation; log-likelihood."""

from __future__ import annotations

from typing import Any

from spanlab.errors import SpanlabError
from spanlab.models.base import Backend, Generation

BACKENDS = ("hf", "mamba_ssm", "openai", "vllm")


def load_backend(cfg: Any) -> Backend:
    """Build the backend an `EvalConfig` (or any object with the same fields) asks for."""
    name = cfg.backend
    if name == "hf":
        from spanlab.models.hf import HFBackend
        from spanlab.models.prefill import DEFAULT_PREFILL_CHUNK

        return HFBackend(cfg.model, tokenizer=cfg.tokenizer, dtype=cfg.dtype, device=cfg.device,
                         attn_implementation=cfg.attn_implementation, trust_remote_code=cfg.trust_remote_code,
                         prefill_chunk=getattr(cfg, "prefill_chunk", DEFAULT_PREFILL_CHUNK))
    if name == "mamba_ssm":
        from spanlab.models.mamba_ssm import load_mamba_ssm

        return load_mamba_ssm(cfg)
    if name == "openai":
        from spanlab.models.openai import OpenAIBackend

        return OpenAIBackend(cfg.model, base_url=cfg.base_url, api_key=cfg.api_key, tokenizer=cfg.tokenizer,
                             concurrency=cfg.concurrency, timeout=cfg.timeout, retries=cfg.retries)
    if name == "vllm":
        from spanlab.models.builtin import resolve_builtin
        from spanlab.models.vllm import VLLMBackend

        # vLLM loads folders itself; HFBackend resolves `builtin:` names on its own.
        return VLLMBackend(resolve_builtin(cfg.model), tokenizer=resolve_builtin(cfg.tokenizer) if cfg.tokenizer else None,
                           dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    raise SpanlabError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "Generation", "load_backend"]
