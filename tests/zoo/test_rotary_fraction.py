"""The zoo's families rotate the same fraction of each attention head (half, as the seed study's
Transformer++ and Mamba2-Attn: 64 of 128 dims), so an architecture comparison does not also
compare RoPE fractions. The shipped Transformer++ was trained with full-head RoPE and keeps it."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

from spanlab.zoo import build_model, zoo_config
from spanlab.zoo.architectures import ROTARY_FRACTION

L = 24


def _captured_qk(model, ids):
    """q and k of layer 0 as the attention kernel receives them (after RoPE)."""
    from transformers import AttentionInterface

    seen = {}

    def capture(module, query, key, value, attention_mask, **kw):
        seen.setdefault("qk", (query.detach().clone(), key.detach().clone()))
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, **kw)

    AttentionInterface.register("spanlab_test_capture", capture)
    model.set_attn_implementation("spanlab_test_capture")
    with torch.no_grad():
        model(input_ids=ids)
    return seen["qk"]


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_zoo_transformer_rotates_exactly_half_of_each_head(size):
    model = build_model("transformer", size, vocab_size=256, seed=0, pad_token_id=0, eos_token_id=1).eval()
    head_dim = model.config.head_dim
    # One token repeated: before RoPE every position has the same q and k in layer 0, so whatever
    # varies with the position is the rotation.
    q, k = _captured_qk(model, torch.full((1, L), 7))
    varies = (q - q[:, :, :1]).abs().amax(dim=(0, 1, 2)) > 1e-5
    assert int(varies.sum()) == head_dim // 2
    fixed = ~varies
    # The un-rotated half: q·k is the same for every (query, key) pair, whatever the positions.
    dots = torch.einsum("bhtd,bhsd->bhts", q[..., fixed], k[..., fixed])
    assert torch.allclose(dots, dots[:, :, :1, :1].expand_as(dots), atol=1e-5)
    # The rotated half: q·k depends on the distance t - s only (RoPE), and does change with it.
    rot = torch.einsum("bhtd,bhsd->bhts", q[..., varies], k[..., varies])
    for dist in (0, 3, 11):
        diag = torch.diagonal(rot, offset=-dist, dim1=2, dim2=3)
        assert torch.allclose(diag, diag[..., :1].expand_as(diag), atol=1e-4)
    assert not torch.allclose(torch.diagonal(rot, 0, 2, 3)[..., 0], torch.diagonal(rot, -11, 2, 3)[..., 0], atol=1e-3)


def test_full_head_rope_on_request():
    model = build_model("transformer", "tiny", vocab_size=256, seed=0, pad_token_id=0, eos_token_id=1,
                        partial_rotary_factor=1.0).eval()
    q, _ = _captured_qk(model, torch.full((1, L), 7))
    assert int(((q - q[:, :, :1]).abs().amax(dim=(0, 1, 2)) > 1e-5).sum()) == model.config.head_dim


@pytest.mark.parametrize("arch", ["transformer", "hybrid", "griffin"])
def test_every_attention_family_uses_the_same_fraction(arch):
    cfg = zoo_config(arch, "tiny", vocab_size=256)
    assert cfg.rope_parameters["partial_rotary_factor"] == ROTARY_FRACTION == 0.5
    model = build_model(arch, "tiny", vocab_size=256, seed=0, pad_token_id=0, eos_token_id=1)
    rope = next(m for n, m in model.named_modules() if n.endswith("rotary_emb"))
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    cos, sin = rope(torch.zeros(1, L, cfg.hidden_size), torch.arange(L)[None])
    assert cos.shape[-1] == head_dim // 2  # the model's own apply_rotary_pos_emb passes the rest through
    apply = importlib.import_module(type(model).__module__).apply_rotary_pos_emb
    x = torch.randn(1, 2, L, head_dim)
    out, _ = apply(x, x, cos, sin)
    assert torch.equal(out[..., head_dim // 2:], x[..., head_dim // 2:])
    assert not torch.allclose(out[..., : head_dim // 2], x[..., : head_dim // 2])


def test_shipped_transformer_keeps_the_rope_it_was_trained_with():
    from spanlab.zoo.shipped import shipped_models

    path = shipped_models().get("transformer-tiny-c512")
    if path is None:
        pytest.skip("shipped models not present")
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["model_type"] == "llama"  # full-head RoPE, as trained (docs/zoo.md)
    assert cfg.get("rope_parameters", {}).get("partial_rotary_factor", 1.0) == 1.0
