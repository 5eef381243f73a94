"""Variable tracking (RULER's `vt`): follow chains of `VAR X = VAR Y` through a noise haystack.

As in RULER every prompt starts with one worked example (noise haystack fitted to 500 tokens,
3-letter variables) and the main prompt follows with 5-letter variables.
"""

from __future__ import annotations

import random
import string
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
from spanlab.tasks.fitting import fit
from spanlab.tasks.haystack import EssayHaystack, RepeatHaystack
from spanlab.tasks.templates import TOKENS_TO_GENERATE, VT_ANSWER_PREFIX, VT_TEMPLATE

ICL_TOKENS = 500  # RULER's budget for the worked example


def make_chains(rng: random.Random, num_chains: int, num_hops: int, name_len: int) -> tuple[list[list[str]], list[list[str]]]:
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < num_chains * (num_hops + 1):
        v = "".join(rng.choices(string.ascii_uppercase, k=name_len))
        if v not in seen:
            seen.add(v)
            names.append(v)
    var_lists, chains = [], []
    for c in range(num_chains):
        vs = names[c * (num_hops + 1):(c + 1) * (num_hops + 1)]
        chain = [f"VAR {vs[0]} = {rng.randrange(10000, 99999)}"]
        # RULER's hop statements keep a trailing space
        chain += [f"VAR {vs[j + 1]} = VAR {vs[j]} " for j in range(num_hops)]
        var_lists.append(vs)
        chains.append(chain)
    return var_lists, chains


def _insert_chains(lines: list[str], chains: list[list[str]], rng: random.Random) -> list[str]:
    # RULER: each chain's statements at sorted random line positions, in chain order
    out = list(lines)
    for chain in chains:
        pos = sorted(rng.sample(range(len(out)), len(chain))) if len(out) >= len(chain) else [0] * len(chain)
        for j, (pi, stmt) in enumerate(zip(pos, chain)):
            out.insert(pi + j, stmt)
    return out


def _interleave(chains: list[list[str]], rng: random.Random) -> list[str]:
    # a random merge that keeps each chain's order (RULER's heap shuffle)
    idx = [0] * len(chains)
    out = []
    while any(i < len(c) for i, c in zip(idx, chains)):
        live = [k for k, c in enumerate(chains) if idx[k] < len(c)]
        k = rng.choice(live)
        out.append(chains[k][idx[k]])
        idx[k] += 1
    return out


def _task_text(context: str, value: str, num_v: int) -> tuple[str, str]:
    return (VT_TEMPLATE.format(context=context.replace(". \n", ".\n"), query=value, num_v=num_v),
            VT_ANSWER_PREFIX.format(query=value, num_v=num_v))


def _task_parts(lines: list[str], sep: str, value: str, num_v: int) -> list[str]:
    """`_task_text`'s task text as parts (see `Draft.parts`), one per haystack line or sentence."""
    if sep == "\n":
        # RULER's context.replace(". \n", ".\n"), line by line: only a line ending in ". " that
        # another line follows loses its trailing space
        lines = [ln[:-1] if ln.endswith(". ") and i < len(lines) - 1 else ln for i, ln in enumerate(lines)]
    head, tail = split_template(VT_TEMPLATE, query=value, num_v=num_v)
    return join_parts(head, lines, sep, tail)


class VariableTracking(Task):
    family = "variable_tracking"
    tokens_to_generate = TOKENS_TO_GENERATE["variable_tracking"]
    defaults = {"num_chains": 1, "num_hops": 4, "haystack": "repeat"}

    def check(self, p: dict[str, Any]) -> dict[str, Any]:
        for k in ("num_chains", "num_hops"):
            as_number(p, k, int, 1)
        hs = {"noise": "repeat", "repeat": "repeat", "essay": "essay"}.get(str(p["haystack"]))
        if hs is None:
            raise SpanlabError(f"vt haystack must be repeat (alias noise) or essay, got {p['haystack']!r}")
        p["haystack"] = hs
        return p

    def _icl_noise_lines(self, ctx: Context) -> int:
        # RULER sizes the worked example once; its size depends only on the tokenizer
        key = ("vt_icl_lines", ctx.params["num_chains"], ctx.params["num_hops"])
        with ctx.counter.lock:
            return self._icl_lines_locked(ctx, key)

    def _icl_lines_locked(self, ctx: Context, key: tuple) -> int:
        if key not in ctx.counter.cache:
            name = ":".join(map(str, key))
            kept = ctx.counter.stored(name)  # sized in an earlier run (diskcache)
            if type(kept) is int and kept >= 0:
                ctx.counter.cache[key] = kept
                return kept
            noise = RepeatHaystack(ctx.counter)
            _, chains = make_chains(random.Random(0), ctx.params["num_chains"], min(10, ctx.params["num_hops"]), 3)

            def render(n: int) -> str:
                body, prefix = _task_text("\n".join(_insert_chains(noise.units(n), chains, random.Random(0))),
                                          "12345", min(10, ctx.params["num_hops"]) + 1)
                return body + prefix

            base = ctx.counter.count(render(0))
            f = fit(render, ctx.counter.count, lambda n: base + noise.cost(n), ICL_TOKENS,
                    noise.n_max(ICL_TOKENS), what="the vt worked example")
            ctx.counter.cache[key] = f.n
            ctx.counter.store(name, f.n)
        return ctx.counter.cache[key]

    def draft(self, ctx: Context, index: int, rng: random.Random) -> tuple[Draft, int]:
        p = ctx.params
        icl_hops = min(10, p["num_hops"])
        icl_vars, icl_chains = make_chains(rng, p["num_chains"], icl_hops, 3)
        icl_value = icl_chains[0][0].split("=")[-1].strip()
        icl = _task_parts(_insert_chains(RepeatHaystack(ctx.counter).units(self._icl_noise_lines(ctx)), icl_chains, rng),
                          "\n", icl_value, icl_hops + 1)
        icl[-1] += VT_ANSWER_PREFIX.format(query=icl_value, num_v=icl_hops + 1) + " " + " ".join(icl_vars[0]) + "\n"

        var_lists, chains = make_chains(rng, p["num_chains"], p["num_hops"], 5)
        value = chains[0][0].split("=")[-1].strip()
        layout_seed = rng.getrandbits(64)
        hs = EssayHaystack(ctx.counter) if p["haystack"] == "essay" else RepeatHaystack(ctx.counter)
        answer_prefix = VT_ANSWER_PREFIX.format(query=value, num_v=p["num_hops"] + 1)

        def render(n: int) -> Draft:
            lay = random.Random(layout_seed)
            if p["haystack"] == "essay":
                stmts = _interleave(chains, lay)
                sents = hs.units(n)
                slots = sorted(int(n * lay.randrange(0, 101) / 100) for _ in stmts)
                items: list[str] = []
                k = 0
                for i in range(n + 1):
                    while k < len(stmts) and slots[k] == i:
                        items.append(stmts[k].strip() + ".")
                        k += 1
                    if i < n:
                        items.append(sents[i])
                body = _task_parts(items, " ", value, p["num_hops"] + 1)
            else:
                body = _task_parts(_insert_chains(hs.units(n), chains, lay), "\n", value, p["num_hops"] + 1)
            parts = [*icl[:-1], icl[-1] + body[0], *body[1:]]
            return Draft("", answer_prefix, list(var_lists[0]), parts=ctx.template.wrap_parts(parts))

        base = ctx.count(render(0))
        return fit_draft(ctx, render, lambda n: base + hs.cost(n), hs.n_max(ctx.limit))
