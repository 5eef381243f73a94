"""Fine-tuning on the pre-training task mixture at the fine-tuning context (`--task-fraction`):
task rows at that context with the loss on their answers, evaluation needles kept out, exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spanlab.cli import main
from spanlab.errors import SpanlabError
from spanlab.finetune.config import FinetuneConfig
from spanlab.finetune.data import task_mixture_data
from spanlab.mixture import answers_path, rare_tokens

CTX = 256


@pytest.fixture(scope="module")
def bpe():
    from spanlab.tasks import load_tokenizer

    return load_tokenizer(None)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory, bpe):
    """A tiny random Transformer++ of the zoo with the built-in tokenizer, saved as a base model."""
    from spanlab.zoo import build_model

    d = tmp_path_factory.mktemp("base")
    m = build_model("transformer", "tiny", vocab_size=len(bpe), seed=0, pad_token_id=bpe.pad_token_id,
                    eos_token_id=bpe.eos_token_id, bos_token_id=bpe.bos_token_id)
    m.save_pretrained(d)
    bpe.save_pretrained(d)
    return d


def _mixture(tmp_path, bpe, heldout=(), rows=24, loss="answers"):
    return task_mixture_data(context=CTX, num_rows=rows, tokenizer=bpe, seed=0, task_fraction=0.75,
                             tasks=["niah_single_1", "niah_single_3", "niah_multikey_2"], loss=loss,
                             heldout=list(heldout), text_source=None, cache_dir=tmp_path / "cache", progress=False)


def test_rows_are_task_samples_at_the_finetuning_context_with_answer_loss(tmp_path, bpe):
    ds = _mixture(tmp_path, bpe)
    spans = np.load(answers_path(ds.path))
    assert len(ds) == 24 and ds.rows.shape == (24, CTX)
    task_rows = [i for i in range(24) if spans[i, 1] > 0]
    assert 10 <= len(task_rows) <= 23  # ~75 % task rows, the rest essay windows
    for i in range(24):
        item = ds[i]
        ids, labels = item["input_ids"], item["labels"]
        assert ids.shape == (CTX,)
        if i not in task_rows:
            assert torch.equal(labels, ids)  # text rows: loss on every token
            continue
        start, end = (int(x) for x in spans[i])
        kept = (labels != -100).nonzero().flatten().tolist()
        assert kept == list(range(start, end))  # task rows: loss on the answer + EOS only
        prompt = bpe.decode(ids[:start].tolist())
        assert "special magic" in prompt
        assert ids[end - 1] == bpe.eos_token_id
    # The task samples are fitted to lengths context/4 .. context of the *fine-tuning* context.
    assert max(int(spans[i, 1]) for i in task_rows) > CTX // 2


def test_heldout_needles_never_reach_the_rows(tmp_path, bpe):
    # The needles the stream holds without a held-out set become the "evaluation" samples.
    free = _mixture(tmp_path / "free", bpe)
    spans = np.load(answers_path(free.path))
    answers = [bpe.decode(free.rows[i, s:e - 1].astype(np.int64).tolist())
               for i, (s, e) in enumerate(spans) if e > 0]
    needles = set().union(*(rare_tokens(a) for a in answers))
    assert len(needles) >= 5
    evalfile = tmp_path / "eval.jsonl"
    evalfile.write_text("".join(json.dumps({"input": "The special magic number is " + a, "outputs": [a.strip()]}) + "\n"
                                for a in answers))
    guarded = _mixture(tmp_path / "guarded", bpe, heldout=[evalfile])
    assert guarded.path != free.path  # the held-out set is part of the stream's identity
    text = "\n".join(bpe.batch_decode(guarded.rows.astype(np.int64).tolist()))
    assert not rare_tokens(text) & needles
    # Still the same mixture: task rows in the same places, with fresh values of the same shape.
    assert np.array_equal(np.load(answers_path(guarded.path))[:, 1] > 0, spans[:, 1] > 0)


def _finetune_args(base, out, cache, *extra):
    return ["finetune", "--model", str(base), "--out", str(out), "--context", str(CTX), "--task-fraction", "0.75",
            "--tasks", "niah_single_1,niah_single_2", "--loss", "answers", "--attention", "full",
            "--peft", "lora+", "--rank", "4", "--alpha", "8", "--steps", "6", "--micro-batch-size", "2",
            "--grad-accum", "1", "--warmup-steps", "1", "--lr", "1e-3", "--mixed-precision", "no",
            "--no-gradient-checkpointing", "--save-every", "3", "--no-merge", "--cache-dir", str(cache),
            "--no-progress", *extra]


class _Crash(Exception):
    pass


def test_cli_finetune_on_task_rows_resumes_onto_the_same_curve(tmp_path, base_model, monkeypatch, cli):
    import spanlab.train as T

    cache = tmp_path / "cache"
    assert cli(*_finetune_args(base_model, tmp_path / "ref", cache)) == 0
    ref = [json.loads(l) for l in (tmp_path / "ref" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in ref] == list(range(1, 7))
    streams = sorted(cache.glob("stream-*.npy"))
    assert len(streams) == 2  # rows + answer spans: 6 steps x 2 rows at the fine-tuning context
    (rows,) = cache.glob("stream-*[0-9a-f].npy")  # not the .answers.npy beside it
    assert np.load(rows).shape == (12, CTX)

    real = T.train

    def crash_at_5(*a, **k):
        def on_step(rec):
            if rec["step"] == 5:
                raise _Crash
        return real(*a, **k, on_step=on_step)

    monkeypatch.setattr(T, "train", crash_at_5)
    with pytest.raises(_Crash):
        main(_finetune_args(base_model, tmp_path / "run", cache))
    monkeypatch.setattr(T, "train", real)
    assert cli(*_finetune_args(base_model, tmp_path / "run", cache)) == 0
    run = [json.loads(l) for l in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in run] == list(range(1, 7))
    assert [r["loss"] for r in run] == pytest.approx([r["loss"] for r in ref], rel=1e-5, abs=1e-6)
    assert sorted(cache.glob("stream-*.npy")) == streams  # the stream was read again, not rebuilt


def test_task_options_are_checked(tmp_path, capsys, cli):
    ok = FinetuneConfig.parse({"model": "m", "out": str(tmp_path), "task_fraction": 0.9, "loss": "answers"})
    assert ok.data == [] and ok.tasks is None
    with pytest.raises(SpanlabError, match="--task-fraction"):
        FinetuneConfig.parse({"model": "m", "data": ["d"], "out": "o", "loss": "answers"})
    with pytest.raises(SpanlabError, match="no training data"):
        FinetuneConfig.parse({"model": "m", "out": "o"})
    with pytest.raises(SpanlabError, match="one --data source"):
        FinetuneConfig.parse({"model": "m", "data": ["a", "b"], "out": "o", "task_fraction": 0.5})
    with pytest.raises(SpanlabError, match="unknown task"):
        FinetuneConfig.parse({"model": "m", "out": "o", "task_fraction": 0.5, "tasks": ["niah_single_9"]})
    assert cli("finetune", "--model", "m", "--out", tmp_path, "--heldout", "x.jsonl", "--data", "d") == 2
    err = capsys.readouterr().err
    assert "--heldout" in err and "--task-fraction" in err and "Traceback" not in err
