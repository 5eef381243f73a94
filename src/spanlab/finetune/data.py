"""Long-text training data: local corpora -> memory-mapped token cache -> packed sequences.

The token cache (spanlab.mixture.text, shared with pre-training and perplexity) tokenises a
source once. Sequences are consecutive non-overlapping `context`-token slices of the stream, so
documents are packed across boundaries with no padding, as long-context training does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spanlab.errors import SpanlabError
from spanlab.mixture.text import (  # noqa: F401  (re-exported: the token cache's public names)
    SUFFIXES,
    TokenCache,
    build_token_cache,
    default_cache_dir,
    iter_documents,
    source_files,
    tokenizer_fingerprint,
)

Dataset = torch.utils.data.Dataset


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
