"""Mamba2-family decode steps over spanlab's fixed caches (spanlab.models.decode_graph): the same
tokens as transformers' own generate for Mamba2, Bamba, Zamba2, FalconH1 and spanlab's Mamba2-Attn
(M2AForCausalLM: Mamba2 layers, attention layers with a conv over q/k/v), with left padding,
chunked prefill and the cache reused across calls; on CUDA the steps are graph replays and the
recurrent state is not advanced twice by the capture's warm-up."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

PROMPTS = ["The special magic number for apple is 12345. What is the special magic number for apple?",
           "Hello", "One two three four five six seven eight nine ten", "A"]
ARCHS = ("mamba2", "bamba", "zamba2", "falcon_h1", "mamba2attn")


def tiny_config(arch: str, tok):
    import transformers as T

    common = {"vocab_size": len(tok), "bos_token_id": tok.eos_token_id, "eos_token_id": tok.eos_token_id,
              "pad_token_id": tok.pad_token_id, "initializer_range": 0.1}
    attn = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "max_position_embeddings": 4096}
    if arch == "mamba2":
        return T.Mamba2Config(hidden_size=64, num_hidden_layers=2, state_size=16, expand=2, head_dim=16, num_heads=8,
                              n_groups=2, chunk_size=32, **common)
    if arch == "bamba":
        return T.BambaConfig(**attn, attn_layer_indices=[1], mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=1,
                             mamba_d_state=16, mamba_expand=2, mamba_chunk_size=32, **common)
    if arch == "zamba2":
        return T.Zamba2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                              mamba_d_state=16, mamba_headdim=16, n_mamba_heads=8, mamba_expand=2, mamba_ngroups=1,
                              chunk_size=32, layers_block_type=["mamba", "hybrid"], hybrid_layer_ids=[1],
                              intermediate_size=128, attention_head_dim=16, max_position_embeddings=4096, **common)
    if arch == "falcon_h1":
        return T.FalconH1Config(**attn, head_dim=16, mamba_d_ssm=128, mamba_n_heads=8, mamba_d_head=16,
                                mamba_n_groups=1, mamba_d_state=16, mamba_chunk_size=32, **common)
    if arch == "mamba2attn":
        from spanlab.models.mamba2attn import M2AConfig

        # Cache layers: Mamba2 (conv + SSM state), attention with a q/k/v conv (KV + pre-conv rows), both fixed.
        return M2AConfig(hidden_size=64, num_hidden_layers=3, attn_layer_indices=[1], num_attention_heads=4,
                         num_key_value_heads=2, head_dim=16, rotary_dim=8, attn_conv_kernel=4, mamba_n_heads=8,
                         mamba_d_head=16, mamba_n_groups=1, mamba_d_state=16, mamba_expand=2, mamba_chunk_size=32,
                         max_position_embeddings=4096, **common)
    raise KeyError(arch)


@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizer):
    import transformers as T

    from spanlab.models.native import register_all

    register_all()  # spanlab's own classes (Mamba2-Attn) for AutoModelForCausalLM
    root = tmp_path_factory.mktemp("recurrent_graph")
    out = {}
    for arch in ARCHS:
        torch.manual_seed(0)
        model = T.AutoModelForCausalLM.from_config(tiny_config(arch, tokenizer))
        model.save_pretrained(root / arch)
        tokenizer.save_pretrained(root / arch)
        out[arch] = str(root / arch)
    return out


def _backend(path, **kw):
    from spanlab.models.hf import HFBackend

    return HFBackend(path, **kw)


@pytest.mark.parametrize("arch", ARCHS)
def test_eager_steps_on_the_fixed_cache_generate_like_transformers(arch, models):
    ref = _backend(models[arch], device="cpu")
    b = _backend(models[arch], device="cpu", cache_implementation="static", decode_graphs="eager")
    assert b.describe()["decode_graphs"] == "eager"
    assert b.describe()["decode_kernels"] == "transformers (CPU)"  # installed; CPU tensors keep the fallbacks
    assert b.padding == "left"  # the prompts' lengths differ: the batch is left-padded
    want = ref.generate(PROMPTS, 10)
    assert sum(g.new_tokens for g in want) > len(PROMPTS)  # real decoding, not an EOS at once
    assert b.generate(PROMPTS, 10) == want
    assert b.graphs.step is not None  # decode steps ran through the static buffers
    assert b.graphs.loop_steps > 0  # spanlab's greedy loop ran the steps after generate's first
    assert (b.graphs.step.pos is None) == (arch == "mamba2")  # Mamba2 takes no position ids
    cache = b.graphs.cache
    assert b.generate(PROMPTS, 10) == want  # the same cache, reset in place
    assert b.graphs.cache is cache
    # One row, and a budget that is cut by stop strings, as transformers does it.
    assert b.generate(PROMPTS[:1], 10, stop=[" the"]) == ref.generate(PROMPTS[:1], 10, stop=[" the"])
    b.close()


@pytest.mark.parametrize("arch", ("mamba2", "bamba", "mamba2attn"))
def test_chunked_prefill_fills_the_fixed_cache(arch, models):
    # A prompt longer than the prefill chunk: Mamba2 prefills its state in chunks into the graph's
    # cache (spanlab.models.prefill, "state" way), Bamba and Mamba2-Attn through generate's prefill_chunk_size.
    ref = _backend(models[arch], device="cpu", prefill_chunk=0)
    b = _backend(models[arch], device="cpu", cache_implementation="static", decode_graphs="eager", prefill_chunk=16)
    assert b.prefill.chunked
    want = ref.generate(PROMPTS, 8)
    assert b.generate(PROMPTS, 8) == want
    assert b.graphs.step is not None


def test_supported_takes_recurrent_layers_and_refuses_sliding_windows(models):
    import transformers as T

    from spanlab.models import decode_graph
    from spanlab.models.arch import profile_for

    for arch in ARCHS:
        model = T.AutoModelForCausalLM.from_pretrained(models[arch])
        assert decode_graph.supported(model) is None, arch
        # ... and their profiles opt in: on CUDA the HF backend's default is a static cache and graphed decode.
        assert profile_for(model).static_cache and profile_for(model).cuda_graphs, arch
    cfg = T.MistralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                          num_key_value_heads=1, vocab_size=64, sliding_window=8)
    assert "not all" in decode_graph.supported(T.MistralForCausalLM(cfg))


def test_mask_shapes_a_step_can_replay():
    from spanlab.models.decode_graph import _mask_sig

    assert _mask_sig(None) is None
    assert _mask_sig(torch.ones(2, 1, 1, 8, dtype=torch.bool)) == ((2, 1, 1, 8), torch.bool)
    assert _mask_sig({"linear_attention": None, "full_attention": torch.ones(2, 1, 1, 8)}) is not False
    assert _mask_sig(torch.ones(2, 9)) is False  # grows by a column per step
    assert _mask_sig({"full_attention": torch.ones(2, 9)}) is False


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ARCHS)
def test_cuda_graph_replays_generate_like_eager(arch, models):
    pytest.importorskip("triton")
    ref = _backend(models[arch], device="cuda", dtype="float32", decode_graphs="off")
    b = _backend(models[arch], device="cuda", dtype="float32")
    d = b.describe()
    assert d["decode_graphs"] == "on" and d["decode_kernels"] == "spanlab-triton"
    want = ref.generate(PROMPTS, 12)
    assert b.generate(PROMPTS, 12) == want
    assert b.graphs.captures == 1 and b.graphs.replays >= 2  # EOS may end a random model early
    assert b.generate(PROMPTS, 12) == want  # replays on the reset cache
    assert b.graphs.captures == 1


@pytest.mark.parametrize("arch", ("mamba2", "bamba", "mamba2attn"))
def test_static_cache_without_graphs_generates_like_transformers(arch, models):
    # What the CUDA default falls back to with SPANLAB_DECODE_GRAPHS=0: the profile's static cache.
    ref = _backend(models[arch], device="cpu")
    b = _backend(models[arch], device="cpu", cache_implementation="static", decode_graphs="off")
    assert b.graphs is None and b.cache_implementation == "static"
    assert b.generate(PROMPTS, 8) == ref.generate(PROMPTS, 8)
