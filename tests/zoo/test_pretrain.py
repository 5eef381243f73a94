"""Pre-training data: deterministic rows, RULER-format samples, and no evaluation needle leaks in."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from spanlab.errors import SpanlabError
from spanlab.mixture import (
    HeldOut,
    MixtureConfig,
    StreamDataset,
    build_stream,
    heldout_from_files,
    natural_text,
    rare_tokens,
)
from spanlab.pretrain.run import (
    PretrainConfig,
    parse_count,
    pretrain,
)
from spanlab.tasks import generate, load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(None)


@pytest.fixture(scope="module")
def eval_samples(tok):
    out = []
    for task in ("niah_single_1", "niah_single_3", "niah_multikey_3", "niah_multivalue"):
        out += generate(task, length=384, num_samples=4, tokenizer=tok, seed=0)
    return out


def test_parse_count():
    assert parse_count("200M") == 200_000_000
    assert parse_count("1.5k") == 1500
    assert parse_count("123") == 123
    with pytest.raises(SpanlabError):
        parse_count("lots")


def test_heldout_rewrites_every_needle_consistently(eval_samples):
    texts = [s.input for s in eval_samples] + [o for s in eval_samples for o in s.outputs]
    held = HeldOut(texts, corpus_text=natural_text())
    s = next(x for x in eval_samples if x.task == "niah_multikey_3")
    assert set(s.outputs) <= held.tokens  # UUID answers are held out
    prompt, answer = held.clean([s.input, " ".join(s.outputs)], random.Random(0))
    assert not (rare_tokens(prompt) | rare_tokens(answer)) & held.tokens
    # The rewritten answer is still the value of the needle in the rewritten prompt.
    assert answer.split()[0] in prompt and answer != " ".join(s.outputs)
    # Essay text is untouched: its own numbers are not needle material.
    essay_tokens = rare_tokens(natural_text()[:20000])
    assert essay_tokens and not essay_tokens & held.tokens


def test_stream_is_deterministic_and_leak_free(tmp_path, tok, eval_samples):
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(s.to_json() + "\n" for s in eval_samples))
    held = heldout_from_files([path])
    mix = MixtureConfig(context=256, seed=1, task_fraction=0.75)
    a = build_stream(mix, 24, tokenizer=tok, cache_dir=tmp_path / "a", heldout=held, workers=1, progress=False)
    b = build_stream(mix, 24, tokenizer=tok, cache_dir=tmp_path / "b", heldout=held, workers=2, progress=False)
    ra, rb = np.load(a), np.load(b)
    assert ra.shape == (24, 256) and np.array_equal(ra, rb)  # same rows regardless of worker count
    assert len({r.tobytes() for r in ra}) == 24
    texts = tok.batch_decode(ra.astype(np.int64).tolist())
    n_task = sum("special magic" in t for t in texts)
    assert 10 <= n_task <= 24  # ~75% of rows carry a RULER-format sample
    for t in texts:
        assert not rare_tokens(t) & held.tokens
    ds = StreamDataset(a)
    assert len(ds) == 24 and ds[3].dtype.is_floating_point is False and ds[3].shape == (256,)
    other = build_stream(MixtureConfig(context=256, seed=2, task_fraction=0.75), 24, tokenizer=tok,
                         cache_dir=tmp_path / "a", heldout=held, workers=1, progress=False)
    assert not np.array_equal(np.load(other), ra)  # the seed changes the stream


def test_pretrain_end_to_end_and_skip_when_done(tmp_path):
    cfg = PretrainConfig(arch="transformer", size="tiny", context=64, tokens=64 * 4 * 6, out=tmp_path / "run",
                         micro_batch_size=4, task_fraction=0.0, save_every=3, progress=False, lr=3e-3)
    s = pretrain(cfg)
    assert s["steps"] == 6 and s["tokens"] == 64 * 4 * 6
    log = [json.loads(l) for l in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 7))
    assert log[-1]["loss"] < log[0]["loss"]
    assert (tmp_path / "run" / "loss_curve.png").stat().st_size > 0
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final")
    t = AutoTokenizer.from_pretrained(tmp_path / "run" / "final")
    assert m.config.spanlab_arch == "transformer" and len(t) == m.config.vocab_size
    assert pretrain(cfg)["skipped"] is True


def test_answer_spans_and_answer_only_labels(tmp_path, tok):
    """Each task row stores where its answer is; `loss="answers"` trains task rows on exactly the
    answer + EOS (what evaluation scores) and text rows on every token."""
    import torch

    from spanlab.mixture import answers_path

    mix = MixtureConfig(context=256, seed=3, task_fraction=0.5, tasks=("niah_single_1", "niah_single_2"))
    path = build_stream(mix, 16, tokenizer=tok, cache_dir=tmp_path, workers=1, progress=False)
    spans = np.load(answers_path(path))
    rows = np.load(path).astype(np.int64)
    assert spans.shape == (16, 2)
    task_rows = [i for i in range(16) if spans[i, 1] > 0]
    assert 3 <= len(task_rows) <= 13
    ds = StreamDataset(path, loss="answers")
    for i in range(16):
        item = ds[i]
        labels, ids = item["labels"], item["input_ids"]
        if i not in task_rows:
            assert torch.equal(labels, ids)
            continue
        start, end = spans[i]
        kept = labels != -100
        assert kept.sum() == end - start and kept[start:end].all()
        answer = tok.decode(rows[i, start : end - 1].tolist())
        assert answer.strip().isdigit() and len(answer.strip()) == 7  # the 7-digit needle value
        assert rows[i, end - 1] == tok.eos_token_id
        # The answer is the value the prompt's needle states (the row is self-consistent).
        assert answer.strip() in tok.decode(rows[i, :start].tolist())
    assert StreamDataset(path)[task_rows[0]].shape == (256,)  # loss="all": plain rows
    with pytest.raises(SpanlabError, match="loss mode"):
        StreamDataset(path, loss="prompt")


def test_runs_share_one_stream_cache(tmp_path):
    """Two architectures with the same mixture read one cached stream (built once)."""
    from spanlab.pretrain.run import prepare_stream

    common = {"size": "tiny", "context": 256, "tokens": 256 * 8, "micro_batch_size": 4, "task_fraction": 0.5,
              "data_dir": tmp_path / "data", "progress": False, "data_workers": 1}
    a = prepare_stream(PretrainConfig(arch="transformer", out=tmp_path / "a", **common))
    mtime = a.stat().st_mtime_ns
    b = prepare_stream(PretrainConfig(arch="mamba2", out=tmp_path / "b", **common))
    assert a == b and b.stat().st_mtime_ns == mtime
    assert [p.name for p in (tmp_path / "data").iterdir() if "partial" in p.name] == []


def test_pretraining_reads_the_text_it_is_given(tmp_path, tok):
    """`text=` (spanlab train --text, a study's corpus) replaces the essays in every text row, the
    stream cache is keyed on it, and the summary counts how often the run read it."""
    from spanlab.pretrain.run import prepare_stream, text_use

    words = " ".join(f"zebra{i % 97} walks" for i in range(3000))  # no essay has these words
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.txt").write_text(words)
    common = {"arch": "transformer", "size": "tiny", "context": 128, "tokens": 128 * 8, "micro_batch_size": 4,
              "task_fraction": 0.0, "data_dir": tmp_path / "data", "progress": False, "data_workers": 1}
    own = prepare_stream(PretrainConfig(out=tmp_path / "a", text=str(tmp_path / "t"), **common))
    essays = prepare_stream(PretrainConfig(out=tmp_path / "b", **common))
    assert own != essays
    decoded = tok.decode(np.load(own).astype(np.int64).ravel().tolist())
    assert decoded.count("zebra") > 100 and "zebra" not in tok.decode(np.load(essays).astype(np.int64).ravel().tolist())
    cfg = PretrainConfig(out=tmp_path / "a", text=str(tmp_path / "t"), **common)
    n, passes = text_use(cfg, tok, tmp_path / "data", 128 * 8 * 40)
    assert n == len(tok(words, add_special_tokens=False)["input_ids"]) + 1  # + the EOS after the document
    assert passes == pytest.approx(128 * 8 * 40 / n)


@pytest.mark.parametrize("arch", ["transformer", "mamba2", "hybrid", "griffin", "rwkv"])
def test_labeled_positions_loss_equals_the_models_loss(arch):
    """The answer-only loss that skips unlabeled logits gives the model's own loss and gradients."""
    import torch

    from spanlab.pretrain.run import labeled_positions_loss
    from spanlab.zoo import build_model

    model = build_model(arch, "tiny", vocab_size=512, seed=0, pad_token_id=0, eos_token_id=1)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 512, (3, 40), generator=g)
    labels = torch.full_like(ids, -100)
    labels[0] = ids[0]  # a text row: every token
    labels[1, 30:36] = ids[1, 30:36]  # task rows: the answer only
    labels[2, 12:15] = ids[2, 12:15]
    batch = {"input_ids": ids, "labels": labels}
    ref = model(input_ids=ids, labels=labels, use_cache=False).loss
    ref.backward()
    ref_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    got = labeled_positions_loss(model, batch)
    got.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5)
    assert len(grads) == len(ref_grads)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
