"""`spanlab finetune` then `spanlab ppl` from the CLI, on tiny models saved to disk."""

from __future__ import annotations

import json
import math

import pytest
import torch

from spanlab.cli import main

RECIPES = {
    "llama": ("lora+", ["--attention", "sw", "--window", "8"]),
    # The hybrid also checkpoints selectively (its Mamba2 mixers' and SE's ops under torch's SAC).
    "bamba": ("hylora", ["--attention", "se", "--chunk-size", "8", "--block-size", "4", "--top-k", "2",
                         "--recompute", "elementwise"]),
    "zamba2": ("hylora", ["--attention", "s2", "--group-size", "8", "--lr", "1e-2"]),
}


@pytest.fixture
def corpus(tmp_path):
    # A repeated 12-word phrase: easy to learn, so a few steps must lower the loss.
    phrase = " ".join(f"w{i}" for i in (3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 32))
    path = tmp_path / "corpus.txt"
    path.write_text(" ".join([phrase] * 60))
    return path


def _save_base(build, arch, tokenizer, path):
    model = build[arch]()
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("arch_name", sorted(RECIPES))
def test_finetune_then_merged_model_matches_adapters(tmp_path, build, tokenizer, corpus, arch_name):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = _save_base(build, arch_name, tokenizer, tmp_path / "base")
    out = tmp_path / "run"
    peft, extra = RECIPES[arch_name]
    args = ["finetune", "--model", str(base), "--data", str(corpus), "--out", str(out), "--context", "32",
            "--peft", peft, "--rank", "4", "--alpha", "8", "--steps", "10", "--micro-batch-size", "2",
            "--grad-accum", "1", "--warmup-steps", "1", "--mixed-precision", "no", "--save-every", "4",
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", *extra]
    if "--lr" not in extra:
        args += ["--lr", "1e-2"]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code in (0, None)

    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 11))
    assert log[-1]["loss"] < 0.85 * log[0]["loss"]

    ids = torch.randint(0, 92, (1, 40), generator=torch.Generator().manual_seed(0))
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out / "final").eval()
    with torch.no_grad():
        a = adapted(input_ids=ids).logits
        m = merged(input_ids=ids).logits
        b = AutoModelForCausalLM.from_pretrained(base)(input_ids=ids).logits
    torch.testing.assert_close(m, a, atol=1e-4, rtol=1e-4)
    assert (a - b).abs().max() > 1e-3  # training changed the model


def test_ppl_matches_the_model_loss_on_each_window(tmp_path, build, tokenizer, corpus):
    from transformers import AutoModelForCausalLM

    base = _save_base(build, "llama", tokenizer, tmp_path / "base")
    journal = tmp_path / "ppl.jsonl"
    args = ["ppl", "--model", str(base), "--data", str(corpus), "--lengths", "16,64", "--dtype", "fp32",
            "--device", "cpu", "--out", str(journal), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code in (0, None)
    rows = {r["length"]: r for r in map(json.loads, journal.read_text().splitlines())}
    tokens = tokenizer(corpus.read_text(), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    for length in (16, 64):
        n = len(tokens) // length
        windows = torch.tensor(tokens[: n * length]).view(n, length)
        with torch.no_grad():
            losses = [model(input_ids=w[None], labels=w[None]).loss.item() for w in windows]
        assert rows[length]["windows"] == n
        assert rows[length]["ppl"] == pytest.approx(math.exp(sum(losses) / n), rel=1e-4)
    # A re-run skips the finished lengths instead of appending them again.
    with pytest.raises(SystemExit):
        main(args)
    assert len(journal.read_text().splitlines()) == 2


def test_bad_input_exits_2_with_one_line(tmp_path, capsys, corpus):
    with pytest.raises(SystemExit) as e:
        main(["finetune", "--model", str(tmp_path / "nope"), "--data", str(corpus), "--out", str(tmp_path / "o"),
              "--no-progress"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "never downloads" in err
    with pytest.raises(SystemExit) as e:
        main(["finetune", "--model", str(tmp_path), "--data", str(corpus), "--out", str(tmp_path / "o"),
              "--attention", "dilated"])
    assert e.value.code == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["finetune", "--model", str(tmp_path), "--data", str(corpus), "--out", str(tmp_path / "o"),
              "--recompute", "some"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "recompute" in err and "elementwise" in err
