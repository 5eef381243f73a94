"""Token counting in Python (`ByteLevelCounts`) must equal the Rust tokenizer on every text, and the
faster gluing in `count_parts` must cut exactly where the plain loop does."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from spanlab.tasks import generate
from spanlab.tasks.essays import essay_text
from spanlab.tasks.tokenizer import (
    ByteLevelCounts,
    TokenCounter,
    counter_for,
    load_builtin_raw,
)


def _rust(tok):
    backend = tok.backend_tokenizer
    return lambda texts: [len(e.ids) for e in backend.encode_batch(list(texts), add_special_tokens=False)]


def _fuzz_texts(seed: int) -> list[str]:
    rng = random.Random(seed)
    # every ASCII character (controls too), runs of whitespace, apostrophes for GPT-2's
    # contractions, added-token strings, some non-ASCII, and word shapes the word cache special-cases
    alpha = ("".join(map(chr, range(128))) + "''''      \n\n\t<|im_end|>" + "abcdefXYZ0123456789" * 3
             + ".,;:!?)]}\"-" + "\u00e9\u2014\u00a0\u3000\u2019\U0001f600")
    texts = ["".join(rng.choice(alpha) for _ in range(rng.randint(0, 50))) for _ in range(6000)]
    words = ["".join(rng.choice("abcXYZ0123456789.,;:!?)]}\"-'\u00e9--") for _ in range(rng.randint(1, 8)))
             for _ in range(3000)]
    words += ["-".join(rng.choice(["ab", "Xy", "", "q", "zz", "7"]) for _ in range(rng.randint(1, 4)))
              + rng.choice(["", ".", "-", ".-", "'s"]) for _ in range(2000)]
    texts += [rng.choice(["", " ", "\n"]) + " ".join(rng.sample(words, rng.randint(1, 12))) for _ in range(4000)]
    text = essay_text()
    texts += [text[i:i + rng.randint(1, 2000)] for i in range(0, len(text) - 2000, len(text) // 300)]
    return texts


@pytest.mark.parametrize("which", ["builtin", "bpe"])
def test_python_counts_equal_rust_counts(which, bpe_tokenizer):
    tok = load_builtin_raw() if which == "builtin" else bpe_tokenizer
    counter = TokenCounter(tok)
    assert counter.python_counting, "a byte-level BPE without normalizer takes the Python path"
    fast, rust = counter._batch, _rust(tok)
    texts = _fuzz_texts(1)
    want = rust(texts)
    assert fast(texts) == want  # one big batch: the per-text path
    got = []
    for i in range(0, len(texts), 5):  # small batches: many take the all-plain path
        got += fast(texts[i:i + 5])
    assert got == want
    assert fast(texts) == want  # again, from the word and piece caches


def test_other_tokenizers_keep_the_rust_path(wordpiece_tokenizer, metaspace_tokenizer, llama3_style_tokenizer):
    for tok in (wordpiece_tokenizer, metaspace_tokenizer, llama3_style_tokenizer):
        assert not ByteLevelCounts.applies(tok.backend_tokenizer)
        assert not counter_for(tok).python_counting


def test_a_disagreeing_tokenizer_keeps_the_rust_path():
    # prefix space on: the pre-tokenizer is not the one ByteLevelCounts replicates
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    assert not ByteLevelCounts.applies(tok)
    builtin = load_builtin_raw().backend_tokenizer
    def wrong(texts):  # a Rust counter that disagrees
        return [len(t) for t in texts]
    counter, agreed = ByteLevelCounts.wrap(builtin, wrong)
    assert counter is wrong and agreed is False


def test_glue_cuts_where_the_loop_cuts():
    counter = counter_for(load_builtin_raw())
    rng = random.Random(0)
    pool = [" a", "\nb", " c ", "d", " ", "\n", "x\n", " y", "  z", "\n\nw", " v\n", ".", " 1.", "\n2 ", " q"]
    for _ in range(5000):
        parts = [rng.choice([*pool, "", "head", "head "])] + [rng.choice(pool) for _ in range(rng.randint(1, 12))]
        counter.segment_counts(parts[1:])
        assert counter._glue(parts) == counter._glue_loop(parts), parts
        assert counter.count_parts(parts) == counter.count("".join(parts)), parts


def test_additive_units():
    c = counter_for(load_builtin_raw())
    assert c.additive_units("Head.", [" a", " b-c", " 12."], "\nTail")
    assert not c.additive_units("Head ", [" a"], "\nTail")  # a cut after a space
    assert not c.additive_units("Head.", [" a "], "\nTail")  # a unit ending in a space
    assert not c.additive_units("Head.", [" a", "  b"], "\nTail")  # a unit starting with two spaces
    assert not c.additive_units("Head.", [" a"], "Tail")  # the tail does not start at a separator


@pytest.mark.parametrize("task", ["cwe", "fwe"])
def test_closed_form_counts_give_the_same_samples(task, monkeypatch):
    """cwe and fwe fit their lists from summed per-word counts without building prompts; the
    samples must equal those of the search over built prompts."""
    tok = load_builtin_raw()
    kw = {"length": 4096, "num_samples": 4, "tokenizer": tok, "seed": 3, "num_workers": 1}
    fast = [s.to_json() for s in generate(task, **kw)]
    with monkeypatch.context() as m:
        m.setattr(TokenCounter, "additive_units", lambda self, *a: False)
        slow = [s.to_json() for s in generate(task, **kw)]
    assert fast == slow


def test_threads_do_not_change_samples():
    tok = load_builtin_raw()
    one = [s.to_json() for s in generate("niah_multikey_2", length=2048, num_samples=5, tokenizer=tok, seed=1,
                                         num_workers=1)]
    two = [s.to_json() for s in generate("niah_multikey_2", length=2048, num_samples=5, tokenizer=tok, seed=1,
                                         num_workers=2)]
    assert one == two


@pytest.mark.parametrize("which", ["builtin", "bpe"])
def test_word_counts_send_added_tokens_to_rust(which, bpe_tokenizer):
    tok = load_builtin_raw() if which == "builtin" else bpe_tokenizer
    counter = TokenCounter(tok)
    added = [t.content for t in tok.backend_tokenizer.get_added_tokens_decoder().values() if t.content]
    if not added:
        pytest.skip("tokenizer without added tokens")
    a = added[0]
    words = [a, "key" + a, a + "-value", "x" + a + "y.", "plain", "adorable-shelter"]
    assert counter.word_counts(words) == _rust(tok)([" " + w for w in words])


def test_letter_words_count_as_rust_counts(tmp_path):
    """fwe's coded words (ASCII letters) skip `_count`'s checks; an added token spelled in letters
    must still send its words to Rust."""
    from spanlab.tasks.freq_words import coded_words
    from spanlab.tasks.tokenizer import RawTokenizer, builtin_tokenizer_file

    words = coded_words(random.Random(1), 3000, 6) + coded_words(random.Random(2), 600, 2) + ["a", "Zebra", "ab"]
    tok = load_builtin_raw()
    assert TokenCounter(tok).word_counts(words) == _rust(tok)([" " + w for w in words])
    backend = Tokenizer.from_file(str(builtin_tokenizer_file()))
    backend.add_tokens(["magic"])
    backend.save(str(tmp_path / "tokenizer.json"))
    tok = RawTokenizer(tmp_path / "tokenizer.json", "with-magic")
    counter = TokenCounter(tok)
    assert counter.python_counting
    words += ["magic", "magical", "somagic"]
    assert counter.word_counts(words) == _rust(tok)([" " + w for w in words])


def test_seeded_word_counts_count_texts_without_the_model():
    """cwe seeds the word cache from its stored word-count table; texts of those words must then
    count exactly as Rust counts them, without asking the BPE model again."""
    from spanlab.tasks.words import single_words

    tok = load_builtin_raw()
    words = [w for w in single_words() if w.isalpha()][:300]  # (a few entries hold a space: "ad hoc")
    want = TokenCounter(tok).word_counts(words)
    counter = TokenCounter(tok)
    assert counter.python_counting
    counter.seed_word_counts(words, want)
    counter._batch.model_tokenize = lambda text: pytest.fail(f"tokenised {text!r} again")
    assert counter.word_counts(words) == want
    texts = [" " + " ".join(words[i:i + 7]) for i in range(0, 280, 7)]
    assert counter.counts(texts) == _rust(tok)(texts)
