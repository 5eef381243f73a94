"""Common words extraction (RULER's `cwe`): name the 10 words repeated most often in a numbered list.

RULER's layout: one worked example (40 words: common x10, others x3; below 4K tokens 20 words x3/x1
and the main list x6/x1), written with the full model template, then the main list. The knob the
length fit turns is the number of distinct words; its token cost is computed from per-word and
per-number token counts, so no intermediate prompt is tokenised.
"""

from __future__ import annotations

import hashlib
import random
from itertools import accumulate, islice, pairwise
from typing import Any

from spanlab.errors import SpanlabError
from spanlab.tasks.base import (
    Context,
    Draft,
    NotAdditive,
    Task,
    as_number,
    fit_shuffled,
    split_template,
)
from spanlab.tasks.shuffle import ShuffledPrefix, fast_shuffle
from spanlab.tasks.templates import CWE_ANSWER_PREFIX, CWE_TEMPLATE, TOKENS_TO_GENERATE
from spanlab.tasks.words import adj_noun, num_adj_noun, single_words

_NUMBERS: list[str] = []


def _numbers(m: int) -> list[str]:
    """[" 1.", " 2.", ..., " m."], built once and grown on demand."""
    if len(_NUMBERS) < m:
        _NUMBERS.extend(f" {i}." for i in range(len(_NUMBERS) + 1, max(m, 2 * len(_NUMBERS)) + 1))
    return _NUMBERS[:m]


def _list_parts(lead: str, spaced: list[str]) -> list[str]:
    """lead + RULER's numbered list "1. w1 2. w2 ..." as parts cut before every space: lead + "1.",
    " w1", " 2.", " w2", ... for spaced = [" w1", " w2", ...] (none: [lead])."""
    if not spaced:
        return [lead]
    parts: list[str] = [""] * (2 * len(spaced))
    parts[0::2] = _numbers(len(spaced))
    parts[1::2] = spaced
    parts[0] = lead + "1."
    return parts


class CommonWords(Task):
    family = "common_words_extraction"
    tokens_to_generate = TOKENS_TO_GENERATE["common_words_extraction"]
    defaults = {"freq_cw": 30, "freq_ucw": 3, "num_cw": 10, "num_fewshot": 1}

    def check(self, p: dict[str, Any]) -> dict[str, Any]:
        for k in self.defaults:
            as_number(p, k, int, 0 if k == "num_fewshot" else 1)
        return p

    def _word_costs(self, ctx: Context) -> dict[str, int]:
        key = "cwe_word_costs"
        with ctx.counter.lock:
            if key not in ctx.counter.cache:
                words = single_words()
                # counted once per tokenizer and kept between runs (diskcache), named by the word list
                name = "cwe_word_costs:" + hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()[:32]
                costs = ctx.counter.stored(name)
                if isinstance(costs, list) and len(costs) == len(words) and set(map(type, costs)) == {int}:
                    # the worked example's words are counted as text: from these, not the model
                    # (~35 fresh words per sample, a third of a 4K sample's time)
                    ctx.counter.seed_word_counts(words, costs)
                else:
                    costs = ctx.counter.word_counts(words)
                    ctx.counter.store(name, costs)
                ctx.counter.cache[key] = dict(zip(words, costs))
        return ctx.counter.cache[key]  # shared: a sample that adds extra words copies it first

    def _pool_additive(self, ctx: Context) -> bool:
        """Whether every word of the pool is a safe unit (see `TokenCounter.additive_units`); once per batch."""
        ok = ctx.shared.get("cwe_pool_additive")
        if ok is None:
            ok = ctx.shared["cwe_pool_additive"] = ctx.counter.additive_units("x", [" " + w for w in single_words()], " x")
        return ok

    def _number_costs(self, ctx: Context, upto: int) -> list[int]:
        # prefix sums of the tokens of " 1.", " 2.", ...: the numbering's share of the list
        key, name = "cwe_number_prefix", "cwe_number_costs"
        pre = ctx.counter.cache.get(key)
        if pre is None:
            with ctx.counter.lock:
                pre = ctx.counter.cache.get(key)
                if pre is None:
                    pre = [0]
                    kept = ctx.counter.stored(name)  # the labels counted in earlier runs (diskcache)
                    if isinstance(kept, list) and set(map(type, kept)) <= {int}:
                        pre = list(accumulate(kept, initial=0))
                    ctx.counter.cache[key] = pre
        seeded = ctx.counter.cache.get("cwe_number_seeded", 1)
        if seeded <= upto < len(pre):
            # a full count of a list (a batch's first sample is checked against one) meets labels
            # "2." .. as words after a space: their stored counts spare the BPE model ~1 call each
            stop = min(len(pre), max(upto + 1, 2 * seeded))
            ctx.counter.seed_word_counts([f"{i}." for i in range(seeded, stop)],
                                         [b - a for a, b in pairwise(pre[seeded - 1:stop])])
            ctx.counter.cache["cwe_number_seeded"] = stop
        if len(pre) <= upto:
            with ctx.counter.lock:  # samples run in threads; extend the shared table once
                start = len(pre)
                if start <= upto:
                    stop = max(upto + 1, 2 * start)
                    for c in ctx.counter.segment_counts([f" {i}." for i in range(start, stop)]):
                        pre.append(pre[-1] + c)
                    ctx.counter.store(name, [b - a for a, b in pairwise(pre)])
        return pre

    def draft(self, ctx: Context, index: int, rng: random.Random) -> tuple[Draft, int]:
        p = ctx.params
        pool = single_words()
        small = ctx.max_length < 4096
        freq_cw, freq_ucw = (6, 1) if small else (p["freq_cw"], p["freq_ucw"])
        top, bottom = split_template(CWE_TEMPLATE)
        lead = ctx.template.prefix + top  # the text before a list's "1."
        # The worked examples, joined by "\n", as parts cut before every space as the main list is
        # (see `_list_parts`): their labels and words are counted from cached segments, where the
        # examples' text as one part was tokenised anew for every sample, twice.
        head: list[str] = []
        for _ in range(p["num_fewshot"]):
            n_ex, f_c, f_u = (20, 3, 1) if small else (40, 10, 3)
            ex = rng.sample(pool, n_ex)
            lst = ex[:p["num_cw"]] * f_c + ex[p["num_cw"]:] * f_u
            fast_shuffle(lst, rng)
            shot = [*_list_parts(lead, [" " + w for w in lst]),
                    *_list_parts(bottom + ctx.template.suffix + CWE_ANSWER_PREFIX + " ",
                                 [" " + w for w in ex[:p["num_cw"]]])]
            if head:
                shot[0] = "\n" + shot[0]
            head += shot
        lead = ("\n" if head else "") + lead

        extra_seed = rng.getrandbits(64)
        layout_seed = rng.getrandbits(64)
        # The sample's distinct words are a prefix of a random order of the pool (RULER:
        # random.sample(pool, n)), drawn only as far as the fit reads it: ~110 words at 4K, ~800 at
        # 16K, where a whole-pool shuffle walked 8,166 per sample. Nothing else draws from rng now.
        order = ShuffledPrefix(pool, rng)
        costs = self._word_costs(ctx)
        extra: list[str] = []  # beyond the single-word list: adjective-noun pairs, as RULER's big list
        additive = [not ctx.verify and self._pool_additive(ctx)]  # see count_n below
        gen = random.Random(extra_seed)

        def words(n: int) -> list[str]:
            nonlocal costs
            if len(order) + len(extra) < n:
                if not extra:
                    costs = dict(costs)  # this sample's own table (the shared one stays as it is)
                new: list[str] = []
                while len(order) + len(extra) + len(new) < max(n, len(order) + len(extra) + 256):
                    w = adj_noun(gen.randrange(num_adj_noun()))
                    if w not in costs:
                        costs[w] = -1  # reserve: no duplicates within this batch
                        new.append(w)
                for w, c in zip(new, ctx.counter.word_counts(new)):
                    costs[w] = c
                extra.extend(new)
                if not ctx.counter.additive_units("x", [" " + w for w in new], " x"):
                    additive[0] = False
            if n <= len(order):
                return order.prefix(n)
            return order.prefix(len(order)) + extra[:n - len(order)]

        wprefix = [0]

        def word_prefix(n: int) -> int:
            if n >= len(wprefix):
                ws = words(n)  # draws extra words if n needs them
                sums = accumulate(map(costs.__getitem__, islice(ws, len(wprefix) - 1, n)), initial=wprefix[-1])  # in C
                next(sums)  # the initial value, already there
                wprefix.extend(sums)
            return wprefix[n]

        ncw = p["num_cw"]
        answer_prefix = CWE_ANSWER_PREFIX

        def entries(n: int) -> int:
            return min(n, ncw) * freq_cw + max(0, n - ncw) * freq_ucw

        def render(n: int, shuffle: bool = True) -> Draft:
            ws = words(n)
            spaced = [" " + w for w in ws]
            lst = spaced[:ncw] * freq_cw + spaced[ncw:] * freq_ucw
            if shuffle:
                fast_shuffle(lst, random.Random(layout_seed))
            if not lst:
                return Draft("", answer_prefix, ws[:ncw], n=n, parts=[*head, lead + bottom + ctx.template.suffix])
            parts = [*head, *_list_parts(lead, lst), bottom + ctx.template.suffix]
            return Draft("", answer_prefix, ws[:ncw], n=n, parts=parts)

        base = ctx.count(render(0))

        def cost(n: int) -> int:
            e = entries(n)
            common = word_prefix(min(n, ncw))
            return base + self._number_costs(ctx, e)[e] + common * freq_cw + (word_prefix(n) - common) * freq_ucw

        count_n = None
        if additive[0]:
            first = render(1, False)
            if ctx.counter.additive_units(lead + "1.", [" 2."], first.parts[-1]):
                # every cut safe: a list's count is its frame plus the labels' and the words' counts,
                # which `cost` sums exactly (from its own base), so the two differ by a constant
                delta = ctx.count(first) - cost(1)

                def count_n(n: int) -> int:
                    c = cost(n)  # draws extra words if n needs them; they may turn `additive` off
                    if not additive[0]:
                        raise NotAdditive("an extra cwe word has an unsafe cut")
                    return c + delta if n else base

        n_max = ctx.limit // max(1, freq_ucw) + ncw
        d, t = fit_shuffled(ctx, render, cost, n_max, count_n)
        if len(d.outputs) < ncw:
            raise SpanlabError(f"max_length={ctx.max_length} leaves no room for {ncw} common words in cwe; raise it")
        return d, t
