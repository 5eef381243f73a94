"""What makes a short `spanlab generate` start fast must not change what it makes: the disk cache of
per-tokenizer tables, the lazy task registry, word lists read without wonderwords, and batched
random draws that must equal RULER's one-at-a-time calls."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from spanlab.tasks import TASKS, diskcache, generate
from spanlab.tasks.tokenizer import TokenCounter, load_builtin_raw
from spanlab.tasks.words import _wordlist, random_value, value_drawer


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv(diskcache.ENV, str(d))
    return d


def _samples(task, length=2048, n=3, seed=4):
    return [s.to_json() for s in generate(task, length=length, num_samples=n, tokenizer=load_builtin_raw(), seed=seed)]


@pytest.mark.parametrize("task", ["vt", "cwe", "niah_single_2"])
def test_cached_tables_give_the_same_samples(task, cache_dir, monkeypatch):
    monkeypatch.setenv(diskcache.ENV, "off")
    uncached = _samples(task)
    assert not cache_dir.exists()
    monkeypatch.setenv(diskcache.ENV, str(cache_dir))
    cold = _samples(task)
    files = list(cache_dir.glob("counts-*.json"))
    assert len(files) == 1
    tables = json.loads(files[0].read_text())["tables"]
    assert tables["bytelevel"] is True and sorted(tables["seps"]) == ["\n", " "]
    # a warm run must not probe the tokenizer again, and must give the same samples
    monkeypatch.setattr(TokenCounter, "_probe_additive", lambda self: pytest.fail("probed despite the cache"))
    warm = _samples(task)
    assert uncached == cold == warm


def test_a_corrupt_or_foreign_cache_file_is_ignored(cache_dir):
    want = _samples("vt")
    (path,) = cache_dir.glob("counts-*.json")
    for bad in ("{not json", json.dumps({"key": "someone else", "tables": {"seps": []}}),
                json.dumps({"key": json.loads(path.read_text())["key"], "tables": {"seps": ["x"], "bytelevel": 3,
                                                                                     "table:vt_icl_lines:1:4": "9"}})):
        path.write_text(bad)
        assert _samples("vt") == want


def test_an_unwritable_cache_dir_is_not_an_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv(diskcache.ENV, str(blocker / "sub"))
    assert len(_samples("fwe", n=2)) == 2
    assert not diskcache.save("k" * 64, {"a": 1})


def test_cache_dir_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv(diskcache.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert diskcache.cache_dir() == tmp_path / "spanlab"
    monkeypatch.setenv(diskcache.ENV, "off")
    assert diskcache.cache_dir() is None


def test_another_tokenizer_gets_another_key(cache_dir, bpe_tokenizer):
    a, b = TokenCounter(load_builtin_raw()), TokenCounter(bpe_tokenizer)
    assert a._key and b._key and a._key != b._key


def test_registry_imports_a_task_module_only_when_asked():
    code = ("import sys\nfrom spanlab.tasks import TASKS\n"
            "assert len(TASKS) == 13 and 'cwe' in TASKS and list(TASKS)[0] == 'niah_single_1'\n"
            "assert not [m for m in ('niah', 'common_words', 'freq_words', 'qa', 'variable_tracking') "
            "if 'spanlab.tasks.' + m in sys.modules]\n"
            "t = TASKS['vt']\nassert t is TASKS['vt'] and 'spanlab.tasks.variable_tracking' in sys.modules\n"
            "assert 'spanlab.tasks.niah' not in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    with pytest.raises(KeyError):
        TASKS["nope"]
    assert TASKS["cwe"].defaults["freq_cw"] == 30 and TASKS["niah_multikey_1"].defaults["num_keys"] == 4


def test_word_lists_equal_wonderwords():
    from wonderwords.random_word import _get_words_from_text_file

    for name in ("nounlist.txt", "adjectivelist.txt", "verblist.txt"):
        assert _wordlist(name) == list(_get_words_from_text_file(name))


@pytest.mark.parametrize("kind", ["numbers", "words", "uuids"])
def test_value_drawer_draws_as_random_value(kind):
    a, b = random.Random(9), random.Random(9)
    draw = value_drawer(kind, b)
    assert [random_value(kind, a) for _ in range(3000)] == [draw() for _ in range(3000)]
    assert a.random() == b.random()  # and leaves the generator in the same state


def test_random_value_matches_rulers_calls():
    a, b = random.Random(5), random.Random(5)
    assert [random_value("numbers", a) for _ in range(2000)] == [str(b.randint(10**6, 10**7 - 1)) for _ in range(2000)]

