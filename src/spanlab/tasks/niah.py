"""Needle-in-a-haystack (RULER's niah_* tasks) with depth, haystack and key/value format control.

RULER semantics kept: needles "One of the special magic {values} for {key} is: {value}.", keys drawn
before values, needles shuffled, multi-key haystacks, query sampling, and the singular rewording when
exactly one value is asked. Additions: `depth` (percent) pins the target needle (the first value of
the first queried key) at that relative position; a list of depths pins several needles in that
order: the gold answers in `outputs` order first, then the distractor needles.
"""

from __future__ import annotations

import random
from typing import Any

from spanlab.errors import SpanlabError
from spanlab.tasks.base import (
    Context,
    Draft,
    Task,
    as_number,
    fit_draft,
    join_parts,
    split_template,
)
from spanlab.tasks.fitting import Fit, top_up
from spanlab.tasks.haystack import EssayHaystack, GeneratedHaystack, RepeatHaystack
from spanlab.tasks.shuffle import fast_shuffle
from spanlab.tasks.templates import (
    NIAH_ANSWER_PREFIX,
    NIAH_TEMPLATE,
    TOKENS_TO_GENERATE,
    singularize,
)
from spanlab.tasks.words import KEY_TYPES, distinct_values, value_drawer
from spanlab.units import parse_depth

NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
_HAYSTACK_ALIASES = {"noise": "repeat", "repeat": "repeat", "essay": "essay", "needle": "needle"}
# RULER's candidate depths: 40 evenly spaced percentages, rounded.
RULER_DEPTHS = [round(100 * i / 39) for i in range(40)]


def _depths(value: Any) -> list[float] | None:
    if value is None:
        return None
    vals = list(value) if isinstance(value, (list, tuple)) else [value]
    return [parse_depth(v) for v in vals] or None


class NIAH(Task):
    family = "niah"
    tokens_to_generate = TOKENS_TO_GENERATE["niah"]
    defaults = {"haystack": "essay", "key_type": "words", "value_type": "numbers",
                "num_keys": 1, "num_values": 1, "num_queries": 1, "depth": None}

    def check(self, p: dict[str, Any]) -> dict[str, Any]:
        hs = _HAYSTACK_ALIASES.get(str(p["haystack"]))
        if hs is None:
            raise SpanlabError(f"unknown haystack {p['haystack']!r}; choose essay, repeat (alias noise) or needle")
        p["haystack"] = hs
        for k in ("key_type", "value_type"):
            if p[k] not in KEY_TYPES:
                raise SpanlabError(f"unknown {k} {p[k]!r}; choose one of: {', '.join(KEY_TYPES)}")
        for k in ("num_keys", "num_values", "num_queries"):
            as_number(p, k, int, 1)
        d = _depths(p["depth"])
        p["depth"] = None if d is None else (d[0] if len(d) == 1 and not isinstance(p["depth"], (list, tuple)) else d)
        if d is not None and len(d) > max(p["num_keys"], p["num_queries"]) * p["num_values"]:
            raise SpanlabError(f"got {len(d)} depths but only {max(p['num_keys'], p['num_queries']) * p['num_values']} "
                               "needles; give at most one depth per needle")
        return p

    def draft(self, ctx: Context, index: int, rng: random.Random) -> tuple[Draft, int]:
        p = ctx.params
        num_k = max(p["num_keys"], p["num_queries"])  # RULER: every query needs its own key
        type_v = p["value_type"]
        keys = distinct_values(p["key_type"], num_k, rng)
        flat = distinct_values(type_v, num_k * p["num_values"], rng)
        values = [flat[i * p["num_values"]:(i + 1) * p["num_values"]] for i in range(num_k)]
        needles = [(i, j, NEEDLE.format(type_needle_v=type_v, key=keys[i], value=values[i][j]))
                   for i in range(num_k) for j in range(p["num_values"])]
        fast_shuffle(needles, rng)
        queried = rng.sample(range(num_k), p["num_queries"])
        answers = [v for i in queried for v in values[i]]
        # Target first, so `depth` (and a depth list) pins the needle that is asked about.
        rank = {(i, j): r for r, (i, j) in enumerate((i, j) for i in queried for j in range(p["num_values"]))}
        order = sorted(range(len(needles)), key=lambda t: (rank.get(needles[t][:2], len(rank)), t))
        ruler_depths = (rng.sample(RULER_DEPTHS, len(needles)) if len(needles) <= len(RULER_DEPTHS)
                        else [rng.choice(RULER_DEPTHS) for _ in needles])
        asked = _depths(p["depth"]) or []
        depth_of = {t: (asked[r] if r < len(asked) else None) for r, t in enumerate(order)}
        layout_seed = rng.getrandbits(64)

        query = queries_text([keys[i] for i in queried])
        task_t, prefix_t = NIAH_TEMPLATE, NIAH_ANSWER_PREFIX
        type_shown = type_v
        if p["num_queries"] * p["num_values"] == 1:
            task_t, prefix_t, type_shown = singularize(task_t), singularize(prefix_t), type_v[:-1]
        answer_prefix = prefix_t.format(type_needle_v=type_shown, query=query)

        hs = self._haystack(ctx, p, keys, layout_seed)
        target = order[0]
        head, tail = split_template(task_t, type_needle_v=type_shown, query=query)

        def render(n: int) -> Draft:
            lay = random.Random(layout_seed)
            units = hs.units(n)
            if p["haystack"] == "essay":
                # sentence boundaries at the requested depth, else at RULER's sampled depth
                slots = {t: int(n * ((depth_of[t] if depth_of[t] is not None else ruler_depths[t]) / 100))
                         for t in range(len(needles))}
            else:
                free = lay.sample(range(n + 1), len(needles)) if n + 1 >= len(needles) else [0] * len(needles)
                slots = {t: (int(n * depth_of[t] / 100) if depth_of[t] is not None else free[t])
                         for t in range(len(needles))}
            at: dict[int, list[int]] = {}
            for t in sorted(slots, key=lambda t: (slots[t], t)):
                at.setdefault(slots[t], []).append(t)
            parts: list[str] = []
            for i in range(n + 1):
                parts.extend(needles[t][2] for t in at.get(i, ()))
                if i < n:
                    parts.append(units[i])
            if depth_of[target] is not None:
                depth = depth_of[target]
            elif p["haystack"] == "essay":
                depth = float(ruler_depths[target])
            else:
                depth = round(100 * slots[target] / n, 2) if n else 0.0
            return Draft("", answer_prefix, answers, depth, n=n,
                         parts=ctx.template.wrap_parts(join_parts(head, parts, hs.sep, tail)))

        base = ctx.count(render(0))
        if isinstance(hs, GeneratedHaystack):
            hs.reserve(ctx.limit - base)
        d, t = fit_draft(ctx, render, lambda n: base + hs.cost(n), hs.n_max(ctx.limit))
        if isinstance(hs, GeneratedHaystack):
            f = top_up(Fit(d.n, d, t), lambda r: r.n, render, ctx.count, ctx.limit, hs.unit_cost, hs.promote)
            d, t = f.result, f.tokens
        return d, t

    @staticmethod
    def _haystack(ctx: Context, p: dict[str, Any], keys: list[str], layout_seed: int):
        if p["haystack"] == "essay":
            return EssayHaystack(ctx.counter)
        if p["haystack"] == "repeat":
            return RepeatHaystack(ctx.counter)
        # distractor needles of the same format; never reuse a real key
        gen = random.Random(layout_seed ^ 0x5A5A5A5A)
        taken = set(keys)
        key, value = value_drawer(p["key_type"], gen), value_drawer(p["value_type"], gen)
        # NEEDLE.format(...) as fields: "One of ... for ", key, " is: ", value, "."
        pre, rest = NEEDLE.format(type_needle_v=p["value_type"], key="\x00", value="\x01").split("\x00")
        mid, post = rest.split("\x01")

        def line() -> tuple[str, str]:
            while True:
                k = key()
                if k not in taken:
                    return k, value()

        return GeneratedHaystack(ctx.counter, line, fields=(pre, mid, post))


def queries_text(queries: list[str]) -> str:
    """RULER's join: "a", or "a, b, and c"."""
    return queries[0] if len(queries) == 1 else ", ".join(queries[:-1]) + ", and " + queries[-1]
