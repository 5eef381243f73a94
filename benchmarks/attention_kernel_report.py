"""Compile SE-Attn's Triton kernels for an H100 (sm_90) on a machine without a GPU and report
registers, spills and the matrix instructions of each, from the cubin.

    python benchmarks/attention_kernel_report.py [--head-dim 128] [--configs]

Triton's wheel ships ptxas and cuobjdump, so no device time is needed to see whether a tile shape
spills or whether the dots became Hopper's wgmma (HGMMA in SASS). The kernels are specialised
the way the JIT specialises them at run time (argument alignment, constexprs), by launching the
real wrappers on CPU tensors with a stand-in driver that reports an sm_90 target and compiles
instead of launching. --configs also compiles the alternative tile shapes the device benchmark
(`attention_se_breakdown.py`) times.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.runtime import driver
from triton.runtime.jit import JITFunction

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
COMPILED: list[tuple[str, dict, object]] = []


class _Sm90:
    """Just enough of a Triton driver for compilation: an sm_90 target, device 0, stream 0."""

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        return torch.device("cpu")


def _compile_only(self, grid):
    def launch(*args, **kwargs):
        k = self.run(*args, grid=grid, warmup=True, **kwargs)
        COMPILED.append((self.fn.__name__, {x: kwargs[x] for x in ("BM", "BN", "num_warps", "num_stages") if x in kwargs}, k))
        return k

    return launch


def report(kernel) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as fh:
        fh.write(kernel.asm["cubin"])
        path = fh.name
    try:
        res = subprocess.run([os.path.join(BIN, "cuobjdump"), "--dump-resource-usage", path], capture_output=True,
                             text=True, check=True).stdout
        sass = subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", path], capture_output=True, text=True,
                              check=True).stdout
    finally:
        os.unlink(path)
    regs = re.search(r"REG:(\d+)", res)
    stack = re.search(r"STACK:(\d+)", res)
    shared = re.search(r"SHARED:(\d+)", res)
    counts = {op: len(re.findall(rf"\b{op}[.\s]", sass)) for op in ("HGMMA", "HMMA", "LDL", "STL", "LDGSTS", "REDG", "ATOMG")}
    ops = " ".join(f"{k}={v}" for k, v in counts.items() if v)
    smem = kernel.metadata.shared  # dynamic shared memory Triton asks for at launch
    return (f"regs {regs.group(1) if regs else '?'}, stack {stack.group(1) if stack else '?'} B, "
            f"shared {smem} B dynamic + {shared.group(1) if shared else '?'} B static; {ops}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--configs", action="store_true")
    args = ap.parse_args()
    driver.set_active(_Sm90())
    JITFunction.__getitem__ = _compile_only

    from spanlab.attention import se_memory_triton as smt
    from spanlab.attention import selection_triton

    selection_triton._check_device = lambda x: None  # CPU tensors stand in for CUDA ones here

    D, S, kk, M, nc, N = args.head_dim, 32, 8, 2048, 4, 2
    dt = torch.bfloat16
    q, k, v, o, do, dq, dk, dv = (torch.zeros(N, nc, M, D, dtype=dt) for _ in range(8))
    lse = torch.zeros(N, nc, M)
    blocks = torch.zeros(N, nc, kk, dtype=torch.long)
    configs = [dict(smt.CONFIG)]
    if args.configs:
        from attention_se_breakdown import MEMORY_CONFIGS

        configs += MEMORY_CONFIGS
    for cfg in configs:
        saved = dict(smt.CONFIG)
        smt.CONFIG.update(cfg)
        try:
            smt.forward_merge_(q, k, v, blocks, o, lse, i0=1, block_size=S)
            smt.backward_(do, q, k, v, o, lse, blocks, dq, dk, dv, i0=1, block_size=S)
        finally:
            smt.CONFIG.clear()
            smt.CONFIG.update(saved)
    qf = torch.zeros(1, 4, M * nc, D, dtype=dt)
    c, qs = selection_triton.block_stats(qf, qf, qf, S)
    selection_triton.top_blocks_from_stats(c, qs, M * nc, chunk_size=M, block_size=S, top_k=kk)
    for name, cfg, kern in COMPILED:
        print(f"{name} {cfg}: {report(kern)}", flush=True)


if __name__ == "__main__":
    main()
