"""Where SE-Attn's fwd+bwd time and memory go (H100 target config: bf16, B=1, H=16, D=128, S=32, k=8).

    python benchmarks/attention_se_breakdown.py [--lengths 32768,65536] [--profile-length 32768]
        [--sweep] [--no-graph]

Per length: full attention (scale), then per chunk size M:
  * the SE step (default path: Triton memory piece) and the same step with the memory piece
    through cuDNN (`--kernels`-style choice `se_memory=backend`, the previous design), SE-NoMem (the causal piece
    alone), and the attention given fixed blocks; median ms of CUDA events (steps synchronised) and
    peak GiB over one step, plus sparse TFLOP/s;
  * block selection alone (Triton kernels vs the torch path);
  * the host time to enqueue a step and its parts (if it reaches the GPU time, launches limit);
  * the step captured in a CUDA graph and replayed (no host work at all: the kernel-bound time);
  * at --profile-length, a CUDA kernel table (five unsynchronised steps) with the GPU-busy fraction.
--sweep times each Triton memory kernel alone under the tile shapes in MEMORY_CONFIGS.
Recorded outputs: benchmarks/results/attention_h100/se_breakdown_<commit>.txt.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch

from spanlab import kernels
from spanlab.attention import full_attention, lse_kernels, se_attention
from spanlab.attention import se_memory_triton as smt
from spanlab.attention.profile import FWD_BWD, attention_flops
from spanlab.attention.se import se_attend
from spanlab.attention.selection import select_blocks
from spanlab.bench import peak_memory_gib, time_cuda

H, D, S, K = 16, 128, 32, 8

# Tile shapes (BM queries, BN memory rows, warps, pipeline stages) timed against the defaults in
# se_memory_triton.CONFIG: neighbours of the chosen ones and the first guess, all compiling for
# sm_90 without register spills at D = 128 (benchmarks/attention_kernel_report.py --configs).
MEMORY_CONFIGS = [
    {"fwd": {"BM": 128, "BN": 64, "num_warps": 8, "num_stages": 2}},
    {"fwd": {"BM": 64, "BN": 64, "num_warps": 4, "num_stages": 3}},
    {"fwd": {"BM": 64, "BN": 32, "num_warps": 4, "num_stages": 2}},
    {"dq": {"BM": 128, "BN": 64, "num_warps": 8, "num_stages": 2}},
    {"dq": {"BM": 64, "BN": 32, "num_warps": 4, "num_stages": 3}},
    {"dq": {"BM": 64, "BN": 16, "num_warps": 4, "num_stages": 2}},
    {"dkdv": {"BM": 64, "BN": 64, "num_warps": 8, "num_stages": 2}},
    {"dkdv": {"BM": 32, "BN": 64, "num_warps": 4, "num_stages": 3}},
    {"dkdv": {"BM": 16, "BN": 64, "num_warps": 4, "num_stages": 2}},
    {"dkdv": {"BM": 32, "BN": 128, "num_warps": 8, "num_stages": 2}},
]


def bench(fn) -> float:
    """Median ms of 10 calls after 3 warm-up calls (spanlab.bench.time_cuda)."""
    return time_cuda(fn, warmup=3, iters=10).median_ms


def bench_kernel(fn, rep=30) -> float:
    """A kernel alone: back-to-back launches between two events, per-launch mean."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(rep):
        fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) / rep


def peak(fn) -> float:
    return peak_memory_gib(fn, "cuda") or 0.0


def step_fn(q, k, v, do, f):
    def run():
        q.grad = k.grad = v.grad = None
        f().backward(do)

    return run


def host_ms(fn) -> float:
    ts = []
    for _ in range(5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    torch.cuda.synchronize()
    return statistics.median(ts)


def graphed_ms(step) -> str:
    """The step captured once in a CUDA graph; the median replay time (events, synchronised)."""
    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            step()
        return f"{bench(g.replay):.3f} ms"
    except Exception as e:  # noqa: BLE001 - report why capture failed instead of stopping the run
        return f"capture failed: {type(e).__name__}: {str(e)[:200]}"


def chunk_rows(L: int, M: int, q, k, v, do, graph: bool) -> None:
    tf = FWD_BWD * attention_flops("se", L, H, D, chunk_size=M, window=0, group_size=0, block_size=S, top_k=K) / 1e12
    se_step = step_fn(q, k, v, do, lambda: se_attention(q, k, v, chunk_size=M, block_size=S, top_k=K))
    blocks = select_blocks(q, k, v, chunk_size=M, block_size=S, top_k=K, selection="relevance", generator=None)
    same = torch.equal(blocks, select_blocks(q.float(), k.float(), v.float(), chunk_size=M, block_size=S, top_k=K,
                                             selection="relevance", generator=None, impl="torch"))
    rows = {
        "se": se_step,
        "attend (fixed blocks)": step_fn(q, k, v, do, lambda: se_attend(q, k, v, blocks, chunk_size=M, block_size=S)),
        "se-nomem (causal piece only)": step_fn(
            q, k, v, do, lambda: se_attention(q, k, v, chunk_size=M, block_size=S, top_k=K, selection="none")),
    }
    for name, fn in rows.items():
        ms = bench(fn)
        extra = f" ({tf / (ms / 1e3):.0f} TFLOP/s sparse)" if name == "se" else ""
        print(f"L={L} M={M} {name}: {ms:.3f} ms / {peak(fn):.3f} GiB{extra}", flush=True)
    with kernels.use("se_memory=backend"):
        ms = bench(se_step)
        print(f"L={L} M={M} se[memory via cuDNN, previous design]: {ms:.3f} ms / {peak(se_step):.3f} GiB "
              f"({tf / (ms / 1e3):.0f} TFLOP/s)", flush=True)
    for impl in ("torch", "triton"):
        t = bench(lambda impl=impl: select_blocks(q, k, v, chunk_size=M, block_size=S, top_k=K, selection="relevance",
                                                  generator=None, impl=impl))
        print(f"L={L} M={M}: select[{impl}] {t:.3f} ms", flush=True)
    print(f"L={L} M={M}: bf16 triton choice == fp32 torch choice: {same}", flush=True)
    outs = []
    fw, bw = [], []
    for _ in range(5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        outs.append(se_attention(q, k, v, chunk_size=M, block_size=S, top_k=K))
        fw.append((time.perf_counter() - t0) * 1e3)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        outs.pop().backward(do)
        bw.append((time.perf_counter() - t0) * 1e3)
        torch.cuda.synchronize()
    sel = host_ms(lambda: select_blocks(q, k, v, chunk_size=M, block_size=S, top_k=K, selection="relevance",
                                        generator=None))
    print(f"L={L} M={M}: host enqueue ms: step {host_ms(se_step):.3f}, select {sel:.3f}, "
          f"fwd {statistics.median(fw):.3f}, bwd {statistics.median(bw):.3f}", flush=True)
    if graph:
        print(f"L={L} M={M} se graphed (CUDA graph replay): {graphed_ms(se_step)}", flush=True)


def kernel_table(L: int, M: int, q, k, v, do) -> None:
    fn = step_fn(q, k, v, do, lambda: se_attention(q, k, v, chunk_size=M, block_size=S, top_k=K))
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
    ev = sorted(prof.key_averages(), key=lambda e: -e.self_device_time_total)
    busy = sum(e.self_device_time_total for e in ev) / 1e3 / n
    print(f"L={L} M={M} profiler: {wall:.3f} ms per step (unsynchronised), kernels {busy:.3f} ms -> GPU busy "
          f"{busy / wall:.0%}; per step:")
    for e in ev:
        if e.self_device_time_total > 0:
            print(f"    {e.self_device_time_total / 1e3 / n:7.3f} ms  x{e.count // n:<3d} {e.key[:90]}")


def sweep(L: int, q, k, v, do) -> None:
    """Each Triton memory kernel alone, per tile shape, on the tensors of a real step."""
    for M in (2048, 4096):
        N, nc = H, L // M
        qc, kc, vc = (x.detach().view(N, nc, M, D) for x in (q, k, v))
        blk = select_blocks(q, k, v, chunk_size=M, block_size=S, top_k=K, selection="relevance",
                            generator=None).view(N, nc, K).contiguous()
        o1, l1, _ = lse_kernels.forward("cudnn", qc, kc, vc, True)
        l1 = l1.reshape(N, nc, M).contiguous()
        dq, dk, dv = (torch.zeros_like(qc) for _ in range(3))
        doc = do.view(N, nc, M, D)
        saved = {kind: dict(cfg) for kind, cfg in smt.CONFIG.items()}
        for cfg in [{}] + MEMORY_CONFIGS:
            smt.CONFIG.update(cfg)
            try:
                f = bench_kernel(functools.partial(smt.forward_merge_, qc, kc, vc, blk, o1, l1, i0=1, block_size=S))
                b = bench_kernel(functools.partial(smt.backward_, doc, qc, kc, vc, o1, l1, blk, dq, dk, dv, i0=1,
                                                   block_size=S))
                label = "default " + str(saved) if not cfg else str(cfg)
                print(f"L={L} M={M} memory kernels {label}: fwd+merge {f:.3f} ms, bwd (dq + dkdv) {b:.3f} ms",
                      flush=True)
            except Exception as e:  # noqa: BLE001 - one bad tile shape should not end the sweep
                print(f"L={L} M={M} memory kernels {cfg}: failed {type(e).__name__}: {str(e)[:200]}", flush=True)
            finally:
                smt.CONFIG.clear()
                smt.CONFIG.update({kind: dict(c) for kind, c in saved.items()})


def one_length(L: int, g: torch.Generator, args) -> None:
    q, k, v = (torch.randn(1, H, L, D, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
               for _ in range(3))
    do = torch.randn_like(q)
    full = step_fn(q, k, v, do, lambda: full_attention(q, k, v))
    print(f"L={L}: full {bench(full):.3f} ms / {peak(full):.3f} GiB", flush=True)
    for M in (2048, 4096):
        chunk_rows(L, M, q, k, v, do, args.graph)
        if L == args.profile_length:
            kernel_table(L, M, q, k, v, do)
    if args.sweep and L == args.profile_length:
        sweep(L, q, k, v, do)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="32768,65536")
    ap.add_argument("--profile-length", type=int, default=32768)
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--no-graph", dest="graph", action="store_false")
    args = ap.parse_args()
    g = torch.Generator("cuda").manual_seed(0)
    for L in (int(x) for x in args.lengths.split(",")):
        one_length(L, g, args)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    kernels.configure(dict.fromkeys(("se_backend", "se_selection", "se_memory"), "auto"))  # measure the defaults
    main()
