"""Append-only per-sample JSONL journal: each finished sample is one line, flushed and fsynced.

A SIGKILL can tear at most the last line. Readers skip a line that is not a record and warn
(once per file state) on stderr; a writer re-opening the journal moves such lines to
`<journal>.corrupt` and keeps only whole records, so resume re-runs those samples and the journal
stays clean.
"""

from __future__ import annotations

import json
import os
import sys
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
        quarantine(self.path)
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


def _parse(line: str) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) and "id" in rec else None


_WARNED: set[tuple[str, int, int]] = set()


def read_records(path: str | os.PathLike, *, warn: bool = True) -> Iterator[dict[str, Any]]:
    """The records of one journal file, skipping lines that are not records (a torn write from a
    killed run, a hand edit); those are named on stderr once per file state."""
    bad: list[int] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            rec = _parse(line)
            if rec is None:
                bad.append(lineno)
                continue
            yield rec
    if bad and warn:
        st = os.stat(path)
        key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
        if key not in _WARNED:
            _WARNED.add(key)
            print(f"warning: {path}: skipped {len(bad)} unreadable line(s) ({_lines(bad)}); their samples "
                  "count as not done and a resumed run re-runs them", file=sys.stderr, flush=True)


def _lines(nums: list[int]) -> str:
    shown = ", ".join(map(str, nums[:5]))
    return f"line {shown}" + (f" and {len(nums) - 5} more" if len(nums) > 5 else "")


def quarantine(path: str | os.PathLike) -> int:
    """Move the lines of a journal that are not records to `<path>.corrupt` (appended), rewriting
    the journal with its whole records only (atomically). Returns how many lines moved."""
    p = Path(path)
    if not p.is_file():
        return 0
    good: list[bytes] = []
    bad: list[tuple[int, bytes]] = []
    with open(p, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            text = raw.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            if _parse(text) is None:
                bad.append((lineno, raw.rstrip(b"\n")))
            else:
                good.append(raw if raw.endswith(b"\n") else raw + b"\n")
    if not bad:
        return 0
    corrupt = p.with_name(p.name + ".corrupt")
    with open(corrupt, "ab") as f:
        f.write(b"".join(line + b"\n" for _, line in bad))
        f.flush()
        os.fsync(f.fileno())
    tmp = p.with_name(f".{p.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(b"".join(good))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
    print(f"warning: {p}: moved {len(bad)} unreadable line(s) ({_lines([n for n, _ in bad])}) to {corrupt}; "
          "their samples will be run again", file=sys.stderr, flush=True)
    return len(bad)


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

