"""The step's matmul FLOPs: a hand count, and torch's own FLOP counter over a real forward + backward."""

from __future__ import annotations

import pytest
import torch

from spanlab.train.flops import linear_layers, model_step_flops, roofline_percent, step_matmul_flops

VOCAB, HIDDEN, MLP, LAYERS, HEADS, KV = 96, 64, 128, 2, 4, 2


def _model(rank=4):
    from transformers import LlamaConfig, LlamaForCausalLM

    from spanlab.finetune import apply_peft

    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=MLP, num_hidden_layers=LAYERS,
                      num_attention_heads=HEADS, num_key_value_heads=KV, max_position_embeddings=256,
                      tie_word_embeddings=False, attn_implementation="eager")
    torch.manual_seed(0)
    return apply_peft(LlamaForCausalLM(cfg), "lora+", rank=rank, alpha=2 * rank, verbose=False)


def test_hand_count_with_recompute():
    tokens, r = 100, 4
    kv = HIDDEN // HEADS * KV  # 32
    base = HIDDEN * HIDDEN * 2 + HIDDEN * kv * 2 + HIDDEN * MLP * 3  # q, o, k, v, gate/up/down: in·out
    assert base == 36864
    lora = (HIDDEN * r + r * HIDDEN) * 2 + (HIDDEN * r + r * kv) * 2  # A and B of q, o, k, v
    head = HIDDEN * VOCAB
    # frozen base in a checkpointed layer: forward + recompute + input grad = 3 passes;
    # LoRA factors: forward + recompute + input and weight grads = 4; frozen LM head: 2.
    want = 2 * tokens * (LAYERS * (3 * base + 4 * lora) + 2 * head)
    got = model_step_flops(_model(r), tokens, recompute=True)
    assert got["total"] == want
    assert got["recompute"] == 2 * tokens * LAYERS * (base + lora)
    assert got["lora"] == 2 * tokens * LAYERS * 4 * lora


def test_chunked_loss_recomputes_the_head():
    model = _model()
    plain = model_step_flops(model, 10)["total"]
    assert model_step_flops(model, 10, chunked_head=True)["total"] - plain == 2 * 10 * HIDDEN * VOCAB
    # Without the blocks' recompute (no checkpointing, or `--recompute elementwise`) the chunked
    # loss still runs the head twice.
    blocks_once = model_step_flops(model, 10, recompute=False, chunked_head=True)
    assert blocks_once["recompute"] == 2 * 10 * HIDDEN * VOCAB


def test_trainable_weight_pays_its_weight_grad():
    model = _model()
    model.get_output_embeddings().weight.requires_grad_(True)
    frozen = model_step_flops(_model(), 10, recompute=False)["total"]
    assert model_step_flops(model, 10, recompute=False)["total"] - frozen == 2 * 10 * HIDDEN * VOCAB


def test_lora_layers_are_found_with_their_rank():
    lays = {x.name: x for x in linear_layers(_model(rank=8))}
    q = next(v for k, v in lays.items() if k.endswith("layers.0.self_attn.q_proj"))
    mlp = next(v for k, v in lays.items() if k.endswith("layers.0.mlp.down_proj"))
    head = next(v for k, v in lays.items() if k.endswith("lm_head"))
    assert (q.lora_rank, q.weight_trainable, q.recomputed) == (8, False, True)
    assert (mlp.lora_rank, mlp.in_features, mlp.out_features) == (0, MLP, HIDDEN)
    assert not head.recomputed and len(lays) == LAYERS * 7 + 1


def test_matches_torch_flop_counter_on_a_real_step():
    from torch.utils.flop_counter import FlopCounterMode

    model = _model().train()
    ids = torch.randint(0, VOCAB, (1, 48))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    counts = counter.get_flop_counts()["Global"]
    measured = sum(v for op, v in counts.items() if str(op).split(".")[1] in ("mm", "addmm"))
    assert measured == model_step_flops(model, 48, recompute=False)["total"]


def test_roofline_percent():
    assert roofline_percent(989e12, 2.0, 989.0) == pytest.approx(50.0)
    with pytest.raises(ValueError):
        roofline_percent(1.0, 0.0)
    assert step_matmul_flops([], 5)["total"] == 0
