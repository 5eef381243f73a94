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
    from spanlab.models.hf import HFBackend

    ref = HFBackend(tiny_models["llama"], device="cpu", attn_implementation="sdpa").generate(PROMPTS, 10)
    monkeypatch.setenv("SPANLAB_DECODE_ATTN", path)
    fast = HFBackend(tiny_models["llama"], device="cpu", attn_implementation="spanlab_sdpa", cache_implementation="static")
    assert fast.generate(PROMPTS, 10) == ref


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
