"""Mamba2 decode-step kernels (spanlab.models.mamba2_kernels): the same results as transformers'
torch fallbacks (float32 to 1e-5, bf16 to bf16 rounding) on CPU through Triton's interpreter and
on CUDA; installed in every Mamba2-family module without displacing real kernels; CPU calls keep
the original function; a CUDA model decodes the same tokens with them."""

from __future__ import annotations

import importlib
import os
import pathlib
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from spanlab.models import mamba2_kernels as mk  # noqa: E402
from spanlab.models.arch import ARCHS  # noqa: E402
from spanlab.models.hf_compat import is_torch_fallback  # noqa: E402

HERE = pathlib.Path(__file__).parent
MAMBA2 = "transformers.models.mamba2.modeling_mamba2"


@pytest.mark.slow
def test_kernels_in_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, str(HERE / "mamba2_kernel_checks.py"), "cpu", "conv", "ssm"], env=env,
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "mamba2 kernel checks passed" in r.stdout


@pytest.fixture
def clean():
    mk.uninstall()
    yield
    mk.uninstall()


def test_profiles_list_every_mamba2_family_module():
    assert MAMBA2 in mk.MODULES
    for name in ("mamba2", "mamba2_hybrid", "mamba2attn"):
        assert ARCHS[name].decode_kernels, name
        for module in ARCHS[name].decode_kernels:
            mod = importlib.import_module(module)
            for glob in mk.GLOBALS:  # the names the mixers look up exist there
                assert is_torch_fallback(getattr(mod, glob), glob), (module, glob)


def test_install_is_idempotent_and_uninstall_restores(clean):
    before = {(m, g): getattr(importlib.import_module(m), g) for m in mk.MODULES for g in mk.GLOBALS}
    done = mk.install()
    assert set(done) == set(mk.MODULES)
    assert mk.install() == done
    for (m, g), fn in before.items():
        cur = getattr(importlib.import_module(m), g)
        assert cur is not fn and cur._spanlab_fallback is fn
    mk.uninstall()
    for (m, g), fn in before.items():
        assert getattr(importlib.import_module(m), g) is fn


def test_a_real_kernel_is_never_displaced(clean, monkeypatch):
    mod = importlib.import_module(MAMBA2)

    def selective_state_update(*a, **k):  # stands for mamba_ssm's kernel
        raise AssertionError("not called here")

    monkeypatch.setattr(mod, mk.SSM, selective_state_update)
    done = mk.install()
    assert MAMBA2 not in done  # both globals must be ours for the module to count
    assert getattr(mod, mk.SSM) is selective_state_update
    assert mk.installed_here(getattr(mod, mk.CONV))


def test_cpu_calls_go_to_the_original_function(clean):
    mod = importlib.import_module(MAMBA2)
    orig = getattr(mod, mk.SSM)
    calls = []

    def spy(*a, **k):
        calls.append(1)
        return orig(*a, **k)

    fn = mk.make_ssm_update(spy)
    b, h, p, n = 2, 4, 8, 16
    state = torch.randn(b, h, p, n)
    x, dt = torch.randn(b, h, p), torch.randn(b, h, 1).expand(b, h, p)
    A = -torch.rand(h)[:, None, None].expand(h, p, n)
    Bm, Cm = torch.randn(b, 2, n), torch.randn(b, 2, n)
    s2 = state.clone()
    out = fn(state, x, dt, A, Bm, Cm, None, dt_bias=None, dt_softplus=True, z=None)
    assert calls == [1]
    assert torch.equal(out, orig(s2, x, dt, A, Bm, Cm, None, dt_bias=None, dt_softplus=True, z=None))
    assert torch.equal(state, s2)


def test_backend_records_the_decode_path_and_the_off_switch(clean, kernel_choices, tokenizer, tmp_path):
    import transformers as T

    from spanlab.models.hf import HFBackend

    cfg = T.Mamba2Config(hidden_size=32, num_hidden_layers=1, state_size=8, expand=2, head_dim=8, num_heads=8,
                         n_groups=1, chunk_size=16, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    T.Mamba2ForCausalLM(cfg).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert HFBackend(str(tmp_path), device="cpu").describe()["decode_kernels"] == "transformers (CPU)"
    assert mk.installed(MAMBA2)
    kernel_choices("mamba2_decode=torch")
    assert HFBackend(str(tmp_path), device="cpu").describe()["decode_kernels"] == "transformers"
    assert not mk.installed(MAMBA2)
    llama = T.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                          num_key_value_heads=1, vocab_size=len(tokenizer))
    T.LlamaForCausalLM(llama).save_pretrained(tmp_path / "llama")
    tokenizer.save_pretrained(tmp_path / "llama")
    assert HFBackend(str(tmp_path / "llama"), device="cpu").describe()["decode_kernels"] is None


@pytest.mark.gpu
def test_kernels_cuda():
    pytest.importorskip("triton")
    import mamba2_kernel_checks

    mamba2_kernel_checks.run("cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_real_size_step_cuda(dtype):
    # A 1B Mamba2 layer's geometry (64 heads x 64, state 128, 1 group; conv over 4352 channels).
    pytest.importorskip("triton")
    import mamba2_kernel_checks as c

    gen = torch.Generator().manual_seed(5)
    st, x, dt, A, Bm, Cm, D, dtb, z = c.ssm_inputs(16, 64, 64, 128, 1, True, False, True, True, dtype, "cuda", gen)
    s_ref = st.clone()
    want = c.fallback(mk.SSM)(s_ref, x, dt, A, Bm, Cm, D, dt_bias=dtb, dt_softplus=True, z=z)
    got = mk.ssm_update_triton(st, x, dt, A, Bm, Cm, D, dtb, True, z)
    assert c.rel(got, want) <= c.TOL[dtype] and c.rel(st, s_ref) <= c.TOL[dtype]
    xc, sc, w, bb = c.conv_inputs(16, 4352, 4, 1, True, dtype, "cuda", gen)
    sc_ref = sc.clone()
    want = c.fallback(mk.CONV)(xc, sc_ref, w, bb, activation="silu")
    assert c.rel(mk.conv_update_triton(xc, sc, w, bb, "silu"), want) <= c.TOL[dtype]
    assert torch.equal(sc, sc_ref)


@pytest.mark.gpu
def test_model_decodes_the_same_tokens_cuda(clean, tokenizer):
    pytest.importorskip("triton")
    import transformers as T

    torch.manual_seed(0)
    cfg = T.Mamba2Config(hidden_size=64, num_hidden_layers=2, state_size=16, expand=2, head_dim=16, num_heads=8,
                         n_groups=2, chunk_size=32, vocab_size=len(tokenizer), initializer_range=0.1)
    model = T.Mamba2ForCausalLM(cfg).cuda().eval()
    ids = torch.randint(0, len(tokenizer), (3, 20), device="cuda")
    kw = {"max_new_tokens": 16, "do_sample": False, "min_new_tokens": 16, "pad_token_id": 0}
    want = model.generate(ids, **kw)
    mk.install()
    calls = []
    mod = importlib.import_module(MAMBA2)
    orig = mk.ssm_update_triton
    try:
        mk.ssm_update_triton = lambda *a, **k: (calls.append(1), orig(*a, **k))[1]
        got = model.generate(ids, **kw)
    finally:
        mk.ssm_update_triton = orig
    assert calls and mk.installed_here(getattr(mod, mk.SSM))
    assert torch.equal(got, want)
