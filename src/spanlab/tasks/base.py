"""What every task shares: the generation context, per-sample RNGs, and turning a fitted draft into a Sample."""

from __future__ import annotations

import hashlib
import json.encoder
import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from spanlab.errors import SpanlabError
from spanlab.tasks.fitting import fit
from spanlab.tasks.sample import Sample, encode_parts
from spanlab.tasks.templates import ModelTemplate
from spanlab.tasks.tokenizer import TokenCounter, tokenizer_name


@dataclass
class Draft:
    """A rendered prompt before it becomes a Sample. `input` already carries the model template.

    `parts`, when given, is the input cut into pieces (haystack units with their separators), and
    `input` is their concatenation: counting tokens then sums cached per-piece counts (see
    `TokenCounter.count_parts`) instead of tokenising the whole prompt again.
    """

    input: str
    answer_prefix: str
    outputs: list[str]
    depth: float | None = None
    n: int = 0  # haystack units used (sentences, lines, words, documents)
    parts: list[str] | None = None

    def __post_init__(self) -> None:
        if self.parts is None:
            self.parts = [self.input]
        elif not self.input:
            self.input = "".join(self.parts)


class AdditivityMismatch(Exception):
    """A first-sample check found summed piece counts differing from a full tokenisation."""


class NotAdditive(Exception):
    """A closed-form count (`fit_shuffled`'s `count_n`) met a unit it cannot sum; count prompts instead."""


def join_parts(head: str, items: list[str], sep: str, tail: str) -> list[str]:
    """Parts of head + sep.join(items) + tail, cut before every separator.

    A lone separator ending `head` moves onto the first item so that cut, too, falls before it.
    """
    if not items:
        return [head + tail]
    out = [sep + x for x in items] if sep else list(items)  # fwe's words carry their own spaces
    if len(head) >= 2 and head[-1] in " \n" and not head[-2].isspace():
        out[0] = head[-1] + items[0]
        return [head[:-1], *out, tail]
    out[0] = head + items[0]
    return [*out, tail]


def split_template(template: str, **fields: str) -> tuple[str, str]:
    """(text before, text after) `{context}` in a formatted task template."""
    head, tail = template.format(context="\x00", **fields).split("\x00")
    return head, tail


@dataclass
class Context:
    """Everything fixed for one (task, length) batch of samples."""

    task: str
    max_length: int
    tokens_to_generate: int
    counter: TokenCounter
    template: ModelTemplate
    params: dict[str, Any]
    seed: int
    shared: dict[str, Any] = field(default_factory=dict)  # per-batch precomputations
    verify: bool = False  # check additive counts against full tokenisation (first sample of a batch)

    @property
    def limit(self) -> int:
        """Prompt tokens allowed: RULER's max_seq_length minus tokens_to_generate."""
        return self.max_length - self.tokens_to_generate

    def count(self, d: Draft) -> int:
        if not self.counter.seps:
            return self.counter.count(d.input + d.answer_prefix)
        n = self.counter.count_parts([*d.parts, d.answer_prefix])
        if self.verify and n != self.counter.count(d.input + d.answer_prefix):
            self.counter.disable_additive()
            raise AdditivityMismatch(self.task)
        return n


def as_number(p: dict[str, Any], key: str, kind: type = int, minimum: float | None = None) -> None:
    """Coerce p[key] (possibly a CLI string) to int/float in place, or say what was wrong."""
    try:
        p[key] = kind(p[key])
    except (TypeError, ValueError):
        raise SpanlabError(f"{key} must be a{'n integer' if kind is int else ' number'}, got {p[key]!r}") from None
    if minimum is not None and p[key] < minimum:
        raise SpanlabError(f"{key} must be at least {minimum}, got {p[key]}")


def sample_rng(seed: int, task: str, max_length: int, index: int) -> random.Random:
    """An RNG that depends only on (seed, task, length, index): sample i never changes when more
    samples are asked for, and a depth sweep reuses the same needles at every depth."""
    h = hashlib.sha256(f"spanlab|{seed}|{task}|{max_length}|{index}".encode()).digest()
    return random.Random(int.from_bytes(h[:16], "big"))


def fit_draft(ctx: Context, render: Callable[[int], Draft], cost: Callable[[int], float], n_max: int) -> tuple[Draft, int]:
    f = fit(render, ctx.count, cost, ctx.limit, n_max,
            what=f"{ctx.task} with template {ctx.template.name!r} at max_length={ctx.max_length}")
    return f.result, f.tokens


def fit_shuffled(ctx: Context, render: Callable[[int, bool], Draft], cost: Callable[[int], float],
                 n_max: int, count_n: Callable[[int], int] | None = None) -> tuple[Draft, int]:
    """`fit_draft` for prompts whose units are shuffled (cwe, fwe): `render(n, shuffle)`.

    With additive counts and every cut safe, a prompt's count is a sum over its parts, so it does
    not depend on their order: the search renders unshuffled prompts (shuffling thousands of words
    costs more than counting them) and only the chosen size is shuffled. If the shuffled prompt
    counts differently (some cut was unsafe), the search is redone on shuffled prompts.

    `count_n(n)`, where the task can give it, is that sum in closed form: the exact count of
    `render(n, ...)` computed from per-unit counts without building the prompt (the task passes it
    only after `TokenCounter.additive_units` confirmed every cut safe). The search then renders
    nothing but the final prompt; it makes the same decisions as with rendered prompts, since it
    sees the same `cost` and the same counts. Not used on a batch's first sample, which is checked
    against a full tokenisation.
    """
    if ctx.counter.seps and not ctx.verify:
        if count_n is not None:
            try:
                f = fit(lambda n: n, count_n, cost, ctx.limit, n_max,
                        what=f"{ctx.task} with template {ctx.template.name!r} at max_length={ctx.max_length}")
                return render(f.n, True), f.tokens
            except NotAdditive:
                pass
        d, t = fit_draft(ctx, lambda n: render(n, False), cost, n_max)
        final = render(d.n, True)
        if ctx.count(final) == t:
            return final, t
    return fit_draft(ctx, lambda n: render(n, True), cost, n_max)


class Task(ABC):
    """A RULER task: name, family, tokens_to_generate and default parameters, plus `draft()`."""

    name: str = ""
    family: str = ""
    tokens_to_generate: int = 0
    defaults: dict[str, Any] = {}

    def __init__(self, name: str, **defaults: Any):
        self.name = name
        self.defaults = {**type(self).defaults, **defaults}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.defaults})"

    def resolve_params(self, params: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise SpanlabError(f"task {self.name} does not take {', '.join(unknown)}; "
                               f"it takes: {', '.join(sorted(self.defaults))}")
        p = {**self.defaults, **{k: v for k, v in params.items() if v is not None}}
        return self.check(p)

    def check(self, p: dict[str, Any]) -> dict[str, Any]:
        return p

    def prepare(self, ctx: Context) -> None:
        """Per-batch precomputation (token tables), stored in ctx.shared."""

    @abstractmethod
    def draft(self, ctx: Context, index: int, rng: random.Random) -> tuple[Draft, int]:
        """Build sample `index` fitted to ctx.limit; return it with its exact prompt token count."""

    def sample(self, ctx: Context, index: int) -> Sample:
        d, prompt_tokens = self.draft(ctx, index, sample_rng(ctx.seed, self.name, ctx.max_length, index))
        # parts of a few words (cwe, fwe lists) cost more to look up than to escape (~500 vs ~30
        # instructions per part and byte): encode those prompts whole
        long_parts = d.parts and len(d.parts) > 1 and len(d.input) > 40 * len(d.parts)
        return Sample.with_encoded_input(
            encode_parts(d.parts, d.input) if long_parts else json.encoder.encode_basestring(d.input),
            index=index, task=self.name, input=d.input, outputs=list(d.outputs), answer_prefix=d.answer_prefix,
            length=prompt_tokens + ctx.tokens_to_generate, max_length=ctx.max_length,
            tokens_to_generate=ctx.tokens_to_generate, depth=d.depth,
            params={**ctx.params, "template": ctx.template.name, "tokenizer": tokenizer_name(ctx.counter.tokenizer)}, seed=ctx.seed,
        )
