"""Frequent words extraction (RULER's `fwe`): find the three most frequent coded words.

Word frequencies follow a zeta (Zipf) law: the k-th word of a random 6-letter vocabulary appears
floor(N k^-alpha / zeta(alpha)) times, and the most frequent "word" is the noise token '...'.
The length fit turns N; its token cost is sum_k count_k(N) x tokens(word_k), exact up to joins.
"""

from __future__ import annotations

import math
import random
import string
from bisect import bisect_right
from itertools import pairwise, repeat
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
from spanlab.tasks.shuffle import arrange
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


def _first_nonzero(w: float) -> int:
    """The smallest integer n >= 1 with int(float(n) * w) >= 1, for 0 < w <= 1."""
    n = max(1, math.ceil(1 / w))
    while n > 1 and float(n - 1) * w >= 1.0:  # 1 / w rounds: step to the exact boundary
        n -= 1
    while float(n) * w < 1.0:
        n += 1
    return n


def _zipf(num_words: int, powers: list[float], z: float) -> list[int]:
    """[int(num_words * k**-alpha / z) for each k] with the powers given, in C-level map chains:
    float(n) * p is n * p exactly (n < 2**53), then the same division and truncation."""
    return list(map(int, map(truediv, map(mul, powers, repeat(float(num_words))), repeat(z))))


# random bytes to letters: byte b is ascii_lowercase[b % 26] for b < 234 = 9 * 26; bytes 234-255 are
# dropped (rejection), so every letter is equally likely
_LETTER_OF_BYTE = bytes(ord(string.ascii_lowercase[b % 26]) for b in range(256))
_REJECT = bytes(range(9 * 26, 256))


def coded_words(rng: random.Random, count: int, wordlen: int) -> list[str]:
    """`count` distinct random words of `wordlen` lowercase letters, uniformly random and in a
    uniformly random order (the order they are first drawn).

    RULER draws a vocabulary this way (its words are `random.choices` of the letters) as a set,
    sorts and shuffles it; the first-drawn order of distinct uniform words is already a uniformly
    random order, so neither is needed. Letters come from `rng.randbytes` through `bytes.translate`
    (C speed; the per-letter `choices` walk cost ~0.1 ms per fwe sample at 16K).
    """
    seen: dict[str, None] = {}
    letters = ""
    while len(seen) < count:  # a batch of m words adds at most m: never more than `count`
        need = (count - len(seen)) * wordlen
        while len(letters) < need:
            more = need - len(letters)
            letters += rng.randbytes(more + more // 8 + 8).translate(_LETTER_OF_BYTE, _REJECT).decode("ascii")
        seen.update(dict.fromkeys([letters[i:i + wordlen] for i in range(0, need, wordlen)]))
        letters = letters[need:]
    return list(seen)


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

    def _law(self, ctx: Context) -> tuple[int, float, int, list[float], list[float], list[int] | None]:
        """(size, zeta, n_max, powers, weights, thresholds) of the batch, computed once."""
        law = ctx.shared.get("fwe_law")
        if law is None:
            p = ctx.params
            # RULER: vocabulary size max_seq_length // 50 unless given
            size = max(4, ctx.limit // 50 if p["vocab_size"] < 0 else p["vocab_size"])
            z = zeta(p["alpha"])
            n_max = 2 * ctx.limit + 16  # N is the Zipf scale; the list holds about 0.98 N words of >= 1 token
            # Rank k appears int(N k^-alpha / zeta) times; ranks past the last with a count at n_max
            # appear in no prompt (float(n) * p / z is monotone in n), so only ranks up to there get
            # words: ~140 of RULER's 326 at 16K, which the fit would otherwise count and sum ~35
            # times per sample. At least 5 ranks: the answers and the check that they lead.
            powers = [k ** -p["alpha"] for k in range(1, size + 1)]
            top = max(min(size, 5), max((k + 1 for k, c in enumerate(_zipf(n_max, powers, z)) if c), default=0))
            powers = powers[:top]
            weights = [pk / z for pk in powers]
            # thresholds[k]: the smallest n at which rank k's term int(n * w_k) of `cost` is non-zero;
            # with falling weights (as k^-alpha falls) cost(n) sums only the ranks below
            # bisect(thresholds, n): ~30-90 of ~70-140 at the sizes the search tries
            thresholds: list[int] | None = [_first_nonzero(w) for w in weights]
            if not all(a <= b for a, b in pairwise(thresholds)):
                thresholds = None
            law = ctx.shared["fwe_law"] = (size, z, n_max, powers, weights, thresholds)
        return law

    def draft(self, ctx: Context, index: int, rng: random.Random) -> tuple[Draft, int]:
        p = ctx.params
        size, z, n_max, powers, weights, thresholds = self._law(ctx)
        top = len(powers)
        # rank 1 is the noise "word" '...' (RULER draws a word there and overwrites it)
        words = ["...", *coded_words(rng, top - 1, p["coded_wordlen"])]
        layout_seed = rng.getrandbits(64)
        spaced = [" " + w for w in words]
        wc = ctx.counter.word_counts(words)  # = segment_counts(spaced), without caching one-off words
        answer_prefix = FWE_ANSWER_PREFIX
        top_text, bottom = split_template(FWE_TEMPLATE)

        def render(n: int, shuffle: bool = True) -> Draft:
            counts = _zipf(n, powers, z)
            others: list[str] = []  # every entry but the noise, rank by rank
            for w, c in zip(spaced[1:], counts[1:]):
                if c:
                    others += [w] * c
            total = counts[0] + len(others)
            if shuffle:
                # a uniformly random order of the whole list, walking only the non-noise entries
                lst = arrange(others, spaced[0], total, random.Random(layout_seed))
            else:
                lst = [spaced[0]] * counts[0] + others
            if lst:
                lst[0] = lst[0][1:]  # " ".join(lst): no space before the first word
            parts = ctx.template.wrap_parts(join_parts(top_text, lst, "", bottom))
            return Draft("", answer_prefix, words[1:4], n=n, parts=parts)

        base = ctx.count(render(0))

        def cost(n: int) -> int:
            # sum(int(n * w) * c): the search calls this ~35 times per sample; map chains run it in
            # C (float(n) * w is n * w exactly, n < 2**53); `repeat(_, k)` stops the chain at k terms
            k = top if thresholds is None else bisect_right(thresholds, n)
            return base + sum(map(mul, map(int, map(mul, weights, repeat(float(n), k))), wc))

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

        d, t = fit_shuffled(ctx, render, cost, n_max, count_n)
        counts = _zipf(d.n, powers, z)
        if size > 4 and not counts[1] > counts[2] > counts[3] > counts[4]:
            raise SpanlabError(f"max_length={ctx.max_length} is too short for fwe: the three answers are not "
                               "the three most frequent words; raise the length")
        return d, t
