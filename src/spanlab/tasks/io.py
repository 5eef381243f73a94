"""Writing samples: JSONL (RULER-compatible lines) or Parquet, always atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from spanlab.errors import SpanlabError
from spanlab.tasks.sample import Sample

FORMATS = ("jsonl", "parquet")


def sample_path(out_dir: str | os.PathLike, label: str, length: int, format: str = "jsonl") -> Path:
    """Where `spanlab generate` puts the samples of one (task label, length): OUT/LENGTH/LABEL.EXT."""
    return Path(out_dir) / str(length) / f"{label}.{format}"


_UMASK: list[int] = []


def _umask() -> int:
    # Reading the umask means setting it; do it once, not while sample threads create files.
    if not _UMASK:
        m = os.umask(0o022)
        os.umask(m)
        _UMASK.append(m)
    return _UMASK[0]


def write_samples(samples: Iterable[Sample], path: str | os.PathLike, format: str = "jsonl") -> Path:
    """Write samples to `path` via a temp file in the same folder and a rename: readers never see a
    half-written file, and a failure leaves nothing behind."""
    if format not in FORMATS:
        raise SpanlabError(f"unknown format {format!r}; choose jsonl or parquet")
    import tempfile

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise SpanlabError(f"cannot write to {path.parent} ({e.strerror}); choose a writable --out folder") from None
    try:
        if format == "jsonl":
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for s in samples:
                    f.write(s.to_json() + "\n")  # = json.dumps(s.to_dict(), ensure_ascii=False)
        else:
            os.close(fd)
            import pyarrow as pa
            import pyarrow.parquet as pq

            rows = [s.to_dict() for s in samples]
            for r in rows:  # nested dicts of mixed types: keep them as JSON text in Parquet
                r["params"] = json.dumps(r["params"], sort_keys=True)
            pq.write_table(pa.Table.from_pylist(rows), tmp)
        # mkstemp makes the file 0600; sample files are data to share, so give them the mode a
        # plain open() would (0666 less the umask).
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_samples(path: str | os.PathLike) -> list[Sample]:
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        for r in rows:
            r["params"] = json.loads(r["params"]) if isinstance(r.get("params"), str) else r.get("params", {})
        return [Sample.from_dict(r) for r in rows]
    from spanlab.tasks.sample import read_jsonl

    return read_jsonl(str(path))
