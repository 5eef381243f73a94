"""`--kernels` on every run command and `kernels:` in their configs: checked before any work,
applied for the run, recorded with it (spanlab.kernels)."""

from __future__ import annotations

import json

import pytest

from spanlab import kernels
from spanlab.errors import SpanlabError


@pytest.mark.parametrize("args", [
    ["eval", "--model", "m", "--out", "{tmp}/run", "--tasks", "vt", "--lengths", "1k"],
    ["finetune", "--model", "m", "--data", "{tmp}", "--out", "{tmp}/run"],
    ["ppl", "--model", "m", "--data", "{tmp}"],
    ["profile", "--lengths", "64", "--out", "{tmp}/run"],
    ["study", "demo", "--out", "{tmp}/run"],
])
def test_every_run_command_checks_its_kernels_option(args, tmp_path, user_error):
    err = user_error(*[a.format(tmp=tmp_path) for a in args], "--kernels", "fused=sometimes")
    assert "fused='sometimes' is not one of auto, off" in err
    assert not (tmp_path / "run").exists()


def test_profile_records_the_kernel_choices_with_its_rows(tmp_path, cli):
    pytest.importorskip("torch")
    out = tmp_path / "prof"
    assert cli("profile", "--variants", "se", "--lengths", "64", "--chunk-sizes", "32", "--heads", "1",
               "--head-dim", "8", "--dtype", "fp32", "--device", "cpu", "--warmup", "0", "--repeats", "1",
               "--no-plots", "--out", out, "--kernels", "se_backend=sdpa,se_selection=torch") == 0
    runs = json.loads((out / "manifest.json").read_text())["runs"]
    assert len(runs) == 1 and runs[0]["kernels"] == {**kernels.KernelSettings().model_dump(),
                                                      "se_backend": "sdpa", "se_selection": "torch"}
    assert kernels.current().se_backend == "auto"  # the run's choices ended with it


def test_config_models_take_a_kernels_mapping(tmp_path):
    from spanlab.configs import validated
    from spanlab.eval import EvalConfig
    from spanlab.finetune.config import FinetuneConfig
    from spanlab.study.config import ProfileSpec

    assert validated(EvalConfig, {"model": "m", "out": "o", "kernels": "fused=off"}).kernels == {"fused": "off"}
    with pytest.raises(SpanlabError, match=r"^--kernels: unknown kernel choice 'x'"):
        validated(EvalConfig, {"model": "m", "out": "o", "kernels": {"x": "1"}})
    cfg = FinetuneConfig.parse({"model": "m", "out": str(tmp_path), "data": ["d"], "kernels": {"se_memory": "backend"}})
    assert cfg.kernels == {"se_memory": "backend"}
    assert ProfileSpec(lengths=[64], kernels={"se_selection": "torch"}).kernels == {"se_selection": "torch"}


def test_eval_runs_under_its_kernels_and_records_them(tiny_llama, tmp_path, cli, monkeypatch):
    import spanlab.models

    seen = []
    real = spanlab.models.load_backend
    monkeypatch.setattr(spanlab.models, "load_backend", lambda cfg: seen.append(kernels.current().spec()) or real(cfg))
    out = tmp_path / "run"
    assert cli("eval", "--model", tiny_llama, "--out", out, "--tasks", "niah_single_1", "--lengths", "512", "-n", "1",
               "--max-new-tokens", "2", "--no-progress", "--device", "cpu", "--kernels", "decode_attn=sdpa,ssd=off") == 0
    assert seen == ["decode_attn=sdpa,ssd=off"]  # in force while the model loads (and patches) and runs
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kernels"] == {**kernels.KernelSettings().model_dump(), "decode_attn": "sdpa", "ssd": "off"}
    assert kernels.current().decode_attn == "auto"  # only for the run
