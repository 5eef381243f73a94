"""Read finished runs (manifest + merged journals) for reporting."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spanlab.errors import SpanlabError
from spanlab.eval.journal import read_run
from spanlab.eval.manifest import read_manifest
from spanlab.tasks.suites import label_group


@dataclass
class Run:
    name: str
    path: Path
    manifest: dict[str, Any]
    records: list[dict[str, Any]]

    @property
    def train_length(self) -> int | None:
        return self.manifest.get("train_length")


def base_label(rec: dict[str, Any]) -> str:
    """The task label without its depth: depth sweeps are one task at many depths (the record's
    `group`, written by spanlab.eval; journals older than that field get it from their label)."""
    group = rec.get("group")
    return str(group) if group else label_group(str(rec.get("label") or rec["task"]))


def swept_depth(rec: dict[str, Any]) -> float | None:
    """The needle depth in percent when the run controlled it (a depth sweep), else None.

    Samples of plain RULER tasks also carry the depth their random needle landed at; those are
    not a sweep and stay out of depth tables.
    """
    if rec.get("depth") is None:
        return None
    swept = rec.get("swept")
    if swept is None:  # a journal from before the field: the run chose the depth iff it set it
        label = str(rec.get("label") or rec.get("task"))
        swept = (rec.get("params") or {}).get("depth") is not None or label_group(label) != label
    return float(rec["depth"]) if swept else None


def load_run(path: str | os.PathLike, name: str | None = None) -> Run:
    p = Path(path)
    if not p.is_dir():
        raise SpanlabError(f"run directory {p} does not exist")
    manifest = read_manifest(p)
    if manifest is None:
        raise SpanlabError(f"{p} has no manifest.json; pass a directory written by `spanlab eval`")
    records = read_run(p)
    if not records:
        raise SpanlabError(f"{p} has no finished samples yet; run or resume `spanlab eval` first")
    return Run(name or p.name, p, manifest, records)


def load_runs(paths: list[str]) -> list[Run]:
    if not paths:
        raise SpanlabError("pass at least one run directory")
    runs = [load_run(p) for p in paths]
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        # Same leaf name in different parents: qualify with the parent to keep columns apart.
        for r in runs:
            r.name = f"{r.path.parent.name}/{r.path.name}"
    return runs


def task_set_note(runs: list[Run]) -> str | None:
    """A note for tables that average over each run's tasks, when the runs did not all run the
    same tasks (their averages then are not comparable); None when they did."""
    sets = {r.name: frozenset(base_label(x) for x in r.records) for r in runs}
    if len(set(sets.values())) <= 1:
        return None
    common = frozenset.intersection(*sets.values())
    parts = [f"{name}: {len(s)} tasks" + (f" (+{', '.join(sorted(s - common)[:3])}"
                                           f"{', ...' if len(s - common) > 3 else ''})" if s - common else "")
             for name, s in sets.items()]
    return ("runs were evaluated on different task sets, so their averages are over different tasks and "
            f"not directly comparable ({'; '.join(parts)}; {len(common)} shared)")
