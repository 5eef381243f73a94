"""Report numbers with n and intervals: format-averaged depth tables, the effective length's noise
call, and `spanlab report --compare` (paired tests on the same samples)."""

from __future__ import annotations

import json

from spanlab.eval.journal import Journal
from spanlab.eval.manifest import build_manifest, write_manifest
from spanlab.report.tables import effective_length_call
from spanlab.scoring import Score


def _rec(rid, task, label, length, ok, depth=None, swept=False):
    r = {"id": rid, "task": task, "label": label, "length": length, "depth": depth,
         "prediction": "7421" if ok else "nothing", "gold": ["7421"], "score": 100.0 if ok else 0.0}
    if swept:
        r["params"] = {"depth": depth}
    return r


def _write(d, recs, lengths=(1024,)):
    write_manifest(d, build_manifest(model={"model": d.name}, generation={}, tasks={}, lengths=list(lengths),
                                     extra={"train_length": None}))
    with Journal(d / "results.jsonl") as j:
        j.append(recs)


def test_depth_tables_average_the_three_formats_as_the_seed_does(tmp_path, cli):
    # At each depth, the seed's Tables 2-3 cell = mean of Essay-Word-Num, Essay-Word-UUID, Repeat-Word-Num.
    right = {"Essay-Word-Num": 4, "Essay-Word-UUID": 1, "Repeat-Word-Num": 2}  # of 4 samples, at every depth
    task = {"Essay-Word-Num": "niah_single_2", "Essay-Word-UUID": "niah_single_3", "Repeat-Word-Num": "niah_single_1"}
    recs = [_rec(f"{f}{d}{i}", task[f], f"{f}@depth={d}", 2048, i < k, depth=float(d), swept=True)
            for f, k in right.items() for d in (0, 50, 100) for i in range(4)]
    recs += recs[:1]  # the same sample journaled by two blocks (depth sweep + format grid) counts once
    _write(tmp_path / "m", recs, (2048,))
    assert cli("report", tmp_path / "m", "--out", tmp_path / "rep") == 0
    t = json.loads((tmp_path / "rep" / "depth_formats_2048.json").read_text())
    assert t["columns"] == ["depth", "m"]
    assert t["rows"] == [["0", 58.33], ["50", 58.33], ["100", 58.33], ["Average", 58.33]]  # (100 + 25 + 50) / 3
    assert t["cells"][0][1]["n"] == 12 and t["cells"][-1][1]["n"] == 36
    assert t["cells"][0][1]["method"] == "wilson"  # equal n, right/wrong: the pooled proportion 7/12
    assert "Essay-Word-UUID" in t["notes"][0]


def test_effective_length_says_when_the_call_is_within_noise(tmp_path, cli):
    def s(k, n):
        return Score.of([100.0] * k + [0.0] * (n - k))
    # 9/10 clears 85.6 but its interval reaches down to 59.6: the call 2048 could be 1024 (30/30
    # there clears it for sure: Wilson [88.6, 100]), and 4096's 5/10 could not reach it.
    call = effective_length_call({1024: s(30, 30), 2048: s(9, 10), 4096: s(5, 10)})
    assert (call.length, call.lower, call.upper, call.within_noise) == (2048, 1024, 2048, True)
    # Even 10/10 has a lower bound of 72.2: on 10 samples nothing is surely above 85.6.
    assert effective_length_call({1024: s(10, 10), 2048: s(9, 10)}).lower is None
    firm = effective_length_call({1024: s(100, 100), 2048: s(99, 100), 4096: s(10, 100)})
    assert (firm.length, firm.within_noise) == (2048, False)
    recs = [_rec(f"{ln}{i}", "niah_single_1", "niah_single_1", ln, i < k)
            for ln, k, n in ((1024, 30, 30), (2048, 9, 10), (4096, 5, 10)) for i in range(n)]
    _write(tmp_path / "r", recs, (1024, 2048, 4096))
    assert cli("report", tmp_path / "r", "--out", tmp_path / "rep") == 0
    eff = json.loads((tmp_path / "rep" / "effective_length.json").read_text())
    assert eff["rows"][0][3:] == [2048, 1024, 2048, True]
    assert "| 2048 (within noise) | 1024 | 2048 | yes |" in (tmp_path / "rep" / "effective_length.md").read_text()
    tasks = json.loads((tmp_path / "rep" / "tasks_r.json").read_text())
    assert tasks["cells"][0][2] == {"mean": 90.0, "n": 10, "lo": 59.58, "hi": 98.21, "method": "wilson"}


def test_compare_pairs_samples_by_id_and_marks_what_is_not_significant(tmp_path, cli, capsys):
    a = [_rec(f"s1-{i}", "niah_single_1", "niah_single_1", 1024, True) for i in range(20)]
    a += [_rec(f"s2-{i}", "niah_single_2", "niah_single_2", 1024, i < 10) for i in range(20)]
    b = [_rec(f"s1-{i}", "niah_single_1", "niah_single_1", 1024, i < 11) for i in range(20)]
    b += [_rec(f"s2-{i}", "niah_single_2", "niah_single_2", 1024, i < 10) for i in reversed(range(20))]
    b.append(_rec("only-b", "niah_single_2", "niah_single_2", 1024, True))
    _write(tmp_path / "A", a)
    _write(tmp_path / "B", b)
    assert cli("report", tmp_path / "A", tmp_path / "B", "--compare", "--out", tmp_path / "rep") == 0
    printed = capsys.readouterr().out
    t = json.loads((tmp_path / "rep" / "compare.json").read_text())
    rows = {r[0]: r for r in t["rows"]}
    # niah_single_1: 9 pairs only A solves, none only B: exact McNemar p = 2 / 2**9.
    assert rows["niah_single_1"][3:7] == [20, 100.0, 55.0, 45.0] and rows["niah_single_1"][9] == 2 / 2**9
    assert rows["niah_single_1"][10:] == ["mcnemar-exact", True] and rows["niah_single_1"][7] < 45 < rows["niah_single_1"][8]
    # niah_single_2: the same 10 right in both (order of the journal does not matter): no difference.
    assert rows["niah_single_2"][3:7] == [20, 50.0, 50.0, 0.0] and rows["niah_single_2"][9] == 1.0
    assert rows["niah_single_2"][11] is False
    assert rows["all tasks"][3] == 40 and rows["all tasks"][9] == 2 / 2**9
    md = (tmp_path / "rep" / "compare.md").read_text()
    assert "| 0.003906 |" in md and "| 1 (n.s.) |" in md and "1 samples found in only one" in md and "| 1 (n.s.) |" in printed


def test_compare_bad_input_is_one_line(tmp_path, cli, capsys):
    _write(tmp_path / "A", [_rec("x", "niah_single_1", "niah_single_1", 1024, True)])
    _write(tmp_path / "B", [_rec("y", "niah_single_1", "niah_single_1", 1024, True)])
    assert cli("report", tmp_path / "A", tmp_path / "B", "--compare", "--out", tmp_path / "r") == 2
    assert "share no sample" in capsys.readouterr().err
    assert cli("report", tmp_path / "A", "--compare", "--out", tmp_path / "r") == 2
    assert "exactly two" in capsys.readouterr().err
