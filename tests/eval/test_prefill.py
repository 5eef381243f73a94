"""Chunked prefill gives the answers of one-shot prefill, and keeps Mamba2's prefill memory flat.

Tiny random fp32 models of every recurrent/hybrid class, built here. The weights are drawn with a
larger init range than the default (0.1) so the SSM layers weigh on the logits: with it, a chunk
that restarts a layer's state (transformers' Jamba) moves the logits by ~3e-2 of their scale, while
exact chunking stays below ~1e-6, so the tolerance below separates the two by four orders.
"""

from __future__ import annotations

import math

import pytest

CHUNKED = {"mamba2": "state", "rwkv": "state", "bamba": "generate", "zamba2": "generate", "falcon_h1": "generate",
           "recurrent_gemma": "generate"}  # RecurrentGemma: after spanlab.models.prefill_recurrent_gemma.install
ONE_SHOT = ("llama", "jamba")
REL_TOL = 1e-5  # of the logits' scale; fp32 chunking noise measured <= 1.2e-6


def left_padded_prompts(arch: str, tokenizer, width: int = 150):
    """A batch of random prompts, the second and third left-padded (RWKV runs at batch 1)."""
    import torch

    g = torch.Generator().manual_seed(1)
    rows = 1 if arch == "rwkv" else 3
    ids = torch.randint(5, len(tokenizer), (rows, width), generator=g)
    mask = torch.ones_like(ids)
    for r, pad in zip(range(1, rows), (20, 81)):
        ids[r, :pad] = tokenizer.pad_token_id
        mask[r, :pad] = 0
    return ids, mask


def greedy_config(tokenizer, new_tokens: int = 8):
    from transformers import GenerationConfig

    return GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                            eos_token_id=None, pad_token_id=tokenizer.pad_token_id,
                            return_dict_in_generate=True, output_logits=True)


def assert_logits_close(got, ref):
    for step, (a, b) in enumerate(zip(got, ref)):
        scale = float(b.abs().max())
        diff = float((a - b).abs().max())
        assert diff <= REL_TOL * scale, f"step {step}: logits differ by {diff:.3g} (scale {scale:.3g})"


def record_widths(model):
    """Sequence width of every forward call the model makes."""
    widths: list[int] = []
    handle = model.register_forward_pre_hook(lambda m, args, kwargs: widths.append(kwargs["input_ids"].shape[1]),
                                             with_kwargs=True)
    return widths, handle


@pytest.mark.parametrize("chunk", [7, 64])
@pytest.mark.parametrize("arch", sorted(CHUNKED))
def test_chunked_prefill_equals_one_shot(arch, chunk, tokenizer, build_tiny):
    """Same greedy tokens and logits (prefill's last position and every decode step) as one-shot
    `generate`, on a left-padded batch, with chunk sizes that do not divide the prompt."""
    import torch

    from spanlab.models.prefill import chunked_generate, plan_prefill

    model = build_tiny(arch)
    ids, mask = left_padded_prompts(arch, tokenizer)
    gc = greedy_config(tokenizer)
    plan = plan_prefill(model, chunk)
    assert plan.mode == CHUNKED[arch] and plan.chunk == chunk
    with torch.inference_mode():
        ref = model.generate(input_ids=ids, attention_mask=mask, generation_config=gc)
        widths, hook = record_widths(model)
        got = chunked_generate(model, plan, ids, mask, gc)
        hook.remove()
    # It really ran in chunks: no forward wider than the chunk, every token fed exactly once.
    assert max(widths) <= chunk
    assert sum(widths) == ids.shape[1] + gc.max_new_tokens - 1
    assert len([w for w in widths if w > 1]) >= math.ceil((ids.shape[1] - 1) / chunk) - 1
    assert torch.equal(got.sequences, ref.sequences)
    assert_logits_close(got.logits, ref.logits)


@pytest.mark.parametrize("arch", ["mamba2", "rwkv"])
def test_state_mode_hands_generate_a_tail_long_enough_for_stop_strings(arch, tokenizer, build_tiny):
    """A stop string may start inside the prompt: generate must see as many prompt tokens as the
    stop string has characters, and the answer stays that of one shot."""
    import copy

    import torch

    from spanlab.models.prefill import chunked_generate, plan_prefill

    model = build_tiny(arch)
    ids, mask = left_padded_prompts(arch, tokenizer)
    gc = copy.copy(greedy_config(tokenizer, new_tokens=4))
    gc.stop_strings = ["\n", "zzz"]
    with torch.inference_mode():
        ref = model.generate(input_ids=ids, attention_mask=mask, generation_config=gc, tokenizer=tokenizer)
        widths, hook = record_widths(model)
        got = chunked_generate(model, plan_prefill(model, 64), ids, mask, gc, tokenizer=tokenizer)
        hook.remove()
    assert widths[:3] == [64, 64, ids.shape[1] - 128 - 4] and widths[3] == 4  # tail: 1 + len("zzz")
    assert torch.equal(got.sequences, ref.sequences)
    assert_logits_close(got.logits, ref.logits)


def test_jamba_chunking_would_change_the_answer_so_it_stays_one_shot(tokenizer, capsys, build_tiny):
    """transformers' own prefill_chunk_size restarts Jamba's SSM state at every chunk: the
    tolerance above catches it, and spanlab keeps Jamba one-shot, saying so."""
    import copy

    import torch

    from spanlab.models.prefill import note, plan_prefill

    model = build_tiny("jamba")
    ids, mask = left_padded_prompts("jamba", tokenizer)
    gc = greedy_config(tokenizer, new_tokens=1)
    naive = copy.copy(gc)
    naive.prefill_chunk_size = 7
    with torch.inference_mode():
        ref = model.generate(input_ids=ids, attention_mask=mask, generation_config=gc).logits[0]
        bad = model.generate(input_ids=ids, attention_mask=mask, generation_config=naive).logits[0]
    assert float((bad - ref).abs().max()) > 100 * REL_TOL * float(ref.abs().max())

    plan = plan_prefill(build_tiny("jamba"), 7)
    assert plan.mode == "one-shot" and "state" in plan.reason
    note(plan)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("note: prefilling prompts in one shot: ") and "JambaForCausalLM" in err[0]
    # Attention-only models and chunking switched off prefill in one shot without a note.
    for plan in (plan_prefill(build_tiny("llama"), 7), plan_prefill(build_tiny("mamba2"), 0)):
        assert plan.mode == "one-shot"
        note(plan)
    assert capsys.readouterr().err == ""


def test_unverified_setups_prefill_in_one_shot(tokenizer, monkeypatch, build_tiny):
    """Remote code and transformers older than the verified cache API fall back, with a note."""
    from spanlab.models import prefill
    from spanlab.models.prefill import plan_prefill

    model = build_tiny("mamba2")
    plan = plan_prefill(model, 64, trust_remote_code=True)
    assert plan.mode == "one-shot" and plan.tell and "remote code" in plan.reason
    assert not plan_prefill(build_tiny("llama"), 64, trust_remote_code=True).tell
    monkeypatch.setattr(prefill, "transformers_version", lambda: "5.9.0")
    plan = plan_prefill(model, 64)
    assert plan.mode == "one-shot" and plan.tell and "5.9.0" in plan.reason


def _prompts(tokenizer, words: tuple[int, ...]) -> list[str]:
    import random

    rng = random.Random(0)
    vocab = ["alpha", "beta", "gamma", "delta", "river", "stone", "seven", "blue", "quiet", "market"]
    return [" ".join(rng.choice(vocab) for _ in range(n)) for n in words]


@pytest.mark.parametrize("arch", sorted(CHUNKED) + list(ONE_SHOT))
def test_backend_generations_equal_with_and_without_chunking(arch, tokenizer, build_tiny):
    """The HF backend end to end (tokenise, left-pad, prefill, decode, cut): identical generations
    with --prefill-chunk 64 and 0, and the manifest says how the prompts were prefilled."""
    from spanlab.models.hf import HFBackend

    model = build_tiny(arch)
    prompts = _prompts(tokenizer, (90, 140) if arch == "rwkv" else (60, 150, 110))
    runs = {}
    for chunk in (64, 0):
        backend = HFBackend("tiny", model_obj=model, tokenizer_obj=tokenizer, dtype="float32", device="cpu",
                            prefill_chunk=chunk)
        batches = [[p] for p in prompts] if backend.padding == "none" else [prompts]
        runs[chunk] = [g for b in batches for g in backend.generate(b, max_new_tokens=4, stop=["\n"])]
        prefill = backend.describe()["prefill"]
        expected = CHUNKED.get(arch, "one-shot") if chunk else "one-shot"
        assert prefill["mode"] == expected and prefill["chunk"] == (chunk if expected != "one-shot" else 0)
    assert max(g.prompt_tokens for g in runs[0]) > 64  # long enough to be chunked
    assert runs[64] == runs[0]


def test_prefill_chunk_flag(tmp_path, tokenizer, cli, capsys, build_tiny):
    """`spanlab eval --prefill-chunk`: a bad value exits 2 with one line; chunked and one-shot runs
    journal the same predictions and record the prefill in the manifest."""
    import json

    d = tmp_path / "mamba2"
    build_tiny("mamba2").save_pretrained(d)
    tokenizer.save_pretrained(d)
    common = ("eval", "--model", d, "--tasks", "niah_single_1", "--lengths", "512", "--num-samples", "2",
              "--max-new-tokens", "4", "--device", "cpu", "--no-progress")
    assert cli(*common, "--out", tmp_path / "bad", "--prefill-chunk", "-1") == 2
    assert "--prefill-chunk must be" in capsys.readouterr().err
    preds = {}
    for chunk in (100, 0):
        out = tmp_path / f"run{chunk}"
        assert cli(*common, "--out", out, "--prefill-chunk", chunk) == 0
        rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        preds[chunk] = {r["id"]: r["prediction"] for r in rows}
        assert len(rows) == 2 and all(r["prompt_tokens"] > 100 for r in rows)
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["model"]["prefill"] == ({"mode": "state", "chunk": 100} if chunk else
                                                {"mode": "one-shot", "chunk": 0, "reason": "chunked prefill off (--prefill-chunk 0)"})
    assert preds[100] == preds[0]


class LargestIntermediate:
    """Byte size of the largest tensor any aten op produces while active (a TorchDispatchMode)."""

    def __enter__(self):
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        outer = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor):
                        outer.bytes = max(outer.bytes, t.numel() * t.element_size())
                return out

        self.bytes = 0
        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)


def test_mamba2_chunked_prefill_memory_does_not_grow_with_the_prompt(tokenizer, build_tiny):
    """Through the backend, the largest tensor Mamba2's prefill creates is the same for a 4x longer
    prompt when chunked, while one-shot prefill's grows with the prompt (the torch SSM path
    materialises per-chunk tensors for the whole prompt: what asks for 128 GiB at 16K on a GPU)."""
    from spanlab.models.hf import HFBackend

    model = build_tiny("mamba2")
    short, long = _prompts(tokenizer, (170, 680))
    peak = {}
    for chunk in (64, 0):
        backend = HFBackend("tiny", model_obj=model, tokenizer_obj=tokenizer, dtype="float32", device="cpu",
                            prefill_chunk=chunk)
        n_short, n_long = backend.count_tokens([short, long])
        assert n_long >= 3.5 * n_short and n_short > 4 * 64
        for name, prompt in (("short", short), ("long", long)):
            with LargestIntermediate() as m:
                backend.generate([prompt], max_new_tokens=2)
            peak[chunk, name] = m.bytes
    assert peak[64, "long"] == peak[64, "short"]
    assert peak[0, "long"] >= 3 * peak[0, "short"]
    assert peak[64, "long"] * 8 < peak[0, "long"]
