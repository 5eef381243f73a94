"""Tiny random-weight models of every architecture class the eval engine supports, built from
configs (no downloads), saved once per session with the built-in tokenizer."""

from __future__ import annotations

import pytest

ARCHS = ("llama", "mamba2", "bamba", "zamba2", "jamba", "falcon_h1", "recurrent_gemma", "rwkv")


def tiny_config(arch: str, vocab: int, eos: int, pad: int):
    import transformers as T

    common = {"vocab_size": vocab, "bos_token_id": eos, "eos_token_id": eos, "pad_token_id": pad}
    attn = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    if arch == "llama":
        return T.LlamaConfig(**attn, max_position_embeddings=4096, **common)
    if arch == "mamba2":
        return T.Mamba2Config(hidden_size=64, num_hidden_layers=2, state_size=16, expand=2, head_dim=16, num_heads=8,
                              n_groups=1, chunk_size=32, **common)
    if arch == "bamba":
        return T.BambaConfig(**attn, attn_layer_indices=[1], mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=1,
                             mamba_d_state=16, mamba_expand=2, mamba_chunk_size=32, max_position_embeddings=4096, **common)
    if arch == "zamba2":
        return T.Zamba2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                              mamba_d_state=16, mamba_headdim=16, n_mamba_heads=8, mamba_expand=2, mamba_ngroups=1,
                              chunk_size=32, layers_block_type=["mamba", "hybrid"], hybrid_layer_ids=[1],
                              intermediate_size=128, attention_head_dim=16, max_position_embeddings=4096, **common)
    if arch == "jamba":
        return T.JambaConfig(**attn, attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2,
                             expert_layer_offset=1, num_experts=2, mamba_d_state=16, mamba_expand=2, mamba_dt_rank=8,
                             max_position_embeddings=4096, **common)
    if arch == "falcon_h1":
        return T.FalconH1Config(**attn, head_dim=16, mamba_d_ssm=128, mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=1,
                                mamba_d_state=16, mamba_chunk_size=32, max_position_embeddings=4096, **common)
    if arch == "recurrent_gemma":
        return T.RecurrentGemmaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                                      num_key_value_heads=1, head_dim=16, lru_width=64, attention_window_size=64, **common)
    if arch == "rwkv":
        return T.RwkvConfig(hidden_size=64, attention_hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            context_length=4096, **common)
    raise KeyError(arch)


@pytest.fixture(scope="session")
def tokenizer():
    from spanlab.tasks.tokenizer import load_tokenizer

    return load_tokenizer(None)


@pytest.fixture(scope="session")
def build_tiny(tokenizer):
    """build_tiny(arch, seed=0): an in-memory tiny model in eval mode, with weights large enough
    (initializer_range 0.1) that its SSM/recurrent layers weigh on the logits."""

    def build(arch: str, seed: int = 0):
        import torch
        import transformers as T

        torch.manual_seed(seed)
        cfg = tiny_config(arch, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
        cfg.initializer_range = 0.1
        return T.AutoModelForCausalLM.from_config(cfg).eval()

    return build


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, tokenizer):
    """{arch: directory} of saved tiny models, each with the built-in tokenizer beside it."""
    import torch
    import transformers as T

    root = tmp_path_factory.mktemp("tiny_models")
    out = {}
    for arch in ARCHS:
        torch.manual_seed(0)
        cfg = tiny_config(arch, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
        model = T.AutoModelForCausalLM.from_config(cfg)
        d = root / arch
        model.save_pretrained(d)
        tokenizer.save_pretrained(d)
        out[arch] = str(d)
    return out


@pytest.fixture(scope="session")
def sample_file(tmp_path_factory, tokenizer):
    """Two tasks x two lengths, two samples each, as `spanlab generate` writes them."""
    from spanlab import tasks as T

    path = tmp_path_factory.mktemp("samples") / "samples.jsonl"
    with open(path, "w") as f:
        for task in ("niah_single_1", "niah_multikey_1"):
            for length in (512, 1024):
                f.writelines(s.to_json() + "\n" for s in T.generate(task, length=length, num_samples=2, tokenizer=tokenizer, seed=0))
    return path
