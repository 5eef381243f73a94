"""The shipped YAML configs load, flags override them, and bad values are one-line user errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spanlab.errors import SpanlabError
from spanlab.finetune.config import FinetuneConfig

ROOT = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted((ROOT / "finetune").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_finetune_configs_validate(path, tmp_path):
    cfg = FinetuneConfig.from_yaml(path, model=str(tmp_path), out=tmp_path / "o", steps=50)
    assert cfg.steps == 50 and cfg.model == str(tmp_path)
    if cfg.attention == "s2":
        assert cfg.learning_rate == pytest.approx(2e-5)
    params = cfg.attention_params()
    if cfg.attention == "se":  # se_hylora_8k.yaml: the paper's random chunk draw
        assert params == {"chunk_size": (2048, 4096), "block_size": 32, "top_k": 8}
    if cfg.attention == "sw":
        assert params == {"window": 4096}


def test_defaults_follow_the_paper(tmp_path):
    cfg = FinetuneConfig.parse({"model": "m", "data": ["d"], "out": str(tmp_path)})
    assert (cfg.attention, cfg.peft, cfg.lora_dropout) == ("se", "hylora", 0.0)
    assert (cfg.context, cfg.steps, cfg.grad_accum, cfg.learning_rate) == (8192, 1000, 8, 2e-4)
    # Expansion Span sec. 4: chunk drawn per layer call from {2048, 4096}; SW window 4096 at 8192.
    assert cfg.attention_params() == {"chunk_size": (2048, 4096), "block_size": 32, "top_k": 8}
    sw = FinetuneConfig.parse({"model": "m", "data": ["d"], "out": "o", "attention": "sw"})
    assert sw.attention_params() == {"window": 4096}
    # LoRA by architecture (App. B): r=32/alpha=64 hybrids, r=8/alpha=16 Transformers; alpha = 2r for a given rank.
    assert cfg.lora(hybrid=True) == (32, 64) and cfg.lora(hybrid=False) == (8, 16)
    assert cfg.model_copy(update={"rank": 16}).lora(hybrid=False) == (16, 32)
    assert cfg.model_copy(update={"rank": 16, "alpha": 8}).lora(hybrid=True) == (16, 8)


def test_auto_precision_is_bf16_on_cuda_and_fp32_on_cpu(monkeypatch):
    import torch

    from spanlab.finetune.recipe import resolve_precision

    base = {"model": "m", "data": ["d"], "out": "o"}
    cfg = FinetuneConfig.parse(base)
    assert cfg.mixed_precision == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision(cfg) == "no"  # emulated bf16 autocast on an AVX2 CPU: ~7x slower steps
    assert resolve_precision(FinetuneConfig.parse({**base, "weights_dtype": "bf16"})) == "bf16"
    assert resolve_precision(FinetuneConfig.parse({**base, "mixed_precision": "bf16"})) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_precision(cfg) == "bf16"
    assert resolve_precision(FinetuneConfig.parse({**base, "mixed_precision": "no"})) == "no"
    with pytest.raises(SpanlabError, match="--weights-dtype bf16 needs"):
        FinetuneConfig.parse({**base, "weights_dtype": "bf16", "mixed_precision": "no"})


def test_short_contexts_keep_the_papers_proportions():
    cfg = FinetuneConfig.parse({"model": "m", "data": ["d"], "out": "o", "context": 2048})
    assert cfg.attention_params()["chunk_size"] == (512, 1024)
    assert FinetuneConfig.parse({"model": "m", "data": ["d"], "out": "o", "context": 16384}
                                ).attention_params()["chunk_size"] == (2048, 4096)
    assert FinetuneConfig.parse({"model": "m", "data": ["d"], "out": "o", "context": 2048, "attention": "sw"}
                                ).attention_params() == {"window": 1024}


def test_lora_defaults_pick_the_architecture(build):
    from spanlab.finetune.recipe import has_ssm_layers

    assert has_ssm_layers(build["bamba"]()) and has_ssm_layers(build["zamba2"]()) and not has_ssm_layers(build["llama"]())


def test_bad_values_are_user_errors(tmp_path):
    with pytest.raises(SpanlabError, match="attention"):
        FinetuneConfig.parse({"model": "m", "data": ["d"], "out": "o", "attention": "dilated"})
    with pytest.raises(SpanlabError, match="--mix has 1 weights for 2"):
        FinetuneConfig.parse({"model": "m", "data": ["a", "b"], "out": "o", "mix": [1.0]})
    with pytest.raises(SpanlabError, match="--model"):
        FinetuneConfig.from_yaml(ROOT / "finetune" / "se_hylora_8k.yaml", out="o")


@pytest.mark.parametrize("path", sorted((ROOT / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_are_valid_accelerate_files(path):
    from accelerate.commands.config.config_args import ClusterConfig

    cfg = ClusterConfig.from_yaml_file(str(path))  # accelerate's own loader: unknown keys raise
    assert cfg.distributed_type.value in ("MULTI_GPU", "FSDP", "DEEPSPEED")
    raw = yaml.safe_load(path.read_text())
    # GPU configs train in bf16; the CPU one (CI's FSDP test) in fp32, on CPU processes.
    assert (raw["mixed_precision"], raw["use_cpu"]) == (("no", True) if path.stem.endswith("_cpu") else ("bf16", False))
