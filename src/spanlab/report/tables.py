"""Tables of a report: task × length, groups, depth × model, format grids, effective length.

Every number is recomputed from journal records with `spanlab.scoring` (RULER's metrics), so a
report always agrees with its journal.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from spanlab.report.load import Run, base_label, swept_depth
from spanlab.scoring import GROUPS, group_scores, task_score

DEFAULT_THRESHOLD = 85.6  # RULER: Llama-2-7B's score at 4K, the bar for "effective" context


@dataclass
class Table:
    name: str  # file stem
    title: str
    columns: list[str]
    rows: list[list[Any]]
    notes: list[str] = field(default_factory=list)

    def _cell(self, v: Any) -> str:
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.2f}"
        return str(v)

    def to_markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(self._cell(v) for v in row) + " |" for row in self.rows]
        lines += [""] + [f"_{n}_" for n in self.notes]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(self.columns)
        w.writerows([["" if v is None else v for v in row] for row in self.rows])
        return buf.getvalue()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "columns": self.columns, "rows": self.rows, "notes": self.notes}

    def to_html(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(self._cell(v))}</td>" for v in row) + "</tr>" for row in self.rows)
        notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in self.notes)
        return f"<h3 id='{html.escape(self.name)}'>{html.escape(self.title)}</h3><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{notes}"


def cell_score(records: Sequence[dict[str, Any]]) -> float:
    """RULER's score for one cell: the task's metric over the cell's samples (0–100)."""
    task = records[0]["task"]
    return task_score(task, [r["prediction"] for r in records], [r["gold"] for r in records])


def grid(records: Iterable[dict[str, Any]], row_key, col_key) -> dict[Any, dict[Any, float]]:
    cells: dict[Any, dict[Any, list]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        cells[row_key(r)][col_key(r)].append(r)
    return {rk: {ck: cell_score(v) for ck, v in cols.items()} for rk, cols in cells.items()}


def _mean(vals: Sequence[float]) -> float | None:
    return round(sum(vals) / len(vals), 2) if vals else None


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
    return f"{length}*" if train is not None and length == train else str(length)


def task_length_table(run: Run) -> Table:
    """Seed Table 1 / 7–19: tasks × lengths, with an Avg column and an Average row."""
    g = grid(length_records(run), base_label, lambda r: r["length"])
    lengths = sorted({ln for cols in g.values() for ln in cols})
    rows = []
    for label in sorted(g):
        vals = [g[label].get(ln) for ln in lengths]
        rows.append([label, *vals, _mean([v for v in vals if v is not None])])
    per_len = [_mean([g[t][ln] for t in g if ln in g[t]]) for ln in lengths]
    rows.append(["Average", *per_len, _mean([v for v in per_len if v is not None])])
    notes = [f"* = training length ({run.train_length})"] if run.train_length in lengths else []
    return Table(f"tasks_{_slug(run.name)}", f"{run.name}: accuracy by task and length",
                 ["task", *[_len_header(ln, run.train_length) for ln in lengths], "Avg"], rows, notes)


def group_table(run: Run) -> Table | None:
    """The Expansion Span paper's task groups × lengths (only groups whose tasks were run)."""
    g = grid(length_records(run), lambda r: r["task"], lambda r: r["length"])
    lengths = sorted({ln for cols in g.values() for ln in cols})
    per_len = {ln: group_scores({t: g[t][ln] for t in g if ln in g[t]}) for ln in lengths}
    names = [n for n in [*GROUPS, "Average"] if any(n in per_len[ln] for ln in lengths)]
    if not names or names == ["Average"]:
        return None
    rows = [[ln, *[per_len[ln].get(n) for n in names]] for ln in lengths]
    return Table(f"groups_{_slug(run.name)}", f"{run.name}: task groups by length", ["length", *names], rows)


def runs_summary_table(runs: Sequence[Run]) -> Table:
    """Runs × lengths, each cell the mean over the run's tasks at that length."""
    lengths = sorted({r["length"] for run in runs for r in length_records(run)})
    rows = []
    for run in runs:
        g = grid(length_records(run), base_label, lambda r: r["length"])
        vals = [_mean([g[t][ln] for t in g if ln in g[t]]) for ln in lengths]
        rows.append([run.name, *vals, _mean([v for v in vals if v is not None])])
    return Table("summary", "Average accuracy over tasks, by length", ["run", *map(str, lengths), "Avg"], rows)


def effective_length(scores_by_length: dict[int, float], threshold: float = DEFAULT_THRESHOLD) -> int | None:
    """RULER's effective context length: the largest length whose score is >= threshold."""
    ok = [ln for ln, s in scores_by_length.items() if s is not None and s >= threshold]
    return max(ok) if ok else None


def effective_length_table(runs: Sequence[Run], threshold: float = DEFAULT_THRESHOLD) -> Table:
    rows = []
    for run in runs:
        g = grid(length_records(run), base_label, lambda r: r["length"])
        lengths = sorted({ln for cols in g.values() for ln in cols})
        avg = {ln: _mean([g[t][ln] for t in g if ln in g[t]]) for ln in lengths}
        rows.append([run.name, run.train_length, max(lengths), effective_length(avg, threshold)])
    return Table("effective_length", f"Effective context length (average score >= {threshold})",
                 ["run", "training length", "longest tested", "effective length"], rows,
                 ["– = below the threshold at every tested length"])


def depth_model_tables(runs: Sequence[Run]) -> list[Table]:
    """Seed Tables 2–3: depth × run at one length, per NIAH task."""
    out = []
    keys = sorted({(base_label(r), r["length"]) for run in runs for r in run.records if swept_depth(r) is not None})
    for label, length in keys:
        per_run = {run.name: grid([r for r in run.records if base_label(r) == label and r["length"] == length
                                   and swept_depth(r) is not None], lambda r: swept_depth(r), lambda r: 0)
                   for run in runs}
        depths = sorted({d for g in per_run.values() for d in g})
        if len(depths) < 2:
            continue
        rows = [[_fmt_depth(d), *[per_run[n].get(d, {}).get(0) for n in per_run]] for d in depths]
        rows.append(["Average", *[_mean([per_run[n][d][0] for d in per_run[n]]) for n in per_run]])
        out.append(Table(f"depth_{_slug(label)}_{length}", f"{label} at {length}: accuracy by needle depth (%)",
                         ["depth", *per_run], rows))
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
            g = grid([r for r in recs if r["length"] == length], base_label, lambda r: swept_depth(r))
            depths = sorted({d for cols in g.values() for d in cols})
            rows = [[lb, *[g[lb].get(d) for d in depths], _mean(list(g[lb].values()))] for lb in sorted(g)]
            out.append(Table(f"formats_{_slug(run.name)}_{length}", f"{run.name} at {length}: format × depth",
                             ["format", *map(_fmt_depth, depths), "Avg"], rows))
    return out


def _fmt_depth(d: float) -> str:
    return str(int(d)) if float(d).is_integer() else str(d)


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in s)


def summary_table(records: Sequence[dict[str, Any]], title: str = ""):
    """A rich table for the terminal at the end of `spanlab eval`."""
    from rich.table import Table as RichTable

    g = grid(records, base_label, lambda r: r["length"])
    lengths = sorted({ln for cols in g.values() for ln in cols})
    t = RichTable(title=title)
    t.add_column("task")
    for ln in lengths:
        t.add_column(str(ln), justify="right")
    t.add_column("Avg", justify="right")
    for label in sorted(g):
        vals = [g[label].get(ln) for ln in lengths]
        t.add_row(label, *[f"{v:.2f}" if v is not None else "–" for v in vals],
                  f"{_mean([v for v in vals if v is not None]):.2f}")
    return t


def dump(table: Table) -> str:
    return json.dumps(table.to_json(), indent=2)
