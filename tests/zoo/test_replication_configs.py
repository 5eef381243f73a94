"""The ablation and replication study configs say what their comments claim (Expansion Span
Fig. 3, 4, 6; Huang 2024 depth sweeps), resolve to real FinetuneConfigs, and plan end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from spanlab.study import Study
from spanlab.study.config import load_study, packaged_configs

ROOT = Path(__file__).resolve().parents[2] / "src" / "spanlab" / "data" / "studies"


def _study(name: str, tmp_path: Path):
    cfg = load_study(str(ROOT / f"{name}.yaml"))
    study = Study(cfg, out=tmp_path)
    steps = [s.id for s in study.plan()]
    assert steps[-1] == "report" and len(steps) == len(set(steps))
    return cfg, study


def _finetunes(cfg, study):
    return {f.name: study.finetune_config(f.name) for f in cfg.finetune}


def _natural_text(fcs, out: Path):
    # The paper fine-tunes on natural text, not on RULER rows: the essays perplexity does not read.
    for fc in fcs.values():
        assert fc.task_fraction == 0 and fc.data == [str(out / "essays" / "train")] and fc.context == 2048


def test_ablation_chunk_fixed_vs_random(tmp_path):
    cfg, study = _study("ablation-chunk", tmp_path)
    fcs = _finetunes(cfg, study)
    _natural_text(fcs, tmp_path)
    chunks = {n: fc.attention_params()["chunk_size"] for n, fc in fcs.items()}
    assert chunks == {"se-fixed-512": 512, "se-fixed-1024": 1024, "se-random-512-1024": (512, 1024)}


def test_ablation_blocks_keep_the_span(tmp_path):
    cfg, study = _study("ablation-blocks", tmp_path)
    fcs = _finetunes(cfg, study)
    _natural_text(fcs, tmp_path)
    shapes = sorted((fc.block_size, fc.top_k) for fc in fcs.values())
    assert shapes == [(16, 16), (32, 8), (64, 4), (128, 2)]
    assert {s * k for s, k in shapes} == {256}


def test_ablation_span_sizes(tmp_path):
    cfg, study = _study("ablation-span", tmp_path)
    fcs = _finetunes(cfg, study)
    _natural_text(fcs, tmp_path)
    assert sorted(fc.block_size * fc.top_k for fc in fcs.values()) == [64, 128, 256, 512]
    assert {fc.block_size for fc in fcs.values()} == {32}


def test_ablation_lora_rank_keeps_alpha_twice_rank(tmp_path):
    cfg, study = _study("ablation-lora-rank", tmp_path)
    fcs = _finetunes(cfg, study)
    _natural_text(fcs, tmp_path)
    assert sorted(fc.lora(hybrid=True) for fc in fcs.values()) == [(8, 16), (16, 32), (32, 64), (64, 128)]
    assert {fc.peft for fc in fcs.values()} == {"hylora"}


def test_ablation_profile_at_the_papers_settings(tmp_path):
    cfg, study = _study("ablation-profile", tmp_path)
    p = study.profile_settings()
    assert (p["chunk_sizes"], p["window"], p["lengths"]) == ([2048, 4096], 4096, [8192, 16384, 32768])
    assert (p["block_size"], p["top_k"]) == (32, 8) and not cfg.finetune and not cfg.eval
    # One row per variant: the SE step alternates 2048 / 4096 across layer calls, as training does.
    from spanlab.attention.profile import configurations

    assert p["chunk_mode"] == "alternate"
    assert [c[1] for c in configurations(p["variants"], p["chunk_sizes"], p["chunk_mode"])] == [
        "full", "sw", "s2", "se[M=2048/4096]", "se-nomem[M=2048/4096]"]


def test_expansion_span_replicate(tmp_path):
    cfg, study = _study("expansion-span-replicate", tmp_path)
    assert cfg.models[0].path == "builtin:hybrid-tiny-c512" and cfg.models[0].train is None  # shipped base, not retrained
    fcs = _finetunes(cfg, study)
    _natural_text(fcs, tmp_path)
    assert {fc.attention for fc in fcs.values()} == {"full", "sw", "s2", "se", "se-nomem", "se-random"}
    assert fcs["se-hylora"].attention_params() == {"chunk_size": (512, 1024), "block_size": 32, "top_k": 8}
    assert fcs["sw-hylora"].attention_params() == {"window": 1024}
    assert fcs["s2-hylora"].learning_rate == 2e-5 and fcs["se-hylora"].learning_rate == 2e-4
    assert {fcs[n].peft for n in ("se-hylora", "se-lora", "se-lora-plus")} == {"hylora", "lora", "lora+"}
    assert all(fc.lora(hybrid=True) == (32, 64) for fc in fcs.values())
    p = study.profile_settings()
    assert (p["chunk_sizes"], p["window"], p["chunk_mode"]) == ([2048, 4096], 4096, "alternate")
    _fig11(study, tmp_path, {"sw-hylora": "sw:window=1024", "se-hylora": "se:chunk_size=512,block_size=32,top_k=8"})


def _fig11(study, tmp_path, rules):
    """Fig. 11: the SW and SE fine-tunes are evaluated with their own attention too, on NIAH-Single-1."""
    from spanlab.study.steps.eval_attention import attention_eval_plan, resolve_rule

    planned, _ = attention_eval_plan(study)
    assert {n: resolve_rule(study, n, r).describe() for n, r, _ in planned} == rules
    assert study.cfg.eval_attention.tasks == ["niah_single_1"]
    ids = [s.id for s in study.plan()]
    assert {f"eval:{n}@{n.split('-')[0]}:ruler" for n in rules} <= set(ids)


@pytest.mark.parametrize("name,chunk,window", [("expansion-span-mini", 1024, 2048),
                                               ("expansion-span-mini-gpu-quick", 512, 1024)])
def test_expansion_span_minis_evaluate_with_the_finetuning_attention(name, chunk, window, tmp_path):
    cfg, study = _study(name, tmp_path)
    _fig11(study, tmp_path, {"sw-hylora": f"sw:window={window}",
                             "se-hylora": f"se:chunk_size={chunk},block_size=32,top_k=8"})


def test_huang2024_replicate_has_enough_samples_for_lost_in_the_middle(tmp_path):
    cfg, study = _study("huang2024-replicate", tmp_path)
    assert {m.train.arch for m in cfg.models} == {"transformer", "mamba2", "hybrid"}
    for m in cfg.models:  # half natural text with the loss on every token
        assert m.train.task_fraction == 0.5 and m.train.context == 512
    depth = next(b for b in cfg.eval if b.name == "depth")
    assert depth.suite == "niah-depth" and depth.num_samples >= 100 and depth.lengths == ["0.5x", "1x", "2x"]


@pytest.mark.parametrize("name", ["huang2024-replicate", "expansion-span-replicate"])
def test_replications_ship_as_named_studies(name):
    # `spanlab study NAME` on a fresh install reads the packaged copy, from any directory
    assert packaged_configs()[name] == ROOT / f"{name}.yaml"
