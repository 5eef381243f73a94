"""RecurrentGemma's chunked RG-LRU scan (spanlab.models.rglru_scan): equal to transformers' per-token
loop (alone and inside a tiny model, one shot and in chunks) on CPU through Triton's interpreter and
on CUDA; installed only where it runs; the kernel switch and a changed transformers turn it off."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from spanlab.models import rglru_scan  # noqa: E402

HERE = pathlib.Path(__file__).parent


@pytest.mark.slow
def test_scan_in_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, str(HERE / "rglru_scan_checks.py"), "cpu", "scan", "model"], env=env,
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "scan ok" in r.stdout and "model ok" in r.stdout


@pytest.mark.gpu
def test_scan_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("triton")
    sys.path.insert(0, str(HERE))
    import rglru_scan_checks as c

    c.check_scan("cuda")
    c.check_model("cuda")


def test_the_reviewed_loop_is_transformers_and_a_changed_one_is_not_taken():
    from transformers.models.recurrent_gemma.modeling_recurrent_gemma import RecurrentGemmaRglru

    assert rglru_scan.reviewed(RecurrentGemmaRglru)

    class Changed(RecurrentGemmaRglru):
        def _rnn_scan(self, hidden_states, recurrent_gate, reset, recurrent_states, acc_dtype=torch.float32):
            return hidden_states, recurrent_states

    assert not rglru_scan.reviewed(Changed)


def test_not_installed_on_cpu_or_when_switched_off():
    import transformers as T

    from spanlab import kernels

    cfg = T.RecurrentGemmaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                                 num_attention_heads=2, num_key_value_heads=1, head_dim=8, lru_width=16,
                                 attention_window_size=8)
    model = T.RecurrentGemmaForCausalLM(cfg)
    if not rglru_scan.interpreting():
        assert rglru_scan.install(model) == []  # CPU tensors keep transformers' loop
    with kernels.use("rglru_scan=torch"):
        assert not rglru_scan.enabled() and rglru_scan.install(model) == []
    assert not any(hasattr(m, "_spanlab_rglru_scan") for m in model.modules())


def test_the_recurrentgemma_profile_names_the_scan():
    from spanlab.models.arch import RECURRENT_GEMMA

    assert RECURRENT_GEMMA.prefill_kernels == "spanlab.models.rglru_scan"
