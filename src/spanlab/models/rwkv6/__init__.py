"""RWKV-6 "Finch" (RWKV/rwkv-6-world-*) as a native transformers class, no remote code.

`register()` binds model_type "rwkv6" (the hub checkpoints' own) to spanlab's classes and the
"world" tokenizer (`tokenizer.py`), unless the installed transformers ships its own; spanlab's loaders call it (`spanlab.models.native`). The
WKV scan runs flash-linear-attention's kernel on CUDA when the optional `rwkv` extra is installed
(`pip install spanlab[rwkv]`), an exact chunked torch form otherwise (`wkv.py`).
"""

from __future__ import annotations

from typing import Any

_done = False


def register() -> None:
    global _done
    if _done:
        return
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    from spanlab.models.rwkv6.configuration_rwkv6 import MODEL_TYPE, Rwkv6Config
    from spanlab.models.rwkv6.modeling_rwkv6 import Rwkv6ForCausalLM, Rwkv6Model

    if MODEL_TYPE not in CONFIG_MAPPING_NAMES:  # a transformers release with its own RWKV-6 keeps it
        from transformers import AutoTokenizer

        from spanlab.models.rwkv6.tokenizer import Rwkv6Tokenizer

        AutoConfig.register(MODEL_TYPE, Rwkv6Config, exist_ok=True)
        AutoModel.register(Rwkv6Config, Rwkv6Model, exist_ok=True)
        AutoModelForCausalLM.register(Rwkv6Config, Rwkv6ForCausalLM, exist_ok=True)
        # By name too: the hub's tokenizer_config.json says tokenizer_class "Rwkv6Tokenizer".
        AutoTokenizer.register(Rwkv6Config, slow_tokenizer_class=Rwkv6Tokenizer, exist_ok=True)
    _done = True


def __getattr__(name: str) -> Any:
    if name == "Rwkv6Config":
        from spanlab.models.rwkv6.configuration_rwkv6 import Rwkv6Config

        return Rwkv6Config
    if name == "Rwkv6Tokenizer":
        from spanlab.models.rwkv6.tokenizer import Rwkv6Tokenizer

        return Rwkv6Tokenizer
    if name in ("Rwkv6ForCausalLM", "Rwkv6Model"):
        from spanlab.models.rwkv6 import modeling_rwkv6

        return getattr(modeling_rwkv6, name)
    raise AttributeError(name)


__all__ = ["Rwkv6Config", "Rwkv6ForCausalLM", "Rwkv6Model", "Rwkv6Tokenizer", "register"]
