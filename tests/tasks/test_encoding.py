"""Shortcuts in writing samples and counting distractor lines must give exactly what the plain way
gives: the JSON text (and so the id) of a sample, and the token count of every line."""

from __future__ import annotations

import json
import random

import pytest

from spanlab.tasks.haystack import GeneratedHaystack
from spanlab.tasks.sample import Sample, encode_parts
from spanlab.tasks.tokenizer import TokenCounter, load_builtin_raw

NASTY = ['"quoted"', "back\\slash", "tab\there", "new\nline", "\x00\x01\x1f", "caf\u00e9 \u2014 \U0001f600",
         "\ud800 lone surrogate", "\u2028\u2029", "plain words", "", " ", "\\u0000spanlab-input\\u0000", "/</>"]


def test_encode_parts_equals_json_dumps():
    rng = random.Random(0)
    for _ in range(300):
        parts = [rng.choice(NASTY) for _ in range(rng.randint(1, 30))]
        text = "".join(parts)
        assert encode_parts(parts, text) == json.dumps(text, ensure_ascii=False)
        assert encode_parts(parts, text) == json.dumps(text, ensure_ascii=False)  # from the cache


def _fields(text: str, **over) -> dict:
    return {"index": 3, "task": "vt", "input": text, "outputs": ["A", 'b"c'], "answer_prefix": " Answer:",
            "length": 100, "max_length": 128, "tokens_to_generate": 30, "depth": None,
            "params": {"template": "base", "x": "\u00e9"}, "seed": 1, **over}


@pytest.mark.parametrize("parts", [["a\n", "b\"c", " \u00e9"], ["x"] * 50, [p for p in NASTY if "\ud800" not in p]])
def test_sample_with_encoded_input_is_the_plain_sample(parts):
    text = "".join(parts)
    fast = Sample.with_encoded_input(encode_parts(parts, text), **_fields(text))
    plain = Sample(**_fields(text))
    assert fast.id == plain.id == plain.content_hash()
    assert fast.to_json() == plain.to_json() == json.dumps(plain.to_dict(), ensure_ascii=False)


def test_a_changed_input_is_encoded_afresh():
    s = Sample.with_encoded_input(json.dumps("old", ensure_ascii=False), **_fields("old"))
    s.input = "new \"text\""
    assert json.loads(s.to_json())["input"] == 'new "text"'
    assert s.content_hash() == Sample(**_fields('new "text"')).content_hash()


def test_a_marker_lookalike_in_other_fields_is_harmless():
    marker = "\x00spanlab-input\x00"
    text = "prompt"
    fast = Sample.with_encoded_input(json.dumps(text, ensure_ascii=False), **_fields(text, answer_prefix=marker))
    plain = Sample(**_fields(text, answer_prefix=marker))
    assert fast.to_json() == plain.to_json() and fast.id == plain.id


def test_needle_lines_count_exactly_from_their_fields(bpe_tokenizer, metaspace_tokenizer):
    """Distractor lines are counted as fixed text plus their key and value; keys may hold spaces
    inside ('ad hoc-saw'), and a tokenizer not additive at spaces counts whole lines."""
    rng = random.Random(2)
    keys = ["ad hoc-saw", "red-fox", "x", "a b c", "blue-eyed-cat", "\u00e9t\u00e9-caf\u00e9", "l'eau-vive"]
    for tok in (load_builtin_raw(), bpe_tokenizer, metaspace_tokenizer):
        counter = TokenCounter(tok)
        pairs = iter([(rng.choice(keys), str(rng.randint(10**6, 10**7 - 1))) for _ in range(400)])
        fields = ("One of the special magic numbers for ", " is: ", ".")
        hs = GeneratedHaystack(counter, lambda pairs=pairs: next(pairs), chunk=300, fields=fields)
        want = counter.counts(["\n" + line for line in hs.lines])
        assert [hs.unit_cost(j) for j in range(len(hs.lines))] == want
        # and `count_parts` finds the remembered lines with the right counts
        assert counter.count_parts(["Head.", *["\n" + x for x in hs.lines[:50]]]) == \
            counter.count("Head." + "".join("\n" + x for x in hs.lines[:50]))
