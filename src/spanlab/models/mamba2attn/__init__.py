"""Mamba2-Attn hybrid (state-spaces/mamba2attn-2.7b, transformerpp-2.7b) as a native transformers class.

`register()` makes `AutoConfig` / `AutoModelForCausalLM.from_pretrained` load a converted folder
(config.json with model_type "spanlab_mamba2attn" + model.safetensors) without trust_remote_code;
spanlab's loaders call it (see `spanlab.models.native`).
"""

from __future__ import annotations

from typing import Any

_done = False


def register() -> None:
    global _done
    if _done:
        return
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from spanlab.models.mamba2attn.configuration_mamba2attn import MODEL_TYPE, M2AConfig
    from spanlab.models.mamba2attn.modeling_mamba2attn import M2AForCausalLM, M2AModel

    AutoConfig.register(MODEL_TYPE, M2AConfig, exist_ok=True)
    AutoModel.register(M2AConfig, M2AModel, exist_ok=True)
    AutoModelForCausalLM.register(M2AConfig, M2AForCausalLM, exist_ok=True)
    _done = True


def __getattr__(name: str) -> Any:
    # Lazy: importing the package (e.g. for register) must not pull torch into light CLI paths.
    if name == "M2AConfig":
        from spanlab.models.mamba2attn.configuration_mamba2attn import M2AConfig

        return M2AConfig
    if name in ("M2AForCausalLM", "M2AModel"):
        from spanlab.models.mamba2attn import modeling_mamba2attn

        return getattr(modeling_mamba2attn, name)
    raise AttributeError(name)


__all__ = ["M2AConfig", "M2AForCausalLM", "M2AModel", "register"]
