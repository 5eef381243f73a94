"""Tokenizers for length fitting: the built-in default and any Hugging Face tokenizer.

`load_tokenizer` returns a transformers `PreTrainedTokenizerFast` (or whatever `AutoTokenizer`
gives for a user's tokenizer), the same kind of object models/ and eval/ use, so the eval engine
can count tokens exactly as generation did. Importing transformers' tokenizer classes does not
import torch, so `spanlab.tasks` stays torch-free.

Token counts follow RULER's HF path (`tokenizer.tokenize(text)`): no BOS/EOS is added; special
tokens written in the text (chat templates) count as one token each.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Sequence
from functools import lru_cache
from importlib import resources
from itertools import compress, islice
from pathlib import Path
from typing import Any

from spanlab.errors import SpanlabError

BUILTIN = "builtin"
# A ChatML template so the built-in tokenizer also supports `--template chat` offline.
_BUILTIN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def builtin_tokenizer_file() -> Path:
    return Path(str(resources.files("spanlab.data") / "tokenizer" / "tokenizer.json"))


@lru_cache(maxsize=1)
def _builtin() -> Any:
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(builtin_tokenizer_file()),
        bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        model_max_length=1 << 30,
    )
    tok.chat_template = _BUILTIN_CHAT_TEMPLATE
    tok.name_or_path = BUILTIN
    return tok


def load_tokenizer(name_or_path: str | None = None, *, allow_download: bool = False) -> Any:
    """Load a tokenizer: None or "builtin" → spanlab's BPE; a dir/hub name → `AutoTokenizer`;
    a `tokenizer.json` file → `PreTrainedTokenizerFast`.

    Hub names resolve from the local cache only unless `allow_download` is set, so a typo never
    turns into a network wait.
    """
    if name_or_path is None or name_or_path == BUILTIN:
        return _builtin()
    path = Path(os.path.expanduser(name_or_path))
    try:
        if path.is_file() and path.suffix == ".json":
            from transformers import PreTrainedTokenizerFast

            tok = PreTrainedTokenizerFast(tokenizer_file=str(path), model_max_length=1 << 30)
            tok.name_or_path = str(path)
            return tok
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(path) if path.exists() else name_or_path,
                                             local_files_only=not allow_download)
    except Exception as e:  # transformers raises many types (OSError, ValueError, HF hub errors)
        hint = "check the path" if path.exists() else "pass a local tokenizer directory, or allow downloads"
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SpanlabError(f"could not load tokenizer {name_or_path!r} ({msg}); {hint}, "
                           "or omit --tokenizer to use the built-in one") from None


def tokenizer_name(tokenizer: Any) -> str:
    return str(getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__)


class RawTokenizer:
    """A `tokenizers.Tokenizer` with a name: the built-in tokenizer without importing transformers.

    `spanlab generate` uses it for the built-in tokenizer (counts are identical, start-up is ~2 s
    shorter); everything else gets the transformers object from `load_tokenizer`. Its backend is
    loaded for it alone and never padded, so `TokenCounter` counts with it directly instead of
    with a private copy.
    """

    private_backend = True

    def __init__(self, path: str | Path, name: str):
        from tokenizers import Tokenizer

        self.path = Path(path)
        self.backend_tokenizer = Tokenizer.from_file(str(path))
        self.name_or_path = name

    def definition(self) -> bytes:
        """The serialised tokenizer (its file), for cache keys."""
        return self.path.read_bytes()

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = False) -> Any:
        return self.backend_tokenizer.encode_batch(list(texts), add_special_tokens=add_special_tokens)


def load_builtin_raw() -> RawTokenizer:
    return RawTokenizer(builtin_tokenizer_file(), BUILTIN)


# Text that exercises what a tokenizer wrapper might treat specially (spaces, newlines, digits,
# special-token strings): the Rust backend must count it exactly as the wrapper does.
_PROBE = ("<|begin_of_text|>  Hello\n\nworld 1234567 of the special magic uuids 3f1c-9a \u00e9t\u00e9 "
          "[INST] VAR ABCDE = 12345 </s><s>  <|im_start|>user\n x")


def _unpadded_copy(backend: Any) -> tuple[Any, str | None]:
    """A private copy of a `tokenizers.Tokenizer` with padding and truncation off, and its
    serialised definition (None for objects that have none).

    transformers switches padding/truncation on in the backend it shares with its wrapper for each
    padded batch call and leaves it there (the eval engine's left-padded batches do), so counting
    with the shared backend would silently pad or cut our counts after any such call.
    """
    to_str = getattr(backend, "to_str", None)
    if to_str is None:  # not a `tokenizers` object: nothing we can copy; it has no such state either
        return backend, None
    from tokenizers import Tokenizer

    definition = to_str()
    own = Tokenizer.from_str(definition)
    own.no_padding()
    own.no_truncation()
    return own, definition


class TokenCounter:
    """Counts tokens of many strings at once for one tokenizer, releasing the GIL in Rust.

    For transformers tokenizers it calls the Rust backend directly (no offsets, no Python padding
    logic) after checking once that the backend counts a probe text like the wrapper does; if not,
    it counts through the wrapper. Also holds per-tokenizer caches for derived tables (essay
    sentence costs, word costs), computed once per process rather than once per sample, and kept
    between processes in `spanlab.tasks.diskcache` with the probe results (`stored`, `store`,
    `save`).
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.cache: dict[Any, Any] = {}
        self.lock = threading.RLock()
        self._stored: dict[str, Any] = {}  # what the disk cache holds (or will) for this tokenizer
        self._key: str | None = None  # its key; None: no disk cache
        self._dirty = False
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None and hasattr(backend, "encode_batch"):
            if getattr(tokenizer, "private_backend", False):
                definition: Any = tokenizer.definition()
            else:
                backend, definition = _unpadded_copy(backend)
            enc = getattr(backend, "encode_batch_fast", backend.encode_batch)

            def _rust(texts: Sequence[str]) -> list[int]:
                return [len(e.ids) for e in enc(list(texts), add_special_tokens=False)]
            self._batch = _rust
            if callable(getattr(tokenizer, "tokenize", None)) and _rust([_PROBE])[0] != self._hf_count([_PROBE])[0]:
                self._batch = self._hf_count  # the wrapper counts its own way: nothing to cache
            else:
                self._open_cache(definition)
                agreed = self._stored.get("bytelevel")
                self._batch, agreed = ByteLevelCounts.wrap(backend, _rust, agreed if isinstance(agreed, bool) else None)
                self._remember_stored("bytelevel", agreed)
        elif callable(tokenizer) and hasattr(tokenizer, "tokenize"):
            self._batch = self._hf_count
        elif hasattr(tokenizer, "encode_batch"):  # a raw `tokenizers.Tokenizer`
            raw, _ = _unpadded_copy(tokenizer)
            self._batch = lambda texts: [len(e.ids) for e in raw.encode_batch(list(texts), add_special_tokens=False)]
        else:
            raise SpanlabError(f"cannot count tokens with a {type(tokenizer).__name__}; pass a Hugging Face "
                               "tokenizer (name, directory or object) or omit it for the built-in one")
        # additive counting (see `count_parts`): segment and word caches, and the separators at which
        # this tokenizer's counts add up exactly (decided by `_probe_additive`)
        self._first: dict[str, int] = {}  # a text's first segment (counted at the start of a text)
        self._seg: dict[str, int] = {}  # any later segment (starts with a separator)
        self._word: dict[str, int] = {}  # word-level pieces the segments are learned from
        self._bad_lead: set[str] = set()  # segments a cut may not precede
        self._bad_tail: set[str] = set()  # segments a cut may not follow
        self._rstrip = _rstrip_specials(tokenizer)
        self.seps: frozenset[str] = frozenset()
        seps = self._stored.get("seps")
        if isinstance(seps, list) and set(seps) <= set(SEPARATORS):
            self.seps = frozenset(seps)
        else:
            self.seps = self._probe_additive()
            self._remember_stored("seps", sorted(self.seps))
        self.additive_note = ("additive at " + " and ".join(repr(c) for c in sorted(self.seps))
                              if self.seps else "not additive: every prompt is tokenised in full")

    # --- tables kept between runs (spanlab.tasks.diskcache) ---------------------------------------

    def _open_cache(self, definition: str | bytes | None) -> None:
        """Key the disk cache by everything the stored facts depend on, and read it."""
        if definition is None:
            return
        import hashlib

        from spanlab.tasks import diskcache
        from spanlab.tasks.essays import essay_excerpt

        try:
            from tokenizers import __version__ as tokenizers_version
        except ImportError:
            tokenizers_version = "?"
        h = hashlib.sha256()
        # The code that computes the stored facts is part of the key (its source, not a version
        # number: editable installs change code without changing versions), so a fixed counter or a
        # changed task text can never be served an old answer from disk.
        for part in (f"spanlab-counts|{diskcache.FORMAT}|{tokenizers_version}|", definition, _PROBE, *_PROBE_LINES,
                     *SEPARATORS, *ByteLevelCounts.PROBE, ByteLevelCounts.PIECES.pattern, essay_excerpt(5000),
                     diskcache.source_digest()):
            h.update(part if isinstance(part, bytes) else part.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        self._key = h.hexdigest()
        self._stored = diskcache.load(self._key)

    def _remember_stored(self, name: str, value: Any) -> None:
        if self._key is not None and self._stored.get(name) != value:
            with self.lock:
                self._stored[name] = value
                self._dirty = True

    def stored(self, name: str) -> Any:
        """A table kept between runs under `name` (which must name its inputs), or None."""
        return self._stored.get("table:" + name)

    def store(self, name: str, value: Any) -> None:
        """Keep a JSON-able table for later runs (written by `save`)."""
        self._remember_stored("table:" + name, value)

    def save(self) -> None:
        """Write what changed to the disk cache (quietly skipped where that fails)."""
        if self._dirty and self._key is not None:
            from spanlab.tasks import diskcache

            with self.lock:
                snapshot = dict(self._stored)
                self._dirty = False
            diskcache.save(self._key, snapshot)

    @property
    def python_counting(self) -> bool:
        """Counting runs in Python (`ByteLevelCounts`), holding the GIL: threads do not help it."""
        return isinstance(self._batch, ByteLevelCounts)

    def seed_word_counts(self, words: Sequence[str], counts: Sequence[int]) -> None:
        """Take `counts` as `word_counts(words)` (a table that call made in an earlier run and the
        disk cache kept), so later texts made of these words do not tokenise them again. Only where
        counting runs in Python, whose word cache holds exactly these counts."""
        if self.python_counting:
            self._batch.seed_words(words, counts)

    def _hf_count(self, texts: Sequence[str]) -> list[int]:
        ids = self.tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False)["input_ids"]
        return [len(x) for x in ids]

    def count(self, text: str) -> int:
        return self._batch([text])[0]

    def counts(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        out: list[int] = []
        for i in range(0, len(texts), 4096):  # bounded batches keep peak memory flat
            out.extend(self._batch(texts[i:i + 4096]))
        return out

    # --- additive counting ---------------------------------------------------------------------
    # Pre-tokenizers (byte-level BPE's regex, Metaspace, WordPiece's whitespace split) cut text at
    # word boundaries and the model never merges across a cut, so where text is cut just before a
    # lone separator (" " or "\n") that sits between two non-space characters, the token count of
    # the whole is the sum of the counts of the pieces. Whether that holds, and for which
    # separators, depends on the tokenizer (llama-3's regex glues "\n" to a preceding "."; a
    # Prepend normalizer adds a token per piece), so `_probe_additive` tests it on texts like the
    # ones tasks build, and `generate` re-checks the first sample of every batch against a full
    # tokenisation. Each distinct segment is then counted once, from cached word counts.

    def _cut_ok(self, left: str, right: str) -> bool:
        return (len(right) > 1 and right[0] in self.seps and not right[1].isspace() and bool(left)
                and not left[-1].isspace() and not (self._rstrip and left.endswith(self._rstrip)))

    def _learn(self, texts: Sequence[str], first: bool = False) -> list[int]:
        """Counts of `texts` as segments (or as a text's first segment), summed from word pieces."""
        if isinstance(self._batch, ByteLevelCounts):  # caches its own (finer) pieces: count directly
            return self.counts(texts)
        pieces = [self._split(t) for t in texts]
        # look-ups go through a local table: another thread may clear the shared caches meanwhile
        word = self._word
        local = {q: word.get(q) for ps in pieces for q in (ps[1:] if first else ps)}
        need = [q for q, v in local.items() if v is None]
        if need:
            got = self.counts(need)
            local.update(zip(need, got))
            word.update(zip(need, got))
        if first:
            heads = self.counts([ps[0] for ps in pieces])
            return [h + sum(map(local.__getitem__, ps[1:])) for h, ps in zip(heads, pieces)]
        return [sum(map(local.__getitem__, ps)) for ps in pieces]

    def _split(self, text: str) -> list[str]:
        """`text` cut at every safe cut: before a lone separator between non-space characters,
        unless an added token that swallows following whitespace ends the left side."""
        ps = self._cut_re.split(text)
        if self._rstrip and len(ps) > 1:
            out = [ps[0]]
            for q in ps[1:]:
                if out[-1].endswith(self._rstrip):
                    out[-1] += q
                else:
                    out.append(q)
            return out
        return ps

    def segment_counts(self, texts: Sequence[str]) -> list[int]:
        """Token counts of texts that follow other text at a cut (" word", "\nline"): cached and
        summed from word counts when additive, else tokenised."""
        if not self.seps:
            return self.counts(texts)
        vals = list(map(self._seg.get, texts))
        if None in vals:
            vals = self._fill(texts, vals)
        return vals

    def word_counts(self, words: Sequence[str]) -> list[int]:
        """Segment counts of " " + w for each word w: from the byte-level word cache where counting
        runs in Python, else as segments."""
        if not self.seps:
            return self.counts([" " + w for w in words])
        if self.python_counting:
            return self._batch.words(words)
        return self.segment_counts([" " + w for w in words])

    def remember(self, texts: Sequence[str], counts: Sequence[int]) -> None:
        """Record segment counts found another way (summed from parts at safe cuts), with their cut
        flags, so `count_parts` finds them."""
        if not self.seps:
            return
        seps, rstrip = self.seps, self._rstrip
        self._bad_lead.update([t for t in texts if not (len(t) > 1 and t[0] in seps and not t[1].isspace())])
        self._bad_tail.update([t for t in texts if not t or t[-1].isspace() or (rstrip and t.endswith(rstrip))])
        self._seg.update(zip(texts, counts))

    def _fill(self, texts: Sequence[str], vals: list[int | None]) -> list[int]:
        if vals.count(None) == len(vals):  # all new (fresh distractor lines, say): no merging
            miss = list(dict.fromkeys(texts))
            if len(miss) == len(texts):
                return self._remember(miss)
        else:
            miss = list({t for t, v in zip(texts, vals) if v is None})
        got = dict(zip(miss, self._remember(miss)))
        return [got[t] if v is None else v for t, v in zip(texts, vals)]

    def _remember(self, miss: list[str]) -> list[int]:
        if len(self._seg) > 1 << 21:  # bound memory on endless runs of random values
            self._seg.clear()
            self._word.clear()
            self._first.clear()
        # flags first, counts second: another thread that finds the count also finds the flags
        seps, rstrip = self.seps, self._rstrip
        self._bad_lead.update([t for t in miss if not (len(t) > 1 and t[0] in seps and not t[1].isspace())])
        self._bad_tail.update([t for t in miss if not t or t[-1].isspace() or (rstrip and t.endswith(rstrip))])
        got = self._learn(miss)
        self._seg.update(zip(miss, got))
        return got

    def count_parts(self, parts: Sequence[str]) -> int:
        """Exact token count of "".join(parts). Where the tokenizer is additive and every cut
        between parts is safe, it is the sum of cached part counts; unsafe cuts are glued first;
        a tokenizer that is not additive tokenises the joined text."""
        if not self.seps:
            return self.count("".join(parts))
        first, rest = parts[0], parts[1:]
        seg = self._seg
        vals = list(map(seg.get, rest))
        if None in vals:
            vals = self._fill(rest, vals)
        if (rest and self._bad_lead.isdisjoint(rest) and self._bad_tail.isdisjoint(islice(rest, len(rest) - 1))
                and self._cut_ok(first, rest[0])):
            return self._first_count(first) + sum(vals)
        # glue the parts at unsafe cuts into segments, then count those
        segs = self._glue(parts) if rest and not self._rstrip and "" not in rest else self._glue_loop(parts)
        return self._first_count(segs[0]) + sum(self.segment_counts(segs[1:]))

    def _glue_loop(self, parts: Sequence[str]) -> list[str]:
        """The parts glued into segments at every unsafe cut, one `_cut_ok` per cut: `count_parts`'
        general case, and the reference `_glue` (its fast path) must agree with."""
        segs: list[str] = []
        cur = parts[0]
        for t in parts[1:]:
            if self._cut_ok(cur, t):
                segs.append(cur)
                cur = t
            else:
                cur += t
        segs.append(cur)
        return segs

    def _glue(self, parts: Sequence[str]) -> list[str]:
        """`count_parts`' gluing for non-empty later parts and no whitespace-eating specials, where
        a cut is unsafe exactly when the part after it is flagged bad-lead or the part before it
        bad-tail (or, for the first cut, `_cut_ok` says so): the unsafe cuts are found by set
        look-ups in C instead of a `_cut_ok` call per part (a vt prompt has a handful among
        hundreds of parts: its hop statements end in a space)."""
        rest = parts[1:]
        n = len(rest)
        unsafe = set(compress(range(1, n + 1), map(self._bad_lead.__contains__, rest)))
        unsafe.update(compress(range(2, n + 1), map(self._bad_tail.__contains__, islice(rest, n - 1))))
        if not self._cut_ok(parts[0], rest[0]):
            unsafe.add(1)
        cuts = sorted(unsafe)  # cut k lies between parts[k - 1] and parts[k]
        segs: list[str] = []
        done, i = 0, 0
        while i < len(cuts):
            j = i
            while j + 1 < len(cuts) and cuts[j + 1] == cuts[j] + 1:
                j += 1
            a, b = cuts[i] - 1, cuts[j]  # parts[a..b] glue into one segment
            segs.extend(parts[done:a])
            segs.append("".join(parts[a:b + 1]))
            done, i = b + 1, j + 1
        segs.extend(parts[done:])
        return segs

    def additive_units(self, first: str, units: Iterable[str], last: str) -> bool:
        """Whether `first` + any arrangement of `units` + `last` counts exactly
        first_count(first) + the units' segment counts + the segment count of `last`: counts are
        additive and every cut between these pieces is safe (see `count_parts`), in any order."""
        if not self.seps or not first or first[-1].isspace() or (self._rstrip and first.endswith(self._rstrip)):
            return False
        seps, rstrip = self.seps, self._rstrip
        units = units if isinstance(units, (list, tuple)) else list(units)
        for u in (*units, last):
            if len(u) < 2 or u[0] not in seps or u[1].isspace():
                return False
        return not any(u[-1].isspace() or (rstrip and u.endswith(rstrip)) for u in units)

    def _first_count(self, text: str) -> int:
        c = self._first.get(text)
        if c is None:
            c = self._learn([text], first=True)[0]
            if len(text) < 20000:  # worth keeping: a template + worked-example head, not a whole prompt
                self._first[text] = c
        return c

    @property
    def _cut_re(self) -> re.Pattern[str]:
        return _cut_pattern(self.seps)

    def _probe_additive(self) -> frozenset[str]:
        """The separators at which counts add up on probe texts: essay prose, RULER's noise,
        needle, variable and list lines, digits, UUIDs, quotes, non-ASCII, chat-template markup."""
        if getattr(self.tokenizer, "backend_tokenizer", None) is None and not hasattr(self.tokenizer, "encode_batch"):
            return frozenset()  # a slow (Python) tokenizer: nothing to reason about
        from spanlab.tasks.essays import essay_excerpt

        prose = essay_excerpt(5000)
        lines = "\n".join(_PROBE_LINES)
        ok = set()
        for sep in SEPARATORS:
            texts = [prose, lines, prose.replace(". ", ".\n"), _PROBE]
            cut = _cut_pattern(frozenset(sep))
            pieces = [cut.split(t) for t in texts]
            flat = [q for ps in pieces for q in ps[1:]]
            heads = [ps[0] for ps in pieces]
            got = self.counts(flat + heads + texts)
            whole = got[-len(texts):]
            sums, k = [], 0
            for j, ps in enumerate(pieces):
                sums.append(got[len(flat) + j] + sum(got[k:k + len(ps) - 1]))
                k += len(ps) - 1
            if sums == whole:
                ok.add(sep)
        return frozenset(ok)

    def disable_additive(self) -> None:
        """Fall back to full tokenisation (a first-sample check found a mismatch)."""
        self.seps = frozenset()
        self.additive_note = "not additive (a generated sample disagreed): every prompt is tokenised in full"
        self._remember_stored("seps", [])  # later processes skip the additive path from the start


SEPARATORS = (" ", "\n")
_PROBE_LINES = [
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.",
    "One of the special magic numbers for adorable-shelter is: 7324591.",
    "One of the special magic uuids for 3f1c9a2e-77b0-4c1d-9e8f-0a1b2c3d4e5f is: 9b8a7c6d-1e2f-4a3b-8c7d-6e5f4a3b2c1d.",
    "VAR QWERT = 12345", "VAR ASDFG = VAR QWERT ", "1. apple 2. banana 3. cherry 10. x 11. y 100. z",
    "... abcdef ... ghijkl mnopqr ... ... stuvwx",
    "Question: What are all the special magic numbers for a, b, and c mentioned in the provided text?",
    "Answer: According to the chain(s) of variable assignment in the text above, 5 variables are assigned",
    "\u201cQuoted\u201d text \u2014 caf\u00e9, na\u00efve, \u00fcber; it's don't I'll we're (1990s) $5.00 50% a/b [x]",
    "Document 1: <|im_start|>user <|im_end|> </s> <s> [INST] [/INST] <|eot_id|> x",
]


class ByteLevelCounts:
    r"""Exact token counts for a byte-level BPE with GPT-2's pre-tokenizer, counted in Python from
    cached pieces, the Rust pre-tokenizer skipped wherever the text allows.

    Why: in the Rust pipeline most of the time for short strings goes to the regex pre-tokenizer
    (~8 us per string on the 2-core VM, plus thread-pool start-up on the first call), and the tasks
    count many fresh short strings per sample (multikey's distractor keys and 7-digit values, fwe's
    coded words) and some long texts once (essay sentences, the checked first prompt).

    Why it is exact: for `tokenizers`' ByteLevel pre-tokenizer (use_regex, no prefix space) and no
    normalizer, encoding is: split the text at added tokens, split the rest with GPT-2's regex, map
    bytes to the byte-level alphabet, run the BPE model on each piece. A text without added tokens
    therefore has as many tokens as the sum over its regex pieces of `model.tokenize(piece)`.
    Two levels of cache make that fast:
    - words: Python's regex engine is slow too (~5 us for a 60-character line), so text is first
      cut at spaces with `str.split`. In GPT-2's regex only a whitespace run can hold a space that
      does not start its piece, and such a run holds the character before that space as well;
      every other alternative stops before whitespace. So where every space follows a printable
      non-space ASCII character, each space starts a piece and no piece crosses it (a lookahead
      past the chunk end sees a space or the end of text: both are "not \S"), and the count is
      count(chunk 0) + sum of count(" " + chunk); chunk counts are cached. A chunk of letters or
      digits (optionally ending in punctuation) is one piece (plus the punctuation's piece).
    - pieces: other ASCII chunks are cut by `PIECES`, GPT-2's regex written for ASCII text, where
      \p{L} is [A-Za-z], \p{N} is [0-9] and Oniguruma's \s is tab, newline, vertical tab, form
      feed, carriage return and space (not \x1c-\x1f, which Python's own \s would take, hence the
      explicit class); each distinct piece goes through the model once (~1.7 us).
    Chunks with other characters, and whole texts holding an added token's string or a space the
    shortcut cannot cut at, go to the Rust pipeline. `wrap` compares this with the Rust pipeline
    on probe texts once and keeps Rust if they ever differ; tests compare them on fuzzed text.
    """

    _WS = "\t\n\x0b\x0c\r "
    PIECES = re.compile(rf"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^{_WS}A-Za-z0-9]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+")
    # a space after whitespace: the space-cut shortcut does not hold (the literal first lets the
    # regex engine jump from space to space; 4x faster than the plain class-then-space pattern);
    # in non-ASCII text any space after anything but printable ASCII counts as one
    NO_CUT = re.compile(rf" (?<=[{_WS}] )")
    NO_CUT_UNICODE = re.compile(r" (?<=[^\x21-\x7e] )")
    TAIL = ".,;:!?)]}\"-"  # punctuation a one-piece word may end with (no "'": GPT-2 has contractions)
    MAX_CACHE = 1 << 20  # entries per table: bounds memory on endless random values

    def __init__(self, backend: Any, rust: Any):
        self.model_tokenize = backend.model.tokenize
        self.rust = rust
        self.piece: dict[str, int] = {}  # GPT-2 piece -> tokens
        self.head: dict[str, int] = {}  # text before its first space -> tokens
        self.word: dict[str, int] = {}  # chunk between spaces -> tokens of " " + chunk
        self.hyphen: dict[str, int] = {}  # "b-c" -> tokens of "-b-c" (hyphenated words after their first run)
        added = sorted({t.content for t in backend.get_added_tokens_decoder().values() if t.content}, key=len, reverse=True)
        self.added = re.compile("|".join(map(re.escape, added))) if added else None
        # substring tests of the added tokens' first characters screen texts before that regex
        self.added_first = tuple(sorted({a[0] for a in added}))

    @classmethod
    def applies(cls, backend: Any) -> bool:
        try:
            from tokenizers import models, pre_tokenizers

            pre, model = backend.pre_tokenizer, backend.model
            return (backend.normalizer is None and isinstance(pre, pre_tokenizers.ByteLevel) and pre.use_regex
                    and not pre.add_prefix_space and isinstance(model, models.BPE) and model.dropout is None)
        except (AttributeError, ImportError):  # not a `tokenizers` object, or an older one
            return False

    PROBE = (_PROBE, *_PROBE_LINES, " ".join(_PROBE_LINES), "\n".join(_PROBE_LINES), "a  b\n\n c \t\r\nd  ",
             "x's 'll 'S  '  1234567. 3f1c9a2e-77b0 #!?{}~ (a) [b] \"c\" d-e f: g; h, i! j? k.",
             " lead", "trail ", " ", "", "\n x \ny\t z", "\x00a\x1c b\x1f\x7f \x0b\x0c c\r\n\x08",
             "caf\u00e9 \u2014 na\u00efve\u00a0x \u00a0 y \u3000z \u2019s \U0001f600 end.", "<|im_start|> x <|endoftext|>y")

    @classmethod
    def wrap(cls, backend: Any, rust: Any, agreed: bool | None = None) -> tuple[Any, bool]:
        """(`cls(backend, rust)`, True) where it applies and agrees with `rust` on probe texts, else
        (`rust`, False); `agreed` is that comparison's result from an earlier run, if known."""
        if not cls.applies(backend):
            return rust, False
        fast = cls(backend, rust)
        if agreed is None:
            agreed = fast(cls.PROBE) == rust(cls.PROBE)
        return (fast, True) if agreed else (rust, False)

    # the spaces that break the shortcut, as substrings: whitespace then a space
    _NO_CUT_PAIRS = tuple(w + " " for w in _WS)

    def _plain(self, texts: Sequence[str]) -> bool:
        """Whether every text is ASCII, holds no added token and no space after whitespace, tested
        on the texts joined by NUL in a few C-level scans (a match across a join only costs the
        per-text path below)."""
        joined = "\x00".join(texts)
        return (joined.isascii() and not any(map(joined.__contains__, self._NO_CUT_PAIRS))
                and not any(map(joined.__contains__, self.added_first)))

    def __call__(self, texts: Sequence[str]) -> list[int]:
        head, word = self.head, self.word
        if len(head) > self.MAX_CACHE or len(word) > self.MAX_CACHE:
            # new tables: threads counting meanwhile keep using the old ones
            head, word = self.head, self.word = {}, {}
        slow: list[int] = []  # to the Rust pipeline
        whole: list[int] = []  # no space cuts: counted by pieces
        if self._plain(texts):  # the usual case: every text takes the space-cut path
            cut = None
            chunks = [t.split(" ") for t in texts]
        else:
            added, first, no_cut, no_cut_u = self.added, self.added_first, self.NO_CUT.search, self.NO_CUT_UNICODE.search
            cut = []
            chunks = []
            for i, t in enumerate(texts):
                if added is not None and any(map(t.__contains__, first)) and added.search(t):
                    slow.append(i)
                elif t.isascii():
                    if no_cut(t):
                        whole.append(i)
                    else:
                        cut.append(i)
                        chunks.append(t.split(" "))
                elif no_cut_u(t):
                    slow.append(i)
                else:
                    cut.append(i)
                    chunks.append(t.split(" "))
        if chunks:
            heads = [ws[0] for ws in chunks]
            for ws in chunks:
                del ws[0]  # the head, counted on its own (no space before it)
            new_heads = list(set(heads).difference(head))
            if new_heads:
                head.update(zip(new_heads, self._count(new_heads)))
            new_words = list(set().union(*chunks).difference(word))
            if new_words:
                word.update(zip(new_words, self._count([" " + w for w in new_words])))
            hget, wget = head.__getitem__, word.__getitem__
            sums = [hget(h) + sum(map(wget, ws)) for h, ws in zip(heads, chunks)]
            if cut is None:
                return sums
            out = [0] * len(texts)
            for i, c in zip(cut, sums):
                out[i] = c
        else:
            out = [0] * len(texts)
        if whole:
            for i, c in zip(whole, self.by_pieces([texts[i] for i in whole])):
                out[i] = c
        if slow:
            for i, c in zip(slow, self.rust([texts[i] for i in slow])):
                out[i] = c
        return out

    def seed_words(self, words: Sequence[str], counts: Sequence[int]) -> None:
        """Put counts of " " + w found earlier (by `words`) into the word cache."""
        if len(self.word) + len(words) <= self.MAX_CACHE:
            self.word.update(zip(words, counts))

    def words(self, words: Sequence[str]) -> list[int]:
        """Counts of " " + w for each w, through the word cache."""
        word = self.word
        vals = list(map(word.get, words))
        if None in vals:
            if len(word) > self.MAX_CACHE:
                word = self.word = {}
            miss = list({w for w, v in zip(words, vals) if v is None})
            joined = "".join(miss)
            if (all(miss) and joined.isascii() and joined.isalpha()
                    and not (self.added is not None and any(map(joined.__contains__, self.added_first)))):
                # ASCII letters only (fwe's ~100 fresh coded words per sample): " w" is one GPT-2
                # piece, as `_count` finds for each after its checks; straight to the model
                tok = self.model_tokenize
                word.update(zip(miss, [len(tok("\u0120" + w)) for w in miss]))
            else:
                word.update(zip(miss, self._count([" " + w for w in miss])))
            vals = list(map(word.__getitem__, words))
        return vals

    def _count(self, texts: list[str]) -> list[int]:
        """Counts of chunks (no space after a space inside): one-piece words straight through the
        model, hyphenated words from cached runs, other ASCII by pieces; non-ASCII texts and texts
        holding an added token in Rust."""
        tok, tail, piece, hyphen = self.model_tokenize, self.TAIL, self.piece, self.hyphen
        joined = "".join(texts)
        all_ascii = joined.isascii()
        # Texts holding an added token (e.g. "<|im_start|>") go to Rust, which counts it as one.
        screen = self.added is not None and any(map(joined.__contains__, self.added_first))
        out: list[int | None] = []
        for t in texts:  # the hot loop of fresh keys and values: kept flat
            if (not all_ascii and not t.isascii()) or (screen and self.added.search(t)):
                out.append(None)
                continue
            core = t.rstrip(tail)
            body = core[1:] if core[:1] == " " else core
            if body.isdigit() or body.isalpha():  # " ?[0-9]+" or " ?[A-Za-z]+": one piece
                c = len(tok(core.replace(" ", "\u0120")))
            elif "-" in body:
                # runs of letters or digits joined by single hyphens (adjective-noun keys): the
                # runs and each "-" are pieces; what follows the first hyphen is counted once
                head, _, rest = core.partition("-")
                r = hyphen.get(rest)
                if r is None:
                    r = self._hyphenated(rest)
                hb = head[1:] if head[:1] == " " else head
                if r < 0 or not (hb.isalpha() or hb.isdigit()):
                    out.append(None)
                    continue
                c = piece.get(head)
                c = (c if c is not None else self._piece(head)) + r
            else:
                out.append(None)
                continue
            if len(core) < len(t):  # the punctuation run after a word is one piece of its own
                pc = piece.get(t[len(core):])
                c += pc if pc is not None else self._piece(t[len(core):])
            out.append(c)
        if None in out:
            other = [i for i, c in enumerate(out) if c is None]
            added = self.added  # an added token inside a text is one token: only Rust knows
            asc = [i for i in other if texts[i].isascii() and not (added is not None and added.search(texts[i]))]
            for i, c in zip(asc, self.by_pieces([texts[i] for i in asc])):
                out[i] = c
            rust = [i for i in other if out[i] is None]
            for i, c in zip(rust, self.rust([texts[i] for i in rust])):
                out[i] = c
        return out  # type: ignore[return-value]

    def _hyphenated(self, rest: str) -> int:
        """Tokens of "-" + rest for rest = runs of letters or digits joined by "-" (-1 otherwise)."""
        if len(self.hyphen) > self.MAX_CACHE:
            self.hyphen = {}
        runs = rest.split("-")
        ok = all(x.isalpha() or x.isdigit() for x in runs)
        r = self.hyphen[rest] = len(runs) * self._piece("-") + sum(map(self._piece, runs)) if ok else -1
        return r

    def _piece(self, p: str) -> int:
        """Tokens of one GPT-2 piece of printable ASCII (cached)."""
        c = self.piece.get(p)
        if c is None:
            c = self.piece[p] = len(self.model_tokenize(p.replace(" ", "\u0120")))
        return c

    def by_pieces(self, texts: Sequence[str]) -> list[int]:
        """Counts of ASCII texts as sums over their GPT-2 pieces."""
        pieces = list(map(self.PIECES.findall, texts))
        piece = self.piece
        new = set().union(*pieces).difference(piece)  # set operations in C: most pieces are known
        if new:
            if len(piece) > self.MAX_CACHE:  # a new table: threads counting meanwhile keep the old one
                piece = self.piece = {}
                new = set().union(*pieces)
            tok = self.model_tokenize
            for p in new:  # in printable ASCII only the space is not itself in the byte-level alphabet
                piece[p] = len(tok(p.replace(" ", "\u0120") if p.isprintable() else p.translate(_BYTE_LEVEL)))
        get = piece.__getitem__
        return [sum(map(get, ps)) for ps in pieces]


def _byte_level_ascii() -> dict[int, str]:
    """GPT-2's bytes_to_unicode for the ASCII bytes that do not map to themselves (space -> 'Ġ')."""
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    table, n = {}, 0
    for b in range(256):
        if b not in keep:
            if b < 128:
                table[b] = chr(256 + n)
            n += 1
    return table


_BYTE_LEVEL = _byte_level_ascii()

@lru_cache(maxsize=8)
def _cut_pattern(seps: frozenset[str]) -> re.Pattern[str]:
    chars = "".join(sorted(seps)).replace("\n", "\\n") or "\\x00"
    return re.compile(f"(?<=\\S)(?=[{chars}]\\S)")


def _rstrip_specials(tokenizer: Any) -> tuple[str, ...]:
    """Added tokens that swallow the whitespace after them: no cut may follow one."""
    backend = getattr(tokenizer, "backend_tokenizer", None) or tokenizer
    try:
        added = backend.get_added_tokens_decoder().values()
    except (AttributeError, TypeError):  # not a `tokenizers` object: nothing to inspect
        return ()
    return tuple(sorted({t.content for t in added if getattr(t, "rstrip", False)}))


_COUNTERS: dict[int, tuple[Any, TokenCounter]] = {}


def counter_for(tokenizer: Any) -> TokenCounter:
    """One `TokenCounter` (and its caches) per live tokenizer object."""
    hit = _COUNTERS.get(id(tokenizer))
    if hit is not None and hit[0] is tokenizer:
        return hit[1]
    c = TokenCounter(tokenizer)
    _COUNTERS[id(tokenizer)] = (tokenizer, c)
    return c
