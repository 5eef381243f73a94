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


def test_path_choice(kernel_choices):
    from spanlab.errors import SpanlabError
    from spanlab.models import gqa_decode as G

    kernel_choices("decode_attn=auto")
    assert G.choose_path("cpu") == "sdpa"  # the kernel needs CUDA (or the interpreter)
    kernel_choices("decode_attn=matmul")
    assert G.choose_path("cuda") == "matmul"
    assert G.choose_path("cuda", "sdpa") == "sdpa"  # an explicit request wins over the setting
    with pytest.raises(SpanlabError, match="decode_attn='flash' is not one of auto, triton, matmul, sdpa"):
        kernel_choices("decode_attn=flash")


def test_split_counts_fill_the_gpu_without_tiny_splits():
    from spanlab.models.gqa_decode import num_splits

    assert num_splits(bh=256, T=16384, sms=132) == 3  # 768 programs for 132 SMs
    assert num_splits(bh=8, T=16384, sms=132) == 32  # batch 1: split the cache widely
    assert num_splits(bh=8, T=1000, sms=132) == 2  # but never below MIN_KEYS_PER_SPLIT keys
    assert num_splits(bh=4096, T=4096, sms=132) == 1


@pytest.mark.parametrize("path", ["matmul", "sdpa"])
def test_whole_model_generation_is_unchanged(path, tiny_models, monkeypatch, kernel_choices):
    from spanlab.models import gqa_decode as G
    from spanlab.models.hf import HFBackend

    ref = HFBackend(tiny_models["llama"], device="cpu", attn_implementation="sdpa").generate(PROMPTS, 10)
    kernel_choices(f"decode_attn={path}")
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


def test_mask_function_stands_in_for_causal_left_padding_only():
    """A left-padded prefill's (b, 1, q, T) mask is not built: a stand-in carries the paddings, and
    builds transformers' own mask on demand. Any other mask is transformers' as it was."""
    from transformers.masking_utils import (
        causal_mask_function,
        sdpa_mask,
        sliding_window_causal_mask_function,
    )

    from spanlab.models.gqa_decode import TAG, full_mask, spanlab_mask

    def args(pad2d, **kw):
        return {"batch_size": pad2d.shape[0], "q_length": pad2d.shape[1], "kv_length": pad2d.shape[1] + 3,
                "q_offset": 0, "kv_offset": 0, "mask_function": causal_mask_function, "attention_mask": pad2d.bool(),
                "allow_is_causal_skip": True, "device": "cpu"} | kw

    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    m = spanlab_mask(**args(left))
    assert getattr(m, TAG) == (5, (2, 0))
    assert m.dim() == 4 and m.numel() == 10  # (b, 1, 1, q): nothing of size q x T was made
    assert torch.equal(full_mask(m), causal_padding_mask((2, 0), 5, 8))  # on demand: transformers' mask
    assert full_mask(m) is full_mask(m)  # built once for all layers
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    holes = torch.tensor([[1, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    for a in (args(right), args(holes), args(left, q_offset=3), args(left, q_offset=torch.tensor(2)),
              args(left, mask_function=sliding_window_causal_mask_function(2)), args(left[:, :1], kv_length=4)):
        m = spanlab_mask(**a)
        assert getattr(m, TAG, None) is None
        want = sdpa_mask(**a)
        assert (m is None and want is None) or torch.equal(m, want)
    # No padding at all: SDPA's is_causal, as transformers does it.
    assert spanlab_mask(**args(torch.ones(2, 5, dtype=torch.long))) is None


def test_left_padded_prefill_builds_no_full_mask(tiny_models, monkeypatch):
    """Generation of a left-padded batch never builds a (b, 1, q >= 2, T) mask, and gives the
    tokens of transformers' own SDPA path."""
    from transformers import masking_utils

    from spanlab.models import gqa_decode as G
    from spanlab.models.hf import HFBackend

    ref = HFBackend(tiny_models["llama"], device="cpu", attn_implementation="sdpa").generate(PROMPTS, 8)
    built = []
    real = masking_utils.sdpa_mask
    monkeypatch.setattr(masking_utils, "sdpa_mask", lambda *a, **k: built.append(k.get("q_length")) or real(*a, **k))
    for cache in ("static", None):
        built.clear()
        fast = HFBackend(tiny_models["llama"], device="cpu", attn_implementation=G.NAME, cache_implementation=cache)
        assert fast.generate(PROMPTS, 8) == ref
        assert built and all(q == 1 for q in built)  # decode steps only


def test_segments_cut_each_row_into_padding_and_tokens():
    from spanlab.models.gqa_decode import segments

    assert segments((2, 0, 5), 5) == [0, 2, 5, 10, 15]  # row 2 is all padding: one segment
    assert segments((0, 0), 4) == [0, 4, 8]
    assert segments((3,), 4) == [0, 3, 4]


def test_prefill_path_choice(kernel_choices):
    from spanlab.errors import SpanlabError
    from spanlab.models import gqa_decode as G

    q32 = torch.zeros(1, 2, 3, 16)
    kernel_choices("prefill_attn=auto")
    assert G.choose_prefill(q32) == "rows"  # the default
    kernel_choices("prefill_attn=varlen")
    assert G.choose_prefill(q32) == "rows"  # asked for, cannot run here
    with pytest.raises(SpanlabError, match="prefill_attn='packed' is not one of"):
        kernel_choices("prefill_attn=packed")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_varlen_prefill_equals_rows_on_real_tokens(static, dtype):
    """One flash-attention call over the packed batch == per-row SDPA at every real position (fresh
    random inputs, GQA, uneven paddings including a row of one real token), finite everywhere."""
    from spanlab.models.gqa_decode import choose_prefill, prefill_rows, prefill_varlen

    g = torch.Generator().manual_seed(11)
    b, h, kvh, q, d = 6, 8, 2, 301, 64
    T = q + 40 if static else q
    pads = (0, 0, 17, 130, 299, 300)
    qq = torch.randn(b, q, h, d, generator=g).to("cuda", dtype).transpose(1, 2)
    if static:
        k, v = (torch.randn(b, kvh, T, d, generator=g).to("cuda", dtype) for _ in range(2))
    else:
        k, v = (torch.randn(b, q, kvh, d, generator=g).to("cuda", dtype).transpose(1, 2) for _ in range(2))
    assert choose_prefill(qq) == "rows" and choose_prefill(qq, "varlen") == "varlen"
    want = prefill_rows(qq, k, v, pads, d ** -0.5).float()
    got = prefill_varlen(qq, k, v, pads, d ** -0.5)
    assert got.shape == (b, q, h, d) and got.dtype == dtype and torch.isfinite(got).all()
    for r, p in enumerate(pads):
        err = float((got[r, p:].float() - want[r, p:]).norm() / want[r, p:].norm())
        assert err < 1e-2, (r, p, err)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_every_path_on_cuda():
    pytest.importorskip("triton")
    _checks().run_all("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_default_is_the_kernel_and_generates_like_plain_sdpa(dtype, tiny_models, monkeypatch, kernel_choices):
    pytest.importorskip("triton")
    from spanlab.models import gqa_decode as G
    from spanlab.models.hf import HFBackend

    kernel_choices("decode_attn=auto")
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
