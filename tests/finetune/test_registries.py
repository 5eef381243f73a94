"""Issue 12: a toy attention variant and a toy architecture added through the registries alone
reach every reader: get_attention, the fine-tuning and study configs, `spanlab profile` and the
CLI help, the report labels, attention patching, PEFT targets and the HF backend."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from spanlab.attention.registry import (
    VARIANTS,
    Param,
    VariantSpec,
    get_attention,
    get_reference,
    register_variant,
    unregister_variant,
)
from spanlab.errors import SpanlabError
from spanlab.models.arch import (
    ARCHS,
    GENERIC,
    ArchProfile,
    profile_for,
    register_arch,
    unregister_arch,
)

TOY = "toy-blocklocal"


def _block_mask(L: int, window: int, device) -> torch.Tensor:
    t = torch.arange(L, device=device)
    return (t[:, None] >= t[None, :]) & (t[:, None] // window == t[None, :] // window)


def toy_fast(q, k, v, window: int):
    """Causal attention inside fixed blocks of `window` tokens (SDPA with a boolean mask)."""
    G = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(G, dim=1), v.repeat_interleave(G, dim=1)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=_block_mask(q.shape[2], window, q.device))


def toy_reference(q, k, v, window: int):
    from spanlab.attention.naive import dense_attention

    return dense_attention(q, k, v, _block_mask(q.shape[2], window, q.device))


TOY_SPEC = VariantSpec(
    TOY, "causal attention inside fixed blocks (a test variant)", fast=toy_fast,
    reference=toy_reference,
    params=(Param("window", "int", required=True, help="block length", context_fraction=0.5),),
    label="Toy-BlockLocal", default_lr=3e-4, keys_per_query=lambda L, p: (min(int(p["window"]), L) + 1) / 2,
)


@pytest.fixture
def toy_variant():
    spec = register_variant(TOY_SPEC)
    yield spec
    unregister_variant(TOY)
    assert TOY not in VARIANTS

def _toy_model_classes():
    from transformers import LlamaConfig, LlamaForCausalLM

    class ToyLlamaConfig(LlamaConfig):
        model_type = "toy_llama"

    class ToyLlamaForCausalLM(LlamaForCausalLM):
        config_class = ToyLlamaConfig

    return ToyLlamaConfig, ToyLlamaForCausalLM


def tiny_toy_model():
    cfg_cls, model_cls = _toy_model_classes()
    cfg = cfg_cls(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False)
    torch.manual_seed(0)
    return model_cls(cfg).eval()


@pytest.fixture
def toy_arch():
    profile = register_arch(ArchProfile(
        "toy", display="ToyFormer", model_types=frozenset({"toy_llama"}),
        left_padding=False,  # so the HF backend must run it at batch 1
        attention_projections=(("q_proj", "v_proj"),),  # LoRA on q and v only
        hylora_groups=("lora", "embeddings", "norms"),
    ))
    yield profile
    unregister_arch("toy")
    assert "toy" not in ARCHS


def _qkv(L=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 4, L, 8, generator=g, dtype=torch.float64),
            torch.randn(2, 2, L, 8, generator=g, dtype=torch.float64),
            torch.randn(2, 2, L, 8, generator=g, dtype=torch.float64))


# -- the attention-variant registry -------------------------------------------------------------

def test_builtin_registry_keeps_the_tuple_api():
    assert VARIANTS == ("full", "sw", "s2", "se", "se-nomem", "se-random", "se-landmark", "se-meanq")
    assert "se" in VARIANTS and ", ".join(VARIANTS).startswith("full, sw")
    assert VARIANTS["se-nomem"].bound == {"selection": "none"} and VARIANTS["full"].kv_cache
    assert VARIANTS["s2"].default_lr == 2e-5
    with pytest.raises(SpanlabError, match="already registered"):
        register_variant(VARIANTS["se"])


@pytest.mark.parametrize("name,params", [("sw", {"window": 5}), ("s2", {"group_size": 8}),
                                         ("se", {"chunk_size": 8, "block_size": 4, "top_k": 2})])
def test_builtin_fast_path_matches_its_registered_reference(name, params):
    q, k, v = _qkv()
    torch.testing.assert_close(get_attention(name, **params)(q, k, v), get_reference(name, **params)(q, k, v))


def test_toy_variant_runs_and_equals_what_it_should(toy_variant):
    q, k, v = _qkv()
    out = get_attention(TOY, window=6)(q, k, v)
    # fixed causal blocks are exactly SE-Attn without memory at chunk size = block length
    torch.testing.assert_close(out, get_attention("se-nomem", chunk_size=6)(q, k, v))
    torch.testing.assert_close(out, get_reference(TOY, window=6)(q, k, v))
    with pytest.raises(SpanlabError, match="needs window"):
        get_attention(TOY)
    with pytest.raises(SpanlabError, match="unknown parameter"):
        get_attention(TOY, window=4, top_k=2)


def test_toy_variant_in_finetune_and_study_configs(toy_variant):
    from spanlab.finetune.config import FinetuneConfig
    from spanlab.study.config import FinetuneSpec, ProfileSpec

    cfg = FinetuneConfig.parse({"model": "m", "data": ["d"], "out": "o", "context": 64, "attention": TOY})
    assert cfg.attention_params() == {"window": 32}  # its context_fraction, 0.5 of --context
    assert cfg.learning_rate == 3e-4
    assert FinetuneConfig.parse({"model": "m", "data": ["d"], "out": "o", "attention": TOY, "window": 8}
                                ).attention_params() == {"window": 8}
    assert ProfileSpec(variants=["full", TOY], lengths=["1x"]).variants == ["full", TOY]
    assert FinetuneSpec(name="t", base="b", settings={"attention": TOY}).settings["attention"] == TOY
    unregister_variant(TOY)
    with pytest.raises(SpanlabError, match=f"unknown attention variant '{TOY}'"):
        FinetuneConfig.parse({"model": "m", "data": ["d"], "out": "o", "attention": TOY})
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown attention variant"):
        ProfileSpec(variants=[TOY], lengths=["1x"])


def test_toy_variant_through_spanlab_profile_and_its_report_label(toy_variant, tmp_path):
    from spanlab.attention.profile import attention_flops, display_label
    from spanlab.cli import main

    args = ["profile", "--variants", f"full,{TOY}", "--lengths", "32", "--heads", "2", "--head-dim", "8",
            "--window", "8", "--dtype", "fp32", "--warmup", "0", "--repeats", "1", "--device", "cpu",
            "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code in (0, None)
    rows = list(csv.DictReader((tmp_path / "profile.csv").open()))
    assert [(r["label"], r["status"]) for r in rows] == [("full", "ok"), (TOY, "ok")]
    # the FLOP count is the variant's own: (W + 1) / 2 keys per query, 4·D per key, 3.5x for fwd+bwd
    assert float(rows[1]["attn_tflop"]) == pytest.approx(3.5 * 4 * 8 * 2 * 32 * 4.5 / 1e12)
    assert attention_flops(TOY, 32, 2, 8, chunk_size=0, window=8, group_size=0, block_size=0, top_k=0) == 4 * 8 * 2 * 32 * 4.5
    assert display_label(TOY) == "Toy-BlockLocal" and display_label("se[M=64]") == "SE-Attn (M=64)"
    assert (tmp_path / "profile_runtime.png").stat().st_size > 0


def test_toy_variant_in_cli_help():
    """Variants registered before the CLI loads (a plug-in's import) are listed in its help."""
    script = textwrap.dedent(f"""
        import sys
        from spanlab.attention.registry import Param, VariantSpec, register_variant
        register_variant(VariantSpec({TOY!r}, "toy", fast="spanlab.attention.full:full_attention",
                                     reference="spanlab.attention.naive:full_attention_reference"))
        from spanlab.cli import main
        for cmd in ("profile", "finetune"):
            try:
                main([cmd, "--help"])
            except SystemExit:
                pass
        print("torch loaded:", "torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False,
                         env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(TOY) >= 2  # in both commands' --attention / --variants help
    assert "torch loaded: False" in out.stdout  # listing variants costs no torch import


# -- architecture profiles ------------------------------------------------------------------------

def test_builtin_profiles_cover_the_families():
    from spanlab.models import ssd
    from spanlab.zoo import ALIASES, DISPLAY_NAMES, SSD_ARCHS

    assert {p.name for p in ARCHS.values()} >= {"llama", "mamba2", "mamba2_hybrid", "recurrent_gemma", "rwkv"}
    assert profile_for("bamba").name == "mamba2_hybrid" and profile_for("qwen2").static_cache
    assert not profile_for("rwkv6").left_padding and profile_for("some_new_type") is GENERIC
    with pytest.raises(SpanlabError, match="no architecture profile"):
        profile_for("some_new_type", strict=True)
    assert ssd.MODEL_TYPES == {"mamba2", "bamba", "zamba2", "falcon_h1", "nemotron_h", "granitemoehybrid",
                                 "spanlab_mamba2attn"}
    assert SSD_ARCHS == {"mamba2", "hybrid"} and ALIASES["bamba"] == "hybrid" and DISPLAY_NAMES["griffin"] == "Griffin"
    with pytest.raises(SpanlabError, match="already covered"):
        register_arch(ArchProfile("llama2", model_types=frozenset({"llama"})))


def test_toy_arch_is_found_and_patched_with_se(toy_arch):
    from spanlab.finetune.patching import (
        attention_modules,
        install_attention,
        patch_attention,
        restore_attention,
    )

    model = tiny_toy_model()
    assert profile_for(model) is toy_arch and profile_for(model.config) is toy_arch
    assert len(attention_modules(model)) == 2
    ids = torch.randint(0, 96, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        native = model(ids).logits
        params = {"chunk_size": 8, "block_size": 4, "top_k": 2}
        patch_attention(model, "se", **params)
        se = model(ids).logits
        restore_attention(model)
        install_attention(model, get_reference("se", **params))
        se_dense = model(ids).logits
        patch_attention(model, "full")
        back = model(ids).logits
    torch.testing.assert_close(se, se_dense, atol=1e-5, rtol=1e-5)  # SE in the toy == SE by its definition
    assert (se - native).abs().max() > 1e-3  # and SE really replaced full attention
    torch.testing.assert_close(back, native)


def test_toy_arch_profile_drives_patching_peft_and_the_backend(toy_arch, toy_variant, tokenizer):
    import dataclasses

    from spanlab.finetune.patching import patch_attention
    from spanlab.finetune.peft_recipes import resolve_targets
    from spanlab.models.hf import HFBackend

    model = tiny_toy_model()
    lora, trainable = resolve_targets(model, "lora+")
    assert sorted(lora) == sorted(f"model.layers.{i}.self_attn.{p}" for i in (0, 1) for p in ("q_proj", "v_proj"))
    assert "model.embed_tokens" in trainable
    ids = torch.randint(0, 96, (1, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        patch_attention(model, TOY, window=6)  # the toy variant inside the toy architecture
        toy = model(ids).logits
        patch_attention(model, "se-nomem", chunk_size=6)
        torch.testing.assert_close(toy, model(ids).logits)
        patch_attention(model, "full")

    # a profile with its own attention finder: only the modules it returns are patched
    unregister_arch("toy")
    register_arch(dataclasses.replace(toy_arch, attention_modules=lambda m: [m.model.layers[0].self_attn]))
    patch_attention(model, "sw", window=4)
    assert hasattr(model.model.layers[0].self_attn, "_spanlab_attention")
    assert not hasattr(model.model.layers[1].self_attn, "_spanlab_attention")
    patch_attention(model, "full")
    unregister_arch("toy")
    register_arch(dataclasses.replace(toy_arch, patchable=False))
    with pytest.raises(SpanlabError, match="ToyFormer models have no attention layers to patch"):
        patch_attention(model, "se", chunk_size=8)

    backend = HFBackend("toy", model_obj=model, tokenizer_obj=tokenizer, device="cpu", dtype="float32")
    assert backend.arch.name == "toy" and backend.padding == "none"  # left_padding=False in its profile
    assert backend.cache_implementation is None and backend.ssd_scan is None


def _toy_zoo_config(d: int, layers: int, vocab_size: int, **kw):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=d, intermediate_size=2 * d, num_hidden_layers=layers,
                       num_attention_heads=4, num_key_value_heads=2, **kw)


def test_toy_arch_profile_drives_the_zoo_fused_kernels_and_conversion(toy_arch):
    """The profile fields that replaced the zoo's size table, fused.py's module search and the
    mamba_ssm conversion's if-chain are read from the registry."""
    import dataclasses

    from spanlab.models import fused
    from spanlab.models.arch.base import CheckpointLayout, ZooShape
    from spanlab.models.arch.mamba2attn import MAMBA2ATTN
    from spanlab.models.mamba_ssm import conversion_targets, default_target
    from spanlab.zoo import zoo_config

    unregister_arch("toy")
    register_arch(dataclasses.replace(toy_arch, zoo="toyzoo", zoo_aliases=("toy-zoo",), zoo_builder=_toy_zoo_config,
                                      zoo_shapes={"tiny": ZooShape(3, {"intermediate_size": 100})}))
    cfg = zoo_config("toy-zoo", "tiny", vocab_size=64)
    assert (cfg.num_hidden_layers, cfg.intermediate_size, cfg.hidden_size) == (3, 100, 192)  # width of the size
    assert cfg.spanlab_arch == "toyzoo"
    with pytest.raises(SpanlabError, match="architecture 'toyzoo' has no 'small' shape.*choose one of tiny"):
        zoo_config("toyzoo", "small", vocab_size=64)

    # Llama-formula modules: fused when the profile allows the search, left alone when it does not.
    # (Its classes live in this test module, which has no rotary function to replace.)
    model = tiny_toy_model()
    assert fused.install(model) == ["rms_norm", "silu_mul"]
    fused.uninstall(model)
    unregister_arch("toy")
    register_arch(dataclasses.replace(toy_arch, fused_kernels=False))
    assert fused.install(tiny_toy_model()) == []

    own = CheckpointLayout(layers=4, attention_layers=1, mlp=True, full_rotary=False, own_attention=True)
    assert default_target(own) == "mamba2attn"
    assert default_target(dataclasses.replace(own, own_attention=False)) == "bamba"
    assert default_target(CheckpointLayout(4, 0, False, False, False)) == "mamba2"
    assert default_target(CheckpointLayout(4, 4, True, True, False)) == "llama"
    register_arch(dataclasses.replace(MAMBA2ATTN, conversion_target="toy-target"), replace=True)
    try:
        assert default_target(own) == "toy-target" and "toy-target" in conversion_targets()
    finally:
        register_arch(MAMBA2ATTN, replace=True)
    assert set(conversion_targets()) == {"llama", "mamba2", "bamba", "mamba2attn"}
