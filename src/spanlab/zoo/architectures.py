"""How each zoo architecture turns (width, depth, vocabulary) into a transformers config.

Every builder takes the same three knobs so sizes can be matched across families: `d` (model
width, shared by all architectures of one size so embeddings cost the same), `layers` (the knob
tuned per family to match the non-embedding parameter count) and `vocab_size`. Embeddings are
tied everywhere, so the total count differs between families only through the non-embedding part.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transformers import (
    BambaConfig,
    LlamaConfig,
    Mamba2Config,
    PretrainedConfig,
    RecurrentGemmaConfig,
    RwkvConfig,
)

from spanlab.models.arch import zoo_profiles

# Long enough for 8x extrapolation tests at every zoo context; RoPE needs no table of this size.
MAX_POSITIONS = 131072


def _heads(d: int) -> int:
    # 64-dim heads as in Llama/GPT; the tiny width still gets 4 heads.
    return max(d // 64, 4)


def _swiglu_width(d: int) -> int:
    # Llama's 8/3 * d rounded up to a multiple of 64: same MLP cost as a 4d GELU MLP.
    return ((8 * d // 3 + 63) // 64) * 64


def _mamba_heads(d: int, expand: int = 2) -> tuple[int, int]:
    head_dim = 32 if d < 512 else 64
    return (expand * d) // head_dim, head_dim


def llama(d: int, layers: int, vocab_size: int, **kw: Any) -> PretrainedConfig:
    """Transformer++: RoPE, SwiGLU, RMSNorm, no biases (the Llama recipe)."""
    h = _heads(d)
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=d,
        intermediate_size=_swiglu_width(d),
        num_hidden_layers=layers,
        num_attention_heads=h,
        num_key_value_heads=h,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        **kw,
    )


def mamba2(d: int, layers: int, vocab_size: int, **kw: Any) -> PretrainedConfig:
    """Pure Mamba2 (SSD) stack: no attention and no MLP, as in the Mamba2 paper's LM."""
    n_heads, head_dim = _mamba_heads(d)
    return Mamba2Config(
        vocab_size=vocab_size,
        hidden_size=d,
        num_hidden_layers=layers,
        expand=2,
        num_heads=n_heads,
        head_dim=head_dim,
        state_size=64 if d < 512 else 128,
        n_groups=1,
        conv_kernel=4,
        chunk_size=64,
        tie_word_embeddings=True,
        **kw,
    )


def hybrid_attention_layers(layers: int, every: int = 4) -> list[int]:
    """Indices of the attention layers of the Mamba2-hybrid: one in every `every` layers, placed
    mid-group (2, 6, 10, ...) so the first and last layers are Mamba2 as in Bamba / Mamba2-Hybrid."""
    idx = [i for i in range(layers) if i % every == every // 2]
    return idx or [layers // 2]


def mamba2_hybrid(d: int, layers: int, vocab_size: int, **kw: Any) -> PretrainedConfig:
    """Mamba2 layers with a full-attention layer at a fixed 1:4 ratio, each followed by an MLP (Bamba)."""
    n_heads, head_dim = _mamba_heads(d)
    h = _heads(d)
    return BambaConfig(
        vocab_size=vocab_size,
        hidden_size=d,
        intermediate_size=_swiglu_width(d),
        num_hidden_layers=layers,
        num_attention_heads=h,
        num_key_value_heads=h,
        attn_layer_indices=hybrid_attention_layers(layers),
        mamba_n_heads=n_heads,
        mamba_d_head=head_dim,
        mamba_d_state=64 if d < 512 else 128,
        mamba_n_groups=1,
        mamba_expand=2,
        mamba_chunk_size=64,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        **kw,
    )


def griffin(d: int, layers: int, vocab_size: int, **kw: Any) -> PretrainedConfig:
    """Griffin (RecurrentGemma): two RG-LRU blocks per local-attention block, gated MLP after each."""
    kw.setdefault("attention_window_size", 2048)
    return RecurrentGemmaConfig(
        vocab_size=vocab_size,
        hidden_size=d,
        # RecurrentGemma halves this internally: 6d here is Griffin's MLP expansion of 3.
        intermediate_size=6 * d,
        num_hidden_layers=layers,
        num_attention_heads=_heads(d),
        num_key_value_heads=1,  # Griffin uses multi-query attention
        lru_width=d,
        block_types=["recurrent", "recurrent", "attention"],
        tie_word_embeddings=True,
        **kw,
    )


def rwkv(d: int, layers: int, vocab_size: int, **kw: Any) -> PretrainedConfig:
    """RWKV-4 (transformers' maintained implementation; a PyTorch time loop when no CUDA kernel)."""
    kw.setdefault("context_length", MAX_POSITIONS)
    return RwkvConfig(
        vocab_size=vocab_size,
        hidden_size=d,
        num_hidden_layers=layers,
        attention_hidden_size=d,
        intermediate_size=4 * d,
        tie_word_embeddings=True,
        **kw,
    )


# zoo name -> builder, from the architecture profiles that name a zoo builder (spanlab.models.arch):
# transformer (llama), mamba2, hybrid (mamba2_hybrid), griffin (recurrent_gemma), rwkv.
BUILDERS: dict[str, Callable[..., PretrainedConfig]] = {name: p.build_zoo_config for name, p in zoo_profiles().items()}
