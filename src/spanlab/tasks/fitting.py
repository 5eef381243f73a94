"""Tight length fitting without re-tokenising the whole prompt at every search step.

Each task describes a sample by a size knob `n` (haystack sentences, lines, words, documents), a
`render(n)` that builds the prompt, and a cheap monotone estimate `cost(n)` of its token count
built from per-unit token counts computed once (prefix sums). Token counts of text joined at
whitespace are additive up to a few boundary tokens, so the estimate lands within a handful of
tokens; the real count of each candidate prompt then steers a bracketed search that usually
settles after one or two full tokenisations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Generic, TypeVar

from spanlab.errors import SpanlabError

R = TypeVar("R")


@dataclass
class Fit(Generic[R]):
    n: int
    result: R
    tokens: int  # exact prompt tokens of `result`


def max_n_within(cost: Callable[[int], float], budget: float, lo: int, hi: int) -> int:
    """Largest n in [lo, hi] with cost(n) <= budget (cost nondecreasing); lo if none.

    Gallops up from lo before bisecting, so lazily built cost tables never grow far past the answer.
    """
    step = 1
    while lo + step < hi and cost(lo + step) <= budget:
        lo, step = lo + step, step * 2
    hi = min(hi, lo + step)
    if cost(hi) <= budget:
        return hi
    while hi - lo > 1:  # invariant: cost(lo) <= budget < cost(hi), or lo is the floor
        mid = (lo + hi) // 2
        if cost(mid) <= budget:
            lo = mid
        else:
            hi = mid
    return lo


def fit(
    render: Callable[[int], R],
    count: Callable[[R], int],
    cost: Callable[[int], float],
    limit: int,
    n_max: int,
    *,
    what: str,
    max_rounds: int = 12,
) -> Fit[R]:
    """Largest (nearly) n whose rendered prompt has at most `limit` tokens.

    Stops when the best fitting prompt is within one unit of the next size that overflows, or when
    the gap to `limit` is smaller than the unit just added. Raises SpanlabError when even n=0
    overflows (max_length too small for template plus tokens_to_generate).
    """
    lo_ok: Fit[R] | None = None
    hi_bad = n_max + 1
    n = max_n_within(cost, limit, 0, n_max)
    for _ in range(max_rounds):
        r = render(n)
        t = count(r)
        if t <= limit:
            lo_ok = Fit(n, r, t)
            if n >= hi_bad - 1:
                break
            # grow by the estimated number of units that fit into the remaining gap
            nxt = max_n_within(cost, cost(n) + (limit - t), n, hi_bad - 1)
            if nxt <= n:
                break
        else:
            hi_bad = n
            if n == 0:
                break
            nxt = max_n_within(cost, cost(n) - (t - limit), 0, n - 1)
            if lo_ok is not None:
                nxt = max(nxt, lo_ok.n + 1)
                if nxt >= hi_bad:
                    break
        n = nxt
    if lo_ok is None:
        # the estimate-driven steps can in principle keep missing; fall back to halving
        n = min(n, hi_bad - 1)
        while n >= 0:
            r = render(n)
            t = count(r)
            if t <= limit:
                return Fit(n, r, t)
            if n == 0:
                break
            n //= 2
        raise SpanlabError(
            f"max_length is too small for {what}: even an empty haystack needs {t} prompt tokens plus "
            "tokens_to_generate; raise the length or use a shorter template")
    return lo_ok


class PrefixCost:
    """cost(n) = base + sum of the first n unit costs, over a unit list that can grow lazily."""

    def __init__(self, unit_costs: Sequence[int] = ()):
        self.prefix = [0]
        self.extend(unit_costs)

    def extend(self, unit_costs: Sequence[int]) -> None:
        acc = self.prefix[-1]
        for c in unit_costs:
            acc += c
            self.prefix.append(acc)

    def __len__(self) -> int:
        return len(self.prefix) - 1

    def units(self) -> list[int]:
        """The unit costs (differences of the prefix sums)."""
        return [b - a for a, b in pairwise(self.prefix)]

    def __call__(self, n: int) -> int:
        return self.prefix[n]


def top_up(fitted: Fit[R], n_of: Callable[[R], int], render: Callable[[int], R], count: Callable[[R], int],
           limit: int, unit_cost: Callable[[int], int], promote: Callable[[int, int], None], look: int = 64,
           slack: float = 0.01) -> Fit[R]:
    """Close the last gap when units are coarse (documents, UUID lines): while the gap after the
    fit could hold a unit, bring the largest of the next `look` candidates that fits to position n.
    A gap under `slack` x limit is left alone: each step costs a full tokenisation."""
    while True:
        n = n_of(fitted.result)
        gap = limit - fitted.tokens
        if gap <= slack * limit:
            return fitted
        fits = [(unit_cost(j), -j) for j in range(n, n + look) if unit_cost(j) <= gap]
        if not fits:
            return fitted
        promote(-max(fits)[1], n)
        r = render(n + 1)
        t = count(r)
        if t > limit:
            return fitted
        fitted = Fit(n + 1, r, t)
