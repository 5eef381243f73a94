"""Native RWKV-6 (spanlab.models.rwkv6): chunked WKV == recurrent, the model == a per-token reference
written from the spec, cached decode and chunked prefill == one shot, hub key layout loads."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

TINY = dict(vocab_size=64, hidden_size=32, num_hidden_layers=3, head_size=8, intermediate_size=64,
            time_mix_extra_dim=4, time_decay_extra_dim=8)


def _model(seed=0, **kw):
    from spanlab.models.rwkv6 import Rwkv6Config, Rwkv6ForCausalLM

    torch.manual_seed(seed)
    m = Rwkv6ForCausalLM(Rwkv6Config(**{**TINY, **kw})).eval()
    # Larger than the init schedule so every mixing term weighs on the logits.
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "ln" in name:
                continue
            p.add_(torch.randn(p.shape, generator=g) * (0.3 if p.dim() > 1 else 0.2))
    return m


IDS = torch.randint(0, 64, (2, 23), generator=torch.Generator().manual_seed(2))


def _rand_wkv(B=2, H=3, T=37, N=8, seed=0, strong=False):
    g = torch.Generator().manual_seed(seed)
    r, k, v = (torch.randn(B, H, T, N, generator=g) for _ in range(3))
    w = -torch.exp(torch.randn(B, H, T, N, generator=g) * (3.0 if strong else 1.0))
    return r, k, v, w, torch.randn(H, N, generator=g), torch.randn(B, H, N, N, generator=g)


@pytest.mark.parametrize("chunk,strong", [(1, False), (8, False), (16, True), (64, True)])
def test_chunked_wkv_equals_the_recurrence(chunk, strong):
    from spanlab.models.rwkv6.wkv import wkv_chunked, wkv_recurrent

    r, k, v, w, u, s0 = _rand_wkv(strong=strong)
    o1, s1 = wkv_recurrent(r, k, v, w, u, s0)
    o2, s2 = wkv_chunked(r, k, v, w, u, s0, chunk=chunk)
    assert torch.isfinite(o2).all()
    assert (o1 - o2).abs().max() <= 1e-5 * o1.abs().max()
    assert (s1 - s2).abs().max() <= 1e-5 * s1.abs().max()
    # Splitting the sequence and carrying the state is the same as one pass.
    oa, sa = wkv_chunked(r[:, :, :20], k[:, :, :20], v[:, :, :20], w[:, :, :20], u, s0, chunk=chunk)
    ob, sb = wkv_chunked(r[:, :, 20:], k[:, :, 20:], v[:, :, 20:], w[:, :, 20:], u, sa, chunk=chunk)
    assert (torch.cat([oa, ob], dim=2) - o1).abs().max() <= 1e-5 * o1.abs().max()


def _reference(model, ids):
    """Per-token float64 RWKV-6 from the spec (see modeling_rwkv6's docstring), from the state dict."""
    cfg = model.config
    sd = {k: v.double() for k, v in model.state_dict().items()}
    H, N, L, C = cfg.num_heads, cfg.head_size, cfg.num_hidden_layers, cfg.hidden_size

    def ln(x, p, eps=cfg.layer_norm_epsilon):
        return F.layer_norm(x, (x.shape[-1],), sd[p + ".weight"], sd[p + ".bias"], eps)

    outs = []
    for row in ids:
        shift_a = [torch.zeros(C, dtype=torch.float64) for _ in range(L)]
        shift_f = [torch.zeros(C, dtype=torch.float64) for _ in range(L)]
        S = [torch.zeros(H, N, N, dtype=torch.float64) for _ in range(L)]
        logits = []
        for tok in row:
            x = sd["rwkv.embeddings.weight"][tok]
            for i in range(L):
                p = f"rwkv.blocks.{i}."
                if i == 0:
                    x = ln(x, p + "pre_ln")
                a = p + "attention."
                h = ln(x, p + "ln1")
                xx = shift_a[i] - h
                shift_a[i] = h
                m = torch.tanh((h + xx * sd[a + "time_maa_x"].flatten()) @ sd[a + "time_maa_w1"]).view(5, -1)
                mw, mk, mv, mr, mg = (m[j] @ sd[a + "time_maa_w2"][j] for j in range(5))
                mixed = {n: h + xx * (sd[a + f"time_maa_{n}"].flatten() + d) for n, d in zip("wkvrg", (mw, mk, mv, mr, mg))}
                r = (sd[a + "receptance.weight"] @ mixed["r"]).view(H, N)
                k = (sd[a + "key.weight"] @ mixed["k"]).view(H, N)
                v = (sd[a + "value.weight"] @ mixed["v"]).view(H, N)
                g = F.silu(sd[a + "gate.weight"] @ mixed["g"])
                dec = sd[a + "time_decay"].flatten() + torch.tanh(mixed["w"] @ sd[a + "time_decay_w1"]) @ sd[a + "time_decay_w2"]
                w = torch.exp(-torch.exp(dec)).view(H, N)
                u = sd[a + "time_faaaa"].view(H, N)
                o = torch.zeros(H, N, dtype=torch.float64)
                for hd in range(H):
                    kv = torch.outer(k[hd], v[hd])
                    o[hd] = r[hd] @ (u[hd][:, None] * kv + S[i][hd])
                    S[i][hd] = w[hd][:, None] * S[i][hd] + kv
                o = F.group_norm(o.view(1, H * N), H, sd[a + "ln_x.weight"], sd[a + "ln_x.bias"], 1e-5 * cfg.head_size_divisor**2)
                x = x + sd[a + "output.weight"] @ (o.view(-1) * g)
                f = p + "feed_forward."
                h = ln(x, p + "ln2")
                xx = shift_f[i] - h
                shift_f[i] = h
                kk = torch.relu(sd[f + "key.weight"] @ (h + xx * sd[f + "time_maa_k"].flatten())) ** 2
                rr = torch.sigmoid(sd[f + "receptance.weight"] @ (h + xx * sd[f + "time_maa_r"].flatten()))
                x = x + rr * (sd[f + "value.weight"] @ kk)
            logits.append(sd["head.weight"] @ ln(x, "rwkv.ln_out"))
        outs.append(torch.stack(logits))
    return torch.stack(outs)


def _logits(model, ids, **kw):
    with torch.no_grad():
        return model(ids, use_cache=False, **kw).logits.double()


def _close(a, b, tol=1e-5):
    err = float((a - b).abs().max())
    assert err <= tol * max(1.0, float(b.abs().max())), err


@pytest.mark.parametrize("impl", ["chunk", "recurrent"])
def test_model_matches_the_per_token_reference(impl):
    model = _model(wkv_impl=impl, wkv_chunk=8)
    ref = _reference(model, IDS)
    assert ref.std() > 0.5  # the weights are large enough for the test to mean something
    _close(_logits(model, IDS), ref)


def test_cached_decode_and_chunked_prefill_equal_one_shot():
    from spanlab.models.prefill import plan_prefill, prefill_state

    model = _model()
    full = _logits(model, IDS)
    with torch.no_grad():
        out = model(IDS[:, :5])
        state, steps = out.state, [out.logits.double()]
        for t in range(5, IDS.shape[1]):
            out = model(IDS[:, t:t + 1], state=state)
            steps.append(out.logits.double())
    _close(torch.cat(steps, dim=1), full)
    plan = plan_prefill(model, 6)
    assert plan.mode == "state" and plan.cache_arg == "state"
    with torch.no_grad():
        state = prefill_state(model, plan, IDS[:, :-1], torch.ones_like(IDS[:, :-1]))
        last = model(IDS[:, -1:], state=state).logits.double()
    _close(last[:, -1], full[:, -1])


def test_generate_with_chunked_prefill_equals_one_shot():
    from transformers import GenerationConfig

    from spanlab.models.prefill import chunked_generate, plan_prefill

    model = _model()
    gc = GenerationConfig(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    ids = IDS[:1]
    with torch.no_grad():
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gc)
        got = chunked_generate(model, plan_prefill(model, 5), ids, torch.ones_like(ids), gc)
    assert torch.equal(ref, got)


def _generate_two(model, device, chunk=5):
    """Two prompts in a row (the second's prefill makes a new state list), each prefilled in chunks
    and decoded greedily: what the eval engine does per sample."""
    from transformers import GenerationConfig

    from spanlab.models.prefill import chunked_generate, plan_prefill

    gc = GenerationConfig(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    plan = plan_prefill(model, chunk)
    outs = []
    with torch.no_grad():
        for row in (IDS[:1], IDS[1:, :17]):
            ids = row.to(device)
            outs.append(chunked_generate(model, plan, ids, torch.ones_like(ids), gc).cpu())
    return outs


def test_decode_through_static_buffers_gives_the_eager_tokens():
    """`enable_decode_graphs(graphs=False)`: the graph path's buffers (state copied in once per
    prompt, the static state handed back to generate) without capture, on CPU."""
    model = _model()
    ref = _generate_two(model, "cpu")
    model.enable_decode_graphs(graphs=False)
    g = model._spanlab_decode_graphs
    got = _generate_two(model, "cpu")
    assert all(torch.equal(a, b) for a, b in zip(ref, got))
    assert g._state is not None and g.captures == 0  # the steps went through the buffers
    model.disable_decode_graphs()
    assert "_spanlab_decode_graphs" not in model.__dict__


def test_backend_turns_rwkv6_decode_graphs_on_only_where_asked_and_possible(tmp_path, tokenizer):
    from spanlab.errors import SpanlabError
    from spanlab.models.hf import HFBackend

    model = _model(vocab_size=len(tokenizer))
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    b = HFBackend(str(tmp_path / "m"), device="cpu", dtype="float32")
    assert b.decode_graphs == "off" and "_spanlab_decode_graphs" not in b.model.__dict__  # auto on CPU
    b.close()
    b = HFBackend(str(tmp_path / "m"), device="cpu", dtype="float32", decode_graphs="eager")
    assert b.decode_graphs == "eager" and not b.model._spanlab_decode_graphs.graphs
    b.close()
    with pytest.raises(SpanlabError, match="CUDA"):
        HFBackend(str(tmp_path / "m"), device="cpu", dtype="float32", decode_graphs="on")


@pytest.mark.gpu
def test_decode_graphs_give_the_eager_tokens_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = _model().cuda()
    ref = _generate_two(model, "cuda")
    model.enable_decode_graphs(graphs=True)
    got = _generate_two(model, "cuda")
    assert all(torch.equal(a, b) for a, b in zip(ref, got))
    assert model._spanlab_decode_graphs.captures == 1  # one capture serves both prompts


def test_hub_key_layout_loads_without_remote_code(tmp_path):
    """A folder as RWKV/rwkv-6-world-* ships it: model_type rwkv6, `rwkv.blocks.*` keys,
    pytorch_model.bin, auto_map pointing at remote code that is never run."""
    from transformers import AutoModelForCausalLM

    from spanlab.models.native import register_all

    model = _model()
    cfg = model.config.to_dict()
    cfg.update(architectures=["Rwkv6ForCausalLM"], auto_map={"AutoConfig": "configuration_rwkv6.Rwkv6Config",
                                                             "AutoModelForCausalLM": "modeling_rwkv6.Rwkv6ForCausalLM"})
    for key in ("wkv_impl", "wkv_chunk"):  # spanlab's own fields; a hub config has none
        cfg.pop(key)
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, tmp_path / "pytorch_model.bin")
    register_all()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert type(loaded).__name__ == "Rwkv6ForCausalLM" and type(loaded).__module__.startswith("spanlab.")
    _close(_logits(loaded, IDS), _logits(model, IDS), tol=1e-6)


@pytest.mark.gpu
def test_fla_kernel_matches_the_torch_forms_on_cuda():
    from spanlab.models.rwkv6.wkv import fla_available, wkv_chunked, wkv_fla

    if not (torch.cuda.is_available() and fla_available()):
        pytest.skip("needs CUDA and flash-linear-attention (pip install spanlab[rwkv])")
    r, k, v, w, u, s0 = (t.cuda() for t in _rand_wkv(T=300, N=64, H=4))
    o1, s1 = wkv_chunked(r, k, v, w, u, s0)
    o2, s2 = wkv_fla(r, k, v, w, u, s0)
    assert (o1 - o2).abs().max() <= 2e-3 * o1.abs().max()
    assert (s1 - s2.float()).abs().max() <= 2e-3 * s1.abs().max()


def _world_vocab(path):
    """A small vocabulary in the world file format: every byte, str and bytes multi-byte tokens."""
    lines = [f"{i + 1} {bytes([i])!r} 1" for i in range(256)]
    for t in ["th", "the", " the", "hello", " world", "é", "日本", "\n\n"]:
        lines.append(f"{len(lines) + 1} {t!r} {len(t.encode('utf-8'))}")
    lines.append(f"{len(lines) + 1} {bytes([0xE6, 0x97])!r} 2")
    path.mkdir(parents=True, exist_ok=True)
    (path / "rwkv_vocab_v20230424.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Rwkv6Tokenizer", "use_fast": False,
        "auto_map": {"AutoTokenizer": ["tokenization_rwkv6.Rwkv6Tokenizer", None]}}))
    (path / "config.json").write_text(json.dumps({"model_type": "rwkv6", "vocab_size": 300, "hidden_size": 32,
                                                  "num_hidden_layers": 1, "head_size": 8}))


def test_world_tokenizer_is_greedy_longest_match_and_round_trips(tmp_path):
    from transformers import AutoTokenizer

    from spanlab.models.native import register_all

    _world_vocab(tmp_path / "tok")
    register_all()
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")  # trust_remote_code off: spanlab's class
    assert type(tok).__name__ == "Rwkv6Tokenizer" and type(tok).__module__.startswith("spanlab.")
    text = "hello the world, théâtre 日本語\n\nend"
    ids = tok(text)["input_ids"]
    assert tok.convert_ids_to_tokens(ids)[:3] == ["hello", " the", " world"]  # longest match, not "th"+"e"
    assert ids[13] == 263  # "日本" as one token; "語" falls back to its three bytes
    assert tok.decode(ids) == text and tok.eos_token_id == 0 and tok.pad_token_id == 0
    tok.save_pretrained(tmp_path / "saved")
    assert AutoTokenizer.from_pretrained(tmp_path / "saved")(text)["input_ids"] == ids


def test_eval_cli_on_a_saved_folder_chunked_equals_one_shot(tmp_path, cli, tokenizer):
    from spanlab import tasks as T

    model = _model(vocab_size=len(tokenizer))
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(s.to_json() + "\n" for s in T.generate("niah_single_1", length=256, num_samples=2,
                                                                         tokenizer=tokenizer, seed=0)))
    common = ["--model", tmp_path / "m", "--samples", samples, "--max-new-tokens", "4", "--no-progress", "--dtype", "float32"]
    assert cli("eval", *common, "--out", tmp_path / "r1", "--prefill-chunk", "64") == 0
    assert cli("eval", *common, "--out", tmp_path / "r2", "--prefill-chunk", "0") == 0

    def preds(d):
        return [r["prediction"] for r in map(json.loads, (d / "results.jsonl").read_text().splitlines())]

    assert preds(tmp_path / "r1") == preds(tmp_path / "r2") and len(preds(tmp_path / "r1")) == 2
    m = json.loads((tmp_path / "r1" / "manifest.json").read_text())["model"]
    assert m["model_class"] == "Rwkv6ForCausalLM" and m["prefill"]["mode"] == "state"


def test_world_tokenizer_on_the_real_vocabulary_equals_the_reference_tokenizer(tmp_path):
    # The PyPI package `rwkv` (Apache-2.0, BlinkDL's ChatRWKV) ships the real world vocabulary,
    # rwkv_vocab_v20230424.txt, and the reference TRIE_TOKENIZER that the hub models were trained
    # with: spanlab's tokenizer must give the same ids on real text and decode back exactly.
    ref_mod = pytest.importorskip("rwkv.rwkv_tokenizer", reason="pip install --no-deps rwkv (CI does)")
    import pathlib
    import shutil

    from transformers import AutoTokenizer

    from spanlab.models.native import register_all
    from spanlab.tasks.essays import essay_text

    vocab = pathlib.Path(ref_mod.__file__).with_name("rwkv_vocab_v20230424.txt")
    _world_vocab(tmp_path / "tok")  # the config files; the vocabulary replaced by the real one
    shutil.copy(vocab, tmp_path / "tok" / "rwkv_vocab_v20230424.txt")
    register_all()
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    ref = ref_mod.TRIE_TOKENIZER(str(vocab))
    assert tok.vocab_size == 65530  # ids 0 (end of text) .. 65529
    essays = essay_text()[:20000]
    texts = [essays, "Hello world!\n\n  indented\tline", "théâtre, naïve — “quotes” … 日本語のテキスト 中文 한국어 🙂👍🏽",
             "def f(x):\n    return x ** 2  # code\r\n", "1234567890 3.14159 0xdeadbeef", " leading and trailing  "]
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids == ref.encode(text), text[:40]
        assert tok.decode(ids) == text == ref.decode(ids)
