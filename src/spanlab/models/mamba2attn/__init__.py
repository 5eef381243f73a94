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

    from spanlab.models.mamba2attn.configuration_mamba2attn import MODEL_TYPE, Mamba2AttnConfig
    from spanlab.models.mamba2attn.modeling_mamba2attn import Mamba2AttnForCausalLM, Mamba2AttnModel

    AutoConfig.register(MODEL_TYPE, Mamba2AttnConfig, exist_ok=True)
    AutoModel.register(Mamba2AttnConfig, Mamba2AttnModel, exist_ok=True)
    AutoModelForCausalLM.register(Mamba2AttnConfig, Mamba2AttnForCausalLM, exist_ok=True)
    _done = True


def __getattr__(name: str) -> Any:
    # Lazy: importing the package (e.g. for register) must not pull torch into light CLI paths.
    if name == "Mamba2AttnConfig":
        from spanlab.models.mamba2attn.configuration_mamba2attn import Mamba2AttnConfig

        return Mamba2AttnConfig
    if name in ("Mamba2AttnForCausalLM", "Mamba2AttnModel"):
        from spanlab.models.mamba2attn import modeling_mamba2attn

        return getattr(modeling_mamba2attn, name)
    raise AttributeError(name)


__all__ = ["Mamba2AttnConfig", "Mamba2AttnForCausalLM", "Mamba2AttnModel", "register"]
