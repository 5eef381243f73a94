"""mamba_ssm-layout random checkpoints and a dense float64 reference of MambaLMHeadModel, written
from the spec (mamba_ssm `modules/mamba2.py`, `modules/mha.py`, `modules/mlp.py`, `models/
mixer_seq_simple.py`) with plain per-token loops and full attention matrices."""

from __future__ import annotations

import json
import math

import torch
import torch.nn.functional as F

SSM = {"layer": "Mamba2", "d_state": 8, "headdim": 8, "ngroups": 2, "expand": 2, "chunk_size": 8}


def write_checkpoint(path, *, d_model=32, vocab=64, n_layer=4, attn_layer_idx=(1, 3), heads=4, kv_heads=2, head_dim=16,
                     rot=8, d_conv=4, mlp_dim=0, d_intermediate=0, qkv_bias=False, out_bias=False, ssm=None, seed=0):
    """config.json + pytorch_model.bin exactly as mamba_ssm's save_pretrained lays them out (path
    None: not written); `ssm` overrides the Mamba2 layers' `ssm_cfg` (default SSM); `d_conv` is the
    attention layers' q/k/v conv (0: none, the Transformer++ / Mamba2-Hybrid layout)."""
    ssm = {**SSM, **(ssm or {})}
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.1):
        return torch.randn(*shape, generator=g) * scale

    sd = {"backbone.embedding.weight": rnd(vocab, d_model, scale=0.5), "backbone.norm_f.weight": 1 + rnd(d_model)}
    ds, hd, ng = ssm["d_state"], ssm["headdim"], ssm["ngroups"]
    d_inner = ssm["expand"] * d_model
    nh = d_inner // hd
    qkv = (heads + 2 * kv_heads) * head_dim
    for i in range(n_layer):
        p = f"backbone.layers.{i}."
        sd[p + "norm.weight"] = 1 + rnd(d_model)
        if i in attn_layer_idx:
            sd[p + "mixer.in_proj.weight"] = rnd(qkv + mlp_dim, d_model, scale=0.25)
            if qkv_bias:
                sd[p + "mixer.in_proj.bias"] = rnd(qkv + mlp_dim)
            if d_conv:
                sd[p + "mixer.conv1d.weight"] = rnd(qkv, 1, d_conv, scale=0.5)
                sd[p + "mixer.conv1d.bias"] = rnd(qkv)
            sd[p + "mixer.out_proj.weight"] = rnd(d_model, heads * head_dim + mlp_dim // 2)
            if out_bias:
                sd[p + "mixer.out_proj.bias"] = rnd(d_model)
        else:
            sd[p + "mixer.in_proj.weight"] = rnd(2 * d_inner + 2 * ng * ds + nh, d_model, scale=0.25)
            sd[p + "mixer.conv1d.weight"] = rnd(d_inner + 2 * ng * ds, 1, 4, scale=0.4)
            sd[p + "mixer.conv1d.bias"] = rnd(d_inner + 2 * ng * ds)
            sd[p + "mixer.dt_bias"] = rnd(nh, scale=0.5) - 1
            sd[p + "mixer.A_log"] = torch.log(torch.rand(nh, generator=g) * 8 + 1)
            sd[p + "mixer.D"] = 1 + rnd(nh)
            sd[p + "mixer.norm.weight"] = 1 + rnd(d_inner)
            sd[p + "mixer.out_proj.weight"] = rnd(d_model, d_inner)
        if d_intermediate:
            sd[p + "norm2.weight"] = 1 + rnd(d_model)
            sd[p + "mlp.fc1.weight"] = rnd(2 * d_intermediate, d_model, scale=0.25)
            sd[p + "mlp.fc2.weight"] = rnd(d_model, d_intermediate)
    attn_cfg = {"num_heads": heads, "num_heads_kv": kv_heads, "head_dim": head_dim, "rotary_emb_dim": rot,
                "d_conv": d_conv, "mlp_dim": mlp_dim, "causal": True, "qkv_proj_bias": qkv_bias, "out_proj_bias": out_bias}
    cfg = {"d_model": d_model, "d_intermediate": d_intermediate, "n_layer": n_layer, "vocab_size": vocab, "ssm_cfg": ssm,
           "attn_layer_idx": list(attn_layer_idx), "attn_cfg": attn_cfg if attn_layer_idx else {}, "rms_norm": True,
           "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8, "tie_embeddings": True}
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(cfg))
        torch.save(sd, path / "pytorch_model.bin")
    return cfg, sd


def _rms(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _causal_conv(x, w, b):
    """x (L, C), w (C, 1, K): out[t] = b + sum_j w[:, j] * x[t - K + 1 + j], zeros before the start."""
    L, K = x.shape[0], w.shape[-1]
    out = torch.zeros_like(x) + (b if b is not None else 0)
    for t in range(L):
        for j in range(K):
            s = t - K + 1 + j
            if s >= 0:
                out[t] += w[:, 0, j] * x[s]
    return out


def _mamba2(x, p, cfg):
    ssm = {**SSM, **cfg["ssm_cfg"]}
    d_model = cfg["d_model"]
    d_inner, ds, hd, ng = ssm["expand"] * d_model, ssm["d_state"], ssm["headdim"], ssm["ngroups"]
    nh = d_inner // hd
    zxbcdt = x @ p["in_proj.weight"].T
    z, xbc, dt = zxbcdt.split([d_inner, d_inner + 2 * ng * ds, nh], dim=-1)
    xbc = F.silu(_causal_conv(xbc, p["conv1d.weight"], p["conv1d.bias"]))
    xs, B, C = xbc.split([d_inner, ng * ds, ng * ds], dim=-1)
    dt = F.softplus(dt + p["dt_bias"])
    A = -torch.exp(p["A_log"])
    h = torch.zeros(nh, hd, ds, dtype=x.dtype)
    ys = []
    for t in range(x.shape[0]):
        y = torch.zeros(nh, hd, dtype=x.dtype)
        for head in range(nh):
            grp = head // (nh // ng)
            xh = xs[t, head * hd:(head + 1) * hd]
            Bt, Ct = B[t, grp * ds:(grp + 1) * ds], C[t, grp * ds:(grp + 1) * ds]
            h[head] = torch.exp(dt[t, head] * A[head]) * h[head] + dt[t, head] * torch.outer(xh, Bt)
            y[head] = h[head] @ Ct + p["D"][head] * xh
        ys.append(y.reshape(-1))
    y = torch.stack(ys) * F.silu(z)
    # Gated RMSNorm per group of d_inner / ngroups channels.
    y = torch.cat([_rms(part, 1.0) for part in y.chunk(ng, dim=-1)], dim=-1) * p["norm.weight"]
    return y @ p["out_proj.weight"].T


def _rotary(x, rot, base=10000.0):
    """x (L, heads, D): non-interleaved rotary on the first `rot` dims, position t = row index."""
    if rot == 0:
        return x
    out = x.clone()
    half = rot // 2
    for t in range(x.shape[0]):
        for i in range(half):
            theta = t * base ** (-2 * i / rot)
            c, s = math.cos(theta), math.sin(theta)
            a, b = x[t, :, i], x[t, :, i + half]
            out[t, :, i] = a * c - b * s
            out[t, :, i + half] = b * c + a * s
    return out


def _mha(x, p, cfg):
    a = cfg["attn_cfg"]
    H, Hkv, D, rot = a["num_heads"], a.get("num_heads_kv") or a["num_heads"], a["head_dim"], a["rotary_emb_dim"]
    L = x.shape[0]
    qkv_dim = (H + 2 * Hkv) * D
    proj = x @ p["in_proj.weight"].T + (p["in_proj.bias"] if "in_proj.bias" in p else 0)
    qkv, mlp = proj[:, :qkv_dim], proj[:, qkv_dim:]
    if a.get("d_conv", 0):
        qkv = _causal_conv(qkv, p["conv1d.weight"], p["conv1d.bias"])
    q, k, v = qkv.split([H * D, Hkv * D, Hkv * D], dim=-1)
    q, k, v = q.view(L, H, D), k.view(L, Hkv, D), v.view(L, Hkv, D)
    q, k = _rotary(q, rot, a.get("rotary_emb_base", 10000.0)), _rotary(k, rot, a.get("rotary_emb_base", 10000.0))
    scale = a.get("softmax_scale") or 1 / math.sqrt(D)
    out = torch.zeros(L, H, D, dtype=x.dtype)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    for h in range(H):
        kh = h // (H // Hkv)
        s = (q[:, h] @ k[:, kh].T) * scale
        s = s.masked_fill(~causal, float("-inf"))
        out[:, h] = torch.softmax(s, dim=-1) @ v[:, kh]
    out = out.reshape(L, H * D)
    if mlp.shape[-1]:
        up, gate = mlp.chunk(2, dim=-1)
        out = torch.cat([out, up * F.silu(gate)], dim=-1)
    return out @ p["out_proj.weight"].T + (p["out_proj.bias"] if "out_proj.bias" in p else 0)


def reference_logits(cfg, sd, ids):
    """(batch, L) token ids → (batch, L, vocab) float64 logits of mamba_ssm's MambaLMHeadModel."""
    sd = {k: v.double() for k, v in sd.items()}
    out = []
    for row in ids:
        h = sd["backbone.embedding.weight"][row]
        for i in range(cfg["n_layer"]):
            pre = f"backbone.layers.{i}."
            p = {k[len(pre) + len("mixer."):]: v for k, v in sd.items() if k.startswith(pre + "mixer.")}
            x = _rms(h, sd[pre + "norm.weight"])
            h = h + (_mha(x, p, cfg) if i in cfg["attn_layer_idx"] else _mamba2(x, p, cfg))
            if cfg.get("d_intermediate"):
                y, gate = (_rms(h, sd[pre + "norm2.weight"]) @ sd[pre + "mlp.fc1.weight"].T).chunk(2, dim=-1)
                h = h + (y * F.silu(gate)) @ sd[pre + "mlp.fc2.weight"].T
        h = _rms(h, sd["backbone.norm_f.weight"])
        out.append(h @ sd["backbone.embedding.weight"].T)
    return torch.stack(out)
