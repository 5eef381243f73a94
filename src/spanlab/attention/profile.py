"""Time and size one training step of each attention variant (the paper's Fig. 4).

A step is forward + backward of the attention op alone (`mode="op"`) or of a projection layer
around it (`mode="layer"`: x -> QKV projection -> attention -> output projection). CUDA timings use
events after warm-up and report the median of the repeats; peak memory is
`torch.cuda.max_memory_allocated` over one step, inputs and gradients included. Each finished
configuration is appended (and flushed) to the CSV, and a rerun skips the rows already there.
"""

from __future__ import annotations

import csv
import math
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from spanlab.attention.registry import VARIANTS, get_attention
from spanlab.errors import SpanlabError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
FWD_BWD = 3.5  # backward ≈ 2.5× forward in matmul FLOPs (dQ, dK, dV, and the recomputed scores)


@dataclass
class ProfileRow:
    variant: str
    label: str
    mode: str
    length: int
    batch: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype: str
    chunk_size: int
    window: int
    group_size: int
    block_size: int
    top_k: int
    ms: float
    ms_min: float
    ms_max: float
    peak_mem_gib: float
    attn_tflop: float
    tflops: float
    device: str
    status: str

    def key(self) -> tuple:
        return (self.label, self.mode, self.length, self.batch, self.heads, self.kv_heads, self.head_dim, self.dtype, self.device)


def attention_flops(variant: str, L: int, H: int, D: int, *, chunk_size: int, window: int, group_size: int,
                    block_size: int, top_k: int) -> float:
    """Forward matmul FLOPs of the attention op counting only the keys each query may see
    (4·D per query-key pair: QKᵀ and PV). SE counts M/2 causal keys plus k·S retrieved ones."""
    per_query: float
    if variant == "full":
        per_query = (L + 1) / 2
    elif variant == "sw":
        W = min(window, L)
        per_query = (W * (W + 1) / 2 + (L - W) * W) / L
    elif variant == "s2":
        per_query = (min(group_size, L) + 1) / 2
    elif variant == "se-nomem":
        per_query = (min(chunk_size, L) + 1) / 2
    else:
        per_query = (min(chunk_size, L) + 1) / 2 + top_k * block_size
    return 4.0 * D * H * L * per_query


def _time_step(step: Callable[[], None], warmup: int, repeats: int, cuda: bool) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    if cuda:
        torch.cuda.synchronize()
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def _make_step(fn, mode: str, B: int, H: int, Hk: int, L: int, D: int, dtype, device, gen) -> Callable[[], None]:
    if mode == "op":
        q = torch.randn(B, H, L, D, device=device, dtype=dtype, generator=gen).requires_grad_()
        k = torch.randn(B, Hk, L, D, device=device, dtype=dtype, generator=gen).requires_grad_()
        v = torch.randn(B, Hk, L, D, device=device, dtype=dtype, generator=gen).requires_grad_()
        dout = torch.randn(B, H, L, D, device=device, dtype=dtype, generator=gen)

        def step() -> None:
            q.grad = k.grad = v.grad = None
            fn(q, k, v).backward(dout)

        return step
    E = H * D
    x = torch.randn(B, L, E, device=device, dtype=dtype, generator=gen).requires_grad_()
    w_qkv = (torch.randn((H + 2 * Hk) * D, E, device=device, dtype=dtype, generator=gen) / math.sqrt(E)).requires_grad_()
    w_o = (torch.randn(E, H * D, device=device, dtype=dtype, generator=gen) / math.sqrt(E)).requires_grad_()
    dout = torch.randn(B, L, E, device=device, dtype=dtype, generator=gen)

    def step() -> None:
        x.grad = w_qkv.grad = w_o.grad = None
        qkv = (x @ w_qkv.T).view(B, L, H + 2 * Hk, D).transpose(1, 2)
        q, k, v = qkv.split([H, Hk, Hk], dim=1)
        o = fn(q, k, v).transpose(1, 2).reshape(B, L, H * D)
        (o @ w_o.T).backward(dout)

    return step


def configurations(variants: Iterable[str], chunk_sizes: Iterable[int]) -> list[tuple[str, str, int]]:
    """(variant, label, chunk_size): SE variants get one row per chunk size."""
    out = []
    for v in variants:
        if v not in VARIANTS:
            raise SpanlabError(f"unknown attention variant {v!r}; choose from {', '.join(VARIANTS)}")
        if v.startswith("se"):
            out.extend((v, f"{v}[M={m}]", m) for m in chunk_sizes)
        else:
            out.append((v, v, 0))
    return out


def read_rows(path: Path) -> list[ProfileRow]:
    if not path.exists():
        return []
    types = {f.name: f.type for f in fields(ProfileRow)}
    rows = []
    with path.open(newline="") as fh:
        for rec in csv.DictReader(fh):
            conv = {}
            for name, typ in types.items():
                val = rec[name]
                conv[name] = int(val) if typ in (int, "int") else float(val) if typ in (float, "float") else val
            rows.append(ProfileRow(**conv))
    return rows


def run_profile(
    *,
    variants: list[str],
    lengths: list[int],
    heads: int = 16,
    kv_heads: int | None = None,
    head_dim: int = 128,
    batch: int = 1,
    dtype: str = "bf16",
    mode: str = "op",
    chunk_sizes: list[int] = (2048, 4096),
    window: int = 4096,
    group_size: int = 0,
    block_size: int = 32,
    top_k: int = 8,
    warmup: int = 3,
    repeats: int = 10,
    device: str = "auto",
    seed: int = 0,
    csv_path: Path | None = None,
    on_row: Callable[[ProfileRow], None] | None = None,
) -> list[ProfileRow]:
    if dtype not in DTYPES:
        raise SpanlabError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if mode not in ("op", "layer"):
        raise SpanlabError(f"unknown mode {mode!r}; choose 'op' (attention only) or 'layer'")
    Hk = kv_heads or heads
    if heads % Hk:
        raise SpanlabError(f"--heads ({heads}) must be a multiple of --kv-heads ({Hk})")
    if not lengths or any(n < 1 for n in lengths):
        raise SpanlabError("--lengths must be positive integers, e.g. 4096,8192")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SpanlabError("--device cuda was asked for but CUDA is not available; use --device cpu")
    cuda = device.startswith("cuda")
    dev_name = torch.cuda.get_device_name(device) if cuda else "cpu"
    configs = configurations(variants, chunk_sizes)
    done = {r.key() for r in read_rows(csv_path)} if csv_path else set()
    rows: list[ProfileRow] = []
    for L in lengths:
        for variant, label, M in configs:
            G = group_size or max(1, L // 4)  # LongLoRA's default group: a quarter of the sequence
            row = ProfileRow(variant, label, mode, L, batch, heads, Hk, head_dim, dtype, M, window, G, block_size,
                             top_k, math.nan, math.nan, math.nan, math.nan, 0.0, math.nan, dev_name, "ok")
            if row.key() in done:
                continue
            params = {"full": {}, "sw": {"window": window}, "s2": {"group_size": G}}.get(
                variant, {"chunk_size": M, "block_size": block_size, "top_k": top_k}
            )
            fn = get_attention(variant, **params)
            fwd = attention_flops(variant, L, heads, head_dim, chunk_size=M, window=window, group_size=G,
                                  block_size=block_size, top_k=top_k) * batch
            row.attn_tflop = FWD_BWD * fwd / 1e12
            gen = torch.Generator(device=device).manual_seed(seed)
            try:
                if cuda:
                    torch.cuda.empty_cache()
                step = _make_step(fn, mode, batch, heads, Hk, L, head_dim, DTYPES[dtype], device, gen)
                times = _time_step(step, warmup, repeats, cuda)
                row.ms, row.ms_min, row.ms_max = statistics.median(times), min(times), max(times)
                row.tflops = row.attn_tflop / (row.ms / 1e3)
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats(device)
                    step()
                    torch.cuda.synchronize()
                    row.peak_mem_gib = torch.cuda.max_memory_allocated(device) / 2**30
                del step
            except torch.OutOfMemoryError:
                row.status = "oom"
            rows.append(row)
            if csv_path is not None:
                _append(csv_path, row)
            if on_row is not None:
                on_row(row)
    return rows


def _append(path: Path, row: ProfileRow) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[f.name for f in fields(ProfileRow)])
        if new:
            w.writeheader()
        w.writerow(asdict(row))
        fh.flush()


def plot_rows(rows: list[ProfileRow], out_dir: Path, stem: str = "profile") -> list[Path]:
    """Fig. 4-style plots: runtime vs length, peak memory vs length, runtime vs memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.status == "ok" and not math.isnan(r.ms)]
    if len({r.mode for r in ok}) > 1:  # op and layer rows in one CSV: keep their curves apart
        ok = [ProfileRow(**{**asdict(r), "label": f"{r.label} ({r.mode})"}) for r in ok]
    labels = list(dict.fromkeys(r.label for r in ok))
    paths = []
    specs = [
        ("runtime", "length", "ms", "sequence length (tokens)", "fwd+bwd time (ms)"),
        ("memory", "length", "peak_mem_gib", "sequence length (tokens)", "peak memory (GiB)"),
        ("runtime_vs_memory", "peak_mem_gib", "ms", "peak memory (GiB)", "fwd+bwd time (ms)"),
    ]
    for name, xs, ys, xl, yl in specs:
        fig, ax = plt.subplots(figsize=(6, 4.2))
        for lab in labels:
            pts = sorted((getattr(r, xs), getattr(r, ys)) for r in ok if r.label == lab)
            pts = [p for p in pts if not (math.isnan(p[0]) or math.isnan(p[1]))]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=lab)
        if not ax.get_lines():  # nothing measured (peak memory on CPU): no empty figure
            plt.close(fig)
            continue
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        if xs == "length":
            ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = out_dir / f"{stem}_{name}.png"
        fig.savefig(p, dpi=120)
        plt.close(fig)
        paths.append(p)
    return paths
