"""Natural text for training: local corpora -> memory-mapped token caches, and how often a run reads them.

A source (a file, or a folder such as PG-19's `train/` of one `.txt` per book) is tokenised once
into `<cache>/<key>/tokens.bin` (uint32, one EOS after each document) keyed by the files' paths,
sizes and mtimes and the tokenizer's fingerprint, so later runs (and every rank of a multi-GPU
run) just memory-map it. Pre-training's mixture (`spanlab train --text`), fine-tuning
(spanlab.finetune.data packs it into sequences) and perplexity all read text through it.

How many times a run reads its text matters as much as which text: a small model that reads the
same ~155K tokens of essays 30 times learns them by heart, every attention variant reaches the
same low loss, and what the run was meant to teach (retrieval at a longer context) is not what it
learns (the expansion-span replication on the H200, 600 steps of 4 x 2048 tokens: loss 5.5 -> 1.47
for every variant, docs/results.md). Every fine-tune's and pre-training run's summary records the
number, and a run above `MAX_PASSES` says so when it starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from spanlab.errors import SpanlabError

SUFFIXES = (".txt", ".jsonl", ".parquet")
_CACHE_VERSION = 1


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


def text_token_count(tokenizer: Any, source: str | Path | None = None, cache_dir: str | Path | None = None,
                     *, text_field: str = "text") -> int:
    """Tokens of a run's natural text: `source`'s token cache, or (None) the vendored essays."""
    if source is not None:
        return len(build_token_cache(source, tokenizer, cache_dir, text_field=text_field, progress=False))
    from spanlab.mixture.stream import natural_text

    return len(tokenizer(natural_text(), add_special_tokens=False)["input_ids"])


# Muennighoff et al. 2023 (Scaling Data-Constrained Language Models): up to ~4 epochs of repeated
# text train almost as well as new text; beyond that the value of more passes falls off fast.
MAX_PASSES = 4.0


def text_passes(text_tokens_read: float, text_tokens: int) -> float | None:
    """Tokens of natural text a run reads / tokens of natural text it has (None: no text)."""
    if text_tokens <= 0:
        return None
    return float(text_tokens_read) / float(text_tokens)


def passes_warning(passes: float | None, *, text_tokens: int, what: str) -> str | None:
    """The warning for a run that reads its text more than MAX_PASSES times (else None)."""
    if passes is None or passes <= MAX_PASSES:
        return None
    return (f"warning: {what} reads its natural text {passes:.1f} times ({text_tokens:,} tokens); above "
            f"{MAX_PASSES:g} passes a model memorises the text, and what it learns is no longer what the run "
            "measures (docs/finetune.md, 'How much text'). Give more text (--data, or a study's --corpus) "
            "or fewer steps.")


def warn_passes(passes: float | None, *, text_tokens: int, what: str) -> None:
    msg = passes_warning(passes, text_tokens=text_tokens, what=what)
    if msg:
        print(msg, file=sys.stderr, flush=True)
