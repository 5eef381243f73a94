"""Word lists and random needle keys/values, all offline (wonderwords' bundled lists).

RULER draws NIAH word keys from adjective-noun pairs of wonderwords' lists and CWE words from
wonderwords' nouns+adjectives+verbs; its larger `english_words.json` fallback is a Git LFS file we
cannot ship, so when CWE needs more distinct words than the single-word list holds we fall back to
the adjective-noun pairs (still real words, still one per list entry).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from functools import lru_cache
from typing import Any

KEY_TYPES = ("words", "numbers", "uuids")


def _wordlist(name: str) -> list[str]:
    """One of wonderwords' bundled lists, read as wonderwords reads it (lines, right-stripped).

    Read from the installed package's files directly: importing wonderwords loads all five lists,
    its profanity filter included (~10 ms of a ~0.15 s run); tests check both give the same list.
    """
    from importlib.util import find_spec

    spec = find_spec("wonderwords")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(root, "assets", name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return [w.rstrip() for w in f]  # = wonderwords' readlines() and rstrip()
    # an unusual install (zipped, say): let wonderwords find its files
    from wonderwords.random_word import _get_words_from_text_file

    return list(_get_words_from_text_file(name))


@lru_cache(maxsize=1)
def single_words() -> tuple[str, ...]:
    """RULER's CWE pool: sorted unique nouns, adjectives and verbs."""
    return tuple(sorted(set(_wordlist("nounlist.txt") + _wordlist("adjectivelist.txt") + _wordlist("verblist.txt"))))


@lru_cache(maxsize=1)
def _adj_noun() -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(sorted(set(_wordlist("adjectivelist.txt")))), tuple(sorted(set(_wordlist("nounlist.txt"))))


def num_adj_noun() -> int:
    adjs, nouns = _adj_noun()
    return len(adjs) * len(nouns)


def adj_noun(i: int) -> str:
    """The i-th adjective-noun pair (RULER's NIAH word keys), without materialising ~10M strings."""
    adjs, nouns = _adj_noun()
    a, n = divmod(i, len(nouns))
    return f"{adjs[a]}-{nouns[n]}"


_NUM_LO, _NUM_SPAN = 10**6, 9 * 10**6  # RULER's values: randint(10**6, 10**7 - 1), 7 digits
_INLINE: bool | None = None  # does `_below` draw exactly as this interpreter's Random.randrange?


def _below(getrandbits: Any, n: int, k: int) -> int:
    """`Random.randrange(n)` for n > 0 with k = n.bit_length(): CPython's `_randbelow_with_getrandbits`
    walk (getrandbits(k) until below n), without randrange's argument checks and call layers; the
    distractor lines of a 16K multikey sample draw ~1,400 values, where those layers were a third of
    the per-line cost."""
    r = getrandbits(k)
    while r >= n:
        r = getrandbits(k)
    return r


def _inline_ok(rng: random.Random) -> bool:
    global _INLINE
    if type(rng) is not random.Random:
        return False  # a subclass may draw differently
    if _INLINE is None:
        a, b = random.Random(11), random.Random(11)
        n = num_adj_noun()
        _INLINE = all(a.randint(_NUM_LO, _NUM_LO + _NUM_SPAN - 1) == _NUM_LO + _below(b.getrandbits, _NUM_SPAN, 24)
                      and a.randrange(n) == _below(b.getrandbits, n, n.bit_length()) for _ in range(2000))
    return _INLINE


def value_drawer(kind: str, rng: random.Random) -> Callable[[], str]:
    """`lambda: random_value(kind, rng)` with the dispatch and checks done once: distractor lines
    draw two values each, ~1,400 per 16K multikey sample."""
    if kind in ("numbers", "words") and _inline_ok(rng):
        getrandbits = rng.getrandbits
        if kind == "numbers":
            def number() -> str:
                r = getrandbits(24)
                while r >= _NUM_SPAN:
                    r = getrandbits(24)
                return str(_NUM_LO + r)
            return number
        adjs, nouns = _adj_noun()
        n, m = len(adjs) * len(nouns), len(nouns)
        k = n.bit_length()

        def word() -> str:
            r = getrandbits(k)
            while r >= n:
                r = getrandbits(k)
            a, b = divmod(r, m)
            return f"{adjs[a]}-{nouns[b]}"
        return word
    return lambda: random_value(kind, rng)


def random_value(kind: str, rng: random.Random) -> str:
    """A random needle key or value, drawing from `rng` exactly as RULER's calls would."""
    if kind == "numbers":
        if _inline_ok(rng):
            return str(_NUM_LO + _below(rng.getrandbits, _NUM_SPAN, 24))
        return str(rng.randint(10**6, 10**7 - 1))  # RULER: 7 digits
    if kind == "words":
        adjs, nouns = _adj_noun()
        n = len(adjs) * len(nouns)
        return adj_noun(_below(rng.getrandbits, n, n.bit_length()) if _inline_ok(rng) else rng.randrange(n))
    if kind == "uuids":
        import uuid  # here: the module costs ~5 ms of start-up that most tasks never need

        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    raise ValueError(f"unknown needle type {kind!r}")


def distinct_values(kind: str, n: int, rng: random.Random) -> list[str]:
    """n random values without repeats (repeated keys would make the gold answer ambiguous)."""
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        v = random_value(kind, rng)
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out
