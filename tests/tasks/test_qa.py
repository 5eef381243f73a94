"""QA tasks read SQuAD v2 / HotpotQA dev files in their original JSON format (tiny fixtures here)."""

from __future__ import annotations

import pytest

from spanlab.errors import SpanlabError
from spanlab.tasks import generate


@pytest.mark.parametrize("task", ["qa_1", "qa_2"])
def test_qa_gold_in_context_and_length(task, qa_dir, any_tokenizer):
    samples = generate(task, length=2048, num_samples=4, tokenizer=any_tokenizer, qa_data=str(qa_dir))
    for s in samples:
        assert s.answer_prefix == " Answer:"
        assert s.length == len(any_tokenizer.tokenize(s.input + s.answer_prefix)) + 32
        assert 0.95 * 2048 <= s.length <= 2048
        assert all(o in s.input for o in s.outputs)
        assert s.input.count("Document 1:\n") == 1
    # sample i asks question i (the impossible SQuAD questions are skipped)
    if task == "qa_1":
        assert samples[1].outputs == ["zebra0x1"] and "paragraph 0-1?" in samples[1].input
    else:
        assert samples[2].outputs == ["Town2"]


def test_qa_file_flag_and_determinism(qa_dir):
    a = generate("qa_1", length=1024, num_samples=2, qa_file=str(qa_dir / "squad.json"), seed=3)
    b = generate("qa_1", length=1024, num_samples=3, qa_data=str(qa_dir), seed=3)
    assert [s.input for s in a] == [s.input for s in b[:2]]


def test_qa_missing_file(tmp_path, monkeypatch):
    monkeypatch.delenv("SPANLAB_QA_DATA", raising=False)
    with pytest.raises(SpanlabError, match=r"squad.json or dev-v2.0.json.*rajpurkar"):
        generate("qa_1", length=1024, num_samples=1, qa_data=str(tmp_path))
    with pytest.raises(SpanlabError, match="--qa-data"):
        generate("qa_2", length=1024, num_samples=1)
    with pytest.raises(SpanlabError, match="does not exist"):
        generate("qa_2", length=1024, num_samples=1, qa_file=str(tmp_path / "nope.json"))


def test_qa_bad_json(tmp_path):
    (tmp_path / "squad.json").write_text("{not json")
    with pytest.raises(SpanlabError, match="original SQuAD"):
        generate("qa_1", length=1024, num_samples=1, qa_data=str(tmp_path))
