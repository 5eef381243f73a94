"""`spanlab generate` without Typer: the command body, a fast option parser, and a light progress bar.

`spanlab generate` is a job people run in loops and scripts, and most of a short run used to be
start-up: Typer imports pydantic and rich and builds click objects and pydantic adapters for all
ten commands before any sample is made (~0.3 s CPU of a ~0.4 s one-sample run on a 2-core VM).
`spanlab.cli.main` therefore hands a `generate` command line to `parse_args` first; when every
token is one this parser understands without doubt (known options, plain values), the command runs
here without importing Typer at all. Anything else (`--help`, an unknown or repeated option, a
value Typer would have to coerce or reject, shell completion) returns None and goes through the
Typer command in `spanlab/cli/generate.py`, which calls the same `run_generate`, so help text,
usage errors and behaviour stay Typer's. `tests/tasks/test_cli_fast.py` checks both parsers give
the same arguments and that `OPTIONS` matches the Typer declaration.

This module is private (leading underscore) so the command discovery in `spanlab.cli` skips it.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from spanlab.errors import SpanlabError

# name in run_generate -> (option strings, kind, default); kind: "str", "int", "path", "flag".
# Must match the Typer declaration in spanlab/cli/generate.py (a test compares them).
OPTIONS: dict[str, tuple[tuple[str, ...], str, Any]] = {
    "suite": (("--suite",), "str", None),
    "tasks": (("--tasks",), "str", None),
    "lengths": (("--lengths",), "str", "4096"),
    "num_samples": (("--num-samples", "-n"), "int", 100),
    "tokenizer": (("--tokenizer",), "str", None),
    "allow_download": (("--allow-download",), "flag", False),
    "template": (("--template",), "str", "base"),
    "seed": (("--seed",), "int", 42),
    "qa_data": (("--qa-data",), "str", None),
    "squad": (("--squad",), "str", None),
    "hotpotqa": (("--hotpotqa",), "str", None),
    "out": (("--out",), "path", Path("data/ruler")),
    "format": (("--format",), "str", "jsonl"),
    "force": (("--force",), "flag", False),
}
_BY_OPT = {opt: name for name, (opts, _, _) in OPTIONS.items() for opt in opts}
# Integers Typer converts without question (no sign, underscores, spaces or huge values).
_PLAIN_INT = re.compile(r"[0-9]{1,15}")


def parse_args(args: list[str]) -> dict[str, Any] | None:
    """Keyword arguments for `run_generate` from the tokens after `generate`, or None when Typer
    must handle them. Accepts `--opt value`, `--opt=value`, `-n value` and the two flags, each
    option at most once, with values that do not start with "-" (Typer would take such a value
    too, but whether it is meant as an option is Typer's call)."""
    if any(k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ):
        return None  # a shell-completion request: Typer answers it
    seen: dict[str, Any] = {}
    i = 0
    while i < len(args):
        tok = args[i]
        opt, eq, val = tok.partition("=") if tok.startswith("--") else (tok, "", "")
        name = _BY_OPT.get(opt)
        if name is None or name in seen:
            return None
        kind = OPTIONS[name][1]
        if kind == "flag":
            if eq:
                return None
            seen[name] = True
            i += 1
            continue
        if not eq:
            if i + 1 >= len(args):
                return None
            val = args[i + 1]
            i += 1
        i += 1
        if not val or val.startswith("-"):
            return None
        if kind == "int":
            if not _PLAIN_INT.fullmatch(val):
                return None
            seen[name] = int(val)
        elif kind == "path":
            seen[name] = Path(val)
        else:
            seen[name] = val
    return {name: seen.get(name, default) for name, (_, _, default) in OPTIONS.items()}


def echo(message: str, err: bool = False) -> None:
    """`typer.echo` for plain text: the message and a newline, flushed."""
    f = sys.stderr if err else sys.stdout
    f.write(message + "\n")
    f.flush()


class ProgressBar:
    """One line on stderr, redrawn at most ten times a second, only when stderr is a terminal.

    Pipes and log files get no bar (the run ends with a one-line summary on stdout either way).
    `advance` is called from the sample threads, hence the lock.
    """

    width = 30

    def __init__(self, total: int, stream: Any = None):
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.on = bool(isatty and isatty())
        self.total, self.done, self.text = max(total, 1), 0, "samples"
        self.start = self.last = time.monotonic()
        self.lock = threading.Lock()

    def describe(self, text: str) -> None:
        self.text = text
        self._draw(force=True)

    def advance(self, k: int = 1) -> None:
        with self.lock:
            self.done += k
        self._draw()

    def _draw(self, force: bool = False) -> None:
        if not self.on:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.1 and self.done < self.total:
            return
        with self.lock:
            self.last = now
            fill = self.width * min(self.done, self.total) // self.total
            el = int(now - self.start)
            self.stream.write(f"\r\x1b[2K{self.text} [{'#' * fill}{'.' * (self.width - fill)}] "
                              f"{self.done}/{self.total} {el // 3600}:{el // 60 % 60:02d}:{el % 60:02d}")
            self.stream.flush()

    def close(self) -> None:
        if self.on:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()


def _lengths(text: str) -> list[int]:
    from spanlab.units import parse_lengths

    out = parse_lengths(text)
    if not out:
        raise SpanlabError("no lengths given; pass --lengths 4096,8192 or 4k,8k")
    return out


_SETTINGS = ("seed", "template", "tokenizer")


def _existing(path: Path) -> tuple[int, dict[str, Any]] | None:
    """(sample count, generation settings) of a sample file already there; None when there is
    none or it cannot be read (then it is simply made again)."""
    if not path.exists():
        return None
    from spanlab.tasks import read_samples

    try:
        samples = read_samples(path)
    except Exception:
        return None
    if not samples:
        return None
    s = samples[0]
    return len(samples), {"seed": s.seed, "template": s.params.get("template"), "tokenizer": s.params.get("tokenizer")}


def _conflict(rel: str, have: dict[str, Any], meta: dict[str, Any]) -> str | None:
    diff = [f"{k} {have[k]!r} (now {meta[k]!r})" for k in _SETTINGS if have.get(k) != meta[k]]
    return f"{rel} was made with {', '.join(diff)}" if diff else None


def _write_manifest(out: Path, command: dict[str, Any], files: dict[str, dict[str, Any]]) -> None:
    """OUT/manifest.json describes every file in the folder and every command that wrote there:
    a later command into the same folder adds to it instead of replacing it."""
    import json

    path = out / "manifest.json"
    old: dict[str, Any] = {}
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
        old = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass
    commands = [c for c in old.get("commands", []) if isinstance(c, dict)]
    if not commands and old.get("tasks"):  # a manifest of one command, written before this format
        commands = [{k: v for k, v in old.items() if k not in ("commands", "files")}]
    all_files = {**(old.get("files") if isinstance(old.get("files"), dict) else {}), **files}
    summary: dict[str, Any] = {
        "tasks": list(dict.fromkeys(t for c in [*commands, command] for t in c.get("tasks", []))),
        "lengths": sorted({n for c in [*commands, command] for n in c.get("lengths", [])}),
    }
    for key in ("num_samples", *_SETTINGS, "format"):
        vals = list(dict.fromkeys(f.get(key) for f in all_files.values())) or [command.get(key)]
        summary[key] = vals[0] if len(vals) == 1 else vals  # a list: files differ (made with --force)
    doc = {**summary, "commands": [*commands, command], "files": dict(sorted(all_files.items()))}
    tmp = out / ".manifest.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run_generate(
    suite: Optional[str] = None,
    tasks: Optional[str] = None,
    lengths: str = "4096",
    num_samples: int = 100,
    tokenizer: Optional[str] = None,
    allow_download: bool = False,
    template: str = "base",
    seed: int = 42,
    qa_data: Optional[str] = None,
    squad: Optional[str] = None,
    hotpotqa: Optional[str] = None,
    out: Path = Path("data/ruler"),
    format: str = "jsonl",
    force: bool = False,
    progress_stream: Any = None,
) -> None:
    """The body of `spanlab generate` (see its --help); raises SpanlabError on bad input."""
    from spanlab.tasks import (
        expand_suite,
        generate_spec,
        get_task,
        load_tokenizer,
        parse_tasks,
        sample_path,
        tokenizer_name,
        write_samples,
    )
    from spanlab.tasks.templates import resolve

    if format not in ("jsonl", "parquet"):
        raise SpanlabError(f"unknown --format {format!r}; choose jsonl or parquet")
    if bool(suite) == bool(tasks):
        raise SpanlabError("pass exactly one of --suite NAME or --tasks a,b")
    if num_samples < 1:
        raise SpanlabError("--num-samples must be at least 1")
    specs = expand_suite(suite) if suite else parse_tasks(tasks or "")
    lens = _lengths(lengths)
    if tokenizer is None and template != "chat":
        from spanlab.tasks.tokenizer import load_builtin_raw

        tok = load_builtin_raw()  # same counts, no transformers import
    else:
        tok = load_tokenizer(tokenizer, allow_download=allow_download)
    resolve(template, tok)  # fail on a bad template before any work
    tok_name = tokenizer_name(tok)
    out = out.expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".spanlab-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise SpanlabError(f"cannot write to --out {out} ({e.strerror}); choose a writable folder") from None

    # Check every task's parameters and data before writing anything.
    jobs, skipped_qa = [], []
    for spec in specs:
        task = get_task(spec.task)
        extra: dict = {}
        if task.family == "qa":
            from spanlab.tasks.qa import QA_DATA_ENV, SOURCES, find_qa_file

            no_qa_source = not (qa_data or squad or hotpotqa or os.environ.get(QA_DATA_ENV))
            ds = task.defaults["dataset"]
            extra = {"qa_data": qa_data, "qa_file": squad if ds == "squad" else hotpotqa}
            if suite and no_qa_source and not spec.params.get("qa_file") and not spec.params.get("qa_data"):
                skipped_qa.append((spec.label, ds))
                continue
            find_qa_file(ds, spec.params.get("qa_file") or extra["qa_file"], spec.params.get("qa_data") or qa_data)
        task.resolve_params({**spec.params, **extra})
        for L in lens:
            jobs.append((spec, L, extra))
    if skipped_qa:
        where = "; ".join(f"{label}: {' or '.join(SOURCES[ds][0])} from {SOURCES[ds][2]}" for label, ds in skipped_qa)
        echo(f"note: skipping {', '.join(lbl for lbl, _ in skipped_qa)} (no QA data given); to include them "
             f"pass --qa-data DIR holding {where}", err=True)

    meta = {"seed": seed, "template": template, "tokenizer": tok_name}
    # Files another command made with other settings are kept, not silently replaced: refuse
    # before writing anything (or replace them all with --force).
    plan: list[tuple[Any, int, dict, Path, bool]] = []
    conflicts = []
    for spec, L, extra in jobs:
        path = sample_path(out, spec.label, L, format)
        have = _existing(path)
        clash = _conflict(str(path.relative_to(out)), have[1], meta) if have else None
        if clash:
            conflicts.append(clash)
        plan.append((spec, L, extra, path, have is not None and not clash and have[0] == num_samples))
    if conflicts and not force:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise SpanlabError(f"--out {out} already holds samples made with other settings: {conflicts[0]}{more}; "
                           "use another --out, the same settings, or --force to replace them")
    done = skipped = 0
    files: dict[str, dict[str, Any]] = {}
    bar = ProgressBar(len(jobs) * num_samples, progress_stream)
    advance: Callable[[int], None] = bar.advance
    try:
        for spec, L, extra, path, up_to_date in plan:
            files[str(path.relative_to(out))] = {"task": spec.label, "length": L, "num_samples": num_samples,
                                                 **meta, "format": format}
            if not force and up_to_date:
                skipped += 1
                advance(num_samples)
                continue
            bar.describe(f"{spec.label} @ {L}")
            samples = generate_spec(spec, length=L, num_samples=num_samples, tokenizer=tok, seed=seed,
                                    template=template, progress=advance, **extra)
            write_samples(samples, path, format)
            done += 1
    finally:
        bar.close()
    command = {"suite": suite, "tasks": [s.label for s in specs], "lengths": lens, "num_samples": num_samples,
               **meta, "format": format}
    _write_manifest(out, command, files)
    echo(f"wrote {done} file(s), {skipped} already up to date, in {out}")
