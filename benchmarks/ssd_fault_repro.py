"""Which inputs make the fused SSD scan (spanlab.models.ssd_triton.chunk_scan) fault on CUDA?

The shipped tiny hybrid's eval faulted in `_scan_kernel` (benchmarks/hybrid_diag.sh, H100,
2026-12-07) with spanlab's prefill conv kernel in front of it, and ran with transformers' conv:
the two hand the scan x / B / C in different layouts (row-major slices of one (b, L, 512) tensor
against channel-first views). Two kinds of case, one subprocess each (a fault poisons the CUDA
context), several at once on the one GPU:

- synthetic: chunk_scan at the tiny hybrid's geometry (12 heads x 32, state 64, one group, chunk
  64, bf16) on each layout, and at a real seed geometry (80 heads x 64, state 128, chunk 256);
- eval: the tiny hybrid's `spanlab eval` in-process with chunk_scan wrapped to print each call's
  shapes, strides, dtypes, pointer alignment and storage extents (the last line before a fault
  names the call), and the same eval with x / B / C made contiguous first (a candidate fix).

    python3 benchmarks/ssd_fault_repro.py [case ...]      # prints one line per case: rc, output
"""
from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

SYNTHETIC = ["rowmajor", "contiguous", "x-contig", "bc-contig", "channel-first", "rowmajor-noD",
             "rowmajor-init", "rowmajor-b1", "rowmajor-L2048", "rowmajor-stages2", "rowmajor-warps8", "seed-rowmajor", "seed-contig"]
EVAL = ["eval-hook", "eval-hook-contig"]
DEV = os.environ.get("REPRO_DEVICE", "cuda")  # "cpu" with TRITON_INTERPRET=1 checks the script itself


def describe(name: str, t) -> str:
    if t is None:
        return f"{name}=None"
    st = t.untyped_storage()
    end = t.storage_offset() + sum((s - 1) * abs(k) for s, k in zip(t.shape, t.stride())) + 1
    return (f"{name}{tuple(t.shape)}/{tuple(t.stride())}/{str(t.dtype)[6:]}/ptr%16={t.data_ptr() % 16}"
            f"/off={t.storage_offset()}/extent={end * t.element_size()}<=storage={st.nbytes()}")


def synthetic(case: str) -> None:
    import torch

    from spanlab.models import ssd_triton

    if case.endswith("stages2"):
        ssd_triton.CONFIG["scan"]["num_stages"] = 2
    if case.endswith("warps8"):
        ssd_triton.CONFIG["scan"]["num_warps"] = 8
    seed = case.startswith("seed")
    b = 1 if case.endswith("b1") else (2 if seed else 8)
    L = 2048 if case.endswith("L2048") else (4000 if seed else 1931)
    h, p, g, n, cs = (80, 64, 1, 128, 256) if seed else (12, 32, 1, 64, 64)
    d = h * p + 2 * g * n
    gen = torch.Generator(device=DEV).manual_seed(0)
    if case == "channel-first":  # transformers' conv: (b, d, L) memory, read transposed
        xbc = torch.randn(b, d, L, device=DEV, dtype=torch.bfloat16, generator=gen).transpose(1, 2)
    else:  # spanlab's conv kernel: (b, L, d) memory
        xbc = torch.randn(b, L, d, device=DEV, dtype=torch.bfloat16, generator=gen)
    x, B, C = torch.split(xbc, [h * p, g * n, g * n], dim=-1)
    x = x.reshape(b, L, h, p)
    B, C = B.reshape(b, L, g, n), C.reshape(b, L, g, n)
    if case in ("contiguous", "x-contig", "seed-contig"):
        x = x.contiguous()
    if case in ("contiguous", "bc-contig", "seed-contig"):
        B, C = B.contiguous(), C.contiguous()
    dt = torch.rand(b, L, h, device=DEV, generator=gen) * 0.1
    A = -torch.rand(h, device=DEV, generator=gen)
    D = None if case.endswith("noD") else torch.ones(h, device=DEV)
    init = torch.randn(b, h, p, n, device=DEV, generator=gen) if case.endswith("init") else None
    print(describe("x", x), describe("B", B), describe("C", C), flush=True)
    y, s = ssd_triton.chunk_scan(x, dt, A, B, C, cs, D=D, initial_states=init)
    if DEV == "cuda":
        torch.cuda.synchronize()
    # The torch scan on the same inputs: the fused one must agree where it runs.
    from spanlab import kernels
    from spanlab.models import ssd

    with kernels.use("ssd=torch"):
        ref, ref_s = ssd.ssd_chunk_scan(x, dt, A, B, C, cs, D=D, initial_states=init, return_final_states=True)
    err = float((y - ref).abs().max() / ref.abs().max().clamp_min(1e-6))
    print(f"ok rel-err-vs-torch={err:.2e}", flush=True)


def evaluate(case: str) -> None:
    from spanlab.models import ssd_triton

    orig = ssd_triton.chunk_scan
    calls = [0]

    def wrapped(x, dt, A, B, C, chunk_size, D=None, initial_states=None):
        calls[0] += 1
        print(f"call {calls[0]} cs={chunk_size}", describe("x", x), describe("dt", dt), describe("B", B),
              describe("C", C), describe("D", D), describe("init", initial_states), flush=True)
        if case.endswith("contig"):
            x, B, C = x.contiguous(), B.contiguous(), C.contiguous()
        return orig(x, dt, A, B, C, chunk_size, D=D, initial_states=initial_states)

    ssd_triton.chunk_scan = wrapped
    from spanlab.cli import main

    main(["eval", "--model", "builtin:hybrid-tiny-c512", "--tasks", "niah_single_1", "--lengths", "2k",
          "--num-samples", "8", "--no-progress", "--out", f"/tmp/ssd-repro-{case}"])


def one(case: str) -> str:
    env = dict(os.environ, CUDA_LAUNCH_BLOCKING="1")
    try:
        r = subprocess.run([sys.executable, "-X", "faulthandler", __file__, "--one", case], capture_output=True,
                           text=True, env=env, timeout=float(os.environ.get("REPRO_TIMEOUT", 240)))
    except subprocess.TimeoutExpired:
        return f"=== {case}: timed out"
    out = [ln for ln in r.stdout.splitlines() if ln.strip()]
    if case.startswith("eval"):
        out = out[-2:]  # the last scan calls before the end (or the fault)
    err = [ln for ln in r.stderr.splitlines() if "Error" in ln or "error" in ln][-2:]
    return f"=== {case}: rc={r.returncode}\n  " + "\n  ".join(out + err)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        (evaluate if sys.argv[2].startswith("eval") else synthetic)(sys.argv[2])
        sys.exit(0)
    cases = sys.argv[1:] or SYNTHETIC + EVAL
    with ThreadPoolExecutor(4) as pool:
        for line in pool.map(one, cases):
            print(line, flush=True)
