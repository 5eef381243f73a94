"""Mamba2 prefill-glue kernels (spanlab.models.mamba2_prefill_kernels): the causal conv1d + SiLU (with
the padding mask and a stored conv state) and the gated RMSNorm against float64 and transformers'
code, and tiny Mamba2 / Bamba / Zamba2 / FalconH1 models giving transformers' logits with them, on
CPU through Triton's interpreter and on CUDA; installed only over transformers' torch code; CPU
runs keep transformers' code; the HF backend records them and the off switch."""

from __future__ import annotations

import importlib
import inspect
import os
import pathlib
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from spanlab import triton_support  # noqa: E402
from spanlab.models import mamba2_prefill_kernels as mpk  # noqa: E402

HERE = pathlib.Path(__file__).parent
MAMBA2 = "transformers.models.mamba2.modeling_mamba2"


@pytest.fixture
def clean():
    mpk.uninstall()
    yield
    mpk.uninstall()


@pytest.mark.slow
def test_kernels_in_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, str(HERE / "mamba2_prefill_kernel_checks.py"), "cpu", "conv", "norm", "models",
                        "dispatch"], env=env,
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "mamba2 prefill kernel checks passed" in r.stdout
    for name in ("conv", "norm", "mamba2", "bamba", "zamba2", "falcon_h1", "mamba2 bf16", "dispatch"):
        assert f"{name} ok" in r.stdout, name


@pytest.mark.slow
def test_kernels_compile_for_hopper_vectorised_without_spills():
    """Compiled for sm_90 on this machine (no GPU): what the interpreter cannot check."""
    pytest.importorskip("triton")
    import mamba2_prefill_kernel_checks as c

    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
    except ImportError:
        pytest.skip("this triton has no GPU backend")
    c.check_compile()


def test_every_listed_module_has_known_norms_and_mixers():
    """transformers 5.25's gated norms are the two reviewed formulas, and every mixer has the shape
    the patch relies on; a release that changes one fails here (and the patch turns itself off)."""
    seen = {}
    for name in mpk.MODULES:
        mod = importlib.import_module(name)
        for attr, obj in vars(mod).items():
            if not isinstance(obj, type) or obj.__module__ != name:
                continue
            if attr.endswith("RMSNormGated"):
                seen[attr] = mpk.norm_formula(obj)
            elif "causal_conv1d_forward(" in inspect.getsource(obj):
                seen[attr] = mpk.mixer_shape(obj)
    assert seen == {
        "Mamba2RMSNormGated": "mamba2", "BambaRMSNormGated": "mamba2", "Zamba2RMSNormGated": "mamba2",
        "FalconH1RMSNormGated": "falcon_h1", "NemotronHRMSNormGated": "mamba2",
        "GraniteMoeHybridRMSNormGated": "mamba2",
        "Mamba2Mixer": (True, True), "BambaMixer": (True, True), "Zamba2MambaMixer": (True, True),
        "FalconH1Mixer": (True, True), "NemotronHMamba2Mixer": (True, True), "GraniteMoeHybridMambaLayer": (True, True),
    }
    # Another formula (Llama's plain RMSNorm) is not taken for one of these.
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    assert mpk.norm_formula(LlamaRMSNorm) is None


def test_install_globals_is_idempotent_and_uninstall_restores(clean):
    before = {m: getattr(importlib.import_module(m), mpk.CONV_FORWARD) for m in mpk.MODULES}
    done = mpk.install_globals()
    assert set(done) == set(mpk.MODULES)
    assert mpk.install_globals() == done
    for m, fn in before.items():
        cur = getattr(importlib.import_module(m), mpk.CONV_FORWARD)
        assert cur is not fn and cur._spanlab_fallback is fn
    mpk.uninstall()
    for m, fn in before.items():
        assert getattr(importlib.import_module(m), mpk.CONV_FORWARD) is fn


def test_a_real_conv_kernel_is_never_displaced(clean, monkeypatch):
    mod = importlib.import_module(MAMBA2)

    def causal_conv1d_fn(*a, **k):  # stands for causal-conv1d's kernel
        raise AssertionError("not called here")

    causal_conv1d_fn.__module__ = "causal_conv1d"
    monkeypatch.setattr(mod, mpk.CONV_FN, causal_conv1d_fn)
    before = getattr(mod, mpk.CONV_FORWARD)
    assert MAMBA2 not in mpk.install_globals()
    assert getattr(mod, mpk.CONV_FORWARD) is before


def _tiny_mamba2():
    import transformers as T

    torch.manual_seed(0)
    cfg = T.Mamba2Config(hidden_size=32, num_hidden_layers=2, state_size=8, expand=2, head_dim=8, num_heads=8,
                         n_groups=2, chunk_size=8, vocab_size=97, pad_token_id=0)
    return T.Mamba2ForCausalLM(cfg).eval()


def test_cpu_runs_keep_transformers_code(clean):
    import mamba2_prefill_kernel_checks as c

    if triton_support.interpreting():
        pytest.skip("TRITON_INTERPRET=1 in this process runs the kernels on CPU tensors")
    model = _tiny_mamba2()
    ids = torch.randint(3, 97, (2, 12))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    assert mpk.install(model) == ["conv1d", "gated_norm"]
    try:
        with torch.no_grad(), c.Spy() as spy:
            got = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    finally:
        mpk.uninstall_model(model)
    assert spy.calls == {"conv": 0, "norm": 0}
    assert torch.equal(got, want)
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_backend_records_the_prefill_kernels_and_the_off_switch(clean, kernel_choices, tokenizer, tmp_path):
    import transformers as T

    from spanlab.models.hf import HFBackend

    cfg = T.Mamba2Config(hidden_size=32, num_hidden_layers=1, state_size=8, expand=2, head_dim=8, num_heads=8,
                         n_groups=1, chunk_size=16, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    T.Mamba2ForCausalLM(cfg).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert HFBackend(str(tmp_path), device="cpu").describe()["prefill_kernels"] == []  # CPU: nothing installed
    assert not mpk.installed(MAMBA2)
    mpk.install_globals()
    kernel_choices("mamba2_prefill=torch")
    assert HFBackend(str(tmp_path), device="cpu").describe()["prefill_kernels"] == []
    assert not mpk.installed(MAMBA2)  # the off switch takes the globals back
    llama = T.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                          num_key_value_heads=1, vocab_size=len(tokenizer))
    T.LlamaForCausalLM(llama).save_pretrained(tmp_path / "llama")
    tokenizer.save_pretrained(tmp_path / "llama")
    assert HFBackend(str(tmp_path / "llama"), device="cpu").describe()["prefill_kernels"] is None


@pytest.mark.gpu
def test_kernels_cuda(clean):
    pytest.importorskip("triton")
    import mamba2_prefill_kernel_checks

    mamba2_prefill_kernel_checks.run("cuda")


@pytest.mark.gpu
def test_real_size_cuda(clean):
    """A 1B Mamba2 layer at 16K tokens: conv over 4352 xBC channels of the (L, 8512) projection, the
    norm over 4096 channels of the scan's float32 output with the bf16 gate."""
    pytest.importorskip("triton")
    import mamba2_prefill_kernel_checks as c

    gen = torch.Generator(device="cuda").manual_seed(3)
    L, inter, conv_dim, proj = 16384, 4096, 4352, 8512
    zxbcdt = torch.randn(1, L, proj, device="cuda", dtype=torch.bfloat16, generator=gen)
    x = zxbcdt[:, :, inter:inter + conv_dim].transpose(1, 2)
    w = (torch.randn(conv_dim, 4, device="cuda", generator=gen) / 2).to(torch.bfloat16)
    bias = torch.randn(conv_dim, device="cuda", generator=gen).to(torch.bfloat16)
    got = mpk.conv_prefill_triton(x, w, bias, "silu")
    assert c.rel(got, c.conv_transformers(x, w, bias, "silu", None, None)) <= c.TOL[torch.bfloat16]
    y = torch.randn(1, L, inter, device="cuda", generator=gen)
    gate = zxbcdt[:, :, :inter]
    norm = c.norm_module("mamba2", inter, 1, False, 1e-5, torch.bfloat16, "cuda", torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = norm(y, gate).to(torch.bfloat16)
    got = mpk.gated_norm_triton(y, gate, norm.weight, 1e-5, inter, out_dtype=torch.bfloat16)
    assert c.rel(got, want) <= 1e-2 and (got != want).float().mean() < 0.02


@pytest.mark.gpu
def test_model_generates_the_same_tokens_cuda(clean):
    pytest.importorskip("triton")
    model = _tiny_mamba2().cuda()
    ids = torch.randint(3, 97, (3, 20), device="cuda")
    mask = torch.ones_like(ids)
    mask[1, :6] = 0
    kw = {"max_new_tokens": 12, "min_new_tokens": 12, "do_sample": False, "pad_token_id": 0}
    want = model.generate(ids, attention_mask=mask, **kw)
    assert mpk.install(model) == ["conv1d", "gated_norm"]
    try:
        got = model.generate(ids, attention_mask=mask, **kw)
    finally:
        mpk.uninstall_model(model)
    assert torch.equal(got, want)
