"""`--compile` (spanlab.train.compile): each decoder layer's MLP and norms compiled; training follows
the eager loss curve, gradient checkpointing and LoRA included, and attention stays eager."""

from __future__ import annotations

import pytest
import torch

from spanlab.finetune import apply_peft
from spanlab.train import TrainConfig, train
from spanlab.train.compile import compile_regions

VOCAB = 96


def _rows(n=3, seq=48):
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, VOCAB, (seq,), generator=g) for _ in range(n)]


def _cfg(out, **kw):
    base = dict(out_dir=out, max_steps=3, micro_batch_size=1, grad_accum=1, lr=1e-2, warmup_steps=0,
                mixed_precision="no", gradient_checkpointing=True, save_every=0, progress=False,
                save_final=False, resume=False)
    return TrainConfig(**(base | kw))


def test_compile_regions_picks_mlps_and_norms_only(build):
    model = build["llama"]()
    done = compile_regions(model)
    # 2 layers: an MLP each, two norms each, and the final norm; no attention module.
    assert done == {"LlamaMLP": 2, "LlamaRMSNorm": 5}
    assert all(not isinstance(getattr(m, "_compiled_call_impl", None), type(None))
               for m in model.modules() if type(m).__name__ in done)
    assert all(getattr(m, "_compiled_call_impl", None) is None
               for m in model.modules() if type(m).__name__ == "LlamaAttention")


def test_compiled_training_follows_the_eager_curve(tmp_path, build):
    torch._dynamo.reset()

    def adapted():
        torch.manual_seed(0)
        return apply_peft(build["llama"](), "lora+", rank=4, alpha=8, verbose=False)

    eager = train(adapted(), _rows(), _cfg(tmp_path / "e"))
    compiled = train(adapted(), _rows(), _cfg(tmp_path / "c", compile=True))
    assert compiled.losses == pytest.approx(eager.losses, rel=1e-4)
    assert compiled.losses[-1] < compiled.losses[0]


def test_compile_refuses_a_model_without_regions(tmp_path):
    from spanlab.errors import SpanlabError

    model = torch.nn.Sequential(torch.nn.Embedding(VOCAB, 8), torch.nn.Linear(8, VOCAB))
    with pytest.raises(SpanlabError, match="found no MLP or RMSNorm"):
        train(model, _rows(), _cfg(tmp_path / "x", compile=True, gradient_checkpointing=False))
