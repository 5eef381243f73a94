"""`spanlab eval` end to end on every architecture class, then `spanlab report` over all runs."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from spanlab.scoring import sample_score, task_score

ARCHS = ("llama", "mamba2", "bamba", "zamba2", "jamba", "falcon_h1", "recurrent_gemma", "rwkv")
TASKS = ("niah_single_1", "niah_multikey_1")
LENGTHS = (512, 1024)
CLASSES = {"llama": "LlamaForCausalLM", "mamba2": "Mamba2ForCausalLM", "bamba": "BambaForCausalLM",
           "zamba2": "Zamba2ForCausalLM", "jamba": "JambaForCausalLM", "falcon_h1": "FalconH1ForCausalLM",
           "recurrent_gemma": "RecurrentGemmaForCausalLM", "rwkv": "RwkvForCausalLM"}


@pytest.fixture(scope="module")
def runs(tiny_models, tmp_path_factory):
    from spanlab.cli import main

    root = tmp_path_factory.mktemp("runs")
    out = {}
    for arch in ARCHS:
        d = root / arch
        try:
            main(["eval", "--model", tiny_models[arch], "--tasks", ",".join(TASKS), "--lengths", "512,1024",
                  "--num-samples", "2", "--max-new-tokens", "6", "--out", str(d), "--no-progress", "--train-length", "512"])
        except SystemExit as e:
            assert e.code in (0, None), f"{arch}: exit {e.code}"
        out[arch] = d
    return out


def _records(d: Path) -> list[dict]:
    return [json.loads(line) for line in (d / "results.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("arch", ARCHS)
def test_eval_journals_every_sample_with_its_score(arch, runs):
    recs = _records(runs[arch])
    assert len(recs) == len(TASKS) * len(LENGTHS) * 2 == len({r["id"] for r in recs})
    assert {(r["task"], r["length"]) for r in recs} == {(t, n) for t in TASKS for n in LENGTHS}
    for r in recs:
        assert r["score"] == sample_score(r["task"], r["prediction"], r["gold"])
        assert 0 < r["prompt_tokens"] + 6 <= r["length"] and 1 <= r["new_tokens"] <= 6
        assert r["latency_s"] > 0 and r["gold"]
    m = json.loads((runs[arch] / "manifest.json").read_text())
    assert m["model"]["model_class"] == CLASSES[arch]
    assert m["lengths"] == list(LENGTHS) and set(m["tasks"]) == set(TASKS)
    assert m["generation"]["max_new_tokens"] == 6 and m["packages"]["torch"]


def test_report_numbers_equal_recomputation_from_journal(runs, tmp_path, cli):
    assert cli("report", *[runs[a] for a in ARCHS], "--out", tmp_path) == 0
    for f in ("index.html", "summary.md", "summary.csv", "summary.json", "effective_length.json", "curve_Average.png",
              "report.md", "tables.json"):
        assert (tmp_path / f).stat().st_size > 0, f
    html = (tmp_path / "index.html").read_text()
    assert "data:image/png;base64," in html and "Effective context length" in html
    summary = json.loads((tmp_path / "summary.json").read_text())
    for arch in ARCHS:
        recs = _records(runs[arch])
        cells = defaultdict(list)
        for r in recs:
            cells[(r["task"], r["length"])].append(r)
        want = {k: task_score(k[0], [r["prediction"] for r in v], [r["gold"] for r in v]) for k, v in cells.items()}
        table = json.loads((tmp_path / f"tasks_{arch}.json").read_text())
        assert table["columns"] == ["task", "512*", "1K", "Avg"]  # training length marked
        for row in table["rows"][:-1]:
            for length, got in zip(LENGTHS, row[1:3]):
                assert got == want[(row[0], length)]
        avg_row = table["rows"][-1]
        for i, length in enumerate(LENGTHS):
            assert avg_row[1 + i] == round(sum(want[(t, length)] for t in TASKS) / len(TASKS), 2)
        srow = next(r for r in summary["rows"] if r[0] == arch)
        assert srow[1:3] == avg_row[1:3]


def test_depth_sweep_and_format_suite_reach_the_report(tiny_models, tmp_path, cli):
    common = ["--model", tiny_models["llama"], "--lengths", "512", "--num-samples", "1", "--max-new-tokens", "2",
              "--no-progress"]
    assert cli("eval", "--tasks", "niah_single_1", "--depths", "0,100", "--out", tmp_path / "sweep", *common) == 0
    recs = _records(tmp_path / "sweep")
    assert sorted(r["depth"] for r in recs) == [0, 100]
    assert cli("eval", "--suite", "niah-format", "--out", tmp_path / "fmt", *common) == 0
    labels = {r["label"] for r in _records(tmp_path / "fmt")}
    assert "Essay-Word-UUID@depth=50" in labels and len(labels) == 9
    assert cli("report", tmp_path / "sweep", tmp_path / "fmt", "--out", tmp_path / "rep") == 0
    depth = json.loads((tmp_path / "rep" / "depth_niah_single_1_512.json").read_text())
    assert [r[0] for r in depth["rows"]] == ["0", "100", "Average"]
    grid = json.loads((tmp_path / "rep" / "formats_fmt_512.json").read_text())
    assert [r[0] for r in grid["rows"]] == ["Essay-Word-Num", "Essay-Word-UUID", "Repeat-Word-Num"]
    assert grid["columns"] == ["format", "0", "50", "100", "Avg"]
