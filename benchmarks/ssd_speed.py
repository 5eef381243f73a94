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

    python benchmarks/ssd_speed.py --out ssd.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import transformers as T

from spanlab import kernels
from spanlab.bench import time_cuda
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
    ap.add_argument("--parts", nargs="+", default=["scan", "prefill", "train"])
    ap.add_argument("--sweep", action="store_true", help="with --parts scan: also time other launch settings of the fused scan")
    ap.add_argument("--tiny", action="store_true", help="--parts scan only: tiny CPU shapes (run with TRITON_INTERPRET=1)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    rows = []

    def record(**row):
        rows.append(row)
        print(json.dumps(row), flush=True)

    if "scan" in args.parts:
        scan_cases(args.scans, record, sweep=args.sweep, tiny=args.tiny)
    if "prefill" in args.parts:
        prefill_cases(args.scans, record)
    if "train" in args.parts:
        train_cases(args.scans, record)
    use("spanlab")
    print(f"\n{'kind':8s} {'scan':16s} {'mode':13s} {'batch':>5s} {'length':>6s} {'s':>8s} {'tok/s':>9s} "
          f"{'TF-eq|GB/s':>10s} {'peak GiB':>8s}")
    for r in rows:
        if "s" in r:
            tf = f"{r['tflops']:10.1f}" if "tflops" in r else (f"{r['gbps_eq']:7d}GBs" if "gbps_eq" in r else f"{'-':>10s}")
            print(f"{r['kind']:8s} {r['scan']:16s} {r.get('mode', ''):13s} {r['batch']:5d} {r['length']:6d} {r['s']:8.4f} "
                  f"{r['tok_per_s']:9d} {tf} {r['peak_gib']:8.1f}")
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


def prefill_cases(scans, record) -> None:
    from spanlab.models.prefill import PrefillPlan, prefill_state

    model = mamba2(2048, 36).eval()
    nparams = sum(p.numel() for p in model.parameters())
    print(f"Mamba2 {nparams / 1e9:.3f}B parameters", flush=True)
    # (label, batch, length, chunk or 0 for one shot)
    cases = [("one-shot", 1, 4096, 0), ("one-shot", 1, 16384, 0), ("chunked 2048", 1, 16384, 2048),
             ("one-shot", 8, 4096, 0), ("chunked 2048", 8, 4096, 2048), ("chunked 2048", 8, 16384, 2048),
             ("chunked 2048", 32, 4096, 2048)]
    for scan in scans:
        use(scan)
        for label, b, n, chunk in cases:
            if scan == "transformers" and (n > 4096 or b > 1):
                record(kind="prefill", scan=scan, mode=label, batch=b, length=n,
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
                    record(kind="prefill", scan=scan, mode=label, batch=b, length=n, error=str(e).splitlines()[0][:160])
                    torch.cuda.empty_cache()
                    continue
            record(kind="prefill", scan=scan, mode=label, batch=b, length=n, s=round(s, 4), tok_per_s=round(b * n / s),
                   tflops=round(2 * nparams * b * n / s / 1e12, 1), peak_gib=round(peak, 1), first_call_s=round(first, 2))
            torch.cuda.empty_cache()
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
