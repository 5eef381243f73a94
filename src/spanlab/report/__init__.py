"""Reports from run directories: tables (markdown/CSV/JSON), heatmaps and curves (PNG), one HTML page."""

from __future__ import annotations

import json
from pathlib import Path

from spanlab.errors import SpanlabError
from spanlab.report.harness import harness_only, harness_table
from spanlab.report.html import render_html
from spanlab.report.load import Run, load_runs, task_set_note
from spanlab.report.plots import depth_heatmaps, length_curves
from spanlab.report.tables import (
    DEFAULT_THRESHOLD,
    Table,
    compare_table,
    depth_format_tables,
    depth_model_tables,
    effective_length,
    effective_length_call,
    effective_length_table,
    format_grid_tables,
    group_table,
    runs_summary_table,
    task_length_table,
)


def build_tables(runs: list[Run], threshold: float = DEFAULT_THRESHOLD, compare: bool = False) -> list[Table]:
    """Every table of a report; `compare` (exactly two runs) adds their paired comparison first."""
    tables = [runs_summary_table(runs), effective_length_table(runs, threshold)]
    note = task_set_note(runs)
    if note:
        for t in tables:
            t.notes.append(note)
    if compare:
        if len(runs) != 2:
            raise SpanlabError(f"--compare takes exactly two run directories (A B), got {len(runs)}")
        tables.insert(0, compare_table(runs[0], runs[1]))
    for run in runs:
        tables.append(task_length_table(run))
        g = group_table(run)
        if g is not None:
            tables.append(g)
    tables += depth_format_tables(runs)
    tables += depth_model_tables(runs)
    tables += format_grid_tables(runs)
    return tables


def build_report(rundirs: list[str], out: str | None = None, threshold: float = DEFAULT_THRESHOLD,
                 compare: bool = False, extra: list[Table] | None = None) -> Path:
    """Write every table (md/csv/json), every figure (png) and `index.html`; returns the out dir.
    With `compare`, the first table is the paired comparison of the two runs (`compare.*`);
    `extra` tables (a study's Fig. 11 table) come after the others."""
    # Folders with only `spanlab harness` results have no RULER run to load (report/harness.py).
    ruler_dirs = [d for d in rundirs if not harness_only(d)]
    runs = load_runs(ruler_dirs) if (ruler_dirs or not rundirs) else []
    dest = Path(out) if out else Path(rundirs[0]) / "report"
    dest.mkdir(parents=True, exist_ok=True)
    tables = (build_tables(runs, threshold, compare) if runs else []) + [
        t for t in [harness_table(rundirs)] if t is not None] + list(extra or [])
    for t in tables:
        (dest / f"{t.name}.md").write_text(t.to_markdown(), encoding="utf-8")
        (dest / f"{t.name}.csv").write_text(t.to_csv(), encoding="utf-8")
        (dest / f"{t.name}.json").write_text(json.dumps(t.to_json(), indent=2), encoding="utf-8")
    (dest / "report.md").write_text("\n".join(t.to_markdown() for t in tables), encoding="utf-8")
    (dest / "tables.json").write_text(json.dumps([t.to_json() for t in tables], indent=2), encoding="utf-8")
    figures = (length_curves(runs, dest) + depth_heatmaps(runs, dest)) if runs else []
    info = [f"{r.name}: {r.manifest.get('model', {}).get('model')} ({r.manifest.get('model', {}).get('model_class')}, "
            f"{r.manifest.get('model', {}).get('dtype')}), {len(r.records)} samples" for r in runs]
    (dest / "index.html").write_text(render_html("spanlab report", tables, figures, info), encoding="utf-8")
    return dest


__all__ = ["Run", "Table", "build_report", "build_tables", "compare_table", "effective_length", "effective_length_call",
           "load_runs"]
