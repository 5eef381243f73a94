"""Generated samples: gold answers present, exact token lengths within RULER's bound and tight,
deterministic, stable under more samples, needles where asked."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from spanlab.errors import SpanlabError
from spanlab.tasks import TASKS, generate
from spanlab.tasks.essays import essay_sentences
from spanlab.tasks.haystack import NOISE

SYNTHETIC = [t for t in TASKS if not t.startswith("qa")]


def prompt_tokens(tok, s) -> int:
    # counted independently of spanlab's counter: RULER's HF path, tokenize() without special tokens
    return len(tok.tokenize(s.input + s.answer_prefix))


@pytest.mark.parametrize("task", SYNTHETIC)
@pytest.mark.parametrize("length", [1024, 4096])
def test_lengths_tight_and_exact(task, length, any_tokenizer):
    if task == "cwe" and length == 1024:
        length = 1536  # cwe's worked example + 10 words x 6 exceed 1K prompt tokens with the 2K-vocab BPE
    samples = generate(task, length=length, num_samples=2, tokenizer=any_tokenizer, seed=1)
    for s in samples:
        assert s.length == prompt_tokens(any_tokenizer, s) + TASKS[task].tokens_to_generate
        assert s.length <= length
        if task == "niah_multikey_3" and length == 1024:
            # two-UUID distractor lines are 5-8 % of 1K tokens each: the gap must be less than any line
            lines = [ln for ln in s.input.split("\n") if ln.startswith("One of the special magic")]
            assert length - s.length < min(len(any_tokenizer.tokenize("\n" + ln)) for ln in lines)
        else:
            assert s.length >= 0.95 * length, f"{task}@{length}: only {s.length} tokens"
        for gold in s.outputs:
            assert gold in s.input, f"{task}: gold {gold!r} missing from the input"


@pytest.mark.parametrize("task", SYNTHETIC)
def test_task_semantics(task, builtin_tokenizer):
    s = generate(task, length=4096, num_samples=1, tokenizer=builtin_tokenizer, seed=3)[0]
    t = TASKS[task]
    if t.family == "niah":
        nv, nq = t.defaults["num_values"], t.defaults["num_queries"]
        assert len(s.outputs) == nv * nq
        for v in s.outputs:
            assert s.input.count(f" is: {v}.") == 1  # each gold value appears as exactly one needle
        if nv * nq == 1:
            assert s.input.startswith("A special magic ")
            assert s.answer_prefix.endswith("mentioned in the provided text is")
        else:
            assert s.input.startswith("Some special magic ")
            assert s.answer_prefix.endswith("are")
    elif task == "vt":
        assert len(s.outputs) == 5
        assert s.input.count("VAR ") >= 10 + 8  # worked example + main chain
        value = re.search(r"assigned the value (\d{5}), they are", s.answer_prefix).group(1)
        assert f"VAR {s.outputs[0]} = {value}" in s.input
        for a, b in zip(s.outputs, s.outputs[1:]):
            assert f"VAR {b} = VAR {a} " in s.input
    elif task == "cwe":
        body = s.input.split("\n")[-2]  # the main numbered list
        words = re.findall(r"\d+\. (\S+)", body)
        counts = {w: words.count(w) for w in set(words)}
        assert all(counts[w] == 30 for w in s.outputs)
        assert all(c == 3 for w, c in counts.items() if w not in s.outputs)
    elif task == "fwe":
        words = s.input.split("coded words. ")[1].split("\nQuestion")[0].split()
        ranked = sorted(set(words), key=lambda w: -words.count(w))
        assert ranked[0] == "..."
        assert ranked[1:4] == s.outputs
        assert words.count(s.outputs[2]) > words.count(ranked[4])
        # RULER's frequencies: rank k appears floor(N k^-2 / zeta(2)) times for the list's N, and
        # every rank with a count has a word (only those are drawn)
        from spanlab.tasks.freq_words import zipf_counts

        counts = sorted(Counter(words).values(), reverse=True)
        size = (4096 - 50) // 50
        law = [[c for c in zipf_counts(n, size, 2.0) if c] for n in range(len(words), 2 * len(words))]
        assert counts in law


def test_singular_plural_and_multikey_query():
    s = generate("niah_multiquery", length=2048, num_samples=1, seed=0)[0]
    assert "What are all the special magic numbers for " in s.input
    assert ", and " in s.answer_prefix  # RULER's query join


@pytest.mark.parametrize("task", ["niah_single_2", "vt", "cwe", "fwe", "niah_multikey_2"])
def test_deterministic_and_prefix_stable(task):
    a = generate(task, length=2048, num_samples=3, seed=7)
    b = generate(task, length=2048, num_samples=5, seed=7)
    assert [s.to_json() for s in a] == [s.to_json() for s in b[:3]]
    c = generate(task, length=2048, num_samples=3, seed=8)
    assert [s.input for s in a] != [s.input for s in c]
    assert len({s.id for s in b}) == 5


def test_id_is_content_hash():
    s = generate("niah_single_1", length=1024, num_samples=1, seed=0)[0]
    assert s.id == s.content_hash() and len(s.id) == 16


def _essay_position(s) -> tuple[int, int]:
    """(sentences before the needle, haystack sentences) of a single-needle essay sample."""
    needle = re.search(r"One of the special magic \w+ for \S+ is: \S+\.", s.input).group(0)
    before, after = s.input.split("\n", 1)[1].split(needle)
    sents = essay_sentences()
    k = 0
    # the haystack is the corpus from its start: count whole sentences before the needle
    while k < len(sents) and before.startswith(" ".join(sents[:k + 1])):
        k += 1
    total_text = (before + after).split("\nWhat is")[0]
    n = k
    while n < len(sents) and " ".join(sents[:n + 1]) in total_text.replace("  ", " "):
        n += 1
    return k, n


@pytest.mark.parametrize("depth", [0, 20, 50, 80, 100])
def test_needle_at_depth_essay(depth):
    for s in generate("niah_single_2", length=4096, num_samples=2, seed=5, depth=depth):
        k, n = _essay_position(s)
        assert abs(k - n * depth / 100) <= 1, (k, n, depth)
        assert s.depth == depth


@pytest.mark.parametrize("depth", [0, 50, 100])
def test_needle_at_depth_repeat(depth):
    for s in generate("niah_single_1", length=2048, num_samples=2, seed=5, depth=depth):
        lines = s.input.split("\n")[1:-1]  # drop the instruction and question lines
        pos = next(i for i, line in enumerate(lines) if line.startswith("One of the special magic"))
        n = sum(1 for line in lines if line == NOISE)
        assert abs(pos - n * depth / 100) <= 1


def test_depth_sweep_keeps_needles():
    a = generate("niah_single_2", length=2048, num_samples=1, seed=2, depth=0)[0]
    b = generate("niah_single_2", length=2048, num_samples=1, seed=2, depth=100)[0]
    assert a.outputs == b.outputs and a.input != b.input


@pytest.mark.parametrize("haystack,key_type,value_type", [
    ("essay", "numbers", "words"), ("repeat", "uuids", "numbers"), ("needle", "words", "uuids"), ("noise", "words", "words")])
def test_niah_format_controls(haystack, key_type, value_type):
    s = generate("niah_single_2", length=2048, num_samples=1, seed=0, haystack=haystack, key_type=key_type,
                 value_type=value_type, num_keys=2, num_values=2, num_queries=1)[0]
    assert len(s.outputs) == 2 and all(o in s.input for o in s.outputs)
    pattern = {"numbers": r"\d{7}", "words": r"[a-z]+-[a-z]+", "uuids": r"[0-9a-f-]{36}"}[value_type]
    assert all(re.fullmatch(pattern, o) for o in s.outputs)
    assert s.params["haystack"] == ("repeat" if haystack == "noise" else haystack)


def test_depth_list_pins_several_needles():
    s = generate("niah_multivalue", length=4096, num_samples=1, seed=0, depth=[10, 90])[0]
    first, second = s.input.index(s.outputs[0]), s.input.index(s.outputs[1])
    assert first < len(s.input) * 0.3 and second > len(s.input) * 0.7


@pytest.mark.parametrize("bad", [{"depth": 101}, {"depth": -1}, {"haystack": "lake"}, {"key_type": "emoji"},
                                 {"num_keys": 0}, {"num_values": "four"}, {"colour": "red"}])
def test_bad_params(bad):
    with pytest.raises(SpanlabError):
        generate("niah_single_2", length=1024, num_samples=1, **bad)


@pytest.mark.parametrize("task,bad", [("vt", {"num_hops": "x"}), ("vt", {"num_chains": 0}), ("cwe", {"freq_cw": "lots"}),
                                      ("fwe", {"alpha": 1.0}), ("fwe", {"alpha": "z"}), ("qa_1", {"dataset": "trivia"})])
def test_bad_params_other_tasks(task, bad):
    with pytest.raises(SpanlabError):
        generate(task, length=2048, num_samples=1, **bad)


def test_too_short_length():
    with pytest.raises(SpanlabError, match="max_length|length"):
        generate("niah_single_2", length=150, num_samples=1)
    with pytest.raises(SpanlabError, match="no room"):
        generate("cwe", length=100, num_samples=1)


def test_unknown_task_and_template():
    with pytest.raises(SpanlabError, match="unknown task"):
        generate("niah_single_9", length=1024, num_samples=1)
    with pytest.raises(SpanlabError, match="unknown template"):
        generate("vt", length=1024, num_samples=1, template="llama-99")


@pytest.mark.parametrize("template", ["meta-llama3", "vicuna-chat", "chat"])
def test_templates_fit_consistently(template, builtin_tokenizer):
    s = generate("niah_single_2", length=2048, num_samples=1, tokenizer=builtin_tokenizer, template=template)[0]
    assert 0.95 * 2048 <= s.length <= 2048
    assert s.length == prompt_tokens(builtin_tokenizer, s) + 128
    start = {"meta-llama3": "<|begin_of_text|>", "vicuna-chat": "A chat between", "chat": "<|im_start|>user\n"}[template]
    assert s.input.startswith(start)
    assert s.answer_prefix.startswith(" The special magic number for")


def test_chat_template_missing(wordpiece_tokenizer):
    with pytest.raises(SpanlabError, match="chat template"):
        generate("vt", length=1024, num_samples=1, tokenizer=wordpiece_tokenizer, template="chat")


def test_long_context_16k(builtin_tokenizer):
    for task in ("niah_multikey_3", "cwe", "fwe"):
        s = generate(task, length=16384, num_samples=1, tokenizer=builtin_tokenizer)[0]
        assert 0.95 * 16384 <= s.length <= 16384


@pytest.mark.parametrize("task", ["niah_single_2", "niah_multikey_3", "cwe", "qa_1"])
def test_threads_and_raw_builtin_give_identical_samples(task, qa_dir):
    from spanlab.tasks.tokenizer import load_builtin_raw

    extra = {"qa_data": str(qa_dir)} if task == "qa_1" else {}
    serial = generate(task, length=2048, num_samples=6, seed=4, num_workers=1, **extra)
    threaded = generate(task, length=2048, num_samples=6, seed=4, num_workers=4, tokenizer=load_builtin_raw(), **extra)
    assert [s.to_json() for s in serial] == [s.to_json() for s in threaded]


def test_start_offset_matches_full_run():
    full = generate("fwe", length=2048, num_samples=5, seed=9)
    tail = generate("fwe", length=2048, num_samples=2, seed=9, start=3)
    assert [s.to_json() for s in tail] == [s.to_json() for s in full[3:]]


def test_tasks_never_import_torch():
    import subprocess
    import sys

    code = ("import sys; from spanlab.tasks import generate, load_tokenizer; "
            "generate('niah_single_2', length=1024, num_samples=1, tokenizer=load_tokenizer(), template='chat'); "
            "import spanlab.scoring; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_zeta_matches_closed_forms():
    import math

    from spanlab.tasks.freq_words import zeta, zipf_counts

    assert zeta(2.0) == pytest.approx(math.pi ** 2 / 6, abs=1e-13)
    assert zeta(4.0) == pytest.approx(math.pi ** 4 / 90, abs=1e-13)
    assert zipf_counts(1000, 4, 2.0) == [607, 151, 67, 37]  # floor(1000 k^-2 / zeta(2))


def test_ruler_prompt_text_verbatim():
    # RULER's strings, re-typed from scripts/data/synthetic/constants.py (base template)
    s = generate("niah_single_1", length=1024, num_samples=1, seed=0)[0]
    key = re.search(r"for (\S+) mentioned in the provided text\?$", s.input).group(1)
    assert s.input.startswith("A special magic number is hidden within the following text. Make sure to memorize it. "
                              "I will quiz you about the number afterwards.\nThe grass is green. The sky is blue. "
                              "The sun is yellow. Here we go. There and back again.\n")
    assert s.input.endswith(f"\nWhat is the special magic number for {key} mentioned in the provided text?")
    assert s.answer_prefix == f" The special magic number for {key} mentioned in the provided text is"
    assert f"One of the special magic numbers for {key} is: {s.outputs[0]}." in s.input

    v = generate("vt", length=1024, num_samples=1, seed=0)[0]
    assert v.input.startswith("Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n")
    assert v.answer_prefix.startswith(" Answer: According to the chain(s) of variable assignment in the text above, "
                                      "5 variables are assigned the value ")
    assert v.answer_prefix.endswith(", they are: ")

    c = generate("cwe", length=4096, num_samples=1, seed=0)[0]
    assert c.answer_prefix == " Answer: The top 10 words that appear most often in the list are:"
    shot = c.input.split("\n")[2]  # the worked example's answer line
    assert re.search(r"are: 1\. \S+ 2\. \S+ .* 10\. \S+$", shot)

    f = generate("fwe", length=1024, num_samples=1, seed=0)[0]
    assert f.input.startswith("Read the following coded text and track the frequency of each coded word. Find the "
                              "three most frequently appeared coded words. ")
    assert "\nQuestion: Do not provide any explanation. Please ignore the dots '....'. " in f.input
    assert f.input.endswith("What are the three most frequently appeared words in the above coded text?")
    assert f.answer_prefix == " Answer: According to the coded text above, the three most frequently appeared words are:"
