"""spanlab.train.recompute: `elementwise` checkpointing gives the gradients of `all` (and of no
checkpointing) while the backward runs no second forward of the matmuls and attention kernels."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from spanlab.finetune import apply_peft, patch_attention
from spanlab.train.loop import _enable_checkpointing
from spanlab.train.recompute import checkpoint_kwargs, saved_ops


class _CountOps(TorchDispatchMode):
    """How many times each aten op ran (ops served from checkpoint storage are not run)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func)] = self.counts.get(str(func), 0) + 1
        return func(*args, **(kwargs or {}))


def _model(variant: str | None = None, params: dict | None = None):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    model = apply_peft(LlamaForCausalLM(cfg), "lora+", rank=4, alpha=8, verbose=False)
    if variant is not None:
        patch_attention(model, variant, **(params or {}))
    return model


def _step(model, recompute: str | None, ids: torch.Tensor):
    if recompute is not None:
        _enable_checkpointing(model, recompute)
    model.train()
    counter = _CountOps()
    with counter:
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads, counter.counts


def _mm(counts: dict[str, int]) -> int:
    return sum(c for op, c in counts.items() if op.split(".")[1] in ("mm", "addmm", "bmm"))


@pytest.mark.parametrize("variant,params", [
    (None, None),  # transformers' SDPA
    ("full", {}),
    ("sw", {"window": 32}),
    ("se", {"chunk_size": 32, "block_size": 8, "top_k": 2}),
])
def test_elementwise_recompute_gives_the_same_gradients(variant, params):
    ids = torch.randint(0, 96, (2, 96), generator=torch.Generator().manual_seed(1))
    ref_loss, ref, _ = _step(_model(variant, params), None, ids)
    for recompute in ("all", "elementwise"):
        loss, grads, _ = _step(_model(variant, params), recompute, ids)
        assert torch.equal(loss, ref_loss)
        assert grads.keys() == ref.keys() and len(grads) > 0
        for name, g in grads.items():
            torch.testing.assert_close(g, ref[name], rtol=1e-5, atol=1e-6, msg=f"{recompute}: {name}")


def test_elementwise_runs_the_matmuls_once_and_all_runs_the_forward_twice():
    ids = torch.randint(0, 96, (1, 64), generator=torch.Generator().manual_seed(2))
    *_, none = _step(_model(), None, ids)
    *_, every = _step(_model(), "all", ids)
    *_, selective = _step(_model(), "elementwise", ids)
    # Per layer: 7 base projections (q, k, v, o, gate, up, down) and LoRA's A and B on q/k/v/o.
    # `all` runs the forward matmuls again: 14 of the 15, as torch's checkpoint stops recomputing
    # once the backward has what it needs (the down projection's output is not among it).
    # `elementwise` runs only LoRA's 4 up-projections B again (inner dimension = the rank, 4 here:
    # cheap to recompute, and their outputs are full width).
    layers = 2
    assert _mm(every) - _mm(none) in (14 * layers, 15 * layers)
    assert _mm(selective) - _mm(none) == 4 * layers
    sdpa = [op for op in none if "scaled_dot_product" in op and "backward" not in op]
    assert sdpa, "the tiny Llama should run an SDPA kernel"
    assert all(selective[op] == none[op] and every[op] == 2 * none[op] for op in sdpa)
    # The elementwise ops between them are what `elementwise` still recomputes.
    assert selective.get("aten.rsqrt.default", 0) > none.get("aten.rsqrt.default", 0)


def test_choices_and_kwargs():
    assert checkpoint_kwargs("all") == {"use_reentrant": False}
    assert "context_fn" in checkpoint_kwargs("elementwise")
    assert torch.ops.aten.mm.default in saved_ops()
    with pytest.raises(ValueError, match="recompute must be one of all, elementwise"):
        checkpoint_kwargs("some")  # type: ignore[arg-type]
