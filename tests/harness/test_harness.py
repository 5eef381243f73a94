"""`spanlab harness`: lm-eval on spanlab-loaded models, offline on the shipped short-context tasks.

A tiny random-weight Llama is built and saved here with the built-in tokenizer; lm-eval's
loglikelihoods are checked against the model's own log-probabilities, its accuracies against
those loglikelihoods, and patched attention against full attention where they must agree.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from spanlab.errors import SpanlabError
from spanlab.harness import RESULTS_FILE, SAMPLES_FILE, HarnessConfig, local_tasks, run_harness

needs_lm_eval = pytest.mark.skipif(
    __import__("importlib").util.find_spec("lm_eval") is None, reason='lm-eval not installed (pip install "spanlab[harness]")')


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> str:
    import transformers as T

    from spanlab.tasks.tokenizer import load_tokenizer

    tok = load_tokenizer(None)
    torch.manual_seed(0)
    cfg = T.LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    cfg.initializer_range = 0.1  # logits that differ between choices, so accuracies are not ties
    d = tmp_path_factory.mktemp("harness") / "llama"
    T.AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


def _samples(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / SAMPLES_FILE).read_text().splitlines()]


def _docs(task: str) -> list[dict]:
    path = local_tasks()[task].parent / f"{task.removeprefix('spanlab_')}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@needs_lm_eval
def test_scores_every_doc_with_the_models_own_loglikelihoods(tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    doc = run_harness(HarnessConfig(model=tiny_llama, tasks=["spanlab_capitals", "spanlab_proverbs"], out=str(out),
                                    device="cpu", dtype="float32", batch_size=4))
    caps, provs = _docs("spanlab_capitals"), _docs("spanlab_proverbs")
    assert doc["tasks"]["spanlab_capitals"]["n"] == len(caps) == 16
    assert doc["tasks"]["spanlab_proverbs"]["n"] == len(provs) == 16
    rows = _samples(out)
    cap_rows = sorted((r for r in rows if r["task"] == "spanlab_capitals"), key=lambda r: r["doc_id"])
    assert [r["doc_id"] for r in cap_rows] == list(range(16))
    # acc of a multiple-choice doc = its gold choice has the highest loglikelihood; the task's acc is their mean.
    for r in cap_rows:
        lls = [ll for ll, _greedy in r["responses"]]
        assert r["acc"] == float(max(range(len(lls)), key=lls.__getitem__) == r["target"])
    assert math.isclose(doc["tasks"]["spanlab_capitals"]["metrics"]["acc"], sum(r["acc"] for r in cap_rows) / 16)
    # The loglikelihood lm-eval recorded is log p(" " + choice | prompt) under the saved model.
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    first = caps[0]
    ctx = f"Question: What is the capital of {first['country']}?\nAnswer:"
    for choice, (ll, _greedy) in zip(first["choices"], cap_rows[0]["responses"]):
        ctx_ids, full = tok(ctx)["input_ids"], tok(ctx + " " + choice)["input_ids"]
        assert full[: len(ctx_ids)] == ctx_ids
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([full])).logits[0].float(), -1)
        want = sum(float(logp[i - 1, full[i]]) for i in range(len(ctx_ids), len(full)))
        assert math.isclose(ll, want, rel_tol=1e-4, abs_tol=1e-4), (choice, ll, want)
    saved = json.loads((out / RESULTS_FILE).read_text())
    assert saved["requested"] == ["spanlab_capitals", "spanlab_proverbs"]


@needs_lm_eval
def test_sliding_window_wider_than_every_doc_matches_full_attention(tiny_llama, tmp_path):
    full = tmp_path / "full"
    sw = tmp_path / "sw"
    run_harness(HarnessConfig(model=tiny_llama, tasks=["spanlab_capitals"], out=str(full), limit=6, device="cpu", dtype="float32"))
    doc = run_harness(HarnessConfig(model=tiny_llama, tasks=["spanlab_capitals"], out=str(sw), limit=6, device="cpu",
                                    dtype="float32", attention="sw", window=512))
    assert doc["tasks"]["spanlab_capitals"]["n"] == 6
    a, b = _samples(full), _samples(sw)
    assert [r["doc_id"] for r in a] == [r["doc_id"] for r in b] and len(a) == 6
    for ra, rb in zip(a, b):
        assert ra["acc"] == rb["acc"]
        for (la, _), (lb, _) in zip(ra["responses"], rb["responses"]):
            assert math.isclose(la, lb, rel_tol=1e-5, abs_tol=1e-5)
    manifest = json.loads((sw / "harness_manifest.json").read_text())
    assert manifest["model"]["attention"] == "sw" and manifest["model"]["attention_params"] == {"window": 512}
    # The patch is really in place: a window shorter than the prompts changes the loglikelihoods.
    run_harness(HarnessConfig(model=tiny_llama, tasks=["spanlab_capitals"], out=str(tmp_path / "sw2"), limit=1,
                              device="cpu", dtype="float32", attention="sw", window=2))
    narrow = _samples(tmp_path / "sw2")[0]["responses"]
    assert max(abs(la - lb) for (la, _), (lb, _) in zip(a[0]["responses"], narrow)) > 1e-3


@needs_lm_eval
def test_rerun_skips_finished_tasks_and_refuses_other_settings(tiny_llama, tmp_path, cli):
    out = tmp_path / "run"
    args = ["harness", "--model", tiny_llama, "--tasks", "spanlab_proverbs", "--limit", "3", "--out", str(out),
            "--device", "cpu", "--dtype", "float32"]
    assert cli(*args) == 0
    assert len(_samples(out)) == 3
    assert cli(*args) == 0  # resumed: nothing re-run, nothing appended
    assert len(_samples(out)) == 3
    assert cli(*args[:-4], "--device", "cpu", "--dtype", "float32", "--attention", "sw", "--window", "64") == 2
    assert cli("harness", "--model", tiny_llama, "--tasks", "no_such_task", "--out", str(tmp_path / "x"), "--device", "cpu") == 2
    assert cli("harness", "--model", tiny_llama, "--tasks", "spanlab_proverbs", "--out", str(tmp_path / "y"),
               "--attention", "se") == 2  # SE needs --chunk-size

    # spanlab report shows the harness table for a harness-only folder.
    from spanlab.report import build_report

    dest = build_report([str(out)], str(tmp_path / "report"))
    md = (dest / "report.md").read_text()
    assert "Short-context regression (lm-eval-harness)" in md
    assert "| run | full | spanlab_proverbs | acc |" in md and "| 3 |" in md
    assert "harness" in (dest / "index.html").read_text()


def test_missing_lm_eval_says_how_to_install(monkeypatch, tmp_path, capsys, cli):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval raises ImportError
    with pytest.raises(SpanlabError, match=r'pip install "spanlab\[harness\]"'):
        run_harness(HarnessConfig(model=str(tmp_path), tasks=["spanlab_capitals"], out=str(tmp_path / "o")))
    assert cli("harness", "--model", str(tmp_path), "--tasks", "spanlab_capitals", "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: lm-eval is not installed")


def test_shipped_tasks_are_local_json_files():
    tasks = local_tasks()
    assert set(tasks) == {"spanlab_capitals", "spanlab_proverbs"}
    import yaml

    for path in tasks.values():
        cfg = yaml.safe_load(path.read_text())
        assert cfg["dataset_path"] == "json"
        for rel in cfg["dataset_kwargs"]["data_files"].values():
            assert (path.parent / rel).is_file()
