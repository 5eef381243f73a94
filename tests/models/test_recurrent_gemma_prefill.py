"""RecurrentGemma: chunked prefill carries the conv / RG-LRU state (== one shot), and SE/HyLoRA
patching reaches its local attention and recurrent blocks."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def _model(seed=0, window=16):
    import transformers as T

    torch.manual_seed(seed)
    cfg = T.RecurrentGemmaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                 num_attention_heads=4, num_key_value_heads=1, head_dim=8, lru_width=32,
                                 attention_window_size=window, initializer_range=0.1, pad_token_id=0,
                                 bos_token_id=1, eos_token_id=2)
    return T.RecurrentGemmaForCausalLM(cfg).eval()


IDS = torch.randint(3, 96, (2, 41), generator=torch.Generator().manual_seed(5))


def _chunked_logits(model, ids, chunk):
    from transformers import DynamicCache

    cache, parts = DynamicCache(config=model.config), []
    with torch.no_grad():
        for start in range(0, ids.shape[1], chunk):
            pos = torch.arange(start, min(start + chunk, ids.shape[1]))[None].expand(ids.shape[0], -1)
            out = model(ids[:, start:start + chunk], position_ids=pos, past_key_values=cache, use_cache=True)
            parts.append(out.logits)
    return torch.cat(parts, dim=1)


def _full(model, ids):
    with torch.no_grad():
        return model(ids, use_cache=False).logits


@pytest.mark.parametrize("chunk", [3, 7, 40])
def test_chunked_forward_equals_one_shot_after_install(chunk):
    from spanlab.models.prefill_recurrent_gemma import install

    model = _model()
    full = _full(model, IDS)
    assert install(model) and install(model)  # idempotent
    got = _chunked_logits(model, IDS, chunk)
    assert (got - full).abs().max() <= 1e-5 * full.abs().max()


def test_without_install_transformers_restarts_the_conv_at_every_chunk():
    # What install fixes: the same chunked feed on an untouched model gives other logits.
    model = _model()
    full = _full(model, IDS)
    assert (_chunked_logits(model, IDS, 7) - full).abs().max() > 1e-3 * full.abs().max()


def test_plan_and_generate_chunked_equal_one_shot_tokens():
    from transformers import GenerationConfig

    from spanlab.models.prefill import chunked_generate, plan_prefill

    model = _model()
    plan = plan_prefill(model, 6)
    assert plan.mode == "generate"
    gc = GenerationConfig(max_new_tokens=5, do_sample=False, pad_token_id=0, eos_token_id=None,
                          return_dict_in_generate=True, output_logits=True)
    mask = torch.ones_like(IDS)
    mask[1, :9] = 0
    with torch.no_grad():
        ref = model.generate(input_ids=IDS, attention_mask=mask, generation_config=gc)
        got = chunked_generate(model, plan, IDS, mask, gc)
    assert torch.equal(got.sequences, ref.sequences)
    for a, b in zip(got.logits, ref.logits):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()


def test_se_patching_and_hylora_reach_local_attention_and_recurrent_convs():
    from spanlab.attention import full_attention
    from spanlab.finetune.patching import attention_modules, install_attention, patch_attention
    from spanlab.finetune.peft_recipes import resolve_targets

    model = _model(window=64)  # window >= sequence: local attention is full causal attention here
    base = _full(model, IDS)
    assert [type(m).__name__ for m in attention_modules(model)] == ["RecurrentGemmaAttention"]
    install_attention(model, full_attention)
    assert (_full(model, IDS) - base).abs().max() <= 1e-5 * base.abs().max()
    patch_attention(model, "se", chunk_size=8, block_size=4, top_k=1)
    assert not torch.allclose(_full(model, IDS), base, atol=1e-4)
    patch_attention(model, "full")
    lora, trainable = resolve_targets(model, "hylora")
    assert lora == [f"model.layers.2.temporal_block.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
    assert {"model.layers.0.temporal_block.conv_1d", "model.layers.1.temporal_block.conv_1d"} <= set(trainable)
