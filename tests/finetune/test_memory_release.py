"""A trained model is freed when the caller drops it, with no gc pass (issue 16's leak).

Before the fix, accelerate's mixed-precision `prepare` left the model in a reference cycle (bound
methods of the model in its own `__dict__`), so a benchmark that trained several variants in one
process carried each earlier model's weights, grads and optimizer state into the next one's peak.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from spanlab.finetune import apply_peft, patch_attention
from spanlab.train import TrainConfig, train
from spanlab.train.loop import make_accelerator

VOCAB = 96


@pytest.fixture
def no_gc(build):
    # transformers' lazy first import keeps its frames (and so the caller's locals) in a cycle
    # until a gc pass; build once first so only what train() leaves behind is under test.
    build["llama"]()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _cfg(tmp_path, mixed_precision="bf16", **kw):
    base = dict(out_dir=tmp_path, max_steps=2, micro_batch_size=1, grad_accum=1, lr=1e-3, warmup_steps=0,
                mixed_precision=mixed_precision, gradient_checkpointing=True, save_every=0, progress=False,
                save_final=False, resume=False)
    base.update(kw)
    return TrainConfig(**base)


def _rows(n=2, length=64):
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, VOCAB, (length,), generator=g) for _ in range(n)]


def _adapted(build, variant):
    model = apply_peft(build["llama"](), "lora+", rank=4, alpha=8, verbose=False)
    patch_attention(model, variant, **({"chunk_size": 32} if variant == "se" else {}))
    return model


@pytest.mark.parametrize("mixed_precision", ["bf16", "no"])
@pytest.mark.parametrize("variant", ["full", "se"])
def test_trained_model_and_optimizer_state_freed_without_gc(tmp_path, build, no_gc, variant, mixed_precision):
    acc = make_accelerator(mixed_precision)
    model = _adapted(build, variant)
    refs = {"model": weakref.ref(model)}
    refs["lora"] = weakref.ref(next(p for p in model.parameters() if p.requires_grad))

    def grab_state(rec):
        state = acc._optimizers[0].optimizer.state
        refs["exp_avg"] = weakref.ref(next(iter(state.values()))["exp_avg"])

    res = train(model, _rows(), _cfg(tmp_path, mixed_precision), accelerator=acc, on_step=grab_state)
    assert res.steps == 2 and "exp_avg" in refs
    # The caller's accelerator outlives the run; it must not keep this run's objects.
    assert acc._models == [] and acc._optimizers == [] and acc._custom_objects == []
    del model, res, grab_state
    alive = [name for name, r in refs.items() if r() is not None]
    assert alive == []


def test_forward_is_the_class_forward_again_after_training(tmp_path, build):
    model = _adapted(build, "full")
    train(model, _rows(), _cfg(tmp_path))
    assert "forward" not in vars(model) and "_original_forward" not in vars(model)
    # And it still runs (in fp32: no autocast wrapper left behind).
    out = model(input_ids=_rows(1, 16)[0][None])
    assert out.logits.dtype == torch.float32


def test_two_runs_on_one_accelerator_each_checkpoint_only_their_own(tmp_path, build):
    acc = make_accelerator("no")
    train(_adapted(build, "full"), _rows(), _cfg(tmp_path / "a", "no", save_every=2), accelerator=acc)
    train(_adapted(build, "full"), _rows(), _cfg(tmp_path / "b", "no", save_every=2), accelerator=acc)
    ckpt = tmp_path / "b" / "checkpoints" / "step-000002"
    names = sorted(p.name for p in ckpt.iterdir())
    # One model, one optimizer, one scheduler (custom_checkpoint_0): nothing of run "a".
    assert not any(n.startswith(("model_1", "optimizer_1", "custom_checkpoint_1")) for n in names), names
    assert "custom_checkpoint_0.pkl" in names
