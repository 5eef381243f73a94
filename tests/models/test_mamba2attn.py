"""Mamba2-Attn hybrid (spanlab.models.mamba2attn): exact against a dense reference of mamba_ssm's
MambaLMHeadModel, conversion round trip, cached decode, chunked prefill, padding, patching."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")

from mamba_ssm_ref import reference_logits, write_checkpoint  # noqa: E402

IDS = torch.randint(0, 64, (2, 19), generator=torch.Generator().manual_seed(3))


def _convert(cfg, sd, target=None):
    from spanlab.models.mamba_ssm import convert_state

    model, mapping = convert_state(cfg, sd, target=target)
    return model.float().eval(), mapping


def _logits(model, ids, **kw):
    with torch.no_grad():
        return model(ids, use_cache=False, **kw).logits.double()


def _close(a, b, tol=2e-5):
    err = (a - b).abs().max().item()
    assert err <= tol * max(1.0, b.abs().max().item()), err


def test_converted_folder_loads_natively_and_matches_the_dense_reference(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    from spanlab.models.mamba_ssm import convert_checkpoint

    cfg, sd = write_checkpoint(tmp_path / "src")  # mamba2attn-like: conv q/k/v, partial rotary, GQA, no MLP
    out = convert_checkpoint(tmp_path / "src", tmp_path / "hf")
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert written["model_type"] == "spanlab_mamba2attn" and written["attn_conv_kernel"] == 4
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    # A fresh process only needs spanlab's registration, never trust_remote_code.
    from spanlab.models.native import register_all

    register_all()
    assert AutoConfig.from_pretrained(out).layer_types == ["linear_attention", "hybrid", "linear_attention", "hybrid"]
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(model).__name__ == "M2AForCausalLM"
    ref = reference_logits(cfg, sd, IDS)
    _close(_logits(model, IDS), ref)
    # Every checkpoint tensor landed somewhere, unchanged.
    conv, _ = _convert(cfg, sd)
    dst = conv.state_dict()
    assert torch.equal(dst["model.layers.1.self_attn.conv1d.weight"], sd["backbone.layers.1.mixer.conv1d.weight"])
    q, k, v = (dst[f"model.layers.3.self_attn.{n}_proj.weight"] for n in "qkv")
    assert torch.equal(torch.cat([q, k, v]), sd["backbone.layers.3.mixer.in_proj.weight"])


def test_the_attention_conv_and_partial_rotary_really_matter():
    cfg, sd = write_checkpoint(None)
    base = _logits(_convert(cfg, sd)[0], IDS)
    no_conv = {**sd, **{f"backbone.layers.{i}.mixer.conv1d.weight": torch.zeros_like(sd[f"backbone.layers.{i}.mixer.conv1d.weight"])
                        for i in (1, 3)}}
    assert not torch.allclose(base, _logits(_convert(cfg, no_conv)[0], IDS), atol=1e-3)
    full_rot = {**cfg, "attn_cfg": {**cfg["attn_cfg"], "rotary_emb_dim": 16}}
    assert not torch.allclose(base, _logits(_convert(full_rot, sd)[0], IDS), atol=1e-3)
    _close(_logits(_convert(full_rot, sd)[0], IDS), reference_logits(full_rot, sd, IDS))


@pytest.mark.parametrize("prefix", [1, 2, 9])
def test_cached_token_by_token_decode_equals_the_full_forward(prefix):
    # prefix < d_conv - 1 checks the zero-padded conv state; 9 checks a state cut from a longer prompt.
    cfg, sd = write_checkpoint(None)
    model, _ = _convert(cfg, sd)
    full = _logits(model, IDS)
    with torch.no_grad():
        out = model(IDS[:, :prefix], use_cache=True)
        cache, steps = out.past_key_values, [out.logits.double()]
        for t in range(prefix, IDS.shape[1]):
            out = model(IDS[:, t:t + 1], past_key_values=cache, use_cache=True)
            steps.append(out.logits.double())
    _close(torch.cat(steps, dim=1), full)
    # The conv state holds pre-conv q/k/v rows (upstream mamba_ssm caches post-conv ones at prefill).
    layer = cache.layers[1]
    attn = model.model.layers[1].self_attn
    assert layer.conv_states[0].shape == (2, attn.qkv_dim, 4)


def _fixed_tensors(cache):
    """Every tensor of a static cache a decode step may write: keys/values, conv and SSM states, counters."""
    out = {}
    for i, layer in enumerate(cache.layers):
        for attr in ("keys", "values", "cumulative_length", "cumulative_length_linear"):
            if isinstance(getattr(layer, attr, None), torch.Tensor):
                out[f"{i}.{attr}"] = getattr(layer, attr)
        for attr in ("conv_states", "recurrent_states"):
            for j, t in (getattr(layer, attr, None) or {}).items():
                if t is not None:
                    out[f"{i}.{attr}.{j}"] = t
    return out


@pytest.mark.parametrize("prefix", [2, 9])
def test_static_cache_decode_writes_fixed_tensors_in_place_and_equals_the_full_forward(prefix):
    """What a CUDA-graph replay relies on (spanlab.models.decode_graph): over a StaticCache, a decode
    step writes the same tensors (same storage, same shape) it was captured on, and every state
    it advances is among those the capture's warm-up snapshots and puts back."""
    from transformers.cache_utils import StaticCache

    from spanlab.models.decode_graph import _state_tensors

    cfg, sd = write_checkpoint(None)
    model, _ = _convert(cfg, sd)
    full = _logits(model, IDS)
    cache = StaticCache(config=model.config, max_cache_len=32)
    # Mamba2 layers: conv + SSM state; attention layers: a static KV cache + the pre-conv q/k/v rows.
    assert [type(layer).__name__ for layer in cache.layers] == ["LinearAttentionLayer", "LinearAttentionAndStaticFullAttentionLayer"] * 2
    with torch.no_grad():
        out = model(IDS[:, :prefix], cache=cache, use_cache=True)  # the keyword transformers >= 5.24 passes
        steps = [out.logits.double()]
        fixed = _fixed_tensors(cache)
        attn = model.model.layers[1].self_attn
        assert fixed["1.conv_states.0"].shape == (2, attn.qkv_dim, 4) and fixed["1.keys"].shape == (2, 2, 32, 16)
        assert {"0.conv_states.0", "0.recurrent_states.0", "1.conv_states.0", "1.keys", "1.values"} <= set(fixed)
        where = {k: (t.data_ptr(), tuple(t.shape)) for k, t in fixed.items()}
        watched = {id(t) for t in _state_tensors(cache)}
        for t in range(prefix, IDS.shape[1]):
            before = {k: v.clone() for k, v in fixed.items()}
            out = model(IDS[:, t:t + 1], cache=cache, use_cache=True, position_ids=torch.full((2, 1), t))
            steps.append(out.logits.double())
            now = _fixed_tensors(cache)
            assert set(now) == set(fixed) and all(now[k] is fixed[k] for k in fixed)
            assert {k: (v.data_ptr(), tuple(v.shape)) for k, v in now.items()} == where
            moved = {k for k in fixed if not torch.equal(before[k], fixed[k])}
            # Everything but keys/values advances (they are rewritten identically by a replay) is snapshotted.
            assert {k for k in moved if not k.endswith(("keys", "values"))} == \
                {k for k in fixed if not k.endswith(("keys", "values"))}
            assert all(id(fixed[k]) in watched for k in moved if not k.endswith(("keys", "values")))
    _close(torch.cat(steps, dim=1), full)


def test_a_decode_step_repeats_exactly_from_the_restored_state():
    """The capture's warm-up runs a step, puts back what `_state_tensors` holds, and the graph runs
    it again: the second run must see exactly the state the first one saw."""
    from transformers.cache_utils import StaticCache

    from spanlab.models.decode_graph import _state_tensors

    cfg, sd = write_checkpoint(None)
    model, _ = _convert(cfg, sd)
    cache = StaticCache(config=model.config, max_cache_len=32)
    step = {"input_ids": IDS[:, 7:8], "cache": cache, "use_cache": True, "position_ids": torch.full((2, 1), 7)}
    with torch.no_grad():
        model(IDS[:, :7], cache=cache, use_cache=True)
        live = _state_tensors(cache)
        saved = [t.clone() for t in live]
        first = model(**step).logits
        after = [t.clone() for t in live]
        for t, v in zip(live, saved):
            t.copy_(v)
        again = model(**step).logits
    assert torch.equal(first, again)
    assert all(torch.equal(t, v) for t, v in zip(live, after))


def test_chunked_prefill_equals_one_shot():
    cfg, sd = write_checkpoint(None)
    model, _ = _convert(cfg, sd)
    full = _logits(model, IDS)
    with torch.no_grad():
        cache, parts = None, []
        for start in range(0, IDS.shape[1], 5):
            kw = {"past_key_values": cache} if cache is not None else {}
            out = model(IDS[:, start:start + 5], use_cache=True, **kw)
            cache = out.past_key_values
            parts.append(out.logits.double())
    _close(torch.cat(parts, dim=1), full)


def test_generate_with_chunked_prefill_and_left_padding_matches_single_prompts():
    from transformers import GenerationConfig

    from spanlab.models.prefill import chunked_generate, plan_prefill

    cfg, sd = write_checkpoint(None)
    model, _ = _convert(cfg, sd)
    plan = plan_prefill(model, 6)
    assert plan.mode == "generate" and plan.chunk == 6
    gc = GenerationConfig(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    a, b = IDS[0, :17], IDS[1, 3:17]  # 17 and 14 tokens: the shorter one is left-padded in the batch
    batch = torch.zeros(2, 17, dtype=torch.long)
    batch[0], batch[1, 3:] = a, b
    mask = torch.ones(2, 17, dtype=torch.long)
    mask[1, :3] = 0
    with torch.no_grad():
        together = chunked_generate(model, plan, batch, mask, gc)[:, 17:]
        alone = [model.generate(x[None], attention_mask=torch.ones(1, len(x), dtype=torch.long), generation_config=gc)[0, len(x):]
                 for x in (a, b)]
        one_shot = model.generate(batch, attention_mask=mask, generation_config=gc)[:, 17:]
    assert torch.equal(together[0], alone[0]) and torch.equal(together[1], alone[1])
    assert torch.equal(together, one_shot)


def test_left_padded_logits_equal_unpadded():
    cfg, sd = write_checkpoint(None)
    model, _ = _convert(cfg, sd)
    x = IDS[1:, 4:]
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), x], dim=1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones_like(x)], dim=1)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    _close(_logits(model, padded, attention_mask=mask, position_ids=pos)[:, 4:], _logits(model, x))


def test_transformerpp_layout_matches_reference_and_bamba():
    # transformerpp-2.7b: attention in every layer, gated MLP, partial rotary, no conv.
    cfg, sd = write_checkpoint(None, n_layer=2, attn_layer_idx=(0, 1), d_conv=0, d_intermediate=48)
    ours, _ = _convert(cfg, sd, target="mamba2attn")
    bamba, _ = _convert(cfg, sd)
    assert type(bamba).__name__ == "BambaForCausalLM"  # the default stays the class it was
    ref = reference_logits(cfg, sd, IDS)
    _close(_logits(ours, IDS), ref)
    _close(_logits(bamba, IDS), ref)


def test_mha_mlp_branch_and_split_biases_pick_the_native_class():
    cfg, sd = write_checkpoint(None, n_layer=3, attn_layer_idx=(1,), mlp_dim=32, qkv_bias=True, out_bias=False, d_intermediate=40)
    model, _ = _convert(cfg, sd)
    assert type(model).__name__ == "M2AForCausalLM"
    _close(_logits(model, IDS), reference_logits(cfg, sd, IDS))
    from spanlab.errors import SpanlabError

    with pytest.raises(SpanlabError, match="use --target mamba2attn"):
        _convert(cfg, sd, target="bamba")


def test_attention_patching_reaches_the_attention_core():
    from spanlab.attention import full_attention
    from spanlab.finetune.patching import attention_modules, install_attention, patch_attention, restore_attention

    cfg, sd = write_checkpoint(None)
    model, _ = _convert(cfg, sd)
    base = _logits(model, IDS)
    assert [type(m).__name__ for m in attention_modules(model)] == ["M2AAttention"] * 2
    seen = []

    def dense(q, k, v):
        seen.append((tuple(q.shape), tuple(k.shape)))
        return full_attention(q, k, v)

    install_attention(model, dense)
    _close(_logits(model, IDS), base)
    # (B, H, L, D) queries and GQA keys at their own head count, after conv and rotary.
    assert seen == [((2, 4, 19, 16), (2, 2, 19, 16))] * 2
    restore_attention(model)
    patch_attention(model, "sw", window=4)
    windowed = _logits(model, IDS)
    assert not torch.allclose(windowed, base, atol=1e-3)
    _close(windowed[:, :4], base[:, :4])  # within the window nothing changes
    patch_attention(model, "se", chunk_size=8, block_size=4, top_k=1)
    assert torch.isfinite(_logits(model, IDS)).all()
    patch_attention(model, "full")
    _close(_logits(model, IDS), base)


def test_hylora_trains_lora_norms_embeddings_and_both_convs():
    from spanlab.finetune.peft_recipes import apply_peft, resolve_targets

    cfg, sd = write_checkpoint(None)
    model, _ = _convert(cfg, sd)
    lora, trainable = resolve_targets(model, "hylora")
    assert lora == [f"model.layers.{i}.self_attn.{p}" for i in (1, 3) for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
    assert {"model.layers.1.self_attn.conv1d", "model.layers.3.self_attn.conv1d", "model.layers.0.mamba.conv1d",
            "model.layers.2.mamba.conv1d", "model.embed_tokens", "model.final_layernorm"} <= set(trainable)
    peft = apply_peft(model, "hylora", rank=4, alpha=8, verbose=False)
    loss = peft(input_ids=IDS, labels=IDS, use_cache=False).loss
    loss.backward()
    grads = {n: p.grad for n, p in peft.named_parameters() if p.requires_grad}
    attn_conv = [n for n in grads if "self_attn.conv1d" in n and n.endswith("weight")]
    assert attn_conv and all(grads[n] is not None and grads[n].abs().sum() > 0 for n in attn_conv)
    assert any("lora_A" in n for n in grads)


def test_convert_cli_then_eval_and_ppl_on_the_folder(tmp_path, cli, tokenizer):
    from spanlab import tasks as T

    V = len(tokenizer)
    write_checkpoint(tmp_path / "src", vocab=V + (-V) % 8)
    tok_dir = tmp_path / "tok"
    tokenizer.save_pretrained(tok_dir)
    assert cli("convert", tmp_path / "src", tmp_path / "hf", "--tokenizer", tok_dir) == 0
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(s.to_json() + "\n" for s in T.generate("niah_single_1", length=256, num_samples=2,
                                                                         tokenizer=tokenizer, seed=0)))
    common = ["--samples", samples, "--max-new-tokens", "3", "--no-progress"]
    assert cli("eval", "--model", tmp_path / "hf", "--out", tmp_path / "r1", *common) == 0
    assert cli("eval", "--backend", "mamba_ssm", "--model", tmp_path / "src", "--tokenizer", tok_dir,
               "--out", tmp_path / "r2", *common) == 0

    def preds(d):
        return [r["prediction"] for r in map(json.loads, (d / "results.jsonl").read_text().splitlines())]

    assert preds(tmp_path / "r1") == preds(tmp_path / "r2") and len(preds(tmp_path / "r1")) == 2
    m = json.loads((tmp_path / "r1" / "manifest.json").read_text())["model"]
    assert m["model_class"] == "M2AForCausalLM"


def test_finetune_hylora_with_se_attention_then_ppl_from_the_cli(tmp_path, tokenizer):
    """`spanlab finetune` (HyLoRA + SE-Attn) and `spanlab ppl` on a converted Mamba2-Attn folder."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from spanlab.cli import main
    from spanlab.models.mamba_ssm import convert_checkpoint
    from spanlab.models.native import register_all

    V = len(tokenizer)
    write_checkpoint(tmp_path / "src", vocab=V + (-V) % 8)
    base = tmp_path / "base"
    convert_checkpoint(tmp_path / "src", base)
    tokenizer.save_pretrained(base)
    phrase = " ".join(f"w{i}" for i in (3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 32))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(" ".join([phrase] * 60))
    out = tmp_path / "run"
    args = ["finetune", "--model", base, "--data", corpus, "--out", out, "--context", "32", "--peft", "hylora",
            "--rank", "4", "--alpha", "8", "--steps", "4", "--micro-batch-size", "2", "--grad-accum", "1",
            "--warmup-steps", "1", "--mixed-precision", "no", "--lr", "1e-2", "--cache-dir", tmp_path / "cache",
            "--no-progress", "--attention", "se", "--chunk-size", "8", "--block-size", "4", "--top-k", "2"]
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    assert done.value.code in (0, None)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 4 and log[-1]["loss"] < log[0]["loss"]
    register_all()
    ids = torch.randint(0, 64, (1, 24), generator=torch.Generator().manual_seed(0))
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out / "final").eval()
    assert type(merged).__name__ == "M2AForCausalLM"
    with torch.no_grad():
        a, m = adapted(input_ids=ids).logits, merged(input_ids=ids).logits
    torch.testing.assert_close(m, a, atol=1e-4, rtol=1e-4)
    # The attention conv was trained (HyLoRA), not only the Mamba-2 one.
    before = AutoModelForCausalLM.from_pretrained(base).model.layers[1].self_attn.conv1d.weight
    assert not torch.allclose(merged.model.layers[1].self_attn.conv1d.weight, before)
    journal = tmp_path / "ppl.jsonl"
    with pytest.raises(SystemExit) as done:
        main(["ppl", "--model", str(out / "merged"), "--data", str(corpus), "--lengths", "32", "--dtype", "fp32",
              "--device", "cpu", "--out", str(journal), "--cache-dir", str(tmp_path / "cache"), "--no-progress",
              "--attention", "se", "--chunk-size", "8", "--block-size", "4", "--top-k", "2"])
    assert done.value.code in (0, None)
    row = json.loads(journal.read_text().splitlines()[0])
    assert row["length"] == 32 and math.isfinite(row["ppl"]) and row["ppl"] > 1
