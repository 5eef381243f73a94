"""The natural text of a study, split by document into what training reads and what perplexity scores.

Default: the vendored Paul Graham essays (~155K tokens with the built-in tokenizer), copied into
`OUT/essays/{train,heldout}` (every 5th essay by file name held out). With `corpus:` (or
`spanlab study --corpus DIR`) a folder of the user's own text takes their place:

- a folder with `train/` and one of `heldout/`, `validation/`, `test/` (PG-19's layout) is used as
  it stands: training reads `train/`, perplexity the held-out folder;
- any other folder of .txt / .jsonl / .parquet files is split by file, every 5th (by path) held
  out, as symbolic links under `OUT/corpus/{train,heldout}` (nothing is copied: a corpus may be
  gigabytes; the token cache follows the links to the files' sizes and times).

Pre-training steps read `train` too when a corpus is given (the shipped tiny models were
pre-trained on every essay, which no split can undo). Why a split at all: with one shared folder
a fine-tune that reads the essays tens of times is scored on text it has memorised, and its
"perplexity" measures the memorising (ablation-lora-rank: 398 -> 9, docs/results.md).

`corpus_split` only names the folders; `materialise` makes them (the run steps call it), so
building a step's config has no side effects.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from spanlab.errors import SpanlabError

# Every 5th document (by name) is held out: 10 of the 50 essays, ~20 % of the text.
HELDOUT_EVERY = 5
# Names of a ready-made held-out folder beside `train/`, in order of preference.
HELDOUT_NAMES = ("heldout", "validation", "test")


@dataclass(frozen=True)
class CorpusSplit:
    train: Path
    heldout: Path
    source: Path | None  # the user's corpus; None = the vendored essays
    prepared: bool  # True: train/heldout are the corpus's own folders (nothing to make)

    @property
    def name(self) -> str:
        """How reports name the text: `essays` or the corpus folder's name."""
        return "essays" if self.source is None else self.source.name

    def as_dict(self) -> dict[str, Path]:
        return {"train": self.train, "heldout": self.heldout}


def _ready_heldout(corpus: Path) -> Path | None:
    if not (corpus / "train").is_dir():
        return None
    return next((corpus / n for n in HELDOUT_NAMES if (corpus / n).is_dir()), None)


def check_corpus(corpus: str | Path) -> Path:
    """The corpus folder, or a SpanlabError that says what a study needs instead."""
    from spanlab.mixture.text import source_files

    p = Path(corpus).expanduser()
    if p.is_file():
        raise SpanlabError(f"corpus {p}: a study splits its text by document into training and held-out "
                           "parts, so it needs a folder: one with train/ and heldout/ (or validation/, test/) "
                           "subfolders, or one holding at least 2 .txt/.jsonl/.parquet files")
    if not p.is_dir():
        raise SpanlabError(f"corpus {p}: no such folder; give a folder of .txt/.jsonl/.parquet files")
    held = _ready_heldout(p)
    if held is not None:
        source_files(p / "train")  # each part must hold text (clear error otherwise)
        source_files(held)
        return p.resolve()
    files = source_files(p)
    if len(files) < 2:
        raise SpanlabError(f"corpus {p}: one file ({files[0].name}) cannot be split by document into training "
                           "and held-out text; give at least 2 files, or train/ and heldout/ subfolders")
    return p.resolve()


def corpus_split(out: Path, corpus: str | Path | None = None) -> CorpusSplit:
    """Where a study's training and held-out text live (nothing is created; see `materialise`)."""
    if corpus is None:
        return CorpusSplit(out / "essays" / "train", out / "essays" / "heldout", None, prepared=False)
    src = Path(corpus).expanduser().resolve()
    held = _ready_heldout(src)
    if held is not None:
        return CorpusSplit(src / "train", held, src, prepared=True)
    return CorpusSplit(out / "corpus" / "train", out / "corpus" / "heldout", src, prepared=False)


def _split_files(files: list[Path]) -> dict[str, list[Path]]:
    held = files[HELDOUT_EVERY - 1::HELDOUT_EVERY] or files[-1:]  # 2-4 files: the last is held out
    return {"train": [f for f in files if f not in held], "heldout": held}


def _sync(d: Path, want: dict[str, Path], *, link: bool) -> None:
    """Make folder `d` hold exactly `want` (name -> source file): copies that keep the source's
    times, or symbolic links; anything else in `d` is removed (an older split must not leak in)."""
    d.mkdir(parents=True, exist_ok=True)
    for stale in d.iterdir():
        if stale.name not in want:
            stale.unlink()
    for name, f in want.items():
        dest = d / name
        if link:
            if dest.is_symlink() and Path(os.readlink(dest)) == f:
                continue
            if dest.exists() or dest.is_symlink():
                dest.unlink()
            dest.symlink_to(f)
        elif not dest.is_file() or dest.stat().st_size != f.stat().st_size:
            shutil.copy2(f, dest)  # keeps mtime: token caches keyed on (size, mtime) stay valid


def materialise(split: CorpusSplit) -> CorpusSplit:
    """Create the split's folders (once; re-running repairs them) and return the split."""
    if split.prepared:
        return split
    if split.source is None:
        from spanlab.tasks.essays import essay_dir, essay_files

        src = essay_dir()
        parts = _split_files([src / f.name for f in essay_files()])
        extra = {f.name: f for f in src.glob("LICENSE*")}  # the essays' attribution travels with them
        for name, files in parts.items():
            _sync(getattr(split, name), {f.name: f for f in files} | extra, link=False)
        return split
    from spanlab.mixture.text import source_files

    links = Path(os.path.abspath(split.train.parent))
    # A study folder inside the corpus folder must not feed its own links back into the split.
    files = [f for f in source_files(split.source) if not Path(os.path.abspath(f)).is_relative_to(links)]
    if len(files) < 2:
        check_corpus(split.source)  # raises the explanatory error
    parts = _split_files(files)
    for name, part in parts.items():
        # Files may share a name in different subfolders: the link's name keeps the relative path.
        _sync(getattr(split, name), {str(f.relative_to(split.source)).replace(os.sep, "__"): f for f in part},
              link=True)
    return split


def essay_split(out: Path) -> dict[str, Path]:
    """The vendored essays split by document into `out/essays/{train,heldout}` (made if missing)."""
    return materialise(corpus_split(out)).as_dict()
