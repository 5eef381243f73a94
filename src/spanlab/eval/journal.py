"""Append-only per-sample JSONL journal: each finished sample is one line, flushed and fsynced.

A SIGKILL can tear at most the last line; readers skip a line that does not parse (and a
writer re-opening the file first terminates a torn line), so resume never breaks on it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

RESULTS_GLOB = "results*.jsonl"


def results_name(rank: int, world: int) -> str:
    return "results.jsonl" if world == 1 else f"results.rank{rank}-of-{world}.jsonl"


class Journal:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+b")
        # A previous writer killed mid-line leaves bytes without a newline: end that line so the
        # next record starts clean (the torn fragment is skipped by readers).
        self._fh.seek(0, os.SEEK_END)
        if self._fh.tell() > 0:
            self._fh.seek(-1, os.SEEK_END)
            if self._fh.read(1) != b"\n":
                self._fh.write(b"\n")
                self._flush()

    def _flush(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        data = b"".join((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8") for r in records)
        if data:
            self._fh.write(data)
            self._flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # torn write from a killed run
            if isinstance(rec, dict) and "id" in rec:
                yield rec


def record_key(rec: dict[str, Any]) -> tuple[str, str, float | None]:
    """What one record stands for: a prompt (`id`, a content hash) in one cell of the grid (label,
    needle depth). One prompt can sit in several cells -- a format-suite sample equal to a depth-sweep
    one, or two depths that give the same prompt at a short length -- and each cell keeps its record."""
    depth = rec.get("depth")
    return str(rec["id"]), str(rec.get("label") or rec.get("task")), None if depth is None else float(depth)


def read_run(rundir: str | os.PathLike) -> list[dict[str, Any]]:
    """All finished samples of a run, merged over every rank's journal, one record per cell sample
    (`record_key`)."""
    seen: dict[tuple, dict[str, Any]] = {}
    for p in sorted(Path(rundir).glob(RESULTS_GLOB)):
        for rec in read_records(p):
            seen.setdefault(record_key(rec), rec)
    return list(seen.values())

