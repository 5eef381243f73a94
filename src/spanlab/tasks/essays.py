"""The essay haystack: the vendored Paul Graham essays, split into sentences once per process.

As in RULER the text is whitespace-normalised and concatenated, the haystack always starts at the
beginning of the corpus and repeats when a length needs more text. Sentences come from nupunkt's
Punkt model, which ships inside the package (no nltk download). Splitting the corpus costs ~0.1 s
of every essay-task process, so the split ships as a sentence index (`sentences.json` beside the
essays: start and length of each sentence in `essay_text()`, keyed by the text's SHA-256), written
by `python -c "from spanlab.tasks.essays import write_index; write_index()"`; a corpus that no longer matches the key is split afresh.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

INDEX_NAME = "sentences.json"


def _root():
    return resources.files("spanlab.data") / "paul_graham_essays"


def essay_dir() -> Path:
    """The folder of the vendored essays (and their LICENSE file), as a filesystem path."""
    return Path(str(_root()))


def essay_files() -> list:
    """The vendored essays' text files, sorted by name (the license file left out)."""
    root = _root()
    names = sorted(p.name for p in root.iterdir() if p.name.endswith(".txt") and not p.name.startswith("LICENSE"))
    return [root / n for n in names]


@lru_cache(maxsize=1)
def essay_text() -> str:
    text = " ".join(f.read_text(encoding="utf-8") for f in essay_files())
    return " ".join(text.split())  # = re.sub(r"\s+", " ", text).strip(): \s is str.isspace; 2x faster


def essay_excerpt(chars: int) -> str:
    """About the first `chars` characters of `essay_text()`, without reading the whole corpus."""
    parts: list[str] = []
    for f in essay_files():
        parts.append(f.read_text(encoding="utf-8"))
        if sum(map(len, parts)) > chars + 1000:
            break
    return " ".join(" ".join(parts).split())[:chars]


def split_sentences(text: str) -> tuple[str, ...]:
    import nupunkt

    return tuple(s.strip() for s in nupunkt.sent_tokenize(text) if s.strip())


@lru_cache(maxsize=2)  # the index check and the table names both need the corpus digest
def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sentence_index(text: str, sentences: tuple[str, ...]) -> dict:
    """{"sha256": key, "spans": [start0, len0, start1, len1, ...]} locating each sentence in `text`."""
    spans: list[int] = []
    pos = 0
    for s in sentences:
        pos = text.index(s, pos)
        spans += [pos, len(s)]
        pos += len(s)
    return {"sha256": _digest(text), "spans": spans}


def _indexed(text: str) -> tuple[str, ...] | None:
    try:
        index = json.loads((_root() / INDEX_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict) or index.get("sha256") != _digest(text):
        return None
    spans = index["spans"]
    return tuple(text[a:a + n] for a, n in zip(spans[0::2], spans[1::2]))


@lru_cache(maxsize=1)
def essay_sentences() -> tuple[str, ...]:
    text = essay_text()
    return _indexed(text) or split_sentences(text)


@lru_cache(maxsize=1)
def corpus_digest() -> str:
    """SHA-256 of `essay_text()`: names tables derived from the corpus (spanlab.tasks.diskcache)."""
    return _digest(essay_text())


def write_index(path: str | None = None) -> str:
    """Split the corpus with nupunkt and write the sentence index (default: beside the essays)."""
    text = essay_text()
    out = path or str(_root() / INDEX_NAME)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(sentence_index(text, split_sentences(text)), f, separators=(",", ":"))
        f.write("\n")
    return out

