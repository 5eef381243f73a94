"""The task/text stream shared by pre-training and fine-tuning: the same deterministic sequence of
packed token rows for every model.

Row `i` of a stream depends only on (seed, i, context, tokenizer, mixture, held-out set), never on
the architecture, so every zoo model sees exactly the same tokens in the same order. Each row is
`context` tokens and is, with probability `task_fraction`, a RULER-format task sample generated
at a random length in [context/4, context] (prompt, answer prefix, gold answer, EOS) followed by
essay text up to `context`; otherwise a window of the essay corpus at a random offset.

Prompt and answer are tokenized separately and concatenated, exactly as at evaluation time (the
model reads the tokenized prompt, then produces the answer's tokens), and the position of the
answer (its tokens plus the EOS) in each row is stored next to the rows, so a run may put the
loss of task rows on their answers only (`StreamDataset(..., loss="answers")`).

Rows are built once (in parallel) into a memory-mapped `.npy` cache named by a hash of everything
that defines them, so resuming a run, or training a second architecture, re-reads instead of
regenerating. Several runs may share one cache folder (and even build it at the same time).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from spanlab.errors import SpanlabError
from spanlab.mixture.heldout import TRAIN_SEED_BASE, HeldOut

# RULER tasks whose needles are numbers, UUIDs or codes: the held-out rewrite can make them
# disjoint from evaluation. (cwe/fwe answers are common words; qa needs external datasets.)
DEFAULT_TASKS: tuple[str, ...] = (
    "niah_single_1",
    "niah_single_2",
    "niah_single_3",
    "niah_multikey_1",
    "niah_multikey_2",
    "niah_multikey_3",
    "niah_multivalue",
    "niah_multiquery",
    "vt",
)


@dataclass(frozen=True)
class MixtureConfig:
    context: int
    seed: int = 0
    task_fraction: float = 0.25
    tasks: tuple[str, ...] = DEFAULT_TASKS
    min_task_length: int = 0  # 0 = context // 4

    def __post_init__(self) -> None:
        if self.context < 64:
            raise SpanlabError(f"--context must be at least 64 tokens, got {self.context}")
        if not 0.0 <= self.task_fraction <= 1.0:
            raise SpanlabError(f"task_fraction must be within [0, 1], got {self.task_fraction}")


@dataclass
class _Worker:
    """Everything a process needs to build rows; pickled once per worker."""

    mix: MixtureConfig
    tokenizer: Any
    heldout: HeldOut
    essay_ids: np.ndarray
    eos_id: int

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def essay_window(self, rng: random.Random, n: int) -> np.ndarray:
        ids = self.essay_ids
        start = rng.randrange(0, len(ids) - n) if len(ids) > n else 0
        out = ids[start : start + n]
        while len(out) < n:  # corpus shorter than a row: wrap around
            out = np.concatenate([out, ids[: n - len(out)]])
        return out

    def task_text(self, rng: random.Random, index: int) -> tuple[str, str]:
        from spanlab.tasks import generate

        ctx = self.mix.context
        lo = self.mix.min_task_length or ctx // 4
        task = rng.choice(self.mix.tasks)
        length = rng.randint(min(lo, ctx), ctx)
        last: Exception | None = None
        # Short lengths may not fit a task's template; grow towards the context before giving up.
        for attempt in range(4):
            try:
                (s,) = generate(task, length=length, num_samples=1, tokenizer=self.tokenizer,
                                seed=TRAIN_SEED_BASE + index * 8 + attempt)
                break
            except SpanlabError as e:
                last = e
                length = min(ctx, length * 2)
        else:
            raise SpanlabError(f"cannot build a {task} training sample within {ctx} tokens ({last}); "
                               "raise --context or drop the task from the mixture")
        answer = " " + ", ".join(s.outputs)
        prompt, answer = self.heldout.clean([s.input + s.answer_prefix, answer], rng)
        return prompt, answer

    def row(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        """Row `index` and the [start, end) of its answer tokens + EOS ((0, 0) for a text row)."""
        # String seeds hash with SHA-512 inside `random`: stable across processes and Python runs.
        # The "pretrain" prefix predates this module's move out of spanlab.pretrain; it is part of
        # every cached stream's content, so it stays.
        rng = random.Random(f"spanlab-pretrain:{self.mix.seed}:{index}")
        ctx = self.mix.context
        if self.mix.tasks and rng.random() < self.mix.task_fraction:
            prompt, answer = self.task_text(rng, index)
            p_ids, a_ids = self.encode(prompt), self.encode(answer)
            # The sample was fitted to <= ctx tokens (answer budget included), so nothing is cut in
            # practice; if a tokenizer ever disagrees, cut the prompt's start, never the answer.
            p_ids = p_ids[max(0, len(p_ids) + len(a_ids) + 1 - ctx):]
            ids = p_ids + a_ids + [self.eos_id]
            fill = self.essay_window(rng, ctx - len(ids))
            row = np.concatenate([np.asarray(ids, dtype=np.int64), fill.astype(np.int64)])
            return row, (len(p_ids), len(ids))
        return self.essay_window(rng, ctx).astype(np.int64), (0, 0)


_W: _Worker | None = None


def _init(worker: _Worker) -> None:
    global _W
    _W = worker


def _rows(indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    assert _W is not None
    built = [_W.row(i) for i in indices]
    return np.stack([r for r, _ in built]), np.asarray([span for _, span in built], dtype=np.int32)


def answers_path(stream: str | Path) -> Path:
    """The `(rows, 2)` int32 array of answer spans stored beside a stream's `.npy`."""
    p = Path(stream)
    return p.with_name(p.stem + ".answers.npy")


def natural_text() -> str:
    """The natural-text corpus: the vendored essays (the only offline text spanlab ships)."""
    from spanlab.tasks.essays import essay_text

    return essay_text()


def feasible_tasks(tasks: Sequence[str], context: int, tokenizer: Any) -> tuple[str, ...]:
    """The tasks whose template fits in `context` tokens (vt needs ~700, NIAH ~100)."""
    from spanlab.tasks import generate

    out = []
    for t in tasks:
        try:
            generate(t, length=context, num_samples=1, tokenizer=tokenizer, seed=TRAIN_SEED_BASE - 1)
            out.append(t)
        except SpanlabError:
            continue
    return tuple(out)


def stream_key(mix: MixtureConfig, tokenizer: Any, heldout: HeldOut, num_rows: int, text_key: str | None = None) -> str:
    from spanlab.tasks.tokenizer import tokenizer_name

    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    key = {
        "mix": asdict(mix),
        "tokenizer": tokenizer_name(tokenizer),
        "vocab": hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).hexdigest(),
        "heldout": hashlib.sha256("\n".join(sorted(heldout.tokens)).encode()).hexdigest(),
        "rows": num_rows,
        # 2: prompt and answer tokenized separately (as at evaluation), answer spans stored.
        "version": 2,
    }
    if text_key is not None:  # another natural text than the essays (streams on the essays keep their key)
        key["text"] = text_key
    blob = json.dumps(key, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_stream(
    mix: MixtureConfig,
    num_rows: int,
    *,
    tokenizer: Any,
    cache_dir: str | Path,
    heldout: HeldOut | None = None,
    workers: int | None = None,
    progress: bool = True,
    text: tuple[str, np.ndarray] | None = None,
) -> Path:
    """Write rows 0..num_rows-1 of the stream to `cache_dir/stream-<key>.npy` (reused if present),
    and their answer spans to `stream-<key>.answers.npy`. `workers=None` uses every core.

    `text` = (key, token ids): the natural text that text rows and the fill after task samples
    are cut from, named by `key` in the cache key (a token cache of spanlab.mixture.text);
    default: the essays, as in pre-training."""
    if num_rows < 1:
        raise SpanlabError("the token budget gives no training rows; raise --tokens")
    heldout = heldout or HeldOut()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"stream-{stream_key(mix, tokenizer, heldout, num_rows, text[0] if text else None)}.npy"
    if path.exists() and answers_path(path).exists():
        return path
    vocab = len(tokenizer)
    dtype = np.uint16 if vocab <= np.iinfo(np.uint16).max else np.int32
    if text is not None:
        essay_ids = text[1]
        if len(essay_ids) == 0:
            raise SpanlabError("the natural text of the mixture has no tokens; give a non-empty data source")
    else:
        essay_ids = np.asarray(tokenizer(natural_text(), add_special_tokens=False)["input_ids"], dtype=np.int64)
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    if mix.task_fraction > 0:
        fitting = feasible_tasks(mix.tasks, mix.context, tokenizer)
        if not fitting:
            raise SpanlabError(f"no task of the mixture fits in {mix.context} tokens; raise --context "
                               "or set --task-fraction 0")
        mix = replace(mix, tasks=fitting)
    worker = _Worker(mix, tokenizer, heldout, essay_ids, int(eos))

    # Per-process temporary names: runs sharing a cache folder may build the same stream at once;
    # each writes its own file and the (identical) results replace one another atomically.
    tmp = path.with_name(f"{path.stem}.partial-{os.getpid()}.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(num_rows, mix.context))
    spans = np.zeros((num_rows, 2), dtype=np.int32)
    chunk = 64
    chunks = [list(range(s, min(s + chunk, num_rows))) for s in range(0, num_rows, chunk)]
    # Every core: row generation (pure Python) is what bounds pre-training of small models.
    n_workers = workers if workers is not None else min(len(chunks), max(1, os.cpu_count() or 1))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_rows, desc="build data", unit="row", dynamic_ncols=True)
    if mix.task_fraction == 0 or n_workers <= 1:
        _init(worker)
        results = map(_rows, chunks)
        pool = None
    else:
        import multiprocessing as mp

        # fork shares the loaded tokenizer and essay tokens copy-free where available.
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        pool = ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_init, initargs=(worker,))
        results = pool.map(_rows, chunks)
    tmp_spans = tmp.with_name(tmp.stem + ".answers.npy")
    try:
        try:
            for idx, (rows, row_spans) in zip(chunks, results):
                out[idx[0] : idx[-1] + 1] = rows
                spans[idx[0] : idx[-1] + 1] = row_spans
                if bar is not None:
                    bar.update(len(idx))
        finally:
            if pool is not None:
                pool.shutdown()
            if bar is not None:
                bar.close()
        out.flush()
        del out
        np.save(tmp_spans, spans)
        # Spans first, rows last: the rows' file is what marks a finished build, and a killed build
        # never leaves a truncated cache behind (os.replace is atomic).
        os.replace(tmp_spans, answers_path(path))
        os.replace(tmp, path)
    except BaseException:
        # The temporary names carry the pid, so no later build overwrites them: remove the
        # (multi-GB) partial files of a failed or interrupted build here.
        for f in (tmp, tmp_spans):
            try:
                f.unlink()
            except OSError:
                pass
        raise
    return path


LOSS_MODES = ("all", "answers")


class StreamDataset:
    """Rows of a built stream in the form `spanlab.train.train` consumes.

    `loss="all"`: a 1-D LongTensor per row (next-token loss on every token).
    `loss="answers"`: a dict with `labels` that keep the loss on every token of natural-text rows
    but only on the answer (+ EOS) of task rows -- the prompt of a RULER sample is mostly haystack,
    and predicting it teaches nothing about retrieval while outweighing the answer ~50:1 per row.
    """

    def __init__(self, path: str | Path, loss: str = "all") -> None:
        if loss not in LOSS_MODES:
            raise SpanlabError(f"unknown loss mode {loss!r}; choose one of {', '.join(LOSS_MODES)}")
        self.path = Path(path)
        self.loss = loss
        self.rows = np.load(self.path, mmap_mode="r")
        self.spans: np.ndarray | None = None
        if loss == "answers":
            ap = answers_path(self.path)
            if not ap.exists():
                raise SpanlabError(f"{self.path} has no answer spans ({ap.name}); rebuild the stream")
            self.spans = np.load(ap)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def __getitem__(self, i: int) -> Any:
        import torch

        ids = torch.from_numpy(np.asarray(self.rows[i], dtype=np.int64))
        if self.spans is None:
            return ids
        start, end = (int(x) for x in self.spans[i])
        if end == 0:  # natural-text row
            return {"input_ids": ids, "labels": ids.clone()}
        labels = torch.full_like(ids, -100)
        labels[start:end] = ids[start:end]
        return {"input_ids": ids, "labels": labels}
