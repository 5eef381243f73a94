"""mamba_ssm-format checkpoints (state-spaces/*) converted to transformers classes, no mamba-ssm."""

from __future__ import annotations

import json
import pathlib
import sys

import pytest

torch = pytest.importorskip("torch")

# The checkpoint writer (and the dense reference) of mamba_ssm's format live beside the Mamba2-Attn
# tests; --import-mode=importlib puts no test folder on sys.path.
_REF = str(pathlib.Path(__file__).parents[1] / "models")
if _REF not in sys.path:
    sys.path.insert(0, _REF)
import mamba_ssm_ref  # noqa: E402

V = 8192  # the built-in tokenizer's vocabulary: converted checkpoints are evaluated with it
SSM = {"layer": "Mamba2", "d_state": 16, "headdim": 16, "ngroups": 1, "expand": 2, "chunk_size": 32}


def write_checkpoint(path, *, attn_layer_idx=(), rot=32, d_intermediate=0, n_layer=2, seed=0):
    """A mamba_ssm checkpoint at these tests' sizes: 64 wide, attention (if any) without a q/k/v conv."""
    return mamba_ssm_ref.write_checkpoint(path, d_model=64, vocab=V, n_layer=n_layer, attn_layer_idx=attn_layer_idx,
                                          heads=4, kv_heads=2, head_dim=32, rot=rot, d_conv=0,
                                          d_intermediate=d_intermediate, ssm=SSM, seed=seed)


def _logits(model, ids):
    with torch.no_grad():
        return model(ids, use_cache=False).logits.double()


def _check_weights_landed(model, sd, mapping):
    dst = model.state_dict()
    for src, d in mapping.items():
        if "{" in d:  # one source tensor split into several destinations, in this order
            stem, rest = d.split("{")
            names, tail = rest.split("}")
            parts = [dst[f"{stem}{n}{tail}"] for n in names.split(",")]
            assert torch.equal(torch.cat(parts), sd[src]), src
        else:
            assert torch.equal(dst[d], sd[src]), (src, d)
    assert torch.equal(model.lm_head.weight, sd["backbone.embedding.weight"])  # tied


IDS = torch.randint(0, V, (2, 40), generator=torch.Generator().manual_seed(1))


def test_mamba2_checkpoint_to_mamba2_class_agrees_with_bamba(tmp_path):
    from spanlab.models.mamba_ssm import convert_state, read_checkpoint

    write_checkpoint(tmp_path)
    cfg, sd = read_checkpoint(tmp_path)
    m2, mapping = convert_state(cfg, sd)
    assert type(m2).__name__ == "Mamba2ForCausalLM"
    _check_weights_landed(m2, sd, mapping)
    bamba, _ = convert_state(cfg, sd, target="bamba")  # a second, independent implementation
    a, b = _logits(m2, IDS), _logits(bamba, IDS)
    assert torch.isfinite(a).all() and a.std() > 0.1
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_transformerpp_checkpoint_to_llama_agrees_with_bamba(tmp_path):
    from spanlab.models.mamba_ssm import convert_state, read_checkpoint

    write_checkpoint(tmp_path, attn_layer_idx=(0, 1), rot=32, d_intermediate=128)
    cfg, sd = read_checkpoint(tmp_path)
    llama, mapping = convert_state(cfg, sd)
    assert type(llama).__name__ == "LlamaForCausalLM"
    _check_weights_landed(llama, sd, mapping)
    # GatedMLP's fc1 is [value; gate]: value lands in up_proj, gate in gate_proj.
    assert torch.equal(llama.model.layers[0].mlp.gate_proj.weight, sd["backbone.layers.0.mlp.fc1.weight"][128:])
    bamba, _ = convert_state(cfg, sd, target="bamba")
    assert torch.allclose(_logits(llama, IDS), _logits(bamba, IDS), atol=1e-4, rtol=1e-4)


def test_hybrid_partial_rotary_checkpoint_to_bamba_is_deterministic(tmp_path):
    from spanlab.models.mamba_ssm import convert_state, read_checkpoint

    write_checkpoint(tmp_path, attn_layer_idx=(1,), rot=16, n_layer=3)  # like mamba2attn: rotary on half the head
    cfg, sd = read_checkpoint(tmp_path)
    m, mapping = convert_state(cfg, sd)
    assert type(m).__name__ == "BambaForCausalLM"
    assert [type(layer.self_attn if hasattr(layer, "self_attn") else layer.mamba).__name__[:9] for layer in m.model.layers] == ["BambaMixe", "BambaAtte", "BambaMixe"]
    _check_weights_landed(m, sd, mapping)
    out = _logits(m, IDS)
    assert torch.isfinite(out).all() and out.std() > 0.1
    assert torch.equal(out, _logits(convert_state(cfg, sd)[0], IDS))
    # Partial rotary really is partial: changing the rotary dim changes the outputs.
    cfg2 = {**cfg, "attn_cfg": {**cfg["attn_cfg"], "rotary_emb_dim": 32}}
    assert not torch.allclose(out, _logits(convert_state(cfg2, sd)[0], IDS))


def test_convert_cli_and_mamba_ssm_backend_agree(tmp_path, tiny_models, sample_file, cli):
    src = tmp_path / "ckpt"
    write_checkpoint(src, attn_layer_idx=(1,), rot=16)
    assert cli("convert", src, tmp_path / "hf", "--tokenizer", tiny_models["llama"]) == 0
    common = ["--samples", sample_file, "--max-new-tokens", "4", "--no-progress"]
    assert cli("eval", "--model", tmp_path / "hf", "--out", tmp_path / "r1", *common) == 0
    assert cli("eval", "--backend", "mamba_ssm", "--model", src, "--tokenizer", tiny_models["llama"],
               "--out", tmp_path / "r2", *common) == 0

    def preds(d):
        return {r["id"]: r["prediction"] for r in map(json.loads, (d / "results.jsonl").read_text().splitlines())}

    assert preds(tmp_path / "r1") == preds(tmp_path / "r2") and len(preds(tmp_path / "r1")) == 8
    m = json.loads((tmp_path / "r2" / "manifest.json").read_text())["model"]
    assert m["backend"] == "mamba_ssm" and m["model_class"] == "BambaForCausalLM" and m["model_hash"]


def test_unsupported_checkpoints_are_refused_clearly(tmp_path, cli, capsys):
    from spanlab.errors import SpanlabError
    from spanlab.models.mamba_ssm import convert_state

    cfg, sd = write_checkpoint(tmp_path)
    with pytest.raises(SpanlabError, match="only Mamba2"):
        convert_state({**cfg, "ssm_cfg": {**SSM, "layer": "Mamba1"}}, sd)
    assert cli("convert", tmp_path / "missing", tmp_path / "out") == 2
    assert "does not exist" in capsys.readouterr().err
