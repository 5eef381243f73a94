"""Where SE-Attn's fwd+bwd time and memory go (H100 target config: bf16, B=1, H=16, D=128, S=32, k=8).

    python benchmarks/attention_se_breakdown.py [--lengths 32768,65536] [--profile-length 32768]

Per length: full attention (scale); block selection alone, torch vs the fused Triton kernel, and
the kernel alone at 2/4/8 warps; per chunk size the whole SE step, the attention given fixed
blocks, and two alternatives measured before (not) adopting them: the memory piece's backward in
one call instead of two slices (memory), and the "padded query" single cuDNN call (one causal call
over [memory | chunk] tiles, the memory rows given dO = 0; `PaddedSingleCall` below, a prototype
that lives only here). Each line: median ms of CUDA events (steps synchronised) and peak GiB over
one step. Also the host time to enqueue a step and its parts, and at --profile-length a CUDA
kernel table (M = 2048, five unsynchronised steps, with the GPU-busy fraction) and a CPU table.
Recorded outputs: benchmarks/results/attention_h100/se_breakdown_<commit>.txt.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from spanlab.attention import full_attention, lse_kernels, se, se_attention
from spanlab.attention.se import se_attend
from spanlab.attention.selection import select_blocks

H, D, S, K = 16, 128, 32, 8


def bench(fn, warmup=3, rep=10) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(rep):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def peak(fn) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def measure(fn) -> str:
    return f"{bench(fn):.3f} ms / {peak(fn):.3f} GiB"


class PaddedSingleCall(torch.autograd.Function):
    """Idea 2, prototype (MHA, L % M == 0): chunk i >= 1 becomes one square top-left-causal tile
    [T memory rows | M chunk rows] of queries, keys and values; the memory query rows are dummies
    (the previous chunk's last T queries), their outputs are dropped and their dO is 0, so they add
    nothing to dK/dV. Chunk 0 (no memory) is a plain causal call. Copies Q', K', V', dO'."""

    @staticmethod
    def forward(ctx, q, k, v, blocks, M):
        B, Hq, L, Dh = q.shape
        nc = L // M
        T = blocks.shape[-1] * S
        tok = (blocks[:, :, 1:].unsqueeze(-1) * S + torch.arange(S, device=q.device)).reshape(B, Hq, (nc - 1) * T, 1)

        def tiles(x, mem):
            xv = x.view(B, Hq, nc, M, Dh)
            return torch.cat([mem.view(B, Hq, nc - 1, T, Dh), xv[:, :, 1:]], dim=3).view(B, Hq * (nc - 1), T + M, Dh)

        idx = tok.expand(B, Hq, (nc - 1) * T, Dh)
        qv = q.view(B, Hq, nc, M, Dh)
        qt = torch.cat([qv[:, :, :-1, M - T:], qv[:, :, 1:]], dim=3).view(B, Hq * (nc - 1), T + M, Dh)
        kt, vt = tiles(k, torch.gather(k, 2, idx)), tiles(v, torch.gather(v, 2, idx))
        q0, k0, v0 = (x[:, :, :M].contiguous() for x in (q, k, v))
        o0, l0, s0 = lse_kernels.forward("cudnn", q0, k0, v0, True)
        ot, lt, st = lse_kernels.forward("cudnn", qt, kt, vt, True)
        out = torch.empty_like(q)
        ov = out.view(B, Hq, nc, M, Dh)
        ov[:, :, 0] = o0
        ov[:, :, 1:] = ot.view(B, Hq, nc - 1, T + M, Dh)[:, :, :, T:]
        ctx.save_for_backward(q0, k0, v0, o0, l0, qt, kt, vt, ot, lt, tok)
        ctx.meta = (M, T, nc, s0, st)
        return out

    @staticmethod
    def backward(ctx, dout):
        q0, k0, v0, o0, l0, qt, kt, vt, ot, lt, tok = ctx.saved_tensors
        M, T, nc, s0, st = ctx.meta
        B, Hq, _, Dh = q0.shape
        dv_ = dout.view(B, Hq, nc, M, Dh)
        dot = torch.zeros(B, Hq, nc - 1, T + M, Dh, device=dout.device, dtype=dout.dtype)
        dot[:, :, :, T:] = dv_[:, :, 1:]
        dqt, dkt, dvt = lse_kernels.backward("cudnn", dot.view_as(ot), qt, kt, vt, ot, lt, st, True)
        del dot
        dq0, dk0, dv0 = lse_kernels.backward("cudnn", dv_[:, :, 0].contiguous(), q0, k0, v0, o0, l0, s0, True)
        grads = []
        for g0, gt, scatter in ((dq0, dqt, False), (dk0, dkt, True), (dv0, dvt, True)):
            g = torch.empty(B, Hq, nc * M, Dh, device=dout.device, dtype=dout.dtype)
            gv = g.view(B, Hq, nc, M, Dh)
            gtv = gt.view(B, Hq, nc - 1, T + M, Dh)
            gv[:, :, 0] = g0
            gv[:, :, 1:] = gtv[:, :, :, T:]
            if scatter:
                g.scatter_add_(2, tok.expand(B, Hq, (nc - 1) * T, Dh), gtv[:, :, :, :T].reshape(B, Hq, (nc - 1) * T, Dh))
            grads.append(g)
        return (*grads, None, None)


def step_fn(q, k, v, do, f):
    def run():
        q.grad = k.grad = v.grad = None
        f().backward(do)

    return run


def chunk_rows(L: int, M: int, q, k, v, do) -> None:
    blocks = select_blocks(q, k, v, chunk_size=M, block_size=S, top_k=K, selection="relevance", generator=None)
    same = torch.equal(blocks, select_blocks(q.float(), k.float(), v.float(), chunk_size=M, block_size=S,
                                             top_k=K, selection="relevance", generator=None, impl="torch"))
    rows = {
        "se": step_fn(q, k, v, do, lambda: se_attention(q, k, v, chunk_size=M, block_size=S, top_k=K)),
        "attend": step_fn(q, k, v, do, lambda: se_attend(q, k, v, blocks, chunk_size=M, block_size=S)),
        "padded1call": step_fn(q, k, v, do, lambda: PaddedSingleCall.apply(q, k, v, blocks, M)),
    }
    for name, fn in rows.items():
        print(f"L={L} M={M} {name}: {measure(fn)}", flush=True)
    se.MEMORY_BACKWARD_SLICES = 1
    print(f"L={L} M={M} se[1 slice]: {measure(rows['se'])}", flush=True)
    se.MEMORY_BACKWARD_SLICES = 2
    ref = se_attend(q, k, v, blocks, chunk_size=M, block_size=S)
    pad = PaddedSingleCall.apply(q, k, v, blocks, M)
    err = float((pad.float() - ref.float()).norm().detach() / ref.float().norm().detach())
    print(f"L={L} M={M}: padded vs attend rel err {err:.2e}; bf16 triton choice == fp32 torch choice: {same}")
    # Host side: time to enqueue (no sync inside, after a sync), median of 5: whole step, selection,
    # forward, backward. If the whole step's host time reaches its GPU time, launches are the limit.
    def host(fn) -> float:
        ts = []
        for _ in range(5):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
        torch.cuda.synchronize()
        return statistics.median(ts)

    outs = []

    def fwd():
        outs.append(se_attend(q, k, v, blocks, chunk_size=M, block_size=S))

    def bwd():
        outs.pop().backward(do)

    parts = {
        "step": host(rows["se"]),
        "select": host(lambda: select_blocks(q, k, v, chunk_size=M, block_size=S, top_k=K, selection="relevance",
                                             generator=None)),
    }
    fw, bw = [], []
    for _ in range(5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fwd()
        fw.append((time.perf_counter() - t0) * 1e3)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        bwd()
        bw.append((time.perf_counter() - t0) * 1e3)
        torch.cuda.synchronize()
    parts["attend fwd"], parts["attend bwd"] = statistics.median(fw), statistics.median(bw)
    print(f"L={L} M={M}: host enqueue ms " + ", ".join(f"{k_} {v_:.3f}" for k_, v_ in parts.items()), flush=True)


def kernel_table(L: int, q, k, v, do) -> None:
    fn = step_fn(q, k, v, do, lambda: se_attention(q, k, v, chunk_size=2048, block_size=S, top_k=K))
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    n = 5
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(n):
            fn()
        b.record()
        torch.cuda.synchronize()
    wall = a.elapsed_time(b) / n
    busy = sum(e.self_device_time_total for e in prof.key_averages()) / 1e3 / n
    print(f"L={L} M=2048 profiler: {wall:.3f} ms per step (profiled), kernels {busy:.3f} ms -> GPU busy {busy / wall:.0%}")
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=30, max_name_column_width=70))
    # Host side of one step: which Python-level calls cost CPU time.
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as cprof:
        fn()
        torch.cuda.synchronize()
    print(cprof.key_averages().table(sort_by="cpu_time_total", row_limit=40, max_name_column_width=60))


def one_length(L: int, g: torch.Generator, profile: bool) -> None:
    q, k, v = (torch.randn(1, H, L, D, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_() for _ in range(3))
    do = torch.randn_like(q)
    print(f"L={L}: full {measure(step_fn(q, k, v, do, lambda: full_attention(q, k, v)))}", flush=True)
    for impl in ("torch", "triton"):
        t = bench(lambda impl=impl: select_blocks(q, k, v, chunk_size=2048, block_size=S, top_k=K, selection="relevance",
                                                  generator=None, impl=impl))
        print(f"L={L}: select[{impl}] {t:.3f} ms", flush=True)
    from spanlab.attention import selection_triton

    for w in (2, 4, 8):
        selection_triton.NUM_WARPS = w
        t = bench(lambda: selection_triton.block_stats(q, k, v, S), rep=20)
        print(f"L={L}: block_stats kernel, {w} warps: {t:.3f} ms", flush=True)
    selection_triton.NUM_WARPS = None
    for M in (2048, 4096):
        chunk_rows(L, M, q, k, v, do)
    if profile:
        kernel_table(L, q, k, v, do)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="32768,65536")
    ap.add_argument("--profile-length", type=int, default=32768)
    args = ap.parse_args()
    g = torch.Generator("cuda").manual_seed(0)
    for L in (int(x) for x in args.lengths.split(",")):
        one_length(L, g, L == args.profile_length)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    os.environ.pop("SPANLAB_SE_BACKEND", None)
    os.environ.pop("SPANLAB_SE_SELECTION", None)
    main()
