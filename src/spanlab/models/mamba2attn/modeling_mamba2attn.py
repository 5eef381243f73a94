"""Mamba2-Attn hybrid as a transformers model: mamba_ssm's MambaLMHeadModel without mamba-ssm.

Blocks are pre-norm residual: RMSNorm → mixer (Mamba-2 or MHA) → residual [→ RMSNorm → gated MLP
→ residual]. The residual stream is kept in float32 when `residual_in_fp32` (mamba_ssm's
fused add+norm does the same), so bf16 runs round where the original rounds.

The attention layer follows mamba_ssm's `modules/mha.py`:
- q/k/v projections (one packed `in_proj` in the checkpoint; split here so LoRA adapts each),
  an optional gated-MLP branch `mlp_proj` ([up | gate], out = up * silu(gate)) whose output is
  concatenated to the attention output before `o_proj`;
- a depthwise causal conv1d over the concatenated q/k/v channels (with bias, no activation);
- rotary on the first `rotary_dim` dims of each head, non-interleaved (GPT-NeoX halves);
- GQA, softmax scale `softmax_scale` or 1/sqrt(head_dim), causal.

Its decode cache holds the last `attn_conv_kernel` *pre-conv* q/k/v rows next to the KV cache
(a transformers "hybrid" cache layer). mamba_ssm itself stores the post-conv rows at prefill, so
its first decoded token after a prompt convolves over already-convolved inputs; that is a bug of
the reference implementation, and here cached decoding equals the full forward (tested).
Over a `StaticCache` (`generate(cache=...)`, spanlab's CUDA-graph decode) the KV cache, the
q/k/v conv state and the Mamba-2 conv/SSM states are fixed-shape tensors written in place, so a
captured decode step replays on the same storage (tests/models/test_mamba2attn.py).

The core `q, k, v -> out` goes through transformers' attention registry, which is how
`spanlab.finetune.patch_attention` swaps in SE-Attn / SW / S² without touching the projections,
the conv or the rotary.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask, create_recurrent_attention_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bamba.modeling_bamba import BambaMixer, apply_mask_to_padding_states, eager_attention_forward

from spanlab.models.hf_compat import seen_tokens
from spanlab.models.mamba2attn.configuration_mamba2attn import M2AConfig

# The keyword transformers' helpers take the cache by: `cache` from 5.24 on, where the old names
# still work but warn on every call (a flood at every decode step).
_MASK_CACHE = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"
_MIXER_CACHE = "cache" if "cache" in inspect.signature(BambaMixer.forward).parameters else "cache_params"
# The keyword `generate` hands the cache to a model by, and the field of the output it reads it
# back from: `cache` from 5.24 on, `past_key_values` before (spanlab.models.hf_compat).
_CACHE = "cache" if "cache" in inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters \
    else "past_key_values"
_CACHE_NAMES = ("cache", "past_key_values")


def _cache_arg(cache: Cache | None, kwargs: dict[str, Any]) -> Cache | None:
    """The cache, whichever name it came by: `cache` (transformers >= 5.24's generate, chunked
    prefill) or `past_key_values` (older transformers, and callers of the old name)."""
    for name in _CACHE_NAMES:
        other = kwargs.pop(name, None)
        if cache is None:
            cache = other
    return cache


def _cache_signature(forward: Callable) -> Callable:
    """Show `forward`'s `cache` parameter under the name the installed `generate` passes.

    generate checks a user-made cache (`generate(cache=StaticCache(...))`, how spanlab's decode
    graphs hand theirs over) against the forward's signature and refuses one the signature does
    not name: on 5.24+ that name is `cache`. Before 5.24 it is `past_key_values`, which a call
    then passes through **kwargs (`_cache_arg` takes it there), as it does on 5.24+ too."""
    if _CACHE == "cache":
        return forward
    sig = inspect.signature(forward)
    forward.__signature__ = sig.replace(parameters=[p.replace(name=_CACHE) if p.name == "cache" else p
                                                    for p in sig.parameters.values()])
    return forward


def _split_mask(mask: Any) -> tuple[Any, Any] | None:
    """(attention mask, padding mask) out of the per-layer-type masks transformers' generate builds in
    advance for a fixed-shape (static) cache; None when `mask` is not such a mapping."""
    if not isinstance(mask, dict):
        return None
    # "full_attention": the 4D mask over the static KV length; "linear_attention": the 2D padding
    # mask of this forward's tokens for the convs and SSM scans (None at a decode step, or unpadded).
    return mask.get("full_attention"), mask.get("linear_attention")


class M2ARMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = hidden_states.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(self.weight.dtype)


class M2ARotaryEmbedding(nn.Module):
    """cos/sin of shape (batch, seq, rotary_dim) for the rotated part of each head."""

    def __init__(self, config: M2AConfig, device: Any = None) -> None:
        super().__init__()
        dim = int(config.rotary_dim)
        inv_freq = 1.0 / (float(config.rope_theta) ** (torch.arange(0, dim, 2, dtype=torch.float, device=device) / max(dim, 1)))
        self.inv_freq = nn.Buffer(inv_freq, persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_partial_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (batch, heads, seq, head_dim); rotates the first cos.shape[-1] dims, passes the rest."""
    rot = cos.shape[-1]
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    return torch.cat((x_rot * cos + _rotate_half(x_rot) * sin, x_pass), dim=-1)


class M2AAttention(nn.Module):
    """mamba_ssm MHA (see the module docstring); q, k, v → out runs through ALL_ATTENTION_FUNCTIONS."""

    def __init__(self, config: M2AConfig, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.num_key_value_groups = self.num_heads // self.num_kv_heads
        self.scaling = config.softmax_scale if config.softmax_scale is not None else self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        self.conv_kernel = int(config.attn_conv_kernel)
        self.mlp_dim = int(config.attn_mlp_dim)
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        if self.mlp_dim:
            self.mlp_proj = nn.Linear(config.hidden_size, self.mlp_dim, bias=bias)
        self.qkv_dim = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        if self.conv_kernel:
            self.conv1d = nn.Conv1d(self.qkv_dim, self.qkv_dim, kernel_size=self.conv_kernel, groups=self.qkv_dim,
                                    padding=self.conv_kernel - 1, bias=True)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim + self.mlp_dim // 2, config.hidden_size,
                                bias=config.attention_out_bias)

    def _conv(self, qkv: torch.Tensor, cache: Cache | None, pad_mask: torch.Tensor | None) -> torch.Tensor:
        """Causal depthwise conv over (batch, seq, channels), continuing from the cached pre-conv rows."""
        seq = qkv.shape[1]
        # Left-padding rows must not leak into the first real tokens' window.
        x = apply_mask_to_padding_states(qkv, pad_mask).transpose(1, 2)
        if cache is not None:
            # Stores the last `conv_kernel` pre-conv rows and returns them in front of this chunk.
            x = cache.update_conv_state(x, self.layer_idx, conv_kernel_size=self.conv_kernel)
        # The module itself (not its weight) so peft's modules_to_save copy is the one that runs.
        out = self.conv1d(x.to(self.conv1d.weight.dtype))[..., : x.shape[-1]]
        return out[..., -seq:].transpose(1, 2).to(qkv.dtype)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        pad_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        bsz, seq, _ = hidden_states.shape
        q, k, v = self.q_proj(hidden_states), self.k_proj(hidden_states), self.v_proj(hidden_states)
        if self.conv_kernel:
            qkv = self._conv(torch.cat([q, k, v], dim=-1), past_key_values, pad_mask)
            q, k, v = qkv.split([q.shape[-1], k.shape[-1], v.shape[-1]], dim=-1)
        q = q.view(bsz, seq, -1, self.head_dim).transpose(1, 2)
        k = k.view(bsz, seq, -1, self.head_dim).transpose(1, 2)
        v = v.view(bsz, seq, -1, self.head_dim).transpose(1, 2)
        if position_embeddings is not None:
            cos, sin = position_embeddings
            q, k = apply_partial_rotary(q, cos, sin), apply_partial_rotary(k, cos, sin)
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)
        # The registry is the hook: spanlab's patching registers its variants there (see module docstring).
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward)
        out, weights = attention_interface(self, q, k, v, attention_mask,
                                           dropout=0.0 if not self.training else self.attention_dropout,
                                           scaling=self.scaling, **kwargs)
        out = out.reshape(bsz, seq, -1)
        if self.mlp_dim:
            up, gate = self.mlp_proj(hidden_states).chunk(2, dim=-1)
            out = torch.cat([out, up * F.silu(gate)], dim=-1)
        return self.o_proj(out), weights


class M2AMLP(nn.Module):
    """mamba_ssm GatedMLP: fc1 = [up; gate], out = fc2(up * silu(gate))."""

    def __init__(self, config: M2AConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.up_proj(x) * F.silu(self.gate_proj(x)))


class M2ADecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: M2AConfig, layer_idx: int) -> None:
        super().__init__()
        self.mixer_type = config.mixer_types[layer_idx]
        self.input_layernorm = M2ARMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        if self.mixer_type == "attention":
            self.self_attn = M2AAttention(config, layer_idx)
        else:
            self.mamba = BambaMixer(config, layer_idx)
        self.has_mlp = config.intermediate_size > 0
        if self.has_mlp:
            self.pre_ff_layernorm = M2ARMSNorm(config.hidden_size, eps=config.rms_norm_eps)
            self.feed_forward = M2AMLP(config)
        self.residual_in_fp32 = bool(config.residual_in_fp32)

    def _add(self, residual: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return residual + (out.float() if self.residual_in_fp32 else out)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pad_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        dtype = self.input_layernorm.weight.dtype
        residual = hidden_states
        x = self.input_layernorm(hidden_states).to(dtype)
        if self.mixer_type == "attention":
            x, _ = self.self_attn(x, position_embeddings=position_embeddings, attention_mask=attention_mask,
                                  past_key_values=past_key_values, pad_mask=pad_mask, **kwargs)
        else:
            x = self.mamba(x, **{_MIXER_CACHE: past_key_values}, attention_mask=pad_mask)
        hidden_states = self._add(residual, x)
        if self.has_mlp:
            x = self.feed_forward(self.pre_ff_layernorm(hidden_states).to(dtype))
            hidden_states = self._add(hidden_states, x)
        return hidden_states


class M2APreTrainedModel(PreTrainedModel):
    config: M2AConfig
    config_class = M2AConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["M2ADecoderLayer"]
    _skip_keys_device_placement = [_CACHE]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _is_stateful = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, BambaMixer):
            module.dt_bias.fill_(1.0)
            module.A_log.copy_(torch.log(torch.arange(1, module.num_heads + 1, dtype=module.A_log.dtype)))
            module.D.fill_(1.0)
        elif isinstance(module, M2ARMSNorm):
            module.weight.fill_(1.0)
        elif isinstance(module, M2ARotaryEmbedding):
            # A non-persistent buffer is rebuilt, not loaded, when weights are materialised.
            fresh = M2ARotaryEmbedding(self.config, device=module.inv_freq.device)
            module.inv_freq.copy_(fresh.inv_freq)


class M2AModel(M2APreTrainedModel):
    def __init__(self, config: M2AConfig) -> None:
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(M2ADecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.final_layernorm = M2ARMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = M2ARotaryEmbedding(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embed_tokens = value

    @_cache_signature
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | dict[str, Any] | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        """`attention_mask`: the 2D padding mask, or the per-layer-type masks `generate` builds in
        advance over a static cache ({"full_attention": 4D, "linear_attention": 2D or None})."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        for unused in ("output_attentions", "output_hidden_states", "return_dict", "cache_position"):
            kwargs.pop(unused, None)
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        cache = _cache_arg(cache, kwargs)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if position_ids is None:
            # Continue the positions of whatever the cache already holds (chunked prefill, decode).
            past = seen_tokens(cache) if (cache is not None and self.config.attn_layer_indices) else 0
            position_ids = torch.arange(past, past + inputs_embeds.shape[1], device=inputs_embeds.device).unsqueeze(0)
        masks = _split_mask(attention_mask)
        if masks is not None:
            causal_mask, pad_mask = masks
        else:
            mask_kwargs = {"config": self.config, "inputs_embeds": inputs_embeds, "attention_mask": attention_mask,
                           _MASK_CACHE: cache, "position_ids": position_ids}
            causal_mask = create_causal_mask(**mask_kwargs) if self.config.attn_layer_indices else None
            pad_mask = create_recurrent_attention_mask(**mask_kwargs)
        position_embeddings = self.rotary_emb(inputs_embeds, position_ids) if self.config.rotary_dim else None

        hidden_states = inputs_embeds.float() if self.config.residual_in_fp32 else inputs_embeds
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask=causal_mask, pad_mask=pad_mask,
                                  past_key_values=cache, position_embeddings=position_embeddings, **kwargs)
        hidden_states = self.final_layernorm(hidden_states)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, **{_CACHE: cache if use_cache else None})


class M2AForCausalLM(M2APreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: M2AConfig) -> None:
        super().__init__(config)
        self.model = M2AModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.embed_tokens = value

    @_cache_signature
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | dict[str, Any] | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        # `cache` by name: generate (>= 5.24) refuses a user-made cache, such as the static one of
        # spanlab's decode graphs, that the forward's signature does not name.
        cache = _cache_arg(cache, kwargs)
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             cache=cache, inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs)
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{_CACHE: getattr(outputs, _CACHE)})

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, **kwargs: Any) -> dict[str, Any]:
        kwargs["logits_to_keep"] = self.config.num_logits_to_keep
        return super().prepare_inputs_for_generation(input_ids, **kwargs)


__all__ = ["M2AForCausalLM", "M2AModel", "M2APreTrainedModel"]
