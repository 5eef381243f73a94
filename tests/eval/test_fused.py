"""Fused RMSNorm / SwiGLU / rotary kernels (spanlab.models.fused): what they compute against
transformers' eager code, where they are installed, and that everything else is left alone.

Kernel checks (fused_checks.py) run on CPU through Triton's interpreter, in a subprocess (the
interpreter must be on before triton is imported), and compiled on CUDA.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
HERE = pathlib.Path(__file__).parent


def test_kernels_in_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, str(HERE / "fused_checks.py"), "cpu"], env=env, capture_output=True, text=True,
                       timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "fused kernel checks passed" in r.stdout


def test_install_patches_llama_code_only_and_cpu_runs_the_original(build_tiny):
    pytest.importorskip("triton")
    from spanlab.models import fused

    model = build_tiny("llama")
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        want = model(ids).logits
    assert fused.install(model) == ["rms_norm", "rotary", "silu_mul"]
    assert fused.install(model) == ["rms_norm", "rotary", "silu_mul"]  # idempotent
    with torch.no_grad():
        assert torch.equal(model(ids).logits, want)  # CPU float32: every patch falls back
    fused.uninstall(model)
    assert not any("forward" in m.__dict__ for m in model.modules())
    # Other formulas (Mamba2's gated norm, no rotary, no SwiGLU MLP) are not touched.
    assert fused.install(build_tiny("mamba2")) == []


def test_kernel_choice_switch(kernel_choices):
    from spanlab import kernels
    from spanlab.errors import SpanlabError
    from spanlab.models import fused

    kernel_choices("fused=off")
    assert not fused.enabled()
    kernel_choices("fused=auto")
    assert fused.enabled()
    with pytest.raises(SpanlabError, match="fused='sometimes' is not one of auto, off"):
        kernel_choices("fused=sometimes")
    with pytest.warns(FutureWarning, match="SPANLAB_KERNELS=fused=off"):  # the old switch, one more release
        assert kernels.from_env({"SPANLAB_FUSED": "0"}).fused == "off"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_kernels_on_cuda():
    pytest.importorskip("triton")
    import importlib.util

    spec = importlib.util.spec_from_file_location("fused_checks", HERE / "fused_checks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.run_all("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_default_installs_and_the_model_computes_the_same(tiny_models):
    """bf16 on CUDA: the backend installs the kernels, and a prefill's logits match the unfused
    model's to bf16 rounding (RMSNorm's mean may differ in its last bit)."""
    pytest.importorskip("triton")
    from spanlab.models.hf import HFBackend

    plain = HFBackend(tiny_models["llama"], device="cuda", dtype="bfloat16", fused="off")
    fast = HFBackend(tiny_models["llama"], device="cuda", dtype="bfloat16")
    assert fast.fused == ["rms_norm", "rotary", "silu_mul"] and plain.fused == []
    ids = torch.randint(10, 1000, (3, 50), device="cuda")
    with torch.inference_mode():
        want = plain.model(ids).logits.float()
        got = fast.model(ids).logits.float()
    assert float((got - want).norm() / want.norm()) < 2e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("graphs", ["off", "on"])
def test_decode_steps_use_the_kernels_only_inside_graphs(graphs, tiny_models, monkeypatch):
    """Launched from Python a Triton kernel costs more than the eager ops it replaces at one token per
    row: without CUDA graphs only the prefill is fused; with them, the captured steps are too."""
    pytest.importorskip("triton")
    from spanlab.models import fused
    from spanlab.models.hf import HFBackend

    rows = []
    real = fused.rms_norm
    monkeypatch.setattr(fused, "rms_norm", lambda x, *a, **k: rows.append(x.shape[-2]) or real(x, *a, **k))
    b = HFBackend(tiny_models["llama"], device="cuda", dtype="bfloat16", decode_graphs=graphs)
    b.generate(["Hello there", "A"], 8)
    assert rows and any(n > 1 for n in rows)  # the prefill
    assert any(n == 1 for n in rows) == (graphs == "on")  # warm-up and capture of the step
