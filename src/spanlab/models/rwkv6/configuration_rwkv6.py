"""Configuration of RWKV-6 "Finch" (RWKV/rwkv-6-world-*), the fields of the hub checkpoints' config.json.

The hub checkpoints ship this architecture as remote code; spanlab registers its own class under
the same model_type "rwkv6", so such a folder loads with trust_remote_code off.
"""

from __future__ import annotations

from transformers import PreTrainedConfig

MODEL_TYPE = "rwkv6"


class Rwkv6Config(PreTrainedConfig):
    model_type = MODEL_TYPE
    # No max_position_embeddings on purpose: a recurrent model has no positional limit, and spanlab's
    # backends read that field as the longest prompt allowed.

    vocab_size: int = 65536
    hidden_size: int = 2560
    num_hidden_layers: int = 32
    attention_hidden_size: int | None = None
    head_size: int = 64
    head_size_divisor: int = 8
    intermediate_size: int | None = None
    layer_norm_epsilon: float = 1e-5
    # LoRA widths of the data-dependent token shift and decay (the reference code's 32/64, 64/128 at 7B width).
    time_mix_extra_dim: int | None = None
    time_decay_extra_dim: int | None = None
    rescale_every: int = 6  # fp16 overflow guard of the reference; scale-invariant, so not applied here
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 0
    pad_token_id: int | None = None
    tie_word_embeddings: bool = False
    use_cache: bool = True
    initializer_range: float = 0.02
    # Scan used for multi-token forwards: "auto" = flash-linear-attention's chunk kernel on CUDA when
    # importable, else spanlab's chunked torch form; "chunk" / "recurrent" force the torch forms.
    wkv_impl: str = "auto"
    wkv_chunk: int = 32

    def __post_init__(self, **kwargs):
        if self.attention_hidden_size is None:
            self.attention_hidden_size = self.hidden_size
        if self.intermediate_size is None:
            self.intermediate_size = int((self.hidden_size * 3.5) // 32 * 32)
        if self.time_mix_extra_dim is None:
            self.time_mix_extra_dim = 64 if self.hidden_size == 4096 else 32
        if self.time_decay_extra_dim is None:
            self.time_decay_extra_dim = 128 if self.hidden_size == 4096 else 64
        super().__post_init__(**kwargs)
        if self.attention_hidden_size % self.head_size:
            raise ValueError(f"attention_hidden_size {self.attention_hidden_size} is not a multiple of head_size {self.head_size}")
        if self.wkv_impl not in ("auto", "chunk", "recurrent", "fla"):
            raise ValueError(f"wkv_impl must be auto, chunk, recurrent or fla, got {self.wkv_impl!r}")

    @property
    def num_heads(self) -> int:
        return self.attention_hidden_size // self.head_size


__all__ = ["MODEL_TYPE", "Rwkv6Config"]
