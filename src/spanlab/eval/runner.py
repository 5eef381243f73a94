"""The eval loop: samples → batches → backend → scored records appended to the run journal."""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spanlab import kernels
from spanlab.errors import SpanlabError
from spanlab.eval.batching import plan_batches
from spanlab.eval.config import EvalConfig
from spanlab.eval.journal import Journal, quarantine, read_run, record_key, results_name
from spanlab.eval.manifest import (
    build_manifest,
    check_compatible,
    merge_manifest,
    read_manifest,
    write_manifest,
)
from spanlab.eval.samples import (
    Spec,
    generate_samples,
    label_of,
    read_samples,
    sample_key,
    specs_from,
)
from spanlab.eval.shard import rank_world
from spanlab.models.base import Backend
from spanlab.scoring import sample_score
from spanlab.tasks.sample import Sample
from spanlab.tasks.suites import label_group


def _task_params(samples: Sequence[Sample]) -> dict[str, dict[str, Any]]:
    # Per label, the parameters shared by all its samples (depth varies inside a sweep: left out).
    out: dict[str, dict[str, Any]] = {}
    for s in samples:
        # The tokenizer's path is not an identity (the manifest's tokenizer hash is).
        p = {k: v for k, v in s.params.items() if k not in ("depth", "label", "tokenizer")}
        p["template"] = s.params.get("template", p.get("template"))
        out.setdefault(label_of(s), p)
    return {k: {kk: vv for kk, vv in v.items() if vv is not None} for k, v in sorted(out.items())}


def check_lengths(samples: Sequence[Sample], max_len: int | None, allow_extrapolation: bool) -> None:
    if max_len is None or allow_extrapolation:
        return
    too_long = sorted({s.max_length for s in samples if s.max_length > max_len})
    if too_long:
        raise SpanlabError(
            f"length(s) {', '.join(map(str, too_long))} exceed the model's maximum position {max_len}; "
            "drop them from --lengths or pass --allow-extrapolation to test beyond it")


class _Len:
    def __init__(self, n: int) -> None:
        self.max_length = n


def check_config(cfg: EvalConfig) -> list[Sample] | list[Spec]:
    """Everything about a run that can be checked without a model: the sample files (read and
    filtered), or the task specs, lengths and template of an in-process grid. Raises SpanlabError
    before anything slow starts or anything is written."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise SpanlabError(f"--out {out} is an existing file, not a run folder; choose another path")
    if cfg.samples:
        if cfg.suite or cfg.tasks:
            raise SpanlabError("pass either --samples or --suite/--tasks, not both")
        samples = read_samples(cfg.samples)
        if cfg.lengths:
            samples = [s for s in samples if s.max_length in set(cfg.lengths)]
        if not samples:
            raise SpanlabError("no samples left after filtering by --lengths; check the values")
        return samples
    if not cfg.lengths:
        raise SpanlabError("pass --lengths, e.g. --lengths 4096,8192 or 4k,8k")
    from spanlab.tasks import templates

    if cfg.template not in templates.names():
        raise SpanlabError(f"unknown template {cfg.template!r}; known: {', '.join(templates.names())}")
    return specs_from(cfg.suite, cfg.tasks)


def load_samples(cfg: EvalConfig, tokenizer: Any, checked: list[Sample] | list[Spec] | None = None) -> list[Sample]:
    """The samples of a run: read from --samples, or generated with `tokenizer` (`checked`: what
    `check_config` returned, so the work is not repeated)."""
    planned = check_config(cfg) if checked is None else checked
    if cfg.samples:
        return list(planned)  # type: ignore[arg-type]
    return generate_samples(planned, lengths=cfg.lengths, depths=cfg.depths,  # type: ignore[arg-type]
                            num_samples=cfg.num_samples, tokenizer=tokenizer, seed=cfg.seed, template=cfg.template)


def make_record(s: Sample, pred: str, prompt_tokens: int, new_tokens: int, latency: float, batch: int, rank: int) -> dict[str, Any]:
    label = label_of(s)
    # `depth` is where the needle sits (percent, the Sample field); `swept` says the run chose it
    # (a depth sweep cell) rather than the task's random draw; `group` is the label without the
    # depth, the row a sweep's cells share. Reports read these fields and never parse labels.
    swept = s.params.get("depth") is not None and s.depth is not None
    return {
        "id": s.id, "index": s.index, "task": s.task, "label": label, "group": label_group(label),
        "length": s.max_length, "depth": s.depth, "swept": swept, "params": s.params, "prediction": pred, "gold": s.outputs,
        "score": sample_score(s.task, pred, s.outputs), "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens, "latency_s": round(latency, 6), "batch_size": batch, "rank": rank,
    }


def plan_run(ordered: Sequence[Sample], backend: Backend, cfg: EvalConfig) -> list[tuple[str, int, int, list[Sample]]]:
    """All batches of a run, in order: per (label, length), per generation budget, by prompt length."""
    groups: dict[tuple, list[Sample]] = defaultdict(list)
    for s in ordered:
        groups[(label_of(s), s.max_length)].append(s)
    plan = []
    for (label, length), group in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        counts = backend.count_tokens([s.prompt for s in group])
        # Only samples with the same generation budget share a batch.
        by_budget: dict[int, list[int]] = defaultdict(list)
        for i, s in enumerate(group):
            by_budget[cfg.max_new_tokens or s.tokens_to_generate].append(i)
        for budget, idx in by_budget.items():
            for b in plan_batches([counts[i] for i in idx], padding=backend.padding, batch_size=cfg.batch_size,
                                  max_batch_tokens=cfg.max_batch_tokens):
                plan.append((label, length, budget, [group[idx[j]] for j in b]))
    return plan


def run_eval(cfg: EvalConfig, backend: Backend | None = None, *, samples: list[Sample] | None = None,
             checked: list[Sample] | list[Spec] | None = None) -> list[dict[str, Any]]:
    """Evaluate, journaling each finished sample; returns this run's records (all ranks, all time).

    `checked`: what `check_config(cfg)` returned, when the caller ran it already. The config's
    kernel choices (`cfg.kernels`, spanlab.kernels) hold for the whole run, the model load too."""
    with kernels.use(cfg.kernels):
        return _run_eval(cfg, backend, samples=samples, checked=checked)


def _run_eval(cfg: EvalConfig, backend: Backend | None, *, samples: list[Sample] | None,
              checked: list[Sample] | list[Spec] | None) -> list[dict[str, Any]]:
    from spanlab.models import load_backend

    rank, world = rank_world()
    out = Path(cfg.out)
    # Flags and sample files are checked before the model loads, and the run folder is made only
    # once the run can start: a mistake costs no model load and leaves no empty folder.
    if samples is None and checked is None:
        checked = check_config(cfg)
    if backend is None:
        try:
            backend = load_backend(cfg)
        except OSError as e:
            # transformers raises OSError for a model folder missing a file it names (weights, a
            # remote-code module under --trust-remote-code): the user's to fix, so one line.
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SpanlabError(f"cannot load model {cfg.model!r}: {first}") from None
    if cfg.lengths and backend.max_length and not cfg.allow_extrapolation and max(cfg.lengths) > backend.max_length:
        # Fail before spending time on sample generation.
        check_lengths([_Len(n) for n in cfg.lengths], backend.max_length, False)
    if samples is None:
        tok = None if cfg.samples else (getattr(backend, "tokenizer", None) or _tokenizer_for_generation(cfg))
        samples = load_samples(cfg, tok, checked)
    check_lengths(samples, backend.max_length, cfg.allow_extrapolation)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SpanlabError(f"cannot create run folder {out} ({e.strerror}); choose a writable --out") from None

    generation = {"stop": list(cfg.stop), "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed,
                  "template": None if cfg.samples else cfg.template}
    new = build_manifest(model=backend.describe(), generation=generation, tasks=_task_params(samples),
                         lengths=[s.max_length for s in samples],
                         extra={"train_length": cfg.train_length, "world_size": world,
                                "kernels": kernels.current().model_dump()})
    old = read_manifest(out)
    if old is not None:
        check_compatible(old, new, out)
    if rank == 0:
        write_manifest(out, merge_manifest(old, new))

    ordered = sorted(samples, key=lambda s: (label_of(s), s.max_length, s.depth if s.depth is not None else -1, s.id))
    # One prompt (id) can stand in several cells (label, depth): a format-suite sample equal to a
    # depth-sweep one, two depths that give the same prompt at a short length. It is generated once,
    # under its first cell, and journaled once per cell, so no cell of the grid loses its samples.
    cells: dict[str, list[Sample]] = {}
    for s in ordered:
        group = cells.setdefault(s.id, [])
        if all(sample_key(x) != sample_key(s) for x in group):
            group.append(s)
    quarantine(out / results_name(rank, world))  # each process cleans its own journal before reading
    previous = read_run(out)
    done = {record_key(r) for r in previous}
    if previous and rank == 0:
        n_done = sum(1 for s in samples if sample_key(s) in done)
        print(f"resuming {out}: {n_done} of {len(samples)} samples already done", file=sys.stderr, flush=True)
    outputs = {r["id"]: r for r in reversed(previous)}  # an earlier output of each prompt, any cell
    # Batches are planned over the whole run and then dealt out to ranks, so every sample meets
    # the same batch-mates (same padding, same kernel shapes) whatever the world size or how often
    # the run was resumed: a sharded run reproduces a single-process run bit for bit.
    mine = [(label, length, budget, batch)
            for k, (label, length, budget, batch) in enumerate(plan_run([g[0] for g in cells.values()], backend, cfg))
            if k % world == rank]
    # Cells of prompts with an output already are journaled from it, without generating.
    copies = [_record_as(x, outputs[s.id], rank) for b in mine for s in b[3] if s.id in outputs
              for x in cells[s.id] if sample_key(x) not in done]
    mine = [(label, length, budget, [s for s in batch if s.id not in outputs]) for label, length, budget, batch in mine]
    mine = [b for b in mine if b[3]]

    progress = _progress(cfg.progress and rank == 0)
    with Journal(out / results_name(rank, world)) as journal, progress:
        journal.append(copies)
        bar = progress.add_task("eval", total=sum(len(b[3]) for b in mine), label="")
        for label, length, budget, batch in mine:
            progress.update(bar, label=f"{label} @ {length}")
            t0 = time.perf_counter()
            gens = backend.generate([s.prompt for s in batch], budget, cfg.stop)
            dt = time.perf_counter() - t0
            records = [make_record(s, g.text, g.prompt_tokens, g.new_tokens, dt, len(batch), rank)
                       for s, g in zip(batch, gens)]
            journal.append([*records, *(_record_as(x, r, rank) for s, r in zip(batch, records) for x in cells[s.id][1:])])
            progress.advance(bar, len(batch))
    _barrier(world)
    keys = {sample_key(s) for s in samples}
    return [r for r in read_run(out) if record_key(r) in keys]


def _record_as(s: Sample, rec: dict[str, Any], rank: int) -> dict[str, Any]:
    """The record of sample `s` from the output `rec` of the same prompt in another cell (marked
    `reused`; no latency of its own)."""
    out = make_record(s, rec["prediction"], rec["prompt_tokens"], rec["new_tokens"], 0.0, rec["batch_size"], rank)
    out["reused"] = True
    return out


def _tokenizer_for_generation(cfg: EvalConfig) -> Any:
    from spanlab.tasks.tokenizer import load_tokenizer

    return load_tokenizer(cfg.tokenizer)


def _barrier(world: int) -> None:
    # Rank 0 reports only after every shard is journaled; gloo needs no GPU, so CPU runs work too.
    if world <= 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass

    def advance(self, *a, **k):
        pass


def _progress(enabled: bool):
    if not enabled:
        return _NoProgress()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class _Rate(TextColumn):
        def render(self, task):  # samples/s over the whole run so far
            from rich.text import Text

            rate = task.completed / task.elapsed if task.elapsed else 0.0
            return Text(f"{rate:.2f} samples/s")

    return Progress(TextColumn("{task.fields[label]}"), BarColumn(), MofNCompleteColumn(), _Rate(""),
                    TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
