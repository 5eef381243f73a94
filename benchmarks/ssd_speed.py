"""Mamba2 prefill and training without mamba-ssm: transformers' torch scan vs spanlab.models.ssd.

Prefill: one forward of a random bf16 ~1B Mamba2 (36 layers, d_model 2048, 64 heads x 64, state
128, chunk 256) at batch 1 and at the eval engine's batch, one shot and chunked (as `--prefill-chunk`
feeds it); tokens/s and peak GPU memory. Training: forward + backward of 18M and 97M Mamba2s. Each
with the scan transformers ships and with spanlab's (`ssd.install()`), and optionally the latter
under torch.compile. `spanlab` is the default on CUDA: the fused Triton chunk scan
(spanlab.models.ssd_triton) for bf16 inputs without gradients, the torch scan for training;
`spanlab-torch` is the batched-matmul torch scan with bf16 operands and float32 accumulation
(SPANLAB_KERNELS=ssd=torch); `spanlab-f32` the torch scan with float32 operands
(SPANLAB_KERNELS=ssd=torch,ssd_matmul=float32). `--parts scan` times the scan alone at one 1B
layer's geometry (16K tokens), each scan against the bytes it must move at least. The prefill table's `TFLOP/s-eq` column is 2 x parameters x tokens /
seconds: the rate a dense model of that size would need to match, the issue-13 figure (target 250).
Each prefill row runs with the mixer glue (`--glue`) of transformers (`torch`) or spanlab's Triton
kernels (`triton`: spanlab.models.mamba2_prefill_kernels, the conv1d + SiLU and the gated norm).

`--parts glue` times those two pieces alone at one 0.95B layer's 16K-token shapes, transformers'
torch code against the kernels, beside a device-to-device copy (the bandwidth ceiling): ms, the
GB/s of the fewest bytes each must move (inputs read once, output written once) and the floor
(those bytes at the copy rate).

    python benchmarks/ssd_speed.py --out ssd.json
    python benchmarks/ssd_speed.py --parts glue prefill --scans spanlab --glue torch triton
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import transformers as T

from spanlab import kernels
from spanlab.bench import time_cuda
from spanlab.models import mamba2_prefill_kernels as mpk
from spanlab.models import ssd


def mamba2(hidden: int, layers: int, vocab: int = 8192):
    cfg = T.Mamba2Config(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, state_size=128, expand=2,
                         head_dim=64, num_heads=2 * hidden // 64, n_groups=1, chunk_size=256, bos_token_id=0,
                         eos_token_id=0, pad_token_id=0, tie_word_embeddings=True)
    torch.manual_seed(0)
    with torch.device("cuda"):
        return T.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)


def timed(fn, reps: int = 3) -> tuple[float, float]:
    """(median seconds, peak GiB) over `reps` calls after one warm-up."""
    t = time_cuda(fn, warmup=1, iters=reps, memory=True)
    return t.median_ms / 1e3, t.peak_mem_gib or 0.0


def use(scan: str) -> None:
    ssd.uninstall()
    forced = {"spanlab-f32": {"ssd": "torch", "ssd_matmul": "float32"}, "spanlab-torch": {"ssd": "torch"}}
    kernels.configure(forced.get(scan))
    if scan in forced:
        scan = "spanlab"
    if scan == "spanlab":
        ssd.install()
    elif scan == "spanlab+compile":
        ssd.install()
        fn = torch.compile(ssd.ssd_chunk_scan, dynamic=False)
        for name in ssd.MODULES:
            try:
                mod = __import__(name, fromlist=["x"])
            except ImportError:
                continue
            if getattr(mod, ssd.GLOBAL, None) is ssd.ssd_chunk_scan:
                setattr(mod, ssd.GLOBAL, fn)


def main() -> None:
    ap = argparse.ArgumentParser()
    # "spanlab+compile" (torch.compile of the scan) is available but not default: torch 2.11's
    # inductor failed to generate code for its cumsum (InductorError, 2026-11-23).
    ap.add_argument("--scans", nargs="+", default=["transformers", "spanlab", "spanlab-torch", "spanlab-f32"])
    ap.add_argument("--parts", nargs="+", default=["scan", "prefill", "train"], choices=["scan", "prefill", "train", "glue"])
    ap.add_argument("--sweep", action="store_true", help="with --parts scan: also time other launch settings of the fused scan")
    ap.add_argument("--tiny", action="store_true", help="--parts scan only: tiny CPU shapes (run with TRITON_INTERPRET=1)")
    ap.add_argument("--glue", nargs="+", default=["torch", "triton"], choices=["torch", "triton"],
                    help="prefill rows: the mixer's conv/norm glue through transformers' code or spanlab's kernels")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    rows = []

    def record(**row):
        rows.append(row)
        print(json.dumps(row), flush=True)

    if "scan" in args.parts:
        scan_cases(args.scans, record, sweep=args.sweep, tiny=args.tiny)
    if "glue" in args.parts:
        glue_cases(record)
        torch.cuda.empty_cache()
    if "prefill" in args.parts:
        prefill_cases(args.scans, record, args.glue)
    if "train" in args.parts:
        train_cases(args.scans, record)
    use("spanlab")
    glue_rows = [r for r in rows if r["kind"] == "glue"]
    if glue_rows:
        print(f"\n{'piece':36s} {'path':18s} {'ms':>8s} {'GB/s':>7s} {'floor ms':>8s} {'x floor':>7s} {'rel err':>8s}")
        for r in glue_rows:
            err = f"{r['rel_err']:8.1e}" if "rel_err" in r else f"{'':8s}"
            print(f"{r['piece']:36s} {r['path']:18s} {r['ms']:8.3f} {r['gb_per_s']:7.0f} {r['floor_ms']:8.3f} "
                  f"{r['ms'] / r['floor_ms']:7.2f} {err}")
    print(f"\n{'kind':8s} {'scan':16s} {'glue':6s} {'mode':13s} {'batch':>5s} {'length':>6s} {'s':>8s} {'tok/s':>9s} "
          f"{'TF-eq|GB/s':>10s} {'peak GiB':>8s}")
    for r in rows:
        if "s" in r:
            tf = f"{r['tflops']:10.1f}" if "tflops" in r else (f"{r['gbps_eq']:7d}GBs" if "gbps_eq" in r else f"{'-':>10s}")
            print(f"{r['kind']:8s} {r['scan']:16s} {r.get('glue', ''):6s} {r.get('mode', ''):13s} {r['batch']:5d} "
                  f"{r['length']:6d} {r['s']:8.4f} {r['tok_per_s']:9d} {tf} {r['peak_gib']:8.1f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


def scan_cases(scans, record, sweep: bool = False, tiny: bool = False) -> None:
    """The scan alone at a 1B Mamba2 layer's geometry (64 heads x 64, state 128, 1 group, chunk
    256), 16K tokens, bf16 inputs, inference mode. Floor: x read once (bf16), B and C read once,
    the float32 output written once; `GB/s-eq` = those bytes over the time."""
    # --tiny: a CPU smoke of this code under TRITON_INTERPRET=1 (sizes the interpreter gets through).
    b, L, h, p, n = (1, 512, 4, 16, 16) if tiny else (1, 16384, 64, 64, 128)
    dev = "cpu" if tiny else "cuda"
    gen = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(b, L, h, p, device=dev, generator=gen, dtype=torch.bfloat16)
    dt = torch.randn(b, L, h, device=dev, generator=gen, dtype=torch.bfloat16)
    A = -(torch.rand(h, device=dev, generator=gen) * 3 + 0.1)
    B = torch.randn(b, L, 1, n, device=dev, generator=gen, dtype=torch.bfloat16) * 0.5
    C = torch.randn(b, L, 1, n, device=dev, generator=gen, dtype=torch.bfloat16) * 0.5
    D = torch.randn(h, device=dev, generator=gen)
    dtb = torch.randn(h, device=dev, generator=gen)
    floor_bytes = x.numel() * 2 + B.numel() * 2 * 2 + x.numel() * 4
    for scan in scans:
        if scan in ("transformers", "spanlab+compile"):
            continue  # transformers' does not fit at 16K; compile is measured in the prefill rows
        use(scan)
        fn = getattr(__import__(ssd.MODULES[0], fromlist=["x"]), ssd.GLOBAL)
        with torch.inference_mode():
            s, peak = timed(lambda fn=fn: fn(x, dt, A, B, C, 256, D=D, dt_bias=dtb, dt_softplus=True,  # noqa: E731
                                             return_final_states=True), reps=10)
        record(kind="scan", scan=scan, mode=f"layer {L} tok", batch=b, length=L, s=round(s, 5), tok_per_s=round(b * L / s),
               gbps_eq=round(floor_bytes / s / 1e9), peak_gib=round(peak, 2))
        if sweep and scan == "spanlab":
            from spanlab.models import ssd_triton

            default = {k: dict(v) for k, v in ssd_triton.CONFIG.items()}
            for warps, stages in ((4, 1), (4, 3), (8, 2), (8, 3), (2, 2)):
                for part in ("state", "scan"):
                    ssd_triton.CONFIG[part] = {"num_warps": warps, "num_stages": stages}
                with torch.inference_mode():
                    s2, _ = timed(lambda fn=fn: fn(x, dt, A, B, C, 256, D=D, dt_bias=dtb, dt_softplus=True,  # noqa: E731
                                                   return_final_states=True), reps=10)
                record(kind="scan", scan=f"spanlab w{warps}s{stages}", mode=f"layer {L} tok", batch=b, length=L,
                       s=round(s2, 5), tok_per_s=round(b * L / s2), gbps_eq=round(floor_bytes / s2 / 1e9), peak_gib=0.0)
            ssd_triton.CONFIG.update(default)


def glue(model, path: str) -> None:
    """The mixers' conv/norm glue through transformers' code ("torch") or spanlab's kernels ("triton")."""
    mpk.uninstall_model(model)
    mpk.uninstall()
    if path == "triton":
        assert mpk.install(model) == ["conv1d", "gated_norm"]


def glue_cases(record, device: str = "cuda", L: int = 16384, hidden: int = 2048) -> None:
    """One 0.95B layer's glue at 16K tokens: transformers' torch code vs the kernels (module doc).
    (`device`/`L`/`hidden` other than the defaults: a smoke run, e.g. on CPU under TRITON_INTERPRET=1.)"""
    from transformers.models.mamba2 import modeling_mamba2 as M

    mpk.uninstall()
    inter = 2 * hidden
    conv_dim = inter + 2 * 128
    proj = inter + conv_dim + inter // 64
    rate = copy_rate(record, device, 2**28 if device == "cuda" else 2**16)
    gen = torch.Generator(device=device).manual_seed(0)
    zxbcdt = torch.randn(1, L, proj, device=device, dtype=torch.bfloat16, generator=gen)
    x = zxbcdt[:, :, inter:inter + conv_dim].transpose(1, 2)
    conv = torch.nn.Conv1d(conv_dim, conv_dim, 4, groups=conv_dim, padding=3).to(device=device, dtype=torch.bfloat16)
    w, b = conv.weight[:, 0], conv.bias
    prev = torch.randn(1, conv_dim, 4, device=device, generator=gen).to(torch.bfloat16)
    mask = torch.ones(1, L, device=device, dtype=torch.int64)
    mask[:, :L // 100 + 1] = 0
    y32 = torch.randn(1, L, inter, device=device, generator=gen)
    y16 = y32.to(torch.bfloat16)
    gate = zxbcdt[:, :, :inter]
    norm = M.Mamba2RMSNormGated(inter, group_size=inter).to(device=device, dtype=torch.bfloat16)
    fallback = M.causal_conv1d_forward

    def conv_torch(prev=None, mask=None):
        full = torch.cat([prev, x], dim=-1) if prev is not None else x  # what the cache hands the conv after a state
        out = fallback(conv, full, None, 0, activation="silu")[..., -L:]
        return M.apply_mask_to_padding_states(out.transpose(1, 2), mask)

    def rows(t):  # (b, d, L) conv outputs as (b, L, d), like the mixer's transpose
        return t.transpose(1, 2) if t.shape[1] == conv_dim and t.shape[2] == L else t

    n_conv, n_norm = L * conv_dim, L * inter
    tag = f"{L // 1024}K" if L >= 1024 else str(L)
    pieces = [
        (f"conv1d+SiLU, {tag} x {conv_dim} bf16", 4 * n_conv, lambda: conv_torch(),
         lambda: mpk.conv_prefill_triton(x, w, b, "silu")),
        ("  + padding mask", 4 * n_conv + 8 * L, lambda: conv_torch(mask=mask),
         lambda: mpk.conv_prefill_triton(x, w, b, "silu", mask=mask)),
        ("  after a stored state", 4 * n_conv, lambda: conv_torch(prev=prev),
         lambda: mpk.conv_prefill_triton(x, w, b, "silu", prev=prev)),
        (f"gated norm, f32 y -> bf16, x {inter}", 8 * n_norm, lambda: norm(y32, gate).to(torch.bfloat16),
         lambda: mpk.gated_norm_triton(y32, gate, norm.weight, norm.variance_epsilon, inter, out_dtype=torch.bfloat16)),
        ("gated norm, bf16 y -> bf16", 6 * n_norm, lambda: norm(y16, gate),
         lambda: mpk.gated_norm_triton(y16, gate, norm.weight, norm.variance_epsilon, inter)),
    ]
    # The conv's tile (positions x channels, warps): the default first, then a few others to choose from.
    tiles = [(64, 128, 8), (32, 128, 4), (128, 64, 8), (64, 256, 8), (32, 256, 8), (128, 128, 8)]
    sweep = {f"triton {bl}x{bd}/{nw}": (lambda bl=bl, bd=bd, nw=nw: mpk.conv_prefill_triton(
        x, w, b, "silu", block_l=bl, block_d=bd, num_warps=nw)) for bl, bd, nw in tiles[1:]}
    with torch.inference_mode():
        for i, (piece, nbytes, eager, kernel) in enumerate(pieces):
            want, got = rows(eager()).double(), rows(kernel()).double()
            err = float((got - want).norm() / want.norm())  # correct first: bf16 rounding, ~1e-3
            paths = [("transformers", eager), ("triton", kernel)]
            if i == 0 and device == "cuda":
                for path, fn in sweep.items():
                    e = float((rows(fn()).double() - want).norm() / want.norm())
                    assert abs(e - err) < 1e-3, (path, e, err)  # the same function whatever the tile
                paths += list(sweep.items())
            for path, fn in paths:
                ms = time_cuda(fn, warmup=3, iters=20, device=device).median_ms
                record(kind="glue", piece=piece, path=path, ms=round(ms, 4), bytes=nbytes, rel_err=err,
                       gb_per_s=round(nbytes / (ms / 1e3) / 1e9), floor_ms=round(nbytes / rate / 1e6, 4))


def copy_rate(record, device: str = "cuda", n: int = 2**28) -> float:
    """GB/s of a device-to-device copy of n bf16 (512 MiB), bytes read plus written: the ceiling the glue is read against."""
    src = torch.randn(n, device=device).to(torch.bfloat16)
    dst = torch.empty_like(src)
    ms = time_cuda(lambda: dst.copy_(src), warmup=3, iters=20, device=device).median_ms
    rate = 2 * src.numel() * 2 / (ms / 1e3) / 1e9
    record(kind="glue", piece=f"device-to-device copy, {n * 2 >> 20} MiB bf16", path="copy_", ms=round(ms, 4),
           gb_per_s=round(rate), floor_ms=round(ms, 4))
    return rate


def prefill_cases(scans, record, glues=("torch",)) -> None:
    from spanlab.models.prefill import PrefillPlan, prefill_state

    model = mamba2(2048, 36).eval()
    nparams = sum(p.numel() for p in model.parameters())
    print(f"Mamba2 {nparams / 1e9:.3f}B parameters", flush=True)
    # (label, batch, length, chunk or 0 for one shot)
    cases = [("one-shot", 1, 4096, 0), ("one-shot", 1, 16384, 0), ("chunked 2048", 1, 16384, 2048),
             ("one-shot", 8, 4096, 0), ("chunked 2048", 8, 4096, 2048), ("chunked 2048", 8, 16384, 2048),
             ("chunked 2048", 32, 4096, 2048)]
    for scan, path in [(s, g) for s in scans for g in glues]:
        use(scan)
        glue(model, path)
        for label, b, n, chunk in cases:
            if scan == "transformers" and (n > 4096 or b > 1):
                record(kind="prefill", scan=scan, glue=path, mode=label, batch=b, length=n,
                       skipped="the 6-D contraction needs ~32 GiB per 4K prompt: larger cases do not fit")
                continue
            if scan == "spanlab+compile" and (chunk or b > 1):
                continue  # compile (one graph per shape) is measured on the batch-1 one-shot shapes only
            ids = torch.randint(5, 8192, (b, n), device="cuda")
            mask = torch.ones_like(ids)
            with torch.inference_mode():
                if chunk:
                    plan = PrefillPlan("state", chunk, "cache_params", "cache_params")
                    fn = (lambda ids=ids, mask=mask, plan=plan, m=model: prefill_state(m, plan, ids, mask))  # noqa: E731
                else:
                    fn = (lambda ids=ids, m=model: m(ids, use_cache=False, logits_to_keep=1))  # noqa: E731
                try:
                    t0 = time.perf_counter()
                    fn()
                    torch.cuda.synchronize()
                    first = time.perf_counter() - t0
                    s, peak = timed(fn)
                except torch.cuda.OutOfMemoryError as e:
                    record(kind="prefill", scan=scan, glue=path, mode=label, batch=b, length=n,
                           error=str(e).splitlines()[0][:160])
                    torch.cuda.empty_cache()
                    continue
            record(kind="prefill", scan=scan, glue=path, mode=label, batch=b, length=n, s=round(s, 4), tok_per_s=round(b * n / s),
                   tflops=round(2 * nparams * b * n / s / 1e12, 1), peak_gib=round(peak, 1), first_call_s=round(first, 2))
            torch.cuda.empty_cache()
    glue(model, "torch")
    del model
    torch.cuda.empty_cache()


def train_cases(scans, record) -> None:
    # Training: forward + backward, bf16 weights; an 18M model (where transformers' scan fits) and a 97M one.
    for name, hidden, layers, b, n in (("tiny", 512, 8, 4, 1024), ("97M", 768, 24, 8, 2048)):
        small = mamba2(hidden, layers).train()
        nsmall = sum(p.numel() for p in small.parameters())
        ids = torch.randint(5, 8192, (b, n), device="cuda")

        def step(ids=ids, small=small):
            out = small(ids, labels=ids)
            out.loss.backward()
            small.zero_grad(set_to_none=True)
        for scan in scans:
            use(scan)
            try:
                s, peak = timed(step)
            except torch.cuda.OutOfMemoryError as e:
                record(kind="train", scan=scan, model=name, batch=b, length=n, error=str(e).splitlines()[0][:160])
                torch.cuda.empty_cache()
                continue
            record(kind="train", scan=scan, model=name, mode=name, params=nsmall, batch=b, length=n, s=round(s, 4),
                   tok_per_s=round(b * n / s), peak_gib=round(peak, 1))
            torch.cuda.empty_cache()
        del small
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
