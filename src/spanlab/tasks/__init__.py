"""RULER's tasks with depth/format control, built for tight and fast length fitting (no torch).

Public API:
    TASKS                    name -> task object (RULER names and defaults)
    generate(task, *, length, num_samples, tokenizer, seed=0, template="base", **params) -> list[Sample]
    load_tokenizer(name_or_path=None) -> transformers tokenizer (None: the built-in BPE)
    SUITES, expand_suite(name) -> list[TaskSpec]; TaskSpec(task, params, label)
    write_samples(samples, path, format="jsonl"|"parquet"), read_samples(path), sample_path(out, label, length)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from spanlab.errors import SpanlabError
from spanlab.tasks.base import AdditivityMismatch, Context, Task
from spanlab.tasks.io import read_samples, sample_path, write_samples
from spanlab.tasks.registry import TASKS
from spanlab.tasks.sample import Sample, read_jsonl
from spanlab.tasks.suites import SUITES, TaskSpec, expand_suite, parse_tasks
from spanlab.tasks.templates import MODEL_TEMPLATES, resolve
from spanlab.tasks.tokenizer import BUILTIN, counter_for, load_tokenizer, tokenizer_name


def get_task(task: str | Task) -> Task:
    if isinstance(task, Task):
        return task
    if task not in TASKS:
        raise SpanlabError(f"unknown task {task!r}; choose from: {', '.join(TASKS)}")
    return TASKS[task]


def generate(
    task: str | Task,
    *,
    length: int,
    num_samples: int,
    tokenizer: Any = None,
    seed: int = 0,
    template: str = "base",
    start: int = 0,
    progress: Callable[[int], None] | None = None,
    num_workers: int | None = None,
    **params: Any,
) -> list[Sample]:
    """Samples `start .. start+num_samples-1` of `task` fitted to `length` (RULER's max_seq_length).

    `tokenizer` is a loaded tokenizer, a name/path for `load_tokenizer`, or None for the built-in one.
    `params` override the task's defaults (NIAH: depth, haystack, key_type, value_type, num_keys,
    num_values, num_queries; QA: qa_data or qa_file). Samples are built in `num_workers` threads
    (default: one per CPU where token counting runs in Rust without the GIL, else one). Every sample satisfies
    prompt tokens + tokens_to_generate = `sample.length` <= `length`.
    """
    t = get_task(task)
    try:
        length, num_samples, seed, start = int(length), int(num_samples), int(seed), int(start)
    except (TypeError, ValueError):
        raise SpanlabError("length, num_samples, seed and start must be integers") from None
    if length <= t.tokens_to_generate:
        raise SpanlabError(f"length {length} leaves no room for a prompt: {t.name} generates "
                           f"{t.tokens_to_generate} tokens; use a larger --lengths value")
    if num_samples < 0 or start < 0:
        raise SpanlabError("num_samples and start must be >= 0")
    tok = tokenizer if tokenizer is not None and not isinstance(tokenizer, str) else load_tokenizer(tokenizer)
    resolved = t.resolve_params(params)
    ctx = Context(task=t.name, max_length=length, tokens_to_generate=t.tokens_to_generate,
                  counter=counter_for(tok), template=resolve(template, tok), params=resolved, seed=seed)
    t.prepare(ctx)

    def one(i: int) -> Sample:
        s = t.sample(ctx, i)
        if progress is not None:
            progress(1)
        return s

    if num_samples == 0:
        return []
    # The first sample fills the per-tokenizer caches; the rest may run in threads (see below).
    # Each sample has its own RNG, so order cannot matter.
    # The first sample also checks additive token counts against full tokenisation; on a mismatch
    # the counter falls back to full tokenisation for good and the sample is made again.
    ctx.verify = True
    try:
        first = one(start)
    except AdditivityMismatch:
        first = one(start)
    ctx.verify = False
    out = [first]
    if num_workers is None:
        # threads pay only where counting runs in Rust without the GIL; Python-side counting
        # (`ByteLevelCounts`) under the GIL gains nothing from them and loses to their switching
        # (fwe at 16K: ~45 % more CPU with two threads than with one on the 2-core VM)
        num_workers = 1 if ctx.counter.python_counting else (os.cpu_count() or 1)
    workers = min(num_workers, num_samples - 1)
    if workers <= 1:
        out.extend(one(i) for i in range(start + 1, start + num_samples))
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as ex:
            out.extend(ex.map(one, range(start + 1, start + num_samples)))
    ctx.counter.save()  # tables learnt in this batch, for the next process (spanlab.tasks.diskcache)
    return out


def generate_spec(spec: TaskSpec, **kwargs: Any) -> list[Sample]:
    """`generate` for one suite entry; its params are merged under explicit keyword params."""
    return generate(spec.task, **{**spec.params, **kwargs})


__all__ = [
    "BUILTIN", "MODEL_TEMPLATES", "SUITES", "TASKS", "Sample", "SpanlabError", "Task", "TaskSpec",
    "expand_suite", "generate", "generate_spec", "get_task", "load_tokenizer", "parse_tasks",
    "read_jsonl", "read_samples", "sample_path", "tokenizer_name", "write_samples",
]
