"""The chunked LM-head + cross-entropy loss is the dense `model(labels=...)` loss, gradients included,
and activation offload changes nothing but where saved tensors live."""

from __future__ import annotations

import json
import math

import pytest
import torch

from spanlab.finetune import apply_peft
from spanlab.train import TrainConfig, default_loss, train
from spanlab.train.loss import chunkable, chunked_causal_lm_loss, chunked_lm_loss

VOCAB = 96


def _adapted(build, arch):
    model = build[arch]()
    peft = "hylora" if arch != "llama" else "lora+"
    model = apply_peft(model, peft, rank=4, alpha=8, verbose=False).train()
    # The LM head trainable too, so its weight gradient is compared as well.
    model.get_output_embeddings().weight.requires_grad_(True)
    return model


def _grads(model, loss_fn, batch):
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _batch(seq=40, masked=False):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, VOCAB, (2, seq), generator=g)
    batch = {"input_ids": ids}
    if masked:
        labels = torch.full_like(ids, -100)
        labels[0, 30:34] = ids[0, 30:34]  # an answer span in row 0
        labels[1, 5:7] = ids[1, 5:7]
        batch["labels"] = labels
    return batch


@pytest.mark.parametrize("masked", [False, True], ids=["all", "answers"])
@pytest.mark.parametrize("chunk", [7, 4096])
def test_loss_and_gradients_equal_dense(build, arch, chunk, masked):
    model = _adapted(build, arch)
    assert chunkable(model) is not None
    batch = _batch(masked=masked)
    dense, g_dense = _grads(model, default_loss, batch)
    ours, g_ours = _grads(model, lambda m, b: chunked_causal_lm_loss(m, b, chunk), batch)
    assert ours.item() == pytest.approx(dense.item(), rel=1e-6, abs=1e-6)
    assert g_ours.keys() == g_dense.keys() and any("lora" in n for n in g_ours)
    for name in g_dense:
        torch.testing.assert_close(g_ours[name], g_dense[name], rtol=1e-5, atol=1e-6, msg=name)


def test_masked_mean_is_over_labelled_positions_only():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 11)
    hidden = torch.randn(1, 6, 8)
    labels = torch.tensor([[-100, -100, 4, 9, -100, 2]])
    # Position t predicts labels[t + 1]: positions 1, 2 and 4 have targets 4, 9 and 2.
    logits = head(hidden)[0]
    want = torch.nn.functional.cross_entropy(logits[[1, 2, 4]], torch.tensor([4, 9, 2]))
    assert chunked_lm_loss(head, hidden, labels, chunk=2).item() == pytest.approx(want.item(), rel=1e-6)
    assert math.isnan(chunked_lm_loss(head, hidden, torch.full_like(labels, -100), chunk=2).item())


def test_models_whose_logits_are_more_than_a_linear_head_use_the_dense_loss(build):
    model = _adapted(build, "llama")
    model.get_base_model().config.final_logit_softcapping = 30.0
    assert chunkable(model) is None
    batch = _batch()
    assert chunked_causal_lm_loss(model, batch, 8).item() == default_loss(model, batch).item()


def _train_cfg(tmp_path, **kw):
    base = dict(out_dir=tmp_path, max_steps=3, micro_batch_size=1, grad_accum=2, lr=3e-3, warmup_steps=0,
                mixed_precision="no", gradient_checkpointing=True, save_every=0, progress=False, save_final=False,
                resume=False)
    base.update(kw)
    return TrainConfig(**base)


def _rows():
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, VOCAB, (48,), generator=g) for _ in range(6)]


def test_training_with_loss_chunk_follows_the_dense_curve(tmp_path, build):
    dense = train(_adapted(build, "llama"), _rows(), _train_cfg(tmp_path / "d", loss_chunk=0))
    chunked = train(_adapted(build, "llama"), _rows(), _train_cfg(tmp_path / "c", loss_chunk=16))
    assert chunked.losses == pytest.approx(dense.losses, rel=1e-5)
    assert chunked.losses[-1] < chunked.losses[0]


@pytest.mark.parametrize("loss_chunk", [0, 16])
def test_activation_offload_gives_identical_losses(tmp_path, build, loss_chunk, monkeypatch):
    packed = []
    real = torch.autograd.graph.save_on_cpu

    class Counting(real):
        def __init__(self, pin_memory=False, device_type="cuda"):
            super().__init__(pin_memory=pin_memory, device_type=device_type)
            pack = self.pack_hook
            self.pack_hook = lambda t: (packed.append(1), pack(t))[1]

    monkeypatch.setattr(torch.autograd.graph, "save_on_cpu", Counting)
    off = train(_adapted(build, "llama"), _rows(), _train_cfg(tmp_path / "a", loss_chunk=loss_chunk))
    assert packed == []
    on = train(_adapted(build, "llama"), _rows(),
               _train_cfg(tmp_path / "b", loss_chunk=loss_chunk, offload_activations=True))
    assert len(packed) > 0
    assert on.losses == off.losses


def test_cli_loss_chunk_and_offload_follow_the_dense_run(tmp_path, build, tokenizer, cli):
    import yaml

    base = tmp_path / "base"
    model = build["llama"]()
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(" ".join(f"w{i % 17}" for i in range(800)))
    common = ["finetune", "--model", base, "--data", corpus, "--context", "32", "--peft", "lora+", "--rank", "4",
              "--steps", "3", "--grad-accum", "1", "--mixed-precision", "no", "--attention", "full", "--no-merge",
              "--save-every", "0", "--cache-dir", tmp_path / "cache", "--no-progress"]
    assert cli(*common, "--out", tmp_path / "dense", "--loss-chunk", "0") == 0
    assert cli(*common, "--out", tmp_path / "chunked", "--loss-chunk", "8", "--offload-activations") == 0

    def losses(run):
        return [json.loads(l)["loss"] for l in (tmp_path / run / "train_log.jsonl").read_text().splitlines()]

    assert losses("chunked") == pytest.approx(losses("dense"), rel=1e-5)
    saved = yaml.safe_load((tmp_path / "chunked" / "finetune_config.yaml").read_text())
    assert saved["loss_chunk"] == 8 and saved["offload_activations"] is True
    assert cli(*common, "--out", tmp_path / "bad", "--loss-chunk", "-3") != 0
