"""Tables of a report: task × length, groups, depth × model, format grids, effective length, and
paired comparisons of two runs.

Every number is recomputed from journal records with `spanlab.scoring` (RULER's metrics), so a
report always agrees with its journal. Every score cell is a `Score`: its mean, its n and a 95 %
interval (Wilson when each sample is right or wrong, a bootstrap for partial credit and for
averages over tasks of unequal n). Markdown and HTML print `61.11 [51.3, 70.2] n=25`; JSON keeps
the means in `rows` (what earlier reports held) and adds `cells` with mean, n, lo, hi and method;
CSV gives each score column its own `_n`, `_lo` and `_hi` columns.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from spanlab.report.load import Run, base_label, swept_depth
from spanlab.scoring import GROUPS, Score, paired_test, sample_score, task_score
from spanlab.units import format_length

DEFAULT_THRESHOLD = 85.6  # RULER: Llama-2-7B's score at 4K, the bar for "effective" context
ALPHA = 0.05  # a paired difference with p >= ALPHA is marked not significant


@dataclass(frozen=True)
class Noted:
    """A value with a remark for readers: JSON/CSV keep the value, Markdown/HTML add the remark."""

    value: Any
    note: str

    def __str__(self) -> str:
        return f"{'–' if self.value is None else self.value} ({self.note})"


class PValue(float):
    """A p-value: JSON keeps the float, tables print enough digits to tell 0.0039 from 0."""

    def __str__(self) -> str:
        return "<0.0001" if self < 1e-4 else f"{float(self):.4g}"


def _plain(v: Any) -> Any:
    if isinstance(v, Score):
        return v.mean
    if isinstance(v, Noted):
        return v.value
    return v


@dataclass
class Table:
    name: str  # file stem
    title: str
    columns: list[str]
    rows: list[list[Any]]  # cells: Score, Noted, or plain values
    notes: list[str] = field(default_factory=list)

    def _cell(self, v: Any) -> str:
        if v is None:
            return "–"
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, PValue):
            return str(v)
        if isinstance(v, float):
            return f"{v:.2f}"
        return str(v)

    def score_columns(self) -> list[int]:
        return [j for j in range(len(self.columns)) if any(isinstance(r[j], Score) for r in self.rows if j < len(r))]

    def to_markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(self._cell(v) for v in row) + " |" for row in self.rows]
        lines += [""] + [f"_{n}_" for n in self.notes]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        scored = set(self.score_columns())
        buf = io.StringIO()
        w = csv.writer(buf)
        header: list[str] = []
        for j, c in enumerate(self.columns):
            header += [c, f"{c}_n", f"{c}_lo", f"{c}_hi"] if j in scored else [c]
        w.writerow(header)
        for row in self.rows:
            out: list[Any] = []
            for j, v in enumerate(row):
                if j in scored:
                    out += [v.mean, v.n, v.lo, v.hi] if isinstance(v, Score) else ["" if v is None else _plain(v), "", "", ""]
                else:
                    out.append("" if v is None else _plain(v))
            w.writerow(out)
        return buf.getvalue()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "columns": self.columns,
                "rows": [[_plain(v) for v in row] for row in self.rows],
                "cells": [[v.to_json() if isinstance(v, Score) else _plain(v) for v in row] for row in self.rows],
                "notes": self.notes}

    def to_html(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(self._cell(v))}</td>" for v in row) + "</tr>" for row in self.rows)
        notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in self.notes)
        return f"<h3 id='{html.escape(self.name)}'>{html.escape(self.title)}</h3><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{notes}"


def _unique(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per sample id: a study that asks for the same prompt in two blocks (the depth
    sweep and the format grid share their depths 0/50/100) journals it twice, and counting it twice
    would halve no variance but narrow the interval."""
    seen: set[Any] = set()
    out = []
    for r in records:
        key = r.get("id")
        if key is None or key not in seen:
            out.append(r)
            if key is not None:
                seen.add(key)
    return out


def sample_scores(records: Sequence[dict[str, Any]]) -> list[float]:
    """Per-sample scores (0–100) by the task's RULER metric; their mean is `cell_score`."""
    return [sample_score(r["task"], r["prediction"], r["gold"]) for r in records]


def cell_score(records: Sequence[dict[str, Any]]) -> Score:
    """RULER's score for one cell (the task's metric over the cell's samples, 0–100) with its n and
    95 % interval."""
    records = _unique(records)
    task = records[0]["task"]
    mean = task_score(task, [r["prediction"] for r in records], [r["gold"] for r in records])
    return Score.of(sample_scores(records), mean=mean)


def mean_score(cells: Sequence[Sequence[dict[str, Any]]]) -> Score | None:
    """The mean over cells (tasks, formats, depths) of their scores, as the papers average: each
    cell weighs the same whatever its n; the interval resamples within each cell."""
    cells = [_unique(c) for c in cells if c]
    if not cells:
        return None
    means = [cell_score(c).mean for c in cells]
    return Score.of_groups([sample_scores(c) for c in cells], mean=round(sum(means) / len(means), 2))


Key = Callable[[dict[str, Any]], Any]


def cells(records: Iterable[dict[str, Any]], row_key: Key, col_key: Key) -> dict[Any, dict[Any, list[dict[str, Any]]]]:
    out: dict[Any, dict[Any, list]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        out[row_key(r)][col_key(r)].append(r)
    return out


def grid(records: Iterable[dict[str, Any]], row_key: Key, col_key: Key) -> dict[Any, dict[Any, Score]]:
    return {rk: {ck: cell_score(v) for ck, v in cols.items()} for rk, cols in cells(records, row_key, col_key).items()}


def length_records(run: Run) -> list[dict[str, Any]]:
    """The records of the task × length views (Table 1, task groups, averages, effective length,
    length curves): samples whose needle depth the task drew, RULER's protocol. A depth sweep or a
    format grid in the same run directory (a study puts every eval block of a model in one) has its
    own tables; here it would add format rows to Table 1, mix 7 swept depths into a task's row and
    weigh on the average. A run that is only a sweep is shown averaged over its depths."""
    return [r for r in run.records if swept_depth(r) is None] or run.records


def is_format_label(label: str) -> bool:
    """A label that names a haystack/key/value format (Table 4's rows): one of the seed study's
    formats, or a task with parameters in its label (`niah_single_2@haystack=repeat`)."""
    from spanlab.tasks.suites import FORMATS

    return label in FORMATS or "@" in label


def _len_header(length: int, train: int | None) -> str:
    return f"{format_length(length)}*" if train is not None and length == train else format_length(length)


def _avg_over_lengths(by_len: dict[int, list[list[dict[str, Any]]]]) -> Score | None:
    """The mean over lengths of the per-length means over tasks (every length weighs the same,
    however many tasks fit it), with the interval of that same estimand."""
    by_len = {ln: [c for c in cs if c] for ln, cs in by_len.items()}
    by_len = {ln: cs for ln, cs in by_len.items() if cs}
    if not by_len:
        return None
    groups, weights = [], []
    for cs in by_len.values():
        for c in cs:
            groups.append(sample_scores(_unique(c)))
            weights.append(1.0 / (len(by_len) * len(cs)))
    per_len = [mean_score(cs).mean for cs in by_len.values()]  # type: ignore[union-attr]
    return Score.of_groups(groups, mean=round(sum(per_len) / len(per_len), 2), weights=weights)


def task_length_table(run: Run) -> Table:
    """Seed Table 1 / 7–19: tasks × lengths, with an Avg column and an Average row. The Average
    row is the mean over every task run at that length (the seed averages its 13 tasks, QA
    included, when they are run)."""
    c = cells(length_records(run), base_label, lambda r: r["length"])
    lengths = sorted({ln for cols in c.values() for ln in cols})
    rows: list[list[Any]] = []
    for label in sorted(c):
        vals = [cell_score(c[label][ln]) if ln in c[label] else None for ln in lengths]
        rows.append([label, *vals, mean_score([c[label][ln] for ln in lengths if ln in c[label]])])
    by_len = {ln: [c[t][ln] for t in c if ln in c[t]] for ln in lengths}
    rows.append(["Average", *[mean_score(by_len[ln]) for ln in lengths], _avg_over_lengths(by_len)])
    notes = [f"* = training length ({run.train_length})"] if run.train_length in lengths else []
    notes.append("cells: mean [95 % interval] n = samples (Wilson for right/wrong samples, bootstrap otherwise); "
                 "Average = mean over tasks, Avg = mean over lengths")
    return Table(f"tasks_{_slug(run.name)}", f"{run.name}: accuracy by task and length",
                 ["task", *[_len_header(ln, run.train_length) for ln in lengths], "Avg"], rows, notes)


def group_table(run: Run) -> Table | None:
    """The Expansion Span paper's task groups × lengths (only groups whose tasks were run); its
    Average is the mean over the tasks of the groups (the paper: "the average of all eleven
    tasks"), not over the groups."""
    c = cells(length_records(run), lambda r: r["task"], lambda r: r["length"])
    lengths = sorted({ln for cols in c.values() for ln in cols})
    names = [n for n in GROUPS if any(t in c for t in GROUPS[n])]
    if not names:
        return None
    rows = []
    for ln in lengths:
        row: list[Any] = [format_length(ln)]
        for n in names:
            row.append(mean_score([c[t][ln] for t in GROUPS[n] if t in c and ln in c[t]]))
        row.append(mean_score([c[t][ln] for n in names for t in GROUPS[n] if t in c and ln in c[t]]))
        rows.append(row)
    return Table(f"groups_{_slug(run.name)}", f"{run.name}: task groups by length", ["length", *names, "Average"], rows,
                 ["Average = mean over the tasks of the groups (QA is in no group)"])


def _length_averages(run: Run) -> dict[int, Score]:
    c = cells(length_records(run), base_label, lambda r: r["length"])
    lengths = sorted({ln for cols in c.values() for ln in cols})
    return {ln: s for ln in lengths if (s := mean_score([c[t][ln] for t in c if ln in c[t]])) is not None}


def runs_summary_table(runs: Sequence[Run]) -> Table:
    """Runs × lengths, each cell the mean over the run's tasks at that length."""
    lengths = sorted({r["length"] for run in runs for r in length_records(run)})
    rows = []
    for run in runs:
        c = cells(length_records(run), base_label, lambda r: r["length"])
        by_len = {ln: [c[t][ln] for t in c if ln in c[t]] for ln in lengths}
        rows.append([run.name, *[mean_score(by_len[ln]) for ln in lengths], _avg_over_lengths(by_len)])
    return Table("summary", "Average accuracy over tasks, by length", ["run", *map(format_length, lengths), "Avg"], rows,
                 ["cells: mean over tasks [95 % interval] n = samples"])


def effective_length(scores_by_length: dict[int, float | Score | None], threshold: float = DEFAULT_THRESHOLD) -> int | None:
    """RULER's effective context length: the largest length whose score is >= threshold."""
    ok = [ln for ln, s in scores_by_length.items() if s is not None and _plain(s) >= threshold]
    return max(ok) if ok else None


@dataclass(frozen=True)
class EffectiveLength:
    """The call and how far noise could move it: `lower` counts only lengths whose whole interval
    clears the threshold, `upper` every length whose interval reaches it. When they differ, some
    length's pass/fail is within noise and so is the call."""

    length: int | None
    lower: int | None
    upper: int | None

    @property
    def within_noise(self) -> bool:
        return self.lower != self.upper


def effective_length_call(scores_by_length: dict[int, Score], threshold: float = DEFAULT_THRESHOLD) -> EffectiveLength:
    return EffectiveLength(effective_length(scores_by_length, threshold),
                           effective_length({ln: s.lo for ln, s in scores_by_length.items()}, threshold),
                           effective_length({ln: s.hi for ln, s in scores_by_length.items()}, threshold))


def effective_length_table(runs: Sequence[Run], threshold: float = DEFAULT_THRESHOLD) -> Table:
    rows = []
    for run in runs:
        avg = _length_averages(run)
        call = effective_length_call(avg, threshold)
        shown = Noted(call.length, "within noise") if call.within_noise else call.length
        rows.append([run.name, run.train_length, max(avg), shown, call.lower, call.upper, call.within_noise])
    return Table("effective_length", f"Effective context length (average score >= {threshold})",
                 ["run", "training length", "longest tested", "effective length", "lower bound", "upper bound",
                  "within noise"], rows,
                 ["– = below the threshold at every tested length",
                  ("lower bound: counting only lengths whose 95 % interval clears the threshold; upper bound: counting "
                   "every length whose interval reaches it"),
                  ("within noise: at some length the 95 % interval of the average straddles the threshold, so more "
                   "samples could move the call between the two bounds")])


def depth_model_tables(runs: Sequence[Run]) -> list[Table]:
    """Depth × run at one length, per swept label (each format of the seed's Tables 2–3 sweep)."""
    out = []
    keys = sorted({(base_label(r), r["length"]) for run in runs for r in run.records if swept_depth(r) is not None})
    for label, length in keys:
        per_run = {run.name: cells([r for r in run.records if base_label(r) == label and r["length"] == length
                                    and swept_depth(r) is not None], swept_depth, lambda r: 0)
                   for run in runs}
        depths = sorted({d for g in per_run.values() for d in g})
        if len(depths) < 2:
            continue
        rows: list[list[Any]] = [[_fmt_depth(d), *[cell_score(per_run[n][d][0]) if d in per_run[n] else None
                                                   for n in per_run]] for d in depths]
        rows.append(["Average", *[mean_score([per_run[n][d][0] for d in per_run[n]]) for n in per_run]])
        out.append(Table(f"depth_{_slug(label)}_{length}", f"{label} at {format_length(length)}: accuracy by needle depth (%)",
                         ["depth", *per_run], rows))
    return out


def _swept_formats(run: Run) -> list[dict[str, Any]]:
    from spanlab.tasks.suites import FORMATS

    return [r for r in run.records if swept_depth(r) is not None and base_label(r) in FORMATS]


def depth_format_tables(runs: Sequence[Run]) -> list[Table]:
    """Seed Tables 2–3: accuracy by needle depth, each cell the mean of the three formats of Table 4
    (Essay-Word-Num, Essay-Word-UUID, Repeat-Word-Num) at that depth — how the seed's rows are
    made (its Mamba2 at depth 0 and 2K = (45.6 + 49.6 + 82.0) / 3 = 59.1)."""
    out = []
    recs = {run.name: _swept_formats(run) for run in runs}
    for length in sorted({r["length"] for rs in recs.values() for r in rs}):
        per_run = {n: cells([r for r in rs if r["length"] == length], swept_depth, base_label) for n, rs in recs.items()}
        depths = sorted({d for c in per_run.values() for d in c})
        formats = sorted({f for c in per_run.values() for cols in c.values() for f in cols})
        if len(depths) < 2 or len(formats) < 2:
            continue
        rows: list[list[Any]] = [[_fmt_depth(d), *[mean_score(list(per_run[n].get(d, {}).values())) for n in per_run]]
                                 for d in depths]
        rows.append(["Average", *[mean_score([c for cols in per_run[n].values() for c in cols.values()])
                                  for n in per_run]])
        out.append(Table(f"depth_formats_{length}", f"Needle depth at {length}: mean of {len(formats)} formats (%)",
                         ["depth", *per_run], rows, [(f"each cell: the mean over {', '.join(formats)} at that depth, "
                                                      "as the seed's Tables 2–3; n = samples over the formats")]))
    return out


def format_grid_tables(runs: Sequence[Run]) -> list[Table]:
    """Seed Table 4: haystack/key/value formats × depth at each length, per run. Rows are the
    format labels; a plain task's depth sweep in the same run (Tables 2–3) joins only when the run
    sweeps no format (`spanlab eval --tasks a,b --depths ...` still gets a grid)."""
    out = []
    for run in runs:
        recs = [r for r in run.records if swept_depth(r) is not None]
        labels = sorted({base_label(r) for r in recs})
        formats = [lb for lb in labels if is_format_label(lb)]
        if formats:
            labels = formats
            recs = [r for r in recs if base_label(r) in formats]
        if len(labels) < 2:
            continue
        for length in sorted({r["length"] for r in recs}):
            c = cells([r for r in recs if r["length"] == length], base_label, swept_depth)
            depths = sorted({d for cols in c.values() for d in cols})
            rows = [[lb, *[cell_score(c[lb][d]) if d in c[lb] else None for d in depths], mean_score(list(c[lb].values()))]
                    for lb in sorted(c)]
            out.append(Table(f"formats_{_slug(run.name)}_{length}", f"{run.name} at {length}: format × depth",
                             ["format", *map(_fmt_depth, depths), "Avg"], rows))
    return out


def _paired_cells(run: Run) -> dict[tuple[str, int, float | None], dict[Any, dict[str, Any]]]:
    out: dict[tuple[str, int, float | None], dict[Any, dict[str, Any]]] = defaultdict(dict)
    for r in run.records:
        if r.get("id") is not None:
            out[(base_label(r), r["length"], swept_depth(r))].setdefault(r["id"], r)
    return out


def compare_table(a: Run, b: Run) -> Table:
    """A vs B on the same samples, per (task, length[, depth]): paired by sample id, exact McNemar
    for right/wrong samples, sign test for partial credit; `n.s.` marks p >= 0.05. A row per
    length pools every task's pairs (`all tasks`)."""
    from spanlab.errors import SpanlabError

    ca, cb = _paired_cells(a), _paired_cells(b)
    keys = sorted(set(ca) & set(cb), key=lambda k: (k[1], k[0], -1.0 if k[2] is None else k[2]))
    rows: list[list[Any]] = []
    pooled: dict[int, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    unmatched = 0
    for key in keys:
        ids = [i for i in ca[key] if i in cb[key]]
        unmatched += len(ca[key]) + len(cb[key]) - 2 * len(ids)
        if not ids:
            continue
        xa = sample_scores([ca[key][i] for i in ids])
        xb = sample_scores([cb[key][i] for i in ids])
        if key[2] is None:
            pooled[key[1]][0].extend(xa)
            pooled[key[1]][1].extend(xb)
        rows.append(_compare_row(key[0], key[1], key[2], xa, xb))
    if not rows:
        raise SpanlabError(f"{a.name} and {b.name} share no sample (same task, length, depth and sample id); "
                           "compare runs evaluated on the same generated samples")
    for length, (xa, xb) in sorted(pooled.items()):
        if len({r[0] for r in rows if r[1] == length and r[2] is None}) > 1:
            rows.append(_compare_row("all tasks", length, None, xa, xb))
    unmatched += sum(len(v) for k, v in ca.items() if k not in cb) + sum(len(v) for k, v in cb.items() if k not in ca)
    notes = [(f"A = {a.name}, B = {b.name}; A−B in points with its 95 % paired-bootstrap interval (lo, hi); p: exact "
              "McNemar (right/wrong samples) or sign test (partial credit); n.s. = not significant (p >= 0.05)"),
             "all tasks = every pair at that length pooled (not the mean over tasks)"]
    if unmatched:
        notes.append(f"{unmatched} samples found in only one of the two runs are left out")
    return Table("compare", f"{a.name} (A) vs {b.name} (B): paired comparison",
                 ["task", "length", "depth", "n", "A", "B", "A−B", "A−B lo", "A−B hi", "p", "test", "significant"], rows, notes)


def _compare_row(label: str, length: int, depth: float | None, xa: list[float], xb: list[float]) -> list[Any]:
    r = paired_test(xa, xb)
    return [label, length, None if depth is None else _fmt_depth(depth), r.n, r.mean_a, r.mean_b, r.diff,
            r.lo, r.hi, Noted(PValue(r.p_value), "n.s.") if not r.significant else PValue(r.p_value), r.method,
            r.significant]


def _fmt_depth(d: float) -> str:
    return str(int(d)) if float(d).is_integer() else str(d)


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in s)


def summary_table(records: Sequence[dict[str, Any]], title: str = ""):
    """A rich table for the terminal at the end of `spanlab eval`."""
    from rich.table import Table as RichTable

    c = cells(records, base_label, lambda r: r["length"])
    lengths = sorted({ln for cols in c.values() for ln in cols})
    t = RichTable(title=title, caption="mean [95 % interval] n=samples")
    t.add_column("task")
    for ln in lengths:
        t.add_column(str(ln), justify="right")
    t.add_column("Avg", justify="right")
    for label in sorted(c):
        vals = [cell_score(c[label][ln]) if ln in c[label] else None for ln in lengths]
        avg = mean_score([c[label][ln] for ln in lengths if ln in c[label]])
        t.add_row(label, *[str(v) if v is not None else "–" for v in vals], str(avg))
    return t


def dump(table: Table) -> str:
    return json.dumps(table.to_json(), indent=2)
