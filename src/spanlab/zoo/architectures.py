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
    GlmConfig,
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


# The Mamba2 mixer's fields as each config class spells them: expand, heads, head dim, state,
# groups, conv width, SSD chunk.
MAMBA2_FIELDS = ("expand", "num_heads", "head_dim", "state_size", "n_groups", "conv_kernel", "chunk_size")
BAMBA_FIELDS = ("mamba_expand", "mamba_n_heads", "mamba_d_head", "mamba_d_state", "mamba_n_groups", "mamba_d_conv",
                "mamba_chunk_size")


def _mamba_mixer(d: int, fields: tuple[str, ...]) -> dict[str, int]:
    """The zoo's Mamba2 mixer at width `d` as config fields (MAMBA2_FIELDS or BAMBA_FIELDS): the
    pure stack's and the hybrid's Mamba2 layers are the same mixer. 2x expansion into 32-dim heads
    (64 from d = 512), state 64 (128 from d = 512), one group, a width-4 conv, SSD chunks of 64."""
    expand, head_dim = 2, 32 if d < 512 else 64
    values = (expand, (expand * d) // head_dim, head_dim, 64 if d < 512 else 128, 1, 4, 64)
    return dict(zip(fields, values, strict=True))


# RoPE on half of every head, as the seed study's models (state-spaces/transformerpp-2.7b and
# mamba2attn-2.7b rotate 64 of 128 dims; transformers' Bamba and RecurrentGemma fix 0.5 too): with
# one fraction for every family, "Transformer++ vs hybrid" does not also compare RoPE fractions.
ROTARY_FRACTION = 0.5


def llama(d: int, layers: int, vocab_size: int, **kw: Any) -> PretrainedConfig:
    """Transformer++: RoPE on half of each head, SwiGLU, RMSNorm, no biases (the Llama recipe).

    Built as transformers' GLM class: its decoder is Llama's computation (separate q/k/v/o
    projections, so LoRA adapts the same matrices as on a Llama; gate and up stored as one matrix,
    the same parameters) and, unlike LlamaConfig, it honours `partial_rotary_factor` (Llama
    silently rotates the whole head). GLM pairs rotated dims (2i, 2i+1) where GPT-NeoX pairs
    (i, i + R/2): a fixed permutation of the head's dims, which learned q/k weights absorb.
    Pass `partial_rotary_factor=1.0` for full-head RoPE."""
    h = _heads(d)
    head_dim = d // h
    kw.setdefault("partial_rotary_factor", ROTARY_FRACTION)
    if int(head_dim * kw["partial_rotary_factor"]) % 2:
        raise ValueError(f"partial_rotary_factor {kw['partial_rotary_factor']} of a {head_dim}-dim head is not an "
                         "even number of dims")
    for token in ("bos_token_id", "eos_token_id", "pad_token_id"):  # not GLM's 151K-vocab ids: zoo_config sets them
        kw.setdefault(token, None)
    return GlmConfig(
        vocab_size=vocab_size,
        hidden_size=d,
        intermediate_size=_swiglu_width(d),
        num_hidden_layers=layers,
        num_attention_heads=h,
        num_key_value_heads=h,
        head_dim=head_dim,
        attention_bias=False,
        rms_norm_eps=1e-6,  # Llama's (GLM's default is 1.5625e-7)
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        **kw,
    )


def mamba2(d: int, layers: int, vocab_size: int, **kw: Any) -> PretrainedConfig:
    """Pure Mamba2 (SSD) stack: no attention and no MLP, as in the Mamba2 paper's LM."""
    return Mamba2Config(
        vocab_size=vocab_size,
        hidden_size=d,
        num_hidden_layers=layers,
        **_mamba_mixer(d, MAMBA2_FIELDS),
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
    h = _heads(d)
    return BambaConfig(
        vocab_size=vocab_size,
        hidden_size=d,
        intermediate_size=_swiglu_width(d),
        num_hidden_layers=layers,
        num_attention_heads=h,
        num_key_value_heads=h,
        attn_layer_indices=hybrid_attention_layers(layers),
        **_mamba_mixer(d, BAMBA_FIELDS),
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
