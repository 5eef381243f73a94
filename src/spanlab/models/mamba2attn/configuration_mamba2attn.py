"""Configuration of the Mamba2-Attn hybrid (mamba_ssm's MambaLMHeadModel with MHA layers).

One config covers the state-spaces checkpoints built by mamba_ssm's `mixer_seq_simple`:
Mamba-2 layers, attention layers (`attn_layer_indices`) whose q/k/v may pass a depthwise causal
conv1d (`attn_conv_kernel` > 0, as in mamba2attn-2.7b) and carry rotary on only part of each head
(`rotary_dim`), and an optional gated MLP after every mixer (`intermediate_size` > 0, as in
transformerpp-2.7b, where every layer is attention). The field names of the Mamba-2 layers are
Bamba's, so transformers' `BambaMixer` (and spanlab's SSD scan installed into it) runs them.
"""

from __future__ import annotations

from transformers import PreTrainedConfig

MODEL_TYPE = "spanlab_mamba2attn"


class M2AConfig(PreTrainedConfig):
    model_type = MODEL_TYPE
    # transformers' cache and mask builders read `layer_types`; ours is derived, never stored.
    attribute_map = {"layer_types": "layers_block_type"}
    keys_to_ignore_at_inference = ["past_key_values", "cache"]  # the output's cache field before / from 5.24

    vocab_size: int = 50288
    hidden_size: int = 2560
    num_hidden_layers: int = 64
    attn_layer_indices: list[int] | None = None
    # Gated MLP width after every mixer; 0 = no MLP (mamba_ssm's d_intermediate=0).
    intermediate_size: int = 0
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    tie_word_embeddings: bool = True
    initializer_range: float = 0.02
    use_cache: bool = True
    num_logits_to_keep: int | None = 1
    pad_token_id: int | None = 0
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 0
    max_position_embeddings: int = 2048
    # --- attention layers (mamba_ssm MHA)
    num_attention_heads: int = 30
    num_key_value_heads: int | None = None
    head_dim: int | None = 128
    rotary_dim: int = 64  # rotary on the first `rotary_dim` dims of each head, non-interleaved
    rope_theta: float = 10000.0
    attn_conv_kernel: int = 0  # depthwise causal conv over the q/k/v channels (with bias, no activation)
    attn_mlp_dim: int = 0  # MHA's own gated MLP branch, already rounded up to a multiple of 256
    attention_bias: bool = False  # in_proj (q/k/v) bias
    attention_out_bias: bool = False
    softmax_scale: float | None = None  # None = 1/sqrt(head_dim)
    attention_dropout: float = 0.0
    # --- Mamba-2 layers (Bamba's names; BambaMixer reads them)
    mamba_n_heads: int = 80
    mamba_d_head: int = 64
    mamba_n_groups: int = 1
    mamba_d_state: int = 128
    mamba_d_conv: int = 4
    mamba_expand: int = 2
    mamba_chunk_size: int = 256
    mamba_conv_bias: bool = True
    mamba_proj_bias: bool = False
    time_step_limit: list[float] | tuple[float, float] | None = (0.0, float("inf"))

    def __post_init__(self, **kwargs):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        self.attn_layer_indices = sorted(int(i) for i in (self.attn_layer_indices or []))
        self.time_step_limit = tuple(self.time_step_limit) if self.time_step_limit is not None else None
        super().__post_init__(**kwargs)
        self._check()

    def _check(self) -> None:
        # ValueError is what transformers raises for bad configs; spanlab's loaders turn it into a one-line error.
        bad = [i for i in self.attn_layer_indices if not 0 <= i < self.num_hidden_layers]
        if bad:
            raise ValueError(f"attn_layer_indices {bad} outside 0..{self.num_hidden_layers - 1}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.rotary_dim % 2 or not 0 <= self.rotary_dim <= self.head_dim:
            raise ValueError(f"rotary_dim must be even and at most head_dim={self.head_dim}, got {self.rotary_dim}")
        if self.attn_mlp_dim % 2:
            raise ValueError("attn_mlp_dim must be even (it holds [up | gate])")
        if len(self.attn_layer_indices) < self.num_hidden_layers and \
                self.mamba_d_head * self.mamba_n_heads != self.mamba_expand * self.hidden_size:
            raise ValueError("mamba_n_heads * mamba_d_head must equal mamba_expand * hidden_size")

    @property
    def layers_block_type(self) -> list[str]:
        """Cache layout per layer: "hybrid" = KV cache + conv state (attention with a q/k/v conv)."""
        attn = set(self.attn_layer_indices or [])
        conv = "hybrid" if self.attn_conv_kernel > 0 else "full_attention"
        return [conv if i in attn else "linear_attention" for i in range(self.num_hidden_layers)]

    @property
    def mixer_types(self) -> list[str]:
        attn = set(self.attn_layer_indices or [])
        return ["attention" if i in attn else "mamba" for i in range(self.num_hidden_layers)]


__all__ = ["MODEL_TYPE", "M2AConfig"]
