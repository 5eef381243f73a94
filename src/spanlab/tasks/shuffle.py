"""Shuffles for the tasks' long word lists: `random.Random.shuffle` exactly (about twice as fast), a
random order drawn only as far as it is read, and a random arrangement around a repeated filler.

cwe and fwe shuffle lists of thousands of entries per sample, where the interpreter's per-element
work dominates (~100-140 ns per element on the development VM). C-level alternatives measured no
faster in Python 3.11: sorting indices by random keys 2.5-6x slower per element, de-duplicating
bulk draws (`randbytes` -> `array` -> `map(operator.mod)` -> `dict.fromkeys`) ~1.4x slower, each
creating int objects and calling per element. So the savings come from walking fewer elements:
`ShuffledPrefix` walks only as far as the sample reads (cwe needs ~110-800 of its 8,166-word pool),
`arrange` walks only the non-filler entries (fwe's list is 61 % noise '...' at alpha 2). Both are
exact Fisher-Yates walks on `getrandbits`, so every order is equally likely, as with
`random.shuffle`/`random.sample`; they draw differently from those.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

_SAME: bool | None = None  # does the inlined walk match this interpreter's Random.shuffle?


def _walk(x: list[Any], getrandbits: Any, hi: int | None = None, lo: int = 1) -> None:
    """Fisher-Yates steps for positions hi, hi - 1, ..., lo (default: the whole list): x[i] swaps
    with x[r], r uniform in [0, i], drawn as `Random._randbelow` draws it (getrandbits of n's
    bit length, rejecting r >= n), grouped by bit length so the step loop stays flat."""
    m = len(x) if hi is None else hi + 1  # the bound n = i + 1 of the next step
    while m >= lo + 1 and m >= 2:
        k = m.bit_length()
        low = max(1 << (k - 1), lo + 1, 2)
        for i in range(m - 1, low - 2, -1):  # r < n is r <= i: no n - 1 per step (16 % fewer instructions)
            r = getrandbits(k)
            while r > i:
                r = getrandbits(k)
            x[i], x[r] = x[r], x[i]
        m = low - 1


def _same() -> bool:
    global _SAME
    if _SAME is None:
        a, b = list(range(300)), list(range(300))
        random.Random(7).shuffle(a)
        _walk(b, random.Random(7).getrandbits)
        _SAME = a == b
    return _SAME


def fast_shuffle(x: list[Any], rng: random.Random) -> None:
    """Shuffle `x` in place exactly as `rng.shuffle(x)` would, leaving `rng` in the same state."""
    # subclasses may draw differently; a future CPython might too (checked once against the real one)
    if type(rng) is not random.Random or not _same():
        rng.shuffle(x)
        return
    _walk(x, rng.getrandbits)


class ShuffledPrefix:
    """A uniformly random order of `items`, drawn only as far as it is read.

    `prefix(k)` is the first k items of that order: the walk of `fast_shuffle` run from the end of
    a copy for k steps, read backwards (position n - 1 first). Asking again for more continues the
    same walk, so the order does not depend on how far, or in how many steps, it was read: the
    first k items are a uniformly random k-permutation of `items` (what `rng.sample(items, k)` gives,
    at a fraction of its cost) whatever k the caller settles on. `rng` must not be used elsewhere
    while the order is being read.
    """

    def __init__(self, items: Iterable[T], rng: random.Random):
        self._x: list[T] = list(items)
        self._bits = rng.getrandbits
        self._next = len(self._x) - 1  # the next position the walk fills
        self.drawn: list[T] = []  # the order so far; grows, never changes

    def __len__(self) -> int:
        return len(self._x)

    def prefix(self, k: int) -> list[T]:
        """The first min(k, len(items)) items of the order (a list the caller must not modify)."""
        n = len(self._x)
        k = min(k, n)
        if k > len(self.drawn):
            stop = n - k  # positions n - 1 .. stop are drawn; position 0 is what the last step leaves
            if self._next >= max(stop, 1):
                _walk(self._x, self._bits, self._next, max(stop, 1))
            start = n - len(self.drawn)
            self.drawn.extend(reversed(self._x[stop:start]))
            self._next = stop - 1
        return self.drawn if k == len(self.drawn) else self.drawn[:k]


def arrange(items: Sequence[T], filler: T, total: int, rng: random.Random) -> list[T]:
    """A uniformly random arrangement of `items` together with total - len(items) copies of `filler`.

    Every distinct arrangement of that multiset is equally likely, as after `random.shuffle` of the
    whole list, but only len(items) walk steps are taken: a random ordered choice of distinct
    positions (`ShuffledPrefix` over the positions) receives the items in their given order. When
    the filler is a small share, a plain shuffle of the whole list takes fewer steps and is used.
    """
    s = len(items)
    if s > total:
        raise ValueError(f"{s} items do not fit into {total} positions")
    if 4 * s > 3 * total:  # the position walk plus the placing loop cost more than a full walk
        lst = [*items, *[filler] * (total - s)]
        _walk(lst, rng.getrandbits)
        return lst
    lst = [filler] * total
    for p, w in zip(ShuffledPrefix(range(total), rng).prefix(s), items):
        lst[p] = w
    return lst
