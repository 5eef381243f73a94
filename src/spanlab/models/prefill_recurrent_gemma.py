"""Chunked prefill for RecurrentGemma (google/recurrentgemma-2b): conv and RG-LRU state carried.

transformers' `RecurrentGemmaRecurrentBlock` keeps its state on the module (`conv1d_state`,
`rg_lru.recurrent_states`), not in the cache object. Its RG-LRU scan already starts from the
stored state on every forward (and resets where `position_ids == 0`, i.e. at each row's first real
token), but any multi-token forward restarts the temporal conv from zeros and overwrites the conv
state with the chunk's own rows. So a prompt fed in chunks differs from one shot in the first
`conv1d_width - 1` tokens of every chunk after the first.

`install(model)` fixes exactly that on one model instance: a forward pre-hook on the decoder stack
marks a multi-token forward that continues a non-empty cache (the attention layers' KV cache
already holds earlier tokens) as a *continuation*, and the recurrent blocks then convolve the chunk
with the stored pre-conv rows in front, keeping the last `conv1d_width - 1` of them. Every other
forward (one-shot prefill, decode, training without a cache) runs transformers' code unchanged.
With it, transformers' own `prefill_chunk_size` gives the same logits and tokens as one shot
(tests/models/test_recurrent_gemma_prefill.py), so the class joins the "generate" prefill mode.
The local-attention layers need nothing: their sliding-window KV cache and mask already handle a
chunk that continues a cache.
"""

from __future__ import annotations

import types
from typing import Any

from spanlab.models.hf_compat import seen_tokens

_FLAG = "_spanlab_carry_conv"
_INSTALLED = "_spanlab_chunked_prefill"


def _carrying_forward(self: Any, input_states: Any, position_ids: Any, attention_mask: Any, use_cache: bool = True,
                      **kwargs: Any) -> tuple[Any, None]:
    import torch

    state = self.conv1d_state
    batch, seq_len, _ = input_states.shape
    if not (getattr(self, _FLAG, False) and use_cache and seq_len > 1 and state is not None and state.shape[0] == batch):
        return type(self).forward(self, input_states, position_ids=position_ids, attention_mask=attention_mask,
                                  use_cache=use_cache, **kwargs)
    y_branch = self.act_fn(self.linear_y(input_states))
    x_branch = self.linear_x(input_states).transpose(1, 2)
    full = torch.cat((state.to(x_branch.dtype), x_branch), dim=-1)
    # Pre-conv rows, as the decode step and transformers' one-shot prefill store them.
    self.conv1d_state = full[:, :, -(self.conv1d_width - 1):]
    x_branch = self.conv_1d(full)[..., : full.shape[-1]][..., -seq_len:]
    x_branch = self.rg_lru(x_branch.transpose(1, 2), position_ids)
    return self.linear_out(x_branch * y_branch), None


def _mark_continuation(blocks: list[Any]):
    def hook(module: Any, args: tuple, kwargs: dict) -> None:
        # transformers >= 5.24 names it `cache` (models/hf_compat.py).
        cache = kwargs.get("past_key_values", kwargs.get("cache"))
        x = kwargs.get("input_ids")
        if x is None:
            x = kwargs.get("inputs_embeds")
        if x is None and args:
            x = args[0]
        seq = x.shape[1] if x is not None else 0
        # Read before any layer of this forward writes the cache: > 0 means earlier tokens are in it.
        carry = bool(cache is not None and seq > 1 and seen_tokens(cache) > 0)  # seen_tokens: models/hf_compat.py
        for block in blocks:
            setattr(block, _FLAG, carry)

    return hook


def _return_cache(module: Any, args: tuple, kwargs: dict, output: Any) -> Any:
    # transformers' chunked prefill reads `outputs.past_key_values` after every chunk, but
    # RecurrentGemma returns a plain CausalLMOutput; the cache it was given is the one it updated.
    cache = kwargs.get("past_key_values", kwargs.get("cache"))
    if cache is None or getattr(output, "past_key_values", None) is not None:
        return output
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return CausalLMOutputWithPast(loss=output.loss, logits=output.logits, past_key_values=cache,
                                  hidden_states=output.hidden_states, attentions=output.attentions)


def install(model: Any) -> bool:
    """Make `model` (a RecurrentGemmaForCausalLM) carry its conv state across chunks; idempotent.
    Returns False when the model does not have the structure this was verified on."""
    try:
        from transformers.models.recurrent_gemma.modeling_recurrent_gemma import RecurrentGemmaRecurrentBlock
    except ImportError:
        return False
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if inner is None or layers is None:
        return False
    if getattr(inner, _INSTALLED, False):
        return True
    blocks = [layer.temporal_block for layer in layers if isinstance(getattr(layer, "temporal_block", None), RecurrentGemmaRecurrentBlock)]
    if not blocks or not all(hasattr(b, "conv1d_state") and hasattr(b, "conv_1d") and hasattr(b, "rg_lru") for b in blocks):
        return False
    for block in blocks:
        block.forward = types.MethodType(_carrying_forward, block)
        setattr(block, _FLAG, False)
    inner.register_forward_pre_hook(_mark_continuation(blocks), with_kwargs=True)
    model.register_forward_hook(_return_cache, with_kwargs=True)
    setattr(inner, _INSTALLED, True)
    return True


__all__ = ["install"]
