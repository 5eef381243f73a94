"""Long-text training data: local corpora -> memory-mapped token cache -> packed sequences.

A source (a file, or a folder such as PG-19's `train/` of one `.txt` per book) is tokenised once
into `<cache>/<key>/tokens.bin` (uint32, one EOS after each document) keyed by the files' paths,
sizes and mtimes and the tokenizer's fingerprint, so later runs (and every rank of a multi-GPU
run) just memory-map it. Sequences are consecutive non-overlapping `context`-token slices of the
stream, so documents are packed across boundaries with no padding, as long-context training does.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spanlab.errors import SpanlabError

SUFFIXES = (".txt", ".jsonl", ".parquet")
_CACHE_VERSION = 1
Dataset = torch.utils.data.Dataset


def default_cache_dir() -> Path:
    # One cache root for all of spanlab: $SPANLAB_CACHE_DIR (docs/eval.md). Turning it "off" skips
    # only the small task caches; training needs its token cache, which then takes the default root.
    from spanlab.tasks.diskcache import cache_dir

    root = cache_dir() or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "spanlab"
    return root / "tokens"


def source_files(source: str | Path) -> list[Path]:
    """The corpus files of one source: the file itself, or every supported file under a folder."""
    p = Path(source)
    if p.is_file():
        if p.suffix not in SUFFIXES:
            raise SpanlabError(f"{p}: unsupported data file type {p.suffix!r}; use .txt, .jsonl or .parquet")
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in SUFFIXES)
        if not files:
            raise SpanlabError(f"{p}: no .txt/.jsonl/.parquet files in this folder")
        return files
    raise SpanlabError(f"{p}: no such data file or folder")


def iter_documents(path: Path, text_field: str = "text") -> Iterator[str]:
    """Documents of one file: a whole .txt, each jsonl line's text field, each parquet row's text column."""
    if path.suffix == ".txt":
        yield path.read_text(encoding="utf-8", errors="replace")
    elif path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SpanlabError(f"{path}:{lineno}: not valid JSON ({e.msg}); fix or remove the line") from None
                if not isinstance(rec, dict) or not isinstance(rec.get(text_field), str):
                    raise SpanlabError(
                        f"{path}:{lineno}: no string field {text_field!r}; pass --text-field with the right name"
                    )
                yield rec[text_field]
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        if text_field not in pf.schema_arrow.names:
            raise SpanlabError(
                f"{path}: no column {text_field!r} (columns: {', '.join(pf.schema_arrow.names)}); pass --text-field"
            )
        for batch in pf.iter_batches(columns=[text_field], batch_size=256):
            for text in batch.column(0).to_pylist():
                if text:
                    yield text
    else:  # pragma: no cover - source_files filters suffixes
        raise SpanlabError(f"{path}: unsupported data file type")


def tokenizer_fingerprint(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        body = backend.to_str()
    else:
        body = json.dumps(
            {"name": getattr(tokenizer, "name_or_path", ""), "vocab": len(tokenizer), "cls": type(tokenizer).__name__}
        )
    return hashlib.sha256(body.encode()).hexdigest()[:16]


class TokenCache:
    """A memory-mapped uint32 token stream with its metadata."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.meta = json.loads((self.directory / "meta.json").read_text())
        n = self.meta["num_tokens"]
        self.tokens = np.memmap(self.directory / "tokens.bin", dtype=np.uint32, mode="r", shape=(n,)) if n else np.zeros(0, np.uint32)

    def __len__(self) -> int:
        return int(self.meta["num_tokens"])


def _complete(directory: Path) -> bool:
    """A cache is usable only with its meta and a token file of the length the meta states."""
    try:
        meta = json.loads((directory / "meta.json").read_text())
        return (directory / "tokens.bin").stat().st_size == 4 * int(meta["num_tokens"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def build_token_cache(
    source: str | Path,
    tokenizer: Any,
    cache_dir: str | Path | None = None,
    *,
    text_field: str = "text",
    batch_docs: int = 64,
    progress: bool = True,
) -> TokenCache:
    """Tokenise `source` once (reused while files and tokenizer are unchanged)."""
    files = source_files(source)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise SpanlabError("the tokenizer has no EOS token to separate documents; use a tokenizer with eos_token")
    key_material = {
        "v": _CACHE_VERSION,
        "tok": tokenizer_fingerprint(tokenizer),
        "field": text_field,
        "files": [(str(f.resolve()), f.stat().st_size, int(f.stat().st_mtime)) for f in files],
    }
    key = hashlib.sha256(json.dumps(key_material, sort_keys=True).encode()).hexdigest()[:20]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / key
    if _complete(target):
        return TokenCache(target)
    if target.exists():  # partial copy (e.g. archived without its tokens.bin): build it again
        import shutil

        shutil.rmtree(target, ignore_errors=True)

    tmp = root / f"{key}.tmp{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    num_tokens = num_docs = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc=f"tokenising {Path(source).name}", unit="doc", dynamic_ncols=True)
    with open(tmp / "tokens.bin", "wb") as out:

        def flush(batch: list[str]) -> None:
            nonlocal num_tokens, num_docs
            ids = tokenizer(batch, add_special_tokens=False)["input_ids"]
            for doc in ids:
                arr = np.asarray(list(doc) + [eos], dtype=np.uint32)
                out.write(arr.tobytes())
                num_tokens += arr.size
            num_docs += len(batch)
            if bar is not None:
                bar.update(len(batch))

        batch: list[str] = []
        for f in files:
            for doc in iter_documents(f, text_field):
                batch.append(doc)
                if len(batch) >= batch_docs:
                    flush(batch)
                    batch = []
        if batch:
            flush(batch)
    if bar is not None:
        bar.close()
    meta = {"num_tokens": num_tokens, "num_docs": num_docs, "source": str(source), **key_material}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    try:
        tmp.rename(target)
    except OSError:  # another process finished the same cache first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return TokenCache(target)


class PackedDataset(torch.utils.data.Dataset):
    """Non-overlapping `context`-token slices of a token stream (the tail shorter than context is dropped)."""

    def __init__(self, tokens: np.ndarray, context: int) -> None:
        if context < 2:
            raise SpanlabError(f"context must be at least 2 tokens, got {context}")
        self.tokens = tokens
        self.context = context
        self._n = len(tokens) // context

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < self._n:
            raise IndexError(i)
        s = i * self.context
        return torch.from_numpy(np.asarray(self.tokens[s : s + self.context], dtype=np.int64))


class MixedDataset(torch.utils.data.Dataset):
    """Rows drawn from several datasets in fixed proportions (e.g. 70 % text / 30 % code).

    Row i's source follows a seeded draw by weight; within a source, rows cycle through that
    source's own seeded permutation, so a small source repeats rather than shrinking the mix.
    Length = enough rows that the largest weighted source is seen once.
    """

    def __init__(self, parts: Sequence[Dataset], weights: Sequence[float], seed: int = 0) -> None:
        if len(parts) != len(weights) or not parts:
            raise SpanlabError(f"got {len(parts)} data sources but {len(weights)} mixing weights; give one per source")
        w = np.asarray(weights, dtype=np.float64)
        if (w <= 0).any():
            raise SpanlabError(f"mixing weights must be positive, got {list(weights)}")
        for d in parts:
            if len(d) == 0:
                raise SpanlabError("a data source has no full sequence at this context; give more text or lower --context")
        w = w / w.sum()
        self.parts = list(parts)
        self.weights = w
        n = int(max(len(d) / wi for d, wi in zip(parts, w)))
        rng = np.random.default_rng([seed, 7919])
        self.source = rng.choice(len(parts), size=n, p=w)
        self.perms = [rng.permutation(len(d)) for d in parts]
        # Running count per source gives each row its position inside that source's cycle.
        self.slot = np.zeros(n, dtype=np.int64)
        counts = np.zeros(len(parts), dtype=np.int64)
        for i, s in enumerate(self.source):
            self.slot[i] = counts[s]
            counts[s] += 1

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> torch.Tensor:
        s = int(self.source[i])
        perm = self.perms[s]
        return self.parts[s][int(perm[self.slot[i] % len(perm)])]



def load_training_data(
    sources: Sequence[str | Path],
    tokenizer: Any,
    context: int,
    *,
    mix: Sequence[float] | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    text_field: str = "text",
    progress: bool = True,
) -> torch.utils.data.Dataset:
    """One dataset of packed sequences from several sources, mixed by `mix` or by size."""
    if not sources:
        raise SpanlabError("no training data given; pass --data FILE_OR_FOLDER (txt, jsonl, parquet)")
    parts = []
    for src in sources:
        cache = build_token_cache(src, tokenizer, cache_dir, text_field=text_field, progress=progress)
        ds = PackedDataset(cache.tokens, context)
        if len(ds) == 0:
            raise SpanlabError(
                f"{src}: {len(cache)} tokens is less than one {context}-token sequence; add text or lower --context"
            )
        parts.append(ds)
    if mix is not None:
        return MixedDataset(parts, mix, seed=seed)
    if len(parts) == 1:
        return parts[0]
    return torch.utils.data.ConcatDataset(parts)


def task_mixture_data(
    *,
    context: int,
    num_rows: int,
    tokenizer: Any,
    seed: int,
    task_fraction: float,
    tasks: Sequence[str] | None,
    loss: str,
    heldout: Sequence[str],
    text_source: str | Path | None,
    cache_dir: str | Path | None = None,
    text_field: str = "text",
    progress: bool = True,
) -> Any:
    """The pre-training mixture (spanlab.mixture) continued at the fine-tuning context: `num_rows`
    rows of `context` tokens, a `task_fraction` of them RULER-format task samples at lengths
    context/4 .. context (answer loss with `loss="answers"`), the rest windows of the natural text
    (`text_source`, default the essays pre-training read).

    Evaluation answers stay out as in pre-training (spanlab.mixture.heldout): task samples draw
    seeds from 2**40 up, and every rare token (needle number, UUID, key, variable name) of the
    `heldout` evaluation samples is rewritten wherever a task row would contain it.
    """
    from spanlab.mixture import DEFAULT_TASKS, HeldOut, MixtureConfig, StreamDataset, build_stream, heldout_from_files

    mix = MixtureConfig(context=context, seed=seed, task_fraction=task_fraction,
                        tasks=tuple(tasks) if tasks else DEFAULT_TASKS)
    text = None
    if text_source is not None:
        cache = build_token_cache(text_source, tokenizer, cache_dir, text_field=text_field, progress=progress)
        text = (cache.directory.name, cache.tokens)  # the token cache's key: files, sizes, mtimes, tokenizer
    held = heldout_from_files(heldout) if heldout else HeldOut()
    path = build_stream(mix, num_rows, tokenizer=tokenizer, cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(),
                        heldout=held, progress=progress, text=text)
    return StreamDataset(path, loss=loss)
