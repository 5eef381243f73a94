"""Load mamba_ssm-format checkpoints (state-spaces/mamba2-*, mamba2attn-*, transformerpp-*)
without the compiled mamba-ssm package, by converting them into transformers classes.

The format: `config.json` with `d_model, n_layer, vocab_size, ssm_cfg, attn_layer_idx, attn_cfg,
d_intermediate, ...` and `pytorch_model.bin` with `backbone.embedding`, `backbone.layers.{i}.
{norm, mixer, norm2, mlp}`, `backbone.norm_f`, `lm_head`. The target class:

- only Mamba2 layers, no MLP                     → `Mamba2ForCausalLM` (same parameter layout)
- only attention layers with full rotary + MLP   → `LlamaForCausalLM` (Transformer++)
- attention with a q/k/v conv (`attn_cfg.d_conv` > 0, as in mamba2attn-2.7b), an MHA MLP branch
  (`mlp_dim`), no rotary, or q/k/v and out biases that differ
                                                 → spanlab's `M2AForCausalLM`
  (`spanlab.models.mamba2attn`, model_type "spanlab_mamba2attn"): mamba_ssm's blocks as they are
- anything else (attention layers among Mamba2 layers, partial rotary, Mamba2 + MLP)
                                                 → `BambaForCausalLM`, whose layers are
  norm → mixer → residual → norm → MLP → residual. Blocks without an MLP get a zero MLP of
  width 1 (down_proj = 0 adds exactly nothing), and Bamba's attention supports partial rotary,
  which the seed's checkpoints use (rotary_emb_dim 64 of head_dim 128).
  `target="mamba2attn"` converts these to spanlab's class too (tests check both agree).

mamba_ssm's MHA packs q, k, v row-wise into one `in_proj`; its GatedMLP `fc1` stacks
[value; gate] with out = value * silu(gate), i.e. Llama's up_proj then gate_proj.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from spanlab.errors import SpanlabError
from spanlab.models.arch import ARCHS
from spanlab.models.arch.base import CheckpointLayout

_MIXER_KEYS = ("in_proj.weight", "conv1d.weight", "conv1d.bias", "dt_bias", "A_log", "D", "norm.weight", "out_proj.weight")


def is_mamba_ssm_checkpoint(path: str | os.PathLike) -> bool:
    p = Path(path) / "config.json"
    if not p.is_file():
        return False
    try:
        cfg = json.loads(p.read_text())
    except json.JSONDecodeError:
        return False
    return "d_model" in cfg and "n_layer" in cfg


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    src = Path(path).expanduser()
    if not src.is_dir():
        raise SpanlabError(f"mamba_ssm checkpoint directory {str(src)!r} does not exist")
    if not is_mamba_ssm_checkpoint(src):
        raise SpanlabError(f"{src} has no mamba_ssm config.json (with d_model and n_layer); "
                           "for transformers checkpoints use --backend hf")
    cfg = json.loads((src / "config.json").read_text())
    if (src / "model.safetensors").is_file():
        from safetensors.torch import load_file

        sd = load_file(str(src / "model.safetensors"))
    elif (src / "pytorch_model.bin").is_file():
        sd = torch.load(src / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise SpanlabError(f"{src} has neither pytorch_model.bin nor model.safetensors")
    return cfg, sd


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise SpanlabError(f"cannot convert this mamba_ssm checkpoint: {what}")


def conversion_targets() -> tuple[str, ...]:
    """The conversion targets the architecture profiles name (`ArchProfile.conversion_target`)."""
    return tuple(p.conversion_target for p in ARCHS.values() if p.conversion_target)


def default_target(layout: CheckpointLayout) -> str:
    """The target of the one profile whose `converts` takes this checkpoint layout."""
    hits = [p.conversion_target for p in ARCHS.values() if p.conversion_target and p.converts and p.converts(layout)]
    if len(hits) != 1:  # pragma: no cover - the built-in predicates exclude each other
        raise SpanlabError(f"mamba_ssm checkpoint layout {layout} matches {hits or 'no'} conversion target(s); "
                           "pass --target")
    return hits[0]


def convert_state(cfg: dict[str, Any], sd: dict[str, Any], *, target: str | None = None):
    """Build the transformers model (random init) and copy every checkpoint tensor into it.

    Returns (model, mapping) where mapping is {source key: destination key}; `target` forces
    "mamba2" | "llama" | "bamba" | "mamba2attn" (tests cross-check two targets on one checkpoint).
    """
    import torch
    import transformers as T

    from spanlab.models.native import register_all

    register_all()

    n_layer, d_model = int(cfg["n_layer"]), int(cfg["d_model"])
    ssm = dict(cfg.get("ssm_cfg") or {})
    attn_idx = sorted(int(i) for i in cfg.get("attn_layer_idx") or [])
    attn = dict(cfg.get("attn_cfg") or {})
    d_inter = int(cfg.get("d_intermediate", 0) or 0)
    _need(bool(cfg.get("rms_norm", True)), "LayerNorm blocks (rms_norm=false) have no transformers counterpart")
    emb = sd["backbone.embedding.weight"]
    vocab = emb.shape[0]  # already padded to pad_vocab_size_multiple
    tie = bool(cfg.get("tie_embeddings", True))
    mamba_layers = [i for i in range(n_layer) if i not in attn_idx]

    # --- Mamba2 geometry (mamba_ssm defaults where the config is silent)
    if mamba_layers:
        _need(ssm.get("layer", "Mamba1") == "Mamba2", f"ssm_cfg.layer={ssm.get('layer', 'Mamba1')!r}; only Mamba2 is supported")
        d_state, headdim = int(ssm.get("d_state", 128)), int(ssm.get("headdim", 64))
        ngroups, expand, d_conv = int(ssm.get("ngroups", 1)), int(ssm.get("expand", 2)), int(ssm.get("d_conv", 4))
        d_inner = expand * d_model
        _need(ssm.get("d_ssm") in (None, d_inner), "d_ssm != expand * d_model (partial SSM) is not supported")
        _need(not ssm.get("D_has_hdim", False), "D_has_hdim=true is not supported")
        _need(ssm.get("rmsnorm", True) and not ssm.get("norm_before_gate", False),
              "only the gated RMSNorm applied after the gate (mamba_ssm's default) is supported")
        nheads = d_inner // headdim
        chunk = int(ssm.get("chunk_size", 256))
        conv_bias, proj_bias = bool(ssm.get("conv_bias", True)), bool(ssm.get("bias", False))
    # --- attention geometry
    needs_own_class = False
    if attn_idx:
        n_heads = int(attn["num_heads"])
        n_kv = int(attn.get("num_heads_kv") or n_heads)
        head_dim = int(attn.get("head_dim") or d_model // n_heads)
        rot = int(attn.get("rotary_emb_dim", 0))
        _need(not attn.get("rotary_emb_interleaved", False), "interleaved rotary is not supported")
        _need(bool(attn.get("causal", True)), "non-causal attention (attn_cfg.causal=false) is not a language model")
        attn_conv = int(attn.get("d_conv", 0) or 0)
        qkv_dim = (n_heads + 2 * n_kv) * head_dim
        # mamba_ssm rounds mlp_dim up to a multiple of 256; the checkpoint's in_proj holds the real width.
        attn_mlp = sd[f"backbone.layers.{attn_idx[0]}.mixer.in_proj.weight"].shape[0] - qkv_dim
        _need(attn_mlp >= 0 and attn_mlp % 2 == 0, f"attention in_proj has {attn_mlp + qkv_dim} rows, expected q/k/v = {qkv_dim} (+ mlp_dim)")
        qkv_bias, out_bias = bool(attn.get("qkv_proj_bias", True)), bool(attn.get("out_proj_bias", True))
        softmax_scale = attn.get("softmax_scale")
        # Only spanlab's class has the q/k/v conv, the MHA MLP branch, no-rotary heads and split biases.
        needs_own_class = attn_conv > 0 or attn_mlp > 0 or rot == 0 or qkv_bias != out_bias or softmax_scale is not None
        # Always explicit: Bamba's own default rotates only half of each head.
        rope = {"rope_type": "default", "rope_theta": float(attn.get("rotary_emb_base", 10000.0)),
                "partial_rotary_factor": rot / head_dim}
    mlp_width = sd["backbone.layers.0.mlp.fc2.weight"].shape[1] if d_inter > 0 else 0

    if target is None:
        layout = CheckpointLayout(layers=n_layer, attention_layers=len(attn_idx), mlp=d_inter > 0,
                                  full_rotary=bool(attn_idx) and rot == head_dim, own_attention=needs_own_class)
        target = default_target(layout)
    common = dict(vocab_size=vocab, hidden_size=d_model, num_hidden_layers=n_layer, tie_word_embeddings=tie,
                  bos_token_id=0, eos_token_id=0, pad_token_id=0)
    if target == "mamba2":
        _need(not attn_idx and d_inter == 0, "Mamba2ForCausalLM has neither attention layers nor MLPs")
        config = T.Mamba2Config(num_heads=nheads, head_dim=headdim, state_size=d_state, expand=expand, conv_kernel=d_conv,
                                n_groups=ngroups, use_bias=proj_bias, use_conv_bias=conv_bias, chunk_size=chunk,
                                layer_norm_epsilon=1e-5, residual_in_fp32=bool(cfg.get("residual_in_fp32", True)), **common)
    elif target == "mamba2attn":
        from spanlab.models.mamba2attn.configuration_mamba2attn import M2AConfig

        kw = {}
        if attn_idx:
            kw.update(num_attention_heads=n_heads, num_key_value_heads=n_kv, head_dim=head_dim, rotary_dim=rot,
                      rope_theta=float(attn.get("rotary_emb_base", 10000.0)), attn_conv_kernel=attn_conv,
                      attn_mlp_dim=attn_mlp, attention_bias=qkv_bias, attention_out_bias=out_bias,
                      softmax_scale=None if softmax_scale is None else float(softmax_scale))
        if mamba_layers:
            kw.update(mamba_n_heads=nheads, mamba_d_head=headdim, mamba_n_groups=ngroups, mamba_d_state=d_state,
                      mamba_d_conv=d_conv, mamba_expand=expand, mamba_chunk_size=chunk, mamba_conv_bias=conv_bias,
                      mamba_proj_bias=proj_bias)
        config = M2AConfig(attn_layer_indices=attn_idx, intermediate_size=mlp_width,
                                  rms_norm_eps=float(cfg.get("norm_epsilon", 1e-5)),
                                  residual_in_fp32=bool(cfg.get("residual_in_fp32", True)),
                                  max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)), **kw, **common)
    elif target == "llama":
        _need(len(attn_idx) == n_layer and d_inter > 0, "Llama needs attention and an MLP in every layer")
        _need(not needs_own_class, "Llama has no q/k/v conv, MHA MLP, split biases or custom softmax scale; use --target mamba2attn")
        _need(rot == head_dim, "Llama applies rotary to the whole head; use the bamba target for partial rotary")
        config = T.LlamaConfig(intermediate_size=mlp_width, num_attention_heads=n_heads, num_key_value_heads=n_kv,
                               head_dim=head_dim, attention_bias=qkv_bias, rms_norm_eps=1e-5,
                               max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
                               rope_parameters=rope, **common)
    elif target == "bamba":
        _need(not (attn_idx and needs_own_class), "Bamba's attention has no q/k/v conv, MHA MLP, split biases, custom "
                                                  "softmax scale or rotary-free heads; use --target mamba2attn")
        kw: dict[str, Any] = {}
        if attn_idx:
            kw.update(num_attention_heads=n_heads, num_key_value_heads=n_kv, head_dim=head_dim, attention_bias=qkv_bias,
                      rope_parameters=rope)
        if mamba_layers:
            kw.update(mamba_n_heads=nheads, mamba_d_head=headdim, mamba_n_groups=ngroups, mamba_d_state=d_state,
                      mamba_d_conv=d_conv, mamba_expand=expand, mamba_chunk_size=chunk, mamba_conv_bias=conv_bias,
                      mamba_proj_bias=proj_bias)
        else:
            # No Mamba layer is built, but Bamba validates its Mamba geometry: one head always divides.
            kw.update(mamba_n_heads=1)
        config = T.BambaConfig(intermediate_size=max(mlp_width, 1), attn_layer_indices=attn_idx or None, rms_norm_eps=1e-5,
                               max_position_embeddings=int(cfg.get("max_position_embeddings", 262144)), **kw, **common)
    else:
        raise SpanlabError(f"unknown conversion target {target!r}; use {', '.join(conversion_targets())}")

    with torch.device("meta"):
        model = T.AutoModelForCausalLM.from_config(config)
    dst: dict[str, Any] = {}
    mapping: dict[str, str] = {}

    def put(src_key: str, dst_key: str, tensor=None) -> None:
        dst[dst_key] = (sd[src_key] if tensor is None else tensor).clone()
        mapping[src_key] = dst_key

    pre = "backbone." if target == "mamba2" else "model."
    put("backbone.embedding.weight", pre + ("embeddings.weight" if target == "mamba2" else "embed_tokens.weight"))
    put("backbone.norm_f.weight", pre + ("norm_f.weight" if target == "mamba2" else
                                         "norm.weight" if target == "llama" else "final_layernorm.weight"))
    if not tie:
        put("lm_head.weight", "lm_head.weight")
    if target == "mamba2attn":
        _map_mamba2attn(cfg, sd, config, put, dst, mapping)
    for i in range(n_layer if target != "mamba2attn" else 0):
        s = f"backbone.layers.{i}."
        d = f"{pre}layers.{i}."
        put(s + "norm.weight", d + ("norm.weight" if target == "mamba2" else "input_layernorm.weight"))
        if i in attn_idx:
            w = sd[s + "mixer.in_proj.weight"]
            q, k, v = w.split([n_heads * head_dim, n_kv * head_dim, n_kv * head_dim], dim=0)
            for name, t in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
                dst[f"{d}self_attn.{name}.weight"] = t.clone()
            mapping[s + "mixer.in_proj.weight"] = f"{d}self_attn.{{q,k,v}}_proj.weight"
            if qkv_bias:
                b = sd[s + "mixer.in_proj.bias"]
                for name, t in zip(("q_proj", "k_proj", "v_proj"), b.split([n_heads * head_dim, n_kv * head_dim, n_kv * head_dim])):
                    dst[f"{d}self_attn.{name}.bias"] = t.clone()
                mapping[s + "mixer.in_proj.bias"] = f"{d}self_attn.{{q,k,v}}_proj.bias"
                put(s + "mixer.out_proj.bias", d + "self_attn.o_proj.bias")
            put(s + "mixer.out_proj.weight", d + "self_attn.o_proj.weight")
        else:
            mixer = "mixer." if target == "mamba2" else "mamba."
            for key in _MIXER_KEYS + (("in_proj.bias", "out_proj.bias") if proj_bias else ()):
                if s + "mixer." + key in sd:
                    put(s + "mixer." + key, d + mixer + key)
        if target == "mamba2":
            continue
        ff = "mlp." if target == "llama" else "feed_forward."
        post = "post_attention_layernorm.weight" if target == "llama" else "pre_ff_layernorm.weight"
        if d_inter > 0:
            put(s + "norm2.weight", d + post)
            up, gate = sd[s + "mlp.fc1.weight"].chunk(2, dim=0)
            dst[d + ff + "up_proj.weight"] = up.clone()
            dst[d + ff + "gate_proj.weight"] = gate.clone()
            mapping[s + "mlp.fc1.weight"] = d + ff + "{up,gate}_proj.weight"
            put(s + "mlp.fc2.weight", d + ff + "down_proj.weight")
        else:
            # No MLP in this block: a width-1 MLP whose output projection is zero adds nothing.
            dst[d + post] = torch.ones(d_model, dtype=emb.dtype)
            dst[d + ff + "up_proj.weight"] = torch.zeros(1, d_model, dtype=emb.dtype)
            dst[d + ff + "gate_proj.weight"] = torch.zeros(1, d_model, dtype=emb.dtype)
            dst[d + ff + "down_proj.weight"] = torch.zeros(d_model, 1, dtype=emb.dtype)
    unused = sorted(set(sd) - set(mapping) - ({"lm_head.weight"} if tie else set()))
    _need(not unused, f"tensors with no destination: {', '.join(unused[:5])}")
    expected = set(model.state_dict())
    if tie:
        expected.discard("lm_head.weight")
    missing = sorted(expected - set(dst))
    _need(not missing, f"destination tensors left unset: {', '.join(missing[:5])}")
    model.load_state_dict(dst, strict=False, assign=True)
    if tie:
        model.tie_weights()
    # Non-persistent buffers (rotary inv_freq) were created on meta: rebuild them on the CPU.
    model = _materialise_buffers(model, config)
    return model.eval(), mapping


def _map_mamba2attn(cfg: dict[str, Any], sd: dict[str, Any], config: Any, put, dst: dict[str, Any],
                    mapping: dict[str, str]) -> None:
    """mamba_ssm block keys → M2AForCausalLM keys (same blocks, in_proj split per q/k/v/mlp)."""
    attn_idx = set(config.attn_layer_indices)
    for i in range(config.num_hidden_layers):
        s, d = f"backbone.layers.{i}.", f"model.layers.{i}."
        put(s + "norm.weight", d + "input_layernorm.weight")
        if i in attn_idx:
            a = d + "self_attn."
            q = config.num_attention_heads * config.head_dim
            kv = config.num_key_value_heads * config.head_dim
            widths, names = [q, kv, kv], ["q_proj", "k_proj", "v_proj"]
            if config.attn_mlp_dim:
                widths.append(config.attn_mlp_dim)
                names.append("mlp_proj")
            for kind in ("weight", "bias"):
                key = s + f"mixer.in_proj.{kind}"
                if key in sd:
                    for name, t in zip(names, sd[key].split(widths, dim=0)):
                        dst[f"{a}{name}.{kind}"] = t.clone()
                    mapping[key] = f"{a}{{{','.join(names)}}}.{kind}"
            for key in ("conv1d.weight", "conv1d.bias"):
                if s + "mixer." + key in sd:
                    put(s + "mixer." + key, a + key)
            put(s + "mixer.out_proj.weight", a + "o_proj.weight")
            if s + "mixer.out_proj.bias" in sd:
                put(s + "mixer.out_proj.bias", a + "o_proj.bias")
        else:
            for key in _MIXER_KEYS + ("in_proj.bias", "out_proj.bias"):
                if s + "mixer." + key in sd:
                    put(s + "mixer." + key, d + "mamba." + key)
        if config.intermediate_size:
            put(s + "norm2.weight", d + "pre_ff_layernorm.weight")
            up, gate = sd[s + "mlp.fc1.weight"].chunk(2, dim=0)
            dst[d + "feed_forward.up_proj.weight"] = up.clone()
            dst[d + "feed_forward.gate_proj.weight"] = gate.clone()
            mapping[s + "mlp.fc1.weight"] = d + "feed_forward.{up,gate}_proj.weight"
            put(s + "mlp.fc2.weight", d + "feed_forward.down_proj.weight")


def _materialise_buffers(model, config):
    import torch

    for mod in model.modules():
        if hasattr(mod, "inv_freq") and mod.inv_freq.is_meta:
            with torch.device("cpu"):
                fresh = type(mod)(config=config)
            mod.inv_freq = fresh.inv_freq
            if hasattr(fresh, "original_inv_freq"):
                mod.original_inv_freq = fresh.original_inv_freq
    for name, buf in model.named_buffers():
        if buf.is_meta:
            raise SpanlabError(f"conversion left buffer {name} uninitialised; please report this checkpoint's config")
    return model


def convert_checkpoint(src: str | os.PathLike, out: str | os.PathLike, *, target: str | None = None,
                       tokenizer: str | None = None, dtype: str | None = None) -> str:
    """Write a transformers checkpoint (config + safetensors, + tokenizer when given) to `out`."""
    import torch

    cfg, sd = read_checkpoint(src)
    model, _ = convert_state(cfg, sd, target=target)
    if dtype:
        model = model.to(getattr(torch, {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(dtype, dtype)))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    if tokenizer:
        from spanlab.models.hf import load_tokenizer

        load_tokenizer(tokenizer).save_pretrained(out)
    (out / "spanlab_conversion.json").write_text(json.dumps({"source": str(Path(src).resolve()),
                                                             "source_config": cfg,
                                                             "class": type(model).__name__}, indent=2))
    return str(out)


def load_mamba_ssm(cfg: Any):
    """HF backend over a checkpoint converted in memory (nothing written to disk)."""
    from spanlab.models.hf import HFBackend, load_tokenizer
    from spanlab.models.prefill import DEFAULT_PREFILL_CHUNK

    if not cfg.tokenizer:
        raise SpanlabError("mamba_ssm checkpoints carry no tokenizer: pass --tokenizer "
                           "(the seed's models use EleutherAI/gpt-neox-20b)")
    mcfg, sd = read_checkpoint(cfg.model)
    model, _ = convert_state(mcfg, sd)
    backend = HFBackend(cfg.model, tokenizer=cfg.tokenizer, dtype=cfg.dtype, device=cfg.device,
                        model_obj=model, tokenizer_obj=load_tokenizer(cfg.tokenizer),
                        prefill_chunk=getattr(cfg, "prefill_chunk", DEFAULT_PREFILL_CHUNK))
    backend.name = "mamba_ssm"
    return backend
