"""Frequent words extraction (RULER's `fwe`): find the three most frequent coded words.

Word frequencies follow a zeta (Zipf) law: the k-th word of a random 6-letter vocabulary appears
floor(N k^-alpha / zeta(alpha)) times, and the most frequent "word" is the noise token '...'.
The length fit turns N; its token cost is sum_k count_k(N) x tokens(word_k), exact up to joins.
"""

from __future__ import annotations

import math
import random
import string
from itertools import repeat
from operator import mul, truediv
from typing import Any

from spanlab.errors import SpanlabError
from spanlab.tasks.base import (
    Context,
    Draft,
    Task,
    as_number,
    fit_shuffled,
    join_parts,
    split_template,
)
from spanlab.tasks.shuffle import fast_shuffle
from spanlab.tasks.templates import FWE_ANSWER_PREFIX, FWE_TEMPLATE, TOKENS_TO_GENERATE


def zeta(s: float) -> float:
    """Riemann zeta for s > 1 by Euler-Maclaurin (error < 1e-12 for s >= 1.1)."""
    n = 20
    head = sum(k ** -s for k in range(1, n))
    # tail from n: integral + half term + Bernoulli corrections
    tail = n ** (1 - s) / (s - 1) + 0.5 * n ** -s
    b = [1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66]
    fact, rise = 1.0, s
    for j, bj in enumerate(b, start=1):
        fact *= (2 * j - 1) * (2 * j) if j > 1 else 2
        tail += bj / fact * rise * n ** (-s - 2 * j + 1)
        rise *= (s + 2 * j - 1) * (s + 2 * j)
    return head + tail


def zipf_counts(num_words: int, vocab_size: int, alpha: float) -> list[int]:
    return _zipf(num_words, [k ** -alpha for k in range(1, vocab_size + 1)], zeta(alpha))


def _zipf(num_words: int, powers: list[float], z: float) -> list[int]:
    """[int(num_words * k**-alpha / z) for each k] with the powers given, in C-level map chains:
    float(n) * p is n * p exactly (n < 2**53), then the same division and truncation."""
    return list(map(int, map(truediv, map(float(num_words).__mul__, powers), repeat(z))))


_CHOICES_INLINE: bool | None = None  # does `_letters` draw exactly as this interpreter's Random.choices?


def _letters(rng: random.Random, k: int) -> list[str]:
    """`rng.choices(ascii_lowercase, k=k)`: CPython's unweighted walk, population[floor(random() * n)],
    run through C-level maps (floor is int for these non-negative floats; n is a float there too)."""
    draw = rng.random
    return list(map(string.ascii_lowercase.__getitem__, map(int, map((26.0).__mul__, [draw() for _ in range(k)]))))


def coded_words(rng: random.Random, size: int, wordlen: int) -> set[str]:
    """RULER's vocabulary: random lowercase words of `wordlen` letters until `size` distinct ones,
    each drawn with `rng.choices`; drawn a batch at a time (same draws, same words) since the
    per-word `choices` call was a fifth of an fwe sample's time at 16K."""
    global _CHOICES_INLINE
    if _CHOICES_INLINE is None:
        a, b = random.Random(3), random.Random(3)
        _CHOICES_INLINE = (type(a) is random.Random
                           and [a.choices(string.ascii_lowercase, k=7) for _ in range(200)]
                           == [_letters(b, 7) for _ in range(200)])
    vocab: set[str] = set()
    if type(rng) is not random.Random or not _CHOICES_INLINE:
        while len(vocab) < size:
            vocab.add("".join(rng.choices(string.ascii_lowercase, k=wordlen)))
        return vocab
    while len(vocab) < size:  # one word per loop as before: a batch of m words adds at most m
        m = size - len(vocab)
        letters = _letters(rng, m * wordlen)
        vocab.update(["".join(letters[i:i + wordlen]) for i in range(0, m * wordlen, wordlen)])
    return vocab


class FreqWords(Task):
    family = "freq_words_extraction"
    tokens_to_generate = TOKENS_TO_GENERATE["freq_words_extraction"]
    defaults = {"alpha": 2.0, "coded_wordlen": 6, "vocab_size": -1}

    def check(self, p: dict[str, Any]) -> dict[str, Any]:
        as_number(p, "alpha", float)
        if not p["alpha"] > 1.0 or not math.isfinite(p["alpha"]):
            raise SpanlabError(f"fwe alpha must be a number above 1 (zeta law), got {p['alpha']}")
        as_number(p, "coded_wordlen", int, 2)
        as_number(p, "vocab_size", int)
        return p

    def draft(self, ctx: Context, index: int, rng: random.Random) -> tuple[Draft, int]:
        p = ctx.params
        # RULER: vocabulary size max_seq_length // 50 unless given
        size = max(4, ctx.limit // 50 if p["vocab_size"] < 0 else p["vocab_size"])
        words = sorted(coded_words(rng, size, p["coded_wordlen"]))
        fast_shuffle(words, rng)
        words[0] = "..."  # the top-ranked "word" is noise
        layout_seed = rng.getrandbits(64)
        spaced = [" " + w for w in words]
        wc = ctx.counter.word_counts(words)  # = segment_counts(spaced), without caching one-off words
        z = zeta(p["alpha"])
        powers = [k ** -p["alpha"] for k in range(1, size + 1)]
        weights = [pk / z for pk in powers]
        answer_prefix = FWE_ANSWER_PREFIX
        top, bottom = split_template(FWE_TEMPLATE)

        def render(n: int, shuffle: bool = True) -> Draft:
            lst: list[str] = []
            for w, c in zip(spaced, _zipf(n, powers, z)):
                if c:
                    lst += [w] * c
            if shuffle:
                fast_shuffle(lst, random.Random(layout_seed))
            if lst:
                lst[0] = lst[0][1:]  # " ".join(lst): no space before the first word
            parts = ctx.template.wrap_parts(join_parts(top, lst, "", bottom))
            return Draft("", answer_prefix, words[1:4], n=n, parts=parts)

        base = ctx.count(render(0))

        def cost(n: int) -> int:
            # sum(int(n * w) * c): the search calls this ~40 times per sample over ~N/50 words;
            # map chains run it in C (float(n) * w is n * w exactly, n < 2**53)
            return base + sum(map(mul, map(int, map(float(n).__mul__, weights)), wc))

        count_n = None
        n0 = math.floor(z) + 1  # the smallest list holding the noise word: n0 / zeta >= 1
        first = None if ctx.verify else render(n0, False)
        if first is not None and len(first.parts) > 2 and ctx.counter.additive_units(first.parts[0], spaced,
                                                                                      first.parts[-1]):
            # every cut safe: a prompt counts its frame plus each word's count times its frequency
            frame = ctx.count(first) - sum(map(mul, _zipf(n0, powers, z), wc))

            def count_n(n: int) -> int:
                counts = _zipf(n, powers, z)
                return frame + sum(map(mul, counts, wc)) if counts[0] else base

        # N is the Zipf scale; the list holds about 0.98 N words of at least one token each
        d, t = fit_shuffled(ctx, render, cost, 2 * ctx.limit + 16, count_n)
        counts = zipf_counts(d.n, size, p["alpha"])
        if size > 4 and not counts[1] > counts[2] > counts[3] > counts[4]:
            raise SpanlabError(f"max_length={ctx.max_length} is too short for fwe: the three answers are not "
                               "the three most frequent words; raise the length")
        return d, t
