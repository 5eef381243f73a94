"""The unit every part of spanlab exchanges: one generated test prompt with its gold answers.

A `Sample` serialises to one JSONL line that RULER's own prediction scripts can read
(`index, input, outputs, length, answer_prefix`) plus spanlab's fields.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
from dataclasses import asdict, dataclass, field
from itertools import compress, repeat
from operator import is_
from typing import Any

# stands in for the prompt while the rest of a sample is encoded (see `Sample.with_encoded_input`)
_SENTINEL = "\x00spanlab-input\x00"
_SENTINEL_JSON = json.dumps(_SENTINEL)
_ENCODED: dict[str, str] = {}  # part -> its JSON encoding without quotes
_encode = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) uses for a str (C)
_MOSTLY_NEW = [False]  # did the last prompt bring mostly new parts?


def encode_parts(parts: list[str], text: str) -> str:
    """json.dumps(text, ensure_ascii=False) for text = "".join(parts), from cached encodings of
    the parts where most are known: JSON escapes character by character, so the encoding of a
    concatenation is the concatenation of the encodings. Prompts repeat their parts (noise lines,
    essay sentences); where most parts are new (fresh distractor lines) the text is escaped whole."""
    enc = _ENCODED
    if len(enc) > 1 << 16:  # bound memory on endless fresh parts
        enc = {}
        globals()["_ENCODED"] = enc
    out = list(map(enc.get, parts))
    new = out.count(None)
    mostly_new = new > len(parts) // 4
    skip, _MOSTLY_NEW[0] = mostly_new and _MOSTLY_NEW[0], mostly_new
    if skip:  # twice in a row mostly new parts: these prompts do not repeat theirs, skip the cache
        return _encode(text)
    if new:  # encode the new parts, then look all up again (both in C)
        for p in set(compress(parts, map(is_, out, repeat(None)))):
            enc[p] = _encode(p)[1:-1]
        out = list(map(enc.__getitem__, parts))
    return '"' + "".join(out) + '"'


@dataclass
class Sample:
    index: int
    task: str
    input: str
    outputs: list[str]
    answer_prefix: str
    length: int  # prompt tokens (template + answer prefix) + tokens_to_generate, as RULER counts
    max_length: int
    tokens_to_generate: int
    depth: float | None = None  # percent of the haystack where the (first) needle sits
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            self.id = self.content_hash()

    @classmethod
    def with_encoded_input(cls, input_json: str, **fields: Any) -> Sample:
        """A Sample whose `input` is already JSON-encoded as `input_json` (what json.dumps makes of
        it): the id and `to_json` splice that text in instead of escaping the whole prompt again.
        Escaping 16K-token prompts twice per sample (id and file line) was a fifth of a vt run's
        CPU; a task encodes its prompt from cached encodings of its repeated parts instead."""
        s = cls.__new__(cls)
        s._input_json = (fields["input"], input_json)
        s.__init__(**fields)
        return s

    def _dumps(self, obj: dict[str, Any], **kw: Any) -> str:
        """json.dumps(obj, ensure_ascii=False, **kw), with the prompt's encoding spliced in where
        it is known (and `input` is still the string it encodes)."""
        known = getattr(self, "_input_json", None)
        if known is not None and known[0] is self.input and obj.get("input") is self.input:
            text = json.dumps({**obj, "input": _SENTINEL}, ensure_ascii=False, **kw)
            if text.count(_SENTINEL_JSON) == 1:  # the marker is nowhere else: splice
                return text.replace(_SENTINEL_JSON, known[1])
        return json.dumps(obj, ensure_ascii=False, **kw)

    @property
    def prompt(self) -> str:
        """What the model sees: the templated input followed by the answer prefix."""
        return self.input + self.answer_prefix

    def content_hash(self) -> str:
        # Hash only what defines the sample, so the id survives re-generation and field reordering.
        key = {
            "task": self.task,
            "input": self.input,
            "outputs": self.outputs,
            "answer_prefix": self.answer_prefix,
            "max_length": self.max_length,
            "tokens_to_generate": self.tokens_to_generate,
        }
        blob = self._dumps(key, sort_keys=True).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return self._dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sample:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def read_jsonl(path: str) -> list[Sample]:
    """Read samples written by `spanlab generate` (or RULER-style JSONL carrying our fields)."""
    with open(path, encoding="utf-8") as f:
        return [Sample.from_dict(json.loads(line)) for line in f if line.strip()]
