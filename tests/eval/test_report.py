"""Report tables from hand-written journals: depth x model, format grid, heatmaps, effective length."""

from __future__ import annotations

import json

from spanlab.eval.journal import Journal
from spanlab.eval.manifest import build_manifest, write_manifest
from spanlab.report.tables import effective_length

FORMATS = ("Essay-Word-Num", "Repeat-Word-Num")
DEPTHS = (0.0, 50.0, 100.0)
LENGTHS = (1024, 2048, 4096)


def _write_run(d, hit, train_length=None):
    """hit(label, depth, length, i) -> whether sample i answers correctly."""
    write_manifest(d, build_manifest(model={"model": d.name}, generation={}, tasks={}, lengths=list(LENGTHS),
                                     extra={"train_length": train_length}))
    recs = []
    for label in FORMATS:
        for depth in DEPTHS:
            for length in LENGTHS:
                for i in range(4):
                    ok = hit(label, depth, length, i)
                    recs.append({"id": f"{label}{depth}{length}{i}", "task": "niah_single_2", "label": f"{label}@depth={depth:g}",
                                 "length": length, "depth": depth, "prediction": "7421" if ok else "nothing",
                                 "gold": ["7421"], "score": 100.0 if ok else 0.0})
    with Journal(d / "results.jsonl") as j:
        j.append(recs)


def test_depth_format_tables_heatmaps_and_effective_length(tmp_path, cli):
    # Model A: perfect up to 2048, fails at 4096 except at depth 100. Model B: 3 of 4 right everywhere.
    _write_run(tmp_path / "A", lambda lb, dp, ln, i: ln <= 2048 or dp == 100.0, train_length=2048)
    _write_run(tmp_path / "B", lambda lb, dp, ln, i: i < 3)
    out = tmp_path / "rep"
    assert cli("report", tmp_path / "A", tmp_path / "B", "--out", out) == 0

    depth = json.loads((out / "depth_Essay-Word-Num_4096.json").read_text())
    assert depth["columns"] == ["depth", "A", "B"]
    assert depth["rows"] == [["0", 0.0, 75.0], ["50", 0.0, 75.0], ["100", 100.0, 75.0], ["Average", 33.33, 75.0]]

    grid = json.loads((out / "formats_A_4096.json").read_text())
    assert grid["columns"] == ["format", "0", "50", "100", "Avg"]
    assert grid["rows"] == [[f, 0.0, 0.0, 100.0, 33.33] for f in FORMATS]

    tasks_a = json.loads((out / "tasks_A.json").read_text())
    assert tasks_a["columns"] == ["task", "1K", "2K*", "4K", "Avg"]  # lengths as spanlab.units.format_length writes them
    assert tasks_a["rows"][-1] == ["Average", 100.0, 100.0, 33.33, 77.78]

    eff = {r[0]: r[3] for r in json.loads((out / "effective_length.json").read_text())["rows"]}
    assert eff == {"A": 2048, "B": None}  # B's 75 never reaches 85.6
    for f in ("heatmap_A_Essay-Word-Num.png", "heatmap_B_Repeat-Word-Num.png", "curve_Essay-Word-Num.png"):
        assert (out / f).read_bytes()[:4] == b"\x89PNG"
    # CSV: each score column gets its n and 95 % interval (Wilson: 0/4 -> [0, 48.99], 3/4 -> [30.06, 95.44]).
    csv_lines = (out / "depth_Essay-Word-Num_4096.csv").read_text().splitlines()
    assert csv_lines[0] == "depth,A,A_n,A_lo,A_hi,B,B_n,B_lo,B_hi"
    assert csv_lines[1] == "0,0.0,4,0.0,48.99,75.0,4,30.06,95.44"
    assert "| 0 | 0.00 [0.0, 49.0] n=4 | 75.00 [30.1, 95.4] n=4 |" in (out / "depth_Essay-Word-Num_4096.md").read_text()
    assert depth["cells"][0][2] == {"mean": 75.0, "n": 4, "lo": 30.06, "hi": 95.44, "method": "wilson"}
    assert cli("report", tmp_path / "B", "--out", out, "--threshold", "70") == 0
    assert json.loads((out / "effective_length.json").read_text())["rows"][0][3] == 4096


def test_effective_length_is_the_largest_length_at_or_above_threshold():
    assert effective_length({4096: 90.0, 8192: 85.6, 16384: 40.0}) == 8192
    assert effective_length({4096: 80.0}) is None
