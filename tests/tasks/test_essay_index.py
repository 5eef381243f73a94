"""The shipped sentence index must give exactly nupunkt's split of the vendored corpus."""

import re
from pathlib import Path

from spanlab.tasks import essays


def test_normalised_text_matches_regex_definition() -> None:
    raw = " ".join(f.read_text(encoding="utf-8") for f in essays.essay_files())
    assert essays.essay_text() == re.sub(r"\s+", " ", raw).strip()
    assert essays.essay_excerpt(5000) == essays.essay_text()[:5000]


def test_shipped_index_equals_live_split() -> None:
    text = essays.essay_text()
    live = essays.split_sentences(text)
    assert essays._indexed(text) == live  # the index is present, current and exact
    assert essays.essay_sentences() == live
    assert len(live) > 5000


def test_stale_or_missing_index_falls_back(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(essays, "_root", lambda: tmp_path)
    text = "One sentence here. And a second one! Third?"
    assert essays._indexed(text) is None  # no file
    sents = essays.split_sentences(text)
    (tmp_path / essays.INDEX_NAME).write_text('{"sha256": "0", "spans": [0, 3]}')
    assert essays._indexed(text) is None  # key of another corpus
    (tmp_path / essays.INDEX_NAME).write_text("not json")
    assert essays._indexed(text) is None
    import json
    (tmp_path / essays.INDEX_NAME).write_text(json.dumps(essays.sentence_index(text, sents)))
    assert essays._indexed(text) == sents == ("One sentence here.", "And a second one!", "Third?")
