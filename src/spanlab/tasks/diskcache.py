"""Per-tokenizer tables kept between runs: the additivity probe and token-count tables.

A `spanlab generate` of 100 vt samples at 4K costs ~0.15 s CPU on the 2-core VM, and before this
cache a tenth of that went to facts that depend only on the tokenizer: which separators counts
add up at (a probe through the Rust tokenizer, whose first call also starts its thread pool),
whether the Python-side counter agrees with the Rust one, and tables such as the token counts of
cwe's 8,166 candidate words or of the essay sentences. Those are stored in one small JSON file
per tokenizer, keyed by a SHA-256 of everything they depend on (the tokenizer's serialised
definition, the `tokenizers` version, spanlab's probe texts and counting rules, the source of
every `spanlab.tasks` module, `FORMAT`), so a changed tokenizer, rule or task text simply misses.

Location: `$SPANLAB_CACHE_DIR`, else `$XDG_CACHE_HOME/spanlab`, else `~/.cache/spanlab`. Set
`SPANLAB_CACHE_DIR=off` to neither read nor write. Every failure (unwritable folder, corrupt or
foreign file, a race with another process) falls back to computing the tables, never to an
error; files are written atomically, so readers see either the old file or the new one. The
values are recomputable facts computed by the code whose source is in the key, so a cache can only
make a run faster, not different.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ENV = "SPANLAB_CACHE_DIR"
FORMAT = 1  # bump when the file layout changes (code changes are keyed by source_digest)


def source_digest() -> str:
    """SHA-256 of the source of every module in `spanlab.tasks` (~0.5 ms): stored facts are
    computed by that code, so any edit to it must miss the cache."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(Path(__file__).parent.glob("*.py")):
        try:
            h.update(f.name.encode() + b"\x00" + f.read_bytes() + b"\x00")
        except OSError:  # a zip/frozen install: fall back to the package version
            from spanlab import __version__

            return "version:" + __version__
    return h.hexdigest()


def cache_dir() -> Path | None:
    """The cache folder, or None when caching is off."""
    env = os.environ.get(ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "spanlab"


def _path(key: str) -> Path | None:
    d = cache_dir()
    return None if d is None else d / f"counts-{key[:40]}.json"


def load(key: str) -> dict[str, Any]:
    """The tables stored under `key`, or {} when there are none (or they cannot be read)."""
    path = _path(key)
    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("key") != key or not isinstance(data.get("tables"), dict):
        return {}  # another key's file under a colliding name, or not ours
    return data["tables"]


def save(key: str, tables: dict[str, Any]) -> bool:
    """Store `tables` under `key` atomically; False (and nothing written) where that fails."""
    path = _path(key)
    if path is None:
        return False
    import tempfile

    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"key": key, "format": FORMAT, "tables": tables}, f, separators=(",", ":"))
        os.replace(tmp, path)
        return True
    except (OSError, TypeError, ValueError):
        if tmp is not None and os.path.exists(tmp):
            try:
                os.unlink(tmp)
            except OSError:
                pass
        return False
