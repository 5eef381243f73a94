"""Journal and batching: the pieces resume and multi-GPU merging rest on."""

from __future__ import annotations

import json

import pytest

from spanlab.eval.batching import plan_batches
from spanlab.eval.journal import Journal, read_run


def test_torn_last_line_is_skipped_and_next_append_starts_clean(tmp_path):
    with Journal(tmp_path / "results.jsonl") as j:
        j.append([{"id": "a", "x": 1}, {"id": "b", "x": 2}])
    with open(tmp_path / "results.jsonl", "ab") as f:
        f.write(b'{"id": "c", "x"')  # what a SIGKILL mid-write leaves
    assert [r["id"] for r in read_run(tmp_path)] == ["a", "b"]
    with Journal(tmp_path / "results.jsonl") as j:
        j.append([{"id": "c", "x": 3}])
    assert [r["id"] for r in read_run(tmp_path)] == ["a", "b", "c"]
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert json.loads(lines[-1]) == {"id": "c", "x": 3}


def test_rank_journals_merge_into_one_run(tmp_path):
    with Journal(tmp_path / "results.rank0-of-2.jsonl") as j:
        j.append([{"id": "a"}, {"id": "c"}])
    with Journal(tmp_path / "results.rank1-of-2.jsonl") as j:
        j.append([{"id": "b"}, {"id": "a"}])  # a duplicate id counts once
    assert sorted(r["id"] for r in read_run(tmp_path)) == ["a", "b", "c"]


def test_left_padding_batches_by_length_under_token_cap():
    lengths = [100, 10, 12, 98, 11, 50]
    batches = plan_batches(lengths, padding="left", batch_size=3, max_batch_tokens=250)
    assert sorted(sum(batches, [])) == list(range(6))
    assert batches[0] == [1, 4, 2]  # shortest first, sorted
    for b in batches:
        assert len(b) <= 3 and len(b) * max(lengths[i] for i in b) <= 250


def test_equal_padding_never_mixes_lengths_and_none_is_batch_one():
    lengths = [5, 5, 6, 5, 6, 7]
    batches = plan_batches(lengths, padding="equal", batch_size=8, max_batch_tokens=10_000)
    assert all(len({lengths[i] for i in b}) == 1 for b in batches)
    assert sorted(map(len, batches)) == [1, 2, 3]
    assert all(len(b) == 1 for b in plan_batches(lengths, padding="none", batch_size=8, max_batch_tokens=10_000))


@pytest.mark.parametrize("rank, world", [("2", "2"), ("0", "0"), ("x", "2"), ("-1", "2")])
def test_bad_rank_environment_is_a_clear_error(monkeypatch, rank, world):
    from spanlab.errors import SpanlabError
    from spanlab.eval.shard import rank_world

    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", world)
    with pytest.raises(SpanlabError, match="WORLD_SIZE"):
        rank_world()
