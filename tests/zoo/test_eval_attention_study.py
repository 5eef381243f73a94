"""A study's `eval_attention` (Expansion Span Fig. 11): every fine-tune evaluated with full
attention and again with its own attention over the KV cache, on the same samples, and the report
pairs the two in one table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from spanlab.errors import SpanlabError
from spanlab.study import Study, load_study

_FT = {"peft": "lora", "steps": 1, "micro_batch_size": 1, "grad_accum": 1, "mixed_precision": "no",
       "gradient_checkpointing": False, "rank": 4, "alpha": 8, "save_every": 0}


def _cfg(model: Path, out: Path, **extra) -> dict:
    return {
        "name": "fig11", "out": str(out), "device": "cpu",
        "models": [{"name": "a", "path": str(model), "context": 256}],
        "generation": {"batch_size": 2, "max_new_tokens": 4},
        "eval": [{"name": "ruler", "tasks": ["niah_single_1"], "lengths": ["1x", "2x"], "num_samples": 2},
                 {"name": "other", "tasks": ["niah_single_2"], "lengths": ["1x"], "num_samples": 1}],
        "finetune": [
            {"name": "sw", "base": "a", "context": "2x", "settings": {**_FT, "attention": "sw", "window": 128}},
            {"name": "se", "base": "a", "context": "2x",
             "settings": {**_FT, "attention": "se", "chunk_size": [64, 128], "block_size": 16, "top_k": 2}},
            {"name": "s2", "base": "a", "context": "2x", "settings": {**_FT, "attention": "s2"}},
            {"name": "full", "base": "a", "context": "2x", "settings": {**_FT, "attention": "full"}},
        ],
        **extra,
    }


def _load(tmp_path: Path, cfg: dict):
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return load_study(str(p))


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines() if line.strip()]


def test_each_finetune_is_evaluated_with_full_and_its_own_attention(tmp_path, random_model):
    out = tmp_path / "s"
    # `tasks` picks NIAH-Single-1 (the paper's Fig. 11 task): the `other` block has none of it.
    cfg = _load(tmp_path, _cfg(random_model, out, eval_attention={"attention": ["same"], "tasks": ["niah_single_1"]}))
    study = Study(cfg, progress=False, log=lambda m: None)
    ids = [s.id for s in study.plan()]
    # S² has no rule over a KV cache (the paper omits it from Fig. 11); full's own attention is full.
    assert [i for i in ids if "@" in i] == ["eval:sw@sw:ruler", "eval:sw@sw:other", "eval:se@se:ruler",
                                            "eval:se@se:other"]
    study.run()
    man = json.loads((out / "eval" / "se@se" / "manifest.json").read_text())
    # The training draw {64, 128} evaluates with its smallest chunk; blocks and top-k as trained.
    assert man["model"]["attention_variant"] == "se:chunk_size=64,block_size=16,top_k=2"
    assert json.loads((out / "eval" / "sw@sw" / "manifest.json").read_text())["model"]["attention_variant"] == \
        "sw:window=128"
    for name in ("sw", "se"):  # the same prompts as the full-attention evaluation of that block
        own = {r["id"] for r in _records(out / "eval" / f"{name}@{name}")}
        full = {r["id"] for r in _records(out / "eval" / name) if r["task"] == "niah_single_1"}
        assert own == full and len(own) == 4
    table = json.loads((out / "report" / "attention_eval.json").read_text())
    assert table["columns"] == ["fine-tune", "evaluated with", "256", "512", "Avg"]
    assert [r[:2] for r in table["rows"]] == [["sw", "full"], ["sw", "sw"], ["sw", "sw − full"],
                                              ["se", "full"], ["se", "se"], ["se", "se − full"]]
    # The full row is scored on exactly the samples of the own-attention row (niah_single_1 only,
    # although the full evaluation also ran the `other` block).
    assert all(c["n"] == 2 for c in table["cells"][0][2:4])
    for full_row, own_row, diff_row in (table["rows"][0:3], table["rows"][3:6]):
        for j in (2, 3):
            assert diff_row[j] == pytest.approx(own_row[j] - full_row[j], abs=0.01)
    assert any("s2: trained with s2" in n for n in table["notes"])
    assert "Fig. 11" in (out / "report" / "summary.md").read_text()


def test_explicit_rules_and_bad_configs(tmp_path, random_model):
    cfg = _load(tmp_path, _cfg(random_model, tmp_path / "x",
                               eval_attention={"attention": ["sw:window=64"], "finetunes": ["full", "s2"]}))
    ids = [s.id for s in Study(cfg, progress=False, log=lambda m: None).plan()]
    assert [i for i in ids if "@" in i] == ["eval:full@sw-window64:ruler", "eval:full@sw-window64:other",
                                            "eval:s2@sw-window64:ruler", "eval:s2@sw-window64:other"]
    for bad, msg in (({"attention": ["full"]}, "already evaluated with full"),
                     ({"tasks": ["niah_single_9"]}, "unknown task"),
                     ({"attention": ["se-random"]}, "no deterministic evaluation rule"),
                     ({"blocks": ["nope"]}, "not an eval block"),
                     ({"finetunes": ["nope"]}, "not a fine-tune")):
        with pytest.raises(SpanlabError, match=msg):
            _load(tmp_path, _cfg(random_model, tmp_path / "y", eval_attention=bad))
    with pytest.raises(SpanlabError, match="not an eval block"):
        _load(tmp_path, _cfg(random_model, tmp_path / "y", finetune_eval=["other"],
                             eval_attention={"blocks": ["ruler"]}))
