"""The tasks' shuffles: `fast_shuffle` must reproduce random.Random.shuffle exactly (NIAH and QA
samples stay byte-identical); cwe's and fwe's lazier draws must be deterministic, draw exactly the
asked-for items, and not depend on how far or in how many steps a sample reads them."""

import random
import string
from collections import Counter

import pytest

from spanlab.tasks.freq_words import coded_words
from spanlab.tasks.shuffle import ShuffledPrefix, arrange, fast_shuffle


@pytest.mark.parametrize("n", [*range(0, 40), 63, 64, 65, 255, 256, 257, 1000, 4097])
def test_same_order_and_rng_state_as_random_shuffle(n: int) -> None:
    for seed in (0, 1, 42):
        want, got = list(range(n)), list(range(n))
        a, b = random.Random(seed), random.Random(seed)
        a.shuffle(want)
        fast_shuffle(got, b)
        assert got == want
        assert a.getrandbits(64) == b.getrandbits(64)  # later draws of the sample are unchanged


def test_rng_subclass_uses_its_own_shuffle() -> None:
    class Fixed(random.Random):
        def shuffle(self, x):  # type: ignore[override]
            x.reverse()

    xs = [1, 2, 3]
    fast_shuffle(xs, Fixed(0))
    assert xs == [3, 2, 1]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 64, 65, 1000, 8166])
def test_shuffled_prefix_does_not_depend_on_how_it_is_read(n: int) -> None:
    # cwe's fit reads its word order at many sizes, growing and shrinking: the words a sample ends
    # with must be the same as if it had asked for its final size at once
    whole = ShuffledPrefix(range(n), random.Random(n)).prefix(n)
    assert sorted(whole) == list(range(n))  # a permutation: every item exactly once
    for k in sorted({0, 1, n // 3, n - 1, n, n + 5}):
        assert ShuffledPrefix(range(n), random.Random(n)).prefix(k) == whole[:max(0, min(k, n))]
    stepwise = ShuffledPrefix(range(n), random.Random(n))
    for k in (5, 2, 40, 39, 700, n // 2, 3, n):
        assert stepwise.prefix(k) == whole[:min(k, n)]
    assert len(stepwise) == n


def test_shuffled_prefix_is_the_reversed_shuffle_walk() -> None:
    # the same Fisher-Yates walk as fast_shuffle (so as random.shuffle), read from the end
    xs = list(range(500))
    random.Random(3).shuffle(xs)
    assert ShuffledPrefix(range(500), random.Random(3)).prefix(500) == xs[::-1]


def test_shuffled_prefix_leaves_its_items_alone() -> None:
    items = ("a", "b", "c", "d")
    got = ShuffledPrefix(items, random.Random(0)).prefix(4)
    assert items == ("a", "b", "c", "d") and sorted(got) == list(items)


@pytest.mark.parametrize("items,total", [([], 0), ([], 5), (["a"], 1), (["a", "b", "b"], 3),
                                         (["a", "b", "b", "c"], 10), (list("abcdefgh") * 50, 1000),
                                         (list("abcdefgh") * 100, 900)])  # the last: filler share < 1/4
def test_arrange_keeps_the_multiset_and_is_deterministic(items, total) -> None:
    got = arrange(items, "...", total, random.Random(5))
    assert len(got) == total
    assert Counter(got) == Counter(items) + Counter({"...": total - len(items)})
    assert got == arrange(items, "...", total, random.Random(5))
    if len(items) > 20:
        assert got != arrange(items, "...", total, random.Random(6))


def test_arrange_reaches_every_arrangement() -> None:
    # two items among two fillers: all 12 orders occur (each about 1/12 of the time)
    seen = Counter("".join(arrange("ab", ".", 4, random.Random(s))) for s in range(1200))
    assert len(seen) == 12 and min(seen.values()) > 50


def test_arrange_rejects_more_items_than_positions() -> None:
    with pytest.raises(ValueError):
        arrange(["a", "b"], ".", 1, random.Random(0))


@pytest.mark.parametrize("count,wordlen", [(0, 6), (1, 6), (80, 6), (600, 6), (500, 2), (26, 1)])
def test_coded_words_exact_count_distinct_lowercase(count, wordlen) -> None:
    # two-letter words collide often and 26 one-letter words are all there are: the count must
    # still come out exact
    words = coded_words(random.Random(count), count, wordlen)
    assert len(words) == count == len(set(words))
    assert all(len(w) == wordlen and set(w) <= set(string.ascii_lowercase) for w in words)
    assert words == coded_words(random.Random(count), count, wordlen)
    if count > 10:
        assert words != coded_words(random.Random(count + 1), count, wordlen)
