"""Decode attention (spanlab_sdpa): every path computes transformers' masked SDPA.

The split-KV Triton kernel runs on CPU through Triton's interpreter (in a subprocess: the
interpreter must be on before triton is imported) and compiled on CUDA; the matmul and SDPA paths
run in-process on CPU. Shared checks: decode_checks.py.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

HERE = pathlib.Path(__file__).parent
PROMPTS = ["The special magic number for apple is 12345. What is the special magic number for apple?",
           "Hello", "One two three four five six seven eight nine ten", "A"]


def _checks():
    import importlib.util

    spec = importlib.util.spec_from_file_location("decode_checks", HERE / "decode_checks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_triton_split_kv_kernel_in_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, str(HERE / "decode_checks.py"), "cpu", "triton"], env=env, capture_output=True,
                       text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "decode attention checks passed" in r.stdout


def test_matmul_and_sdpa_paths_on_cpu():
    _checks().run_all("cpu", ("matmul", "sdpa"))


def test_path_choice(monkeypatch):
    from spanlab.models import gqa_decode as G

    monkeypatch.delenv(G.ENV, raising=False)
    assert G.choose_path("cpu") == "sdpa"  # the kernel needs CUDA (or the interpreter)
    monkeypatch.setenv(G.ENV, "matmul")
    assert G.choose_path("cuda") == "matmul"
    monkeypatch.setenv(G.ENV, "flash")
    with pytest.raises(ValueError, match=G.ENV):
        G.choose_path("cuda")


def test_split_counts_fill_the_gpu_without_tiny_splits():
    from spanlab.models.gqa_decode import num_splits

    assert num_splits(bh=256, T=16384, sms=132) == 3  # 768 programs for 132 SMs
    assert num_splits(bh=8, T=16384, sms=132) == 32  # batch 1: split the cache widely
    assert num_splits(bh=8, T=1000, sms=132) == 2  # but never below MIN_KEYS_PER_SPLIT keys
    assert num_splits(bh=4096, T=4096, sms=132) == 1


@pytest.mark.parametrize("path", ["matmul", "sdpa"])
def test_whole_model_generation_is_unchanged(path, tiny_models, monkeypatch):
    from spanlab.models import gqa_decode as G
    from spanlab.models.hf import HFBackend

    ref = HFBackend(tiny_models["llama"], device="cpu", attn_implementation="sdpa").generate(PROMPTS, 10)
    monkeypatch.setenv("SPANLAB_DECODE_ATTN", path)
    pads = []
    real = G.prefill_rows
    monkeypatch.setattr(G, "prefill_rows", lambda *a, **k: pads.append(a[3]) or real(*a, **k))
    fast = HFBackend(tiny_models["llama"], device="cpu", attn_implementation="spanlab_sdpa", cache_implementation="static")
    assert fast.generate(PROMPTS, 10) == ref
    counts = fast.count_tokens(PROMPTS)
    assert pads and pads[0] == tuple(max(counts) - c for c in counts)  # the left-padded prefill took the row path


def causal_padding_mask(pads, q, T):
    import torch

    pos = torch.arange(T)
    keep = (pos[None, :] <= torch.arange(q)[:, None])[None] & (pos[None, None, :] >= torch.tensor(pads)[:, None, None])
    return keep[:, None]  # (b, 1, q, T), what sdpa_mask builds for a left-padded prefill


@pytest.mark.parametrize("static", [False, True])
def test_prefill_rows_equal_masked_sdpa_on_real_tokens(static):
    """Unmasked causal attention per row == transformers' masked SDPA at every real position,
    zeros at padded ones; a static cache longer than the prompt is read only up to q."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from spanlab.models.gqa_decode import prefill_rows

    g = torch.Generator().manual_seed(3)
    b, h, kvh, q, d = 5, 8, 2, 29, 16
    T = q + 7 if static else q
    pads = (0, 4, 4, 0, 28)  # equal neighbours share a call; the last row has one real token
    qq = torch.randn(b, h, q, d, generator=g, dtype=torch.float64)
    k, v = (torch.randn(b, kvh, T, d, generator=g, dtype=torch.float64) for _ in range(2))
    mod = torch.nn.Module()
    mod.num_key_value_groups, mod.is_causal, mod.training = h // kvh, True, False
    want, _ = sdpa_attention_forward(mod, qq, k, v, causal_padding_mask(pads, q, T), scaling=d ** -0.5)
    got = prefill_rows(qq, k, v, pads, d ** -0.5)
    assert got.shape == want.shape == (b, q, h, d)
    for r, p in enumerate(pads):
        assert torch.allclose(got[r, p:], want[r, p:], atol=1e-12)
        assert not got[r, :p].any()
    # No padding at all: one batched call, the same function.
    want0, _ = sdpa_attention_forward(mod, qq, k, v, causal_padding_mask((0,) * b, q, T), scaling=d ** -0.5)
    assert torch.allclose(prefill_rows(qq, k, v, (0,) * b, d ** -0.5), want0, atol=1e-12)


def test_mask_function_notes_only_causal_left_padding():
    from transformers.masking_utils import (
        causal_mask_function,
        sliding_window_causal_mask_function,
    )

    from spanlab.models.gqa_decode import TAG, spanlab_mask

    def build(pad2d, **kw):
        args = {"batch_size": pad2d.shape[0], "q_length": pad2d.shape[1], "kv_length": pad2d.shape[1] + 3,
                "q_offset": 0, "kv_offset": 0, "mask_function": causal_mask_function, "attention_mask": pad2d,
                "allow_is_causal_skip": True, "device": "cpu"} | kw
        return spanlab_mask(**args)

    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    m = build(left)
    assert getattr(m, TAG) == (5, (2, 0))
    assert torch.equal(m, causal_padding_mask((2, 0), 5, 8))  # the mask itself is transformers'
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    holes = torch.tensor([[1, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    for m in (build(right), build(holes), build(left, q_offset=3), build(left, mask_function=sliding_window_causal_mask_function(2))):
        assert m is None or getattr(m, TAG, None) is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_every_path_on_cuda():
    pytest.importorskip("triton")
    _checks().run_all("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_default_is_the_kernel_and_generates_like_plain_sdpa(dtype, tiny_models, monkeypatch):
    pytest.importorskip("triton")
    from spanlab.models import gqa_decode as G
    from spanlab.models.hf import HFBackend

    monkeypatch.delenv(G.ENV, raising=False)
    assert G.choose_path("cuda") == "triton"
    calls = []
    real = G.triton_decode
    monkeypatch.setattr(G, "triton_decode", lambda *a, **k: calls.append(1) or real(*a, **k))
    fast = HFBackend(tiny_models["llama"], device="cuda", dtype=dtype)
    plain = HFBackend(tiny_models["llama"], device="cuda", dtype=dtype, attn_implementation="sdpa", cache_implementation=None)
    got = fast.generate(PROMPTS, 16)
    assert calls  # the kernel ran
    if dtype == "float32":  # bf16 rounding differs between kernels: near-ties of a random model may flip
        assert got == plain.generate(PROMPTS, 16)
    else:
        assert fast.generate(PROMPTS, 16) == got  # deterministic: no atomics, fixed splits
