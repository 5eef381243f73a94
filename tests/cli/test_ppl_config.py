"""`spanlab ppl` reads its options through `PplConfig`, as eval and finetune do theirs: one-line
errors naming the flag (or the YAML key), `--config ppl.yaml` with flags on top."""

from __future__ import annotations

import json

import pytest

from spanlab.errors import SpanlabError
from spanlab.finetune.config import PplConfig


def test_defaults_and_lengths_read_like_every_command():
    cfg = PplConfig.model_validate({"model": "m", "data": ["d"]})
    assert (cfg.lengths, cfg.attention, cfg.batch_size, cfg.dtype) == ([2048, 8192, 16384, 32768], "full", 1, "bf16")
    cfg = PplConfig.model_validate({"model": "m", "data": ["d"], "lengths": "2k,1.5k", "attention": "sw",
                                    "window": "1k"})
    assert cfg.lengths == [2048, 1536] and cfg.attention_params() == {"window": 1024}
    se = PplConfig.model_validate({"model": "m", "data": ["d"], "attention": "se", "chunk_size": "512", "top_k": 4})
    assert se.attention_params() == {"chunk_size": 512, "block_size": 32, "top_k": 4}


@pytest.mark.parametrize("args,message", [
    (["--lengths", "1"], "--lengths: a window predicts length-1 tokens"),
    (["--batch-size", "0"], "--batch-size must be greater than or equal to 1"),
    (["--max-windows", "0"], "--max-windows must be greater than or equal to 1"),
    (["--dtype", "fp8"], "--dtype must be 'bf16', 'fp16' or 'fp32'"),
    (["--attention", "sw"], "--attention sw needs --window"),
    (["--attention", "nope"], "--attention: unknown"),
    (["--window", "4kk"], "--window: bad length '4kk'"),
])
def test_bad_options_are_one_line_errors_naming_the_flag(args, message, tmp_path, user_error):
    err = user_error("ppl", "--model", tmp_path / "m", "--data", tmp_path, *args)
    assert message in err, err


def test_missing_model_or_data_and_an_out_folder(tmp_path, user_error):
    assert "missing --data" in user_error("ppl", "--model", tmp_path)
    assert "is a folder; ppl appends JSONL lines" in user_error("ppl", "--model", tmp_path, "--data", tmp_path,
                                                               "--out", tmp_path)


def test_config_file_with_flags_on_top(tmp_path, user_error):
    path = tmp_path / "ppl.yaml"
    path.write_text("model: m\ndata: [d]\nlengths: [1k, 4k]\nattention: sw\nwindow: 512\nkernels: {fused: 'off'}\n")
    cfg = PplConfig.from_yaml(path, lengths="2k")
    assert (cfg.model, cfg.lengths, cfg.window, cfg.kernels) == ("m", [2048], 512, {"fused": "off"})
    path.write_text("model: m\ndata: [d]\nbatch_size: 0\n")
    with pytest.raises(SpanlabError, match=r"ppl.yaml: batch_size must be greater than or equal to 1 \(got 0\)"):
        PplConfig.from_yaml(path)
    path.write_text("model: m\ndata: [d]\nbatchsize: 2\n")
    assert "ppl.yaml: batchsize: Extra inputs are not permitted" in user_error("ppl", "--config", path)
    assert "no such config file" in user_error("ppl", "--config", tmp_path / "none.yaml")


def test_a_run_from_a_config_file_journals_its_settings(tiny_llama, tmp_path, cli):
    corpus = tmp_path / "text.txt"
    corpus.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    journal = tmp_path / "ppl.jsonl"
    (tmp_path / "ppl.yaml").write_text(json.dumps({
        "model": str(tiny_llama), "data": [str(corpus)], "lengths": [32, 64], "dtype": "fp32", "device": "cpu",
        "out": str(journal), "cache_dir": str(tmp_path / "cache"), "progress": False,
        "kernels": {"se_backend": "math"}}))
    assert cli("ppl", "--config", tmp_path / "ppl.yaml", "--max-windows", "2") == 0
    rows = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [(r["length"], r["windows"]) for r in rows] == [(32, 2), (64, 2)]
    assert all(r["kernels"]["se_backend"] == "math" and r["attention"] == "full" for r in rows)
