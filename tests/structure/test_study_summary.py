"""report/study_summary.py: the exact summary.md a study's report step writes."""

from __future__ import annotations

import json
from dataclasses import dataclass

from spanlab.report.study_summary import perplexity_rows, write_study_summary


@dataclass
class Row:  # the fields of spanlab.attention.profile.ProfileRow that the summary reads
    label: str
    length: int
    ms: float
    peak_mem_gib: float
    status: str
    device: str = "H100"
    mode: str = "op"


def test_summary_tables_cells_and_figures(tmp_path):
    ppl = tmp_path / "ppl"
    ppl.mkdir()
    (ppl / "a.jsonl").write_text(json.dumps({"length": 512, "ppl": 12.345}) + "\n"
                                 + json.dumps({"length": 1024, "ppl": 20.0}) + "\n\n")
    (ppl / "b.jsonl").write_text(json.dumps({"length": 512, "ppl": 9.5}) + "\n")
    dest = tmp_path / "report"
    dest.mkdir()
    (dest / "report.md").write_text("## Effective length\n")
    (dest / "heat.png").write_bytes(b"")
    rows = perplexity_rows(ppl, lambda n: {"a": "Model A"}.get(n, n))
    assert rows == {"Model A": {512: 12.345, 1024: 20.0}, "b": {512: 9.5}}
    prof = [Row("full", 4096, 1.234, 0.5, "ok"), Row("full", 8192, 0.0, 0.0, "oom"), Row("se[M=128]", 4096, 0.5, 0.25, "ok")]
    out = write_study_summary(dest, name="t", steps={"train:a": {"wall_s": 3.21}, "report": {}}, ppl=rows,
                              profile_rows=prof, profile_planned=True)
    assert out.read_text() == "\n".join([
        "# Study `t`", "",
        "| step | wall (s) |", "|---|---:|", "| train:a | 3.2 |", "| report | 0.0 |", "",
        "## Perplexity (held-out essays)", "", "| model | 512 | 1K |", "|---|---:|---:|",
        "| Model A | 12.35 | 20.00 |", "| b | 9.50 |  |", "",
        "## Attention training step: time (ms) / peak memory (GiB), op mode, H100", "",
        "| variant | 4K | 8K |", "|---|---:|---:|", "| full | 1.23 / 0.50 | OOM |", "| se[M=128] | 0.50 / 0.25 |  |",
        "", "## Effective length\n", "", "## Figures", "", "- `heat.png`", ""])


def test_a_planned_profile_without_its_csv_says_so(tmp_path):
    out = write_study_summary(tmp_path, name="t", steps={}, ppl={}, profile_rows=None, profile_planned=True)
    text = out.read_text()
    assert "## Attention profile" in text and "Not run: it needs a CUDA device" in text
    assert "Perplexity" not in text
    bare = write_study_summary(tmp_path, name="t", steps={}, ppl={}, profile_rows=None, profile_planned=False)
    assert "Attention" not in bare.read_text()
