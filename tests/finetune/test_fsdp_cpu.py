"""FSDP2 fine-tuning on two CPU processes (gloo), launched as a user launches it on GPUs.

Two FSDP ranks must follow one process with twice the micro-batch, write sharded checkpoints that
resume exactly, and leave adapters and a merged model equal to the state training ended in.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "accelerate" / "fsdp_cpu.yaml"


def _launch(args, env, fsdp=True):
    cmd = [sys.executable, "-m", "spanlab", "finetune", *args]
    if fsdp:  # port 0: a free port, so concurrent test runs do not collide
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG),
               "--main_process_port", "0", *cmd[1:]]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _curve(out):
    return [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_fsdp_two_cpu_processes_match_one_resume_exactly_and_save_what_they_trained(tmp_path, build, tokenizer):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = tmp_path / "base"
    build["llama"]().save_pretrained(base)
    tokenizer.save_pretrained(base)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(" ".join(f"w{(i * 7) % 90}" for i in range(3000)))
    # LoRA+ trains embeddings and norms beside the adapters: frozen and trainable tensors share
    # every FSDP unit. SE-Attn with chunk 16 and gradient checkpointing run inside the shards.
    common = ["--model", base, "--data", corpus, "--context", "32", "--attention", "se", "--chunk-size", "16",
              "--block-size", "4", "--top-k", "2", "--peft", "lora+", "--rank", "4", "--alpha", "8", "--steps", "4",
              "--grad-accum", "2", "--warmup-steps", "2", "--lr", "5e-3", "--save-every", "2",
              "--mixed-precision", "no", "--no-progress", "--cache-dir", tmp_path / "cache"]
    common = [str(a) for a in common]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    fsdp, one = tmp_path / "fsdp", tmp_path / "one"
    _launch(["--out", str(fsdp), "--micro-batch-size", "1", *common], env)
    _launch(["--out", str(one), "--micro-batch-size", "2", "--no-merge", *common], env, fsdp=False)

    f, s = _curve(fsdp), _curve(one)
    assert [r["tokens"] for r in f] == [r["tokens"] for r in s] == [128, 256, 384, 512]
    assert [r["lr"] for r in f] == pytest.approx([r["lr"] for r in s])
    # Step 1 runs before any update: equal losses mean both read the same rows with the same
    # weights. Later steps may drift by the rounding of FSDP's reduce-scatter mean vs one batched
    # mean, which Adam amplifies in the tiny early gradients (as for DDP).
    assert f[0]["loss"] == pytest.approx(s[0]["loss"], rel=1e-6)
    assert [r["loss"] for r in f] == pytest.approx([r["loss"] for r in s], rel=1e-2)

    # The checkpoints are FSDP's sharded ones (one file per rank), not a DDP fallback.
    last = fsdp / "checkpoints" / "step-000004"
    assert json.loads((last / "trainer_state.json").read_text())["world_size"] == 2
    assert sorted(p.name for p in (last / "pytorch_model_fsdp_0").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert not (last / "model.safetensors").exists()

    # Resume: drop the last checkpoint and the outputs, re-run the same command (with gradient
    # checkpointing off, which must not change the numbers): steps 3-4 repeat bit for bit.
    resumed = tmp_path / "resumed"
    shutil.copytree(fsdp, resumed, ignore=shutil.ignore_patterns("step-000004", "final", "merged"))
    done = _launch(["--out", str(resumed), "--micro-batch-size", "1", "--no-gradient-checkpointing", "--no-merge",
                    *common], env)
    assert "resum" in (done.stdout + done.stderr).lower()
    assert [r["loss"] for r in _curve(resumed)] == [r["loss"] for r in f]

    # The last sharded checkpoint is the in-memory model at the end of training: the saved
    # adapters and the merged model (both written on rank 0 only) must compute what it computes.
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(str(last / "pytorch_model_fsdp_0"), str(tmp_path / "last.pt"))
    trained = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    live = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(fsdp / "final"))
    adapters = {k: v.clone() for k, v in live.state_dict().items()}
    live.load_state_dict(trained, strict=True)
    changed = [k for k in trained if not torch.equal(trained[k], adapters[k])]
    assert changed == [], f"final adapters differ from the last training state in {changed[:3]}"
    ids = torch.tensor([[(i * 11) % 90 for i in range(32)]])
    merged = AutoModelForCausalLM.from_pretrained(fsdp / "merged").eval()
    untrained = AutoModelForCausalLM.from_pretrained(base).eval()
    with torch.no_grad():
        want = live.eval()(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        before = untrained(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (got - before).abs().max() > 1e-3  # training moved the model: the comparison has teeth
    assert (fsdp / "merged" / "tokenizer.json").is_file()


def test_ranks_that_accelerate_left_single_are_refused(monkeypatch):
    # `accelerate launch` of an FSDP config with `use_cpu: true` but no ACCELERATE_USE_CPU: each
    # rank comes up as a lone process; training on would write N copies into one folder.
    from spanlab.errors import SpanlabError
    from spanlab.train.loop import make_accelerator

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SpanlabError, match="ACCELERATE_USE_CPU=1"):
        make_accelerator("no")
