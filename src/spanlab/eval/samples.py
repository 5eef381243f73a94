"""Where an eval's samples come from: JSONL written by `spanlab generate`, or generated in-process."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spanlab.errors import SpanlabError
from spanlab.eval.journal import record_key
from spanlab.tasks.sample import Sample


@dataclass
class Spec:
    """One task configuration of a run: registry task name, its parameters, a display label."""

    task: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or self.task


def label_of(sample: Sample) -> str:
    return str(sample.params.get("label") or sample.task)


def sample_key(sample: Sample) -> tuple[str, str, float | None]:
    """The journal key of the record this sample gets (spanlab.eval.journal.record_key)."""
    return record_key({"id": sample.id, "label": label_of(sample), "depth": sample.depth})


def sample_files(paths: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("*.jsonl"))
            if not found:
                raise SpanlabError(f"no .jsonl sample files under {p}; run `spanlab generate` first or pass files")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise SpanlabError(f"sample path {p} does not exist; pass JSONL files or directories from `spanlab generate`")
    return files


def read_samples(paths: Sequence[str]) -> list[Sample]:
    out: list[Sample] = []
    for f in sample_files(paths):
        n = 0
        with open(f, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                    s = Sample.from_dict(d)
                except (json.JSONDecodeError, TypeError) as e:
                    raise SpanlabError(f"{f}:{lineno} is not a spanlab sample ({str(e).splitlines()[0]}); "
                                       "regenerate it with `spanlab generate`") from None
                out.append(s)
                n += 1
        if n == 0:
            raise SpanlabError(f"sample file {f} is empty; regenerate it or leave it out")
    # Files may repeat a sample; the same prompt under two labels or depths is two cells, kept apart.
    seen: set[tuple] = set()
    unique = [s for s in out if not ((k := sample_key(s)) in seen or seen.add(k))]
    return unique


def specs_from(suite: str | None, tasks: Sequence[str]) -> list[Spec]:
    from spanlab import tasks as T

    if suite and tasks:
        raise SpanlabError("pass either --suite or --tasks, not both")
    if suite:
        return [Spec(s.task, dict(s.params), s.label) for s in T.expand_suite(suite)]
    if not tasks:
        raise SpanlabError("nothing to evaluate: pass --suite NAME, --tasks T1,T2 or --samples DIR")
    return [Spec(s.task, dict(s.params), s.label) for s in T.parse_tasks(list(tasks))]


def generate_samples(specs: Sequence[Spec], *, lengths: Sequence[int], depths: Sequence[float] | None,
                     num_samples: int, tokenizer: Any, seed: int, template: str) -> list[Sample]:
    from spanlab import tasks as T

    out: list[Sample] = []
    for spec in specs:
        for length in lengths:
            depth_list: list[float | None] = [None]
            if depths and spec.task.startswith("niah") and "depth" not in spec.params:
                depth_list = list(depths)
            for depth in depth_list:
                params = dict(spec.params)
                if depth is not None:
                    params["depth"] = depth
                samples = T.generate(spec.task, length=length, num_samples=num_samples, tokenizer=tokenizer,
                                     seed=seed, template=template, **params)
                for s in samples:
                    if spec.label != spec.task:
                        s.params.setdefault("label", spec.label)
                out.extend(samples)
    return out
