"""Haystacks as lists of units (sentences or lines) with token costs computed once.

`cost(n)` is the token count of the first n units each with its separator, which is what the
length fit sums; `units(n)` returns the text. Costs are cached on the TokenCounter so every
sample (and every task) sharing a tokenizer reuses them.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from typing import Any

from spanlab.tasks.essays import corpus_digest, essay_sentences
from spanlab.tasks.fitting import PrefixCost
from spanlab.tasks.tokenizer import TokenCounter

# RULER's "noise" haystack line (repeated).
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."


class EssayHaystack:
    """Sentences of the essay corpus from its start, repeating the corpus when more is needed.

    Sentence costs are counted lazily in chunks (shared per tokenizer), so a 4K prompt counts a few
    hundred sentences, not the whole corpus.
    """

    sep = " "
    chunk = 512

    def __init__(self, counter: TokenCounter):
        self.sents = essay_sentences()
        self.counter = counter
        with counter.lock:
            pc = counter.cache.get("essay_costs")
            if pc is None:
                # the costs counted so far in earlier runs (diskcache), keyed by the corpus
                self._name = f"essay_costs:{corpus_digest()}"
                kept = counter.stored(self._name)
                valid = isinstance(kept, list) and len(kept) <= len(self.sents) and all(type(c) is int for c in kept)
                pc = counter.cache["essay_costs"] = PrefixCost(kept if valid else ())
                counter.cache["essay_costs_name"] = self._name
            self.pc: PrefixCost = pc
            self._name = counter.cache["essay_costs_name"]

    def _count_upto(self, m: int) -> None:
        m = min(m, len(self.sents))
        if len(self.pc) >= m:
            return
        with self.counter.lock:
            start = len(self.pc)
            if start < m:
                stop = min(len(self.sents), max(m, start + self.chunk))
                self.pc.extend(self.counter.segment_counts([" " + s for s in self.sents[start:stop]]))
                self.counter.store(self._name, self.pc.units())

    def cost(self, n: int) -> int:
        q, r = divmod(n, len(self.sents))
        self._count_upto(len(self.sents) if q else r)
        return q * self.pc(len(self.sents)) + self.pc(r) if q else self.pc(r)

    def units(self, n: int) -> list[str]:
        q, r = divmod(n, len(self.sents))
        return list(self.sents) * q + list(self.sents[:r])

    def n_max(self, limit: int) -> int:
        return limit  # every sentence costs at least one token


class RepeatHaystack:
    """RULER's noise haystack: the same five short sentences on every line."""

    sep = "\n"

    def __init__(self, counter: TokenCounter, line: str = NOISE):
        self.line = line
        key = ("line_cost", line)
        with counter.lock:
            if key not in counter.cache:
                name = f"line_cost:{line}"
                kept = counter.stored(name)
                if type(kept) is not int:
                    kept = counter.segment_counts(["\n" + line])[0]
                    counter.store(name, kept)
                counter.cache[key] = kept
        self.c: int = counter.cache[key]

    def cost(self, n: int) -> int:
        return n * self.c

    def units(self, n: int) -> list[str]:
        return [self.line] * n

    def n_max(self, limit: int) -> int:
        return limit // max(1, self.c) + 2


class GeneratedHaystack:
    """Distinct generated lines (distractor needles): produced lazily, counted in batches.

    With `fields=(pre, mid, post)`, `make_line()` returns (key, value) and a line is
    pre + key + mid + value + post (a needle sentence). Where counts add up at spaces and every
    cut around key and value is safe, a line's count is the fixed text's count plus the counts
    of " " + key and " " + value + post, so only the fresh words are counted (a 16K multikey
    sample has ~700 lines, a fresh key and 7-digit value each: ~60 % of its time was counting
    whole lines); otherwise the lines are counted whole.
    """

    sep = "\n"

    def __init__(self, counter: TokenCounter, make_line: Callable[[], Any], chunk: int = 32,
                 fields: tuple[str, str, str] | None = None):
        self.counter = counter
        self.make_line = make_line
        self.chunk = chunk
        self.fields = fields
        self.lines: list[str] = []
        self.pc = PrefixCost()
        self._grow(chunk)

    def _grow(self, n: int) -> None:
        if self.fields is None:
            new = [self.make_line() for _ in range(n)]
            self.lines.extend(new)
            self.pc.extend(self.counter.segment_counts(["\n" + s for s in new]))
            return
        pre, mid, post = self.fields
        kvs = [self.make_line() for _ in range(n)]
        new = [pre + k + mid + v + post for k, v in kvs]
        self.lines.extend(new)
        segments = ["\n" + s for s in new]
        costs = self._summed(kvs)
        if costs is None:
            self.pc.extend(self.counter.segment_counts(segments))
        else:
            self.counter.remember(segments, costs)  # so `count_parts` finds the lines
            self.pc.extend(costs)

    def _summed(self, kvs: list[tuple[str, str]]) -> list[int] | None:
        """Line counts summed from the fixed text and the fresh words, or None where that sum
        would not be exact (see the class note)."""
        c, (pre, mid, post) = self.counter, self.fields
        keys, values = [k for k, _ in kvs], [v + post for _, v in kvs]
        if (" " not in c.seps or c._rstrip or not (pre.endswith(" ") and mid.startswith(" ") and mid.endswith(" "))
                or "" in keys or "" in values):
            return None  # not additive at spaces, or a template without spaces around the fields
        # a word may hold spaces ("ad hoc-saw"), not at its ends: its own count is exact either way
        ends = "".join(map(itemgetter(0), keys)) + "".join(map(itemgetter(-1), keys)) + "".join(map(itemgetter(0), values))
        if any(map(str.isspace, ends)) or values[0][-1].isspace():
            return None
        fixed = ["\n" + pre[:-1], mid[:-1]]
        if not c.additive_units(fixed[0], [fixed[1], " " + keys[0], " " + values[0]], " " + values[0]):
            return None
        base = sum(c.segment_counts(fixed))
        return [base + a + b for a, b in zip(c.word_counts(keys), c.word_counts(values))]

    def cost(self, n: int) -> int:
        # beyond the lines made so far, extrapolate with the mean: the search probes sizes it
        # will not use, and generating and counting those lines would cost real tokenisation
        m = len(self.lines)
        if n <= m:
            return self.pc(n)
        return self.pc(m) + -(-(n - m) * self.pc(m) // m)

    def units(self, n: int) -> list[str]:
        if n > len(self.lines):
            self._grow(max(self.chunk, n - len(self.lines)))
        return self.lines[:n]

    def reserve(self, budget: int) -> None:
        """Generate and count about as many lines as `budget` tokens hold, in one batch."""
        avg = self.pc(len(self.lines)) / len(self.lines)
        want = int(budget / avg * 1.02) + 2
        if want > len(self.lines):
            self._grow(want - len(self.lines))

    def unit_cost(self, j: int) -> int:
        self.units(j + 1)
        return self.pc(j + 1) - self.pc(j)

    def promote(self, j: int, n: int) -> None:
        """Move line j to position n (j >= n); prefix sums from n on are rebuilt."""
        self.units(j + 1)
        costs = [self.pc(i + 1) - self.pc(i) for i in range(len(self.lines))]
        self.lines.insert(n, self.lines.pop(j))
        costs.insert(n, costs.pop(j))
        del self.pc.prefix[n + 1:]
        self.pc.extend(costs[n:])

    def n_max(self, limit: int) -> int:
        avg = self.pc(len(self.lines)) / len(self.lines)
        return int(limit / (0.85 * avg)) + 8
