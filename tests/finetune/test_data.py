"""Token cache, packing and mixing give exactly the tokens of the corpus, once tokenised."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spanlab.errors import SpanlabError
from spanlab.finetune.data import (
    MixedDataset,
    PackedDataset,
    build_token_cache,
    load_training_data,
)


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_txt_jsonl_parquet_and_folder_give_the_same_stream(tmp_path, tokenizer):
    docs = ["w1 w2 w3", "w4 w5", "w6 w7 w8 w9"]
    eos = tokenizer.eos_token_id
    expected = [t for d in docs for t in _ids(tokenizer, d) + [eos]]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"text": d, "id": i}) for i, d in enumerate(docs)) + "\n")
    pq.write_table(pa.table({"text": docs}), tmp_path / "c.parquet")
    book_dir = tmp_path / "pg19" / "train"
    book_dir.mkdir(parents=True)
    for i, d in enumerate(docs):
        (book_dir / f"{i}.txt").write_text(d)
    for src in (tmp_path / "c.jsonl", tmp_path / "c.parquet", tmp_path / "pg19"):
        cache = build_token_cache(src, tokenizer, tmp_path / "cache", progress=False)
        assert list(cache.tokens) == expected, src
        assert cache.meta["num_docs"] == 3


def test_cache_is_reused_and_invalidated_by_edits(tmp_path, tokenizer):
    f = tmp_path / "a.txt"
    f.write_text("w1 w2 " * 50)
    first = build_token_cache(f, tokenizer, tmp_path / "cache", progress=False)
    stamp = (first.directory / "tokens.bin").stat().st_mtime_ns
    again = build_token_cache(f, tokenizer, tmp_path / "cache", progress=False)
    assert again.directory == first.directory
    assert (again.directory / "tokens.bin").stat().st_mtime_ns == stamp
    f.write_text("w3 " * 70)
    edited = build_token_cache(f, tokenizer, tmp_path / "cache", progress=False)
    assert edited.directory != first.directory and len(edited) == 71


def test_cache_missing_or_truncated_tokens_is_rebuilt(tmp_path, tokenizer):
    # A cache directory copied without its token file (an archive that left out *.bin) or cut short
    # by a full disk must be rebuilt, not memory-mapped into a crash or a short stream.
    f = tmp_path / "a.txt"
    f.write_text("w1 w2 " * 50)
    first = build_token_cache(f, tokenizer, tmp_path / "cache", progress=False)
    want = np.array(first.tokens)
    (first.directory / "tokens.bin").unlink()
    again = build_token_cache(f, tokenizer, tmp_path / "cache", progress=False)
    assert again.directory == first.directory and np.array_equal(np.array(again.tokens), want)
    with open(again.directory / "tokens.bin", "r+b") as fh:
        fh.truncate(8)
    third = build_token_cache(f, tokenizer, tmp_path / "cache", progress=False)
    assert np.array_equal(np.array(third.tokens), want)


def test_packing_is_contiguous_without_padding():
    tokens = np.arange(103, dtype=np.uint32)
    ds = PackedDataset(tokens, 10)
    assert len(ds) == 10
    assert ds[3].tolist() == list(range(30, 40))
    with pytest.raises(IndexError):
        ds[10]


def test_mixing_follows_the_weights_and_is_seeded():
    a = PackedDataset(np.zeros(1000, dtype=np.uint32), 10)  # 100 rows of 0
    b = PackedDataset(np.ones(100, dtype=np.uint32), 10)  # 10 rows of 1
    mixed = MixedDataset([a, b], [0.7, 0.3], seed=1)
    share_b = np.mean([int(mixed[i][0]) for i in range(len(mixed))])
    assert 0.25 < share_b < 0.35
    again = MixedDataset([a, b], [0.7, 0.3], seed=1)
    assert all(again.source == mixed.source)


def test_bad_inputs_name_the_problem(tmp_path, tokenizer):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"content": "w1"}\n')
    with pytest.raises(SpanlabError, match="text-field"):
        build_token_cache(bad, tokenizer, tmp_path / "cache", progress=False)
    short = tmp_path / "short.txt"
    short.write_text("w1 w2")
    with pytest.raises(SpanlabError, match="lower --context"):
        load_training_data([short], tokenizer, 64, cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(SpanlabError, match="no such data file"):
        load_training_data([tmp_path / "missing.txt"], tokenizer, 8, cache_dir=tmp_path / "cache", progress=False)
