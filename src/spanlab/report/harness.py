"""The lm-eval-harness table of a report, from `spanlab harness` results in the run folders.

A folder may hold RULER results (manifest.json + journal), harness results
(harness_results.json), or both; every folder with harness results adds its rows. Values are
lm-eval's own (acc as a fraction, perplexity as is) with its standard error and the number of
documents each was computed on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from spanlab.errors import SpanlabError
from spanlab.report.tables import Table

RESULTS_FILE = "harness_results.json"  # the name spanlab.harness writes (not imported: report sits below it)


def has_harness(path: str | Path) -> bool:
    return (Path(path) / RESULTS_FILE).is_file()


def harness_only(path: str | Path) -> bool:
    """A folder with harness results and no RULER run (no manifest.json)."""
    return has_harness(path) and not (Path(path) / "manifest.json").is_file()


def harness_table(rundirs: Sequence[str | Path]) -> Table | None:
    """One row per (run, task, metric); None when no folder has harness results."""
    rows: list[list] = []
    for d in rundirs:
        p = Path(d)
        if not has_harness(p):
            continue
        try:
            doc = json.loads((p / RESULTS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise SpanlabError(f"{p / RESULTS_FILE}: not readable harness results ({e})") from None
        setting = doc.get("attention") or "full"
        if doc.get("adapter"):
            setting += f" + {Path(doc['adapter']).name} adapter"
        for task in sorted(doc.get("tasks", {})):
            entry = doc["tasks"][task]
            for metric in sorted(entry.get("metrics", {})):
                value = entry["metrics"][metric]
                if not isinstance(value, (int, float)):
                    continue
                err = (entry.get("stderr") or {}).get(metric)
                rows.append([p.name, setting, task, metric, float(value),
                             float(err) if isinstance(err, (int, float)) else None, entry.get("n")])
    if not rows:
        return None
    return Table("harness", "Short-context regression (lm-eval-harness)",
                 ["run", "attention", "task", "metric", "value", "stderr", "n"], rows,
                 notes=["lm-eval's metrics as it reports them (acc as a fraction of 1); stderr is its standard error; "
                        "n = documents scored."])
